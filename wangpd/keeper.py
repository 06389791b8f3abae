"""Keeps the user's models complete: catalog -> plan -> policy -> queue rows.

Runs after every watcher batch, every periodic reconcile and every `wangpctl rescan`; also serves the model views
(`wangpctl models`, `plan`) and the manual `wangpctl add TYPE`. Each automatic decision is one log line and one
``auto`` event.
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
import os
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from wangpd import diskuse, policy, prune, usage
from wangpd.catalog import Catalog, CatalogLoader
from wangpd.config import Config
from wangpd.errors import InvalidParams, NotFound
from wangpd.events import EventBus
from wangpd.layout import Layout
from wangpd.models import ACTIVE, DEFAULT_SETTINGS, Job, JobSpec, JobState, KeepEntry, ModelDef, WantedFile
from wangpd.paths import disk_free
from wangpd.planner import Plan, PlannedFile, plan, plan_to_json, scan_present
from wangpd.sources import Sources
from wangpd.store import Store
from wangpd.units import format_bytes

__all__ = ["Keeper"]

log = logging.getLogger(__name__)

_BATCH_RE = re.compile(r"b\d+")
QUEUED_PRIORITY = 100  # files of models pending in Wan2GP's queue.zip: first in the queue


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
        stop_job: Callable[[Job], None] = lambda job: None,
    ) -> None:
        """``sources`` answers "is this file already somewhere?" and "how big is it?" (None: nowhere, unknown: a
        keeper that only plans); ``wake`` tells the engine new work was queued."""
        self.config = config
        self.store = store
        self.events = events
        self.sources = sources
        self.wake = wake
        self.stop_job = stop_job  # a job the keeper cancelled may be running: the engine stops its transfer
        self._loaders: dict[bool, CatalogLoader] = {}
        self.catalog: Catalog | None = None
        self.plan: Plan | None = None
        self.tracked: dict[str, str] = {}
        self.orphans: list[str] = []
        self.last_refresh: float | None = None
        self.last_decision: str | None = None
        self.hints: dict[str, str] = {}
        self.pending: list[str] = []  # model types waiting in Wan2GP's queue.zip
        self._scanner = usage.OutputScanner()
        self._reported: set[str] = set()
        self._lock = asyncio.Lock()
        self._announced: set[tuple[str, str | None]] = set()

    def reconfigure(self, config: Config) -> None:
        if (
            config.wan2gp != self.config.wan2gp
            or config.auto_queue.include_profiles != self.config.auto_queue.include_profiles
        ):
            self._loaders.clear()  # another folder, handler table or set of profiles: start from scratch
        self.config = config

    def _loader(self, all_variants: bool) -> CatalogLoader:
        if all_variants not in self._loaders:
            self._loaders[all_variants] = CatalogLoader(
                self.config.wan2gp.directory,
                handler_files=self.config.wan2gp.handler_files,
                all_variants=all_variants,
                config_dir=self.config.wan2gp.settings_dir,
                include_profiles=self.config.auto_queue.include_profiles,
            )
        return self._loaders[all_variants]

    def layout(self) -> Layout:
        """The Wan2GP folders as the last-read wgp_config.json lays them out (Wan2GP's defaults before that)."""
        settings = self.catalog.settings if self.catalog is not None else DEFAULT_SETTINGS
        wan2gp = self.config.wan2gp
        return Layout(wan2gp.directory, settings, wan2gp.config_dir)

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
        """Re-read definitions (``changed`` ones first), re-plan, update the keep-set and queue what kept models
        now miss: one batch per model, within one automatic budget for the whole change."""
        async with self._lock:
            loader = self._loader(self.all_variants)
            catalog = await asyncio.to_thread(loader.load, list(changed))
            current_plan = await self._planned(catalog)
            previous = self.catalog
            switched = previous is not None and _variant_settings(previous) != _variant_settings(catalog)
            if switched:
                log.info(
                    "wgp_config.json now asks for %s: the newly chosen variants of kept models are wanted",
                    ", ".join(f"{k}={v or 'auto'}" for k, v in _variant_settings(catalog).items()),
                )
            new_types = self._new_types(catalog)
            traces, self.hints = await self._traces(catalog)
            remembered = self.store.keep_set()
            installed = policy.installed_by_own_files(current_plan, catalog.models)
            decision = policy.decide_keep(
                catalog.models,
                remembered,
                self.config.auto_queue,
                traces=traces,
                installed=installed,
                new_types=new_types,
            )
            for model_type, reason in decision.joining.items():
                self.store.keep(model_type, reason)
                if model_type not in remembered or not remembered[model_type].kept:
                    log.info("keeping %s complete from now on (%s)", model_type, reason)
            if decision.gone:
                self.store.mark_gone(decision.gone)
                for model_type in decision.gone:
                    log.warning(
                        "kept model %s has no definition any more (removed or renamed in Wan2GP); its files stay, "
                        "`wangpctl drop %s` forgets it",
                        model_type,
                        model_type,
                    )
                    self.events.publish("model", model=model_type, change="gone")
            self.store.set_kept_files(
                {t: [f.local for f in catalog.models[t].files] for t in decision.kept if t in catalog.models}
            )
            self.catalog, self.plan, self.tracked = catalog, current_plan, decision.kept
            wanted_locals = {p.file.local for p in current_plan.files}
            self.orphans = [
                job.target
                for job in self.store.list_jobs([JobState.COMPLETE])
                if self._local_of(job.target) not in wanted_locals
            ]
            summary = await self._auto_queue(
                current_plan, decision.kept, why, joining=decision.joining, remembered=remembered, exact=switched
            )
            self.last_refresh = time.time()
            return summary

    def _new_types(self, catalog: Catalog) -> list[str]:
        """Model types that appeared since the last refresh (none on the very first one: that is the baseline).
        Announced once each (log line and ``model`` event); remembered with when they were first seen."""
        known = self.store.get_setting("known_models")
        new_types = [] if known is None else sorted(set(catalog.models) - set(known))
        # A type is "known" once it resolved: one that arrives broken stays new until it is fixed, so fixing it
        # queues it then.
        resolved = {t for t, m in catalog.models.items() if not m.error}
        baseline = set(catalog.models) if known is None else set(known) | resolved
        self.store.set_setting("known_models", sorted(baseline))
        first_seen = dict(self.store.get_setting("first_seen", {}))
        now = time.time()
        for model_type in new_types:
            first_seen.setdefault(model_type, now)
            model = catalog.models[model_type]
            if (model_type, model.error) in self._announced:
                continue
            self._announced.add((model_type, model.error))
            log.info(
                "new model definition %s (%s)%s", model_type, model.name, f": {model.error}" if model.error else ""
            )
            self.events.publish("model", model=model_type, change="new", error=model.error)
        if new_types:
            self.store.set_setting("first_seen", first_seen)
        return new_types

    async def _traces(self, catalog: Catalog) -> tuple[dict[str, str], dict[str, str]]:
        """Wan2GP's traces of use (wangpd/usage.py): strong signals (type -> ``transformer_types``, ``queued`` or
        ``used``, the strongest per type) and weak hints (type -> what; shown, never a reason to download).

        Outputs are scanned incrementally: the scan state and every model ever seen in an output live in the
        store, so 100,000 outputs are read once. The store is read and written here, on the loop's thread; the
        disk work runs in a thread."""
        if not self.config.auto_queue.use_traces:
            return {}, {}
        wan2gp = self.config.wan2gp
        raw = catalog.settings.raw
        state = self.store.get_setting("output_scan")
        metadata_type = raw.get("metadata_type", "metadata")

        def read() -> tuple[list[str], list[str], list[str], dict[str, str], usage.ScanResult]:
            listed = usage.read_transformer_types(raw)
            pending, problems = usage.read_queue(wan2gp.settings_dir)
            hints = usage.hints(wan2gp.settings_dir, wan2gp.directory, raw)
            folders = usage.output_folders(wan2gp.directory, raw)
            scanned = self._scanner.scan(folders, metadata_type if isinstance(metadata_type, str) else "", state)
            return listed, pending, problems, hints, scanned

        listed, pending, problems, hints, scanned = await asyncio.to_thread(read)
        self.store.set_setting("output_scan", scanned.state)
        used: dict[str, float] = dict(self.store.get_setting("used_models", {}))
        if scanned.used:
            first = sorted(t for t in scanned.used if t not in used)
            for model_type, when in scanned.used.items():
                used[model_type] = max(used.get(model_type, 0.0), when)
            self.store.set_setting("used_models", used)
            if first:
                log.info("outputs: %d file(s) read; first made with %s", scanned.files_read, ", ".join(first))
        for problem in [*problems, *scanned.problems]:
            if problem not in self._reported:
                self._reported.add(problem)
                log.warning("Wan2GP traces: %s", problem)
        traces: dict[str, str] = {}
        for reason, types in (("used", used), ("queued", pending), ("transformer_types", listed)):
            for model_type in types:  # later (stronger) reasons win
                traces[model_type] = reason
        self.pending = list(pending)
        return traces, hints

    def _local_of(self, target: str) -> str:
        root = self.config.wan2gp.directory
        try:
            return Path(target).relative_to(root).as_posix()
        except ValueError:
            return target

    def _target_of(self, wanted: WantedFile) -> str:
        return str(self.config.wan2gp.directory / wanted.local)

    async def _auto_queue(
        self,
        current_plan: Plan,
        kept: dict[str, str],
        why: str,
        *,
        joining: dict[str, str],
        remembered: Mapping[str, KeepEntry],
        exact: bool = False,
    ) -> dict[str, Any]:
        """Queue what kept models miss: one batch per model (models kept before this change first, then the ones
        joining now, strongest reason first), each queued at once while the change's total stays within
        ``auto_queue.max_auto_bytes`` (and sizes are known, and the disk has room), else held for approval."""
        nothing = {"queued": 0, "bytes": 0, "approval": False, "batch": None, "batches": []}
        if not kept:
            return nothing
        jobs = {self._local_of(job.target): job.state.value for job in self.store.list_jobs()}
        candidates = policy.files_to_queue(current_plan, kept, jobs, exact_variants=exact)
        every_variant = [t for t in kept if (e := remembered.get(t)) is not None and e.kept and e.all_variants]
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
            return nothing
        candidates = await self._with_sizes(candidates)
        order = sorted(kept, key=lambda t: (t in joining, policy.reason_rank(kept[t]), t))
        owned: dict[str, list[PlannedFile]] = {}
        for planned in candidates:  # a file wanted by several models goes with the first of them
            owner = next((t for t in order if t in planned.wanted_by), None)
            if owner is not None:
                owned.setdefault(owner, []).append(planned)
        budget = self.config.auto_queue.max_auto_bytes
        free = disk_free(self.config.hub.cache_dir)
        spent = 0
        batches: list[dict[str, Any]] = []
        for model_type in [t for t in order if t in owned]:
            files = owned[model_type]
            decision = policy.approval_for(
                files,
                replace(self.config.auto_queue, max_auto_bytes=max(0, budget - spent)),
                None if free is None else free - spent,
                self.config.download.free_space_reserve,
            )
            batch = None
            if decision.needed:
                # Short, typeable and unique: `wangpctl approve b7` (or by model type: `wangpctl approve 't2v*'`).
                sequence = int(self.store.get_setting("batch_sequence", 0)) + 1
                self.store.set_setting("batch_sequence", sequence)
                batch = f"b{sequence}"
            else:
                spent += decision.total_bytes
            reason = kept[model_type]
            queued = self._queue_files(
                files,
                state=JobState.NEEDS_APPROVAL if decision.needed else JobState.QUEUED,
                origin="auto",
                batch=batch,
                # Pending in Wan2GP's own queue: it will load these next, so they go first.
                priority=QUEUED_PRIORITY if reason == "queued" else 0,
            )
            line = (
                f"auto-queue ({why}): {model_type} ({reason}): {queued} file(s), {format_bytes(decision.total_bytes)}"
                + (f" + {decision.unknown} of unknown size" if decision.unknown else "")
                + (f": held for approval as batch {batch} ({decision.reason})" if decision.needed else ": queued")
            )
            log.info(line)
            self.last_decision = line
            self.events.publish(
                "auto",
                why=why,
                files=queued,
                bytes=decision.total_bytes,
                unknown=decision.unknown,
                models=[model_type],
                reason_kept=reason,
                batch=batch,
                approval=decision.needed,
                reason=decision.reason,
            )
            batches.append(
                {
                    "model": model_type,
                    "kept": reason,
                    "files": queued,
                    "bytes": decision.total_bytes,
                    "approval": decision.needed,
                    "batch": batch,
                    "reason": decision.reason,
                }
            )
        held = [b for b in batches if b["approval"]]
        return {
            "queued": sum(b["files"] for b in batches),
            "bytes": sum(b["bytes"] for b in batches),
            "approval": bool(held),
            "batch": held[0]["batch"] if held else None,
            "batches": batches,
        }

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

    def _select(self, catalog: Catalog, patterns: Sequence[str], also: Iterable[str] = ()) -> list[str]:
        """The model types (of the catalog, and ``also``: e.g. remembered ones whose definition is gone) each glob
        matches, in pattern order without repeats; NotFound for a glob that matches none."""
        names = sorted(set(catalog.models) | set(also))
        selected: list[str] = []
        for pattern in patterns:
            found = [t for t in names if fnmatch.fnmatchcase(t, pattern)]
            if not found:
                raise NotFound(f"no model type matches {pattern!r} (see `wangpctl models --all`)")
            selected += [t for t in found if t not in selected]
        return selected

    async def models_list(self, filter: str | None, missing_only: bool, new_only: bool = False) -> list[dict[str, Any]]:
        catalog, current = await self.current()
        first_seen = self.store.get_setting("first_seen", {})
        remembered = self.store.keep_set()
        rows = []
        for model_type, model_plan in sorted(current.models.items()):
            model = catalog.models[model_type]
            if new_only and model_type not in first_seen:
                continue
            if filter:
                text = f"{model_type} {model.name} {model.family}".lower()
                wildcard = any(ch in filter for ch in "*?[")
                hit = fnmatch.fnmatchcase(model_type, filter) if wildcard else filter.lower() in text
                if not hit:
                    continue
            if missing_only and model_plan.complete and not new_only:
                continue
            entry = remembered.get(model_type)
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
                    "kept_since": entry.since if entry is not None and entry.kept else None,
                    "new_since": first_seen.get(model_type),
                    "visible": model.visible,
                    "plugin": model.plugin,
                    "error": model_plan.error,
                    "warnings": list(model_plan.warnings),
                }
            )
        if new_only:
            rows.sort(key=lambda row: (-(row["new_since"] or 0), row["type"]))
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
            "kept": _entry_json(self.store.keep_set().get(model_type)),
            "hints": self.hints.get(model_type),  # weak traces (last model shown, a settings file): never a reason
            "visible": model.visible,
            "plugin": model.plugin,
            "alternatives": [w.local for w in model.alternatives],
            "profiles": await asyncio.to_thread(_profiles_json, model, catalog.wan2gp_dir),
            "unlisted": model.unlisted,
        }
        return data

    async def disk_use(self, patterns: Sequence[str], by: str) -> dict[str, Any]:
        """``du``: bytes on disk of the present files, per model or family (see :mod:`wangpd.diskuse`)."""
        if by not in ("model", "family"):
            raise InvalidParams(f"by must be 'model' or 'family', not {by!r}")
        catalog, current = await self.current()
        selected = self._select(catalog, patterns) if patterns else None
        invokeai = self.sources.invokeai.models_dir if self.sources is not None else None
        hf_cache = self.config.hub.cache_dir
        families = {t: m.family for t, m in catalog.models.items()}
        return await asyncio.to_thread(
            diskuse.measure,
            current,
            catalog.wan2gp_dir,
            hf_cache=hf_cache,
            invokeai=invokeai,
            libraries=self.config.libraries.folders,
            families=families,
            selected=selected,
            by=by,
        )

    # ---- what can go -------------------------------------------------------------------------------------------

    async def _survey(
        self, dropping: Sequence[str] = (), also: Mapping[str, Sequence[str]] | None = None
    ) -> prune.Survey:
        """What no kept model needs, as if ``dropping`` were dropped already (``prune TYPE --dry-run``); ``also``:
        remembered files of those models (a dropped model's remembered set is cleared)."""
        if self.catalog is None:
            await self.refresh(why="unused")
        catalog, _ = await self.current()
        remembered = self.store.keep_set()
        kept = set(self.tracked) - set(dropping)
        refused = {t for t, e in remembered.items() if not e.kept} | set(dropping)
        named: dict[str, set[str]] = {}
        needed: set[str] = set()
        variants: set[str] = set()
        folders: set[str] = set()
        for model_type, model in catalog.models.items():
            for group, wanted_list in (
                ("files", model.files),
                ("alternatives", model.alternatives),
                ("optional", model.optional_files),
            ):
                for wanted in wanted_list:
                    paths = dict.fromkeys((wanted.local, *wanted.lookup))
                    if wanted.whole_folder:
                        folders.update(paths)
                    for path in paths:
                        named.setdefault(path, set()).add(model_type)
                        if model_type in kept:
                            (needed if group == "files" else variants).add(path)
        for wanted_list in catalog.optional_features.values():  # Wan2GP-wide extras: never judged unused
            for wanted in wanted_list:
                needed.update((wanted.local, *wanted.lookup))
        root = catalog.wan2gp_dir
        jobs = self.store.list_jobs()
        active = [job for job in jobs if job.state in ACTIVE]
        needed.update(self._local_of(job.target) for job in active)
        protected = {job.id for job in active} | {job.id for job in jobs if self._local_of(job.target) in needed}
        gone: dict[str, set[str]] = {}
        for model_type, entry in remembered.items():
            if entry.kept and model_type not in catalog.models:
                for local in entry.files:
                    gone.setdefault(local, set()).add(model_type)
        for model_type, files in (also or {}).items():
            for local in files:
                named.setdefault(local, set()).add(model_type)
        wants = prune.Wants(
            root=root,
            needed=frozenset(needed),
            named_by={k: tuple(sorted(v)) for k, v in named.items()},
            variants=frozenset(variants - needed),
            refused=frozenset(refused),
            gone={k: tuple(sorted(v)) for k, v in gone.items()},
            orphan_roots=tuple(catalog.settings.checkpoints_paths),
            folders=frozenset(folders),
            protected_jobs=frozenset(protected),
        )
        invokeai = self.sources.invokeai.models_dir if self.sources is not None else None
        made = self.store.made()
        found = await asyncio.to_thread(
            prune.survey,
            wants,
            made,
            hf_cache=self.config.hub.cache_dir,
            invokeai=invokeai,
            libraries=self.config.libraries.folders,
        )
        if found.stale:  # removed or replaced since: not wangpd's any more, whatever is there now
            self.store.forget_made(r.path for r in found.stale)
        return found

    async def unused(self) -> dict[str, Any]:
        """``wangpctl unused``: files on disk no kept model needs, with why, size and whether prune may remove them."""
        found = await self._survey()
        return _unused_json(found, found.rows, dry_run=True)

    async def prune(
        self, patterns: Sequence[str], *, unused: bool, dry_run: bool, paths: Sequence[str] | None = None
    ) -> dict[str, Any]:
        """Remove what wangpd made that no kept model needs: of the models named (which leave the keep-set first,
        so nothing is fetched back) and, with ``unused``, all of it. ``paths``: the list the user confirmed; only
        those go (what changed since is left for the next prune)."""
        if not patterns and not unused:
            raise InvalidParams("name model types to prune, or pass unused (prune everything no kept model needs)")
        remembered = self.store.keep_set()
        selected: list[str] = []
        if patterns:
            selected = self._select(self.catalog or (await self.current())[0], patterns, remembered)
        also = {t: remembered[t].files for t in selected if t in remembered}
        dropped: dict[str, Any] | None = None
        if selected and not dry_run:
            dropped = await self.drop_models(selected)
        found = await self._survey(selected, also)
        chosen = [row for row in found.rows if unused or set(row.models) & set(selected)]
        if paths is not None:  # the confirmed list: what was not shown then is not removed now
            confirmed = set(paths)
            chosen = [row for row in chosen if not row.made or row.path in confirmed]
        result = _unused_json(found, chosen, dry_run=dry_run)
        result["models"] = selected
        if dry_run:
            return result
        removal = found.removal(chosen)
        removed, skipped = await asyncio.to_thread(prune.remove, removal, found.ours, found.cache_root)
        self.store.forget_made(removed)
        forgotten = self.store.forget_finished_jobs(removed)
        for path in removed:
            log.info("pruned %s", path)
        for problem in skipped:
            log.warning("prune: %s", problem)
        log.info(
            "prune%s: removed %d path(s), %s freed%s",
            f" {', '.join(selected)}" if selected else "",
            len(removed),
            format_bytes(removal.frees),
            f"; {len(skipped)} left alone" if skipped else "",
        )
        self.events.publish("prune", models=selected, removed=len(removed), freed=removal.frees)
        result.update(removed=removed, skipped=skipped, freed=removal.frees, jobs_forgotten=forgotten)
        result["stopped"] = dropped["stopped"] if dropped else []
        return result

    async def adopt_made(self) -> int:
        """Once, after the upgrade that began recording what wangpd makes: the links of jobs it completed before
        (symlinks only: a copy cannot be told from the user's file) and the blobs it downloaded for them."""
        if self.store.get_setting("made_adopted"):
            return 0
        jobs = [
            (job.id, job.target, job.source, job.repo or job.url)
            for job in self.store.list_jobs([JobState.COMPLETE])
            if job.source in ("download", "hf-cache", "invokeai")
        ]
        known = {m.path for m in self.store.made()}
        records = await asyncio.to_thread(prune.adopt, jobs, known, self.config.hub.cache_dir)
        self.store.record_made(records)
        self.store.set_setting("made_adopted", time.time())
        if records:
            log.info("noted %d link(s) and blob(s) wangpd made before it kept such notes", len(records))
        return len(records)

    async def plan_json(self, models: Sequence[str] | None, all_variants: bool) -> dict[str, Any]:
        catalog, _ = await self.current(all_variants)
        selected = self._select(catalog, models) if models else None
        return plan_to_json(await self._planned(catalog, selected))

    async def add_models(
        self,
        patterns: Sequence[str],
        *,
        all_variants: bool,
        dry_run: bool,
        priority: int,
        profiles: Sequence[str] = (),
    ) -> dict[str, Any]:
        """Queue the missing files of the given model types (globs allowed); they join the keep-set (manual).
        ``profiles``: names or globs of their accelerator profiles whose LoRAs are queued with them."""
        if not patterns:
            raise InvalidParams("name at least one model type")
        catalog, _ = await self.current(all_variants or None)
        selected = self._select(catalog, patterns)
        broken = [f"{t}: {catalog.models[t].error}" for t in selected if catalog.models[t].error]
        usable = [t for t in selected if not catalog.models[t].error]
        if profiles:
            catalog = _with_profiles(catalog, usable, profiles)
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
            for model_type in usable:
                self.store.keep(model_type, "manual", all_variants=all_variants)
                self.tracked[model_type] = "manual"
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

    def _held(self, which: str | None) -> list[Job]:
        """Held jobs: all, one batch (``b7``), or those of the model types a glob names (``'ltx2_*'``)."""
        held = self.store.list_jobs([JobState.NEEDS_APPROVAL])
        if which is None:
            return held
        if _BATCH_RE.fullmatch(which):
            return [job for job in held if job.batch == which]
        return [job for job in held if any(fnmatch.fnmatchcase(t, which) for t in job.wanted_by)]

    def decide_batch(self, batch: str | None, approve: bool) -> dict[str, Any]:
        """Approve (queue) or reject (cancel) held files: ``None`` = all, a batch id, or a model-type glob.
        A rejected model leaves the keep-set (``rejected``): it is not proposed again, `wangpctl add` still can."""
        held = self._held(batch)
        if not held:
            raise NotFound(
                f"nothing held for approval matches {batch!r} (see `wangpctl status`)"
                if batch
                else "nothing is waiting for approval"
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
        models = sorted({t for job in held for t in job.wanted_by if t in self.tracked})
        if batch is not None and not _BATCH_RE.fullmatch(batch):
            models = [t for t in models if fnmatch.fnmatchcase(t, batch)]
        if approve:
            self.wake()
        else:
            remembered = self.store.keep_set()
            for model_type in models:
                entry = remembered.get(model_type)
                if entry is None or entry.reason != "manual":  # a model added by hand stays: only its files wait
                    self.store.refuse(model_type, "rejected")
                    self.tracked.pop(model_type, None)
        total = sum(job.size or 0 for job in held)
        verb = "approved" if approve else "rejected"
        log.info(
            "%s %d file(s), %s%s for %s",
            verb,
            len(held),
            format_bytes(total),
            f" ({batch})" if batch else "",
            ", ".join(models) or "-",
        )
        return {verb: len(held), "bytes": total, "batch": batch, "models": models}

    async def drop_models(self, patterns: Sequence[str]) -> dict[str, Any]:
        """Take models out of the keep-set by the user's word: their queued, held, paused and running jobs stop
        (unless another kept model wants the file), and nothing is fetched for them again automatically. Returns
        what stopped and which of their files on disk no kept model needs any more (nothing is deleted)."""
        if not patterns:
            raise InvalidParams("name at least one model type")
        remembered = self.store.keep_set()
        catalog = self.catalog or (await self.current())[0]
        selected = self._select(catalog, patterns, remembered)
        for model_type in selected:
            self.store.refuse(model_type, "dropped")
            self.tracked.pop(model_type, None)
        still = {t for t, e in self.store.keep_set().items() if e.kept}
        stopped = []
        for job in self.store.list_jobs(
            [JobState.QUEUED, JobState.NEEDS_APPROVAL, JobState.PAUSED, JobState.DOWNLOADING]
        ):
            if set(job.wanted_by) & set(selected) and not set(job.wanted_by) & still:
                changed = self.store.transition(job.id, JobState.CANCELLED, last_error="model dropped by user")
                self.events.publish("job", id=job.id, state="cancelled", why="dropped", target=job.target)
                self.stop_job(changed)
                stopped.append(job.id)
        needed = {f.local for t in still if t in catalog.models for f in catalog.models[t].files}
        files = {f.local for t in selected for f in (catalog.models[t].files if t in catalog.models else ())} | {
            local for t in selected if t in remembered for local in remembered[t].files
        }
        root = self.config.wan2gp.directory
        unneeded = []
        for local in sorted(files - needed):
            path = root / local
            if path.exists():
                unneeded.append({"local": local, "size": _size_on_disk(path)})
        log.info(
            "dropped %s: %d job(s) stopped; %d file(s) on disk no kept model needs",
            ", ".join(selected),
            len(stopped),
            len(unneeded),
        )
        self.events.publish("model", models=selected, change="dropped")
        return {"dropped": selected, "stopped": stopped, "unneeded": unneeded}

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
            "kept": dict(sorted(Counter(self.tracked.values()).items())),
            "gone": sorted(t for t, e in self.store.keep_set().items() if e.kept and e.gone_at is not None),
            "models": len(self.catalog.models) if self.catalog else None,
            "model_errors": sum(1 for m in self.catalog.models.values() if m.error) if self.catalog else None,
            "orphans": len(self.orphans),
            "last_refresh": self.last_refresh,
            "last_decision": self.last_decision,
        }


