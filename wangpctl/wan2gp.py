"""``wangpctl wan2gp install-plugin`` / ``uninstall-plugin``: put wangpd's Wan2GP plugin into a Wan2GP folder and
list it in ``enabled_plugins``, or take it out again.

The plugin's files ship inside the wangpd package (``wangpd/wan2gp_plugin/``); they are found by path, next to
this package, or through ``importlib.resources`` (which imports only ``wangpd/__init__.py``): wangpctl imports no
daemon module but the protocol. ``wgp_config.json`` is edited in place: only the ``enabled_plugins`` value changes,
every other byte stays; the file is replaced atomically (temp file + rename), a backup of the previous version is
kept as ``wgp_config.json.wangpd-backup``, and its mode (and owner, when run as root) is kept.
"""

from __future__ import annotations

import contextlib
import importlib.resources
import json
import os
import shutil
from pathlib import Path
from typing import Any

from wangpd import protocol

__all__ = [
    "MARKER",
    "PLUGIN_ID",
    "PluginInstallError",
    "install_plugin",
    "plugin_source",
    "uninstall_plugin",
    "wan2gp_processes",
]

PLUGIN_ID = protocol.WAN2GP_PLUGIN_ID  # a folder name Wan2GP's .gitignore leaves alone (wan2gp-*): `git pull` keeps it
MARKER = protocol.WAN2GP_PLUGIN_MARKER  # in the plugin folder: wangpd put it there, so uninstall may remove it
BACKUP_SUFFIX = ".wangpd-backup"
CONFIG_NAME = "wgp_config.json"
SETTINGS_NAME = "settings.json"  # the plugin's own settings: kept across a reinstall
RESTART = "restart Wan2GP (it loads plugins at start)"


class PluginInstallError(Exception):
    """The folder is not Wan2GP's, the config cannot be read, or the plugin folder is not wangpd's: the message
    names the file and says what to do. Nothing was changed."""


def plugin_source() -> Any:
    """The shipped plugin folder: a Path next to this package (a checkout, or a wheel's site-packages), else the
    installed package's data through importlib.resources."""
    here = Path(__file__).resolve().parent.parent / "wangpd" / "wan2gp_plugin"
    if (here / "plugin.py").is_file():
        return here
    source = importlib.resources.files("wangpd") / "wan2gp_plugin"
    if not (source / "plugin.py").is_file():
        raise PluginInstallError("the wangpd package has no wan2gp_plugin/ folder: reinstall wangpd")
    return source


def _plugin_files(source: Any) -> dict[str, bytes]:
    files = {}
    for entry in source.iterdir():
        if entry.is_file() and (entry.name.endswith(".py") or entry.name == "plugin_info.json"):
            files[entry.name] = entry.read_bytes()
    return dict(sorted(files.items()))


def _check_wan2gp(wan2gp_dir: Path) -> Path:
    wan2gp_dir = Path(wan2gp_dir).expanduser()
    if not (wan2gp_dir / "wgp.py").is_file():
        raise PluginInstallError(
            f"{wan2gp_dir / 'wgp.py'} not found: {wan2gp_dir} is not a Wan2GP folder (give --wan2gp DIR, the folder "
            "with wgp.py)"
        )
    return wan2gp_dir.resolve()


# ---- wgp_config.json, edited in place ----------------------------------------------------------------------------


def _skip_space(text: str, at: int) -> int:
    while at < len(text) and text[at] in " \t\r\n":
        at += 1
    return at


def _members(text: str) -> tuple[list[tuple[str, int, int, int]], int]:
    """The top-level members of a JSON object text: (key, key start, value start, value end), and where its
    closing brace is. Raises ValueError on anything else."""
    decoder = json.JSONDecoder()
    at = _skip_space(text, 0)
    if text[at : at + 1] != "{":
        raise ValueError("not a JSON object")
    at = _skip_space(text, at + 1)
    members = []
    while text[at : at + 1] != "}":
        if text[at : at + 1] != '"':
            raise ValueError(f"expected a key at {at}")
        key_start = at
        key, at = json.decoder.scanstring(text, at + 1)
        at = _skip_space(text, at)
        if text[at : at + 1] != ":":
            raise ValueError(f"expected ':' at {at}")
        value_start = _skip_space(text, at + 1)
        _, value_end = decoder.raw_decode(text, value_start)
        members.append((key, key_start, value_start, value_end))
        at = _skip_space(text, value_end)
        if text[at : at + 1] == ",":
            at = _skip_space(text, at + 1)
        elif text[at : at + 1] != "}":
            raise ValueError(f"expected ',' or '}}' at {at}")
    return members, at


def _indent_of(text: str, at: int) -> str:
    line_start = text.rfind("\n", 0, at) + 1
    prefix = text[line_start:at]
    return prefix if not prefix.strip() else ""


def _list_text(values: list[Any], indent: str, multiline: bool, ensure_ascii: bool) -> str:
    if not multiline or not values:
        return json.dumps(values, ensure_ascii=ensure_ascii)
    step = indent or "    "
    lines = json.dumps(values, indent=len(step.expandtabs()), ensure_ascii=ensure_ascii).split("\n")
    return "\n".join([lines[0], *[indent + line for line in lines[1:]]])


