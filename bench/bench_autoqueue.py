"""Issue 5: latency from a new defaults file closed on disk to its jobs queued, and an idle daemon's CPU.

Run: .venv/bin/python bench/bench_autoqueue.py [--trials 50] [--idle 60] [--debounce 200ms] [--quick]
A real daemon (subprocess) watches a copy of the fixture Wan2GP tree (155 definitions) with
auto_queue.track: installed (nothing is installed) and new_models: queue, so each new file is queued on its own.
Each trial writes a new finetune (t2v.json with its own main file) to a temp name and renames it, as editors and
git do, then waits on the daemon's /events stream for that model's `auto` event. Sizes are not asked of any Hub
(hub.survey_sizes: false, endpoint on a closed port), so the batch is held for approval: the latency measured is
watcher + catalog + planner + policy + store. The idle figure is utime+stime of the daemon over N seconds, next to
`python -c "import time; time.sleep(N)"`. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import start_daemon

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "tests" / "fixtures" / "wan2gp-2026-02"
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


class Events:
    def __init__(self, sock: Path) -> None:
        self.connection = http.client.HTTPConnection("wangpd", timeout=30)
        raw = socket.socket(socket.AF_UNIX)
        raw.connect(str(sock))
        self.connection.sock = raw
        self.connection.request("GET", "/events")
        self.response = self.connection.getresponse()

    def wait_auto(self, model: str, deadline: float) -> float:
        while time.monotonic() < deadline:
            event = json.loads(self.response.readline())
            if event.get("event") == "auto" and model in event.get("models", []):
                return time.monotonic()
        raise SystemExit(f"no auto event for {model}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--idle", type=float, default=60.0)
    parser.add_argument("--debounce", default="200ms")
    parser.add_argument("--quick", action="store_true", help="10 trials, 10 s idle")
    args = parser.parse_args()
    if args.quick:
        args.trials, args.idle = 10, 10.0

    work = Path(tempfile.mkdtemp(prefix="wpq", dir="/tmp"))
    daemon = None
    try:
        wan = work / "wan2gp"
        shutil.copytree(FIXTURE, wan)
        (wan / "ckpts").mkdir()
        daemon, sock = start_daemon(
            work, wan, watch={"debounce": args.debounce}, auto_queue={"track": "installed", "new_models": "queue"}
        )
        time.sleep(3)  # the startup scan of 155 definitions
        events = Events(sock)
        template = json.loads((wan / "defaults" / "t2v.json").read_text())
        latencies = []
        for trial in range(args.trials):
            name = f"bench_{trial}"
            temp = wan / "finetunes" / f".{name}.tmp"
            template["model"]["URLs"] = [f"https://huggingface.co/Me/Bench/resolve/main/{name}_int8.safetensors"]
            temp.write_text(json.dumps(template))
            os.replace(temp, wan / "finetunes" / f"{name}.json")
            closed = time.monotonic()
            latencies.append(events.wait_auto(name, closed + 10) - closed)
            time.sleep(0.3)  # one change at a time: each trial measures its own batch
        events.connection.close()

        time.sleep(2)
        before = cpu_seconds(daemon.pid)
        reference = subprocess.Popen([sys.executable, "-c", f"import time; time.sleep({args.idle})"])
        time.sleep(args.idle)
        idle_cpu = cpu_seconds(daemon.pid) - before
        reference.wait()
        ref_cpu = cpu_seconds_of_finished(reference)
    finally:
        if daemon is not None:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(15)
        shutil.rmtree(work, ignore_errors=True)

    latencies.sort()
    p95 = latencies[min(len(latencies) - 1, int(0.95 * len(latencies)) - 1)]
    print("| measure | value | reference | target |\n|---|---|---|---|")
    print(
        f"| new definition -> queued, median of {len(latencies)} (debounce {args.debounce}) | "
        f"{statistics.median(latencies) * 1000:.0f} ms | | |"
    )
    print(f"| same, p95 | {p95 * 1000:.0f} ms | | <= 500 ms |")
    print(f"| same, max | {latencies[-1] * 1000:.0f} ms | | |")
    print(
        f"| idle daemon CPU over {args.idle:.0f} s (155 definitions watched) | {idle_cpu:.2f} s "
        f"({100 * idle_cpu / args.idle:.2f} %) | bare sleeping python: {ref_cpu:.2f} s | |"
    )


def cpu_seconds_of_finished(process: subprocess.Popen) -> float:
    """CPU of a reaped child: the only child reaped so far is the reference (the daemon is reaped last)."""
    import resource

    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return children.ru_utime + children.ru_stime


if __name__ == "__main__":
    main()
