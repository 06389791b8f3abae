"""Planner: wanted files against a real Wan2GP folder in tmp_path, JSON schema, and the offline CLI."""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path

import pytest

from wangpd.catalog import load_catalog
from wangpd.errors import NotFound
from wangpd.planner import plan, plan_to_json, render_plan_text, run_plan_cli, scan_present

FIXTURE = Path(__file__).parent / "fixtures" / "wan2gp-2026-02"
W21 = "https://huggingface.co/DeepBeepMeep/Wan2.1/resolve/main"
T2V_INT8 = "ckpts/wan2.1_text2video_14B_quanto_mbf16_int8.safetensors"
T2V_BF16 = "wan2.1_text2video_14B_mbf16.safetensors"
VACE_INT8 = "ckpts/wan2.1_Vace_14B_module_quanto_mbf16_int8.safetensors"


YUE = {
    "architecture": "yue",
    "URLs": ["https://huggingface.co/m-a-p/YuE-s1-7B-anneal-en-cot/resolve/main/yue_s1.safetensors"],
}


def make_wan(tmp_path: Path, types=("t2v", "vace_14B", "i2v", "alpha", "ltx2_19B"), extra=None) -> Path:
    wan = tmp_path / "Wan2GP"
    (wan / "defaults").mkdir(parents=True)
    (wan / "finetunes").mkdir()
    for model_type in types:
        shutil.copy(FIXTURE / "defaults" / f"{model_type}.json", wan / "defaults")
    for model_type, model in (extra or {}).items():
        (wan / "defaults" / f"{model_type}.json").write_text(json.dumps({"model": model}))
    return wan


def touch(wan: Path, *paths: str, size: int = 1) -> None:
    for rel in paths:
        target = wan / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(b"x" * size)


def statuses(result) -> dict[str, tuple[str, str | None]]:
    return {p.file.local: (p.status, p.present_at) for p in result.files}


def test_plan_against_a_ckpts_folder(tmp_path):
    wan = make_wan(tmp_path, extra={"yue": YUE})  # its handler fetches whole repo folders
    touch(wan, T2V_INT8, "ckpts/Wan2.1_VAE.safetensors", "ckpts/umt5-xxl/spiece.model")
    touch(wan, "Wan2.1_VAE_upscale2x_imageonly_real_v1.safetensors")  # second checkpoints root: "."
    touch(wan, "loras/wan/wan_alpha_2.1_dora.safetensors", "ckpts/xcodec_mini_infer/models/x.py")
    for number in range(40):
        touch(wan, f"ckpts/unrelated_{number}.safetensors")
    catalog = load_catalog(wan)
    result = plan(catalog, exists=scan_present(wan, catalog))

    state = statuses(result)
    assert state[T2V_INT8] == ("present", T2V_INT8)
    assert state["ckpts/Wan2.1_VAE.safetensors"] == ("present", "ckpts/Wan2.1_VAE.safetensors")
    assert state["ckpts/Wan2.1_VAE_upscale2x_imageonly_real_v1.safetensors"] == (
        "present",
        "Wan2.1_VAE_upscale2x_imageonly_real_v1.safetensors",
    )
    assert state["loras/wan/wan_alpha_2.1_dora.safetensors"][0] == "present"
    assert state["ckpts/xcodec_mini_infer/models"] == ("present", "ckpts/xcodec_mini_infer/models")
    assert state["ckpts/xcodec_mini_infer/modules"] == ("missing", None)
    assert state[VACE_INT8] == ("missing", None)
    assert not any("unrelated" in local for local in state)

    # Shared files are planned once, wanted by every model that needs them.
    vae = next(p for p in result.files if p.file.local == "ckpts/Wan2.1_VAE.safetensors")
    assert vae.wanted_by == ("alpha", "i2v", "t2v", "vace_14B")
    core = next(p for p in result.files if p.file.local == "ckpts/pose/yolox_l.onnx")
    assert core.wanted_by == ("alpha", "i2v", "ltx2_19B", "t2v", "vace_14B", "yue")
    assert len({p.file.local for p in result.files}) == len(result.files)

    t2v = result.models["t2v"]
    assert (t2v.present, t2v.missing, t2v.total) == (4, t2v.total - 4, len(catalog.models["t2v"].files))
    assert t2v.missing_bytes is None  # sizes unknown offline
    assert not t2v.complete


