"""JSON-RPC 2.0 over HTTP/1.1 on a Unix socket (aiohttp server), plus the ``/events`` NDJSON stream.

``curl --unix-socket SOCK -d '{"jsonrpc":"2.0","method":"status","id":1}' http://wangpd/rpc`` works.
Who may change things is decided from the peer's credentials (SO_PEERCRED), never from anything it sends.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import os
import pwd
import resource
import socket
import stat
import struct
import time
import types
import typing
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from wangpd import protocol
from wangpd.control import Control
from wangpd.errors import InvalidParams, SocketInUse, WangpError
from wangpd.events import EventBus
from wangpd.paths import lock_exclusive

__all__ = ["HANDLERS", "AccessPolicy", "Handler", "Peer", "RpcServer", "call", "dispatch"]

log = logging.getLogger(__name__)

MAX_BATCH = 10_000
_INT64 = (-(2**63), 2**63 - 1)
_JSON_HEADERS = {"Content-Type": "application/json"}
# A client that connects and says nothing (or stops after a request) is closed after this long; wangpctl and a web
# tab open a connection per call, and `/events` followers are in a request all the time, so none of them notice.
IDLE_TIMEOUT = 30.0
# Open control connections at most: far more than a user's shells and tabs, far fewer than the descriptors the
# transfers, the database and the watcher need (a quarter of the soft limit at most).
MAX_CONNECTIONS = 256


@dataclass(frozen=True)
class Peer:
    pid: int
    uid: int
    gid: int


class AccessPolicy:
    """The daemon's own uid and root may do anything; members of ``socket_group`` too; others read only (or
    nothing, when ``read_only_others`` is false)."""

    def __init__(self, group: str | None, read_only_others: bool) -> None:
        import grp

        self.gid = grp.getgrnam(group).gr_gid if group else None
        self.read_only_others = read_only_others
        self._member_cache: dict[int, bool] = {}

    def may_change(self, peer: Peer | None) -> bool:
        if peer is None:  # no credentials (should not happen on AF_UNIX): deny changes
            return False
        if peer.uid in (0, os.getuid()):
            return True
        if self.gid is None:
            return False
        if peer.gid == self.gid:
            return True
        if peer.uid not in self._member_cache:
            try:
                user = pwd.getpwuid(peer.uid)
                self._member_cache[peer.uid] = self.gid in os.getgrouplist(user.pw_name, user.pw_gid)
            except KeyError:
                self._member_cache[peer.uid] = False
        return self._member_cache[peer.uid]

    def may_read(self, peer: Peer | None) -> bool:
        return self.read_only_others or self.may_change(peer)


# ---- methods and their parameters ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Handler:
    """One RPC method: the Control method that serves it, its parameters (``self`` left out) and their hints."""

    method: str
    function: Callable[..., Awaitable[Any]]
    signature: inspect.Signature
    hints: dict[str, Any]

    def bind(self, params: dict[str, Any] | list[Any] | None) -> dict[str, Any]:
        """Keyword arguments for the handler from a request's ``params``. Raises InvalidParams naming the parameter
        (unknown, missing, or of the wrong type)."""
        names = list(self.signature.parameters)
        if params is None:
            params = {}
        if isinstance(params, list):
            if len(params) > len(names):
                raise InvalidParams(f"{self.method} takes at most {len(names)} parameters ({', '.join(names)})")
            params = dict(zip(names, params, strict=False))
        for name, value in params.items():
            if name not in self.signature.parameters:
                allowed = ", ".join(names) or "none"
                raise InvalidParams(f"{self.method}: unknown parameter {name!r} (allowed: {allowed})")
            if isinstance(value, int) and not isinstance(value, bool) and not _INT64[0] <= value <= _INT64[1]:
                # JSON allows any integer; SQLite and every counter here hold 64 bits. Refused before any use.
                raise InvalidParams(f"{self.method}: parameter {name!r} is out of range (a 64-bit integer)")
            hint = self.hints.get(name, Any)
            if not _accepts(value, hint):
                raise InvalidParams(f"{self.method}: parameter {name!r} must be {_describe(hint)}, got {value!r}"[:300])
        for name, parameter in self.signature.parameters.items():
            if parameter.default is inspect.Parameter.empty and name not in params:
                raise InvalidParams(f"{self.method}: missing required parameter {name!r}")
        return params


def _accepts(value: Any, hint: Any) -> bool:
    if hint is Any:
        return True
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_accepts(value, option) for option in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if origin is not None:
        hint = origin
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    return isinstance(value, hint)


def _describe(hint: Any) -> str:
    text = str(hint).replace("typing.", "").replace("NoneType", "null")
    return text.replace("<class '", "").replace("'>", "")


def _handlers() -> dict[str, Handler]:
    """Every method of ``protocol.METHODS`` with its Control method, built once at import: a method without an
    async handler fails here, when the daemon starts, not as -32601 when a client first calls it."""
    table: dict[str, Handler] = {}
    for method in protocol.METHODS:
        name = method.replace(".", "_")
        function = getattr(Control, name, None)
        if function is None or not inspect.iscoroutinefunction(function):
            raise TypeError(f"protocol.METHODS has {method!r} but Control has no async method {name}()")
        signature = inspect.signature(function)
        parameters = list(signature.parameters.values())[1:]  # without self
        hints = typing.get_type_hints(function)
        table[method] = Handler(method, function, signature.replace(parameters=parameters), hints)
    return table


HANDLERS: dict[str, Handler] = _handlers()


async def call(control: Control, method: str, params: dict[str, Any] | list[Any] | None) -> Any:
    """Run ``method`` (which must be in :data:`HANDLERS`) with ``params`` checked against its signature."""
    handler = HANDLERS[method]
    return await handler.function(control, **handler.bind(params))


def _error(code: int, message: str, request_id: Any = None, data: Any = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return {"jsonrpc": "2.0", "error": error, "id": request_id}


def _valid_id(value: Any) -> bool:
    return value is None or isinstance(value, str) or (isinstance(value, int | float) and not isinstance(value, bool))


async def _one(control: Control, request: Any, peer: Peer | None, policy: AccessPolicy) -> dict[str, Any] | None:
    """Answer one request object; None for a notification (no ``id``), which gets no reply by the spec."""
    if not isinstance(request, dict):
        return _error(protocol.INVALID_REQUEST, "invalid request: expected a JSON object")
    is_notification = "id" not in request
    request_id = request.get("id")
    if not _valid_id(request_id):
        return _error(protocol.INVALID_REQUEST, "invalid request: id must be a string, number or null")
    method = request.get("method")
    if request.get("jsonrpc") != "2.0" or not isinstance(method, str):
        return _error(
            protocol.INVALID_REQUEST, 'invalid request: needs "jsonrpc": "2.0" and a string "method"', request_id
        )
    params = request.get("params")
    if params is not None and not isinstance(params, dict | list):
        return _error(protocol.INVALID_REQUEST, "invalid request: params must be an object or an array", request_id)
    unknown = set(request) - {"jsonrpc", "method", "params", "id"}
    if unknown:
        return _error(protocol.INVALID_REQUEST, f"invalid request: unknown member {sorted(unknown)[0]!r}", request_id)
    response: dict[str, Any]
    if method not in HANDLERS:
        response = _error(protocol.METHOD_NOT_FOUND, f"method not found: {method[:100]!r}", request_id)
    elif not policy.may_read(peer):
        response = _error(protocol.FORBIDDEN, "forbidden: this user may not use wangpd", request_id)
    elif method in protocol.MUTATING_METHODS and not policy.may_change(peer):
        response = _error(
            protocol.FORBIDDEN,
            f"forbidden: {method} changes state; only the daemon's user, root or the socket group may call it",
            request_id,
        )
    else:
        try:
            result = await call(control, method, params)
            response = {"jsonrpc": "2.0", "result": result, "id": request_id}
        except WangpError as exc:
            response = _error(exc.rpc_code, exc.message, request_id)
        except Exception as exc:  # the daemon logs it once and keeps going
            log.exception("internal error in %s", method)
            response = _error(protocol.INTERNAL_ERROR, f"internal error: {type(exc).__name__}: {exc}"[:500], request_id)
    return None if is_notification else response


async def dispatch(control: Control, body: bytes, peer: Peer | None, policy: AccessPolicy) -> Any:
    """Answer a request body: a response object, a list of them (batch), or None (nothing to send)."""
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError) as exc:
        return _error(protocol.PARSE_ERROR, f"parse error: {str(exc)[:200]}")
    if isinstance(payload, list):
        if not payload:
            return _error(protocol.INVALID_REQUEST, "invalid request: empty batch")
        if len(payload) > MAX_BATCH:
            return _error(protocol.INVALID_REQUEST, f"invalid request: batch larger than {MAX_BATCH}")
        responses = []
        for item in payload:
            answer = await _one(control, item, peer, policy)
            if answer is not None:
                responses.append(answer)
        return responses or None
    return await _one(control, payload, peer, policy)


def peer_of(request: web.Request) -> Peer | None:
    transport = request.transport
    sock = transport.get_extra_info("socket") if transport else None
    if sock is None or sock.family != socket.AF_UNIX:
        return None
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return None
    return Peer(*struct.unpack("3i", raw))


def _take_lock(directory: Path) -> int:
    """An exclusive lock beside the socket: two daemons starting at once cannot both decide the socket is stale."""
    fd = lock_exclusive(directory / "wangpd.lock")
    if fd is None:
        raise SocketInUse(
            f"another wangpd is running with socket {directory / 'wangpd.sock'} (lock held); "
            "stop it first (systemctl stop wangpd) or use another daemon.socket"
        )
    return fd


def bind_socket(path: Path, group_gid: int | None) -> tuple[socket.socket, int]:
    """Create the listening socket at ``path``: mode 0660 from birth, in a 0750 directory.

    Refuses (SocketInUse) when a live daemon answers on it; removes a stale file left by a crash.
    """
    directory = path.parent
    try:
        if not directory.exists():
            directory.mkdir(mode=0o750, parents=True)
            if group_gid is not None:
                os.chown(directory, -1, group_gid)
        if not directory.is_dir():
            raise NotADirectoryError(20, "not a folder", str(directory))
        lock_fd = _take_lock(directory)
    except OSError as exc:  # a regular file where the folder goes, a read-only parent: one line, not a traceback
        raise WangpError(
            f"cannot use the socket folder {directory}: {exc.strerror or exc}; check daemon.socket"
        ) from None
    try:
        if path.exists() or path.is_symlink():
            if not stat.S_ISSOCK(path.lstat().st_mode):
                raise WangpError(f"{path} exists and is not a socket; refusing to replace it")
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            probe.settimeout(1.0)
            try:
                probe.connect(str(path))
            except (ConnectionRefusedError, FileNotFoundError):
                log.info("removing stale socket %s left by a previous run", path)
                path.unlink(missing_ok=True)
            except OSError as exc:
                raise SocketInUse(f"cannot check socket {path}: {exc}") from None
            else:
                raise SocketInUse(f"another wangpd is already listening on {path}; not taking it over")
            finally:
                probe.close()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        # umask at bind time sets the socket's mode atomically: there is no window where it is world-writable.
        old_umask = os.umask(0o117)
        try:
            sock.bind(str(path))
        finally:
            os.umask(old_umask)
        if group_gid is not None:
            os.chown(path, -1, group_gid)
        sock.listen(128)
        sock.setblocking(False)
        return sock, lock_fd
    except BaseException:
        os.close(lock_fd)
        raise


def activated_socket(environ: dict[str, str]) -> socket.socket | None:
    """The socket systemd passed (LISTEN_FDS/LISTEN_PID, fd 3), or None."""
    if environ.get("LISTEN_PID") != str(os.getpid()):
        return None
    try:
        count = int(environ.get("LISTEN_FDS", "0"))
    except ValueError:
        return None
    if count < 1:
        return None
    sock = socket.socket(fileno=3)
    sock.setblocking(False)
    # Children must not think the fds are theirs.
    for key in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(key, None)
    return sock


def connection_cap() -> int:
    """How many control connections may be open, from the descriptors this process may hold."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return MAX_CONNECTIONS
    return max(8, min(MAX_CONNECTIONS, soft // 4))


class _Refuse(asyncio.Protocol):
    """Stands in for a connection past the cap when every open one is busy: a 503 carrying a JSON-RPC error (so
    wangpctl can say why), then hang up."""

    def __init__(self, cap: int) -> None:
        self.cap = cap

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        message = f"wangpd has {self.cap} control connections open, all busy; try again in a moment"
        body = json.dumps(_error(protocol.INTERNAL_ERROR, message)).encode()
        head = f"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: {len(body)}"
        typing.cast(asyncio.WriteTransport, transport).write(head.encode() + b"\r\nConnection: close\r\n\r\n" + body)
        transport.close()


class ConnectionCap:
    """Protocol factory in front of aiohttp's: at most ``cap`` connections are open.

    At the cap the oldest *idle* connection (no request in flight) makes room, so that idle clients holding the
    socket cannot lock out ``wangpctl status``; only when every connection is busy is the newcomer refused (503).
    The warning about it is written once a minute at most, with a count, so a flood cannot fill the journal.
    """

    def __init__(self, server: web.Server, cap: int) -> None:
        self.server = server
        self.cap = cap
        # Handlers made during this loop turn: asyncio accepts a burst of connections before any of them reaches
        # connection_made() (and so aiohttp's registry); without these a burst would overshoot by the backlog.
        self._burst: list[Any] = []
        self._evicted = 0
        self._refused = 0
        self._last_warning = -float("inf")

    def __call__(self) -> asyncio.BaseProtocol:
        # Oldest first (insertion order of aiohttp's registry). One already hung up on stays listed until its
        # close completes on a later loop turn; it no longer counts, or it would "make room" over and over.
        live = [h for h in self.server.connections if h.transport is not None]
        pending = len(self._burst)
        if len(live) + pending >= self.cap:
            # aiohttp has no public "is this connection idle" flag; a handler without it counts as busy, so a
            # changed aiohttp can only make wangpd refuse newcomers, never cut a request short.
            idle = next((h for h in live if getattr(h, "_request_in_progress", True) is False), None)
            if idle is None:
                self._refused += 1
                self._warn()
                return _Refuse(self.cap)
            idle.force_close()
            self._evicted += 1
            self._warn()
        handler = self.server()
        if not self._burst:  # runs after this turn's connection_made() calls, which were scheduled first
            asyncio.get_running_loop().call_soon(self._burst.clear)
        self._burst.append(handler)
        return handler

    def _warn(self) -> None:
        now = time.monotonic()
        if now - self._last_warning < 60.0:
            return
        self._last_warning = now
        log.warning(
            "control socket at its cap of %d connections: closed %d idle ones, refused %d (counts since start)",
            self.cap,
            self._evicted,
            self._refused,
        )


class _CappedSite(web.SockSite):
    """``SockSite`` whose protocol factory is a :class:`ConnectionCap`."""

    def __init__(self, runner: web.BaseRunner, sock: socket.socket, cap: int) -> None:
        super().__init__(runner, sock)
        self.cap = cap

    async def start(self) -> None:
        await web.BaseSite.start(self)  # registers the site with the runner, so runner.cleanup() closes it
        server = self._runner.server
        assert server is not None
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(ConnectionCap(server, self.cap), sock=self._sock, backlog=self._backlog)


class RpcServer:
    """aiohttp application + runner bound to one Unix socket."""

    def __init__(
        self,
        control: Control,
        events: EventBus,
        policy: AccessPolicy,
    ) -> None:
        self.control = control
        self.events = events
        self.policy = policy
        self.app = web.Application(client_max_size=protocol.MAX_REQUEST_BYTES)
        self.app.router.add_post(protocol.RPC_PATH, self._rpc)
        self.app.router.add_get(protocol.EVENTS_PATH, self._events)
        self.app.router.add_get("/", self._root)
        self.runner: web.AppRunner | None = None
        self.lock_fd: int | None = None
        self.path: Path | None = None
        self._streams: set[web.StreamResponse] = set()

    async def start(self, path: Path, group_gid: int | None, environ: dict[str, str]) -> str:
        """Listen; returns how ("socket-activated" or "bound")."""
        sock = activated_socket(environ)
        how = "socket-activated"
        if sock is None:
            sock, self.lock_fd = bind_socket(path, group_gid)
            self.path = path
            how = "bound"
        self.runner = web.AppRunner(
            self.app, access_log=None, handle_signals=False, shutdown_timeout=1.0, keepalive_timeout=IDLE_TIMEOUT
        )
        await self.runner.setup()
        await _CappedSite(self.runner, sock, connection_cap()).start()
        return how

    async def stop(self) -> None:
        self.events.close()
        for stream in list(self._streams):
            with contextlib.suppress(Exception):
                await stream.write_eof()
        if self.runner is not None:
            await self.runner.cleanup()
        if self.path is not None:
            self.path.unlink(missing_ok=True)
        if self.lock_fd is not None:
            os.close(self.lock_fd)
            self.lock_fd = None

    async def _root(self, request: web.Request) -> web.Response:
        return web.json_response({"service": "wangpd", "rpc": protocol.RPC_PATH, "events": protocol.EVENTS_PATH})

    async def _rpc(self, request: web.Request) -> web.Response:
        # Read by hand with a limit so that an oversized body gets a JSON-RPC error, not just a bare 413.
        limit = protocol.MAX_REQUEST_BYTES
        chunks: list[bytes] = []
        size = 0
        if (request.content_length or 0) <= limit:
            while size <= limit:
                chunk = await request.content.read(limit + 1 - size)
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
        body = b"".join(chunks)
        if (request.content_length or 0) > limit or size > limit:
            answer = _error(protocol.INVALID_REQUEST, f"request larger than {protocol.MAX_REQUEST_BYTES} bytes")
            return web.Response(status=413, body=json.dumps(answer).encode(), headers=_JSON_HEADERS)
        answer = await dispatch(self.control, body, peer_of(request), self.policy)
        if answer is None:
            return web.Response(status=204)
        return web.Response(body=json.dumps(answer, default=str).encode(), headers=_JSON_HEADERS)

    async def _events(self, request: web.Request) -> web.StreamResponse:
        if not self.policy.may_read(peer_of(request)):
            return web.json_response({"error": "forbidden"}, status=403)
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson", "Cache-Control": "no-cache"})
        await response.prepare(request)
        self._streams.add(response)
        try:
            # First line: a snapshot, so a follower can draw at once instead of waiting for the next change.
            snapshot = {"event": "hello", **(await self.control.status())}
            await response.write((json.dumps(snapshot, default=str) + "\n").encode())
            async for event in self.events.subscribe():
                await response.write((json.dumps(event, default=str) + "\n").encode())
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self._streams.discard(response)
        return response
