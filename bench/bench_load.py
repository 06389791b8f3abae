"""Issue 8 load: many RPC clients while shaped transfers run; and the cost of a 10,000-row queue.

Run: .venv/bin/python bench/bench_load.py [--clients 100] [--requests 50] [--limit 20MiB/s] [--quick]
Starts the fake Hub as its own process (4 generated files), a real daemon with a bandwidth limit and 4 transfers
running, then C asyncio clients x R requests each (status, queue.list, version in turn) over the Unix socket, each
on a fresh connection like wangpctl. Reports latency p50/p99/max, the achieved transfer rate over the load window
(from the daemon's own bytes_done, against the limit), then fills the queue to 10,000 rows and times status and a
10,000-row queue.list. Loopback only; bounded; cleans up.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from common import fill_queue, rss_mb, start_daemon  # noqa: E402

from wangpd.units import parse_rate  # noqa: E402


async def rpc(sock: str, method: str, params: dict | None = None) -> tuple[float, dict]:
    started = time.perf_counter()
    reader, writer = await asyncio.open_unix_connection(sock)
    body = json.dumps({"jsonrpc": "2.0", "method": method, "params": params or {}, "id": 1}).encode()
    writer.write(b"POST /rpc HTTP/1.1\r\nHost: w\r\nConnection: close\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    data = await reader.read()
    writer.close()
    elapsed = time.perf_counter() - started
    return elapsed, json.loads(data.split(b"\r\n\r\n", 1)[1])


async def client(sock: str, requests: int, latencies: list[float], errors: list[str]) -> None:
    calls = [("status", None), ("queue.list", {"limit": 20}), ("version", None)]
    for index in range(requests):
        method, params = calls[index % len(calls)]
        elapsed, answer = await rpc(sock, method, params)
        latencies.append(elapsed)
        if "result" not in answer:
            errors.append(str(answer)[:200])


def bytes_done(sock: str) -> int:
    _, answer = asyncio.run(rpc(sock, "queue.list", {"limit": 100}))
    jobs = answer["result"]["jobs"]
    if os.environ.get("BENCH_DEBUG"):
        print([(j["state"], j["bytes_done"], j["last_error"]) for j in jobs], file=sys.stderr)
    return sum(job["bytes_done"] for job in jobs)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--limit", default="20MiB/s")
    parser.add_argument("--rows", type=int, default=10000)
    parser.add_argument("--quick", action="store_true", help="20 clients x 20 requests")
    args = parser.parse_args()
    if args.quick:
        args.clients, args.requests = 20, 20
    limit = parse_rate(args.limit)

    work = Path(tempfile.mkdtemp(prefix="wpl", dir="/tmp"))
    hub = daemon = None
    rounds = 0
    rss_max = 0.0
    try:
        hub = subprocess.Popen(
            [sys.executable, str(ROOT / "tests" / "fakehub.py"), "--size", "2GiB", "--count", "4"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        info = json.loads(hub.stdout.readline())  # type: ignore[union-attr]
        wan = work / "wan2gp"
        for folder in ("defaults", "ckpts"):
            (wan / folder).mkdir(parents=True)
        daemon, sock_path = start_daemon(
            work,
            wan,
            hub={"endpoint": info["endpoint"]},
            download={"bandwidth": args.limit, "concurrency": 4, "free_space_reserve": 0},
        )
        sock = str(sock_path)
        for path in info["paths"]:
            asyncio.run(rpc(sock, "queue.add", {"url": f"https://huggingface.co/{info['repo']}/resolve/main/{path}"}))
        time.sleep(3)  # transfers running and shaped

        latencies: list[float] = []
        errors: list[str] = []

        async def load() -> None:
            await asyncio.gather(*(client(sock, args.requests, latencies, errors) for _ in range(args.clients)))

        # The load runs in rounds for at least 10 s, so the transfer rate is measured over a window much longer
        # than the daemon's 0.5 s progress interval.
        done_before, t0 = bytes_done(sock), time.monotonic()
        rss_max = 0
        while rounds == 0 or time.monotonic() - t0 < 10:
            asyncio.run(load())
            rounds += 1
            rss_max = max(rss_max, rss_mb(daemon.pid))
        done_after, t1 = bytes_done(sock), time.monotonic()
        achieved = (done_after - done_before) / (t1 - t0)

        fill_queue(work, wan, args.rows, state="paused")
        status_times = [asyncio.run(rpc(sock, "status"))[0] for _ in range(10)]
        list_times = [asyncio.run(rpc(sock, "queue.list", {"limit": 10000}))[0] for _ in range(5)]
    finally:
        if daemon is not None:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(20)
        if hub is not None:
            hub.terminate()
            hub.wait(10)
        import shutil

        shutil.rmtree(work, ignore_errors=True)

    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]
    print("| measure | value | target |\n|---|---|---|")
    print(
        f"| {args.clients} clients x {args.requests} requests x {rounds} rounds, 4 transfers at {args.limit}: "
        "answered | "
        f"{len(latencies)} ({len(errors)} errors) | all |"
    )
    print(f"| latency p50 | {statistics.median(latencies) * 1000:.1f} ms | |")
    print(f"| latency p99 | {p99 * 1000:.1f} ms | < 50 ms |")
    print(f"| latency max | {latencies[-1] * 1000:.1f} ms | |")
    print(f"| daemon RSS, max during the load (4 transfers) | {rss_max:.1f} MB | <= 100 MB |")
    print(f"| transfer rate during the load / limit | {achieved / limit:.3f} | 1.00 +- 0.02 |")
    print(f"| status with {args.rows} rows (median of 10) | {statistics.median(status_times) * 1000:.1f} ms | |")
    print(f"| queue.list of {args.rows} rows (median of 5) | {statistics.median(list_times) * 1000:.1f} ms | |")


if __name__ == "__main__":
    main()
