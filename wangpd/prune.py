"""What wangpd made, what no kept model needs (``wangpctl unused``), and removing exactly that (``wangpctl prune``).

Only what wangpd itself created may ever be removed: the links (or copies) it put at Wan2GP paths, the folders of
links it built, the HF-cache blobs it downloaded and their snapshot links. Each is recorded when made (the ``made``
table) with the identity of what was made, and checked again just before removal: a file the user (or Wan2GP, or
``hf download``) put at the same path later is not wangpd's. A user's own file in ``ckpts/``, an InvokeAI file, a
file in another library, a blob another tool downloaded: listed when no kept model needs them, never removed.

A blob goes only when nothing else uses it: no Wan2GP path still leads to it, no snapshot link wangpd did not make
points at it, and it has no hard link wangpd does not know of. A snapshot folder emptied that way is removed with
the refs that named its commit (``hf cache verify`` would call a ref to a missing snapshot corrupt).

Everything here touches the file system: run it in a thread.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wangpd.models import Made

__all__ = [
    "REASONS",
    "Removal",
    "Survey",
    "Unused",
    "Wants",
    "adopt",
    "made_blob",
    "made_folder",
    "made_link",
    "remove",
    "still_ours",
    "survey",
]

log = logging.getLogger(__name__)

# Why a file on disk is not needed, most telling first.
REASONS = {
    "dropped": "its models were dropped or rejected by the user",
    "gone": "its model's definition is gone from Wan2GP",
    "variant": "another variant of a kept model (not the one wgp_config.json chooses)",
    "not-kept": "only models outside the keep-set name it",
    "orphan": "no current Wan2GP definition names it (left by an older Wan2GP or model)",
    "unlinked": "a blob wangpd downloaded that no Wan2GP path leads to any more",
}


def identity(path: str | Path) -> str | None:
    """``dev:ino:size:mtime_ns`` of ``path`` itself (a symlink is not followed), None if nothing is there. The inode
    alone is not enough: a file system hands a freed inode number to the next file created (ext4 did, 20 times in
    20), so a file the user put where wangpd's copy was would look like wangpd's."""
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return f"{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"


def made_link(target: Path, mode: str, job_id: int | None) -> Made:
    """The record of a link (or copy) wangpd just put at ``target``."""
    points_to = os.readlink(target) if mode == "symlink" else None
    return Made(str(target), "link", mode, points_to, identity(target), job_id, time.time())


def made_folder(target: Path, job_id: int | None) -> Made:
    return Made(str(target), "folder", None, None, identity(target), job_id, time.time())


def made_blob(file: Path, origin: str, job_id: int | None) -> list[Made]:
    """Records for a file wangpd just downloaded: the blob (``file`` resolved) and, in the HF cache, the snapshot
    link to it (``file`` itself)."""
    now = time.time()
    blob = Path(os.path.realpath(file))
    records = [Made(str(blob), "blob", None, origin, identity(blob), job_id, now)]
    if os.path.islink(file):
        # Its folder resolved (a cache reached through a symlink), its own name not: how prune will find it.
        snapshot = os.path.join(os.path.realpath(os.path.dirname(file)), os.path.basename(file))
        records.append(Made(snapshot, "snapshot", "symlink", os.readlink(file), identity(file), job_id, now))
    return records


def adopt(jobs: Iterable[tuple[int, str, str | None, str]], known: set[str], hf_cache: Path) -> list[Made]:
    """Records for what jobs completed before records were kept: ``(job id, target, source, repo or URL)``. Only
    a symlink into the HF cache counts as wangpd's link (a copy or hard link cannot be told from the user's file);
    its blob is wangpd's when the job downloaded it."""
    cache_root = os.path.realpath(hf_cache)
    records: list[Made] = []
    for job_id, target, source, origin in jobs:
        if target in known or not os.path.islink(target):
            continue
        snapshot = os.path.join(os.path.dirname(target), os.readlink(target))
        if not _inside(os.path.realpath(target), cache_root) and source != "invokeai":
            continue
        records.append(made_link(Path(target), "symlink", job_id))
        if source == "download" and os.path.isfile(snapshot) and _inside(os.path.realpath(snapshot), cache_root):
            records += [r for r in made_blob(Path(snapshot), origin, job_id) if r.path not in known]
    return records


