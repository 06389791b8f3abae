"""``wangpctl follow``: live progress from the daemon's ``GET /events`` stream.

On a terminal the active jobs are drawn as a block of progress bars plus a total line, redrawn in place with ANSI
cursor movement; finished jobs and other news scroll above the block. When stdout is not a terminal (a pipe, a
log file) every event of interest becomes one plain line, with no escape codes at all, so ``grep`` and ``tail``
work on it. ``--json`` passes the events through as NDJSON.

Standard library only, like the rest of the client.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from typing import Any, TextIO

from wangpctl import fmt
from wangpctl.client import Client, DaemonNotRunning, RpcError
from wangpd import protocol

__all__ = ["FINAL_STATES", "DaemonGone", "DaemonNotRunning", "FollowView", "follow"]

FINAL_STATES = {"complete": 0, "failed": 1, "cancelled": 1}
REDRAW_INTERVAL = 0.1  # seconds; progress comes every 0.5 s per job, a busy queue must not flood the terminal
BAR_WIDTH = 24

# ANSI: move to the start of the line N lines up / clear to the end of the screen / hide and show the cursor.
_UP = "\x1b[{}F"
_CLEAR_DOWN = "\x1b[J"
_HIDE_CURSOR = "\x1b[?25l"
_SHOW_CURSOR = "\x1b[?25h"


class DaemonGone(Exception):
    """The event stream ended: the daemon stopped or restarted."""


@dataclass
class _Job:
    id: int
    name: str
    size: int | None = None
    done: int = 0
    speed: float = 0.0
    state: str = "downloading"


class FollowView:
    """What ``follow`` knows and shows. Pure: events in, text out (tested without a daemon, driven by one)."""

    def __init__(self, job_id: int | None, colour: bool, width: int = 100) -> None:
        self.job_id = job_id
        self.colour = colour
        self.width = max(40, width)
        self.jobs: dict[int, _Job] = {}
        self.totals: dict[str, Any] = {"counts": {}, "speed": 0, "remaining_bytes": 0, "paused": False}
        self.exit_code: int | None = None  # set when the followed job ended
        self._last_status_line = ""

    # ---- state ------------------------------------------------------------------------------------------------

    def seed(self, jobs: list[dict[str, Any]]) -> None:
        """Jobs already downloading when follow started (from queue.list), so bars show sizes at once."""
        for job in jobs:
            if job["state"] == "downloading":
                self.jobs[job["id"]] = _Job(
                    job["id"], os.path.basename(job["target"]), job["size"], job["bytes_done"], job["speed"]
                )

    def handle(self, event: dict[str, Any]) -> list[str]:
        """Update the state from one event; return the plain lines it is worth (possibly none)."""
        kind = event.get("event")
        if kind in ("hello", "status"):
            self.totals = {key: event.get(key) for key in ("counts", "speed", "remaining_bytes", "paused")}
            line = self._status_text()
            if kind == "hello" or line != self._last_status_line:
                self._last_status_line = line
                return [line]
            return []
        if kind == "progress":
            job = self._job(event["id"], None)
            job.done = event.get("bytes_done") or 0
            job.speed = event.get("speed") or 0
            job.size = event.get("size") or job.size
            job.state = "downloading"
            return [self._progress_text(job)]
        if kind == "job":
            return self._job_event(event)
        if kind == "retry":
            return [f"job {event['id']} retry {event.get('attempt')} in {event.get('delay')}s: {event.get('error')}"]
        if kind == "limit":
            return [f"limit now {fmt.rate(event.get('limit'))}"]
        if kind in ("paused", "resumed"):
            self.totals["paused"] = kind == "paused"
            return [f"downloads {kind}"]
        if kind == "cleared" and self.job_id is not None and self.job_id not in self.jobs:
            return [f"removed {event.get('removed')} {event.get('which')} job(s)"]
        if kind == "prune":
            return [f"pruned {event.get('removed')} path(s), {fmt.bytes_(event.get('freed'))} freed"]
        if kind in ("auto", "model", "error", "reloaded", "cleared", "started"):
            details = {k: v for k, v in event.items() if k not in ("event", "time", "dropped")}
            text = details.pop("message", None) or details.pop("line", None)
            return [f"{kind}: " + (str(text) if text else " ".join(f"{k}={_short(v)}" for k, v in details.items()))]
        return []

    def _job(self, job_id: int, target: str | None) -> _Job:
        if job_id not in self.jobs:
            self.jobs[job_id] = _Job(job_id, os.path.basename(target) if target else f"job {job_id}")
        elif target:
            self.jobs[job_id].name = os.path.basename(target)
        return self.jobs[job_id]

    def _job_event(self, event: dict[str, Any]) -> list[str]:
        job_id, state = event["id"], event.get("state", "?")
        name = os.path.basename(event.get("target") or "") or f"job {job_id}"
        if state == "downloading":
            self._job(job_id, event.get("target")).state = state
        else:
            self.jobs.pop(job_id, None)
        text = f"job {job_id} {fmt.colour(state, fmt.STATE_COLOURS.get(state), self.colour)} {name}"
        if event.get("error"):
            text += f": {event['error']}"
        elif state == "complete" and event.get("source"):
            text += f" (via {event['source']})"
        elif event.get("why") and event.get("why") != state:
            text += f" ({event['why']})"
        if job_id == self.job_id and state in FINAL_STATES:
            self.exit_code = FINAL_STATES[state]
        return [text]

    # ---- text -------------------------------------------------------------------------------------------------

    def _status_text(self) -> str:
        counts = self.totals.get("counts") or {}
        speed = self.totals.get("speed") or 0
        remaining = self.totals.get("remaining_bytes") or 0
        text = (
            f"total {counts.get('downloading', 0)} downloading, {counts.get('queued', 0)} queued, "
            f"{counts.get('complete', 0)} complete, {counts.get('failed', 0)} failed; "
            f"{fmt.rate(speed, '0 B/s')}, {fmt.bytes_(remaining)} left, eta {fmt.eta(remaining, speed)}"
        )
        if self.totals.get("paused"):
            text += "  " + fmt.colour("[paused]", "yellow", self.colour)
        return text

    def _progress_text(self, job: _Job) -> str:
        if job.size:
            percent = f"{100 * job.done / job.size:.0f}%"
            amount = f"{fmt.bytes_(job.done)}/{fmt.bytes_(job.size)}"
            eta = fmt.eta(job.size - job.done, job.speed)
        else:
            percent, amount, eta = "?%", f"{fmt.bytes_(job.done)}/?", "-"
        return f"job {job.id} {percent} {amount} {fmt.rate(job.speed, '0 B/s')} eta {eta} {job.name}"

    def _bar(self, job: _Job) -> str:
        fraction = min(1.0, job.done / job.size) if job.size else 0.0
        filled = round(BAR_WIDTH * fraction)
        bar = (fmt.colour("#" * filled, "blue", self.colour) if filled else "") + "-" * (BAR_WIDTH - filled)
        percent = f"{100 * fraction:3.0f}%" if job.size else "  ?%"
        amount = f"{fmt.bytes_(job.done)}/{fmt.bytes_(job.size)}" if job.size else fmt.bytes_(job.done)
        eta = fmt.eta(job.size - job.done, job.speed) if job.size else "-"
        tail = f" [{bar}] {percent} {amount:>21} {fmt.rate(job.speed, '0 B/s'):>12} eta {eta:>6}"
        head_width = self.width - _visible_len(tail) - 1
        head = f"#{job.id} {job.name}"
        if len(head) > head_width:
            head = head[: max(0, head_width - 1)] + "~"
        return head.ljust(head_width) + tail

    def screen(self, height: int = 24) -> list[str]:
        """The live block: a bar per downloading job (the followed one first), then the total line."""
        jobs = sorted(self.jobs.values(), key=lambda j: (j.id != self.job_id, j.id))
        room = max(1, height - 2)
        lines = [self._bar(job) for job in jobs[:room]]
        if len(jobs) > room:
            lines.append(f"... and {len(jobs) - room} more")
        if not jobs:
            lines.append(fmt.colour("nothing downloading", "dim", self.colour))
        lines.append(_clip(self._status_text(), self.width))
        return [_clip(line, self.width) for line in lines]


def _short(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, list | dict) else str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _visible_len(text: str) -> int:
    return len(fmt.strip_ansi(text))


def _clip(text: str, width: int) -> str:
    """At most width-1 visible characters: a line that wraps would make the next redraw move up too few lines."""
    if _visible_len(text) < width:
        return text
    return fmt.strip_ansi(text)[: width - 1]  # drop the colours rather than cut inside an escape sequence


class _Terminal:
    """Redraws the live block in place; anything printed scrolls above it."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.drawn = 0
        self.last = 0.0
        self.block: list[str] = []

    def draw(self, news: list[str], block: list[str], force: bool = False) -> None:
        now = time.monotonic()
        if not news and not force and (now - self.last < REDRAW_INTERVAL or block == self.block):
            return
        self.last = now
        self.block = block
        parts = [_UP.format(self.drawn) + _CLEAR_DOWN] if self.drawn else []
        parts += [line + "\n" for line in news]
        parts += [line + "\n" for line in block]
        self.out.write("".join(parts))
        self.out.flush()
        self.drawn = len(block)


