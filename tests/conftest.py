"""Shared test parts: a small Wan2GP tree, a config writer, a real daemon process with a real NOTIFY_SOCKET."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
FIXTURE_DEFAULTS = FIXTURES / "wan2gp-2026-02" / "defaults"


def wait_for(
    condition: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02, what: str = "condition"
) -> Any:
    """Poll ``condition`` until it returns something truthy; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A short path under /tmp: AF_UNIX socket paths are limited to 107 bytes and tmp_path can be longer."""
    path = Path(tempfile.mkdtemp(prefix="wp", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def make_wan2gp(root: Path, models: tuple[str, ...] = ("t2v", "flux", "i2v_2_2")) -> Path:
    """A minimal Wan2GP folder: a few real definitions, wgp_config.json, empty ckpts/ and loras/."""
    (root / "defaults").mkdir(parents=True)
    (root / "finetunes").mkdir()
    (root / "ckpts").mkdir()
    (root / "loras").mkdir()
    for model in models:
        shutil.copy(FIXTURE_DEFAULTS / f"{model}.json", root / "defaults" / f"{model}.json")
    (root / "wgp_config.json").write_text(json.dumps({"transformer_quantization": "int8"}))
    return root


@pytest.fixture
def wan2gp(tmp_path: Path) -> Path:
    return make_wan2gp(tmp_path / "wan2gp")


def write_config(directory: Path, wan2gp_dir: Path, sock_dir: Path, **sections: Any) -> Path:
    """config.yaml with every path inside the test's folders. ``sections`` override/extend keys."""
    data: dict[str, Any] = {
        "wan2gp_directory": str(wan2gp_dir),
        "daemon": {
            "state_dir": str(directory / "state"),
            "socket": str(sock_dir / "wangpd.sock"),
            "status_interval": "0.2s",
            "shutdown_timeout": "3s",
        },
        "hub": {"endpoint": "http://127.0.0.1:9", "cache_dir": str(directory / "hfcache")},
        "watch": {"enabled": False},
        "auto_queue": {"track": "none"},
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    path = directory / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


class NotifyListener:
    """A real datagram socket standing in for systemd's NOTIFY_SOCKET."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.05)
        self.messages: list[str] = []

    def drain(self) -> list[str]:
        while True:
            try:
                data = self.sock.recv(65536)
            except (TimeoutError, BlockingIOError):
                return self.messages
            self.messages.append(data.decode("utf-8", "replace"))

    def wait_for(self, prefix: str, timeout: float = 10.0, after: int = 0) -> str:
        def found() -> str | None:
            self.drain()
            for message in self.messages[after:]:
                if any(line.startswith(prefix) for line in message.splitlines()):
                    return message
            return None

        return wait_for(found, timeout, what=f"notify {prefix}")

    def close(self) -> None:
        self.sock.close()


class DaemonProcess:
    """``wangpd run`` as a real subprocess."""

    def __init__(self, config: Path, sock: Path, workdir: Path, env: dict[str, str] | None = None) -> None:
        self.config = config
        self.socket = sock
        self.notify = NotifyListener(workdir / "notify.sock")
        self.log_path = workdir / "daemon.log"
        self.env = {**os.environ, "NOTIFY_SOCKET": str(self.notify.path), **(env or {})}
        self.env.pop("WANGPCTL_SOCKET", None)
        self.proc: subprocess.Popen[bytes] | None = None
        self._mark = 0

    def start(self, wait_ready: bool = True) -> DaemonProcess:
        self._mark = len(self.notify.drain())  # READY from an earlier run of this daemon does not count
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "wangpd", "run", "--config", str(self.config)],
            env=self.env,
            stdout=log,
            stderr=log,
            cwd=str(ROOT),
        )
        log.close()
        if wait_ready:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 15.0) -> None:
        try:
            self.notify.wait_for("READY=1", timeout, after=self._mark)
        except AssertionError:
            raise AssertionError(f"daemon not ready; log:\n{self.log()}") from None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def ctl(self, *args: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "wangpctl", "--socket", str(self.socket), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={k: v for k, v in os.environ.items() if k != "WANGPCTL_SOCKET"},
        )
        if check and result.returncode != 0:
            raise AssertionError(f"wangpctl {' '.join(args)} exited {result.returncode}: {result.stderr}")
        return result

    def ctl_json(self, *args: str) -> Any:
        return json.loads(self.ctl(*args, "--json").stdout)

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def stop(self, timeout: float = 15.0) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        code = self.proc.returncode
        return code

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def close(self) -> None:
        self.stop()
        self.notify.close()


@pytest.fixture
def daemon_factory(tmp_path: Path, short_dir: Path, wan2gp: Path) -> Iterator[Callable[..., DaemonProcess]]:
    """Build (not start) daemons on a config in tmp_path; all are stopped at the end."""
    made: list[DaemonProcess] = []

    def build(env: dict[str, str] | None = None, paused: bool = False, **sections: Any) -> DaemonProcess:
        """``paused``: start with downloads paused (stored beforehand, as `wangpctl pause` would), so that queued
        rows stay queued while a test looks at them."""
        config = write_config(tmp_path, wan2gp, short_dir, **sections)
        if paused:
            from wangpd.store import Store

            store = Store.open(tmp_path / "state" / "hfcache.db")
            store.set_setting("paused", True)
            store.close()
        daemon = DaemonProcess(config, short_dir / "wangpd.sock", short_dir, env)
        made.append(daemon)
        return daemon

    yield build
    for daemon in made:
        daemon.close()
        # Shown by pytest only when the test failed: the daemon's side of the story.
        print(f"--- daemon log ({daemon.config}) ---\n{daemon.log()[-6000:]}")


@pytest.fixture
def daemon(daemon_factory: Callable[..., DaemonProcess]) -> DaemonProcess:
    """A running daemon with the default test config."""
    return daemon_factory().start()


@pytest.fixture
def fake_hub() -> Iterator[Any]:
    """The in-repo fake Hub (127.0.0.1) + CDN (127.0.0.2) on their own loop in a thread."""
    from fakehub import FakeHubThread

    with FakeHubThread() as hub:
        yield hub


def serve_models(hub: Any, wan2gp_dir: Path, models: tuple[str, ...] | None = None, size: int = 2000) -> dict:
    """Register on the fake hub every file the catalog wants for ``models`` (all when None), each ``size`` bytes
    (LFS-sized names stay LFS). Returns {local path: FakeFile}."""
    from wangpd.catalog import load_catalog

    catalog = load_catalog(wan2gp_dir, all_variants=True)
    served = {}
    for model_type, model in catalog.models.items():
        if models is not None and model_type not in models:
            continue
        for wanted in (*model.files, *model.alternatives):
            if wanted.repo and not wanted.whole_folder and (wanted.repo, wanted.path_in_repo) not in hub.files:
                seed = len(hub.files) + 1
                served[wanted.local] = hub.add_file(wanted.repo, wanted.path_in_repo, size=size, seed=seed)
    return served


def call_as(uid: int, sock: Path, method: str, gid: int = 65534, groups: tuple[int, ...] = ()) -> dict[str, Any]:
    """A JSON-RPC call from a forked child that became (uid, gid, groups); never execs, so no interpreter path
    needs to be readable by that user. Returns the answer, or {"os_error": errno} when the kernel refused."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        try:
            os.close(read_fd)
            os.setgroups(list(groups))
            os.setgid(gid)
            os.setuid(uid)
            client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            client.settimeout(10)
            try:
                client.connect(str(sock))
            except OSError as exc:
                os.write(write_fd, json.dumps({"os_error": exc.errno}).encode())
                os._exit(0)
            body = json.dumps({"jsonrpc": "2.0", "method": method, "id": 1}).encode()
            client.sendall(
                b"POST /rpc HTTP/1.1\r\nHost: w\r\nConnection: close\r\nContent-Length: %d\r\n\r\n" % len(body) + body
            )
            data = b""
            while chunk := client.recv(65536):
                data += chunk
            os.write(write_fd, data.split(b"\r\n\r\n", 1)[1])
        except BaseException as exc:
            os.write(write_fd, json.dumps({"child_error": repr(exc)}).encode())
        finally:
            os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        data = pipe.read()
    os.waitpid(pid, 0)
    return json.loads(data)


def invokeai_db(tmp_path: Path, models_dir: Path, source: str, file_name: str, size: int) -> Path:
    """A copy of InvokeAI's real schema with one single-file model, written the way InvokeAI 6.x writes it."""
    db_dir = tmp_path / "invokeai" / "databases"
    db_dir.mkdir(parents=True)
    db_path = db_dir / "invokeai.db"
    shutil.copy(FIXTURES / "invokeai" / "invokeai-6.14-empty.db", db_path)
    key = str(uuid.uuid4())
    (models_dir / key).mkdir(parents=True)
    config = {
        "key": key,
        "hash": "blake3:" + "0" * 64,
        "path": f"{key}/{file_name}",
        "file_size": size,
        "name": "vae",
        "description": "",
        "source": source,
        "source_type": "url",
        "source_api_response": None,
        "cover_image": None,
        "type": "vae",
        "format": "checkpoint",
        "base": "any",
        "usage_info": None,
    }
    db = sqlite3.connect(db_path)
    db.execute("INSERT INTO models (id, config) VALUES (?, ?)", (key, json.dumps(config)))
    db.commit()
    db.close()
    return db_path
