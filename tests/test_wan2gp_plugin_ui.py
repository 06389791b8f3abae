"""The "Model downloads" tab in a real browser: gradio 5.29.0 (Wan2GP's pin) serving the plugin's tab next to a
stand-in of Wan2GP's main tab on 127.0.0.1, headless Chromium (Debian's ``chromium``) driven over its DevTools
protocol, a real daemon and the fake Hub behind it.

gradio is not one of wangpd's dependencies: the test builds a venv with it once, under
``~/.cache/wangpd-tests/gradio-5.29.0`` (``$WANGPD_GRADIO_VENV`` to put it elsewhere; about 25 s, then reused),
and runs there both the gradio app and the browser driver (``websockets`` comes with gradio). Every wait is
bounded; the browser resolves no host name but loopback. ``WANGPD_UPDATE_SCREENSHOT=1`` also writes the
screenshot to ``docs/wan2gp-tab.png`` for the README.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from wan2gp_harness import make_wgp_py

from conftest import ROOT, serve_models, wait_for
from wangpctl.wan2gp import install_plugin

# Wan2GP's requirements.txt pins gradio and pydantic; huggingface_hub 1.x dropped `requests`, which gradio 5.29
# imports; websockets is the browser driver's (gradio 5 brings it, gradio 6 no longer does).
GRADIO_PINS = ["gradio==5.29.0", "pydantic==2.10.6", "huggingface_hub<1", "websockets>=12"]
VENV = Path(os.environ.get("WANGPD_GRADIO_VENV") or Path.home() / ".cache" / "wangpd-tests" / "gradio-5.29.0")
REPO = "DeepBeepMeep/Wan2.1"

# Runs in the gradio venv: Wan2GP's tab layout (a Tabs with its main tab first, then each plugin tab built inside
# `with gr.Tab(label, id=f"plugin_{id}")`), the plugin loaded by the harness, every RPC call logged.
APP = r"""
import json, os, sys, time
from pathlib import Path
tests_dir, root, port, calls_path = sys.argv[1:5]
sys.path.insert(0, tests_dir)
import gradio as gr
from wan2gp_harness import load_wan2gp

ui = {}
def build(tabs):
    with gr.Blocks(title="Wan2GP (stand-in)", analytics_enabled=False) as demo:
        with gr.Tabs(elem_id="main_tabs"):
            with gr.Tab("Video Generator", id="video_gen"):
                gr.Markdown("Wan2GP's main tab (a stand-in for the test)")
            for plugin, tab in tabs:
                with gr.Tab(tab.label, id=f"plugin_{tab.id}"):
                    tab.component_constructor()
    ui["demo"] = demo

with load_wan2gp(Path(root), build_tabs=build) as app:
    plugin = app.plugin()
    log = open(calls_path, "a", buffering=1)
    original = plugin.client.call
    def logged(method, params=None, timeout=None):
        log.write(json.dumps({"time": time.time(), "method": method}) + "\n")
        return original(method, params, timeout)
    plugin.client.call = logged
    ui["demo"].queue().launch(server_name="127.0.0.1", server_port=int(port), prevent_thread_lock=True, quiet=True)
    print("READY", flush=True)
    sys.stdin.read()  # until the test closes our stdin
"""

# Runs in the gradio venv: the browser, step by step; prints one JSON line per step, exits non-zero on failure.
DRIVER = r"""
import base64, json, sys, time, urllib.request
from websockets.sync.client import connect

devtools, url, calls_path, shot_path = sys.argv[1:5]
targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{devtools}/json/list", timeout=10))
page = next(t for t in targets if t["type"] == "page")
ws = connect(page["webSocketDebuggerUrl"], max_size=64 * 1024 * 1024, open_timeout=10)
next_id = [0]

def send(method, **params):
    next_id[0] += 1
    ws.send(json.dumps({"id": next_id[0], "method": method, "params": params}))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        message = json.loads(ws.recv(timeout=30))
        if message.get("id") == next_id[0]:
            if "error" in message:
                raise SystemExit(f"{method}: {message['error']}")
            return message.get("result", {})
    raise SystemExit(f"{method}: no answer")

