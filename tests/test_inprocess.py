"""The daemon in-process (as uvicorn's tests do): startup, a real client over the real socket, clean shutdown."""

from __future__ import annotations

import asyncio
from pathlib import Path

from conftest import write_config
from wangpctl.client import Client
from wangpd.app import Daemon
from wangpd.config import load_config


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
