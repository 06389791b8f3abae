"""Human renderings of daemon answers, one function per command, named after it. No click here: the fast path
(wangpctl/main.py) uses it too, and the tests call these functions directly.

Each function takes the JSON result of its RPC call (what ``--json`` prints) plus whatever the command line added,
and returns the text to print. ``colour`` says whether to add ANSI colours; the CLI decides it (fmt.use_colour).
"""

from __future__ import annotations

import os
import time
from typing import Any

from wangpctl import fmt

__all__ = [
    "add",
    "approve",
    "clear",
    "doctor",
    "job_changed",
    "job_priority",
    "job_rows",
    "job_show",
    "limit",
    "models",
    "models_show",
    "pause_all",
    "plan",
    "plugin_install",
    "plugin_uninstall",
    "prune",
    "queue",
    "reject",
    "reload",
    "rescan",
    "resume_all",
    "service_install",
    "status",
    "unused",
    "version",
]


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
    if status.get("store_error"):
        # The one state in which the daemon looks alive but cannot go on: said on its own line, in red.
        lines.insert(
            1, "STALLED     " + fmt.colour(f"{status['store_error']}; nothing new starts until it clears", "red", c)
        )
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
    libraries = status.get("libraries")
    if libraries:
        lines.append(
            f"libraries   {libraries['state']}: {libraries['files']} file(s), {fmt.bytes_(libraries['bytes_indexed'])}"
            f" in {len(libraries['folders'])} folder(s); {libraries['hashed']} hashed"
            + (f", {fmt.bytes_(libraries['bytes_hashed'])} read" if libraries["bytes_hashed"] else "")
            + (f"; {len(libraries['warnings'])} warning(s)" if libraries["warnings"] else "")
        )
    lines.append(f"wan2gp      {status['wan2gp_directory']}")
    for error in status.get("last_errors") or []:
        when = time.strftime("%H:%M:%S", time.localtime(error["time"]))
        job = f"job {error['id']}: " if error.get("id") else ""
        lines.append(fmt.colour(f"error       {when} {job}{error['message']}", "red", c))
    return "\n".join(lines)


def version(r: dict[str, Any]) -> str:
    """``r``: the daemon's ``version`` answer with the CLI's own version added as ``client``."""
    return f"wangpctl {r['client']}\nwangpd   {r['version']} (protocol {r['protocol']})"


# ---- queue and jobs ----------------------------------------------------------------------------------------------


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


def queue(r: dict[str, Any], *, filtered: bool, colour: bool) -> str:
    """One page of ``queue.list``. ``filtered``: a --state or --model was given, so an empty page is not an empty
    queue. A footer says where the page sits when it is not the whole queue."""
    if not r["jobs"]:
        return "no matching jobs" if filtered else "queue is empty"
    headers = ["ID", "STATE", "DONE", "SIZE", "SPEED", "ETA", "FILE", "MODELS", "REASON"]
    text = fmt.table(headers, job_rows(r["jobs"], colour), right=(0, 2, 3, 4))
    shown = r["offset"] + len(r["jobs"])
    if shown < r["total"] or r["offset"]:
        text += f"\n{r['offset'] + 1}-{shown} of {r['total']} (--offset {shown} for more)"
    return text


def add(r: dict[str, Any]) -> str:
    """``r``: ``files`` (one ``queue.add`` answer per URL) and/or ``models`` (the ``models.add`` answer)."""
    lines = []
    for item in r.get("files", []):
        job = item["job"]
        verb = "queued" if item["created"] else f"already {job['state']}"
        lines.append(f"{verb}: job {job['id']} {job['repo'] or job['url']} {job['path']} -> {job['target']}")
    if "models" in r:
        m = r["models"]
        verb = "would queue" if m.get("dry_run") else "queued"
        lines.append(
            f"{verb} {m['files']} files, {fmt.bytes_(m['bytes'])}"
            + (f" ({m['unknown_size']} of unknown size)" if m.get("unknown_size") else "")
            + f" for {', '.join(m['models'])}"
        )
        for error in m.get("errors", []):
            lines.append(f"error: {error}")
    return "\n".join(lines)


def clear(r: dict[str, Any], which: str) -> str:
    return f"removed {r['removed']} {which} job(s)"


def job_changed(job: dict[str, Any], past: str) -> str:
    """A job after pause/resume/cancel/retry; ``past`` is what happened to it ("paused", "queued again")."""
    return f"job {job['id']} {past} ({job['state']})"


