"""wangpctl's human output, one renderer at a time: pure functions on result dicts, no daemon.

Every result dict here is first checked against its schema in tests/schemas/, so the renderers are fed what the
daemon really sends (test_cli_schema checks the daemon against the same schemas).
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from jsonschema_lite import load_schema, validate

from wangpctl import fmt, render

GIB = 1024**3
MIB = 1024**2


def job(id: int, state: str, **fields: Any) -> dict[str, Any]:
    """A ``job`` as ``queue.list`` / ``job.show`` return it."""
    record = {
        "id": id,
        "repo": "Wan-AI/Wan2.1-T2V-14B",
        "revision": "main",
        "path": f"diffusion/part{id}.safetensors",
        "url": f"https://huggingface.co/Wan-AI/Wan2.1-T2V-14B/resolve/main/diffusion/part{id}.safetensors",
        "target": f"/srv/wan2gp/ckpts/part{id}.safetensors",
        "size": 4 * GIB,
        "sha256": None,
        "state": state,
        "bytes_done": 0,
        "speed": 0.0,
        "attempts": 0,
        "last_error": None,
        "priority": 0,
        "origin": "manual",
        "batch": None,
        "source": None,
        "wanted_by": ["t2v"],
        "created_at": 1767225600.0,
        "updated_at": 1767225660.0,
        "started_at": None,
        "finished_at": None,
    }
    record.update(fields)
    validate(record, load_schema("job"))
    return record


def checked(result: dict[str, Any], schema: str) -> dict[str, Any]:
    validate(result, load_schema(schema))
    return result


def cells(line: str) -> list[str]:
    """A table row's cells (columns are separated by two or more spaces)."""
    return re.split(r" {2,}", line.strip())


# ---- queue -------------------------------------------------------------------------------------------------------


def queue_page(jobs: list[dict[str, Any]], total: int | None = None, offset: int = 0) -> dict[str, Any]:
    return checked({"jobs": jobs, "total": len(jobs) if total is None else total, "offset": offset}, "queue")


def test_queue_row_shows_id_state_progress_size_speed_eta_file_and_models() -> None:
    downloading = job(7, "downloading", bytes_done=GIB, speed=8.0 * MIB, wanted_by=["t2v", "i2v", "vace_14B"])
    text = render.queue(queue_page([downloading]), filtered=False, colour=False)
    header, row = text.splitlines()
    assert cells(header) == ["ID", "STATE", "DONE", "SIZE", "SPEED", "ETA", "FILE", "MODELS", "REASON"]
    # 1 of 4 GiB done; 3 GiB left at 8 MiB/s is 384 s. Two models are named, the rest is a "+".
    assert cells(row) == ["7", "downloading", "25%", "4.0 GiB", "8.0 MiB/s", "6m24s", "part7.safetensors", "t2v,i2v+"]


def test_queue_rows_for_complete_unknown_size_failed_and_sourced_jobs() -> None:
    jobs = [
        job(1, "complete", bytes_done=4 * GIB),
        job(2, "queued", size=None, speed=3.0 * MIB, wanted_by=[]),
        job(3, "failed", bytes_done=GIB, last_error="HTTP 404 from the Hub: " + "x" * 100),
        job(4, "queued", source="invokeai", bytes_done=0),
    ]
    lines = render.queue(queue_page(jobs), filtered=False, colour=False).splitlines()
    assert cells(lines[1])[:4] == ["1", "complete", "100%", "4.0 GiB"]
    # No size: no percentage, "?" for the size; speed and ETA only for a running download; no models = "-".
    assert cells(lines[2]) == ["2", "queued", "-", "?", "-", "-", "part2.safetensors", "-"]
    failed = cells(lines[3])
    assert failed[:3] == ["3", "failed", "25%"]
    assert failed[-1] == ("HTTP 404 from the Hub: " + "x" * 100)[:60]
    assert cells(lines[4])[-1] == "via invokeai"


def test_queue_right_aligns_the_number_columns_under_their_headers() -> None:
    jobs = [job(9, "downloading", bytes_done=GIB, speed=MIB), job(12345, "complete", size=500, bytes_done=500)]
    header, *rows = render.queue(queue_page(jobs), filtered=False, colour=False).splitlines()
    for column in ("ID", "DONE", "SIZE", "SPEED"):
        end = header.index(column) + len(column)
        assert all(row[end - 1] != " " and row[end] == " " for row in rows), column
    assert rows[1].startswith("12345  complete")
    assert "500 B" in rows[1]


