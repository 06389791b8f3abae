"""Catalog: Wan2GP's rules applied to the real 2026-02 defaults tree and to small trees of our own."""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import pytest

from wangpd.catalog import CatalogLoader, load_catalog, read_wan_settings
from wangpd.models import WanSettings
from wangpd.resolver import choose_variant

FIXTURE = Path(__file__).parent / "fixtures" / "wan2gp-2026-02"
CASES = Path(__file__).parent / "catalog_cases"
HF = "https://huggingface.co"
W21 = f"{HF}/DeepBeepMeep/Wan2.1/resolve/main"
W22 = f"{HF}/DeepBeepMeep/Wan2.2/resolve/main"


@pytest.fixture(scope="module")
def fixture_catalog():
    return load_catalog(FIXTURE)


def copy_fixture(tmp_path: Path) -> Path:
    """A writable copy of the fixture tree (the original files are read-only)."""
    wan = tmp_path / "Wan2GP"
    shutil.copytree(FIXTURE, wan)
    for folder, _dirs, files in os.walk(wan):
        os.chmod(folder, 0o755)
        for name in files:
            os.chmod(Path(folder) / name, stat.S_IRUSR | stat.S_IWUSR | stat.S_IRGRP)
    return wan


def write_model(wan: Path, model_type: str, model: dict, *, folder: str = "defaults") -> Path:
    path = wan / folder / f"{model_type}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"model": model}), encoding="utf-8")
    return path


def tiny_tree(tmp_path: Path, models: dict[str, dict], config: dict | None = None) -> Path:
    """A Wan2GP folder holding only ``models`` (and t2v, the usual reference target)."""
    wan = tmp_path / "Wan2GP"
    (wan / "defaults").mkdir(parents=True)
    (wan / "finetunes").mkdir()
    shutil.copy(FIXTURE / "defaults" / "t2v.json", wan / "defaults" / "t2v.json")
    for model_type, model in models.items():
        write_model(wan, model_type, model)
    if config is not None:
        (wan / "wgp_config.json").write_text(json.dumps(config), encoding="utf-8")
    return wan


def by_role(model, role: str) -> list[str]:
    return [f.local for f in model.files if f.role == role]


def test_every_fixture_type_resolves(fixture_catalog):
    models = fixture_catalog.models
    assert len(models) == 155
    assert fixture_catalog.errors == ()
    assert fixture_catalog.handler_commit == "8681e9f777f9f847f74a0bdefd13d5b9a6efe12d"
    failed = {t: m.error for t, m in models.items() if m.error}
    assert failed == {}
    for model_type, model in models.items():
        assert model.files, model_type
        assert model.architecture, model_type
        # Each local path appears once per model, and alternatives never repeat a chosen file.
        locals_ = [f.local for f in model.files]
        assert len(locals_) == len(set(locals_)), model_type
        assert not {f.local for f in model.alternatives} & set(locals_), model_type
        for wanted in model.files:
            assert wanted.url.startswith("https://"), (model_type, wanted.url)
            assert "|" not in wanted.url and "?download" not in wanted.url
            assert wanted.local.startswith(("ckpts/", "loras/")), (model_type, wanted.local)
    # Only the two models that build their transformers from `source`, or define none, lack a main file.
    no_main = sorted(t for t, m in models.items() if not m.main_files)
    assert no_main == ["chatterbox", "ovi_1_1_fastwan"]


# Expected files per model type with Wan2GP's default settings (int8 transformer, bf16, int8 text encoder).
FIXTURE_CASES = {
    # plain list: int8 keeps the two *_int8 names, bf16 dtype prefers "mbf16"
    "t2v": {
        "main": ["ckpts/wan2.1_text2video_14B_quanto_mbf16_int8.safetensors"],
        "url": f"{W21}/wan2.1_text2video_14B_quanto_mbf16_int8.safetensors",
        "alternatives": {
            "ckpts/wan2.1_text2video_14B_mbf16.safetensors",
            "ckpts/wan2.1_text2video_14B_quanto_mfp16_int8.safetensors",
        },
    },
    # string reference URLs -> t2v, one module of three variants
    "vace_14B": {
        "main": ["ckpts/wan2.1_text2video_14B_quanto_mbf16_int8.safetensors"],
        "module": ["ckpts/wan2.1_Vace_14B_module_quanto_mbf16_int8.safetensors"],
    },
    # modules by reference to two other types
    "vace_multitalk_14B": {
        "main": ["ckpts/Wan14BT2VFusioniX_quanto_bf16_int8.safetensors"],
        "module": [
            "ckpts/wan2.1_Vace_14B_module_quanto_mbf16_int8.safetensors",
            "ckpts/wan2.1_multitalk_14B_quanto_mbf16_int8.safetensors",
        ],
    },
    # URLs2 (Wan2.2 low noise)
    "i2v_2_2": {
        "main": [
            "ckpts/wan2.2_image2video_14B_high_quanto_mbf16_int8.safetensors",
            "ckpts/wan2.2_image2video_14B_low_quanto_mbf16_int8.safetensors",
        ],
        "url2": f"{W22}/wan2.2_image2video_14B_low_quanto_mbf16_int8.safetensors",
    },
    # URLs and URLs2 both by reference, module by reference
    "i2v_2_2_multitalk": {
        "main": [
            "ckpts/wan2.2_image2video_14B_high_quanto_mbf16_int8.safetensors",
            "ckpts/wan2.2_image2video_14B_low_quanto_mbf16_int8.safetensors",
        ],
        "module": ["ckpts/wan2.1_multitalk_14B_quanto_mbf16_int8.safetensors"],
    },
    # preload_URLs and loras by reference (alpha), URLs by reference (t2v_sf)
    "alpha_sf": {
        "main": ["ckpts/wan2.1_StepDistill-CfgDistill_14B_quanto_bf16_int8.safetensors"],
        "preload": [
            "ckpts/wan_alpha_2.1_vae_rgb_channel.safetensors",
            "ckpts/wan_alpha_2.1_vae_alpha_channel.safetensors",
        ],
        "lora": ["loras/wan/wan_alpha_2.1_dora.safetensors"],
    },
    # loras by reference, into the family's LoRA folder (wan_5B), flat even though the repo path has a folder
    "lucy_edit_fastwan": {
        "main": ["ckpts/wan2.2_lucy_edit_quanto_mbf16_int8.safetensors"],
        "lora": ["loras/wan_5B/Wan2_2_5B_FastWanFullAttn_lora_rank_128_bf16.safetensors"],
        "handler_has": ["ckpts/Wan2.2_VAE.safetensors"],
    },
    # text encoder override: the JSON list replaces the handler's, placed in text_encoder_folder
    "ace_step_v1_5_turbo_lm_1_7b": {
        "main": ["ckpts/ace_step_v1_5_transformer_quanto_bf16_int8.safetensors"],
        "text_encoder": ["ckpts/acestep-5Hz-lm-1.7B/acestep-5Hz-lm-1.7B_quanto_bf16_int8.safetensors"],
        "handler_has": ["ckpts/acestep-5Hz-lm-1.7B/tokenizer.json"],
    },
    # source/source2: both transformers are built locally, nothing to download for them
    "ovi_1_1_fastwan": {
        "main": [],
        "lora": ["loras/wan_5B/Wan2_2_5B_FastWanFullAttn_lora_rank_128_bf16.safetensors"],
        "absent": ["ckpts/wan2.2_ovi1_1_video_10B_quanto_bf16_int8.safetensors"],
    },
    # a module and loras borrowed from another type; flux text encoder T5 int8
    "flux_srpo_uso": {
        "main": ["ckpts/flux1-srpo-dev_quanto_bf16_int8.safetensors"],
        "module": ["ckpts/flux1-dev-USO_projector_bf16.safetensors"],
        "lora": ["loras/flux/flux1-dev-USO_dit_lora_bf16.safetensors"],
        "text_encoder": ["ckpts/T5_xxl_1.1/T5_xxl_1.1_enc_quanto_bf16_int8.safetensors"],
    },
    # int8 order [int8, fp8]: no int8 name, so the fp8 one
    "ltx2_19B": {
        "main": ["ckpts/ltx-2-19b-dev-fp8_diffusion_model.safetensors"],
        "preload": [
            "ckpts/ltx-2-19b-ic-lora-pose-control.safetensors",
            "ckpts/ltx-2-19b-ic-lora-depth-control.safetensors",
            "ckpts/ltx-2-19b-ic-lora-canny-control.safetensors",
        ],
        "lora": ["loras/ltx2/ltx-2-19b-distilled-lora-384.safetensors"],
        "text_encoder": [
            "ckpts/gemma-3-12b-it-qat-q4_0-unquantized/gemma-3-12b-it-qat-q4_0-unquantized_quanto_bf16_int8.safetensors"
        ],
        "optional": [
            "loras/ltx2/ltx-2-19b-ic-lora-union-control-ref0.5.safetensors",
            "loras/ltx2/id-lora-celebvhq-ltx2.safetensors",
        ],
    },
    # empty URLs: every file comes from the handler table
    "chatterbox": {"main": [], "handler_has": ["ckpts/chatterbox/s3gen.pt", "ckpts/chatterbox/ve.safetensors"]},
    # single-URL list without a quantization token, preload by reference, Qwen text encoder
    "qwen_image_edit_plus_20B_nunchaku_r128_int4": {
        "main": ["ckpts/svdq-int4_r128-qwen-image-edit-2509-lightning-4steps-251115.safetensors"],
        "preload": ["ckpts/qwen_image_edit_inpainting.safetensors"],
        "text_encoder": ["ckpts/Qwen2.5-VL-7B-Instruct/Qwen2.5-VL-7B-Instruct_quanto_bf16_int8.safetensors"],
    },
    # module of two variants without the bf16 token in the chosen name's dtype slot
    "z_image_control": {
        "main": ["ckpts/ZImageTurbo_quanto_bf16_int8.safetensors"],
        "module": ["ckpts/Z-Image-Turbo-Fun-Controlnet-Union_quanto_bf16_int8.safetensors"],
        "text_encoder": ["ckpts/Qwen3/qwen3_quanto_bf16_int8.safetensors"],
    },
}


