"""What every bench script does the same way: start a real daemon in a temp folder, fill its queue, read memory."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent


def start_daemon(work: Path, wan2gp: Path, **sections: Any) -> tuple[subprocess.Popen[bytes], Path]:
    """``wangpd run`` on a config in ``work`` (state and socket inside it, ``sections`` merged in); returns once
    the socket exists. The caller stops it (SIGTERM) and removes ``work``."""
    sock = work / "wangpd.sock"
    data: dict[str, Any] = {
        "wan2gp_directory": str(wan2gp),
        "daemon": {"state_dir": str(work / "state"), "socket": str(sock)},
        "hub": {"endpoint": "http://127.0.0.1:9", "cache_dir": str(work / "hub"), "survey_sizes": False},
        "auto_queue": {"track": "none"},
    }
    for key, value in sections.items():
        data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
    config = work / "config.yaml"
    config.write_text(yaml.safe_dump(data))
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WANGPCTL_SOCKET")}
    daemon = subprocess.Popen(
        [sys.executable, "-m", "wangpd", "run", "--config", str(config)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=str(ROOT),
    )
    deadline = time.monotonic() + 30
    while not sock.exists():
        if time.monotonic() > deadline or daemon.poll() is not None:
            daemon.kill()
            raise SystemExit("the daemon did not start")
        time.sleep(0.05)
    return daemon, sock


def fill_queue(work: Path, wan2gp: Path, rows: int, state: str = "queued") -> None:
    """``rows`` jobs written straight into the daemon's queue database (a second writer is fine in WAL mode)."""
    db = sqlite3.connect(work / "state" / "hfcache.db")
    now = time.time()
    db.executemany(
        "INSERT INTO download_queue (repo, revision, path, url, target, size, state, wanted_by, created_at,"
        " updated_at) VALUES ('Org/Repo','main',?,?,?,?,?, '[\"t2v\"]', ?, ?)",
        [
            (f"f{i}.bin", f"https://huggingface.co/Org/Repo/resolve/main/f{i}.bin", str(wan2gp / "ckpts" / f"f{i}.bin"),
             1000 + i, state, now, now)
            for i in range(rows)
        ],
    )  # fmt: skip
    db.commit()
    db.close()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")
