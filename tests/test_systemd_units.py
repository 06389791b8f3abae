"""The systemd units in systemd/: verified by systemd's own tools, and checked against what the daemon expects.

What `systemd-analyze verify` (systemd 252) reports here, found by trying it:

* It exits 0 on warnings (unknown keys, bad values, ...) and only prints them, so every verify test fails on any
  output at all. ``test_verify_reports_problems`` proves that a planted mistake does produce output, so a silent
  verify means the units were really read and found clean.
* It fails (``Command /usr/local/bin/wangpd is not executable``) when an Exec*= binary does not exist. The units
  name the installed paths (/usr/local/bin, %h/.local/bin), which are not there in CI, so verify runs on copies
  whose Exec*= binaries point at executables that exist (this venv's console scripts, else ``true``). Only the
  binary path is changed: arguments, and every other line, are verified as shipped.
* It does not resolve User=/Group=/SocketGroup= (no output with the wangpd user absent), so no fake root with the
  users is needed for verify; the sysusers.d file is checked on its own with ``systemd-sysusers --root``.
* ``--user`` verify needs ``$XDG_RUNTIME_DIR`` (else "Failed to initialize manager"): a temporary one is used.
* A unit is passed as a file path; verify adds the file's directory to the unit search path, so the .socket finds
  its .service when both copies sit in one directory. ``security --offline=yes`` also takes a path.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from wangpd import protocol

ROOT = Path(__file__).resolve().parent.parent
SYSTEMD = ROOT / "systemd"
SYSTEM_UNITS = [SYSTEMD / "wangpd.service", SYSTEMD / "wangpd.socket"]
USER_UNITS = [SYSTEMD / "user" / "wangpd.service", SYSTEMD / "user" / "wangpd.socket"]
MAX_EXPOSURE = 1.5

SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed")


# --- helpers ------------------------------------------------------------------------------------------------------


def parse_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """A unit file as {section: {key: [values in order]}} (keys may repeat; comments and blank lines dropped)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"{path}: {line!r} outside a section"
        assert not line.endswith("\\"), f"{path}: continuation lines are not expected: {line!r}"
        key, sep, value = line.partition("=")
        assert sep, f"{path}: not KEY=VALUE: {line!r}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def one(unit: dict[str, dict[str, list[str]]], section: str, key: str) -> str:
    values = unit.get(section, {}).get(key)
    assert values, f"[{section}] {key}= is missing"
    assert len(values) == 1, f"[{section}] {key}= is set {len(values)} times: {values}"
    return values[0]


def stand_in(name: str) -> str:
    """An existing executable to stand in for an installed console script (``wangpd``, ``wangpctl``)."""
    candidate = Path(sys.prefix) / "bin" / name
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    true = shutil.which("true")
    assert true, "neither the venv's console scripts nor `true` found"
    return true


EXEC_LINE = re.compile(r"^(Exec[A-Za-z]+=)([-@:+!]*)(\S+)(.*)$")


def copy_for_verify(units: list[Path], into: Path) -> list[Path]:
    """Copy ``units`` into ``into`` with every Exec*= binary replaced by an existing one (nothing else changed)."""
    into.mkdir(parents=True, exist_ok=True)
    copies = []
    for unit in units:
        lines = []
        for line in unit.read_text().splitlines(keepends=True):
            match = EXEC_LINE.match(line.rstrip("\n"))
            if match:
                key, prefixes, binary, rest = match.groups()
                assert binary.startswith(("/", "%h/")), f"{unit.name}: {key} should name an absolute path: {binary}"
                line = f"{key}{prefixes}{stand_in(Path(binary).name)}{rest}\n"
            lines.append(line)
        copy = into / unit.name
        copy.write_text("".join(lines))
        copies.append(copy)
    return copies