@pytest.mark.parametrize("model_type", sorted(FIXTURE_CASES))
def test_fixture_expectations(fixture_catalog, model_type):
    expected = FIXTURE_CASES[model_type]
    model = fixture_catalog.models[model_type]
    assert model.error is None
    assert list(model.main_files) == expected["main"]
    for role in ("module", "preload", "lora", "text_encoder"):
        if role in expected:
            assert by_role(model, role) == expected[role]
    files = {f.local: f for f in model.files}
    if "url" in expected:
        assert files[expected["main"][0]].url == expected["url"]
        assert files[expected["main"][0]].repo == "DeepBeepMeep/Wan2.1"
        assert files[expected["main"][0]].revision == "main"
    if "url2" in expected:
        assert files[expected["main"][1]].url == expected["url2"]
        assert files[expected["main"][1]].role == "main2"
    if "alternatives" in expected:
        assert {f.local for f in model.alternatives if f.role == "main"} == expected["alternatives"]
    for local in expected.get("handler_has", ()):
        assert files[local].role == "handler"
    for local in expected.get("absent", ()):
        assert local not in files
    if "optional" in expected:
        assert [f.local for f in model.optional_files] == expected["optional"]
        assert all(f.optional and f.role == "on_demand" for f in model.optional_files)


def test_handler_files_from_the_table(fixture_catalog):
    t2v = {f.local: f for f in fixture_catalog.models["t2v"].files}
    # Core files of every model, with the depth / matanyone choices of the default settings.
    for local in (
        "ckpts/pose/dw-ll_ucoco_384.onnx",
        "ckpts/depth/depth_anything_v2_vitl.pth",
        "ckpts/mask/matanyone.safetensors",
        "ckpts/roformer/download_checks.json",
    ):
        assert t2v[local].role == "core"
        assert t2v[local].repo == "DeepBeepMeep/Wan2.1"
    encoder = t2v["ckpts/umt5-xxl/models_t5_umt5-xxl-enc-quanto_int8.safetensors"]
    assert encoder.role == "text_encoder"
    assert encoder.path_in_repo == "umt5-xxl/models_t5_umt5-xxl-enc-quanto_int8.safetensors"
    assert encoder.variant_of == "text_encoder:wan_umt5_xxl"
    assert t2v["ckpts/Wan2.1_VAE.safetensors"].url == f"{W21}/Wan2.1_VAE.safetensors"
    assert t2v["ckpts/xlm-roberta-large/sentencepiece.bpe.model"].role == "handler"
    ti2v = {f.local for f in fixture_catalog.models["ti2v_2_2"].files}
    assert "ckpts/Wan2.2_VAE.safetensors" in ti2v
    assert "ckpts/Wan2.1_VAE.safetensors" not in ti2v


def test_lookup_covers_every_checkpoints_root(fixture_catalog):
    model = fixture_catalog.models["t2v"]
    main = next(f for f in model.files if f.role == "main")
    assert main.lookup == (
        "ckpts/wan2.1_text2video_14B_quanto_mbf16_int8.safetensors",
        "wan2.1_text2video_14B_quanto_mbf16_int8.safetensors",
    )
    lora = next(f for f in fixture_catalog.models["alpha"].files if f.role == "lora")
    assert lora.lookup == ("loras/wan/wan_alpha_2.1_dora.safetensors",)


