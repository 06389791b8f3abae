"""The traces Wan2GP leaves of which models this user uses, read from disk; stdlib only.

Owns reading those traces, from strongest to weakest: ``transformer_types`` (the user's own list), ``queue.zip``
(tasks waiting to run), the model type Wan2GP embeds in every output it generates, and the weak UI hints
(``last_model_*`` keys, ``settings/<type>_settings.json``). It decides nothing: the keep-set weighs the signals.
Blocking I/O (the daemon calls it in a thread); nothing here raises on a bad file: problems come back as strings,
outputs whose metadata cannot be read are counted and skipped.

Output scanning is incremental. The caller keeps ``ScanResult.state`` (a small JSON-serialisable dict) between runs;
a later scan lists only folders whose mtime says they gained entries and reads only files changed since the stored
mark, so 100,000 outputs are read once. Each format reader reads headers and seeks over media data: a 2 GB video
costs a few small reads.
"""

from __future__ import annotations

import json
import os
import stat
import struct
import time
import zipfile
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wangpd.output_meta import READ_ERRORS, SIDECAR_SUFFIX, read_model_type

__all__ = [
    "OUTPUT_KEYS",
    "OutputScanner",
    "ScanResult",
    "hints",
    "output_folders",
    "read_queue",
    "read_transformer_types",
]

# wgp_config.json keys naming output folders; each defaults to "outputs", relative to the Wan2GP folder.
OUTPUT_KEYS = ("save_path", "image_save_path", "audio_save_path")
DEFAULT_OUTPUT = "outputs"
QUEUE_FILE = "queue.zip"
_MEDIA_SUFFIXES = frozenset({".mp4", ".mov", ".m4v", ".png", ".jpg", ".jpeg", ".webp", ".wav", ".mp3"})
_MAX_QUEUE_JSON = 64 << 20
_STATE_VERSION = 1
# Timestamp granularity allowed for (FAT keeps 2 s; ext4, XFS, btrfs, NTFS and tmpfs are far finer): a folder whose
# mtime is older than the previous scan's start minus this gained no entries since that scan listed it.
_DIR_MARGIN_NS = 2 * 10**9


# ---- explicit list, queue, hints -------------------------------------------------------------------------------


def _unique_types(values: Iterator[Any]) -> list[str]:
    seen: dict[str, None] = {}
    for value in values:
        if isinstance(value, str) and value.strip():
            seen.setdefault(value.strip(), None)
    return list(seen)


def read_transformer_types(settings_raw: Mapping[str, Any]) -> list[str]:
    """wgp_config.json ``transformer_types``: the models the user made selectable, in their order.

    An empty list is Wan2GP's default and means "all": no signal. A malformed value gives ``[]``.
    """
    value = settings_raw.get("transformer_types")
    return _unique_types(iter(value)) if isinstance(value, list) else []


# zipfile raises all of these on a damaged archive (bad headers, bad deflate data, unsupported methods).
_ZIP_ERRORS = (
    OSError,
    EOFError,
    ValueError,
    KeyError,
    RuntimeError,
    NotImplementedError,
    struct.error,
    zlib.error,
    zipfile.BadZipFile,
)


