"""Issue 15, items 3 and 4: a FIFO named like a definition and a definition nested 100,000 deep fail that model
alone, naming the file; nothing blocks, every other model resolves, SIGTERM still ends the daemon at once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from conftest import DaemonProcess, wait_for


def errors(daemon: DaemonProcess) -> dict[str, str]:
    return {m["type"]: m["error"] for m in daemon.ctl_json("models", "--all")["models"] if m["error"]}


def test_a_fifo_and_a_deeply_nested_definition_fail_alone(daemon_factory: Any, wan2gp: Path) -> None:
    os.mkfifo(wan2gp / "defaults" / "fifo.json")  # nobody ever writes to it: a blocking open would hang forever
    os.mkfifo(wan2gp / "finetunes" / "t2v.json")  # a finetune of a real type, as a FIFO
    (wan2gp / "defaults" / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    (wan2gp / "defaults" / "deep2.json").write_text('{"model": ' + '{"a": ' * 200 + "1" + "}" * 200 + "}")
    (wan2gp / "wgp_config.json").unlink()
    os.mkfifo(wan2gp / "wgp_config.json")  # Wan2GP's defaults are used, the file is named
    started = time.monotonic()
    daemon: DaemonProcess = daemon_factory(watch={"enabled": True, "debounce": "50ms"}).start()
    assert time.monotonic() - started < 30
    failed = wait_for(lambda: (e := errors(daemon)) and len(e) >= 4 and e, timeout=20, what="the four failures")
    assert "fifo.json: cannot read: not a regular file" in failed["fifo"]
    assert "finetunes/t2v.json: cannot read: not a regular file" in failed["t2v"]
    assert "deep.json: invalid JSON: nested too deeply" in failed["deep"]
    assert "deep2.json: nested more than 64 levels deep" in failed["deep2"]
    assert set(failed) == {"fifo", "t2v", "deep", "deep2"}, "every other model still resolves"
    listed = daemon.ctl_json("models", "--all")["models"]
    assert any(m["type"] == "flux" and not m["error"] for m in listed)
    doctor = json.loads(daemon.ctl("doctor", "--json", check=False).stdout)
    assert any("4 of" in c["message"] and c["check"] == "models" for c in doctor["checks"])
    assert any("wgp_config.json: cannot read" in c["message"] for c in doctor["checks"])
    # The offline planner reads the same tree without hanging.
    plan = subprocess.run(
        [sys.executable, "-m", "wangpd", "plan", "--wan2gp", str(wan2gp), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert plan.returncode == 0, plan.stderr
    daemon.proc.send_signal(signal.SIGTERM)
    daemon.proc.wait(timeout=10)  # nothing is stuck in a read: SIGTERM ends it within shutdown_timeout
    assert daemon.proc.returncode == 0
