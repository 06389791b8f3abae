"""Which models the files on disk say are installed: a model's own files against the ones it borrows.

``policy.installed_by_own_files`` over ``ModelDef.groups`` (WAN2GP.md "Own versus inherited files"): small trees of
our own for each rule, then the sweep over every model type of the real 2026-02 tree, each alone on disk.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterable
from pathlib import Path

import pytest

from wangpd.catalog import Catalog, load_catalog
from wangpd.models import FileGroup, ModelDef
from wangpd.planner import Plan, plan
from wangpd.policy import installed_by_own_files

FIXTURE = Path(__file__).parent / "fixtures" / "wan2gp-2026-02"
HF = "https://huggingface.co"
W21 = f"{HF}/DeepBeepMeep/Wan2.1/resolve/main"
KREA = f"{HF}/DeepBeepMeep/krea-2/resolve/main"

T2V_VARIANTS = (
    "ckpts/wan2.1_text2video_14B_mbf16.safetensors",
    "ckpts/wan2.1_text2video_14B_quanto_mbf16_int8.safetensors",
    "ckpts/wan2.1_text2video_14B_quanto_mfp16_int8.safetensors",
)
T2V_MAIN = T2V_VARIANTS[1]  # the variant Wan2GP picks with its default settings (int8, bf16)
MODULE = "ckpts/mod_module.safetensors"
VISION = "ckpts/Qwen3-VL-4B-Instruct/Qwen3-VL-4B-Instruct_vision_bf16.safetensors"  # krea2's handler preload


def write_model(wan: Path, model_type: str, model: dict, *, folder: str = "defaults") -> Path:
    path = wan / folder / f"{model_type}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"model": model}), encoding="utf-8")
    return path


def tiny_tree(tmp_path: Path, models: dict[str, dict]) -> Path:
    """A Wan2GP folder holding only ``models`` (and t2v, the usual reference target)."""
    wan = tmp_path / "Wan2GP"
    (wan / "defaults").mkdir(parents=True)
    (wan / "finetunes").mkdir()
    shutil.copy(FIXTURE / "defaults" / "t2v.json", wan / "defaults" / "t2v.json")
    for model_type, model in models.items():
        write_model(wan, model_type, model)
    return wan


def on_disk(catalog: Catalog, paths: Iterable[str]) -> Plan:
    """The plan of the whole catalog with exactly ``paths`` (local paths; a folder as ``"dir/"``) on disk."""
    return plan(catalog, exists=frozenset(paths).__contains__)


def judge(catalog: Catalog, *paths: str) -> dict[str, str]:
    return installed_by_own_files(on_disk(catalog, paths), catalog.models)


def present_keys(model: ModelDef) -> set[str]:
    """Every file of ``model`` as the planner asks for it: that model alone on disk."""
    return {f.local + "/" if f.whole_folder else f.local for f in model.files}


# ---- groups and the hidden flag, as the resolver fills them ---------------------------------------------------------


def test_groups_say_which_files_are_own_and_which_are_borrowed(tmp_path):
    wan = tiny_tree(
        tmp_path,
        {
            "mod": {"architecture": "t2v", "URLs": "t2v", "modules": [[f"{W21}/mod_module.safetensors"]]},
            "combo": {"architecture": "t2v", "URLs": "t2v", "modules": ["mod"]},
            "kinds": {
                "architecture": "t2v",
                "URLs": "t2v",
                "URLs2": [f"{W21}/low_bf16.safetensors", f"{W21}/low_quanto_bf16_int8.safetensors"],
                "preload_URLs": [f"{W21}/pre.safetensors"],
                "VAE_URLs": [f"{W21}/vae.safetensors"],
                "loras": [f"{W21}/acc.safetensors"],
                "text_encoder_URLs": [f"{W21}/te_bf16.safetensors"],
            },
        },
    )
    models = load_catalog(wan).models
    t2v_main = FileGroup("t2v:URLs", "main", T2V_VARIANTS, own=False)
    assert models["t2v"].groups == (FileGroup("t2v:URLs", "main", T2V_VARIANTS, own=True),)
    assert models["mod"].groups == (t2v_main, FileGroup("mod:modules[0]", "module", (MODULE,), own=True))
    # A module named by model type is the owner's: the combination owns nothing.
    assert models["combo"].groups == (t2v_main, FileGroup("mod:modules[0]", "module", (MODULE,), own=False))
    kinds = {g.key: (g.role, g.locals, g.own) for g in models["kinds"].groups}
    assert kinds == {
        "t2v:URLs": ("main", T2V_VARIANTS, False),
        "kinds:URLs2": (
            "main2",
            ("ckpts/low_bf16.safetensors", "ckpts/low_quanto_bf16_int8.safetensors"),
            True,
        ),
        "kinds:preload_URLs[0]": ("preload", ("ckpts/pre.safetensors",), True),
        "kinds:VAE_URLs[0]": ("vae", ("ckpts/vae.safetensors",), True),
        "kinds:loras[0]": ("lora", ("loras/wan/acc.safetensors",), True),
        "kinds:text_encoder_URLs": ("text_encoder", ("ckpts/umt5-xxl/te_bf16.safetensors",), True),
    }
    # Core, handler and default text-encoder files never form a group.
    grouped = {local for g in models["kinds"].groups for local in g.locals}
    assert {f.role for f in models["kinds"].files if f.local not in grouped} <= {"core", "handler", "text_encoder"}


def test_handler_preload_defaults_are_not_a_group(tmp_path):
    wan = tiny_tree(
        tmp_path,
        {
            "raw": {"architecture": "krea2_raw_edit", "URLs": [f"{KREA}/k.safetensors"]},
            "own": {"architecture": "krea2_raw_edit", "URLs": "raw", "preload_URLs": [f"{KREA}/mine.safetensors"]},
            "ref": {"architecture": "t2v", "URLs": "t2v", "preload_URLs": "raw"},
        },
    )
    models = load_catalog(wan).models
    assert VISION in {f.local for f in models["raw"].files}  # planned, as before
    assert [g.role for g in models["raw"].groups] == ["main"]
    assert [(g.key, g.own) for g in models["own"].groups if g.role == "preload"] == [("own:preload_URLs[0]", True)]
    # A reference to a definition whose preloads are the handler's defaults borrows handler files: no group either.
    assert [g.role for g in models["ref"].groups] == ["main"]


def test_the_hidden_flag_is_read(tmp_path):
    wan = tiny_tree(
        tmp_path,
        {
            "hidden": {"architecture": "t2v", "URLs": "t2v", "visible": False},
            "shown": {"architecture": "t2v", "URLs": "t2v", "visible": True},
            "later": {"architecture": "t2v", "URLs": "t2v"},
        },
    )
    write_model(wan, "later", {"visible": False}, folder="finetunes")  # a partial finetune hides a default
    models = load_catalog(wan).models
    assert {t: m.visible for t, m in models.items()} == {"hidden": False, "shown": True, "later": False, "t2v": True}


# ---- the rule on small trees -----------------------------------------------------------------------------------------


@pytest.fixture
def vace_like(tmp_path) -> Catalog:
    """t2v; ``mod`` borrows t2v's main file and owns a module; ``combo`` borrows both; ``solo`` owns its main file."""
    wan = tiny_tree(
        tmp_path,
        {
            "mod": {"architecture": "t2v", "URLs": "t2v", "modules": [[f"{W21}/mod_module.safetensors"]]},
            "combo": {"architecture": "t2v", "URLs": "t2v", "modules": ["mod"], "loras": "mod"},
            "solo": {"architecture": "t2v", "URLs": [f"{W21}/solo.safetensors"]},
        },
    )
    return load_catalog(wan)


