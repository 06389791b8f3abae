"""Accelerator profiles through the daemon: `models show` lists them, `add --with-profile` queues their LoRAs, and a
LoRA Wan2GP has recorded in its URL cache is kept complete (issue 17)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from conftest import DaemonProcess, serve_models, wait_for

FUSIONX = (
    "https://huggingface.co/DeepBeepMeep/Wan2.1/resolve/main/loras_accelerators/Wan2.1_T2V_14B_FusionX.safetensors"
)
LORA = "loras/wan/Wan2.1_T2V_14B_FusionX.safetensors"


def test_profiles_shown_added_by_hand_and_kept_once_picked(
    daemon_factory: Callable[..., DaemonProcess], fake_hub: Any, wan2gp: Path
) -> None:
    (wan2gp / "profiles" / "wan").mkdir(parents=True)
    (wan2gp / "profiles" / "wan" / "FusioniX t2v - 10 Steps.json").write_text(
        json.dumps({"activated_loras": [FUSIONX], "num_inference_steps": 10})
    )
    serve_models(fake_hub, wan2gp, ("t2v",))
    fake_hub.add_file("DeepBeepMeep/Wan2.1", "loras_accelerators/Wan2.1_T2V_14B_FusionX.safetensors", size=3000)
    daemon = daemon_factory(
        paused=True,
        hub={"endpoint": fake_hub.endpoint},
        watch={"enabled": True, "debounce": "50ms", "reconcile_interval": "1h"},
        auto_queue={"track": "none"},
    ).start()

    shown = daemon.ctl_json("models", "show", "t2v")["model"]["profiles"]
    assert shown == [
        {
            "name": "wan/FusioniX t2v - 10 Steps",
            "used": False,
            "included": False,
            "files": [{"local": LORA, "url": FUSIONX, "present": False}],
        }
    ]
    assert "wan/FusioniX t2v - 10 Steps: 0/1 LoRA(s) on disk" in daemon.ctl("models", "show", "t2v").stdout

    dry = daemon.ctl_json("add", "t2v", "--with-profile", "FusioniX*", "--dry-run")["models"]
    assert LORA in [item["local"] for item in dry["list"]]
    plain = daemon.ctl_json("add", "t2v", "--dry-run")["models"]
    assert LORA not in [item["local"] for item in plain["list"]]
    wrong = daemon.ctl("add", "t2v", "--with-profile", "Lightning*", check=False)
    assert wrong.returncode == 1 and "no accelerator profile of t2v matches 'Lightning*'" in wrong.stderr

    # Once Wan2GP has recorded the profile's LoRA (the user picked it), a kept t2v keeps it complete.
    daemon.ctl_json("add", "t2v")
    (wan2gp / "loras_url_cache_v2.json").write_text(
        json.dumps({"loras/wan|Wan2.1_T2V_14B_FusionX.safetensors": FUSIONX}, indent=4)
    )

    def queued() -> bool:
        jobs = daemon.ctl_json("queue", "--limit", "1000")["jobs"]
        return any(j["target"].endswith("/" + LORA) for j in jobs)

    wait_for(queued, timeout=15, what="the picked LoRA to be queued by the watcher")
    assert daemon.ctl_json("models", "show", "t2v")["model"]["profiles"][0]["used"] is True
