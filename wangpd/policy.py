"""Auto-queue policy: which models are kept complete, and whether an automatic batch may start unasked.

Pure functions over a plan; the daemon applies their answers to the store. Nothing here touches the disk or
the network, so every rule is testable on its own.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from wangpd.config import AutoQueueConfig
from wangpd.planner import Plan, PlannedFile

__all__ = ["Approval", "approval_for", "files_to_queue", "matches", "tracked_models"]


def matches(model_type: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(model_type, pattern) for pattern in patterns)


def installed(plan: Plan, model_type: str, main_files: Iterable[str]) -> bool:
    """A model counts as installed when one of its main transformer files (or a variant of it) is present."""
    by_local = {p.file.local: p for p in plan.files}
    return any(by_local.get(local) is not None and by_local[local].status == "present" for local in main_files)


def tracked_models(
    plan: Plan,
    main_files: Mapping[str, Iterable[str]],
    policy: AutoQueueConfig,
    manual: Mapping[str, str],
    new_types: Iterable[str] = (),
) -> dict[str, str]:
    """Model type -> why it is kept complete (``manual``, ``installed``, ``all``, ``include``, ``new``).

    Added by hand always wins; ``exclude`` removes everything else; ``new_models: queue`` tracks a type that
    appeared while wangpd was watching (or since its last run).
    """
    result: dict[str, str] = {}
    new = set(new_types)
    for model_type, model in plan.models.items():
        if model.error is not None:
            continue
        if manual.get(model_type, "").startswith("manual"):
            result[model_type] = manual[model_type]
        elif matches(model_type, policy.exclude) or (
            policy.track == "none" and not matches(model_type, policy.include)
        ):
            continue
        elif matches(model_type, policy.include):
            result[model_type] = "include"
        elif policy.track == "none":
            continue
        elif policy.track == "all":
            result[model_type] = "all"
        elif model_type in new and policy.new_models == "queue":
            result[model_type] = "new"
        elif manual.get(model_type) == "auto":
            result[model_type] = "tracked"
        elif policy.track == "installed" and installed(plan, model_type, main_files.get(model_type, ())):
            result[model_type] = "installed"
    return result


def present_as_itself(planned: PlannedFile) -> bool:
    """Present at one of its own paths (not only through another variant of the same file)."""
    return planned.status == "present" and planned.present_at in planned.file.lookup


def files_to_queue(
    plan: Plan, tracked: Iterable[str], known_targets: Mapping[str, str], *, exact_variants: bool = False
) -> list[PlannedFile]:
    """Missing files wanted by a tracked model whose target has no job yet, or whose job completed but whose
    file is gone again (``known_targets``: local path -> job state). A cancelled or failed job is a decision the
    user (or an error) made: it is not re-proposed automatically.

    ``exact_variants``: the user switched quantization/dtype in wgp_config.json, so Wan2GP will now load (and
    otherwise download itself) the newly chosen variant: a different variant on disk no longer stands in for it.
    """
    wanted = set(tracked)
    result = []
    for planned in plan.files:
        if not wanted.intersection(planned.wanted_by):
            continue
        if planned.status == "present" and (not exact_variants or present_as_itself(planned)):
            continue
        state = known_targets.get(planned.file.local)
        if state is None or state == "complete":
            result.append(planned)
    return result


@dataclass(frozen=True)
class Approval:
    needed: bool
    reason: str
    total_bytes: int
    unknown: int  # files whose size is not known


def approval_for(
    files: Iterable[PlannedFile], policy: AutoQueueConfig, disk_free: int | None, reserve: int
) -> Approval:
    """Whether an automatic batch must wait for `wangpctl approve`, and why (one line for logs and status)."""
    files = list(files)
    total = sum(p.size or 0 for p in files if p.status != "linkable")
    unknown = sum(1 for p in files if p.size is None and p.status != "linkable")
    if policy.require_approval:
        return Approval(True, "auto_queue.require_approval is set", total, unknown)
    if unknown:
        return Approval(True, f"{unknown} file size(s) unknown (Hub not reachable?)", total, unknown)
    if total > policy.max_auto_bytes:
        return Approval(True, f"{total} bytes is over auto_queue.max_auto_bytes ({policy.max_auto_bytes})", total, 0)
    if disk_free is not None and disk_free - total < reserve:
        return Approval(True, f"would leave less than download.free_space_reserve ({reserve} bytes) free", total, 0)
    return Approval(False, "within auto_queue.max_auto_bytes", total, 0)