def still_ours(made: Made) -> bool:
    """Whether what is at ``made.path`` now is what wangpd made there."""
    if made.identity is None or identity(made.path) != made.identity:
        return False
    if made.mode == "symlink":
        try:
            return os.readlink(made.path) == made.points_to
        except OSError:
            return False
    if made.kind == "folder":
        return os.path.isdir(made.path) and not os.path.islink(made.path)
    return os.path.isfile(made.path) and not os.path.islink(made.path)


@dataclass(frozen=True)
class Wants:
    """What the catalog and the keep-set say, gathered on the loop's thread before the survey starts.

    Paths are Wan2GP-relative locals (absolute when the checkpoints root is absolute). ``named_by`` maps every
    path any definition names (chosen variant, other variants, optional files, every lookup path) to the model
    types naming it; ``needed`` are the paths kept models (and queued jobs) need; ``variants`` the other-variant
    paths of kept models; ``gone`` the remembered paths of kept models whose definition disappeared."""

    root: Path
    needed: frozenset[str]
    named_by: Mapping[str, tuple[str, ...]]
    variants: frozenset[str]
    refused: frozenset[str]
    gone: Mapping[str, tuple[str, ...]]
    orphan_roots: tuple[str, ...] = ()  # checkpoints folders scanned for files no definition names
    folders: frozenset[str] = frozenset()  # whole-folder paths: what is inside them is named too
    # Jobs still running or waiting, or whose file a kept model needs: the blobs they made are never "unlinked"
    # (a folder being fetched has blobs before its links; a link the user deleted is fetched again from its blob).
    protected_jobs: frozenset[int] = frozenset()


@dataclass
class Unused:
    """One path on disk no kept model needs."""

    path: str  # absolute
    local: str | None  # as Wan2GP names it; None for a blob in the HF cache
    kind: str  # link | copy | folder | file | blob
    reason: str  # one of REASONS
    models: list[str]
    bytes: int  # on disk, of what it leads to (counted once per inode)
    location: str  # hf-cache | invokeai | elsewhere | wan2gp
    made: bool  # wangpd made it, so prune may remove it
    note: str | None = None  # why prune leaves it, when it does
    frees: int = 0  # what pruning this alone would free
    # What removing it takes: the paths to remove, in order (the row's own path first).
    removes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "local": self.local,
            "kind": self.kind,
            "reason": self.reason,
            "models": self.models,
            "bytes": self.bytes,
            "location": self.location,
            "made_by_wangpd": self.made,
            "removable": self.made,
            "note": self.note,
            "frees": self.frees,
        }


@dataclass
class Removal:
    """What one prune removes: paths in removal order, the bytes that frees, and the records it ends."""

    paths: list[str]
    frees: int
    rows: list[Unused]


def _inside(path: str, base: str | None) -> bool:
    return base is not None and (path == base or path.startswith(base.rstrip("/") + "/"))


def _location(path: str, real: str, hf_cache: str, invokeai: str | None, libraries: Sequence[str]) -> str:
    if _inside(real, hf_cache):
        return "hf-cache"
    if _inside(real, invokeai):
        return "invokeai"
    if any(_inside(real, library) for library in libraries):
        return "library"
    return "elsewhere" if os.path.islink(path) else "wan2gp"


