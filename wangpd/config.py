"""Configuration: read ``config.yaml`` once, check every key, hand down one frozen object.

This is the only module that reads the YAML (and the only one that imports ``yaml``: other modules that read
YAML data files call :func:`load_yaml`) and the only one that reads ``os.environ`` for settings.
Every error names the file, the key and, when known, the line, in one line: ``wangpd`` prints it and exits 78.
"""

from __future__ import annotations

import dataclasses
import errno
import grp
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from wangpd import protocol
from wangpd.errors import ConfigError
from wangpd.units import format_bytes, parse_duration, parse_rate, parse_size

__all__ = [
    "AutoQueueConfig",
    "Config",
    "DaemonConfig",
    "DownloadConfig",
    "HubConfig",
    "InvokeAIConfig",
    "LibrariesConfig",
    "ScheduleWindow",
    "Wan2GPConfig",
    "WatchConfig",
    "load_config",
    "load_yaml",
]

try:  # the C loader is ~8x faster on the 300 KB handler table
    _Loader: Any = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - PyYAML built without libyaml
    _Loader = yaml.SafeLoader

LINK_MODES = ("symlink", "hardlink", "copy")
TRACK_POLICIES = ("installed", "all", "none")
NEW_MODEL_POLICIES = ("queue", "ignore")
VARIANT_POLICIES = ("wan2gp", "all")
LOG_LEVELS = ("debug", "info", "warning", "error")
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def load_yaml(path: Path, *, trusted: bool = False) -> Any:
    """Parse a YAML file with the fast safe loader. Raises ConfigError naming the file and line.

    ``trusted``: a file shipped inside the package (the handler table), spared the alias-expansion check, which
    would double its parse time."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    return _parse_yaml(text, path, check_aliases=not trusted)


# A YAML file's values once its aliases are expanded: far more than any config or handler table (the shipped table
# is about 60,000), far less than an alias bomb (419 bytes that expand to hundreds of millions of values).
MAX_YAML_VALUES = 2_000_000


def _expanded_size(root: Any) -> int:
    """How many values a composed YAML document holds with every alias expanded, counted without expanding: each
    node's size is computed once (iteratively, so depth cannot exhaust the stack) and reused wherever an alias
    points at it."""
    sizes: dict[int, int] = {}
    stack: list[tuple[Any, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if id(node) in sizes:
            continue
        if isinstance(node, yaml.ScalarNode) or node is None:
            sizes[id(node)] = 1
            continue
        children = [n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode) else node.value
        if children_done:
            sizes[id(node)] = min(1 + sum(sizes[id(child)] for child in children), MAX_YAML_VALUES + 1)
        else:
            stack.append((node, True))
            stack.extend((child, False) for child in children if id(child) not in sizes)
    return sizes[id(root)]


def _parse_yaml(text: str, path: Path, *, check_aliases: bool = True) -> Any:
    """For load_yaml and load_config: errors name the file and, when known, the line. Aliases are allowed (the
    handler table uses them) but a document that would expand past MAX_YAML_VALUES is refused before anything
    walks it."""
    try:
        if check_aliases and "*" in text:  # an alias needs one: composing first costs only the files that could
            root = yaml.compose(text, Loader=_Loader)
            if root is not None and _expanded_size(root) > MAX_YAML_VALUES:
                raise ConfigError(
                    f"{path}: YAML aliases expand to more than {MAX_YAML_VALUES:,} values (an alias bomb?); refused"
                )
        return yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path}{where}: invalid YAML: {problem}") from None
    except (ValueError, OverflowError) as exc:  # a scalar YAML types but cannot build, e.g. the date 2020-13-45
        raise ConfigError(f"{path}: invalid YAML value: {exc}") from None


# ---------------------------------------------------------------------------------------------------------------
# The config object


@dataclass(frozen=True)
class Wan2GPConfig:
    directory: Path
    variants: str = "wan2gp"  # wan2gp = the variant Wan2GP itself would pick; all = every variant
    handler_files: tuple[Path, ...] = ()  # extra/override handler tables, applied after the shipped one
    config_dir: Path | None = None  # Wan2GP's --config DIR (wgp_config.json, queue.zip); None = the Wan2GP folder

    @property
    def settings_dir(self) -> Path:
        """Where Wan2GP keeps wgp_config.json and queue.zip."""
        return self.config_dir if self.config_dir is not None else self.directory


@dataclass(frozen=True)
class InvokeAIConfig:
    db: Path | None = None
    models_dir: Path | None = None


@dataclass(frozen=True)
class LibrariesConfig:
    """Other model libraries (ComfyUI or Forge ``models/``, another Wan2GP's ``ckpts/``): a wanted file found there
    by size and sha256 is linked instead of downloaded."""

    folders: tuple[Path, ...] = ()


@dataclass(frozen=True)
class DaemonConfig:
    state_dir: Path
    db_path: Path
    socket: Path
    socket_group: str | None = None  # members may change state; others may only read
    read_only_others: bool = True  # users outside the group may call read methods
    log_level: str = "info"
    status_interval: float = 5.0
    shutdown_timeout: float = 8.0


@dataclass(frozen=True)
class HubConfig:
    endpoint: str = "https://huggingface.co"
    cache_dir: Path = Path("~/.cache/huggingface/hub")
    token_file: Path | None = None
    metadata_max_age: float = 86400.0
    allowed_hosts: tuple[str, ...] = ()  # other hosts user finetunes may download from (plain HTTPS)
    request_timeout: float = 30.0
    survey_sizes: bool = True  # ask the Hub for the sizes of missing files at start and each reconcile


@dataclass(frozen=True)
class ScheduleWindow:
    days: tuple[int, ...]  # 0 = Monday
    start_minute: int  # minutes after midnight, local time
    end_minute: int  # exclusive; may be < start for a window over midnight
    limit: int  # bytes/s, 0 = unlimited


@dataclass(frozen=True)
class DownloadConfig:
    concurrency: int = 2
    bandwidth: int = 0  # bytes/s, 0 = unlimited
    link_mode: str = "symlink"
    free_space_reserve: int = 10 * 1000**3
    max_attempts: int = 6
    backoff_max: float = 300.0
    stall_timeout: float = 60.0
    # Slower than this over a whole stall_timeout (a server dripping a byte a second) counts as stalled too.
    min_speed: int = 1024
    chunk_size: int = 1024 * 1024
    schedule: tuple[ScheduleWindow, ...] = ()
    # A file of at least two segments goes over several connections at once (CDNs cap each connection's speed).
    connections_per_file: int = 8
    segment_size: int = 64 * 1024 * 1024
    # Open connections of all transfers together, to stay polite with several files at once.
    max_connections: int = 16


@dataclass(frozen=True)
class WatchConfig:
    enabled: bool = True
    force_polling: bool = False
    poll_interval: float = 2.0
    debounce: float = 0.2
    reconcile_interval: float = 300.0


@dataclass(frozen=True)
class AutoQueueConfig:
    track: str = "installed"
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    new_models: str = "queue"
    max_auto_bytes: int = 50 * 1000**3
    require_approval: bool = False  # hold every automatic batch until `wangpctl approve`
    use_traces: bool = True  # keep what Wan2GP says this user uses: transformer_types, outputs' metadata, queue.zip
    # Accelerator profiles (globs on "<profiles dir>/<name>") whose LoRAs kept models get, as if picked in Wan2GP.
    include_profiles: tuple[str, ...] = ()


@dataclass(frozen=True)
class Config:
    path: Path
    wan2gp: Wan2GPConfig
    invokeai: InvokeAIConfig
    daemon: DaemonConfig
    hub: HubConfig
    download: DownloadConfig
    watch: WatchConfig
    auto_queue: AutoQueueConfig
    libraries: LibrariesConfig = field(default_factory=LibrariesConfig)
    environ: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)


# ---------------------------------------------------------------------------------------------------------------
# Loading

Converter = Callable[[Any], Any]


class _Reader:
    """Walks the YAML mapping; every error carries file, dotted key and line."""

    def __init__(self, path: Path, data: dict[str, Any], lines: dict[str, int]) -> None:
        self.path = path
        self.base = path.parent.resolve()
        self.data = data
        self.lines = lines

    def where(self, key: str) -> str:
        line = self.lines.get(key)
        return f"{self.path}:{line}: {key}" if line else f"{self.path}: {key}"

    def fail(self, key: str, problem: str) -> ConfigError:
        return ConfigError(f"{self.where(key)}: {problem}")

    def raw(self, key: str) -> Any:
        node: Any = self.data
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                return None
            node = node[part]
        return node

    def get(self, key: str, convert: Converter, default: Any) -> Any:
        value = self.raw(key)
        if value is None:
            return default
        try:
            converted = convert(value)
        except (ValueError, TypeError) as exc:
            raise self.fail(key, str(exc)) from None
        return self._under_base(converted)

    def _under_base(self, value: Any) -> Any:
        """A relative path in the file is relative to the file's folder, not to where the daemon was started."""
        if isinstance(value, Path):
            return value if value.is_absolute() else self.base / value
        if isinstance(value, tuple) and all(isinstance(item, Path) for item in value):
            return tuple(self._under_base(item) for item in value)
        return value

    def section(self, name: str) -> None:
        value = self.raw(name)
        if value is not None and not isinstance(value, dict):
            raise self.fail(name, f"expected a mapping of settings, got {_kind(value)}")


def _kind(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", bool: "true/false", int: "a number"}.get(
        type(value), type(value).__name__
    )


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {value!r}")
    return value


def _int(minimum: int, maximum: int) -> Callable[[Any], int]:
    def convert(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"expected a whole number, got {value!r}")
        if not minimum <= value <= maximum:
            raise ValueError(f"must be between {minimum} and {maximum}, got {value}")
        return value

    return convert


def _choice(choices: tuple[str, ...]) -> Callable[[Any], str]:
    def convert(value: Any) -> str:
        if not isinstance(value, str) or value.lower() not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}, got {value!r}")
        return value.lower()

    return convert


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {_kind(value)}")
    return value