def read_queue(config_dir: Path) -> tuple[list[str], list[str]]:
    """The model types of the tasks pending in ``<config_dir>/queue.zip`` (Wan2GP writes it at exit), in queue
    order, and the problems found. An absent file gives ``([], [])``; a damaged one ``([], [message])``."""
    path = Path(config_dir) / QUEUE_FILE
    try:
        if not stat.S_ISREG(path.stat().st_mode):  # a FIFO would block the reader (and the daemon's shutdown)
            return [], [f"{path}: not a regular file; ignoring the saved queue"]
        with zipfile.ZipFile(path) as archive:
            name = next((n for n in archive.namelist() if n.rsplit("/", 1)[-1] == "queue.json"), None)
            if name is None:
                return [], [f"{path}: no queue.json inside; ignoring the saved queue"]
            with archive.open(name) as member:
                raw = member.read(_MAX_QUEUE_JSON + 1)
    except FileNotFoundError:
        return [], []
    except _ZIP_ERRORS as exc:
        return [], [f"{path}: not a readable zip ({exc}); ignoring the saved queue"]
    if len(raw) > _MAX_QUEUE_JSON:
        return [], [f"{path}: queue.json is larger than {_MAX_QUEUE_JSON >> 20} MB; ignoring the saved queue"]
    try:
        tasks = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError) as exc:
        return [], [f"{path}: queue.json is not valid JSON ({exc}); ignoring the saved queue"]
    if not isinstance(tasks, list):
        return [], [f"{path}: queue.json is not a list of tasks; ignoring the saved queue"]
    found: list[Any] = []
    missing = 0
    for task in tasks:
        params = task.get("params") if isinstance(task, dict) else None
        model_type = params.get("model_type") if isinstance(params, dict) else None
        if not isinstance(model_type, str) or not model_type.strip():
            missing += 1
        found.append(model_type)
    problems = [f"{path}: {missing} task(s) without params.model_type"] if missing else []
    return _unique_types(iter(found)), problems


def hints(config_dir: Path, wan2gp_dir: Path, settings_raw: Mapping[str, Any]) -> dict[str, str]:
    """Weak hints, model type -> why (``"last model shown, settings file"``). Never a reason to download: browsing
    a family switches models, and showing a model once writes its settings file. Shown by ``models show``.

    Settings files are looked for in ``<wan2gp_dir>/settings`` and, when Wan2GP runs with ``--config DIR``, in
    ``<config_dir>/settings`` too (whichever exists).
    """
    reasons: dict[str, list[str]] = {}

    def add(model_type: Any, reason: str) -> None:
        if isinstance(model_type, str) and model_type.strip():
            listed = reasons.setdefault(model_type.strip(), [])
            if reason not in listed:
                listed.append(reason)

    add(settings_raw.get("last_model_type"), "last model shown")
    for key, reason in (("last_model_per_family", "last of its family"), ("last_model_per_type", "last of its type")):
        value = settings_raw.get(key)
        if isinstance(value, Mapping):
            for model_type in value.values():
                add(model_type, reason)
    suffix = "_settings.json"
    folders = dict.fromkeys(os.path.abspath(Path(d) / "settings") for d in (wan2gp_dir, config_dir))
    for folder in folders:
        try:
            names = sorted(os.listdir(folder))
        except OSError:
            continue
        for name in names:
            if name.endswith(suffix) and len(name) > len(suffix):
                add(name[: -len(suffix)], "settings file")
    return {model_type: ", ".join(why) for model_type, why in sorted(reasons.items())}


# ---- output folders and the incremental scan -------------------------------------------------------------------


def output_folders(wan2gp_dir: Path, settings_raw: Mapping[str, Any]) -> list[Path]:
    """The absolute output folders wgp_config.json names (``save_path``, ``image_save_path``, ``audio_save_path``),
    relative ones under ``wan2gp_dir``, deduplicated in key order. They may not exist."""
    folders: dict[str, None] = {}
    for key in OUTPUT_KEYS:
        value = settings_raw.get(key)
        name = value.strip() if isinstance(value, str) and value.strip() else DEFAULT_OUTPUT
        folders.setdefault(os.path.normpath(os.path.join(os.path.abspath(wan2gp_dir), name)), None)
    return [Path(folder) for folder in folders]


@dataclass
class ScanResult:
    """What one :meth:`OutputScanner.scan` found.

    ``used``: model type -> mtime (epoch seconds) of the newest output made with it, among the files read in this
    scan only (the caller merges). ``state``: persist it and pass it to the next scan. ``unreadable``: files read
    whose metadata could not be taken (no metadata, damaged, not Wan2GP's). ``deferred``: files changed within the
    settle time, left for a later scan.
    """

    used: dict[str, float] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)
    files_read: int = 0
    unreadable: int = 0
    deferred: int = 0
    dirs_listed: int = 0
    problems: list[str] = field(default_factory=list)


