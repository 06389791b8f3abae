"""Bench: scan a folder of Wan2GP outputs for the model types they were made with, then rescan it.

Run: ``.venv/bin/python bench/bench_usage.py [--files N] [--runs R]``. Generates N small outputs in a temp folder
(half PNG with Wan2GP's iTXt ``comment``, half MP4 with ``moov/udta/meta/ilst/©cmt`` after a 4 KB mdat; each with a
~1.5 KB JSON like Wan2GP's), spread over the folder itself and 10 dated subfolders. Prints the median of R runs of

* first scan: empty state, every folder listed, every output stat'ed, opened and parsed;
* rescan, nothing new: the stored state, folders not changed since the last scan (a stat per folder);
* rescan, one new output: one folder listed (and its files stat'ed), one file read;
* reference: ``os.walk`` + ``stat`` of every file (what any non-incremental scan pays before reading a byte);

with files/s and the peak RSS of the process. The page cache is warm (the files were just written): a cold first
scan on a spinning disk is bound by seeks instead.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import struct
import sys
import tempfile
import time
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from wangpd.usage import OutputScanner  # noqa: E402

MODEL_TYPES = ["t2v", "i2v_2_2", "vace_14B", "flux", "qwen_image_20B", "ltx2_19B", "hunyuan_1_5_t2v", "z_image"]


def metadata(index: int) -> bytes:
    model_type = MODEL_TYPES[index % len(MODEL_TYPES)]
    data = {
        "prompt": f"output {index}: " + "a slow dolly shot over a misty harbour at dawn, " * 12,
        "negative_prompt": "",
        "model_type": model_type,
        "base_model_type": model_type,
        "model_filename": f"ckpts/{model_type}_quanto_mbf16_int8.safetensors",
        "modules": [],
        "activated_loras": [],
        "seed": index,
        "num_inference_steps": 30,
        "resolution": "1280x720",
    }
    return json.dumps(data).encode()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png(text: bytes) -> bytes:
    ihdr = png_chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0))
    comment = png_chunk(b"iTXt", b"comment\0\0\0\0\0" + text)
    idat = png_chunk(b"IDAT", zlib.compress(b"\0\xff\0\0") + bytes(2000))
    return b"\x89PNG\r\n\x1a\n" + ihdr + comment + idat + png_chunk(b"IEND", b"")


def box(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I4s", 8 + len(payload), kind) + payload


def mp4(text: bytes) -> bytes:
    data = box(b"data", struct.pack(">II", 1, 0) + text)
    meta = box(
        b"meta", b"\0\0\0\0" + box(b"hdlr", bytes(8) + b"mdirappl" + bytes(9)) + box(b"ilst", box(b"\xa9cmt", data))
    )
    moov = box(b"moov", box(b"mvhd", bytes(100)) + box(b"trak", bytes(600)) + box(b"udta", meta))
    return box(b"ftyp", b"isom\0\0\2\0isomiso2avc1mp41") + box(b"mdat", bytes(4096)) + moov


def make_outputs(folder: Path, count: int) -> int:
    """``count`` outputs; returns their total size."""
    subfolders = [folder] + [folder / f"2026-01-{day:02d}" for day in range(1, 11)]
    for sub in subfolders:
        sub.mkdir(parents=True, exist_ok=True)
    total = 0
    for index in range(count):
        data = png(metadata(index)) if index % 2 else mp4(metadata(index))
        (subfolders[index % len(subfolders)] / f"{index:06d}.{'png' if index % 2 else 'mp4'}").write_bytes(data)
        total += len(data)
    return total


def age_folders(folder: Path) -> None:
    # As for outputs not written in the last seconds: the scanner leaves a 2 s margin for coarse timestamps.
    hour_ago = time.time_ns() - 3600 * 10**9
    for path, _dirs, _files in os.walk(folder):
        os.utime(path, ns=(hour_ago, hour_ago))


def walk_and_stat(folder: Path) -> int:
    count = 0
    for path, _dirs, files in os.walk(folder):
        for name in files:
            os.stat(os.path.join(path, name))
            count += 1
    return count


def timed(function, *args):  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    value = function(*args)
    return time.perf_counter() - start, value


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    scanner = OutputScanner(settle_seconds=0)  # the outputs were just written
    with tempfile.TemporaryDirectory(prefix="wangpd-bench-usage-") as tmp:
        outputs = Path(tmp) / "outputs"
        size = make_outputs(outputs, args.files)
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

        first, state = [], {}
        for _ in range(args.runs):
            elapsed, result = timed(scanner.scan, [outputs], "metadata", {})
            assert result.files_read == args.files and result.unreadable == 0, result
            assert sorted(result.used) == sorted(MODEL_TYPES), result.used
            first.append(elapsed)
            state = result.state
        age_folders(outputs)
        idle = []
        for _ in range(args.runs):
            elapsed, result = timed(scanner.scan, [outputs], "metadata", state)
            assert (result.files_read, result.dirs_listed) == (0, 0), result
            idle.append(elapsed)
            state = result.state
        one_new = []
        for run in range(args.runs):
            (outputs / "2026-01-05" / f"new_{run}.png").write_bytes(png(metadata(run)))
            elapsed, result = timed(scanner.scan, [outputs], "metadata", state)
            assert (result.files_read, result.dirs_listed) == (1, 1), result
            one_new.append(elapsed)
            state = result.state
            age_folders(outputs)
        walk = [timed(walk_and_stat, outputs)[0] for _ in range(args.runs)]
        rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        state_bytes = len(json.dumps(state))

    print(
        f"outputs: {args.files} ({args.files // 2} MP4 + {args.files - args.files // 2} PNG, {size / 1e6:.1f} MB) in "
        f"11 folders; runs: {args.runs}; Python {sys.version.split()[0]}; state {state_bytes} bytes of JSON"
    )
    print()
    print("| what | median | best | files/s |")
    print("|---|---:|---:|---:|")
    rows = [
        ("first scan (read every output)", first, args.files),
        ("rescan, nothing new", idle, None),
        ("rescan, one new output", one_new, None),
        ("reference: os.walk + stat of every file", walk, args.files),
    ]
    for label, times, files in rows:
        rate = f"{files / statistics.median(times):,.0f}" if files else "-"
        print(f"| {label} | {statistics.median(times) * 1000:.1f} ms | {min(times) * 1000:.1f} ms | {rate} |")
    print()
    print(f"peak RSS: {rss_before / 1024:.1f} MB after generating, {rss_after / 1024:.1f} MB after all scans")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