def _blocks(path: str) -> tuple[tuple[int, int], int, int] | None:
    """((dev, ino), bytes on disk, link count) of what ``path`` leads to."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino), st.st_blocks * 512, st.st_nlink


def _folder_size(path: str) -> int:
    seen: set[tuple[int, int]] = set()
    total = 0
    for folder, _dirs, names in os.walk(path):
        for name in names:
            found = _blocks(os.path.join(folder, name))
            if found is not None and found[0] not in seen:
                seen.add(found[0])
                total += found[1]
    return total


def _folder_of_links(path: str, hf_cache: str) -> bool:
    """A folder wangpd built holds only symlinks into the HF cache (and folders): anything else was put there."""
    for folder, _dirs, names in os.walk(path):
        for name in names:
            entry = os.path.join(folder, name)
            if not os.path.islink(entry) or not _inside(os.path.realpath(entry), hf_cache):
                return False
    return True


def _local_of(path: str, root: str) -> str:
    return os.path.relpath(path, root) if _inside(path, root) else path


def _scan_orphans(wants: Wants, root: str) -> list[str]:
    """Files in the checkpoints folders that no definition names (not the Wan2GP root itself: its venv and
    outputs are no model files)."""
    found = []
    for relative in wants.orphan_roots:
        base = os.path.join(root, relative)
        if os.path.realpath(base) == os.path.realpath(root) or not os.path.isdir(base):
            continue
        for folder, dirs, names in os.walk(base):
            local_dir = _local_of(folder, root)
            if local_dir in wants.folders or local_dir in wants.named_by:
                dirs[:] = []  # a whole-folder download: all of it is named
                continue
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            for name in names:
                local = os.path.join(local_dir, name) if local_dir != "." else name
                if name.startswith(".") or local in wants.named_by:
                    continue
                found.append(os.path.join(folder, name))
    return found


def _reason(local: str, wants: Wants) -> tuple[str, list[str]]:
    if local in wants.gone:
        return "gone", sorted(wants.gone[local])
    models = sorted(wants.named_by.get(local, ()))
    if models and all(m in wants.refused for m in models):
        return "dropped", models
    if local in wants.variants:
        return "variant", models
    if models:
        return "not-kept", models
    return "orphan", []


@dataclass
class Survey:
    """The rows of :func:`survey`, the records still true (``ours``) and those no longer true (``stale``: to
    forget), and what it learnt about which paths lead to which inode (to plan a removal)."""

    rows: list[Unused]
    stale: list[Made]
    ours: dict[str, Made]
    leads: dict[tuple[int, int], set[str]]
    cache_root: str
    # Learnt once for every removal planned from this survey (one a row, then the chosen ones), not per plan.
    _blob_of_inode: dict[tuple[int, int], str] | None = field(default=None, repr=False)
    _snapshots_of: dict[str, dict[str, list[str]]] = field(default_factory=dict, repr=False)

    def removal(self, rows: Sequence[Unused]) -> Removal:
        if self._blob_of_inode is None:
            self._blob_of_inode = {}
            for record in self.ours.values():
                info = _blocks(record.path) if record.kind == "blob" else None
                if info is not None:
                    self._blob_of_inode[info[0]] = record.path
        return plan_removal(rows, self.ours, self.leads, self.cache_root, self._blob_of_inode, self._snapshots_of)


def survey(
    wants: Wants, made: Sequence[Made], *, hf_cache: Path, invokeai: Path | None, libraries: Sequence[Path] = ()
) -> Survey:
    """Every path on disk no kept model needs. Each row says what pruning it alone would remove and free."""
    root = str(wants.root)
    cache_root = os.path.realpath(hf_cache)
    invokeai_root = os.path.realpath(invokeai) if invokeai is not None else None
    library_roots = [os.path.realpath(folder) for folder in libraries]
    ours: dict[str, Made] = {}
    stale: list[Made] = []
    for record in made:
        if still_ours(record):
            ours[record.path] = record
        else:
            stale.append(record)

    def needed(local: str) -> bool:
        if local in wants.needed:
            return True
        return any(_inside(local, folder) for folder in wants.folders if folder in wants.needed)

    candidates: dict[str, str] = {}  # absolute path -> local
    for local in wants.named_by:
        path = os.path.join(root, local)
        if os.path.lexists(path):
            candidates[path] = local
    for record in ours.values():
        if record.kind in ("link", "folder"):
            candidates.setdefault(record.path, _local_of(record.path, root))
    for path in _scan_orphans(wants, root):
        candidates.setdefault(path, _local_of(path, root))

    # Every Wan2GP path that leads somewhere, to tell which blobs are still used.
    leads: dict[tuple[int, int], set[str]] = defaultdict(set)
    for local in wants.needed | set(candidates.values()):
        path = os.path.join(root, local)
        for found in _walk_files(path):
            info = _blocks(found)
            if info is not None:
                leads[info[0]].add(found)

    rows: list[Unused] = []
    for path, local in sorted(candidates.items()):
        if needed(local) or not os.path.exists(path):
            continue  # needed, or a dangling link: holds nothing
        reason, models = _reason(local, wants)
        record = ours.get(path)
        real = os.path.realpath(path)
        location = _location(path, real, cache_root, invokeai_root, library_roots)
        if os.path.isdir(path):
            kind, size = "folder", _folder_size(path)
        else:
            kind = "link" if os.path.islink(path) else "file"
            info = _blocks(path)
            size = info[1] if info is not None else 0
        note = None
        if record is None:
            note = {
                "invokeai": "InvokeAI's file: wangpd did not make it",
                "library": "a file in one of your libraries: wangpd did not make it",
                "hf-cache": "a link wangpd did not make",
                "elsewhere": "a link wangpd did not make",
            }.get(location, "not made by wangpd: remove it yourself if you are sure")
        elif record.kind == "folder" and not _folder_of_links(path, cache_root):
            note, record = "holds files wangpd did not make", None
        elif record.mode == "copy":
            kind = "copy"
        rows.append(Unused(path, local, kind, reason, models, size, location, record is not None, note))

    # Blobs wangpd downloaded that no Wan2GP path leads to.
    for record in ours.values():
        if record.kind != "blob":
            continue
        info = _blocks(record.path)
        if info is None or leads.get(info[0]) or record.job_id in wants.protected_jobs:
            continue
        rows.append(Unused(record.path, None, "blob", "unlinked", [], info[1], "hf-cache", True))

    found = Survey(rows, stale, ours, dict(leads), cache_root)
    for row in rows:
        if row.made:
            one = found.removal([row])
            row.removes, row.frees = one.paths, one.frees
            if row.kind == "blob" and row.path not in one.paths:
                row.made, row.note = False, "another snapshot, Wan2GP path or hard link uses it"
    return found


def _walk_files(path: str) -> Iterable[str]:
    if os.path.isdir(path):
        for folder, _dirs, names in os.walk(path):
            for name in names:
                yield os.path.join(folder, name)
    elif os.path.exists(path):
        yield path


def _snapshot_links(repo_dir: str) -> dict[str, list[str]]:
    """realpath of blob -> snapshot links pointing at it, in one repo's cache folder."""
    found: dict[str, list[str]] = defaultdict(list)
    for folder, _dirs, names in os.walk(os.path.join(repo_dir, "snapshots")):
        for name in names:
            entry = os.path.join(folder, name)
            found[os.path.realpath(entry)].append(entry)
    return found


