"""`wangpctl doctor` on a healthy setup, a broken one, without a daemon, and as a user outside the socket's group."""

from __future__ import annotations

import grp
import json
import os
import pwd
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from jsonschema_lite import load_schema, validate

import wangpctl.doctor  # noqa: F401  (imported before a fork that drops privileges; see below)
from conftest import FIXTURES, DaemonProcess
from wangpctl.cli import cli

TOKEN = "hf_doctor_secret_never_printed"


def _doctor(daemon: DaemonProcess, *args: str) -> tuple[int, str, dict]:
    human = daemon.ctl("doctor", *args, check=False)
    as_json = daemon.ctl("doctor", "--json", *args, check=False)
    assert human.returncode == as_json.returncode
    data = json.loads(as_json.stdout)
    validate(data, load_schema("doctor"))
    return human.returncode, human.stdout, data


def _levels(data: dict) -> dict[str, set[str]]:
    levels: dict[str, set[str]] = {}
    for item in data["checks"]:
        levels.setdefault(item["check"], set()).add(item["level"])
    return levels


def test_healthy_setup_is_ok(daemon_factory, tmp_path: Path) -> None:
    invokeai = tmp_path / "invokeai" / "databases"
    invokeai.mkdir(parents=True)
    # Only the .db: a clone has no -wal/-shm beside it (they are never committed), and SQLite makes them itself.
    shutil.copy(FIXTURES / "invokeai" / "invokeai-6.14-empty.db", invokeai / "invokeai.db")
    daemon = daemon_factory(
        env={"HF_TOKEN": TOKEN},
        watch={"enabled": True},
        invokeai_db=str(invokeai / "invokeai.db"),
        download={"free_space_reserve": "1MB"},
    ).start()
    code, text, data = _doctor(daemon)
    assert code == 0 and data["ok"] and data["source"] == "daemon"
    levels = _levels(data)
    for name in ("config", "wan2gp", "models", "handlers", "hf-cache", "hf-token", "invokeai", "disk", "inotify"):
        assert levels.get(name) == {"OK"}, (name, text)
    assert "socket" in levels and "watcher" in levels and "queue" in levels
    assert "a HuggingFace token is set" in text and TOKEN not in text and TOKEN not in json.dumps(data)
    assert "readable: 0 model(s) can be reused" in text
    assert "max_user_watches" in text
    assert text.splitlines()[-1].startswith("0 fail")
    assert all(line[:4] in ("OK  ", "WARN", "FAIL", "    ") for line in text.splitlines()[:-1])


def test_broken_setup_fails_with_the_fix(daemon_factory, wan2gp: Path, tmp_path: Path) -> None:
    (wan2gp / "defaults" / "broken.json").write_text('{"model": {"name": "Broken", "architecture": "t2v"')
    (wan2gp / "wgp_config.json").unlink()
    daemon = daemon_factory(
        env={"HF_TOKEN": "", "HF_HOME": str(tmp_path / "no-hf-home")},
        invokeai_db=str(tmp_path / "missing" / "invokeai.db"),
        download={"free_space_reserve": "900TB"},
    ).start()
    # The running config is fine; the file on disk is broken now (a reload would be refused).
    daemon.config.write_text(daemon.config.read_text() + "\nno_such_key: 1\n")
    code, text, data = _doctor(daemon)
    assert code == 1 and not data["ok"]
    by_check = {}
    for item in data["checks"]:
        by_check.setdefault(item["check"], []).append(item)
    assert by_check["config"][0]["level"] == "FAIL" and "no_such_key" in by_check["config"][0]["message"]
    assert any(c["level"] == "WARN" and "wgp_config.json" in c["message"] for c in by_check["wan2gp"])
    assert any(c["level"] == "WARN" and "broken" in c["message"] for c in by_check["models"])
    assert by_check["hf-token"][0]["level"] == "WARN" and "hub.token_file" in by_check["hf-token"][0]["fix"]
    assert by_check["invokeai"][0]["level"] == "WARN" and "not found" in by_check["invokeai"][0]["message"]
    assert by_check["disk"][0]["level"] == "FAIL" and "free_space_reserve" in by_check["disk"][0]["fix"]
    assert by_check["watcher"][0]["level"] == "WARN"
    # Human form: the level first, the fix on the next line.
    lines = text.splitlines()
    fail = next(i for i, line in enumerate(lines) if line.startswith("FAIL") and " disk " in line)
    assert lines[fail + 1].strip().startswith("fix: ")


def test_without_a_daemon_the_client_says_why_and_exits_3(short_dir: Path) -> None:
    socket_path = short_dir / "none.sock"
    command = [sys.executable, "-m", "wangpctl", "--socket", str(socket_path), "doctor"]
    env = {k: v for k, v in os.environ.items() if k != "WANGPCTL_SOCKET"}
    human = subprocess.run(command, capture_output=True, text=True, timeout=30, env=env)
    assert human.returncode == 3
    assert f"{socket_path}: no socket there" in human.stdout
    assert "FAIL daemon" in human.stdout and "wangpd is not running" in human.stdout
    as_json = subprocess.run([*command, "--json"], capture_output=True, text=True, timeout=30, env=env)
    assert as_json.returncode == 3
    data = json.loads(as_json.stdout)
    validate(data, load_schema("doctor"))
    assert data["source"] == "client" and not data["ok"]


def test_a_stale_socket_is_named(short_dir: Path) -> None:
    import socket

    path = short_dir / "stale.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.close()  # the file stays, nothing listens: what a killed daemon leaves
    result = CliRunner().invoke(cli, ["--socket", str(path), "doctor"])
    assert result.exit_code == 3
    assert "nothing listens" in result.output


