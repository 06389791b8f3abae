"""Planner: the files a set of models wants, against what is already there.

:func:`plan` is pure: it sees the disk, the HuggingFace cache and InvokeAI only through the callables it is given,
so the daemon, the offline ``wangpd plan`` command and the tests share it. :func:`scan_present` builds the usual
``exists`` callable from one directory listing per folder Wan2GP looks in.

Statuses of a planned file:

``present``   some lookup path of the file exists (Wan2GP will not download it), or, unless the catalog was
              loaded with every variant, another variant of the same group does (the user already has one
              variant of that transformer or encoder: don't fetch a second one); ``present_at`` says which path.
``linkable``  not in the Wan2GP folder, but the HF cache or InvokeAI has it (``source`` says which): link, no
              download.
``missing``   to download.

A local path wanted by several models is planned once (``wanted_by`` lists them all); the first model in sorted
order that wants it decides the source URL, as Wan2GP's "first writer wins" (the handler table's
``shared_local_paths`` lists the known cases where two repos serve one path).
"""

from __future__ import annotations

import fnmatch
import json
import os
import posixpath
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from wangpd.catalog import Catalog, load_catalog
from wangpd.errors import NotFound
from wangpd.models import WantedFile
from wangpd.units import format_bytes

__all__ = [
    "PLAN_SCHEMA_VERSION",
    "STATUSES",
    "ModelPlan",
    "Plan",
    "PlannedFile",
    "plan",
    "plan_to_json",
    "render_plan_text",
    "run_plan_cli",
    "scan_present",
]

PLAN_SCHEMA_VERSION = 1
STATUSES = ("present", "linkable", "missing")


@dataclass(frozen=True)
class PlannedFile:
    file: WantedFile
    wanted_by: tuple[str, ...]
    status: str  # one of STATUSES
    present_at: str | None = None  # the lookup path (of this file or of a variant of it) that exists
    size: int | None = None
    source: str | None = None  # where a linkable file is: "hf-cache", "invokeai"


@dataclass(frozen=True)
class ModelPlan:
    """One model's standing: ``present`` of ``total`` needed files; ``missing_bytes`` None when a size is unknown."""

    model_type: str
    name: str
    family: str
    architecture: str | None
    present: int
    total: int
    missing: int
    linkable: int
    missing_bytes: int | None
    error: str | None = None
    warnings: tuple[str, ...] = ()

    @property
    def complete(self) -> bool:
        return self.error is None and self.present == self.total


@dataclass(frozen=True)
class Plan:
    files: tuple[PlannedFile, ...]
    models: dict[str, ModelPlan]
    wan2gp_dir: Path | None = None
    handler_commit: str | None = None
    all_variants: bool = False
    errors: tuple[str, ...] = ()

    @property
    def missing_bytes(self) -> int | None:
        sizes = [p.size for p in self.files if p.status == "missing"]
        return None if any(s is None for s in sizes) else sum(s for s in sizes if s is not None)


def _lookup_keys(wanted: WantedFile) -> tuple[str, ...]:
    # A whole-folder entry is looked up as "<path>/" so that a file of the same name does not count.
    return tuple(p + "/" for p in wanted.lookup) if wanted.whole_folder else wanted.lookup


