"""Find a wanted file in the user's other model libraries by content, so wangpd links it instead of downloading it.

People who run Wan2GP often also run ComfyUI, Forge/A1111 or a second Wan2GP, and the same multi-GB file sits in
their ``models/`` or ``ckpts/`` under another name. The Hub gives the sha256 of every LFS file, so a file with the
same size and sha256 is the same file, whatever it is called. Names are never trusted.

Hashing a library is the expensive part, so it happens as late and as little as possible:

* :meth:`LibraryIndex.scan` only lists files (one ``stat`` each) and buckets them by size. Model files have
  nearly unique sizes, so a wanted size usually matches zero or one candidate.
* :meth:`LibraryIndex.find` hashes only the candidates of the wanted size, each at most once per
  ``(st_dev, st_ino, st_size, st_mtime_ns)``. Results go to :attr:`LibraryIndex.hashes` and to
  :meth:`LibraryIndex.drain_new_hashes`, which the caller persists so the next start reads nothing again.
* A cached hash is trusted only while that key still matches a fresh ``stat``: a rewritten file is read again.

Scanning and hashing block (they read the disk): the caller runs them in a thread. Status may read the progress
attributes (``state``, ``files_seen``, ``bytes_indexed``, ``bytes_hashed``, ``scanned_at``) from any thread while
they run. Stdlib only.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["LibraryFile", "LibraryIndex"]

log = logging.getLogger(__name__)

Key = tuple[int, int, int, int]  # (st_dev, st_ino, st_size, st_mtime_ns)

# Downloads in progress (HF hub, browsers, wangpd itself) are not model files yet: their bytes will change.
_TEMP_SUFFIXES = (".incomplete", ".part", ".tmp", ".wangpd-tmp")
_CHUNK = 8 << 20  # 8 MiB: large enough that hashlib (which drops the GIL) dominates, small enough to stay cheap
_MAX_WARNINGS = 20  # a library with thousands of unreadable folders must not flood the log or the status output


@dataclass(frozen=True)
class LibraryFile:
    """One regular file in a library, with the ``stat`` fields that say whether a cached hash still holds."""

    path: Path
    size: int
    dev: int
    ino: int
    mtime_ns: int

    @property
    def key(self) -> Key:
        """(dev, ino, size, mtime_ns): the same key means the same bytes, as far as a ``stat`` can tell."""
        return (self.dev, self.ino, self.size, self.mtime_ns)


def _file_of(path: Path, st: os.stat_result) -> LibraryFile:
    return LibraryFile(path=path, size=st.st_size, dev=st.st_dev, ino=st.st_ino, mtime_ns=st.st_mtime_ns)


def _skipped_name(name: str) -> bool:
    """Hidden files and downloads in progress: never a finished model file."""
    return name.startswith(".") or name.lower().endswith(_TEMP_SUFFIXES)


class LibraryIndex:
    """The files of some library folders, by size, with their sha256 once someone has needed it."""

    def __init__(
        self,
        folders: Sequence[Path],
        hashes: Mapping[Key, str] | None = None,
        *,
        min_size: int = 1 << 20,
    ) -> None:
        self.folders = [Path(os.path.abspath(Path(folder).expanduser())) for folder in folders]
        self.min_size = min_size
        # sha256 per key: the persisted cache the caller loaded, plus what this process hashed.
        self.hashes: dict[Key, str] = {key: sha.lower() for key, sha in (hashes or {}).items()}
        self.new_hashes: list[tuple[Key, str, str]] = []  # (key, sha256, path) hashed, not yet handed over
        self.warnings: list[str] = []
        # Progress, read by status from other threads: plain ints and strings, each assignment atomic.
        self.state = "idle"
        self.files_seen = 0
        self.bytes_indexed = 0
        self.bytes_hashed = 0
        self.scanned_at: float | None = None
        self._by_size: dict[int, list[LibraryFile]] = {}
        self._by_inode: dict[tuple[int, int], LibraryFile] = {}
        self._lock = threading.Lock()  # guards the index, hashes, new_hashes, counters and the hash locks
        self._scan_lock = threading.Lock()  # one scan at a time; finds go on against the previous index
        self._hash_locks: dict[Key, threading.Lock] = {}  # one per key, so one file is never read twice at once
        self._scanning = False
        self._hashing = 0  # finds/prefetches reading a file right now

    # ---- scanning ---------------------------------------------------------------------------------------------

    def scan(self) -> int:
        """List every folder again and rebuild the index; return how many files it holds. BLOCKING.

        A missing or unreadable folder is a warning (in :attr:`warnings` and the log), never an exception: a
        library on an unplugged disk must not stop downloads."""
        with self._scan_lock:
            with self._lock:
                self._scanning = True
                self._update_state()
            self.warnings = []
            self.files_seen = 0
            self.bytes_indexed = 0
            by_size: dict[int, list[LibraryFile]] = {}
            by_inode: dict[tuple[int, int], LibraryFile] = {}
            try:
                for folder in self._roots():
                    self._walk(folder, by_size, by_inode)
            except BaseException:
                with self._lock:  # a half-listed library would hide files: keep the previous index
                    self._scanning = False
                    self._update_state()
                raise
            with self._lock:
                # Swapped in whole, so a find running during the scan sees the old index or the new one.
                self._by_size, self._by_inode = by_size, by_inode
                self._scanning = False
                self.scanned_at = time.time()
                self._update_state()
            return len(by_inode)

    def _roots(self) -> list[Path]:
        """The folders to walk: each existing one once, and none that is inside another (by real path)."""
        real: list[tuple[str, Path]] = []
        for folder in self.folders:
            if not folder.is_dir():
                reason = "not found" if not folder.exists() else "not a folder"
                self._warn(f"library {folder}: {reason}; skipped")
                continue
            real.append((os.path.realpath(folder), folder))
        roots: list[Path] = []
        seen: set[str] = set()
        for path, folder in real:
            # The walk does not follow symlinked folders, but it does reach every real subfolder of a root's real
            # path, so a folder whose real path is inside another root's would be listed twice.
            inside = any(path != other and path.startswith(other.rstrip(os.sep) + os.sep) for other, _ in real)
            if inside or path in seen:
                continue
            seen.add(path)
            roots.append(folder)
        return roots

    def _walk(
        self, root: Path, by_size: dict[int, list[LibraryFile]], by_inode: dict[tuple[int, int], LibraryFile]
    ) -> None:
        pending = [root]
        while pending:
            folder = pending.pop()
            try:
                with os.scandir(folder) as entries:
                    for entry in entries:
                        self._visit(folder, entry, pending, by_size, by_inode)
            except OSError as exc:
                self._warn(f"library folder {folder}: cannot read ({exc.strerror or exc}); skipped")

    def _visit(
        self,
        folder: Path,
        entry: os.DirEntry[str],
        pending: list[Path],
        by_size: dict[int, list[LibraryFile]],
        by_inode: dict[tuple[int, int], LibraryFile],
    ) -> None:
        if _skipped_name(entry.name):
            return  # also hidden folders: .git/lfs, .cache/huggingface hold copies that their owner may prune
        try:
            if entry.is_dir(follow_symlinks=False):
                pending.append(folder / entry.name)  # a symlinked folder is not followed: that is how loops are avoided
                return
            linked = entry.is_symlink()
            st = entry.stat(follow_symlinks=True)  # a symlinked file counts as its target
        except OSError:
            return  # vanished since the listing, or a dangling link
        self.files_seen += 1
        if not stat.S_ISREG(st.st_mode) or st.st_size < self.min_size:
            return  # a link to a folder, a fifo, or too small to be a model file
        if (st.st_dev, st.st_ino) in by_inode:
            return  # a hardlink or a symlink to a file already indexed: one candidate, read once
        # A symlink is recorded by its target, so whoever links from it links the bytes, not a relative link.
        # ``folder / name`` parses one part where ``Path(entry.path)`` parses them all: a tenth of a scan.
        path = Path(os.path.realpath(entry.path)) if linked else folder / entry.name
        found = _file_of(path, st)
        by_inode[(st.st_dev, st.st_ino)] = found
        by_size.setdefault(st.st_size, []).append(found)
        self.bytes_indexed += st.st_size

    def _warn(self, message: str) -> None:
        if len(self.warnings) < _MAX_WARNINGS:
            log.warning("%s", message)
            self.warnings.append(message)
        elif len(self.warnings) == _MAX_WARNINGS:
            log.warning("more library warnings; not logging them")
            self.warnings.append("more warnings left out")

    def _update_state(self) -> None:
        """Caller holds ``_lock``."""
        if self._scanning:
            self.state = "scanning"
        elif self._hashing:
            self.state = "hashing"
        else:
            self.state = "ready" if self.scanned_at is not None else "idle"

    # ---- looking up -------------------------------------------------------------------------------------------

    def candidates(self, size: int) -> list[LibraryFile]:
        """The indexed files of exactly ``size`` bytes (a copy: the caller may keep it)."""
        with self._lock:
            return list(self._by_size.get(size, ()))

    def find(self, size: int, sha256: str) -> Path | None:
        """A library file of ``size`` bytes whose sha256 is ``sha256``, or None. BLOCKING (may hash candidates)."""
        return self._find(size, sha256.lower())[0]

    def known(self, size: int, sha256: str) -> Path | None:
        """A library file already hashed to ``sha256`` and unchanged since, without reading any file (one ``stat``
        per candidate): for planning, which must stay fast. BLOCKING only for those stats."""
        sha256 = sha256.lower()
        for candidate in self.candidates(size):
            current = self._refresh(candidate)
            if current is None or current.size != size:
                continue
            with self._lock:
                if self.hashes.get(current.key) == sha256:
                    return current.path
        return None

    def prefetch(self, wanted: Iterable[tuple[int, str]]) -> int:
        """Hash the candidates of every wanted (size, sha256) ahead of time, so later finds answer from the cache;
        return how many files were read. BLOCKING. Stops for a wanted file at its first match."""
        hashed = 0
        for size, sha256 in dict.fromkeys((size, sha.lower()) for size, sha in wanted):
            hashed += self._find(size, sha256)[1]
        return hashed

    def _find(self, size: int, sha256: str) -> tuple[Path | None, int]:
        """(the match or None, how many files were read to know)."""
        unhashed: list[LibraryFile] = []
        # Cached answers first: a match already known must not wait behind hashing other candidates.
        for candidate in self.candidates(size):
            current = self._refresh(candidate)
            if current is None or current.size != size:
                continue
            with self._lock:
                known = self.hashes.get(current.key)
            if known is None:
                unhashed.append(current)
            elif known == sha256:
                return current.path, 0
        hashed = 0
        for candidate in unhashed:
            known, read = self._hash_once(candidate)
            hashed += read
            if known == sha256:
                return candidate.path, hashed
        return None, hashed

    def _refresh(self, candidate: LibraryFile) -> LibraryFile | None:
        """``candidate`` as it is on disk now (None when gone); a changed ``stat`` replaces the index entry, so the
        hash cached for its old key is no longer looked up."""
        try:
            st = candidate.path.stat()
        except OSError:
            self._replace(candidate, None)
            return None
        current = _file_of(candidate.path, st) if stat.S_ISREG(st.st_mode) else None
        if current != candidate:
            self._replace(candidate, current)
        return current

    def _replace(self, old: LibraryFile, new: LibraryFile | None) -> None:
        with self._lock:
            bucket = self._by_size.get(old.size)
            if bucket is not None and old in bucket:
                bucket.remove(old)
                if not bucket:
                    del self._by_size[old.size]
            if self._by_inode.get((old.dev, old.ino)) == old:
                del self._by_inode[(old.dev, old.ino)]
            if new is None or new.size < self.min_size or (new.dev, new.ino) in self._by_inode:
                return
            self._by_inode[(new.dev, new.ino)] = new
            self._by_size.setdefault(new.size, []).append(new)

    def _hash_once(self, candidate: LibraryFile) -> tuple[str | None, int]:
        """(sha256 of ``candidate``, 1 if this call hashed it else 0); the sha is None when it cannot be read."""
        key = candidate.key
        with self._lock:
            lock = self._hash_locks.setdefault(key, threading.Lock())
        with lock:
            with self._lock:
                known = self.hashes.get(key)
            if known is not None:
                return known, 0  # another thread read it while this one waited
            with self._lock:
                self._hashing += 1
                self._update_state()
            try:
                sha = self._hash(candidate)
                return sha, int(sha is not None)
            finally:
                with self._lock:
                    self._hashing -= 1
                    self._update_state()

    def _hash(self, candidate: LibraryFile) -> str | None:
        digest = hashlib.sha256()
        buffer = bytearray(max(1, min(_CHUNK, candidate.size)))  # zeroing 8 MiB for a small file would cost more
        view = memoryview(buffer)
        try:
            with open(candidate.path, "rb", buffering=0) as stream:
                before = os.fstat(stream.fileno())
                if _file_of(candidate.path, before) != candidate:
                    # Replaced between the stat and the open: what is read now is another file.
                    log.debug("library file %s changed before hashing; skipped", candidate.path)
                    return None
                while read := stream.readinto(buffer):
                    digest.update(view[:read])
                    with self._lock:
                        self.bytes_hashed += read
                after = os.fstat(stream.fileno())
        except OSError as exc:
            log.debug("library file %s: cannot read (%s); skipped", candidate.path, exc)
            return None
        if _file_of(candidate.path, after) != candidate:
            log.debug("library file %s changed while hashing; not cached", candidate.path)
            return None  # a half-old, half-new hash is of no file; the next find reads it again
        sha = digest.hexdigest()
        with self._lock:
            self.hashes[candidate.key] = sha
            self.new_hashes.append((candidate.key, sha, str(candidate.path)))
        return sha

    def drain_new_hashes(self) -> list[tuple[Key, str, str]]:
        """The hashes computed since the last call, for the caller to persist; each is handed over once."""
        with self._lock:
            drained, self.new_hashes = self.new_hashes, []
        return drained

    # ---- status -----------------------------------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        """What status shows (JSON-able)."""
        with self._lock:
            files = len(self._by_inode)
            hashed = len(self.hashes)
        return {
            "folders": [str(folder) for folder in self.folders],
            "state": self.state,
            "files": files,
            "bytes_indexed": self.bytes_indexed,
            "bytes_hashed": self.bytes_hashed,
            "hashed": hashed,
            "scanned_at": self.scanned_at,
            "warnings": list(self.warnings),
        }
