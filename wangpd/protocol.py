"""The contract between wangpd and its clients.

Standard library only: ``wangpctl`` imports this module and nothing else from the daemon, so that the
client starts fast and never drags in aiohttp, huggingface_hub or sqlite3.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = [
    "ERROR_NAMES",
    "EVENTS_PATH",
    "EXIT_CONFIG",
    "EXIT_DAEMON_ERROR",
    "EXIT_NOT_RUNNING",
    "EXIT_OK",
    "EXIT_USAGE",
    "METHODS",
    "MUTATING_METHODS",
    "RPC_PATH",
    "client_socket_candidates",
    "default_socket_path",
]

RPC_PATH = "/rpc"
EVENTS_PATH = "/events"
MAX_REQUEST_BYTES = 1024 * 1024

# JSON-RPC 2.0 standard codes.
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
# wangpd's own codes (the range -32000..-32099 is reserved for implementation-defined server errors).
NOT_FOUND = -32001  # no such job / model
BAD_STATE = -32002  # the job is not in a state that allows this
FORBIDDEN = -32003  # the caller's uid/group may only read
DISK_FULL = -32004  # not enough free space for what was asked
CONFIG_ERROR = -32005  # reload found a bad config; the old one stays in force

ERROR_NAMES = {
    PARSE_ERROR: "parse error",
    INVALID_REQUEST: "invalid request",
    METHOD_NOT_FOUND: "method not found",
    INVALID_PARAMS: "invalid params",
    INTERNAL_ERROR: "internal error",
    NOT_FOUND: "not found",
    BAD_STATE: "bad state",
    FORBIDDEN: "forbidden",
    DISK_FULL: "disk full",
    CONFIG_ERROR: "config error",
}

# Method name -> True when it changes state (SO_PEERCRED decides who may call those).
METHODS: dict[str, bool] = {
    "status": False,
    "version": False,
    "queue.list": False,
    "queue.add": True,
    "queue.clear": True,
    "job.show": False,
    "job.pause": True,
    "job.resume": True,
    "job.cancel": True,
    "job.retry": True,
    "job.priority": True,
    "pause": True,
    "resume": True,
    "limit.get": False,
    "limit.set": True,
    "reload": True,
    "rescan": True,
    "models.list": False,
    "models.show": False,
    "models.add": True,
    "models.drop": True,
    "plan": False,
    "du": False,
    "unused": False,
    "prune": True,
    "approve": True,
    "reject": True,
    "doctor": False,
}
MUTATING_METHODS = frozenset(name for name, mutates in METHODS.items() if mutates)

# wangpd's Wan2GP plugin: the folder (and plugin id) `wangpctl wan2gp install-plugin` makes under Wan2GP's plugins/
# (Wan2GP's .gitignore leaves wan2gp-* alone, so `git pull` keeps it), and the file in it that says wangpd put it
# there (doctor looks for it; uninstall removes only such a folder).
WAN2GP_PLUGIN_ID = "wan2gp-wangpd"
WAN2GP_PLUGIN_MARKER = ".wangpd-installed"

# Job states as clients see them (the daemon's enum uses the same strings).
JOB_STATES = ("needs_approval", "queued", "downloading", "paused", "complete", "failed", "cancelled")

# wangpctl exit codes (documented in the README).
EXIT_OK = 0
EXIT_DAEMON_ERROR = 1
EXIT_USAGE = 2
EXIT_NOT_RUNNING = 3
EXIT_CONFIG = 78  # EX_CONFIG from sysexits.h; systemd's RestartPreventExitStatus uses it


def default_socket_path(environ: dict[str, str] | None = None) -> Path:
    """Where the daemon listens when the config does not say.

    ``$RUNTIME_DIRECTORY/wangpd.sock`` under systemd, else ``$XDG_RUNTIME_DIR/wangpd/wangpd.sock``,
    else a per-user folder in /tmp (root without a login session has no XDG_RUNTIME_DIR).
    """
    env = os.environ if environ is None else environ
    runtime = env.get("RUNTIME_DIRECTORY")
    if runtime:
        # systemd may pass several colon-separated directories; the first is ours.
        return Path(runtime.split(":")[0]) / "wangpd.sock"
    xdg = env.get("XDG_RUNTIME_DIR")
    if xdg:
        return Path(xdg) / "wangpd" / "wangpd.sock"
    return Path(f"/tmp/wangpd-{os.getuid()}") / "wangpd.sock"


SYSTEM_SOCKET = Path("/run/wangpd/wangpd.sock")  # RuntimeDirectory=wangpd of the system unit


def client_socket_candidates(environ: dict[str, str] | None = None) -> list[Path]:
    """Where a client looks, in order: $WANGPCTL_SOCKET, the per-user default, the system service's socket."""
    env = os.environ if environ is None else environ
    if env.get("WANGPCTL_SOCKET"):
        return [Path(env["WANGPCTL_SOCKET"])]
    # Under systemd (ExecReload=wangpctl reload) $RUNTIME_DIRECTORY is the daemon's own folder: try it first.
    without_runtime = {k: v for k, v in env.items() if k != "RUNTIME_DIRECTORY"}
    candidates = [default_socket_path(env), default_socket_path(without_runtime), SYSTEM_SOCKET]
    return list(dict.fromkeys(candidates))
