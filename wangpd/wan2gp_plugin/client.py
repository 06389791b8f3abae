"""A tiny JSON-RPC client for wangpd's Unix socket, standard library only.

This runs inside Wan2GP's Python, where wangpd is not installed: it copies the few rules it needs from
``wangpd/protocol.py`` (socket places, the RPC path, the error codes; a test checks that the copies agree). It
never raises into Wan2GP: every call returns a :class:`Reply`, whose ``error`` says in one line what went wrong.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["NOT_RUNNING", "Client", "Reply", "socket_candidates"]

RPC_PATH = "/rpc"
SYSTEM_SOCKET = Path("/run/wangpd/wangpd.sock")
NOT_RUNNING = -1  # Reply.code when no daemon answers (not a JSON-RPC code)
START_HINT = "start it with `systemctl start wangpd` or `wangpd --config config.yaml`"


def _default_socket(env: dict[str, str] | os._Environ[str]) -> Path:
    runtime = env.get("RUNTIME_DIRECTORY")
    if runtime:
        return Path(runtime.split(":")[0]) / "wangpd.sock"
    xdg = env.get("XDG_RUNTIME_DIR")
    if xdg:
        return Path(xdg) / "wangpd" / "wangpd.sock"
    return Path(f"/tmp/wangpd-{os.getuid()}") / "wangpd.sock"


def socket_candidates(setting: str | None = None, environ: dict[str, str] | None = None) -> list[Path]:
    """Where the daemon may listen, in the order tried: ``$WANGPCTL_SOCKET`` alone when set; else the places
    ``wangpctl`` tries (per-user default, then the system service's socket), then the plugin's ``socket``
    setting."""
    env = os.environ if environ is None else environ
    if env.get("WANGPCTL_SOCKET"):
        return [Path(env["WANGPCTL_SOCKET"])]
    without_runtime = {k: v for k, v in env.items() if k != "RUNTIME_DIRECTORY"}
    found = [_default_socket(env), _default_socket(without_runtime), SYSTEM_SOCKET]
    if setting:
        found.append(Path(os.path.expanduser(setting)))
    return list(dict.fromkeys(found))


@dataclass(frozen=True)
class Reply:
    """The answer to one call: ``result`` when ``error`` is None; else ``code`` is the JSON-RPC error code, or
    :data:`NOT_RUNNING` when no daemon could be reached."""

    result: Any = None
    error: str | None = None
    code: int | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def not_running(self) -> bool:
        return self.code == NOT_RUNNING


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: Path, timeout: float) -> None:
        super().__init__("wangpd", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(str(self.unix_path))
        except OSError:
            sock.close()
            raise
        self.sock = sock


class Client:
    """Calls one daemon, found among :func:`socket_candidates` (the one that answered is remembered)."""

    def __init__(self, setting: str | None = None, timeout: float = 3.0) -> None:
        self.setting = setting
        self.timeout = timeout
        self._path: Path | None = None
        self._next_id = 0

    def _connect(self, timeout: float) -> _UnixConnection | Reply:
        tried = [self._path] if self._path else socket_candidates(self.setting)
        reasons = []
        for path in tried:
            connection = _UnixConnection(path, timeout)
            try:
                connection.connect()
            except PermissionError:
                return Reply(
                    error=f"permission denied on {path}: the user Wan2GP runs as must be in the wangpd group "
                    "(daemon.socket_group); then restart Wan2GP",
                    code=NOT_RUNNING,
                )
            except TimeoutError:
                return Reply(error=f"wangpd on {path} does not answer (is it hung?)", code=NOT_RUNNING)
            except OSError as exc:
                reasons.append(f"{path}: {exc.strerror or exc}")
                continue
            self._path = path
            return connection
        self._path = None  # the daemon may come back on another socket: look everywhere next time
        where = "; ".join(reasons) or "no socket"
        return Reply(error=f"wangpd is not running ({where}); {START_HINT}", code=NOT_RUNNING)

    def call(self, method: str, params: dict[str, Any] | None = None, timeout: float | None = None) -> Reply:
        """Call ``method``; never raises (a bug in here is reported as a Reply too)."""
        try:
            return self._call(method, params, self.timeout if timeout is None else timeout)
        except Exception as exc:  # Wan2GP must never see an exception from the plugin's client
            return Reply(error=f"wangpd call {method} failed: {exc!r}", code=NOT_RUNNING)

    def _call(self, method: str, params: dict[str, Any] | None, timeout: float) -> Reply:
        self._next_id += 1
        request: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "id": self._next_id}
        if params:
            request["params"] = {key: value for key, value in params.items() if value is not None}
        connection = self._connect(timeout)
        if isinstance(connection, Reply):
            return connection
        try:
            body = json.dumps(request).encode()
            connection.request("POST", RPC_PATH, body=body, headers={"Content-Type": "application/json"})
            raw = connection.getresponse().read()
        except TimeoutError:
            return Reply(error=f"wangpd did not answer {method} within {timeout:g} s", code=NOT_RUNNING)
        except (OSError, http.client.HTTPException) as exc:
            self._path = None
            return Reply(error=f"wangpd closed the connection ({exc})", code=NOT_RUNNING)
        finally:
            connection.close()
        try:
            answer = json.loads(raw)
        except ValueError:
            return Reply(error=f"unreadable answer from wangpd: {raw[:120]!r}", code=-32603)
        if not isinstance(answer, dict):
            return Reply(error=f"unreadable answer from wangpd: {raw[:120]!r}", code=-32603)
        if "error" in answer:
            error = answer["error"] if isinstance(answer["error"], dict) else {}
            return Reply(error=str(error.get("message", "unknown error")), code=int(error.get("code", 0) or 0))
        return Reply(result=answer.get("result"))
