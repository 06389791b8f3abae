"""The HuggingFace Hub, through huggingface_hub: file metadata, folder listings, token discovery, error mapping.

This is the only module that imports huggingface_hub. The bytes themselves move through :mod:`wangpd.download`
(aiohttp, so the shared limiter shapes them); this module only asks the Hub *what* to download and *where from*.

Tokens: huggingface_hub finds one (``HF_TOKEN``, the token saved by ``hf auth login``) unless
``hub.token_file`` names one. A token is only ever sent to the configured endpoint's origin and never appears
in a log line, an error message or a ``repr``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from email.utils import parsedate_to_datetime
from pathlib import Path
from urllib.parse import quote, urlsplit

import huggingface_hub
from huggingface_hub import constants as hf_constants
from huggingface_hub import errors as hf_errors

from wangpd.config import HubConfig
from wangpd.errors import TransferError
from wangpd.hfurl import same_origin
from wangpd.models import SHA256_RE, FileMeta

__all__ = ["Hub", "parse_retry_after"]

log = logging.getLogger(__name__)


def parse_retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or HTTP date), or None."""
    value = (headers or {}).get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


class Hub:
    """Asks the Hub about files. One per daemon; safe to call from many tasks at once."""

    def __init__(self, config: HubConfig) -> None:
        self.endpoint = config.endpoint.rstrip("/")
        # huggingface_hub asks its module-wide ENDPOINT (HF_ENDPOINT, else huggingface.co) for an "agent harnesses"
        # registry once per process, whatever endpoint a call is given: with a mirror, or a test hub, it must not
        # resolve or contact huggingface.co. Every call here names its endpoint, so the module-wide one may follow.
        hf_constants.ENDPOINT = self.endpoint
        self.timeout = config.request_timeout
        self._token: str | None = None
        if config.token_file is not None:
            # Read once at startup, like the rest of the config; a bad file is a config problem.
            self._token = Path(config.token_file).read_text(encoding="utf-8").strip() or None
        else:
            self._token = huggingface_hub.get_token()
        self._endpoint_host = (urlsplit(self.endpoint).hostname or "").lower()

    @property
    def has_token(self) -> bool:
        """Whether a token will be sent (the token itself is never exposed)."""
        return bool(self._token)

    def resolve_url(self, repo: str, revision: str, path: str) -> str:
        """The ``/resolve/`` URL of a file on the configured endpoint (built here: huggingface_hub's hf_hub_url
        starts from its module-wide endpoint, which follows this one, see __init__)."""
        return f"{self.endpoint}/{repo}/resolve/{quote(revision, safe='')}/{quote(path)}"

    def auth_headers(self, location: str) -> dict[str, str]:
        """Headers for a GET of ``location``: the token only if it is on the Hub's own origin."""
        if self._token and same_origin(location, self.endpoint):
            return {"Authorization": f"Bearer {self._token}"}
        return {}

    async def file_metadata(self, repo: str, revision: str, path: str) -> FileMeta:
        """HEAD the file on the Hub (in a thread: huggingface_hub is synchronous).

        Raises TransferError: ``retryable=False`` for auth, gated and not-found problems (with what to do),
        ``retryable=True`` for 429 (with ``retry_after``), 5xx and network errors.
        """
        url = self.resolve_url(repo, revision, path)
        try:
            meta = await asyncio.to_thread(
                huggingface_hub.get_hf_file_metadata,
                url,
                token=self._token or False,
                timeout=self.timeout,
                endpoint=self.endpoint,
            )
        except Exception as exc:
            raise self._map_error(exc, repo, revision, path) from None
        etag = (meta.etag or "").strip()
        if not meta.commit_hash:
            raise TransferError(
                f"{repo}@{revision}/{path}: {self.endpoint} sent no X-Repo-Commit header; is it a HuggingFace Hub "
                "(or a mirror of one)? Check hub.endpoint / HF_ENDPOINT",
                retryable=False,
            )
        if not etag:
            raise TransferError(f"{repo}@{revision}/{path}: the Hub sent no ETag for the file", retryable=True)
        location = meta.location or url
        return FileMeta(
            repo=repo,
            revision=revision,
            path=path,
            size=meta.size,
            sha256=etag.lower() if SHA256_RE.fullmatch(etag.lower()) else None,
            etag=etag,
            commit=meta.commit_hash,
            location=location,
            url=url,
            headers=self.auth_headers(location),
        )

    async def list_folder(self, repo: str, revision: str, folder: str) -> list[tuple[str, int | None]]:
        """Every file (path in repo, size) under ``folder`` of the repo, recursively: what Wan2GP's
        ``snapshot_download(allow_patterns="<folder>*")`` would fetch. Raises TransferError like file_metadata."""
        prefix = folder.strip("/")
        api = huggingface_hub.HfApi(endpoint=self.endpoint, token=self._token or False)

        def listing() -> list[tuple[str, int | None]]:
            entries = api.list_repo_tree(repo, path_in_repo=prefix or None, revision=revision, recursive=True)
            return [
                (entry.path, getattr(entry, "size", None))
                for entry in entries
                if isinstance(entry, huggingface_hub.hf_api.RepoFile)
            ]

        try:
            return await asyncio.to_thread(listing)
        except Exception as exc:
            raise self._map_error(exc, repo, revision, prefix + "/") from None

    def _scrub(self, text: str) -> str:
        return text.replace(self._token, "***") if self._token else text

    def _map_error(self, exc: Exception, repo: str, revision: str, path: str) -> TransferError:
        where = f"{repo}@{revision}/{path}"
        page = f"{self.endpoint}/{repo}"
        login = "run `hf auth login` or set HF_TOKEN" if not self._token else "check that your token is valid"
        if isinstance(exc, hf_errors.GatedRepoError):
            return TransferError(
                f"{where}: {repo} is gated: accept its licence on {page} with your account, then {login}",
                retryable=False,
            )
        if isinstance(exc, hf_errors.RepositoryNotFoundError):
            return TransferError(
                f"{where}: repository not found or not accessible; check the URL, and if it is private or gated "
                f"{login}",
                retryable=False,
            )
        if isinstance(exc, hf_errors.RevisionNotFoundError):
            return TransferError(f"{where}: revision {revision!r} not found on {page}; check the URL", retryable=False)
        if isinstance(exc, hf_errors.EntryNotFoundError):
            return TransferError(f"{where}: file not found in the repository; check the URL", retryable=False)
        if isinstance(exc, hf_errors.OfflineModeIsEnabled):
            return TransferError(f"{where}: HF_HUB_OFFLINE is set, cannot ask the Hub", retryable=False)
        if isinstance(exc, hf_errors.HfHubHTTPError):
            response = getattr(exc, "response", None)
            status = getattr(response, "status_code", None)
            headers = getattr(response, "headers", None)
            if status in (401, 403):
                return TransferError(
                    f"{where}: access denied ({status}); {login}, and accept the licence on {page} if it has one",
                    retryable=False,
                )
            if status == 404:
                return TransferError(f"{where}: not found (404); check the URL", retryable=False)
            if status == 429:
                return TransferError(
                    f"{where}: the Hub is rate limiting (429)", retryable=True, retry_after=parse_retry_after(headers)
                )
            if status is not None and 400 <= status < 500:
                return TransferError(f"{where}: the Hub refused the request ({status})", retryable=False)
            return TransferError(
                f"{where}: Hub error {status or ''}".rstrip(), retryable=True, retry_after=parse_retry_after(headers)
            )
        if not isinstance(exc, OSError | TimeoutError) and not type(exc).__module__.startswith("httpx"):
            raise exc  # a bug, not the network: let it surface with its traceback
        # Network trouble (transport errors of huggingface_hub's HTTP client, OSError, timeouts) is worth retrying.
        detail = self._scrub(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        log.debug("metadata for %s failed: %s: %s", where, type(exc).__name__, detail)
        return TransferError(f"{where}: cannot reach {self.endpoint}: {detail}", retryable=True)
