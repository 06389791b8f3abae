"""``wangpctl unused`` and ``wangpctl prune``: what no kept model needs, and removing exactly what wangpd made.

The end-to-end test runs a real daemon, the fake Hub, the real ``hf`` CLI (``hf download``, ``hf cache verify``)
and InvokeAI's real schema; the unit tests build the HF-cache situations where a blob must stay.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from conftest import DaemonProcess, invokeai_db, serve_models, wait_for
from wangpd import prune
from wangpd.models import Made

HF = "https://huggingface.co/Org/Repo/resolve/main/"


def write_model(wan: Path, model_type: str, urls: list[str], preload: list[str]) -> None:
    model = {"name": model_type, "architecture": "testarch", "URLs": [HF + u for u in urls]}
    if preload:
        model["preload_URLs"] = [HF + u for u in preload]
    (wan / "defaults" / f"{model_type}.json").write_text(json.dumps({"model": model}))


def blocks(path: Path) -> int:
    return os.stat(path).st_blocks * 512


def freed_by(*paths: Path) -> int:
    """Bytes on disk of the paths themselves: a long symlink takes a block of its own."""
    return sum(os.lstat(p).st_blocks * 512 for p in paths)


def snapshot_of(blob: Path) -> Path:
    [link] = [p for p in (blob.parent.parent / "snapshots").rglob("*") if p.is_symlink() and p.resolve() == blob]
    return link


def hf(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    cli = Path(sys.executable).parent / "hf"
    return subprocess.run([str(cli), *args], capture_output=True, text=True, env=env, timeout=120)


def test_prune_removes_only_what_wangpd_made_and_nothing_comes_back(
    daemon_factory: Callable[..., DaemonProcess], fake_hub: Any, wan2gp: Path, tmp_path: Path
) -> None:
    for old in (wan2gp / "defaults").glob("*.json"):
        old.unlink()
    write_model(wan2gp, "ma", ["a.safetensors"], ["s.safetensors"])  # A and B share s
    write_model(wan2gp, "mb", ["b.safetensors"], ["s.safetensors"])
    write_model(wan2gp, "mc", ["c.safetensors"], ["c_vae.safetensors"])
    served = serve_models(fake_hub, wan2gp, size=40_000)
    cache = tmp_path / "hfcache"
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_ENDPOINT": fake_hub.endpoint}
    # b.safetensors is already in the HF cache, fetched by another tool: wangpd links it, the blob is not its own.
    got = hf(env, "download", "Org/Repo", "b.safetensors")
    assert got.returncode == 0, got.stderr
    [snapshot] = (cache / "models--Org--Repo" / "snapshots").glob("*/b.safetensors")
    hf_blob = Path(os.path.realpath(snapshot))
    # The user's own c.safetensors, c_vae in InvokeAI, and an old file no definition names.
    own = wan2gp / "ckpts" / "c.safetensors"
    own.write_bytes(served["ckpts/c.safetensors"].content())
    orphan = wan2gp / "ckpts" / "wan2.0_old_model.safetensors"
    orphan.write_bytes(b"o" * 5000)
    models_dir = tmp_path / "invokeai" / "models"
    vae = served["ckpts/c_vae.safetensors"]
    db = invokeai_db(tmp_path, models_dir, HF + "c_vae.safetensors", "c_vae.safetensors", vae.size)
    invokeai_file = next(models_dir.iterdir()) / "c_vae.safetensors"
    invokeai_file.write_bytes(vae.content())

    daemon = daemon_factory(
        hub={"endpoint": fake_hub.endpoint},
        invokeai_db=str(db),
        invokeai_models_dir=str(models_dir),
        auto_queue={"track": "all", "require_approval": False, "max_auto_bytes": "1GB"},
        watch={"enabled": True, "debounce": "50ms", "reconcile_interval": "1h"},
    ).start()

    def settled() -> bool:
        counts = daemon.ctl_json("status")["counts"]
        return counts["queued"] + counts["downloading"] == 0 and counts["complete"] > 0

    wait_for(settled, timeout=60, interval=0.2, what="the kept models to be complete")
    assert daemon.ctl_json("status")["counts"]["failed"] == 0, daemon.ctl("queue").stdout
    ckpts = wan2gp / "ckpts"
    a_blob, s_blob = (Path(os.path.realpath(ckpts / n)) for n in ("a.safetensors", "s.safetensors"))
    assert a_blob.is_relative_to(cache) and s_blob.is_relative_to(cache)
    assert os.path.realpath(ckpts / "b.safetensors") == str(hf_blob)
    assert os.path.realpath(ckpts / "c_vae.safetensors") == str(invokeai_file.resolve())

    # Everything is kept: the only unneeded file is the orphan, and it is not wangpd's.
    unused = daemon.ctl_json("unused")
    assert [(r["local"], r["reason"], r["removable"]) for r in unused["rows"]] == [
        ("ckpts/wan2.0_old_model.safetensors", "orphan", False)
    ]
    assert unused["frees"] == 0 and unused["bytes"] == blocks(orphan)

    # A dry run lists exactly A's own file, frees its blob, and changes nothing.
    dry = daemon.ctl_json("prune", "ma", "--dry-run")
    assert [(r["local"], r["reason"]) for r in dry["rows"] if r["removable"]] == [("ckpts/a.safetensors", "dropped")]
    a_freed = freed_by(a_blob, ckpts / "a.safetensors", snapshot_of(a_blob))
    assert dry["frees"] == a_freed
    assert (ckpts / "a.safetensors").is_symlink() and a_blob.exists()
    assert {m["type"]: m["tracked"] for m in daemon.ctl_json("models", "--all")["models"]}["ma"] == "all"

    done = daemon.ctl_json("prune", "ma", "--yes")
    assert done["freed"] == a_freed == dry["frees"]
    assert str(ckpts / "a.safetensors") in done["removed"] and str(a_blob) in done["removed"]
    assert not os.path.lexists(ckpts / "a.safetensors") and not a_blob.exists()
    assert (ckpts / "s.safetensors").exists() and s_blob.exists(), "B still needs s"

    # B: its link to the other tool's blob goes, the blob stays; s (now needed by no one) goes with its blob.
    s_blocks = freed_by(s_blob, ckpts / "s.safetensors", snapshot_of(s_blob), ckpts / "b.safetensors")
    done = daemon.ctl_json("prune", "mb", "--yes")
    assert set(done["removed"]) >= {str(ckpts / "b.safetensors"), str(ckpts / "s.safetensors"), str(s_blob)}
    assert hf_blob.exists() and str(hf_blob) not in done["removed"]
    assert done["freed"] == s_blocks and not s_blob.exists()

    # Without --yes and without a terminal, prune asks for --yes and removes nothing.
    asked = daemon.ctl("prune", "mc", check=False)
    assert asked.returncode == 2 and "--yes" in asked.stderr and (ckpts / "c_vae.safetensors").exists()

    # C: the user's own file and the InvokeAI file are never removed; wangpd's link to InvokeAI's file is.
    done = daemon.ctl_json("prune", "mc", "--yes")
    assert own.read_bytes() == served["ckpts/c.safetensors"].content() and not own.is_symlink()
    assert invokeai_file.exists()
    assert str(ckpts / "c_vae.safetensors") in done["removed"]
    kept_notes = {r["local"]: r["note"] for r in done["rows"] if not r["removable"]}
    assert "ckpts/c.safetensors" in kept_notes
    assert orphan.exists()

    # The cache stays valid for huggingface_hub, and nothing is fetched back (watcher and reconcile).
    verify = hf(env, "cache", "verify", "Org/Repo")
    assert verify.returncode == 0, verify.stdout + verify.stderr
    before = len(fake_hub.requests)
    daemon.ctl_json("rescan")
    status = daemon.ctl_json("status")
    assert status["counts"]["queued"] + status["counts"]["downloading"] + status["counts"]["needs_approval"] == 0
    assert not [r for r in fake_hub.requests[before:] if r.method == "GET"]
    tracked = {m["type"]: m["tracked"] for m in daemon.ctl_json("models", "--all")["models"]}
    assert tracked == {"ma": None, "mb": None, "mc": None}
    assert "pruned" in daemon.log()


# ---- the rules, on hand-built HF caches ------------------------------------------------------------------------


def cache_file(cache: Path, name: str, data: bytes, commit: str = "c" * 40) -> tuple[Path, Path]:
    """A blob and its snapshot link, as huggingface_hub lays them out; returns (blob, snapshot)."""
    repo = cache / "models--Org--Repo"
    blob = repo / "blobs" / f"{name}-blob"
    blob.parent.mkdir(parents=True, exist_ok=True)
    blob.write_bytes(data)
    snapshot = repo / "snapshots" / commit / name
    snapshot.parent.mkdir(parents=True, exist_ok=True)
    snapshot.symlink_to(os.path.relpath(blob, snapshot.parent))
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    return blob, snapshot


def wants(root: Path, named: dict[str, tuple[str, ...]], needed: set[str] = frozenset()) -> prune.Wants:
    return prune.Wants(
        root=root,
        needed=frozenset(needed),
        named_by=named,
        variants=frozenset(),
        refused=frozenset({"x"}),
        gone={},
        orphan_roots=("ckpts",),
    )


def setup(tmp_path: Path) -> tuple[Path, Path, Path, Path, list[Made]]:
    root, cache = tmp_path / "wan", tmp_path / "hub"
    (root / "ckpts").mkdir(parents=True)
    blob, snapshot = cache_file(cache, "f.bin", b"f" * 9000)
    link = root / "ckpts" / "f.bin"
    link.symlink_to(snapshot)
    records = [*prune.made_blob(snapshot, "Org/Repo", 1), prune.made_link(link, "symlink", 1)]
    return root, cache, blob, link, records


def survey(root: Path, cache: Path, records: list[Made], needed: set[str] = frozenset()) -> prune.Survey:
    return prune.survey(wants(root, {"ckpts/f.bin": ("x",)}, needed), records, hf_cache=cache, invokeai=None)


def test_a_blob_goes_with_its_snapshot_and_the_emptied_commit_takes_its_ref(tmp_path: Path) -> None:
    root, cache, blob, link, records = setup(tmp_path)
    found = survey(root, cache, records)
    [row] = found.rows
    snapshot = cache / "models--Org--Repo" / "snapshots" / ("c" * 40) / "f.bin"
    assert (row.local, row.reason, row.made) == ("ckpts/f.bin", "dropped", True)
    assert row.frees == freed_by(blob, link, snapshot)
    removed, skipped = prune.remove(found.removal([row]), found.ours, found.cache_root)
    assert skipped == [] and str(blob) in removed and not os.path.lexists(link)
    assert not (cache / "models--Org--Repo").exists(), "empty snapshot, ref and repo folders go too"


def test_a_blob_another_snapshot_uses_stays(tmp_path: Path) -> None:
    root, cache, blob, _link, records = setup(tmp_path)
    other = cache / "models--Org--Repo" / "snapshots" / ("d" * 40) / "f.bin"  # hf download of another revision
    other.parent.mkdir(parents=True)
    other.symlink_to(os.path.relpath(blob, other.parent))
    found = survey(root, cache, records)
    removal = found.removal(found.rows)
    assert removal.paths == [str(root / "ckpts" / "f.bin")] and removal.frees == freed_by(root / "ckpts" / "f.bin")
    prune.remove(removal, found.ours, found.cache_root)
    assert blob.exists() and other.exists()


def test_a_blob_with_a_hard_link_wangpd_does_not_know_stays(tmp_path: Path) -> None:
    root, cache, blob, _link, records = setup(tmp_path)
    os.link(blob, tmp_path / "elsewhere.bin")
    found = survey(root, cache, records)
    assert str(blob) not in found.removal(found.rows).paths


def test_a_blob_a_needed_path_still_leads_to_stays(tmp_path: Path) -> None:
    root, cache, blob, _link, records = setup(tmp_path)
    (root / "ckpts" / "g.bin").symlink_to(blob)  # another kept model's path to the same blob
    found = prune.survey(
        wants(root, {"ckpts/f.bin": ("x",), "ckpts/g.bin": ("y",)}, {"ckpts/g.bin"}),
        records,
        hf_cache=cache,
        invokeai=None,
    )
    assert [r.local for r in found.rows] == ["ckpts/f.bin"]
    assert str(blob) not in found.removal(found.rows).paths


def test_a_link_replaced_by_the_user_is_not_wangpds_any_more(tmp_path: Path) -> None:
    root, cache, blob, link, records = setup(tmp_path)
    link.unlink()
    link.write_bytes(b"the user's own")
    found = survey(root, cache, records)
    row = next(r for r in found.rows if r.local == "ckpts/f.bin")
    assert not row.made and row.note and str(link) in {r.path for r in found.stale}
    # Its blob is no longer linked from anywhere: listed as wangpd's own, removable.
    blob_row = next(r for r in found.rows if r.kind == "blob")
    assert (blob_row.path, blob_row.reason, blob_row.made) == (str(blob), "unlinked", True)
    prune.remove(found.removal([row, blob_row]), found.ours, found.cache_root)
    assert link.read_bytes() == b"the user's own" and not blob.exists()


def test_a_file_changed_between_survey_and_removal_is_left_alone(tmp_path: Path) -> None:
    root, cache, _blob, link, records = setup(tmp_path)
    found = survey(root, cache, records)
    link.unlink()
    link.write_bytes(b"put there meanwhile")
    removed, skipped = prune.remove(found.removal(found.rows), found.ours, found.cache_root)
    assert str(link) not in removed and any("no longer what wangpd made" in s for s in skipped)
    assert link.read_bytes() == b"put there meanwhile"


def test_needed_files_are_never_listed(tmp_path: Path) -> None:
    root, cache, _blob, _link, records = setup(tmp_path)
    assert survey(root, cache, records, {"ckpts/f.bin"}).rows == []


def test_jobs_completed_before_records_were_kept_are_adopted_conservatively(tmp_path: Path) -> None:
    root, cache = tmp_path / "wan", tmp_path / "hub"
    (root / "ckpts").mkdir(parents=True)
    blob, snapshot = cache_file(cache, "f.bin", b"f" * 100)
    _other_blob, other_snapshot = cache_file(cache, "g.bin", b"g" * 100)
    downloaded, linked, copied = (root / "ckpts" / n for n in ("f.bin", "g.bin", "h.bin"))
    downloaded.symlink_to(snapshot)
    linked.symlink_to(other_snapshot)
    copied.write_bytes(b"g" * 100)  # link_mode copy, or the user's own file: cannot be told apart
    jobs = [
        (1, str(downloaded), "download", "Org/Repo"),
        (2, str(linked), "hf-cache", "Org/Repo"),
        (3, str(copied), "download", "Org/Repo"),
    ]
    records = {(r.path, r.kind) for r in prune.adopt(jobs, set(), cache)}
    assert records == {
        (str(downloaded), "link"),
        (str(blob), "blob"),
        (str(snapshot), "snapshot"),
        (str(linked), "link"),  # the link is wangpd's; the blob it found in the cache is not
    }
    assert prune.adopt(jobs, {p for p, _ in records}, cache) == [], "adopted once"


def test_each_unneeded_file_says_why(tmp_path: Path) -> None:
    root, cache = tmp_path / "wan", tmp_path / "hub"
    ckpts = root / "ckpts"
    (ckpts / "sub").mkdir(parents=True)
    names = ("kept.bin", "other_variant.bin", "dropped.bin", "gone.bin", "not_kept.bin", "sub/orphan.bin")
    for name in names:
        (ckpts / name).write_bytes(b"x" * 5000)
    (ckpts / ".hidden_temp").write_bytes(b"t")
    wants = prune.Wants(
        root=root,
        needed=frozenset({"ckpts/kept.bin"}),
        named_by={
            "ckpts/kept.bin": ("k",),
            "ckpts/other_variant.bin": ("k",),
            "ckpts/dropped.bin": ("d",),
            "ckpts/not_kept.bin": ("n",),
        },
        variants=frozenset({"ckpts/other_variant.bin"}),
        refused=frozenset({"d"}),
        gone={"ckpts/gone.bin": ("g",)},
        orphan_roots=("ckpts",),
    )
    found = prune.survey(wants, [], hf_cache=cache, invokeai=None)
    assert {r.local: (r.reason, r.models, r.made, r.location) for r in found.rows} == {
        "ckpts/other_variant.bin": ("variant", ["k"], False, "wan2gp"),
        "ckpts/dropped.bin": ("dropped", ["d"], False, "wan2gp"),
        "ckpts/gone.bin": ("gone", ["g"], False, "wan2gp"),
        "ckpts/not_kept.bin": ("not-kept", ["n"], False, "wan2gp"),
        "ckpts/sub/orphan.bin": ("orphan", [], False, "wan2gp"),
    }
    assert all(r.note and r.frees == 0 for r in found.rows), "none is wangpd's: nothing to free"
    assert found.removal(found.rows).paths == []


def test_an_unlinked_blob_another_snapshot_or_hard_link_uses_is_not_removable(tmp_path: Path) -> None:
    root, cache, blob, link, records = setup(tmp_path)
    link.unlink()  # no Wan2GP path leads to the blob any more: an "unlinked" row
    other = cache / "models--Org--Repo" / "snapshots" / ("d" * 40) / "f.bin"  # hf reused it for a new commit
    other.parent.mkdir(parents=True)
    other.symlink_to(os.path.relpath(blob, other.parent))
    found = survey(root, cache, records)
    [row] = [r for r in found.rows if r.kind == "blob"]
    assert not row.made and "another snapshot" in (row.note or "") and row.frees == 0
    assert str(blob) not in found.removal(found.rows).paths
    other.unlink()
    os.link(blob, tmp_path / "hard.bin")  # a hard link wangpd does not know of
    found = survey(root, cache, records)
    assert [r.made for r in found.rows if r.kind == "blob"] == [False]


def test_a_file_put_where_wangpds_copy_was_is_not_wangpds_even_on_the_same_inode(tmp_path: Path) -> None:
    target = tmp_path / "ckpts" / "copy.bin"
    target.parent.mkdir()
    target.write_bytes(b"c" * 4096)
    record = prune.made_link(target, "copy", 1)
    assert prune.still_ours(record)
    target.unlink()
    target.write_bytes(b"the user's own file")  # ext4 usually hands it the freed inode number
    assert not prune.still_ours(record)


def test_nothing_is_removed_when_any_planned_path_changed_since_the_survey(tmp_path: Path) -> None:
    root, cache, blob, link, records = setup(tmp_path)
    found = survey(root, cache, records)
    removal = found.removal(found.rows)
    assert set(removal.paths) >= {str(link), str(blob)}
    link.unlink()
    link.symlink_to(tmp_path / "the user's own target")  # replaced by the user between survey and removal
    removed, skipped = prune.remove(removal, found.ours, found.cache_root)
    assert removed == [] and skipped and blob.exists(), "the blob stays: the plan was made for the old link"


def test_a_hard_linked_copy_frees_its_blob_with_it(tmp_path: Path) -> None:
    root, cache = tmp_path / "wan", tmp_path / "hub"
    (root / "ckpts").mkdir(parents=True)
    blob, snapshot = cache_file(cache, "h.bin", b"h" * 9000)
    target = root / "ckpts" / "h.bin"
    os.link(blob, target)  # download.link_mode: hardlink
    records = [*prune.made_blob(snapshot, "Org/Repo", 1), prune.made_link(target, "hardlink", 1)]
    found = prune.survey(wants(root, {"ckpts/h.bin": ("x",)}), records, hf_cache=cache, invokeai=None)
    [row] = found.rows
    assert row.made and str(blob) in row.removes and row.frees == freed_by(blob, snapshot)
    prune.remove(found.removal([row]), found.ours, found.cache_root)
    assert not blob.exists() and not target.exists()


def test_the_blobs_of_a_job_still_running_are_never_unlinked(tmp_path: Path) -> None:
    root, cache, _blob, link, records = setup(tmp_path)
    link.unlink()  # e.g. a whole folder being fetched: its blobs come before its links
    base = wants(root, {"ckpts/f.bin": ("x",)})
    assert [r.kind for r in prune.survey(base, records, hf_cache=cache, invokeai=None).rows] == ["blob"]
    protected = dataclasses.replace(base, protected_jobs=frozenset({1}))
    assert prune.survey(protected, records, hf_cache=cache, invokeai=None).rows == []


def test_an_emptied_repo_keeps_its_snapshots_folder_while_another_download_is_in_its_blobs(tmp_path: Path) -> None:
    root, cache, blob, _link, records = setup(tmp_path)
    part = blob.parent / ("e" * 64 + ".incomplete")
    part.write_bytes(b"half of another file")  # another download, under way
    found = survey(root, cache, records)
    prune.remove(found.removal(found.rows), found.ours, found.cache_root)
    repo = cache / "models--Org--Repo"
    assert part.exists() and (repo / "snapshots").is_dir(), "a repo folder without snapshots/ is corrupt"
    assert not (repo / "refs" / "main").exists(), "the ref to the removed commit goes"


def test_a_folder_of_links_goes_whole_and_one_holding_a_users_file_stays(tmp_path: Path) -> None:
    root, cache = tmp_path / "wan", tmp_path / "hub"
    folder = root / "ckpts" / "encoder"
    (folder / "sub").mkdir(parents=True)
    blob_a, snap_a = cache_file(cache, "a.json", b"a" * 5000)
    blob_b, snap_b = cache_file(cache, "b.bin", b"b" * 7000)
    (folder / "a.json").symlink_to(snap_a)
    (folder / "sub" / "b.bin").symlink_to(snap_b)
    records = [*prune.made_blob(snap_a, "Org/Repo", 1), *prune.made_blob(snap_b, "Org/Repo", 1)]
    records.append(prune.made_folder(folder, 1))
    named = {"ckpts/encoder": ("x",)}
    base = dataclasses.replace(wants(root, named), folders=frozenset({"ckpts/encoder"}))
    found = prune.survey(base, records, hf_cache=cache, invokeai=None)
    [row] = found.rows
    assert (row.kind, row.made) == ("folder", True)
    assert set(row.removes) >= {str(folder), str(blob_a), str(blob_b)}

    (folder / "notes.txt").write_text("the user's")  # put into wangpd's folder afterwards
    found = prune.survey(base, records, hf_cache=cache, invokeai=None)
    [row] = found.rows
    assert not row.made and row.note, "changed since wangpd made it: not its to remove"
    removed, _ = prune.remove(found.removal(found.rows), found.ours, found.cache_root)
    assert removed == [] and (folder / "notes.txt").exists() and blob_a.exists()
