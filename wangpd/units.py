"""Sizes, rates and durations with explicit units, as users write them in config and on the command line."""

from __future__ import annotations

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


def parse_size(value: object) -> int:
    """Bytes from ``10GiB``, ``500MB``, ``1024`` (bytes) or an int. Raises ValueError naming the problem."""
    if isinstance(value, bool):
        raise ValueError(f"expected a size like 10GiB, got {value!r}")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"size must not be negative, got {value}")
        return int(value)
    if not isinstance(value, str):
        raise ValueError(f"expected a size like 10GiB, got {value!r}")
    match = _SIZE_RE.fullmatch(value.strip().lower())
    if not match or match.group(2) not in _SIZE_UNITS:
        raise ValueError(f"bad size {value!r} (expected e.g. 500MB, 10GiB, 1TB or a number of bytes)")
    return int(float(match.group(1)) * _SIZE_UNITS[match.group(2)])


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
        if value < 0:
            raise ValueError(f"rate must not be negative, got {value}")
        return int(value)
    if not isinstance(value, str):
        raise ValueError(f"expected a rate like 20MiB/s, got {value!r}")
    text = value.strip().lower()
    if text in ("0", "off", "none", "unlimited", "max"):
        return 0
    match = _RATE_RE.fullmatch(text)
    if match:
        number, unit = float(match.group(1)), match.group(2)
        if unit in _BIT_UNITS:
            return int(number * _BIT_UNITS[unit] / 8)
        if unit in ("bps",):
            return int(number / 8)
        if unit in _SIZE_UNITS:
            return int(number * _SIZE_UNITS[unit])
    raise ValueError(f"bad rate {value!r} (expected e.g. 90MB/s, 50MiB/s, 400Mbit/s, or 0/off for unlimited)")


def parse_duration(value: object) -> float:
    """Seconds from ``30``, ``30s``, ``5m``, ``2h``, ``250ms``. Raises ValueError naming the problem."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration like 30s or 5m, got {value!r}")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"duration must not be negative, got {value}")
        return float(value)
    if isinstance(value, str):
        match = _DURATION_RE.fullmatch(value.strip().lower())
        if match:
            return float(match.group(1)) * _DURATION_UNITS[match.group(2)]
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
