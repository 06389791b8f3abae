"""The daemon in-process (as uvicorn's tests do): startup, a real client over the real socket, clean shutdown."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from pathlib import Path

import pytest

from conftest import write_config
from wangpctl.client import Client
from wangpd.app import Daemon
from wangpd.config import load_config
from wangpd.errors import SocketInUse
from wangpd.paths import lock_exclusive


def test_daemon_in_process(tmp_path: Path, short_dir: Path, wan2gp: Path) -> None:
    config = load_config(write_config(tmp_path, wan2gp, short_dir), environ={"HOME": str(tmp_path)})

    async def scenario() -> None:
        daemon = Daemon(config)
        await daemon.startup()
        try:
            client = Client(short_dir / "wangpd.sock", timeout=10)
            status = await asyncio.to_thread(client.call, "status")
            assert status["state"] == "running" and status["pid"] > 0
            added = await asyncio.to_thread(
                client.call, "queue.add", {"repo": "Org/Repo", "path": "x.safetensors", "priority": 3}
            )
            assert added["created"] and added["job"]["priority"] == 3
            assert daemon.store.get_job(added["job"]["id"]).target.endswith("ckpts/x.safetensors")
            await asyncio.to_thread(client.call, "pause")
            assert daemon.paused and daemon.store.get_setting("paused") is True
            changes = await daemon.reload()
            assert changes == []
        finally:
            daemon.stop()
            await daemon.shutdown()
        assert not (short_dir / "wangpd.sock").exists()

    asyncio.run(scenario())


def test_a_startup_that_fails_half_way_undoes_what_it_did(tmp_path: Path, short_dir: Path, wan2gp: Path) -> None:
    # The second daemon opens its own queue database and locks it, then finds the socket taken: it must close the
    # store and release the lock (a half-failed startup used to leave both behind).
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = load_config(write_config(tmp_path / "a", wan2gp, short_dir), environ={"HOME": str(tmp_path)})
    second = load_config(write_config(tmp_path / "b", wan2gp, short_dir), environ={"HOME": str(tmp_path)})

    async def scenario() -> None:
        running = Daemon(first)
        await running.startup()
        try:
            late = Daemon(second)
            with pytest.raises(SocketInUse):
                await late.startup()
            with pytest.raises(sqlite3.ProgrammingError):  # closed
                late.store._db.execute("SELECT 1")
            lock = lock_exclusive(Path(f"{second.daemon.db_path}.lock"))
            assert lock is not None, "the failed startup kept its queue database locked"
            os.close(lock)
            status = await asyncio.to_thread(Client(short_dir / "wangpd.sock", timeout=10).call, "status")
            assert status["database"] == str(first.daemon.db_path)  # the running daemon still answers
        finally:
            running.stop()
            await running.shutdown()

    asyncio.run(scenario())
