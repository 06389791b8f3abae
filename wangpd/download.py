"""One shaped, resumable, hashed HTTP download into a part file; the only module that uses aiohttp's client.

:func:`download` moves one file into a ``.incomplete`` part: it resumes what is there with ``Range`` (re-hashing
the part first), draws every byte from the shared limiter, hashes while streaming, checks size and sha256 at the
end and fsyncs. Renaming the part into place is the caller's job (:mod:`wangpd.transfer`), as are retries.
:func:`url_metadata` asks a plain URL for its size and validator; :func:`open_session` makes the one client
session.

Writes and hashing run in a worker thread, one chunk behind the network reads, so a slow disk never blocks the
event loop and the two overlap.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import ipaddress
import logging
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import aiohttp

from wangpd.errors import ChecksumMismatch, DiskFull, TransferError
from wangpd.hfurl import file_name_of, same_origin
from wangpd.hub import parse_retry_after
from wangpd.limiter import RateLimiter
from wangpd.models import FileMeta
from wangpd.segments import (
    Assignment,
    Ranges,
    Scheduler,
    append_log,
    log_path,
    read_log,
    remove_log,
    segmented_part,
    write_log,
)
from wangpd.units import format_bytes

__all__ = ["Downloaded", "Progress", "download", "open_session", "url_metadata"]

log = logging.getLogger(__name__)

Progress = Callable[[int], None]
_REHASH_BLOCK = 8 * 1024 * 1024
_SYNC_EVERY = 64 * 1024 * 1024  # a segmented part is written back to disk every this many bytes
_MIN_PIECE = 16 * 1024
_CONTENT_RANGE_RE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


class _Pace:
    """How much one response is read at a time, and whether it keeps a minimum speed.

    Under a limit, small reads keep the shaping smooth at 100 ms scale (a 2 MiB read at 5 MiB/s would be 400 ms of
    silence); unlimited, big reads keep the per-byte overhead low. Bytes that trickle in keep each read alive; over
    a whole ``stall_timeout`` window they must reach ``min_speed`` (never more than a quarter of the limit in
    force, so a low limit is no "stall").
    """

    def __init__(self, limiter: RateLimiter, chunk_size: int, stall_timeout: float, min_speed: int) -> None:
        self.limiter, self.chunk_size, self.stall_timeout, self.min_speed = (
            limiter,
            chunk_size,
            stall_timeout,
            min_speed,
        )
        self.loop = asyncio.get_running_loop()
        self.window_start, self.window_bytes = self.loop.time(), 0

    def read_size(self) -> int:
        rate = self.limiter.rate
        return self.chunk_size if not rate else min(self.chunk_size, max(_MIN_PIECE, rate // 100))

    def too_slow(self, nbytes: int) -> str | None:
        """After ``nbytes`` more: at the end of a window under the floor, what was seen (for the error message)."""
        self.window_bytes += nbytes
        elapsed = self.loop.time() - self.window_start
        if not self.min_speed or elapsed < self.stall_timeout:
            return None
        rate = self.limiter.rate
        floor = min(self.min_speed, rate // 4) if rate else self.min_speed
        speed = self.window_bytes / elapsed
        self.window_start, self.window_bytes = self.loop.time(), 0
        if speed >= floor:
            return None
        return f"{format_bytes(int(speed))}/s over {elapsed:.0f} s (download.min_speed {format_bytes(floor)}/s)"


def _pwrite_all(fd: int, pieces: list[bytes], offset: int) -> int:
    """Write ``pieces`` at ``offset`` (never joined: that would copy them), going on after a short write; returns
    the offset after them."""
    views = [memoryview(piece) for piece in pieces]
    position = offset
    while views:
        written = os.pwritev(fd, views, position)
        position += written
        while views and written >= len(views[0]):
            written -= len(views[0])
            views.pop(0)
        if views and written:
            views[0] = views[0][written:]
    return position


@dataclass(frozen=True)
class Downloaded:
    """Result of :func:`download`: the whole file's digest and size, and how many bytes this call fetched."""

    sha256: str
    size: int
    fetched: int


class _Part:
    """The ``.incomplete`` file plus the running hashes of everything in it. Its methods run in a thread."""

    def __init__(self, path: Path, size_hint: int | None, want_git_sha1: bool) -> None:
        self.path = path
        self.size_hint = size_hint
        self.want_git_sha1 = want_git_sha1 and size_hint is not None
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        # close() waits for a write still running in the worker thread: a closed, reused fd must never be written.
        self.lock = threading.Lock()
        self.length = 0
        self.sha256 = hashlib.sha256()
        self.git_sha1 = self._new_git_sha1()

    def _new_git_sha1(self) -> Any:
        if not self.want_git_sha1:
            return None
        sha1 = hashlib.sha1(usedforsecurity=False)
        sha1.update(b"blob %d\0" % self.size_hint)
        return sha1

    def rehash(self, limit: int | None) -> int:
        """Hash what is already in the file (so the digest covers the whole file); drop anything past ``limit``."""
        length = os.fstat(self.fd).st_size
        if limit is not None and length > limit:
            length = 0  # longer than the file can be: not ours to trust
            os.ftruncate(self.fd, 0)
        offset = 0
        while offset < length:
            block = os.pread(self.fd, min(_REHASH_BLOCK, length - offset), offset)
            if not block:
                break
            self.update_hashes(block)
            offset += len(block)
        if offset != length:
            os.ftruncate(self.fd, offset)
        self.length = offset
        return offset

    def update_hashes(self, data: bytes) -> None:
        self.sha256.update(data)
        if self.git_sha1 is not None:
            self.git_sha1.update(data)

    def restart(self) -> None:
        os.ftruncate(self.fd, 0)
        self.length = 0
        self.sha256 = hashlib.sha256()
        self.git_sha1 = self._new_git_sha1()

    def write(self, data: bytes) -> None:
        with self.lock:
            if self.fd < 0:
                return
            self._write(data)

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            # pwrite at our own offset: a short write leaves a valid prefix that a resume re-hashes.
            written = os.pwrite(self.fd, view, self.length)
            self.length += written
            view = view[written:]

    def fsync(self) -> None:
        os.fsync(self.fd)

    def close(self) -> None:
        with self.lock:
            if self.fd >= 0:
                os.close(self.fd)
                self.fd = -1


