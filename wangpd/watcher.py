"""Watch Wan2GP's definitions and checkpoint folders (the only module that imports watchfiles).

Events are hints, not a record: a batch is an unordered set, a file created inside a just-created folder may never
be reported, and network filesystems deliver nothing. So the watcher only says *which paths may have changed*; the
daemon re-reads them, and reconciles everything periodically anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import watchfiles

from wangpd.layout import WatchTargets
from wangpd.paths import is_own_temp

__all__ = ["Watcher"]

log = logging.getLogger(__name__)


class _Filter(watchfiles.DefaultFilter):
    def __call__(self, change: watchfiles.Change, path: str) -> bool:
        return super().__call__(change, path) and not is_own_temp(path)


class Watcher:
    """Runs until cancelled, calling ``on_change(paths)`` after each (debounced) batch.

    Falls back to polling when inotify has no watches left (with a log line naming the sysctl to raise), and when
    ``force_polling`` is set (NFS/SMB).
    """

    def __init__(
        self,
        targets: Callable[[], WatchTargets],
        on_change: Callable[[set[Path]], Awaitable[None]],
        *,
        force_polling: bool = False,
        poll_interval: float = 2.0,
        debounce: float = 0.2,
    ) -> None:
        self._targets = targets
        self._on_change = on_change
        self.force_polling = force_polling
        self.poll_interval = poll_interval
        self.debounce = debounce
        self.state = "starting"
        self.reason: str | None = None
        self._restart = asyncio.Event()
        self._stop = asyncio.Event()
        self._watching: tuple[tuple[Path, ...], tuple[Path, ...]] | None = None

    def describe(self) -> dict[str, Any]:
        return {"state": self.state, "mode": "polling" if self.force_polling else "inotify", "reason": self.reason}

    def restart(self) -> None:
        """Re-read the targets if the set of folders to watch changed (one appeared or went)."""
        if self._watching != self._existing(self._targets()):
            self._restart.set()

    @staticmethod
    def _existing(targets: WatchTargets) -> tuple[tuple[Path, ...], tuple[Path, ...]]:
        return tuple(p for p in targets.recursive if p.is_dir()), tuple(p for p in targets.shallow if p.is_dir())

    async def run(self) -> None:
        restarted = False
        while True:
            targets = self._targets()
            self._watching = self._existing(targets)
            self._restart.clear()
            self._stop = asyncio.Event()
            tasks = []
            for paths, recursive in ((targets.recursive, True), (targets.shallow, False)):
                existing = [p for p in paths if p.is_dir()]
                if existing:
                    tasks.append(asyncio.create_task(self._watch(existing, recursive)))
            self.state = "watching" if tasks else "idle"
            self.reason = None if tasks else "nothing to watch yet"
            log.info(
                "watching %s (%s)",
                ", ".join(str(p) for p in (*targets.recursive, *targets.shallow) if p.is_dir()) or "nothing",
                "polling" if self.force_polling else "inotify",
            )
            restart = asyncio.create_task(self._restart.wait())
            if restarted:
                # A folder appeared (e.g. `mkdir -p finetunes && cp x.json finetunes/`): files created in it before
                # its watch was in place are never reported, so look once the new watches are set up.
                tasks.append(asyncio.create_task(self._settle_then_report(targets)))
            restarted = True
            try:
                done, _ = await asyncio.wait([*tasks, restart], return_when=asyncio.FIRST_COMPLETED)
            finally:
                self._stop.set()
                for task in [*tasks, restart]:
                    task.cancel()
                for task in tasks:
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task
            if restart not in done:
                # A watch task ended on its own: an error it already logged. Do not spin.
                await asyncio.sleep(1.0)

    async def _settle_then_report(self, targets: WatchTargets) -> None:
        await asyncio.sleep(max(0.3, self.debounce * 2))
        try:
            await self._on_change({p for p in (*targets.recursive, *targets.shallow) if p.is_dir()})
        except Exception:
            log.exception("re-reading after a watch restart failed")
        await asyncio.Event().wait()  # stay "running" like the watch tasks until the next restart

    async def _watch(self, paths: list[Path], recursive: bool) -> None:
        try:
            async for changes in watchfiles.awatch(
                *paths,
                watch_filter=_Filter(),
                debounce=max(1, int(self.debounce * 1000)),
                step=50,
                stop_event=self._stop,
                force_polling=self.force_polling,
                poll_delay_ms=int(self.poll_interval * 1000),
                recursive=recursive,
                # Not with inotify: watchfiles then also swallows "watch limit reached", leaving a watcher that
                # silently sees nothing. Unreadable folders are handled below (polling) instead.
                ignore_permission_denied=self.force_polling,
            ):
                changed = {Path(path) for _, path in changes}
                try:
                    await self._on_change(changed)
                except Exception:  # one bad batch must not end the watching
                    log.exception("handling changes to %s failed", ", ".join(sorted(map(str, changed)))[:500])
        except OSError as exc:
            if "watch limit" in str(exc) or getattr(exc, "errno", None) == 28:
                log.error(
                    "inotify has no watches left (%s): raise it with `sysctl fs.inotify.max_user_watches=524288` "
                    "(and in /etc/sysctl.d/ to keep it); polling every %.0fs meanwhile",
                    str(exc).split(" (Error")[0],
                    self.poll_interval,
                )
                self.force_polling = True
                self.reason = "inotify watch limit reached: polling"
                self._restart.set()
            elif isinstance(exc, PermissionError) and not self.force_polling:
                log.warning(
                    "cannot watch %s (%s); polling every %.0fs instead",
                    ", ".join(map(str, paths)),
                    exc,
                    self.poll_interval,
                )
                self.force_polling = True
                self.reason = "permission denied on a watched folder: polling"
                self._restart.set()
            else:
                log.error("watching %s failed: %s", ", ".join(map(str, paths)), exc)
                self.state = "error"
                self.reason = str(exc)
