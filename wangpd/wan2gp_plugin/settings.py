"""The plugin's settings: ``settings.json`` in the plugin folder (kept by ``wangpctl wan2gp install-plugin``), then
environment variables, which win. Every value has a default; a bad value is reported once and the default used."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

__all__ = ["ENV", "SETTINGS_FILE", "Settings", "load_settings"]

SETTINGS_FILE = "settings.json"
# setting name -> environment variable
ENV = {
    "stall_timeout": "WANGPD_PLUGIN_STALL_TIMEOUT",
    "wait": "WANGPD_PLUGIN_WAIT",
    "prefetch": "WANGPD_PLUGIN_PREFETCH",
    "prefetch_delay": "WANGPD_PLUGIN_PREFETCH_DELAY",
    "refresh_interval": "WANGPD_PLUGIN_REFRESH",
    "socket": "WANGPD_PLUGIN_SOCKET",
}


@dataclass(frozen=True)
class Settings:
    """``stall_timeout``: seconds without progress from wangpd before Wan2GP downloads a file itself.
    ``wait``: let Wan2GP wait for wangpd at all. ``prefetch``: queue a model when it is chosen in the UI, after
    ``prefetch_delay`` seconds without another choice (browsing a family passes through models). ``socket``: a
    last place to look for the daemon (``$WANGPCTL_SOCKET`` and the usual places come first).
    ``poll_interval``: how often a waiting download asks for progress."""

    socket: str | None = None
    stall_timeout: float = 120.0
    wait: bool = True
    prefetch: bool = True
    prefetch_delay: float = 2.0
    refresh_interval: float = 2.0
    poll_interval: float = 0.5
    call_timeout: float = 3.0


def _coerce(name: str, kind: type, value: Any) -> Any:
    if kind is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{name}: expected true or false, got {value!r}")
    if kind is float:
        number = float(value)
        if not number >= 0:
            raise ValueError(f"{name}: expected a number of seconds >= 0, got {value!r}")
        return number
    return None if value in (None, "") else str(value)


def load_settings(folder: Path, environ: dict[str, str] | None = None) -> tuple[Settings, list[str]]:
    """Settings for the plugin in ``folder``; returns them and the problems found (each one line)."""
    env = os.environ if environ is None else environ
    problems: list[str] = []
    given: dict[str, Any] = {}
    path = folder / SETTINGS_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(data, dict):
            given.update(data)
        else:
            problems.append(f"{path}: expected a JSON object; using the defaults")
    except FileNotFoundError:
        pass
    except (OSError, ValueError) as exc:
        problems.append(f"{path}: cannot read ({exc}); using the defaults")
    for name, variable in ENV.items():
        if env.get(variable, "") != "":
            given[name] = env[variable]
    kinds = {f.name: {"bool": bool, "float": float}.get(str(f.type), str) for f in fields(Settings)}
    values: dict[str, Any] = {}
    for name, value in given.items():
        if name not in kinds:
            problems.append(f"{path}: unknown setting {name!r} (known: {', '.join(kinds)})")
            continue
        try:
            values[name] = _coerce(name, kinds[name], value)
        except (TypeError, ValueError) as exc:
            problems.append(f"setting {exc}; using the default")
    return Settings(**values), problems
