"""What the present model files cost on disk (``wangpctl du``): per model or family, unique and shared bytes.

Sizes are real blocks (``st_blocks``), counted once per inode: a HF-cache blob linked from three Wan2GP paths is
one file, and so is a hardlink. A file is *unique* to a model (or family) when no other needs it; otherwise it is
*shared*. Where it lives says what removing the model could free: a blob in the HF cache, an InvokeAI file, a file
elsewhere behind a link, or a real file at the Wan2GP path (the user's own or a copy). Blocking (it stats every
file): run it in a thread.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wangpd.planner import Plan

__all__ = ["LOCATIONS", "measure"]

# Where a present file's bytes are: the HF cache, InvokeAI's models folder, one of the other libraries (config
# libraries), elsewhere behind a symlink, or a real file at the Wan2GP path itself.
LOCATIONS = ("hf-cache", "invokeai", "library", "elsewhere", "wan2gp")


@dataclass(frozen=True)
class _File:
    key: tuple[int, int]  # (st_dev, st_ino): one inode, however many paths reach it
    blocks: int  # bytes on disk
    location: str


def _inside(path: str, base: str | None) -> bool:
    """``path`` is ``base`` or below it (both real paths)."""
    return base is not None and (path == base or path.startswith(base.rstrip("/") + "/"))


def _files_at(path: Path, hf_cache: str, invokeai: str | None, libraries: Sequence[str] = ()) -> list[_File]:
    """Every regular file at ``path`` (a whole-folder entry is walked), with its inode and location."""
    if path.is_dir():
        found = [Path(folder) / name for folder, _dirs, names in os.walk(path) for name in names]
    else:
        found = [path]
    files = []
    for one in found:
        try:
            st = one.stat()
        except OSError:
            continue  # gone since the plan, or a dangling link: costs nothing
        real = os.path.realpath(one)
        linked = one.is_symlink()  # a ckpts/ that is itself a link to another disk is still the Wan2GP path
        if _inside(real, hf_cache):
            location = "hf-cache"
        elif _inside(real, invokeai):
            location = "invokeai"
        elif any(_inside(real, library) for library in libraries):
            location = "library"
        elif linked:
            location = "elsewhere"
        else:
            location = "wan2gp"
        files.append(_File((st.st_dev, st.st_ino), st.st_blocks * 512, location))
    return files


def _mount_point(path: str) -> str:
    """The mount point holding ``path``."""
    current = os.path.realpath(path)
    while not os.path.ismount(current):
        current = os.path.dirname(current)
    return current


def measure(
    plan: Plan,
    wan2gp_dir: Path,
    *,
    hf_cache: Path,
    invokeai: Path | None,
    libraries: Sequence[Path] = (),
    families: dict[str, str],
    selected: Iterable[str] | None = None,
    by: str = "model",
) -> dict[str, Any]:
    """Rows per model (or family, ``by="family"``) over the present files of ``plan``; ``selected`` limits the rows,
    not what "shared" is judged against (a file another model needs is shared even if that model is not shown)."""
    owners: dict[tuple[int, int], set[str]] = defaultdict(set)  # inode -> model types needing it
    info: dict[tuple[int, int], _File] = {}
    example: dict[int, str] = {}  # device -> one path on it, to name its mount point
    per_model: dict[str, set[tuple[int, int]]] = defaultdict(set)
    cache_root = os.path.realpath(hf_cache)  # once, not per file: realpath is most of the cost
    invokeai_root = os.path.realpath(invokeai) if invokeai is not None else None
    library_roots = [os.path.realpath(folder) for folder in libraries]
    for planned in plan.files:
        if planned.status != "present" or planned.present_at is None:
            continue
        path = Path(planned.present_at)
        path = path if path.is_absolute() else wan2gp_dir / path
        for one in _files_at(path, cache_root, invokeai_root, library_roots):
            info.setdefault(one.key, one)
            example.setdefault(one.key[0], str(path))
            for model_type in planned.wanted_by:
                owners[one.key].add(model_type)
                per_model[model_type].add(one.key)

    def group_of(model_type: str) -> str:
        return families.get(model_type, "unknown") if by == "family" else model_type

    groups: dict[str, set[tuple[int, int]]] = defaultdict(set)
    shown = set(selected) if selected is not None else None
    for model_type, keys in per_model.items():
        if shown is None or model_type in shown:
            groups[group_of(model_type)] |= keys
    rows = []
    for name in sorted(groups):
        keys = groups[name]
        total = sum(info[k].blocks for k in keys)
        unique = sum(info[k].blocks for k in keys if {group_of(m) for m in owners[k]} == {name})
        by_location = dict.fromkeys(LOCATIONS, 0)
        for key in keys:
            by_location[info[key].location] += info[key].blocks
        rows.append(
            {
                "name": name,
                "files": len(keys),
                "bytes": total,
                "unique_bytes": unique,
                "shared_bytes": total - unique,
                "by_location": by_location,
            }
        )
    shown_keys = set().union(*groups.values()) if groups else set()
    per_device: dict[int, int] = defaultdict(int)
    for key in shown_keys:
        per_device[key[0]] += info[key].blocks
    filesystems = [
        {"mount_point": _mount_point(example[device]), "bytes": size} for device, size in sorted(per_device.items())
    ]
    return {
        "by": by,
        "rows": rows,
        "total_bytes": sum(info[k].blocks for k in shown_keys),
        "filesystems": filesystems,
    }
