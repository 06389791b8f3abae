"""The daemon as systemd and admins see it: a real process, a real NOTIFY_SOCKET, signals, sockets."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT, DaemonProcess, call_as, wait_for, write_config


def rpc_curl(sock: Path, body: str) -> tuple[int, str]:
    result = subprocess.run(
        ["curl", "-s", "-o", "-", "-w", "\n%{http_code}", "--unix-socket", str(sock), "-d", body, "http://wangpd/rpc"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    text, _, code = result.stdout.rpartition("\n")
    return int(code), text


def test_ready_status_stopping_in_order_and_sigterm_exits_zero(daemon_factory) -> None:
    daemon = daemon_factory(env={"WATCHDOG_USEC": "400000"})
    started = time.monotonic()
    daemon.start()
    # READY only once the socket answers: a client may connect the moment READY arrives.
    assert daemon.ctl_json("status")["state"] == "running"
    daemon.notify.wait_for("STATUS=", timeout=5, after=1)
    daemon.notify.wait_for("WATCHDOG=1", timeout=5)
    count_before = len(daemon.notify.drain())
    time.sleep(1.0)
    pings = sum("WATCHDOG=1" in m for m in daemon.notify.drain()[count_before:])
    assert 3 <= pings <= 8, f"expected a ping every 0.2 s, got {pings} in 1 s"
    stop_at = time.monotonic()
    daemon.signal(signal.SIGTERM)
    assert daemon.proc.wait(10) == 0
    assert time.monotonic() - stop_at < 10
    messages = daemon.notify.drain()
    firsts = {key: next(i for i, m in enumerate(messages) if key in m) for key in ("READY=1", "STOPPING=1")}
    assert firsts["READY=1"] < firsts["STOPPING=1"]
    assert messages.index(next(m for m in messages if m.startswith("STATUS="))) > firsts["READY=1"]
    assert not daemon.socket.exists(), "socket removed on clean exit"
    assert time.monotonic() - started < 30


def test_status_line_is_ascii_and_says_counts(daemon: DaemonProcess) -> None:
    status = daemon.notify.wait_for("STATUS=", after=1)
    assert status.isascii()
    assert "queued" in status and "limit unlimited" in status


def test_socket_and_directory_modes(daemon: DaemonProcess) -> None:
    assert stat.S_IMODE(daemon.socket.stat().st_mode) == 0o660
    assert stat.S_ISSOCK(daemon.socket.stat().st_mode)


def test_second_daemon_refuses_and_first_keeps_serving(daemon: DaemonProcess, tmp_path: Path) -> None:
    second = DaemonProcess(daemon.config, daemon.socket, tmp_path)
    try:
        second.start(wait_ready=False)
        assert second.proc.wait(20) == 1
        assert "another wangpd" in second.log()
        assert daemon.ctl_json("status")["state"] == "running"
    finally:
        second.close()  # should it have started after all, it must not outlive the test


def test_stale_socket_is_replaced(daemon_factory) -> None:
    daemon = daemon_factory()
    daemon.start()
    daemon.kill()  # SIGKILL leaves the socket file behind
    assert daemon.socket.exists()
    daemon.start()
    assert daemon.ctl_json("status")["state"] == "running"
    assert "stale socket" in daemon.log()


def test_restart_recovers_downloading_rows(daemon_factory, tmp_path: Path) -> None:
    daemon = daemon_factory(paused=True)
    daemon.start()
    added = daemon.ctl_json("add", "https://huggingface.co/Org/Repo/resolve/main/big.safetensors")
    job_id = added["files"][0]["job"]["id"]
    daemon.kill()
    db = sqlite3.connect(tmp_path / "state" / "hfcache.db")
    db.execute("UPDATE download_queue SET state='downloading', bytes_done=777 WHERE id=?", (job_id,))
    db.commit()
    db.close()
    daemon.start()
    job = daemon.ctl_json("job", "show", str(job_id))
    assert job["state"] == "queued" and job["bytes_done"] == 777
    assert f"job {job_id} (big.safetensors) was downloading" in daemon.log()


def test_sighup_reload_sends_reloading_then_ready_and_keeps_manual_limit(daemon_factory) -> None:
    daemon = daemon_factory()
    daemon.start()
    daemon.ctl("limit", "7MB/s")
    text = daemon.config.read_text().replace("status_interval: 0.2s", "status_interval: 0.3s")
    daemon.config.write_text(text)
    mark = len(daemon.notify.drain())
    daemon.signal(signal.SIGHUP)
    reloading = daemon.notify.wait_for("RELOADING=1", after=mark)
    assert "MONOTONIC_USEC=" in reloading
    messages = daemon.notify.messages
    ready_after = [i for i, m in enumerate(messages) if "READY=1" in m and i > messages.index(reloading)]
    assert ready_after or daemon.notify.wait_for("READY=1", after=messages.index(reloading) + 1)
    wait_for(lambda: "daemon.status_interval" in daemon.log(), what="reload logged")
    assert daemon.ctl_json("limit")["limit"] == 7_000_000


def test_reload_rpc_refuses_a_bad_config_and_keeps_running(daemon: DaemonProcess) -> None:
    daemon.config.write_text(daemon.config.read_text() + "\nbogus_key: 1\n")
    result = daemon.ctl("reload", check=False)
    assert result.returncode == 1
    assert "bogus_key: unknown key" in result.stderr and "running config is unchanged" in result.stderr
    assert daemon.ctl_json("status")["state"] == "running"


def test_runtime_pause_and_limit_survive_restart(daemon_factory) -> None:
    daemon = daemon_factory()
    daemon.start()
    daemon.ctl("pause")
    daemon.ctl("limit", "400Mbit/s")
    assert daemon.stop() == 0
    daemon.start()
    status = daemon.ctl_json("status")
    assert status["paused"] is True
    assert status["limit"]["limit"] == 50_000_000 and status["limit"]["source"] == "manual"


def test_curl_speaks_to_the_socket(daemon: DaemonProcess) -> None:
    code, body = rpc_curl(daemon.socket, '{"jsonrpc":"2.0","method":"version","id":"v"}')
    assert code == 200
    assert json.loads(body) == {"jsonrpc": "2.0", "result": {"version": "0.1.0", "protocol": 1}, "id": "v"}


def test_journal_stream_logs_without_timestamps(daemon_factory) -> None:
    daemon = daemon_factory(env={"JOURNAL_STREAM": "8:1234"})
    daemon.start()
    first = daemon.log().splitlines()[0]
    assert first.startswith("<6>wangpd"), first


@pytest.mark.skipif(shutil.which("systemd-socket-activate") is None, reason="systemd-socket-activate not installed")
def test_socket_activation_watchdog_reload_and_stop(tmp_path: Path, short_dir: Path, wan2gp: Path) -> None:
    """The life systemd gives the daemon: activated by the first connection on an inherited socket, watchdog pings
    at half of WATCHDOG_USEC, RELOADING then READY around a reload, STOPPING and exit 0 with nothing lost."""
    sock = short_dir / "activated.sock"
    config = write_config(tmp_path, wan2gp, short_dir / "unused")
    notify_dir = short_dir / "n"
    notify_dir.mkdir()
    daemon = DaemonProcess(config, sock, notify_dir, env={"WATCHDOG_USEC": "600000"})
    log = daemon.log_path.open("ab")
    daemon.proc = subprocess.Popen(
        [
            "systemd-socket-activate",
            "-l",
            str(sock),
            "-E",
            "NOTIFY_SOCKET",
            "-E",
            "PATH",
            "-E",
            "WATCHDOG_USEC",
            sys.executable,
            "-m",
            "wangpd",
            "run",
            "--config",
            str(config),
        ],
        env=daemon.env,
        stdout=log,
        stderr=log,
        cwd=str(ROOT),
    )
    log.close()
    try:
        wait_for(sock.exists, what="activation socket")
        # The first connection starts the daemon; it answers on the inherited socket.
        assert daemon.ctl_json("status")["listening"] == "socket-activated"
        daemon.wait_ready()
        assert not (short_dir / "unused" / "wangpd.sock").exists()
        added = daemon.ctl_json("add", "https://huggingface.co/Org/Repo/resolve/main/kept.safetensors")
        job_id = added["files"][0]["job"]["id"]

        # WATCHDOG_PID is not set by systemd-socket-activate; the daemon pings at 0.3 s.
        mark = len(daemon.notify.drain())
        time.sleep(1.5)
        pings = sum("WATCHDOG=1" in m for m in daemon.notify.drain()[mark:])
        assert 3 <= pings <= 7, f"expected a ping every 0.3 s, got {pings} in 1.5 s"

        mark = len(daemon.notify.drain())
        assert daemon.ctl_json("reload")["reloaded"] is True
        messages = daemon.notify.drain()[mark:]
        reloading = next(i for i, m in enumerate(messages) if "RELOADING=1" in m)
        assert any("READY=1" in m for m in messages[reloading + 1 :])

        mark = len(daemon.notify.drain())
        daemon.signal(signal.SIGTERM)
        assert daemon.proc.wait(10) == 0
        assert any("STOPPING=1" in m for m in daemon.notify.drain()[mark:])
    finally:
        daemon.close()
    db = sqlite3.connect(tmp_path / "state" / "hfcache.db")
    (state,) = db.execute("SELECT state FROM download_queue WHERE id=?", (job_id,)).fetchone()
    db.close()
    assert state in ("queued", "failed"), "the job outlived the stop"


def test_wangpctl_not_running_exit_3(short_dir: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "wangpctl", "--socket", str(short_dir / "none.sock"), "status"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 3
    assert "wangpd is not running" in result.stderr and str(short_dir / "none.sock") in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_other_user_can_read_but_not_change(daemon: DaemonProcess) -> None:
    if os.getuid() != 0:
        pytest.skip("needs root to act as another user")
    # Open the socket file to everyone for this test: the peer-credential check must still refuse changes.
    for path in [daemon.socket.parent, *daemon.socket.parent.parents]:
        if path == Path("/tmp") or path == Path("/"):
            break
        os.chmod(path, 0o755)
    os.chmod(daemon.socket, 0o666)
    read = call_as(65534, daemon.socket, "status")
    assert read.get("result", {}).get("state") == "running", read
    change = call_as(65534, daemon.socket, "pause")
    assert change["error"]["code"] == -32003 and "forbidden" in change["error"]["message"], change
    assert daemon.ctl_json("status")["paused"] is False


def test_a_queue_database_deleted_while_running_is_noticed_and_recreated(daemon_factory, tmp_path: Path) -> None:
    # Issue 15, item 20: `rm hfcache.db` while running went unnoticed (doctor happy); after a restart the queue and
    # the manual limit were gone. Now the status loop sees the file is not the one it opened, starts a new one
    # with what the process knows (paused, the manual limit) and re-plans; the warning says what was lost.
    daemon = daemon_factory(paused=True)
    daemon.start()
    daemon.ctl("limit", "7MB/s")
    db = tmp_path / "state" / "hfcache.db"
    for name in ("hfcache.db", "hfcache.db-wal", "hfcache.db-shm"):
        (tmp_path / "state" / name).unlink(missing_ok=True)
    wait_for(lambda: "was deleted or replaced while wangpd ran" in daemon.log(), timeout=10, what="noticed")
    assert db.exists()
    status = daemon.ctl_json("status")
    assert status["paused"] is True and status["limit"]["source"] == "manual"
    daemon.stop()
    daemon.start()  # what the new file holds survives a restart
    status = daemon.ctl_json("status")
    assert status["paused"] is True and status["limit"]["limit"] == 7_000_000
