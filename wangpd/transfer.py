"""Files into the HF cache (or the plain-URL folder): cache check, free space, one writer per part, retries, commit.

:func:`fetch_to_cache` puts a Hub file into the HF cache (metadata, skip when cached, free space, download,
commit) with retries decided by the pure :func:`retry_delay`; :func:`fetch_url` does the same for plain URLs on
allowed hosts. The bytes themselves move through :func:`wangpd.download.download`.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import random
import re
import shutil
import weakref
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from wangpd.config import DownloadConfig
from wangpd.download import Progress, download, url_metadata
from wangpd.errors import ChecksumMismatch, DiskFull, TransferError
from wangpd.hfcache import HFCache
from wangpd.hfurl import file_name_of, plain_url_refusal
from wangpd.hub import Hub
from wangpd.limiter import RateLimiter
from wangpd.models import FileMeta
from wangpd.paths import PART_SUFFIX, fsync_dir, unique_temp_name
from wangpd.segments import segmented_part
from wangpd.units import format_bytes

if TYPE_CHECKING:
    import aiohttp

__all__ = [
    "FetchResult",
    "default_url_dir",
    "fetch_to_cache",
    "fetch_url",
    "retry_delay",
]

log = logging.getLogger(__name__)

_REHASH_BLOCK = 8 * 1024 * 1024
_MIN_PIECE = 16 * 1024


@dataclass(frozen=True)
class FetchResult:
    """Result of :func:`fetch_to_cache` / :func:`fetch_url`."""

    path: Path  # the snapshot file in the HF cache (or the downloaded file for plain URLs)
    meta: FileMeta
    fetched: int  # bytes moved over the network by this call (0 when already cached)
    cached: bool  # True when the file was already complete and nothing was downloaded


# ---------------------------------------------------------------------------------------------------------------
# Retry policy


def retry_delay(
    error: BaseException,
    attempt: int,
    backoff_max: float,
    *,
    max_attempts: int | None = None,
    checksum_failures: int = 0,
    backoff_base: float = 1.0,
    rng: Callable[[], float] = random.random,
) -> float | None:
    """Seconds to wait before attempt ``attempt + 1``, or None to give up. Pure apart from ``rng``.

    ``attempt`` counts attempts made so far (1 after the first failure). Gives up on errors that are not
    retryable (auth, not found, disk full), after ``max_attempts``, and after a second checksum mismatch.
    A server's ``Retry-After`` is honoured as given (plus up to 10 % jitter); otherwise exponential backoff from
    ``backoff_base`` capped at ``backoff_max``, with jitter in [50 %, 100 %] so that parallel retries spread out.
    """
    if isinstance(error, DiskFull) or not isinstance(error, TransferError) or not error.retryable:
        return None
    if isinstance(error, ChecksumMismatch) and checksum_failures >= 2:
        return None
    if max_attempts is not None and attempt >= max_attempts:
        return None
    if error.retry_after is not None:
        return error.retry_after + min(1.0, error.retry_after * 0.1) * rng()
    delay = min(backoff_max, backoff_base * 2.0 ** max(0, attempt - 1))
    return delay * (0.5 + 0.5 * rng())


# ---------------------------------------------------------------------------------------------------------------
# Into the HF cache


def _check_space(directory: Path, remaining: int, reserve: int) -> None:
    free = shutil.disk_usage(directory).free
    if free < remaining + reserve:
        raise DiskFull(
            f"{directory}: {format_bytes(free)} free, need {format_bytes(remaining)} more plus the "
            f"{format_bytes(reserve)} reserve (download.free_space_reserve); free some space and retry"
        )


_part_locks: weakref.WeakValueDictionary[Path, asyncio.Lock] = weakref.WeakValueDictionary()


def _lock_for(path: Path) -> asyncio.Lock:
    # Two jobs wanting the same blob must not write one .incomplete at the same time.
    lock = _part_locks.get(path)
    if lock is None:
        lock = asyncio.Lock()
        _part_locks[path] = lock
    return lock


OnRetry = Callable[[BaseException, int, float], None]


async def _with_retries(
    attempt_once: Callable[[int], Awaitable[FetchResult]],
    config: DownloadConfig,
    *,
    backoff_base: float,
    on_retry: OnRetry | None,
    sleep: Callable[[float], Awaitable[None]],
) -> FetchResult:
    attempt = 0
    checksum_failures = 0
    while True:
        attempt += 1
        try:
            return await attempt_once(attempt)
        except TransferError as exc:
            if isinstance(exc, ChecksumMismatch):
                checksum_failures += 1
            delay = retry_delay(
                exc,
                attempt,
                config.backoff_max,
                max_attempts=config.max_attempts,
                checksum_failures=checksum_failures,
                backoff_base=backoff_base,
            )
            if delay is None:
                if exc.retryable and attempt > 1:
                    # The last word, not a promise: "...; will resume" is no reason to leave on a failed job.
                    reason = re.sub(r"; (will resume|restarting)$", "", str(exc))
                    raise type(exc)(f"{reason}; gave up after {attempt} attempts", retryable=True) from exc
                raise
            log.info("%s (attempt %d), retrying in %.1f s", exc, attempt, delay)
            if on_retry is not None:
                on_retry(exc, attempt, delay)
            await sleep(delay)


async def fetch_to_cache(
    repo: str,
    revision: str,
    path: str,
    *,
    hub: Hub,
    cache: HFCache,
    session: aiohttp.ClientSession,
    limiter: RateLimiter,
    config: DownloadConfig,
    meta: FileMeta | None = None,
    expected_sha256: str | None = None,
    progress: Progress | None = None,
    on_retry: OnRetry | None = None,
    backoff_base: float = 1.0,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    slots: asyncio.Semaphore | None = None,
    on_segments: Callable[[list[tuple[int, int, int]]], None] | None = None,
) -> FetchResult:
    """Make ``repo@revision/path`` complete in the HF cache and return its snapshot file.

    Order: the cache without network (``refs`` + snapshot) -> Hub metadata (``meta`` if given, e.g. from the
    store's ``hf_file_cache``, for the first attempt; fresh on every retry so expired CDN links renew) -> the
    cache again by blob -> free space for the remaining bytes plus ``config.free_space_reserve`` -> download
    into ``blobs/<etag>.incomplete`` -> commit. Retries follow :func:`retry_delay` with ``config.max_attempts``
    and ``config.backoff_max``; ``on_retry(error, attempt, delay)`` is told before each wait.

    Raises TransferError (not retryable, or out of attempts), ChecksumMismatch (twice), DiskFull.
    """
    cached = cache.find_cached(repo, revision, path)
    if cached is not None and meta is None:
        return FetchResult(path=cached, meta=cache.cached_meta(repo, revision, path, cached), fetched=0, cached=True)
    if cached is not None and meta is not None and meta.commit and cached.parent.name == meta.commit:
        return FetchResult(path=cached, meta=meta, fetched=0, cached=True)
    given_meta = meta

    async def attempt_once(attempt: int) -> FetchResult:
        file_meta = given_meta if attempt == 1 and given_meta is not None else None
        if file_meta is None:
            file_meta = await hub.file_metadata(repo, revision, path)
        found = cache.find_cached(repo, revision, path, meta=file_meta)
        if found is not None:
            return FetchResult(path=found, meta=file_meta, fetched=0, cached=True)
        paths = cache.prepare(file_meta)
        async with _lock_for(paths.incomplete):
            found = cache.find_cached(repo, revision, path, meta=file_meta)
            if found is not None:  # another job finished it while we waited
                return FetchResult(path=found, meta=file_meta, fetched=0, cached=True)
            have = max(_bytes_on_disk(paths.incomplete), _bytes_on_disk(segmented_part(paths.incomplete)))
            _check_space(paths.blob.parent, max(0, (file_meta.size or 0) - have), config.free_space_reserve)
            result = await download(
                file_meta,
                paths.incomplete,
                session=session,
                limiter=limiter,
                expected_sha256=expected_sha256,
                progress=progress,
                stall_timeout=config.stall_timeout,
                min_speed=config.min_speed,
                chunk_size=config.chunk_size,
                connections=config.connections_per_file,
                segment_size=config.segment_size,
                slots=slots,
                on_segments=on_segments,
            )
            snapshot = await asyncio.to_thread(cache.commit_blob, paths.incomplete, file_meta)
        return FetchResult(path=snapshot, meta=file_meta, fetched=result.fetched, cached=False)

    return await _with_retries(attempt_once, config, backoff_base=backoff_base, on_retry=on_retry, sleep=sleep)


# ---------------------------------------------------------------------------------------------------------------
# Plain URLs (user finetunes on other hosts)


def _bytes_on_disk(path: Path) -> int:
    """What a part already holds: its blocks, not its length (a segmented part has holes until it is complete)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return 0
    return min(st.st_size, st.st_blocks * 512)


def default_url_dir(cache_dir: Path) -> Path:
    """Where plain-URL downloads go by default: ``<hub cache>/../wangpd-urls``.

    Not inside the hub cache itself: ``hf cache ls`` reports any folder there that is not ``models--...`` as
    corrupt. Layout: ``<url_dir>/<host>/<sha256(url)[:16]>/<file name>`` (and ``<file name>.incomplete`` while
    downloading), so two URLs with the same file name never collide and a finished file is never fetched again.
    """
    return Path(cache_dir).expanduser().parent / "wangpd-urls"


def url_file_path(url_dir: Path, url: str) -> Path:
    """The final path of a plain-URL download under ``url_dir`` (see :func:`default_url_dir`)."""
    parts = urlsplit(url)
    name = file_name_of(url)
    digest = hashlib.sha256(url.encode("utf-8")).hexdigest()[:16]
    return Path(url_dir) / (parts.hostname or "unknown").lower() / digest / name


def _check_allowed(url: str, allowed_hosts: Sequence[str], allow_http: bool) -> None:
    refusal = plain_url_refusal(url, tuple(allowed_hosts), allow_http=allow_http)
    if refusal is not None:
        raise TransferError(refusal, retryable=False)


async def fetch_url(
    url: str,
    *,
    url_dir: Path,
    allowed_hosts: Sequence[str],
    session: aiohttp.ClientSession,
    limiter: RateLimiter,
    config: DownloadConfig,
    expected_sha256: str | None = None,
    expected_size: int | None = None,
    progress: Progress | None = None,
    on_retry: OnRetry | None = None,
    allow_http: bool = False,
    backoff_base: float = 1.0,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    slots: asyncio.Semaphore | None = None,
) -> FetchResult:
    """Download a plain URL from an allowed host to ``url_file_path(url_dir, url)``, like :func:`fetch_to_cache`.

    Resume, shaping, stall detection and retries are the same; the sha256 is checked when ``expected_sha256``
    is given (the Hub is not there to say it). ``allow_http`` is for tests on loopback.
    """
    _check_allowed(url, allowed_hosts, allow_http)
    final = url_file_path(url_dir, url)
    incomplete = final.with_name(final.name + PART_SUFFIX)

    def finished(meta: FileMeta) -> FetchResult | None:
        if final.is_file() and (expected_size is None or final.stat().st_size == expected_size):
            return FetchResult(path=final, meta=meta, fetched=0, cached=True)
        return None

    placeholder = FileMeta("", "", final.name, expected_size, expected_sha256, "", None, url, url)
    done = finished(placeholder)
    if done is not None:
        return done

    async def attempt_once(_attempt: int) -> FetchResult:
        meta = await url_metadata(url, session=session, expected_sha256=expected_sha256)
        async with _lock_for(incomplete):
            done = finished(meta)
            if done is not None:
                return done
            final.parent.mkdir(parents=True, exist_ok=True)
            await asyncio.to_thread(_same_version_or_restart, incomplete, meta)
            have = incomplete.stat().st_size if incomplete.exists() else 0
            total = expected_size if expected_size is not None else meta.size
            _check_space(final.parent, max(0, (total or 0) - have), config.free_space_reserve)
            result = await download(
                meta,
                incomplete,
                session=session,
                limiter=limiter,
                expected_sha256=expected_sha256,
                expected_size=expected_size,
                progress=progress,
                stall_timeout=config.stall_timeout,
                min_speed=config.min_speed,
                chunk_size=config.chunk_size,
                slots=slots,  # one connection: a plain URL's file is resumed by its validator, not by ranges
            )
            await asyncio.to_thread(_commit_plain, incomplete, final)
        return FetchResult(path=final, meta=meta, fetched=result.fetched, cached=False)

    return await _with_retries(attempt_once, config, backoff_base=backoff_base, on_retry=on_retry, sleep=sleep)


def _validator_file(incomplete: Path) -> Path:
    return incomplete.with_name(incomplete.name + ".validator")


def _same_version_or_restart(incomplete: Path, meta: FileMeta) -> None:
    """A plain URL's part is resumed only when the server's validator (strong ETag, else Last-Modified + size) is
    the one it was started with: otherwise its head is another version's, and resuming would make a file of two
    (aria2 and curl -C do the same check). Without any validator a part cannot be trusted: restart from zero.
    The validator is kept beside the part, so a restart of the daemon checks it too."""
    validator = f"{meta.headers.get('If-Range', '')} {meta.size}"
    record = _validator_file(incomplete)
    try:
        started_with = record.read_text(encoding="utf-8")
    except OSError:
        started_with = None
    if incomplete.exists() and (started_with != validator or not meta.headers.get("If-Range")):
        log.info(
            "%s: the server's file changed since the part was started (or says nothing to tell); restarting from zero",
            meta.url,
        )
        incomplete.unlink()
    if started_with != validator:
        temp = unique_temp_name(record)
        temp.write_text(validator, encoding="utf-8")
        os.replace(temp, record)


def _commit_plain(incomplete: Path, final: Path) -> None:
    os.replace(incomplete, final)
    fsync_dir(final.parent)
    _validator_file(incomplete).unlink(missing_ok=True)