def test_queue_empty_and_no_match_are_told_apart() -> None:
    empty = queue_page([])
    assert render.queue(empty, filtered=False, colour=False) == "queue is empty"
    assert render.queue(empty, filtered=True, colour=False) == "no matching jobs"


def test_queue_footer_only_when_the_page_is_not_the_whole_queue() -> None:
    jobs = [job(1, "queued"), job(2, "queued")]
    assert "of" not in render.queue(queue_page(jobs), filtered=False, colour=False).splitlines()[-1]
    first = render.queue(queue_page(jobs, total=5), filtered=False, colour=False)
    assert first.splitlines()[-1] == "1-2 of 5 (--offset 2 for more)"
    last = render.queue(queue_page(jobs, total=4, offset=2), filtered=False, colour=False)
    assert last.splitlines()[-1] == "3-4 of 4 (--offset 4 for more)"


def test_queue_colour_only_when_asked_and_never_in_the_width() -> None:
    jobs = [job(1, "downloading", bytes_done=GIB, speed=MIB), job(2, "failed", last_error="disk full")]
    plain = render.queue(queue_page(jobs), filtered=False, colour=False)
    coloured = render.queue(queue_page(jobs), filtered=False, colour=True)
    assert "\x1b[" not in plain
    assert "\x1b[34mdownloading\x1b[0m" in coloured and "\x1b[31mfailed\x1b[0m" in coloured
    assert fmt.strip_ansi(coloured) == plain


# ---- add, clear, one job ---------------------------------------------------------------------------------------


def test_add_urls_say_queued_or_already_and_where_the_file_goes() -> None:
    by_url = job(
        12, "queued", repo="", path="f.safetensors", url="https://huggingface.co/O/R/resolve/main/f.safetensors"
    )
    result = checked({"files": [{"created": True, "job": job(11, "queued")}, {"created": False, "job": by_url}]}, "add")
    first, second = render.add(result).splitlines()
    assert first == (
        "queued: job 11 Wan-AI/Wan2.1-T2V-14B diffusion/part11.safetensors -> /srv/wan2gp/ckpts/part11.safetensors"
    )
    # Without a repo the URL names the file.
    assert second == (
        "already queued: job 12 https://huggingface.co/O/R/resolve/main/f.safetensors f.safetensors "
        "-> /srv/wan2gp/ckpts/part12.safetensors"
    )