def job_show(job: dict[str, Any]) -> str:
    """Every field, one a line; a segmented download's pieces as a small table after them."""
    lines = [f"{key:12} {value}" for key, value in job.items() if key != "segments"]
    segments = job.get("segments") or []
    if segments:
        lines.append(f"{'segments':12} {len(segments)} connection(s)")
        for piece in segments:
            length = piece["end"] - piece["start"]
            share = piece["done"] / length if length else 1.0
            lines.append(
                f"  {fmt.bytes_(piece['start']):>10} - {fmt.bytes_(piece['end']):>10}  {share:6.1%} of "
                f"{fmt.bytes_(length)}"
            )
    return "\n".join(lines)


def job_priority(job: dict[str, Any]) -> str:
    return f"job {job['id']} priority {job['priority']}"


def pause_all(r: dict[str, Any]) -> str:
    return "all downloads paused"


def resume_all(r: dict[str, Any]) -> str:
    return "downloads resumed"


# ---- limit, reload -----------------------------------------------------------------------------------------------


def limit(r: dict[str, Any]) -> str:
    text = f"limit {fmt.rate(r['limit'])} ({r['source']})"
    if r.get("next_change"):
        text += f"; schedule switches at {r['next_change'][:16].replace('T', ' ')}"
    days = "MTWTFSS"
    for window in r.get("schedule") or []:
        mask = "".join(days[i] if i in window["days"] else "-" for i in range(7))
        text += f"\n  {mask} {window['from']}-{window['to']} {fmt.rate(window['limit'])}"
    return text


def reload(r: dict[str, Any]) -> str:
    return "reloaded" + (f": {', '.join(r['changes'])}" if r["changes"] else "")


# ---- models, plan, approvals -------------------------------------------------------------------------------------


def models(r: dict[str, Any], *, missing: bool, filtered: bool, colour: bool, new: bool = False) -> str:
    """``models.list`` as a table. ``missing``: only incomplete models were asked for (the default, so the footer
    points at --all); ``filtered``: a --filter was given; ``new``: only model types that appeared while watched."""
    if not r["models"]:
        if new:
            return "no new model types since wangpd started watching this Wan2GP folder"
        return "every model is complete" if missing and not filtered else "no matching models"
    rows = []
    for m in r["models"]:
        state = fmt.colour("error", "red", colour) if m["error"] else f"{m['present']}/{m['total']}"
        missing_bytes = fmt.bytes_(m["missing_bytes"]) if m["missing_bytes"] is not None else "?"
        rows.append(
            [
                m["type"],
                m["name"][:40],
                m["family"] + (f" (plugin {m['plugin']})" if m.get("plugin") else ""),
                state,
                "-" if m["complete"] else missing_bytes,
                m["tracked"] or "",
                (m["error"] or "")[:70],
            ]
        )
    text = fmt.table(["TYPE", "NAME", "FAMILY", "FILES", "MISSING", "TRACKED", "ERROR"], rows, right=(3, 4))
    return text + f"\n{r['count']} model(s)" + ("; --all to list complete ones too" if missing else "")


def models_show(r: dict[str, Any], model_type: str) -> str:
    """``models.show``: a header for the model, then a table of its files. ``model_type`` is the name asked for
    (the answer does not repeat it)."""
    model = r["model"]
    lines = [f"{model_type}: {model.get('name', '')} ({model.get('family', '')})"]
    if model.get("error"):
        lines.append(f"error: {model['error']}")
    for warning in model.get("warnings") or []:
        lines.append(f"warning: {warning}")
    lines.append("defined in: " + ", ".join(model["definition_files"]))
    kept = model.get("kept")
    if model.get("tracked"):
        since = f" since {fmt.when(kept['since'])}" if kept and kept.get("since") else ""
        lines.append(f"kept complete: {model['tracked']}{since}")
    elif kept and not kept.get("kept"):
        lines.append(f"not kept: {kept['reason']} by the user (wangpctl add {model_type} keeps it again)")
    else:
        lines.append("not kept: nothing says this user needs it (wangpctl add keeps it)")
    if model.get("hints"):
        lines.append(f"hint: {model['hints']} (a weak trace: never a reason to download)")
    if model.get("visible") is False:
        lines.append("hidden in Wan2GP's model list (visible: false)")
    if model.get("plugin"):
        lines.append(f"from Wan2GP plugin: {model['plugin']}")
    if model.get("unlisted"):
        lines.append(f"not every file can be known: {model['unlisted']}")
    rows = [
        [
            f["status"],
            fmt.bytes_(f["size"]) if f.get("size") is not None else "?",
            f["local"],
            f.get("repo") or "",
            f.get("role", ""),
        ]
        for f in r["files"]
    ]
    lines.append(fmt.table(["STATUS", "SIZE", "LOCAL", "REPO", "ROLE"], rows, right=(1,)))
    profiles = model.get("profiles") or []
    if profiles:
        lines.append(f"accelerator profiles ({len(profiles)}; `wangpctl add {model_type} --with-profile NAME`):")
        for profile in profiles:
            present = sum(1 for f in profile["files"] if f["present"])
            why = "picked in Wan2GP, kept" if profile["used"] else "included by config" if profile["included"] else ""
            lines.append(
                f"  {profile['name']}: {present}/{len(profile['files'])} LoRA(s) on disk" + (f" ({why})" if why else "")
            )
    return "\n".join(lines)


