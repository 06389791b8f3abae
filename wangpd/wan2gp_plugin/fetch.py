"""Wan2GP waits for wangpd instead of downloading a file a second time.

:class:`Fetcher` wraps Wan2GP's ``download_file``, ``process_files_def`` and ``download_models``. Before the
original runs, a file Wan2GP is about to fetch is asked of wangpd (``queue.add`` with the URL or repo + path and the
target Wan2GP would write), put at the top of the queue, and waited for while it makes progress; then the original
runs and finds the file present. When wangpd is not running, answers an error, manages another Wan2GP folder, is
paused, or makes no progress for ``stall_timeout`` seconds, the original runs as it would without the plugin, after
one log line saying why. Nothing here raises into Wan2GP: an internal error is logged and the original runs.
"""

from __future__ import annotations

import functools
import os
import posixpath
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import fmt
from .client import Client
from .settings import Settings

__all__ = ["Fetcher", "Wanted", "queue_top"]

_FINISHED_BAD = ("failed", "cancelled")
_APPEAR_GRACE = 5.0  # seconds a completed job's file may take to appear (the link is made as the job completes)


@dataclass(frozen=True)
class Wanted:
    """One file Wan2GP is about to download: from ``url``, or from ``repo`` + ``path``; to ``target`` (absolute)."""

    target: str
    url: str | None = None
    repo: str | None = None
    path: str | None = None


def _argument(args: tuple, kwargs: dict, index: int, name: str) -> Any:
    return kwargs[name] if name in kwargs else (args[index] if len(args) > index else None)


def _aborted(gen: Any) -> bool:
    """Wan2GP's own cancel flags (shared/utils/download_progress.py: ``gen["abort"]``, ``gen["abort_callback"]``)."""
    if not isinstance(gen, dict):
        return False
    try:
        callback = gen.get("abort_callback")
        return bool(gen.get("abort", False) or (callback is not None and callback()))
    except Exception:
        return False


