"""What the "Model downloads" tab shows, as plain strings and rows (no gradio here: tests read these directly)."""

from __future__ import annotations

import os
from typing import Any

from . import fmt
from .client import Client, Reply

__all__ = [
    "MODEL_HEADERS",
    "QUEUE_HEADERS",
    "QUEUE_STATES",
    "held_line",
    "model_rows",
    "queue_rows",
    "status_line",
]

QUEUE_HEADERS = ["#", "File", "State", "Progress", "Size", "Speed", "ETA", "Models", "Note"]
MODEL_HEADERS = ["Type", "Name", "Files", "Missing", "Kept", "Why"]
QUEUE_STATES = ["downloading", "queued", "paused", "needs_approval", "failed"]


def status_line(reply: Reply, root: str) -> str:
    """One Markdown line: the daemon's state, counts, speed and limit; or that it is not running and how to start
    it; or that it manages another Wan2GP folder."""
    if not reply.ok:
        if reply.not_running:
            return f"⚠️ **{reply.error}**"
        return f"⚠️ wangpd answered an error: {reply.error}"
    status = reply.result or {}
    counts = status.get("counts") or {}
    limit = status.get("limit") or {}
    state = "**paused**" if status.get("paused") else "running"
    parts = [
        f"wangpd {status.get('version', '?')} {state}",
        f"{counts.get('downloading', 0)} downloading, {counts.get('queued', 0)} queued, "
        f"{counts.get('needs_approval', 0)} awaiting approval, {counts.get('failed', 0)} failed",
        fmt.rate(status.get("speed"), "0 B/s"),
        f"limit {fmt.rate(limit.get('limit'))}" + (f" ({limit['source']})" if limit.get("source") else ""),
    ]
    if status.get("remaining_bytes"):
        parts.append(f"{fmt.bytes_(status['remaining_bytes'])} left")
    line = " · ".join(parts)
    managed = status.get("wan2gp_directory")
    if managed and os.path.realpath(managed) != os.path.realpath(root):
        line += f"  \n⚠️ this wangpd manages {managed}, not this Wan2GP ({root}): Wan2GP downloads its own files"
    if status.get("store_error"):
        line += f"  \n⚠️ {status['store_error']}"
    return line


def held_line(reply: Reply) -> str:
    if not reply.ok:
        return ""
    batches = (reply.result or {}).get("batches") or {}
    if not batches:
        return "Nothing is held for approval."
    held = [f"**{name or 'unbatched'}**: {b['jobs']} files, {fmt.bytes_(b['bytes'])}" for name, b in batches.items()]
    return "Held for approval: " + "; ".join(held)


def _relative(target: str, root: str | None) -> str:
    if root:
        try:
            relative = os.path.relpath(target, root)
            if not relative.startswith(".."):
                return relative
        except ValueError:
            pass
    return target


def queue_rows(reply: Reply, root: str | None) -> list[list[Any]]:
    """The queue as rows of :data:`QUEUE_HEADERS` (a ``queue.list`` reply)."""
    if not reply.ok:
        return []
    rows = []
    for job in (reply.result or {}).get("jobs", []):
        size, done, speed = job.get("size"), job.get("bytes_done") or 0, job.get("speed") or 0
        downloading = job["state"] == "downloading"
        note = job.get("last_error") or (f"batch {job['batch']}" if job.get("batch") else "")
        rows.append(
            [
                job["id"],
                _relative(job["target"], root),
                job["state"],
                fmt.percent(done, size) if size else (fmt.bytes_(done) if done else "-"),
                fmt.bytes_(size) if size else "-",
                fmt.rate(speed, "") if downloading else "",
                fmt.eta((size or 0) - done, speed) if downloading and size else "",
                ", ".join(job.get("wanted_by") or []),
                note,
            ]
        )
    return rows


def model_rows(reply: Reply) -> list[list[Any]]:
    """The models as rows of :data:`MODEL_HEADERS` (a ``models.list`` reply)."""
    if not reply.ok:
        return []
    rows = []
    for model in (reply.result or {}).get("models", []):
        missing = str(model.get("missing") or "-")
        if model.get("missing") and model.get("missing_bytes") is not None:
            missing += f" ({fmt.bytes_(model['missing_bytes'])})"
        if model.get("error"):
            missing = f"error: {model['error']}"
        kept = f"since {fmt.when(model['kept_since'])}" if model.get("kept_since") else ""
        rows.append(
            [
                model["type"],
                model.get("name") or "",
                f"{model.get('present', 0)}/{model.get('total', 0)}",
                missing,
                kept or ("yes" if model.get("tracked") else ""),
                model.get("tracked") or "",
            ]
        )
    return rows


def fetch_queue(client: Client) -> Reply:
    return client.call("queue.list", {"state": QUEUE_STATES, "limit": 200})
