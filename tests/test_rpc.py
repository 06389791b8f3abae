"""JSON-RPC 2.0 exactly per spec, on the real socket of a real daemon."""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
from pathlib import Path
from typing import Any

import pytest

from conftest import DaemonProcess
from wangpd import protocol
from wangpd.control import Control
from wangpd.rpc import AccessPolicy, Peer, dispatch


class Unix(http.client.HTTPConnection):
    def __init__(self, path: Path) -> None:
        super().__init__("wangpd", timeout=30)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(str(self.path))


def post(sock: Path, body: bytes | str) -> tuple[int, Any]:
    connection = Unix(sock)
    connection.request("POST", "/rpc", body=body if isinstance(body, bytes) else body.encode())
    response = connection.getresponse()
    data = response.read()
    connection.close()
    return response.status, json.loads(data) if data else None


def rpc(method: str, params: Any = None, id: Any = 1) -> dict[str, Any]:
    request: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "id": id}
    if params is not None:
        request["params"] = params
    return request


def error_code(daemon: DaemonProcess, request: Any) -> int:
    status, answer = post(daemon.socket, json.dumps(request))
    assert status == 200
    assert answer["jsonrpc"] == "2.0" and "result" not in answer
    return answer["error"]["code"]


def test_parse_error(daemon: DaemonProcess) -> None:
    status, answer = post(daemon.socket, b'{"jsonrpc": "2.0", "method": ')
    assert status == 200 and answer["error"]["code"] == -32700 and answer["id"] is None
    _, answer = post(daemon.socket, b"\xff\xfe not utf-8")
    assert answer["error"]["code"] == -32700


@pytest.mark.parametrize(
    "request_body",
    [
        5,
        "status",
        {"method": "status", "id": 1},
        {"jsonrpc": "1.0", "method": "status", "id": 1},
        {"jsonrpc": "2.0", "method": 7, "id": 1},
        {"jsonrpc": "2.0", "method": "status", "params": "x", "id": 1},
        {"jsonrpc": "2.0", "method": "status", "id": {"a": 1}},
        {"jsonrpc": "2.0", "method": "status", "id": 1, "extra": True},
        [],
    ],
)
def test_invalid_request(daemon: DaemonProcess, request_body: Any) -> None:
    assert error_code(daemon, request_body) == -32600


def test_method_not_found(daemon: DaemonProcess) -> None:
    assert error_code(daemon, rpc("does.not.exist")) == -32601
    assert error_code(daemon, rpc("__init__")) == -32601


@pytest.mark.parametrize(
    ("method", "params", "fragment"),
    [
        ("queue.list", {"nope": 1}, "unknown parameter 'nope'"),
        ("queue.list", {"limit": "ten"}, "parameter 'limit' must be int"),
        ("queue.list", {"limit": True}, "parameter 'limit'"),
        ("queue.list", {"state": "sleeping"}, "unknown state 'sleeping'"),
        ("queue.clear", {"which": "queued"}, "complete, failed or all"),
        ("job.show", {}, "missing required parameter 'id'"),
        ("job.show", {"id": "abc"}, "job id must be a number"),
        ("limit.set", {"rate": "fast"}, "bad rate 'fast'"),
        ("queue.add", {"url": "http://example.com/x.bin"}, "not a Hugging Face file URL"),
        ("queue.add", {"url": "https://hf.co/Org/Repo/resolve/main/../../x.bin"}, "escapes it"),
        ("queue.add", {"repo": "Org/Repo", "path": "x.bin", "target": "../../etc/x"}, "outside the Wan2GP folder"),
        ("queue.add", {"repo": "Org/Repo", "path": "x.bin", "target": "/etc/x"}, "relative to the Wan2GP folder"),
        ("queue.add", {"repo": "not a repo", "path": "x"}, "Org/Repo"),
        ("queue.add", {"repo": "Org/Repo", "path": "dir/../dir/x.bin"}, "plain path inside the repo"),
        ("queue.add", {"repo": "Org/Repo", "path": "a\u0000b.bin"}, "plain path inside the repo"),
        ("queue.add", {"repo": "Org/Repo", "path": "x.bin", "revision": "../main"}, "plain path inside the repo"),
        ("queue.add", {"url": "https://huggingface.co/Org/Repo/resolve/main/x%00.bin"}, "escapes"),
        ("queue.add", {"repo": "Org/Repo", "path": "x.bin", "target": "ckpts/a\u0000b"}, "relative to the Wan2GP"),
        ("status", [1, 2], "at most 0 parameters"),
    ],
)
def test_invalid_params_name_the_parameter(daemon: DaemonProcess, method: str, params: Any, fragment: str) -> None:
    _, answer = post(daemon.socket, json.dumps(rpc(method, params)))
    assert answer["error"]["code"] == -32602, answer
    assert fragment in answer["error"]["message"]


