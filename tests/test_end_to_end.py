"""A model added by hand ends as verified files in the HF cache, linked where Wan2GP looks."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from conftest import invokeai_db, serve_models, wait_for


def _all_done(daemon, total: int | None = None) -> dict | None:
    status = daemon.ctl_json("status")
    counts = status["counts"]
    busy = counts["queued"] + counts["downloading"]
    if busy == 0 and counts["complete"] + counts["failed"] > 0:
        return status
    return None


def test_add_model_downloads_verifies_and_links(daemon_factory, fake_hub, wan2gp: Path, tmp_path: Path) -> None:
    served = serve_models(fake_hub, wan2gp, ("t2v",))
    daemon = daemon_factory(hub={"endpoint": fake_hub.endpoint}).start()
    dry = daemon.ctl_json("add", "t2v", "--dry-run")["models"]
    assert dry["dry_run"] and dry["files"] > 20 and dry["models"] == ["t2v"]
    added = daemon.ctl_json("add", "t2v")["models"]
    assert added["files"] == dry["files"] and added["bytes"] == 2000 * added["files"]
    status = wait_for(lambda: _all_done(daemon), timeout=60, interval=0.2, what="downloads to finish")
    assert status["counts"]["failed"] == 0, daemon.ctl("queue", "--state", "failed").stdout
    assert status["counts"]["complete"] == added["files"]

    main = wan2gp / "ckpts" / "wan2.1_text2video_14B_quanto_mbf16_int8.safetensors"
    assert main.is_symlink()
    cache = tmp_path / "hfcache"
    assert Path(os.path.realpath(main)).is_relative_to(cache)
    fake = served["ckpts/wan2.1_text2video_14B_quanto_mbf16_int8.safetensors"]
    assert main.read_bytes() == fake.content()
    # Nested handler files land in their folder, flat main files in ckpts/.
    assert (wan2gp / "ckpts" / "umt5-xxl" / "models_t5_umt5-xxl-enc-quanto_int8.safetensors").exists()
    assert not list(wan2gp.rglob("*.incomplete"))

    models = daemon.ctl_json("models", "--all", "--filter", "t2v")["models"]
    t2v = next(m for m in models if m["type"] == "t2v")
    assert t2v["complete"] and t2v["tracked"] == "manual"

    # The cache is a real HF cache: hf verifies it, huggingface_hub finds files offline.
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_ENDPOINT": fake_hub.endpoint, "HF_HUB_OFFLINE": "1"}
    hf = Path(os.sys.executable).parent / "hf"
    listing = subprocess.run([str(hf), "cache", "ls"], capture_output=True, text=True, env=env, timeout=60)
    assert listing.returncode == 0 and "DeepBeepMeep/Wan2.1" in listing.stdout, listing.stderr
    env.pop("HF_HUB_OFFLINE")
    verify = subprocess.run(
        [str(hf), "cache", "verify", "DeepBeepMeep/Wan2.1"], capture_output=True, text=True, env=env, timeout=120
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    offline = subprocess.run(
        [
            os.sys.executable,
            "-c",
            "from huggingface_hub import hf_hub_download as d; print(d('DeepBeepMeep/Wan2.1', "
            "'wan2.1_text2video_14B_quanto_mbf16_int8.safetensors', local_files_only=True))",
        ],
        capture_output=True,
        text=True,
        env={**env, "HF_HUB_OFFLINE": "1"},
        timeout=60,
    )
    assert offline.returncode == 0 and str(cache) in offline.stdout, offline.stderr

    # Asking again fetches nothing: every file is present.
    gets = fake_hub.bytes_served
    again = daemon.ctl_json("add", "t2v")["models"]
    assert again["files"] == 0 and fake_hub.bytes_served == gets


def test_a_user_file_is_never_replaced(daemon_factory, fake_hub, wan2gp: Path) -> None:
    serve_models(fake_hub, wan2gp, ("t2v",))
    own = wan2gp / "ckpts" / "Wan2.1_VAE.safetensors"
    own.write_bytes(b"my own vae")
    daemon = daemon_factory(hub={"endpoint": fake_hub.endpoint}).start()
    added = daemon.ctl_json("add", "https://huggingface.co/DeepBeepMeep/Wan2.1/resolve/main/Wan2.1_VAE.safetensors")
    job_id = str(added["files"][0]["job"]["id"])
    job = wait_for(
        lambda: (j := daemon.ctl_json("job", "show", job_id))["state"] == "complete" and j, timeout=30, what="job done"
    )
    assert job["source"] == "present"
    assert own.read_bytes() == b"my own vae" and not own.is_symlink()


def test_invokeai_file_is_linked_not_downloaded(daemon_factory, fake_hub, wan2gp: Path, tmp_path: Path) -> None:
    served = serve_models(fake_hub, wan2gp, ("t2v",))
    vae = served["ckpts/Wan2.1_VAE.safetensors"]
    models_dir = tmp_path / "invokeai" / "models"
    url = "https://huggingface.co/DeepBeepMeep/Wan2.1/resolve/main/Wan2.1_VAE.safetensors"
    db = invokeai_db(tmp_path, models_dir, url, "Wan2.1_VAE.safetensors", vae.size)
    key = next(p for p in models_dir.iterdir())
    (key / "Wan2.1_VAE.safetensors").write_bytes(vae.content())
    daemon = daemon_factory(
        hub={"endpoint": fake_hub.endpoint}, invokeai_db=str(db), invokeai_models_dir=str(models_dir)
    ).start()
    added = daemon.ctl_json("add", url)
    job_id = str(added["files"][0]["job"]["id"])
    job = wait_for(
        lambda: (j := daemon.ctl_json("job", "show", job_id))["state"] == "complete" and j, timeout=30, what="job done"
    )
    assert job["source"] == "invokeai"
    target = wan2gp / "ckpts" / "Wan2.1_VAE.safetensors"
    assert os.path.realpath(target) == str((key / "Wan2.1_VAE.safetensors").resolve())
    assert not [r for r in fake_hub.requests if r.path.endswith("Wan2.1_VAE.safetensors")]
    plan = daemon.ctl_json("plan", "--model", "t2v")
    vae_row = next(f for f in plan["files"] if f["local"] == "ckpts/Wan2.1_VAE.safetensors")
    assert vae_row["status"] == "present"


def test_whole_repo_folder_lands_complete_or_not_at_all(daemon_factory, fake_hub, wan2gp: Path, tmp_path: Path) -> None:
    """Wan2GP fetches some folders whole (snapshot_download) and takes any existing folder as complete."""
    from wangpd.models import JobSpec
    from wangpd.store import Store

    repo = "m-a-p/xcodec_mini_infer"
    a = fake_hub.add_file(repo, "models/a.safetensors", size=5000, seed=7)
    b = fake_hub.add_file(repo, "models/sub/config.json", data=b'{"x": 1}')
    fake_hub.add_file(repo, "other/c.json", data=b"{}")
    store = Store.open(tmp_path / "state" / "hfcache.db")
    target = wan2gp / "ckpts" / "xcodec_mini_infer" / "models"
    store.add_job(
        JobSpec(
            url=f"https://huggingface.co/{repo}/resolve/main/models/", target=str(target), repo=repo, path="models/"
        )
    )
    store.close()
    daemon = daemon_factory(hub={"endpoint": fake_hub.endpoint}).start()
    job = wait_for(
        lambda: (j := daemon.ctl_json("job", "show", "1"))["state"] in ("complete", "failed") and j,
        timeout=30,
        what="folder job done",
    )
    assert job["state"] == "complete", job["last_error"]
    assert (target / "a.safetensors").read_bytes() == a.content()
    assert (target / "sub" / "config.json").read_bytes() == b.content()
    assert not (target / "c.json").exists() and not (target.parent / "other").exists()
    assert job["size"] == a.size + b.size
    assert not list(target.parent.glob(".*wangpd-tmp"))