def _disk_full(path: Path, exc: OSError) -> DiskFull:
    return DiskFull(f"{path.parent}: disk full ({exc.strerror}); the partial download is kept and resumes later")


def _http_error(status: int, url: str, headers: Mapping[str, str], *, on_hub: bool) -> TransferError:
    host = urlsplit(url).hostname or url
    if status == 429:
        return TransferError(f"{host}: rate limited (429)", retryable=True, retry_after=parse_retry_after(headers))
    if status in (401, 403):
        if on_hub:
            return TransferError(
                f"{host}: access denied ({status}); run `hf auth login` or set HF_TOKEN, and accept the licence "
                "on the model page if it has one",
                retryable=False,
            )
        # A CDN's signed URL has probably expired: fresh metadata gives a fresh one.
        return TransferError(f"{host}: download link refused ({status}), will ask the Hub again", retryable=True)
    if status in (404, 410):
        return TransferError(f"{host}: not found ({status}); check the URL", retryable=False)
    if status >= 500 or status == 408:
        return TransferError(f"{host}: server error ({status})", retryable=True, retry_after=parse_retry_after(headers))
    return TransferError(f"{host}: unexpected HTTP status {status}", retryable=False)


async def download(
    meta: FileMeta,
    dest_incomplete: Path,
    *,
    session: aiohttp.ClientSession,
    limiter: RateLimiter,
    expected_sha256: str | None = None,
    expected_size: int | None = None,
    progress: Progress | None = None,
    stall_timeout: float = 60.0,
    chunk_size: int = 1024 * 1024,
    headers: Mapping[str, str] | None = None,
    min_speed: int = 0,
    connections: int = 1,
    segment_size: int = 64 << 20,
    slots: asyncio.Semaphore | None = None,
    on_segments: Callable[[list[tuple[int, int, int]]], None] | None = None,
) -> Downloaded:
    """Download ``meta.location`` into ``dest_incomplete``, resuming what is already there.

    A file of a known size and sha256 of at least two ``segment_size`` pieces, with ``connections`` > 1, is
    fetched over that many connections at once (:func:`_segmented`); a server that ignores ``Range`` falls back to
    one stream. ``slots`` caps the connections open over every transfer (each holds one while it streams);
    ``on_segments`` is told the running pieces, ``(start, end, position)`` each, as they move.

    The existing part is re-hashed first so the sha256 covers the whole file, then the rest is requested with
    ``Range``; a server that ignores ``Range`` (200) restarts the file from byte 0. Bytes pass through
    ``limiter`` as they are read. Redirects (the Hub's 302 to its CDN) are followed; the Hub token in
    ``meta.headers`` is dropped by aiohttp on a redirect to another origin. At the end the size and sha256 (or
    the git blob id for small non-LFS files) are checked and the file is fsynced; renaming it is the caller's job.

    Raises:
        TransferError: retryable for stalls (no byte for ``stall_timeout`` s), dropped connections, short bodies,
            429/5xx; not retryable for 401/403 on the Hub and 404.
        ChecksumMismatch: the digest is wrong; the part has been deleted (retryable once, see retry_delay).
        DiskFull: ENOSPC/EDQUOT while writing; the part is kept for a later resume.
    """
    want_sha256 = (expected_sha256 or "").lower() or None
    if want_sha256 and meta.sha256 and want_sha256 != meta.sha256:
        raise TransferError(
            f"{meta.url}: the Hub's file has sha256 {meta.sha256}, the definition expects {want_sha256}",
            retryable=False,
        )
    want_sha256 = want_sha256 or meta.sha256
    if expected_size is not None and meta.size is not None and expected_size != meta.size:
        raise TransferError(
            f"{meta.url}: the Hub's file has {meta.size} bytes, the definition expects {expected_size}",
            retryable=False,
        )
    size = meta.size if meta.size is not None else expected_size
    git_blob_id = meta.git_blob_id if want_sha256 is None else None
    report = progress or (lambda _done: None)

    dest_incomplete.parent.mkdir(parents=True, exist_ok=True)
    loop = asyncio.get_running_loop()
    fetched = 0
    if connections > 1 and size is not None and want_sha256 and size >= 2 * segment_size:
        try:
            return await _segmented(
                meta, dest_incomplete, segmented_part(dest_incomplete), size=size, sha256=want_sha256,
                session=session, limiter=limiter,
                report=report, stall_timeout=stall_timeout, chunk_size=chunk_size, headers=headers,
                min_speed=min_speed, connections=connections, segment_size=segment_size, slots=slots,
                on_segments=on_segments,
            )  # fmt: skip
        except _RangeIgnored:
            log.info("%s: the server ignores Range; one connection, from byte 0", meta.url)
            await loop.run_in_executor(None, _forget_segments, dest_incomplete, 0)
    # A part a segmented download left (another connections setting, or a fallback): its gap-free prefix.
    if segmented_part(dest_incomplete).exists():
        await loop.run_in_executor(None, _forget_segments, dest_incomplete, None, size, want_sha256)
    try:
        part = _Part(dest_incomplete, size, git_blob_id is not None)
    except OSError as exc:
        if exc.errno in _NO_SPACE:
            raise _disk_full(dest_incomplete, exc) from None
        raise
    try:
        start = await loop.run_in_executor(None, part.rehash, size)
        report(start)
        if size is None or start < size:
            async with slots if slots is not None else contextlib.nullcontext():
                fetched = await _stream(
                    meta, part, session=session, limiter=limiter, report=report, size=size,
                    stall_timeout=stall_timeout, min_speed=min_speed, chunk_size=chunk_size, headers=headers,
                )  # fmt: skip
        await loop.run_in_executor(None, part.fsync)
    except OSError as exc:
        if exc.errno in _NO_SPACE:
            raise _disk_full(dest_incomplete, exc) from None
        raise
    finally:
        part.close()

    if size is not None and part.length != size:
        if part.length > size:
            dest_incomplete.unlink(missing_ok=True)
        raise TransferError(f"{meta.url}: got {part.length} of {size} bytes; will resume", retryable=True)
    digest = part.sha256.hexdigest()
    if want_sha256 and digest != want_sha256:
        dest_incomplete.unlink(missing_ok=True)
        raise ChecksumMismatch(
            f"{meta.url}: sha256 mismatch (expected {want_sha256}, got {digest}); the download was discarded"
        )
    if git_blob_id and part.git_sha1 is not None and part.git_sha1.hexdigest() != git_blob_id:
        dest_incomplete.unlink(missing_ok=True)
        raise ChecksumMismatch(f"{meta.url}: git blob id mismatch (expected {git_blob_id}); the download was discarded")
    return Downloaded(sha256=digest, size=part.length, fetched=fetched)