def analyze(*args: str | Path, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    assert SYSTEMD_ANALYZE is not None
    return subprocess.run(
        [SYSTEMD_ANALYZE, *map(str, args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        errors="replace",
        timeout=60,
        check=False,
    )


def user_env(tmp_path: Path) -> dict[str, str]:
    runtime = tmp_path / "xdg-runtime"
    runtime.mkdir(mode=0o700)
    env = dict(os.environ)
    env["XDG_RUNTIME_DIR"] = str(runtime)
    env.setdefault("HOME", str(tmp_path))
    return env


def assert_quiet(result: subprocess.CompletedProcess[str], what: str) -> None:
    output = (result.stdout + result.stderr).strip()
    assert result.returncode == 0 and not output, f"{what}: exit {result.returncode}, output:\n{output}"


# --- systemd-analyze verify ---------------------------------------------------------------------------------------


@needs_analyze
@pytest.mark.parametrize("unit", SYSTEM_UNITS, ids=lambda p: p.name)
def test_system_unit_verifies_without_any_warning(tmp_path: Path, unit: Path) -> None:
    copies = {c.name: c for c in copy_for_verify(SYSTEM_UNITS, tmp_path / "units")}
    result = analyze("verify", copies[unit.name], cwd=tmp_path)
    assert_quiet(result, f"systemd-analyze verify {unit.name}")


@needs_analyze
def test_system_units_verify_together(tmp_path: Path) -> None:
    copies = copy_for_verify(SYSTEM_UNITS, tmp_path / "units")
    assert_quiet(analyze("verify", *copies, cwd=tmp_path), "systemd-analyze verify wangpd.socket wangpd.service")


@needs_analyze
@pytest.mark.parametrize("unit", USER_UNITS, ids=lambda p: f"user-{p.name}")
def test_user_unit_verifies_without_any_warning(tmp_path: Path, unit: Path) -> None:
    copies = {c.name: c for c in copy_for_verify(USER_UNITS, tmp_path / "units")}
    result = analyze("--user", "verify", copies[unit.name], cwd=tmp_path, env=user_env(tmp_path))
    assert_quiet(result, f"systemd-analyze --user verify {unit.name}")


@needs_analyze
def test_verify_reports_problems(tmp_path: Path) -> None:
    """The canary: a planted unknown key must be reported, so a quiet verify above is not a verify that saw nothing."""
    copies = copy_for_verify(SYSTEM_UNITS, tmp_path / "units")
    service = copies[0]
    service.write_text(service.read_text().replace("[Service]\n", "[Service]\nNoSuchSetting=yes\n", 1))
    result = analyze("verify", service, cwd=tmp_path)
    assert "NoSuchSetting" in result.stdout + result.stderr

    user_copies = copy_for_verify(USER_UNITS, tmp_path / "user-units")
    socket_unit = user_copies[1]
    socket_unit.write_text(socket_unit.read_text().replace("[Socket]\n", "[Socket]\nNoSuchSetting=yes\n", 1))
    result = analyze("--user", "verify", socket_unit, cwd=tmp_path, env=user_env(tmp_path))
    assert "NoSuchSetting" in result.stdout + result.stderr


# --- systemd-analyze security -------------------------------------------------------------------------------------


def exposure(result: subprocess.CompletedProcess[str], unit: str) -> float:
    match = re.search(rf"Overall exposure level for {re.escape(unit)}: (\d+(?:\.\d+)?)", result.stdout)
    assert match, f"no overall exposure in the output:\n{result.stdout}\n{result.stderr}"
    return float(match.group(1))


@needs_analyze
def test_system_service_exposure_at_most_1_5(tmp_path: Path) -> None:
    service = SYSTEMD / "wangpd.service"
    # --threshold is on the 0..100 scale (1.5 = 15): exit status non-zero above it.
    result = analyze("security", "--offline=yes", "--threshold=15", service, cwd=tmp_path)
    assert result.returncode == 0, f"exposure above 1.5:\n{result.stdout}\n{result.stderr}"
    assert not result.stderr.strip(), result.stderr
    score = exposure(result, "wangpd.service")
    assert score <= MAX_EXPOSURE, result.stdout
    # The assessment is of the shipped hardening: a few of the settings it must have seen.
    for passed in ("User=/DynamicUser=", "ProtectSystem=", "MemoryDenyWriteExecute=", "SystemCallFilter=~@mount"):
        assert re.search(rf"^✓ {re.escape(passed)}", result.stdout, re.M), f"{passed} not passed:\n{result.stdout}"


# --- what the daemon and the docs rely on -------------------------------------------------------------------------


def test_system_service_settings() -> None:
    unit = parse_unit(SYSTEMD / "wangpd.service")
    service = unit["Service"]
    assert one(unit, "Service", "Type") == "notify"
    assert one(unit, "Service", "NotifyAccess") == "main"
    assert one(unit, "Service", "WatchdogSec")
    assert one(unit, "Service", "Restart") == "on-failure"
    assert str(protocol.EXIT_CONFIG) in one(unit, "Service", "RestartPreventExitStatus").split()
    assert int(one(unit, "Service", "LimitNOFILE")) >= 4 * 256, "room for the control connection cap and transfers"
    assert one(unit, "Service", "TimeoutStopSec")
    assert one(unit, "Service", "ExecStart").split()[1:] == ["run"]
    assert one(unit, "Service", "ExecReload").split()[1:] == ["reload"]
    assert Path(one(unit, "Service", "ExecReload").split()[0]).name == "wangpctl"
    assert one(unit, "Service", "User") == one(unit, "Service", "Group") == "wangpd"
    assert all(path.startswith("-/") for path in service["ReadWritePaths"])
    for kind in ("Runtime", "State", "Cache", "Configuration"):
        assert one(unit, "Service", f"{kind}Directory") == "wangpd"
    assert one(unit, "Service", "RuntimeDirectoryMode") == "0750"
    assert one(unit, "Service", "UMask") == "0027"
    assert one(unit, "Service", "CapabilityBoundingSet") == ""
    assert set(one(unit, "Service", "RestrictAddressFamilies").split()) == {"AF_UNIX", "AF_INET", "AF_INET6"}
    # SO_PEERCRED inside a user namespace reports every other user as nobody: the access policy needs real uids.
    assert "PrivateUsers" not in service
    # With wangpd.socket, the listening socket lives in the runtime directory: it must survive a service stop.
    assert one(unit, "Service", "RuntimeDirectoryPreserve") == "yes"


@pytest.mark.parametrize("user", [False, True], ids=["system", "user"])
def test_socket_unit_listens_where_the_daemon_binds(user: bool) -> None:
    base = SYSTEMD / "user" if user else SYSTEMD
    socket_unit = parse_unit(base / "wangpd.socket")
    service = parse_unit(base / "wangpd.service")
    listen = one(socket_unit, "Socket", "ListenStream")
    runtime = one(service, "Service", "RuntimeDirectory")
    assert listen == f"%t/{runtime}/wangpd.sock"
    # %t = /run (system) or $XDG_RUNTIME_DIR (user); RuntimeDirectory= is below it and passed as $RUNTIME_DIRECTORY.
    t = "/run/user/1000" if user else "/run"
    expanded = Path(listen.replace("%t", t))
    assert protocol.default_socket_path({"RUNTIME_DIRECTORY": f"{t}/{runtime}"}) == expanded
    if user:
        assert protocol.default_socket_path({"XDG_RUNTIME_DIR": t}) == expanded
        assert one(socket_unit, "Socket", "SocketMode") == "0600"
    else:
        assert expanded == protocol.SYSTEM_SOCKET
        assert one(socket_unit, "Socket", "SocketMode") == "0660"
        assert one(socket_unit, "Socket", "SocketGroup") == "wangpd"
        assert one(socket_unit, "Socket", "DirectoryMode") == "0750"
    # Socket activation must not be required: the service works alone.
    assert "Sockets" not in service["Service"]
    assert "wangpd.socket" not in " ".join(v for vs in service.get("Unit", {}).values() for v in vs)


def test_user_service_settings() -> None:
    unit = parse_unit(SYSTEMD / "user" / "wangpd.service")
    assert one(unit, "Service", "Type") == "notify"
    assert one(unit, "Service", "NotifyAccess") == "main"
    assert str(protocol.EXIT_CONFIG) in one(unit, "Service", "RestartPreventExitStatus").split()
    assert int(one(unit, "Service", "LimitNOFILE")) >= 4 * 256, "room for the control connection cap and transfers"
    assert one(unit, "Service", "ExecReload").split()[1:] == ["reload"]
    assert "User" not in unit["Service"], "a user unit runs as its user"
    assert one(unit, "Install", "WantedBy") == "default.target"


# --- sysusers.d / tmpfiles.d --------------------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("systemd-sysusers") is None, reason="systemd-sysusers is not installed")
def test_sysusers_creates_user_and_group(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    conf = SYSTEMD / "sysusers.d" / "wangpd.conf"
    result = subprocess.run(
        ["systemd-sysusers", f"--root={root}", str(conf)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    users = {line.split(":")[0]: line.split(":") for line in (root / "etc" / "passwd").read_text().splitlines()}
    groups = {line.split(":")[0]: line.split(":") for line in (root / "etc" / "group").read_text().splitlines()}
    assert "wangpd" in users and "wangpd" in groups
    _name, _, uid, gid, _gecos, home, shell = users["wangpd"]
    assert gid == groups["wangpd"][2], "the user's primary group is wangpd"
    assert int(uid) < 1000, "a system user"
    assert home == "/var/lib/wangpd"
    assert shell.endswith("nologin")

    # tmpfiles.d: /run/wangpd for the socket unit, owned by that user, 0750 (resolved against the same root).
    if shutil.which("systemd-tmpfiles"):
        tmpfiles = SYSTEMD / "tmpfiles.d" / "wangpd.conf"
        result = subprocess.run(
            ["systemd-tmpfiles", f"--root={root}", "--create", str(tmpfiles)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        run_dir = (root / "run" / "wangpd").stat()
        assert oct(run_dir.st_mode & 0o7777) == "0o750"
        assert (run_dir.st_uid, run_dir.st_gid) == (int(uid), int(gid))


# --- MemoryDenyWriteExecute=yes really holds for this Python stack ----------------------------------------------

MDWE_PROBE = r"""
import ctypes, errno, mmap, sys
libc = ctypes.CDLL(None, use_errno=True)
PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 1
if libc.prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0:
    print("no PR_SET_MDWE:", errno.errorcode.get(ctypes.get_errno()))
    sys.exit(3)
try:  # proof that W^X is now enforced in this process
    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    sys.exit("a writable+executable mapping was allowed")
except OSError:
    pass
# Everything below loads its extension modules (and runs their code) under W^X.
import asyncio, hashlib, sqlite3, ssl, tempfile
import aiohttp, aiohttp.web, huggingface_hub, sdnotify, watchfiles, yaml
import wangpd.app, wangpd.main, wangpd.rpc, wangpd.store

async def main():
    folder = tempfile.mkdtemp(dir="/tmp")
    app = aiohttp.web.Application()
    async def handler(request):
        return aiohttp.web.Response(body=b"x" * 65536)
    app.router.add_get("/", handler)
    runner = aiohttp.web.AppRunner(app)
    await runner.setup()
    await aiohttp.web.UnixSite(runner, folder + "/s.sock").start()
    async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=folder + "/s.sock")) as session:
        async with session.get("http://wangpd/") as response:
            body = await response.read()
    assert hashlib.sha256(body).hexdigest()
    ssl.create_default_context()
    db = sqlite3.connect(folder + "/q.db")
    db.execute("pragma journal_mode=wal")
    db.execute("create table t(x)")
    db.commit()
    async for _ in watchfiles.awatch(folder, yield_on_timeout=True, rust_timeout=100):
        break
    await runner.cleanup()
    print("ok")

asyncio.run(main())
"""


def test_python_stack_runs_with_write_xor_execute(tmp_path: Path) -> None:
    """MemoryDenyWriteExecute=yes is only safe if nothing in CPython/aiohttp/sqlite3/watchfiles needs W+X memory.

    Approximated with the kernel's own W^X switch (prctl PR_SET_MDWE, Linux >= 6.3), which refuses the same
    mappings systemd's seccomp filter does; skipped on older kernels.
    """
    result = subprocess.run(
        [sys.executable, "-c", MDWE_PROBE],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        check=False,
    )
    if result.returncode == 3:
        pytest.skip(f"kernel has no PR_SET_MDWE: {result.stdout.strip()}")
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stdout + result.stderr
