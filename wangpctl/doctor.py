"""Client half of ``wangpctl doctor``: why the daemon cannot be reached, when it cannot.

The daemon checks itself (``doctor`` RPC, wangpd/doctor.py); this module only runs when no daemon answers, and
looks at what the client sees: which socket paths were tried, whether they exist, and whether this user may
reach them (the usual cause: not in the socket's group, or added to it without logging in again).
"""

from __future__ import annotations

import grp
import os
import pwd
import socket
import stat
from pathlib import Path
from typing import Any

__all__ = ["LEVELS", "check", "exit_code", "unreachable_checks"]

LEVELS = ("OK", "WARN", "FAIL")


def check(name: str, level: str, message: str, fix: str = "") -> dict[str, Any]:
    """One doctor line, the same shape as the daemon's."""
    assert level in LEVELS
    return {"check": name, "level": level, "message": message, "fix": fix}


def exit_code(checks: list[dict[str, Any]]) -> int:
    return 1 if any(c["level"] == "FAIL" for c in checks) else 0


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def _user() -> tuple[str, int]:
    try:
        entry = pwd.getpwuid(os.getuid())
        return entry.pw_name, entry.pw_gid
    except KeyError:
        return str(os.getuid()), os.getgid()


def _blocking_ancestor(path: Path) -> Path | None:
    """The first folder on the way to ``path`` this process may not enter (no search permission), if any."""
    for folder in [*reversed(path.parents)]:
        if folder.is_dir() and not os.access(folder, os.X_OK):
            return folder
    return None


def _permission_check(path: Path) -> dict[str, Any]:
    blocker = _blocking_ancestor(path) or path
    try:
        info = blocker.stat()
    except OSError:
        return check("socket", "FAIL", f"permission denied on {path}", "ask the admin to check its owner and mode")
    user, primary_gid = _user()
    group = _group_name(info.st_gid)
    mode = stat.S_IMODE(info.st_mode)
    where = f"{blocker} (mode {mode:04o}, group {group})"
    if info.st_gid in os.getgroups() or info.st_gid == os.getgid():
        return check(
            "socket",
            "FAIL",
            f"permission denied on {path}: {where} does not let its group in",
            f"sudo chmod g+{'x' if blocker.is_dir() else 'rw'} {blocker}",
        )
    try:
        member = info.st_gid in os.getgrouplist(user, primary_gid)
    except OSError:
        member = False
    if member:
        return check(
            "socket",
            "FAIL",
            f"permission denied on {path}: you ({user}) were added to group {group}, but this login session "
            "started before that",
            f"log out and in again (or run `newgrp {group}`)",
        )
    if info.st_gid == 0:  # joining root's group would give far more than wangpd: never the advice
        return check(
            "socket",
            "FAIL",
            f"permission denied on {path}: {where} belongs to group root, which is no group to join for this",
            "ask the admin to set daemon.socket_group (e.g. wangpd) in the daemon's config, restart it, and add you "
            "to that group",
        )
    return check(
        "socket",
        "FAIL",
        f"permission denied on {path}: you ({user}) are not in group {group}, which owns {where}",
        f"sudo usermod -aG {group} {user}, then log out and in again",
    )


def _start_hint() -> str:
    user_unit = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "systemd/user/wangpd.service"
    if Path("/etc/systemd/system/wangpd.service").exists():
        return "sudo systemctl start wangpd (then `journalctl -u wangpd` if it stops again)"
    if user_unit.exists():
        return "systemctl --user start wangpd (then `journalctl --user -u wangpd` if it stops again)"
    return "run `wangpd --config config.yaml`, or install the service: `wangpctl service install --user`"


def unreachable_checks(candidates: list[Path]) -> list[dict[str, Any]]:
    """One line per socket path tried, saying why it did not answer, plus how to start the daemon."""
    checks: list[dict[str, Any]] = []
    missing = 0
    for path in candidates:
        try:
            mode = path.stat().st_mode
        except OSError:
            mode = None
        if mode is not None and not stat.S_ISSOCK(mode):  # a regular file refuses connections like a dead socket
            kind = "a folder" if stat.S_ISDIR(mode) else "a regular file" if stat.S_ISREG(mode) else "not a socket"
            checks.append(
                check("socket", "FAIL", f"{path}: {kind}, not a socket", "point --socket / WANGPCTL_SOCKET at wangpd")
            )
            continue
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.settimeout(2.0)
        try:
            probe.connect(str(path))
        except PermissionError:
            checks.append(_permission_check(path))
        except FileNotFoundError:
            missing += 1
            checks.append(check("socket", "WARN", f"{path}: no socket there"))
        except ConnectionRefusedError:
            checks.append(
                check(
                    "socket",
                    "FAIL",
                    f"{path}: a socket file, but nothing listens (wangpd crashed or was killed)",
                    _start_hint(),
                )
            )
        except OSError as exc:
            kind = "not a socket" if path.exists() and not stat.S_ISSOCK(path.stat().st_mode) else exc.strerror
            checks.append(check("socket", "FAIL", f"{path}: {kind}", "point --socket / WANGPCTL_SOCKET at wangpd"))
        else:
            checks.append(check("socket", "WARN", f"{path}: connected now (the daemon was starting?)", "run again"))
        finally:
            probe.close()
    if missing == len(candidates):
        checks.append(check("daemon", "FAIL", "wangpd is not running (no socket in any usual place)", _start_hint()))
    return checks