class Fetcher:
    """``root``: the Wan2GP folder (its cwd: Wan2GP's relative paths are relative to it). ``checkpoints``: returns
    Wan2GP's ``checkpoints_paths`` (where it looks for files). ``log``: one line to Wan2GP's console."""

    def __init__(
        self,
        client: Client,
        settings: Settings,
        root: str,
        log: Callable[[str], None],
        checkpoints: Callable[[], list[str]] = lambda: ["ckpts", "."],
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.client = client
        self.settings = settings
        self.root = os.path.realpath(root)
        self.log = log
        self.checkpoints = checkpoints
        self.sleep = sleep
        self._models_asked: dict[str, float] = {}

    # ---- the wrappers ----------------------------------------------------------------------------------------------

    def wrap_download_file(self, original: Callable[..., Any]) -> Callable[..., Any]:
        """``download_file(url, filename, gen=None, ...)``: one file from a URL (``|subdir`` stripped) to
        ``filename`` (relative to the cwd). When wangpd brought the file, the original is not called."""

        @functools.wraps(original)
        def download_file(*args: Any, **kwargs: Any) -> Any:
            try:
                url, filename = _argument(args, kwargs, 0, "url"), _argument(args, kwargs, 1, "filename")
                if isinstance(url, str) and isinstance(filename, str) and filename:
                    wanted = Wanted(target=os.path.abspath(filename), url=url.split("|")[0])
                    if self.wait_for([wanted], kwargs.get("gen")):
                        # Unlike download_models and process_files_def, download_file does not look before it
                        # fetches (its callers do): calling it now would download the file a second time.
                        return None
            except Exception as exc:
                self.log(f"internal error ({exc!r}); Wan2GP downloads the file itself")
            return original(*args, **kwargs)

        download_file.__wangpd_wrapped__ = True  # type: ignore[attr-defined]
        return download_file

    def wrap_process_files_def(self, original: Callable[..., Any]) -> Callable[..., Any]:
        """``process_files_def(repoId, sourceFolderList, fileList, targetFolderList=None, gen=None, ...)``: files
        of one repo; each lands in ``<root>/[targetFolder/]sourceFolder/file``. A whole folder (an empty file
        list) is left to Wan2GP."""

        @functools.wraps(original)
        def process_files_def(*args: Any, **kwargs: Any) -> Any:
            try:
                self.wait_for(self._repo_files(args, kwargs), kwargs.get("gen"))
            except Exception as exc:
                self.log(f"internal error ({exc!r}); Wan2GP downloads the files itself")
            return original(*args, **kwargs)

        process_files_def.__wangpd_wrapped__ = True  # type: ignore[attr-defined]
        return process_files_def

    def wrap_download_models(self, original: Callable[..., Any]) -> Callable[..., Any]:
        """``download_models(model_filename, model_type, ...)``: before Wan2GP asks for a model's files one by one,
        ask wangpd for all of them at once (they then download side by side); the wrapped ``download_file`` and
        ``process_files_def`` inside it do the waiting."""

        @functools.wraps(original)
        def download_models(*args: Any, **kwargs: Any) -> Any:
            try:
                model_file = _argument(args, kwargs, 0, "model_filename")
                model_type = _argument(args, kwargs, 1, "model_type")
                if isinstance(model_type, str) and model_type and isinstance(model_file, str) and model_file:
                    # Only when a download is coming: Wan2GP calls this at every model load, files present or not.
                    name = posixpath.basename(model_file.split("|")[0].split("?")[0])
                    if self.settings.wait and name and not self._located(name):
                        self.queue_model(model_type)
            except Exception as exc:
                self.log(f"internal error ({exc!r}) while queueing the model")
            return original(*args, **kwargs)

        download_models.__wangpd_wrapped__ = True  # type: ignore[attr-defined]
        return download_models

    # ---- what Wan2GP asks for --------------------------------------------------------------------------------------

    def _repo_files(self, args: tuple, kwargs: dict) -> list[Wanted]:
        repo = _argument(args, kwargs, 0, "repoId")
        sources = _argument(args, kwargs, 1, "sourceFolderList") or []
        file_lists = _argument(args, kwargs, 2, "fileList") or []
        targets = _argument(args, kwargs, 3, "targetFolderList") or [None] * len(sources)
        if not isinstance(repo, str):
            return []
        wanted = []
        for target_folder, source_folder, files in zip(targets, sources, file_lists, strict=False):
            target_folder = target_folder or None
            source_folder = source_folder or ""
            for name in files or []:
                relative = os.path.join(*(p for p in (target_folder, source_folder, name) if p))
                if self._located(relative):
                    continue
                root = self._download_root(target_folder or source_folder or None)
                target = os.path.join(root, *(p for p in (target_folder, source_folder, name) if p))
                in_repo = posixpath.join(source_folder, name) if source_folder else name
                wanted.append(Wanted(target=os.path.abspath(target), repo=repo, path=in_repo))
        return wanted

    def _located(self, relative: str) -> bool:
        """Wan2GP's own lookup (``files_locator.locate_file``) when importable, else every checkpoints path."""
        try:
            from shared.utils import files_locator  # type: ignore[import-not-found]

            return files_locator.locate_file(relative, error_if_none=False) is not None
        except Exception:
            return any(os.path.isfile(os.path.join(root, relative)) for root in self.checkpoints())

    def _download_root(self, explicit: str | None) -> str:
        try:
            from shared.utils import files_locator  # type: ignore[import-not-found]

            if hasattr(files_locator, "get_smart_download_root"):
                return str(files_locator.get_smart_download_root(explicit))
            return str(files_locator.get_download_location())
        except Exception:
            return (self.checkpoints() or ["ckpts"])[0]

    # ---- asking wangpd ----------------------------------------------------------------------------------------------

    def _usable(self) -> str | None:
        """None when wangpd can fetch for this Wan2GP now; else why not."""
        reply = self.client.call("status")
        if not reply.ok:
            return reply.error
        status = reply.result or {}
        managed = status.get("wan2gp_directory")
        if not managed or os.path.realpath(managed) != self.root:
            return f"wangpd manages the Wan2GP folder {managed}, not this one ({self.root})"
        if status.get("paused"):
            return "wangpd is paused (`wangpctl resume`)"
        return None

    def queue_model(self, model_type: str) -> None:
        """Queue every missing file of ``model_type`` at the top, without waiting for the answer (once a minute at
        most per model: Wan2GP calls ``download_models`` once per file of a model)."""
        now = time.monotonic()
        if now - self._models_asked.get(model_type, -1e9) < 60:
            return
        self._models_asked[model_type] = now
        if self._usable() is None:
            # In the background: planning a big model can take wangpd a while, and the files Wan2GP asks for next
            # are queued one by one anyway.
            threading.Thread(target=queue_top, args=(self.client, model_type), name="wangpd-queue", daemon=True).start()

    def wait_for(self, wanted: list[Wanted], gen: Any = None) -> bool:
        """Have wangpd fetch ``wanted`` and wait while it makes progress. Returns True when all the files are
        present; False when Wan2GP should fetch what is left itself (said in one log line)."""
        missing = [w for w in wanted if not os.path.isfile(w.target)]
        if not missing or not self.settings.wait:
            return not missing
        names = ", ".join(self._relative(w.target) for w in missing)
        why = self._usable()
        if why is not None:
            self.log(f"{why}; Wan2GP downloads {names} itself")
            return False
        jobs: dict[int, Wanted] = {}
        for one in missing:
            relative = self._relative(one.target)
            if relative.startswith(".."):
                self.log(f"{one.target} is outside the Wan2GP folder; Wan2GP downloads it itself")
                continue
            params = {"url": one.url} if one.url else {"repo": one.repo, "path": one.path}
            reply = self.client.call("queue.add", {**params, "target": relative})
            if not reply.ok:
                self.log(f"wangpd cannot fetch {relative} ({reply.error}); Wan2GP downloads it itself")
                continue
            job = reply.result["job"]
            if job["state"] in ("paused", "needs_approval"):
                self.log(f"{relative} is {job['state']} in wangpd (job {job['id']}); Wan2GP downloads it itself")
                continue
            self.client.call("job.priority", {"id": job["id"], "where": "top"})
            jobs[job["id"]] = one
        if jobs:
            try:
                self._wait(jobs, gen)
            finally:
                _clear_progress(gen)
        return all(os.path.isfile(w.target) for w in missing)

    def _wait(self, jobs: dict[int, Wanted], gen: Any) -> None:
        last_seen: dict[int, tuple[str, int]] = {}
        changed_at = time.monotonic()
        completed_at: dict[int, float] = {}
        failures = 0
        reported = 0.0
        while jobs:
            if _aborted(gen):
                return  # the original sees the same flag and stops the way Wan2GP stops a download
            rows = {}
            for job_id in list(jobs):
                reply = self.client.call("job.show", {"id": job_id})
                if not reply.ok:
                    failures += 1
                    if failures >= 3:
                        self.log(f"lost wangpd ({reply.error}); Wan2GP downloads {self._names(jobs)} itself")
                        return
                    continue
                failures = 0
                rows[job_id] = job = reply.result
                relative = self._relative(jobs[job_id].target)
                if (job["state"], job["bytes_done"]) != last_seen.get(job_id):
                    last_seen[job_id] = (job["state"], job["bytes_done"])
                    changed_at = time.monotonic()
                if job["state"] == "complete":
                    if os.path.isfile(jobs[job_id].target):
                        del jobs[job_id]
                    elif time.monotonic() - completed_at.setdefault(job_id, time.monotonic()) > _APPEAR_GRACE:
                        self.log(f"wangpd finished {relative} but it is not there; Wan2GP downloads it itself")
                        del jobs[job_id]
                elif job["state"] in _FINISHED_BAD or job["state"] == "paused":
                    reason = job.get("last_error") or job["state"]
                    self.log(f"wangpd did not fetch {relative} ({reason}); Wan2GP downloads it itself")
                    del jobs[job_id]
            if not jobs:
                break
            if time.monotonic() - changed_at > self.settings.stall_timeout:
                # Cancelled in wangpd, or both would fetch the file (and wangpd's copy would become a duplicate).
                for job_id in jobs:
                    self.client.call("job.cancel", {"id": job_id})
                self.log(
                    f"no progress from wangpd for {self.settings.stall_timeout:g} s; "
                    f"Wan2GP downloads {self._names(jobs)} itself (cancelled in wangpd)"
                )
                return
            pending = [rows[i] for i in jobs if i in rows]
            reported = _report(pending, gen, self.log, reported)
            self.sleep(self.settings.poll_interval)

    def _relative(self, target: str) -> str:
        return os.path.relpath(_norm(target), self.root)

    def _names(self, jobs: dict[int, Wanted]) -> str:
        return ", ".join(self._relative(w.target) for w in jobs.values())


def queue_top(client: Client, model_type: str) -> str | None:
    """Queue the missing files of ``model_type`` above everything queued, and move its files that were already
    queued (for another model, or with a lower priority) up there too. Returns an error, or None."""
    first = client.call("queue.list", {"limit": 1})
    if not first.ok:
        return first.error
    jobs = (first.result or {}).get("jobs") or []
    top = max(1, jobs[0]["priority"] + 1) if jobs else 1
    added = client.call("models.add", {"types": [model_type], "priority": top})
    if not added.ok:
        return added.error
    shown = client.call("models.show", {"type": model_type})
    if not shown.ok:
        return None  # queued; only the move up of shared files is missing
    needed = {f["local"] for f in shown.result.get("files", []) if f.get("status") != "present"}
    queued = client.call("queue.list", {"state": ["queued", "downloading"], "limit": 10000})
    managed = (shown.result or {}).get("wan2gp_dir") or ""
    needed_paths = {_norm(os.path.join(managed, local)) for local in needed}
    for job in (queued.result or {}).get("jobs", []) if queued.ok else []:
        if _norm(job["target"]) in needed_paths and job["priority"] < top:
            client.call("job.priority", {"id": job["id"], "where": top})
    return None


def _norm(path: str) -> str:
    """``path`` with its folder resolved, not the file (it may be wangpd's link into the HF cache)."""
    return os.path.join(os.path.realpath(os.path.dirname(path)), os.path.basename(path))


def _report(jobs: list[dict[str, Any]], gen: Any, log: Callable[[str], None], last: float) -> float:
    """Progress through the channel the original uses: ``gen["download_progress"]`` + its callback (Wan2GP 13),
    and a console line every few seconds (older Wan2GP prints progress to the console only)."""
    if not jobs:
        return last
    done = sum(job.get("bytes_done") or 0 for job in jobs)
    sizes = [job.get("size") for job in jobs]
    total = sum(sizes) if all(sizes) else None  # type: ignore[arg-type]
    speed = sum(job.get("speed") or 0 for job in jobs)
    first = posixpath.basename(jobs[0]["target"]) + (f" (+{len(jobs) - 1})" if len(jobs) > 1 else "")
    line = f"fetching via wangpd: {fmt.percent(done, total)}, {fmt.rate(speed, '0 B/s')}"
    if isinstance(gen, dict):
        report = {
            "filename": f"{first}, {line}",
            "completed": done,
            "total": total,
            "speed": speed,
            "file_index": 1,
            "file_count": len(jobs),
        }
        try:
            gen["download_progress"] = report
            callback = gen.get("download_progress_callback")
            if callback is not None:
                callback(report)
        except Exception:
            pass
    now = time.monotonic()
    if now - last >= 5.0:
        remaining = total - done if total is not None else None
        log(f"{first}: {line}, ETA {fmt.eta(remaining, speed)}")
        return now
    return last


def _clear_progress(gen: Any) -> None:
    if isinstance(gen, dict) and "download_progress" in gen:
        try:
            gen.pop("download_progress", None)
            callback = gen.get("download_progress_callback")
            if callback is not None:
                callback(None)
        except Exception:
            pass
