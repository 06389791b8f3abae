"""Sizes, rates and durations as ``wangpctl`` writes them (copied from ``wangpctl/fmt.py``: the plugin imports
nothing of wangpd)."""

from __future__ import annotations

import time

__all__ = ["bytes_", "duration", "eta", "percent", "rate", "when"]


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


def eta(remaining: float | None, speed: float | None) -> str:
    if not remaining or not speed:
        return "-"
    return duration(remaining / speed)


def percent(done: float | None, total: float | None) -> str:
    if not total or done is None:
        return "-"
    return f"{min(100.0, 100.0 * done / total):.0f} %"


def when(timestamp: float | None) -> str:
    """A Unix time as local ``YYYY-MM-DD``."""
    return "" if not timestamp else time.strftime("%Y-%m-%d", time.localtime(timestamp))
