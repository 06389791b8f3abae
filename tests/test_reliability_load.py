"""Many clients at once while transfers run: every request answered correctly, transfers unharmed. (Latency and
shaping figures under load come from bench/bench_load.py, not from a timed test.)"""

from __future__ import annotations

import hashlib
import json
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from conftest import DaemonProcess, wait_for

MiB = 1024 * 1024


def call(sock: Path, method: str, params: dict | None = None) -> dict[str, Any]:
    client = socket.socket(socket.AF_UNIX)
    client.settimeout(30)
    client.connect(str(sock))
    body = json.dumps({"jsonrpc": "2.0", "method": method, "params": params or {}, "id": 1}).encode()
    client.sendall(
        b"POST /rpc HTTP/1.1\r\nHost: w\r\nConnection: close\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    )
    data = b""
    while chunk := client.recv(65536):
        data += chunk
    client.close()
    return json.loads(data.split(b"\r\n\r\n", 1)[1])


def test_concurrent_clients_during_transfers(
    daemon_factory: Callable[..., DaemonProcess], fake_hub: Any, wan2gp: Path
) -> None:
    fakes = [fake_hub.add_file("Org/Load", f"f{i}.safetensors", size=6 * MiB, seed=70 + i) for i in range(2)]
    daemon = daemon_factory(hub={"endpoint": fake_hub.endpoint}, download={"bandwidth": "8MiB/s"}).start()
    for fake in fakes:
        daemon.ctl("add", f"https://huggingface.co/Org/Load/resolve/main/{fake.path}")
    wait_for(lambda: daemon.ctl_json("status")["counts"]["downloading"] == 2, what="transfers running")
    failures: list[str] = []

    def client(index: int) -> None:
        for round_number in range(10):
            method = ("status", "queue.list", "version")[(index + round_number) % 3]
            answer = call(daemon.socket, method)
            if "result" not in answer:
                failures.append(str(answer))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not failures and not any(t.is_alive() for t in threads)
    wait_for(lambda: daemon.ctl_json("status")["counts"]["complete"] == 2, timeout=30, what="transfers complete")
    for fake in fakes:
        target = wan2gp / "ckpts" / fake.path
        assert hashlib.sha256(target.read_bytes()).hexdigest() == fake.sha256
