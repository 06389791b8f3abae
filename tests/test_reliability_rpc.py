"""Hostile clients on the control socket: every request gets a JSON-RPC answer or a clean close, and the daemon
stays up with bounded memory."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import DaemonProcess, wait_for
from wangpd import protocol

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=20,
)
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))


def raw_post(sock_path: Path, body: bytes, timeout: float = 10.0) -> tuple[int, bytes]:
    """One HTTP request on a fresh connection; returns (status, body). Status 0 = the server closed cleanly."""
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.settimeout(timeout)
    client.connect(str(sock_path))
    try:
        client.sendall(
            b"POST /rpc HTTP/1.1\r\nHost: wangpd\r\nContent-Type: application/json\r\nConnection: close\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        chunks = []
        while chunk := client.recv(65536):
            chunks.append(chunk)
    except (ConnectionResetError, BrokenPipeError):
        return 0, b""
    finally:
        client.close()
    data = b"".join(chunks)
    if not data:
        return 0, b""
    head, _, payload = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), payload


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def assert_jsonrpc(status: int, payload: bytes) -> Any:
    assert status in (200, 204, 413), status
    if status == 204:
        assert payload == b""
        return None
    answer = json.loads(payload)
    items = answer if isinstance(answer, list) else [answer]
    for item in items:
        assert item["jsonrpc"] == "2.0" and ("result" in item) != ("error" in item), item
        if "error" in item:
            assert isinstance(item["error"]["code"], int) and isinstance(item["error"]["message"], str)
    return answer


@pytest.fixture(scope="module")
def fuzz_daemon(tmp_path_factory: pytest.TempPathFactory) -> Any:
    import shutil
    import tempfile

    from conftest import make_wan2gp, write_config

    base = tmp_path_factory.mktemp("fuzz")
    short = Path(tempfile.mkdtemp(prefix="wz", dir="/tmp"))
    wan2gp = make_wan2gp(base / "wan2gp")
    # Paused: fuzzed queue.add calls must not start downloads; read_only_others off is irrelevant for root.
    from wangpd.store import Store

    store = Store.open(base / "state" / "hfcache.db")
    store.set_setting("paused", True)
    store.close()
    daemon = DaemonProcess(write_config(base, wan2gp, short), short / "wangpd.sock", short).start()
    yield daemon
    daemon.close()
    shutil.rmtree(short, ignore_errors=True)


@given(payload=JSON)
@FUZZ
def test_random_json_values(fuzz_daemon: DaemonProcess, payload: Any) -> None:
    assert_jsonrpc(*raw_post(fuzz_daemon.socket, json.dumps(payload).encode()))


@given(method=st.sampled_from(sorted(protocol.METHODS)), params=JSON)
@FUZZ
def test_every_method_with_random_params(fuzz_daemon: DaemonProcess, method: str, params: Any) -> None:
    request = {"jsonrpc": "2.0", "method": method, "params": params, "id": 1}
    answer = assert_jsonrpc(*raw_post(fuzz_daemon.socket, json.dumps(request).encode()))
    if not isinstance(params, dict | list) and params is not None:
        assert answer["error"]["code"] == protocol.INVALID_REQUEST


@given(data=st.binary(max_size=300))
@FUZZ
def test_random_bytes_and_invalid_utf8(fuzz_daemon: DaemonProcess, data: bytes) -> None:
    status, payload = raw_post(fuzz_daemon.socket, data)
    answer = assert_jsonrpc(status, payload)
    if answer is not None and not isinstance(answer, list) and "error" in answer and answer["id"] is None:
        assert answer["error"]["code"] in (protocol.PARSE_ERROR, protocol.INVALID_REQUEST)


def test_huge_deep_and_wide_bodies(fuzz_daemon: DaemonProcess) -> None:
    before = rss_kb(fuzz_daemon.proc.pid)
    deep = b"[" * 100_000 + b"]" * 100_000
    answer = assert_jsonrpc(*raw_post(fuzz_daemon.socket, deep))
    assert answer["error"]["code"] in (protocol.PARSE_ERROR, protocol.INVALID_REQUEST)
    batch = json.dumps([{"jsonrpc": "2.0", "method": "version", "id": i} for i in range(5000)]).encode()
    answer = assert_jsonrpc(*raw_post(fuzz_daemon.socket, batch, timeout=60))
    assert len(answer) == 5000 and all(item["result"]["protocol"] == 1 for item in answer)
    too_many = json.dumps([{"jsonrpc": "2.0", "method": "version", "id": i} for i in range(10_001)]).encode()
    assert len(too_many) < protocol.MAX_REQUEST_BYTES
    answer = assert_jsonrpc(*raw_post(fuzz_daemon.socket, too_many))
    assert answer["error"]["code"] == protocol.INVALID_REQUEST
    huge = b'{"jsonrpc": "2.0", "method": "status", "params": {"x": "' + b"a" * (8 * 1024 * 1024) + b'"}, "id": 1}'
    status, _payload = raw_post(fuzz_daemon.socket, huge)
    assert status in (0, 413)
    for _ in range(20):
        raw_post(fuzz_daemon.socket, deep)
    after = rss_kb(fuzz_daemon.proc.pid)
    assert after - before < 64 * 1024, f"RSS grew from {before} to {after} kB"
    assert_jsonrpc(*raw_post(fuzz_daemon.socket, b'{"jsonrpc":"2.0","method":"status","id":1}'))


def test_truncated_and_slow_clients(fuzz_daemon: DaemonProcess) -> None:
    # A client that dies mid-body.
    client = socket.socket(socket.AF_UNIX)
    client.connect(str(fuzz_daemon.socket))
    client.sendall(b'POST /rpc HTTP/1.1\r\nHost: w\r\nContent-Length: 1000\r\n\r\n{"jsonrpc":')
    client.close()
    # Garbage instead of HTTP.
    client = socket.socket(socket.AF_UNIX)
    client.settimeout(10)
    client.connect(str(fuzz_daemon.socket))
    client.sendall(b"\x00\xffNOT HTTP AT ALL\r\n\r\n")
    reply = client.recv(1000)
    client.close()
    assert reply == b"" or reply.split(b" ")[1] == b"400"
    # A slow client: a byte every 20 ms, while others are served normally meanwhile.
    body = b'{"jsonrpc":"2.0","method":"version","id":7}'
    slow = socket.socket(socket.AF_UNIX)
    slow.settimeout(30)
    slow.connect(str(fuzz_daemon.socket))
    request = b"POST /rpc HTTP/1.1\r\nHost: w\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    started = time.monotonic()
    for index, byte in enumerate(request):
        slow.send(bytes([byte]))
        if index % 20 == 0:
            status, _ = raw_post(fuzz_daemon.socket, b'{"jsonrpc":"2.0","method":"status","id":1}', timeout=5)
            assert status == 200, "the daemon keeps serving others while one client is slow"
        time.sleep(0.02)
    reply = b""
    while chunk := slow.recv(65536):
        reply += chunk
    slow.close()
    assert b'"protocol": 1' in reply and time.monotonic() - started < 30
    assert fuzz_daemon.proc.poll() is None


def test_idle_connection_flood(daemon: DaemonProcess) -> None:
    """Issue 15 item 8: ~1,000 clients that connect and say nothing. The daemon keeps answering, holds no more than
    its cap of connections, and says so in one log line, not one per connection."""
    import resource

    from wangpd.rpc import MAX_CONNECTIONS

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 1200:  # this test process holds the idle clients' ends
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(4096, hard), hard))
    log_before = len(daemon.log())
    idle: list[socket.socket] = []
    try:
        deadline = time.monotonic() + 60
        while len(idle) < 1000 and time.monotonic() < deadline:
            client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            client.settimeout(5)
            try:
                client.connect(str(daemon.socket))
            except BlockingIOError:  # the listen backlog is full until the daemon accepts: wait, as a client would
                client.close()
                time.sleep(0.005)
                continue
            idle.append(client)
        assert len(idle) == 1000, f"only {len(idle)} clients got in within 60 s"
        for _ in range(3):
            status, payload = raw_post(daemon.socket, b'{"jsonrpc":"2.0","method":"status","id":1}', timeout=5)
            assert status == 200 and b'"result"' in payload
        # asyncio accepts up to 100 at a time, so a burst's evictions finish closing a loop turn later.
        fds = Path(f"/proc/{daemon.proc.pid}/fd")
        wait_for(lambda: len(list(fds.iterdir())) < MAX_CONNECTIONS + 60, timeout=10, what="idle clients hung up on")
        # The oldest idle clients were hung up on: reading gives EOF, not a timeout.
        idle[0].settimeout(5)
        assert idle[0].recv(10) == b""
    finally:
        for client in idle:
            client.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    log = daemon.log()[log_before:]
    assert len(log) < 5000, log[-2000:]
    assert log.count("at its cap of") == 1, log[-2000:]
    assert daemon.proc.poll() is None


def test_connection_cap_refuses_only_when_every_connection_is_busy() -> None:
    """At the cap, an idle connection makes room; when all are busy (``/events`` followers, requests in flight)
    the newcomer gets a 503 instead, and nothing in flight is cut."""
    import asyncio

    from wangpd.rpc import ConnectionCap

    class Handler:
        def __init__(self) -> None:
            self._request_in_progress = False
            self.transport: object | None = None  # set by connection_made, as in aiohttp

        def force_close(self) -> None:
            self.transport = None

    class Server:
        """aiohttp's registry: a handler is listed from connection_made() until connection_lost()."""

        def __init__(self) -> None:
            self.connections: list[Handler] = []

        def __call__(self) -> Handler:
            return Handler()

        def connect(self, handler: Handler) -> None:
            handler.transport = object()
            self.connections.append(handler)

    async def scenario() -> None:
        server = Server()
        cap = ConnectionCap(server, cap=3)  # type: ignore[arg-type]
        made = [cap(), cap(), cap()]
        assert all(isinstance(h, Handler) for h in made)
        # A burst asyncio accepted in one turn, not connected yet, still counts: nobody to evict, so refused.
        assert type(cap()).__name__ == "_Refuse"
        await asyncio.sleep(0)
        for handler in made:
            server.connect(handler)
        made[0]._request_in_progress = True  # an /events follower, say
        fourth = cap()
        assert isinstance(fourth, Handler) and made[0].transport is not None and made[1].transport is None, (
            "the oldest idle one goes, not the busy one"
        )
        await asyncio.sleep(0)
        server.connect(fourth)
        made[2]._request_in_progress = fourth._request_in_progress = True
        refused = cap()
        assert type(refused).__name__ == "_Refuse", "all busy: the newcomer is refused, nothing in flight is cut"

        class Transport:
            data = b""
            closed = False

            def write(self, data: bytes) -> None:
                self.data += data

            def close(self) -> None:
                self.closed = True

        transport = Transport()
        refused.connection_made(transport)  # type: ignore[arg-type]
        head, _, body = transport.data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 503 ") and transport.closed
        assert "all busy" in json.loads(body)["error"]["message"], "wangpctl can say why"
        assert all(h.transport is not None for h in (made[0], made[2], fourth))
        # Connections that came and went between two accepts leave no trace in the count.
        server.connections = [made[0]]
        await asyncio.sleep(0)
        assert all(isinstance(cap(), Handler) for _ in range(2))

    asyncio.run(scenario())


def test_wangpd_lifts_its_soft_descriptor_limit() -> None:
    """systemd starts services at a soft limit of 1024; ``wangpd run`` lifts it to the hard limit (at most 65,536),
    and a hard limit it cannot pass is left as it is, without an error."""
    import resource
    import subprocess
    import sys

    code = (
        "import resource; from wangpd.main import raise_fd_limit; raise_fd_limit(); "
        "print(*resource.getrlimit(resource.RLIMIT_NOFILE))"
    )
    for limits, expect in (((256, 4096), "4096 4096"), ((256, 256), "256 256")):

        def lower(limits: tuple[int, int] = limits) -> None:
            resource.setrlimit(resource.RLIMIT_NOFILE, limits)

        done = subprocess.run(
            [sys.executable, "-c", code], preexec_fn=lower, capture_output=True, text=True, timeout=60, check=True
        )
        assert done.stdout.split() == expect.split(), (limits, done.stdout, done.stderr)
