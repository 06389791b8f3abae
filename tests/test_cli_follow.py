"""`wangpctl follow` against a live daemon downloading from the fake Hub: on a pseudo-terminal and piped."""

from __future__ import annotations

import fcntl
import json
import os
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from jsonschema_lite import load_schema, validate

from conftest import ROOT, DaemonProcess, serve_models

URL = "https://huggingface.co/Org/Repo/resolve/main/big.safetensors"
SIZE = 1536 * 1024  # at 1 MiB/s: about 1.5 s of progress
COLOUR = re.compile(r"\x1b\[(3\d|1|2)m")  # SGR colour/bold/dim, not cursor movement


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("WANGPCTL_SOCKET", "NO_COLOR", "COLUMNS", "LINES")}
    return {**env, "PYTHONPATH": str(ROOT), **extra}


def _command(daemon: DaemonProcess, *args: str) -> list[str]:
    return [sys.executable, "-m", "wangpctl", "--socket", str(daemon.socket), *args]


class Piped:
    """wangpctl with stdout on a pipe; lines read with a deadline (never a blocking read without one)."""

    def __init__(self, command: list[str]) -> None:
        self.proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env())
        self.out = b""

    def read_until(self, condition: Callable[[str], bool], timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while not condition(self.out.decode()):
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out; output so far:\n{self.out.decode()}")
            ready, _, _ = select.select([fd], [], [], min(left, 0.5))
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                self.out += chunk
        return self.out.decode()

    def finish(self, timeout: float = 30.0) -> tuple[int, str, str]:
        try:
            rest, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rest, err = self.proc.communicate()
            raise AssertionError(f"wangpctl follow did not exit; output:\n{(self.out + rest).decode()}") from None
        self.out += rest
        return self.proc.returncode, self.out.decode(), err.decode()


class OnTerminal:
    """wangpctl with stdin/stdout/stderr on a real pseudo-terminal of 100x24."""

    def __init__(self, command: list[str], **env: str) -> None:
        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
        self.master = master
        # SIGINT back to its default in the child: a test run started in the background of a shell inherits it
        # ignored, and a Python that starts with SIGINT ignored never raises KeyboardInterrupt (Ctrl-C is the test).
        self.proc = subprocess.Popen(
            command,
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=_env(**env),
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        os.close(slave)
        self.out = b""

    def _read(self, wait: float) -> bool:
        ready, _, _ = select.select([self.master], [], [], wait)
        if not ready:
            return True
        try:
            chunk = os.read(self.master, 65536)
        except OSError:  # EIO: the child closed the terminal
            return False
        self.out += chunk
        return bool(chunk)

    def read_until(self, condition: Callable[[str], bool], timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        while not condition(self.out.decode(errors="replace")):
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out; terminal so far:\n{self.out.decode(errors='replace')!r}")
            if not self._read(min(left, 0.5)):
                break
        return self.out.decode(errors="replace")

    def finish(self, timeout: float = 20.0) -> tuple[int, str]:
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            self._read(0.1)
        while self._read(0.05) and select.select([self.master], [], [], 0)[0]:
            pass
        os.close(self.master)
        if self.proc.poll() is None:
            self.proc.kill()
            raise AssertionError(f"did not exit; terminal:\n{self.out.decode(errors='replace')!r}")
        return self.proc.returncode, self.out.decode(errors="replace")


@pytest.fixture
def slow_daemon(daemon_factory, fake_hub) -> DaemonProcess:
    """Paused (so a test starts following before bytes move), 1 MiB/s, the fake Hub serving one 1.5 MiB file.
    Small chunks: the transfer reports progress per chunk, and the default 1 MiB would be one report per file."""
    fake_hub.add_file("Org/Repo", "big.safetensors", size=SIZE, seed=7)
    return daemon_factory(
        paused=True, hub={"endpoint": fake_hub.endpoint}, download={"bandwidth": "1MiB/s", "chunk_size": "64KiB"}
    ).start()


def _add(daemon: DaemonProcess) -> int:
    return daemon.ctl_json("add", URL)["files"][0]["job"]["id"]


def test_piped_follow_prints_plain_lines_and_exits_0_when_the_job_completes(slow_daemon: DaemonProcess) -> None:
    job = _add(slow_daemon)
    plain = Piped(_command(slow_daemon, "follow", f"#{job}"))
    ndjson = Piped(_command(slow_daemon, "follow", str(job), "--json"))
    plain.read_until(lambda out: "total " in out)
    ndjson.read_until(lambda out: '"event":"hello"' in out)
    started = time.monotonic()
    slow_daemon.ctl("resume")

    code, out, err = plain.finish()
    assert code == 0, err
    assert time.monotonic() - started > 0.8, "the limit should have made this take a while"
    assert "\x1b" not in out  # no escape codes in a pipe
    lines = out.splitlines()
    assert lines[0].startswith("total 0 downloading, 1 queued")
    assert f"job {job} downloading big.safetensors" in lines
    progress = [line for line in lines if re.match(rf"job {job} (\d+|\?)% ", line)]
    assert progress, out
    assert any(" KiB/s" in line or " MiB/s" in line for line in progress)
    assert lines[-1] == f"job {job} complete big.safetensors (via download)"

    code, out, err = ndjson.finish()
    assert code == 0, err
    events = [json.loads(line) for line in out.splitlines()]
    assert events[0]["event"] == "hello" and events[-1] == {**events[-1], "event": "job", "state": "complete"}
    schema = load_schema("follow_event")
    for event in events:
        validate(event, schema)
    assert {e["event"] for e in events} >= {"hello", "job", "progress"}


def test_follow_exits_1_when_the_followed_job_is_cancelled(slow_daemon: DaemonProcess) -> None:
    job = _add(slow_daemon)
    follower = Piped(_command(slow_daemon, "follow", str(job)))
    follower.read_until(lambda out: "total " in out)
    slow_daemon.ctl("cancel", str(job))
    code, out, _ = follower.finish()
    assert code == 1 and f"job {job} cancelled big.safetensors" in out
    # Already finished: says so and exits at once, with the same code.
    again = slow_daemon.ctl("follow", str(job), check=False)
    assert again.returncode == 1 and "already cancelled" in again.stdout


def test_follow_a_job_that_does_not_exist_is_a_daemon_error(slow_daemon: DaemonProcess) -> None:
    result = slow_daemon.ctl("follow", "4242", check=False)
    assert result.returncode == 1 and "no job 4242" in result.stderr
    assert slow_daemon.ctl("follow", "x12", check=False).returncode == 2


def test_follow_exits_3_when_the_daemon_goes_away(daemon: DaemonProcess) -> None:
    follower = Piped(_command(daemon, "follow"))
    follower.read_until(lambda out: "total " in out)
    daemon.stop()
    code, _, err = follower.finish()
    assert code == 3 and "daemon closed the event stream" in err and "Traceback" not in err


def test_follow_without_a_daemon_exits_3(short_dir: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "wangpctl", "--socket", str(short_dir / "none.sock"), "follow"],
        capture_output=True,
        text=True,
        timeout=30,
        env=_env(),
    )
    assert result.returncode == 3 and "not running" in result.stderr


def test_terminal_follow_redraws_bars_in_place_and_ctrl_c_exits_130(daemon_factory, fake_hub, wan2gp: Path) -> None:
    # A whole model: many files of known size, two at a time, so several bars and totals are drawn.
    # Files big enough that each takes ~2 s at 200 KiB/s (two share the limit): progress arrives every 0.5 s.
    serve_models(fake_hub, wan2gp, ("t2v",), size=400_000)
    daemon = daemon_factory(
        paused=True, hub={"endpoint": fake_hub.endpoint}, download={"bandwidth": "400KiB/s", "chunk_size": "64KiB"}
    ).start()
    added = daemon.ctl_json("add", "t2v")["models"]
    assert added["files"] > 5
    term = OnTerminal(_command(daemon, "follow"))
    term.read_until(lambda out: "total " in out)
    daemon.ctl("resume")
    term.read_until(
        lambda out: "\x1b[32mcomplete\x1b[0m" in out and re.search(r"eta\s+\d+s", out) is not None, timeout=30
    )
    term.proc.send_signal(signal.SIGINT)
    code, screen = term.finish()
    assert code == 130
    assert "Traceback" not in screen and "KeyboardInterrupt" not in screen
    assert re.search(r"\x1b\[\d+F\x1b\[J", screen), "redraws move the cursor up and clear, not scroll"
    assert "\x1b[?25l" in screen and screen.rstrip("\r\n").endswith("\x1b[?25h")  # cursor hidden, then restored
    assert re.search(r"#\d+ \S+\.\w+\s+\[", screen), "a bar line names the job and file"
    assert re.search(r"\d+\.\d (KiB|MiB)/\s*\d+\.\d (KiB|MiB)", screen), "bytes done / size"
    assert re.search(r"eta\s+\d+s", screen)
    assert "\x1b[32mcomplete\x1b[0m" in screen, "finished jobs scroll above the block, coloured on a terminal"
    # Every drawn line fits the 100 columns, so a redraw never miscounts wrapped lines.
    visible = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen)
    assert max(len(line) for line in visible.replace("\r", "").split("\n")) <= 100


@pytest.mark.parametrize("no_color", [False, True])
def test_colours_only_on_a_terminal_and_never_with_no_color(daemon_factory, no_color: bool) -> None:
    daemon = daemon_factory(paused=True).start()  # "paused" is drawn in yellow
    env = {"NO_COLOR": "1"} if no_color else {}
    term = OnTerminal(_command(daemon, "status"), **env)
    code, screen = term.finish()
    assert code == 0 and "paused" in screen
    assert bool(COLOUR.search(screen)) is not no_color, repr(screen)

    term = OnTerminal(_command(daemon, "follow"), **env)
    term.read_until(lambda out: "[paused]" in out)
    term.proc.send_signal(signal.SIGINT)
    code, screen = term.finish()
    assert code == 130
    assert bool(COLOUR.search(screen)) is not no_color, repr(screen)
    assert "\x1b[?25l" in screen  # cursor control is not colour: NO_COLOR keeps the live redraw

    piped = daemon.ctl("status")  # a pipe: never colour, NO_COLOR or not
    assert "\x1b" not in piped.stdout


def test_status_in_a_terminal_waits_for_nothing(daemon: DaemonProcess) -> None:
    term = OnTerminal(_command(daemon, "status", "--json"))
    code, screen = term.finish()
    assert code == 0
    assert json.loads(screen)["state"] == "running"
    assert '\n  "' in screen.replace("\r\n", "\n"), "indented for a person on a terminal"
    assert "\n" not in daemon.ctl("status", "--json").stdout.strip(), "compact in a pipe"
