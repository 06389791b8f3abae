"""The keep-set on a real daemon, real watcher and real SQLite: which models are kept complete, why, and what a
change to a kept model, a Wan2GP update and the user's word do to the queue.

The trees are built from Wan2GP's rules (a model borrowing t2v's main file with ``"URLs": "t2v"`` and owning a
module of its own, as vace/lynx/alpha/standin do), not taken from one fixture.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import FIXTURE_DEFAULTS, DaemonProcess, serve_models, wait_for

HF = "https://huggingface.co"
T2V_INT8 = "wan2.1_text2video_14B_quanto_mbf16_int8.safetensors"
BORROWERS = ("alpha", "lynx", "standin", "vace_14B", "vace_lynx_14B")


def write(wan: Path, model_type: str, model: dict[str, Any], folder: str = "defaults") -> Path:
    path = wan / folder / f"{model_type}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"model": model}))
    return path


def borrower(name: str) -> dict[str, Any]:
    """A model that borrows t2v's main file and owns one module (vace_lynx_14B owns nothing: a combination)."""
    model: dict[str, Any] = {"name": name, "architecture": "vace_14B" if "vace" in name else "t2v", "URLs": "t2v"}
    if name == "vace_lynx_14B":
        model["modules"] = ["vace_14B", "lynx"]  # references only: owns nothing
    else:
        model["modules"] = [[f"{HF}/Org/Mods/resolve/main/{name}_module_mbf16.safetensors"]]
    return model


def kept(daemon: DaemonProcess) -> dict[str, str]:
    return {m["type"]: m["tracked"] for m in daemon.ctl_json("models", "--all")["models"] if m["tracked"]}


def job_targets(daemon: DaemonProcess, state: str | None = None) -> dict[str, dict[str, Any]]:
    args = ["queue", "--limit", "10000"] + (["--state", state] if state else [])
    return {Path(j["target"]).name: j for j in daemon.ctl_json(*args)["jobs"]}


@pytest.fixture
def tree(wan2gp: Path, fake_hub: Any) -> Path:
    """t2v with only its int8 main file on disk (the user's own copy), and models that borrow that file."""
    for path in (wan2gp / "defaults").glob("*.json"):
        if path.stem != "t2v":
            path.unlink()
    for name in BORROWERS:
        write(wan2gp, name, borrower(name))
    serve_models(fake_hub, wan2gp)
    (wan2gp / "ckpts" / T2V_INT8).write_bytes(b"the user's own copy")
    return wan2gp


@pytest.fixture
def start(daemon_factory: Callable[..., DaemonProcess], fake_hub: Any) -> Callable[..., DaemonProcess]:
    def run(**auto_queue: Any) -> DaemonProcess:
        policy = {"track": "installed", "new_models": "queue", "require_approval": False, **auto_queue}
        return daemon_factory(
            paused=True,  # nothing downloads: the queue itself is what these tests look at
            hub={"endpoint": fake_hub.endpoint},
            watch={"enabled": True, "debounce": "50ms", "reconcile_interval": "1h"},
            auto_queue=policy,
        ).start()

    return run


def refreshed(daemon: DaemonProcess) -> bool:
    return daemon.ctl_json("status")["auto_queue"]["last_refresh"] is not None


def test_a_borrowed_main_file_installs_only_its_owner(start: Callable[..., DaemonProcess], tree: Path) -> None:
    # Scenario 1 of the issue: with only t2v's main file in ckpts/, t2v is kept and the 5 models borrowing that file
    # are not (Wan2GP calls them "partial"); none of their own modules is queued.
    daemon = start()
    wait_for(lambda: refreshed(daemon), what="startup scan")
    assert kept(daemon) == {"t2v": "installed"}
    queued = job_targets(daemon)
    assert queued and all(j["wanted_by"] and "t2v" in j["wanted_by"] for j in queued.values())
    assert not [name for name in queued if "_module_" in name], "a borrower's own module was queued"
    # Its own module on disk installs a borrower (and only it).
    (tree / "ckpts" / "lynx_module_mbf16.safetensors").write_bytes(b"x")
    wait_for(lambda: kept(daemon).get("lynx") == "installed", timeout=10, what="lynx installed by its own module")
    assert set(kept(daemon)) == {"t2v", "lynx"}
    # Adding t2v by hand does not pick up its borrowers either.
    daemon.ctl("add", "t2v")
    assert set(kept(daemon)) == {"t2v", "lynx"} and kept(daemon)["t2v"] == "manual"


