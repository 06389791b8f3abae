"""The queue: one SQLite file in WAL mode, all SQL behind :class:`Store`.

Tables keep the seed's names (``download_queue``, ``hf_file_cache``) so its users recognise them. Every state
change (including crash recovery, requeue on halt and claiming) is one ``UPDATE ... WHERE state IN (...)`` built
by ``Store._move`` from the one transition table (:data:`wangpd.models.TRANSITIONS`); :meth:`Store.transition`
raises when nothing matched instead of silently doing nothing.

One connection, used from the event loop's thread only: planning and doctor, which run in worker threads, are
handed what they need from the store before they start.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from wangpd.errors import BadState, InvalidParams, NotFound, StoreError
from wangpd.models import (
    CLEAR_GROUPS,
    FINISHED,
    KEEP_REASONS,
    REFUSALS,
    TRANSITIONS,
    FileMeta,
    Job,
    JobSpec,
    JobState,
    KeepEntry,
    Made,
)

__all__ = ["Store", "StoreError"]

log = logging.getLogger(__name__)

SCHEMA_VERSION = 3


_MIGRATIONS: list[str] = [
    # version 1
    """
    CREATE TABLE download_queue (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        repo        TEXT NOT NULL DEFAULT '',        -- Org/Repo; '' for a plain URL from an allowed host
        revision    TEXT NOT NULL DEFAULT 'main',
        path        TEXT NOT NULL DEFAULT '',        -- path inside the repo
        url         TEXT NOT NULL,                   -- as the definition wrote it (normalised)
        target      TEXT NOT NULL UNIQUE,            -- absolute path where Wan2GP looks; first writer wins
        size        INTEGER,
        sha256      TEXT,
        state       TEXT NOT NULL,
        bytes_done  INTEGER NOT NULL DEFAULT 0,
        speed       REAL NOT NULL DEFAULT 0,
        attempts    INTEGER NOT NULL DEFAULT 0,
        last_error  TEXT,
        priority    INTEGER NOT NULL DEFAULT 0,      -- higher first
        origin      TEXT NOT NULL DEFAULT 'manual',  -- manual | auto
        batch       TEXT,                            -- the automatic batch that queued it (for approve/reject)
        source      TEXT,                            -- how it was completed: download | hf-cache | invokeai | present
        wanted_by   TEXT NOT NULL DEFAULT '[]',      -- JSON list of model types
        created_at  REAL NOT NULL,
        updated_at  REAL NOT NULL,
        started_at  REAL,
        finished_at REAL
    );
    CREATE INDEX download_queue_state ON download_queue(state, priority DESC, id);
    CREATE TABLE hf_file_cache (
        repo       TEXT NOT NULL,
        revision   TEXT NOT NULL,
        path       TEXT NOT NULL,
        size       INTEGER,
        sha256     TEXT,
        etag       TEXT,
        commit_sha TEXT,
        fetched_at REAL NOT NULL,
        PRIMARY KEY (repo, revision, path)
    );
    CREATE TABLE settings (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    CREATE TABLE tracked_models (
        model_type TEXT PRIMARY KEY,
        how        TEXT NOT NULL,                    -- manual | auto
        added_at   REAL NOT NULL
    );
    """,
    # version 2: the remembered keep-set (which models are kept complete, why, since when, with which files).
    # tracked_models rows carry over: added by hand stays manual; 'auto' (a new model type queued) becomes 'new'.
    """
    CREATE TABLE keep_set (
        model_type   TEXT PRIMARY KEY,
        reason       TEXT NOT NULL,               -- manual | transformer_types | queued | used | finetune | include
                                                  -- | new | installed; dropped | rejected = the user said no
        all_variants INTEGER NOT NULL DEFAULT 0,  -- wangpctl add --all-variants: every variant, not the chosen one
        since        REAL NOT NULL,               -- when it joined
        updated_at   REAL NOT NULL,
        files        TEXT NOT NULL DEFAULT '[]',  -- JSON: the local paths of its file set when last planned
        gone_at      REAL                         -- its definition disappeared (reported; it stays until dropped)
    );
    INSERT INTO keep_set (model_type, reason, all_variants, since, updated_at)
        SELECT model_type, CASE how WHEN 'auto' THEN 'new' ELSE 'manual' END, how = 'manual-all', added_at, added_at
        FROM tracked_models;
    DROP TABLE tracked_models;
    """,
    # version 3: what wangpd itself created (links at Wan2GP paths, HF-cache blobs it downloaded), so `prune` can
    # remove exactly that and nothing else; and the sha256 of files in the user's other model libraries.
    """
    CREATE TABLE made (
        path       TEXT PRIMARY KEY,             -- absolute path wangpd created
        kind       TEXT NOT NULL,                -- link | folder | blob | snapshot
        mode       TEXT,                         -- link: symlink | hardlink | copy
        points_to  TEXT,                         -- symlink: its text (os.readlink); blob: repo or URL
        identity   TEXT,                         -- "dev:ino" when made: a file put there later is not ours
        job_id     INTEGER,
        made_at    REAL NOT NULL
    );
    CREATE TABLE library_hashes (
        key        TEXT PRIMARY KEY,             -- "dev:ino:size:mtime_ns" of the file when it was read
        sha256     TEXT NOT NULL,
        path       TEXT NOT NULL,
        hashed_at  REAL NOT NULL
    );
    """,
]

_JOB_COLUMNS = (
    "id, repo, revision, path, url, target, size, sha256, state, bytes_done, speed, attempts, last_error, "
    "priority, origin, batch, source, wanted_by, created_at, updated_at, started_at, finished_at"
)


_COLUMN_ORDER = tuple(name.strip() for name in _JOB_COLUMNS.split(","))
_COLUMN_NAMES = frozenset(_COLUMN_ORDER)


# SQL for "how strong is this reason" (lower is stronger; refusals rank between manual and every automatic reason,
# so only `wangpctl add` lifts them).
_REASON_SQL_RANK = (
    "(CASE {} "
    + " ".join(f"WHEN '{name}' THEN {rank}" for rank, name in enumerate(("manual", *REFUSALS, *KEEP_REASONS[1:])))
    + " ELSE 99 END)"
)


MAX_PRIORITY = 10**9  # far beyond any queue, far below 64 bits: `top` (highest + 1) can never overflow


def _check_priority(value: int) -> int:
    if not -MAX_PRIORITY <= value <= MAX_PRIORITY:
        raise InvalidParams(f"priority must be between -{MAX_PRIORITY} and {MAX_PRIORITY}, got {value}")
    return value


def _assignments(fields: dict[str, Any]) -> tuple[str, list[Any]]:
    """``col=?, ...`` and its values for an UPDATE; refuses names that are not columns (they go into SQL text)."""
    unknown = set(fields) - _COLUMN_NAMES
    if unknown:
        raise ValueError(f"unknown job column {sorted(unknown)[0]}")
    if "wanted_by" in fields:
        fields = {**fields, "wanted_by": json.dumps(sorted(fields["wanted_by"]))}
    return ", ".join(f"{key}=?" for key in fields), list(fields.values())


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_dev, info.st_ino


class _Guarded:
    """The connection, as the store uses it: a write that fails because the database's disk is full (or another
    write error) raises StoreError saying so, and the store remembers it until a write succeeds again. Nothing
    else changes, so a caller that writes before it changes its own state keeps memory and disk agreeing."""

    def __init__(self, connection: sqlite3.Connection, store: Store) -> None:
        self.connection = connection
        self.store = store

    def _run(self, call: Any, sql: str, *args: Any) -> Any:
        try:
            result = call(sql, *args)
        except sqlite3.OperationalError as exc:
            text = str(exc)
            if "full" in text or "disk I/O" in text or "readonly" in text:
                what = "state disk full" if "full" in text else "the queue database cannot be written"
                self.store.write_error = f"{what} ({text})"
                raise StoreError(
                    f"{self.store.path}: {what} ({text}); free space on its disk (or fix its permissions): "
                    "wangpd goes on by itself once it can write again"
                ) from None
            raise
        if self.store.write_error is not None and sql.lstrip()[:6].upper() not in ("SELECT", "PRAGMA"):
            log.warning("the queue database can be written again")
            self.store.write_error = None
        return result

    def execute(self, sql: str, params: Any = ()) -> sqlite3.Cursor:
        return self._run(self.connection.execute, sql, params)

    def executemany(self, sql: str, rows: Any) -> sqlite3.Cursor:
        return self._run(self.connection.executemany, sql, rows)

    def executescript(self, script: str) -> sqlite3.Cursor:
        return self._run(self.connection.executescript, script)

    @property
    def in_transaction(self) -> bool:
        return self.connection.in_transaction

    def close(self) -> None:
        self.connection.close()


class Store:
    """All SQL. One connection, used from the event loop thread only (statements are short)."""

    def __init__(self, connection: sqlite3.Connection, path: Path) -> None:
        self.path = path
        # Set while writes fail (its disk is full); status and doctor say so, the engine waits for it to clear.
        self.write_error: str | None = None
        self._db = _Guarded(connection, self)
        self._identity = _identity(path)

    @classmethod
    def open(cls, path: Path | str) -> Store:
        """Open (creating and migrating as needed) the queue database at ``path``."""
        path = Path(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # check_same_thread stays on: a use of this connection from another thread raises instead of racing.
            connection = sqlite3.connect(path, isolation_level=None)
            connection.execute("PRAGMA journal_mode=WAL")
            # NORMAL is durable enough in WAL mode: a power cut can lose the last progress update, never corrupt.
            connection.execute("PRAGMA synchronous=NORMAL")
            connection.execute("PRAGMA busy_timeout=5000")
            connection.execute("PRAGMA foreign_keys=ON")
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"{path}: cannot open the queue database: {exc}") from None
        store = cls(connection, path)
        try:
            store._check_pages()
            store._migrate()
        except BaseException:
            connection.close()
            raise
        return store

    def _check_pages(self) -> None:
        """Damaged pages behind an intact header would make every later call fail with "DatabaseError" while
        all looks well; ``quick_check`` (a few ms for a big queue) finds them before anything is trusted."""
        try:
            problems = [row[0] for row in self._db.execute("PRAGMA quick_check(5)")]
        except sqlite3.DatabaseError as exc:
            problems = [str(exc)]
        if problems != ["ok"]:
            found = " ".join(" ".join(problems).split())[:200]  # one line: SQLite's report spans several
            raise StoreError(
                f"{self.path}: the queue database is damaged ({found}); move it aside "
                f"(mv {self.path} {self.path}.damaged) and start again: the queue is rebuilt from Wan2GP's "
                "definitions, files already downloaded are found in the HF cache"
            )

    def close(self) -> None:
        self._db.close()

    def gone(self) -> bool:
        """Whether the database file was deleted or replaced under the daemon (``rm hfcache.db``): SQLite would
        go on writing into the unlinked file, and the queue would vanish at the next start."""
        return _identity(self.path) != self._identity

    def reopen(self) -> None:
        """Start a new, empty queue database at the same path (after :meth:`gone`); this object stays the one
        every part holds."""
        fresh = Store.open(self.path)
        self._db.close()
        self._db = _Guarded(fresh._db.connection, self)
        self._identity = fresh._identity
        self.write_error = None

    def probe(self) -> bool:
        """While writes fail: try one small write, so that the store notices by itself when space returns."""
        if self.write_error is None:
            return True
        try:
            self.set_setting("write_probe", time.time())
        except StoreError:
            return False
        return True

    def _migrate(self) -> None:
        try:
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.path}: not a wangpd queue database ({exc})") from None
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path}: schema version {version} is newer than this wangpd ({SCHEMA_VERSION}); upgrade wangpd"
            )
        for number in range(version, SCHEMA_VERSION):
            log.info("migrating %s to schema version %d", self.path, number + 1)
            try:
                # One transaction per version: a crash mid-migration leaves the previous version intact.
                self._db.executescript(
                    "BEGIN IMMEDIATE;" + _MIGRATIONS[number] + f";PRAGMA user_version={number + 1}; COMMIT;"
                )
            except sqlite3.Error as exc:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise StoreError(f"{self.path}: migration to version {number + 1} failed: {exc}") from None

    # ---------------------------------------------------------------------------------------------------------
    # Jobs

    def recover(self) -> list[Job]:
        """Jobs left ``downloading`` by a crash or kill go back to ``queued``; their partial file stays for resume."""
        return self._move(JobState.QUEUED, {JobState.DOWNLOADING})

    def add_job(self, spec: JobSpec, state: JobState = JobState.QUEUED) -> tuple[Job, bool]:
        """Queue ``spec``; returns (job, created). An existing row for the same target is returned, and revived
        to ``state`` when it had been cancelled or failed, with new wanted-by model types merged in."""
        if state not in (JobState.QUEUED, JobState.NEEDS_APPROVAL, JobState.PAUSED):
            raise InvalidParams(f"a new job cannot start as {state}")
        if not spec.url or not spec.target:
            raise InvalidParams("a job needs a url and a target path")
        _check_priority(spec.priority)
        now = time.time()
        existing = self.find_by_target(spec.target)
        if existing is not None:
            merged = sorted(set(existing.wanted_by) | set(spec.wanted_by))
            self._db.execute(
                "UPDATE download_queue SET wanted_by=?, updated_at=? WHERE id=?",
                (json.dumps(merged), now, existing.id),
            )
            if existing.state in (JobState.CANCELLED, JobState.FAILED):
                return self.transition(existing.id, state, last_error=None, attempts=0), False
            if existing.state is JobState.NEEDS_APPROVAL and state is JobState.QUEUED:
                # Asked for by hand: that is the approval.
                return self.transition(existing.id, JobState.QUEUED, batch=None), False
            return self.get_job(existing.id), False
        row = self._db.execute(
            f"""INSERT INTO download_queue (repo, revision, path, url, target, size, sha256, state, priority,
                origin, batch, wanted_by, created_at, updated_at)
                VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?) RETURNING {_JOB_COLUMNS}""",
            (
                spec.repo,
                spec.revision,
                spec.path,
                spec.url,
                spec.target,
                spec.size,
                spec.sha256,
                state,
                spec.priority,
                spec.origin,
                spec.batch,
                json.dumps(sorted(set(spec.wanted_by))),
                now,
                now,
            ),
        ).fetchone()
        return Job.from_row(row), True

    def get_job(self, job_id: int) -> Job:
        row = self._db.execute(f"SELECT {_JOB_COLUMNS} FROM download_queue WHERE id=?", (job_id,)).fetchone()
        if row is None:
            raise NotFound(f"no job {job_id} (see `wangpctl queue`)")
        return Job.from_row(row)

    def find_by_target(self, target: str) -> Job | None:
        row = self._db.execute(f"SELECT {_JOB_COLUMNS} FROM download_queue WHERE target=?", (target,)).fetchone()
        return Job.from_row(row) if row else None

    def list_jobs(
        self,
        states: Iterable[JobState | str] | None = None,
        *,
        model: str | None = None,
        batch: str | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[Job]:
        """Jobs in queue order (state, priority, id), optionally filtered."""
        clauses, params = self._filters(states, model=model, batch=batch)
        sql = f"SELECT {_JOB_COLUMNS} FROM download_queue {clauses} ORDER BY priority DESC, id"
        if limit is not None:
            sql += " LIMIT ? OFFSET ?"
            params += [limit, offset]
        return [Job.from_row(row) for row in self._db.execute(sql, params)]

    def list_job_dicts(
        self,
        states: Iterable[JobState | str] | None = None,
        *,
        model: str | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[dict[str, Any]]:
        """:meth:`list_jobs` already in the JSON shape of :meth:`Job.to_dict`, without building Job objects: a
        10,000-row `wangpctl queue` spends most of its daemon time here."""
        clauses, params = self._filters(states, model=model)
        sql = f"SELECT {_JOB_COLUMNS} FROM download_queue {clauses} ORDER BY priority DESC, id"
        if limit is not None:
            sql += " LIMIT ? OFFSET ?"
            params += [limit, offset]
        names = _COLUMN_ORDER
        result = []
        for row in self._db.execute(sql, params):
            item = dict(zip(names, row, strict=True))
            item["wanted_by"] = json.loads(item["wanted_by"] or "[]")
            item["speed"] = round(item["speed"], 1)
            result.append(item)
        return result

    def count_jobs(self, states: Iterable[JobState | str] | None = None, *, model: str | None = None) -> int:
        clauses, params = self._filters(states, model=model)
        return self._db.execute(f"SELECT COUNT(*) FROM download_queue {clauses}", params).fetchone()[0]

    @staticmethod
    def _filters(
        states: Iterable[JobState | str] | None, *, model: str | None = None, batch: str | None = None
    ) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        params: list[Any] = []
        if states is not None:
            wanted = [JobState(s).value for s in states]
            clauses.append(f"state IN ({','.join('?' * len(wanted))})")
            params += wanted
        if model is not None:
            clauses.append("EXISTS (SELECT 1 FROM json_each(wanted_by) WHERE value=?)")
            params.append(model)
        if batch is not None:
            clauses.append("batch=?")
            params.append(batch)
        return ("WHERE " + " AND ".join(clauses)) if clauses else "", params

    def counts(self) -> dict[str, int]:
        """Jobs per state, every state present (0 when none)."""
        result = {state.value: 0 for state in JobState}
        for state, count in self._db.execute("SELECT state, COUNT(*) FROM download_queue GROUP BY state"):
            result[state] = count
        return result

    def totals(self) -> dict[str, int]:
        """Bytes still to fetch for queued/downloading jobs (known sizes only) and total speed."""
        row = self._db.execute(
            "SELECT COALESCE(SUM(MAX(COALESCE(size,0) - bytes_done, 0)),0), COALESCE(SUM(speed),0) "
            "FROM download_queue WHERE state IN (?,?)",
            (JobState.QUEUED, JobState.DOWNLOADING),
        ).fetchone()
        return {"remaining_bytes": int(row[0]), "speed": int(row[1])}

    def _move(
        self,
        to_state: JobState,
        from_states: Iterable[JobState],
        fields: dict[str, Any] | None = None,
        *,
        where: str = "",
        args: Sequence[Any] = (),
        extra: str = "",
    ) -> list[Job]:
        """The one state write: ``UPDATE ... SET state=<to_state>, <fields> WHERE state IN (<from_states>) <where>``.

        ``from_states`` must be allowed by :data:`TRANSITIONS` (a programming error otherwise, raised before any
        SQL). Timestamps and speed follow the state: started_at when a job starts, finished_at when it ends,
        speed 0 whenever it is not running. ``extra`` is one more SQL assignment (``attempts=attempts+1``).
        """
        allowed = set(from_states)
        if not allowed <= TRANSITIONS[to_state]:
            bad = ", ".join(sorted(s.value for s in allowed - TRANSITIONS[to_state]))
            raise ValueError(f"the transition table does not allow {bad} -> {to_state.value}")
        now = time.time()
        assignments = {"state": to_state.value, "updated_at": now, **(fields or {})}
        if to_state is JobState.DOWNLOADING:
            assignments.setdefault("started_at", now)
        if to_state in FINISHED:
            assignments.setdefault("finished_at", now)
            assignments.setdefault("speed", 0)
        if to_state in (JobState.QUEUED, JobState.PAUSED, JobState.NEEDS_APPROVAL):
            assignments.setdefault("speed", 0)
            assignments.setdefault("finished_at", None)
        sets, values = _assignments(assignments)
        states = sorted(s.value for s in allowed)
        rows = self._db.execute(
            f"UPDATE download_queue SET {sets}{', ' + extra if extra else ''} "
            f"WHERE state IN ({','.join('?' * len(states))}) {where} RETURNING {_JOB_COLUMNS}",
            [*values, *states, *args],
        ).fetchall()
        return [Job.from_row(row) for row in rows]

    def transition(self, job_id: int, to_state: JobState, **fields: Any) -> Job:
        """Move job ``job_id`` to ``to_state`` if the transition table allows it; set ``fields`` in the same
        statement. Raises NotFound or BadState (naming the current state) when it does not apply."""
        moved = self._move(to_state, TRANSITIONS[to_state], fields, where="AND id=?", args=[job_id])
        if not moved:
            current = self.get_job(job_id)  # raises NotFound
            raise BadState(f"job {job_id} is {current.state.value}; it cannot become {to_state.value}")
        return moved[0]

    def requeue_if_downloading(self, job_id: int) -> bool:
        """Back to queued only if still downloading: a job paused or cancelled meanwhile keeps that state."""
        return bool(self._move(JobState.QUEUED, {JobState.DOWNLOADING}, where="AND id=?", args=[job_id]))

    def claim_next(self, exclude: Iterable[int] = ()) -> Job | None:
        """Atomically take the best queued job and mark it downloading (one more attempt)."""
        excluded = list(exclude)
        not_in = f"AND id NOT IN ({','.join('?' * len(excluded))})" if excluded else ""
        moved = self._move(
            JobState.DOWNLOADING,
            {JobState.QUEUED},
            None,
            where=f"AND id = (SELECT id FROM download_queue WHERE state=? {not_in} ORDER BY priority DESC, id LIMIT 1)",
            args=[JobState.QUEUED.value, *excluded],
            extra="attempts=attempts+1",
        )
        return moved[0] if moved else None

    def update_progress(self, job_id: int, bytes_done: int, speed: float, size: int | None = None) -> None:
        """Progress of a running job. Not a state change: only applies while it is downloading."""
        self._db.execute(
            "UPDATE download_queue SET bytes_done=?, speed=?, size=COALESCE(?, size), updated_at=? "
            "WHERE id=? AND state=?",
            (bytes_done, speed, size, time.time(), job_id, JobState.DOWNLOADING),
        )

    def set_job_fields(self, job_id: int, **fields: Any) -> Job:
        """Non-state fields (size, sha256, priority, wanted_by...)."""
        if "state" in fields or not fields:
            raise ValueError("use transition() to change state")
        sets, values = _assignments({**fields, "updated_at": time.time()})
        row = self._db.execute(
            f"UPDATE download_queue SET {sets} WHERE id=? RETURNING {_JOB_COLUMNS}",
            [*values, job_id],
        ).fetchone()
        if row is None:
            raise NotFound(f"no job {job_id}")
        return Job.from_row(row)

    def set_priority(self, job_id: int, where: str | int) -> Job:
        """``top``, ``bottom`` or a number; higher runs first."""
        if where in ("top", "bottom"):
            function = "MAX" if where == "top" else "MIN"
            bound = self._db.execute(f"SELECT COALESCE({function}(priority),0) FROM download_queue").fetchone()[0]
            value = bound + 1 if where == "top" else bound - 1
        elif isinstance(where, int) and not isinstance(where, bool):
            value = where
        else:
            raise InvalidParams(f"priority must be top, bottom or a whole number, got {where!r}")
        return self.set_job_fields(job_id, priority=_check_priority(value))

    def clear(self, which: str) -> int:
        """Delete finished rows: ``complete``, ``failed`` (failed and cancelled) or ``all`` finished ones."""
        if which not in CLEAR_GROUPS:
            raise InvalidParams(f"clear takes complete, failed or all, got {which!r}")
        states = sorted(CLEAR_GROUPS[which])
        cursor = self._db.execute(
            f"DELETE FROM download_queue WHERE state IN ({','.join('?' * len(states))})", [s.value for s in states]
        )
        return cursor.rowcount

    def batches(self) -> dict[str, dict[str, int]]:
        """Automatic batches waiting for approval: batch -> {jobs, bytes}."""
        result: dict[str, dict[str, int]] = {}
        for batch, jobs, size in self._db.execute(
            "SELECT batch, COUNT(*), COALESCE(SUM(size),0) FROM download_queue WHERE state=? GROUP BY batch",
            (JobState.NEEDS_APPROVAL,),
        ):
            result[batch or ""] = {"jobs": jobs, "bytes": size}
        return result

    # ---------------------------------------------------------------------------------------------------------
    # Hub metadata cache

    def get_meta(self, repo: str, revision: str, path: str, max_age: float) -> FileMeta | None:
        row = self._db.execute(
            "SELECT repo, revision, path, size, sha256, etag, commit_sha, fetched_at FROM hf_file_cache "
            "WHERE repo=? AND revision=? AND path=?",
            (repo, revision, path),
        ).fetchone()
        if row is None or time.time() - row[7] > max_age:
            return None
        repo, revision, path, size, sha256, etag, commit, fetched_at = row
        return FileMeta(repo, revision, path, size, sha256, etag or "", commit, fetched_at=fetched_at)

    def put_meta(self, meta: FileMeta) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO hf_file_cache (repo, revision, path, size, sha256, etag, commit_sha, fetched_at) "
            "VALUES (?,?,?,?,?,?,?,?)",
            (meta.repo, meta.revision, meta.path, meta.size, meta.sha256, meta.etag, meta.commit, meta.fetched_at),
        )

    def known_sizes(self) -> dict[tuple[str, str, str], int]:
        """(repo, revision, path) -> size for every file whose size the Hub told us (any age: sizes rarely move)."""
        return {
            (repo, revision, path): size
            for repo, revision, path, size in self._db.execute(
                "SELECT repo, revision, path, size FROM hf_file_cache WHERE size IS NOT NULL"
            )
        }

    def known_hashes(self) -> dict[tuple[str, str, str], tuple[int, str]]:
        """(repo, revision, path) -> (size, sha256) for every LFS file the Hub described: what a library file must
        match to be linked instead of downloaded."""
        return {
            (repo, revision, path): (size, sha256)
            for repo, revision, path, size, sha256 in self._db.execute(
                "SELECT repo, revision, path, size, sha256 FROM hf_file_cache "
                "WHERE size IS NOT NULL AND length(sha256) = 64"
            )
        }

    # ---------------------------------------------------------------------------------------------------------
    # Runtime settings and tracked models

    def get_setting(self, key: str, default: Any = None) -> Any:
        row = self._db.execute("SELECT value FROM settings WHERE key=?", (key,)).fetchone()
        return json.loads(row[0]) if row else default

    def set_setting(self, key: str, value: Any) -> None:
        if value is None:
            self._db.execute("DELETE FROM settings WHERE key=?", (key,))
        else:
            self._db.execute("INSERT OR REPLACE INTO settings (key, value) VALUES (?, ?)", (key, json.dumps(value)))

    # ---------------------------------------------------------------------------------------------------------
    # The keep-set

    def keep_set(self) -> dict[str, KeepEntry]:
        """Every remembered model, kept or refused (``dropped``/``rejected``), by type."""
        return {
            row[0]: KeepEntry(row[0], row[1], bool(row[2]), row[3], row[4], tuple(json.loads(row[5])), row[6])
            for row in self._db.execute(
                "SELECT model_type, reason, all_variants, since, updated_at, files, gone_at FROM keep_set"
            )
        }

    def keep(self, model_type: str, reason: str, *, all_variants: bool | None = None) -> None:
        """Remember ``model_type`` as kept for ``reason``. A stronger reason replaces a weaker one (``manual``
        replaces anything, also a refusal); an automatic reason never replaces a refusal or a stronger reason.
        ``since`` stays the first time it joined."""
        if reason not in KEEP_REASONS:
            raise ValueError(f"unknown keep reason {reason!r}")
        now = time.time()
        strength = _REASON_SQL_RANK
        self._db.execute(
            f"INSERT INTO keep_set (model_type, reason, all_variants, since, updated_at) VALUES (?,?,?,?,?) "
            f"ON CONFLICT(model_type) DO UPDATE SET "
            f"reason = CASE WHEN {strength.format('excluded.reason')} < {strength.format('keep_set.reason')} "
            f"  THEN excluded.reason ELSE keep_set.reason END, "
            f"all_variants = CASE WHEN ? IS NULL THEN keep_set.all_variants ELSE excluded.all_variants END, "
            f"since = CASE WHEN keep_set.reason IN ('dropped', 'rejected') "
            f"  THEN excluded.since ELSE keep_set.since END, "
            f"updated_at = excluded.updated_at, gone_at = NULL",
            (model_type, reason, bool(all_variants), now, now, all_variants),
        )

    def refuse(self, model_type: str, reason: str = "dropped") -> None:
        """The user said no (``wangpctl drop``, a rejected batch): kept no more, and never joined again except by
        ``wangpctl add``."""
        if reason not in REFUSALS:
            raise ValueError(f"unknown refusal {reason!r}")
        now = time.time()
        self._db.execute(
            "INSERT INTO keep_set (model_type, reason, since, updated_at) VALUES (?,?,?,?) "
            "ON CONFLICT(model_type) DO UPDATE SET reason = excluded.reason, updated_at = excluded.updated_at, "
            "files = '[]', gone_at = NULL",
            (model_type, reason, now, now),
        )

    def set_kept_files(self, files: Mapping[str, Sequence[str]]) -> None:
        """The file set each kept model has now (so a later change of it can be told apart); a model given here
        has a definition, so it is not gone (any more)."""
        self._db.executemany(
            "UPDATE keep_set SET files=?, gone_at=NULL WHERE model_type=? AND (files != ? OR gone_at IS NOT NULL)",
            [(json.dumps(sorted(f)), t, json.dumps(sorted(f))) for t, f in files.items()],
        )

    def mark_gone(self, model_types: Iterable[str]) -> None:
        """Their definitions disappeared: remembered (and reported) until the user drops them."""
        now = time.time()
        self._db.executemany(
            "UPDATE keep_set SET gone_at=? WHERE model_type=? AND gone_at IS NULL", [(now, t) for t in model_types]
        )

    # ---------------------------------------------------------------------------------------------------------
    # What wangpd made (for prune) and the library hash cache

    def record_made(self, made: Iterable[Made]) -> None:
        self._db.executemany(
            "INSERT OR REPLACE INTO made (path, kind, mode, points_to, identity, job_id, made_at) "
            "VALUES (?,?,?,?,?,?,?)",
            [(m.path, m.kind, m.mode, m.points_to, m.identity, m.job_id, m.made_at) for m in made],
        )

    def made(self) -> list[Made]:
        return [
            Made(*row)
            for row in self._db.execute(
                "SELECT path, kind, mode, points_to, identity, job_id, made_at FROM made ORDER BY path"
            )
        ]

    def forget_made(self, paths: Iterable[str]) -> None:
        self._db.executemany("DELETE FROM made WHERE path=?", [(p,) for p in paths])

    def forget_finished_jobs(self, targets: Iterable[str]) -> int:
        """Finished rows for targets that were pruned: their history would show files that are gone."""
        states = sorted(s.value for s in FINISHED)
        marks = ",".join("?" * len(states))
        total = 0
        for target in targets:
            cursor = self._db.execute(
                f"DELETE FROM download_queue WHERE target=? AND state IN ({marks})", [target, *states]
            )
            total += cursor.rowcount
        return total

    def library_hashes(self) -> dict[tuple[int, int, int, int], str]:
        found = {}
        for key, sha256 in self._db.execute("SELECT key, sha256 FROM library_hashes"):
            parts = key.split(":")
            if len(parts) == 4 and all(p.isdigit() for p in parts):
                found[(int(parts[0]), int(parts[1]), int(parts[2]), int(parts[3]))] = sha256
        return found

    def put_library_hashes(self, rows: Iterable[tuple[tuple[int, int, int, int], str, str]]) -> None:
        """(key, sha256, path) rows; the key as text: an inode number may not fit SQLite's signed 64 bits."""
        now = time.time()
        self._db.executemany(
            "INSERT OR REPLACE INTO library_hashes (key, sha256, path, hashed_at) VALUES (?,?,?,?)",
            [(":".join(str(k) for k in key), sha, path, now) for key, sha, path in rows],
        )