def plan(r: dict[str, Any]) -> str:
    """One line: how many wanted files in each status and the bytes still missing (--json has every file)."""
    counts: dict[str, int] = {}
    for f in r["files"]:
        counts[f["status"]] = counts.get(f["status"], 0) + 1
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    missing = r.get("missing_bytes")
    return f"{len(r['files'])} files: {summary}; missing {fmt.bytes_(missing) if missing is not None else '?'}"


def rescan(r: dict[str, Any]) -> str:
    """One line; then one per model whose files were proposed (queued, or held as its own batch)."""
    batches = r.get("batches") or []
    held = [b for b in batches if b["approval"]]
    if not batches:
        return f"rescanned: {r.get('queued', 0)} file(s) queued" + (
            f", held for approval as batch {r['batch']}" if r.get("approval") else ""
        )
    lines = [
        f"rescanned: {r.get('queued', 0)} file(s) for {len(batches)} model(s)" + (f", {len(held)} held" if held else "")
    ]
    for b in batches:
        verb = f"held as {b['batch']} ({b['reason']})" if b["approval"] else "queued"
        lines.append(f"  {b['model']} ({b['kept']}): {b['files']} file(s), {fmt.bytes_(b['bytes'])}, {verb}")
    if held:
        lines.append("approve with: wangpctl approve BATCH|GLOB (or reject)")
    return "\n".join(lines)


def approve(r: dict[str, Any]) -> str:
    models = r.get("models") or []
    return f"approved {r['approved']} file(s), {fmt.bytes_(r['bytes'])}" + (
        f" for {', '.join(models)}" if models else ""
    )


def reject(r: dict[str, Any]) -> str:
    models = r.get("models") or []
    return f"rejected {r['rejected']} file(s), {fmt.bytes_(r['bytes'])}" + (
        f"; no longer kept: {', '.join(models)}" if models else ""
    )


def du(r: dict[str, Any]) -> str:
    """``du``: one row per model (or family), then the total per filesystem."""
    if not r["rows"]:
        return "no model files on disk"
    rows = [
        [
            row["name"],
            str(row["files"]),
            fmt.bytes_(row["bytes"]),
            fmt.bytes_(row["unique_bytes"]),
            fmt.bytes_(row["shared_bytes"]),
            ", ".join(f"{where} {fmt.bytes_(n)}" for where, n in row["by_location"].items() if n),
        ]
        for row in r["rows"]
    ]
    head = "FAMILY" if r["by"] == "family" else "TYPE"
    lines = [fmt.table([head, "FILES", "SIZE", "UNIQUE", "SHARED", "WHERE"], rows, right=(1, 2, 3, 4))]
    lines.append(f"total {fmt.bytes_(r['total_bytes'])} (each file once)")
    lines += [f"  {fs['mount_point']}: {fmt.bytes_(fs['bytes'])}" for fs in r["filesystems"]]
    return "\n".join(lines)


def drop(r: dict[str, Any]) -> str:
    """``models.drop``: what stopped, and the files no kept model needs (left on disk)."""
    lines = [f"dropped {', '.join(r['dropped'])}: {len(r['stopped'])} job(s) stopped"]
    if r["unneeded"]:
        total = sum(item["size"] or 0 for item in r["unneeded"])
        lines.append(f"{len(r['unneeded'])} file(s), {fmt.bytes_(total)}, no kept model needs any more (left on disk):")
        lines += [f"  {item['local']}  {fmt.bytes_(item['size'])}" for item in r["unneeded"]]
    return "\n".join(lines)


def unused(r: dict[str, Any]) -> str:
    """``unused``: one row per path, then the totals by reason and what ``prune --unused`` would free."""
    if not r["rows"]:
        return "nothing on disk is unneeded: every model file is wanted by a kept model"
    rows = [
        [
            row["local"] or row["path"],
            fmt.bytes_(row["bytes"]),
            row["reason"],
            ", ".join(row["models"]) or "-",
            "yes" if row["removable"] else f"no: {row['note']}",
        ]
        for row in r["rows"]
    ]
    lines = [fmt.table(["PATH", "SIZE", "WHY", "MODELS", "PRUNE"], rows, right=(1,))]
    reasons = ", ".join(f"{why} {n['files']} ({fmt.bytes_(n['bytes'])})" for why, n in sorted(r["by_reason"].items()))
    lines.append(f"{len(r['rows'])} path(s), {fmt.bytes_(r['bytes'])}: {reasons}")
    lines.append(
        f"`wangpctl prune --unused` removes the {r['removable']} wangpd made, freeing {fmt.bytes_(r['frees'])}"
        if r["removable"]
        else "none of them was made by wangpd: prune removes nothing"
    )
    return "\n".join(lines)