class _Writer:
    """Feeds received bytes to the part in chunks.

    Writing and hashing are two ordered chains in worker threads (both release the GIL), each with one chunk in
    flight while the loop reads the next: with spare cores, network, disk and sha256 all run at once.
    """

    def __init__(self, part: _Part, chunk_size: int, report: Progress) -> None:
        self.part = part
        self.chunk_size = chunk_size
        self.report = report
        self.loop = asyncio.get_running_loop()
        self.batch: list[bytes] = []
        self.batch_len = 0
        self.writing: asyncio.Future[None] | None = None
        self.hashing: asyncio.Future[None] | None = None

    async def add(self, piece: bytes) -> None:
        self.batch.append(piece)
        self.batch_len += len(piece)
        if self.batch_len >= self.chunk_size:
            await self._settle()
            data = b"".join(self.batch) if len(self.batch) > 1 else self.batch[0]
            self.batch, self.batch_len = [], 0
            self.writing = self.loop.run_in_executor(None, self.part.write, data)
            self.hashing = self.loop.run_in_executor(None, self.part.update_hashes, data)

    async def _settle(self) -> None:
        writing, hashing, self.writing, self.hashing = self.writing, self.hashing, None, None
        try:
            if writing is not None:
                await writing
        finally:
            if hashing is not None:
                await hashing  # never leave a thread updating a hash we might read next
        if writing is not None:
            self.report(self.part.length)

    async def flush(self) -> None:
        """Write everything received so far (also after an error: it is a valid prefix of the file)."""
        await self._settle()
        if self.batch:
            data, self.batch, self.batch_len = b"".join(self.batch), [], 0
            await self.loop.run_in_executor(None, self.part.write, data)
            await self.loop.run_in_executor(None, self.part.update_hashes, data)
            self.report(self.part.length)


