"""Keeps the user's models complete: catalog -> plan -> policy -> queue rows.

Runs after every watcher batch, every periodic reconcile and every `wangpctl rescan`; also serves the model views
(`wangpctl models`, `plan`) and the manual `wangpctl add TYPE`. Each automatic decision is one log line and one
``auto`` event.
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from wangpd import policy
from wangpd.catalog import Catalog, CatalogLoader
from wangpd.config import Config
from wangpd.errors import InvalidParams, NotFound
from wangpd.events import EventBus
from wangpd.layout import Layout
from wangpd.models import DEFAULT_SETTINGS, JobSpec, JobState, WantedFile
from wangpd.paths import disk_free
from wangpd.planner import Plan, PlannedFile, plan, plan_to_json, scan_present
from wangpd.sources import Sources
from wangpd.store import Store
from wangpd.units import format_bytes

__all__ = ["Keeper"]

log = logging.getLogger(__name__)


def _variant_settings(catalog: Catalog) -> dict[str, str]:
    settings = catalog.settings
    return {
        "transformer_quantization": settings.transformer_quantization,
        "transformer_dtype_policy": settings.transformer_dtype_policy,
        "text_encoder_quantization": settings.text_encoder_quantization,
    }


class Keeper:
    """Holds the current catalog and plan and turns them into queue rows."""

    def __init__(
        self,
        config: Config,
        store: Store,
        events: EventBus,
        sources: Sources | None = None,
        *,
        wake: Callable[[], None] = lambda: None,
    ) -> None:
        """``sources`` answers "is this file already somewhere?" and "how big is it?" (None: nowhere, unknown: a
        keeper that only plans); ``wake`` tells the engine new work was queued."""
        self.config = config
        self.store = store
        self.events = events
        self.sources = sources
        self.wake = wake
        self._loaders: dict[bool, CatalogLoader] = {}
        self.catalog: Catalog | None = None
        self.plan: Plan | None = None
        self.tracked: dict[str, str] = {}
        self.orphans: list[str] = []
        self.last_refresh: float | None = None
        self.last_decision: str | None = None
        self._lock = asyncio.Lock()
        self._announced: set[tuple[str, str | None]] = set()

    def reconfigure(self, config: Config) -> None:
        if config.wan2gp != self.config.wan2gp:
            self._loaders.clear()  # another folder or handler table: start from scratch
        self.config = config

    def _loader(self, all_variants: bool) -> CatalogLoader:
        if all_variants not in self._loaders:
            self._loaders[all_variants] = CatalogLoader(
                self.config.wan2gp.directory,
                handler_files=self.config.wan2gp.handler_files,
                all_variants=all_variants,
            )
        return self._loaders[all_variants]

    def layout(self) -> Layout:
        """The Wan2GP folders as the last-read wgp_config.json lays them out (Wan2GP's defaults before that)."""
        settings = self.catalog.settings if self.catalog is not None else DEFAULT_SETTINGS
        return Layout(self.config.wan2gp.directory, settings)

    @property
    def all_variants(self) -> bool:
        return self.config.wan2gp.variants == "all"

    # ---- planning ------------------------------------------------------------------------------------------------

    def _size_of(self) -> Callable[[WantedFile], int | None]:
        sizes = self.store.known_sizes()

        def size_of(wanted: WantedFile) -> int | None:
            return sizes.get((wanted.repo or "", wanted.revision, wanted.path_in_repo or wanted.url))

        return size_of

    def _plan(
        self, catalog: Catalog, model_types: Iterable[str] | None, size_of: Callable[[WantedFile], int | None]
    ) -> Plan:
        """Blocking (walks the folders Wan2GP looks in): run it in a thread, with ``size_of`` read beforehand."""
        exists = scan_present(catalog.wan2gp_dir, catalog)
        linkable = self.sources.linkable if self.sources is not None else (lambda wanted: None)
        return plan(catalog, exists=exists, size_of=size_of, linkable=linkable, model_types=model_types)

    async def _planned(self, catalog: Catalog, model_types: Iterable[str] | None = None) -> Plan:
        # The known sizes are read here, on the loop's thread, which alone uses the store's connection.
        return await asyncio.to_thread(self._plan, catalog, model_types, self._size_of())

    async def current(self, all_variants: bool | None = None) -> tuple[Catalog, Plan]:
        """A fresh catalog and plan (cheap: the loader re-reads only changed definition files)."""
        variants = self.all_variants if all_variants is None else all_variants
        loader = self._loader(variants)
        async with self._lock:  # a CatalogLoader is not thread-safe: one load at a time
            catalog = await asyncio.to_thread(loader.load)
        return catalog, await self._planned(catalog)

    # ---- the automatic part --------------------------------------------------------------------------------------

    async def refresh(self, changed: Iterable[Path] = (), why: str = "rescan") -> dict[str, Any]:
        """Re-read definitions (``changed`` ones first), re-plan, and queue what tracked models now miss."""
        async with self._lock:
            loader = self._loader(self.all_variants)
            catalog = await asyncio.to_thread(loader.load, list(changed))
            current_plan = await self._planned(catalog)
            previous = self.catalog
            switched = previous is not None and _variant_settings(previous) != _variant_settings(catalog)
            if switched:
                log.info(
                    "wgp_config.json now asks for %s: the newly chosen variants of tracked models are wanted",
                    ", ".join(f"{k}={v or 'auto'}" for k, v in _variant_settings(catalog).items()),
                )
            known = self.store.get_setting("known_models")
            new_types = [] if known is None else sorted(set(catalog.models) - set(known))
            # A type is "known" once it resolved: one that arrives broken stays new until it is fixed, so fixing it
            # queues it then. The first run takes everything there as the baseline.
            resolved = {t for t, m in catalog.models.items() if not m.error}
            baseline = set(catalog.models) if known is None else set(known) | resolved
            self.store.set_setting("known_models", sorted(baseline))
            for model_type in new_types:
                model = catalog.models[model_type]
                if (model_type, model.error) in self._announced:
                    continue
                self._announced.add((model_type, model.error))
                log.info(
                    "new model definition %s (%s)%s", model_type, model.name, f": {model.error}" if model.error else ""
                )
                self.events.publish("model", model=model_type, change="new", error=model.error)
            main_files = {t: m.main_files for t, m in catalog.models.items()}
            tracked = policy.tracked_models(
                current_plan, main_files, self.config.auto_queue, self.store.tracked_models(), new_types
            )
            for model_type, reason in tracked.items():
                if reason == "new":
                    self.store.track_model(model_type, "auto")
            self.catalog, self.plan, self.tracked = catalog, current_plan, tracked
            wanted_locals = {p.file.local for p in current_plan.files}
            self.orphans = [
                job.target
                for job in self.store.list_jobs([JobState.COMPLETE])
                if self._local_of(job.target) not in wanted_locals
            ]
            summary = await self._auto_queue(current_plan, tracked, why, exact_variants=switched)
            self.last_refresh = time.time()
            return summary

    def _local_of(self, target: str) -> str:
        root = self.config.wan2gp.directory
        try:
            return Path(target).relative_to(root).as_posix()
        except ValueError:
            return target

    def _target_of(self, wanted: WantedFile) -> str:
        return str(self.config.wan2gp.directory / wanted.local)

    async def _auto_queue(
        self, current_plan: Plan, tracked: dict[str, str], why: str, *, exact_variants: bool = False
    ) -> dict[str, Any]:
        if not tracked:
            return {"queued": 0, "bytes": 0, "approval": False}
        jobs = {self._local_of(job.target): job.state.value for job in self.store.list_jobs()}
        candidates = policy.files_to_queue(current_plan, tracked, jobs, exact_variants=exact_variants)
        every_variant = [t for t, how in tracked.items() if how == "manual-all"]
        if every_variant and not self.all_variants:
            # Models added with --all-variants keep every variant, not only the one Wan2GP would load.
            # Called under self._lock (from refresh), which guards every loader.
            wide = await asyncio.to_thread(self._loader(True).load)
            wide_plan = await self._planned(wide, [t for t in every_variant if t in wide.models])
            seen = {p.file.local for p in candidates}
            candidates += [
                p
                for p in policy.files_to_queue(wide_plan, every_variant, jobs, exact_variants=True)
                if p.file.local not in seen
            ]
        if not candidates:
            return {"queued": 0, "bytes": 0, "approval": False}
        candidates = await self._with_sizes(candidates)
        decision = policy.approval_for(
            candidates,
            self.config.auto_queue,
            disk_free(self.config.hub.cache_dir),
            self.config.download.free_space_reserve,
        )
        # Short, typeable and unique: `wangpctl approve b7`.
        sequence = int(self.store.get_setting("batch_sequence", 0)) + 1
        batch = f"b{sequence}"
        if decision.needed:
            self.store.set_setting("batch_sequence", sequence)
        state = JobState.NEEDS_APPROVAL if decision.needed else JobState.QUEUED
        models = sorted({t for p in candidates for t in p.wanted_by if t in tracked})
        queued = self._queue_files(candidates, state=state, origin="auto", batch=batch if decision.needed else None)
        line = (
            f"auto-queue ({why}): {queued} file(s), {format_bytes(decision.total_bytes)}"
            + (f" + {decision.unknown} of unknown size" if decision.unknown else "")
            + f" for {', '.join(models[:6])}{' ...' if len(models) > 6 else ''}: "
            + (f"held for approval as batch {batch} ({decision.reason})" if decision.needed else "queued")
        )
        log.info(line)
        self.last_decision = line
        self.events.publish(
            "auto",
            why=why,
            files=queued,
            bytes=decision.total_bytes,
            unknown=decision.unknown,
            models=models,
            batch=batch if decision.needed else None,
            approval=decision.needed,
            reason=decision.reason,
        )
        return {"queued": queued, "bytes": decision.total_bytes, "approval": decision.needed, "batch": batch}

    async def _with_sizes(self, files: list[PlannedFile]) -> list[PlannedFile]:
        """Ask the Hub for sizes not yet known (cached in hf_file_cache), so the cap can be applied."""
        unknown = [p.file for p in files if p.size is None and p.status != "linkable"]
        if unknown and self.sources is not None:
            try:
                await self.sources.fetch_sizes(unknown)
            except Exception as exc:  # offline Hub: sizes stay unknown, the batch will wait for approval
                log.warning("could not get file sizes from the Hub: %s", exc)
            size_of = self._size_of()
            files = [replace(p, size=size_of(p.file)) if p.size is None else p for p in files]
        return files

    def _queue_files(
        self,
        files: Iterable[PlannedFile],
        *,
        state: JobState,
        origin: str,
        batch: str | None = None,
        priority: int = 0,
    ) -> int:
        count = 0
        for planned in files:
            wanted = planned.file
            job, created = self.store.add_job(
                JobSpec(
                    url=wanted.url,
                    target=self._target_of(wanted),
                    repo=wanted.repo or "",
                    revision=wanted.revision,
                    # A whole repo folder keeps its trailing slash: that is how the engine tells it from a file.
                    path=(wanted.path_in_repo.rstrip("/") + "/" if wanted.whole_folder else wanted.path_in_repo)
                    if wanted.repo
                    else wanted.url,
                    size=planned.size,
                    wanted_by=planned.wanted_by,
                    priority=priority,
                    origin=origin,
                    batch=batch,
                ),
                state=state,
            )
            if not created and job.state is JobState.COMPLETE:
                # The file went missing again: same decision as for new files (held when the batch is held).
                job = self.store.transition(job.id, state, bytes_done=0, source=None, batch=batch)
                created = True
            if created or job.state in (JobState.QUEUED, JobState.NEEDS_APPROVAL):
                count += 1
                self.events.publish("job", id=job.id, state=job.state.value, why=origin, target=job.target)
        if count and state is JobState.QUEUED:
            self.wake()  # every queueing path wakes the engine here, so none can forget to
        return count

    # ---- what users ask ------------------------------------------------------------------------------------------

    def _select(self, catalog: Catalog, patterns: Sequence[str]) -> list[str]:
        selected: list[str] = []
        for pattern in patterns:
            found = [t for t in sorted(catalog.models) if fnmatch.fnmatchcase(t, pattern)]
            if not found:
                raise NotFound(f"no model type matches {pattern!r} (see `wangpctl models --all`)")
            selected += [t for t in found if t not in selected]
        return selected

    async def models_list(self, filter: str | None, missing_only: bool) -> list[dict[str, Any]]:
        catalog, current = await self.current()
        rows = []
        for model_type, model_plan in sorted(current.models.items()):
            model = catalog.models[model_type]
            if filter:
                text = f"{model_type} {model.name} {model.family}".lower()
                wildcard = any(ch in filter for ch in "*?[")
                hit = fnmatch.fnmatchcase(model_type, filter) if wildcard else filter.lower() in text
                if not hit:
                    continue
            if missing_only and model_plan.complete:
                continue
            rows.append(
                {
                    "type": model_type,
                    "name": model.name,
                    "family": model.family,
                    "architecture": model.architecture,
                    "present": model_plan.present,
                    "total": model_plan.total,
                    "missing": model_plan.missing,
                    "linkable": model_plan.linkable,
                    "missing_bytes": model_plan.missing_bytes,
                    "complete": model_plan.complete,
                    "tracked": self.tracked.get(model_type),
                    "error": model_plan.error,
                    "warnings": list(model_plan.warnings),
                }
            )
        return rows

    async def model_show(self, model_type: str, all_variants: bool = False) -> dict[str, Any]:
        catalog, _ = await self.current(all_variants or None)
        if model_type not in catalog.models:
            raise NotFound(f"unknown model type {model_type!r} (see `wangpctl models --all`)")
        one = await self._planned(catalog, [model_type])
        data = plan_to_json(one)
        model = catalog.models[model_type]
        data["model"] = {
            **data["models"][model_type],
            "definition_files": [str(p) for p in model.definition_files],
            "main_files": list(model.main_files),
            "tracked": self.tracked.get(model_type),
            "alternatives": [w.local for w in model.alternatives],
        }
        return data

    async def plan_json(self, models: Sequence[str] | None, all_variants: bool) -> dict[str, Any]:
        catalog, _ = await self.current(all_variants)
        selected = self._select(catalog, models) if models else None
        return plan_to_json(await self._planned(catalog, selected))

    async def add_models(
        self, patterns: Sequence[str], *, all_variants: bool, dry_run: bool, priority: int
    ) -> dict[str, Any]:
        """Queue the missing files of the given model types (globs allowed); they become tracked."""
        if not patterns:
            raise InvalidParams("name at least one model type")
        catalog, _ = await self.current(all_variants or None)
        selected = self._select(catalog, patterns)
        broken = [f"{t}: {catalog.models[t].error}" for t in selected if catalog.models[t].error]
        usable = [t for t in selected if not catalog.models[t].error]
        one = await self._planned(catalog, usable)
        jobs = {self._local_of(job.target): job.state for job in self.store.list_jobs()}
        missing = [
            p
            for p in one.files
            if p.status != "present" and jobs.get(p.file.local) not in (JobState.QUEUED, JobState.DOWNLOADING)
        ]
        if not dry_run:
            missing = await self._with_sizes(missing)
        total = sum(p.size or 0 for p in missing)
        unknown = sum(1 for p in missing if p.size is None)
        queued = 0
        if not dry_run:
            how = "manual-all" if all_variants else "manual"
            for model_type in usable:
                self.store.track_model(model_type, how)
                self.tracked[model_type] = how
            queued = self._queue_files(missing, state=JobState.QUEUED, origin="manual", priority=priority)
            log.info("added by hand: %s: %d file(s), %s", ", ".join(usable), queued, format_bytes(total))
        return {
            "models": usable,
            "files": len(missing) if dry_run else queued,
            "bytes": total,
            "unknown_size": unknown,
            "linkable": sum(1 for p in missing if p.status == "linkable"),
            "dry_run": dry_run,
            "errors": broken,
            "list": [{"local": p.file.local, "size": p.size, "status": p.status} for p in missing],
        }

    def decide_batch(self, batch: str | None, approve: bool) -> dict[str, Any]:
        """Approve (queue) or reject (cancel) a held batch; ``None`` = every held batch."""
        held = self.store.list_jobs([JobState.NEEDS_APPROVAL], batch=batch)
        if not held:
            raise NotFound(
                f"no batch {batch!r} is waiting for approval" if batch else "nothing is waiting for approval"
            )
        target = JobState.QUEUED if approve else JobState.CANCELLED
        for job in held:
            changed = self.store.transition(job.id, target, **({} if approve else {"last_error": "rejected by user"}))
            self.events.publish(
                "job",
                id=job.id,
                state=changed.state.value,
                why="approved" if approve else "rejected",
                target=job.target,
            )
        if approve:
            self.wake()
        total = sum(job.size or 0 for job in held)
        verb = "approved" if approve else "rejected"
        log.info("%s %d file(s), %s%s", verb, len(held), format_bytes(total), f" (batch {batch})" if batch else "")
        return {verb: len(held), "bytes": total, "batch": batch}

    def describe(self) -> dict[str, Any]:
        aq = self.config.auto_queue
        return {
            "track": aq.track,
            "include": list(aq.include),
            "exclude": list(aq.exclude),
            "new_models": aq.new_models,
            "max_auto_bytes": aq.max_auto_bytes,
            "require_approval": aq.require_approval,
            "tracked": len(self.tracked),
            "models": len(self.catalog.models) if self.catalog else None,
            "model_errors": sum(1 for m in self.catalog.models.values() if m.error) if self.catalog else None,
            "orphans": len(self.orphans),
            "last_refresh": self.last_refresh,
            "last_decision": self.last_decision,
        }
