"""`wangpctl service install` (dry run and into a scratch root, then systemd-analyze verify) and shell completion."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

BIN = Path(sys.executable).parent
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")


def _ctl(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k != "WANGPCTL_SOCKET"}
    return subprocess.run(
        [sys.executable, "-m", "wangpctl", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={**base, **(env or {})},
    )


def _exec_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(("ExecStart=", "ExecReload=", "ReadWritePaths="))]


def test_dry_run_writes_nothing_and_says_what_and_where(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(f"wan2gp_directory: {tmp_path / 'Wan2GP'}  # comment\n")
    result = _ctl("service", "install", "--system", "--dry-run", "--config", str(config), "--root", str(tmp_path / "r"))
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "r").exists()
    out = result.stdout
    unit = tmp_path / "r" / "etc" / "systemd" / "system" / "wangpd.service"
    assert f"would write (new): {unit}" in out
    assert f"    ExecStart={BIN / 'wangpd'} run --config {config}" in out
    assert f"    ExecReload={BIN / 'wangpctl'} reload" in out
    assert f"    ReadWritePaths=-{tmp_path / 'Wan2GP'}" in out
    assert "then you would run:" in out and "systemctl enable --now wangpd.socket wangpd.service" in out
    assert "systemd-sysusers" in out


def test_install_user_units_under_a_root_and_verify_them(tmp_path: Path) -> None:
    root = tmp_path / "root"
    home = Path.home()
    env = {"XDG_CONFIG_HOME": str(home / ".config")}
    result = _ctl("service", "install", "--user", "--root", str(root), "--json", env=env)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["scope"] == "user" and not data["dry_run"]
    unit_dir = root / (home / ".config").relative_to("/") / "systemd" / "user"
    service = (unit_dir / "wangpd.service").read_text()
    assert _exec_lines(service) == [f"ExecStart={BIN / 'wangpd'} run", f"ExecReload={BIN / 'wangpctl'} reload"]
    # Every other line is the shipped one.
    shipped = (ROOT / "systemd" / "user" / "wangpd.service").read_text().splitlines()
    written = service.splitlines()[1:]  # after the "Written by" header
    assert [a for a, b in zip(shipped, written, strict=True) if a != b] == [
        line for line in shipped if line.startswith(("ExecStart=", "ExecReload="))
    ]
    assert (unit_dir / "wangpd.socket").read_text().splitlines()[1:] == (
        ROOT / "systemd" / "user" / "wangpd.socket"
    ).read_text().splitlines()
    assert any(c.startswith("loginctl enable-linger") for c in data["commands"])
    # Running it again changes nothing.
    again = json.loads(_ctl("service", "install", "--user", "--root", str(root), "--json", env=env).stdout)
    assert {f["action"] for f in again["files"]} == {"unchanged"}

    if SYSTEMD_ANALYZE is None:
        pytest.skip("systemd-analyze is not installed")
    runtime = tmp_path / "xdg-runtime"
    runtime.mkdir(mode=0o700)
    verify = subprocess.run(
        [SYSTEMD_ANALYZE, "--user", "verify", str(unit_dir / "wangpd.service"), str(unit_dir / "wangpd.socket")],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "XDG_RUNTIME_DIR": str(runtime)},
    )
    assert verify.returncode == 0 and not verify.stdout.strip() and not verify.stderr.strip(), verify.stderr


def test_install_system_units_under_a_root_and_verify_them(tmp_path: Path) -> None:
    root = tmp_path / "root"
    config = tmp_path / "etc-wangpd" / "config.yaml"
    config.parent.mkdir()
    config.write_text("wan2gp_directory: '/srv/my wan2gp'\n")
    result = _ctl("service", "install", "--system", "--config", str(config), "--root", str(root))
    assert result.returncode == 0, result.stderr
    system = root / "etc" / "systemd" / "system"
    service = (system / "wangpd.service").read_text()
    assert _exec_lines(service) == [
        f"ExecStart={BIN / 'wangpd'} run --config {config}",
        f"ExecReload={BIN / 'wangpctl'} reload",
        'ReadWritePaths=-"/srv/my wan2gp"',
    ]
    assert (root / "etc" / "sysusers.d" / "wangpd.conf").read_text() == (
        ROOT / "systemd" / "sysusers.d" / "wangpd.conf"
    ).read_text()
    assert (root / "etc" / "tmpfiles.d" / "wangpd.conf").is_file()
    assert oct((system / "wangpd.service").stat().st_mode & 0o777) == "0o644"
    if str(BIN).startswith(("/home", "/root")):
        assert "ProtectHome=yes" in result.stdout  # warned: the sandbox hides this venv

    if SYSTEMD_ANALYZE is None:
        pytest.skip("systemd-analyze is not installed")
    verify = subprocess.run(
        [SYSTEMD_ANALYZE, "verify", str(system / "wangpd.service"), str(system / "wangpd.socket")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert verify.returncode == 0 and not verify.stdout.strip() and not verify.stderr.strip(), verify.stderr


def test_completion_scripts_and_click_mechanism() -> None:
    for shell, marker in (("bash", "_wangpctl_completion"), ("zsh", "#compdef wangpctl"), ("fish", "complete")):
        result = _ctl("completion", shell)
        assert result.returncode == 0 and marker in result.stdout and "_WANGPCTL_COMPLETE" in result.stdout
    assert _ctl("completion", "tcsh").returncode == 2
    source = subprocess.run(
        [str(BIN / "wangpctl")],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "_WANGPCTL_COMPLETE": "bash_source"},
    )
    assert "_wangpctl_completion" in source.stdout
    words = subprocess.run(
        [str(BIN / "wangpctl")],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "_WANGPCTL_COMPLETE": "bash_complete", "COMP_WORDS": "wangpctl fo", "COMP_CWORD": "1"},
    )
    assert words.stdout.split() == ["plain,follow"]


def test_job_ids_complete_from_the_daemon(daemon_factory) -> None:
    daemon = daemon_factory(paused=True).start()
    for name in ("a", "b"):
        daemon.ctl("add", f"https://huggingface.co/Org/Repo/resolve/main/{name}.safetensors")
    words = subprocess.run(
        [str(BIN / "wangpctl"), "--socket", str(daemon.socket)],
        capture_output=True,
        text=True,
        timeout=30,
        env={
            **os.environ,
            "_WANGPCTL_COMPLETE": "bash_complete",
            "COMP_WORDS": f"wangpctl --socket {daemon.socket} cancel ",
            "COMP_CWORD": "4",
        },
    )
    assert words.stdout.split() == ["plain,1", "plain,2"]


def test_help_documents_exit_codes_and_json() -> None:
    text = _ctl("--help").stdout
    for line in ("0  ok", "1  the daemon answered with an error", "2  usage error", "3  no daemon can be reached"):
        assert line in text
    assert "docs/json-schema.md" in text and "wangpctl completion bash" in text
