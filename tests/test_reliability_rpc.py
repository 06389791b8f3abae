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

from conftest import DaemonProcess
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
