"""``wangpctl doctor``, the daemon's half: is this setup able to do its job, and if not, what to change.

Each check gives ``{check, level, message, fix}`` with level OK, WARN (works, but not as well as it could) or
FAIL (something will not work until fixed). Checks only read: they never create, fix or download anything, and
never print a secret (the HF token is reported as present or absent, nothing more).
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wangpd import protocol
from wangpd.config import load_config
from wangpd.errors import ConfigError
from wangpd.paths import disk_free, nearest_existing
from wangpd.units import format_bytes
from wangpd.view import DaemonView

__all__ = ["INOTIFY_WATCHES", "QueueFacts", "run_checks"]

INOTIFY_WATCHES = Path("/proc/sys/fs/inotify/max_user_watches")
SHOW_ERRORS = 3  # model definitions named in the message; `wangpctl models` lists them all
INOTIFY_FIX = (
    "echo fs.inotify.max_user_watches=524288 | sudo tee /etc/sysctl.d/90-wangpd.conf && sudo sysctl --system "
    "(or set watch.force_polling: true)"
)


def _check(name: str, level: str, message: str, fix: str = "") -> dict[str, Any]:
    return {"check": name, "level": level, "message": message, "fix": fix}


@dataclass(frozen=True)
class QueueFacts:
    """What the checks need from the queue database, read by the caller on the event loop's thread (the store's
    connection is not used from the doctor's worker thread)."""

    counts: dict[str, int]
    remaining_bytes: int
    write_error: str | None = None  # why the queue database cannot be written now, if it cannot


def run_checks(daemon: DaemonView, queue: QueueFacts) -> list[dict[str, Any]]:
    """Every check, in the order a person would fix things. Blocking (reads files, walks folders): run it in a
    thread."""
    checks: list[dict[str, Any]] = []
    steps = (_config, _wan2gp, _models, _hf_cache, _token, _invokeai, _disk, _inotify, _watcher, _socket, _plugin)
    for step in (*steps, _queue):
        try:
            checks += step(daemon, queue)
        except Exception as exc:  # one broken check must not hide the others
            checks.append(_check(step.__name__.strip("_"), "WARN", f"could not check: {type(exc).__name__}: {exc}"))
    return checks


def _config(daemon: DaemonView, queue: QueueFacts) -> list[dict[str, Any]]:
    path = daemon.config.path
    try:
        load_config(path, environ=daemon.config.environ)
    except ConfigError as exc:
        return [
            _check(
                "config",
                "FAIL",
                f"{path}: the running config is fine, but the file now fails: {exc}",
                "fix the file (`wangpd check-config --config PATH`) before a reload or restart",
            )
        ]
    return [_check("config", "OK", f"{path} loads")]


def _wan2gp(daemon: DaemonView, queue: QueueFacts) -> list[dict[str, Any]]:
    root = daemon.config.wan2gp.directory
    if not root.is_dir():
        return [_check("wan2gp", "FAIL", f"{root} does not exist", "set wan2gp_directory, then `wangpctl reload`")]
    checks = []
    for folder, level in (("defaults", "FAIL"), ("ckpts", "WARN")):
        if (root / folder).is_symlink() and not (root / folder).exists():  # a loop, or a target gone
            checks.append(
                _check(
                    "wan2gp",
                    level,
                    f"{root / folder} is a symlink that leads nowhere (a loop, or its target is gone)",
                    f"fix or remove the link {root / folder} (`ls -l {root / folder}`)",
                )
            )
        elif not (root / folder).is_dir():
            checks.append(
                _check(
                    "wan2gp",
                    level,
                    f"{root} has no {folder}/ folder",
                    "point wan2gp_directory at the folder that holds wgp.py and defaults/"
                    if folder == "defaults"
                    else f"mkdir {root / folder} (Wan2GP creates it on first run)",
                )
            )
    if not os.access(root, os.W_OK):
        checks.append(
            _check("wan2gp", "FAIL", f"{root} is not writable by the daemon", "give the daemon's user write access")
        )
    if (root / "wgp_config.json").is_file():
        checks.append(_check("wan2gp", "OK", f"{root}: defaults/ and wgp_config.json present"))
    else:
        checks.append(
            _check(
                "wan2gp",
                "WARN",
                f"{root} has no wgp_config.json: Wan2GP's default settings (quantization, paths) are assumed",
                "start Wan2GP once and save its settings",
            )
        )
    return checks