def plan(
    catalog: Catalog,
    *,
    exists: Callable[[str], bool],
    size_of: Callable[[WantedFile], int | None] = lambda f: None,
    linkable: Callable[[WantedFile], str | None] = lambda f: None,
    model_types: Iterable[str] | None = None,
    include_optional: bool = False,
) -> Plan:
    """Plan the files of ``model_types`` (default: every model of the catalog).

    ``exists(path)`` answers for a path relative to the Wan2GP folder (a folder is asked as ``"path/"``);
    ``size_of`` gives a file's size when known; ``linkable`` names where else the file already is (or None).
    ``include_optional`` adds on-demand files to each model. Raises NotFound for an unknown model type.
    """
    selected = list(dict.fromkeys(model_types)) if model_types is not None else sorted(catalog.models)
    unknown = [t for t in selected if t not in catalog.models]
    if unknown:
        raise NotFound(f"unknown model type {unknown[0]!r}")

    # Every variant group of the whole catalog: a variant the user has counts even if it came with another model.
    groups: dict[str, dict[str, WantedFile]] = {}
    if not catalog.all_variants:
        for model in catalog.models.values():
            for wanted in (*model.files, *model.alternatives):
                if wanted.variant_of:
                    groups.setdefault(wanted.variant_of, {}).setdefault(wanted.local, wanted)

    wanted_by: dict[str, list[str]] = {}
    first: dict[str, WantedFile] = {}
    for model_type in selected:
        model = catalog.models[model_type]
        if model.error is not None:
            continue
        for wanted in (*model.files, *(model.optional_files if include_optional else ())):
            first.setdefault(wanted.local, wanted)
            wanted_by.setdefault(wanted.local, []).append(model_type)

    planned: dict[str, PlannedFile] = {}
    for local, wanted in first.items():
        present_at = next((p for p in _lookup_keys(wanted) if exists(p)), None)
        if present_at is None and wanted.variant_of in groups:
            for other in groups[wanted.variant_of].values():
                if other.local != local:
                    present_at = next((p for p in _lookup_keys(other) if exists(p)), None)
                    if present_at is not None:
                        break
        source = None
        if present_at is not None:
            status = "present"
        else:
            source = linkable(wanted)
            status = "linkable" if source else "missing"
        planned[local] = PlannedFile(
            file=wanted,
            wanted_by=tuple(wanted_by[local]),
            status=status,
            present_at=present_at.rstrip("/") if present_at else None,
            size=size_of(wanted),
            source=source,
        )

    models: dict[str, ModelPlan] = {}
    for model_type in selected:
        model = catalog.models[model_type]
        needed = (*model.files, *(model.optional_files if include_optional else ()))
        states = [planned[w.local] for w in needed] if model.error is None else []
        missing = [p for p in states if p.status == "missing"]
        missing_sizes = [p.size for p in missing]
        models[model_type] = ModelPlan(
            model_type=model_type,
            name=model.name,
            family=model.family,
            architecture=model.architecture,
            present=sum(p.status == "present" for p in states),
            total=len(states),
            missing=len(missing),
            linkable=sum(p.status == "linkable" for p in states),
            missing_bytes=None if None in missing_sizes else sum(s for s in missing_sizes if s is not None),
            error=model.error,
            warnings=model.warnings,
        )
    return Plan(
        files=tuple(planned.values()),
        models=models,
        wan2gp_dir=catalog.wan2gp_dir,
        handler_commit=catalog.handler_commit,
        all_variants=catalog.all_variants,
        errors=catalog.errors,
    )


# ---------------------------------------------------------------------------------------------------------------
# What is on disk


class _Listing:
    """Set-membership presence check over directory listings made once.

    A path in a listed folder is answered from the listing; any other path with a real stat, so the check is
    always right, only slower off the listed folders.
    """

    def __init__(self, base: Path, folders: Iterable[str]) -> None:
        self.base = base
        self.names: dict[str, set[str]] = {}
        for folder in folders:
            names: set[str] = set()
            try:
                with os.scandir(base / folder if folder else base) as entries:
                    for entry in entries:
                        # is_file()/is_dir() follow symlinks: a link to a file is present, a dangling one is not.
                        if entry.is_file():
                            names.add(entry.name)
                        elif entry.is_dir():
                            names.add(entry.name + "/")
            except OSError:
                pass  # no such folder: nothing in it is present
            self.names[folder] = names

    def __call__(self, path: str) -> bool:
        folder_entry = path.endswith("/")
        clean = path.rstrip("/")
        parent, name = posixpath.split(clean)
        parent = "" if parent in ("", ".") else parent
        names = self.names.get(parent)
        if names is not None:
            return (name + "/" if folder_entry else name) in names
        target = self.base / clean
        return target.is_dir() if folder_entry else target.is_file()


