"""What the control surface and ``doctor`` may see of the running daemon: a narrow ``typing.Protocol``.

``Control`` and the doctor checks are written against this, not against ``app.Daemon``, so nothing below the
composition root imports it back (the import graph has no circle; tests/test_structure.py keeps it so). Only the
Daemon implements it; a test may hand in any object with these members.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from wangpd.config import Config
    from wangpd.events import EventBus
    from wangpd.keeper import Keeper
    from wangpd.layout import Layout
    from wangpd.models import Job
    from wangpd.sources import Sources
    from wangpd.store import Store
    from wangpd.watcher import Watcher

__all__ = ["DaemonView"]


class DaemonView(Protocol):
    """The daemon's parts and the verbs only the daemon can carry out (pause, limit, reload, rescan, wake)."""

    config: Config
    store: Store
    events: EventBus
    keeper: Keeper
    sources: Sources
    watcher: Watcher | None
    listening: str
    paused: bool
    started: float  # time.monotonic() at start
    started_wall: float  # time.time() at start

    def limit_info(self) -> dict[str, Any]: ...

    def set_paused(self, paused: bool) -> None: ...

    def set_manual_limit(self, rate: int | None) -> None: ...

    def job_changed(self, job: Job | None) -> None: ...

    async def rescan(self, why: str = "rescan", changed: set[Path] | None = None) -> dict[str, Any]: ...

    async def reload(self) -> list[str]: ...

    def layout(self) -> Layout: ...

    def current_speed(self) -> int: ...

    def segments_of(self, job_id: int) -> list[tuple[int, int, int]] | None: ...