def _models(daemon: DaemonView, queue: QueueFacts) -> list[dict[str, Any]]:
    catalog = daemon.keeper.catalog if daemon.keeper else None
    if catalog is None:
        return [_check("models", "WARN", "the definitions have not been read yet", "wangpctl rescan")]
    checks = []
    broken = sorted((t, m.error) for t, m in catalog.models.items() if m.error)
    if broken:
        shown = "; ".join(f"{t}: {e}" for t, e in broken[:SHOW_ERRORS])
        more = f" (+{len(broken) - SHOW_ERRORS} more)" if len(broken) > SHOW_ERRORS else ""
        checks.append(
            _check(
                "models",
                "WARN",
                f"{len(broken)} of {len(catalog.models)} model definitions fail: {shown}{more}",
                "wangpctl models --all --filter TYPE shows each; fix or remove the file",
            )
        )
    else:
        checks.append(_check("models", "OK", f"{len(catalog.models)} model definitions resolve"))
    for error in catalog.errors[:SHOW_ERRORS]:
        checks.append(_check("models", "WARN", error, "fix the file named; its defaults are used meanwhile"))
    if catalog.handler_commit:
        checks.append(_check("handlers", "OK", f"handler table from Wan2GP commit {catalog.handler_commit[:12]}"))
    else:
        checks.append(
            _check(
                "handlers",
                "WARN",
                "the handler table names no Wan2GP commit: files of newer model families may be missed",
                "update wangpd, or add a table with wan2gp.handler_files",
            )
        )
    return checks


def _writable_folder(path: Path) -> tuple[bool, Path]:
    """Whether the daemon could create files in ``path`` (or create ``path``): its nearest existing folder."""
    probe = nearest_existing(path)
    return os.access(probe, os.W_OK | os.X_OK), probe


def _hf_cache(daemon: DaemonView, queue: QueueFacts) -> list[dict[str, Any]]:
    cache = daemon.config.hub.cache_dir
    writable, probe = _writable_folder(cache)
    if not writable:
        return [
            _check(
                "hf-cache",
                "FAIL",
                f"{cache}: {probe} is not writable by the daemon",
                "set hub.cache_dir (or HF_HUB_CACHE) to a folder it may write, or fix the owner",
            )
        ]
    if not cache.is_dir():
        return [_check("hf-cache", "OK", f"{cache} will be created on the first download")]
    return [_check("hf-cache", "OK", f"{cache} exists and is writable")]


def _token(daemon: DaemonView, queue: QueueFacts) -> list[dict[str, Any]]:
    if daemon.sources.hub.has_token:
        source = f"from {daemon.config.hub.token_file}" if daemon.config.hub.token_file else "from huggingface_hub"
        return [_check("hf-token", "OK", f"a HuggingFace token is set ({source}; not shown)")]
    return [
        _check(
            "hf-token",
            "WARN",
            "no HuggingFace token: public repos work, gated or private ones fail with 401/403",
            "put a token in a file readable by the daemon only and set hub.token_file (or `hf auth login` as its user)",
        )
    ]


def _invokeai(daemon: DaemonView, queue: QueueFacts) -> list[dict[str, Any]]:
    index = daemon.sources.invokeai
    if index.db_path is None:
        return [_check("invokeai", "OK", "not configured (invokeai_db): nothing reused from InvokeAI")]
    if index.warning:
        return [
            _check(
                "invokeai",
                "WARN",
                index.warning,
                "check invokeai_db and that the daemon's user may read it (and its folder, for the -wal file)",
            )
        ]
    return [_check("invokeai", "OK", f"{index.db_path} readable: {len(index.models)} model(s) can be reused")]


