"""Wiring: the one module that knows every part. ``startup -> serve -> shutdown``, signals, systemd, reload."""

from __future__ import annotations

import asyncio
import contextlib
import grp
import logging
import os
import signal
import time
from pathlib import Path
from typing import Any

from wangpd import __version__
from wangpd.config import Config, load_config
from wangpd.control import Control, status_line
from wangpd.engine import Engine
from wangpd.errors import AlreadyRunning, StoreError
from wangpd.events import EventBus
from wangpd.keeper import Keeper
from wangpd.layout import Layout
from wangpd.models import Job
from wangpd.notify import Notifier
from wangpd.paths import is_own_temp, lock_exclusive
from wangpd.rpc import AccessPolicy, RpcServer
from wangpd.schedule import Bandwidth
from wangpd.sources import Sources
from wangpd.store import Store
from wangpd.units import parse_rate
from wangpd.watcher import Watcher

__all__ = ["Daemon"]

log = logging.getLogger("wangpd")


class Daemon:
    """One running wangpd. Built from a checked Config; :meth:`run` serves until SIGTERM/SIGINT or :meth:`stop`.

    The composition root: it builds every part, runs the background loops and carries out the verbs only it can
    (pause, limit, reload, rescan, wake). What clients see of it is :class:`wangpd.view.DaemonView`.
    """

    def __init__(self, config: Config) -> None:
        self.config = config
        self.events = EventBus()
        self.notifier = Notifier(dict(config.environ))
        self.control = Control(self)
        # Built in startup(), before anything uses them.
        self.store: Store = None  # type: ignore[assignment]
        self.sources: Sources = None  # type: ignore[assignment]
        self.keeper: Keeper = None  # type: ignore[assignment]
        self.bandwidth: Bandwidth = None  # type: ignore[assignment]
        self.engine: Engine | None = None
        self.rpc: RpcServer | None = None
        self.watcher: Watcher | None = None
        self.started = time.monotonic()
        self.started_wall = time.time()
        self.paused = False
        self.listening = ""
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[Any]] = []
        self._signals = 0
        # Every part started registers how to undo it: shutdown() (or a startup that fails half-way) runs them in
        # reverse, so the RPC server stops accepting first and the database lock goes last.
        self._exit = contextlib.AsyncExitStack()

    # ---- lifecycle -----------------------------------------------------------------------------------------------

    async def run(self) -> int:
        """Serve until asked to stop. Returns the process exit code."""
        await self.startup()
        try:
            await self._stop.wait()
        finally:
            await self.shutdown()
        return 0

    async def startup(self) -> None:
        """Start every part, in dependency order; on any failure, undo what was started and raise."""
        try:
            await self._startup()
        except BaseException:
            await self._exit.aclose()
            raise

    async def _startup(self) -> None:
        cfg = self.config
        # Another wangpd on the same queue must not "recover" the live one's running jobs before it learns that the
        # socket is taken: the database is locked first, for the daemon's whole life.
        self._exit.callback(os.close, _lock_database(cfg.daemon.db_path))
        self.store = Store.open(cfg.daemon.db_path)
        self._exit.callback(self.store.close)
        for job in self.store.recover():
            log.info(
                "job %d (%s) was downloading when wangpd stopped; queued again, resumes from its part",
                job.id,
                Path(job.target).name,
            )
        self.paused = bool(self.store.get_setting("paused", False))
        manual = _stored_limit(self.store)

        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._on_stop_signal, signum)
        loop.add_signal_handler(signal.SIGHUP, self._on_reload_signal)
        self._exit.callback(_remove_signal_handlers, loop)

        # One Hub client, HF cache and InvokeAI index, shared by planning (keeper) and fetching (engine).
        self.sources = Sources(cfg, self.store)
        await asyncio.to_thread(self.sources.refresh_invokeai)
        self.keeper = Keeper(
            cfg, self.store, self.events, self.sources, wake=lambda: self.job_changed(None), stop_job=self.job_changed
        )
        self.engine = Engine(cfg, self.store, self.events, self.sources, layout=self.keeper.layout, paused=self.paused)
        self._exit.push_async_callback(self._stop_engine)
        self.bandwidth = Bandwidth(cfg.download, self.engine.set_rate, manual)
        self._exit.push_async_callback(self._cancel_tasks)

        gid = grp.getgrnam(cfg.daemon.socket_group).gr_gid if cfg.daemon.socket_group else None
        self.rpc = RpcServer(
            self.control, self.events, AccessPolicy(cfg.daemon.socket_group, cfg.daemon.read_only_others)
        )
        self.listening = await self.rpc.start(cfg.daemon.socket, gid, dict(cfg.environ))
        self._exit.push_async_callback(self.rpc.stop)
        await self.engine.start()
        log.info(
            "wangpd %s listening on %s (%s); queue %s; Wan2GP %s",
            __version__,
            cfg.daemon.socket,
            self.listening,
            cfg.daemon.db_path,
            cfg.wan2gp.directory,
        )
        # READY only now: the store is recovered and the socket answers, so `systemctl start` returning means
        # `wangpctl status` works.
        self.notifier.ready(status_line(self))
        self._tasks.append(asyncio.create_task(self._status_loop(), name="status"))
        self._tasks.append(asyncio.create_task(self._reconcile_loop(), name="reconcile"))
        self._start_watcher()
        if self.notifier.watchdog_interval:
            self._tasks.append(asyncio.create_task(self._watchdog_loop(), name="watchdog"))
        self.events.publish("started", version=__version__)
        self._spawn(self._sweep_cache_temps(), "sweep")
        self._spawn(self.keeper.adopt_made(), "adopt")

    async def _sweep_cache_temps(self) -> None:
        """After a kill, a refs/ or snapshot temporary may be left in the HF cache; huggingface_hub's scan would
        list it as a ref. Off the loop: the snapshot trees of a large cache take a while to walk."""
        try:
            removed = await asyncio.to_thread(self.sources.cache.sweep_own_temps)
        except OSError as exc:
            log.warning("could not look for stale temporary files in the HF cache: %s", exc)
            return
        for path in removed:
            log.info("removed %s, a temporary file a stopped wangpd left in the HF cache", path)

    def stop(self) -> None:
        self._stop.set()

    def _spawn(self, coroutine: Any, name: str) -> None:
        """A one-off background task (reload, rescan): kept referenced until done, then forgotten, so repeated
        reloads do not pile up finished tasks; shutdown cancels the ones still running."""
        task = asyncio.create_task(coroutine, name=name)
        self._tasks.append(task)
        task.add_done_callback(lambda done: done in self._tasks and self._tasks.remove(done))

    async def shutdown(self) -> None:
        """Stop accepting requests, cancel the loops, stop the transfers (parts kept, jobs requeued), close the
        store, release the lock: the reverse of startup."""
        self.notifier.stopping()
        log.info("stopping")
        await self._exit.aclose()
        log.info("stopped")

    async def _stop_engine(self) -> None:
        if self.engine is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.engine.stop(), self.config.daemon.shutdown_timeout)

    async def _cancel_tasks(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def _on_stop_signal(self, signum: int) -> None:
        self._signals += 1
        if self._signals > 1 and signum == signal.SIGINT:
            log.warning("second interrupt: exiting now")
            os._exit(130)
        log.info("%s received: finishing", signal.Signals(signum).name)
        self.stop()

    def _on_reload_signal(self) -> None:
        async def reload() -> None:
            try:
                await self.reload()
            except Exception as exc:  # a bad config on SIGHUP: keep running on the old one
                log.error("reload refused: %s", exc)

        self._spawn(reload(), "reload")

    async def reload(self) -> list[str]:
        """Re-read the config file. Raises ConfigError (old config kept). Returns what changed."""
        self.notifier.reloading()
        try:
            # In a thread: reading and checking the file must never hold up transfers and RPC answers.
            new = await asyncio.to_thread(load_config, self.config.path, environ=self.config.environ)
        except Exception:
            self.notifier.ready(status_line(self))
            raise
        changes = _diff(self.config, new)
        if new.daemon.socket != self.config.daemon.socket:
            changes.append("daemon.socket changed: takes effect after a restart")
        if new.daemon.socket_group != self.config.daemon.socket_group:
            changes.append(
                "daemon.socket_group: who may change things applies now; the socket's file group after a restart"
            )
        try:
            self.config = new
            if self.rpc is not None:
                self.rpc.policy = AccessPolicy(new.daemon.socket_group, new.daemon.read_only_others)
            self.bandwidth.reconfigure(new.download)
            self.sources.reconfigure(new)
            if self.engine is not None:
                self.engine.reconfigure(new)
            self.keeper.reconfigure(new)
        except Exception:
            self.notifier.ready(status_line(self))  # never leave systemd waiting in "reloading"
            raise
        if _section_changed(changes, "watch") or _section_changed(changes, "wan2gp"):
            self._start_watcher()
        if _section_changed(changes, "wan2gp") or _section_changed(changes, "auto_queue"):
            self._spawn(self.rescan("reload"), "rescan")
        if _section_changed(changes, "libraries"):
            self._spawn(self._look_in_libraries(), "libraries")
        log.info("config reloaded from %s: %s", new.path, ", ".join(changes) or "no changes")
        self.events.publish("reloaded", changes=changes)
        self.notifier.ready(status_line(self))
        return changes

    # ---- background loops ----------------------------------------------------------------------------------------

    async def _status_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.daemon.status_interval)
            if self.store.gone():
                self._database_gone()
            if self.store.write_error is not None and self.store.probe():
                self.job_changed(None)  # writable again: the engine writes what waited and starts new work
            self.bandwidth.apply()  # schedule windows switch here
            self.notifier.status(status_line(self))
            totals = self.store.totals()
            self.events.publish(
                "status",
                counts=self.store.counts(),
                speed=self.current_speed(),
                remaining_bytes=totals["remaining_bytes"],
                paused=self.paused,
            )

    def _database_gone(self) -> None:
        """The queue database was deleted (or replaced) while running: say so, start a new one at the same path
        with what this process still knows (paused, the manual limit), and re-plan so kept models are queued again.
        What only the old file held (its jobs, models added by hand) is gone: the warning says that too."""
        log.warning(
            "the queue database %s was deleted or replaced while wangpd ran; starting a new one and re-planning "
            "(its jobs and the models added by hand are gone: `wangpctl add TYPE` them again)",
            self.config.daemon.db_path,
        )
        try:
            self.store.reopen()
            self.store.set_setting("paused", self.paused)
            manual = self.bandwidth.manual
            self.store.set_setting("manual_limit", list(manual) if manual else None)
        except StoreError as exc:
            log.error("could not start a new queue database: %s", exc)
            return
        self.events.publish("error", message="the queue database was deleted while running; a new one was started")
        self._spawn(self.rescan("database recreated"), "rescan")

    def _start_watcher(self) -> None:
        for task in [t for t in self._tasks if t.get_name() == "watcher"]:
            task.cancel()
            self._tasks.remove(task)
        self.watcher = None
        watch = self.config.watch
        if not watch.enabled:
            return
        self.watcher = Watcher(
            lambda: self.layout().watch_targets(),
            self._on_files_changed,
            force_polling=watch.force_polling,
            poll_interval=watch.poll_interval,
            debounce=watch.debounce,
        )
        self._tasks.append(asyncio.create_task(self.watcher.run(), name="watcher"))

    async def _on_files_changed(self, paths: set[Path]) -> None:
        paths = {p for p in paths if not is_own_temp(p)}
        if not paths:
            return
        layout = self.layout()
        if self.watcher is not None and any(layout.is_definition_dir(p) for p in paths):
            self.watcher.restart()  # a watched folder appeared (or went): watch the new set
        definitions = {p for p in paths if layout.is_definition(p)}
        log.debug("changed: %s", ", ".join(sorted(str(p) for p in paths))[:300])
        await self.rescan("watch", definitions)

    async def _reconcile_loop(self) -> None:
        first = True
        while True:
            if not first:
                await asyncio.sleep(self.config.watch.reconcile_interval)
            with contextlib.suppress(Exception):
                await self.rescan("startup" if first else "reconcile")
            if self.config.hub.survey_sizes:
                await self._survey_sizes()
            await self._look_in_libraries()
            first = False

    async def _look_in_libraries(self) -> None:
        """List the other libraries again (a stat a file) and hash the files whose size matches a missing one;
        a match found makes the next plan show that file as linkable (the engine links instead of fetching)."""
        if not self.config.libraries.folders:
            return
        try:
            await self.sources.scan_libraries()
            current = self.keeper.plan
            missing = [p.file for p in current.files if p.status == "missing"] if current is not None else []
            if await self.sources.prefetch_library(missing):
                await self.rescan("libraries")
        except Exception:  # a library is a bonus: never stop the reconcile loop for it
            log.exception("libraries: the look for reusable files failed")

    async def _survey_sizes(self) -> None:
        """Ask the Hub for the size of every missing file (cached for hub.metadata_max_age), so `wangpctl models`
        can say what each model would cost before anything is downloaded."""
        current = self.keeper.plan
        if current is None:
            return
        unknown = [p.file for p in current.files if p.status == "missing" and p.size is None and p.file.repo]
        if not unknown:
            return
        try:
            await self.sources.fetch_sizes(unknown)
        except Exception as exc:  # offline or a few 404s: sizes stay unknown ("?"), nothing else depends on it
            log.warning(
                "could not get the size of every missing file from %s: %s", self.config.hub.endpoint, str(exc)[:300]
            )
        else:
            log.info("sizes of %d missing file(s) known", len(unknown))

    async def _watchdog_loop(self) -> None:
        # Pinged from the event loop itself: if the loop blocks, the pings stop and systemd restarts us.
        assert self.notifier.watchdog_interval
        while True:
            self.notifier.watchdog()
            await asyncio.sleep(self.notifier.watchdog_interval)

    # ---- the verbs only the daemon can carry out (view.DaemonView) -------------------------------------------------

    async def rescan(self, why: str = "rescan", changed: set[Path] | None = None) -> dict[str, Any]:
        """Re-read definitions and queue what tracked models miss; errors are logged, never fatal."""
        try:
            await asyncio.to_thread(self.sources.refresh_invokeai)  # models installed in InvokeAI meanwhile
            return await self.keeper.refresh(changed or (), why)
        except Exception as exc:
            log.exception("re-planning (%s) failed", why)
            self.events.publish("error", message=f"re-planning failed: {exc}")
            raise

    def layout(self) -> Layout:
        return self.keeper.layout() if self.keeper else Layout(self.config.wan2gp.directory)

    def current_speed(self) -> int:
        """Bytes/s of all transfers now (live from the engine; the store's copy lags by a progress interval)."""
        return int(self.engine.total_speed()) if self.engine is not None else 0

    def segments_of(self, job_id: int) -> list[tuple[int, int, int]] | None:
        """The running pieces of a segmented download, (start, end, position) each; None when it has none."""
        return self.engine.segments.get(job_id) if self.engine is not None else None

    def limit_info(self) -> dict[str, Any]:
        return self.bandwidth.info()

    def set_manual_limit(self, rate: int | None) -> None:
        # Stored first: when the store cannot be written the call fails and nothing changed, in memory either.
        now = time.time()
        self.store.set_setting("manual_limit", [rate, now] if rate is not None else None)
        self.bandwidth.set_manual(rate, now)
        self.events.publish("limit", limit=self.bandwidth.rate)

    def set_paused(self, paused: bool) -> None:
        self.store.set_setting("paused", paused)  # first, as above
        self.paused = paused
        log.info("downloads %s", "paused" if paused else "resumed")
        self.events.publish("paused" if paused else "resumed")
        if self.engine is not None:
            self.engine.set_paused(paused)

    def job_changed(self, job: Job | None) -> None:
        """A job was changed from outside the engine (pause, cancel, retry, add): let the engine react."""
        if self.engine is not None:
            self.engine.job_changed(job)