@pytest.mark.parametrize(
    ("config", "main", "encoder"),
    [
        ({}, "wan2.1_text2video_14B_quanto_mbf16_int8.safetensors", "models_t5_umt5-xxl-enc-quanto_int8"),
        (
            {"transformer_quantization": "bf16", "text_encoder_quantization": "bf16"},
            "wan2.1_text2video_14B_mbf16.safetensors",
            "models_t5_umt5-xxl-enc-bf16",
        ),
        ({"transformer_quantization": "fp8"}, "wan2.1_text2video_14B_quanto_mbf16_int8.safetensors", None),
        ({"transformer_dtype_policy": "fp16"}, "wan2.1_text2video_14B_quanto_mfp16_int8.safetensors", None),
        (
            {"transformer_quantization": "bf16", "transformer_dtype_policy": "fp16"},
            "wan2.1_text2video_14B_mbf16.safetensors",
            None,
        ),
    ],
)
def test_settings_choose_the_variant(tmp_path, config, main, encoder):
    wan = tiny_tree(tmp_path, {}, config)
    model = load_catalog(wan).models["t2v"]
    assert model.main_files == (f"ckpts/{main}",)
    if encoder:
        assert by_role(model, "text_encoder") == [f"ckpts/umt5-xxl/{encoder}.safetensors"]


def test_fp8_prefers_fp8_then_int8_and_arch_dtype_wins(tmp_path):
    urls = [f"{W21}/m_bf16.safetensors", f"{W21}/m_quanto_bf16_int8.safetensors", f"{W21}/m_fp8_e4m3.safetensors"]
    ltx = [
        f"{HF}/DeepBeepMeep/LTX-2/resolve/main/l_quanto_fp16_int8.safetensors",
        f"{HF}/DeepBeepMeep/LTX-2/resolve/main/l_quanto_bf16_int8.safetensors",
    ]
    wan = tiny_tree(
        tmp_path,
        {"own": {"architecture": "t2v", "URLs": urls}, "ltx": {"architecture": "ltx2_19B", "URLs": ltx}},
        {"transformer_quantization": "fp8", "transformer_dtype_policy": "fp16"},
    )
    catalog = load_catalog(wan)
    assert catalog.models["own"].main_files == ("ckpts/m_fp8_e4m3.safetensors",)
    # The ltx2_19B handler forces bf16 whatever the policy: fp8 -> int8 names, bf16 preferred.
    assert catalog.models["ltx"].main_files == ("ckpts/l_quanto_bf16_int8.safetensors",)


def test_choose_variant_rule():
    names = ["a_bf16.st", "a_quanto_mbf16_int8.st", "a_quanto_mfp16_int8.st"]
    assert choose_variant(names, "int8", "bf16") == 1
    assert choose_variant(names, "int8", "fp16") == 2
    assert choose_variant(names, "bf16", "fp16") == 0
    assert choose_variant(names, "", "bf16") == 0
    assert choose_variant(["x_Q4_K_M.gguf"], "int8", "bf16") == 0
    assert choose_variant(["a_INT8.st", "b.st"], "int8", "bf16") == 0  # token match is case-insensitive
    assert choose_variant(["a_fp8.st", "b_int8.st"], "fp8", "bf16") == 0


def test_multiple_checkpoints_roots_and_lora_root(tmp_path):
    wan = tiny_tree(
        tmp_path,
        {"lo": {"architecture": "t2v", "URLs": "t2v", "loras": [f"{W21}/loras_accelerators/acc.safetensors"]}},
        {"checkpoints_paths": ["models/wan", "ckpts", "."], "loras_root": "my_loras"},
    )
    catalog = load_catalog(wan)
    assert catalog.settings.checkpoints_paths == ("models/wan", "ckpts", ".")
    model = catalog.models["lo"]
    main = next(f for f in model.files if f.role == "main")
    assert main.local == "models/wan/wan2.1_text2video_14B_quanto_mbf16_int8.safetensors"
    assert main.lookup == (
        "models/wan/wan2.1_text2video_14B_quanto_mbf16_int8.safetensors",
        "ckpts/wan2.1_text2video_14B_quanto_mbf16_int8.safetensors",
        "wan2.1_text2video_14B_quanto_mbf16_int8.safetensors",
    )
    encoder = next(f for f in model.files if f.role == "text_encoder")
    assert encoder.lookup[1] == "ckpts/umt5-xxl/models_t5_umt5-xxl-enc-quanto_int8.safetensors"
    assert by_role(model, "lora") == ["my_loras/wan/acc.safetensors"]


def test_finetune_merges_key_by_key(tmp_path):
    wan = copy_fixture(tmp_path)
    write_model(
        wan,
        "t2v",
        {"URLs": [f"{W21}/my_t2v_quanto_int8.safetensors"], "loras": [f"{W21}/style.safetensors"]},
        folder="finetunes",
    )
    write_model(wan, "hidden", {"visible": False}, folder="finetunes")  # partial, no such default: fails alone
    write_model(
        wan,
        "my_vace",
        {"architecture": "vace_14B", "name": "Mine", "URLs": "t2v", "modules": ["vace_14B"]},
        folder="finetunes",
    )
    catalog = load_catalog(wan)
    t2v = catalog.models["t2v"]
    assert t2v.name == "Wan2.1 Text2video 14B"  # kept from the default
    assert t2v.main_files == ("ckpts/my_t2v_quanto_int8.safetensors",)
    assert by_role(t2v, "lora") == ["loras/wan/style.safetensors"]
    assert [p.parent.name for p in t2v.definition_files] == ["defaults", "finetunes"]
    # Every model referencing t2v sees the merged definition, as in Wan2GP.
    assert catalog.models["vace_14B"].main_files == ("ckpts/my_t2v_quanto_int8.safetensors",)
    mine = catalog.models["my_vace"]
    assert mine.name == "Mine" and mine.error is None
    assert by_role(mine, "module") == ["ckpts/wan2.1_Vace_14B_module_quanto_mbf16_int8.safetensors"]
    assert "architecture: missing" in catalog.models["hidden"].error
    assert sum(1 for m in catalog.models.values() if m.error) == 1


def test_subdir_suffix_lora_dir_and_query(tmp_path):
    wan = tiny_tree(
        tmp_path,
        {
            "sub": {
                "architecture": "t2v",
                "URLs": "t2v",
                "preload_URLs": [
                    f"{W21}/folder/in/repo/mask.safetensors|masks/v1",
                    f"{W21}/ic_lora.safetensors|%lora_dir",
                    f"{W21}/plain.safetensors?download=true",
                ],
                "VAE_URLs": "https://example.com/files/vae.safetensors|vae",
            }
        },
    )
    model = load_catalog(wan).models["sub"]
    preload = {f.local: f for f in model.files if f.role == "preload"}
    assert list(preload) == [
        "ckpts/masks/v1/mask.safetensors",
        "loras/wan/ic_lora.safetensors",
        "ckpts/plain.safetensors",
    ]
    assert preload["ckpts/masks/v1/mask.safetensors"].url == f"{W21}/folder/in/repo/mask.safetensors"
    assert preload["ckpts/masks/v1/mask.safetensors"].path_in_repo == "folder/in/repo/mask.safetensors"
    assert preload["ckpts/masks/v1/mask.safetensors"].lookup[1] == "masks/v1/mask.safetensors"
    assert preload["ckpts/plain.safetensors"].url == f"{W21}/plain.safetensors"
    vae = next(f for f in model.files if f.role == "vae")
    assert (vae.local, vae.repo, vae.path_in_repo) == ("ckpts/vae/vae.safetensors", None, "")


