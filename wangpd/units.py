"""Sizes, rates and durations with explicit units, as users write them in config and on the command line."""

from __future__ import annotations

import math
import re

__all__ = ["format_bytes", "format_rate", "parse_duration", "parse_rate", "parse_size"]

# Decimal units are what network people and HF's web pages use; binary units are what `ls -h` shows.
_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "m": 1000**2,
    "mb": 1000**2,
    "g": 1000**3,
    "gb": 1000**3,
    "t": 1000**4,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}
_BIT_UNITS = {"bit": 1, "kbit": 1000, "mbit": 1000**2, "gbit": 1000**3}
_NUMBER = r"(\d+(?:\.\d+)?)"
_SIZE_RE = re.compile(_NUMBER + r"\s*([a-z]*)")
_RATE_RE = re.compile(_NUMBER + r"\s*([a-z]*)\s*(?:/\s*s|ps)?")
_DURATION_RE = re.compile(_NUMBER + r"\s*(ms|s|m|min|h|d)?")
_DURATION_UNITS = {None: 1.0, "ms": 0.001, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0}
# Bounds every parsed value must keep, so that nothing stored from a config key or an RPC call can later fail to be
# read back, formatted or handed to SQLite (a 400-digit limit once made every status call fail, and startup too).
MAX_SIZE = 1000**6  # 1 EB
MAX_RATE = 1000**4  # 1 TB/s: far above any link, far below any overflow
MAX_DURATION = 10 * 365 * 86400.0  # ten years


def _number(value: float, what: str, example: str) -> float:
    """``value`` as a float, refusing what no unit can make sense of (NaN, infinities, huge integers)."""
    try:
        return _finite(float(value), what, example)
    except OverflowError:
        raise ValueError(f"{what} {str(value)[:20]}... is far too large") from None


def _finite(value: float, what: str, example: str) -> float:
    if not math.isfinite(value):
        raise ValueError(f"{what} must be a finite number, got {value!r} (e.g. {example})")
    if value < 0:
        raise ValueError(f"{what} must not be negative, got {value}")
    return value


def _bounded_size(count: float, original: object) -> int:
    if count > MAX_SIZE:
        raise ValueError(f"size {original!r} is larger than {format_bytes(MAX_SIZE)}")
    return int(count)


def _bounded_rate(rate: float, original: object) -> int:
    if rate > MAX_RATE:
        raise ValueError(f"rate {original!r} is above {format_rate(MAX_RATE)}; use 0/off for unlimited")
    if 0 < rate < 1:
        raise ValueError(f"rate {original!r} is below 1 B/s; use 0/off for unlimited")
    return int(rate)


def parse_size(value: object) -> int:
    """Bytes from ``10GiB``, ``500MB``, ``1024`` (bytes) or an int. Raises ValueError naming the problem."""
    if isinstance(value, bool):
        raise ValueError(f"expected a size like 10GiB, got {value!r}")
    if isinstance(value, int | float):
        return _bounded_size(_number(value, "size", "10GiB"), value)
    if not isinstance(value, str):
        raise ValueError(f"expected a size like 10GiB, got {value!r}")
    match = _SIZE_RE.fullmatch(value.strip().lower())
    if not match or match.group(2) not in _SIZE_UNITS:
        raise ValueError(f"bad size {value!r} (expected e.g. 500MB, 10GiB, 1TB or a number of bytes)")
    return _bounded_size(_finite(float(match.group(1)), "size", "10GiB") * _SIZE_UNITS[match.group(2)], value)


def parse_rate(value: object) -> int:
    """Bytes per second from ``90MB/s``, ``50MiB/s``, ``400Mbit/s``, ``0``/``off``/``unlimited`` (= 0).

    A bare number is bytes per second. YAML reads a bare ``off`` as false, so false means unlimited too.
    Raises ValueError naming the problem.
    """
    if value is False:
        return 0
    if isinstance(value, bool):
        raise ValueError(f"expected a rate like 20MiB/s, got {value!r}")
    if isinstance(value, int | float):
        return _bounded_rate(_number(value, "rate", "20MiB/s"), value)
    if not isinstance(value, str):
        raise ValueError(f"expected a rate like 20MiB/s, got {value!r}")
    text = value.strip().lower()
    if text in ("0", "off", "none", "unlimited", "max"):
        return 0
    match = _RATE_RE.fullmatch(text)
    if match:
        number, unit = _finite(float(match.group(1)), "rate", "20MiB/s"), match.group(2)
        if unit in _BIT_UNITS:
            return _bounded_rate(number * _BIT_UNITS[unit] / 8, value)
        if unit in ("bps",):
            return _bounded_rate(number / 8, value)
        if unit in _SIZE_UNITS:
            return _bounded_rate(number * _SIZE_UNITS[unit], value)
    raise ValueError(f"bad rate {value!r} (expected e.g. 90MB/s, 50MiB/s, 400Mbit/s, or 0/off for unlimited)")


def _bounded_duration(seconds: float, original: object) -> float:
    if seconds > MAX_DURATION:
        raise ValueError(f"duration {original!r} is longer than ten years")
    return seconds


def parse_duration(value: object) -> float:
    """Seconds from ``30``, ``30s``, ``5m``, ``2h``, ``250ms``. Raises ValueError naming the problem."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration like 30s or 5m, got {value!r}")
    if isinstance(value, int | float):
        return _bounded_duration(_number(value, "duration", "30s"), value)
    if isinstance(value, str):
        match = _DURATION_RE.fullmatch(value.strip().lower())
        if match:
            seconds = _finite(float(match.group(1)), "duration", "30s") * _DURATION_UNITS[match.group(2)]
            return _bounded_duration(seconds, value)
    raise ValueError(f"bad duration {value!r} (expected e.g. 30s, 5m, 2h)")


def format_bytes(count: float | None) -> str:
    """``1.5 GiB`` style, for humans."""
    if count is None:
        return "?"
    size = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


def format_rate(rate: float | None) -> str:
    """``20.0 MiB/s``, or ``unlimited`` for 0."""
    if not rate:
        return "unlimited"
    return format_bytes(rate) + "/s"
