"""Where files come from, shared by planning and the engine: the Hub (metadata), the HF cache, InvokeAI and the
user's other model libraries.

Built once by the daemon and handed to both the keeper (which asks *is this file already somewhere?* and *how big
is it?*) and the engine (which fetches, reuses and links). Neither owns these resources, so neither has to ask the
other for them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from wangpd.config import Config
from wangpd.errors import StoreError, TransferError
from wangpd.hfcache import HFCache
from wangpd.hub import Hub
from wangpd.invokeai import InvokeAIIndex
from wangpd.libraries import LibraryIndex
from wangpd.models import FileMeta, WantedFile
from wangpd.store import Store

__all__ = ["Sources"]

log = logging.getLogger(__name__)

SIZE_REQUESTS = 8  # metadata requests in flight at once when surveying sizes


class Sources:
    """The Hub client, the HF cache and the InvokeAI index of one config, plus the metadata memory in the store."""

    def __init__(self, config: Config, store: Store) -> None:
        self.config = config
        self.store = store
        self.hub = Hub(config.hub)
        self.cache = HFCache(config.hub.cache_dir)
        self.invokeai = InvokeAIIndex(config.invokeai.db, config.invokeai.models_dir)
        self._warned_invokeai: str | None = None
        self._invokeai_count: int | None = None
        self.library = LibraryIndex(config.libraries.folders, store.library_hashes())
        # What the Hub said each LFS file is (size, sha256): read by planning threads, written on the loop's.
        self._hub_hashes: dict[tuple[str, str, str], tuple[int, str]] = store.known_hashes()
        self._library_warnings = 0

    def reconfigure(self, config: Config) -> None:
        """A reloaded config: a new endpoint, cache or InvokeAI database applies to the next question asked."""
        old, self.config = self.config, config
        if config.hub != old.hub:
            self.hub = Hub(config.hub)
            self.cache = HFCache(config.hub.cache_dir)
        if config.invokeai != old.invokeai:
            self.invokeai = InvokeAIIndex(config.invokeai.db, config.invokeai.models_dir)
            self.refresh_invokeai()
        if config.libraries != old.libraries:  # the caller scans it (scan_libraries), off the loop
            self.library = LibraryIndex(config.libraries.folders, self.library.hashes)
            self._library_warnings = 0

    def refresh_invokeai(self) -> None:
        """Re-read InvokeAI's model list (cheap: one SELECT); log only what changed. Blocking: run in a thread."""
        if self.invokeai.db_path is None:
            return
        count = self.invokeai.refresh()
        if self.invokeai.warning:
            if self.invokeai.warning != self._warned_invokeai:
                log.warning("InvokeAI: %s", self.invokeai.warning)
                self._warned_invokeai = self.invokeai.warning
        elif count != self._invokeai_count:
            log.info("InvokeAI: %d model(s) in %s can be reused", count, self.invokeai.db_path)
            self._warned_invokeai = None
        self._invokeai_count = count

    def linkable(self, wanted: WantedFile) -> str | None:
        """Where a wanted file already is without downloading: ``"hf-cache"``, ``"invokeai"``, ``"library"`` (a
        library file already hashed to the Hub's sha256; planning never reads a file), or None."""
        if wanted.repo and not wanted.whole_folder:
            cached = self.in_cache(wanted.repo, wanted.revision, wanted.path_in_repo)
            if cached is None:  # a path the cache refuses (e.g. '..'): the download will fail with the reason
                return None
            if cached:
                return "hf-cache"
            if self.invokeai.find(wanted.repo, wanted.path_in_repo, wanted.url, None) is not None:
                return "invokeai"
            known = self._hub_hashes.get((wanted.repo, wanted.revision, wanted.path_in_repo))
            if known is not None and self.library.known(*known) is not None:
                return "library"
        return None

    def remember(self, meta: FileMeta) -> None:
        """Keep what the Hub said about a file (``hf_file_cache``), for sizes and the approval cap."""
        if meta.repo:
            self.store.put_meta(replace(meta, fetched_at=time.time()))
            if meta.size is not None and meta.sha256 is not None and len(meta.sha256) == 64:
                self._hub_hashes[(meta.repo, meta.revision, meta.path)] = (meta.size, meta.sha256)

    # ---- other libraries ---------------------------------------------------------------------------------------

    async def scan_libraries(self) -> int:
        """List the library folders (one stat a file, in a thread); new problems are logged once each."""
        if not self.library.folders:
            return 0
        count = await asyncio.to_thread(self.library.scan)
        for warning in self.library.warnings[self._library_warnings :]:
            log.warning("libraries: %s", warning)
        self._library_warnings = len(self.library.warnings)
        log.info(
            "libraries: %d model-sized file(s) in %s",
            count,
            ", ".join(str(folder) for folder in self.library.folders),
        )
        return count

    def in_cache(self, repo: str, revision: str, path: str) -> bool | None:
        """Whether the file is complete in the HF cache (the first place to take it from); None for a path the
        cache refuses."""
        try:
            return self.cache.find_cached(repo, revision, path) is not None
        except ValueError:
            return None

    def library_candidate(self, size: int | None) -> bool:
        """Whether some library file has exactly this size (cheap: no disk access): only then is a library
        worth a look, and a hash worth computing."""
        return size is not None and bool(self.library.candidates(size))

    async def find_in_library(self, size: int, sha256: str) -> Path | None:
        """A library file with this size and sha256 (hashing candidates not hashed yet, in a thread)."""
        found = await asyncio.to_thread(self.library.find, size, sha256)
        self.save_library_hashes()
        return found

    async def prefetch_library(self, files: Sequence[WantedFile]) -> int:
        """Hash ahead the library files whose size matches a missing wanted file, so that planning sees them as
        linkable; each file is read at most once (the hash is kept by device, inode, size and mtime)."""
        wanted = [
            known
            for item in files
            if item.repo
            and (known := self._hub_hashes.get((item.repo, item.revision, item.path_in_repo)))
            and self.library_candidate(known[0])
        ]
        if not wanted:
            return 0
        hashed = await asyncio.to_thread(self.library.prefetch, wanted)
        self.save_library_hashes()
        return hashed

    def save_library_hashes(self) -> None:
        rows = self.library.drain_new_hashes()
        if rows:
            try:
                self.store.put_library_hashes(rows)
            except StoreError as exc:  # a cache only: the next start reads those files again
                log.warning("libraries: could not keep %d file hash(es): %s", len(rows), exc)

    async def fetch_sizes(self, files: Sequence[WantedFile]) -> None:
        """Ask the Hub for the size (and sha256) of files not asked recently, a few at a time; remembered.

        Raises the first error; once the Hub looks unreachable (a retryable error with no Retry-After) the rest
        are not asked, so an offline Hub costs one timeout, not one per file.
        """
        semaphore = asyncio.Semaphore(SIZE_REQUESTS)
        max_age = self.config.hub.metadata_max_age
        unreachable: list[BaseException] = []

        async def one(wanted: WantedFile) -> None:
            if not wanted.repo or wanted.whole_folder:
                return
            if self.store.get_meta(wanted.repo, wanted.revision, wanted.path_in_repo, max_age) is not None:
                return
            async with semaphore:
                if unreachable:
                    raise unreachable[0]
                try:
                    meta = await self.hub.file_metadata(wanted.repo, wanted.revision, wanted.path_in_repo)
                except TransferError as exc:
                    if exc.retryable and exc.retry_after is None:
                        unreachable.append(exc)
                    raise
            self.remember(meta)

        results = await asyncio.gather(*(one(w) for w in files), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise errors[0]
