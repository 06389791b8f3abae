"""Kill -9 at random moments, again and again: after each restart everything completes, nothing under the Wan2GP
folder is ever partial or wrong, and little is fetched twice."""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import DaemonProcess, wait_for

MiB = 1024 * 1024
KILLS = 30


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(4 * MiB):
            digest.update(chunk)
    return digest.hexdigest()


def check_wan2gp_folder(wan2gp: Path, expected: dict[Path, Any]) -> None:
    """Every file under the Wan2GP folder is either a complete expected file or was there before: no partial file
    under a name Wan2GP would load."""
    for path in wan2gp.rglob("*"):
        if path.is_dir() or path.suffix == ".json":
            continue
        assert path in expected, f"unexpected file under the Wan2GP folder: {path}"
        assert path.stat().st_size == expected[path].size, f"partial file under a Wan2GP name: {path}"
        assert sha256_of(path) == expected[path].sha256, f"corrupt file under a Wan2GP name: {path}"


@pytest.mark.slow
def test_kill_nine_loop(daemon_factory: Callable[..., DaemonProcess], fake_hub: Any, wan2gp: Path) -> None:
    rng = random.Random(20261125)  # repeatable kill points
    sizes = [96 * MiB, 64 * MiB, 48 * MiB, 32 * MiB]
    files = [
        fake_hub.add_file("Org/Big", f"part{i}.safetensors", size=size, seed=100 + i) for i, size in enumerate(sizes)
    ]
    total = sum(sizes)
    daemon = daemon_factory(
        hub={"endpoint": fake_hub.endpoint},
        download={"bandwidth": "60MiB/s", "concurrency": 2, "chunk_size": "256KiB"},
    )
    daemon.start()
    for fake in files:
        daemon.ctl("add", fake_hub.url("Org/Big", fake.path).replace(fake_hub.endpoint, "https://huggingface.co"))
    expected = {wan2gp / "ckpts" / fake.path: fake for fake in files}

    kill_log = []
    for round_number in range(KILLS):
        # Early kills hit start-up, metadata and re-hashing; later ones mid-body, hash, rename, link, store writes.
        delay = rng.choice([0.0, rng.uniform(0.01, 0.1), rng.uniform(0.1, 0.35)])
        time.sleep(delay)
        daemon.kill()
        kill_log.append(round(delay, 3))
        check_wan2gp_folder(wan2gp, expected)  # after every kill, not only at the end
        daemon.start()
        if round_number == KILLS - 1:
            break

    done = wait_for(
        lambda: (s := daemon.ctl_json("status"))["counts"]["complete"] == len(files) and s,
        timeout=120,
        interval=0.2,
        what="everything complete after the kills",
    )
    assert done["counts"]["failed"] == 0
    check_wan2gp_folder(wan2gp, expected)
    for target in expected:
        assert target.is_symlink(), "linked into place from the HF cache"
    assert not [p for p in wan2gp.rglob("*") if ".incomplete" in p.name or "wangpd-tmp" in p.name]
    refetched = fake_hub.bytes_served - total
    share = refetched / total
    print(
        f"kill -9 loop: {KILLS} kills at {kill_log}; {total / MiB:.0f} MiB in {len(files)} files; "
        f"re-fetched {refetched / MiB:.2f} MiB = {share:.2%} of the total, {refetched / KILLS / MiB:.2f} MiB per kill"
    )
    # Every restart resumes where the part file ends: after a file's first GET, each GET asks for a Range, and the
    # ranges only move forward (a restart from zero is what users of Wan2GP complained about).
    for fake in files:
        starts = [
            int(r.range.split("=")[1].split("-")[0]) if r.range else 0
            for r in fake_hub.requests
            if r.server == "cdn" and r.method == "GET" and fake.sha256 in r.path
        ]
        assert starts and starts == sorted(starts), f"{fake.path} went backwards: {starts}"
    # What a kill loses is what was in flight (socket buffers on both sides, one chunk in the writer): bounded by
    # about half a second of the limit per kill, never a whole file.
    assert refetched >= 0
    assert refetched / KILLS <= 30 * MiB, f"{refetched / KILLS / MiB:.1f} MiB lost per kill"


@pytest.mark.slow
def test_kill_nine_over_a_segmented_download(
    daemon_factory: Callable[..., DaemonProcess], fake_hub: Any, wan2gp: Path
) -> None:
    """One file over four connections, killed 12 times: each restart fetches only the gaps its ranges log names."""
    rng = random.Random(20261201)
    kills, connections, chunk = 12, 4, 256 * 1024
    fake = fake_hub.add_file("Org/Big", "segmented.safetensors", size=80 * MiB, seed=300)
    fake_hub.per_connection_rate = 12 * MiB  # a CDN that caps each connection: four of them are needed
    daemon = daemon_factory(
        hub={"endpoint": fake_hub.endpoint},
        download={
            "bandwidth": "40MiB/s",
            "chunk_size": "256KiB",
            "connections_per_file": connections,
            "segment_size": "8MiB",
        },
    )
    daemon.start()
    daemon.ctl("add", fake_hub.url("Org/Big", fake.path).replace(fake_hub.endpoint, "https://huggingface.co"))
    expected = {wan2gp / "ckpts" / fake.path: fake}
    job_id = str(daemon.ctl_json("queue")["jobs"][0]["id"])
    shown = wait_for(
        lambda: (j := daemon.ctl_json("job", "show", job_id)).get("segments") and j, timeout=20, what="segments shown"
    )
    assert 1 < len(shown["segments"]) <= connections
    assert "connection(s)" in daemon.ctl("job", "show", job_id).stdout
    for _ in range(kills):
        time.sleep(rng.uniform(0.05, 0.3))
        daemon.kill()
        check_wan2gp_folder(wan2gp, expected)
        daemon.start()
    wait_for(
        lambda: daemon.ctl_json("status")["counts"]["complete"] == 1,
        timeout=120,
        interval=0.2,
        what="the segmented file complete after the kills",
    )
    check_wan2gp_folder(wan2gp, expected)
    assert fake_hub.max_active >= connections
    refetched = fake.bytes_served - fake.size
    print(
        f"segmented kill -9: {kills} kills, re-fetched {refetched / MiB:.2f} MiB "
        f"({refetched / kills / MiB:.2f} per kill)"
    )
    # Lost per kill: what the connections had in flight (one chunk each unwritten, plus socket buffers).
    assert 0 <= refetched <= kills * connections * (chunk + 2 * MiB)