def test_lora_with_subdir_stays_in_the_family_lora_folder(tmp_path):
    """A `loras` entry written `URL|subdir` goes to loras/<family>/<subdir>/, not ckpts/<subdir>/ (issue 17)."""
    wan = tiny_tree(
        tmp_path,
        {
            "sub": {
                "architecture": "t2v",
                "URLs": "t2v",
                "loras": [f"{W21}/loras/style.safetensors|styles/v2", f"{W21}/plain_lora.safetensors"],
            }
        },
    )
    loras = [f for f in load_catalog(wan).models["sub"].files if f.role == "lora"]
    assert [(f.local, f.lookup) for f in loras] == [
        ("loras/wan/styles/v2/style.safetensors", ("loras/wan/styles/v2/style.safetensors",)),
        ("loras/wan/plain_lora.safetensors", ("loras/wan/plain_lora.safetensors",)),
    ]
    assert loras[0].path_in_repo == "loras/style.safetensors"


def test_modules_string_hash_key_and_dict_forms(tmp_path):
    wan = tiny_tree(
        tmp_path,
        {
            "two": {
                "architecture": "t2v",
                "URLs": "t2v",
                "modules": [
                    {
                        "URLs": [f"{W21}/left_bf16.safetensors", f"{W21}/left_quanto_bf16_int8.safetensors"],
                        "URLs2": [f"{W21}/right.safetensors"],
                    }
                ],
            },
            "named": {"architecture": "t2v", "URLs": "t2v", "modules": {"pose": [f"{W21}/pose.safetensors"]}},
            "borrow": {"architecture": "t2v", "URLs": "t2v", "modules": "two"},
            "pick": {"architecture": "t2v", "URLs": "t2v", "modules": ["two#URLs2"]},
            "one": {"architecture": "t2v", "URLs": "t2v", "modules": ["two"]},
        },
    )
    models = load_catalog(wan).models
    assert by_role(models["two"], "module") == ["ckpts/left_quanto_bf16_int8.safetensors", "ckpts/right.safetensors"]
    module_alternatives = [(f.local, f.variant_of) for f in models["two"].alternatives if f.role == "module"]
    assert module_alternatives == [("ckpts/left_bf16.safetensors", "two:modules[0].URLs")]
    assert by_role(models["borrow"], "module") == by_role(models["two"], "module")
    assert by_role(models["pick"], "module") == ["ckpts/right.safetensors"]
    assert by_role(models["one"], "module") == ["ckpts/left_quanto_bf16_int8.safetensors", "ckpts/right.safetensors"]
    assert "modules: expected a list of modules" in models["named"].error


def test_deprecated_names_are_never_planned(tmp_path):
    wan = tiny_tree(
        tmp_path,
        {
            "old": {
                "architecture": "t2v",
                "URLs": [f"{W21}/wan2.1_text2video_14B_bf16.safetensors"],
                "preload_URLs": [f"{W21}/keep.safetensors"],
            }
        },
    )
    model = load_catalog(wan).models["old"]
    assert model.error is None
    assert model.main_files == ()
    assert all("wan2.1_text2video_14B_bf16" not in f.local for f in model.files)
    assert by_role(model, "preload") == ["ckpts/keep.safetensors"]
    assert any("deprecated" in w and "wan2.1_text2video_14B_bf16.safetensors" in w for w in model.warnings)


def test_unknown_architecture_plans_json_files_and_warns(tmp_path):
    wan = tiny_tree(
        tmp_path,
        {
            "future": {
                "architecture": "wan3_future",
                "URLs": [f"{W22}/w3.safetensors"],
                "loras": [f"{W22}/l.safetensors"],
                "ltx2_lora_distilled": f"{W22}/d.safetensors",
            }
        },
    )
    model = load_catalog(wan).models["future"]
    assert model.error is None
    assert model.main_files == ("ckpts/w3.safetensors",)
    assert by_role(model, "lora") == ["loras/wan3_future/l.safetensors"]
    assert [f.local for f in model.optional_files] == ["loras/wan3_future/d.safetensors"]
    assert not by_role(model, "handler") and not by_role(model, "text_encoder")
    assert by_role(model, "core")  # shared by every model load
    assert model.warnings == (
        "architecture 'wan3_future' unknown to the handler table (commit 8681e9f777f9f847f74a0bdefd13d5b9a6efe12d): "
        "handler files not planned",
    )


def test_on_demand_key_overrides_and_preload_to_lora_dir(tmp_path):
    ltx = f"{HF}/DeepBeepMeep/LTX-2/resolve/main"
    wan = tiny_tree(
        tmp_path,
        {
            "ltx": {
                "architecture": "ltx2_19B",
                "URLs": [f"{ltx}/l.safetensors"],
                "preload_URLs": [
                    f"{ltx}/ltx-2-19b-ic-lora-union-control-ref0.5.safetensors",
                    f"{ltx}/other.safetensors",
                ],
                "ltx2_lora_distilled": f"{ltx}/my_distilled.safetensors",
                "ltx2_pipeline": "distilled",
            }
        },
    )
    model = load_catalog(wan).models["ltx"]
    assert by_role(model, "preload") == [
        "loras/ltx2/ltx-2-19b-ic-lora-union-control-ref0.5.safetensors",
        "ckpts/other.safetensors",
    ]
    assert [f.local for f in model.optional_files] == [
        "loras/ltx2/my_distilled.safetensors",
        "loras/ltx2/id-lora-celebvhq-ltx2.safetensors",
    ]
    handler = by_role(model, "handler")
    assert "ckpts/ltx-2-19b-distilled_embeddings_connector.safetensors" in handler
    assert "ckpts/ltx-2-19b-dev_embeddings_connector.safetensors" not in handler


def test_all_variants_puts_every_variant_in_files(tmp_path):
    wan = tiny_tree(tmp_path, {})
    model = load_catalog(wan, all_variants=True).models["t2v"]
    assert by_role(model, "main") == [
        "ckpts/wan2.1_text2video_14B_mbf16.safetensors",
        "ckpts/wan2.1_text2video_14B_quanto_mbf16_int8.safetensors",
        "ckpts/wan2.1_text2video_14B_quanto_mfp16_int8.safetensors",
    ]
    assert model.main_files == ("ckpts/wan2.1_text2video_14B_quanto_mbf16_int8.safetensors",)
    assert len(by_role(model, "text_encoder")) == 2
    assert model.alternatives == ()


