"""The engine: claims queued jobs and turns them into verified files where Wan2GP looks.

For each job, cheapest first: the file is already there -> InvokeAI has it (link, download nothing) -> the HF
cache has it -> download into the HF cache (shaped, resumable, verified) -> link into place. A poll loop with a
dict of running tasks, as in arq; every end of a job is one guarded store transition.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from wangpd import prune, transfer
from wangpd.config import Config
from wangpd.download import Progress, open_session
from wangpd.errors import BadState, DiskFull, NotFound, StoreError, TargetExists, TransferError, WangpError
from wangpd.events import EventBus
from wangpd.layout import Layout
from wangpd.limiter import RateLimiter, SpeedMeter
from wangpd.linker import link_into_place
from wangpd.models import Job, JobState, Made
from wangpd.paths import PART_SUFFIX, temp_name
from wangpd.segments import remove_log, segmented_part
from wangpd.sources import Sources
from wangpd.store import Store

__all__ = ["Engine"]

log = logging.getLogger(__name__)

PROGRESS_INTERVAL = 0.5  # seconds between progress writes to the store and events


class Engine:
    """Runs up to ``download.concurrency`` jobs at once; all share one :class:`RateLimiter`."""

    def __init__(
        self,
        config: Config,
        store: Store,
        events: EventBus,
        sources: Sources,
        *,
        layout: Callable[[], Layout],
        paused: bool = False,
    ) -> None:
        """``layout`` gives the Wan2GP folders as the latest wgp_config.json lays them out (links may go there)."""
        self.config = config
        self.store = store
        self.events = events
        self.sources = sources
        self.limiter = RateLimiter(0)  # the daemon sets the limit in force right after
        # Connections open at once over every transfer (download.max_connections): each holds one while it streams.
        self.slots = asyncio.Semaphore(config.download.max_connections)
        self.paused = paused
        self.running: dict[int, asyncio.Task[None]] = {}
        # Job endings the store could not take (its disk full), written by the loop as soon as it can.
        self.unrecorded: dict[int, Callable[[], Any]] = {}
        self.speeds: dict[int, float] = {}
        # Running pieces of each segmented job, (start, end, position): `wangpctl job show` lists them.
        self.segments: dict[int, list[tuple[int, int, int]]] = {}
        self._wake = asyncio.Event()
        self._halting: set[asyncio.Task[None]] = set()
        self.layout = layout
        self._session: Any = None
        self._loop_task: asyncio.Task[None] | None = None

    # ---- lifecycle -----------------------------------------------------------------------------------------------

    async def start(self) -> None:
        self._session = open_session(self.config.hub.request_timeout)
        self._loop_task = asyncio.create_task(self._loop(), name="engine")

    async def stop(self) -> None:
        """Stop every transfer (parts are kept) and put its job back to queued for the next start."""
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        await self._halt(list(self.running), requeue=True)
        if self._session is not None:
            await self._session.close()

    def reconfigure(self, config: Config) -> None:
        """A reloaded config applies to the next job (the sources were reconfigured first); running ones go on."""
        if config.download.max_connections != self.config.download.max_connections:
            self.slots = asyncio.Semaphore(config.download.max_connections)  # running transfers keep the old one
        self.config = config
        self._wake.set()

    # ---- control -------------------------------------------------------------------------------------------------

    def set_rate(self, rate: int) -> None:
        self.limiter.set_rate(rate)

    def set_paused(self, paused: bool) -> None:
        self.paused = paused
        if paused:
            # Referenced until done: the loop keeps only weak references to tasks.
            halting = asyncio.get_running_loop().create_task(self._halt(list(self.running), requeue=True))
            self._halting.add(halting)
            halting.add_done_callback(self._halting.discard)
        self._wake.set()

    def job_changed(self, job: Job | None) -> None:
        """Pause/cancel of a running job stops its transfer; anything else may make work: wake the loop."""
        if job is not None and job.id in self.running and job.state is not JobState.DOWNLOADING:
            self.running[job.id].cancel()
        self._wake.set()

    def total_speed(self) -> float:
        return sum(self.speeds.values())

    async def _halt(self, job_ids: Sequence[int], *, requeue: bool) -> None:
        tasks = [self.running[i] for i in job_ids if i in self.running]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if requeue:
            for job_id in job_ids:
                self._record(job_id, lambda j=job_id: self.store.requeue_if_downloading(j))

    # ---- the loop ------------------------------------------------------------------------------------------------

    async def _loop(self) -> None:
        while True:
            try:
                if self.unrecorded:
                    self._write_unrecorded()
                # Nothing new starts while the queue database cannot be written: its progress and end would be lost.
                if not self.paused and not self.unrecorded and self.store.write_error is None:
                    while len(self.running) < self.config.download.concurrency:
                        job = self.store.claim_next(exclude=self.running)
                        if job is None:
                            break
                        self.running[job.id] = asyncio.create_task(self._run(job), name=f"job-{job.id}")
            except Exception:  # e.g. the state disk is full: keep trying, never let the engine die silently
                log.exception("the engine could not claim work; trying again in 5 s")
                await asyncio.sleep(5)
            self._wake.clear()
            # Woken by a change, or every second anyway (a cheap safety net against a missed wake-up).
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), 1.0)

    async def _run(self, job: Job) -> None:
        started = time.monotonic()
        self.events.publish("job", id=job.id, state="downloading", target=job.target, attempt=job.attempts)
        try:
            source, fetched = await self._complete(job)
        except asyncio.CancelledError:
            self.speeds.pop(job.id, None)
            raise
        except DiskFull as exc:
            self._fail(job, f"disk full: {exc}")
        except WangpError as exc:  # TransferError, TargetExists, OutsideRoots...: the reason is the message
            self._fail(job, str(exc))
        except OSError as exc:
            self._fail(job, f"{exc.strerror or exc} ({exc.filename or job.target})")
        except Exception as exc:  # a bug must fail one job, not the daemon
            log.exception("job %d failed unexpectedly", job.id)
            self._fail(job, f"internal error: {type(exc).__name__}: {exc}")
        else:
            fields = {"source": source, "last_error": None, **({"bytes_done": job.size} if job.size else {})}
            done = self._record(job.id, lambda: self.store.transition(job.id, JobState.COMPLETE, **fields))
            if done is not None:
                seconds = time.monotonic() - started
                log.info(
                    "job %d complete via %s: %s (%s fetched in %.1fs)",
                    job.id,
                    source,
                    done.target,
                    _human(fetched),
                    seconds,
                )
                self.events.publish(
                    "job", id=job.id, state="complete", source=source, target=done.target, fetched=fetched
                )
        finally:
            self.speeds.pop(job.id, None)
            self.segments.pop(job.id, None)
            self.running.pop(job.id, None)
            self._wake.set()

    def _fail(self, job: Job, message: str) -> None:
        if self._record(job.id, lambda: self.store.transition(job.id, JobState.FAILED, last_error=message[:1000])):
            log.error("job %d failed: %s: %s", job.id, Path(job.target).name, message)
            self.events.publish("job", id=job.id, state="failed", error=message, target=job.target)

    def _record(self, job_id: int, write: Callable[[], Any]) -> Any:
        """Write how a job ended. When the store cannot be written (its disk is full), the ending is kept and
        written by the loop once it can, so the queue never shows a finished job as downloading for good."""
        try:
            return write()
        except (BadState, NotFound):
            return None  # changed meanwhile (cancelled, paused), or its row is gone: that word stands
        except StoreError as exc:
            if job_id not in self.unrecorded:
                log.warning("job %d: %s; its end is written once the queue database can be written", job_id, exc)
            self.unrecorded[job_id] = write
            return None

    def _write_unrecorded(self) -> None:
        for job_id, write in list(self.unrecorded.items()):
            try:
                job = write()
            except (BadState, NotFound):
                job = None
            except StoreError:
                return  # still full: try again on the next turn
            del self.unrecorded[job_id]
            if job is not None:
                log.info("job %d: its end (%s) is written now", job_id, job.state.value)
                self.events.publish("job", id=job.id, state=job.state.value, target=job.target, why="recorded late")

    def _link(self, source: Path, target: Path) -> str:
        roots = self.layout().link_roots()
        try:
            return link_into_place(source, target, mode=self.config.download.link_mode, allowed_roots=roots)  # type: ignore[arg-type]
        except PermissionError:
            # errno names the HF-cache file (the link's source); the folder that refused is what to fix.
            folder = target.parent
            raise WangpError(
                f"{folder}: permission denied: cannot create {target.name} there; give the daemon's user write "
                f"access to {folder} (the file itself is complete in the HF cache)"
            ) from None

    async def _complete(self, job: Job) -> tuple[str, int]:
        """Make the job's target exist with the right content; return (how, bytes fetched)."""
        target = Path(job.target)
        if job.path.endswith("/"):
            if target.exists():  # Wan2GP skips a folder that exists, whatever is in it
                return "present", 0
            return await self._complete_folder(job, target)
        if target.is_file():  # Wan2GP takes any file at its path as complete; so do we (never overwrite it)
            return "present", 0
        if target.exists():
            # A folder, FIFO or device where Wan2GP looks for a file: it would not load it, and it is not ours to
            # replace. Said before a byte is fetched.
            kind = "a folder" if target.is_dir() else "something that is not a file"
            raise TargetExists(f"{target}: {kind} is where Wan2GP looks for this file; left alone")
        if job.repo:
            found = self.sources.invokeai.find(job.repo, job.path, job.url, job.size)
            if found is not None:
                await self._link_made(job, found, target)
                return "invokeai", 0
            meta = None
            if job.size is None:
                # Ask first so progress has a total from the first byte (`wangpctl follow` draws a bar); the same
                # answer serves fetch_to_cache's first attempt, so it costs no extra request.
                try:
                    meta = await self.sources.hub.file_metadata(job.repo, job.revision, job.path)
                except TransferError as exc:
                    if not exc.retryable:
                        raise
                else:
                    self.sources.remember(meta)
                    job = self.store.set_job_fields(job.id, size=meta.size, sha256=job.sha256 or meta.sha256)
            if self.sources.library_candidate(job.size) and not self.sources.in_cache(job.repo, job.revision, job.path):
                # A library file of the same size: worth one metadata request for the Hub's sha256 now (the
                # stored one may be stale), and worth hashing the candidates (each at most once).
                if meta is None:
                    with contextlib.suppress(TransferError):
                        meta = await self.sources.hub.file_metadata(job.repo, job.revision, job.path)
                        self.sources.remember(meta)
                if meta is not None and meta.sha256 is not None and meta.size is not None:
                    found = await self.sources.find_in_library(meta.size, meta.sha256)
                    if found is not None:
                        await self._link_made(job, found, target)
                        return "library", 0
            result = await transfer.fetch_to_cache(
                job.repo,
                job.revision,
                job.path,
                hub=self.sources.hub,
                cache=self.sources.cache,
                session=self._session,
                limiter=self.limiter,
                config=self.config.download,
                meta=meta,
                # A Hub file's sha256 is the Hub's word, read again on every attempt and always checked; the one
                # stored with the job is what the Hub said earlier. Demanding it would fail for good a file that
                # was replaced on the Hub meanwhile (retry and re-add included), keeping a stale part.
                expected_sha256=None,
                progress=self._progress(job),
                on_retry=self._on_retry(job),
                slots=self.slots,
                on_segments=lambda running, job_id=job.id: self.segments.__setitem__(job_id, running),
            )
            self.sources.remember(result.meta)
            changed = job.sha256 is not None and result.meta.sha256 is not None and result.meta.sha256 != job.sha256
            if changed:
                log.info(
                    "job %d: %s changed on the Hub since it was queued (sha256 %s... -> %s...); the new version "
                    "was fetched",
                    job.id,
                    job.path,
                    job.sha256[:12],
                    result.meta.sha256[:12],
                )
                await asyncio.to_thread(self._drop_stale_part, job.repo, job.sha256)
            if (job.size is None or changed) and result.meta.size is not None:
                with contextlib.suppress(StoreError):  # the file is there: its size is a detail
                    self.store.set_job_fields(job.id, size=result.meta.size, sha256=result.meta.sha256)
        else:
            result = await transfer.fetch_url(
                job.url,
                url_dir=transfer.default_url_dir(self.config.hub.cache_dir),
                allowed_hosts=self.config.hub.allowed_hosts,
                session=self._session,
                limiter=self.limiter,
                config=self.config.download,
                expected_sha256=job.sha256,
                expected_size=job.size,
                progress=self._progress(job),
                on_retry=self._on_retry(job),
                slots=self.slots,
            )
        if not result.cached:
            self._remember_made(prune.made_blob(result.path, job.repo or job.url, job.id))
        await self._link_made(job, result.path, target)
        return ("hf-cache" if result.cached else "download"), result.fetched

    async def _link_made(self, job: Job, source: Path, target: Path) -> None:
        """Link ``target`` and remember that wangpd made it (so ``prune`` may remove it, and only it)."""
        mode = await asyncio.to_thread(self._link, source, target)
        self._remember_made([prune.made_link(target, mode, job.id)])

    def _remember_made(self, records: list[Made]) -> None:
        try:
            self.store.record_made(records)
        except StoreError as exc:  # the file is in place; only `prune` will not know it was ours
            log.warning("could not note what was made (%s): %s", ", ".join(r.path for r in records), exc)

    async def _complete_folder(self, job: Job, target: Path) -> tuple[str, int]:
        """A whole repo folder (Wan2GP's ``snapshot_download(allow_patterns=...)``): fetch every file into the HF
        cache, build the folder of links under a temporary name, then rename it into place, so Wan2GP never sees a
        half-filled folder (it would take it as complete)."""
        files = await self.sources.hub.list_folder(job.repo, job.revision, job.path)
        if not files:
            raise TransferError(f"{job.repo}@{job.revision}/{job.path}: folder is empty or missing", retryable=False)
        total = sum(size or 0 for _, size in files)
        self.store.set_job_fields(job.id, size=total)
        report = self._progress(job)
        done = 0
        fetched = 0
        snapshots: list[tuple[str, Path]] = []
        for path, size in files:
            result = await transfer.fetch_to_cache(
                job.repo,
                job.revision,
                path,
                hub=self.sources.hub,
                cache=self.sources.cache,
                session=self._session,
                limiter=self.limiter,
                config=self.config.download,
                progress=lambda n, base=done: report(base + n),
                on_retry=self._on_retry(job),
                slots=self.slots,
            )
            self.sources.remember(result.meta)
            if not result.cached:
                self._remember_made(prune.made_blob(result.path, job.repo, job.id))
            fetched += result.fetched
            done += size or result.meta.size or 0
            snapshots.append((path[len(job.path) :], result.path))
        temporary = temp_name(target)

        def build() -> None:
            if temporary.exists():
                shutil.rmtree(temporary)  # ours: left by an interrupted earlier attempt
            for relative, snapshot in snapshots:
                link = temporary / relative
                link.parent.mkdir(parents=True, exist_ok=True)
                self._link(snapshot, link)
            os.rename(temporary, target)

        await asyncio.to_thread(build)
        self._remember_made([prune.made_folder(target, job.id)])
        return ("hf-cache" if fetched == 0 else "download"), fetched

    def _drop_stale_part(self, repo: str, old_sha256: str) -> None:
        """The part of a version the Hub no longer serves: wangpd's own, of no use any more."""
        part = self.sources.cache.repo_dir(repo) / "blobs" / f"{old_sha256}{PART_SUFFIX}"
        for one in (part, segmented_part(part)):
            with contextlib.suppress(FileNotFoundError):
                one.unlink()  # the part first: a log left alone claims nothing of a file that is not there
                log.info("removed the part of the old version: %s", one)
            remove_log(one)

    def _progress(self, job: Job) -> Progress:
        meter = SpeedMeter()
        last = [0.0]

        def report(bytes_done: int) -> None:
            speed = meter.update(bytes_done)
            self.speeds[job.id] = speed
            now = time.monotonic()
            if now - last[0] >= PROGRESS_INTERVAL:
                last[0] = now
                with contextlib.suppress(StoreError):  # progress is a hint: the transfer goes on without it
                    self.store.update_progress(job.id, bytes_done, speed)
                self.events.publish("progress", id=job.id, bytes_done=bytes_done, size=job.size, speed=round(speed))

        return report

    def _on_retry(self, job: Job) -> Any:
        def told(error: BaseException, attempt: int, delay: float) -> None:
            log.warning("job %d: %s; try %d in %.1fs", job.id, error, attempt + 1, delay)
            with contextlib.suppress(StoreError):  # a note only: the retry goes on without it
                self.store.set_job_fields(job.id, last_error=f"retrying: {error}"[:1000])
            self.events.publish("retry", id=job.id, error=str(error), attempt=attempt, delay=round(delay, 1))

        return told


def _human(count: int) -> str:
    from wangpd.units import format_bytes

    return format_bytes(count)
