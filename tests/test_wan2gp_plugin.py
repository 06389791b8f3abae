"""The Wan2GP plugin against a real daemon and the fake Hub, loaded the way Wan2GP's plugin manager loads it
(tests/wan2gp_harness.py), and ``wangpctl``'s install/uninstall on a Wan2GP folder. No gradio needed here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from wan2gp_harness import load_wan2gp, make_wgp_py

from conftest import serve_models, wait_for
from fakehub import Fault
from wangpctl.wan2gp import MARKER, PLUGIN_ID, PluginInstallError, install_plugin, uninstall_plugin, wan2gp_processes

HF = "https://huggingface.co"
REPO = "DeepBeepMeep/Wan2.1"

# A wgp_config.json as Wan2GP writes it (json.dumps(server_config, indent=4)), keys in its order, non-ASCII escaped.
REAL_CONFIG = """{
    "attention_mode": "auto",
    "transformer_types": [],
    "transformer_quantization": "int8",
    "text_encoder_quantization": "int8",
    "save_path": "/home/anna/Wan2GP/outputs",
    "image_save_path": "/home/anna/Wan2GP/outputs",
    "compile": "",
    "metadata_type": "metadata",
    "boost": 1,
    "clear_file_list": 5,
    "vae_config": 0,
    "profile": 4,
    "preload_model_policy": [],
    "UI_theme": "default",
    "checkpoints_paths": [
        "ckpts",
        "."
    ],
    "loras_root": "loras",
    "enabled_plugins": [
        "wan2gp-video-mask-creator",
        "wan2gp-motion-designer"
    ],
    "last_model_type": "t2v",
    "last_model_per_family": {
        "wan": "t2v",
        "flux": "flux"
    },
    "last_resolution_choice": "832x480",
    "notes": "caf\\u00e9 \\u2013 mine"
}"""


@pytest.fixture
def plugin_env(monkeypatch: pytest.MonkeyPatch, short_dir: Path) -> dict[str, str]:
    """The environment Wan2GP's process would give the plugin: the daemon's socket, short times for the tests."""
    env = {
        "WANGPCTL_SOCKET": str(short_dir / "wangpd.sock"),
        "WANGPD_PLUGIN_PREFETCH_DELAY": "0",
        "WANGPD_PLUGIN_STALL_TIMEOUT": "30",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


def installed(wan2gp: Path) -> Path:
    """The Wan2GP folder with the plugin installed and enabled, the way a user would do it."""
    make_wgp_py(wan2gp)
    result = install_plugin(wan2gp)
    assert result["enabled"] is True
    return wan2gp


def wangpd_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("[wangpd]")]


def relative(path: str, root: Path) -> str:
    return os.path.relpath(path, root)


# ---- prefetch on model choice ------------------------------------------------------------------------------------


def test_model_change_queues_that_model_first(daemon_factory, fake_hub, wan2gp: Path, plugin_env) -> None:
    serve_models(fake_hub, wan2gp, ("t2v", "flux"))
    daemon = daemon_factory(paused=True, hub={"endpoint": fake_hub.endpoint}).start()
    daemon.ctl_json("add", "flux")  # queued before, at the default priority
    with load_wan2gp(installed(wan2gp)) as app:
        started = time.monotonic()
        app.select_model("t2v")
        assert time.monotonic() - started < 0.5, "on_model_change must not wait for the daemon"

        needed = {f["local"] for f in daemon.ctl_json("models", "show", "t2v")["files"] if f["status"] != "present"}
        assert len(needed) > 10

        def t2v_on_top() -> list[dict[str, Any]] | None:
            if app.plugin().prefetcher.sent != ["t2v"]:
                return None
            jobs = daemon.ctl_json("queue", "--limit", "1000")["jobs"]
            mine = [i for i, job in enumerate(jobs) if relative(job["target"], wan2gp) in needed]
            return jobs if len(mine) > 10 and mine == list(range(len(mine))) else None

        jobs = wait_for(t2v_on_top, timeout=30, interval=0.2, what="t2v's files at the top of the queue")
        # flux's own files are still there, below; the files both models share moved up with t2v.
        below = [job for job in jobs if relative(job["target"], wan2gp) not in needed]
        assert below and all("flux" in job["wanted_by"] and job["priority"] < jobs[0]["priority"] for job in below)
        shared = [job for job in jobs if "flux" in job["wanted_by"] and relative(job["target"], wan2gp) in needed]
        assert shared, "files flux and t2v share were queued for flux first, and must move up too"
        kept = {m["type"]: m for m in daemon.ctl_json("models", "--all")["models"]}
        assert kept["t2v"]["tracked"] == "manual"


def test_browsing_through_models_queues_only_the_last(
    daemon_factory, fake_hub, wan2gp: Path, plugin_env, monkeypatch
) -> None:
    serve_models(fake_hub, wan2gp, ("t2v", "flux"))
    daemon = daemon_factory(paused=True, hub={"endpoint": fake_hub.endpoint}).start()
    monkeypatch.setenv("WANGPD_PLUGIN_PREFETCH_DELAY", "0.5")
    with load_wan2gp(installed(wan2gp)) as app:
        for model in ("flux", "i2v_2_2", "t2v"):
            app.select_model(model)
        prefetcher = app.plugin().prefetcher
        wait_for(lambda: prefetcher.sent, timeout=20, what="the prefetch to be sent")
        time.sleep(0.8)  # a second one would have been sent by now
        assert prefetcher.sent == ["t2v"]
    assert {m for job in daemon.ctl_json("queue", "--limit", "1000")["jobs"] for m in job["wanted_by"]} == {"t2v"}


# ---- Wan2GP waits for wangpd ---------------------------------------------------------------------------------------


def test_a_file_being_fetched_is_waited_for_not_downloaded_again(
    daemon_factory, fake_hub, wan2gp: Path, plugin_env, capsys
) -> None:
    serve_models(fake_hub, wan2gp, ("t2v",))  # download_models asks wangpd for the whole model first
    big = fake_hub.add_file(REPO, "big_test_model.safetensors", size=1_200_000, seed=5)
    url = f"{HF}/{REPO}/resolve/main/big_test_model.safetensors"
    daemon = daemon_factory(
        hub={"endpoint": fake_hub.endpoint}, download={"bandwidth": "400KiB/s", "chunk_size": "64KiB"}
    ).start()
    daemon.ctl_json("add", url)  # wangpd is already fetching it when Wan2GP asks
    wait_for(lambda: daemon.ctl_json("queue")["jobs"][0]["state"] == "downloading", timeout=20, what="the start")
    reports: list[Any] = []
    gen = {"download_progress_callback": reports.append}
    with load_wan2gp(installed(wan2gp)) as app:
        started = time.monotonic()
        # wgp.py's download_models calls the download_file global of the moment: the plugin's wrapper.
        app.wgp.globals["download_models"](url, "t2v", 0, 1, gen=gen)
        waited = time.monotonic() - started
        target = wan2gp / "ckpts" / "big_test_model.safetensors"
        assert target.read_bytes() == big.content()  # wangpd's copy, through its link into the HF cache
        assert target.is_symlink()
        # The original download_file never ran: the file was there when Wan2GP would have fetched it.
        assert app.wgp.calls_of("download_file") == []
        assert waited > 0.5
    jobs = daemon.ctl_json("queue", "--state", "complete")["jobs"]
    assert [job["path"] for job in jobs if job["path"] == "big_test_model.safetensors"]
    assert any("fetching via wangpd" in (r or {}).get("filename", "") for r in reports)
    assert reports[-1] is None and "download_progress" not in gen  # the progress line is taken down at the end
    out = capsys.readouterr().out
    assert "fetching via wangpd:" in out


def test_process_files_def_waits_then_the_original_finds_the_files(
    daemon_factory, fake_hub, wan2gp: Path, plugin_env
) -> None:
    pose = [
        fake_hub.add_file(REPO, f"pose/{name}", size=300_000, seed=9 + i) for i, name in enumerate(("a.onnx", "b.onnx"))
    ]
    daemon = daemon_factory(
        hub={"endpoint": fake_hub.endpoint}, download={"bandwidth": "400KiB/s", "chunk_size": "64KiB"}
    ).start()
    with load_wan2gp(installed(wan2gp)) as app:
        app.wgp.globals["process_files_def"](repoId=REPO, sourceFolderList=["pose"], fileList=[["a.onnx", "b.onnx"]])
        calls = app.wgp.calls_of("process_files_def")
        assert len(calls) == 1 and calls[0].present, "the original must find both files present"
    for fake, name in zip(pose, ("a.onnx", "b.onnx"), strict=True):
        assert (wan2gp / "ckpts" / "pose" / name).read_bytes() == fake.content()
    assert daemon.ctl_json("status")["counts"]["complete"] == 2


def test_with_the_daemon_stopped_the_original_runs_and_one_line_says_why(wan2gp: Path, plugin_env, capsys) -> None:
    url = f"{HF}/{REPO}/resolve/main/Wan2.1_VAE.safetensors"
    with load_wan2gp(installed(wan2gp)) as app:
        capsys.readouterr()
        started = time.monotonic()
        app.wgp.globals["download_file"](url, "ckpts/Wan2.1_VAE.safetensors")
        assert time.monotonic() - started < 2
        calls = app.wgp.calls_of("download_file")
        assert len(calls) == 1 and not calls[0].present
        assert (wan2gp / "ckpts" / "Wan2.1_VAE.safetensors").read_bytes() == app.wgp.content
        lines = wangpd_lines(capsys.readouterr().out)
        assert len(lines) == 1, lines
        assert "wangpd is not running" in lines[0] and "systemctl start wangpd" in lines[0]
        assert "Wan2GP downloads ckpts/Wan2.1_VAE.safetensors itself" in lines[0]

        app.wgp.globals["process_files_def"](repoId=REPO, sourceFolderList=["flow"], fileList=[["raft-things.pth"]])
        assert (wan2gp / "ckpts" / "flow" / "raft-things.pth").exists()
        app.select_model("t2v")  # returns at once; one line later at most
        wait_for(lambda: app.plugin().prefetcher._failed_before, timeout=10, what="the prefetch to give up")
        assert len(wangpd_lines(capsys.readouterr().out)) == 2


def test_no_progress_for_the_stall_time_hands_the_file_back(
    daemon_factory, fake_hub, wan2gp: Path, plugin_env, capsys, monkeypatch
) -> None:
    monkeypatch.setenv("WANGPD_PLUGIN_STALL_TIMEOUT", "2")
    fake_hub.add_file(REPO, "stuck.safetensors", size=400_000, seed=3)
    fake_hub.inject(REPO, "stuck.safetensors", Fault(stall_after=100_000, stall_for=60, times=5))
    daemon = daemon_factory(hub={"endpoint": fake_hub.endpoint}, download={"chunk_size": "64KiB"}).start()
    url = f"{HF}/{REPO}/resolve/main/stuck.safetensors"
    with load_wan2gp(installed(wan2gp)) as app:
        capsys.readouterr()
        started = time.monotonic()
        app.wgp.globals["download_file"](url, "ckpts/stuck.safetensors")
        assert 2 <= time.monotonic() - started < 20
        calls = app.wgp.calls_of("download_file")
        assert len(calls) == 1 and not calls[0].present
    lines = wangpd_lines(capsys.readouterr().out)
    assert any("no progress from wangpd for 2 s; Wan2GP downloads ckpts/stuck.safetensors itself" in x for x in lines)
    assert daemon.ctl_json("queue")["jobs"][0]["state"] == "cancelled"  # not fetched twice


def test_a_paused_wangpd_hands_the_file_back_at_once(daemon_factory, wan2gp: Path, plugin_env, capsys) -> None:
    daemon_factory(paused=True).start()
    with load_wan2gp(installed(wan2gp)) as app:
        capsys.readouterr()
        app.wgp.globals["download_file"](f"{HF}/{REPO}/resolve/main/x.safetensors", "ckpts/x.safetensors")
        assert len(app.wgp.calls_of("download_file")) == 1
    assert "wangpd is paused" in wangpd_lines(capsys.readouterr().out)[0]


def test_the_plugin_hooks_the_three_globals_and_imports_without_gradio(wan2gp: Path, plugin_env) -> None:
    with load_wan2gp(installed(wan2gp)) as app:
        plugin = app.plugin()
        assert plugin.name == "wangpd" and plugin.version == "0.1.0"  # plugin_info.json applied
        assert [tab.label for tab in plugin.tabs.values()] == ["Model downloads"]
        for name in ("download_models", "download_file", "process_files_def"):
            assert getattr(app.wgp.globals[name], "__wangpd_wrapped__", False), name
        plugin.post_ui_setup({})  # a second call wraps nothing twice
        assert not hasattr(app.wgp.globals["download_file"].__wrapped__, "__wangpd_wrapped__")


def test_the_plugin_finds_the_socket_as_wangpctl_does(tmp_path: Path) -> None:
    from wangpd import protocol
    from wangpd.wan2gp_plugin import client

    for env in (
        {},
        {"XDG_RUNTIME_DIR": "/run/user/1000"},
        {"RUNTIME_DIRECTORY": "/run/wangpd:/run/x", "XDG_RUNTIME_DIR": "/run/user/1000"},
        {"WANGPCTL_SOCKET": "/srv/w.sock", "XDG_RUNTIME_DIR": "/run/user/1000"},
    ):
        assert client.socket_candidates(None, env) == protocol.client_socket_candidates(env)
    assert client.socket_candidates("/srv/other.sock", {})[-1] == Path("/srv/other.sock")
    assert client.RPC_PATH == protocol.RPC_PATH and client.SYSTEM_SOCKET == protocol.SYSTEM_SOCKET
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("WANGPCTL_SOCKET", str(tmp_path / "none.sock"))
        reply = client.Client().call("status")
    assert reply.not_running and "systemctl start wangpd" in reply.error


# ---- install / uninstall -------------------------------------------------------------------------------------------


def test_install_keeps_the_config_byte_for_byte_but_enabled_plugins(tmp_path: Path) -> None:
    wan2gp = tmp_path / "Wan2GP"
    wan2gp.mkdir()
    make_wgp_py(wan2gp)
    config = wan2gp / "wgp_config.json"
    config.write_text(REAL_CONFIG)
    config.chmod(0o640)
    result = install_plugin(wan2gp)
    assert result["enabled"] and result["restart"].startswith("restart Wan2GP")
    text = config.read_text()
    expected = REAL_CONFIG.replace(
        '"wan2gp-motion-designer"\n    ],', f'"wan2gp-motion-designer",\n        "{PLUGIN_ID}"\n    ],'
    )
    assert text == expected
    assert list(json.loads(text)) == list(json.loads(REAL_CONFIG))  # order of keys kept
    assert (config.stat().st_mode & 0o777) == 0o640
    backup = Path(result["backup"])
    assert backup.name == "wgp_config.json.wangpd-backup" and backup.read_text() == REAL_CONFIG
    plugin_dir = wan2gp / "plugins" / PLUGIN_ID
    assert {"__init__.py", "plugin.py", "client.py", "plugin_info.json", MARKER} <= {
        p.name for p in plugin_dir.iterdir()
    }
    assert json.loads((plugin_dir / "plugin_info.json").read_text())["id"] == PLUGIN_ID

    # Again: nothing to change in the config; the files are replaced, the plugin's settings kept.
    (plugin_dir / "settings.json").write_text('{"stall_timeout": 300}')
    again = install_plugin(wan2gp)
    assert again["already_enabled"] and not again["enabled"] and again["replaced"]
    assert config.read_text() == expected and (plugin_dir / "settings.json").read_text() == '{"stall_timeout": 300}'

    removed = uninstall_plugin(wan2gp)
    assert removed["removed"] and removed["disabled"] and not plugin_dir.exists()
    assert config.read_text() == REAL_CONFIG


def test_install_adds_the_key_when_the_config_has_none(tmp_path: Path) -> None:
    wan2gp = tmp_path / "w"
    wan2gp.mkdir()
    make_wgp_py(wan2gp)
    (wan2gp / "wgp_config.json").write_text('{\n    "attention_mode": "sdpa",\n    "profile": 4\n}')
    install_plugin(wan2gp)
    assert (wan2gp / "wgp_config.json").read_text() == (
        '{\n    "attention_mode": "sdpa",\n    "profile": 4,\n'
        '    "enabled_plugins": [\n        "wan2gp-wangpd"\n    ]\n}'
    )
    (wan2gp / "wgp_config.json").write_text('{"a": 1, "enabled_plugins": []}')
    install_plugin(wan2gp)
    assert (wan2gp / "wgp_config.json").read_text() == '{"a": 1, "enabled_plugins": ["wan2gp-wangpd"]}'


def test_install_refuses_what_is_not_wan2gp(tmp_path: Path) -> None:
    folder = tmp_path / "not-wan2gp"
    folder.mkdir()
    (folder / "wgp_config.json").write_text("{}")
    with pytest.raises(PluginInstallError, match=r"not-wan2gp/wgp\.py not found"):
        install_plugin(folder)
    assert not (folder / "plugins").exists()

    make_wgp_py(folder)
    (folder / "wgp_config.json").write_text("attention_mode: auto\n")
    with pytest.raises(PluginInstallError, match=r"wgp_config\.json is not JSON"):
        install_plugin(folder)
    assert not (folder / "plugins").exists()  # refused before anything was copied

    (folder / "wgp_config.json").write_text('{"enabled_plugins": "wan2gp-x"}')
    with pytest.raises(PluginInstallError, match="enabled_plugins is str"):
        install_plugin(folder)

    (folder / "wgp_config.json").write_text("{}")
    with pytest.raises(PluginInstallError, match="folder in use is"):
        install_plugin(folder, running_dir=tmp_path / "elsewhere")

    theirs = folder / "plugins" / PLUGIN_ID
    theirs.mkdir(parents=True)
    (theirs / "plugin.py").write_text("# someone else's\n")
    with pytest.raises(PluginInstallError, match="was not installed by wangpd"):
        install_plugin(folder)
    result = uninstall_plugin(folder)
    assert not result["removed"] and "not installed by wangpd" in result["kept_reason"]
    assert (theirs / "plugin.py").exists()


def test_install_without_a_config_yet_copies_and_says_what_to_do(tmp_path: Path) -> None:
    wan2gp = tmp_path / "fresh"
    wan2gp.mkdir()
    make_wgp_py(wan2gp)
    result = install_plugin(wan2gp, socket="/run/wangpd/wangpd.sock")
    assert not result["enabled"] and "start Wan2GP once" in result["notes"][0]
    assert not (wan2gp / "wgp_config.json").exists()
    settings = json.loads((wan2gp / "plugins" / PLUGIN_ID / "settings.json").read_text())
    assert settings == {"socket": "/run/wangpd/wangpd.sock"}


def test_install_while_wan2gp_runs_says_to_stop_it_first(tmp_path: Path) -> None:
    wan2gp = tmp_path / "running"
    wan2gp.mkdir()
    (wan2gp / "wgp.py").write_text("import time\ntime.sleep(60)\n")
    (wan2gp / "wgp_config.json").write_text("{}")
    process = subprocess.Popen([sys.executable, "wgp.py"], cwd=wan2gp)
    try:
        wait_for(lambda: process.pid in wan2gp_processes(wan2gp.resolve()), timeout=10, what="the process")
        result = install_plugin(wan2gp)
        assert result["enabled"] and f"Wan2GP is running (pid {process.pid})" in result["notes"][0]
        assert result["restart"] == f"stop Wan2GP (pid {process.pid}) and start it again"
    finally:
        process.kill()
        process.wait(10)


# ---- what the tab shows, and the settings (no gradio) ---------------------------------------------------------------


def test_the_status_line_says_how_to_start_a_daemon_that_is_not_running(tmp_path: Path, monkeypatch) -> None:
    from wangpd.wan2gp_plugin import views
    from wangpd.wan2gp_plugin.client import Client, Reply

    monkeypatch.setenv("WANGPCTL_SOCKET", str(tmp_path / "no.sock"))
    line = views.status_line(Client().call("status"), "/w")
    assert line.startswith("⚠️ **wangpd is not running") and "systemctl start wangpd" in line
    other = Reply(result={"version": "0.1.0", "counts": {}, "limit": {}, "wan2gp_directory": "/srv/other"})
    assert "manages /srv/other, not this Wan2GP (/w)" in views.status_line(other, "/w")
    rows = views.queue_rows(
        Reply(
            result={
                "jobs": [
                    {
                        "id": 4,
                        "target": "/w/ckpts/a.safetensors",
                        "state": "downloading",
                        "size": 1000,
                        "bytes_done": 430,
                        "speed": 2048,
                        "wanted_by": ["t2v"],
                        "batch": None,
                    }
                ]
            }
        ),
        "/w",
    )
    assert rows == [[4, "ckpts/a.safetensors", "downloading", "43 %", "1000 B", "2.0 KiB/s", "0s", "t2v", ""]]


def test_settings_come_from_the_file_then_the_environment(tmp_path: Path) -> None:
    from wangpd.wan2gp_plugin.settings import load_settings

    (tmp_path / "settings.json").write_text('{"stall_timeout": 300, "prefetch": false, "colour": "blue"}')
    settings, problems = load_settings(tmp_path, {"WANGPD_PLUGIN_STALL_TIMEOUT": "45", "WANGPD_PLUGIN_WAIT": "maybe"})
    assert settings.stall_timeout == 45 and settings.prefetch is False and settings.wait is True
    assert any("unknown setting 'colour'" in p for p in problems) and any("wait" in p for p in problems)
    (tmp_path / "settings.json").write_text("{not json")
    settings, problems = load_settings(tmp_path, {})
    assert settings.stall_timeout == 120 and "cannot read" in problems[0]


def test_the_plugins_copies_of_wangpctls_formatters_agree_with_them() -> None:
    """The plugin runs where wangpd is not installed, so it carries copies; they must write what wangpctl writes."""
    import importlib.util

    from wangpctl import fmt

    spec = importlib.util.spec_from_file_location(
        "plugin_fmt", Path(__file__).resolve().parent.parent / "wangpd" / "wan2gp_plugin" / "fmt.py"
    )
    assert spec is not None and spec.loader is not None
    copy = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(copy)
    for value in (None, 0, 1, 1023, 1024, 5 * 1024**2 + 17, 3 * 1024**3, 7 * 1024**4, 9 * 1024**5):
        assert copy.bytes_(value) == fmt.bytes_(value), value
        assert copy.rate(value) == fmt.rate(value), value
    for seconds in (None, 0, 59, 61, 3599, 3601, 86399, 90061):
        assert copy.duration(seconds) == fmt.duration(seconds), seconds
