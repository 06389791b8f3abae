"""Disk full, on a real small filesystem (tmpfs): the job fails as "disk full", nothing appears under the Wan2GP
name, the partial file is kept, and after space is freed a retry resumes from it."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import DaemonProcess, wait_for

MiB = 1024 * 1024


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    if os.getuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount_point)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_disk_full_mid_transfer_then_resume(
    daemon_factory: Callable[..., DaemonProcess], fake_hub: Any, wan2gp: Path, small_fs: Path
) -> None:
    fake = fake_hub.add_file("Org/Disk", "big.safetensors", size=5 * MiB, seed=900)
    filler = small_fs / "filler"
    filler.write_bytes(b"\0" * (2 * MiB))  # 6 MiB free: the pre-check for 5 MiB passes
    daemon = daemon_factory(
        hub={"endpoint": fake_hub.endpoint, "cache_dir": str(small_fs / "hub")},
        download={"bandwidth": "2MiB/s", "free_space_reserve": 0, "chunk_size": "64KiB", "max_attempts": 2},
    ).start()
    daemon.ctl("add", "https://huggingface.co/Org/Disk/resolve/main/big.safetensors")
    wait_for(lambda: daemon.ctl_json("job", "show", "1")["bytes_done"] > 512 * 1024, timeout=20, what="transfer")
    more = small_fs / "more"
    with more.open("wb") as handle:  # take (almost) all the rest of the space mid-transfer
        try:
            while True:
                handle.write(b"\0" * (256 * 1024))
        except OSError:
            pass
    job = wait_for(
        lambda: (j := daemon.ctl_json("job", "show", "1"))["state"] == "failed" and j, timeout=30, what="disk full"
    )
    assert "disk full" in job["last_error"], job["last_error"]
    target = wan2gp / "ckpts" / "big.safetensors"
    assert not target.exists() and not target.is_symlink()
    parts = list(small_fs.rglob("*.incomplete"))
    assert len(parts) == 1 and parts[0].stat().st_size > 0, "the part is kept for a resume"
    kept = parts[0].stat().st_size

    more.unlink()
    filler.unlink()
    served = fake_hub.bytes_served
    daemon.ctl("retry", "1")
    wait_for(lambda: daemon.ctl_json("job", "show", "1")["state"] == "complete", timeout=30, what="resumed")
    assert target.read_bytes() == fake.content()
    assert fake_hub.bytes_served - served <= fake.size - kept + 4 * MiB, "resumed, not restarted"


def test_free_space_reserve_is_checked_before_starting(
    daemon_factory: Callable[..., DaemonProcess], fake_hub: Any, wan2gp: Path, small_fs: Path
) -> None:
    fake_hub.add_file("Org/Disk", "huge.safetensors", size=6 * MiB, seed=901)
    daemon = daemon_factory(
        hub={"endpoint": fake_hub.endpoint, "cache_dir": str(small_fs / "hub")},
        download={"free_space_reserve": "4MiB", "max_attempts": 1},
    ).start()
    daemon.ctl("add", "https://huggingface.co/Org/Disk/resolve/main/huge.safetensors")
    job = wait_for(
        lambda: (j := daemon.ctl_json("job", "show", "1"))["state"] == "failed" and j,
        timeout=20,
        what="refused before starting",
    )
    assert "disk full" in job["last_error"]
    assert not list(small_fs.rglob("*.incomplete")) or all(
        p.stat().st_size == 0 for p in small_fs.rglob("*.incomplete")
    )
    assert fake_hub.bytes_served == 0


def test_the_queue_databases_disk_fills_and_empties_again(
    daemon_factory: Callable[..., DaemonProcess], fake_hub: Any, wan2gp: Path, small_fs: Path, tmp_path: Path
) -> None:
    # Issue 15, item 5: the state disk (not the HF cache) fills while two files download. Before: the jobs stayed
    # "downloading" with a frozen speed until a restart, pause/resume/limit answered "internal error" yet changed
    # memory, status said "running" while nothing moved, even after space was freed. Now: status and doctor say
    # "state disk full", a refused change changes nothing, the transfers finish, their ends are written once the
    # space is back, and new work starts again, without a restart.
    import json

    files = [fake_hub.add_file("Org/State", f"f{i}.safetensors", size=3 * MiB, seed=950 + i) for i in range(3)]
    daemon = daemon_factory(
        hub={"endpoint": fake_hub.endpoint, "cache_dir": str(tmp_path / "hub")},
        daemon={"state_dir": str(small_fs / "state"), "status_interval": "0.2s"},
        download={"bandwidth": "2MiB/s", "concurrency": 2, "chunk_size": "64KiB"},
    ).start()
    for fake in files:
        daemon.ctl("add", f"https://huggingface.co/Org/State/resolve/main/{fake.path}")
    wait_for(lambda: daemon.ctl_json("status")["counts"]["downloading"] == 2, timeout=20, what="two running")
    filler = small_fs / "filler"
    with filler.open("wb") as handle:
        try:
            while True:
                handle.write(b"\0" * (64 * 1024))
        except OSError:
            pass
    status = wait_for(lambda: (s := daemon.ctl_json("status"))["store_error"] and s, timeout=20, what="noticed")
    assert "state disk full" in status["store_error"]
    assert "STALLED" in daemon.ctl("status").stdout
    refused = daemon.ctl("--json", "pause", check=False)
    assert refused.returncode == 1 and "state disk full" in json.loads(refused.stdout)["error"]["message"]
    assert daemon.ctl_json("status")["paused"] is False, "a refused change changes nothing"
    doctor = json.loads(daemon.ctl("doctor", "--json", check=False).stdout)
    assert any(c["level"] == "FAIL" and "state disk full" in c["message"] for c in doctor["checks"])
    filler.unlink()
    done = wait_for(
        lambda: (s := daemon.ctl_json("status"))["counts"]["complete"] == 3 and s, timeout=60, what="all complete"
    )
    assert done["store_error"] is None and done["counts"]["downloading"] == 0
    for fake in files:
        assert (wan2gp / "ckpts" / fake.path).read_bytes() == fake.content()
    assert "can be written again" in daemon.log()
