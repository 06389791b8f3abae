"""Bench: ``wangpctl du``'s measurement over a tree of model files, against ``du`` on the same tree.

Run: ``.venv/bin/python bench/bench_du.py [--files N] [--models M] [--runs R]``. Builds N files (4 KB each) in a
temp HF cache, links each into a temp Wan2GP ``ckpts/`` (half of them also under a second name), spreads them over
M models (each file needed by 1 to 3 models), then times :func:`wangpd.diskuse.measure` for every model and
``du -sL`` (GNU coreutils, following the links: it stats the same files) side by side, median of R runs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from wangpd.diskuse import measure  # noqa: E402
from wangpd.models import WantedFile  # noqa: E402
from wangpd.planner import Plan, PlannedFile  # noqa: E402


def build(base: Path, files: int, models: int) -> Plan:
    blobs = base / "hub" / "models--Org--Repo" / "blobs"
    ckpts = base / "wan2gp" / "ckpts"
    blobs.mkdir(parents=True)
    ckpts.mkdir(parents=True)
    planned = []
    for index in range(files):
        blob = blobs / f"{index:064x}"
        blob.write_bytes(os.urandom(4096))
        names = [f"f{index}.safetensors"] + ([f"alias{index}.safetensors"] if index % 2 else [])
        owners = tuple(f"m{(index + k) % models}" for k in range(1 + index % 3))
        for name in names:
            (ckpts / name).symlink_to(blob)
            local = f"ckpts/{name}"
            wanted = WantedFile(
                url="", repo=None, revision="", path_in_repo="", local=local, lookup=(local,), role="main"
            )
            planned.append(PlannedFile(file=wanted, wanted_by=owners, status="present", present_at=local))
    return Plan(files=tuple(planned), models={})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--models", type=int, default=50)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-du-") as tmp:
        base = Path(tmp)
        plan = build(base, args.files, args.models)
        ours, theirs = [], []
        for _ in range(args.runs):
            started = time.perf_counter()
            result = measure(plan, base / "wan2gp", hf_cache=base / "hub", invokeai=None, families={})
            ours.append(time.perf_counter() - started)
            started = time.perf_counter()
            subprocess.run(["du", "-sL", str(base / "wan2gp" / "ckpts")], check=True, capture_output=True)
            theirs.append(time.perf_counter() - started)
        ours_ms, du_ms = statistics.median(ours) * 1000, statistics.median(theirs) * 1000
        print(
            json.dumps(
                {
                    "files": args.files,
                    "paths": len(plan.files),
                    "models": args.models,
                    "rows": len(result["rows"]),
                    "measure_ms": round(ours_ms, 1),
                    "du_ms": round(du_ms, 1),
                    "ratio": round(ours_ms / du_ms, 2),
                    "total_bytes": result["total_bytes"],
                }
            )
        )


if __name__ == "__main__":
    main()