def test_a_kept_model_re_pointed_five_times_gets_each_new_file(
    start: Callable[..., DaemonProcess], tree: Path, fake_hub: Any
) -> None:
    # Scenario 2: a `git pull` re-points t2v at a re-released checkpoint. t2v no longer looks installed (its new
    # main file is absent) but it stays kept, so the new file is queued at once, without approval (within the cap).
    daemon = start()
    wait_for(lambda: kept(daemon) == {"t2v": "installed"}, what="t2v kept")
    definition = json.loads((FIXTURE_DEFAULTS / "t2v.json").read_text())["model"]
    for release in range(1, 6):
        name = f"wan2.1_text2video_14B_r{release}_quanto_mbf16_int8.safetensors"
        fake_hub.add_file("DeepBeepMeep/Wan2.1", name, size=3000, seed=500 + release)
        fake_hub.add_file(
            "DeepBeepMeep/Wan2.1", name.replace("_quanto_mbf16_int8", "_mbf16"), size=3000, seed=600 + release
        )
        urls = [
            f"{HF}/DeepBeepMeep/Wan2.1/resolve/main/{name.replace('_quanto_mbf16_int8', '_mbf16')}",
            f"{HF}/DeepBeepMeep/Wan2.1/resolve/main/{name}",
        ]
        write(tree, "t2v", {**definition, "URLs": urls})
        job = wait_for(lambda n=name: job_targets(daemon).get(n), timeout=10, what=f"release {release} queued")
        assert job["state"] == "queued" and job["origin"] == "auto" and job["batch"] is None
    assert kept(daemon) == {"t2v": "installed"}
    assert len([n for n in job_targets(daemon) if "_r" in n and "int8" in n]) == 5


def test_a_wan2gp_update_proposes_one_batch_per_new_model(
    start: Callable[..., DaemonProcess], tree: Path, fake_hub: Any
) -> None:
    # Scenario 3: many new model types at once. Each is its own batch; the automatic budget bounds what starts
    # unasked from the whole change; the user approves or rejects per model, by batch id or by glob.
    daemon = start(max_auto_bytes="7000B")
    wait_for(lambda: refreshed(daemon), what="startup scan")
    news = [f"ltx9_{index}" for index in range(6)]
    for index, name in enumerate(news):
        fake_hub.add_file("Org/New", f"{name}.safetensors", size=3000, seed=700 + index)
        write(
            tree, name, {"name": name, "architecture": "t2v", "URLs": [f"{HF}/Org/New/resolve/main/{name}.safetensors"]}
        )
    wait_for(lambda: all(f"{n}.safetensors" in job_targets(daemon) for n in news), timeout=15, what="all proposed")
    jobs = job_targets(daemon)
    own = {n: jobs[f"{n}.safetensors"] for n in news}
    started = [n for n, j in own.items() if j["state"] == "queued"]
    held = {n: j["batch"] for n, j in own.items() if j["state"] == "needs_approval"}
    assert len(started) == 2, "7000 bytes of budget for the whole change: two 3000-byte models start unasked"
    assert len(held) == 4 and len(set(held.values())) == 4, "one batch per held model"
    assert set(kept(daemon)) >= set(news)
    listed = daemon.ctl_json("models", "--new")["models"]
    assert {m["type"] for m in listed} == set(news) and all(m["new_since"] for m in listed)
    first, second, *rest = sorted(held)
    approved = daemon.ctl_json("approve", first)  # a glob matching one model type
    assert approved["approved"] == 1 and approved["models"] == [first]
    assert job_targets(daemon)[f"{first}.safetensors"]["state"] == "queued"
    rejected = daemon.ctl_json("reject", held[second])  # by batch id
    assert rejected["models"] == [second]
    assert second not in kept(daemon)
    daemon.ctl("rescan")
    assert job_targets(daemon)[f"{second}.safetensors"]["state"] == "cancelled", (
        "a rejected model is not proposed again"
    )
    assert all(job_targets(daemon)[f"{n}.safetensors"]["state"] == "needs_approval" for n in rest)
    shown = daemon.ctl_json("models", "show", second)["model"]["kept"]
    assert shown["reason"] == "rejected" and not shown["kept"]