def _with_enabled(text: str, data: dict[str, Any], enabled: list[Any]) -> str:
    """``text`` with ``enabled_plugins`` set to ``enabled``, everything else byte for byte; the whole file
    re-written in Wan2GP's own style (indent 4) only if the text cannot be edited in place."""
    bom = "\ufeff" if text.startswith("\ufeff") else ""
    text = text[len(bom) :]
    ensure_ascii = text.isascii()
    wanted = {**data, "enabled_plugins": enabled}
    try:
        members, close = _members(text)
        multiline = "\n" in text.strip()
        existing = [m for m in members if m[0] == "enabled_plugins"]
        if existing:
            _, key_start, value_start, value_end = existing[-1]  # JSON's last duplicate wins, as in json.loads
            indent = _indent_of(text, key_start)
            multiline = "\n" in text[value_start:value_end] or (multiline and bool(enabled))
            new = text[:value_start] + _list_text(enabled, indent, multiline, ensure_ascii) + text[value_end:]
        elif members:
            _, key_start, _, value_end = members[-1]
            indent = _indent_of(text, key_start)
            separator = ",\n" + indent if multiline else ", "
            value = _list_text(enabled, indent, multiline, ensure_ascii)
            new = text[:value_end] + f'{separator}"enabled_plugins": {value}' + text[value_end:]
        else:
            new = text[:close] + f'"enabled_plugins": {json.dumps(enabled)}' + text[close:]
        if json.loads(new) == wanted:
            return bom + new
    except ValueError:
        pass
    return bom + json.dumps(wanted, indent=4, ensure_ascii=ensure_ascii)


def _read_config(path: Path) -> tuple[str, dict[str, Any]]:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise PluginInstallError(f"{path}: cannot read ({exc.strerror or exc})") from None
    text = raw.decode("utf-8-sig", errors="strict") if raw else ""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise PluginInstallError(
            f"{path} is not JSON ({exc}): not Wan2GP's config, or damaged; fix it or start Wan2GP once to rewrite it"
        ) from None
    if not isinstance(data, dict):
        raise PluginInstallError(f"{path} is not a JSON object: not Wan2GP's config")
    enabled = data.get("enabled_plugins", [])
    if not isinstance(enabled, list):
        raise PluginInstallError(f"{path}: enabled_plugins is {type(enabled).__name__}, Wan2GP expects a list")
    return raw.decode("utf-8", errors="strict"), data


def _atomic_write(path: Path, content: bytes, like: Path | None = None) -> None:
    temporary = path.with_name(f".{path.name}.wangpd-{os.getpid()}.tmp")
    try:
        with open(temporary, "wb") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        if like is not None and like.exists():
            stat = like.stat()
            os.chmod(temporary, stat.st_mode & 0o7777)
            if os.geteuid() == 0:  # root editing a user's Wan2GP: the file stays the user's
                with contextlib.suppress(OSError):
                    os.chown(temporary, stat.st_uid, stat.st_gid)
        os.replace(temporary, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
    with contextlib.suppress(OSError):  # the rename itself, durable
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)


def _set_enabled(path: Path, add: bool) -> dict[str, Any]:
    """Add or remove the plugin's id in ``enabled_plugins``; returns {changed, backup}."""
    text, data = _read_config(path)
    enabled = list(data.get("enabled_plugins", []))
    if add == (PLUGIN_ID in enabled):
        return {"changed": False, "backup": None}
    enabled = [*enabled, PLUGIN_ID] if add else [p for p in enabled if p != PLUGIN_ID]
    new = _with_enabled(text, data, enabled)
    backup = path.with_name(path.name + BACKUP_SUFFIX)
    shutil.copy2(path, backup)
    _atomic_write(path, new.encode("utf-8"), like=path)
    return {"changed": True, "backup": str(backup)}


# ---- the plugin folder -------------------------------------------------------------------------------------------


def _is_ours(folder: Path) -> bool:
    return (folder / MARKER).is_file() and not (folder / MARKER).is_symlink()


def _copy_plugin(target: Path, files: dict[str, bytes], socket: str | None) -> None:
    """Write the plugin into ``target`` whole or not at all: built beside it, then swapped in."""
    staging = target.with_name(f".{target.name}.wangpd-{os.getpid()}.new")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        for name, content in files.items():
            (staging / name).write_bytes(content)
        settings: dict[str, Any] = {}
        old_settings = target / SETTINGS_NAME
        if old_settings.is_file():
            (staging / SETTINGS_NAME).write_bytes(old_settings.read_bytes())
            with contextlib.suppress(ValueError, OSError):
                settings = json.loads(old_settings.read_text(encoding="utf-8"))
        if socket and isinstance(settings, dict) and settings.get("socket") != socket:
            settings["socket"] = socket
            (staging / SETTINGS_NAME).write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")
        info = json.loads(files["plugin_info.json"])
        marker = {"installed_by": "wangpctl wan2gp install-plugin", "version": info.get("version")}
        marker["files"] = list(files)
        (staging / MARKER).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
        old = target.with_name(f".{target.name}.wangpd-{os.getpid()}.old")
        if target.exists():
            os.rename(target, old)
        os.rename(staging, target)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def wan2gp_processes(root: Path) -> list[int]:
    """Processes running ``<root>/wgp.py`` (read from /proc; those of other users may be unreadable: not listed)."""
    found = []
    for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else []:
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
            scripts = [a.decode(errors="replace") for a in args if a.endswith(b"wgp.py")]
            if not scripts:
                continue
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if any(Path(os.path.realpath(os.path.join(cwd, s))).parent == root for s in scripts):
            found.append(int(entry.name))
    return sorted(found)


