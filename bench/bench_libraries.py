"""Bench: indexing other model libraries and hashing their size matches, against GNU ``find`` and ``sha256sum``.

Run: ``.venv/bin/python bench/bench_libraries.py [--files N] [--matches M] [--wanted W] [--size-kb K] [--runs R]``.
Builds a temp ComfyUI ``models/``, Forge ``models/`` and Wan2GP ``ckpts/`` holding N files in subfolders. Every
file has its own size except M of them, whose sizes are those of the W wanted files: half of the wanted files
exist in the library (a copy under another name), the other half only share their size with a decoy. The M files
hold real bytes (hashing must read them); the rest are sparse, since only their size is ever looked at.

Then, median of R runs, page cache warm for both sides:

* :meth:`LibraryIndex.scan` against ``find <dir> -type f -printf '%s %p\\n'`` (one stat per file too);
* :meth:`LibraryIndex.prefetch` of the W wanted (size, sha256) pairs on a fresh index, against ``sha256sum`` over
  exactly the M size-matched files (the least any size-first method must read), with the bytes each read.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from wangpd.libraries import LibraryIndex  # noqa: E402

SUBFOLDERS = ("checkpoints", "diffusion_models", "loras", "text_encoders", "vae", "clip_vision", "upscale_models")


def build(
    base: Path, files: int, matches: int, wanted_count: int, size: int
) -> tuple[list[Path], list[tuple[int, str]], list[Path]]:
    """(library roots, wanted (size, sha256) pairs, the size-matched files)."""
    roots = [base / "comfy" / "models", base / "forge" / "models", base / "wan2gp" / "ckpts"]
    # Wanted sizes are even offsets above ``size``, every other file an odd one: no accidental size match.
    wanted_sizes = [size + 2 * k for k in range(wanted_count)]
    wanted: list[tuple[int, str]] = []
    matched: list[Path] = []
    exists = set(range(0, wanted_count, 2))  # half of the wanted files are somewhere in the library
    first_of_size: set[int] = set()
    for index in range(files):
        root = roots[index % len(roots)]
        folder = root / SUBFOLDERS[index % len(SUBFOLDERS)] / f"batch{index // 500}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"model-{index:06d}.safetensors"
        if index < matches:
            k = index % wanted_count
            data = os.urandom(wanted_sizes[k])  # real bytes: these are the ones hashed
            path.write_bytes(data)
            matched.append(path)
            if k in exists and k not in first_of_size:
                wanted.append((wanted_sizes[k], hashlib.sha256(data).hexdigest()))
                first_of_size.add(k)
        else:
            with open(path, "wb") as stream:
                stream.truncate(size + 2 * index + 1)  # sparse: only listed, never read
    for k in range(wanted_count):
        if k not in first_of_size:
            # Absent from the library (or no candidate at all when matches < wanted): every candidate is read.
            wanted.append((wanted_sizes[k], hashlib.sha256(os.urandom(64)).hexdigest()))
    return roots, wanted, matched


def timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=5000)
    parser.add_argument("--matches", type=int, default=20)
    parser.add_argument("--wanted", type=int, default=20)
    parser.add_argument("--size-kb", type=int, default=64)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    if args.matches > args.files or args.wanted < 1:
        raise SystemExit("--matches must be at most --files, and --wanted at least 1")
    with tempfile.TemporaryDirectory(prefix="bench-libraries-") as tmp:
        base = Path(tmp)
        roots, wanted, matched = build(base, args.files, args.matches, args.wanted, args.size_kb * 1024)
        matched_bytes = sum(path.stat().st_size for path in matched)
        find_cmd = ["find", str(base), "-type", "f", "-printf", "%s %p\\n"]
        sha_cmd = ["sha256sum", *map(str, matched)]
        subprocess.run(find_cmd, check=True, stdout=subprocess.DEVNULL)  # warm the dentry and page caches
        subprocess.run(sha_cmd, check=True, stdout=subprocess.DEVNULL)
        scan_s, find_s, prefetch_s, sha_s = [], [], [], []
        read, hashed, indexed, found = 0, 0, 0, 0
        for _ in range(args.runs):
            index = LibraryIndex(roots, min_size=1)
            scan_s.append(timed(index.scan))
            indexed = index.describe()["files"]
            find_s.append(timed(lambda: subprocess.run(find_cmd, check=True, stdout=subprocess.DEVNULL)))
            started = time.perf_counter()
            hashed = index.prefetch(wanted)
            prefetch_s.append(time.perf_counter() - started)
            read = index.bytes_hashed
            found = sum(index.find(size, sha) is not None for size, sha in wanted)
            if index.bytes_hashed != read:
                raise SystemExit("find read files again after prefetch")
            sha_s.append(timed(lambda: subprocess.run(sha_cmd, check=True, stdout=subprocess.DEVNULL)))
        scan_ms, find_ms = statistics.median(scan_s) * 1000, statistics.median(find_s) * 1000
        prefetch_ms, sha_ms = statistics.median(prefetch_s) * 1000, statistics.median(sha_s) * 1000
        expected = len(range(0, args.wanted, 2)) if args.matches >= args.wanted else None
        print(
            f"{args.files} files in {len(roots)} libraries ({indexed} indexed), {args.matches} size-matched"
            f" ({matched_bytes / 1e6:.1f} MB real bytes), {len(wanted)} wanted: found {found}"
            + (f" (expected {expected})" if expected is not None else "")
            + f", {hashed} files hashed; median of {args.runs} runs, warm cache\n"
        )
        print("| step | wangpd | reference | ratio |")
        print("|---|---:|---:|---:|")
        print(f"| list + stat (ms) | {scan_ms:.1f} `scan()` | {find_ms:.1f} `find -printf` | {scan_ms / find_ms:.2f} |")
        print(
            f"| hash size matches (ms) | {prefetch_ms:.1f} `prefetch()` | {sha_ms:.1f} `sha256sum` |"
            f" {prefetch_ms / sha_ms:.2f} |"
        )
        print(f"| bytes read | {read} | {matched_bytes} | {read / matched_bytes if matched_bytes else 0:.2f} |")
        ours_mbps, theirs_mbps = read / 1e3 / prefetch_ms, matched_bytes / 1e3 / sha_ms
        print(f"| hash throughput (MB/s) | {ours_mbps:.0f} | {theirs_mbps:.0f} | {ours_mbps / theirs_mbps:.2f} |")
        if expected is not None and found != expected:
            raise SystemExit(f"found {found} wanted files, expected {expected}")


if __name__ == "__main__":
    main()