def follow(client: Client, job_id: int | None, *, as_json: bool, out: TextIO, colour: bool) -> int:
    """Follow the daemon's events until JOB ends (0 complete, 1 failed/cancelled), forever without JOB.

    Raises DaemonNotRunning when there is no daemon to start with, DaemonGone when it goes away, RpcError for a
    bad JOB; KeyboardInterrupt is the caller's (exit 130).
    """
    interactive = out.isatty() and not as_json
    size = shutil.get_terminal_size()
    view = FollowView(job_id, colour and interactive, size.columns)
    stream = client.events()
    try:
        hello = next(stream)
    except StopIteration:
        raise DaemonGone("the daemon closed the event stream at once") from None
    if as_json:
        out.write(json.dumps(hello, separators=(",", ":")) + "\n")
        out.flush()
    # Only after the stream is open: a job that ends between this look and the first event is not missed.
    if job_id is not None:
        job = client.call("job.show", {"id": job_id})
        if job["state"] in FINAL_STATES:
            if as_json:
                out.write(json.dumps({"event": "job", "time": round(time.time(), 3), **_job_event(job)}) + "\n")
            else:
                out.write(f"job {job['id']} is already {job['state']}: {os.path.basename(job['target'])}\n")
            out.flush()
            return FINAL_STATES[job["state"]]
    view.seed(client.call("queue.list", {"state": "downloading", "limit": 1000})["jobs"])
    if job_id is not None and job["state"] == "downloading" and job_id not in view.jobs:
        view.seed([job])

    terminal = _Terminal(out) if interactive else None
    if terminal is not None:
        out.write(_HIDE_CURSOR)
        view.handle(hello)
        terminal.draw([], view.screen(size.lines), force=True)
    elif not as_json:
        _write_lines(out, view.handle(hello))
    try:
        for event in stream:
            if as_json:
                out.write(json.dumps(event, separators=(",", ":")) + "\n")
                out.flush()
                view.handle(event)
            else:
                lines = view.handle(event)
                if terminal is not None:
                    # Only lasting news scrolls above the block; progress and totals live in it.
                    # (A job that starts downloading gets a bar, not a line.)
                    kind = event.get("event")
                    starting = kind == "job" and event.get("state") == "downloading"
                    news = lines if kind not in ("progress", "status", "hello") and not starting else []
                    terminal.draw(news, view.screen(shutil.get_terminal_size().lines), force=view.exit_code is not None)
                else:
                    _write_lines(out, lines)
            if view.exit_code is not None:
                return view.exit_code
            if job_id is not None and event.get("event") == "status":
                # A safety net for a missed end (e.g. the job was removed by `wangpctl clear`): ask once a tick.
                try:
                    state = client.call("job.show", {"id": job_id})["state"]
                except RpcError as exc:
                    if exc.code == protocol.NOT_FOUND:
                        out.write(f"job {job_id} was removed from the queue\n")
                        return 1
                    raise
                if state in FINAL_STATES:
                    return FINAL_STATES[state]
    except (ConnectionError, OSError) as exc:
        raise DaemonGone(f"lost the daemon ({exc})") from None
    finally:
        if terminal is not None:
            out.write(_SHOW_CURSOR)
            out.flush()
    raise DaemonGone("the daemon closed the event stream (stopped or restarting)")


def _job_event(job: dict[str, Any]) -> dict[str, Any]:
    return {"id": job["id"], "state": job["state"], "target": job["target"], "error": job["last_error"]}


def _write_lines(out: TextIO, lines: list[str]) -> None:
    if lines:
        out.write("".join(line + "\n" for line in lines))
        out.flush()