def install_plugin(
    wan2gp_dir: Path,
    *,
    running_dir: Path | None = None,
    config_dir: Path | None = None,
    socket: str | None = None,
) -> dict[str, Any]:
    """Copy the plugin to ``<wan2gp>/plugins/wan2gp-wangpd/`` and enable it in ``wgp_config.json``.

    ``running_dir``: the Wan2GP folder in use (the one wangpd manages, or where Wan2GP runs): refused when it is
    another folder. ``config_dir``: Wan2GP's ``--config DIR``, where its wgp_config.json is then. ``socket``:
    written to the plugin's settings, for a daemon the plugin would not find by itself.
    Returns what was done: plugin_dir, files, config, enabled (newly), already_enabled, backup, restart, notes.
    Raises PluginInstallError, before changing anything, for a folder that is not Wan2GP's, a config that is not
    JSON, or a plugin folder that wangpd did not make."""
    root = _check_wan2gp(wan2gp_dir)
    if running_dir is not None and Path(os.path.realpath(running_dir)) != root:
        raise PluginInstallError(
            f"the Wan2GP folder in use is {running_dir}, not {root}: install into that folder (--wan2gp "
            f"{running_dir}), or point wangpd at {root} first"
        )
    config = Path(config_dir or root).expanduser() / CONFIG_NAME
    if config.exists():
        _read_config(config)  # refuse before copying anything
    target = root / "plugins" / PLUGIN_ID
    if target.exists() and not _is_ours(target):
        raise PluginInstallError(
            f"{target} exists and was not installed by wangpd (no {MARKER} in it): move it away, then install again"
        )
    files = _plugin_files(plugin_source())
    upgraded = target.exists()
    (root / "plugins").mkdir(exist_ok=True)
    _copy_plugin(target, files, socket)
    result: dict[str, Any] = {
        "plugin_dir": str(target),
        "files": list(files),
        "replaced": upgraded,
        "config": str(config),
        "enabled": False,
        "already_enabled": False,
        "backup": None,
        "restart": RESTART,
        "notes": [],
    }
    if not config.exists():
        result["notes"].append(
            f"{config} does not exist yet: start Wan2GP once (it writes it), then run install-plugin again, or "
            f"enable {PLUGIN_ID} in Wan2GP's Plugins tab"
        )
        return result
    change = _set_enabled(config, add=True)
    result.update(enabled=change["changed"], already_enabled=not change["changed"], backup=change["backup"])
    running = wan2gp_processes(root)
    if running and change["changed"]:
        # Wan2GP rewrites wgp_config.json from memory (at each model switch, on settings changes): a running one
        # would put back its old enabled_plugins.
        result["notes"].append(
            f"Wan2GP is running (pid {', '.join(map(str, running))}): stop it now, before it rewrites {config} "
            f"without {PLUGIN_ID}, then start it again (if it did, run install-plugin again)"
        )
        result["restart"] = f"stop Wan2GP (pid {', '.join(map(str, running))}) and start it again"
    return result


def uninstall_plugin(wan2gp_dir: Path, *, config_dir: Path | None = None) -> dict[str, Any]:
    """Take the plugin's id out of ``enabled_plugins`` and remove ``plugins/wan2gp-wangpd/`` if wangpd installed it
    (its marker file is there). Returns removed, kept_reason, disabled, config, backup, restart.
    Raises PluginInstallError for a folder that is not Wan2GP's or a config that is not JSON (nothing changed)."""
    root = _check_wan2gp(wan2gp_dir)
    config = Path(config_dir or root).expanduser() / CONFIG_NAME
    if config.exists():
        _read_config(config)
    target = root / "plugins" / PLUGIN_ID
    result: dict[str, Any] = {
        "plugin_dir": str(target),
        "removed": False,
        "kept_reason": None,
        "config": str(config),
        "disabled": False,
        "backup": None,
        "restart": RESTART,
    }
    if config.exists():
        change = _set_enabled(config, add=False)
        result["disabled"], result["backup"] = change["changed"], change["backup"]
    if target.is_dir() and not target.is_symlink():
        if _is_ours(target):
            shutil.rmtree(target)
            result["removed"] = True
        else:
            result["kept_reason"] = f"{target} was not installed by wangpd (no {MARKER}): left as it is"
    elif target.exists() or target.is_symlink():
        result["kept_reason"] = f"{target} is not a folder: left as it is"
    return result
