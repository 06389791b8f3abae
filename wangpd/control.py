"""The control surface: one handler per RPC method, the same names as in ``protocol.METHODS`` and wangpctl
(``queue.add`` -> :meth:`Control.queue_add`), plus the status view.

Handlers take keyword parameters with type hints; ``rpc.py`` checks a request's parameters against them before a
handler runs, so a handler may trust the types it declares (not the ranges: those it checks itself).
"""

from __future__ import annotations

import asyncio
import logging
import os
import posixpath
import re
import time
from typing import Any
from urllib.parse import unquote, urlsplit

from wangpd import __version__, hfurl, protocol
from wangpd.doctor import QueueFacts, run_checks
from wangpd.errors import BadState, ConfigError, InvalidParams
from wangpd.models import STATE_GROUPS, Job, JobSpec, JobState
from wangpd.paths import disk_free, safe_repo_path
from wangpd.store import Store
from wangpd.units import format_rate, parse_rate
from wangpd.view import DaemonView

__all__ = ["Control", "status_line"]

log = logging.getLogger(__name__)


def _job_id(value: int | str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lstrip("#").isdigit():
        return int(value.strip().lstrip("#"))
    raise InvalidParams(f"job id must be a number (see `wangpctl queue`), got {value!r}")


class Control:
    """Every method a client may call. Holds no state of its own: it reads and changes the daemon's parts."""

    def __init__(self, daemon: DaemonView) -> None:
        self.daemon = daemon

    # ---- helpers -------------------------------------------------------------------------------------------------

    @property
    def store(self) -> Store:
        return self.daemon.store

    def _changed(self, job: Job, why: str) -> Job:
        self.daemon.events.publish("job", id=job.id, state=job.state.value, why=why, target=job.target)
        self.daemon.job_changed(job)
        return job

    # ---- read ----------------------------------------------------------------------------------------------------

    async def status(self) -> dict[str, Any]:
        """Daemon state, counts per state, speed, limit, paused, disk free, watcher, last errors."""
        daemon, config = self.daemon, self.daemon.config
        counts = daemon.store.counts()
        totals = daemon.store.totals()
        last_errors = [
            {"time": e["time"], "message": e.get("error") or e.get("message"), "id": e.get("id")}
            for e in daemon.events.recent
            if e.get("error") or e["event"] == "error"
        ][-5:]
        return {
            "version": __version__,
            "pid": os.getpid(),
            "uptime": round(time.monotonic() - daemon.started, 1),
            "started_at": daemon.started_wall,
            "state": "paused" if daemon.paused else "running",
            "paused": daemon.paused,
            "counts": counts,
            "pending": counts["queued"] + counts["needs_approval"] + counts["paused"],
            "speed": daemon.current_speed(),
            "remaining_bytes": totals["remaining_bytes"],
            "limit": daemon.limit_info(),
            "config": str(config.path),
            "socket": str(config.daemon.socket),
            "listening": daemon.listening,
            "database": str(config.daemon.db_path),
            "wan2gp_directory": str(config.wan2gp.directory),
            "hf_cache": str(config.hub.cache_dir),
            "disk_free": {
                "wan2gp": disk_free(config.wan2gp.directory),
                "hf_cache": disk_free(config.hub.cache_dir),
            },
            "batches": daemon.store.batches(),
            "watcher": daemon.watcher.describe()
            if daemon.watcher
            else {"state": "off", "reason": "watch.enabled is false"},
            "auto_queue": daemon.keeper.describe(),
            # The other model libraries (config libraries): listing and hashing progress; null when none is set.
            "libraries": daemon.sources.library.describe() if config.libraries.folders else None,
            # None while the queue database can be written; else why not (nothing new starts until it can).
            "store_error": daemon.store.write_error,
            "last_errors": last_errors,
        }

    async def version(self) -> dict[str, Any]:
        return {"version": __version__, "protocol": 1}

    async def queue_list(
        self,
        state: str | list | None = None,
        model: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> dict[str, Any]:
        """Jobs in queue order. ``state``: one state, a list, or ``active``/``finished``."""
        states = _states(state)
        if not 0 < limit <= 10000 or offset < 0:
            raise InvalidParams("limit must be 1..10000 and offset >= 0")
        return {
            "jobs": self.store.list_job_dicts(states, model=model, limit=limit, offset=offset),
            "total": self.store.count_jobs(states, model=model),
            "offset": offset,
        }

    async def job_show(self, id: int | str) -> dict[str, Any]:
        """Every field of a job; while a segmented download runs, its pieces (start, end, bytes done) too."""
        job = self.store.get_job(_job_id(id)).to_dict()
        running = self.daemon.segments_of(job["id"])
        if running is not None:
            job["segments"] = [
                {"start": start, "end": end, "done": position - start} for start, end, position in sorted(running)
            ]
        return job

    async def limit_get(self) -> dict[str, Any]:
        return self.daemon.limit_info()

    async def doctor(self) -> list[dict[str, Any]]:
        """Setup checks, each {check, level OK/WARN/FAIL, message, fix} (wangpd/doctor.py)."""
        # In a thread: it re-reads the config and walks the watched folders, which must not stall transfers.
        queue = QueueFacts(self.store.counts(), self.store.totals()["remaining_bytes"] or 0, self.store.write_error)
        return await asyncio.to_thread(run_checks, self.daemon, queue)

    # ---- change --------------------------------------------------------------------------------------------------

    async def queue_add(
        self,
        url: str | None = None,
        repo: str | None = None,
        path: str | None = None,
        revision: str = "main",
        target: str | None = None,
        priority: int = 0,
    ) -> dict[str, Any]:
        """Queue one file, by HF URL or by repo + path. ``target`` is relative to the Wan2GP folder
        (default ``<first checkpoints root>/<file name>``)."""
        if url:
            if repo or path:
                raise InvalidParams("give either url or repo + path, not both")
            hub = self.daemon.config.hub
            try:  # huggingface.co, hf.co, www., /blob/, and the configured endpoint (a mirror)
                hub_file = hfurl.parse(url, (hfurl.host_of(hub.endpoint),))
            except ValueError as exc:
                raise InvalidParams(f"url: {exc}") from None
            if hub_file is not None:
                repo, revision, path = hub_file.repo, hub_file.revision, hub_file.path
                url = hfurl.resolve_url(repo, revision, path)
            else:
                refusal = hfurl.plain_url_refusal(url, hub.allowed_hosts)
                if refusal is not None:
                    raise InvalidParams(f"url is not a Hugging Face file URL, and {refusal}")
                path = unquote(urlsplit(url).path.rsplit("/", 1)[-1])
        elif repo and path:
            if not re.fullmatch(r"[\w.-]+/[\w.-]+", repo) or repo.split("/")[1] in (".", ".."):
                raise InvalidParams(f"repo must look like Org/Repo, got {repo!r}")
            if not safe_repo_path(path) or "/" in revision or not revision.strip():
                # Never sent to the Hub: '..', '.', empty parts, NUL (the HF cache would refuse them anyway).
                raise InvalidParams(f"path {path!r} (revision {revision!r}) must be a plain path inside the repo")
            url = hfurl.resolve_url(repo, revision, path)
        else:
            raise InvalidParams("give a url, or repo and path")
        assert path is not None
        name = posixpath.basename(path)
        if not name or "\0" in name or name in (".", ".."):
            raise InvalidParams(f"path {path!r} names no file")
        layout = self.daemon.layout()
        target_path = layout.resolve_target(target or posixpath.join(layout.checkpoints_root(), name))
        spec = JobSpec(
            url=url,
            target=str(target_path),
            repo=repo or "",
            revision=revision,
            path=path,
            priority=priority,
            origin="manual",
        )
        job, created = self.store.add_job(spec)
        if created or job.state is JobState.QUEUED:
            self._changed(job, "added")
        return {"job": job.to_dict(), "created": created}

    async def queue_clear(self, which: str = "complete") -> dict[str, Any]:
        """Remove finished rows: complete, failed (failed + cancelled) or all finished. Files are kept."""
        removed = self.store.clear(which)
        self.daemon.events.publish("cleared", which=which, removed=removed)
        return {"removed": removed, "which": which}

    async def job_pause(self, id: int | str) -> dict[str, Any]:
        job = self.store.transition(_job_id(id), JobState.PAUSED)
        return self._changed(job, "paused by user").to_dict()

    async def job_resume(self, id: int | str) -> dict[str, Any]:
        job = self.store.get_job(_job_id(id))
        if job.state is not JobState.PAUSED:
            raise BadState(f"job {job.id} is {job.state.value}, not paused")
        job = self.store.transition(job.id, JobState.QUEUED)
        return self._changed(job, "resumed by user").to_dict()

    async def job_cancel(self, id: int | str) -> dict[str, Any]:
        job = self.store.transition(_job_id(id), JobState.CANCELLED, last_error="cancelled by user")
        return self._changed(job, "cancelled by user").to_dict()

    async def job_retry(self, id: int | str) -> dict[str, Any]:
        job = self.store.get_job(_job_id(id))
        if job.state not in (JobState.FAILED, JobState.CANCELLED):
            raise BadState(f"job {job.id} is {job.state.value}; only failed or cancelled jobs can be retried")
        job = self.store.transition(job.id, JobState.QUEUED, attempts=0, last_error=None)
        return self._changed(job, "retried by user").to_dict()

    async def job_priority(self, id: int | str, where: str | int) -> dict[str, Any]:
        if isinstance(where, str) and where.lstrip("-").isdigit():
            where = int(where)
        job = self.store.set_priority(_job_id(id), where)
        return job.to_dict()

    async def pause(self) -> dict[str, Any]:
        """Pause every download (running ones stop and keep their partial file)."""
        self.daemon.set_paused(True)
        return {"paused": True}

    async def resume(self) -> dict[str, Any]:
        self.daemon.set_paused(False)
        return {"paused": False}

    async def limit_set(self, rate: str | int) -> dict[str, Any]:
        """Set the total bandwidth (``20MiB/s``, ``400Mbit/s``, ``0``/``off``). Held until the next schedule edge;
        ``default`` goes back to config/schedule."""
        if isinstance(rate, str) and rate.strip().lower() in ("default", "auto", "config", "schedule"):
            self.daemon.set_manual_limit(None)
        else:
            try:
                value = parse_rate(rate)
            except ValueError as exc:
                raise InvalidParams(f"rate: {exc}") from None
            self.daemon.set_manual_limit(value)
        info = self.daemon.limit_info()
        log.info("bandwidth limit now %s (%s)", format_rate(info["limit"]), info["source"])
        return info

    # ---- models (catalog + planner) -------------------------------------------------------------------------------

    async def models_list(self, filter: str | None = None, missing: bool = True, new: bool = False) -> dict[str, Any]:
        """Model types with files present/total and missing bytes. ``filter``: substring, or a glob on the type;
        ``missing`` (default) lists only models that miss files (or fail to resolve); ``new``: only the model
        types that appeared while wangpd was watching (a Wan2GP update, a new finetune), newest first."""
        rows = await self.daemon.keeper.models_list(filter, missing, new)
        return {"models": rows, "count": len(rows)}

    async def models_show(self, type: str, all_variants: bool = False) -> dict[str, Any]:
        return await self.daemon.keeper.model_show(type, all_variants)

    async def models_add(
        self,
        types: list,
        all_variants: bool = False,
        dry_run: bool = False,
        priority: int = 0,
        profiles: list | None = None,
    ) -> dict[str, Any]:
        """Queue the missing files of these model types (globs allowed); they are then kept complete. profiles:
        names or globs of their accelerator profiles whose LoRAs are queued too."""
        if not all(isinstance(t, str) and t for t in types):
            raise InvalidParams("types must be a list of model type names")
        if profiles is not None and not all(isinstance(p, str) and p for p in profiles):
            raise InvalidParams("profiles must be a list of profile names or globs")
        return await self.daemon.keeper.add_models(
            types, all_variants=all_variants, dry_run=dry_run, priority=priority, profiles=profiles or []
        )

    async def models_drop(self, types: list) -> dict[str, Any]:
        """Take model types (globs allowed) out of the keep-set: their jobs stop, nothing is fetched for them
        again unless added by hand; says which of their files on disk no kept model needs (deletes nothing)."""
        if not types or not all(isinstance(t, str) and t for t in types):
            raise InvalidParams("types must be a non-empty list of model type names")
        return await self.daemon.keeper.drop_models(types)

    async def du(self, types: list | None = None, by: str = "model") -> dict[str, Any]:
        """Bytes on disk of the present model files, per model (or family, by="family"): unique to it or shared,
        where they live, and per filesystem; a file linked from several paths counts once. Globs allowed."""
        if types is not None and not all(isinstance(t, str) and t for t in types):
            raise InvalidParams("types must be a list of model type names")
        return await self.daemon.keeper.disk_use(types or [], by)

    async def unused(self) -> dict[str, Any]:
        """Files on disk that no kept model needs, with size, why, and whether wangpd made them (prune may remove
        only those); wangpd's downloaded HF-cache blobs no Wan2GP path leads to are listed too."""
        return await self.daemon.keeper.unused()

    async def prune(
        self,
        types: list | None = None,
        unused: bool = False,
        dry_run: bool = False,
        paths: list | None = None,
    ) -> dict[str, Any]:
        """Remove what wangpd made (links, folders of links, its downloaded blobs nothing else uses) for model types
        (globs; they are dropped from the keep-set first) and, with unused, everything no kept model needs. paths:
        remove only these (the list a user confirmed after a dry run). Never removes a file wangpd did not make."""
        if types is not None and not all(isinstance(t, str) and t for t in types):
            raise InvalidParams("types must be a list of model type names")
        if paths is not None and not all(isinstance(p, str) and p for p in paths):
            raise InvalidParams("paths must be a list of absolute paths from a dry run")
        return await self.daemon.keeper.prune(types or [], unused=unused, dry_run=dry_run, paths=paths)

    async def plan(self, models: list | None = None, all_variants: bool = False) -> dict[str, Any]:
        """The full plan: every wanted file with its status (present / linkable / missing)."""
        return await self.daemon.keeper.plan_json(models, all_variants)

    async def rescan(self) -> dict[str, Any]:
        """Re-read every definition now and queue what tracked models miss."""
        return await self.daemon.rescan("rescan")

    async def approve(self, batch: str | None = None) -> dict[str, Any]:
        """Start held automatic batches: all, one batch id (``b7``), or a model-type glob (``'ltx2_*'``)."""
        return self.daemon.keeper.decide_batch(batch, approve=True)

    async def reject(self, batch: str | None = None) -> dict[str, Any]:
        """Drop held automatic batches (all, a batch id or a model-type glob); their models leave the keep-set and
        are not proposed again (`wangpctl add` still can)."""
        return self.daemon.keeper.decide_batch(batch, approve=False)

    async def reload(self) -> dict[str, Any]:
        """Re-read the config file; transfers keep running. A bad config is refused and the old one stays."""
        try:
            changes = await self.daemon.reload()
        except ConfigError as exc:
            raise ConfigError(f"{exc} (the running config is unchanged)") from None
        return {"reloaded": True, "changes": changes}


def status_line(daemon: DaemonView) -> str:
    """One line for systemd's STATUS= (``systemctl status wangpd``)."""
    counts = daemon.store.counts()
    speed = daemon.current_speed()
    state = "paused" if daemon.paused else "running"
    if daemon.store.write_error is not None:
        state = f"STALLED, {daemon.store.write_error[:60]}"
    return (
        f"{state}: {counts['downloading']} downloading, {counts['queued']} queued, "
        f"{counts['needs_approval']} awaiting approval, {counts['failed']} failed, "
        f"{format_rate(speed) if speed else '0 B/s'}, limit {format_rate(daemon.limit_info()['limit'])}"
    )


def _states(state: str | list | None) -> list[JobState] | None:
    if state is None:
        return None
    names = [state] if isinstance(state, str) else state
    result: list[JobState] = []
    for name in names:
        if not isinstance(name, str):
            raise InvalidParams(f"state must be a string or list of strings, got {name!r}")
        if name in STATE_GROUPS:
            result += sorted(STATE_GROUPS[name])
        else:
            try:
                result.append(JobState(name))
            except ValueError:
                raise InvalidParams(
                    f"unknown state {name!r} (one of {', '.join(protocol.JOB_STATES)}, active, pending, finished)"
                ) from None
    return result
