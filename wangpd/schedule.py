"""Which bandwidth limit is in force now: a manual limit, a schedule window, or the configured default.

:func:`effective_limit` is the pure rule; :class:`Bandwidth` holds the daemon's limit state (the manual limit and
the rate last applied) and hands the rate in force to the shared limiter whenever it changes.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from wangpd.config import DownloadConfig, ScheduleWindow
from wangpd.units import format_rate

__all__ = ["Bandwidth", "EffectiveLimit", "effective_limit", "next_edge"]


@dataclass(frozen=True)
class EffectiveLimit:
    rate: int  # bytes/s, 0 = unlimited
    source: str  # manual | schedule | config
    window: int | None  # index of the schedule window in force
    next_edge: dt.datetime | None  # when the schedule next switches


def _active_window(windows: Sequence[ScheduleWindow], now: dt.datetime) -> int | None:
    minute = now.hour * 60 + now.minute
    today = now.weekday()
    yesterday = (today - 1) % 7
    for index, window in enumerate(windows):
        if window.start_minute < window.end_minute:
            inside = today in window.days and window.start_minute <= minute < window.end_minute
        else:  # over midnight: the window belongs to the day it starts on
            inside = (today in window.days and minute >= window.start_minute) or (
                yesterday in window.days and minute < window.end_minute
            )
        if inside and window.start_minute != window.end_minute:
            return index
    return None


def next_edge(windows: Sequence[ScheduleWindow], now: dt.datetime) -> dt.datetime | None:
    """The next minute at which the active window changes (None without a schedule). Scans minute by minute over
    one week at most; windows are few, so this is cheap and obviously right."""
    if not windows:
        return None
    current = _active_window(windows, now)
    probe = now.replace(second=0, microsecond=0)
    for _ in range(7 * 24 * 60):
        probe += dt.timedelta(minutes=1)
        if _active_window(windows, probe) != current:
            return probe
    return None


def effective_limit(
    default: int,
    windows: Sequence[ScheduleWindow],
    now: dt.datetime,
    manual: tuple[int, float] | None = None,
) -> EffectiveLimit:
    """The limit in force at ``now``.

    ``manual`` is (rate, set_at epoch seconds) from ``wangpctl limit``: it holds until the next window edge after
    it was set, and forever when there is no schedule.
    """
    window = _active_window(windows, now)
    edge = next_edge(windows, now)
    if manual is not None:
        rate, set_at = manual
        set_time = dt.datetime.fromtimestamp(set_at, tz=now.tzinfo) if now.tzinfo else dt.datetime.fromtimestamp(set_at)
        edge_after_set = next_edge(windows, set_time) if windows else None
        if edge_after_set is None or edge_after_set > now:
            return EffectiveLimit(rate, "manual", window, edge)
    if window is not None:
        return EffectiveLimit(windows[window].limit, "schedule", window, edge)
    return EffectiveLimit(default, "config", None, edge)


class Bandwidth:
    """The limit in force for all transfers together: config, schedule windows and a manual limit.

    ``apply_rate`` receives the rate (bytes/s, 0 = unlimited) each time it changes. The manual limit is a
    ``(rate, set_at)`` pair, held until the schedule's next edge after ``set_at``; storing it is the caller's job.
    """

    def __init__(
        self,
        config: DownloadConfig,
        apply_rate: Callable[[int], None],
        manual: tuple[int, float] | None = None,
    ) -> None:
        self.config = config
        self.apply_rate = apply_rate
        self.manual = manual
        self.rate = 0  # the rate last applied
        self.apply()

    def reconfigure(self, config: DownloadConfig) -> None:
        self.config = config
        self.apply()

    def effective(self, now: dt.datetime | None = None) -> EffectiveLimit:
        now = now or dt.datetime.now().astimezone()
        return effective_limit(self.config.bandwidth, self.config.schedule, now, self.manual)

    def apply(self, now: dt.datetime | None = None) -> bool:
        """Hand the rate in force to the limiter if it changed (a schedule edge passed, a new manual limit)."""
        rate = self.effective(now).rate
        if rate == self.rate:
            return False
        self.rate = rate
        self.apply_rate(rate)
        return True

    def set_manual(self, rate: int | None, now: float) -> None:
        """A manual limit from now (``None``: back to config/schedule)."""
        self.manual = (rate, now) if rate is not None else None
        self.apply()

    def info(self, now: dt.datetime | None = None) -> dict[str, Any]:
        """The limit as `wangpctl limit` shows it (docs/json-schema.md)."""
        effective = self.effective(now)
        return {
            "limit": effective.rate,
            "human": format_rate(effective.rate),
            "source": effective.source,
            "config": self.config.bandwidth,
            "manual": self.manual[0] if self.manual else None,
            "schedule": [
                {
                    "days": list(w.days),
                    "from": f"{w.start_minute // 60:02d}:{w.start_minute % 60:02d}",
                    "to": f"{w.end_minute // 60:02d}:{w.end_minute % 60:02d}",
                    "limit": w.limit,
                }
                for w in self.config.schedule
            ],
            "window": effective.window,
            "next_change": effective.next_edge.isoformat() if effective.next_edge else None,
        }