def plan_removal(
    rows: Sequence[Unused],
    ours: Mapping[str, Made],
    leads: Mapping[tuple[int, int], set[str]],
    cache_root: str,
    blob_of_inode: Mapping[tuple[int, int], str],
    snapshots_of: dict[str, dict[str, list[str]]],
) -> Removal:
    """What removing ``rows`` (all wangpd's) takes: their links and folders, then each blob they lead to (or that a
    row names) once nothing else uses it, with its snapshot links; and the bytes freed (an inode counts when every
    link to it goes). A blob another snapshot, another Wan2GP path or an unknown hard link uses stays, even when
    a row names it. ``blob_of_inode``: wangpd's blobs by inode; ``snapshots_of``: a cache of each repo's snapshot
    links, filled as needed."""
    paths = [row.path for row in rows if row.made and row.kind != "blob"]
    going = set(paths)
    going_files = {f for p in paths for f in _walk_files(p)}
    candidates = [row.path for row in rows if row.made and row.kind == "blob"]
    for file in sorted(going_files):
        info = _blocks(file)
        if info is not None and info[0] in blob_of_inode:  # a symlink to it, or a hard link (same inode)
            candidates.append(blob_of_inode[info[0]])
    blobs: list[str] = []
    for blob in dict.fromkeys(candidates):
        record = ours.get(blob)
        info = _blocks(blob)
        if record is None or record.kind != "blob" or info is None:
            continue
        users = leads.get(info[0], set())
        if users - going_files:
            continue  # another Wan2GP path still leads to it
        links: list[str] = []
        if _inside(blob, cache_root):
            repo_dir = os.path.dirname(os.path.dirname(blob))
            if repo_dir not in snapshots_of:
                snapshots_of[repo_dir] = _snapshot_links(repo_dir)
            links = snapshots_of[repo_dir].get(blob, [])
            if any(link not in ours or ours[link].kind != "snapshot" for link in links):
                continue  # another tool's snapshot (hf download of another revision) uses it
        hard = {p for p in users if not os.path.islink(p)} | {blob} | {p for p in links if not os.path.islink(p)}
        if info[2] > len(hard):
            continue  # a hard link wangpd does not know of
        blobs.append(blob)
        paths += [link for link in links if link not in going]
    paths += blobs
    freed: dict[tuple[int, int], list[int]] = {}
    for path in paths:
        for file in _walk_files(path) if not os.path.islink(path) else [path]:
            try:
                st = os.lstat(file)
            except OSError:
                continue
            key = (st.st_dev, st.st_ino)
            entry = freed.setdefault(key, [st.st_nlink, st.st_blocks * 512, 0])
            entry[2] += 1
    frees = sum(blocks for nlink, blocks, count in freed.values() if count >= nlink)
    return Removal(list(dict.fromkeys(paths)), frees, list(rows))