@dataclass
class _FolderState:
    mark: int = -1  # the highest change time (ns) of a file read so far; -1 = never scanned
    checked: int = -1  # folders whose mtime is older than this (ns) need no listing (previous scan start - margin)
    at_mark: set[str] = field(default_factory=set)  # files read whose change time is exactly the mark
    dirs: set[str] = field(default_factory=set)  # known subfolders (relative, "/"-separated)
    pending: set[str] = field(default_factory=set)  # folders holding deferred files: listed next time regardless

    def to_json(self) -> dict[str, Any]:
        return {
            "mark": self.mark,
            "checked": self.checked,
            "at_mark": sorted(self.at_mark),
            "dirs": sorted(self.dirs),
            "pending": sorted(self.pending),
        }

    @classmethod
    def from_json(cls, data: Any) -> _FolderState | None:
        if not isinstance(data, dict) or not all(type(data.get(key)) is int for key in ("mark", "checked")):
            return None
        lists = [data.get(key, []) for key in ("at_mark", "dirs", "pending")]
        if not all(isinstance(items, list) and all(isinstance(i, str) for i in items) for items in lists):
            return None
        return cls(data["mark"], data["checked"], *(set(items) for items in lists))


def _change_ns(st: os.stat_result) -> int:
    # ctime as well as mtime: a file copied or restored with its old mtime kept still gets a new ctime.
    return max(st.st_mtime_ns, st.st_ctime_ns)