def _disk(daemon: DaemonView, queue: QueueFacts) -> list[dict[str, Any]]:
    reserve = daemon.config.download.free_space_reserve
    remaining = queue.remaining_bytes or 0
    checks = []
    seen: set[int] = set()
    for label, path in (("HF cache", daemon.config.hub.cache_dir), ("Wan2GP", daemon.config.wan2gp.directory)):
        _, probe = _writable_folder(path)
        try:
            device = probe.stat().st_dev
        except OSError:
            continue
        if device in seen:
            continue
        seen.add(device)
        free = disk_free(path)
        if free is None:
            continue
        where = f"{label} ({probe}): {format_bytes(free)} free, reserve {format_bytes(reserve)}"
        if free < reserve:
            checks.append(
                _check(
                    "disk",
                    "FAIL",
                    f"{where}: downloads are refused",
                    "free space, or lower download.free_space_reserve",
                )
            )
        elif label == "HF cache" and free - remaining < reserve:
            checks.append(
                _check(
                    "disk",
                    "WARN",
                    f"{where}; the queue still needs {format_bytes(remaining)}: it will stop short",
                    "free space, or drop jobs (wangpctl cancel / reject)",
                )
            )
        else:
            checks.append(_check("disk", "OK", where))
    return checks


def _watched_dirs(daemon: DaemonView, cap: int) -> int:
    """How many folders inotify must watch (one watch each), counted up to ``cap``."""
    targets = daemon.layout().watch_targets()
    count = sum(1 for p in targets.shallow if p.is_dir())
    for root in targets.recursive:
        for _ in os.walk(root):
            count += 1
            if count >= cap:
                return count
    return count


def _inotify(daemon: DaemonView, queue: QueueFacts) -> list[dict[str, Any]]:
    watch = daemon.config.watch
    if not watch.enabled or watch.force_polling:
        return [
            _check("inotify", "OK", "not used (" + ("watch.enabled is false" if not watch.enabled else "polling") + ")")
        ]
    try:
        limit = int(INOTIFY_WATCHES.read_text().strip())
    except (OSError, ValueError):
        return [_check("inotify", "WARN", f"cannot read {INOTIFY_WATCHES}", "")]
    needed = _watched_dirs(daemon, limit + 1)
    message = f"{needed} folder(s) to watch, max_user_watches {limit}"
    if needed > limit:
        return [_check("inotify", "FAIL", message + ": changes will be missed", INOTIFY_FIX)]
    if needed > limit // 2:
        # The limit is per user: an editor, Wan2GP's own reloader or a sync client share it.
        return [_check("inotify", "WARN", message + ": more than half the per-user limit", INOTIFY_FIX)]
    return [_check("inotify", "OK", message)]


def _watcher(daemon: DaemonView, queue: QueueFacts) -> list[dict[str, Any]]:
    if daemon.watcher is None:
        return [
            _check(
                "watcher",
                "WARN",
                "off (watch.enabled is false): new definitions are seen only every watch.reconcile_interval",
                "set watch.enabled: true",
            )
        ]
    info = daemon.watcher.describe()
    text = f"{info['state']} ({info['mode']})" + (f": {info['reason']}" if info.get("reason") else "")
    if info["state"] == "watching":
        return [_check("watcher", "OK", text)]
    return [_check("watcher", "WARN", text, "check the Wan2GP folder exists; the daemon log says more")]


def _socket(daemon: DaemonView, queue: QueueFacts) -> list[dict[str, Any]]:
    path = daemon.config.daemon.socket
    try:
        info = path.stat()
    except OSError as exc:
        return [
            _check(
                "socket",
                "WARN",
                f"{path}: {exc.strerror} ({daemon.listening})",
                "restart the daemon so it binds its socket again",
            )
        ]
    mode = stat.S_IMODE(info.st_mode)
    try:
        group = grp.getgrgid(info.st_gid).gr_name
    except KeyError:
        group = str(info.st_gid)
    text = f"{path} mode {mode:04o} group {group} ({daemon.listening})"
    wanted = daemon.config.daemon.socket_group
    if mode & 0o006:
        return [_check("socket", "WARN", text + ": every local user can connect", "systemd: SocketMode=0660")]
    if wanted and group != wanted:
        return [
            _check(
                "socket",
                "WARN",
                text + f": daemon.socket_group is {wanted}, so its members cannot connect",
                f"SocketGroup={wanted} in wangpd.socket, or chgrp {wanted} {path.parent}",
            )
        ]
    return [_check("socket", "OK", text)]


