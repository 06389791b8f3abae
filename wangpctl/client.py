"""A small JSON-RPC client over HTTP on a Unix socket, standard library only (fast to import)."""

from __future__ import annotations

import http.client
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from wangpd import protocol

__all__ = ["Client", "DaemonNotRunning", "RpcError"]


class DaemonNotRunning(Exception):
    """No daemon can be reached on the socket(s) tried (exit 3): none runs, this user may not connect, or the one
    listening does not answer. The message says which and what to do."""

    def __init__(self, tried: list[Path], reason: str, message: str | None = None) -> None:
        self.tried = tried
        self.reason = reason
        where = ", ".join(str(path) for path in tried)
        super().__init__(
            message
            or f"wangpd is not running (no daemon on {where}: {reason}); start it with `systemctl start "
            "wangpd` or `wangpd --config config.yaml`, or point --socket / WANGPCTL_SOCKET at it"
        )


def _no_answer(path: Path, timeout: float | None) -> DaemonNotRunning:
    return DaemonNotRunning(
        [path],
        "no answer",
        f"the daemon on {path} accepted the connection but did not answer within {timeout:g} s; is it hung? "
        "(`systemctl status wangpd`; --timeout SECONDS to wait longer)",
    )


class RpcError(Exception):
    def __init__(self, code: int, message: str, data: Any = None) -> None:
        self.code = code
        self.message = message
        self.data = data
        super().__init__(message)


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: Path, timeout: float | None) -> None:
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
    """Talks to one daemon. ``socket_path`` None = try the usual places (protocol.client_socket_candidates)."""

    def __init__(self, socket_path: Path | None = None, timeout: float | None = 30.0) -> None:
        self.candidates = [socket_path] if socket_path else protocol.client_socket_candidates()
        self.timeout = timeout
        self._path: Path | None = None
        self._next_id = 0

    def _connect(self, timeout: float | None) -> _UnixConnection:
        errors = []
        for path in [self._path] if self._path else self.candidates:
            connection = _UnixConnection(path, timeout)
            try:
                connection.connect()
            except PermissionError:
                raise DaemonNotRunning(
                    [path],
                    "permission denied",
                    f"permission denied on {path}: ask the admin to add you to the wangpd group "
                    "(daemon.socket_group), then log in again",
                ) from None
            except TimeoutError:
                raise _no_answer(path, timeout) from None
            except (FileNotFoundError, ConnectionRefusedError, NotADirectoryError) as exc:
                errors.append(exc.strerror or str(exc))
                continue
            self._path = path
            return connection
        raise DaemonNotRunning(self.candidates, errors[-1] if errors else "no socket")

    def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        """Call one method; returns its result or raises RpcError / DaemonNotRunning."""
        self._next_id += 1
        request = {"jsonrpc": "2.0", "method": method, "id": self._next_id}
        if params:
            request["params"] = {key: value for key, value in params.items() if value is not None}
        connection = self._connect(self.timeout)
        try:
            connection.request(
                "POST", protocol.RPC_PATH, body=json.dumps(request), headers={"Content-Type": "application/json"}
            )
            response = connection.getresponse()
            body = response.read()
        except TimeoutError:
            assert self._path is not None
            raise _no_answer(self._path, self.timeout) from None
        except (ConnectionResetError, BrokenPipeError, http.client.HTTPException) as exc:
            raise RpcError(protocol.INTERNAL_ERROR, f"the daemon closed the connection ({exc})") from None
        finally:
            connection.close()
        try:
            answer = json.loads(body)
        except ValueError:
            raise RpcError(protocol.INTERNAL_ERROR, f"unreadable answer from the daemon: {body[:200]!r}") from None
        if "error" in answer:
            error = answer["error"]
            raise RpcError(error.get("code", 0), error.get("message", "unknown error"), error.get("data"))
        return answer.get("result")

    def events(self) -> Iterator[dict[str, Any]]:
        """The daemon's event stream, one dict per line, until the daemon closes it."""
        # Bounded until the first line (the daemon sends a snapshot at once), then unbounded: events may be rare.
        connection = self._connect(self.timeout)
        try:
            try:
                connection.request("GET", protocol.EVENTS_PATH)
                response = connection.getresponse()
                if response.status != 200:
                    raise RpcError(protocol.FORBIDDEN, f"events refused: HTTP {response.status}")
                first = response.readline()
            except TimeoutError:
                assert self._path is not None
                raise _no_answer(self._path, self.timeout) from None
            if connection.sock is not None:
                connection.sock.settimeout(None)
            if not first:
                return
            if first.strip():
                yield json.loads(first)
            while True:
                line = response.readline()
                if not line:
                    return
                if line.strip():
                    yield json.loads(line)
        finally:
            connection.close()
