"""Which bandwidth limit is in force now: a manual limit, a schedule window, or the configured default."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from wangpd.config import ScheduleWindow

__all__ = ["EffectiveLimit", "effective_limit", "next_edge"]


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
