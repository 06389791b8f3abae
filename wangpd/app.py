"""Wiring: the one module that knows every part. ``startup -> serve -> shutdown``, signals, systemd, reload."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import grp
import logging
import os
import signal
import time
from pathlib import Path
from typing import Any

from wangpd import __version__
from wangpd.config import Config, load_config
from wangpd.control import Control
from wangpd.errors import AlreadyRunning, InvalidParams
from wangpd.events import EventBus
from wangpd.keeper import Keeper
from wangpd.models import Job
from wangpd.notify import Notifier
from wangpd.paths import disk_free, is_own_temp, lock_exclusive
from wangpd.rpc import AccessPolicy, RpcServer
from wangpd.schedule import effective_limit
from wangpd.sources import Sources
from wangpd.store import Store
from wangpd.units import format_rate
from wangpd.watcher import Watcher, WatchTargets
from wangpd.workers import Engine

__all__ = ["Daemon"]

log = logging.getLogger("wangpd")


class Daemon:
    """One running wangpd. Built from a checked Config; :meth:`run` serves until SIGTERM/SIGINT or :meth:`stop`."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.events = EventBus()
        self.notifier = Notifier(dict(config.environ))
        self.store: Store = None  # type: ignore[assignment]  # opened in startup(), before anything uses it
        self.control = Control(self)
        self.rpc: RpcServer | None = None
        self.engine: Engine | None = None
        self.keeper: Keeper = None  # type: ignore[assignment]
        self.sources: Sources = None  # type: ignore[assignment]
        self.watcher: Watcher | None = None
        self.started = time.monotonic()
        self.started_wall = time.time()
        self.paused = False
        self.manual_limit: tuple[int, float] | None = None
        self.limit_rate = 0
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[Any]] = []
        self._signals = 0
        self._db_lock: int | None = None
        self.listening = ""

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
        cfg = self.config
        # Another wangpd on the same queue must not "recover" the live one's running jobs before it learns that the
        # socket is taken: the database is locked first, for the daemon's whole life.
        self._db_lock = _lock_database(cfg.daemon.db_path)
        self.store = Store.open(cfg.daemon.db_path)
        recovered = self.store.recover()
        for job in recovered:
            log.info(
                "job %d (%s) was downloading when wangpd stopped; queued again, resumes from its part",
                job.id,
                Path(job.target).name,
            )
        self.paused = bool(self.store.get_setting("paused", False))
        manual = self.store.get_setting("manual_limit")
        self.manual_limit = (int(manual[0]), float(manual[1])) if manual else None
        # One Hub client, HF cache and InvokeAI index, shared by planning (keeper) and fetching (engine).
        self.sources = Sources(cfg, self.store)
        await asyncio.to_thread(self.sources.refresh_invokeai)
        self.engine = Engine(cfg, self.store, self.events, self.sources, paused=self.paused)
        self._apply_limit()
        self.keeper = Keeper(cfg, self.store, self.events, self.sources, wake=lambda: self.job_changed(None))
        self.engine.content_roots = self.content_roots

        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._on_stop_signal, signum)
        loop.add_signal_handler(signal.SIGHUP, self._on_reload_signal)

        gid = grp.getgrnam(cfg.daemon.socket_group).gr_gid if cfg.daemon.socket_group else None
        self.rpc = RpcServer(
            self.control, self.events, AccessPolicy(cfg.daemon.socket_group, cfg.daemon.read_only_others)
        )
        self.listening = await self.rpc.start(cfg.daemon.socket, gid, dict(cfg.environ))
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
        self.notifier.ready(self.status_line())
        self._tasks.append(asyncio.create_task(self._status_loop(), name="status"))
        self._tasks.append(asyncio.create_task(self._reconcile_loop(), name="reconcile"))
        self._start_watcher()
        if self.notifier.watchdog_interval:
            self._tasks.append(asyncio.create_task(self._watchdog_loop(), name="watchdog"))
        self.events.publish("started", version=__version__)

    def stop(self) -> None:
        self._stop.set()

    def _spawn(self, coroutine: Any, name: str) -> None:
        """A one-off background task (reload, rescan): kept referenced until done, then forgotten, so repeated
        reloads do not pile up finished tasks; shutdown cancels the ones still running."""
        task = asyncio.create_task(coroutine, name=name)
        self._tasks.append(task)
        task.add_done_callback(lambda done: done in self._tasks and self._tasks.remove(done))

    async def shutdown(self) -> None:
        self.notifier.stopping()
        log.info("stopping")
        if self.engine is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.engine.stop(), self.config.daemon.shutdown_timeout)
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.rpc is not None:
            await self.rpc.stop()
        if self.store is not None:
            self.store.close()
        if self._db_lock is not None:
            os.close(self._db_lock)
            self._db_lock = None
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(signum)
        log.info("stopped")

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
            new = load_config(self.config.path, environ=self.config.environ)
        except Exception:
            self.notifier.ready(self.status_line())
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
            self._apply_limit()
            self.sources.reconfigure(new)
            if self.engine is not None:
                self.engine.reconfigure(new)
            self.keeper.reconfigure(new)
        except Exception:
            self.notifier.ready(self.status_line())  # never leave systemd waiting in "reloading"
            raise
        if _section_changed(changes, "watch") or _section_changed(changes, "wan2gp"):
            self._start_watcher()
        if _section_changed(changes, "wan2gp") or _section_changed(changes, "auto_queue"):
            self._spawn(self.rescan("reload"), "rescan")
        log.info("config reloaded from %s: %s", new.path, ", ".join(changes) or "no changes")
        self.events.publish("reloaded", changes=changes)
        self.notifier.ready(self.status_line())
        return changes

    async def _status_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.daemon.status_interval)
            self._apply_limit()  # schedule windows switch here
            self.notifier.status(self.status_line())
            totals = self.store.totals()
            self.events.publish(
                "status",
                counts=self.store.counts(),
                speed=self.current_speed(),
                remaining_bytes=totals["remaining_bytes"],
                paused=self.paused,
            )

    def _start_watcher(self) -> None:
        for task in [t for t in self._tasks if t.get_name() == "watcher"]:
            task.cancel()
            self._tasks.remove(task)
        self.watcher = None
        watch = self.config.watch
        if not watch.enabled:
            return
        self.watcher = Watcher(
            self.watch_targets,
            self._on_files_changed,
            force_polling=watch.force_polling,
            poll_interval=watch.poll_interval,
            debounce=watch.debounce,
        )
        self._tasks.append(asyncio.create_task(self.watcher.run(), name="watcher"))

    def watch_targets(self) -> WatchTargets:
        root = self.config.wan2gp.directory
        catalog = self.keeper.catalog
        roots = catalog.settings.checkpoints_paths if catalog else ("ckpts", ".")
        loras = catalog.settings.loras_root if catalog else "loras"
        recursive = [root / "defaults", root / "finetunes", root / loras]
        recursive += [root / r for r in roots if (root / r).resolve() != root.resolve()]
        return WatchTargets(recursive=tuple(dict.fromkeys(recursive)), shallow=(root,))

    async def _on_files_changed(self, paths: set[Path]) -> None:
        paths = {p for p in paths if not is_own_temp(p)}
        if not paths:
            return
        root = self.config.wan2gp.directory
        if self.watcher is not None and any(p.parent == root and p.name in ("defaults", "finetunes") for p in paths):
            self.watcher.restart()  # a watched folder appeared (or went): watch the new set
        definitions = {p for p in paths if p.suffix == ".json" and p.parent.name in ("defaults", "finetunes")}
        log.debug("changed: %s", ", ".join(sorted(str(p) for p in paths))[:300])
        await self.rescan("watch", definitions)

    async def rescan(self, why: str = "rescan", changed: set[Path] | None = None) -> dict[str, Any]:
        """Re-read definitions and queue what tracked models miss; errors are logged, never fatal."""
        try:
            await asyncio.to_thread(self.sources.refresh_invokeai)  # models installed in InvokeAI meanwhile
            return await self.keeper.refresh(changed or (), why)
        except Exception as exc:
            log.exception("re-planning (%s) failed", why)
            self.events.publish("error", message=f"re-planning failed: {exc}")
            raise

    async def _reconcile_loop(self) -> None:
        first = True
        while True:
            if not first:
                await asyncio.sleep(self.config.watch.reconcile_interval)
            with contextlib.suppress(Exception):
                await self.rescan("startup" if first else "reconcile")
            if self.config.hub.survey_sizes:
                await self._survey_sizes()
            first = False

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

    # ---- state the control surface reads and changes --------------------------------------------------------------

    def current_speed(self) -> int:
        """Bytes/s of all transfers now (live from the engine; the store's copy lags by a progress interval)."""
        return int(self.engine.total_speed()) if self.engine is not None else 0

    def status_line(self) -> str:
        counts = self.store.counts()
        speed = self.current_speed()
        state = "paused" if self.paused else "running"
        return (
            f"{state}: {counts['downloading']} downloading, {counts['queued']} queued, "
            f"{counts['needs_approval']} awaiting approval, {counts['failed']} failed, "
            f"{format_rate(speed) if speed else '0 B/s'}, limit {format_rate(self.limit_rate)}"
        )

    def status_snapshot(self) -> dict[str, Any]:
        counts = self.store.counts()
        totals = self.store.totals()
        last_errors = [
            {"time": e["time"], "message": e.get("error") or e.get("message"), "id": e.get("id")}
            for e in self.events.recent
            if e.get("error") or e["event"] == "error"
        ][-5:]
        return {
            "version": __version__,
            "pid": os.getpid(),
            "uptime": round(time.monotonic() - self.started, 1),
            "started_at": self.started_wall,
            "state": "paused" if self.paused else "running",
            "paused": self.paused,
            "counts": counts,
            "pending": counts["queued"] + counts["needs_approval"] + counts["paused"],
            "speed": self.current_speed(),
            "remaining_bytes": totals["remaining_bytes"],
            "limit": self.limit_info(),
            "config": str(self.config.path),
            "socket": str(self.config.daemon.socket),
            "listening": self.listening,
            "database": str(self.config.daemon.db_path),
            "wan2gp_directory": str(self.config.wan2gp.directory),
            "hf_cache": str(self.config.hub.cache_dir),
            "disk_free": {
                "wan2gp": disk_free(self.config.wan2gp.directory),
                "hf_cache": disk_free(self.config.hub.cache_dir),
            },
            "batches": self.store.batches(),
            "watcher": self.watcher.describe()
            if self.watcher
            else {"state": "off", "reason": "watch.enabled is false"},
            "auto_queue": self.keeper.describe(),
            "last_errors": last_errors,
        }

    def limit_info(self) -> dict[str, Any]:
        now = dt.datetime.now().astimezone()
        dl = self.config.download
        effective = effective_limit(dl.bandwidth, dl.schedule, now, self.manual_limit)
        return {
            "limit": effective.rate,
            "human": format_rate(effective.rate),
            "source": effective.source,
            "config": dl.bandwidth,
            "manual": self.manual_limit[0] if self.manual_limit else None,
            "schedule": [
                {
                    "days": list(w.days),
                    "from": f"{w.start_minute // 60:02d}:{w.start_minute % 60:02d}",
                    "to": f"{w.end_minute // 60:02d}:{w.end_minute % 60:02d}",
                    "limit": w.limit,
                }
                for w in dl.schedule
            ],
            "window": effective.window,
            "next_change": effective.next_edge.isoformat() if effective.next_edge else None,
        }

    def _apply_limit(self) -> None:
        rate = self.limit_info()["limit"]
        if rate != self.limit_rate:
            self.limit_rate = rate
            if self.engine is not None:
                self.engine.set_rate(rate)

    def set_manual_limit(self, rate: int | None) -> None:
        self.manual_limit = (rate, time.time()) if rate is not None else None
        self.store.set_setting("manual_limit", list(self.manual_limit) if self.manual_limit else None)
        self._apply_limit()
        self.events.publish("limit", limit=self.limit_rate)

    def set_paused(self, paused: bool) -> None:
        self.paused = paused
        self.store.set_setting("paused", paused)
        log.info("downloads %s", "paused" if paused else "resumed")
        self.events.publish("paused" if paused else "resumed")
        if self.engine is not None:
            self.engine.set_paused(paused)

    def job_changed(self, job: Job | None) -> None:
        """A job was changed from outside the engine (pause, cancel, retry, add): let the engine react."""
        if self.engine is not None:
            self.engine.job_changed(job)

    def checkpoints_root(self) -> str:
        catalog = self.keeper.catalog if self.keeper else None
        return catalog.settings.checkpoints_paths[0] if catalog else "ckpts"

    def content_roots(self) -> list[Path]:
        """The checkpoints and LoRA folders as they really are: a ckpts/ that is a symlink to another disk is a
        place Wan2GP uses, so files may be linked there (a symlink deeper inside still may not lead out)."""
        root = self.config.wan2gp.directory
        catalog = self.keeper.catalog if self.keeper else None
        names = [*catalog.settings.checkpoints_paths, catalog.settings.loras_root] if catalog else ["ckpts", "loras"]
        return [Path(os.path.realpath(root / name)) for name in names if (root / name).is_dir()]

    def resolve_target(self, relative: str) -> Path:
        """An absolute path inside the Wan2GP folder for a client-given relative target; refuses escapes."""
        if not relative or os.path.isabs(relative) or "\\" in relative:
            raise InvalidParams(f"target {relative!r} must be a path relative to the Wan2GP folder, e.g. ckpts/x")
        root = self.config.wan2gp.directory.resolve()
        candidate = (root / relative).resolve()
        if not any(candidate != r and r in candidate.parents for r in (root, *self.content_roots())):
            raise InvalidParams(f"target {relative!r} is outside the Wan2GP folder {root}")
        return candidate


def _lock_database(db_path: Path) -> int:
    """An exclusive flock on ``<db>.lock``, held until the process exits. Raises AlreadyRunning."""
    db_path.parent.mkdir(parents=True, exist_ok=True)
    fd = lock_exclusive(Path(f"{db_path}.lock"))
    if fd is None:
        raise AlreadyRunning(
            f"another wangpd is using the queue database {db_path}; stop it first (systemctl stop wangpd)"
        ) from None
    return fd


def _section_changed(changes: list[str], section: str) -> bool:
    return any(change.startswith(section + ".") for change in changes)


def _diff(old: Config, new: Config) -> list[str]:
    changes = []
    for section in ("wan2gp", "invokeai", "daemon", "hub", "download", "watch", "auto_queue"):
        before, after = getattr(old, section), getattr(new, section)
        for name in before.__dataclass_fields__:
            if getattr(before, name) != getattr(after, name):
                changes.append(f"{section}.{name}")
    return changes
