"""One file over several connections (issue 14): wangpd against aria2c -x8 -s8 and `hf download` on a CDN that caps
each connection, unshaped throughput and CPU before (one connection) and after (eight), and shaping over 1, 4 and 16
connections.

Run: .venv/bin/python bench/bench_segmented.py [--size 1GiB] [--cap 40MiB] [--runs 3] [--dir /tmp]
aria2c comes from Debian's `aria2` package; the bench installs it (apt-get) when it is missing. Two fake Hubs
(tests/fakehub.py) run as separate processes pinned to another CPU than the clients: one whose CDN sends each
response at --cap bytes/s (what users see of the HuggingFace CDN: about 40 MB/s a connection), one uncapped. Every
download goes through the Hub's 302 to the CDN. Runs alternate between the tools, after one discarded warm-up round.
Prints a markdown table for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_transfer import (  # noqa: E402
    ALL_CPUS,
    CountingLimiter,
    fresh_dir,
    hf_download,
    ours_once,
    rotate,
    start_server,
    tool_env,
    tool_once,
)

from wangpd.config import DownloadConfig, HubConfig  # noqa: E402
from wangpd.hfcache import HFCache  # noqa: E402
from wangpd.hub import Hub  # noqa: E402
from wangpd.transfer import fetch_to_cache  # noqa: E402

MiB = 1024 * 1024
GiB = 1024 * MiB


def ensure_aria2c() -> str:
    found = shutil.which("aria2c")
    if found:
        return found
    print("aria2c missing: installing Debian's aria2 package", file=sys.stderr)
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    subprocess.run([*sudo, "apt-get", "install", "-y", "-q", "aria2"], check=True, stdout=subprocess.DEVNULL)
    return shutil.which("aria2c") or "aria2c"


def config(connections: int) -> DownloadConfig:
    return DownloadConfig(free_space_reserve=0, connections_per_file=connections)


def capped_tools(info: dict[str, Any], base: Path, aria2c: str) -> dict[str, Any]:
    url = f"{info['endpoint']}/{info['repo']}/resolve/main/{info['path']}"
    env = tool_env(info, base)

    def aria(connections: int) -> Any:
        def run() -> tuple[float, float]:
            out = fresh_dir(base, "aria2")
            command = [aria2c, f"-x{connections}", f"-s{connections}", "-k1M", "--file-allocation=none"]
            command += ["--allow-overwrite=true", "--console-log-level=warn", "-d", str(out), "-o", "f", url]
            return tool_once(command, env, out)

        return run

    return {
        "wangpd, 8 connections": lambda: asyncio.run(ours_once(info, base, config(8))),
        "aria2c -x8 -s8": aria(8),
        "hf download": lambda: hf_download(info, base, env),
        "wangpd, 1 connection": lambda: asyncio.run(ours_once(info, base, config(1))),
    }


async def shaped(
    info: dict[str, Any], base: Path, connections: int, schedule: list[tuple[float, int]], duration: float
) -> list[float]:
    """One file over ``connections`` under one limiter following ``schedule``; bytes per 100 ms bucket."""
    work = fresh_dir(base, f"shaped{connections}")
    hub = Hub(HubConfig(endpoint=info["endpoint"], cache_dir=work))
    limiter = CountingLimiter(schedule[0][1])
    buckets: list[float] = []
    async with aiohttp.ClientSession() as session:
        task = asyncio.create_task(
            fetch_to_cache(
                info["repo"], "main", info["path"], hub=hub, cache=HFCache(work), session=session, limiter=limiter,
                config=dataclasses.replace(config(connections), segment_size=16 * MiB),
            )
        )  # fmt: skip
        loop = asyncio.get_running_loop()
        start, last = loop.time(), 0
        changes = list(schedule[1:])
        for tick in range(1, int(duration * 10) + 1):
            await asyncio.sleep(max(0.0, start + tick * 0.1 - loop.time()))
            buckets.append(limiter.total - last)
            last = limiter.total
            while changes and tick * 0.1 >= changes[0][0] - 1e-9:
                limiter.set_rate(changes.pop(0)[1])
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    shutil.rmtree(work)
    return buckets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="1GiB")
    parser.add_argument("--cap", default="40MiB", help="bytes/s per connection on the capped CDN")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()))
    args = parser.parse_args()
    aria2c = ensure_aria2c()
    base = Path(tempfile.mkdtemp(prefix="wangpd-bench-seg-", dir=args.dir))
    cpus = ALL_CPUS
    client = set(cpus[:-1]) if len(cpus) > 1 else set(cpus)
    # Both on the last CPU; the clients (this process, aria2c, hf) keep to the others.
    capped, capped_info = start_server(args.size, True, "--per-connection-rate", args.cap)
    free, free_info = start_server(args.size, True)
    gib = capped_info["size"] / GiB
    rows: list[tuple[str, str]] = []
    try:
        results = rotate(capped_tools(capped_info, base, aria2c), args.runs)
        reference = results["aria2c -x8 -s8"][0]
        for name, (elapsed, cpu) in results.items():
            rows.append(
                (
                    f"CDN capped at {args.cap}/s a connection, {args.size}: {name}",
                    f"{capped_info['size'] / MiB / elapsed:.0f} MiB/s ({elapsed:.1f} s), CPU {cpu / gib:.2f} s/GiB; "
                    f"{reference / elapsed:.2f}x aria2c -x8",
                )
            )
        tools = {
            "before: 1 connection": lambda: asyncio.run(ours_once(free_info, base, config(1))),
            "after: 8 connections": lambda: asyncio.run(ours_once(free_info, base, config(8))),
        }
        results = rotate(tools, args.runs)
        before_time, before_cpu = results["before: 1 connection"]
        for name, (elapsed, cpu) in results.items():
            rows.append(
                (
                    f"unshaped loopback, {args.size}: wangpd {name}",
                    f"{free_info['size'] / MiB / elapsed:.0f} MiB/s, CPU {cpu / gib:.2f} s/GiB "
                    f"({cpu / gib / (before_cpu / gib):.2f}x of one connection's CPU, "
                    f"{before_time / elapsed:.2f}x its speed)",
                )
            )
        limit = 60 * MiB
        for connections in (1, 4, 16):
            buckets = asyncio.run(shaped(free_info, base, connections, [(0.0, limit)], 6.0))[10:]
            achieved = sum(buckets) / (len(buckets) * 0.1)
            low, high = min(buckets) / (limit * 0.1), max(buckets) / (limit * 0.1)
            rows.append(
                (
                    f"shaped {limit // MiB} MiB/s, {connections} connection(s), 5 s after the first",
                    f"achieved/limit {achieved / limit:.3f}; per-100 ms min {low:.2f} max {high:.2f} "
                    f"sd {statistics.pstdev(buckets) / (limit * 0.1):.3f}",
                )
            )
        slow = 20 * MiB
        buckets = asyncio.run(shaped(free_info, base, 16, [(0.0, limit), (3.0, slow)], 6.0))[30:]
        holds = next(
            (i for i in range(len(buckets)) if all(abs(b - slow * 0.1) <= 0.25 * slow * 0.1 for b in buckets[i:])),
            None,
        )
        rows.append(
            (
                "limit 60 -> 20 MiB/s with 16 connections",
                f"every 100 ms bucket within 25 % of the new limit after {holds * 0.1:.1f} s"
                if holds is not None
                else "never settled",
            )
        )
    finally:
        for process in (capped, free):
            process.terminate()
            process.wait(timeout=10)
        shutil.rmtree(base, ignore_errors=True)
    print(f"\n{len(cpus)} CPU(s); servers on CPU {cpus[-1]}, clients on {sorted(client)}; median of {args.runs}\n")
    print("| what | figure |\n|---|---|")
    for what, figure in rows:
        print(f"| {what} | {figure} |")


if __name__ == "__main__":
    main()