def test_restart_keeps_the_keep_set_and_drop_stops_and_reports(start: Callable[..., DaemonProcess], tree: Path) -> None:
    daemon = start()
    wait_for(lambda: kept(daemon) == {"t2v": "installed"}, what="t2v kept")
    daemon.ctl("add", "lynx")
    before = kept(daemon)
    daemon.stop()
    (tree / "ckpts" / T2V_INT8).unlink()  # nothing on disk says t2v is installed any more: it is remembered
    daemon.start()
    wait_for(lambda: refreshed(daemon), what="startup scan after restart")
    assert kept(daemon) == before == {"t2v": "installed", "lynx": "manual"}
    assert T2V_INT8 in job_targets(daemon), "a kept model's missing main file is queued again"
    lynx_only = [n for n, j in job_targets(daemon).items() if j["wanted_by"] == ["lynx"]]
    assert lynx_only
    dropped = daemon.ctl_json("drop", "lynx")
    assert dropped["dropped"] == ["lynx"] and len(dropped["stopped"]) == len(lynx_only)
    assert all(job_targets(daemon)[n]["state"] == "cancelled" for n in lynx_only)
    assert job_targets(daemon)[T2V_INT8]["state"] == "queued", "a file another kept model needs keeps going"
    (tree / "ckpts" / "lynx_module_mbf16.safetensors").write_bytes(b"x")  # would install lynx by its own module
    daemon.ctl("rescan")
    assert "lynx" not in kept(daemon), "a dropped model is not kept again by any automatic signal"
    again = daemon.ctl_json("drop", "t2v")
    assert again["dropped"] == ["t2v"] and job_targets(daemon)[T2V_INT8]["id"] in again["stopped"]
    assert again["unneeded"] == []  # none of t2v's files is on disk any more
    assert (tree / "ckpts" / "lynx_module_mbf16.safetensors").exists()
    text = daemon.ctl("drop", "lynx").stdout
    assert "dropped lynx: 0 job(s) stopped" in text
    assert "lynx_module_mbf16.safetensors" in text and "no kept model needs" in text


def test_a_gone_definition_is_reported_not_forgotten(start: Callable[..., DaemonProcess], tree: Path) -> None:
    daemon = start()
    wait_for(lambda: refreshed(daemon), what="startup scan")
    daemon.ctl("add", "standin")
    (tree / "defaults" / "standin.json").unlink()
    wait_for(lambda: daemon.ctl_json("status")["auto_queue"]["gone"] == ["standin"], timeout=10, what="reported")
    assert "kept model standin has no definition any more" in daemon.log()
    write(tree, "standin", borrower("standin"))
    wait_for(lambda: kept(daemon).get("standin") == "manual", timeout=10, what="back, still kept")
    assert daemon.ctl_json("status")["auto_queue"]["gone"] == []