def test_present_variant_counts_unless_all_variants(tmp_path):
    wan = make_wan(tmp_path, types=("t2v", "vace_14B"))
    touch(wan, T2V_BF16)  # the user has the bf16 variant, in the second root
    catalog = load_catalog(wan)
    state = statuses(plan(catalog, exists=scan_present(wan, catalog)))
    assert state[T2V_INT8] == ("present", T2V_BF16)

    every = load_catalog(wan, all_variants=True)
    state = statuses(plan(every, exists=scan_present(wan, every)))
    assert state[T2V_INT8] == ("missing", None)
    assert state[f"ckpts/{T2V_BF16}"] == ("present", T2V_BF16)
    assert state["ckpts/wan2.1_text2video_14B_quanto_mfp16_int8.safetensors"] == ("missing", None)


def test_symlinks_count_when_they_lead_to_a_file(tmp_path):
    wan = make_wan(tmp_path, types=("t2v",))
    blob = tmp_path / "blob"
    blob.write_bytes(b"weights")
    (wan / "ckpts").mkdir()
    os.symlink(blob, wan / T2V_INT8)
    os.symlink(tmp_path / "gone", wan / "ckpts" / "Wan2.1_VAE.safetensors")
    catalog = load_catalog(wan)
    exists = scan_present(wan, catalog)
    state = statuses(plan(catalog, exists=exists))
    assert state[T2V_INT8] == ("present", T2V_INT8)
    assert state["ckpts/Wan2.1_VAE.safetensors"] == ("missing", None)
    # Paths off the listed folders fall back to a real stat.
    touch(wan, "elsewhere/file.bin")
    assert exists("elsewhere/file.bin") and not exists("elsewhere/none.bin")


def test_sizes_linkable_and_model_selection(tmp_path):
    wan = make_wan(tmp_path, types=("t2v", "vace_14B", "ltx2_19B"))
    touch(wan, T2V_INT8)
    catalog = load_catalog(wan)
    sizes = {VACE_INT8: 5_000, "ckpts/Wan2.1_VAE.safetensors": 500}

    def size_of(wanted):
        return sizes.get(wanted.local, 10)

    def linkable(wanted):
        return "invokeai" if wanted.local == "ckpts/Wan2.1_VAE.safetensors" else None

    result = plan(
        catalog, exists=scan_present(wan, catalog), size_of=size_of, linkable=linkable, model_types=["vace_14B"]
    )
    assert list(result.models) == ["vace_14B"]
    state = {p.file.local: p for p in result.files}
    assert state["ckpts/Wan2.1_VAE.safetensors"].status == "linkable"
    assert state["ckpts/Wan2.1_VAE.safetensors"].source == "invokeai"
    assert state[VACE_INT8].size == 5_000
    vace = result.models["vace_14B"]
    missing = [p for p in result.files if p.status == "missing"]
    assert vace.missing == len(missing) and vace.linkable == 1 and vace.present == 1
    assert vace.missing_bytes == 5_000 + 10 * (len(missing) - 1)
    assert result.missing_bytes == vace.missing_bytes
    assert all(p.wanted_by == ("vace_14B",) for p in result.files)

    with pytest.raises(NotFound, match="unknown model type 'nope'"):
        plan(catalog, exists=lambda p: False, model_types=["nope"])


def test_optional_files_only_when_asked(tmp_path):
    wan = make_wan(tmp_path, types=("ltx2_19B",))
    catalog = load_catalog(wan)
    plain = plan(catalog, exists=lambda p: False)
    with_optional = plan(catalog, exists=lambda p: False, include_optional=True)
    optional = {p.file.local for p in with_optional.files} - {p.file.local for p in plain.files}
    assert optional == {
        "loras/ltx2/ltx-2-19b-ic-lora-union-control-ref0.5.safetensors",
        "loras/ltx2/id-lora-celebvhq-ltx2.safetensors",
    }
    assert with_optional.models["ltx2_19B"].total == plain.models["ltx2_19B"].total + 2


def test_failed_model_is_reported_and_planned_nothing(tmp_path):
    wan = make_wan(tmp_path, types=("t2v",), extra={"broken": {"architecture": "t2v", "URLs": "ghost"}})
    catalog = load_catalog(wan)
    result = plan(catalog, exists=lambda p: False)
    broken = result.models["broken"]
    assert broken.error.endswith("broken.json: URLs: unknown model type 'ghost'")
    assert (broken.total, broken.present, broken.missing_bytes) == (0, 0, 0)
    assert all("broken" not in p.wanted_by for p in result.files)
    assert result.models["t2v"].error is None


EXPECTED_FILE_KEYS = {
    "local",
    "lookup",
    "url",
    "repo",
    "revision",
    "path_in_repo",
    "role",
    "optional",
    "variant_of",
    "whole_folder",
    "wanted_by",
    "status",
    "present_at",
    "size",
    "source",
}
EXPECTED_MODEL_KEYS = {
    "name",
    "family",
    "architecture",
    "present",
    "total",
    "missing",
    "linkable",
    "missing_bytes",
    "complete",
    "error",
    "warnings",
}


