"""Every `wangpctl ... --json` output, from a live daemon, against the schemas documented in docs/json-schema.md."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from jsonschema_lite import SCHEMAS, SchemaError, load_schema, validate

from conftest import ROOT, DaemonProcess, serve_models, wait_for

URL = "https://huggingface.co/DeepBeepMeep/Wan2.1/resolve/main/Wan2.1_VAE.safetensors"


def _json(daemon: DaemonProcess, *args: str, code: int = 0) -> Any:
    result = daemon.ctl(*args, "--json", check=False)
    assert result.returncode == code, f"wangpctl {' '.join(args)}: {result.returncode} {result.stderr}"
    return json.loads(result.stdout)


def test_every_output_matches_its_schema(daemon_factory, fake_hub, wan2gp: Path, short_dir: Path) -> None:
    serve_models(fake_hub, wan2gp, ("t2v",))
    daemon = daemon_factory(
        paused=True, hub={"endpoint": fake_hub.endpoint}, auto_queue={"track": "none", "require_approval": True}
    ).start()
    checked: dict[str, int] = {}

    def check(schema: str, *args: str, code: int = 0) -> Any:
        data = _json(daemon, *args, code=code)
        validate(data, load_schema(schema))
        checked[schema] = checked.get(schema, 0) + 1
        return data

    check("status", "status")
    check("version", "version")
    check("limit", "limit")
    check("limit", "limit", "20MiB/s")
    added = check("add", "add", URL)
    job = str(added["files"][0]["job"]["id"])
    check("add", "add", "t2v", "--dry-run")
    check("add", "add", "t2v")
    check("queue", "queue")
    check("queue", "queue", "--state", "queued", "--limit", "5")
    for verb in (("job", "show"), ("pause",), ("resume",), ("job", "priority"), ("cancel",), ("retry",)):
        extra = ("top",) if verb[-1] == "priority" else ()
        check("job", *verb, f"#{job}", *extra)
    check("pause", "pause")
    check("pause", "resume")
    check("pause", "pause")
    check("models", "models", "--all")
    check("models", "models", "--new")
    check("plan", "plan", "--model", "t2v")
    check("plan", "models", "show", "t2v")
    check("rescan", "rescan")
    check("reload", "reload")
    check("doctor", "doctor", code=0)
    check("error", "retry", "999", code=1)
    check("error", "approve", code=1)
    check("du", "du")
    check("du", "du", "t2v", "--by", "family")
    check("unused", "unused")
    check("prune", "prune", "t2v", "--dry-run")
    check("prune", "prune", "--unused", "--yes")
    check("drop", "drop", "t2v")
    check("clear", "clear", "all")
    check("service_install", "service", "install", "--user", "--dry-run")
    (wan2gp / "wgp.py").write_text("# Wan2GP\n")  # what makes a folder Wan2GP's to install-plugin
    check("plugin_install", "wan2gp", "install-plugin")
    check("plugin_uninstall", "wan2gp", "uninstall-plugin")

    # Every schema file in tests/schemas/ is exercised here or in test_cli_follow (follow_event) / below.
    exercised = set(checked) | {"common", "follow_event", "approve", "reject"}
    assert {p.stem for p in SCHEMAS.glob("*.json")} <= exercised


def test_approve_and_reject_match_their_schemas(daemon_factory, fake_hub, wan2gp: Path) -> None:
    serve_models(fake_hub, wan2gp, ("t2v", "flux"))
    daemon = daemon_factory(
        paused=True,
        hub={"endpoint": fake_hub.endpoint},
        auto_queue={"track": "all", "require_approval": True},
    ).start()
    status = wait_for(lambda: (s := _json(daemon, "status"))["batches"] and s, timeout=30, what="a held batch")
    validate(status, load_schema("status"))
    batches = sorted(status["batches"])
    validate(_json(daemon, "approve", batches[0]), load_schema("approve"))
    if len(batches) > 1:
        validate(_json(daemon, "reject", batches[1]), load_schema("reject"))
    else:
        validate({"rejected": 0, "bytes": 0, "batch": None}, load_schema("reject"))


def test_the_validator_rejects_what_it_should() -> None:
    job = load_schema("job")
    good = {
        "id": 1,
        "repo": "Org/Repo",
        "revision": "main",
        "path": "a.safetensors",
        "url": "https://huggingface.co/Org/Repo/resolve/main/a.safetensors",
        "target": "/w/ckpts/a.safetensors",
        "size": None,
        "sha256": None,
        "state": "queued",
        "bytes_done": 0,
        "speed": 0,
        "attempts": 0,
        "last_error": None,
        "priority": 0,
        "origin": "manual",
        "batch": None,
        "source": None,
        "wanted_by": [],
        "created_at": 1.0,
        "updated_at": 1.0,
        "started_at": None,
        "finished_at": None,
    }
    validate(good, job)
    for broken in (
        {**good, "state": "sleeping"},
        {**good, "id": "1"},
        {**good, "size": -1},
        {**good, "speed": True},
        {k: v for k, v in good.items() if k != "target"},
        {**good, "wanted_by": [1]},
    ):
        with pytest.raises(SchemaError):
            validate(broken, job)
    with pytest.raises(SchemaError):
        validate({"event": "progress", "time": 1.0, "id": 1, "bytes_done": 5}, load_schema("follow_event"))
    with pytest.raises(SchemaError):
        validate(
            {"source": "daemon", "ok": True, "checks": [{"check": "x", "level": "MEH", "message": "m", "fix": ""}]},
            load_schema("doctor"),
        )


def test_the_schemas_are_documented() -> None:
    doc = (ROOT / "docs" / "json-schema.md").read_text()
    for path in SCHEMAS.glob("*.json"):
        assert f"tests/schemas/{path.name}" in doc, f"docs/json-schema.md does not mention {path.name}"
        json.loads(path.read_text())  # well-formed


def test_compact_json_when_piped_is_the_same_data(daemon: DaemonProcess) -> None:
    piped = daemon.ctl("queue", "--json").stdout
    assert piped.count("\n") == 1
    full = subprocess.run(
        [sys.executable, "-c", "import json,sys; print(json.dumps(json.loads(sys.stdin.read()), indent=2))"],
        input=piped,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert json.loads(full.stdout) == json.loads(piped)