def scan_present(wan2gp_dir: Path, catalog: Catalog) -> Callable[[str], bool]:
    """A presence check for every lookup path of ``catalog``, from one ``os.scandir`` per folder looked in.

    Lists exactly the folders Wan2GP looks in (each checkpoints root and its sub-folders that some file names, each
    LoRA folder), not whole trees: the default root ``.`` is the Wan2GP folder itself, with its venv and outputs.
    Any existing file counts, as for Wan2GP, including a symlink to one.
    """
    folders: set[str] = set()
    wanted: list[WantedFile] = []
    for model in catalog.models.values():
        wanted.extend(model.files)
        wanted.extend(model.alternatives)
        wanted.extend(model.optional_files)
    for files in catalog.optional_features.values():
        wanted.extend(files)
    for item in wanted:
        for path in item.lookup:
            parent = posixpath.dirname(path)
            folders.add("" if parent == "." else parent)
    return _Listing(Path(wan2gp_dir), sorted(folders))


# ---------------------------------------------------------------------------------------------------------------
# Output


def plan_to_json(plan: Plan) -> dict[str, Any]:
    """The plan as JSON-ready data. Schema (version 1, keys always present)::

    {"schema": 1, "wan2gp_dir": str|null, "handler_commit": str|null, "all_variants": bool,
     "errors": [str],                               # file-level problems, e.g. a bad wgp_config.json
     "files": [{"local": str, "lookup": [str], "url": str, "repo": str|null, "revision": str,
                "path_in_repo": str, "role": str, "optional": bool, "variant_of": str|null,
                "whole_folder": bool, "wanted_by": [model type], "status": "present"|"linkable"|"missing",
                "present_at": str|null, "size": int|null, "source": str|null}],
     "models": {model_type: {"name": str, "family": str, "architecture": str|null, "present": int,
                "total": int, "missing": int, "linkable": int, "missing_bytes": int|null,
                "complete": bool, "error": str|null, "warnings": [str]}},
     "totals": {"files": int, "present": int, "linkable": int, "missing": int, "missing_bytes": int|null}}
    """
    files = []
    for planned in plan.files:
        wanted = planned.file
        files.append(
            {
                "local": wanted.local,
                "lookup": list(wanted.lookup),
                "url": wanted.url,
                "repo": wanted.repo,
                "revision": wanted.revision,
                "path_in_repo": wanted.path_in_repo,
                "role": wanted.role,
                "optional": wanted.optional,
                "variant_of": wanted.variant_of,
                "whole_folder": wanted.whole_folder,
                "wanted_by": list(planned.wanted_by),
                "status": planned.status,
                "present_at": planned.present_at,
                "size": planned.size,
                "source": planned.source,
            }
        )
    models = {
        model_type: {
            "name": m.name,
            "family": m.family,
            "architecture": m.architecture,
            "present": m.present,
            "total": m.total,
            "missing": m.missing,
            "linkable": m.linkable,
            "missing_bytes": m.missing_bytes,
            "complete": m.complete,
            "error": m.error,
            "warnings": list(m.warnings),
        }
        for model_type, m in plan.models.items()
    }
    return {
        "schema": PLAN_SCHEMA_VERSION,
        "wan2gp_dir": str(plan.wan2gp_dir) if plan.wan2gp_dir is not None else None,
        "handler_commit": plan.handler_commit,
        "all_variants": plan.all_variants,
        "errors": list(plan.errors),
        "files": files,
        "models": models,
        "totals": {
            "files": len(plan.files),
            "present": sum(p.status == "present" for p in plan.files),
            "linkable": sum(p.status == "linkable" for p in plan.files),
            "missing": sum(p.status == "missing" for p in plan.files),
            "missing_bytes": plan.missing_bytes,
        },
    }


