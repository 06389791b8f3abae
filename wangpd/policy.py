"""Auto-queue policy: which models are kept complete (the keep-set rules), which files that asks for, and whether an
automatic batch may start unasked.

Pure functions over a plan; the daemon applies their answers to the store. Nothing here touches the disk or
the network, so every rule is testable on its own.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from wangpd.config import AutoQueueConfig
from wangpd.models import KEEP_REASONS, KeepEntry, ModelDef
from wangpd.planner import Plan, PlannedFile

__all__ = [
    "TRACES",
    "Approval",
    "KeepDecision",
    "approval_for",
    "decide_keep",
    "files_to_queue",
    "installed_by_own_files",
    "matches",
    "reason_rank",
]

# The groups that make a model a model of its own (a transformer, a second transformer, a module); a model without
# any (a LoRA-only or source-built definition) is installed only when every file of it is present.
TRANSFORMER_ROLES = frozenset({"main", "main2", "module"})


def matches(model_type: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(model_type, pattern) for pattern in patterns)


def installed_by_own_files(plan: Plan, models: Mapping[str, ModelDef]) -> dict[str, str]:
    """Model type -> ``"complete"`` or ``"own files"`` for the models the files on disk say the user installed.

    Judged by the files each definition's JSON lists (:attr:`ModelDef.groups`; WAN2GP.md "Own versus inherited
    files"), not by the family-wide core, handler and default text-encoder files (one new such file in a Wan2GP
    update would otherwise un-install a whole family):

    - ``complete``: every group has a variant present. A model whose groups hold no transformer (main, main2,
      module: ``chatterbox`` lists nothing, ``ovi_1_1_fastwan`` builds its transformers from ``source`` and lists
      only a LoRA that ``ti2v_2_2_fastwan`` lists too) is complete only when every file of it but the core files is
      present, else another model's LoRA or preload would install it.
    - ``own files``: not complete, but a group standing literally in its own definition is present that no complete
      model's groups account for (``vace_14B``'s module without t2v's main file). t2v's main file alone installs
      neither ``vace_14B`` nor ``lynx``, and a model that only borrows (``vace_14B_fusionix``) is installed only
      when complete.

    Presence is the plan's: a file counts when its local path is planned ``present`` (which the planner also says
    of a chosen variant when another variant of it is on disk). ``plan`` should cover every model judged (the
    default plan of the whole catalog); a model the plan does not list, or that failed, is skipped.
    """
    present = {planned.file.local for planned in plan.files if planned.status == "present"}
    judged = {
        model_type: model
        for model_type, model in models.items()
        if model.error is None and model_type in plan.models and plan.models[model_type].error is None
    }
    result: dict[str, str] = {}
    for model_type, model in judged.items():
        if any(group.role in TRANSFORMER_ROLES for group in model.groups):
            complete = all(not present.isdisjoint(group.locals) for group in model.groups)
        else:
            complete = all(wanted.local in present for wanted in model.files if wanted.role != "core")
        if complete:
            result[model_type] = "complete"
    accounted = {local for model_type in result for group in judged[model_type].groups for local in group.locals}
    for model_type, model in judged.items():
        if model_type not in result and any(
            group.own and not present.isdisjoint(group.locals) and accounted.isdisjoint(group.locals)
            for group in model.groups
        ):
            result[model_type] = "own files"
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


# ---- the keep-set --------------------------------------------------------------------------------------------------

_RANK = {reason: rank for rank, reason in enumerate(KEEP_REASONS)}
_RANK["all"] = len(KEEP_REASONS)  # auto_queue.track: all, a live rule: weakest, never remembered
TRACES = ("transformer_types", "queued", "used")  # Wan2GP's own strong signals of use (wangpd/usage.py)


def reason_rank(reason: str) -> int:
    """Lower is stronger (``manual`` is 0); unknown reasons rank last."""
    return _RANK.get(reason, len(_RANK))


@dataclass(frozen=True)
class KeepDecision:
    """``kept``: every model kept complete now and why; ``joining``: what to remember now (new members, stronger
    reasons); ``gone``: remembered members whose definition disappeared (to report, not to forget)."""

    kept: dict[str, str]
    joining: dict[str, str]
    gone: list[str]


def decide_keep(
    models: Mapping[str, ModelDef],
    remembered: Mapping[str, KeepEntry],
    policy: AutoQueueConfig,
    *,
    traces: Mapping[str, str] | None = None,
    installed: Iterable[str] = (),
    new_types: Iterable[str] = (),
) -> KeepDecision:
    """Which models are kept complete, and why. Pure.

    Added by hand always wins; the user's no (``dropped``, ``rejected``) holds against every automatic reason;
    ``exclude`` removes every automatic reason; ``track: none`` leaves only added-by-hand and ``include``. Otherwise
    the strongest of: Wan2GP's traces of use (``traces``: transformer_types, queued, used), a new model type
    (``finetune`` when it is the user's own, ``new`` otherwise; only with ``new_models: queue``, never a hidden
    one), the ``include`` globs, being installed by its own files (``track: installed``), having been kept before,
    and ``track: all``. A kept model stays kept when its files change: membership is remembered, not re-derived
    from the disk.
    """
    installed = set(installed)
    new = set(new_types)
    traces = traces or {}
    kept: dict[str, str] = {}
    joining: dict[str, str] = {}
    for model_type, model in models.items():
        if model.error is not None:
            continue
        entry = remembered.get(model_type)
        if entry is not None and entry.reason == "manual":
            kept[model_type] = "manual"
            continue
        if entry is not None and not entry.kept:
            continue  # the user said no: only `wangpctl add` brings it back
        if matches(model_type, policy.exclude):
            continue
        reasons: list[str] = []
        if matches(model_type, policy.include):
            reasons.append("include")
        if policy.track != "none":
            if model_type in traces:
                reasons.append(traces[model_type])
            if model_type in new and policy.new_models == "queue" and model.visible:
                from_finetunes = any(path.parent.name == "finetunes" for path in model.definition_files)
                reasons.append("finetune" if from_finetunes else "new")
            if policy.track == "installed" and model_type in installed:
                reasons.append("installed")
            if entry is not None:
                reasons.append(entry.reason)
            if policy.track == "all":
                reasons.append("all")
        if not reasons:
            continue
        best = min(reasons, key=reason_rank)
        kept[model_type] = best
        if best != "all" and (entry is None or reason_rank(best) < reason_rank(entry.reason)):
            joining[model_type] = best
    gone = sorted(t for t, e in remembered.items() if e.kept and t not in models and e.gone_at is None)
    return KeepDecision(kept, joining, gone)
