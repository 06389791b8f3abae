"""Where files come from, shared by planning and the engine: the Hub (metadata), the HF cache and InvokeAI.

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

from wangpd.config import Config
from wangpd.errors import TransferError
from wangpd.hfcache import HFCache
from wangpd.hub import Hub
from wangpd.invokeai import InvokeAIIndex
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

    def reconfigure(self, config: Config) -> None:
        """A reloaded config: a new endpoint, cache or InvokeAI database applies to the next question asked."""
        old, self.config = self.config, config
        if config.hub != old.hub:
            self.hub = Hub(config.hub)
            self.cache = HFCache(config.hub.cache_dir)
        if config.invokeai != old.invokeai:
            self.invokeai = InvokeAIIndex(config.invokeai.db, config.invokeai.models_dir)
            self.refresh_invokeai()

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
        """Where a wanted file already is without downloading: ``"hf-cache"``, ``"invokeai"``, or None."""
        if wanted.repo and not wanted.whole_folder:
            try:
                if self.cache.find_cached(wanted.repo, wanted.revision, wanted.path_in_repo) is not None:
                    return "hf-cache"
            except ValueError:  # a path the cache refuses (e.g. '..'): the download will fail with the reason
                return None
            if self.invokeai.find(wanted.repo, wanted.path_in_repo, wanted.url, None) is not None:
                return "invokeai"
        return None

    def remember(self, meta: FileMeta) -> None:
        """Keep what the Hub said about a file (``hf_file_cache``), for sizes and the approval cap."""
        if meta.repo:
            self.store.put_meta(replace(meta, fetched_at=time.time()))

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