def prune(r: dict[str, Any]) -> str:
    """``prune``: what would go (dry run) or what went, and the space freed."""
    removable = [row for row in r["rows"] if row["removable"]]
    kept = [row for row in r["rows"] if not row["removable"]]
    lines = []
    if r["dry_run"]:
        lines.append(f"would remove {len(removable)} path(s), freeing {fmt.bytes_(r['frees'])}:")
        lines += [
            f"  {row['local'] or row['path']}  {fmt.bytes_(row['bytes'])}  ({row['reason']})" for row in removable
        ]
    else:
        lines.append(f"removed {len(r['removed'])} path(s), freed {fmt.bytes_(r['freed'])}")
        lines += [f"  {path}" for path in r["removed"]]
        lines += [f"  left alone: {problem}" for problem in r["skipped"]]
    if r["models"]:
        verb = "would leave" if r["dry_run"] else "left"
        lines.append(f"{', '.join(r['models'])} {verb} the keep-set (not fetched again unless added by hand)")
    lines += [f"  not wangpd's, stays: {row['local'] or row['path']} ({row['note']})" for row in kept]
    return "\n".join(lines)


def plugin_install(r: dict[str, Any]) -> str:
    """``wan2gp install-plugin``: where it went, whether it is enabled, what to do next."""
    lines = [f"{'updated' if r['replaced'] else 'installed'} the wangpd plugin in {r['plugin_dir']}"]
    if r["enabled"]:
        lines.append(f"enabled in {r['config']}" + (f" (previous file kept as {r['backup']})" if r["backup"] else ""))
    elif r["already_enabled"]:
        lines.append(f"already enabled in {r['config']}")
    lines += [f"note: {note}" for note in r["notes"]]
    lines.append(f"then: {r['restart']}")
    return "\n".join(lines)


def plugin_uninstall(r: dict[str, Any]) -> str:
    """``wan2gp uninstall-plugin``: what was taken out, and what was left."""
    lines = [f"removed {r['plugin_dir']}" if r["removed"] else f"nothing removed at {r['plugin_dir']}"]
    if r["kept_reason"]:
        lines.append(r["kept_reason"])
    if r["disabled"]:
        lines.append(
            f"taken out of enabled_plugins in {r['config']}" + (f" (backup {r['backup']})" if r["backup"] else "")
        )
    lines.append(f"then: {r['restart']}")
    return "\n".join(lines)


# ---- doctor, service ---------------------------------------------------------------------------------------------

_LEVEL_COLOURS = {"OK": "green", "WARN": "yellow", "FAIL": "red"}


def doctor(r: dict[str, Any], *, colour: bool) -> str:
    """One line per check (its fix below it unless OK), then the totals."""
    checks = r["checks"]
    lines = []
    for item in checks:
        level = fmt.colour(f"{item['level']:<4}", _LEVEL_COLOURS[item["level"]], colour)
        lines.append(f"{level} {item['check']:<12} {item['message']}")
        if item["fix"] and item["level"] != "OK":
            lines.append(f"     {'':<12} fix: {item['fix']}")
    fails = sum(1 for c in checks if c["level"] == "FAIL")
    warns = sum(1 for c in checks if c["level"] == "WARN")
    lines.append(f"{fails} fail, {warns} warn, {len(checks) - fails - warns} ok")
    return "\n".join(lines)


def service_install(r: dict[str, Any], *, colour: bool) -> str:
    """What was (or, with ``dry_run``, would be) written, with the changed lines, then the systemctl commands."""
    dry_run = r["dry_run"]
    verb = "would write" if dry_run else "wrote"
    lines = []
    for unit in r["files"]:
        action = "unchanged" if unit["action"] == "unchanged" else f"{verb} ({unit['action']})"
        lines.append(f"{action}: {unit['path']}")
        lines += [f"    {line}" for line in unit["changed_lines"]]
    lines += [fmt.colour(f"warning: {w}", "yellow", colour) for w in r["warnings"]]
    lines.append("then run:" if not dry_run else "then you would run:")
    lines += [f"  {command}" for command in r["commands"]]
    return "\n".join(lines)