def test_plan_json_schema(tmp_path):
    wan = make_wan(tmp_path, types=("t2v", "vace_14B"))
    touch(wan, T2V_INT8)
    catalog = load_catalog(wan)
    data = plan_to_json(plan(catalog, exists=scan_present(wan, catalog), size_of=lambda f: 7))
    data = json.loads(json.dumps(data))  # JSON-clean
    assert set(data) == {
        "schema",
        "wan2gp_dir",
        "handler_commit",
        "all_variants",
        "errors",
        "files",
        "models",
        "totals",
    }
    assert data["schema"] == 1
    assert data["wan2gp_dir"] == str(wan)
    assert data["handler_commit"] == "8681e9f777f9f847f74a0bdefd13d5b9a6efe12d"
    for entry in data["files"]:
        assert set(entry) == EXPECTED_FILE_KEYS
        assert entry["status"] in ("present", "linkable", "missing")
    main = next(e for e in data["files"] if e["local"] == T2V_INT8)
    assert main == {
        "local": T2V_INT8,
        "lookup": [T2V_INT8, "wan2.1_text2video_14B_quanto_mbf16_int8.safetensors"],
        "url": f"{W21}/wan2.1_text2video_14B_quanto_mbf16_int8.safetensors",
        "repo": "DeepBeepMeep/Wan2.1",
        "revision": "main",
        "path_in_repo": "wan2.1_text2video_14B_quanto_mbf16_int8.safetensors",
        "role": "main",
        "optional": False,
        "variant_of": "t2v:URLs",
        "whole_folder": False,
        "wanted_by": ["t2v", "vace_14B"],
        "status": "present",
        "present_at": T2V_INT8,
        "size": 7,
        "source": None,
    }
    assert set(data["models"]) == {"t2v", "vace_14B"}
    for entry in data["models"].values():
        assert set(entry) == EXPECTED_MODEL_KEYS
    missing = data["totals"]["missing"]
    assert data["totals"] == {
        "files": len(data["files"]),
        "present": 1,
        "linkable": 0,
        "missing": missing,
        "missing_bytes": 7 * missing,
    }
    assert data["models"]["vace_14B"]["missing"] == missing
    assert data["models"]["t2v"]["missing_bytes"] == 7 * (missing - 1)  # everything but the vace module


def test_render_text(tmp_path):
    wan = make_wan(tmp_path, types=("t2v",))
    touch(wan, T2V_INT8)
    catalog = load_catalog(wan)
    text = render_plan_text(plan(catalog, exists=scan_present(wan, catalog), size_of=lambda f: 2048))
    lines = text.splitlines()
    assert lines[0].startswith("missing ") and "2.0 KiB" in lines[0]
    assert any(
        line.startswith("present ")
        and f"{T2V_INT8}  <- DeepBeepMeep/Wan2.1@main:wan2.1_text2video_14B_quanto_mbf16_int8.safetensors  [t2v]"
        in line
        for line in lines
    )
    summary = next(line for line in lines if line.startswith("t2v "))
    total = len(catalog.models["t2v"].files)
    assert f"1/{total}" in summary and "Wan2.1 Text2video 14B" in summary
    assert lines[-1] == "handler table: Wan2GP commit 8681e9f777f9"


def test_cli_json_text_and_unmatched_glob(tmp_path):
    wan = make_wan(tmp_path)
    out = io.StringIO()
    assert run_plan_cli(wan, ["vace*", "t2v"], all_variants=False, as_json=True, out=out) == 0
    data = json.loads(out.getvalue())
    assert list(data["models"]) == ["vace_14B", "t2v"]
    assert data["totals"]["present"] == 0 and data["all_variants"] is False

    out = io.StringIO()
    assert run_plan_cli(wan, ["i2v"], all_variants=True, as_json=True, out=out) == 0
    mains = [e["local"] for e in json.loads(out.getvalue())["files"] if e["role"] == "main"]
    assert len(mains) == 3  # every variant of i2v

    out = io.StringIO()
    assert run_plan_cli(wan, [], all_variants=False, as_json=False, out=out) == 0
    assert "ltx2_19B" in out.getvalue() and "to download" in out.getvalue()

    out, err = io.StringIO(), io.StringIO()
    assert run_plan_cli(wan, ["t2v", "flux*"], all_variants=False, as_json=True, out=out, err=err) == 1
    assert out.getvalue() == ""
    assert err.getvalue() == f"wangpd plan: no model type matches 'flux*' (in {wan})\n"
