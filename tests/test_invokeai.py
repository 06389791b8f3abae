"""Finding files in InvokeAI's model store, against a copy of a database made by InvokeAI 6.14's own migrator."""

from __future__ import annotations

import json
import logging
import shutil
import sqlite3
import time
import uuid
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from wangpd.hfurl import normalize as normalize_url
from wangpd.invokeai import InvokeAIIndex, parse_source

FIXTURE = Path(__file__).parent / "fixtures" / "invokeai" / "invokeai-6.14-empty.db"


class Store:
    """An InvokeAI root in a temp dir: databases/invokeai.db (a copy of the fixture) and models/."""

    def __init__(self, root: Path) -> None:
        self.db = root / "databases" / "invokeai.db"
        self.models = root / "models"
        self.db.parent.mkdir(parents=True)
        self.models.mkdir()
        shutil.copyfile(FIXTURE, self.db)
        self.db.chmod(0o644)

    def add(self, source: str, source_type: str, path: str, *, content: bytes | None = None, **extra: Any) -> str:
        """Insert a row the way InvokeAI does (only id and config; the other columns are generated)."""
        key = str(uuid.uuid4())
        path = path.replace("<key>", key)
        config = {
            "key": key,
            "hash": "blake3:" + "0" * 64,
            "path": path,
            "file_size": len(content) if content is not None else 0,
            "name": extra.pop("name", Path(path).stem),
            "description": None,
            "source": source,
            "source_type": source_type,
            "source_api_response": None,
            "cover_image": None,
            "usage_info": None,
            "type": extra.pop("type", "main"),
            "trigger_phrases": None,
            "default_settings": None,
            "base": extra.pop("base", "flux"),
            "format": extra.pop("format", "checkpoint"),
            **extra,
        }
        if content is not None:
            file = Path(path) if Path(path).is_absolute() else self.models / path
            file.parent.mkdir(parents=True, exist_ok=True)
            file.write_bytes(content)
        with closing(sqlite3.connect(self.db)) as connection, connection:
            connection.execute("INSERT INTO models (id, config) VALUES (?, ?)", (key, json.dumps(config)))
        return key

    def index(self, **kwargs: Any) -> InvokeAIIndex:
        index = InvokeAIIndex(self.db, self.models, **kwargs)
        index.refresh()
        return index


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "invokeai")


def test_generated_columns_follow_config(store: Store) -> None:
    store.add("Org/Repo::a.safetensors", "hf_repo_id", "<key>/Repo_a.safetensors", content=b"x" * 10)
    with closing(sqlite3.connect(store.db)) as connection:
        (source, size), = connection.execute("SELECT source, file_size FROM models")  # fmt: skip
    assert source == "Org/Repo::a.safetensors" and size == 10


def test_exact_source_single_file_of_a_repo(store: Store) -> None:
    content = b"umt5" * 1000
    key = store.add(
        "Wan-AI/Wan2.1-T2V-14B::text_encoder/umt5.safetensors",
        "hf_repo_id",
        "<key>/Wan2.1-T2V-14B_umt5.safetensors",
        content=content,
    )
    index = store.index()
    found = index.find("Wan-AI/Wan2.1-T2V-14B", "text_encoder/umt5.safetensors", size=len(content))
    assert found == store.models / key / "Wan2.1-T2V-14B_umt5.safetensors" and found.is_absolute()
    assert index.find("Wan-AI/Wan2.1-T2V-14B", "text_encoder/umt5.safetensors", size=len(content) + 1) is None
    assert index.find("Wan-AI/Wan2.1-T2V-14B", "other.safetensors") is None


def test_exact_source_url_resolve_blob_and_download_true(store: Store) -> None:
    content = b"lora" * 100
    store.add(
        "https://huggingface.co/DeepBeepMeep/Wan2.1/blob/main/loras/My%20Lora.safetensors",
        "url",
        "<key>/My Lora.safetensors",
        content=content,
    )
    index = store.index()
    wanted = "https://HuggingFace.co/DeepBeepMeep/Wan2.1/resolve/main/loras/My%20Lora.safetensors?download=true"
    found = index.find(None, None, url=wanted)
    assert found is not None and found.read_bytes() == content
    # Same file asked for by repo and path.
    assert index.find("DeepBeepMeep/Wan2.1", "loras/My Lora.safetensors") == found


def test_variant_and_subfolder_installs(store: Store) -> None:
    store.add(
        "black-forest-labs/FLUX.1-dev:ModelRepoVariant.FP16::text_encoder_2",
        "hf_repo_id",
        "<key>/",
        type="t5_encoder",
        format="t5_encoder",
    )
    before = store.index()  # nothing on disk yet: the folder install holds no file
    assert before.find("black-forest-labs/FLUX.1-dev", "text_encoder_2/model.safetensors") is None
    folder_key = store.add("Org/Whole", "hf_repo_id", "<key>", format="diffusers")
    (store.models / folder_key / "vae").mkdir(parents=True)
    (store.models / folder_key / "vae" / "diffusion_pytorch_model.safetensors").write_bytes(b"v" * 64)
    sub_key = store.add("Org/Repo:fp16::text_encoder", "hf_repo_id", "<key>", format="diffusers")
    (store.models / sub_key).mkdir()
    (store.models / sub_key / "model.fp16.safetensors").write_bytes(b"t" * 32)
    index = store.index()
    assert index.find("Org/Whole", "vae/diffusion_pytorch_model.safetensors", size=64) == (
        store.models / folder_key / "vae" / "diffusion_pytorch_model.safetensors"
    )
    assert index.find("org/repo", "text_encoder/model.fp16.safetensors") == (
        store.models / sub_key / "model.fp16.safetensors"
    )
    assert index.find("Org/Repo", "text_encoder/missing.safetensors") is None


