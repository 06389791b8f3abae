"""Issue 15, items 7, 10, 12: two files of one repo finishing together, adding a downloaded file again, and a queue
database reached through a symlink."""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any

import yaml

from conftest import DaemonProcess, wait_for, write_config
from wangpd.hfcache import CachePaths, HFCache

URL = "https://huggingface.co/Org/Repo/resolve/main/again.safetensors"


def test_refs_and_snapshot_links_written_by_many_writers_at_once(tmp_path: Path) -> None:
    # Each commit of a repo file writes refs/main and a snapshot link; two jobs of one repo finishing together used
    # one fixed temp name (refs/.main.wangpd-tmp) and one of them failed. 8 writers x 100 commits each, at once.
    cache = HFCache(tmp_path / "hub")
    repo_dir = cache.repo_dir("Org/Repo")
    blob = repo_dir / "blobs" / ("a" * 64)
    blob.parent.mkdir(parents=True)
    blob.write_bytes(b"x")
    errors: list[BaseException] = []

    def writer(index: int) -> None:
        for round_number in range(100):
            commit = f"{(index * 100 + round_number) % 7:040x}"
            paths = CachePaths(
                repo_dir,
                blob,
                blob.with_name(blob.name + ".incomplete"),
                repo_dir / "snapshots" / commit / f"f{index}.bin",
                repo_dir / "refs" / "main",
            )
            try:
                cache._link_snapshot(paths)
                cache._write_ref(paths)
            except BaseException as exc:
                errors.append(exc)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors[:3]
    assert len((repo_dir / "refs" / "main").read_text()) == 40
    assert not [p for p in repo_dir.rglob("*") if p.name.endswith(".wangpd-tmp")], "temp names left behind"


def test_adding_a_downloaded_file_again_is_accepted(daemon_factory: Any, fake_hub: Any, wan2gp: Path) -> None:
    fake_hub.add_file("Org/Repo", "again.safetensors", size=5000, seed=9)
    daemon: DaemonProcess = daemon_factory(hub={"endpoint": fake_hub.endpoint}).start()
    first = daemon.ctl_json("add", URL)["files"][0]
    wait_for(lambda: daemon.ctl_json("job", "show", str(first["job"]["id"]))["state"] == "complete", what="complete")
    assert (wan2gp / "ckpts" / "again.safetensors").is_symlink()
    again = daemon.ctl_json("add", URL)["files"][0]  # was: "target ... is outside the Wan2GP folder"
    assert not again["created"] and again["job"]["state"] == "complete"
    daemon.ctl("clear", "complete")
    after_clear = daemon.ctl_json("add", URL)["files"][0]
    assert after_clear["created"]
    done = wait_for(
        lambda: (j := daemon.ctl_json("job", "show", str(after_clear["job"]["id"])))["state"] == "complete" and j,
        what="complete again",
    )
    assert done["source"] == "present", "the link already there is taken as it is, nothing fetched"


def test_a_database_reached_through_a_symlink_meets_the_other_daemons_lock(
    daemon: DaemonProcess, tmp_path: Path
) -> None:
    other = tmp_path / "other"
    other.mkdir()
    (other / "state").mkdir()
    os.symlink(tmp_path / "state" / "hfcache.db", other / "state" / "shared.db")
    sock_dir = Path(tempfile.mkdtemp(prefix="wp", dir="/tmp"))
    second: DaemonProcess | None = None
    try:
        config = write_config(
            other,
            Path(yaml.safe_load(daemon.config.read_text())["wan2gp_directory"]),
            sock_dir,
            daemon={"db_path": str(other / "state" / "shared.db")},
        )
        second = DaemonProcess(config, sock_dir / "wangpd.sock", other)
        second.start(wait_ready=False)
        assert second.proc is not None and second.proc.wait(20) == 1
        assert "another wangpd is using the queue database" in second.log()
        assert daemon.ctl_json("status")["state"] == "running"
    finally:
        if second is not None:
            second.close()  # a second daemon that did start (the lock failed to hold) must not outlive the test
        shutil.rmtree(sock_dir, ignore_errors=True)


def test_a_folder_where_a_file_goes_and_a_final_reason_that_is_final(
    daemon_factory: Any, fake_hub: Any, wan2gp: Path
) -> None:
    # Issue 15, items 23 and 29. A folder at a model file's path was "complete via present"; it now fails with the
    # reason before a byte is fetched and is left alone. A job that runs out of attempts ends with the last error
    # and how many attempts it took, not with "...; will resume".
    from fakehub import Fault

    fake_hub.add_file("Org/Repo", "blocked.safetensors", size=5000, seed=3)
    dropped = fake_hub.add_file("Org/Repo", "dropped.safetensors", size=400_000, seed=4)
    fake_hub.inject("Org/Repo", "dropped.safetensors", Fault(on="body", drop_after=1000, times=100))
    (wan2gp / "ckpts" / "blocked.safetensors").mkdir()
    daemon: DaemonProcess = daemon_factory(
        hub={"endpoint": fake_hub.endpoint}, download={"max_attempts": 3, "backoff_max": "0.2s"}
    ).start()
    blocked = daemon.ctl_json("add", URL.replace("again", "blocked"))["files"][0]["job"]["id"]
    gone = daemon.ctl_json("add", URL.replace("again", "dropped"))["files"][0]["job"]["id"]

    def final(job_id: int) -> dict[str, Any] | None:
        job = daemon.ctl_json("job", "show", str(job_id))
        return job if job["state"] == "failed" else None

    first = wait_for(lambda: final(blocked), timeout=30, what="the blocked job failed")
    assert "a folder is where Wan2GP looks for this file; left alone" in first["last_error"]
    assert first["bytes_done"] == 0 and (wan2gp / "ckpts" / "blocked.safetensors").is_dir()
    second = wait_for(lambda: final(gone), timeout=60, what="the dropped job failed")
    assert second["last_error"].endswith("gave up after 3 attempts"), second["last_error"]
    assert "will resume" not in second["last_error"]
    assert dropped.bytes_served < dropped.size


