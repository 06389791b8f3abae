"""wangpctl: thin, fast, every command with --json, documented exit codes."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, DaemonProcess

HEAVY = ("aiohttp", "huggingface_hub", "watchfiles", "sqlite3", "yaml", "sdnotify")


def test_wangpctl_imports_nothing_heavy() -> None:
    code = "import sys; import wangpctl.cli, wangpctl.client; print(' '.join(sorted(sys.modules)))"
    modules = set(
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=30
        ).stdout.split()
    )
    for heavy in HEAVY:
        assert heavy not in modules, f"wangpctl imports {heavy}"
    assert not [m for m in modules if m.startswith("wangpd.") and m != "wangpd.protocol"]


def test_wangpctl_source_imports_only_the_protocol_from_the_daemon() -> None:
    for path in (ROOT / "wangpctl").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("wangpd"):
                assert node.module == "wangpd" and [a.name for a in node.names] == ["protocol"], path
            if isinstance(node, ast.Import):
                assert not any(a.name.startswith("wangpd") for a in node.names), path


def test_protocol_is_stdlib_only() -> None:
    tree = ast.parse((ROOT / "wangpd" / "protocol.py").read_text())
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert imported <= {"__future__", "os", "pathlib"}


def test_usage_error_exits_2(daemon: DaemonProcess) -> None:
    assert daemon.ctl("clear", "sometimes", check=False).returncode == 2
    assert daemon.ctl("no-such-command", check=False).returncode == 2
    assert daemon.ctl("job", "priority", "1", "sideways", check=False).returncode == 2


def test_daemon_error_exits_1_with_one_line(daemon: DaemonProcess) -> None:
    result = daemon.ctl("retry", "999", check=False)
    assert result.returncode == 1
    assert result.stderr.strip() == "wangpctl: no job 999 (see `wangpctl queue`)"
    as_json = daemon.ctl("retry", "999", "--json", check=False)
    assert as_json.returncode == 1 and json.loads(as_json.stdout)["error"]["code"] == -32001


def test_seed_workflow_add_queue_pause_clear(daemon_factory) -> None:
    daemon = daemon_factory(paused=True).start()
    url = "https://huggingface.co/DeepBeepMeep/Wan2.1/resolve/main/Wan2.1_VAE.safetensors"
    added = daemon.ctl_json("add", url)
    job_id = str(added["files"][0]["job"]["id"])
    assert added["files"][0]["created"] is True
    table = daemon.ctl("queue").stdout
    assert "Wan2.1_VAE.safetensors" in table and "queued" in table
    assert daemon.ctl_json("pause", job_id)["state"] == "paused"
    assert daemon.ctl_json("resume", job_id)["state"] == "queued"
    assert daemon.ctl_json("job", "priority", job_id, "top")["priority"] == 1
    assert daemon.ctl_json("cancel", job_id)["state"] == "cancelled"
    assert daemon.ctl_json("queue", "--state", "cancelled")["total"] == 1
    assert daemon.ctl_json("clear", "failed")["removed"] == 1
    assert daemon.ctl_json("queue")["total"] == 0
    status = daemon.ctl("status").stdout
    assert "pending 0" in status and "downloading 0" in status


@pytest.mark.parametrize(
    "args",
    [["status"], ["version"], ["queue"], ["limit"], ["clear", "all"], ["pause"], ["resume"], ["reload"]],
)
def test_every_command_speaks_json(daemon: DaemonProcess, args: list[str]) -> None:
    data = json.loads(daemon.ctl(*args, "--json").stdout)
    assert isinstance(data, dict) and data


def test_limit_round_trip(daemon: DaemonProcess) -> None:
    assert daemon.ctl_json("limit", "50MiB/s")["limit"] == 50 * 1024 * 1024
    assert "limit 50.0 MiB/s (manual)" in daemon.ctl("limit").stdout
    assert daemon.ctl_json("limit", "off")["limit"] == 0
    assert daemon.ctl_json("limit", "default")["source"] == "config"


def test_help_lists_the_seed_mapping() -> None:
    result = subprocess.run([sys.executable, "-m", "wangpctl", "--help"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0
    assert "hfqueue.py --status" in result.stdout and "wangpctl clear" in result.stdout


def test_socket_from_environment(daemon: DaemonProcess) -> None:
    env = {"PATH": "/usr/bin:/bin", "WANGPCTL_SOCKET": str(daemon.socket), "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "wangpctl", "status", "--json"],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
        cwd=str(Path("/")),
    )
    assert result.returncode == 0 and json.loads(result.stdout)["state"] == "running"


def test_the_client_formats_bytes_and_rates_as_the_daemon_does() -> None:
    # wangpctl/fmt.py copies wangpd/units.py's two formatters on purpose (the client imports nothing of the
    # daemon but protocol.py); this keeps the copies saying the same thing for every magnitude.
    from wangpctl import fmt
    from wangpd.units import format_bytes, format_rate

    for count in (None, 0, 1, 1023, 1024, 1536, 10**6, 2**30 - 1, 2**30, 5 * 2**40, 3 * 2**50, -2048):
        assert fmt.bytes_(count) == format_bytes(count), count
    for value in (0, 1, 20 * 2**20, 400 * 10**6 / 8):
        assert fmt.rate(value) == format_rate(value), value


def test_a_daemon_that_accepts_and_never_answers_exits_3_in_one_line(tmp_path: Path) -> None:
    # Issue 15, item 13: every command printed a traceback after 30 s with exit 1, and follow waited forever.
    import socket as socketlib
    import subprocess
    import sys
    import tempfile
    import time

    folder = Path(tempfile.mkdtemp(prefix="wp", dir="/tmp"))
    path = folder / "hung.sock"
    server = socketlib.socket(socketlib.AF_UNIX)
    server.bind(str(path))
    server.listen(16)  # accepted by the kernel, never read, never answered
    try:
        for args in (["status"], ["queue"], ["--json", "models"], ["follow"]):
            start = time.monotonic()
            result = subprocess.run(
                [sys.executable, "-m", "wangpctl", "--socket", str(path), "--timeout", "1", *args],
                capture_output=True,
                text=True,
                timeout=30,
                env={k: v for k, v in __import__("os").environ.items() if k != "WANGPCTL_SOCKET"},
            )
            assert result.returncode == 3, (args, result.stderr)
            assert result.stderr.count("\n") == 1 and "did not answer within 1 s" in result.stderr, result.stderr
            assert time.monotonic() - start < 10
        fast = subprocess.run(
            [sys.executable, "-m", "wangpctl", "status", "--socket", str(path)],
            capture_output=True,
            text=True,
            timeout=30,
            env={"WANGPCTL_TIMEOUT": "1", "PATH": "/usr/bin:/bin"},
        )
        assert fast.returncode == 3 and "did not answer within 1 s" in fast.stderr
    finally:
        server.close()
        import shutil

        shutil.rmtree(folder, ignore_errors=True)


def test_status_piped_into_a_reader_that_stops_early_is_quiet(daemon: DaemonProcess) -> None:
    import subprocess

    result = subprocess.run(
        f"{sys.executable} -m wangpctl --socket {daemon.socket} status | head -1; "
        f"{sys.executable} -m wangpctl --socket {daemon.socket} queue | head -0",
        shell=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "Traceback" not in result.stderr and "BrokenPipe" not in result.stderr, result.stderr