async def _stream(
    meta: FileMeta,
    part: _Part,
    *,
    session: aiohttp.ClientSession,
    limiter: RateLimiter,
    report: Progress,
    size: int | None,
    stall_timeout: float,
    chunk_size: int,
    headers: Mapping[str, str] | None,
    min_speed: int = 0,
) -> int:
    """One GET of the rest of the file into ``part``; returns bytes fetched. Raises like :func:`download`."""
    loop = asyncio.get_running_loop()
    url = meta.location
    on_hub = bool(meta.url) and same_origin(url, meta.url)
    request_headers = {"Accept-Encoding": "identity", **meta.headers, **(headers or {})}
    if part.length:
        request_headers["Range"] = f"bytes={part.length}-"
    writer = _Writer(part, chunk_size, report)
    fetched = 0
    try:
        async with asyncio.timeout(stall_timeout):
            response, url = await _get_following(
                session, url, meta.url or url, request_headers, chunk_size, stall_timeout
            )
        async with response:
            if response.status >= 400:
                raise _http_error(response.status, url, response.headers, on_hub=on_hub)
            if response.status == 206:
                match = _CONTENT_RANGE_RE.match(response.headers.get("Content-Range", ""))
                if not match or int(match.group(1)) != part.length:
                    await loop.run_in_executor(None, part.restart)
                    raise TransferError(f"{meta.url}: server sent the wrong byte range; restarting", retryable=True)
            elif response.status == 200:
                if part.length:
                    log.info("%s: server ignored Range, restarting from byte 0", meta.url)
                    await loop.run_in_executor(None, part.restart)
                    report(0)
            else:
                raise TransferError(f"{meta.url}: unexpected HTTP status {response.status}", retryable=True)
            received = part.length  # the part, then every byte of this response (the writer lags behind)
            pace = _Pace(limiter, chunk_size, stall_timeout, min_speed)
            try:
                while True:
                    async with asyncio.timeout(stall_timeout):
                        piece = await response.content.read(pace.read_size())
                    if not piece:
                        break
                    received += len(piece)
                    if size is not None and received > size:
                        await writer.flush()
                        await loop.run_in_executor(None, part.restart)
                        raise TransferError(f"{meta.url}: server sent more than {size} bytes; restarting")
                    fetched += len(piece)
                    await limiter.acquire(len(piece))
                    await writer.add(piece)
                    slow = pace.too_slow(len(piece))
                    if slow:
                        raise TransferError(f"{meta.url}: too slow, {slow}; reconnecting", retryable=True)
            finally:
                # Runs on errors too: every byte that arrived is kept, so the next attempt resumes after it.
                await writer.flush()
    except TimeoutError:
        raise TransferError(
            f"{meta.url}: stalled, no data for {stall_timeout:g} s after {format_bytes(part.length)}", retryable=True
        ) from None
    except aiohttp.TooManyRedirects:
        raise TransferError(
            f"{meta.url}: the server redirects in a loop; check hub.endpoint (a mirror or proxy may be misconfigured)",
            retryable=False,
        ) from None
    except aiohttp.ClientError as exc:
        raise TransferError(
            f"{meta.url}: connection lost after {format_bytes(part.length)} ({type(exc).__name__}); will resume",
            retryable=True,
        ) from None
    if size is not None and part.length < size:
        raise TransferError(
            f"{meta.url}: connection closed after {format_bytes(part.length)} of {format_bytes(size)}; will resume",
            retryable=True,
        )
    return fetched


# ---------------------------------------------------------------------------------------------------------------
# Segmented downloads: one file over several connections


class _RangeIgnored(Exception):
    """The server answered a Range request with the whole file (200): segments are impossible there."""


class _LinkExpired(TransferError):
    """The CDN refuses the signed URL now: the attempt ends so the Hub is asked for a fresh one."""


def _forget_segments(incomplete: Path, keep: int | None, size: int | None = None, sha256: str | None = None) -> None:
    """Turn a segmented part into a single-stream ``.incomplete``: its gap-free prefix (or ``keep`` bytes) only.
    The log is first rewritten to claim no more than that, so a kill at any step leaves nothing it over-claims."""
    part = segmented_part(incomplete)
    if not part.exists():
        remove_log(part)
        return
    if keep is None:
        ranges = read_log(part, size, sha256 or "") if size is not None else None
        keep = ranges.prefix() if ranges is not None else 0
        keep = min(keep, part.stat().st_size)
    if size is not None:
        write_log(part, size, sha256 or "", Ranges([(0, keep)] if keep else []))
    os.truncate(part, keep)
    os.replace(part, incomplete)
    remove_log(part)


