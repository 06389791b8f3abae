"""Hostile definitions and secrets: nothing is written outside the configured roots, and a token never shows."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from conftest import DaemonProcess, wait_for


def snapshot(folder: Path) -> dict[str, tuple[int, float]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime) for p in folder.rglob("*") if p.is_file()}


def definition(wan2gp: Path, model_type: str, urls: list[str]) -> None:
    (wan2gp / "defaults" / f"{model_type}.json").write_text(
        json.dumps({"model": {"name": model_type, "architecture": "hostile_arch", "URLs": urls}})
    )


def test_hostile_definitions_write_nothing_outside(
    daemon_factory: Callable[..., DaemonProcess], fake_hub: Any, wan2gp: Path, tmp_path: Path
) -> None:
    for existing in (wan2gp / "defaults").glob("*.json"):
        existing.unlink()  # only the hostile definitions (and their core handler files: architecture unknown)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious.txt").write_text("do not touch")
    (wan2gp / "ckpts" / "evil").symlink_to(outside)  # a symlink inside ckpts pointing out of the Wan2GP folder
    fake_hub.add_file("Org/R", "x.safetensors", size=1000)
    fake_hub.add_file("Org/R", "y.safetensors", size=1000)
    fake_hub.add_file("Org/R", "ok.safetensors", size=1000)
    definition(wan2gp, "escape_subdir", ["https://huggingface.co/Org/R/resolve/main/x.safetensors|../../escape"])
    definition(wan2gp, "absolute_subdir", ["https://huggingface.co/Org/R/resolve/main/x.safetensors|/etc"])
    definition(wan2gp, "dotdot_name", ["https://huggingface.co/Org/R/resolve/main/..%2F..%2F..%2Fpwned.safetensors"])
    definition(wan2gp, "through_symlink", ["https://huggingface.co/Org/R/resolve/main/y.safetensors|evil"])
    definition(wan2gp, "other_host", ["https://evil.example/files/z.safetensors"])
    definition(wan2gp, "plain_http", ["http://huggingface.co/Org/R/resolve/main/x.safetensors"])
    definition(wan2gp, "fine", ["https://huggingface.co/Org/R/resolve/main/ok.safetensors"])
    before_outside = snapshot(outside)
    before_tmp = {p.name for p in tmp_path.iterdir()}

    daemon = daemon_factory(hub={"endpoint": fake_hub.endpoint}, auto_queue={"track": "all"})
    daemon.start()
    models = {m["type"]: m for m in daemon.ctl_json("models", "--all")["models"]}
    assert "escapes the Wan2GP folder" in models["escape_subdir"]["error"]
    assert "escapes the Wan2GP folder" in models["absolute_subdir"]["error"]
    assert "not an https:// URL" in models["plain_http"]["error"]
    assert models["fine"]["error"] is None

    def settled() -> list[dict[str, Any]] | None:
        jobs = daemon.ctl_json("queue", "--limit", "10000")["jobs"]
        mine = [j for j in jobs if j["url"].startswith(("https://evil.example", "https://huggingface.co/Org/R"))]
        return mine if mine and all(j["state"] in ("complete", "failed") for j in mine) else None

    # A plain URL has no size the Hub can tell, so the automatic batch waits for approval: give it.
    wait_for(lambda: daemon.ctl_json("status")["batches"], what="held batch")
    daemon.ctl("approve")
    jobs = {Path(j["target"]).name: j for j in wait_for(settled, timeout=60, what="hostile jobs settle")}
    assert jobs["ok.safetensors"]["state"] == "complete"
    symlinked = jobs["y.safetensors"]
    assert symlinked["state"] == "failed" and "outside" in symlinked["last_error"], symlinked
    assert jobs["z.safetensors"]["state"] == "failed" and "allowed" in jobs["z.safetensors"]["last_error"]
    for job in jobs.values():
        assert Path(job["target"]).is_relative_to(wan2gp), job["target"]
    assert snapshot(outside) == before_outside, "nothing written through the symlink"
    assert not (wan2gp.parent / "escape").exists() and not Path("/etc/x.safetensors").exists()
    assert not list(tmp_path.rglob("pwned.safetensors"))
    assert {p.name for p in tmp_path.iterdir()} - before_tmp <= {"state", "hfcache", "config.yaml", "wangpd-urls"}
    assert daemon.ctl_json("status")["pid"] == daemon.proc.pid


def test_tokens_never_show(daemon_factory: Callable[..., DaemonProcess], fake_hub: Any, wan2gp: Path) -> None:
    secret = "hf_test_token"  # valid on the fake hub, but without access to the gated repo
    fake_hub.add_repo("Gated/Model", gated=True)
    fake_hub.add_file("Gated/Model", "g.safetensors", size=1000)
    fake_hub.add_repo("Private/Model", private=True)
    fake_hub.add_file("Private/Model", "p.safetensors", size=1000)
    daemon = daemon_factory(env={"HF_TOKEN": secret}, hub={"endpoint": fake_hub.endpoint}).start()
    for repo, name in (
        ("Gated/Model", "g.safetensors"),
        ("Private/Model", "p.safetensors"),
        ("Missing/Model", "m.safetensors"),
    ):
        daemon.ctl("add", f"https://huggingface.co/{repo}/resolve/main/{name}")
    failed = wait_for(
        lambda: (q := daemon.ctl_json("queue", "--state", "failed"))["total"] >= 2 and q,
        timeout=30,
        what="auth failures",
    )
    errors = " ".join(j["last_error"] for j in failed["jobs"])
    assert "accept its licence" in errors or "licence" in errors
    outputs = [
        daemon.ctl("status", "--json").stdout,
        daemon.ctl("queue", "--json").stdout,
        daemon.ctl("doctor", "--json", check=False).stdout,
        *(daemon.ctl("job", "show", str(j["id"]), "--json").stdout for j in failed["jobs"]),
        daemon.log(),
    ]
    for text in outputs:
        assert secret not in text
    assert os.environ.get("HF_TOKEN") != secret
