"""wangpctl start-up cost and daemon idle memory (issue 2; issue 6 adds the 10,000-row queue).

Run: .venv/bin/python bench/bench_cli.py [--rows 10000] [--runs 30]
Measures, side by side on the same machine and venv:
  * `wangpctl status` wall time vs `python -c "import json, socket, http.client"` (target <= 1.6x);
  * `wangpctl queue --json` with N queued rows, against the same baseline;
  * the daemon's RSS when idle (target <= 60 MB) and with N rows.
Prints a markdown table for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import fill_queue, rss_mb, start_daemon

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable


def timed(command: list[str], runs: int, env: dict[str, str]) -> float:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, env=env)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=10000)
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="wpb", dir="/tmp"))
    try:
        wan = work / "wan2gp"
        shutil.copytree(ROOT / "sample" / "wan2gp", wan)
        daemon, sock = start_daemon(work, wan, watch={"enabled": True})
        env = {k: v for k, v in os.environ.items() if k != "WANGPCTL_SOCKET"}
        env["WANGPCTL_SOCKET"] = str(sock)
        time.sleep(2)
        idle_rss = rss_mb(daemon.pid)
        ctl = str(Path(PY).parent / "wangpctl")
        baseline = timed([PY, "-c", "import json, socket, http.client"], args.runs, env)
        status = timed([ctl, "status"], args.runs, env)
        status_json = timed([ctl, "status", "--json"], args.runs, env)
        fill_queue(work, wan, args.rows)
        status_rows = timed([ctl, "status"], args.runs, env)
        queue_json = timed([ctl, "queue", "--json", "--limit", "10000"], max(5, args.runs // 3), env)
        queue_table = timed([ctl, "queue", "--limit", "10000"], max(5, args.runs // 3), env)
        # Where the time goes: the round trip (daemon builds + encodes, client reads + decodes) measured in-process,
        # and the client's re-encoding for output, compact (piped) vs indented (terminal).
        sys.path.insert(0, str(ROOT))
        import json

        from wangpctl.client import Client

        client = Client(sock)
        samples = []
        for _ in range(5):
            start = time.perf_counter()
            listing = client.call("queue.list", {"limit": 10000})
            samples.append(time.perf_counter() - start)
        round_trip = statistics.median(samples)
        start = time.perf_counter()
        json.dumps(listing, separators=(",", ":"), sort_keys=True)
        encode_compact = time.perf_counter() - start
        start = time.perf_counter()
        json.dumps(listing, indent=2, sort_keys=True)
        encode_indented = time.perf_counter() - start
        rows_rss = rss_mb(daemon.pid)
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(15)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print("| measure | value | baseline | ratio | target |\n|---|---|---|---|---|")
    print(
        f"| `wangpctl status` wall (median of {args.runs}) | {status * 1000:.1f} ms | {baseline * 1000:.1f} ms | "
        f"{status / baseline:.2f}x | <= 1.6x |"
    )
    print(
        f"| `wangpctl status --json` | {status_json * 1000:.1f} ms | {baseline * 1000:.1f} ms | "
        f"{status_json / baseline:.2f}x | |"
    )
    print(
        f"| `wangpctl status`, {args.rows} rows queued | {status_rows * 1000:.1f} ms | {baseline * 1000:.1f} ms | "
        f"{status_rows / baseline:.2f}x | |"
    )
    print(
        f"| `wangpctl queue --json --limit 10000`, {args.rows} rows | {queue_json * 1000:.1f} ms | "
        f"{baseline * 1000:.1f} ms | {queue_json / baseline:.2f}x | |"
    )
    print(
        f"| `wangpctl queue --limit 10000` (table), {args.rows} rows | {queue_table * 1000:.1f} ms | "
        f"{baseline * 1000:.1f} ms | {queue_table / baseline:.2f}x | |"
    )
    print(f"| of which: queue.list round trip in-process (daemon + decode) | {round_trip * 1000:.1f} ms | | | |")
    print(
        f"| of which: client re-encoding, compact (piped) / indented (terminal) | {encode_compact * 1000:.1f} ms / "
        f"{encode_indented * 1000:.1f} ms | | | |"
    )
    print(f"| daemon RSS idle | {idle_rss:.1f} MB | | | <= 60 MB |")
    print(f"| daemon RSS after listing {args.rows} rows | {rows_rss:.1f} MB | | | |")


if __name__ == "__main__":
    main()
