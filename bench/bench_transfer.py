"""Download engine figures (issue 4): throughput vs curl and `hf download`, shaping accuracy, live rate change, CPU.

Run: .venv/bin/python bench/bench_transfer.py [--size 1GiB] [--dir /tmp] [--runs 3]
The fake Hub (tests/fakehub.py) serves one generated file from a separate process, pinned to another CPU than this
client where the machine has more than one, so server and client do not share a core. Every download goes through
the Hub's 302 to the CDN origin, like the real Hub. Prints a markdown table for docs/benchmarks.md.

Measured:
  * unshaped: wangpd's fetch_to_cache (HEAD through huggingface_hub, aiohttp + sha256 + fsync + commit) vs
    `curl -sL -o FILE` vs `hf download` (HF_HUB_DISABLE_XET=1, so it uses plain HTTP too); median of --runs;
  * shaping at 20 MiB/s for 10 s with 1 and 4 transfers: achieved/limit after the first second, and the spread of
    bytes per 100 ms bucket (bytes counted as read, where the limiter counts them);
  * limit changed 40 -> 5 MiB/s mid-transfer: time until every following 100 ms bucket is within +-25 % of the
    new limit (and the longest gap without bytes);
  * CPU seconds per GiB (user+sys of the client process, hashing threads included); RSS with 4 transfers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
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

from wangpd.config import DownloadConfig, HubConfig  # noqa: E402
from wangpd.download import download  # noqa: E402
from wangpd.hfcache import HFCache  # noqa: E402
from wangpd.hub import Hub  # noqa: E402
from wangpd.limiter import RateLimiter  # noqa: E402
from wangpd.transfer import fetch_to_cache  # noqa: E402

MiB = 1024 * 1024
GiB = 1024 * MiB
ALL_CPUS = sorted(os.sched_getaffinity(0))
HF_CLI = Path(sys.executable).parent / "hf"


class CountingLimiter(RateLimiter):
    """The real limiter, also recording cumulative bytes as they are read."""

    def __init__(self, rate: int) -> None:
        super().__init__(rate)
        self.total = 0

    async def acquire(self, nbytes: int) -> None:
        await super().acquire(nbytes)
        self.total += nbytes  # counted when released, i.e. when the transfer may go on


def cpu_self() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def cpu_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def start_server(size: str, pin: bool = True, *extra: str) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    """The fake Hub in its own process (``extra``: more of its options), on the last CPU when ``pin``; this
    process keeps to the others."""
    command = [sys.executable, str(ROOT / "tests" / "fakehub.py"), "--size", size, *extra]
    cpus = ALL_CPUS  # as at the start: a second server goes to the same CPU as the first
    if pin and len(cpus) > 1 and shutil.which("taskset"):
        command = ["taskset", "-c", str(cpus[-1]), *command]
        os.sched_setaffinity(0, set(cpus[:-1]))  # the client keeps off the server's core
    server = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert server.stdout is not None
    line = server.stdout.readline()
    if not line:
        raise SystemExit("fake hub did not start")
    return server, json.loads(line)


def fresh_dir(base: Path, name: str) -> Path:
    path = base / name
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


async def ours_once(info: dict[str, Any], base: Path, config: DownloadConfig | None = None) -> tuple[float, float]:
    """One fetch_to_cache of the served file into a fresh cache: (seconds, CPU seconds)."""
    cache_dir = fresh_dir(base, "ours")
    hub = Hub(HubConfig(endpoint=info["endpoint"], cache_dir=cache_dir))
    config = config or DownloadConfig(free_space_reserve=0)
    async with aiohttp.ClientSession() as session:
        cpu, start = cpu_self(), time.perf_counter()
        result = await fetch_to_cache(
            info["repo"], "main", info["path"], hub=hub, cache=HFCache(cache_dir), session=session,
            limiter=RateLimiter(0), config=config,
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


def tool_env(info: dict[str, Any], base: Path) -> dict[str, str]:
    """The environment the other tools run in: the fake Hub, plain HTTP (no Xet), no token, no progress bars."""
    env = {
        **os.environ,
        "HF_ENDPOINT": info["endpoint"],
        "HF_HUB_DISABLE_XET": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "HF_HOME": str(base / "hf_home"),
    }
    env.pop("HF_TOKEN", None)
    return env


def hf_download(info: dict[str, Any], base: Path, env: dict[str, str]) -> tuple[float, float]:
    out = fresh_dir(base, "hf")
    return tool_once([str(HF_CLI), "download", info["repo"], info["path"], "--cache-dir", str(out)], env, out)


def rotate(tools: dict[str, Any], runs: int) -> dict[str, tuple[float, float]]:
    """Each tool ``runs`` times, the order rotating; median (seconds, CPU seconds) per tool.

    Round 0 is a discarded warm-up: on a VM, the first write into never-touched page-cache memory runs ~10x
    slower than later writes into recycled pages, and whoever goes first would pay for it."""
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in tools}
    for round_index in range(runs + 1):
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


def unshaped(info: dict[str, Any], base: Path, runs: int) -> dict[str, tuple[float, float]]:
    url = f"{info['endpoint']}/{info['repo']}/resolve/main/{info['path']}"
    env = tool_env(info, base)

    def ours() -> tuple[float, float]:
        return asyncio.run(ours_once(info, base))

    def curl() -> tuple[float, float]:
        out = fresh_dir(base, "curl")
        return tool_once(["curl", "-sSfL", "-o", str(out / "file"), url], env, out)

    def curl_sha() -> tuple[float, float]:
        # The fair reference: wangpd hashes every byte (sha256) while writing it; plain curl does neither.
        out = fresh_dir(base, "curlsha")
        script = f"curl -sSfL '{url}' | tee '{out / 'file'}' | sha256sum"
        return tool_once(["bash", "-c", script], env, out)

    def hf() -> tuple[float, float]:
        return hf_download(info, base, env)

    tools = {"wangpd": ours, "curl": curl, "curl | tee | sha256sum": curl_sha, "hf download": hf}
    return rotate(tools, runs)


async def shaped(
    info: dict[str, Any], base: Path, transfers: int, schedule: list[tuple[float, int]], duration: float
) -> tuple[list[float], float]:
    """Run `transfers` downloads under one limiter following `schedule` [(at_seconds, rate)], for `duration` s.

    Returns bytes per 100 ms bucket and the peak RSS seen.
    """
    work = fresh_dir(base, f"shaped{transfers}")
    hub = Hub(HubConfig(endpoint=info["endpoint"], cache_dir=work))
    limiter = CountingLimiter(schedule[0][1])
    meta = await hub.file_metadata(info["repo"], "main", info["path"])
    buckets: list[float] = []
    peak_rss = 0.0
    async with aiohttp.ClientSession() as session:
        tasks = [
            asyncio.create_task(download(meta, work / f"part{index}", session=session, limiter=limiter))
            for index in range(transfers)
        ]
        loop = asyncio.get_running_loop()
        start = loop.time()
        last = 0
        changes = list(schedule[1:])
        for tick in range(1, int(duration * 10) + 1):
            await asyncio.sleep(max(0.0, start + tick * 0.1 - loop.time()))
            buckets.append(limiter.total - last)
            last = limiter.total
            while changes and tick * 0.1 >= changes[0][0] - 1e-9:
                limiter.set_rate(changes.pop(0)[1])
            peak_rss = max(peak_rss, rss_mb())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    shutil.rmtree(work)
    return buckets, peak_rss


def spread(buckets: list[float], expected: float) -> str:
    low, high = min(buckets) / expected, max(buckets) / expected
    deviation = statistics.pstdev(buckets) / expected
    return f"min {low:.2f}, max {high:.2f}, sd {deviation:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="1GiB")
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-pin", action="store_true", help="let server and client share all CPUs")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="wangpd-bench-", dir=args.dir))
    server, info = start_server(args.size, pin=not args.no_pin)
    pinning = "client and server on separate CPUs" if not args.no_pin and os.cpu_count() != 1 else "CPUs shared"
    gib = info["size"] / GiB
    rows: list[tuple[str, str]] = []
    try:
        results = unshaped(info, base, args.runs)
        ours_time, ours_cpu = results["wangpd"]
        for name, (elapsed, cpu) in results.items():
            ratio = ours_time and elapsed / ours_time
            rows.append(
                (
                    f"unshaped {args.size}: {name}",
                    f"{info['size'] / MiB / elapsed:.0f} MiB/s ({elapsed:.2f} s), CPU {cpu / gib:.2f} s/GiB"
                    + ("" if name == "wangpd" else f"; wangpd is {ratio:.2f}x its speed"),
                )
            )

        limit = 20 * MiB
        for transfers in (1, 4):
            buckets, peak = asyncio.run(shaped(info, base, transfers, [(0.0, limit)], 11.0))
            steady = buckets[10:]  # after the first second
            achieved = sum(steady) / (len(steady) * 0.1)
            rows.append(
                (
                    f"shaped 20 MiB/s, {transfers} transfer(s), 10 s",
                    f"achieved/limit {achieved / limit:.3f}; per-100 ms {spread(steady, limit * 0.1)}; "
                    f"RSS {peak:.0f} MB",
                )
            )

        fast, slow = 40 * MiB, 5 * MiB
        buckets, _peak = asyncio.run(shaped(info, base, 2, [(0.0, fast), (3.0, slow)], 6.0))
        after = buckets[30:]
        holds_from = next(
            (
                index
                for index in range(len(after))
                if all(abs(b - slow * 0.1) <= 0.25 * slow * 0.1 for b in after[index:])
            ),
            None,
        )
        longest_gap = max((len(run) for run in "".join("0" if b == 0 else "1" for b in after).split("1")), default=0)
        before = sum(buckets[10:30]) / 2.0
        settled = after[holds_from:] if holds_from is not None else []
        rows.append(
            (
                "limit 40 -> 5 MiB/s at t=3 s, 2 transfers",
                f"before {before / fast:.3f} of 40 MiB/s; new rate holds after "
                + (f"{holds_from * 0.1:.1f} s" if holds_from is not None else "never")
                + (f" at {sum(settled) / (len(settled) * 0.1) / slow:.3f} of 5 MiB/s" if settled else "")
                + f"; longest silence {longest_gap * 100} ms",
            )
        )
        rows.append(("CPU per GiB (wangpd, unshaped, incl. sha256)", f"{ours_cpu / gib:.2f} s"))
    finally:
        if server.stdin:
            server.stdin.close()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
        shutil.rmtree(base, ignore_errors=True)

    where = f"{args.size} from the fake Hub, {os.cpu_count()} CPUs, {pinning}, files in {args.dir}"
    print(f"\n### Download engine ({where})\n")
    print("| measure | result |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")


if __name__ == "__main__":
    main()
