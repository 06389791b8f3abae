"""Auto-queue with a real watcher on a real Wan2GP tree: what appears, changes or breaks ends in the right queue."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import FIXTURE_DEFAULTS, DaemonProcess, serve_models, wait_for

T2V_INT8 = "wan2.1_text2video_14B_quanto_mbf16_int8.safetensors"
T2V_BF16 = "wan2.1_text2video_14B_mbf16.safetensors"


def wait_until_idle(daemon: DaemonProcess) -> None:
    """Until the startup batch (t2v's 30-odd files) is downloaded and nothing runs."""
    wait_for(
        lambda: (
            (c := daemon.ctl_json("status")["counts"])["complete"] > 20 and c["queued"] == 0 and c["downloading"] == 0
        ),
        timeout=60,
        what="t2v complete",
    )


def refreshed(daemon: DaemonProcess) -> bool:
    return daemon.ctl_json("status")["auto_queue"]["last_refresh"] is not None


def jobs(daemon: DaemonProcess, **filters: str) -> list[dict[str, Any]]:
    args = ["queue", "--limit", "10000"]
    for key, value in filters.items():
        args += [f"--{key}", value]
    return daemon.ctl_json(*args)["jobs"]


def wanted_by(daemon: DaemonProcess, model: str) -> list[dict[str, Any]]:
    return [j for j in jobs(daemon) if model in j["wanted_by"]]


@pytest.fixture
def tree(wan2gp: Path, fake_hub: Any) -> Path:
    """t2v installed (its int8 main file is there), flux and i2v_2_2 defined but not installed."""
    for extra in ("i2v_2_2", "flux", "t2v_1.3B"):
        serve_models(fake_hub, _with_defaults(wan2gp, extra), (extra,))
    serve_models(fake_hub, wan2gp, ("t2v",))
    (wan2gp / "defaults" / "flux.json").unlink()  # appears later, in a test
    (wan2gp / "defaults" / "t2v_1.3B.json").unlink()
    (wan2gp / "ckpts" / T2V_INT8).write_bytes(b"the user's own copy")
    return wan2gp


def _with_defaults(wan2gp: Path, model: str) -> Path:
    target = wan2gp / "defaults" / f"{model}.json"
    if not target.exists():
        shutil.copy(FIXTURE_DEFAULTS / f"{model}.json", target)
    return wan2gp


@pytest.fixture
def start(daemon_factory: Callable[..., DaemonProcess], fake_hub: Any, tree: Path) -> Callable[..., DaemonProcess]:
    def run(paused: bool = True, **auto_queue: Any) -> DaemonProcess:
        policy = {"track": "installed", "new_models": "queue", "require_approval": False, **auto_queue}
        daemon = daemon_factory(
            paused=paused,
            hub={"endpoint": fake_hub.endpoint},
            watch={"enabled": True, "debounce": "50ms", "reconcile_interval": "1h"},
            auto_queue=policy,
        ).start()
        return daemon

    return run


def test_installed_model_is_completed_at_start(start: Callable[..., DaemonProcess]) -> None:
    daemon = start()
    queued = wait_for(lambda: wanted_by(daemon, "t2v"), what="t2v files queued")
    assert all(j["state"] == "queued" and j["origin"] == "auto" for j in queued)
    assert not any(j["target"].endswith(T2V_INT8) for j in queued), "the present main file is not fetched"
    assert not [j for j in jobs(daemon) if "wan2.2_image2video" in j["target"]], "not installed, not tracked"
    assert "auto-queue (startup)" in daemon.log()
    status = daemon.ctl_json("status")
    assert status["auto_queue"]["track"] == "installed" and status["auto_queue"]["tracked"] == 1


def test_new_defaults_file_is_queued(start: Callable[..., DaemonProcess], tree: Path) -> None:
    daemon = start()
    wait_for(lambda: wanted_by(daemon, "t2v"), what="startup batch")
    shutil.copy(FIXTURE_DEFAULTS / "flux.json", tree / "defaults" / "flux.json")
    flux = wait_for(lambda: wanted_by(daemon, "flux"), timeout=10, what="flux files queued")
    assert any(j["target"].endswith("flux1-dev_quanto_bf16_int8.safetensors") for j in flux)
    assert "new model definition flux" in daemon.log()


def test_atomic_save_is_seen(start: Callable[..., DaemonProcess], tree: Path) -> None:
    daemon = start()
    wait_for(lambda: wanted_by(daemon, "t2v"), what="startup batch")
    temp = tree / "defaults" / ".t2v_1.3B.json.tmp"
    shutil.copy(FIXTURE_DEFAULTS / "t2v_1.3B.json", temp)
    os.replace(temp, tree / "defaults" / "t2v_1.3B.json")  # what editors and git do
    wait_for(lambda: wanted_by(daemon, "t2v_1.3B"), timeout=10, what="t2v_1.3B queued after atomic save")


def test_folder_and_finetune_created_at_once(start: Callable[..., DaemonProcess], tree: Path, fake_hub: Any) -> None:
    shutil.rmtree(tree / "finetunes")
    fake_hub.add_file("Me/Finetunes", "my_t2v_int8.safetensors", size=3000)
    daemon = start()
    wait_for(lambda: wanted_by(daemon, "t2v"), what="startup batch")
    folder = tree / "finetunes"
    folder.mkdir()
    (folder / "my_t2v.json").write_text(
        json.dumps(
            {
                "model": {
                    "name": "My t2v",
                    "architecture": "t2v",
                    "URLs": ["https://huggingface.co/Me/Finetunes/resolve/main/my_t2v_int8.safetensors"],
                }
            }
        )
    )
    mine = wait_for(lambda: wanted_by(daemon, "my_t2v"), timeout=10, what="finetune queued")
    assert any(j["target"].endswith("ckpts/my_t2v_int8.safetensors") for j in mine)


def test_finetune_merge_queues_its_new_files(start: Callable[..., DaemonProcess], tree: Path, fake_hub: Any) -> None:
    fake_hub.add_file("Me/Finetunes", "better_t2v_vae.safetensors", size=2500)
    daemon = start()
    wait_for(lambda: wanted_by(daemon, "t2v"), what="startup batch")
    # A finetune with the stem of an existing type is merged into it key by key.
    (tree / "finetunes" / "t2v.json").write_text(
        json.dumps(
            {
                "model": {
                    "VAE_URLs": ["https://huggingface.co/Me/Finetunes/resolve/main/better_t2v_vae.safetensors"],
                }
            }
        )
    )
    wait_for(
        lambda: any(j["target"].endswith("better_t2v_vae.safetensors") for j in wanted_by(daemon, "t2v")),
        timeout=10,
        what="merged finetune's file queued",
    )


def test_quantization_switch_queues_the_other_variant(start: Callable[..., DaemonProcess], tree: Path) -> None:
    daemon = start()
    wait_for(lambda: wanted_by(daemon, "t2v"), what="startup batch")
    assert not any(j["target"].endswith(T2V_BF16) for j in jobs(daemon))
    (tree / "wgp_config.json").write_text(json.dumps({"transformer_quantization": "bf16"}))
    wait_for(
        lambda: any(j["target"].endswith(T2V_BF16) for j in wanted_by(daemon, "t2v")),
        timeout=10,
        what="bf16 variant queued",
    )
    assert "wgp_config.json now asks for" in daemon.log()


def test_broken_definition_fails_alone_and_is_queued_once_fixed(
    start: Callable[..., DaemonProcess], tree: Path
) -> None:
    daemon = start()
    wait_for(lambda: wanted_by(daemon, "t2v"), what="startup batch")
    broken = tree / "defaults" / "flux.json"
    broken.write_text('{"model": {"name": "Flux", "architecture": "flux", "URLs": [')
    error = wait_for(
        lambda: [m for m in daemon.ctl_json("models", "--filter", "flux")["models"] if m["error"]],
        timeout=10,
        what="flux error shown",
    )
    assert "flux.json" in error[0]["error"]
    assert daemon.ctl_json("status")["pid"] == daemon.proc.pid, "the daemon keeps running"
    assert daemon.ctl_json("models", "--all", "--filter", "t2v")["count"] >= 1
    shutil.copy(FIXTURE_DEFAULTS / "flux.json", broken)
    wait_for(lambda: wanted_by(daemon, "flux"), timeout=10, what="flux queued once fixed")


def test_size_cap_holds_batch_for_approval(start: Callable[..., DaemonProcess], tree: Path) -> None:
    daemon = start(max_auto_bytes="10KB")
    held = wait_for(lambda: jobs(daemon, state="needs_approval"), what="held batch")
    assert not jobs(daemon, state="queued")
    status = daemon.ctl_json("status")
    ((batch, info),) = status["batches"].items()
    assert info["jobs"] == len(held) and info["bytes"] == sum(j["size"] for j in held)
    assert "over auto_queue.max_auto_bytes" in daemon.log()
    shutil.copy(FIXTURE_DEFAULTS / "flux.json", tree / "defaults" / "flux.json")
    wait_for(lambda: len(daemon.ctl_json("status")["batches"]) == 2, timeout=10, what="second held batch")
    assert daemon.ctl_json("approve", batch)["approved"] == len(held)
    assert {j["id"] for j in jobs(daemon, state="queued")} == {j["id"] for j in held}
    rejected = daemon.ctl_json("reject")["rejected"]
    assert rejected == len(wanted_by(daemon, "flux")) > 0
    assert not jobs(daemon, state="needs_approval")
    daemon.ctl("rescan")
    assert not jobs(daemon, state="needs_approval"), "a rejected file is not proposed again"


def test_require_approval_holds_everything(start: Callable[..., DaemonProcess]) -> None:
    daemon = start(require_approval=True)
    wait_for(lambda: jobs(daemon, state="needs_approval"), what="held batch")
    assert not jobs(daemon, state="queued")


def test_include_and_exclude(start: Callable[..., DaemonProcess], tree: Path) -> None:
    daemon = start(include=["i2v_*"], exclude=["flux*"])
    wait_for(lambda: [j for j in jobs(daemon) if "wan2.2_image2video" in j["target"]], what="included model queued")
    shutil.copy(FIXTURE_DEFAULTS / "flux.json", tree / "defaults" / "flux.json")
    wait_for(lambda: "new model definition flux" in daemon.log(), timeout=10, what="flux seen")
    daemon.ctl("rescan")
    assert not [j for j in jobs(daemon) if "flux1" in j["target"]], "excluded"


def test_track_none_queues_nothing(start: Callable[..., DaemonProcess], tree: Path) -> None:
    daemon = start(track="none")
    wait_for(lambda: refreshed(daemon), what="startup scan")
    shutil.copy(FIXTURE_DEFAULTS / "flux.json", tree / "defaults" / "flux.json")
    wait_for(lambda: "new model definition flux" in daemon.log(), timeout=10, what="flux seen")
    assert jobs(daemon) == []


def test_deleted_file_of_tracked_model_is_fetched_again(start: Callable[..., DaemonProcess], tree: Path) -> None:
    daemon = start(paused=False)
    wait_until_idle(daemon)
    vae = tree / "ckpts" / "Wan2.1_VAE.safetensors"
    assert vae.is_symlink()
    vae.unlink()
    wait_for(vae.exists, timeout=15, what="VAE fetched again")
    (job,) = [j for j in jobs(daemon) if j["target"] == str(vae)]
    assert job["state"] == "complete" and job["source"] == "hf-cache"


def test_model_added_with_all_variants_keeps_every_variant(start: Callable[..., DaemonProcess], tree: Path) -> None:
    daemon = start(track="none")
    wait_for(lambda: refreshed(daemon), what="startup scan")
    added = daemon.ctl_json("add", "i2v_2_2", "--all-variants")["models"]
    assert added["files"] > 0
    targets = {Path(j["target"]).name for j in jobs(daemon)}
    assert {
        "wan2.2_image2video_14B_high_mbf16.safetensors",
        "wan2.2_image2video_14B_high_quanto_mbf16_int8.safetensors",
    } <= targets
    # A later rescan keeps them wanted (kept by hand, every variant) and queues nothing twice.
    before = len(jobs(daemon))
    daemon.ctl("rescan")
    assert len(jobs(daemon)) == before
    shown = [m for m in daemon.ctl_json("models", "--all", "--filter", "i2v_2_2")["models"] if m["type"] == "i2v_2_2"]
    assert shown[0]["tracked"] == "manual"
    assert daemon.ctl_json("models", "show", "i2v_2_2")["model"]["kept"]["all_variants"] is True


def test_polling_mode_for_network_filesystems(
    daemon_factory: Callable[..., DaemonProcess], fake_hub: Any, tree: Path
) -> None:
    daemon = daemon_factory(
        paused=True,
        hub={"endpoint": fake_hub.endpoint},
        watch={
            "enabled": True,
            "force_polling": True,
            "poll_interval": "200ms",
            "debounce": "50ms",
            "reconcile_interval": "1h",
        },
        auto_queue={"track": "none", "new_models": "queue"},
    ).start()
    assert daemon.ctl_json("status")["watcher"]["mode"] == "polling"
    wait_for(lambda: refreshed(daemon), what="startup scan")
    daemon.ctl("rescan")
    shutil.copy(FIXTURE_DEFAULTS / "t2v_1.3B.json", tree / "defaults" / "t2v_1.3B.json")
    # track: none, so nothing is queued; the poller must still see the file and announce it.
    wait_for(lambda: "new model definition t2v_1.3B" in daemon.log(), timeout=10, what="polled change")


def test_unwanted_files_are_reported_never_deleted(start: Callable[..., DaemonProcess], tree: Path) -> None:
    daemon = start(paused=False)
    wait_until_idle(daemon)
    assert daemon.ctl_json("status")["auto_queue"]["orphans"] == 0
    vae = tree / "ckpts" / "Wan2.1_VAE.safetensors"
    (tree / "defaults" / "t2v.json").unlink()
    (tree / "defaults" / "i2v_2_2.json").unlink()
    wait_for(lambda: daemon.ctl_json("status")["auto_queue"]["orphans"] > 20, timeout=10, what="orphans reported")
    assert vae.exists(), "a file no model wants is never deleted"


def test_automatic_decisions_are_events(start: Callable[..., DaemonProcess], tree: Path) -> None:
    import http.client
    import socket as socket_module

    daemon = start(max_auto_bytes="10KB")
    wait_for(lambda: refreshed(daemon), what="startup scan")
    connection = http.client.HTTPConnection("wangpd", timeout=30)
    sock = socket_module.socket(socket_module.AF_UNIX)
    sock.connect(str(daemon.socket))
    connection.sock = sock
    connection.request("GET", "/events")
    response = connection.getresponse()
    shutil.copy(FIXTURE_DEFAULTS / "flux.json", tree / "defaults" / "flux.json")
    for _ in range(500):  # bounded: status events arrive every 0.2 s
        event = json.loads(response.readline())
        if event["event"] == "auto":
            assert event["approval"] is True and "flux" in event["models"] and event["bytes"] > 10_000
            assert event["batch"] and "max_auto_bytes" in event["reason"]
            break
    else:
        pytest.fail("no auto event")
    connection.close()


def test_inotify_exhaustion_falls_back_to_polling(start: Callable[..., DaemonProcess], tree: Path) -> None:
    limit_file = Path("/proc/sys/fs/inotify/max_user_watches")
    if os.getuid() != 0 or not os.access(limit_file, os.W_OK):
        pytest.skip("needs root and a writable /proc/sys to lower the inotify limit")
    saved = limit_file.read_text()
    try:
        limit_file.write_text("1\n")
        daemon = start(track="none")
        wait_for(lambda: "fs.inotify.max_user_watches" in daemon.log(), timeout=10, what="the sysctl named")
    finally:
        limit_file.write_text(saved)
    wait_for(lambda: daemon.ctl_json("status")["watcher"]["mode"] == "polling", what="polling")
    shutil.copy(FIXTURE_DEFAULTS / "t2v_1.3B.json", tree / "defaults" / "t2v_1.3B.json")
    wait_for(lambda: "new model definition t2v_1.3B" in daemon.log(), timeout=15, what="change seen by polling")


def test_a_model_plugin_enabled_later_is_seen(start: Callable[..., DaemonProcess], tree: Path, fake_hub: Any) -> None:
    """Issue 17: installing a model plugin and enabling it in wgp_config.json (what Wan2GP's plugin manager does)
    brings its models into the catalog without a restart; `models show` names the plugin."""
    fake_hub.add_file("Me/Plugin", "plug_t2v_int8.safetensors", size=3000)
    daemon = start()
    wait_for(lambda: wanted_by(daemon, "t2v"), what="startup batch")
    folder = tree / "plugins" / "wan2gp-plug"
    (folder / "defaults").mkdir(parents=True)
    (folder / "plugin_info.json").write_text(json.dumps({"name": "Plug", "defaults": "defaults"}))
    url = "https://huggingface.co/Me/Plugin/resolve/main/plug_t2v_int8.safetensors"
    (folder / "defaults" / "plug_t2v.json").write_text(
        json.dumps({"model": {"name": "Plug t2v", "architecture": "t2v", "URLs": [url]}})
    )
    config = tree / "wgp_config.json"
    settings = json.loads(config.read_text()) if config.exists() else {}
    config.write_text(json.dumps({**settings, "enabled_plugins": ["wan2gp-plug"]}))

    def shown() -> dict[str, Any] | None:
        done = daemon.ctl("models", "show", "plug_t2v", "--json", check=False)
        return json.loads(done.stdout) if done.returncode == 0 else None

    data = wait_for(shown, timeout=10, what="the plugin's model listed")
    assert data["model"]["plugin"] == "wan2gp-plug"
    assert [f["local"] for f in data["files"] if f["role"] == "main"] == ["ckpts/plug_t2v_int8.safetensors"]
    text = daemon.ctl("models", "show", "plug_t2v").stdout
    assert "from Wan2GP plugin: wan2gp-plug" in text