def test_a_borrowed_main_file_does_not_install_the_borrower(vace_like):
    assert judge(vace_like, T2V_MAIN) == {"t2v": "complete"}
    # Another variant of t2v's main file stands in for the chosen one, for t2v only.
    assert judge(vace_like, T2V_VARIANTS[0]) == {"t2v": "complete"}
    # The old rule (a main file present) calls every borrower installed.
    borrowers = on_disk(vace_like, [T2V_MAIN])
    assert all(installed(borrowers, t, vace_like.models[t].main_files) for t in ("t2v", "mod", "combo"))


def test_its_own_module_installs_the_borrower(vace_like):
    assert judge(vace_like, MODULE) == {"mod": "own files"}
    assert judge(vace_like, T2V_MAIN, MODULE) == {"t2v": "complete", "mod": "complete", "combo": "complete"}


def test_a_pure_combination_is_installed_only_when_complete(vace_like):
    assert "combo" not in judge(vace_like, MODULE)
    assert "combo" not in judge(vace_like, T2V_MAIN)
    assert judge(vace_like, T2V_MAIN, MODULE)["combo"] == "complete"


def test_a_file_a_complete_model_accounts_for_installs_no_one_else(tmp_path):
    # twin lists t2v's URLs literally (a copy, not a reference): with t2v complete its main file is t2v's.
    wan = tiny_tree(
        tmp_path,
        {
            "twin": {
                "architecture": "t2v",
                "URLs": [f"{W21}/{name.removeprefix('ckpts/')}" for name in T2V_VARIANTS],
                "loras": [f"{W21}/twin.safetensors"],
            },
        },
    )
    catalog = load_catalog(wan)
    assert [g.own for g in catalog.models["twin"].groups] == [True, True]
    assert judge(catalog, T2V_MAIN) == {"t2v": "complete"}
    assert judge(catalog, "loras/wan/twin.safetensors") == {"twin": "own files"}
    assert judge(catalog, T2V_MAIN, "loras/wan/twin.safetensors") == {"t2v": "complete", "twin": "complete"}