def _models_text(models: Sequence[str], limit: int = 4) -> str:
    if len(models) <= limit:
        return ", ".join(models)
    return f"{', '.join(models[:limit])} (+{len(models) - limit} more)"


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def render_plan_text(plan: Plan) -> str:
    """Human-readable plan: one line per file, then one per model, then totals."""
    lines: list[str] = []
    for error in plan.errors:
        lines.append(f"warning: {error}")
    order = {"missing": 0, "linkable": 1, "present": 2}
    for planned in sorted(plan.files, key=lambda p: (order[p.status], p.file.local)):
        wanted = planned.file
        origin = f"{wanted.repo}@{wanted.revision}:{wanted.path_in_repo}" if wanted.repo else wanted.url
        status = planned.status
        if planned.status == "present" and planned.present_at != wanted.local:
            status = f"present ({planned.present_at})"
        elif planned.status == "linkable":
            status = f"linkable ({planned.source})"
        size = format_bytes(planned.size) if planned.size is not None else "?"
        lines.append(f"{status:<9} {size:>10}  {wanted.local}  <- {origin}  [{_models_text(planned.wanted_by)}]")
    if plan.files:
        lines.append("")
    lines.append(f"{'MODEL':<44} {'FILES':>9}  {'TO FETCH':>10}  NAME")
    for model_type, model in plan.models.items():
        if model.error is not None:
            lines.append(f"{model_type:<44} {'error':>9}  {'':>10}  {model.error}")
            continue
        to_fetch = format_bytes(model.missing_bytes) if model.missing else "-"
        counts = f"{model.present}/{model.total}"
        lines.append(f"{model_type:<44} {counts:>9}  {to_fetch:>10}  {model.name}")
        for warning in model.warnings:
            lines.append(f"{'':<44} warning: {warning}")
    missing = [p for p in plan.files if p.status == "missing"]
    lines.append("")
    lines.append(
        f"{len(plan.files)} files: {len(plan.files) - len(missing)} present or linkable, {len(missing)} to download"
        f" ({format_bytes(plan.missing_bytes)})"
    )
    if plan.handler_commit:
        lines.append(f"handler table: Wan2GP commit {plan.handler_commit[:12]}")
    # Names, errors and paths come from definition files: no escape sequence or newline of theirs reaches the
    # terminal or breaks a line of the table.
    return "\n".join(_CONTROL.sub("?", line.replace("\t", " ")) for line in lines) + "\n"


def run_plan_cli(
    wan2gp_dir: Path,
    model_globs: Sequence[str],
    all_variants: bool,
    as_json: bool,
    handler_files: Sequence[Path] = (),
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """``wangpd plan``: print the plan of the models matching ``model_globs`` (all when empty), offline.

    Presence comes from the Wan2GP folder only (sizes and the caches are unknown without the daemon). Returns 0,
    or 1 when a glob matched no model type (naming it on ``err``, nothing on ``out``). A bad handler table raises
    ConfigError for the caller to print.
    """
    out = out if out is not None else sys.stdout
    err = err if err is not None else sys.stderr
    catalog = load_catalog(Path(wan2gp_dir), handler_files=handler_files, all_variants=all_variants)
    selected: list[str] | None = None
    if model_globs:
        selected = []
        for pattern in model_globs:
            matched = [t for t in catalog.models if fnmatch.fnmatchcase(t, pattern)]
            if not matched:
                err.write(f"wangpd plan: no model type matches {pattern!r} (in {catalog.wan2gp_dir})\n")
                return 1
            selected.extend(matched)
    result = plan(catalog, exists=scan_present(catalog.wan2gp_dir, catalog), model_types=selected)
    if as_json:
        json.dump(plan_to_json(result), out, indent=1)
        out.write("\n")
    else:
        out.write(render_plan_text(result))
    return 0
