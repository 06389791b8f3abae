"""Which bytes of a part file are on disk, and which connection fetches what next (segmented downloads).

A big file is fetched over several connections, each asking the CDN for a ``Range`` of it and writing at that
offset in the ``.incomplete`` part. What is on disk is kept in a log beside the part (``<part>.ranges``): a
header line naming the file (size and sha256), then one ``<start> <end>`` line appended after each write has
returned. A kill -9 at any instant loses only bytes whose write had not returned (the page cache keeps what
``pwrite`` was given); a line torn by the kill is ignored. On restart every gap is fetched again, from exactly
where it stopped.

:class:`Scheduler` hands out pieces of ``segment_size`` in file order; once none is left, a connection that
finishes takes the second half of the piece with the most bytes still to come (no tail where one slow connection
finishes alone). Pure bookkeeping: no I/O except :func:`read_log` / :func:`append_log` / :func:`write_log`.
"""

from __future__ import annotations

import bisect
import contextlib
import json
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "LOG_SUFFIX",
    "SEGMENTED_SUFFIX",
    "Assignment",
    "Ranges",
    "Scheduler",
    "append_log",
    "read_log",
    "remove_log",
    "segmented_part",
    "write_log",
]

LOG_SUFFIX = ".ranges"
# A segmented part's own suffix, beside the ``.incomplete`` huggingface_hub and the single stream use: hf resumes a
# ``.incomplete`` by appending at its length, which a part with holes must never get.
SEGMENTED_SUFFIX = ".wangpd-segments"
# A piece with less than twice MIN_SPLIT left is not split again: the connection it takes from drops what it has in
# flight past the split, and a new request costs a round trip. A slow connection's piece (under half the others'
# median speed) is split down to SLOW_MIN_SPLIT, so it never finishes a download alone.
MIN_SPLIT = 4 << 20
SLOW_MIN_SPLIT = 1 << 20
SLOW_SHARE = 0.5
MATURE = 1.0  # seconds a piece runs before its speed says anything


class Ranges:
    """Disjoint, sorted ``[start, end)`` intervals of bytes on disk."""

    def __init__(self, intervals: Iterable[tuple[int, int]] = ()) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []
        for start, end in intervals:
            self.add(start, end)

    def add(self, start: int, end: int) -> None:
        if end <= start:
            return
        # Every interval touching or overlapping [start, end) merges into one.
        lo = bisect.bisect_left(self._ends, start)
        hi = bisect.bisect_right(self._starts, end)
        if lo < hi:
            start = min(start, self._starts[lo])
            end = max(end, self._ends[hi - 1])
        self._starts[lo:hi] = [start]
        self._ends[lo:hi] = [end]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter(zip(self._starts, self._ends, strict=True))

    def __len__(self) -> int:
        return len(self._starts)

    @property
    def total(self) -> int:
        return sum(e - s for s, e in self)

    def prefix(self) -> int:
        """Bytes on disk from offset 0 without a gap."""
        return self._ends[0] if self._starts and self._starts[0] == 0 else 0

    def gaps(self, size: int) -> list[tuple[int, int]]:
        """What is missing of ``[0, size)``."""
        missing, position = [], 0
        for start, end in self:
            if start > position:
                missing.append((position, min(start, size)))
            position = max(position, end)
        if position < size:
            missing.append((position, size))
        return [(s, e) for s, e in missing if e > s]

    def covers(self, start: int, end: int) -> bool:
        index = bisect.bisect_right(self._starts, start) - 1
        return index >= 0 and self._ends[index] >= end


@dataclass
class Assignment:
    """One connection's piece: ``position`` advances as bytes arrive; ``end`` may shrink when the piece is split."""

    start: int
    end: int
    position: int
    began: float = 0.0  # when its connection started it (time.monotonic())

    @property
    def left(self) -> int:
        return max(0, self.end - self.position)

    def speed(self, now: float) -> float | None:
        """Bytes/s so far, or None while too young to tell."""
        elapsed = now - self.began
        return (self.position - self.start) / elapsed if elapsed >= MATURE else None


