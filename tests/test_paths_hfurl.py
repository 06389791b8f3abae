"""The shared rules in wangpd/paths.py and wangpd/hfurl.py: one answer for every caller."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from wangpd import hfurl
from wangpd.hfurl import HubFile
from wangpd.paths import (
    disk_free,
    is_own_temp,
    lock_exclusive,
    nearest_existing,
    safe_relative,
    safe_repo_path,
    temp_name,
)

WANT = HubFile("Org/Repo", "main", "dir/file name.safetensors")


@pytest.mark.parametrize(
    ("url", "want"),
    [
        ("https://huggingface.co/Org/Repo/resolve/main/dir/file%20name.safetensors", WANT),
        ("https://huggingface.co/Org/Repo/blob/main/dir/file%20name.safetensors?download=true", WANT),
        ("https://hf.co/Org/Repo/resolve/main/dir/file%20name.safetensors", WANT),
        ("https://WWW.HuggingFace.co/Org/Repo/resolve/main/dir/file%20name.safetensors#x", WANT),
        ("https://hf.co/Org/Repo/resolve/v1.0/a.bin", HubFile("Org/Repo", "v1.0", "a.bin")),
        ("https://huggingface.co/datasets/Org/Repo/resolve/main/a.bin", None),
        ("https://huggingface.co/spaces/Org/Repo/resolve/main/a.bin", None),
        ("https://example.com/Org/Repo/resolve/main/a.bin", None),
        ("https://huggingface.co/Org/Repo", None),
        ("https://huggingface.co/Org/Repo/tree/main/x", None),
        ("ftp://huggingface.co/Org/Repo/resolve/main/a.bin", None),
        ("not a url at all", None),
    ],
)
def test_parse(url: str, want: HubFile | None) -> None:
    assert hfurl.parse(url) == want


def test_parse_mirror_host_only_when_named() -> None:
    url = "http://127.0.0.1:9/Org/Repo/resolve/main/a.bin"
    assert hfurl.parse(url) is None
    assert hfurl.parse(url, ("127.0.0.1",)) == HubFile("Org/Repo", "main", "a.bin")


@pytest.mark.parametrize(
    "url",
    [
        "https://huggingface.co/Org/Repo/resolve/main/../x",
        "https://hf.co/Org/Repo/resolve/main/a/%2E%2E/x",
        "https://huggingface.co/Org/Repo/resolve/main/a//b",
        "https://huggingface.co/Org/Repo/resolve/main/./a",
    ],
)
def test_parse_refuses_a_hub_url_that_leaves_its_repo(url: str) -> None:
    # Refused with the reason, never mistaken for a plain URL that some other rule might then accept.
    with pytest.raises(ValueError, match="escapes"):
        hfurl.parse(url)


def test_normalize_and_resolve_url() -> None:
    assert hfurl.normalize("https://HF.co/Org/Repo/blob/main/a%20b.bin?download=true") == (
        "https://huggingface.co/Org/Repo/resolve/main/a%20b.bin"
    )
    assert hfurl.normalize("https://Example.com/x y.bin?v=2") == "https://example.com/x%20y.bin?v=2"
    assert (
        hfurl.resolve_url("Org/Repo", "main", "a b/c.bin") == "https://huggingface.co/Org/Repo/resolve/main/a%20b/c.bin"
    )
    assert hfurl.parse(hfurl.resolve_url("Org/Repo", "main", "a b/c.bin")) == HubFile("Org/Repo", "main", "a b/c.bin")


def test_same_origin_and_plain_url_refusal() -> None:
    assert hfurl.same_origin("https://huggingface.co/a", "https://HUGGINGFACE.co:443/b")
    assert not hfurl.same_origin("https://huggingface.co/a", "http://huggingface.co/a")
    assert hfurl.plain_url_refusal("https://files.example.com/x.bin", ("files.example.com",)) is None
    assert "only https" in (hfurl.plain_url_refusal("http://files.example.com/x", ("files.example.com",)) or "")
    assert hfurl.plain_url_refusal("http://127.0.0.1/x", ("127.0.0.1",), allow_http=True) is None
    assert "allowed_hosts" in (hfurl.plain_url_refusal("https://evil.example/x", ("files.example.com",)) or "")


@pytest.mark.parametrize(
    ("path", "relative", "repo"),
    [
        ("a/b.bin", True, True),
        ("a/./b", True, False),
        ("a//b", True, False),
        ("../x", False, False),
        ("a/../x", False, False),
        ("/etc/x", False, False),
        ("\\\\server\\x", False, False),
        ("C:/x", False, True),  # a Hub repo may hold a folder named 'C:'; Wan2GP's folders may not
        ("a\0b", False, False),
        ("", False, False),
    ],
)
def test_safe_paths(path: str, relative: bool, repo: bool) -> None:
    assert safe_relative(path) is relative
    assert safe_repo_path(path) is repo


def test_own_temp_names(tmp_path: Path) -> None:
    assert temp_name(tmp_path / "x.safetensors") == tmp_path / ".x.safetensors.wangpd-tmp"
    assert is_own_temp(temp_name(tmp_path / "x.safetensors"))
    assert is_own_temp(tmp_path / "blobs" / ("a" * 64 + ".incomplete"))
    assert not is_own_temp(tmp_path / "x.safetensors")


def test_nearest_existing_and_disk_free(tmp_path: Path) -> None:
    assert nearest_existing(tmp_path / "not" / "yet") == tmp_path
    free = disk_free(tmp_path / "not" / "yet")
    assert free is not None and free > 0


def test_lock_exclusive(tmp_path: Path) -> None:
    lock = tmp_path / "x.lock"
    first = lock_exclusive(lock)
    assert first is not None
    assert lock_exclusive(lock) is None  # a second open file description cannot take it
    os.close(first)
    again = lock_exclusive(lock)
    assert again is not None
    os.close(again)
    with pytest.raises(OSError):
        lock_exclusive(tmp_path / "missing" / "x.lock")
