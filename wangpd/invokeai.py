"""Find files that InvokeAI already installed, so wangpd links them instead of downloading them again.

InvokeAI's database is opened read-only (``file:...?mode=ro``) and only ``SELECT id, config FROM models`` is
read: the other columns are generated from the ``config`` JSON and differ between versions. A locked or missing
database is a warning, never a failure: wangpd then carries on without InvokeAI. See ``INVOKEAI.md`` for the
facts this relies on.

Matching, strongest first (:meth:`InvokeAIIndex.find`):

1. exact ``source``: the same file URL (``/resolve/`` = ``/blob/``, ``?download=true`` ignored, host case
   ignored), or ``Org/Repo::path`` (with or without a variant, ``Org/Repo:fp16::path``,
   ``Org/Repo:ModelRepoVariant.FP16::path``);
2. inside an installed folder: a repo (``Org/Repo``) or subfolder (``Org/Repo::sub``) install whose folder holds
   the wanted file at the same relative path;
3. file name + size (weak, so the size must match).

Every hit is checked on disk (exists, and size when known). This is the only module that uses sqlite3 for
InvokeAI; it needs no third-party library.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit

from wangpd import hfurl

__all__ = ["InvokeAIIndex", "InvokeAIModel", "parse_source"]

log = logging.getLogger(__name__)

_REPO_RE = re.compile(r"^[\w.-]+/[\w.-]+$")


@dataclass(frozen=True)
class InvokeAIModel:
    """One installed model, reduced to what matching needs."""

    key: str
    name: str
    source: str
    source_type: str
    path: Path  # absolute
    file_size: int | None


def parse_source(source: str) -> tuple[str, str | None, str | None] | None:
    """``Org/Repo[:variant][::sub]`` -> ``(repo, variant, sub)``; None when ``source`` is not a repo id.

    Also reads the v4.0-4.2 form ``Org/Repo:sub`` (treated as a subfolder when it contains no known variant).
    """
    text = source.strip()
    if "://" in text or text.startswith("/"):
        return None
    head, sep, sub = text.partition("::")
    repo, _, variant = head.partition(":")
    if not _REPO_RE.match(repo):
        return None
    variant_name = variant.removeprefix("ModelRepoVariant.").lower() or None
    subpath = sub.strip("/") if sep else None
    if variant_name and not sep and variant_name not in ("fp16", "fp32", "bf16", "flax", "onnx", "openvino", "default"):
        # InvokeAI 4.0-4.2 wrote Org/Repo:sub for subfolders.
        return repo, None, variant.strip("/")
    return repo, variant_name, subpath or None


def _hf_file_of_url(url: str) -> tuple[str, str] | None:
    """(repo, path in repo) of a Hub file URL, or None (also for one whose path escapes its repo)."""
    try:
        hub_file = hfurl.parse(url)
    except ValueError:
        return None
    return (hub_file.repo, hub_file.path) if hub_file is not None else None


class InvokeAIIndex:
    """The ``models`` table of one InvokeAI database, loaded by :meth:`refresh` and searched by :meth:`find`."""

    def __init__(
        self,
        db_path: Path | None,
        models_dir: Path | None,
        *,
        lock_retries: int = 5,
        lock_wait: float = 0.2,
    ) -> None:
        self.db_path = Path(db_path).expanduser() if db_path else None
        self.models_dir = Path(models_dir).expanduser() if models_dir else None
        self.lock_retries = lock_retries
        self.lock_wait = lock_wait
        self.models: list[InvokeAIModel] = []
        self.warning: str | None = None  # the last reason InvokeAI could not be read, for status output

    def refresh(self) -> int:
        """Re-read the database; return how many models are usable. Never raises for a missing or locked DB."""
        self.warning = None
        if self.db_path is None:
            self.models = []
            return 0
        if not self.db_path.is_file():
            self._warn(f"InvokeAI database {self.db_path} not found; carrying on without InvokeAI")
            self.models = []
            return 0
        rows = self._read_rows()
        if rows is None:  # locked or unreadable right now: keep what the last good read said
            return len(self.models)
        self.models = list(self._parse(rows))
        return len(self.models)

    def _warn(self, message: str) -> None:
        self.warning = message
        log.warning("%s", message)

    def _read_rows(self) -> list[tuple[str, str]] | None:
        assert self.db_path is not None
        uri = f"file:{quote(str(self.db_path.resolve()))}?mode=ro"
        last_error = ""
        for attempt in range(self.lock_retries + 1):
            try:
                connection = sqlite3.connect(uri, uri=True, timeout=self.lock_wait)
            except sqlite3.Error as exc:
                self._warn(f"InvokeAI database {self.db_path}: cannot open ({exc}); carrying on without InvokeAI")
                return None
            try:
                return [(str(key), str(config)) for key, config in connection.execute("SELECT id, config FROM models")]
            except sqlite3.OperationalError as exc:
                last_error = str(exc)
                if "locked" not in last_error and "busy" not in last_error:
                    self._warn(
                        f"InvokeAI database {self.db_path}: cannot read models ({exc}); carrying on without InvokeAI"
                    )
                    return None
            except sqlite3.DatabaseError as exc:
                self._warn(f"InvokeAI database {self.db_path}: unreadable ({exc}); carrying on without InvokeAI")
                return None
            finally:
                connection.close()
            if attempt < self.lock_retries:
                time.sleep(self.lock_wait)
        self._warn(f"InvokeAI database {self.db_path} is locked ({last_error}); carrying on without InvokeAI for now")
        return None

    def _parse(self, rows: list[tuple[str, str]]) -> Iterator[InvokeAIModel]:
        for key, text in rows:
            try:
                config = json.loads(text)
            except ValueError:
                log.debug("InvokeAI model %s: config is not JSON, skipped", key)
                continue
            if not isinstance(config, dict):
                continue
            raw_path = config.get("path")
            if not isinstance(raw_path, str) or not raw_path or raw_path.startswith("external://"):
                continue  # API models have no file
            path = Path(raw_path)
            if not path.is_absolute():
                if self.models_dir is None:
                    continue
                path = self.models_dir / path
            if any(part.startswith("tmpinstall_") for part in path.parts):
                continue  # an install in progress
            size = config.get("file_size")
            yield InvokeAIModel(
                key=str(config.get("key") or key),
                name=str(config.get("name") or ""),
                source=str(config.get("source") or ""),
                source_type=str(config.get("source_type") or ""),
                path=Path(os.path.normpath(path)),
                file_size=size if isinstance(size, int) and not isinstance(size, bool) and size > 0 else None,
            )

    def find(self, repo: str | None, path: str | None, url: str | None = None, size: int | None = None) -> Path | None:
        """The absolute path of an installed file with this content, or None.

        ``repo``/``path`` name the file in a Hub repo (either may be None for a plain URL); ``url`` is the URL the
        Wan2GP definition gives; ``size`` (bytes), when known, must match.
        """
        wanted_url = hfurl.normalize(url) if url else None
        if wanted_url and (repo is None or path is None):
            from_url = _hf_file_of_url(wanted_url)
            if from_url is not None:
                repo, path = from_url
        path = path.strip("/") if path else None
        for finder in (self._by_source, self._inside_folder, self._by_name_and_size):
            hit = finder(repo, path, wanted_url, size)
            if hit is not None:
                return hit
        return None

    def _usable(self, candidate: Path, size: int | None) -> Path | None:
        """``candidate`` if it is a regular file inside InvokeAI's models folder (after symlinks) of ``size``.

        A row of InvokeAI's database is data, not a promise: one pointing elsewhere (``/root/secret``, another
        user's file) is never linked or copied into Wan2GP's folder."""
        if self.models_dir is None:
            return None
        models = os.path.realpath(self.models_dir)
        real = os.path.realpath(candidate)
        if os.path.commonpath([models, real]) != models or real == models:
            return None
        try:
            if not candidate.is_file():
                return None
            if size is not None and candidate.stat().st_size != size:
                return None
        except OSError:
            return None
        return candidate

    def _single_file(self, model: InvokeAIModel, size: int | None) -> Path | None:
        """The model's own file (a single-file install), if it is one."""
        return self._usable(model.path, size) if model.path.is_file() else None

    def _by_source(self, repo: str | None, path: str | None, url: str | None, size: int | None) -> Path | None:
        for model in self.models:
            if url and "://" in model.source and hfurl.normalize(model.source) == url:
                hit = self._single_file(model, size)
                if hit is not None:
                    return hit
            if repo is None or path is None:
                continue
            parsed = parse_source(model.source)
            if parsed is not None:
                source_repo, _variant, sub = parsed
                if source_repo.lower() == repo.lower() and sub == path:
                    hit = self._single_file(model, size)
                    if hit is not None:
                        return hit
            elif "://" in model.source:
                from_url = _hf_file_of_url(hfurl.normalize(model.source))
                if from_url is not None and from_url[0].lower() == repo.lower() and from_url[1] == path:
                    hit = self._single_file(model, size)
                    if hit is not None:
                        return hit
        return None

    def _inside_folder(self, repo: str | None, path: str | None, url: str | None, size: int | None) -> Path | None:
        if repo is None or path is None:
            return None
        for model in self.models:
            parsed = parse_source(model.source)
            if parsed is None:
                page = hfurl.normalize(model.source) if "://" in model.source else ""
                # A repo page URL (https://huggingface.co/Org/Repo) installs the whole repo.
                if page.rstrip("/").lower() != f"https://huggingface.co/{repo}".lower():
                    continue
                subs: list[str | None] = [None]
            else:
                source_repo, _variant, sub = parsed
                if source_repo.lower() != repo.lower():
                    continue
                subs = [part.strip("/") for part in sub.split("+")] if sub else [None]  # "a+b": several subfolders
            if not model.path.is_dir():
                continue
            for sub_folder in subs:
                if sub_folder is None:
                    relative = path
                elif path.startswith(sub_folder + "/"):
                    # Subfolder installs put the subfolder's content at the top of the model folder (or under
                    # its own name when several subfolders were installed together).
                    relative = path[len(sub_folder) + 1 :]
                else:
                    continue
                for candidate in (model.path / relative, model.path / path):
                    hit = self._usable(candidate, size)
                    if hit is not None:
                        return hit
        return None

    def _by_name_and_size(self, repo: str | None, path: str | None, url: str | None, size: int | None) -> Path | None:
        if size is None:
            return None  # a name alone is too weak
        name = Path(path).name if path else (Path(urlsplit(url).path).name if url else "")
        if not name:
            return None
        repo_short = repo.split("/")[-1] if repo else None
        # InvokeAI saves Org/Repo::dir/file.safetensors as Repo_file.safetensors.
        names = {name, f"{repo_short}_{name}"} if repo_short else {name}
        for model in self.models:
            if model.file_size is not None and model.file_size != size:
                continue
            if model.path.name in names:
                hit = self._single_file(model, size)
                if hit is not None:
                    return hit
        return None