def _wan2gp_user(root: Path) -> int | None:
    """The uid Wan2GP runs as: a running ``wgp.py`` of this folder's, else the owner of its ``wgp.py``."""
    proc = Path("/proc")
    for entry in proc.iterdir() if proc.is_dir() else []:
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
            if not any(a.endswith(b"wgp.py") for a in args):
                continue
            if Path(os.path.realpath(os.readlink(entry / "cwd"))) == root:
                return entry.stat().st_uid
        except OSError:
            continue
    try:
        return (root / "wgp.py").stat().st_uid
    except OSError:
        return None


def _plugin(daemon: DaemonView, queue: QueueFacts) -> list[dict[str, Any]]:
    """wangpd's Wan2GP plugin: installed, enabled, and able to reach the socket as the user Wan2GP runs as."""
    root = Path(os.path.realpath(daemon.config.wan2gp.directory))
    folder = root / "plugins" / protocol.WAN2GP_PLUGIN_ID
    install = "wangpctl wan2gp install-plugin"
    if not (folder / protocol.WAN2GP_PLUGIN_MARKER).is_file():
        return [_check("plugin", "OK", f"not installed in {root} (optional: a Model downloads tab in Wan2GP)")]
    if protocol.WAN2GP_PLUGIN_ID not in daemon.layout().settings.enabled_plugins:
        return [
            _check("plugin", "WARN", f"{folder} is installed but not in enabled_plugins of wgp_config.json", install)
        ]
    uid = _wan2gp_user(root)
    socket_path = daemon.config.daemon.socket
    if uid is None or uid in (0, os.geteuid()):
        return [_check("plugin", "OK", f"installed and enabled in {root}; Wan2GP's user can use {socket_path}")]
    try:
        user = pwd.getpwuid(uid)
        info = socket_path.stat()
    except (KeyError, OSError) as exc:
        return [_check("plugin", "WARN", f"installed and enabled; cannot tell who may use the socket: {exc}")]
    groups = os.getgrouplist(user.pw_name, user.pw_gid)
    allowed = daemon.config.daemon.socket_group
    if (
        info.st_gid in groups
        and info.st_mode & 0o060 == 0o060
        and (not allowed or grp.getgrnam(allowed).gr_gid in groups)
    ):
        return [_check("plugin", "OK", f"installed and enabled; Wan2GP runs as {user.pw_name}, who may use the socket")]
    group = allowed or grp.getgrgid(info.st_gid).gr_name
    return [
        _check(
            "plugin",
            "WARN",
            f"installed and enabled, but Wan2GP runs as {user.pw_name}, who may not change things through "
            f"{socket_path} (the plugin then falls back to Wan2GP's own downloads)",
            f"sudo usermod -aG {group} {user.pw_name} (daemon.socket_group: {group}), then restart Wan2GP",
        )
    ]


def _queue(daemon: DaemonView, queue: QueueFacts) -> list[dict[str, Any]]:
    counts = queue.counts
    checks = []
    if queue.write_error is not None:
        checks.append(
            _check(
                "queue",
                "FAIL",
                f"{daemon.config.daemon.db_path}: {queue.write_error}; nothing new starts until it can be written",
                f"free space on the disk of {daemon.config.daemon.db_path.parent} (df -h); wangpd goes on by itself",
            )
        )
    if daemon.paused:
        checks.append(_check("queue", "WARN", "downloads are paused", "wangpctl resume"))
    if counts.get("failed"):
        checks.append(
            _check(
                "queue",
                "WARN",
                f"{counts['failed']} failed job(s)",
                "wangpctl queue --state failed (reasons), wangpctl retry JOB",
            )
        )
    if counts.get("needs_approval"):
        checks.append(
            _check("queue", "WARN", f"{counts['needs_approval']} file(s) wait for approval", "wangpctl approve")
        )
    if not checks:
        checks.append(_check("queue", "OK", f"{daemon.config.daemon.db_path}: nothing failed or waiting"))
    return checks
