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
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_transfer import CountingLimiter, cpu_children, cpu_self, fresh_dir  # noqa: E402

from wangpd.config import DownloadConfig, HubConfig  # noqa: E402
from wangpd.hfcache import HFCache  # noqa: E402
from wangpd.hub import Hub  # noqa: E402
from wangpd.limiter import RateLimiter  # noqa: E402
from wangpd.transfer import fetch_to_cache  # noqa: E402

MiB = 1024 * 1024
GiB = 1024 * MiB
HF_CLI = Path(sys.executable).parent / "hf"


def ensure_aria2c() -> str:
    found = shutil.which("aria2c")
    if found:
        return found
    print("aria2c missing: installing Debian's aria2 package", file=sys.stderr)
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    subprocess.run([*sudo, "apt-get", "install", "-y", "-q", "aria2"], check=True, stdout=subprocess.DEVNULL)
    return shutil.which("aria2c") or "aria2c"


def server(size: str, cap: str, client_cpus: set[int]) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    command = [sys.executable, str(ROOT / "tests" / "fakehub.py"), "--size", size, "--per-connection-rate", cap]
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) > 1 and shutil.which("taskset"):
        command = ["taskset", "-c", str(cpus[-1]), *command]
    process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line:
        raise SystemExit("fake hub did not start")
    return process, json.loads(line)


def config(connections: int) -> DownloadConfig:
    return DownloadConfig(free_space_reserve=0, connections_per_file=connections)


async def ours_once(info: dict[str, Any], base: Path, connections: int) -> tuple[float, float]:
    cache_dir = fresh_dir(base, "ours")
    hub = Hub(HubConfig(endpoint=info["endpoint"], cache_dir=cache_dir))
    async with aiohttp.ClientSession() as session:
        cpu, start = cpu_self(), time.perf_counter()
        result = await fetch_to_cache(
            info["repo"], "main", info["path"], hub=hub, cache=HFCache(cache_dir), session=session,
            limiter=RateLimiter(0), config=config(connections),
        )  # fmt: skip
        elapsed, cpu = time.perf_counter() - start, cpu_self() - cpu
    assert result.meta.sha256 == info["sha256"] and result.path.stat().st_size == info["size"]
    shutil.rmtree(cache_dir)
    return elapsed, cpu


def tool_once(command: list[str], env: dict[str, str], out_dir: Path) -> tuple[float, float]:
    cpu, start = cpu_children(), time.perf_counter()
    subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    elapsed, cpu = time.perf_counter() - start, cpu_children() - cpu
    shutil.rmtree(out_dir)
    return elapsed, cpu


def compare(info: dict[str, Any], base: Path, runs: int, tools: dict[str, Any]) -> dict[str, tuple[float, float]]:
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in tools}
    for round_index in range(runs + 1):  # round 0 warms the page cache up and is not counted
        names = list(tools)
        names = names[round_index % len(names) :] + names[: round_index % len(names)]
        for name in names:
            sample = tools[name]()
            if round_index:
                samples[name].append(sample)
    return {
        name: (statistics.median(s[0] for s in values), statistics.median(s[1] for s in values))
        for name, values in samples.items()
    }


def capped_tools(info: dict[str, Any], base: Path, aria2c: str) -> dict[str, Any]:
    url = f"{info['endpoint']}/{info['repo']}/resolve/main/{info['path']}"
    env = {
        **os.environ,
        "HF_ENDPOINT": info["endpoint"],
        "HF_HUB_DISABLE_XET": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "HF_HOME": str(base / "hf_home"),
    }
    env.pop("HF_TOKEN", None)

    def aria(connections: int) -> Any:
        def run() -> tuple[float, float]:
            out = fresh_dir(base, "aria2")
            command = [aria2c, f"-x{connections}", f"-s{connections}", "-k1M", "--file-allocation=none"]
            command += ["--allow-overwrite=true", "--console-log-level=warn", "-d", str(out), "-o", "f", url]
            return tool_once(command, env, out)

        return run

    def hf() -> tuple[float, float]:
        out = fresh_dir(base, "hf")
        return tool_once([str(HF_CLI), "download", info["repo"], info["path"], "--cache-dir", str(out)], env, out)

    return {
        "wangpd, 8 connections": lambda: asyncio.run(ours_once(info, base, 8)),
        "aria2c -x8 -s8": aria(8),
        "hf download": hf,
        "wangpd, 1 connection": lambda: asyncio.run(ours_once(info, base, 1)),
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
    cpus = sorted(os.sched_getaffinity(0))
    client = set(cpus[:-1]) if len(cpus) > 1 else set(cpus)
    capped, capped_info = server(args.size, args.cap, client)
    free, free_info = server(args.size, "", client)
    os.sched_setaffinity(0, client)  # the clients (this process, aria2c, hf) keep off the servers' core
    gib = capped_info["size"] / GiB
    rows: list[tuple[str, str]] = []
    try:
        results = compare(capped_info, base, args.runs, capped_tools(capped_info, base, aria2c))
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
            "before: 1 connection": lambda: asyncio.run(ours_once(free_info, base, 1)),
            "after: 8 connections": lambda: asyncio.run(ours_once(free_info, base, 8)),
        }
        results = compare(free_info, base, args.runs, tools)
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