def _entry_json(entry: KeepEntry | None) -> dict[str, Any] | None:
    if entry is None:
        return None
    return {
        "reason": entry.reason,
        "kept": entry.kept,
        "since": entry.since,
        "all_variants": entry.all_variants,
        "files": list(entry.files),
        "gone_at": entry.gone_at,
    }


def _unused_json(found: prune.Survey, rows: Sequence[prune.Unused], *, dry_run: bool) -> dict[str, Any]:
    """Rows plus totals: bytes counted once per inode; ``frees`` is what pruning all the removable rows frees."""
    seen: set[str] = set()
    total = 0
    by_reason: dict[str, dict[str, int]] = {}
    for row in rows:
        bucket = by_reason.setdefault(row.reason, {"files": 0, "bytes": 0})
        bucket["files"] += 1
        real = os.path.realpath(row.path)
        if real not in seen:
            seen.add(real)
            total += row.bytes
            bucket["bytes"] += row.bytes
    removable = [row for row in rows if row.made]
    return {
        "dry_run": dry_run,
        "rows": [row.to_json() for row in rows],
        "bytes": total,
        "frees": found.removal(removable).frees if removable else 0,
        "removable": len(removable),
        "by_reason": by_reason,
    }


def _with_profiles(catalog: Catalog, model_types: Sequence[str], patterns: Sequence[str]) -> Catalog:
    """``catalog`` with the LoRAs of the named profiles added to those models' files (``add --with-profile``).
    Raises NotFound for a pattern no profile of theirs matches."""
    models = dict(catalog.models)
    for pattern in patterns:
        hits = 0
        for model_type in model_types:
            model = models[model_type]
            chosen = [
                p
                for p in model.profiles
                if fnmatch.fnmatchcase(p.name, pattern) or fnmatch.fnmatchcase(p.name.split("/", 1)[1], pattern)
            ]
            have = {f.local for f in model.files}
            extra = tuple(f for p in chosen for f in p.files if f.local not in have)
            models[model_type] = replace(model, files=model.files + tuple(dict((f.local, f) for f in extra).values()))
            hits += len(chosen)
        if not hits:
            raise NotFound(
                f"no accelerator profile of {', '.join(model_types)} matches {pattern!r} "
                f"(see `wangpctl models show {model_types[0] if model_types else 'TYPE'}`)"
            )
    return replace(catalog, models=models)


def _profiles_json(model: ModelDef, root: Path) -> list[dict[str, Any]]:
    """A model's accelerator profiles with their LoRAs and whether each is on disk (blocking: a stat each)."""
    return [
        {
            "name": profile.name,
            "used": profile.used,
            "included": profile.included,
            "files": [{"local": f.local, "url": f.url, "present": (root / f.local).is_file()} for f in profile.files],
        }
        for profile in model.profiles
    ]


def _size_on_disk(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except OSError:
        return None
