"""The standard HuggingFace cache layout, written so that huggingface_hub and the ``hf`` CLI accept it.

::

    <cache>/models--Org--Repo/
        blobs/<sha256 or git blob id>              the file's bytes
        blobs/<...>.incomplete                     while downloading (``hf cache ls`` lists these as partial)
        snapshots/<commit>/<path in repo>          relative symlink to ../../blobs/<...>
        refs/<revision>                            the commit, no newline (huggingface_hub reads it unstripped)

``hf cache ls``, ``hf cache verify`` and ``hf_hub_download(..., local_files_only=True)`` find what is written
here. No third-party imports: huggingface_hub itself stays in :mod:`wangpd.hub`.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from wangpd.models import COMMIT_RE, SHA256_RE, FileMeta
from wangpd.paths import PART_SUFFIX, fsync_dir, safe_repo_path, unique_temp_name, unique_temp_writer

__all__ = ["CachePaths", "HFCache", "repo_folder_name"]

log = logging.getLogger(__name__)


def repo_folder_name(repo: str) -> str:
    """``Org/Repo`` -> ``models--Org--Repo`` (huggingface_hub's naming for model repos)."""
    return "models--" + repo.replace("/", "--")


@dataclass(frozen=True)
class CachePaths:
    """Where one file of one commit lives in the cache."""

    repo_dir: Path
    blob: Path
    incomplete: Path
    snapshot: Path
    ref: Path | None  # None when the revision is itself a commit hash


def _check_path_in_repo(path: str) -> None:
    if not safe_repo_path(path):
        raise ValueError(f"bad path in repository: {path!r}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    return True


class HFCache:
    """One HuggingFace hub cache directory (``HF_HUB_CACHE`` / ``hub.cache_dir``)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).expanduser()

    def sweep_own_temps(self, max_age: float = 3600.0) -> list[Path]:
        """Remove the ``refs/`` and snapshot-link temporaries a killed wangpd left behind, so that huggingface_hub's
        cache scan never lists one as a ref. Only names :func:`unique_temp_name` makes are touched, and one whose
        writer may still be at work (its process is alive and the file is younger than ``max_age``) is left.
        Returns what was removed."""
        removed: list[Path] = []
        now = time.time()
        try:
            repos = [e.path for e in os.scandir(self.root) if e.name.startswith("models--") and e.is_dir()]
        except OSError:
            return removed
        for repo in repos:
            for sub in ("refs", "snapshots"):
                for folder, _dirs, names in os.walk(os.path.join(repo, sub)):
                    for name in names:
                        pid = unique_temp_writer(name)
                        if pid is None:
                            continue
                        path = Path(folder) / name
                        try:
                            age = now - path.lstat().st_mtime
                        except OSError:
                            continue
                        if pid == os.getpid() or (_alive(pid) and age < max_age):
                            continue
                        with contextlib.suppress(FileNotFoundError):
                            path.unlink()
                            removed.append(path)
        return removed

    def repo_dir(self, repo: str) -> Path:
        return self.root / repo_folder_name(repo)

    def paths(self, meta: FileMeta) -> CachePaths:
        """All paths for the file described by ``meta`` (which must carry an etag and a commit)."""
        if not meta.etag or not meta.commit:
            raise ValueError(f"{meta.repo}/{meta.path}: metadata has no etag or commit")
        _check_path_in_repo(meta.path)
        repo_dir = self.repo_dir(meta.repo)
        blob = repo_dir / "blobs" / meta.etag
        ref = None if meta.revision == meta.commit else repo_dir / "refs" / meta.revision
        return CachePaths(
            repo_dir=repo_dir,
            blob=blob,
            incomplete=blob.with_name(blob.name + PART_SUFFIX),
            snapshot=repo_dir / "snapshots" / meta.commit / meta.path,
            ref=ref,
        )

    def prepare(self, meta: FileMeta) -> CachePaths:
        """Create ``blobs/`` and ``snapshots/`` so the repo folder is valid for ``hf cache ls`` mid-download."""
        paths = self.paths(meta)
        (paths.repo_dir / "blobs").mkdir(parents=True, exist_ok=True)
        (paths.repo_dir / "snapshots").mkdir(parents=True, exist_ok=True)
        return paths

    def commit_for(self, repo: str, revision: str) -> str | None:
        """The commit a revision points to in the cache (from ``refs/``), or None if unknown."""
        if COMMIT_RE.fullmatch(revision):
            return revision
        try:
            text = (self.repo_dir(repo) / "refs" / revision).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError):
            return None
        return text if COMMIT_RE.fullmatch(text) else None

    def find_cached(self, repo: str, revision: str, path: str, meta: FileMeta | None = None) -> Path | None:
        """The snapshot file if this file is complete in the cache, else None. Never touches the network.

        Without ``meta``: via ``refs/<revision>`` (or a commit-hash revision) and the snapshot, like
        ``hf_hub_download(local_files_only=True)``. With ``meta`` (fresh from the Hub): also when the blob is
        present under another commit: the snapshot link and ref for this commit are then added, so a blob already
        in the cache is never fetched again.
        """
        _check_path_in_repo(path)
        commit = meta.commit if meta is not None and meta.commit else self.commit_for(repo, revision)
        if commit:
            snapshot = self.repo_dir(repo) / "snapshots" / commit / path
            if snapshot.is_file():  # is_file follows the link: a dangling link does not count
                if meta is not None:
                    self._write_ref(self.paths(meta))
                return snapshot
        if meta is None or not meta.etag or not meta.commit:
            return None
        paths = self.paths(meta)
        if not paths.blob.is_file() or (meta.size is not None and paths.blob.stat().st_size != meta.size):
            return None
        self._link_snapshot(paths)
        self._write_ref(paths)
        return paths.snapshot

    def commit_blob(self, incomplete: Path, meta: FileMeta) -> Path:
        """Turn a verified ``.incomplete`` into the blob, link the snapshot, write the ref; return the snapshot.

        The data is fsynced before the atomic rename so a crash never leaves a blob with missing bytes.
        """
        paths = self.paths(meta)
        fd = os.open(incomplete, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        paths.blob.parent.mkdir(parents=True, exist_ok=True)
        os.replace(incomplete, paths.blob)
        fsync_dir(paths.blob.parent)
        self._link_snapshot(paths)
        self._write_ref(paths)
        return paths.snapshot

    def _link_snapshot(self, paths: CachePaths) -> None:
        snapshot = paths.snapshot
        snapshot.parent.mkdir(parents=True, exist_ok=True)
        target = os.path.relpath(paths.blob, snapshot.parent)
        if snapshot.is_symlink() and os.readlink(snapshot) == target:
            return
        temp = unique_temp_name(snapshot)
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
        try:
            os.symlink(target, temp)
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS):
                raise
            # No symlinks on this file system: huggingface_hub then keeps the file in the snapshot itself;
            # a hard link does the same and keeps the blob for dedup.
            log.warning("%s: cannot make symlinks here (%s); hard-linking the snapshot", snapshot, exc.strerror)
            os.link(paths.blob, temp)
        # Replace atomically: a reader sees the old entry or the new link, never nothing.
        os.replace(temp, snapshot)
        fsync_dir(snapshot.parent)

    def _write_ref(self, paths: CachePaths) -> None:
        if paths.ref is None:
            return
        commit = paths.snapshot.relative_to(paths.repo_dir / "snapshots").parts[0]
        try:
            if paths.ref.read_text(encoding="utf-8") == commit:
                return
        except (OSError, UnicodeDecodeError):
            pass
        paths.ref.parent.mkdir(parents=True, exist_ok=True)
        temp = unique_temp_name(paths.ref)
        temp.write_text(commit, encoding="utf-8")  # no newline: hf_hub_download reads the ref unstripped
        os.replace(temp, paths.ref)

    def cached_meta(self, repo: str, revision: str, path: str, snapshot: Path) -> FileMeta:
        """Metadata rebuilt from the cache alone (no network): the blob's name and size, the snapshot's commit."""
        blob = snapshot.resolve()
        # snapshots/<commit>/<path...>: the commit is the folder above the path's first component.
        commit = snapshot.parents[len(Path(path).parts) - 1].name
        return FileMeta(
            repo=repo,
            revision=revision,
            path=path,
            size=blob.stat().st_size,
            sha256=blob.name if SHA256_RE.fullmatch(blob.name) else None,
            etag=blob.name,
            commit=commit,
        )