class Scheduler:
    """Hands out the gaps of a file as pieces; splits the largest running piece once the gaps are used up."""

    def __init__(self, gaps: Iterable[tuple[int, int]], segment_size: int) -> None:
        self.segment_size = max(1, segment_size)
        self._todo: list[tuple[int, int]] = sorted(gaps)
        self.running: list[Assignment] = []
        self._finished_speeds: list[float] = []  # of pieces that ran to their end: what "normal" is here

    def next(self, now: float | None = None) -> Assignment | None:
        """The next piece to fetch, or None when every byte is fetched or being fetched. With no gap left, the half
        of the running piece expected to finish last (its bytes left at its own speed; the others' median while it
        is young), if it is worth splitting."""
        now = time.monotonic() if now is None else now
        if self._todo:
            start, end = self._todo.pop(0)
            cut = min(end, start + self.segment_size)
            if cut < end:
                self._todo.insert(0, (cut, end))
            piece = Assignment(start, cut, start, now)
            self.running.append(piece)
            return piece
        speeds = sorted([*(s for a in self.running if (s := a.speed(now)) is not None), *self._finished_speeds[-16:]])
        median = speeds[len(speeds) // 2] if speeds else None

        def expected(a: Assignment) -> float:
            speed = a.speed(now)
            rate = speed if speed is not None else median
            return a.left / rate if rate else float(a.left)

        def worth_it(a: Assignment) -> bool:
            if a.left >= 2 * MIN_SPLIT:
                return True
            speed = a.speed(now)
            slow = speed is not None and median is not None and speed < SLOW_SHARE * median
            return slow and a.left >= 2 * SLOW_MIN_SPLIT

        victim = max((a for a in self.running if worth_it(a)), key=expected, default=None)
        if victim is None:
            return None
        middle = victim.position + victim.left // 2
        piece = Assignment(middle, victim.end, middle, now)
        victim.end = middle
        self.running.append(piece)
        return piece

    def done(self, piece: Assignment, now: float | None = None) -> None:
        """``piece`` ended (complete or not): what it did not fetch is handed out again."""
        now = time.monotonic() if now is None else now
        with contextlib.suppress(ValueError):
            self.running.remove(piece)
        if piece.position < piece.end:
            bisect.insort(self._todo, (piece.position, piece.end))
        elif now > piece.began:
            self._finished_speeds.append((piece.position - piece.start) / (now - piece.began))

    def may_split_later(self) -> bool:
        """A running piece may yet turn out slow enough to split: a free connection should wait, not leave."""
        return any(a.left >= 2 * SLOW_MIN_SPLIT for a in self.running)

    @property
    def finished(self) -> bool:
        return not self._todo and not self.running


# ---- the log beside the part --------------------------------------------------------------------------------------


def segmented_part(incomplete: Path) -> Path:
    """Where the segmented download of ``<name>.incomplete`` keeps its bytes: ``<name>.wangpd-segments``."""
    return incomplete.with_name(incomplete.name.removesuffix(".incomplete") + SEGMENTED_SUFFIX)


def log_path(part: Path) -> Path:
    return part.with_name(part.name + LOG_SUFFIX)


def read_log(part: Path, size: int, identity: str) -> Ranges | None:
    """The ranges on disk, or None when there is no log or it belongs to another file (a different size or
    sha256: the part is then not to be trusted)."""
    try:
        with open(log_path(part), encoding="ascii", errors="replace") as handle:
            lines = handle.read().split("\n")
    except FileNotFoundError:
        return None
    try:
        header = json.loads(lines[0])
    except ValueError:
        return Ranges()
    if not isinstance(header, dict) or header.get("size") != size or header.get("id") != identity:
        return Ranges()
    ranges = Ranges()
    for line in lines[1:]:
        fields = line.split()
        if len(fields) == 2 and fields[0].isdigit() and fields[1].isdigit():  # a torn last line is skipped
            start, end = int(fields[0]), int(fields[1])
            if 0 <= start < end <= size:
                ranges.add(start, end)
    return ranges


def write_log(part: Path, size: int, identity: str, ranges: Ranges) -> None:
    """Rewrite the log compactly (at the start, and when it has grown long): a temp file renamed over it."""
    path = log_path(part)
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    body = json.dumps({"size": size, "id": identity}) + "\n" + "".join(f"{s} {e}\n" for s, e in ranges)
    with open(temp, "w", encoding="ascii") as handle:
        handle.write(body)
    os.replace(temp, path)


def append_log(handle: int, start: int, end: int) -> None:
    """One record, appended with a single write (O_APPEND): never interleaved with another."""
    os.write(handle, f"{start} {end}\n".encode("ascii"))


def remove_log(part: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        log_path(part).unlink()