def _stored_limit(store: Store) -> tuple[int, float] | None:
    """The manual limit kept from the last run. One that cannot be read back (an older wangpd stored a value out of
    range) is dropped with a warning: a stored setting must never keep the daemon from starting."""
    stored = store.get_setting("manual_limit")
    if stored is None:
        return None
    try:
        rate, set_at = stored
        if not isinstance(rate, int) or isinstance(rate, bool):
            raise ValueError(f"not a whole number of bytes/s: {str(rate)[:40]}")
        parse_rate(rate)  # the same bounds as for `wangpctl limit`
        return rate, float(set_at)
    except (TypeError, ValueError, OverflowError) as exc:
        log.warning("the stored manual bandwidth limit cannot be used (%s); back to the configured limit", exc)
        store.set_setting("manual_limit", None)
        return None


def _remove_signal_handlers(loop: asyncio.AbstractEventLoop) -> None:
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.remove_signal_handler(signum)


def _lock_database(db_path: Path) -> int:
    """An exclusive flock on ``<db>.lock``, held until the process exits. Raises AlreadyRunning."""
    try:
        db_path.parent.mkdir(parents=True, exist_ok=True)
        # The real file's lock: a db_path that is a symlink to another daemon's database must meet that daemon's.
        fd = lock_exclusive(Path(f"{os.path.realpath(db_path)}.lock"))
    except OSError as exc:  # a read-only state directory, a file in the way: one line, not a traceback
        raise StoreError(
            f"{db_path}: cannot use the state directory {db_path.parent}: {exc.strerror or exc}; "
            "check daemon.state_dir and its owner and permissions"
        ) from None
    if fd is None:
        raise AlreadyRunning(
            f"another wangpd is using the queue database {db_path}; stop it first (systemctl stop wangpd)"
        ) from None
    return fd


def _section_changed(changes: list[str], section: str) -> bool:
    return any(change.startswith(section + ".") for change in changes)


def _diff(old: Config, new: Config) -> list[str]:
    changes = []
    for section in ("wan2gp", "invokeai", "daemon", "hub", "download", "watch", "auto_queue", "libraries"):
        before, after = getattr(old, section), getattr(new, section)
        for name in before.__dataclass_fields__:
            if getattr(before, name) != getattr(after, name):
                changes.append(f"{section}.{name}")
    return changes