def js(expression):
    result = send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
    return result.get("result", {}).get("value")

def wait(expression, what, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = js(expression)
        if value:
            return value
        time.sleep(0.2)
    raise SystemExit(f"timed out after {timeout} s waiting for {what}; page text: {js('document.body.innerText')!r}")

def calls():
    with open(calls_path) as handle:
        return [json.loads(line)["method"] for line in handle if line.strip()]

def step(name, **data):
    print(json.dumps({"step": name, **data}), flush=True)

def tab_button(label):
    return ("[...document.querySelectorAll('button[role=tab]')].find(b => b.textContent.trim() === "
            + json.dumps(label) + ")")

send("Emulation.setDeviceMetricsOverride", width=1400, height=1500, deviceScaleFactor=1, mobile=False)
send("Page.enable")
send("Page.navigate", url=url)
wait(tab_button("Model downloads") + " !== undefined", "the tabs")
time.sleep(3.5)  # three refresh intervals with the tab hidden
step("hidden", calls=calls())

js(tab_button("Model downloads") + ".click()")
wait("(document.querySelector('#wangpd-queue') || {innerText: ''}).innerText.includes('big_model_0')", "the job")
wait("document.querySelector('#wangpd-status').innerText.includes('downloading')", "the status line")
time.sleep(2.5)  # a tick or two: speed and ETA settle
step("shown", calls=calls(), queue=js("document.querySelector('#wangpd-queue').innerText"),
     status=js("document.querySelector('#wangpd-status').innerText"))
shot = send("Page.captureScreenshot", format="png", captureBeyondViewport=False)
with open(shot_path, "wb") as handle:
    handle.write(base64.b64decode(shot["data"]))

js("document.querySelector('#wangpd-pause').click()")
wait("document.querySelector('#wangpd-message').innerText.includes('Downloads paused')", "the pause")
wait("document.querySelector('#wangpd-status').innerText.includes('paused')", "the paused status")
step("paused", status=js("document.querySelector('#wangpd-status').innerText"))

js(tab_button("Video Generator") + ".click()")
time.sleep(2.5)  # the next tick sees the tab hidden and stops the timer
before = len(calls())
time.sleep(3.5)
step("hidden_again", calls_while_hidden=len(calls()) - before)
"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _not_available(why: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(why)
    pytest.skip(why)


@pytest.fixture(scope="session")
def gradio_python() -> Path:
    """The gradio venv's python, built once (a lock keeps two test runs from building it at the same time)."""
    python = VENV / "bin" / "python"
    done = VENV / ".wangpd-ready"
    if done.exists() and done.read_text() == " ".join(GRADIO_PINS):
        return python
    VENV.parent.mkdir(parents=True, exist_ok=True)
    with open(VENV.parent / ".gradio-venv.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if done.exists() and done.read_text() == " ".join(GRADIO_PINS):
            return python
        shutil.rmtree(VENV, ignore_errors=True)  # a build cut short: no marker, start again
        try:
            subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True, timeout=120)
            subprocess.run(
                [str(VENV / "bin" / "pip"), "install", "-q", *GRADIO_PINS],
                check=True,
                timeout=600,
                capture_output=True,
            )
        except (subprocess.SubprocessError, OSError) as exc:
            output = getattr(exc, "stderr", b"") or b""
            _not_available(f"could not build the gradio venv in {VENV}: {exc} {output.decode()[-2000:]}")
        done.write_text(" ".join(GRADIO_PINS))
    return python


@pytest.fixture
def chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    _not_available("no chromium here: apt-get install -y chromium")
    return ""


@contextlib.contextmanager
def started(args: list[str], log: Path, **kwargs) -> Iterator[subprocess.Popen]:
    """A process of ours, ended at the end (by its own handle: never by name)."""
    with open(log, "ab") as out:
        process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, **kwargs)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)