def test_case_tree_from_disk():
    """tests/catalog_cases/newer: forms of newer Wan2GP trees (string modules, |subdir, type#key, VAE_URLs)."""
    catalog = load_catalog(CASES / "newer")
    assert {t: m.error for t, m in catalog.models.items() if m.error} == {}
    pose = catalog.models["pose_control"]
    assert by_role(pose, "module") == ["ckpts/pose_module_quanto_bf16_int8.safetensors"]
    assert by_role(pose, "vae") == ["ckpts/vae/pose_vae.safetensors"]
    user = catalog.models["user_pose"]
    assert by_role(user, "module") == ["ckpts/pose_module_quanto_bf16_int8.safetensors"]
    assert by_role(user, "preload") == ["ckpts/masks/mask.safetensors", "loras/wan/ic.safetensors"]


# ---------------------------------------------------------------------------------------------------------------
# Settings file


def test_wgp_config_defaults_when_absent(tmp_path):
    settings, problems = read_wan_settings(tmp_path)
    assert settings == WanSettings()
    assert settings.checkpoints_paths == ("ckpts", ".")
    assert problems == []


def test_malformed_wgp_config_falls_back_and_is_reported(tmp_path):
    wan = tiny_tree(tmp_path, {})
    (wan / "wgp_config.json").write_text('{"transformer_quantization": "bf16",\n  oops}', encoding="utf-8")
    catalog = load_catalog(wan)
    assert catalog.settings == WanSettings()
    assert len(catalog.errors) == 1
    assert catalog.errors[0].startswith(f"{wan / 'wgp_config.json'}:2:3: invalid JSON: ")
    assert catalog.models["t2v"].error is None


def test_wrong_typed_wgp_config_key_is_reported(tmp_path):
    wan = tiny_tree(
        tmp_path,
        {},
        {
            "transformer_quantization": 8,
            "checkpoints_paths": "models",
            "loras_root": "L",
            "depth_anything_v2_variant": "vitb",
        },
    )
    catalog = load_catalog(wan)
    assert catalog.errors == (
        f"{wan / 'wgp_config.json'}: transformer_quantization: expected a string, got 8; using the default",
    )
    assert catalog.settings.transformer_quantization == "int8"
    assert catalog.settings.checkpoints_paths == ("models",)
    assert catalog.settings.loras_root == "L"
    t2v = {f.local for f in catalog.models["t2v"].files}
    assert "models/depth/depth_anything_v2_vitb.pth" in t2v
    assert "models/depth/depth_anything_v2_vitl.pth" not in t2v


# ---------------------------------------------------------------------------------------------------------------
# Reloading


