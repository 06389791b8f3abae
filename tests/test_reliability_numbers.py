"""Issue 15, items 2, 18, 21 (and the bounds behind 14, 15): numbers from a client or a config file are checked
against their range before anything is stored, and a stored value that cannot be read back never stops the daemon."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from test_rpc import post, rpc

from conftest import DaemonProcess


def call(daemon: DaemonProcess, method: str, params: Any) -> dict[str, Any]:
    _, answer = post(daemon.socket, json.dumps(rpc(method, params)))
    return answer


@pytest.mark.parametrize(
    ("method", "params", "fragment"),
    [
        ("limit.set", {"rate": 10**400}, "out of range"),  # was stored, then every status call failed
        ("limit.set", {"rate": "9" * 400 + "MB/s"}, "finite"),
        ("limit.set", {"rate": "7bit/s"}, "below 1 B/s"),  # was "unlimited"
        ("limit.set", {"rate": "0.5B/s"}, "below 1 B/s"),
        ("limit.set", {"rate": 2**62}, "above"),
        ("limit.set", {"rate": "2TB/s"}, "above"),
        ("queue.list", {"offset": 2**70}, "out of range"),  # was "internal error: OverflowError"
        ("job.show", {"id": 2**64}, "out of range"),
        ("queue.add", {"repo": "Org/Repo", "path": "x.bin", "priority": 2**63 - 1}, "priority must be between"),
    ],
)
def test_out_of_range_numbers_are_refused_and_nothing_is_stored(
    daemon: DaemonProcess, method: str, params: Any, fragment: str
) -> None:
    answer = call(daemon, method, params)
    assert answer["error"]["code"] == -32602 and fragment in answer["error"]["message"], answer
    status = call(daemon, "status", {})["result"]
    assert status["limit"]["source"] == "config" and status["counts"]["queued"] == 0


def test_a_priority_at_the_bound_still_lets_top_work(daemon: DaemonProcess) -> None:
    first = call(daemon, "queue.add", {"repo": "Org/Repo", "path": "a.bin", "priority": 10**9})["result"]["job"]
    second = call(daemon, "queue.add", {"repo": "Org/Repo", "path": "b.bin"})["result"]["job"]
    refused = call(daemon, "job.priority", {"id": second["id"], "where": "top"})
    assert "priority must be between" in refused["error"]["message"]  # top would be 10**9 + 1: refused, not wrapped
    assert call(daemon, "job.priority", {"id": first["id"], "where": "bottom"})["result"]["priority"] == -1


def test_a_stored_limit_that_cannot_be_read_back_is_reset_with_a_warning(daemon_factory: Any, tmp_path: Path) -> None:
    daemon = daemon_factory().start()
    daemon.stop()
    with sqlite3.connect(tmp_path / "state" / "hfcache.db") as db:  # what the first release stored from limit.set
        db.execute("INSERT OR REPLACE INTO settings (key, value) VALUES ('manual_limit', ?)", (f"[{'9' * 400}, 1.0]",))
    daemon.start()
    status = daemon.ctl_json("status")
    assert status["state"] == "running" and status["limit"]["source"] == "config"
    assert "the stored manual bandwidth limit cannot be used" in daemon.log()
    daemon.stop()
    daemon.start()
    assert "cannot be used" not in daemon.log().split("listening on")[-1]  # reset once, not on every start


def _check_config(tmp_path: Path, settings: str) -> subprocess.CompletedProcess[str]:
    """`wangpd check-config` on a config with a Wan2GP folder and ``settings`` (YAML text) after it."""
    (tmp_path / "wan").mkdir()
    path = tmp_path / "config.yaml"
    path.write_text(f"wan2gp_directory: wan\n{settings}")
    return subprocess.run(
        [sys.executable, "-m", "wangpd", "check-config", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.mark.parametrize(
    ("section", "key", "value", "fragment"),
    [
        ("download", "stall_timeout", ".nan", "finite"),
        ("download", "bandwidth", ".inf", "finite"),
        ("download", "bandwidth", "9" * 400, "far too large"),
        ("download", "free_space_reserve", ".inf", "finite"),
        ("watch", "debounce", ".inf", "finite"),
        ("daemon", "shutdown_timeout", ".nan", "finite"),
        ("download", "bandwidth", "0.5", "below 1 B/s"),
    ],
)
def test_config_numbers_must_be_finite_and_bounded(
    tmp_path: Path, section: str, key: str, value: str, fragment: str
) -> None:
    result = _check_config(tmp_path, f"{section}:\n  {key}: {value}\n")
    assert result.returncode == 78, result
    assert result.stderr.count("\n") == 1 and f"{section}.{key}" in result.stderr and fragment in result.stderr


@pytest.mark.parametrize(
    ("section", "key", "value", "fragment"),
    [
        ("daemon", "status_interval", "1us", "bad duration"),
        ("daemon", "status_interval", "0.000001", "at least 0.05 s"),
        ("watch", "poll_interval", "0.001", "at least 0.05 s"),
        ("download", "stall_timeout", "0.01", "at least 0.5 s"),
        ("download", "segment_size", "512KiB", "at least 1.0 MiB"),
        ("daemon", "socket", "/tmp/" + "s" * 120 + ".sock", "a Unix socket path has 107 at most"),
    ],
)
def test_config_values_that_would_spin_or_cannot_work_are_refused(
    tmp_path: Path, section: str, key: str, value: str, fragment: str
) -> None:
    result = _check_config(tmp_path, f"{section}:\n  {key}: '{value}'\n")
    assert result.returncode == 78 and f"{section}.{key}" in result.stderr and fragment in result.stderr, result


@pytest.mark.parametrize("case", ["a file where the state directory goes", "a file where the socket folder goes"])
def test_a_state_or_socket_folder_that_cannot_be_used_is_one_line_and_exit_1(tmp_path: Path, case: str) -> None:
    import os

    (tmp_path / "wan").mkdir()
    state = tmp_path / "state"
    sock_parent = tmp_path / "run"
    if case == "a file where the state directory goes":  # as root, the closest to a read-only one
        state.write_text("a file")
        sock_parent.mkdir()
    else:
        sock_parent.write_text("a file")
    path = tmp_path / "config.yaml"
    path.write_text(f"wan2gp_directory: wan\ndaemon:\n  state_dir: {state}\n  socket: {sock_parent}/w.sock\n")
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "LISTEN_FDS", "LISTEN_PID")}
    result = subprocess.run(
        [sys.executable, "-m", "wangpd", "run", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )
    assert result.returncode == 1, result
    last = result.stderr.strip().splitlines()[-1]
    assert "Traceback" not in result.stderr and last.startswith("wangpd: ") and "cannot use the " in last, result.stderr