def _str_list(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ValueError("expected a list of strings")
    return tuple(value)


def _path(value: Any) -> Path:
    """``~`` and ``$VARS`` expanded; :meth:`_Reader.get` makes a relative path relative to the config file."""
    text = _str(value)
    if not text.strip():
        raise ValueError("empty path")
    expanded = os.path.expandvars(text)
    unset = re.search(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", expanded)
    if unset:  # expandvars leaves an unset variable as it is: a folder literally named "$UNSET" is never meant
        raise ValueError(f"{text!r}: the environment variable {unset.group(1)} is not set")
    return Path(os.path.expanduser(expanded))


def _optional_path(value: Any) -> Path | None:
    # The seed's config.yaml wrote an empty string for "no InvokeAI".
    return None if value == "" else _path(value)


def _path_list(value: Any) -> tuple[Path, ...]:
    return tuple(_path(item) for item in _str_list(value))


def _group(value: Any) -> str | None:
    name = _str(value)
    if not name:
        return None
    try:
        grp.getgrnam(name)
    except KeyError:
        raise ValueError(f"no such group {name!r}") from None
    return name


def _positive_duration(value: Any) -> float:
    seconds = parse_duration(value)
    if seconds <= 0:
        raise ValueError("must be more than zero")
    return seconds


def _at_least(
    minimum: float, parse: Callable[[Any], float] = parse_duration, show: Callable[[float], str] = "{:g} s".format
) -> Converter:
    """A duration (or, with ``parse`` and ``show``, another quantity) no less than ``minimum``: a loop run every
    microsecond takes a whole core for nothing, a 1-byte segment means millions of requests."""

    def convert(value: Any) -> float:
        amount = parse(value)
        if amount < minimum:
            raise ValueError(f"must be at least {show(minimum)}, got {show(amount)}")
        return amount

    return convert


def _endpoint(value: Any) -> str:
    text = _str(value).rstrip("/")
    if not re.match(r"^https?://[^/\s]+", text):
        raise ValueError(f"expected an http(s) URL like https://huggingface.co, got {value!r}")
    return text


_TIME_RE = re.compile(r"^([01]?\d|2[0-4]):([0-5]\d)$")


def _minutes(text: Any) -> int:
    match = _TIME_RE.match(str(text).strip())
    if not match or (int(match.group(1)) == 24 and match.group(2) != "00"):
        raise ValueError(f"bad time {text!r} (expected HH:MM, e.g. 08:00)")
    return int(match.group(1)) * 60 + int(match.group(2))


def _days(value: Any) -> tuple[int, ...]:
    text = str(value).strip().lower()
    if text in ("all", "daily", "*"):
        return tuple(range(7))
    if text == "weekdays":
        return (0, 1, 2, 3, 4)
    if text == "weekends":
        return (5, 6)
    days: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if "-" in part:
            first, _, last = part.partition("-")
            if first not in DAYS or last not in DAYS:
                raise ValueError(f"bad day range {part!r} (expected e.g. mon-fri)")
            start, end = DAYS.index(first), DAYS.index(last)
            days.extend(range(start, end + 1) if start <= end else [*range(start, 7), *range(0, end + 1)])
        elif part in DAYS:
            days.append(DAYS.index(part))
        else:
            raise ValueError(f"bad day {part!r} (expected mon..sun, mon-fri, weekdays, weekends or all)")
    return tuple(sorted(set(days)))


def _schedule(value: Any) -> tuple[ScheduleWindow, ...]:
    if not isinstance(value, list):
        raise ValueError("expected a list of windows like {days: mon-fri, from: '08:00', to: '23:00', limit: 10MB/s}")
    windows = []
    for index, item in enumerate(value):
        if not isinstance(item, dict):
            raise ValueError(f"entry {index}: expected a mapping with days, from, to, limit")
        unknown = set(item) - {"days", "from", "to", "limit"}
        if unknown:
            raise ValueError(f"entry {index}: unknown key {sorted(unknown)[0]!r} (allowed: days, from, to, limit)")
        if "limit" not in item:
            raise ValueError(f"entry {index}: 'limit' is required")
        try:
            window = ScheduleWindow(
                days=_days(item.get("days", "all")),
                start_minute=_minutes(item.get("from", "00:00")),
                end_minute=_minutes(item.get("to", "24:00")),
                limit=parse_rate(item["limit"]),
            )
            # Equal ends make an empty window (the end is exclusive): never in force, which no one means to write.
            if window.start_minute == window.end_minute:
                raise ValueError(
                    f"'from' and 'to' are both {item.get('from', item.get('to'))}: the window is empty "
                    "(for all day write from: '00:00', to: '24:00')"
                )
            windows.append(window)
        except ValueError as exc:
            raise ValueError(f"entry {index}: {exc}") from None
    return tuple(windows)


# Config field -> {field of its section dataclass: converter}. Every field is listed and no default is: a key the
# file leaves out is not passed on, so the dataclass default applies. Fields are read in this order, and the first
# bad one is the one reported.
_CONVERTERS: dict[str, dict[str, Converter]] = {
    "wan2gp": {
        "directory": _path,
        "handler_files": _path_list,
        "variants": _choice(VARIANT_POLICIES),
        "config_dir": _optional_path,
    },
    "invokeai": {"db": _optional_path, "models_dir": _optional_path},
    "libraries": {"folders": _path_list},
    "daemon": {
        "state_dir": _path,
        "socket_group": _group,
        "db_path": _path,
        "socket": _path,
        "read_only_others": _bool,
        "log_level": _choice(LOG_LEVELS),
        "status_interval": _at_least(0.05),
        "shutdown_timeout": _at_least(0.1),
    },
    "hub": {
        "endpoint": _endpoint,
        "cache_dir": _path,
        "token_file": _path,
        "metadata_max_age": parse_duration,
        "allowed_hosts": _str_list,
        "request_timeout": _positive_duration,
        "survey_sizes": _bool,
    },
    "download": {
        "bandwidth": parse_rate,
        "concurrency": _int(1, 32),
        "link_mode": _choice(LINK_MODES),
        "free_space_reserve": parse_size,
        "max_attempts": _int(1, 100),
        "backoff_max": _positive_duration,
        "stall_timeout": _at_least(0.5),
        "min_speed": parse_rate,
        "chunk_size": parse_size,
        "schedule": _schedule,
        "connections_per_file": _int(1, 32),
        "segment_size": _at_least(1 << 20, parse_size, format_bytes),
        "max_connections": _int(1, 256),
    },
    "watch": {
        "enabled": _bool,
        "force_polling": _bool,
        "poll_interval": _at_least(0.05),
        "debounce": parse_duration,
        "reconcile_interval": _at_least(1.0),
    },
    "auto_queue": {
        "track": _choice(TRACK_POLICIES),
        "include": _str_list,
        "exclude": _str_list,
        "new_models": _choice(NEW_MODEL_POLICIES),
        "max_auto_bytes": parse_size,
        "require_approval": _bool,
        "use_traces": _bool,
        "include_profiles": _str_list,
    },
}

# The seed's flat config.yaml set these at the top level, and they are still read from there (only there).
# Its fourth top-level key, bandwidth_limit_kb (download.bandwidth in kB/s), is read by _download_config.
_SEED_KEYS = {
    "wan2gp.directory": "wan2gp_directory",
    "invokeai.db": "invokeai_db",
    "invokeai.models_dir": "invokeai_models_dir",
    "libraries.folders": "libraries",  # not the seed's, but a plain list reads best at the top level too
}


def _yaml_key(section: str, name: str) -> str:
    return _SEED_KEYS.get(f"{section}.{name}", f"{section}.{name}")


def _known_keys() -> dict[str, set[str] | None]:
    """Allowed keys: top-level scalars map to None, sections to their keys."""
    known: dict[str, set[str] | None] = dict.fromkeys([*_SEED_KEYS.values(), "bandwidth_limit_kb"])
    for section, converters in _CONVERTERS.items():
        keys = {name for name in converters if f"{section}.{name}" not in _SEED_KEYS}
        if keys:  # not invokeai: all its settings are top-level seed keys
            known[section] = keys
    return known


_ABSENT: Any = object()


def _read_section(reader: _Reader, section: str, **defaults: Any) -> dict[str, Any]:
    """The fields of ``section`` the file sets, converted.

    A field the file leaves out takes its value from ``defaults`` (for defaults that depend on the environment)
    or is left out, so that the dataclass default applies.
    """
    values: dict[str, Any] = {}
    for name, convert in _CONVERTERS[section].items():
        value = reader.get(_yaml_key(section, name), convert, defaults.get(name, _ABSENT))
        if value is not _ABSENT:
            values[name] = value
    return values


def _check_keys(reader: _Reader) -> None:
    known = _known_keys()
    for key, value in reader.data.items():
        if not isinstance(key, str) or key not in known:
            raise reader.fail(str(key), f"unknown key (known: {', '.join(sorted(known))})")
        allowed = known[key]
        if allowed is not None:
            reader.section(key)
            for sub in value or {}:
                if sub not in allowed:
                    raise reader.fail(f"{key}.{sub}", f"unknown key (known in {key}: {', '.join(sorted(allowed))})")


def _not_a_folder(path: Path) -> str:
    """Why ``path`` is no usable folder, in the words that help: missing, a file, a symlink loop, unreadable."""
    try:
        os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return f"{path} is a symlink loop"
        if exc.errno == errno.ENOENT:
            return f"folder {path} does not exist"
        return f"{path}: {exc.strerror}"
    return f"{path} is a file, not a folder"


def _wan2gp_config(reader: _Reader) -> Wan2GPConfig:
    # Nothing else matters without it, so it is reported before any other mistake in the file.
    if reader.raw("wan2gp_directory") is None:
        raise reader.fail("wan2gp_directory", "required: the folder that holds Wan2GP's wgp.py and defaults/")
    values = _read_section(reader, "wan2gp")
    if not values["directory"].is_dir():
        raise reader.fail("wan2gp_directory", _not_a_folder(values["directory"]))
    for index, handler_path in enumerate(values.get("handler_files", ())):
        if not handler_path.is_file():
            raise reader.fail("wan2gp.handler_files", f"entry {index}: file {handler_path} does not exist")
    return Wan2GPConfig(**values)


def _invokeai_config(reader: _Reader) -> InvokeAIConfig:
    # A missing database is a warning at run time, not a config error (InvokeAI may be installed later).
    invokeai = InvokeAIConfig(**_read_section(reader, "invokeai"))
    if invokeai.db is not None and invokeai.models_dir is None:
        # InvokeAI keeps invokeai.db in <root>/databases/ and models in <root>/models/.
        invokeai = dataclasses.replace(invokeai, models_dir=invokeai.db.parent.parent / "models")
    return invokeai


def _xdg(environ: Mapping[str, str], var: str, fallback: str) -> Path:
    value = environ.get(var)
    return Path(value) if value else Path(environ.get("HOME", str(Path.home()))) / fallback


MAX_SOCKET_PATH = 107  # sun_path is 108 bytes on Linux, one of them the terminating NUL


def _daemon_config(reader: _Reader, env: Mapping[str, str]) -> DaemonConfig:
    # systemd's StateDirectory= may list several colon-separated folders; the first is ours.
    state_dir = (
        Path(env["STATE_DIRECTORY"].split(":")[0])
        if env.get("STATE_DIRECTORY")
        else _xdg(env, "XDG_STATE_HOME", ".local/state") / "wangpd"
    )
    values = _read_section(reader, "daemon", state_dir=state_dir, socket=protocol.default_socket_path(env))
    values.setdefault("db_path", values["state_dir"] / "hfcache.db")
    length = len(os.fsencode(values["socket"]))
    if length > MAX_SOCKET_PATH:  # the kernel's sockaddr_un: a longer path cannot be bound at all
        raise reader.fail("daemon.socket", f"{length} bytes long; a Unix socket path has {MAX_SOCKET_PATH} at most")
    return DaemonConfig(**values)


def _hub_config(reader: _Reader, env: Mapping[str, str]) -> HubConfig:
    # huggingface_hub's own variables, so that the daemon and the user's hf tools share one cache and endpoint.
    if env.get("HF_HUB_CACHE"):
        cache_dir = Path(env["HF_HUB_CACHE"])
    elif env.get("HF_HOME"):
        cache_dir = Path(env["HF_HOME"]) / "hub"
    elif env.get("CACHE_DIRECTORY"):
        cache_dir = Path(env["CACHE_DIRECTORY"].split(":")[0]) / "huggingface" / "hub"
    else:
        cache_dir = _xdg(env, "XDG_CACHE_HOME", ".cache") / "huggingface" / "hub"
    defaults: dict[str, Any] = {"cache_dir": cache_dir}
    if env.get("HF_ENDPOINT"):
        try:
            defaults["endpoint"] = _endpoint(env["HF_ENDPOINT"])
        except ValueError as exc:
            raise ConfigError(f"environment variable HF_ENDPOINT: {exc} (unset it or set hub.endpoint)") from None
    hub = HubConfig(**_read_section(reader, "hub", **defaults))
    if hub.token_file is not None and not hub.token_file.is_file():
        raise reader.fail("hub.token_file", f"file {hub.token_file} does not exist")
    return hub


def _download_config(reader: _Reader) -> DownloadConfig:
    # The seed's bandwidth_limit_kb is download.bandwidth in kB/s; it fills in the field, it does not override it.
    seed_kb = reader.get("bandwidth_limit_kb", _int(0, 10**9), None)
    values = _read_section(reader, "download")
    if seed_kb and values.get("bandwidth"):
        raise reader.fail("bandwidth_limit_kb", "set either bandwidth_limit_kb or download.bandwidth, not both")
    if seed_kb is not None:
        values.setdefault("bandwidth", seed_kb * 1000)
    download = DownloadConfig(**values)
    if not 4096 <= download.chunk_size <= 64 * 1024 * 1024:
        raise reader.fail("download.chunk_size", "must be between 4KiB and 64MiB")
    return download


def _line_map(text: str, path: Path | None = None) -> dict[str, int]:
    """Dotted key -> 1-based line, for error messages. Empty when the text does not compose. With ``path``, a key
    given twice in one mapping raises ConfigError naming both lines: YAML keeps the last one silently."""
    lines: dict[str, int] = {}
    try:
        root = yaml.compose(text, Loader=_Loader)
    except yaml.YAMLError:
        return lines

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                key = f"{prefix}{key_node.value}"
                line = key_node.start_mark.line + 1
                if key in lines and path is not None:
                    raise ConfigError(f"{path}:{line}: {key}: given twice (first on line {lines[key]}); keep one")
                lines.setdefault(key, line)
                if not prefix:
                    walk(value_node, key + ".")

    walk(root, "")
    return lines


def load_config(path: Path | str, environ: Mapping[str, str] | None = None) -> Config:
    """Read and check ``path``. Raises ConfigError with one line naming file, key and line."""
    path = Path(path)
    env = dict(os.environ if environ is None else environ)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found (pass --config PATH)") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: config is not UTF-8 text") from None
    data = _parse_yaml(text, path)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of settings at the top level, got {_kind(data)}")
    reader = _Reader(path, data, _line_map(text, path))
    _check_keys(reader)
    return Config(
        path=path.resolve(),
        wan2gp=_wan2gp_config(reader),
        invokeai=_invokeai_config(reader),
        daemon=_daemon_config(reader, env),
        hub=_hub_config(reader, env),
        download=_download_config(reader),
        watch=WatchConfig(**_read_section(reader, "watch")),
        auto_queue=AutoQueueConfig(**_read_section(reader, "auto_queue")),
        libraries=LibrariesConfig(**_read_section(reader, "libraries")),
        environ=env,
    )