def test_a_handler_preload_default_installs_nothing(tmp_path):
    wan = tiny_tree(
        tmp_path,
        {
            "raw": {"architecture": "krea2_raw_edit", "URLs": [f"{KREA}/k.safetensors"]},
            "raw2": {"architecture": "krea2_raw_edit", "URLs": [f"{KREA}/k2.safetensors"]},
            "ref": {"architecture": "t2v", "URLs": "t2v", "preload_URLs": "raw"},
        },
    )
    catalog = load_catalog(wan)
    assert judge(catalog, VISION) == {}
    assert judge(catalog, VISION, "ckpts/k.safetensors") == {"raw": "complete"}


def test_its_own_json_preload_counts(tmp_path):
    wan = tiny_tree(
        tmp_path,
        {
            "raw": {"architecture": "krea2_raw_edit", "URLs": [f"{KREA}/k.safetensors"]},
            "own": {"architecture": "krea2_raw_edit", "URLs": "raw", "preload_URLs": [f"{KREA}/mine.safetensors"]},
        },
    )
    catalog = load_catalog(wan)
    assert judge(catalog, "ckpts/mine.safetensors") == {"own": "own files"}
    assert judge(catalog, "ckpts/k.safetensors") == {"raw": "complete"}
    assert judge(catalog, "ckpts/k.safetensors", "ckpts/mine.safetensors") == {"raw": "complete", "own": "complete"}


def test_a_failed_model_is_never_installed(tmp_path):
    wan = tiny_tree(tmp_path, {"broken": {"architecture": "t2v", "URLs": "nowhere"}})
    catalog = load_catalog(wan)
    assert catalog.models["broken"].error
    assert judge(catalog, T2V_MAIN) == {"t2v": "complete"}


# ---- the sweep: every type of the real tree, each alone on disk ------------------------------------------------------


@pytest.fixture(scope="module")
def fixture_catalog() -> Catalog:
    return load_catalog(FIXTURE)


def test_each_type_alone_on_disk_installs_itself_and_only_complete_models(fixture_catalog):
    started = time.monotonic()
    models = fixture_catalog.models
    new_spurious: dict[str, list[str]] = {}
    old_spurious: dict[str, list[str]] = {}
    for model_type, model in models.items():
        result = plan(fixture_catalog, exists=present_keys(model).__contains__)
        complete = {t for t, m in result.models.items() if m.complete}
        assert model_type in complete, model_type
        found = installed_by_own_files(result, models)
        assert model_type in found, model_type
        extra = sorted(set(found) - complete)
        if extra:
            new_spurious[model_type] = extra
        old = sorted(t for t in models if installed(result, t, models[t].main_files) and t not in complete)
        if old:
            old_spurious[model_type] = old
    elapsed = time.monotonic() - started
    old_count = sum(map(len, old_spurious.values()))
    print(
        f"\nsweep over {len(models)} types in {elapsed:.2f}s: spurious installed models, "
        f"own-files rule {sum(map(len, new_spurious.values()))}, "
        f"old main-file rule {old_count} (for {len(old_spurious)} types)"
    )
    assert new_spurious == {}
    assert old_count > 0  # what the old rule would keep complete for nothing
    assert elapsed < 5


def test_the_fixture_tree_groups(fixture_catalog):
    models = fixture_catalog.models
    owns_nothing = sorted(t for t, m in models.items() if not any(g.own for g in m.groups))
    assert owns_nothing == [
        "alpha2_sf",
        "alpha_sf",
        "chatterbox",
        "flux_srpo_uso",
        "i2v_2_2_multitalk",
        "lucy_edit_fastwan",
        "lucy_edit_fastwan_1_1",
        "multitalk_720p",
        "vace_14B_2_2",
        "vace_14B_fusionix",
        "vace_lynx_14B",
        "vace_standin_14B",
    ]
    assert sorted(t for t, m in models.items() if not m.visible) == [
        "i2v_2_2_multitalk",
        "k5_lite_t2v_10s_distil_sparse",
        "k5_pro_t2v_10s_sft_sparse",
        "z_image_control2_1_8s",
    ]
    lynx = {g.key: g.own for g in models["lynx"].groups}
    assert lynx == {"t2v:URLs": False, "lynx:preload_URLs[0]": True, "lynx:modules[0]": True}


def installed(plan, model_type: str, main_files) -> bool:
    """The first release's rule, kept here as the baseline the sweep measures against: a model counted as
    installed when one of its main files (or a variant of it) was present, borrowed or not."""
    by_local = {p.file.local: p for p in plan.files}
    return any(by_local.get(local) is not None and by_local[local].status == "present" for local in main_files)
