"""Reuse from the user's other model libraries (config ``libraries``): a wanted file found there by size and the
Hub's sha256, under any name, is linked instead of downloaded; a library file that changed is read again, not
trusted. A real daemon, the fake Hub, real files."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from conftest import DaemonProcess, serve_models, wait_for

HF = "https://huggingface.co/Org/Repo/resolve/main/"
BIG = 1536 * 1024  # above the index's 1 MiB floor: model files are big, the index stays small


def job_of(daemon: DaemonProcess, name: str) -> dict[str, Any] | None:
    jobs = daemon.ctl_json("queue", "--limit", "10000")["jobs"]
    return next((j for j in jobs if Path(j["target"]).name == name), None)


def test_a_library_file_under_another_name_is_linked_and_a_changed_one_is_not_trusted(
    daemon_factory: Callable[..., DaemonProcess], fake_hub: Any, wan2gp: Path, tmp_path: Path
) -> None:
    for old in (wan2gp / "defaults").glob("*.json"):
        old.unlink()
    model = {"name": "lib", "architecture": "testarch", "URLs": [HF + "big_model_bf16.safetensors"]}
    (wan2gp / "defaults" / "ml.json").write_text(json.dumps({"model": model}))
    serve_models(fake_hub, wan2gp)
    big = fake_hub.add_file("Org/Repo", "big_model_bf16.safetensors", size=BIG, seed=77)
    library = tmp_path / "ComfyUI" / "models"
    (library / "checkpoints").mkdir(parents=True)
    (library / "unet").mkdir()
    mine = library / "checkpoints" / "my renamed copy.safetensors"
    mine.write_bytes(big.content())
    decoy = library / "unet" / "same_size_other_bytes.safetensors"
    decoy.write_bytes(b"\1" * BIG)

    daemon = daemon_factory(hub={"endpoint": fake_hub.endpoint}, libraries=[str(library)]).start()
    wait_for(lambda: (daemon.ctl_json("status")["libraries"] or {}).get("state") == "ready", what="library listed")
    daemon.ctl_json("add", "ml")
    job = wait_for(lambda: (j := job_of(daemon, "big_model_bf16.safetensors")) and j["state"] == "complete" and j)
    target = wan2gp / "ckpts" / "big_model_bf16.safetensors"
    assert job["source"] == "library"
    assert os.path.realpath(target) == str(mine) and target.read_bytes() == big.content()
    assert big.bytes_served == 0, "no byte of it came from the Hub"
    libraries = daemon.ctl_json("status")["libraries"]
    assert libraries["files"] == 2 and libraries["bytes_hashed"] <= 2 * BIG and libraries["hashed"] >= 1

    # du says where the bytes are; prune removes wangpd's link and never the library's file.
    row = daemon.ctl_json("du", "ml")["rows"][0]
    assert row["by_location"]["library"] == os.stat(mine).st_blocks * 512
    pruned = daemon.ctl_json("prune", "ml", "--yes")
    assert str(target) in pruned["removed"] and not os.path.lexists(target)
    assert mine.read_bytes() == big.content()

    # The same name, new bytes and a new mtime: its old hash no longer holds; the Hub's file is fetched.
    mine.write_bytes(b"\2" * BIG)
    os.utime(mine, ns=(mine.stat().st_atime_ns, mine.stat().st_mtime_ns + 5_000_000_000))
    daemon.ctl_json("clear", "complete")
    daemon.ctl_json("add", "ml")
    job = wait_for(lambda: (j := job_of(daemon, "big_model_bf16.safetensors")) and j["state"] == "complete" and j)
    assert job["source"] == "download"
    assert target.read_bytes() == big.content() and os.path.realpath(target) != str(mine)
    assert big.bytes_served == BIG
    assert mine.read_bytes() == b"\2" * BIG and decoy.exists(), "library files are only ever read"