def test_a_hub_file_replaced_during_its_download_is_fetched_in_its_new_version(
    daemon_factory: Any, fake_hub: Any, wan2gp: Path, tmp_path: Path
) -> None:
    # Issue 15, item 19: the Hub's file changed mid-download; the job failed for good with "the definition expects
    # <sha>" (no definition is involved), retry and re-add failed the same way, and the stale part stayed.
    from fakehub import Fault

    old = fake_hub.add_file("Org/Repo", "moving.safetensors", size=2_000_000, seed=11)
    fake_hub.inject("Org/Repo", "moving.safetensors", Fault(on="body", drop_after=300_000))
    daemon: DaemonProcess = daemon_factory(
        hub={"endpoint": fake_hub.endpoint, "cache_dir": str(tmp_path / "hfcache")},
        download={"max_attempts": 4, "backoff_max": "0.5s", "bandwidth": "4MiB/s", "chunk_size": "64KiB"},
    ).start()
    job_id = daemon.ctl_json("add", URL.replace("again", "moving"))["files"][0]["job"]["id"]
    part = tmp_path / "hfcache" / "models--Org--Repo" / "blobs" / f"{old.sha256}.incomplete"
    wait_for(lambda: part.exists() and part.stat().st_size >= 300_000, timeout=20, what="a part of the old version")
    new = fake_hub.add_file("Org/Repo", "moving.safetensors", size=2_100_000, seed=12)  # re-uploaded upstream
    done = wait_for(
        lambda: (j := daemon.ctl_json("job", "show", str(job_id)))["state"] in ("complete", "failed") and j,
        timeout=60,
        what="the job ended",
    )
    assert done["state"] == "complete", done["last_error"]
    assert done["sha256"] == new.sha256 and done["size"] == new.size
    assert (wan2gp / "ckpts" / "moving.safetensors").read_bytes() == new.content()
    assert not part.exists(), "the old version's part is dropped"
    assert "changed on the Hub since it was queued" in daemon.log()


def test_a_read_only_ckpts_folder_is_named_as_the_problem(daemon_factory: Any, fake_hub: Any, wan2gp: Path) -> None:
    # Issue 15, item 24: "Permission denied" named the HF-cache file (the link's source), not the folder to fix.
    # chattr +i makes ckpts/ refuse new entries even to root (the suite runs as root in CI).
    import shutil
    import subprocess

    import pytest

    fake_hub.add_file("Org/Repo", "ro.safetensors", size=5000, seed=21)
    ckpts = wan2gp / "ckpts"
    if os.getuid() == 0:
        if not shutil.which("chattr") or subprocess.run(["chattr", "+i", str(ckpts)], check=False).returncode:
            pytest.skip("chattr +i is not possible here")
    else:
        ckpts.chmod(0o555)
    try:
        daemon: DaemonProcess = daemon_factory(hub={"endpoint": fake_hub.endpoint}).start()
        job = daemon.ctl_json("add", URL.replace("again", "ro"))["files"][0]["job"]["id"]
        failed = wait_for(
            lambda: (j := daemon.ctl_json("job", "show", str(job)))["state"] == "failed" and j,
            timeout=30,
            what="failed",
        )
        assert failed["last_error"].startswith(f"{ckpts}: permission denied"), failed["last_error"]
        assert "complete in the HF cache" in failed["last_error"]
    finally:
        if os.getuid() == 0:
            subprocess.run(["chattr", "-i", str(ckpts)], check=False)
        ckpts.chmod(0o755)


def test_temporaries_a_killed_wangpd_left_are_swept(tmp_path: Path) -> None:
    """A kill between writing a refs/ (or snapshot-link) temporary and renaming it leaves a hidden file that
    huggingface_hub's cache scan would list as a ref. The sweep at start removes those, and only those: not a
    live writer's, not a name wangpd does not make."""
    import subprocess
    import sys

    from wangpd.paths import unique_temp_name

    repo = tmp_path / "models--Org--Repo"
    (repo / "refs").mkdir(parents=True)
    (repo / "snapshots" / ("a" * 40) / "sub").mkdir(parents=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)  # exited: nobody writes under its name any more
    stale_ref = repo / "refs" / f".main.{dead_pid}-0123456789ab.wangpd-tmp"
    stale_link = repo / "snapshots" / ("a" * 40) / "sub" / f".x.bin.{dead_pid}-ba9876543210.wangpd-tmp"
    stale_ref.write_text("a" * 40)
    stale_link.symlink_to("../../../blobs/nothing")
    live = unique_temp_name(repo / "refs" / "main")  # this process: a writer at work
    live.write_text("b" * 40)
    theirs = repo / "refs" / ".main.tmp"  # not a name wangpd makes
    theirs.write_text("c")
    ref = repo / "refs" / "main"
    ref.write_text("a" * 40)

    removed = HFCache(tmp_path).sweep_own_temps()
    assert sorted(removed) == sorted([stale_ref, stale_link])
    assert not stale_ref.exists() and not os.path.lexists(stale_link)
    assert live.exists() and theirs.exists() and ref.read_text() == "a" * 40
    assert HFCache(tmp_path / "missing").sweep_own_temps() == []
