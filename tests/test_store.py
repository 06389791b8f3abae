"""The queue database: schema, guarded transitions, recovery, settings, metadata cache."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from wangpd.errors import BadState, InvalidParams, NotFound, StoreError
from wangpd.models import TRANSITIONS, FileMeta, JobSpec, JobState
from wangpd.store import SCHEMA_VERSION, Store

S = JobState


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store.open(tmp_path / "state" / "hfcache.db")


def spec(name: str = "a.safetensors", **kw: object) -> JobSpec:
    return JobSpec(
        url=f"https://huggingface.co/Org/Repo/resolve/main/{name}",
        target=f"/w/ckpts/{name}",
        repo="Org/Repo",
        path=name,
        **kw,  # type: ignore[arg-type]
    )


def test_schema_has_the_seed_tables_in_wal_mode(store: Store, tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "state" / "hfcache.db")
    tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"download_queue", "hf_file_cache", "settings", "keep_set", "made", "library_hashes"} <= tables
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 3


def test_add_is_idempotent_per_target_and_merges_wanted_by(store: Store) -> None:
    job, created = store.add_job(spec(wanted_by=("t2v",)))
    assert created and job.state is S.QUEUED and job.wanted_by == ("t2v",)
    again, created = store.add_job(spec(wanted_by=("i2v",)))
    assert not created and again.id == job.id and again.wanted_by == ("i2v", "t2v")


def test_add_revives_a_cancelled_job(store: Store) -> None:
    job, _ = store.add_job(spec())
    store.transition(job.id, S.CANCELLED)
    again, created = store.add_job(spec())
    assert not created and again.state is S.QUEUED


def test_every_transition_outside_the_table_is_refused(store: Store) -> None:
    for start in JobState:
        for target in JobState:
            job, _ = store.add_job(spec(f"{start}-{target}.bin"))
            # Walk the job to `start` through allowed steps.
            path = {
                S.QUEUED: [],
                S.NEEDS_APPROVAL: None,
                S.DOWNLOADING: [S.DOWNLOADING],
                S.PAUSED: [S.PAUSED],
                S.COMPLETE: [S.COMPLETE],
                S.FAILED: [S.FAILED],
                S.CANCELLED: [S.CANCELLED],
            }[start]
            if path is None:
                store._db.execute("DELETE FROM download_queue WHERE id=?", (job.id,))
                job, _ = store.add_job(spec(f"{start}-{target}.bin"), state=S.NEEDS_APPROVAL)
            else:
                for step in path:
                    job = store.transition(job.id, step)
            assert job.state is start
            if start in TRANSITIONS[target]:
                assert store.transition(job.id, target).state is target
            else:
                with pytest.raises(BadState, match=f"is {start.value}; it cannot become {target.value}"):
                    store.transition(job.id, target)
                assert store.get_job(job.id).state is start


def test_transition_unknown_job(store: Store) -> None:
    with pytest.raises(NotFound):
        store.transition(999, S.PAUSED)


def test_claim_next_follows_priority_then_age(store: Store) -> None:
    first, _ = store.add_job(spec("1.bin"))
    second, _ = store.add_job(spec("2.bin", priority=5))
    third, _ = store.add_job(spec("3.bin"))
    claimed = [store.claim_next(), store.claim_next(), store.claim_next(), store.claim_next()]
    assert [job.id if job else None for job in claimed] == [second.id, first.id, third.id, None]
    assert all(job.state is S.DOWNLOADING and job.attempts == 1 for job in claimed if job)


def test_recover_puts_downloading_back_to_queued_and_keeps_progress(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "q.db")
    job, _ = store.add_job(spec())
    store.claim_next()
    store.update_progress(job.id, 12345, 1e6, size=99999)
    store.close()
    reopened = Store.open(tmp_path / "q.db")
    recovered = reopened.recover()
    assert [j.id for j in recovered] == [job.id]
    job = reopened.get_job(job.id)
    assert job.state is S.QUEUED and job.bytes_done == 12345 and job.size == 99999 and job.speed == 0


def test_progress_only_applies_while_downloading(store: Store) -> None:
    job, _ = store.add_job(spec())
    store.update_progress(job.id, 10, 1.0)
    assert store.get_job(job.id).bytes_done == 0


def test_clear_groups(store: Store) -> None:
    ids = {}
    for name, state in [("c", S.COMPLETE), ("f", S.FAILED), ("x", S.CANCELLED), ("q", S.QUEUED)]:
        job, _ = store.add_job(spec(name))
        if state is not S.QUEUED:
            job = store.transition(job.id, state)
        ids[name] = job.id
    assert store.clear("complete") == 1
    assert store.clear("failed") == 2
    assert store.clear("all") == 0
    assert [j.id for j in store.list_jobs()] == [ids["q"]]
    with pytest.raises(InvalidParams):
        store.clear("queued")


def test_counts_filters_and_paging(store: Store) -> None:
    for index in range(25):
        store.add_job(spec(f"{index}.bin", wanted_by=("t2v",) if index % 2 else ("flux",)))
    assert store.counts()["queued"] == 25 and store.counts()["failed"] == 0
    assert store.count_jobs(model="t2v") == 12
    page = store.list_jobs(limit=10, offset=20)
    assert len(page) == 5
    assert all("flux" in job.wanted_by for job in store.list_jobs(model="flux"))


def test_priority_top_bottom(store: Store) -> None:
    a, _ = store.add_job(spec("a"))
    b, _ = store.add_job(spec("b"))
    assert store.set_priority(b.id, "top").priority == 1
    assert store.set_priority(a.id, "bottom").priority == -1
    assert store.claim_next().id == b.id  # type: ignore[union-attr]


def test_settings_and_the_keep_set_survive_reopen(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "q.db")
    store.set_setting("paused", True)
    store.set_setting("manual_limit", [1000, time.time()])
    store.keep("t2v", "manual")
    store.keep("t2v", "new")  # never downgrades a manual choice
    store.close()
    store = Store.open(tmp_path / "q.db")
    assert store.get_setting("paused") is True
    assert store.get_setting("manual_limit")[0] == 1000
    assert {t: e.reason for t, e in store.keep_set().items()} == {"t2v": "manual"}


def test_metadata_cache_respects_age(store: Store) -> None:
    meta = FileMeta("Org/Repo", "main", "a.bin", 10, "ab" * 32, "etag", "c" * 40, fetched_at=time.time() - 100)
    store.put_meta(meta)
    assert store.get_meta("Org/Repo", "main", "a.bin", max_age=1000) == meta
    assert store.get_meta("Org/Repo", "main", "a.bin", max_age=10) is None
    assert store.known_sizes() == {("Org/Repo", "main", "a.bin"): 10}


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version=99")
    db.close()
    with pytest.raises(StoreError, match="newer than this wangpd"):
        Store.open(path)


def test_not_a_database_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match=r"q\.db"):
        Store.open(path)


def test_job_dicts_match_job_to_dict(store: Store) -> None:
    for index in range(5):
        store.add_job(spec(f"{index}.bin", wanted_by=("t2v", "flux"), priority=index % 2))
    store.claim_next()
    store.update_progress(1, 123, 4567.891)
    assert store.list_job_dicts() == [job.to_dict() for job in store.list_jobs()]
    assert store.list_job_dicts(["queued"], model="t2v", limit=2, offset=1) == [
        job.to_dict() for job in store.list_jobs(["queued"], model="t2v", limit=2, offset=1)
    ]


def test_requeue_leaves_a_job_the_user_changed_meanwhile(store: Store) -> None:
    job, _ = store.add_job(spec("r.bin"))
    store.claim_next()
    store.transition(job.id, S.CANCELLED)  # cancelled while the engine was stopping it
    assert store.requeue_if_downloading(job.id) is False
    assert store.get_job(job.id).state is S.CANCELLED
    other, _ = store.add_job(spec("s.bin"))
    store.claim_next()
    assert store.requeue_if_downloading(other.id) is True and store.get_job(other.id).state is S.QUEUED


def test_adding_by_hand_approves_a_held_file(store: Store) -> None:
    held, _ = store.add_job(spec("h.bin", batch="b1"), state=S.NEEDS_APPROVAL)
    again, created = store.add_job(spec("h.bin"))
    assert not created and again.id == held.id and again.state is S.QUEUED and again.batch is None


def test_every_state_write_goes_through_the_table(store: Store) -> None:
    # recover, requeue_if_downloading and claim_next used to write states with SQL of their own; they now go
    # through the one guarded update, which refuses a pair the table does not allow before touching the database.
    job, _ = store.add_job(JobSpec(url="u", target="/t/x"))
    with pytest.raises(ValueError, match="complete -> downloading"):
        store._move(JobState.DOWNLOADING, {JobState.COMPLETE})
    assert store.get_job(job.id).state is JobState.QUEUED
    claimed = store.claim_next()
    assert claimed is not None and claimed.state is JobState.DOWNLOADING and claimed.attempts == 1
    assert claimed.started_at is not None and claimed.finished_at is None
    assert store.requeue_if_downloading(job.id) and store.get_job(job.id).speed == 0
    assert not store.requeue_if_downloading(job.id)  # already queued: nothing to do
    assert store.claim_next().attempts == 2
    assert [j.id for j in store.recover()] == [job.id] and store.get_job(job.id).state is JobState.QUEUED


def test_the_store_refuses_a_use_from_another_thread(store: Store) -> None:
    # One connection, used from the event loop's thread: a worker thread that reached for it would race the loop.
    import threading

    errors: list[BaseException] = []

    def reach() -> None:
        try:
            store.counts()
        except Exception as exc:
            errors.append(exc)

    worker = threading.Thread(target=reach)
    worker.start()
    worker.join(10)
    assert errors and "thread" in str(errors[0])


def test_v1_tracked_models_become_the_keep_set(tmp_path: Path) -> None:
    # A queue database of the first release (schema 1): what was added by hand stays manual (with its variant
    # choice); an automatically tracked new model stays kept, as 'new'.
    from wangpd.store import _MIGRATIONS

    path = tmp_path / "hfcache.db"
    db = sqlite3.connect(path)
    db.executescript(_MIGRATIONS[0] + ";PRAGMA user_version=1;")
    db.executemany(
        "INSERT INTO tracked_models VALUES (?,?,?)",
        [("t2v", "manual", 10.0), ("flux", "manual-all", 20.0), ("x", "auto", 30.0)],
    )
    db.commit()
    db.close()
    store = Store.open(path)
    kept = store.keep_set()
    assert {t: (e.reason, e.all_variants, e.since) for t, e in kept.items()} == {
        "t2v": ("manual", False, 10.0),
        "flux": ("manual", True, 20.0),
        "x": ("new", False, 30.0),
    }
    assert store._db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_keep_reasons_only_strengthen_and_refusals_hold(store: Store) -> None:
    store.keep("t2v", "installed")
    first = store.keep_set()["t2v"]
    store.keep("t2v", "used")
    assert store.keep_set()["t2v"].reason == "used" and store.keep_set()["t2v"].since == first.since
    store.keep("t2v", "installed")  # weaker: the stronger reason stays
    assert store.keep_set()["t2v"].reason == "used"
    store.refuse("t2v", "dropped")
    assert not store.keep_set()["t2v"].kept
    store.keep("t2v", "used")  # an automatic signal never overrides the user's no
    assert store.keep_set()["t2v"].reason == "dropped"
    store.keep("t2v", "manual", all_variants=True)  # wangpctl add does
    entry = store.keep_set()["t2v"]
    assert entry.kept and entry.reason == "manual" and entry.all_variants and entry.since > first.since
    store.keep("t2v", "new")  # all_variants untouched when not given
    assert store.keep_set()["t2v"].all_variants
    store.set_kept_files({"t2v": ["ckpts/b", "ckpts/a"]})
    store.mark_gone(["t2v"])
    entry = store.keep_set()["t2v"]
    assert entry.files == ("ckpts/a", "ckpts/b") and entry.gone_at is not None
    with pytest.raises(ValueError):
        store.keep("t2v", "because")


def test_damaged_pages_behind_an_intact_header_are_found_at_open(tmp_path: Path) -> None:
    # Issue 15, item 16: the header is fine, a page is not; every call then answered "internal error:
    # DatabaseError" while doctor said the queue was OK. Now open refuses with one line saying what to do.
    path = tmp_path / "hfcache.db"
    store = Store.open(path)
    for index in range(300):
        store.add_job(spec(f"f{index}.safetensors"))
    store.close()
    data = bytearray(path.read_bytes())
    page = 4096
    assert len(data) > 4 * page
    data[2 * page : 3 * page] = b"\xa5" * page  # a b-tree page, not the header
    path.write_bytes(bytes(data))
    for name in ("hfcache.db-wal", "hfcache.db-shm"):
        (tmp_path / name).unlink(missing_ok=True)
    with pytest.raises(StoreError) as caught:
        Store.open(path)
    message = str(caught.value)
    assert "\n" not in message and "is damaged" in message and f"mv {path} {path}.damaged" in message
