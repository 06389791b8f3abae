"""The "Model downloads" tab (gradio; imported only when Wan2GP builds its UI).

Public gradio APIs only, the ones 5.29 (Wan2GP's pin) and later share: Blocks layouts, ``Dataframe``, ``Timer``
(``tick``, ``active``), event ``js``, ``Tab.select`` and a component's ``parent``. The timer runs only while the tab
is shown: the tab's ``select`` starts it, and before each tick the browser says whether the tab is still on screen;
when it is not, the tick asks the daemon nothing and stops the timer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gradio as gr

from . import views
from .client import Client
from .settings import Settings

__all__ = ["TAB_LABEL", "build_tab"]

TAB_LABEL = "Model downloads"
_MARKER = "wangpd-status"
# Runs in the browser before each tick: is the tab on screen? (an element of a hidden tab has no layout box)
_VISIBLE_JS = (
    "(shown) => { const e = document.getElementById('" + _MARKER + "');"
    " return !!(e && (e.checkVisibility ? e.checkVisibility() : e.offsetParent !== null)); }"
)


def _unchanged() -> Any:
    return gr.skip() if hasattr(gr, "skip") else gr.update()


def _enclosing_tab(block: Any) -> Any:
    """The gr.Tab this tab's content was built in (Wan2GP builds it inside ``with gr.Tab(label)``), or None."""
    for _ in range(20):
        block = getattr(block, "parent", None)
        if block is None:
            return None
        if isinstance(block, gr.Tab):
            return block
    return None