def test_filename_and_size_is_a_weak_last_resort(store: Store, tmp_path: Path) -> None:
    content = b"c" * 4096
    installed = store.models / "wan" / "vae" / "Wan2_1_VAE_bf16.safetensors"  # an absolute path, inside models/
    installed.parent.mkdir(parents=True)
    store.add(str(installed), "path", str(installed), content=content, type="vae")
    index = store.index()
    assert index.find("Kijai/WanVideo_comfy", "Wan2_1_VAE_bf16.safetensors", size=len(content)) == installed
    assert index.find("Kijai/WanVideo_comfy", "Wan2_1_VAE_bf16.safetensors", size=len(content) - 1) is None
    assert index.find("Kijai/WanVideo_comfy", "Wan2_1_VAE_bf16.safetensors") is None  # no size: too weak


def test_a_row_pointing_outside_the_models_folder_is_never_followed(store: Store, tmp_path: Path) -> None:
    # Issue 15, item 11: a row of InvokeAI's database is data, not a promise. A root-only file elsewhere, or a
    # symlink inside models/ that leads out, is never linked or copied into Wan2GP's folder.
    secret = tmp_path / "root-only" / "Repo_a.safetensors"
    secret.parent.mkdir()
    secret.write_bytes(b"s" * 8)
    secret.chmod(0o600)
    store.add("Org/Repo::a.safetensors", "hf_repo_id", str(secret), content=b"s" * 8)
    (store.models / "link").mkdir(parents=True, exist_ok=True)
    (store.models / "link" / "Repo_b.safetensors").symlink_to(secret)
    store.add("Org/Repo::b.safetensors", "hf_repo_id", "link/Repo_b.safetensors")
    index = store.index()
    assert len(index.models) == 2
    assert index.find("Org/Repo", "a.safetensors", size=8) is None
    assert index.find("Org/Repo", "b.safetensors", size=8) is None


def test_external_and_in_progress_installs_are_skipped(store: Store) -> None:
    store.add("gemini-2.5", "external", "external://gemini/gemini-2.5", type="external")
    store.add("Org/Repo::a.safetensors", "hf_repo_id", "tmpinstall_abc/Repo_a.safetensors", content=b"a" * 8)
    index = store.index()
    assert index.models == [] and index.find("Org/Repo", "a.safetensors", size=8) is None


def test_missing_database_is_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="wangpd.invokeai")
    index = InvokeAIIndex(tmp_path / "nope" / "invokeai.db", tmp_path / "models")
    assert index.refresh() == 0 and index.find("Org/Repo", "a.safetensors", size=1) is None
    assert index.warning is not None and "not found" in index.warning
    assert "not found" in caplog.text
    assert InvokeAIIndex(None, None).refresh() == 0


def test_locked_database_is_tolerated(store: Store, caplog: pytest.LogCaptureFixture) -> None:
    store.add("Org/Repo::a.safetensors", "hf_repo_id", "<key>/Repo_a.safetensors", content=b"a" * 8)
    # Older InvokeAI databases are not WAL: a writer's exclusive lock then blocks readers.
    with closing(sqlite3.connect(store.db)) as connection:
        connection.execute("PRAGMA journal_mode=DELETE")
    writer = sqlite3.connect(store.db, isolation_level=None)
    writer.execute("BEGIN EXCLUSIVE")
    caplog.set_level(logging.WARNING, logger="wangpd.invokeai")
    try:
        started = time.monotonic()
        index = InvokeAIIndex(store.db, store.models, lock_retries=2, lock_wait=0.05)
        assert index.refresh() == 0
        assert time.monotonic() - started < 2
        assert index.warning is not None and "locked" in index.warning
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    assert index.refresh() == 1 and index.warning is None  # next time it reads fine


def test_read_while_invokeai_writes_in_wal_mode(store: Store) -> None:
    store.add("Org/Repo::a.safetensors", "hf_repo_id", "<key>/Repo_a.safetensors", content=b"a" * 8)
    writer = sqlite3.connect(store.db, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("DELETE FROM models")
    try:
        assert store.index().find("Org/Repo", "a.safetensors", size=8) is not None  # sees the last commit
    finally:
        writer.execute("ROLLBACK")
        writer.close()


def test_source_parsing_and_url_normalising() -> None:
    assert parse_source("Org/Repo") == ("Org/Repo", None, None)
    assert parse_source("Org/Repo::sub/file.safetensors") == ("Org/Repo", None, "sub/file.safetensors")
    assert parse_source("Org/Repo:fp16::sub") == ("Org/Repo", "fp16", "sub")
    assert parse_source("Org/Repo:ModelRepoVariant.FP16::sub") == ("Org/Repo", "fp16", "sub")
    assert parse_source("Org/Repo:vae") == ("Org/Repo", None, "vae")  # InvokeAI 4.0-4.2
    assert parse_source("/home/me/model.safetensors") is None
    assert parse_source("https://huggingface.co/Org/Repo") is None
    assert normalize_url("https://HF.co/Org/Repo/blob/main/a%20b.bin?download=true") == (
        "https://huggingface.co/Org/Repo/resolve/main/a%20b.bin"
    )
    assert normalize_url("https://Example.com/x y.bin?v=2") == "https://example.com/x%20y.bin?v=2"
