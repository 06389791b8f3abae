"""Handler table: the shipped data, its checks, extra tables on top, and conditions applied to a model."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from wangpd.errors import ConfigError
from wangpd.handler_table import condition_holds, default_table_path, handler_files_for, load_handler_table

COMMIT = "8681e9f777f9f847f74a0bdefd13d5b9a6efe12d"


@pytest.fixture(scope="module")
def table():
    return load_handler_table()


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return path


def test_shipped_table(table):
    assert table.commit == COMMIT
    assert table.sources == (default_table_path(),)
    assert table.hub == "https://huggingface.co"
    assert len(table.architectures) == 126
    assert len(table.core_files) == 20
    t2v = table.architectures["t2v"]
    assert (t2v.family, t2v.lora_dir, t2v.text_encoder, t2v.text_encoder_folder) == (
        "wan",
        "wan",
        "wan_umt5_xxl",
        "umt5-xxl",
    )
    assert "Wan2.1_VAE.safetensors" in {f.local for f in t2v.files}
    umt5 = table.text_encoders["wan_umt5_xxl"]
    assert [v.local for v in umt5.variants] == [
        "umt5-xxl/models_t5_umt5-xxl-enc-bf16.safetensors",
        "umt5-xxl/models_t5_umt5-xxl-enc-quanto_int8.safetensors",
    ]
    assert "ltx-2-19b-dev.safetensors" in table.deprecated
    yue = {f.local: f for f in table.architectures["yue"].files}
    assert yue["xcodec_mini_infer/models"].whole_folder
    assert table.architectures["ltx2_19B"].dtype == "bf16"
    features = [f.feature for f in table.optional_features]
    assert len(features) == 16
    assert features[:4] == ["prompt_enhancer", "deepy", "magic_mask", "audio_processors"]


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({}, {"depth/depth_anything_v2_vitl.pth", "mask/matanyone.safetensors"}),
        ({"depth_anything_v2_variant": "vitb"}, {"depth/depth_anything_v2_vitb.pth", "mask/matanyone.safetensors"}),
        ({"depth_anything_v2_variant": "huge"}, {"depth/depth_anything_v2_vitl.pth", "mask/matanyone.safetensors"}),
        ({"matanyone_version": "2"}, {"depth/depth_anything_v2_vitl.pth", "mask/matanyone2.safetensors"}),
        ({"matanyone_version": "sam"}, {"depth/depth_anything_v2_vitl.pth", "sam3/sam3.1_multiplex_bf16.safetensors"}),
        ({"matanyone_version": "whatever"}, {"depth/depth_anything_v2_vitl.pth", "mask/matanyone.safetensors"}),
    ],
)
def test_core_settings_choose_files(table, settings, expected):
    locals_ = {f.local for f in table.core_files_for(settings)}
    chosen = {item for item in locals_ if item.startswith(("depth/", "mask/matanyone", "sam3/"))}
    assert chosen & expected == expected
    assert len([item for item in chosen if item.startswith("depth/")]) == 1


URL = "https://huggingface.co/R/x/resolve/main/"


@pytest.mark.parametrize(
    ("when", "model", "holds"),
    [
        ({"key": "k", "present": True}, {"k": None}, True),
        ({"key": "k", "present": True}, {}, False),
        ({"key": "k", "truthy": True}, {"k": ""}, False),
        ({"key": "k", "truthy": True, "not_in": ["a"]}, {"k": "a"}, False),
        ({"key": "k", "truthy": True, "not_in": ["a"]}, {"k": "b"}, True),
        ({"key": "k", "equals": "distilled"}, {"k": "distilled"}, True),
        ({"key": "k", "equals": True}, {}, False),
        ({"url0_contains": "instruct_only"}, {"URLs": [URL + "kiwi_instruct_only_bf16.st", URL + "b"]}, True),
        ({"url0_contains": "instruct_only"}, {"URLs": "kiwi_instruct_only"}, True),
        ({"url0_contains": "instruct_only"}, {"URLs": [URL + "b", URL + "instruct_only"]}, False),
        ({"urls_variant": "bf16"}, {}, True),
        ({"urls_variant": "int8"}, {"URLs": [URL + "a_bf16", URL + "a_quanto_int8"]}, True),
        ({"urls_variant": "nvfp4"}, {"URLs": [URL + "a_bf16", URL + "a_quanto_int8"]}, False),
        ({"urls_lists_contain": "_nf4"}, {"URLs": "x_nf4"}, False),  # string references never match
        ({"urls_lists_contain": "_nf4"}, {"URLs2": [URL + "y_nf4.st"]}, True),
        ({"url0_contains": "ref", "not": {"url0_contains": "only"}}, {"URLs": [URL + "ref_only"]}, False),
        ({"url0_contains": "ref", "not": {"url0_contains": "only"}}, {"URLs": [URL + "ref_x"]}, True),
    ],
)
def test_condition_holds(when, model, holds):
    assert condition_holds(when, model) is holds


def test_conditions_change_an_architectures_files(table):
    kiwi = table.architectures["kiwi_edit"]
    plain, encoder = handler_files_for(kiwi, {"URLs": [URL + "kiwi_instruct_reference_bf16.st"]})
    assert encoder == "kiwi_instruct_reference"
    assert "wan2.2_kiwi_edit_5B_instruct_reference_ref_embedder.safetensors" in {f.local for f in plain}
    only, encoder = handler_files_for(kiwi, {"URLs": [URL + "kiwi_instruct_only_bf16.st"]})
    locals_ = {f.local for f in only}
    assert encoder == "kiwi_instruct_only"
    assert "wan2.2_kiwi_edit_5B_instruct_only_source_embedder.safetensors" in locals_
    assert not any("instruct_reference" in item for item in locals_)

    heart = table.architectures["heartmula_oss_3b"]
    files, _ = handler_files_for(heart, {"heartmula_codec_version": "v2"})
    locals_ = {f.local for f in files}
    assert {"HeartMula/codec_config_v2.json", "HeartMula/HeartMula_codec_v2.safetensors"} <= locals_
    assert "HeartMula/codec_config.json" not in locals_

    ace = table.architectures["ace_step_v1"]
    files, _ = handler_files_for(ace, {"text_encoder_folder": "umt5_large"})
    assert "umt5_large/tokenizer.json" in {f.local for f in files}
    assert "umt5_base/tokenizer.json" not in {f.local for f in files}


def test_extra_tables_merge_on_top(tmp_path):
    first = write(
        tmp_path / "extra1.yaml",
        """
        wan2gp_commit: abcdef0
        core:
          files:
          - {repo: Me/Extra, path: tools/helper.bin, local: tools/helper.bin}
        text_encoders:
          my_te:
            folder: my_te
            variants:
            - {repo: Me/Extra, path: my_te/te_bf16.safetensors}
            - {repo: Me/Extra, path: my_te/te_quanto_bf16_int8.safetensors}
        architectures:
          wan3:
            family: wan
            lora_dir: wan3
            text_encoder: my_te
            files:
            - {repo: Me/Extra, path: wan3_vae.safetensors, local: wan3_vae.safetensors}
          t2v:
            family: wan
            lora_dir: wan
            text_encoder: wan_umt5_xxl
            text_encoder_folder: umt5-xxl
            files: []
        deprecated: [old_thing.safetensors]
        """,
    )
    second = write(tmp_path / "extra2.yaml", "architectures:\n  wan3:\n    family: wan3\n    files: []\n")
    merged = load_handler_table([first, second])
    assert merged.commit == "abcdef0"
    assert merged.sources == (default_table_path(), first, second)
    assert merged.core_files[-1].local == "tools/helper.bin" and len(merged.core_files) == 21
    assert merged.architectures["t2v"].files == ()  # replaced whole
    assert merged.architectures["wan3"].family == "wan3"  # the later extra wins
    assert merged.architectures["wan3"].lora_dir == "wan3"  # defaults to the architecture's name
    assert merged.architectures["i2v"].files  # untouched entries stay
    assert merged.text_encoders["my_te"].variants[1].local == "my_te/te_quanto_bf16_int8.safetensors"
    assert {"old_thing.safetensors", "ltx-2-19b-dev.safetensors"} <= merged.deprecated


def test_table_cache_follows_file_changes(tmp_path):
    extra = write(tmp_path / "extra.yaml", "wan2gp_commit: one\n")
    assert load_handler_table([extra]) is load_handler_table([extra])
    extra.write_text("wan2gp_commit: three\n", encoding="utf-8")
    stamp = extra.stat()
    os.utime(extra, ns=(stamp.st_atime_ns, stamp.st_mtime_ns + 1_000_000))
    assert load_handler_table([extra]).commit == "three"


BAD_TABLES = [
    ("unknown-top-key", "colour: blue\n", "colour: unknown key"),
    (
        "bad-repo",
        "core:\n  files:\n  - {repo: nope, path: a.bin}\n",
        "core.files[0].repo: expected Org/Name, got 'nope'",
    ),
    (
        "escaping-local",
        "core:\n  files:\n  - {repo: A/B, path: a.bin, local: ../a.bin}\n",
        "core.files[0].local: '../a.bin' must be a relative path inside the folder (no '..', not absolute)",
    ),
    (
        "absolute-local",
        "architectures:\n  x:\n    files:\n    - {repo: A/B, path: a.bin, local: /etc/a.bin}\n",
        "architectures.x.files[0].local: '/etc/a.bin' must be a relative path",
    ),
    ("missing-files", "architectures:\n  x:\n    family: f\n", "architectures.x: 'files' is required"),
    (
        "arch-unknown-key",
        "architectures:\n  x:\n    files: []\n    colour: red\n",
        "architectures.x: unknown key 'colour'",
    ),
    (
        "unknown-encoder",
        "architectures:\n  x:\n    text_encoder: ghost\n    files: []\n",
        "architectures.x.text_encoder: unknown text encoder 'ghost' (not under text_encoders)",
    ),
    (
        "bad-when",
        "architectures:\n  x:\n    files: []\n    conditions:\n    - when: {colour: red}\n      remove: [a]\n",
        "architectures.x.conditions[0].when: unknown test 'colour'",
    ),
    (
        "key-without-test",
        "architectures:\n  x:\n    files: []\n    conditions:\n    - when: {key: k}\n",
        "architectures.x.conditions[0].when: a key test needs present, truthy, equals or not_in",
    ),
    (
        "bad-dtype",
        "architectures:\n  x:\n    files: []\n    dtype: fp32\n",
        "architectures.x.dtype: must be bf16 or fp16, got 'fp32'",
    ),
    ("files-not-list", "architectures:\n  x:\n    files: {a: b}\n", "architectures.x.files: expected a list, got dict"),
    ("http-hub", "hub: http://mirror.local\n", "hub: expected an https:// URL, got 'http://mirror.local'"),
    ("not-a-mapping", "- a\n- b\n", "top level: expected a mapping, got list"),
    ("rename-folder", "renames:\n  a/x.bin: y.bin\n", "renames.a/x.bin: expected one file name renamed to another"),
    ("rename-same", "renames:\n  x.bin: x.bin\n", "renames.x.bin: expected one file name renamed to another"),
]


def test_renames_ship_and_merge(tmp_path):
    shipped = load_handler_table([])
    assert shipped.renames["ltx-2-19b-dev-fp4_diffusion_model.safetensors"] == (
        "ltx-2-19b-dev-nvfp4_diffusion_model.safetensors"
    )
    extra = write(tmp_path / "extra.yaml", "renames:\n  old.safetensors: new.safetensors\n")
    merged = load_handler_table([extra])
    assert merged.renames["old.safetensors"] == "new.safetensors" and len(merged.renames) == len(shipped.renames) + 1


@pytest.mark.parametrize(("text", "message"), [c[1:] for c in BAD_TABLES], ids=[c[0] for c in BAD_TABLES])
def test_bad_extra_table_names_file_and_entry(tmp_path, text, message):
    extra = write(tmp_path / "bad.yaml", text)
    with pytest.raises(ConfigError) as caught:
        load_handler_table([extra])
    assert str(caught.value).startswith(f"{extra}: ")
    assert message in str(caught.value)


def test_base_table_must_be_complete_and_valid_yaml(tmp_path):
    partial = write(tmp_path / "base.yaml", "wan2gp_commit: x\ncore: {files: []}\n")
    with pytest.raises(ConfigError, match=r"base\.yaml: architectures: required in the base table"):
        load_handler_table(base=partial)
    broken = write(tmp_path / "broken.yaml", "core: [\n")
    with pytest.raises(ConfigError, match=r"broken\.yaml:2: invalid YAML"):
        load_handler_table([broken])
    with pytest.raises(ConfigError, match="cannot read handler table"):
        load_handler_table([tmp_path / "absent.yaml"])