@pytest.mark.timeout(900)  # the first run builds the gradio venv (about 25 s here, longer on a slow mirror)
def test_the_tab_shows_the_queue_and_pause_pauses(
    gradio_python: Path, chromium: str, daemon_factory, fake_hub, wan2gp: Path, short_dir: Path, tmp_path: Path
) -> None:
    for number in range(3):
        fake_hub.add_file(REPO, f"big_model_{number}.safetensors", size=40 * 1024 * 1024, seed=20 + number)
    serve_models(fake_hub, wan2gp, ("t2v",))
    daemon = daemon_factory(
        hub={"endpoint": fake_hub.endpoint}, download={"bandwidth": "1MiB/s", "concurrency": 1}
    ).start()
    urls = [f"https://huggingface.co/{REPO}/resolve/main/big_model_{n}.safetensors" for n in range(3)]
    daemon.ctl_json("add", *urls)
    daemon.ctl_json("add", "t2v")
    make_wgp_py(wan2gp)
    install_plugin(wan2gp)

    port, calls, app_log = _free_port(), tmp_path / "calls.jsonl", tmp_path / "app.log"
    calls.touch()
    env = {
        **os.environ,
        "WANGPCTL_SOCKET": str(short_dir / "wangpd.sock"),
        "WANGPD_PLUGIN_REFRESH": "1",
        "GRADIO_ANALYTICS_ENABLED": "False",
        "NO_PROXY": "127.0.0.1,localhost",
    }
    app_args = [str(gradio_python), "-c", APP, str(ROOT / "tests"), str(wan2gp), str(port), str(calls)]
    with started(app_args, app_log, env=env, stdin=subprocess.PIPE) as app:
        wait_for(
            lambda: "READY" in app_log.read_text(errors="replace") or app.poll() is not None,
            timeout=90,
            interval=0.2,
            what="the gradio app",
        )
        assert app.poll() is None, app_log.read_text(errors="replace")
        profile = tmp_path / "chromium-profile"
        browser_args = [
            chromium,
            "--headless=new",
            "--no-sandbox",  # root in CI: Chromium's sandbox refuses to run as root
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",  # loopback only
            "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0",
            f"--user-data-dir={profile}",
            "about:blank",
        ]
        with started(browser_args, tmp_path / "chromium.log"):
            port_file = profile / "DevToolsActivePort"
            wait_for(port_file.exists, timeout=30, interval=0.1, what="Chromium's DevTools port")
            devtools = wait_for(lambda: port_file.read_text().split("\n")[0].strip(), timeout=5, what="the port")
            shot = tmp_path / "wan2gp-tab.png"
            driver = subprocess.run(
                [str(gradio_python), "-c", DRIVER, devtools, f"http://127.0.0.1:{port}/", str(calls), str(shot)],
                capture_output=True,
                text=True,
                timeout=180,
                env=env,
            )
        app.stdin.close()  # type: ignore[union-attr]
    assert driver.returncode == 0, driver.stdout + driver.stderr + app_log.read_text(errors="replace")[-3000:]
    steps = {s["step"]: s for s in map(json.loads, driver.stdout.splitlines())}

    assert steps["hidden"]["calls"] == [], "the tab asked the daemon for something while it was not shown"
    shown = steps["shown"]
    assert "big_model_0.safetensors" in shown["queue"] and "downloading" in shown["queue"]
    assert "status" in shown["calls"] and "queue.list" in shown["calls"]
    assert "paused" in steps["paused"]["status"]
    assert daemon.ctl_json("status")["paused"] is True  # the daemon says so, not only the page
    assert steps["hidden_again"]["calls_while_hidden"] == 0, "the timer kept polling after the tab was left"

    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
    if os.environ.get("WANGPD_UPDATE_SCREENSHOT"):
        shutil.copy(shot, ROOT / "docs" / "wan2gp-tab.png")