def remove(removal: Removal, ours: Mapping[str, Made], cache_root: str) -> tuple[list[str], list[str]]:
    """Remove ``removal.paths``; return (removed, left alone with the reason). Every path is checked first: if any
    is no longer what wangpd made (replaced, moved, changed since the survey), nothing is removed, since the plan
    (which blob nothing else uses) was made for what was there. Emptied snapshot folders go with the refs naming
    their commit; nothing else is touched."""
    changed = [path for path in removal.paths if path not in ours or not still_ours(ours[path])]
    if changed:
        return [], [f"{path}: no longer what wangpd made; nothing removed (run prune again)" for path in changed]
    removed: list[str] = []
    skipped: list[str] = []
    emptied: set[tuple[str, str]] = set()
    for path in removal.paths:
        record = ours[path]
        try:
            if record.kind == "folder":
                _remove_folder_of_links(path, cache_root)
            else:
                os.unlink(path)
        except OSError as exc:
            skipped.append(f"{path}: {exc.strerror or exc}")
            continue
        removed.append(path)
        if record.kind == "snapshot":
            repo_dir = _repo_dir_of(path, cache_root)
            if repo_dir is not None:
                emptied.add((os.path.dirname(path), repo_dir))
    for folder, repo_dir in sorted(emptied, key=lambda pair: len(pair[0]), reverse=True):
        _tidy_snapshot(folder, repo_dir)
    return removed, skipped


def _repo_dir_of(snapshot: str, cache_root: str) -> str | None:
    """``<cache>/models--Org--Repo`` for a path under its ``snapshots/``."""
    relative = os.path.relpath(snapshot, cache_root).split(os.sep)
    if len(relative) < 4 or relative[1] != "snapshots" or relative[0] in ("..", "."):
        return None
    return os.path.join(cache_root, relative[0])


def _remove_folder_of_links(path: str, cache_root: str) -> None:
    if not _folder_of_links(path, cache_root):
        raise OSError(0, "it holds files wangpd did not make")
    for folder, dirs, names in os.walk(path, topdown=False):
        for name in names:
            os.unlink(os.path.join(folder, name))
        for name in dirs:
            os.rmdir(os.path.join(folder, name))
    os.rmdir(path)


def _tidy_snapshot(folder: str, repo_dir: str) -> None:
    """Remove empty folders from ``folder`` up to its commit's folder in ``<repo>/snapshots/``; a commit folder
    that goes takes the refs naming it (a ref to a missing snapshot is a corrupt cache to huggingface_hub). The
    repo's ``refs``/``snapshots``/``blobs`` folders go only with the repo folder itself, when all are empty: a repo
    folder without ``snapshots/`` is corrupt too."""
    snapshots = os.path.join(repo_dir, "snapshots")
    relative = os.path.relpath(folder, snapshots).split(os.sep)
    if relative[0] in ("..", "."):
        return
    commit_dir = os.path.join(snapshots, relative[0])
    current = folder
    while True:
        with contextlib.suppress(OSError):
            os.rmdir(current)  # only when empty
        if os.path.isdir(current):
            return
        if current == commit_dir:
            break
        current = os.path.dirname(current)
    commit = relative[0]
    for refs_folder, _dirs, names in os.walk(os.path.join(repo_dir, "refs")):
        for name in names:
            ref = os.path.join(refs_folder, name)
            try:
                with open(ref, encoding="utf-8") as handle:
                    named = handle.read().strip()
            except (OSError, UnicodeDecodeError):
                continue
            if named == commit:
                with contextlib.suppress(OSError):
                    os.unlink(ref)
    parts = [os.path.join(repo_dir, sub) for sub in ("refs", "snapshots", "blobs")]
    if all(not os.path.isdir(p) or _empty_tree(p) for p in parts) and set(os.listdir(repo_dir)) <= {
        "refs",
        "snapshots",
        "blobs",
    }:
        for part in parts:
            for sub, dirs, _names in os.walk(part, topdown=False):
                for name in dirs:
                    with contextlib.suppress(OSError):
                        os.rmdir(os.path.join(sub, name))
            with contextlib.suppress(OSError):
                os.rmdir(part)
        with contextlib.suppress(OSError):
            os.rmdir(repo_dir)


def _empty_tree(folder: str) -> bool:
    """No file anywhere below ``folder`` (empty sub-folders allowed)."""
    return all(not names for _sub, _dirs, names in os.walk(folder))