class _SegmentedPart:
    """The part written at offsets by several connections, its log, and the sha256 of its in-order prefix.

    The digest covers bytes in file order: a write that lands right where hashing stands is hashed from memory;
    one that closes a gap makes the bytes after it contiguous, and those are read back (from the page cache) and
    hashed. A copy of the digest is kept at every segment boundary, so a repaired piece is re-hashed from its own
    start, not from byte 0. Its methods run in worker threads.
    """

    def __init__(self, path: Path, size: int, identity: str, segment_size: int) -> None:
        self.path, self.size, self.identity, self.segment_size = path, size, identity, segment_size
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        length = os.fstat(self.fd).st_size
        ranges = read_log(path, size, identity)
        if ranges is None:  # a single-stream part: what is there is a gap-free prefix
            ranges = Ranges([(0, length)] if 0 < length <= size else [])
        # Never more than the file holds (a log outliving its part after a kill claims nothing then).
        ranges = Ranges((start, min(end, length)) for start, end in ranges if start < length)
        if ranges.total == 0 or length > size:
            os.ftruncate(self.fd, 0)
            ranges = Ranges()
        self.ranges = ranges
        write_log(path, size, identity, ranges)
        self.log_fd = os.open(log_path(path), os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        self.records = 0
        self.lock = threading.Lock()  # ranges and the log
        self.hash_lock = threading.Lock()
        self.sha256 = hashlib.sha256()
        self.hashed = 0
        self.checkpoints: dict[int, Any] = {0: self.sha256.copy()}
        self._buffer = bytearray(_REHASH_BLOCK)
        self._view = memoryview(self._buffer)
        self.unsynced = 0
        self.syncing = False
        # Worker threads still inside a read or write: close() waits for them, so a closed (and reused) fd number
        # is never written (a cancelled executor future does not stop its thread).
        self._busy = 0
        self._closed = False
        self._idle = threading.Condition()

    @contextlib.contextmanager
    def _using(self) -> Any:
        with self._idle:
            if self._closed:
                raise OSError(errno.EBADF, "the part was closed (the download stopped)")
            self._busy += 1
        try:
            yield
        finally:
            with self._idle:
                self._busy -= 1
                self._idle.notify_all()

    def write(self, offset: int, pieces: list[bytes]) -> None:
        """Write ``pieces`` (as read from the socket: never joined, which would copy them) at ``offset``."""
        with self._using():
            self._write(offset, pieces)

    def _write(self, offset: int, pieces: list[bytes]) -> None:
        position = _pwrite_all(self.fd, pieces, offset)
        with self.lock:
            self.ranges.add(offset, position)
            append_log(self.log_fd, offset, position)  # only after the bytes are the kernel's: a kill loses none
            self.records += 1
            if self.records > 4096:  # keep the log short: rewritten merged
                self._compact()
            self.unsynced += position - offset
            sync = self.unsynced >= _SYNC_EVERY and not self.syncing
            if sync:
                self.unsynced, self.syncing = 0, True
        if sync:
            # Written back as it comes, by one connection at a time: the final fsync then has little left (a
            # 1 GiB file's took 0.4 s at the end, a tenth of the whole download on a fast line).
            try:
                os.fdatasync(self.fd)
            finally:
                self.syncing = False
        self.advance(offset, pieces)

    def _compact(self) -> None:
        write_log(self.path, self.size, self.identity, self.ranges)
        os.close(self.log_fd)
        self.log_fd = os.open(log_path(self.path), os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        self.records = 0

    def _hash(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view:
            boundary = (self.hashed // self.segment_size + 1) * self.segment_size
            take = min(len(view), boundary - self.hashed)
            self.sha256.update(view[:take])
            self.hashed += take
            view = view[take:]
            if self.hashed == boundary:
                self.checkpoints[boundary] = self.sha256.copy()

    def advance(self, offset: int | None = None, pieces: list[bytes] | None = None, *, wait: bool = False) -> None:
        """Hash whatever is contiguous beyond what is hashed (without waiting for another thread doing it)."""
        with self._using():
            self._advance(offset, pieces, wait=wait)

    def _advance(self, offset: int | None, pieces: list[bytes] | None, *, wait: bool) -> None:
        if not self.hash_lock.acquire(blocking=wait):
            return
        try:
            if pieces is not None and offset == self.hashed:
                for piece in pieces:
                    self._hash(piece)
            while True:
                with self.lock:
                    prefix = self.ranges.prefix()
                if self.hashed >= prefix:
                    return
                # Into one reused buffer: a fresh 8 MiB bytes object per block costs a page fault every 4 KiB.
                want = min(len(self._buffer), prefix - self.hashed)
                got = os.preadv(self.fd, [self._view[:want]], self.hashed)
                if not got:
                    return
                self._hash(self._view[:got])
        finally:
            self.hash_lock.release()

    def rehash_from(self, offset: int) -> str:
        """The whole file's sha256 again from the checkpoint at or before ``offset`` (after a repair)."""
        with self.hash_lock:
            start = max(k for k in self.checkpoints if k <= offset)
            self.sha256, self.hashed = self.checkpoints[start].copy(), start
            self.checkpoints = {k: v for k, v in self.checkpoints.items() if k <= start}
        self.advance(wait=True)
        return self.sha256.hexdigest()

    def read(self, start: int, end: int) -> bytes:
        with self._using():
            return os.pread(self.fd, end - start, start)

    def overwrite(self, offset: int, data: bytes) -> None:
        with self._using():
            _pwrite_all(self.fd, [data], offset)

    def finish(self) -> None:
        """All bytes are there: hashed to the end and fsynced."""
        self.advance(wait=True)
        with self._using():
            os.fsync(self.fd)

    def close(self) -> None:
        with self._idle:
            self._closed = True
            while self._busy:
                self._idle.wait()
        with self.lock:
            for fd in (self.fd, self.log_fd):
                with contextlib.suppress(OSError):
                    os.close(fd)
            self.fd = self.log_fd = -1


async def _fetch_range(
    meta: FileMeta,
    piece: Assignment,
    write: Callable[[int, list[bytes]], Any],
    *,
    session: aiohttp.ClientSession,
    limiter: RateLimiter,
    stall_timeout: float,
    chunk_size: int,
    headers: Mapping[str, str] | None,
    min_speed: int,
) -> int:
    """Stream ``[piece.position, piece.end)`` of ``meta.location``, handing ``write(offset, pieces)`` each chunk;
    stops early when the piece is shortened (split) under it. Returns the bytes fetched."""
    url = meta.location
    on_hub = bool(meta.url) and same_origin(url, meta.url)
    start = piece.position
    request_headers = {
        "Accept-Encoding": "identity",
        **meta.headers,
        **(headers or {}),
        "Range": f"bytes={start}-{piece.end - 1}",
    }
    request_headers.pop("If-Range", None)  # a Hub file is named by its sha256: its range cannot change under us
    fetched = 0
    buffered: list[bytes] = []
    buffered_len = 0

    async def flush() -> None:
        nonlocal buffered, buffered_len
        if not buffered:
            return
        pieces, length = buffered, buffered_len
        buffered, buffered_len = [], 0
        offset = piece.position
        room = max(0, piece.end - offset)  # a split moved the end: the rest is another piece's
        if length > room:
            kept, total = [], 0
            for data in pieces:
                if total >= room:
                    break
                kept.append(data[: room - total])
                total += len(kept[-1])
            pieces, length = kept, total
        if length:
            await write(offset, pieces)
            piece.position = offset + length

    try:
        async with asyncio.timeout(stall_timeout):
            response, url = await _get_following(
                session, url, meta.url or url, request_headers, chunk_size, stall_timeout
            )
        async with response:
            if response.status in (401, 403) and not on_hub:
                raise _LinkExpired(f"{urlsplit(url).hostname}: download link refused ({response.status})")
            if response.status >= 400:
                raise _http_error(response.status, url, response.headers, on_hub=on_hub)
            if response.status == 200:
                raise _RangeIgnored()
            match = _CONTENT_RANGE_RE.match(response.headers.get("Content-Range", ""))
            if response.status != 206 or not match or int(match.group(1)) != start:
                raise TransferError(f"{meta.url}: server sent the wrong byte range", retryable=True)
            pace = _Pace(limiter, chunk_size, stall_timeout, min_speed)
            try:
                while piece.position + buffered_len < piece.end:
                    async with asyncio.timeout(stall_timeout):
                        data = await response.content.read(pace.read_size())
                    if not data:
                        break
                    fetched += len(data)
                    await limiter.acquire(len(data))
                    buffered.append(data)
                    buffered_len += len(data)
                    if buffered_len >= chunk_size:
                        await flush()
                    slow = pace.too_slow(len(data))
                    if slow:
                        raise TransferError(
                            f"{meta.url}: a connection is too slow, {slow}; its piece goes to another", retryable=True
                        )
            finally:
                await flush()  # every byte that arrived is kept
    except TimeoutError:
        raise TransferError(
            f"{meta.url}: a connection stalled, no data for {stall_timeout:g} s at byte {piece.position}",
            retryable=True,
        ) from None
    except aiohttp.ClientError as exc:
        raise TransferError(
            f"{meta.url}: a connection was lost at byte {piece.position} ({type(exc).__name__})", retryable=True
        ) from None
    if piece.position < piece.end:
        raise TransferError(f"{meta.url}: a connection closed at byte {piece.position}", retryable=True)
    return fetched


async def _segmented(
    meta: FileMeta,
    incomplete: Path,
    path: Path,
    *,
    size: int,
    sha256: str,
    session: aiohttp.ClientSession,
    limiter: RateLimiter,
    report: Progress,
    stall_timeout: float,
    chunk_size: int,
    headers: Mapping[str, str] | None,
    min_speed: int,
    connections: int,
    segment_size: int,
    slots: asyncio.Semaphore | None,
    on_segments: Callable[[list[tuple[int, int, int]]], None] | None = None,
) -> Downloaded:
    """Fetch the gaps of ``path`` over up to ``connections`` connections, check the whole file's sha256, and on a
    mismatch find and re-fetch the bad piece (see :func:`_repair`); the verified file is renamed to ``incomplete``
    for the caller to commit. ``path`` is not named like huggingface_hub's parts: hf resumes a ``.incomplete`` by
    appending at its length, which for a part with holes would make a blob with zeros in it. Raises like
    :func:`download`."""
    loop = asyncio.get_running_loop()
    if not path.exists() and incomplete.exists():
        os.replace(incomplete, path)  # a gap-free prefix (a single-stream part, or hf's): continued here
    try:
        part = await loop.run_in_executor(None, _SegmentedPart, path, size, sha256, segment_size)
    except OSError as exc:
        if exc.errno in _NO_SPACE:
            raise _disk_full(path, exc) from None
        raise
    fetched = 0
    errors: list[TransferError] = []
    budget = 2 * connections + 2  # dropped or stalled connections in one attempt before it gives up
    try:
        await loop.run_in_executor(None, part.advance)  # what a previous attempt left, hashed
        report(part.ranges.total)
        scheduler = Scheduler(part.ranges.gaps(size), segment_size)

        async def write(offset: int, pieces: list[bytes]) -> None:
            await loop.run_in_executor(None, part.write, offset, pieces)
            report(part.ranges.total)
            if on_segments is not None:
                on_segments([(a.start, a.end, a.position) for a in scheduler.running])

        ended = asyncio.Event()

        async def connection() -> None:
            nonlocal fetched
            while True:
                piece = scheduler.next()
                if piece is None:
                    if not scheduler.may_split_later():
                        return
                    # A piece still running may yet prove slow (then take half of it); a piece ending wakes us, so
                    # the last one's end is not followed by a wait.
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(ended.wait(), 0.25)
                    continue
                try:
                    async with slots if slots is not None else contextlib.nullcontext():
                        piece.began = time.monotonic()  # its speed counts from its request, not the wait for a slot
                        fetched += await _fetch_range(
                            meta, piece, write, session=session, limiter=limiter, stall_timeout=stall_timeout,
                            chunk_size=chunk_size, headers=headers, min_speed=min_speed,
                        )  # fmt: skip
                except _LinkExpired:
                    raise
                except TransferError as exc:
                    if not exc.retryable:
                        raise
                    errors.append(exc)
                    if len(errors) > budget:
                        raise
                    log.info("%s; the rest of its piece is fetched again", exc)
                    await asyncio.sleep(min(5.0, 0.2 * 2 ** min(len(errors), 5)))
                finally:
                    scheduler.done(piece)
                    ended.set()  # wakes the connections waiting for a piece to split, then re-arms
                    ended.clear()

        missing = size - part.ranges.total
        count = max(1, min(connections, -(-missing // segment_size)))  # no more connections than pieces
        await _run_all([connection() for _ in range(count)])
        if part.ranges.total < size:
            raise TransferError(f"{meta.url}: got {part.ranges.total} of {size} bytes; will resume", retryable=True)
        await loop.run_in_executor(None, part.finish)
        digest = part.sha256.hexdigest()
        if digest != sha256:
            repaired, extra = await _repair(
                meta, part, sha256, session=session, limiter=limiter, stall_timeout=stall_timeout,
                chunk_size=chunk_size, headers=headers, slots=slots,
            )  # fmt: skip
            fetched += extra
            if not repaired:
                await loop.run_in_executor(None, part.close)
                path.unlink(missing_ok=True)
                remove_log(path)
                raise ChecksumMismatch(
                    f"{meta.url}: sha256 mismatch (expected {sha256}, got {digest}) and re-fetching every piece did "
                    "not fix it; the download was discarded"
                )
            await loop.run_in_executor(None, part.finish)
    except OSError as exc:
        if exc.errno in _NO_SPACE:
            raise _disk_full(path, exc) from None
        raise
    finally:
        await loop.run_in_executor(None, part.close)  # waits for worker threads still writing
    os.replace(path, incomplete)
    remove_log(path)
    return Downloaded(sha256=sha256, size=size, fetched=fetched)


async def _run_all(coroutines: list[Any]) -> None:
    """Run the connections until all end or one fails; a failure stops the others and is raised. A cancel from
    outside (the job stopped) cancels them all and stays a cancel: never mistaken for a connection's error."""
    tasks = [asyncio.ensure_future(c) for c in coroutines]
    try:
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    except asyncio.CancelledError:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    for task in tasks:
        if task in done and not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]


async def _repair(
    meta: FileMeta,
    part: _SegmentedPart,
    sha256: str,
    *,
    session: aiohttp.ClientSession,
    limiter: RateLimiter,
    stall_timeout: float,
    chunk_size: int,
    headers: Mapping[str, str] | None,
    slots: asyncio.Semaphore | None,
) -> tuple[bool, int]:
    """The whole-file sha256 is wrong but every byte arrived: a piece was served corrupted. The Hub gives no
    per-piece hashes, so each piece is fetched again in file order and compared with what is on disk; a piece
    that differs is rewritten and the digest recomputed from that piece's checkpoint. Stops at the first fix
    that makes the sha256 right. Returns (fixed, bytes fetched)."""
    loop = asyncio.get_running_loop()
    fetched = 0
    size, step = part.size, part.segment_size
    # First the disk itself, read from byte 0: a digest fed from memory can differ from what was written (bytes of
    # a piece split under a write, written twice), and then nothing needs fetching at all.
    if await loop.run_in_executor(None, part.rehash_from, 0) == sha256:
        return True, 0
    for start in range(0, size, step):
        end = min(size, start + step)
        received: list[bytes] = []

        async def keep(offset: int, pieces: list[bytes], sink: list[bytes] = received) -> None:
            sink.extend(pieces)

        piece = Assignment(start, end, start)
        async with slots if slots is not None else contextlib.nullcontext():
            fetched += await _fetch_range(
                meta, piece, keep, session=session, limiter=limiter, stall_timeout=stall_timeout,
                chunk_size=chunk_size, headers=headers, min_speed=0,
            )  # fmt: skip
        fresh = b"".join(received)
        on_disk = await loop.run_in_executor(None, part.read, start, end)
        if fresh == on_disk:
            continue
        log.warning("%s: bytes %d-%d were corrupted in transit; re-fetched", meta.url, start, end)
        await loop.run_in_executor(None, part.overwrite, start, fresh)
        digest = await loop.run_in_executor(None, part.rehash_from, start)
        if digest == sha256:
            return True, fetched
    return False, fetched


MAX_REDIRECTS = 10
_REDIRECTS = (301, 302, 303, 307, 308)


def _address_class(address: str) -> str:
    """public, loopback, private or special (link-local, multicast, reserved: never a download's destination)."""
    ip = ipaddress.ip_address(address)
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local or ip.is_multicast or ip.is_reserved or ip.is_unspecified:
        return "special"
    if ip.is_private:
        return "private"
    return "public"


async def _classes(url: str) -> set[str]:
    host = urlsplit(url).hostname or ""
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise TransferError(f"{url}: cannot resolve {host} ({exc.strerror or exc})", retryable=True) from None
    return {_address_class(str(info[4][0])) for info in infos}


async def check_destination(url: str, origin: str) -> None:
    """Refuse to fetch from ``url`` when it is no HTTP(S) URL, or when it leads to a private, loopback or
    link-local address while ``origin`` (the configured endpoint or the allowed host the download started from)
    is not on such an address itself: a CDN redirect to 169.254.169.254 or a 10.x host is not followed (a local
    mirror on such an address is, for its own kind of address). Checked before anything is sent."""
    scheme = urlsplit(url).scheme.lower()
    if scheme not in ("http", "https"):
        raise TransferError(
            f"{origin}: redirected to a {scheme or 'schemeless'} URL; only HTTP(S) is fetched", retryable=False
        )
    wanted = await _classes(url)
    if wanted <= {"public"}:
        return
    allowed = {"public"} | (await _classes(origin) - {"special"})
    if not wanted <= allowed:
        host = urlsplit(url).hostname
        raise TransferError(
            f"{origin}: redirected to {host}, a {'/'.join(sorted(wanted - allowed))} address; refused (only a mirror "
            "configured on such an address may send downloads there; check hub.endpoint and the CDN)",
            retryable=False,
        )


async def _get_following(
    session: aiohttp.ClientSession,
    url: str,
    origin: str,
    headers: dict[str, str],
    chunk_size: int,
    stall_timeout: float,
) -> tuple[aiohttp.ClientResponse, str]:
    """GET ``url``, following redirects one by one so that each destination is checked before it is contacted
    (:func:`check_destination`); credentials never follow a redirect to another origin."""
    current, sent = url, dict(headers)
    for _hop in range(MAX_REDIRECTS + 1):
        await check_destination(current, origin)
        response = await session.get(
            current,
            headers=sent,
            allow_redirects=False,
            read_bufsize=max(chunk_size, 64 * 1024),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=stall_timeout),
        )
        location = response.headers.get("Location")
        if response.status not in _REDIRECTS or not location:
            return response, current
        response.release()
        following = urljoin(current, location)
        if not same_origin(following, current):
            sent = {k: v for k, v in sent.items() if k.lower() not in ("authorization", "cookie")}
        current = following
    raise TransferError(
        f"{origin}: the server redirects in a loop; check hub.endpoint (a mirror or proxy may be misconfigured)",
        retryable=False,
    )


async def url_metadata(
    url: str, *, session: aiohttp.ClientSession, timeout: float = 30.0, expected_sha256: str | None = None
) -> FileMeta:
    """HEAD a plain URL (following redirects, each checked like the download's) for its size and ETag. Raises
    TransferError like download."""
    try:
        current = url
        for _hop in range(MAX_REDIRECTS + 1):
            await check_destination(current, url)
            response = await session.head(
                current,
                allow_redirects=False,
                headers={"Accept-Encoding": "identity"},
                timeout=aiohttp.ClientTimeout(total=timeout),
            )
            location = response.headers.get("Location")
            if response.status not in _REDIRECTS or not location:
                break
            response.release()
            current = urljoin(current, location)
        else:
            raise TransferError(f"{url}: the server redirects in a loop", retryable=False)
        async with response:
            if response.status >= 400:
                raise _http_error(response.status, url, response.headers, on_hub=False)
            length = response.headers.get("Content-Length")
            raw_etag = response.headers.get("ETag") or ""
            etag = raw_etag.removeprefix("W/").strip('"')
            last_modified = response.headers.get("Last-Modified") or ""
    except TimeoutError:
        raise TransferError(f"{url}: no answer within {timeout:g} s", retryable=True) from None
    except aiohttp.ClientError as exc:
        raise TransferError(f"{url}: cannot connect ({type(exc).__name__})", retryable=True) from None
    size = int(length) if length and length.isdigit() else None
    # What says "the same file" when a part is resumed: a strong ETag, else Last-Modified with the size. Sent as
    # If-Range, so a server whose file changed between this HEAD and the GET answers 200 with all of the new one.
    if raw_etag and not raw_etag.startswith("W/"):
        validator = raw_etag
    elif last_modified and size is not None:
        validator = last_modified
    else:
        validator = ""
    return FileMeta(
        repo="",
        revision="",
        path=file_name_of(url),
        size=size,
        sha256=(expected_sha256 or "").lower() or None,
        etag=etag,
        commit=None,
        location=url,
        url=url,
        headers={"If-Range": validator} if validator else {},
    )


def open_session(request_timeout: float) -> aiohttp.ClientSession:
    """The one HTTP client session of the daemon's transfers (created here: only this module uses aiohttp's client).

    No total timeout (a 30 GB file takes hours); connect and per-read limits catch dead peers, and the stall timer
    in :func:`download` catches a body that stops. ``auto_decompress`` is off: bytes are hashed as served.
    """
    timeout = aiohttp.ClientTimeout(total=None, connect=request_timeout, sock_connect=request_timeout)
    connector = aiohttp.TCPConnector(limit=64, ttl_dns_cache=300)
    return aiohttp.ClientSession(timeout=timeout, connector=connector, auto_decompress=False, trust_env=True)