class OutputScanner:
    """Reads the model type out of Wan2GP's outputs, each file once.

    ``max_depth``: how deep subfolders of an output folder are followed (Wan2GP may write dated subfolders);
    symlinked folders are not followed. ``settle_seconds``: a file changed more recently than this is left for a
    later scan, because Wan2GP writes the metadata into a file after creating it (mutagen, piexif and the PNG
    rewrite all work in place).
    """

    def __init__(self, *, max_depth: int = 3, settle_seconds: float = 120.0) -> None:
        self.max_depth = max_depth
        self.settle_seconds = settle_seconds

    def scan(self, folders: Sequence[Path], metadata_type: str, state: Mapping[str, Any] | None) -> ScanResult:
        """Scan ``folders`` (absolute; missing ones skipped) for outputs changed since ``state`` (``{}`` for the
        first scan). ``metadata_type`` is wgp_config.json's: ``"none"`` reads nothing; otherwise both embedded
        metadata and ``<name>.json`` side-cars are read, so outputs saved under an earlier setting count too.
        Never raises."""
        result = ScanResult()
        old: dict[str, Any] = {}
        if state:
            if state.get("version") == _STATE_VERSION and isinstance(state.get("folders"), dict):
                old = state["folders"]
            else:
                result.problems.append("output scan state not understood; rescanning every output folder")
        if metadata_type == "none":
            result.state = {"version": _STATE_VERSION, "folders": dict(old)}
            return result
        started = time.time_ns()
        horizon = started - int(self.settle_seconds * 1e9)
        seen_dirs: set[tuple[int, int]] = set()  # a folder reached twice (nested or linked output folders)
        folders_out: dict[str, Any] = {}
        for folder in folders:
            key = os.path.abspath(folder)
            if key in folders_out:
                continue
            previous = _FolderState.from_json(old.get(key)) if key in old else None
            if key in old and previous is None:
                result.problems.append(f"{key}: scan state not understood; rescanning it")
            new = self._scan_folder(Path(key), previous, started, horizon, seen_dirs, result)
            if new is not None:
                folders_out[key] = new.to_json()
        result.state = {"version": _STATE_VERSION, "folders": folders_out}
        return result

    def _scan_folder(
        self,
        root: Path,
        old: _FolderState | None,
        started: int,
        horizon: int,
        seen_dirs: set[tuple[int, int]],
        result: ScanResult,
    ) -> _FolderState | None:
        """Scan one output folder; returns its new state (``old`` unchanged when it could not be listed whole).

        Why the marks hold: the file-system clock only moves forward, so a file written after one this scan read
        has a change time >= the mark (equal ones are told apart by ``at_mark``), and a folder that gains an entry
        after this scan listed it gets an mtime >= ``started`` - the margin.
        """
        base = old or _FolderState()
        new = _FolderState(mark=base.mark, checked=started - _DIR_MARGIN_NS, at_mark=set(base.at_mark))
        failed = False
        # Known subfolders are visited even when their parent is not listed: a file added to a subfolder changes
        # the subfolder's mtime only.
        todo = [*sorted(base.dirs, reverse=True), ""]  # popped from the end: the root first
        visited: set[str] = set()
        while todo:
            rel = todo.pop()
            if rel in visited:
                continue
            visited.add(rel)
            depth = rel.count("/") + 1 if rel else 0
            path = root / rel if rel else root
            try:
                st = os.stat(path)
            except OSError:
                if not rel:
                    return old  # a missing output folder (an unmounted drive) keeps its state
                continue  # a subfolder that went away
            if not stat.S_ISDIR(st.st_mode) or depth > self.max_depth:
                if not rel:
                    result.problems.append(f"{root}: not a folder; not scanned for outputs")
                    return old
                continue
            if (st.st_dev, st.st_ino) in seen_dirs:
                continue
            seen_dirs.add((st.st_dev, st.st_ino))
            if rel:
                new.dirs.add(rel)
            # A folder not changed since the previous scan listed it gained no entries: not listed. Its known
            # subfolders are still visited (they are in ``todo``).
            new_dir = bool(rel) and rel not in base.dirs
            if not (new_dir or st.st_mtime_ns >= base.checked or rel in base.pending):
                continue
            try:
                # Iterated, not listed into memory: a flat folder of 100,000 outputs is one folder.
                with os.scandir(path) as listing:
                    result.dirs_listed += 1
                    for entry in listing:
                        self._consider(entry, rel, depth, horizon, base, new, todo, result)
            except OSError as exc:
                result.problems.append(f"{path}: cannot list ({exc.strerror or exc}); retried on the next scan")
                failed = True
        if failed:
            return old  # a folder that could not be listed may hold files older than the new mark: keep the old one
        return new

    def _consider(
        self,
        entry: os.DirEntry[str],
        rel: str,
        depth: int,
        horizon: int,
        base: _FolderState,
        new: _FolderState,
        todo: list[str],
        result: ScanResult,
    ) -> None:
        """One entry of a listed folder: queue a subfolder, defer a settling file, read a changed one."""
        if entry.name.startswith("."):
            return
        child = f"{rel}/{entry.name}" if rel else entry.name
        try:
            if entry.is_dir(follow_symlinks=False):
                if depth < self.max_depth:
                    todo.append(child)
                return
            suffix = os.path.splitext(entry.name)[1].lower()
            if suffix not in _MEDIA_SUFFIXES and suffix != SIDECAR_SUFFIX:
                return
            fst = entry.stat()
            if not stat.S_ISREG(fst.st_mode):  # a FIFO or device named like an output: never opened
                return
        except OSError:
            return  # removed while listing
        changed = _change_ns(fst)
        if changed > horizon:
            # Still settling (Wan2GP adds the metadata after writing the file): read again once settled, but one
            # that already carries its model type counts now, so a model just used is kept without a delay.
            result.deferred += 1
            new.pending.add(rel)
            self._read_one(entry.path, suffix, fst, result, settling=True)
            return
        if changed < base.mark or (changed == base.mark and child in base.at_mark):
            return
        self._read_one(entry.path, suffix, fst, result)
        if changed > new.mark:
            new.mark, new.at_mark = changed, set()
        if changed == new.mark:
            new.at_mark.add(child)

    @staticmethod
    def _read_one(path: str, suffix: str, st: os.stat_result, result: ScanResult, *, settling: bool = False) -> None:
        result.files_read += 1
        try:
            # Non-blocking: a file swapped for a FIFO after the listing cannot hang the scan.
            with os.fdopen(os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC), "rb") as f:
                model_type = read_model_type(f, suffix, st.st_size)
        except READ_ERRORS:
            model_type = None
        if model_type is None:
            if not settling:  # a settling file without metadata yet is deferred, not unreadable
                result.unreadable += 1
        elif st.st_mtime > result.used.get(model_type, -1.0):
            result.used[model_type] = st.st_mtime