def test_a_hidden_new_model_is_not_proposed_but_a_users_finetune_is(
    start: Callable[..., DaemonProcess], tree: Path, fake_hub: Any
) -> None:
    daemon = start()
    wait_for(lambda: refreshed(daemon), what="startup scan")
    for name, folder, visible in (("hidden_x", "defaults", False), ("my_tune", "finetunes", True)):
        fake_hub.add_file("Org/New", f"{name}.safetensors", size=3000, seed=len(name))
        write(
            tree,
            name,
            {
                "name": name,
                "architecture": "t2v",
                "visible": visible,
                "URLs": [f"{HF}/Org/New/resolve/main/{name}.safetensors"],
            },
            folder,
        )
    wait_for(lambda: kept(daemon).get("my_tune") == "finetune", timeout=10, what="the user's finetune kept")
    assert job_targets(daemon)["my_tune.safetensors"]["state"] == "queued"
    assert "hidden_x" not in kept(daemon) and "hidden_x.safetensors" not in job_targets(daemon)


# ---- Wan2GP's traces of use --------------------------------------------------------------------------------------


def test_outputs_queue_zip_and_transformer_types_make_models_kept(
    start: Callable[..., DaemonProcess], tree: Path, fake_hub: Any
) -> None:
    # An output PNG with the metadata comment, an MP4 with the ©cmt tag and a side-car .json each make their model
    # kept ("used"); transformer_types ("transformer_types") and a task pending in queue.zip ("queued", at the top
    # of the queue) too. Weak traces (last_model_type, a settings file) are hints only.
    import zipfile

    from test_usage import itxt_comment, meta, png_bytes, write_mp4

    config = {"transformer_quantization": "int8", "transformer_types": ["standin"], "last_model_type": "alpha"}
    (tree / "wgp_config.json").write_text(json.dumps(config))
    (tree / "settings").mkdir()
    (tree / "settings" / "alpha_settings.json").write_text("{}")
    outputs = tree / "outputs"
    outputs.mkdir()
    (outputs / "a.png").write_bytes(png_bytes(itxt_comment(meta("lynx"))))
    write_mp4(outputs / "b.mp4", meta("vace_14B"))
    (outputs / "c.json").write_text(meta("vace_lynx_14B"))
    (outputs / "c.wav").write_bytes(b"no metadata inside: the side-car says it")
    with zipfile.ZipFile(tree / "queue.zip", "w") as archive:
        archive.writestr("queue.json", json.dumps([{"id": 1, "params": {"model_type": "alpha", "prompt": "x"}}]))
    daemon = start()
    wait_for(lambda: refreshed(daemon), what="startup scan")
    assert kept(daemon) == {
        "t2v": "installed",
        "lynx": "used",
        "vace_14B": "used",
        "vace_lynx_14B": "used",
        "standin": "transformer_types",
        "alpha": "queued",
    }
    jobs = job_targets(daemon)
    assert jobs["alpha_module_mbf16.safetensors"]["priority"] == 100, "Wan2GP will load it next"
    assert jobs["lynx_module_mbf16.safetensors"]["priority"] == 0
    show = daemon.ctl_json("models", "show", "alpha")["model"]
    assert show["hints"] == "last model shown, settings file"
    # A new output later is read incrementally and keeps its model; nothing else is read again.
    (outputs / "d.png").write_bytes(png_bytes(itxt_comment(meta("flux_new"))))
    daemon.ctl("rescan")
    assert "; first made with flux_new\n" in daemon.log()


def test_a_hidden_model_is_never_kept_on_a_weak_trace(start: Callable[..., DaemonProcess], tree: Path) -> None:
    write(tree, "hidden_y", {**borrower("hidden_y"), "visible": False})
    (tree / "wgp_config.json").write_text(json.dumps({"last_model_type": "hidden_y"}))
    (tree / "settings").mkdir()
    (tree / "settings" / "hidden_y_settings.json").write_text("{}")
    daemon = start()
    wait_for(lambda: refreshed(daemon), what="startup scan")
    assert "hidden_y" not in kept(daemon)
    assert daemon.ctl_json("models", "show", "hidden_y")["model"]["hints"]