def build_tab(client: Client, settings: Settings, root: str) -> dict[str, Any]:
    """Build the tab's content in the current gradio context; returns its components by name (for tests)."""

    def view() -> list[Any]:
        status = client.call("status")
        if status.not_running:
            return [views.status_line(status, root), "", []]
        managed = (status.result or {}).get("wan2gp_directory") if status.ok else None
        rows = views.queue_rows(views.fetch_queue(client), managed)
        return [views.status_line(status, root), views.held_line(status), rows]

    def models(which: str, pattern: str) -> list[list[Any]]:
        reply = client.call("models.list", {"filter": pattern.strip() or None, "missing": which != "All"}, timeout=30)
        return views.model_rows(reply)

    def act(method: str, params: dict[str, Any] | None = None, done: str = "") -> list[Any]:
        reply = client.call(method, params)
        message = done if reply.ok else f"⚠️ {method}: {reply.error}"
        return [message, *view()]

    def tick(shown: bool) -> list[Any]:
        if not shown:
            return [gr.Timer(active=False), *[_unchanged()] * 3]
        return [_unchanged(), *view()]

    def show(which: str, pattern: str) -> list[Any]:
        return [gr.Timer(active=True), *view(), models(which, pattern)]

    with gr.Column() as column:
        status_md = gr.Markdown("Asking wangpd…", elem_id=_MARKER)
        with gr.Row():
            pause_btn = gr.Button("Pause downloads", elem_id="wangpd-pause", scale=1)
            resume_btn = gr.Button("Resume downloads", elem_id="wangpd-resume", scale=1)
            limit_box = gr.Textbox(
                label="Bandwidth limit (empty: the config's)",
                placeholder="e.g. 20MiB/s or 400Mbit/s; 0 = no limit",
                scale=2,
                elem_id="wangpd-limit",
            )
            limit_btn = gr.Button("Set limit", scale=1, elem_id="wangpd-set-limit")
        held_md = gr.Markdown()
        with gr.Row():
            batch_box = gr.Textbox(label="Held batch (b7) or model glob; empty = all held", scale=3)
            approve_btn = gr.Button("Approve", scale=1, elem_id="wangpd-approve")
            reject_btn = gr.Button("Reject", scale=1, elem_id="wangpd-reject")
        queue_df = gr.Dataframe(
            headers=views.QUEUE_HEADERS,
            value=[],
            interactive=False,
            wrap=True,
            label="Queue",
            elem_id="wangpd-queue",
            column_widths=["5%", "33%", "10%", "8%", "8%", "9%", "7%", "10%", "10%"],
        )
        with gr.Row():
            job_box = gr.Textbox(label="Job #", scale=1)
            job_pause = gr.Button("Pause job", scale=1)
            job_resume = gr.Button("Resume job", scale=1)
            job_cancel = gr.Button("Cancel job", scale=1)
            job_top = gr.Button("To the top", scale=1)
        message_md = gr.Markdown(elem_id="wangpd-message")
        with gr.Accordion("Models", open=True):
            with gr.Row():
                which = gr.Radio(["Missing only", "All"], value="Missing only", label="Show", scale=1)
                pattern = gr.Textbox(label="Filter", placeholder="substring, or a glob such as ltx2_*", scale=2)
                models_btn = gr.Button("Refresh models", scale=1)
            models_df = gr.Dataframe(
                headers=views.MODEL_HEADERS,
                value=[],
                interactive=False,
                wrap=True,
                label="Models",
                elem_id="wangpd-models",
                column_widths=["18%", "34%", "10%", "16%", "12%", "10%"],
            )
            with gr.Row():
                keep_box = gr.Textbox(label="Model types to keep complete (globs allowed, comma separated)", scale=3)
                keep_btn = gr.Button("Add to keep-set", scale=1, elem_id="wangpd-keep")
        shown = gr.Checkbox(value=True, visible=False)
        tab = _enclosing_tab(column)
        # Inside Wan2GP the tab starts hidden: the timer starts when the tab is selected. Alone (no tab around
        # it) the content is always on screen.
        timer = gr.Timer(settings.refresh_interval, active=tab is None)

    shown_view = [status_md, held_md, queue_df]
    acted = [message_md, *shown_view]
    timer.tick(tick, inputs=[shown], outputs=[timer, *shown_view], js=_VISIBLE_JS, show_progress="hidden")
    if tab is not None:
        tab.select(show, inputs=[which, pattern], outputs=[timer, *shown_view, models_df], show_progress="hidden")

    pause_btn.click(lambda: act("pause", done="Downloads paused."), outputs=acted)
    resume_btn.click(lambda: act("resume", done="Downloads resumed."), outputs=acted)

    def set_limit(rate: str) -> list[Any]:
        rate = rate.strip() or "default"
        return act("limit.set", {"rate": rate}, done=f"Bandwidth limit set to {rate}.")

    limit_btn.click(set_limit, inputs=[limit_box], outputs=acted)
    limit_box.submit(set_limit, inputs=[limit_box], outputs=acted)

    def decide(method: str) -> Callable[[str], list[Any]]:
        def run(batch: str) -> list[Any]:
            what = batch.strip() or None
            return act(method, {"batch": what}, done=f"{method.capitalize()}d {what or 'everything held'}.")

        return run

    approve_btn.click(decide("approve"), inputs=[batch_box], outputs=acted)
    reject_btn.click(decide("reject"), inputs=[batch_box], outputs=acted)

    def on_job(method: str, where: str | None = None) -> Callable[[str], list[Any]]:
        def run(job: str) -> list[Any]:
            job_id = job.strip().lstrip("#")
            if not job_id.isdigit():
                return ["⚠️ give a job number from the queue's first column", *view()]
            params: dict[str, Any] = {"id": int(job_id)}
            if where is not None:
                params["where"] = where
            return act(method, params, done=f"Job {job_id}: {method.split('.')[1]} done.")

        return run

    job_pause.click(on_job("job.pause"), inputs=[job_box], outputs=acted)
    job_resume.click(on_job("job.resume"), inputs=[job_box], outputs=acted)
    job_cancel.click(on_job("job.cancel"), inputs=[job_box], outputs=acted)
    job_top.click(on_job("job.priority", "top"), inputs=[job_box], outputs=acted)

    models_btn.click(models, inputs=[which, pattern], outputs=[models_df])
    which.change(models, inputs=[which, pattern], outputs=[models_df])
    pattern.submit(models, inputs=[which, pattern], outputs=[models_df])

    def keep(types: str, which_value: str, pattern_value: str) -> list[Any]:
        names = [t.strip() for t in types.replace(",", " ").split() if t.strip()]
        if not names:
            return ["⚠️ name at least one model type (see the table)", *view(), models(which_value, pattern_value)]
        reply = client.call("models.add", {"types": names}, timeout=60)
        if reply.ok:
            result = reply.result or {}
            message = f"Kept {', '.join(result.get('models', []))}: {result.get('files', 0)} files queued."
            if result.get("errors"):
                message += " ⚠️ " + "; ".join(result["errors"])
        else:
            message = f"⚠️ models.add: {reply.error}"
        return [message, *view(), models(which_value, pattern_value)]

    keep_btn.click(keep, inputs=[keep_box, which, pattern], outputs=[*acted, models_df])

    return {
        "status": status_md,
        "queue": queue_df,
        "models": models_df,
        "timer": timer,
        "tab": tab,
        "message": message_md,
        "view": view,
        "tick": tick,
    }
