"""Faults from the Hub, through the real daemon: each file ends complete (and correct) or failed with a reason that
says what to do; never a corrupt file under a Wan2GP name."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from conftest import DaemonProcess, wait_for
from fakehub import Fault

SIZE = 1_500_000

# name -> (faults, expected state, words the reason must contain when failed)
CASES: dict[str, tuple[list[Fault], str, tuple[str, ...]]] = {
    "rate_limited": ([Fault(on="resolve", status=429, retry_after="1", times=2)], "complete", ()),
    "busy_503": ([Fault(on="resolve", status=503, times=3)], "complete", ()),
    "cdn_503": ([Fault(on="body", status=503, times=2)], "complete", ()),
    "dropped": ([Fault(on="body", drop_after=400_000), Fault(on="body", drop_after=300_000)], "complete", ()),
    "flipped_once": ([Fault(on="body", flip_at=1234)], "complete", ()),
    "flipped_always": ([Fault(on="body", flip_at=777, times=10)], "failed", ("sha256 mismatch", "discarded")),
    "stalled": ([Fault(on="body", stall_after=500_000, stall_for=20)], "complete", ()),
    "no_range": ([Fault(on="body", drop_after=600_000), Fault(on="body", ignore_range=True)], "complete", ()),
    "short_length": ([Fault(on="body", length_delta=-1000)], "complete", ()),
    "long_length": ([Fault(on="body", length_delta=5000)], "complete", ()),
    "forbidden": ([Fault(on="resolve", status=403, times=10)], "failed", ("access denied", "hf auth login")),
    "unauthorized": ([Fault(on="resolve", status=401, times=10)], "failed", ("hf auth login",)),
    "redirect_loop": ([Fault(on="body", redirect_loop=True, times=1)], "failed", ("redirects in a loop",)),
    # Issue 15, item 6: the endpoint is on loopback, so loopback is allowed; a private or link-local destination
    # and a non-HTTP scheme are refused before anything is sent there (no traffic leaves loopback).
    "redirect_private": ([Fault(on="body", redirect_to="http://10.11.12.13/x")], "failed", ("a private address",)),
    "redirect_metadata": (
        [Fault(on="body", redirect_to="http://169.254.169.254/latest/meta-data/")],
        "failed",
        ("a special address", "refused"),
    ),
    "redirect_file": ([Fault(on="body", redirect_to="file:///etc/passwd")], "failed", ("only HTTP(S) is fetched",)),
}


def test_faults_end_complete_or_failed_with_a_reason(
    daemon_factory: Callable[..., DaemonProcess], fake_hub: Any, wan2gp: Path
) -> None:
    fakes = {}
    for index, (name, (faults, _, _)) in enumerate(CASES.items()):
        fakes[name] = fake_hub.add_file("Org/Faults", f"{name}.safetensors", size=SIZE, seed=500 + index)
        fake_hub.inject("Org/Faults", f"{name}.safetensors", *faults)
    daemon = daemon_factory(
        hub={"endpoint": fake_hub.endpoint},
        download={
            "concurrency": 4,
            "stall_timeout": "1s",
            "backoff_max": "1s",
            "max_attempts": 6,
            "chunk_size": "64KiB",
        },
    ).start()
    urls = [f"https://huggingface.co/Org/Faults/resolve/main/{name}.safetensors" for name in CASES]
    urls.append("https://huggingface.co/Org/Faults/resolve/main/missing.safetensors")  # 404
    for url in urls:
        daemon.ctl("add", url)

    def settled() -> dict[str, dict[str, Any]] | None:
        jobs = daemon.ctl_json("queue", "--limit", "100")["jobs"]
        if len(jobs) == len(urls) and all(j["state"] in ("complete", "failed") for j in jobs):
            return {Path(j["target"]).stem: j for j in jobs}
        return None

    jobs = wait_for(settled, timeout=90, interval=0.25, what="every faulty download to settle")
    for name, (_, expected, words) in CASES.items():
        job = jobs[name]
        assert job["state"] == expected, f"{name}: {job['state']} ({job['last_error']})"
        target = wan2gp / "ckpts" / f"{name}.safetensors"
        if expected == "complete":
            assert hashlib.sha256(target.read_bytes()).hexdigest() == fakes[name].sha256, name
        else:
            assert not target.exists() and not target.is_symlink(), f"{name}: nothing under the Wan2GP name"
            for word in words:
                assert word in job["last_error"], f"{name}: {job['last_error']!r} lacks {word!r}"
    missing = jobs["missing"]
    assert missing["state"] == "failed" and "check the URL" in missing["last_error"]
    assert not [p for p in wan2gp.rglob("*") if ".incomplete" in p.name]
    # Resumes really resumed: the dropped file was not fetched from zero three times.
    assert fakes["dropped"].bytes_served < 2 * SIZE