def test_loader_rereads_only_changed_files(tmp_path):
    wan = tiny_tree(tmp_path, {"a": {"architecture": "t2v", "URLs": [f"{W21}/a1.safetensors"]}})
    loader = CatalogLoader(wan)
    first = loader.load()
    assert first.models["a"].main_files == ("ckpts/a1.safetensors",)
    t2v_source = loader._sources[wan / "defaults" / "t2v.json"]

    path = write_model(wan, "a", {"architecture": "t2v", "URLs": [f"{W21}/a22.safetensors"]})
    second = loader.load()
    assert second.models["a"].main_files == ("ckpts/a22.safetensors",)
    assert loader._sources[wan / "defaults" / "t2v.json"] is t2v_source  # untouched file not re-read

    # Same size and mtime (an edit inside the file system's time granularity): only a watcher hint re-reads it.
    stamp = path.stat()
    path.write_text(json.dumps({"model": {"architecture": "t2v", "URLs": [f"{W21}/a33.safetensors"]}}))
    os.utime(path, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
    assert loader.load().models["a"].main_files == ("ckpts/a22.safetensors",)
    assert loader.load(changed=[path]).models["a"].main_files == ("ckpts/a33.safetensors",)

    path.unlink()
    write_model(wan, "b", {"architecture": "t2v", "URLs": "t2v"})
    third = loader.load()
    assert sorted(third.models) == ["b", "t2v"]


# ---------------------------------------------------------------------------------------------------------------
# Malformed definitions: each fails its own model, with the file and the reason; t2v and "fine" still resolve.

GOOD = f"{W21}/good_quanto_int8.safetensors"
CHAIN = {f"c{i}": {"architecture": "t2v", "URLs": f"c{i + 1}"} for i in range(11)}
CHAIN["c11"] = {"architecture": "t2v", "URLs": [GOOD]}

MALFORMED = [
    # (id, files {type: model dict or raw text}, failing type, expected message after "<file>: ")
    (
        "bad-json",
        {"bad": '{"model": {\n  "URLs": [\n    "x",\n  ]\n}}'},
        "bad",
        ":4:3: invalid JSON: Expecting value",
    ),  # the "]" after a trailing comma
    ("top-level-list", {"bad": "[1, 2]"}, "bad", ": top level must be a JSON object, got a list"),
    (
        "model-missing",
        {"bad": '{"name": "x"}'},
        "bad",
        ': "model" is missing (every definition keeps its files under "model")',
    ),
    ("model-not-object", {"bad": '{"model": "t2v"}'}, "bad", ': "model" must be an object, got a string'),
    ("not-utf8", {"bad": b'{"model": {"name": "\xff"}}'}, "bad", ": not UTF-8 text (byte 20)"),
    (
        "urls-number",
        {"bad": {"architecture": "t2v", "URLs": 3}},
        "bad",
        ": URLs: expected a list of URLs or a model type name, got a number",
    ),
    (
        "urls-item-object",
        {"bad": {"architecture": "t2v", "URLs": [GOOD, {"u": 1}]}},
        "bad",
        ": URLs[1]: expected a URL string, got an object",
    ),
    (
        "name-number",
        {"bad": {"architecture": "t2v", "name": 7, "URLs": [GOOD]}},
        "bad",
        ": name: expected a string, got a number",
    ),
    (
        "architecture-missing",
        {"bad": {"URLs": [GOOD]}},
        "bad",
        ": architecture: missing: every model names its architecture (the base model type)",
    ),
    (
        "unknown-reference",
        {"bad": {"architecture": "t2v", "URLs": "nope"}},
        "bad",
        ": URLs: unknown model type 'nope'",
    ),
    (
        "unknown-loras-reference",
        {"bad": {"architecture": "t2v", "URLs": "t2v", "loras": "ghost"}},
        "bad",
        ": loras: unknown model type 'ghost'",
    ),
    (
        "cycle",
        {"bad": {"architecture": "t2v", "URLs": "bad2"}, "bad2": {"architecture": "t2v", "URLs": "bad"}},
        "bad",
        ": URLs: circular reference: bad -> bad2 -> bad",
    ),
    (
        "self-reference",
        {"bad": {"architecture": "t2v", "URLs": [GOOD], "preload_URLs": "bad"}},
        "bad",
        ": preload_URLs: circular reference: bad -> bad",
    ),
    (
        "depth-limit",
        CHAIN,
        "c0",
        ": URLs: circular reference: c0 -> c1 -> c2 -> c3 -> c4 -> c5 -> c6 -> c7 -> c8 -> c9 -> c10 -> c11",
    ),
    (
        "subdir-dotdot",
        {"bad": {"architecture": "t2v", "URLs": [f"{GOOD}|../../etc"]}},
        "bad",
        ": URLs: '|../../etc' escapes the Wan2GP folder (absolute, empty or '..')",
    ),
    (
        "subdir-absolute",
        {"bad": {"architecture": "t2v", "URLs": "t2v", "loras": [f"{GOOD}|/tmp"]}},
        "bad",
        ": loras: '|/tmp' escapes the Wan2GP folder (absolute, empty or '..')",
    ),
    (
        "two-pipes",
        {"bad": {"architecture": "t2v", "URLs": [f"{GOOD}|a|b"]}},
        "bad",
        f": URLs: '{GOOD}|a|b' has more than one '|'",
    ),
    (
        "http-url",
        {"bad": {"architecture": "t2v", "URLs": ["http://example.com/x.safetensors"]}},
        "bad",
        ": URLs: 'http://example.com/x.safetensors' is not an https:// URL",
    ),
    (
        "local-path-url",
        {"bad": {"architecture": "t2v", "URLs": "t2v", "preload_URLs": ["/abs/x.safetensors"]}},
        "bad",
        ": preload_URLs: '/abs/x.safetensors' is not an https:// URL",
    ),
    (
        "url-without-file",
        {"bad": {"architecture": "t2v", "URLs": [f"{W21}/"]}},
        "bad",
        f": URLs: '{W21}/' does not name a file",
    ),
    (
        "empty-module",
        {"bad": {"architecture": "t2v", "URLs": "t2v", "modules": [[]]}},
        "bad",
        ": modules: bad:modules[0]: empty URL list (a module needs at least one URL)",
    ),
    (
        "module-of-many",
        {
            "bad": {"architecture": "t2v", "URLs": "t2v", "modules": ["many"]},
            "many": {"architecture": "t2v", "URLs": "t2v", "modules": [[GOOD], [GOOD]]},
        },
        "bad",
        ": modules: 'many' must define exactly one module to be used as one (it has 2)",
    ),
    (
        "module-missing-key",
        {"bad": {"architecture": "t2v", "URLs": "t2v", "modules": ["t2v#URLs2"]}},
        "bad",
        ": modules: 't2v#URLs2': model type 't2v' has no module 'URLs2'",
    ),
    (
        "text-encoder-folder-escape",
        {"bad": {"architecture": "t2v", "URLs": "t2v", "text_encoder_folder": "../te"}},
        "bad",
        ": text_encoder_folder: '../te' escapes the Wan2GP folder",
    ),
    (
        "references-failed",
        {"bad": {"architecture": "t2v", "URLs": "broken"}, "broken": "{"},
        "bad",
        ": URLs: references 'broken', which failed",
    ),
    (
        "templated-not-a-name",
        {"bad": {"architecture": "ltx2_19B", "URLs": [GOOD], "ltx2_video_vae_file": "../vae"}},
        "bad",
        ": ltx2_video_vae_file: '../vae' escapes the checkpoints folder",
    ),
]


@pytest.mark.parametrize(("files", "failing", "message"), [c[1:] for c in MALFORMED], ids=[c[0] for c in MALFORMED])
def test_malformed_definition_fails_alone(tmp_path, files, failing, message):
    wan = tiny_tree(tmp_path, {"fine": {"architecture": "t2v", "URLs": "t2v"}})
    for model_type, content in files.items():
        path = wan / "defaults" / f"{model_type}.json"
        if isinstance(content, dict):
            write_model(wan, model_type, content)
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
    catalog = load_catalog(wan)
    model = catalog.models[failing]
    assert model.error == f"{wan / 'defaults' / failing}.json{message}"
    assert model.files == () and model.main_files == ()
    for fine in ("t2v", "fine"):
        assert catalog.models[fine].error is None
        assert catalog.models[fine].main_files == ("ckpts/wan2.1_text2video_14B_quanto_mbf16_int8.safetensors",)


def test_handler_preload_is_a_default_the_json_replaces(tmp_path):
    krea = "https://huggingface.co/DeepBeepMeep/krea-2/resolve/main"
    wan = tiny_tree(
        tmp_path,
        {
            "raw": {"architecture": "krea2_raw_edit", "URLs": [f"{krea}/k.safetensors"]},
            "own": {"architecture": "krea2_raw_edit", "URLs": "raw", "preload_URLs": [f"{krea}/mine.safetensors"]},
            "ref": {"architecture": "t2v", "URLs": "t2v", "preload_URLs": "raw"},
        },
    )
    models = load_catalog(wan).models
    vision = "ckpts/Qwen3-VL-4B-Instruct/Qwen3-VL-4B-Instruct_vision_bf16.safetensors"
    assert by_role(models["raw"], "preload") == [vision]
    assert by_role(models["own"], "preload") == ["ckpts/mine.safetensors"]
    assert by_role(models["ref"], "preload") == [vision]  # a reference sees the full definition, as in Wan2GP


def test_every_form_of_a_hub_url_in_a_finetune_is_a_hub_file(tmp_path):
    # One parser (wangpd/hfurl.py): a finetune written with hf.co, www. or a /blob/ page URL is fetched from the Hub
    # (verified, into the HF cache) like a huggingface.co /resolve/ one, not refused as a plain URL.
    wan = tiny_tree(
        tmp_path,
        {
            "forms": {
                "architecture": "t2v",
                "URLs": "t2v",
                "preload_URLs": [
                    "https://hf.co/Org/A/resolve/main/a.safetensors",
                    "https://www.huggingface.co/Org/B/blob/main/dir/b.safetensors?download=true",
                    "https://huggingface.co/datasets/Org/C/resolve/main/c.safetensors",
                ],
            }
        },
    )
    model = load_catalog(wan).models["forms"]
    preload = {f.local: (f.repo, f.path_in_repo) for f in model.files if f.role == "preload"}
    assert preload == {
        "ckpts/a.safetensors": ("Org/A", "a.safetensors"),
        "ckpts/b.safetensors": ("Org/B", "dir/b.safetensors"),
        "ckpts/c.safetensors": (None, ""),  # a dataset is no model repo: a plain URL (needs hub.allowed_hosts)
    }


def test_a_file_wan2gp_renames_at_its_start_counts_under_either_name(tmp_path):
    # The fp4 -> nvfp4 move: Wan2GP renames ltx-2-19b-dev-fp4_... to ltx-2-19b-dev-nvfp4_... at its start. A user
    # who has the old file needs nothing downloaded for a definition naming the new one, and the reverse.
    from wangpd.planner import plan, scan_present

    old, new = "ltx-2-19b-dev-fp4_diffusion_model.safetensors", "ltx-2-19b-dev-nvfp4_diffusion_model.safetensors"
    url = "https://huggingface.co/DeepBeepMeep/LTX-2/resolve/main/"
    wan = tiny_tree(
        tmp_path,
        {
            "new_def": {"architecture": "t2v", "URLs": [url + new]},
            "old_def": {"architecture": "t2v", "URLs": [url + old]},
        },
    )
    (wan / "ckpts").mkdir()
    (wan / "ckpts" / old).write_bytes(b"x")
    catalog = load_catalog(wan)
    main = {t: next(f for f in catalog.models[t].files if f.role == "main") for t in ("new_def", "old_def")}
    assert main["new_def"].local == f"ckpts/{new}" and f"ckpts/{old}" in main["new_def"].lookup
    assert f"ckpts/{new}" in main["old_def"].lookup
    result = plan(catalog, exists=scan_present(wan, catalog), model_types=["new_def", "old_def"])
    status = {p.file.local: p.status for p in result.files}
    assert status[f"ckpts/{new}"] == "present" and status[f"ckpts/{old}"] == "present"


def test_wangpd_plan_text_shows_no_control_characters_from_a_definition(tmp_path):
    from wangpd.planner import plan, render_plan_text, scan_present

    wan = tiny_tree(tmp_path, {"evil": {"architecture": "t2v", "name": "x\x1b]0;owned\x07\nFAKE LINE", "URLs": "t2v"}})
    catalog = load_catalog(wan)
    text = render_plan_text(plan(catalog, exists=scan_present(wan, catalog), model_types=["evil"]))
    assert "\x1b" not in text and "\x07" not in text
    assert not any(line.startswith("FAKE LINE") for line in text.splitlines())


def plugin(wan: Path, plugin_id: str, models: dict[str, dict], info: dict | None = None) -> Path:
    """A Wan2GP model plugin folder: plugin_info.json naming ``defaults``, with ``models`` in it."""
    folder = wan / "plugins" / plugin_id
    (folder / "defaults").mkdir(parents=True)
    info = {"name": plugin_id, "defaults": "defaults"} if info is None else info
    (folder / "plugin_info.json").write_text(json.dumps(info), encoding="utf-8")
    for model_type, model in models.items():
        (folder / "defaults" / f"{model_type}.json").write_text(json.dumps({"model": model}), encoding="utf-8")
    return folder


def test_enabled_model_plugins_bring_their_definitions(tmp_path):
    """Issue 17: an enabled plugin whose plugin_info.json names a `defaults` folder adds model types, read like
    defaults/ (same keys, same paths); a disabled one adds nothing; a finetune still has the last word."""
    wan = tiny_tree(
        tmp_path,
        {"mine": {"architecture": "t2v", "URLs": [f"{W21}/mine_quanto_int8.safetensors"]}},
        config={"enabled_plugins": ["wan2gp-extra", "ui-only", "not-installed"]},
    )
    plugin(
        wan,
        "wan2gp-extra",
        {
            "extra": {
                "name": "Extra 14B",
                "architecture": "t2v",
                "URLs": [f"{W21}/extra_quanto_int8.safetensors"],
                "loras": [f"{W21}/extra_lora.safetensors"],
            },
            "tuned": {"architecture": "t2v", "URLs": [f"{W21}/tuned_a.safetensors"]},
        },
    )
    plugin(wan, "ui-only", {}, info={"name": "a tab"})
    plugin(wan, "disabled", {"hidden_one": {"architecture": "t2v", "URLs": "t2v"}})
    write_model(wan, "tuned", {"URLs": [f"{W21}/tuned_b.safetensors"]}, folder="finetunes")
    catalog = load_catalog(wan)
    assert catalog.errors == ()
    extra = catalog.models["extra"]
    assert (extra.name, extra.plugin, extra.error) == ("Extra 14B", "wan2gp-extra", None)
    assert by_role(extra, "main") == ["ckpts/extra_quanto_int8.safetensors"]
    assert by_role(extra, "lora") == ["loras/wan/extra_lora.safetensors"]
    assert extra.definition_files == (wan / "plugins" / "wan2gp-extra" / "defaults" / "extra.json",)
    tuned = catalog.models["tuned"]
    assert tuned.plugin == "wan2gp-extra" and by_role(tuned, "main") == ["ckpts/tuned_b.safetensors"]
    assert "hidden_one" not in catalog.models, "a plugin not in enabled_plugins is not loaded by Wan2GP"
    assert catalog.models["mine"].plugin is None and catalog.models["t2v"].plugin is None


def test_a_bad_plugin_info_skips_that_plugin_only(tmp_path):
    wan = tiny_tree(tmp_path, {}, config={"enabled_plugins": ["broken", "escapes", "good", "../up"]})
    (wan / "plugins" / "broken").mkdir(parents=True)
    (wan / "plugins" / "broken" / "plugin_info.json").write_text("{not json", encoding="utf-8")
    plugin(wan, "escapes", {}, info={"defaults": "../../defaults"})
    plugin(wan, "good", {"g": {"architecture": "t2v", "URLs": "t2v"}})
    catalog = load_catalog(wan)
    assert catalog.models["g"].plugin == "good" and catalog.models["g"].error is None
    errors = "\n".join(catalog.errors)
    assert f"{wan / 'plugins' / 'broken' / 'plugin_info.json'}: cannot read" in errors
    assert "escapes" in errors and "defaults: expected a folder inside the plugin" in errors
    assert "'../up' is not a plugin folder name" in errors
    assert len(catalog.errors) == 3
    bad = tiny_tree(tmp_path / "b", {}, config={"enabled_plugins": "good"})
    assert any("enabled_plugins: expected a list" in e for e in load_catalog(bad).errors)


# ---- issue 17: accelerator profiles, Wan2GP's LoRA URL cache, module_source, files model code fetches ---------

LIGHTNING = "https://huggingface.co/DeepBeepMeep/Wan2.2/resolve/main/loras_accelerators/lightx2v_4step_1217.safetensors"
FUSIONX = (
    "https://huggingface.co/DeepBeepMeep/Wan2.1/resolve/main/loras_accelerators/Wan2.1_T2V_14B_FusionX.safetensors"
)


def profile_tree(tmp_path: Path, *, cache: dict[str, str] | None = None) -> Path:
    """t2v_2_2 (profiles in profiles/wan_2_2) and t2v (profiles/wan), one profile each and a broken one."""
    wan = tiny_tree(
        tmp_path,
        {
            "t2v_2_2": {
                "name": "Wan 2.2",
                "architecture": "t2v_2_2",
                "URLs": [f"{HF}/DeepBeepMeep/Wan2.2/resolve/main/t22.safetensors"],
            }
        },
    )
    (wan / "profiles" / "wan_2_2").mkdir(parents=True)
    (wan / "profiles" / "wan").mkdir()
    lightning = {"activated_loras": [LIGHTNING, f"{LIGHTNING}|styles"], "loras_multipliers": "1;0 0;1"}
    (wan / "profiles" / "wan_2_2" / "Lightning 4 Steps.json").write_text(json.dumps(lightning))
    (wan / "profiles" / "wan_2_2" / "Broken.json").write_text('{"activated_loras": [],\n}\t"x": 1')
    (wan / "profiles" / "wan" / "FusioniX t2v - 10 Steps.json").write_text(json.dumps({"activated_loras": [FUSIONX]}))
    if cache is not None:
        (wan / "loras_url_cache_v2.json").write_text(json.dumps(cache, indent=4))
    return wan


def test_profiles_are_listed_per_model_with_their_loras_where_wan2gp_puts_them(tmp_path: Path) -> None:
    catalog = load_catalog(profile_tree(tmp_path))
    t22 = catalog.models["t2v_2_2"]
    [profile] = t22.profiles
    assert profile.name == "wan_2_2/Lightning 4 Steps" and not profile.used and not profile.included
    # Wan2GP's get_lora_local_path: <lora dir>/<basename>, or <lora dir>/<subdir>/<basename> for URL|subdir.
    assert [f.local for f in profile.files] == [
        "loras/wan/lightx2v_4step_1217.safetensors",
        "loras/wan/styles/lightx2v_4step_1217.safetensors",
    ]
    assert [p.name for p in catalog.models["t2v"].profiles] == ["wan/FusioniX t2v - 10 Steps"]
    # Listed only: a profile nobody picked adds nothing to what the model needs.
    assert not [f for f in t22.files if f.role in ("profile_lora", "used_lora")]
    # The shipped Lightning profile that is not valid JSON is skipped and named, not fatal.
    assert any("Broken.json" in e and "skipped" in e for e in catalog.errors)


def test_loras_wan2gp_has_recorded_are_kept_and_their_profile_counts_as_used(tmp_path: Path) -> None:
    cache = {
        "loras/wan|lightx2v_4step_1217.safetensors": LIGHTNING,
        "loras\\wan|styles/lightx2v_4step_1217.safetensors": LIGHTNING,  # Wan2GP on Windows joins with a backslash
        "loras/wan|my_style.safetensors": f"{HF}/Someone/Styles/resolve/main/my_style.safetensors",
        "loras/wan|civitai.safetensors": "https://civitai.com/api/download/models/1",
        "loras/flux|other_family.safetensors": f"{HF}/O/R/resolve/main/other_family.safetensors",
    }
    catalog = load_catalog(profile_tree(tmp_path, cache=cache))
    t22 = catalog.models["t2v_2_2"]
    assert t22.profiles[0].used
    used = {f.local: f.role for f in t22.files if f.role in ("used_lora", "profile_lora")}
    assert used == {
        "loras/wan/lightx2v_4step_1217.safetensors": "used_lora",
        "loras/wan/styles/lightx2v_4step_1217.safetensors": "used_lora",
        "loras/wan/my_style.safetensors": "used_lora",
    }, "Hub URLs of this family's LoRA folder only (Wan2GP fetches other hosts itself)"
    assert "loras/wan/my_style.safetensors" in {f.local for f in catalog.models["t2v"].files}, "same LoRA folder"


def test_include_profiles_adds_their_loras_before_anyone_picks_them(tmp_path: Path) -> None:
    wan = profile_tree(tmp_path)
    catalog = CatalogLoader(wan, include_profiles=["Lightning*"]).load()
    t22 = catalog.models["t2v_2_2"]
    assert t22.profiles[0].included
    assert {f.local for f in t22.files if f.role == "profile_lora"} == {
        "loras/wan/lightx2v_4step_1217.safetensors",
        "loras/wan/styles/lightx2v_4step_1217.safetensors",
    }
    assert not [f for f in catalog.models["t2v"].files if f.role == "profile_lora"], "wan/FusioniX not included"


def test_module_source_builds_the_modules_locally(tmp_path: Path) -> None:
    module = [f"{HF}/Org/Mods/resolve/main/vace_module_bf16.safetensors"]
    wan = tiny_tree(
        tmp_path,
        {
            "builds": {
                "name": "b",
                "architecture": "vace_14B",
                "URLs": "t2v",
                "modules": [module],
                "module_source": "ckpts/my_full_vace.safetensors",
            },
            "fetches": {"name": "f", "architecture": "vace_14B", "URLs": "t2v", "modules": [module]},
        },
    )
    catalog = load_catalog(wan)
    assert not [f for f in catalog.models["builds"].files if f.role == "module"]
    assert "modules: skipped, module_source builds them locally" in catalog.models["builds"].warnings
    assert [f.local for f in catalog.models["fetches"].files if f.role == "module"] == [
        "ckpts/vace_module_bf16.safetensors"
    ]
    assert catalog.models["builds"].main_files == catalog.models["fetches"].main_files, "the main file is fetched"


def test_a_model_whose_code_fetches_unlisted_files_says_so(tmp_path: Path) -> None:
    wan = tiny_tree(tmp_path, {"kiwi_edit": {"name": "k", "architecture": "kiwi_edit", "URLs": "t2v"}})
    catalog = load_catalog(wan)
    assert "kiwi_embedders" in (catalog.models["kiwi_edit"].unlisted or "")
    assert catalog.models["t2v"].unlisted is None


def test_a_users_lset_preset_with_lora_urls_is_listed_with_the_profiles(tmp_path: Path) -> None:
    wan = profile_tree(tmp_path)
    (wan / "loras" / "wan").mkdir(parents=True)
    preset = {"loras": [FUSIONX, "my_local_lora.safetensors", f"{LIGHTNING}|styles"], "loras_mult": "1 0.8 1"}
    (wan / "loras" / "wan" / "my look.lset").write_text(json.dumps(preset))
    (wan / "loras" / "wan" / "broken.lset").write_text("{")
    catalog = load_catalog(wan)
    lset = next(p for p in catalog.models["t2v"].profiles if p.name.endswith(".lset"))
    assert lset.name == "wan/my look.lset"
    assert [f.local for f in lset.files] == [
        "loras/wan/Wan2.1_T2V_14B_FusionX.safetensors",
        "loras/wan/styles/lightx2v_4step_1217.safetensors",
    ], "URL entries only: a plain name is a LoRA that is already there"
    assert any("broken.lset" in e for e in catalog.errors)
    included = CatalogLoader(wan, include_profiles=["*.lset"]).load().models["t2v"]
    assert {f.local for f in lset.files} <= {f.local for f in included.files}
