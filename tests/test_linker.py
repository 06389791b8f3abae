"""Linking snapshot files into the Wan2GP folders, on the real file system."""

from __future__ import annotations

import errno
import logging
import os
import stat
from pathlib import Path

import pytest

from wangpd import linker
from wangpd.errors import OutsideRoots, TargetExists
from wangpd.linker import link_into_place
from wangpd.paths import is_own_temp


@pytest.fixture
def layout(tmp_path: Path) -> tuple[Path, Path]:
    """A snapshot file (relative symlink to its blob, like the HF cache) and a Wan2GP root."""
    repo = tmp_path / "hub" / "models--org--repo"
    blob = repo / "blobs" / ("a" * 64)
    blob.parent.mkdir(parents=True)
    blob.write_bytes(b"weights" * 1000)
    snapshot = repo / "snapshots" / ("c" * 40) / "model.safetensors"
    snapshot.parent.mkdir(parents=True)
    snapshot.symlink_to(os.path.relpath(blob, snapshot.parent))
    wan2gp = tmp_path / "Wan2GP"
    (wan2gp / "ckpts").mkdir(parents=True)
    return snapshot, wan2gp


def test_symlink_into_place_and_again(layout: tuple[Path, Path]) -> None:
    snapshot, wan2gp = layout
    target = wan2gp / "ckpts" / "umt5" / "model.safetensors"  # parent folder created on demand
    assert link_into_place(snapshot, target, mode="symlink", allowed_roots=[wan2gp]) == "symlink"
    assert os.readlink(target) == str(snapshot) and target.read_bytes() == snapshot.read_bytes()
    # Idempotent: our own link is recognised and left as it is.
    assert link_into_place(snapshot, target, mode="symlink", allowed_roots=[wan2gp]) == "symlink"


def test_hardlink_and_copy(layout: tuple[Path, Path]) -> None:
    snapshot, wan2gp = layout
    hard = wan2gp / "ckpts" / "hard.safetensors"
    assert link_into_place(snapshot, hard, mode="hardlink", allowed_roots=[wan2gp]) == "hardlink"
    assert not hard.is_symlink() and hard.stat().st_ino == snapshot.resolve().stat().st_ino
    assert link_into_place(snapshot, hard, mode="hardlink", allowed_roots=[wan2gp]) == "hardlink"

    copy = wan2gp / "ckpts" / "copy.safetensors"
    assert link_into_place(snapshot, copy, mode="copy", allowed_roots=[wan2gp]) == "copy"
    assert copy.read_bytes() == snapshot.read_bytes() and copy.stat().st_ino != snapshot.resolve().stat().st_ino
    assert not [p for p in copy.parent.iterdir() if is_own_temp(p)]


def test_a_users_file_is_left_alone(layout: tuple[Path, Path]) -> None:
    snapshot, wan2gp = layout
    target = wan2gp / "ckpts" / "model.safetensors"
    target.write_bytes(b"the user's own fine-tune")
    for mode in ("symlink", "hardlink", "copy"):
        with pytest.raises(TargetExists, match="left alone"):
            link_into_place(snapshot, target, mode=mode, allowed_roots=[wan2gp])  # type: ignore[arg-type]
    assert target.read_bytes() == b"the user's own fine-tune" and not target.is_symlink()

    # A user's symlink to their own copy elsewhere is theirs too; a folder as well.
    elsewhere = wan2gp.parent / "mine.safetensors"
    elsewhere.write_bytes(b"mine")
    link = wan2gp / "ckpts" / "linked.safetensors"
    link.symlink_to(elsewhere)
    with pytest.raises(TargetExists):
        link_into_place(snapshot, link, mode="symlink", allowed_roots=[wan2gp])
    assert os.readlink(link) == str(elsewhere)
    (wan2gp / "ckpts" / "folder").mkdir()
    with pytest.raises(TargetExists, match="folder"):
        link_into_place(snapshot, wan2gp / "ckpts" / "folder", mode="symlink", allowed_roots=[wan2gp])


def test_a_dangling_link_is_replaced(layout: tuple[Path, Path]) -> None:
    snapshot, wan2gp = layout
    target = wan2gp / "ckpts" / "model.safetensors"
    target.symlink_to(wan2gp / "gone" / "old.safetensors")
    assert link_into_place(snapshot, target, mode="symlink", allowed_roots=[wan2gp]) == "symlink"
    assert target.read_bytes() == snapshot.read_bytes()