def test_a_regular_file_at_the_socket_path_is_called_what_it_is(short_dir: Path) -> None:
    # Issue 15, item 26: a regular file refuses connections like a dead socket and was called "a socket file".
    path = short_dir / "plain.sock"
    path.write_text("not a socket")
    result = CliRunner().invoke(cli, ["--socket", str(path), "doctor"])
    assert result.exit_code == 3
    assert f"{path}: a regular file, not a socket" in result.output and "a socket file" not in result.output


def test_a_symlink_loop_for_ckpts_is_no_mkdir(daemon_factory, wan2gp: Path) -> None:
    # Issue 15, item 26: doctor told "mkdir ckpts" for a ckpts/ that is a symlink loop.
    import shutil

    shutil.rmtree(wan2gp / "ckpts")
    (wan2gp / "ckpts").symlink_to(wan2gp / "ckpts")
    daemon = daemon_factory().start()
    checks = json.loads(daemon.ctl("doctor", "--json", check=False).stdout)["checks"]
    found = [c for c in checks if c["check"] == "wan2gp" and "ckpts" in c["message"]]
    assert found and "leads nowhere" in found[0]["message"] and "mkdir" not in found[0]["fix"]


def _run_as(uid: int, gid: int, args: list[str]) -> tuple[int, str]:
    """Run the CLI in a forked child that has dropped root (the venv's interpreter lives under /root, which
    another user could not execute, so the child reuses this already-loaded interpreter)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
            result = CliRunner().invoke(cli, args)
            os.write(write_end, json.dumps([result.exit_code, result.output]).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    chunks = []
    while chunk := os.read(read_end, 65536):
        chunks.append(chunk)
    os.close(read_end)
    os.waitpid(pid, 0)
    code, output = json.loads(b"".join(chunks))
    return code, output


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")
def test_a_user_outside_the_socket_group_is_told_to_join_it(daemon_factory, short_dir: Path) -> None:
    nobody = pwd.getpwnam("nobody")
    group = next(g for g in ("users", "staff", "adm") if _group_exists(g) and nobody.pw_name not in _members(g))
    os.chmod(short_dir, 0o755)  # only the daemon's folder below it keeps others out
    daemon = daemon_factory(daemon={"socket": str(short_dir / "run" / "wangpd.sock"), "socket_group": group})
    daemon.socket = short_dir / "run" / "wangpd.sock"
    daemon.start()
    assert daemon.ctl("doctor").returncode == 0  # root: fine
    code, output = _run_as(nobody.pw_uid, nobody.pw_gid, ["--socket", str(daemon.socket), "doctor"])
    assert code == 3, output
    assert f"not in group {group}" in output
    assert f"sudo usermod -aG {group} {nobody.pw_name}" in output


def test_a_socket_owned_by_group_root_is_no_group_to_join(daemon_factory, short_dir: Path) -> None:
    # Issue 15, item 26: without daemon.socket_group the folder is root's group, and doctor said `usermod -aG root`.
    nobody = pwd.getpwnam("nobody")
    os.chmod(short_dir, 0o755)
    daemon = daemon_factory(daemon={"socket": str(short_dir / "run" / "wangpd.sock")})
    daemon.socket = short_dir / "run" / "wangpd.sock"
    daemon.start()
    code, output = _run_as(nobody.pw_uid, nobody.pw_gid, ["--socket", str(daemon.socket), "doctor"])
    assert code == 3, output
    assert "belongs to group root" in output and "daemon.socket_group" in output
    assert "usermod -aG root" not in output


def _group_exists(name: str) -> bool:
    try:
        grp.getgrnam(name)
    except KeyError:
        return False
    return True


def _members(name: str) -> list[str]:
    return grp.getgrnam(name).gr_mem


def test_the_wan2gp_plugin_is_reported_installed_and_enabled(daemon_factory, wan2gp: Path) -> None:
    (wan2gp / "wgp.py").write_text("# Wan2GP\n")
    daemon = daemon_factory().start()
    _code, _text, data = _doctor(daemon)
    [plugin] = [c for c in data["checks"] if c["check"] == "plugin"]
    assert plugin["level"] == "OK" and plugin["message"].startswith("not installed")

    installed = json.loads(daemon.ctl("wan2gp", "install-plugin", "--json").stdout)
    assert installed["enabled"] and Path(installed["plugin_dir"]).is_dir()
    assert "wan2gp-wangpd" in json.loads((wan2gp / "wgp_config.json").read_text())["enabled_plugins"]
    daemon.ctl("rescan")  # the daemon re-reads wgp_config.json (the watcher is off in this test)
    _code, _text, data = _doctor(daemon)
    [plugin] = [c for c in data["checks"] if c["check"] == "plugin"]
    assert (plugin["level"], plugin["message"].split(";")[0]) == ("OK", f"installed and enabled in {wan2gp.resolve()}")

    # Installed but taken out of enabled_plugins (by hand, or by a Wan2GP that rewrote its config): a warning.
    config = json.loads((wan2gp / "wgp_config.json").read_text())
    config["enabled_plugins"] = []
    (wan2gp / "wgp_config.json").write_text(json.dumps(config))
    daemon.ctl("rescan")
    _code, _text, data = _doctor(daemon)
    [plugin] = [c for c in data["checks"] if c["check"] == "plugin"]
    assert plugin["level"] == "WARN" and plugin["fix"] == "wangpctl wan2gp install-plugin"
    removed = json.loads(daemon.ctl("wan2gp", "uninstall-plugin", "--json").stdout)
    assert removed["removed"] and not Path(removed["plugin_dir"]).exists()
