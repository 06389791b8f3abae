"""policy.py as tables: which models are kept complete (and why), which of their files are queued, and whether
an automatic batch waits for `wangpctl approve`.

The plans are built by hand from the planner's own dataclasses; the policy from ``config.AutoQueueConfig``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path

import pytest

from wangpd.config import AutoQueueConfig
from wangpd.models import KeepEntry, ModelDef, WantedFile
from wangpd.planner import ModelPlan, Plan, PlannedFile
from wangpd.policy import (
    Approval,
    approval_for,
    decide_keep,
    files_to_queue,
    matches,
    present_as_itself,
)

GB = 1000**3


def wanted(local: str, *also: str) -> WantedFile:
    """A file wanted at ``local``; ``also``: other paths Wan2GP accepts for it."""
    return WantedFile(
        url=f"https://huggingface.co/Org/Repo/resolve/main/{local.rsplit('/', 1)[-1]}",
        repo="Org/Repo",
        revision="main",
        path_in_repo=local.rsplit("/", 1)[-1],
        local=local,
        lookup=(local, *also),
        role="transformer",
    )


def planned(
    local: str,
    status: str,
    *wanted_by: str,
    size: int | None = None,
    present_at: str | None = None,
    also: tuple[str, ...] = (),
) -> PlannedFile:
    if status == "present" and present_at is None:
        present_at = local
    return PlannedFile(
        file=wanted(local, *also),
        wanted_by=wanted_by or ("t2v",),
        status=status,
        present_at=present_at,
        size=size,
        source="hf-cache" if status == "linkable" else None,
    )


def model(model_type: str, error: str | None = None) -> ModelPlan:
    return ModelPlan(
        model_type=model_type,
        name=model_type.upper(),
        family="wan",
        architecture=None,
        present=0,
        total=0,
        missing=0,
        linkable=0,
        missing_bytes=None,
        error=error,
    )


def policy(**changes: object) -> AutoQueueConfig:
    return dataclasses.replace(AutoQueueConfig(), **changes)  # type: ignore[arg-type]


# ---- matches ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model_type", "patterns", "expected"),
    [
        ("t2v", ("t2v",), True),
        ("t2v_1.3B", ("t2v",), False),  # a whole-name match, not a prefix
        ("t2v_1.3B", ("t2v*",), True),
        ("i2v_2_2", ("t2v*", "i2v_?_?"), True),
        ("T2V", ("t2v",), False),  # case-sensitive, as model types are
        ("t2v", (), False),
        ("flux", ("[fg]lux",), True),
    ],
)
def test_matches(model_type: str, patterns: tuple[str, ...], expected: bool) -> None:
    assert matches(model_type, patterns) is expected


# ---- installed / present_as_itself ------------------------------------------------------------------------------

INSTALL_PLAN = Plan(
    files=(
        planned("ckpts/t2v_int8.safetensors", "present"),
        planned("ckpts/t2v_bf16.safetensors", "present", present_at="ckpts/t2v_int8.safetensors"),  # via a variant
        planned("ckpts/i2v.safetensors", "missing", "i2v"),
        planned("ckpts/flux.safetensors", "linkable", "flux"),
    ),
    models={"t2v": model("t2v"), "i2v": model("i2v"), "flux": model("flux")},
)


@pytest.mark.parametrize(
    ("planned_file", "expected"),
    [
        (planned("ckpts/a.safetensors", "present"), True),
        (planned("ckpts/a.safetensors", "present", present_at="old/a.safetensors", also=("old/a.safetensors",)), True),
        (planned("ckpts/a_bf16.safetensors", "present", present_at="ckpts/a_int8.safetensors"), False),
        (planned("ckpts/a.safetensors", "linkable"), False),
        (planned("ckpts/a.safetensors", "missing"), False),
    ],
    ids=["at its local path", "at another lookup path", "only through a variant", "linkable", "missing"],
)  # fmt: skip
def test_present_as_itself(planned_file: PlannedFile, expected: bool) -> None:
    assert present_as_itself(planned_file) is expected


# ---- files_to_queue ---------------------------------------------------------------------------------------------

QUEUE_PLAN = Plan(
    files=(
        planned("ckpts/a.safetensors", "missing", "t2v"),
        planned("ckpts/b.safetensors", "present", "t2v"),
        planned("ckpts/c_bf16.safetensors", "present", "t2v", present_at="ckpts/c_int8.safetensors"),  # via variant
        planned("ckpts/d.safetensors", "linkable", "t2v", "i2v"),
        planned("ckpts/e.safetensors", "missing", "flux"),
        planned("ckpts/queued.safetensors", "missing", "t2v"),
        planned("ckpts/complete.safetensors", "missing", "t2v"),  # its job completed, the file is gone again
        planned("ckpts/failed.safetensors", "missing", "t2v"),
        planned("ckpts/cancelled.safetensors", "missing", "t2v"),
        planned("ckpts/held.safetensors", "missing", "t2v"),
        planned("ckpts/downloading.safetensors", "missing", "t2v"),
        planned("ckpts/paused.safetensors", "missing", "t2v"),
    ),
    models={t: model(t) for t in ("t2v", "i2v", "flux")},
)
JOBS = {
    "ckpts/b.safetensors": "complete",  # present: a finished job does not matter
    "ckpts/queued.safetensors": "queued",
    "ckpts/complete.safetensors": "complete",
    "ckpts/failed.safetensors": "failed",
    "ckpts/cancelled.safetensors": "cancelled",
    "ckpts/held.safetensors": "needs_approval",
    "ckpts/downloading.safetensors": "downloading",
    "ckpts/paused.safetensors": "paused",
}

QUEUE_CASES = [
    # (id, tracked, known targets, exact_variants, expected locals in plan order)
    ("missing, linkable and re-missing", ("t2v",), JOBS, False,
     ["ckpts/a.safetensors", "ckpts/d.safetensors", "ckpts/complete.safetensors"]),
    ("exact variants: a stand-in variant no longer counts", ("t2v",), JOBS, True,
     ["ckpts/a.safetensors", "ckpts/c_bf16.safetensors", "ckpts/d.safetensors", "ckpts/complete.safetensors"]),
    ("a file shared with another model", ("i2v",), JOBS, False, ["ckpts/d.safetensors"]),
    ("two models", ("flux", "t2v"), JOBS, False,
     ["ckpts/a.safetensors", "ckpts/d.safetensors", "ckpts/e.safetensors", "ckpts/complete.safetensors"]),
    ("an untracked model's files are not queued", ("vace",), JOBS, False, []),
    ("nothing tracked", (), JOBS, False, []),
    ("no jobs yet: every missing file", ("t2v",), {}, False,
     ["ckpts/a.safetensors", "ckpts/d.safetensors", "ckpts/queued.safetensors", "ckpts/complete.safetensors",
      "ckpts/failed.safetensors", "ckpts/cancelled.safetensors", "ckpts/held.safetensors",
      "ckpts/downloading.safetensors", "ckpts/paused.safetensors"]),
]  # fmt: skip


@pytest.mark.parametrize(
    ("tracked", "known", "exact", "expected"),
    [case[1:] for case in QUEUE_CASES],
    ids=[case[0] for case in QUEUE_CASES],
)
def test_files_to_queue(tracked: tuple[str, ...], known: Mapping[str, str], exact: bool, expected: list[str]) -> None:
    result = files_to_queue(QUEUE_PLAN, tracked, known, exact_variants=exact)
    assert [p.file.local for p in result] == expected
    assert all(p in QUEUE_PLAN.files for p in result)  # the planned files themselves, unchanged


def test_files_to_queue_takes_tracked_models_output() -> None:
    tracked = {"flux": "manual", "i2v": "new"}  # a dict iterates over its model types
    assert [p.file.local for p in files_to_queue(QUEUE_PLAN, tracked, JOBS)] == [
        "ckpts/d.safetensors",
        "ckpts/e.safetensors",
    ]


# ---- approval_for -----------------------------------------------------------------------------------------------

RESERVE = 10 * GB
DEFAULT_CAP = AutoQueueConfig().max_auto_bytes  # 50 GB
WITHIN = "within auto_queue.max_auto_bytes"


def missing(size: int | None) -> PlannedFile:
    return planned(f"ckpts/{size}.safetensors", "missing", size=size)


def linkable(size: int | None) -> PlannedFile:
    return planned(f"ckpts/link-{size}.safetensors", "linkable", size=size)


APPROVAL_CASES = [
    # (id, files, policy, disk free, expected)
    ("an empty batch", [], policy(), None, Approval(False, WITHIN, 0, 0)),
    ("a small batch", [missing(1 * GB), missing(2 * GB)], policy(), None, Approval(False, WITHIN, 3 * GB, 0)),
    ("a zero-byte file is a known size", [missing(0)], policy(), None, Approval(False, WITHIN, 0, 0)),
    ("linkable files cost nothing", [missing(1 * GB), linkable(100 * GB)], policy(), None,
     Approval(False, WITHIN, 1 * GB, 0)),
    ("a linkable file's unknown size does not matter", [linkable(None)], policy(), None, Approval(False, WITHIN, 0, 0)),
    ("a re-queued present file counts (exact variants)", [planned("ckpts/v.safetensors", "present", size=60 * GB)],
     policy(), None, Approval(True, f"{60 * GB} bytes is over auto_queue.max_auto_bytes ({DEFAULT_CAP})", 60 * GB, 0)),
    ("exactly the cap passes", [missing(DEFAULT_CAP)], policy(), None, Approval(False, WITHIN, DEFAULT_CAP, 0)),
    ("one byte over the cap", [missing(DEFAULT_CAP), missing(1)], policy(), None,
     Approval(True, f"{DEFAULT_CAP + 1} bytes is over auto_queue.max_auto_bytes ({DEFAULT_CAP})", DEFAULT_CAP + 1, 0)),
    ("a lower cap", [missing(2 * GB)], policy(max_auto_bytes=1 * GB), None,
     Approval(True, f"{2 * GB} bytes is over auto_queue.max_auto_bytes ({1 * GB})", 2 * GB, 0)),
    ("unknown sizes wait", [missing(1 * GB), missing(None), missing(None)], policy(), None,
     Approval(True, "2 file size(s) unknown (Hub not reachable?)", 1 * GB, 2)),
    ("unknown sizes are checked before the cap", [missing(DEFAULT_CAP + 1), missing(None)], policy(), None,
     Approval(True, "1 file size(s) unknown (Hub not reachable?)", DEFAULT_CAP + 1, 1)),
    ("require_approval holds everything", [missing(1)], policy(require_approval=True), 10**15,
     Approval(True, "auto_queue.require_approval is set", 1, 0)),
    ("require_approval comes first, unknown still counted", [missing(None), missing(5)],
     policy(require_approval=True), None, Approval(True, "auto_queue.require_approval is set", 5, 1)),
    ("require_approval holds an empty batch too", [], policy(require_approval=True), None,
     Approval(True, "auto_queue.require_approval is set", 0, 0)),
    ("disk unknown: not checked", [missing(1 * GB)], policy(), None, Approval(False, WITHIN, 1 * GB, 0)),
    ("leaves exactly the reserve", [missing(5 * GB)], policy(), 15 * GB, Approval(False, WITHIN, 5 * GB, 0)),
    ("would eat into the reserve", [missing(5 * GB), missing(1)], policy(), 15 * GB,
     Approval(True, f"would leave less than download.free_space_reserve ({RESERVE} bytes) free", 5 * GB + 1, 0)),
    ("the cap is checked before the disk", [missing(60 * GB)], policy(), 1 * GB,
     Approval(True, f"{60 * GB} bytes is over auto_queue.max_auto_bytes ({DEFAULT_CAP})", 60 * GB, 0)),
    # Questionable (see the report): a batch that downloads nothing is held when the disk is already under the
    # reserve, with a reason that says it "would leave" less free.
    ("links only, disk already under the reserve", [linkable(3 * GB)], policy(), 5 * GB,
     Approval(True, f"would leave less than download.free_space_reserve ({RESERVE} bytes) free", 0, 0)),
]  # fmt: skip


@pytest.mark.parametrize(
    ("files", "auto_queue", "disk_free", "expected"),
    [case[1:] for case in APPROVAL_CASES],
    ids=[case[0] for case in APPROVAL_CASES],
)
def test_approval_for(
    files: list[PlannedFile], auto_queue: AutoQueueConfig, disk_free: int | None, expected: Approval
) -> None:
    assert approval_for(files, auto_queue, disk_free, RESERVE) == expected


def test_approval_for_takes_any_iterable_once() -> None:
    files = iter([missing(1 * GB), missing(None)])  # a generator is consumed once: both counts must see it
    assert approval_for(files, policy(), None, RESERVE) == Approval(
        True, "1 file size(s) unknown (Hub not reachable?)", 1 * GB, 1
    )


# ---- decide_keep (the keep-set) -----------------------------------------------------------------------------------


def _model(model_type: str, *, folder: str = "defaults", visible: bool = True, error: str | None = None) -> ModelDef:
    return ModelDef(
        model_type=model_type,
        name=model_type,
        architecture="t2v",
        family="wan",
        definition_files=(Path(f"/w/{folder}/{model_type}.json"),),
        visible=visible,
        error=error,
    )


KEEP_MODELS = {
    "t2v": _model("t2v"),
    "vace": _model("vace"),
    "flux": _model("flux"),
    "tune": _model("tune", folder="finetunes"),
    "hidden": _model("hidden", visible=False),
    "broken": _model("broken", error="defaults/broken.json: URLs: bad"),
}


def _entry(reason: str, **fields: object) -> KeepEntry:
    return dataclasses.replace(KeepEntry("x", reason, False, 1.0, 1.0, (), None), **fields)


@pytest.mark.parametrize(
    ("name", "auto", "remembered", "traces", "installed", "new", "kept", "joining"),
    [
        ("nothing says so", {}, {}, {}, (), (), {}, {}),
        ("installed joins", {}, {}, {}, ("t2v",), (), {"t2v": "installed"}, {"t2v": "installed"}),
        ("remembered stays though nothing is on disk", {}, {"t2v": "installed"}, {}, (), (), {"t2v": "installed"}, {}),
        (
            "a stronger trace upgrades",
            {},
            {"t2v": "installed"},
            {"t2v": "used"},
            ("t2v",),
            (),
            {"t2v": "used"},
            {"t2v": "used"},
        ),
        ("manual wins over exclude", {"exclude": ("t*",)}, {"t2v": "manual"}, {}, (), (), {"t2v": "manual"}, {}),
        (
            "exclude beats every automatic reason",
            {"exclude": ("t2v",)},
            {"t2v": "used"},
            {"t2v": "used"},
            ("t2v",),
            (),
            {},
            {},
        ),
        ("a refusal holds against traces", {}, {"t2v": "dropped"}, {"t2v": "transformer_types"}, ("t2v",), (), {}, {}),
        ("a rejected new model is not proposed again", {}, {"flux": "rejected"}, {}, (), ("flux",), {}, {}),
        (
            "track none: manual and include only",
            {"track": "none", "include": ("flux",)},
            {"t2v": "installed", "vace": "manual"},
            {"t2v": "used"},
            ("t2v",),
            ("tune",),
            {"vace": "manual", "flux": "include"},
            {"flux": "include"},
        ),
        (
            "track all is live, never remembered",
            {"track": "all"},
            {},
            {},
            (),
            (),
            {t: "all" for t in ("t2v", "vace", "flux", "tune", "hidden")},
            {},
        ),
        (
            "a new default is new, a new finetune is asked for",
            {},
            {},
            {},
            (),
            ("flux", "tune"),
            {"flux": "new", "tune": "finetune"},
            {"flux": "new", "tune": "finetune"},
        ),
        ("new_models ignore", {"new_models": "ignore"}, {}, {}, (), ("flux",), {}, {}),
        ("a hidden new model is not proposed", {}, {}, {}, (), ("hidden",), {}, {}),
        (
            "a hidden model with a strong trace is kept",
            {},
            {},
            {"hidden": "queued"},
            (),
            (),
            {"hidden": "queued"},
            {"hidden": "queued"},
        ),
        ("a broken definition is never kept", {}, {"broken": "manual"}, {"broken": "used"}, ("broken",), (), {}, {}),
    ],
)
def test_decide_keep(name, auto, remembered, traces, installed, new, kept, joining) -> None:
    memory = {t: dataclasses.replace(_entry(r), model_type=t) for t, r in remembered.items()}
    decision = decide_keep(KEEP_MODELS, memory, policy(**auto), traces=traces, installed=installed, new_types=new)
    assert decision.kept == kept, name
    assert decision.joining == joining, name


def test_decide_keep_reports_gone_definitions_once() -> None:
    memory = {
        "old": dataclasses.replace(_entry("used"), model_type="old"),
        "older": dataclasses.replace(_entry("used"), model_type="older", gone_at=5.0),
        "refused": dataclasses.replace(_entry("dropped"), model_type="refused"),
    }
    assert decide_keep(KEEP_MODELS, memory, policy()).gone == ["old"]  # already reported, refused: not again
