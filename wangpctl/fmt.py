"""Human output: sizes, rates, durations, tables, colours (only on a terminal, never with NO_COLOR)."""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Sequence
from typing import Any

__all__ = ["bytes_", "colour", "duration", "eta", "printable", "rate", "strip_ansi", "table", "use_colour", "when"]


def bytes_(count: float | None) -> str:
    if count is None:
        return "?"
    size = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


def rate(value: float | None, zero: str = "unlimited") -> str:
    return zero if not value else bytes_(value) + "/s"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"


def when(timestamp: float) -> str:
    """A Unix time as local ``YYYY-MM-DD HH:MM``."""
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(timestamp))


def eta(remaining: float | None, speed: float | None) -> str:
    if not remaining or not speed:
        return "-"
    return duration(remaining / speed)


def use_colour(stream: Any = None) -> bool:
    """Colour only on a terminal, and never with NO_COLOR set to anything non-empty (https://no-color.org)."""
    stream = stream or sys.stdout
    return not os.environ.get("NO_COLOR") and hasattr(stream, "isatty") and stream.isatty()


_COLOURS = {"red": 31, "green": 32, "yellow": 33, "blue": 34, "dim": 2, "bold": 1}
STATE_COLOURS = {
    "complete": "green",
    "failed": "red",
    "downloading": "blue",
    "needs_approval": "yellow",
    "paused": "yellow",
    "cancelled": "dim",
}


def strip_ansi(text: str) -> str:
    """``text`` without escape sequences (colours, cursor moves): what a terminal shows."""
    while "\x1b[" in text:
        start = text.index("\x1b[")
        end = start + 2
        while end < len(text) and not text[end].isalpha():
            end += 1
        text = text[:start] + text[end + 1 :]
    return text


def colour(text: str, name: str | None, enabled: bool) -> str:
    if not enabled or not name:
        return text
    return f"\x1b[{_COLOURS[name]}m{text}\x1b[0m"


# Every control character but the colour codes wangpctl itself writes (ESC [ digits ; m): a model name or an error
# from a definition file must not move the cursor, retitle the terminal or break a table's lines.
_UNSAFE = re.compile(r"\x1b(?!\[[0-9;]*m)|[\x00-\x08\x0a-\x1a\x1c-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """``text`` with control characters shown as ``?`` (a tab becomes a space)."""
    return _UNSAFE.sub("?", text.replace("\t", " "))


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[int] = ()) -> str:
    """Plain aligned columns; ``right`` = indexes of right-aligned columns. Colour codes do not count as width;
    control characters in cells are shown as ``?``."""
    rows = [[printable(cell) for cell in row] for row in rows]

    def width(cell: str) -> int:
        return len(strip_ansi(cell)) if "\x1b[" in cell else len(cell)

    widths = [len(h) for h in headers]
    for row in rows:
        for index, cell in enumerate(row):
            widths[index] = max(widths[index], width(cell))
    lines = []
    for row in [list(headers), *rows]:
        cells = []
        for index, cell in enumerate(row):
            pad = " " * (widths[index] - width(cell))
            cells.append(pad + cell if index in right else cell + pad)
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)
