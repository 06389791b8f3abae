"""Path rules and small file-system helpers shared by every module that touches disk; stdlib only.

What a relative path may look like (never out of its folder), the names of wangpd's own temporary files, the
nearest existing folder and its free space, durable renames (directory fsync) and the exclusive flock that keeps a
second daemon away. Each rule is written here once; modules import it instead of re-reading it their own way.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import shutil
import stat
import uuid
from pathlib import Path

__all__ = [
    "PART_SUFFIX",
    "TEMP_SUFFIX",
    "disk_free",
    "fsync_dir",
    "is_own_temp",
    "lock_exclusive",
    "nearest_existing",
    "read_regular",
    "safe_relative",
    "safe_repo_path",
    "temp_name",
    "unique_temp_name",
    "unique_temp_writer",
]

# A download in progress: the HF cache's own suffix (``hf cache ls`` lists these as partial), also used for
# plain-URL parts. Never a name Wan2GP loads.
PART_SUFFIX = ".incomplete"
# A link, copy, ref or folder wangpd is building, renamed into place when complete: ``.<name>.wangpd-tmp``.
TEMP_SUFFIX = ".wangpd-tmp"
_DRIVE_RE = re.compile(r"^[A-Za-z]:")


def safe_relative(path: str) -> bool:
    """A relative path that stays inside its folder: not empty, not absolute (POSIX or Windows), no ``..``, no
    backslash or NUL. ``a/./b`` and ``a//b`` are tolerated (they normalise inside the folder)."""
    if not path or path.startswith(("/", "\\")) or _DRIVE_RE.match(path) or "\\" in path or "\0" in path:
        return False
    return ".." not in path.split("/")


def safe_repo_path(path: str) -> bool:
    """A path inside a Hub repository as the Hub writes it: relative, no empty, ``.`` or ``..`` segment, no NUL.

    Stricter than :func:`safe_relative` on purpose: the HF cache joins it under ``snapshots/<commit>/`` verbatim.
    """
    if not path or path.startswith("/") or "\0" in path or "\\" in path:
        return False
    return all(part not in ("", ".", "..") for part in path.split("/"))


def temp_name(path: Path) -> Path:
    """The temporary sibling under which ``path`` is built before its atomic rename."""
    return path.with_name(f".{path.name}{TEMP_SUFFIX}")


def unique_temp_name(path: Path) -> Path:
    """A temporary sibling no other writer uses: for files two jobs may write at once (the repo's ``refs/main``
    when two of its files finish together, a shared snapshot link)."""
    return path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:12]}{TEMP_SUFFIX}")


_UNIQUE_TEMP = re.compile(r"^\..+\.(\d+)-[0-9a-f]{12}" + re.escape(TEMP_SUFFIX) + "$")


def unique_temp_writer(path: str | Path) -> int | None:
    """The pid that made ``path`` with :func:`unique_temp_name`, or None when the name is not one of those."""
    match = _UNIQUE_TEMP.match(Path(path).name)
    return int(match.group(1)) if match else None


def is_own_temp(path: str | Path) -> bool:
    """wangpd's own work files (parts, links being built): never a reason to re-plan, never a model file."""
    name = Path(path).name
    return name.endswith((PART_SUFFIX, TEMP_SUFFIX)) or name.startswith(".wangpd") or TEMP_SUFFIX in name


def nearest_existing(path: Path) -> Path:
    """``path`` itself, or its nearest parent that exists (where a file under ``path`` would be created)."""
    probe = Path(path)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return probe


def disk_free(path: Path) -> int | None:
    """Free bytes on the filesystem that holds (or would hold) ``path``; None when it cannot be read."""
    try:
        return shutil.disk_usage(nearest_existing(path)).free
    except OSError:
        return None


def fsync_dir(path: Path) -> None:
    """Flush a directory: a rename inside it is durable only after this. Best effort (some file systems refuse)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


def lock_exclusive(path: Path) -> int | None:
    """Take an exclusive flock on ``path`` (created 0600) and return its fd, held until closed or exit; None when
    another process holds it. Other errors (permissions, a missing folder) are raised."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except OSError:
        os.close(fd)
        raise
    return fd


def read_regular(path: Path, limit: int) -> tuple[bytes, os.stat_result]:
    """The bytes of a regular file of at most ``limit`` bytes, and its stat. Raises OSError for anything else.

    Opened non-blocking and checked on the open descriptor: a FIFO, a socket or a device named like a definition
    (``defaults/x.json``) is refused at once instead of blocking a reader (and with it the daemon's shutdown), and
    a swap between check and read is not possible.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        if info.st_size > limit:
            raise OSError(errno.EFBIG, f"larger than {limit} bytes", str(path))
        chunks: list[bytes] = []
        size = 0
        while size <= limit:
            chunk = os.read(fd, min(1 << 20, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:
            raise OSError(errno.EFBIG, f"larger than {limit} bytes", str(path))
        return b"".join(chunks), info
    finally:
        os.close(fd)