def test_targets_outside_the_roots_are_refused(layout: tuple[Path, Path], tmp_path: Path) -> None:
    snapshot, wan2gp = layout
    with pytest.raises(OutsideRoots):
        link_into_place(snapshot, wan2gp / "ckpts" / ".." / ".." / "evil.safetensors", allowed_roots=[wan2gp])
    with pytest.raises(OutsideRoots):
        link_into_place(snapshot, tmp_path / "elsewhere" / "x.safetensors", allowed_roots=[wan2gp])
    with pytest.raises(OutsideRoots):
        link_into_place(snapshot, wan2gp / "x.safetensors", allowed_roots=[])
    # A folder inside the root that is a symlink to somewhere outside does not make "outside" inside.
    outside = tmp_path / "outside"
    outside.mkdir()
    (wan2gp / "loras").symlink_to(outside)
    with pytest.raises(OutsideRoots):
        link_into_place(snapshot, wan2gp / "loras" / "x.safetensors", allowed_roots=[wan2gp])
    assert not list(outside.iterdir()) and not (tmp_path / "evil.safetensors").exists()
    # The root itself is not a file name to write.
    with pytest.raises(OutsideRoots):
        link_into_place(snapshot, wan2gp, allowed_roots=[wan2gp])


def test_roots_given_through_symlinks_still_work(layout: tuple[Path, Path], tmp_path: Path) -> None:
    snapshot, wan2gp = layout
    alias = tmp_path / "alias"
    alias.symlink_to(wan2gp)
    assert link_into_place(snapshot, alias / "ckpts" / "m.safetensors", allowed_roots=[alias]) == "symlink"
    assert (wan2gp / "ckpts" / "m.safetensors").is_symlink()


def test_falls_back_when_links_cannot_be_made(
    layout: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    snapshot, wan2gp = layout

    # The one native seam: what exFAT answers to symlink(2) and link(2).
    def no_symlinks(*_args: object, **_kwargs: object) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")

    def no_hardlinks(*_args: object, **_kwargs: object) -> None:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(linker.os, "symlink", no_symlinks)
    linker._fallbacks_logged.clear()
    caplog.set_level(logging.WARNING, logger="wangpd.linker")
    assert link_into_place(snapshot, wan2gp / "ckpts" / "a.safetensors", allowed_roots=[wan2gp]) == "hardlink"
    assert link_into_place(snapshot, wan2gp / "ckpts" / "b.safetensors", allowed_roots=[wan2gp]) == "hardlink"
    assert len([r for r in caplog.records if "symlink" in r.getMessage()]) == 1  # said once

    monkeypatch.setattr(linker.os, "link", no_hardlinks)
    target = wan2gp / "ckpts" / "c.safetensors"
    assert link_into_place(snapshot, target, allowed_roots=[wan2gp]) == "copy"
    assert target.read_bytes() == snapshot.read_bytes()


def test_real_errors_are_not_swallowed(layout: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    snapshot, wan2gp = layout

    def disk_full(*_args: object, **_kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(linker.os, "symlink", disk_full)
    with pytest.raises(OSError, match="No space"):
        link_into_place(snapshot, wan2gp / "ckpts" / "a.safetensors", allowed_roots=[wan2gp])
    with pytest.raises(FileNotFoundError):
        link_into_place(wan2gp / "missing", wan2gp / "ckpts" / "b.safetensors", allowed_roots=[wan2gp])


def test_a_copy_never_widens_permissions_and_survives_its_own_stale_temp(layout: tuple[Path, Path]) -> None:
    # Issue 15, items 11 and 22: a 0600 source stays 0600 in ckpts/; a temp file left by a kill mid-copy is wangpd's
    # own and is replaced (the job used to fail "appeared while linking" on every retry).
    snapshot, wan2gp = layout
    snapshot.resolve().chmod(0o600)
    target = wan2gp / "ckpts" / "private.safetensors"
    stale = target.with_name(f".{target.name}.wangpd-tmp")
    stale.write_bytes(b"half a copy")
    assert link_into_place(snapshot, target, mode="copy", allowed_roots=[wan2gp]) == "copy"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600 and target.read_bytes() == snapshot.read_bytes()
    assert not stale.exists()
