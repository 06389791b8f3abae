"""``wangpctl du``: unique and shared bytes per model and family, each inode once (issue 16, first item)."""

from __future__ import annotations

import os
from pathlib import Path

from wangpd.diskuse import measure
from wangpd.models import WantedFile
from wangpd.planner import Plan, PlannedFile


def planned(local: str, *models: str) -> PlannedFile:
    wanted = WantedFile(url="", repo=None, revision="", path_in_repo="", local=local, lookup=(local,), role="main")
    return PlannedFile(file=wanted, wanted_by=models, status="present", present_at=local)


def blocks(path: Path) -> int:
    return os.stat(path).st_blocks * 512


def test_unique_shared_and_locations_counted_once_per_inode(tmp_path: Path) -> None:
    wan, cache, invokeai = tmp_path / "wan2gp", tmp_path / "hub", tmp_path / "invokeai" / "models"
    for folder in (wan / "ckpts", cache / "models--Org--Repo" / "blobs", invokeai):
        folder.mkdir(parents=True)
    blob = cache / "models--Org--Repo" / "blobs" / "abc"
    blob.write_bytes(b"s" * 300_000)
    (wan / "ckpts" / "shared.bin").symlink_to(blob)  # A and B need it; it lives in the HF cache
    (wan / "ckpts" / "a_only.bin").write_bytes(b"a" * 100_000)  # a real file at the Wan2GP path
    (wan / "ckpts" / "b1.bin").write_bytes(b"b" * 200_000)
    os.link(wan / "ckpts" / "b1.bin", wan / "ckpts" / "b2.bin")  # one inode under two names, both B's
    (invokeai / "c.bin").write_bytes(b"c" * 50_000)
    (wan / "ckpts" / "c.bin").symlink_to(invokeai / "c.bin")  # C and A need it; InvokeAI's file
    plan = Plan(
        files=(
            planned("ckpts/shared.bin", "A", "B"),
            planned("ckpts/a_only.bin", "A"),
            planned("ckpts/b1.bin", "B"),
            planned("ckpts/b2.bin", "B"),
            planned("ckpts/c.bin", "A", "C"),
            PlannedFile(file=planned("ckpts/gone.bin", "A").file, wanted_by=("A",), status="missing"),
        ),
        models={},
    )
    s, a, b, c = (blocks(p) for p in (blob, wan / "ckpts" / "a_only.bin", wan / "ckpts" / "b1.bin", invokeai / "c.bin"))
    assert min(s, a, b, c) > 0
    families = {"A": "wan", "B": "wan", "C": "ltx"}
    common = {"hf_cache": cache, "invokeai": invokeai, "families": families}

    rows = {r["name"]: r for r in measure(plan, wan, **common)["rows"]}
    assert rows["A"] == {
        "name": "A",
        "files": 3,
        "bytes": s + a + c,
        "unique_bytes": a,
        "shared_bytes": s + c,
        "by_location": {"hf-cache": s, "invokeai": c, "library": 0, "elsewhere": 0, "wan2gp": a},
    }
    assert (rows["B"]["files"], rows["B"]["bytes"], rows["B"]["unique_bytes"]) == (2, s + b, b), "hardlink once"
    assert (rows["C"]["bytes"], rows["C"]["unique_bytes"], rows["C"]["shared_bytes"]) == (c, 0, c)

    everything = measure(plan, wan, **common)
    assert everything["total_bytes"] == s + a + b + c
    assert sum(fs["bytes"] for fs in everything["filesystems"]) == s + a + b + c
    assert all(os.path.ismount(fs["mount_point"]) for fs in everything["filesystems"])

    by_family = {r["name"]: r for r in measure(plan, wan, **common, by="family")["rows"]}
    assert (by_family["wan"]["bytes"], by_family["wan"]["unique_bytes"]) == (s + a + b + c, s + a + b)
    assert (by_family["ltx"]["bytes"], by_family["ltx"]["unique_bytes"]) == (c, 0)

    only_c = measure(plan, wan, **common, selected=["C"])
    assert [r["name"] for r in only_c["rows"]] == ["C"] and only_c["total_bytes"] == c
    assert only_c["rows"][0]["shared_bytes"] == c, "shared is judged against every model, shown or not"


def test_files_gone_since_the_plan_and_dangling_links_cost_nothing(tmp_path: Path) -> None:
    wan = tmp_path / "wan2gp"
    (wan / "ckpts").mkdir(parents=True)
    (wan / "ckpts" / "dangling.bin").symlink_to(tmp_path / "nowhere")
    plan = Plan(files=(planned("ckpts/dangling.bin", "A"), planned("ckpts/deleted.bin", "A")), models={})
    result = measure(plan, wan, hf_cache=tmp_path / "hub", invokeai=None, families={})
    assert result == {"by": "model", "rows": [], "total_bytes": 0, "filesystems": []}
