"""Human renderings of daemon answers. No click here: the fast path (wangpctl/main.py) uses it too."""

from __future__ import annotations

import os
import time
from typing import Any

from wangpctl import fmt

__all__ = ["job_rows", "limit", "status"]


def status(status: dict[str, Any]) -> str:
    c = fmt.use_colour()
    counts = status["counts"]
    limit = status["limit"]
    lines = [
        f"wangpd {status['version']}  {fmt.colour(status['state'], 'yellow' if status['paused'] else 'green', c)}"
        f"  (pid {status['pid']}, up {fmt.duration(status['uptime'])})",
        "queue       "
        + "  ".join(
            f"{label} {fmt.colour(str(counts[key]), fmt.STATE_COLOURS.get(key), c and counts[key] > 0)}"
            for label, key in (
                ("pending", "queued"),
                ("downloading", "downloading"),
                ("complete", "complete"),
                ("failed", "failed"),
                ("needs approval", "needs_approval"),
                ("paused", "paused"),
            )
        ),
        f"speed       {fmt.rate(status['speed'], '0 B/s')}   limit {fmt.rate(limit['limit'])} ({limit['source']}"
        + (f", next change {limit['next_change'][11:16]}" if limit.get("next_change") else "")
        + ")",
        f"remaining   {fmt.bytes_(status['remaining_bytes'])}   "
        f"eta {fmt.eta(status['remaining_bytes'], status['speed'])}",
        f"disk free   Wan2GP {fmt.bytes_(status['disk_free']['wan2gp'])}   HF cache "
        f"{fmt.bytes_(status['disk_free']['hf_cache'])}",
    ]
    watcher = status.get("watcher") or {}
    if watcher:
        lines.append(
            f"watcher     {watcher.get('state')}" + (f" ({watcher['reason']})" if watcher.get("reason") else "")
        )
    policy = status.get("auto_queue")
    if policy:
        lines.append(
            f"auto-queue  track {policy['track']}, new models {policy['new_models']}, cap "
            f"{fmt.bytes_(policy['max_auto_bytes'])}"
            + (", approval required" if policy.get("require_approval") else "")
        )
    for batch, info in (status.get("batches") or {}).items():
        lines.append(
            f"approval    batch {batch or '-'}: {info['jobs']} files, {fmt.bytes_(info['bytes'])} "
            f"(wangpctl approve {batch} / wangpctl reject {batch})"
        )
    lines.append(f"wan2gp      {status['wan2gp_directory']}")
    for error in status.get("last_errors") or []:
        when = time.strftime("%H:%M:%S", time.localtime(error["time"]))
        job = f"job {error['id']}: " if error.get("id") else ""
        lines.append(fmt.colour(f"error       {when} {job}{error['message']}", "red", c))
    return "\n".join(lines)


def job_rows(jobs: list[dict[str, Any]], c: bool) -> list[list[str]]:
    rows = []
    for job in jobs:
        size = job["size"]
        done = job["bytes_done"]
        if job["state"] == "complete":
            progress = "100%"
        elif size:
            progress = f"{100 * done / size:.0f}%"
        else:
            progress = "-"
        remaining = (size - done) if size else None
        models = ",".join(job["wanted_by"][:2]) + ("+" if len(job["wanted_by"]) > 2 else "")
        reason = job["last_error"] or (job["source"] and f"via {job['source']}") or ""
        rows.append(
            [
                str(job["id"]),
                fmt.colour(job["state"], fmt.STATE_COLOURS.get(job["state"]), c),
                progress,
                fmt.bytes_(size) if size else "?",
                fmt.rate(job["speed"], "-") if job["state"] == "downloading" else "-",
                fmt.eta(remaining, job["speed"]) if job["state"] == "downloading" else "-",
                os.path.basename(job["target"]),
                models or "-",
                reason[:60],
            ]
        )
    return rows


def limit(r: dict[str, Any]) -> str:
    text = f"limit {fmt.rate(r['limit'])} ({r['source']})"
    if r.get("next_change"):
        text += f"; schedule switches at {r['next_change'][:16].replace('T', ' ')}"
    days = "MTWTFSS"
    for window in r.get("schedule") or []:
        mask = "".join(days[i] if i in window["days"] else "-" for i in range(7))
        text += f"\n  {mask} {window['from']}-{window['to']} {fmt.rate(window['limit'])}"
    return text