def test_add_models_summary_dry_run_unknown_sizes_and_errors() -> None:
    queued = {"models": ["t2v", "i2v"], "files": 3, "bytes": 3 * GIB // 2, "dry_run": False, "errors": []}
    assert render.add(checked({"models": queued}, "add")) == "queued 3 files, 1.5 GiB for t2v, i2v"
    dry = {
        "models": ["vace_14B"],
        "files": 2,
        "bytes": 10 * MIB,
        "unknown_size": 1,
        "dry_run": True,
        "errors": ["vace_1.3B: definition is not valid JSON"],
    }
    assert render.add(checked({"models": dry}, "add")).splitlines() == [
        "would queue 2 files, 10.0 MiB (1 of unknown size) for vace_14B",
        "error: vace_1.3B: definition is not valid JSON",
    ]


def test_clear_names_what_was_removed() -> None:
    assert render.clear(checked({"removed": 4, "which": "failed"}, "clear"), "failed") == "removed 4 failed job(s)"


def test_one_job_verbs() -> None:
    paused = job(5, "paused", bytes_done=GIB)
    assert render.job_changed(paused, "paused") == "job 5 paused (paused)"
    assert render.job_changed(job(6, "queued"), "queued again") == "job 6 queued again (queued)"
    assert render.job_priority(job(5, "queued", priority=100)) == "job 5 priority 100"
    assert render.pause_all(checked({"paused": True}, "pause")) == "all downloads paused"
    assert render.resume_all(checked({"paused": False}, "pause")) == "downloads resumed"


def test_job_show_lists_every_field_in_order() -> None:
    record = job(5, "failed", last_error="checksum mismatch")
    lines = render.job_show(record).splitlines()
    assert len(lines) == len(record)
    assert lines[0] == "id           5"
    assert "state        failed" in lines
    assert "last_error   checksum mismatch" in lines
    assert [line.split()[0] for line in lines] == list(record)


def test_job_show_draws_the_pieces_of_a_segmented_download() -> None:
    record = job(7, "downloading")
    record["segments"] = [
        {"start": 0, "end": 64 * MIB, "done": 16 * MIB},
        {"start": 64 * MIB, "end": 128 * MIB, "done": 64 * MIB},
    ]
    lines = render.job_show(checked(record, "job")).splitlines()
    at = lines.index("segments     2 connection(s)")
    assert lines[at + 1 :] == [
        "         0 B -   64.0 MiB   25.0% of 64.0 MiB",
        "    64.0 MiB -  128.0 MiB  100.0% of 64.0 MiB",
    ]


# ---- models, plan ------------------------------------------------------------------------------------------------


def model(type: str, present: int, total: int, **fields: Any) -> dict[str, Any]:
    record = {
        "type": type,
        "name": f"Wan2.1 {type}",
        "family": "wan",
        "architecture": type,
        "present": present,
        "total": total,
        "missing": total - present,
        "missing_bytes": (total - present) * 2 * GIB,
        "linkable": 0,
        "complete": present == total,
        "tracked": None,
        "kept_since": None,
        "new_since": None,
        "visible": True,
        "plugin": None,
        "error": None,
        "warnings": [],
    }
    record.update(fields)
    return record


def test_models_rows_show_present_of_total_missing_bytes_and_tracking() -> None:
    result = checked(
        {
            "models": [
                model("t2v", 2, 5, tracked="manual"),
                model("i2v", 4, 4),
                model("hunyuan", 0, 3, missing_bytes=None, family="hunyuan"),
            ],
            "count": 3,
        },
        "models",
    )
    lines = render.models(result, missing=False, filtered=False, colour=False).splitlines()
    assert cells(lines[0]) == ["TYPE", "NAME", "FAMILY", "FILES", "MISSING", "TRACKED", "ERROR"]
    assert cells(lines[1]) == ["t2v", "Wan2.1 t2v", "wan", "2/5", "6.0 GiB", "manual"]
    assert cells(lines[2]) == ["i2v", "Wan2.1 i2v", "wan", "4/4", "-"]  # complete: nothing missing
    assert cells(lines[3]) == ["hunyuan", "Wan2.1 hunyuan", "hunyuan", "0/3", "?"]  # sizes not known yet
    assert lines[-1] == "3 model(s)"


def test_models_rows_name_the_plugin_a_model_comes_from() -> None:
    result = checked(
        {"models": [model("plug_t2v", 0, 1, plugin="wan2gp-plug"), model("t2v", 1, 1)], "count": 2}, "models"
    )
    lines = render.models(result, missing=False, filtered=False, colour=False).splitlines()
    assert cells(lines[1])[2] == "wan (plugin wan2gp-plug)"
    assert cells(lines[2])[2] == "wan"


def test_models_error_row_truncates_and_colours_only_when_asked() -> None:
    broken = model("ltxv", 0, 0, name="LTX Video " + "n" * 60, error="definition unreadable: " + "e" * 100)
    result = checked({"models": [broken], "count": 1}, "models")
    plain = render.models(result, missing=True, filtered=False, colour=False)
    row = cells(plain.splitlines()[1])
    assert row[1] == ("LTX Video " + "n" * 60)[:40]
    assert row[3] == "error"
    assert row[-1] == ("definition unreadable: " + "e" * 100)[:70]
    assert "\x1b[" not in plain
    coloured = render.models(result, missing=True, filtered=False, colour=True)
    assert "\x1b[31merror\x1b[0m" in coloured
    assert fmt.strip_ansi(coloured) == plain


def test_models_footer_and_empty_messages_follow_the_filters() -> None:
    some = checked({"models": [model("t2v", 1, 2)], "count": 1}, "models")
    assert render.models(some, missing=True, filtered=False, colour=False).endswith(
        "\n1 model(s); --all to list complete ones too"
    )
    none = checked({"models": [], "count": 0}, "models")
    assert render.models(none, missing=True, filtered=False, colour=False) == "every model is complete"
    assert render.models(none, missing=True, filtered=True, colour=False) == "no matching models"
    assert render.models(none, missing=False, filtered=False, colour=False) == "no matching models"


def show_result(**model_fields: Any) -> dict[str, Any]:
    result = {
        "all_variants": False,
        "missing_bytes": 2 * GIB,
        "files": [
            {
                "local": "ckpts/wan2.1_t2v_14B_bf16.safetensors",
                "status": "present",
                "size": 28 * GIB,
                "repo": "DeepBeepMeep/Wan2.1",
                "role": "main",
            },
            {"local": "ckpts/umt5-xxl_bf16.safetensors", "status": "missing", "size": None, "repo": None},
        ],
        "model": {
            "name": "Wan2.1 Text2Video 14B",
            "family": "wan",
            "error": None,
            "warnings": [],
            "definition_files": ["/srv/wan2gp/defaults/t2v.json", "/srv/wan2gp/finetunes/t2v.json"],
            "tracked": "used",
            "kept": {
                "reason": "used",
                "kept": True,
                "since": 1767225600.0,
                "all_variants": False,
                "files": [],
                "gone_at": None,
            },
            "hints": None,
            "visible": True,
            "plugin": None,
            "profiles": [],
            "unlisted": None,
            **model_fields,
        },
    }
    return checked(result, "plan")


def test_models_show_header_definitions_and_file_table() -> None:
    lines = render.models_show(show_result(), "t2v").splitlines()
    assert lines[0] == "t2v: Wan2.1 Text2Video 14B (wan)"
    assert lines[1] == "defined in: /srv/wan2gp/defaults/t2v.json, /srv/wan2gp/finetunes/t2v.json"
    assert lines[2].startswith("kept complete: used since 2026-01-01") or lines[2].startswith(
        "kept complete: used since 2025-12-31"
    )
    assert cells(lines[3]) == ["STATUS", "SIZE", "LOCAL", "REPO", "ROLE"]
    present = ["present", "28.0 GiB", "ckpts/wan2.1_t2v_14B_bf16.safetensors", "DeepBeepMeep/Wan2.1", "main"]
    assert cells(lines[4]) == present
    assert cells(lines[5]) == ["missing", "?", "ckpts/umt5-xxl_bf16.safetensors"]


def test_models_show_says_why_a_model_is_not_kept_and_its_weak_hints() -> None:
    refused = {"reason": "dropped", "kept": False, "since": 1.0, "all_variants": False, "files": [], "gone_at": None}
    text = render.models_show(show_result(tracked=None, kept=refused, hints="last model shown", visible=False), "t2v")
    assert "not kept: dropped by the user (wangpctl add t2v keeps it again)" in text
    assert "hint: last model shown (a weak trace: never a reason to download)" in text
    assert "hidden in Wan2GP's model list" in text
    never = render.models_show(show_result(tracked=None, kept=None), "t2v")
    assert "not kept: nothing says this user needs it" in never


def test_models_show_lists_profiles_and_what_cannot_be_known() -> None:
    lora = "loras/wan_2_2/lightx2v_4step.safetensors"
    profiles = [
        {
            "name": "wan_2_2/Lightning 4 steps",
            "used": True,
            "included": False,
            "files": [
                {
                    "local": lora,
                    "url": "https://huggingface.co/O/R/resolve/main/lightx2v_4step.safetensors",
                    "present": True,
                }
            ],
        },
        {
            "name": "wan_2_2/FusioniX",
            "used": False,
            "included": False,
            "files": [{"local": "loras/wan_2_2/f.safetensors", "url": "https://x/f.safetensors", "present": False}],
        },
    ]
    text = render.models_show(show_result(profiles=profiles, unlisted="kiwi code fetches its embedders"), "t2v_2_2")
    lines = text.splitlines()
    assert "not every file can be known: kiwi code fetches its embedders" in lines
    at = lines.index("accelerator profiles (2; `wangpctl add t2v_2_2 --with-profile NAME`):")
    assert lines[at + 1 :] == [
        "  wan_2_2/Lightning 4 steps: 1/1 LoRA(s) on disk (picked in Wan2GP, kept)",
        "  wan_2_2/FusioniX: 0/1 LoRA(s) on disk",
    ]


def test_models_show_puts_errors_and_warnings_before_the_files() -> None:
    text = render.models_show(show_result(error="no such file", warnings=["two URLs for one file"]), "t2v")
    assert text.splitlines()[1:3] == ["error: no such file", "warning: two URLs for one file"]


def test_plan_counts_statuses_in_name_order_and_missing_bytes() -> None:
    files = [
        {"local": "ckpts/a", "status": "present", "size": GIB},
        {"local": "ckpts/b", "status": "missing", "size": GIB},
        {"local": "ckpts/c", "status": "missing", "size": 2 * GIB},
        {"local": "ckpts/d", "status": "linkable", "size": None},
    ]
    result = checked({"all_variants": False, "files": files, "missing_bytes": 3 * GIB}, "plan")
    assert render.plan(result) == "4 files: 1 linkable, 2 missing, 1 present; missing 3.0 GiB"
    unknown = checked({"all_variants": True, "files": files[:1], "missing_bytes": None}, "plan")
    assert render.plan(unknown) == "1 files: 1 present; missing ?"


# ---- rescan, approvals, limit, reload, version --------------------------------------------------------------------


def test_rescan_says_what_it_queued_per_model_and_what_it_holds() -> None:
    assert render.rescan(checked({"queued": 0, "bytes": 0, "batches": []}, "rescan")) == "rescanned: 0 file(s) queued"
    batch = {"files": 2, "bytes": GIB, "reason": "within auto_queue.max_auto_bytes"}
    result = {
        "queued": 5,
        "bytes": 3 * GIB,
        "approval": True,
        "batch": "b2",
        "batches": [
            {**batch, "model": "t2v", "kept": "installed", "approval": False, "batch": None},
            {
                **batch,
                "model": "ltx2_22B",
                "kept": "new",
                "files": 3,
                "approval": True,
                "batch": "b2",
                "reason": "over",
            },
        ],
    }
    lines = render.rescan(checked(result, "rescan")).splitlines()
    assert lines[0] == "rescanned: 5 file(s) for 2 model(s), 1 held"
    assert lines[1] == "  t2v (installed): 2 file(s), 1.0 GiB, queued"
    assert lines[2] == "  ltx2_22B (new): 3 file(s), 1.0 GiB, held as b2 (over)"
    assert "wangpctl approve BATCH|GLOB" in lines[3]


def test_approve_and_reject_count_files_and_bytes() -> None:
    approved = checked({"approved": 3, "bytes": 5 * GIB, "batch": "b1", "models": ["t2v"]}, "approve")
    assert render.approve(approved) == "approved 3 file(s), 5.0 GiB for t2v"
    rejected = checked({"rejected": 1, "bytes": 512, "batch": None, "models": ["flux"]}, "reject")
    assert render.reject(rejected) == "rejected 1 file(s), 512 B; no longer kept: flux"


def test_limit_with_schedule_windows_and_the_next_switch() -> None:
    result = checked(
        {
            "limit": 20 * MIB,
            "human": "20.0 MiB/s",
            "source": "schedule",
            "config": 0,
            "manual": None,
            "schedule": [
                {"days": [0, 1, 2, 3, 4], "from": "08:00", "to": "18:00", "limit": 20 * MIB},
                {"days": [5, 6], "from": "00:00", "to": "23:59", "limit": 0},
            ],
            "window": None,
            "next_change": "2026-01-05T18:00:00+01:00",
        },
        "limit",
    )
    assert render.limit(result).splitlines() == [
        "limit 20.0 MiB/s (schedule); schedule switches at 2026-01-05 18:00",
        "  MTWTF-- 08:00-18:00 20.0 MiB/s",
        "  -----SS 00:00-23:59 unlimited",
    ]


def test_reload_lists_what_changed() -> None:
    assert render.reload(checked({"reloaded": True, "changes": []}, "reload")) == "reloaded"
    changed = checked({"reloaded": True, "changes": ["download.bandwidth", "auto_queue.track"]}, "reload")
    assert render.reload(changed) == "reloaded: download.bandwidth, auto_queue.track"


def test_version_shows_client_daemon_and_protocol() -> None:
    result = checked({"client": "0.4.0", "version": "0.4.1", "protocol": 1}, "version")
    assert render.version(result) == "wangpctl 0.4.0\nwangpd   0.4.1 (protocol 1)"


def status_result() -> dict[str, Any]:
    counts = {"needs_approval": 0, "queued": 3, "downloading": 1, "paused": 0, "complete": 9, "failed": 2}
    limit = {"limit": 0, "human": "unlimited", "source": "config", "config": 0, "manual": None, "schedule": []}
    return {
        "version": "0.4.1",
        "pid": 4242,
        "uptime": 3725,
        "started_at": 1767225600.0,
        "state": "running",
        "paused": False,
        "counts": {**counts, "cancelled": 0},
        "pending": 3,
        "speed": 8 * MIB,
        "remaining_bytes": 16 * GIB,
        "limit": {**limit, "window": None, "next_change": None},
        "config": "/etc/wangpd/config.yaml",
        "socket": "/run/wangpd/wangpd.sock",
        "listening": "bound",
        "database": "/var/lib/wangpd/state.db",
        "wan2gp_directory": "/srv/wan2gp",
        "hf_cache": "/var/cache/huggingface",
        "disk_free": {"wan2gp": 500 * GIB, "hf_cache": 200 * GIB},
        "batches": {},
        "watcher": {"state": "watching"},
        "auto_queue": {
            "track": "used",
            "new_models": "ask",
            "max_auto_bytes": 50 * GIB,
            "require_approval": True,
            "kept": {"manual": 1},
            "gone": [],
        },
        "libraries": None,
        "last_errors": [],
        "store_error": None,
    }


def test_status_without_colour_when_no_color_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    result = checked(status_result(), "status")
    lines = render.status(result).splitlines()
    assert "\x1b[" not in "\n".join(lines)
    assert lines[0] == "wangpd 0.4.1  running  (pid 4242, up 1h02m)"
    assert lines[1] == "queue       pending 3  downloading 1  complete 9  failed 2  needs approval 0  paused 0"
    assert lines[2] == "speed       8.0 MiB/s   limit unlimited (config)"
    assert lines[3] == "remaining   16.0 GiB   eta 34m08s"
    assert "auto-queue  track used, new models ask, cap 50.0 GiB, approval required" in lines
    assert not [line for line in lines if line.startswith("libraries")]


def test_status_shows_the_libraries_when_some_are_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    data = status_result()
    data["libraries"] = {
        "folders": ["/srv/comfy/models", "/srv/forge/models"],
        "state": "ready",
        "files": 120,
        "bytes_indexed": 300 * GIB,
        "bytes_hashed": 20 * GIB,
        "hashed": 3,
        "scanned_at": 1767225600.0,
        "warnings": ["/srv/forge/models: no such folder"],
    }
    lines = render.status(checked(data, "status")).splitlines()
    assert "libraries   ready: 120 file(s), 300.0 GiB in 2 folder(s); 3 hashed, 20.0 GiB read; 1 warning(s)" in lines


# ---- doctor, service install -------------------------------------------------------------------------------------


def doctor_result() -> dict[str, Any]:
    checks = [
        {"check": "config", "level": "OK", "message": "/etc/wangpd/config.yaml is valid", "fix": "not needed"},
        {"check": "disk", "level": "WARN", "message": "12.0 GiB free in /srv/wan2gp", "fix": "free some space"},
        {"check": "hf_token", "level": "FAIL", "message": "the token is rejected", "fix": "huggingface-cli login"},
    ]
    return checked({"source": "daemon", "ok": False, "checks": checks}, "doctor")


def test_doctor_one_line_per_check_fixes_for_problems_and_totals() -> None:
    assert render.doctor(doctor_result(), colour=False).splitlines() == [
        "OK   config       /etc/wangpd/config.yaml is valid",
        "WARN disk         12.0 GiB free in /srv/wan2gp",
        "                  fix: free some space",
        "FAIL hf_token     the token is rejected",
        "                  fix: huggingface-cli login",
        "1 fail, 1 warn, 1 ok",
    ]


def test_doctor_colours_the_level_only_when_asked() -> None:
    coloured = render.doctor(doctor_result(), colour=True)
    assert "\x1b[32mOK  \x1b[0m config" in coloured
    assert "\x1b[31mFAIL\x1b[0m hf_token" in coloured
    assert fmt.strip_ansi(coloured) == render.doctor(doctor_result(), colour=False)


def install_result(dry_run: bool) -> dict[str, Any]:
    unit = "/home/ana/.config/systemd/user/wangpd"
    files = [
        {
            "source": "/opt/wangpd/systemd/wangpd.service",
            "path": f"{unit}.service",
            "action": "replace",
            "changed_lines": ["- ExecStart=/old/bin/wangpd", "+ ExecStart=/opt/wangpd/.venv/bin/wangpd"],
            "content": "[Service]\n",
        },
        {
            "source": "/opt/wangpd/systemd/wangpd.socket",
            "path": f"{unit}.socket",
            "action": "unchanged",
            "changed_lines": [],
            "content": "[Socket]\n",
        },
    ]
    result = {
        "scope": "user",
        "dry_run": dry_run,
        "wangpd": "/opt/wangpd/.venv/bin/wangpd",
        "wangpctl": "/opt/wangpd/.venv/bin/wangpctl",
        "config": None,
        "files": files,
        "commands": ["systemctl --user daemon-reload", "systemctl --user enable --now wangpd.socket"],
        "warnings": ["linger is off: the service stops when you log out (loginctl enable-linger ana)"],
    }
    return checked(result, "service_install")


def test_service_install_lists_files_changes_warnings_and_commands() -> None:
    assert render.service_install(install_result(dry_run=False), colour=False).splitlines() == [
        "wrote (replace): /home/ana/.config/systemd/user/wangpd.service",
        "    - ExecStart=/old/bin/wangpd",
        "    + ExecStart=/opt/wangpd/.venv/bin/wangpd",
        "unchanged: /home/ana/.config/systemd/user/wangpd.socket",
        "warning: linger is off: the service stops when you log out (loginctl enable-linger ana)",
        "then run:",
        "  systemctl --user daemon-reload",
        "  systemctl --user enable --now wangpd.socket",
    ]


def test_service_install_dry_run_says_would_and_colours_warnings_only_when_asked() -> None:
    text = render.service_install(install_result(dry_run=True), colour=False)
    assert text.splitlines()[0] == "would write (replace): /home/ana/.config/systemd/user/wangpd.service"
    assert "then you would run:" in text and "then run:" not in text
    assert "\x1b[" not in text
    coloured = render.service_install(install_result(dry_run=True), colour=True)
    assert "\x1b[33mwarning: linger is off" in coloured


def test_models_new_says_when_nothing_is_new() -> None:
    empty = checked({"models": [], "count": 0}, "models")
    assert render.models(empty, missing=False, filtered=False, colour=False, new=True).startswith("no new model types")


def test_control_characters_from_definitions_never_reach_the_terminal() -> None:
    # Issue 15, item 27: a definition named with escape sequences or newlines retitled the terminal and broke
    # the tables. Only wangpctl's own colour codes pass.
    evil = model("evil", 0, 3, name="a\x1b]0;owned\x07b\nc\rd\x1b[2J", error=None)
    text = render.models(checked({"models": [evil], "count": 1}, "models"), missing=True, filtered=False, colour=True)
    assert "\x1b]" not in text and "\x1b[2J" not in text and "\x07" not in text and "\r" not in text
    assert len(text.splitlines()) == 3  # header, one row, the footer
    assert "a?]0;owned?b?c?d?[2J" in text
    coloured = render.models(
        checked({"models": [model("bad", 0, 1, error="x")], "count": 1}, "models"),
        missing=True,
        filtered=False,
        colour=True,
    )
    assert "\x1b[31m" in coloured  # wangpctl's own red survives


def test_status_says_stalled_when_the_queue_database_cannot_be_written(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    data = status_result()
    data["store_error"] = "state disk full (database or disk is full)"
    lines = render.status(checked(data, "status")).splitlines()
    assert lines[1].startswith("STALLED     state disk full") and "nothing new starts" in lines[1]


def test_du_rows_total_and_filesystems() -> None:
    row = {"name": "t2v", "files": 3, "bytes": 3 << 30, "unique_bytes": 1 << 30, "shared_bytes": 2 << 30}
    row["by_location"] = {"hf-cache": 2 << 30, "invokeai": 0, "library": 0, "elsewhere": 0, "wan2gp": 1 << 30}
    result = checked(
        {"by": "model", "rows": [row], "total_bytes": 3 << 30, "filesystems": [{"mount_point": "/", "bytes": 3 << 30}]},
        "du",
    )
    lines = render.du(result).splitlines()
    assert cells(lines[0]) == ["TYPE", "FILES", "SIZE", "UNIQUE", "SHARED", "WHERE"]
    assert cells(lines[1]) == ["t2v", "3", "3.0 GiB", "1.0 GiB", "2.0 GiB", "hf-cache 2.0 GiB, wan2gp 1.0 GiB"]
    assert lines[2:] == ["total 3.0 GiB (each file once)", "  /: 3.0 GiB"]
    empty = checked({"by": "family", "rows": [], "total_bytes": 0, "filesystems": []}, "du")
    assert render.du(empty) == "no model files on disk"


def _unused_row(local: str, reason: str, made: bool, size: int, note: str | None = None) -> dict[str, Any]:
    return {
        "path": f"/w/{local}",
        "local": local,
        "kind": "link" if made else "file",
        "reason": reason,
        "models": ["ma"] if reason != "orphan" else [],
        "bytes": size,
        "location": "hf-cache" if made else "wan2gp",
        "made_by_wangpd": made,
        "removable": made,
        "note": note,
        "frees": size if made else 0,
    }


def test_unused_rows_reasons_and_what_prune_frees() -> None:
    rows = [
        _unused_row("ckpts/a.safetensors", "dropped", True, 2 << 30),
        _unused_row("ckpts/old.safetensors", "orphan", False, 1 << 30, "not made by wangpd: remove it yourself"),
    ]
    by_reason = {"dropped": {"files": 1, "bytes": 2 << 30}, "orphan": {"files": 1, "bytes": 1 << 30}}
    result = checked(
        {"dry_run": True, "rows": rows, "bytes": 3 << 30, "frees": 2 << 30, "removable": 1, "by_reason": by_reason},
        "unused",
    )
    lines = render.unused(result).splitlines()
    assert cells(lines[0]) == ["PATH", "SIZE", "WHY", "MODELS", "PRUNE"]
    assert cells(lines[1]) == ["ckpts/a.safetensors", "2.0 GiB", "dropped", "ma", "yes"]
    assert cells(lines[2]) == [
        "ckpts/old.safetensors",
        "1.0 GiB",
        "orphan",
        "-",
        "no: not made by wangpd: remove it yourself",
    ]
    assert lines[3] == "2 path(s), 3.0 GiB: dropped 1 (2.0 GiB), orphan 1 (1.0 GiB)"
    assert lines[4] == "`wangpctl prune --unused` removes the 1 wangpd made, freeing 2.0 GiB"
    nothing = checked({"dry_run": True, "rows": [], "bytes": 0, "frees": 0, "removable": 0, "by_reason": {}}, "unused")
    assert render.unused(nothing).startswith("nothing on disk is unneeded")


def test_prune_dry_run_and_done() -> None:
    rows = [
        _unused_row("ckpts/a.safetensors", "dropped", True, 2 << 30),
        _unused_row("ckpts/c.safetensors", "dropped", False, 1 << 30, "not made by wangpd"),
    ]
    base = {"rows": rows, "bytes": 3 << 30, "frees": 2 << 30, "removable": 1, "by_reason": {}, "models": ["ma"]}
    dry = render.prune(checked({**base, "dry_run": True}, "prune")).splitlines()
    assert dry == [
        "would remove 1 path(s), freeing 2.0 GiB:",
        "  ckpts/a.safetensors  2.0 GiB  (dropped)",
        "ma would leave the keep-set (not fetched again unless added by hand)",
        "  not wangpd's, stays: ckpts/c.safetensors (not made by wangpd)",
    ]
    done = {**base, "dry_run": False, "removed": ["/w/ckpts/a.safetensors", "/hub/blobs/x"], "freed": 2 << 30}
    done.update(skipped=["/w/x: no longer what wangpd made; left alone"], jobs_forgotten=1, stopped=[])
    lines = render.prune(checked(done, "prune")).splitlines()
    assert lines[:3] == ["removed 2 path(s), freed 2.0 GiB", "  /w/ckpts/a.safetensors", "  /hub/blobs/x"]
    assert lines[3] == "  left alone: /w/x: no longer what wangpd made; left alone"
    assert lines[4] == "ma left the keep-set (not fetched again unless added by hand)"