@pytest.mark.parametrize(
    "url",
    [
        "https://huggingface.co/Org/Repo/resolve/main/sub/x%20y.safetensors",
        "https://hf.co/Org/Repo/resolve/main/sub/x%20y.safetensors",
        "https://www.huggingface.co/Org/Repo/blob/main/sub/x%20y.safetensors?download=true",
        "http://127.0.0.1:9/Org/Repo/resolve/main/sub/x%20y.safetensors",  # the configured endpoint (a mirror)
    ],
)
def test_queue_add_accepts_every_form_of_a_hub_url(daemon_factory: Any, url: str) -> None:
    # One parser (wangpd/hfurl.py) for definitions, `wangpctl add` and InvokeAI: every form names the same file.
    daemon = daemon_factory(paused=True).start()
    _, answer = post(daemon.socket, json.dumps(rpc("queue.add", {"url": url})))
    job = answer["result"]["job"]
    assert (job["repo"], job["revision"], job["path"]) == ("Org/Repo", "main", "sub/x y.safetensors")
    assert job["url"] == "https://huggingface.co/Org/Repo/resolve/main/sub/x%20y.safetensors"
    assert job["target"].endswith("/ckpts/x y.safetensors")


def test_positional_params(daemon: DaemonProcess) -> None:
    _, answer = post(daemon.socket, json.dumps(rpc("queue.list", ["queued", None, 5])))
    assert answer["result"]["jobs"] == [] and answer["result"]["total"] == 0


def test_own_error_codes(daemon: DaemonProcess) -> None:
    assert error_code(daemon, rpc("job.show", {"id": 424242})) == protocol.NOT_FOUND
    _, added = post(daemon.socket, json.dumps(rpc("queue.add", {"repo": "Org/Repo", "path": "a.bin"})))
    job_id = added["result"]["job"]["id"]
    assert error_code(daemon, rpc("job.resume", {"id": job_id})) == protocol.BAD_STATE
    assert error_code(daemon, rpc("job.retry", {"id": job_id})) == protocol.BAD_STATE
    daemon.config.write_text(daemon.config.read_text() + "\nnot_a_key: 1\n")
    assert error_code(daemon, rpc("reload")) == protocol.CONFIG_ERROR


def test_batch_mixes_results_errors_and_notifications(daemon: DaemonProcess) -> None:
    batch = [
        rpc("version", id="a"),
        {"jsonrpc": "2.0", "method": "version"},  # notification: no reply
        rpc("nope", id="b"),
        42,
    ]
    status, answer = post(daemon.socket, json.dumps(batch))
    assert status == 200
    assert [item.get("id") for item in answer] == ["a", "b", None]
    assert answer[0]["result"]["version"] == "0.1.0"
    assert answer[1]["error"]["code"] == -32601
    assert answer[2]["error"]["code"] == -32600


def test_notifications_only_get_no_body(daemon: DaemonProcess) -> None:
    status, answer = post(daemon.socket, json.dumps({"jsonrpc": "2.0", "method": "pause"}))
    assert status == 204 and answer is None
    # The notification still ran.
    _, state = post(daemon.socket, json.dumps(rpc("status")))
    assert state["result"]["paused"] is True
    status, answer = post(daemon.socket, json.dumps([{"jsonrpc": "2.0", "method": "resume"}] * 3))
    assert status == 204 and answer is None


def test_oversized_body_is_refused_with_a_json_rpc_error(daemon: DaemonProcess) -> None:
    body = json.dumps(rpc("queue.list", {"model": "x" * (protocol.MAX_REQUEST_BYTES + 10)}))
    status, answer = post(daemon.socket, body)
    assert status == 413 and answer["error"]["code"] == -32600 and "larger than" in answer["error"]["message"]
    assert post(daemon.socket, json.dumps(rpc("version")))[1]["result"]["protocol"] == 1


def test_events_stream_starts_with_a_snapshot_and_carries_job_changes(daemon: DaemonProcess) -> None:
    connection = Unix(daemon.socket)
    connection.request("GET", "/events")
    response = connection.getresponse()
    assert response.status == 200 and response.getheader("Content-Type") == "application/x-ndjson"
    hello = json.loads(response.readline())
    assert hello["event"] == "hello" and "counts" in hello
    post(daemon.socket, json.dumps(rpc("queue.add", {"repo": "Org/Repo", "path": "e.bin"})))
    for _ in range(50):  # bounded: status events arrive every 0.2 s in tests
        event = json.loads(response.readline())
        if event["event"] == "job":
            assert event["state"] == "queued" and event["target"].endswith("ckpts/e.bin")
            break
    else:
        pytest.fail("no job event")
    connection.close()


def test_internal_error_is_reported_and_the_daemon_goes_on() -> None:
    class Broken:  # a daemon whose queue database fails on every read
        config = None

        @property
        def store(self) -> Any:
            raise RuntimeError("boom")

    control = Control(Broken())  # type: ignore[arg-type]
    policy = AccessPolicy(None, True)
    me = Peer(1, __import__("os").getuid(), 0)
    answer = asyncio.run(dispatch(control, json.dumps(rpc("status")).encode(), me, policy))
    assert answer["error"]["code"] == -32603 and "RuntimeError: boom" in answer["error"]["message"]


def test_access_policy() -> None:
    policy = AccessPolicy(None, read_only_others=True)
    stranger = Peer(1, 12345, 12345)
    assert policy.may_read(stranger) and not policy.may_change(stranger)
    assert policy.may_change(Peer(1, 0, 0))
    closed = AccessPolicy(None, read_only_others=False)
    assert not closed.may_read(stranger)
    assert not policy.may_change(None)
