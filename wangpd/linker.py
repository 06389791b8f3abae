"""Put a file where Wan2GP looks: a symlink (or hard link, or copy) to the snapshot file in the HF cache.

Rules, from a model manager that once lost users' checkpoints:

- A real file (or a directory, or a symlink to something else) that is already at the target is never replaced,
  moved or deleted: :class:`TargetExists` says it was left alone. Only a *dangling* symlink may be replaced.
- A target outside the configured roots is refused, after resolving ``..`` and symlinked parent folders.
- Where a link cannot be made (no symlinks on exFAT/FAT32, no hard links across devices) the next mode is used,
  and the fallback is logged once per folder and mode.
- A copy is written under a temporary name (``.<name>.wangpd-tmp``) and renamed, so Wan2GP never sees a
  partial file under the final name.

Everything here blocks (a copy can take minutes): call it from a thread (``asyncio.to_thread``).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from wangpd.errors import OutsideRoots, TargetExists
from wangpd.paths import temp_name

__all__ = ["LINK_MODES", "link_into_place"]

log = logging.getLogger(__name__)

LinkMode = Literal["symlink", "hardlink", "copy"]
LINK_MODES: tuple[LinkMode, ...] = ("symlink", "hardlink", "copy")

# "This file system / this pair of paths cannot do that kind of link" (as opposed to a real failure).
_CANNOT_LINK = {errno.EPERM, errno.EXDEV, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS, errno.EMLINK}
_fallbacks_logged: set[tuple[str, str]] = set()


def _inside(path: Path, roots: Sequence[Path]) -> bool:
    return any(path == root or path.is_relative_to(root) for root in roots)


def _check_target(target: Path, allowed_roots: Sequence[Path]) -> Path:
    """The target with its parent fully resolved; raises OutsideRoots."""
    target = Path(os.path.abspath(target))
    if target.name in ("", ".", ".."):
        raise OutsideRoots(f"{target}: not a file name")
    roots = [Path(os.path.realpath(root)) for root in allowed_roots]
    # realpath of the parent follows symlinked folders; the name itself must not be followed (it may be a link).
    resolved = Path(os.path.realpath(target.parent)) / target.name
    if not roots or not _inside(resolved.parent, roots) or resolved in roots:
        shown = ", ".join(str(root) for root in roots) or "(none configured)"
        raise OutsideRoots(f"{target}: outside the Wan2GP folders ({shown}); refusing to write there")
    return resolved


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _existing(target: Path, snapshot_file: Path) -> str | None:
    """How an existing target relates to the snapshot: a mode if it is already ours, None if nothing is there.

    Raises TargetExists for anything else.
    """
    try:
        info = target.lstat()
    except FileNotFoundError:
        return None
    if target.is_symlink():
        if not target.exists():
            return None  # a dangling link holds no data: safe to replace
        if _same_file(target, snapshot_file):
            return "symlink"
        raise TargetExists(
            f"{target}: a symlink to {os.readlink(target)} is already there; left alone (remove it to let wangpd "
            "link the downloaded file)"
        )
    if _same_file(target, snapshot_file):
        return "hardlink"
    kind = "a folder" if target.is_dir() else f"a file of {info.st_size} bytes"
    raise TargetExists(f"{target}: {kind} is already there and is not wangpd's; left alone")


def _note_fallback(folder: Path, wanted: str, used: str, exc: OSError) -> None:
    key = (str(folder), f"{wanted}->{used}")
    if key in _fallbacks_logged:
        return
    _fallbacks_logged.add(key)
    log.warning("%s: cannot %s here (%s); using %s instead", folder, wanted, exc.strerror or exc, used)


def _copy(source: Path, target: Path) -> None:
    temp = temp_name(target)
    # Ours, left by a kill mid-copy (the job then failed "appeared while linking" on every retry).
    with contextlib.suppress(FileNotFoundError):
        temp.unlink()
    try:
        with open(source, "rb") as src, open(temp, "xb") as dst:
            # Never wider than the source: a 0600 file stays 0600 (the umask may narrow it further).
            os.fchmod(
                dst.fileno(),
                stat.S_IMODE(os.fstat(dst.fileno()).st_mode) & stat.S_IMODE(os.fstat(src.fileno()).st_mode),
            )
            shutil.copyfileobj(src, dst, 8 * 1024 * 1024)
            dst.flush()
            os.fsync(dst.fileno())
        if os.path.lexists(target):  # appeared while we copied: it is someone else's now
            raise TargetExists(f"{target}: appeared while copying; left alone")
        os.rename(temp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()


def link_into_place(
    snapshot_file: Path,
    target: Path,
    *,
    mode: LinkMode = "symlink",
    allowed_roots: Sequence[Path],
) -> str:
    """Make ``target`` show the content of ``snapshot_file``; return the mode actually used.

    ``mode`` is the preferred mode; the result is ``"symlink"``, ``"hardlink"`` or ``"copy"`` (the fallback that
    worked, or how an existing link of ours was made). A symlink points at the absolute snapshot path (so
    ``ls -l`` shows repo and file name); a hard link and a copy take the blob's bytes.

    Raises:
        OutsideRoots: ``target`` (after resolving ``..`` and symlinked folders) is not under ``allowed_roots``.
        TargetExists: something else is already at ``target``; nothing was changed.
        FileNotFoundError: ``snapshot_file`` does not exist.
        OSError: a failure other than "links are not possible here" (disk full, permission denied...).
    """
    if mode not in LINK_MODES:
        raise ValueError(f"mode must be one of {', '.join(LINK_MODES)}, got {mode!r}")
    resolved = _check_target(target, allowed_roots)
    source = Path(os.path.abspath(snapshot_file))
    blob = Path(os.path.realpath(source))
    if not blob.is_file():
        raise FileNotFoundError(errno.ENOENT, "snapshot file missing", str(snapshot_file))

    already = _existing(resolved, source)
    if already is not None:
        return already
    if os.path.islink(resolved):
        resolved.unlink()  # dangling, see _existing
    resolved.parent.mkdir(parents=True, exist_ok=True)
    # mkdir may have created folders: check again that nothing (e.g. a racing symlink) led us outside.
    resolved = _check_target(resolved, allowed_roots)

    order = list(LINK_MODES[LINK_MODES.index(mode) :])
    for index, attempt in enumerate(order):
        try:
            if attempt == "symlink":
                os.symlink(source, resolved)
            elif attempt == "hardlink":
                os.link(blob, resolved)
            else:
                _copy(blob, resolved)
        except FileExistsError:
            raise TargetExists(f"{resolved}: appeared while linking; left alone") from None
        except OSError as exc:
            if exc.errno in _CANNOT_LINK and index + 1 < len(order):
                _note_fallback(resolved.parent, attempt, order[index + 1], exc)
                continue
            raise
        return attempt
    raise AssertionError("unreachable: copy either succeeds or raises")  # pragma: no cover
