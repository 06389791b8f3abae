"""The keeper on its own (no daemon, no engine): real catalog, real SQLite, a ``wake`` that counts."""

from __future__ import annotations

import asyncio
from pathlib import Path

from conftest import write_config
from wangpd.config import load_config
from wangpd.events import EventBus
from wangpd.keeper import Keeper
from wangpd.models import FileMeta, JobState
from wangpd.store import Store


def build_keeper(tmp_path: Path, wan2gp: Path, **sections: object) -> tuple[Keeper, Store, list[int]]:
    config = load_config(write_config(tmp_path, wan2gp, tmp_path, **sections), environ={"HOME": str(tmp_path)})
    store = Store.open(config.daemon.db_path)
    woken: list[int] = []
    # sources=None: nothing is linkable and sizes stay unknown, as for an offline Hub.
    keeper = Keeper(config, store, EventBus(), None, wake=lambda: woken.append(1))
    return keeper, store, woken


def test_automatic_queueing_wakes_the_engine(tmp_path: Path, wan2gp: Path) -> None:
    # The automatic path used to leave the engine to its 1 s fallback poll; every queueing path now wakes it.
    keeper, store, woken = build_keeper(
        tmp_path,
        wan2gp,
        auto_queue={"track": "all", "require_approval": False, "max_auto_bytes": "10TB"},
        download={"free_space_reserve": "0"},
    )
    _, plan = asyncio.run(keeper.current())
    for planned in plan.files:  # sizes known (as after a survey), so the batch fits the cap and starts unasked
        wanted = planned.file
        store.put_meta(
            FileMeta(wanted.repo or "", wanted.revision, wanted.path_in_repo or wanted.url, 1000, None, "e", None)
        )
    summary = asyncio.run(keeper.refresh(why="test"))
    assert summary["queued"] > 0 and not summary["approval"], summary
    assert store.counts()["queued"] == summary["queued"]
    assert woken, "queued automatically, but the engine was not woken"


def test_held_batch_wakes_only_when_approved(tmp_path: Path, wan2gp: Path) -> None:
    keeper, store, woken = build_keeper(tmp_path, wan2gp, auto_queue={"track": "all", "require_approval": True})
    summary = asyncio.run(keeper.refresh(why="test"))
    assert summary["approval"] and store.counts()["needs_approval"] > 0
    assert not woken, "nothing may start while the batch waits for approval"
    keeper.decide_batch(None, approve=True)
    assert woken and store.counts()["needs_approval"] == 0
    assert {j.state for j in store.list_jobs()} == {JobState.QUEUED}


def test_manual_add_wakes_the_engine(tmp_path: Path, wan2gp: Path) -> None:
    keeper, store, woken = build_keeper(tmp_path, wan2gp)
    asyncio.run(keeper.add_models(["t2v"], all_variants=False, dry_run=True, priority=0))
    assert not woken and store.counts()["queued"] == 0  # a dry run queues nothing
    result = asyncio.run(keeper.add_models(["t2v"], all_variants=False, dry_run=False, priority=0))
    assert result["files"] > 0 and woken
