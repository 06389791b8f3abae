"""``wangpctl``: control a running wangpd.

Exit codes: 0 ok, 1 the daemon answered with an error, 2 usage error, 3 no daemon can be reached (not running,
permission denied, no answer).
Every command takes ``--json`` (machine-readable output, schema in docs/json-schema.md).
Shell completion: click's mechanism (``_WANGPCTL_COMPLETE=bash_source wangpctl``), or ``wangpctl completion SHELL``.

This module is the wiring (arguments, RPC calls, exit codes); what a command prints is in ``wangpctl.render``.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import click

from wangpctl import fmt, render
from wangpctl.client import Client, DaemonNotRunning, RpcError
from wangpd import protocol

__all__ = ["cli", "main"]


DEFAULT_TIMEOUT = 30.0  # seconds for one answer; a rescan of a large tree answers well within it


class Ctx:
    def __init__(self, socket_path: str | None, as_json: bool, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.socket_path = Path(socket_path) if socket_path else None
        self.as_json = as_json
        self.timeout = timeout
        self._client: Client | None = None

    @property
    def client(self) -> Client:
        if self._client is None:
            self._client = Client(self.socket_path, timeout=self.timeout)
        return self._client

    def call(self, method: str, **params: Any) -> Any:
        try:
            return self.client.call(method, params)
        except DaemonNotRunning as exc:
            click.echo(f"wangpctl: {exc}", err=True)
            sys.exit(protocol.EXIT_NOT_RUNNING)
        except RpcError as exc:
            self.fail_rpc(exc)

    def fail_rpc(self, exc: RpcError) -> typing.NoReturn:
        """The daemon said no: one line (or a JSON error object), exit 1."""
        if self.as_json:
            click.echo(json.dumps({"error": {"code": exc.code, "message": exc.message}}))
        else:
            click.echo(f"wangpctl: {exc.message}", err=True)
        sys.exit(protocol.EXIT_DAEMON_ERROR)

    def out(self, result: Any, human: Callable[[Any], str | None]) -> None:
        if self.as_json:
            click.echo(dump_json(result))
        else:
            text = human(result)
            if text:
                click.echo(text)

    @property
    def colour(self) -> bool:
        return fmt.use_colour()


def dump_json(result: Any) -> str:
    """Indented for a person at a terminal; compact when piped (a program reads it, and 10,000 queue rows encode
    about 3x faster without indentation). The same data and keys either way."""
    if sys.stdout.isatty():
        return json.dumps(result, indent=2, sort_keys=True)
    return json.dumps(result, separators=(",", ":"), sort_keys=True)


class JobId(click.ParamType):
    """A job id as `wangpctl queue` shows it: ``12`` or ``#12``. Completes from the daemon's queue."""

    name = "JOB"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        text = str(value).strip().lstrip("#")
        if not text.isdigit():
            self.fail(f"{value!r} is not a job id (a number from `wangpctl queue`, e.g. 12 or #12)", param, ctx)
        return int(text)

    def shell_complete(self, ctx: click.Context, param: click.Parameter, incomplete: str) -> list[Any]:
        from click.shell_completion import CompletionItem

        socket_path = ctx.find_root().params.get("socket_path")
        try:
            jobs = Client(Path(socket_path) if socket_path else None, timeout=2.0).call(
                "queue.list", {"state": ["downloading", "queued", "paused", "failed"], "limit": 500}
            )["jobs"]
        except Exception:  # completion must never print a traceback into the user's shell
            return []
        prefix = incomplete.lstrip("#")
        return [
            CompletionItem(str(job["id"]), help=f"{job['state']} {Path(job['target']).name}")
            for job in jobs
            if str(job["id"]).startswith(prefix)
        ]


JOB = JobId()

EPILOG = """\b
Exit codes:
  0  ok (doctor: no FAIL)
  1  the daemon answered with an error (follow: the job failed or was cancelled; doctor: a FAIL)
  2  usage error
  3  no daemon can be reached: not running, permission denied, or no answer within --timeout
  130  interrupted (Ctrl-C)
\b
Shell completion: eval "$(wangpctl completion bash)"  (zsh, fish too)
Every command takes --json; schemas in docs/json-schema.md."""


def command(group: click.Group, name: str | None = None, **kwargs: Any) -> Callable[[Callable[..., Any]], Any]:
    """A subcommand with ``--json`` and the shared context, so every command speaks JSON the same way."""

    def decorate(function: Callable[..., Any]) -> Any:
        @functools.wraps(function)
        def wrapper(*args: Any, as_json: bool = False, **params: Any) -> Any:
            ctx: Ctx = click.get_current_context().find_object(Ctx)  # type: ignore[assignment]
            ctx.as_json = ctx.as_json or as_json
            return function(ctx, *args, **params)

        wrapper = click.option("--json", "as_json", is_flag=True, help="Machine-readable JSON output.")(wrapper)
        return group.command(name, **kwargs)(wrapper)

    return decorate


@click.group(context_settings={"help_option_names": ["-h", "--help"]}, epilog=EPILOG)
@click.option(
    "--socket",
    "socket_path",
    envvar="WANGPCTL_SOCKET",
    metavar="PATH",
    help="The daemon's socket (default: $XDG_RUNTIME_DIR/wangpd/wangpd.sock, then /run/wangpd/wangpd.sock).",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable JSON output.")
@click.option(
    "--timeout",
    type=click.FloatRange(0.1, 3600),
    default=DEFAULT_TIMEOUT,
    envvar="WANGPCTL_TIMEOUT",
    show_default=True,
    metavar="SECONDS",
    help="How long to wait for the daemon's answer (a daemon that never answers exits 3).",
)
@click.version_option(package_name="wangpd", prog_name="wangpctl")
@click.pass_context
def cli(ctx: click.Context, socket_path: str | None, as_json: bool, timeout: float) -> None:
    """Control wangpd, the Wan2GP model download daemon.

    \b
    Seed habits: `hfqueue.py --status` is `wangpctl status`, `--clear` is `wangpctl clear`.
    """
    ctx.obj = Ctx(socket_path, as_json, timeout)


# ---- status ------------------------------------------------------------------------------------------------------


@command(cli)
def status(ctx: Ctx) -> None:
    """Daemon state, queue counts, speed and limit (the seed's `hfqueue.py --status`)."""
    ctx.out(ctx.call("status"), render.status)


@command(cli)
def version(ctx: Ctx) -> None:
    """Versions of wangpctl and the running daemon."""
    from importlib.metadata import version as package_version

    result = ctx.call("version")
    result["client"] = package_version("wangpd")
    ctx.out(result, render.version)


# ---- queue -------------------------------------------------------------------------------------------------------


@command(cli)
@click.option(
    "--state",
    "states",
    multiple=True,
    metavar="STATE",
    help="Only this state (repeatable): queued, downloading, complete, failed, needs_approval, paused, "
    "cancelled, or active / pending / finished.",
)
@click.option("--model", metavar="TYPE", help="Only files wanted by this model type.")
@click.option("--limit", "page_size", type=click.IntRange(1, 10000), default=100, show_default=True)
@click.option("--offset", type=click.IntRange(0), default=0)
def queue(ctx: Ctx, states: tuple[str, ...], model: str | None, page_size: int, offset: int) -> None:
    """The download queue: id, state, progress, size, speed, ETA, file, models, reason."""
    result = ctx.call("queue.list", state=list(states) or None, model=model, limit=page_size, offset=offset)
    ctx.out(result, lambda r: render.queue(r, filtered=bool(states or model), colour=ctx.colour))


@command(cli)
@click.argument("what", nargs=-1, required=True)
@click.option("--target", metavar="PATH", help="For a URL: where in the Wan2GP folder (default ckpts/<name>).")
@click.option("--priority", type=int, default=0, help="Higher runs first.")
@click.option("--all-variants", is_flag=True, help="For model types: every variant, not only Wan2GP's choice.")
@click.option("--dry-run", is_flag=True, help="For model types: say what would be queued, queue nothing.")
@click.option(
    "--with-profile",
    "profiles",
    multiple=True,
    metavar="NAME",
    help="For model types: also the LoRAs of this accelerator profile (a name or glob, see `models show`).",
)
def add(
    ctx: Ctx,
    what: tuple[str, ...],
    target: str | None,
    priority: int,
    all_variants: bool,
    dry_run: bool,
    profiles: tuple[str, ...],
) -> None:
    """Queue model types (their missing files) or single files by HuggingFace URL.

    \b
    wangpctl add t2v i2v_2_2           # the missing files of two models
    wangpctl add 'vace_*' --dry-run    # what it would cost
    wangpctl add t2v_2_2 --with-profile 'Lightning*'
    wangpctl add https://huggingface.co/Org/Repo/resolve/main/file.safetensors
    """
    urls = [item for item in what if "://" in item]
    models = [item for item in what if "://" not in item]
    results: dict[str, Any] = {}
    if urls:
        if dry_run:
            raise click.UsageError("--dry-run applies to model types, not URLs")
        results["files"] = [ctx.call("queue.add", url=url, target=target, priority=priority) for url in urls]
    if profiles and not models:
        raise click.UsageError("--with-profile applies to model types")
    if models:
        extra = {"profiles": list(profiles)} if profiles else {}
        results["models"] = ctx.call(
            "models.add", types=models, all_variants=all_variants, dry_run=dry_run, priority=priority, **extra
        )

    ctx.out(results, render.add)


@command(cli)
@click.argument("which", type=click.Choice(["complete", "failed", "all"]), default="complete")
def clear(ctx: Ctx, which: str) -> None:
    """Remove finished jobs from the list (complete, failed+cancelled, or all finished). Files stay."""
    ctx.out(ctx.call("queue.clear", which=which), lambda r: render.clear(r, which))


# ---- jobs --------------------------------------------------------------------------------------------------------


Render = Callable[[dict[str, Any]], str]


class JobVerb(NamedTuple):
    """A verb on one job. Each one is ``wangpctl job NAME JOB``; one with ``top_help`` is also ``wangpctl NAME JOB``,
    the short spelling people type most, so the two can never drift apart."""

    name: str
    method: str  # the RPC method, called with id=JOB
    human: Render  # renders the job the method returns
    job_help: str
    top_help: str | None = None  # None: only under `wangpctl job`
    every: tuple[str, Render] | None = None  # top level without JOB: (RPC method, render) for every download


JOB_VERBS = (
    JobVerb("show", "job.show", render.job_show, "Every field of one job."),
    JobVerb(
        "pause",
        "job.pause",
        functools.partial(render.job_changed, past="paused"),
        "Pause one job.",
        "Pause one job, or every download when no JOB is given (partial files are kept).",
        every=("pause", render.pause_all),
    ),
    JobVerb(
        "resume",
        "job.resume",
        functools.partial(render.job_changed, past="resumed"),
        "Resume one paused job.",
        "Resume one paused job, or all downloads when no JOB is given.",
        every=("resume", render.resume_all),
    ),
    JobVerb(
        "cancel",
        "job.cancel",
        functools.partial(render.job_changed, past="cancelled"),
        "Cancel one job.",
        "Cancel a job (its partial file is kept in the HF cache for a later retry).",
    ),
    JobVerb(
        "retry",
        "job.retry",
        functools.partial(render.job_changed, past="queued again"),
        "Queue a failed or cancelled job again.",
        "Queue a failed or cancelled job again.",
    ),
)


def job_command(group: click.Group, verb: JobVerb, help_text: str, every: tuple[str, Render] | None) -> None:
    """Add ``verb`` to ``group`` as a command taking JOB. With ``every``, JOB may be left out to act on every
    download instead."""

    def run(ctx: Ctx, job: int | None) -> None:
        # `not job` rather than `job is None`: ids start at 1, so `pause 0` names no job and means every download.
        if every is not None and not job:
            method, human = every
            ctx.out(ctx.call(method), human)
        else:
            ctx.out(ctx.call(verb.method, id=job), verb.human)

    command(group, verb.name, help=help_text)(click.argument("job", type=JOB, required=every is None)(run))


@cli.group()
def job() -> None:
    """One job: show, pause, resume, cancel, retry, priority."""


for _verb in JOB_VERBS:
    if _verb.top_help is not None:
        job_command(cli, _verb, _verb.top_help, _verb.every)
    job_command(job, _verb, _verb.job_help, None)


@command(job, "priority")
@click.argument("job_id", metavar="JOB", type=JOB)
@click.argument("where", metavar="top|bottom|N")
def job_priority(ctx: Ctx, job_id: int, where: str) -> None:
    """Move a job: top, bottom, or a number (higher runs first)."""
    if where not in ("top", "bottom") and not where.lstrip("-").isdigit():
        raise click.BadParameter("must be top, bottom or a whole number", param_hint="WHERE")
    value: str | int = where if where in ("top", "bottom") else int(where)
    ctx.out(ctx.call("job.priority", id=job_id, where=value), render.job_priority)


# ---- limit, reload ------------------------------------------------------------------------------------------------


@command(cli)
@click.argument("rate", required=False)
def limit(ctx: Ctx, rate: str | None) -> None:
    """Show or set the total bandwidth: 20MiB/s, 90MB/s, 400Mbit/s, off (unlimited), default (config/schedule).

    A limit set here holds until the next schedule edge (or for good without a schedule), across restarts."""
    if rate is None:
        ctx.out(ctx.call("limit.get"), render.limit)
    else:
        ctx.out(ctx.call("limit.set", rate=rate), render.limit)


@command(cli)
def reload(ctx: Ctx) -> None:
    """Re-read the daemon's config file (transfers keep running). Synchronous: systemd's ExecReload uses it."""
    ctx.out(ctx.call("reload"), render.reload)


# ---- models, plan, approvals ---------------------------------------------------------------------------------------


@cli.group(invoke_without_command=True)
@click.option("--filter", "filter_", metavar="TEXT", help="Substring of type/name/family, or a glob on the type.")
@click.option("--missing/--all", "missing", default=True, help="Only models missing files (default), or all.")
@click.option("--new", "new", is_flag=True, help="Only model types that appeared while wangpd watched, newest first.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable JSON output.")
@click.pass_context
def models(click_ctx: click.Context, filter_: str | None, missing: bool, new: bool, as_json: bool) -> None:
    """Wan2GP's model types: files present/total, what is missing, and whether it is kept complete and why
    (the seed's Models tab)."""
    if click_ctx.invoked_subcommand is not None:
        return
    ctx: Ctx = click_ctx.find_object(Ctx)  # type: ignore[assignment]
    ctx.as_json = ctx.as_json or as_json
    result = ctx.call("models.list", filter=filter_, missing=missing, new=new)
    ctx.out(
        result,
        lambda r: render.models(r, missing=missing and not new, filtered=bool(filter_), colour=ctx.colour, new=new),
    )


@command(models, "show")
@click.argument("model_type", metavar="TYPE")
@click.option("--all-variants", is_flag=True, help="Every variant, not only the one Wan2GP would load.")
def models_show(ctx: Ctx, model_type: str, all_variants: bool) -> None:
    """Every file one model needs, where it goes and whether it is there."""
    result = ctx.call("models.show", type=model_type, all_variants=all_variants)
    ctx.out(result, lambda r: render.models_show(r, model_type))


@command(cli)
@click.option("--model", "model_globs", multiple=True, metavar="GLOB", help="Only these model types (repeatable).")
@click.option("--all-variants", is_flag=True, help="Every variant, not only the one Wan2GP would load.")
def plan(ctx: Ctx, model_globs: tuple[str, ...], all_variants: bool) -> None:
    """What the daemon plans: every wanted file with its status (use --json for the full record)."""
    ctx.out(ctx.call("plan", models=list(model_globs) or None, all_variants=all_variants), render.plan)


@command(cli)
def rescan(ctx: Ctx) -> None:
    """Re-read Wan2GP's definitions now and queue what tracked models miss."""
    ctx.out(ctx.call("rescan"), render.rescan)


@command(cli)
@click.argument("batch", required=False, metavar="[BATCH|GLOB]")
def approve(ctx: Ctx, batch: str | None) -> None:
    """Start files held for approval: every held batch, one batch (b7), or the batches of the model types a glob
    names (wangpctl approve 'ltx2_*')."""
    ctx.out(ctx.call("approve", batch=batch), render.approve)


@command(cli)
@click.argument("batch", required=False, metavar="[BATCH|GLOB]")
def reject(ctx: Ctx, batch: str | None) -> None:
    """Drop files held for approval (every batch, one batch, or a model-type glob); their models leave the
    keep-set and are not proposed again (`wangpctl add TYPE` still can)."""
    ctx.out(ctx.call("reject", batch=batch), render.reject)


@command(cli)
@click.argument("types", nargs=-1, required=True, metavar="TYPE...")
def drop(ctx: Ctx, types: tuple[str, ...]) -> None:
    """Stop keeping model types complete (globs allowed): their jobs stop, nothing is fetched for them again
    unless added by hand. Says which of their files no kept model needs any more; deletes nothing."""
    ctx.out(ctx.call("models.drop", types=list(types)), render.drop)


@command(cli)
@click.argument("types", nargs=-1, metavar="[TYPE|GLOB...]")
@click.option("--by", type=click.Choice(["model", "family"]), default="model", show_default=True)
def du(ctx: Ctx, types: tuple[str, ...], by: str) -> None:
    """Disk used by the models' present files: unique to each or shared with others, where the bytes live (HF
    cache, InvokeAI, elsewhere behind a link, a real file at the Wan2GP path), and per filesystem. A file linked
    from several paths counts once."""
    ctx.out(ctx.call("du", types=list(types) or None, by=by), render.du)


@command(cli)
def unused(ctx: Ctx) -> None:
    """Files on disk that no kept model needs, with size and why (dropped, gone, other variant, not kept, orphan,
    a blob wangpd downloaded that nothing links), and whether `wangpctl prune` may remove them: only what wangpd
    made. Deletes nothing."""
    ctx.out(ctx.call("unused"), render.unused)


@command(cli)
@click.argument("types", nargs=-1, metavar="[TYPE|GLOB...]")
@click.option("--unused", "unused_", is_flag=True, help="Everything no kept model needs (see `wangpctl unused`).")
@click.option("--dry-run", is_flag=True, help="Print exactly what would go and the space freed; remove nothing.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask (for scripts); without it a terminal is asked.")
def prune(ctx: Ctx, types: tuple[str, ...], unused_: bool, dry_run: bool, yes: bool) -> None:
    """Remove what wangpd made for model types (which leave the keep-set first, so nothing is fetched back) or,
    with --unused, everything no kept model needs: its links, and the HF-cache blobs it downloaded that nothing
    else uses. A file wangpd did not make (yours, InvokeAI's, another library's, another tool's blob) stays."""
    if not types and not unused_:
        raise click.UsageError("name model types to prune, or pass --unused")
    params: dict[str, Any] = {"types": list(types) or None, "unused": unused_}
    if dry_run:
        ctx.out(ctx.call("prune", **params, dry_run=True), render.prune)
        return
    paths = None
    if not yes:
        if not sys.stdin.isatty():
            raise click.UsageError("prune asks before removing; not a terminal: pass --yes (or --dry-run to look)")
        preview = ctx.call("prune", **params, dry_run=True)
        if ctx.as_json:
            click.echo(dump_json(preview), err=True)
        else:
            click.echo(render.prune(preview))
        paths = [row["path"] for row in preview["rows"] if row["removable"]]
        if not paths and not types:
            return
        if not click.confirm("Remove these?" if paths else "Drop these models (nothing to remove)?", default=False):
            click.echo("nothing removed", err=True)
            sys.exit(protocol.EXIT_DAEMON_ERROR)
    ctx.out(ctx.call("prune", **params, dry_run=False, paths=paths), render.prune)


# ---- follow, doctor ------------------------------------------------------------------------------------------------


@command(cli)
@click.argument("job", type=JOB, required=False)
def follow(ctx: Ctx, job: int | None) -> None:
    """Live progress: a bar per downloading job and a total line, redrawn in place on a terminal; one plain line
    per event when piped; NDJSON events with --json.

    \b
    With JOB: exits when it ends, 0 complete, 1 failed or cancelled. Without: until Ctrl-C.
    Exits 3 when the daemon is not running or goes away."""
    from wangpctl.follow import DaemonGone
    from wangpctl.follow import follow as run_follow

    try:
        code = run_follow(ctx.client, job, as_json=ctx.as_json, out=sys.stdout, colour=ctx.colour)
    except KeyboardInterrupt:
        code = 130  # Ctrl-C is how one stops following: no traceback, no message
    except (DaemonNotRunning, DaemonGone) as exc:
        click.echo(f"wangpctl: {exc}", err=True)
        code = protocol.EXIT_NOT_RUNNING
    except RpcError as exc:
        ctx.fail_rpc(exc)
    sys.exit(code)


@command(cli)
def doctor(ctx: Ctx) -> None:
    """Check the setup: config, Wan2GP folder, HF cache and token, InvokeAI, disk, inotify, watcher, socket.

    \b
    Each line is OK, WARN or FAIL with the fix. Exit 0 when nothing FAILs, 1 otherwise,
    3 when the daemon cannot be reached (the lines then say why: socket, permissions, group)."""
    from wangpctl.doctor import exit_code, unreachable_checks

    try:
        checks = ctx.client.call("doctor")
        source = "daemon"
    except DaemonNotRunning as exc:
        checks, source = unreachable_checks(exc.tried), "client"
    except RpcError as exc:
        if exc.code != protocol.FORBIDDEN:
            ctx.fail_rpc(exc)
        checks, source = unreachable_checks(ctx.client.candidates), "client"
    result = {"source": source, "ok": exit_code(checks) == 0, "checks": checks}
    ctx.out(result, lambda r: render.doctor(r, colour=ctx.colour))
    sys.exit(protocol.EXIT_NOT_RUNNING if source == "client" else exit_code(checks))


# ---- service, completion -----------------------------------------------------------------------------------------


@cli.group()
def service() -> None:
    """Install wangpd as a systemd service."""


@command(service, "install")
@click.option("--user", "scope", flag_value="user", help="A user service (systemctl --user); the default unless root.")
@click.option("--system", "scope", flag_value="system", help="The system service (user wangpd); the default as root.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="Config file the service reads.")
@click.option("--dry-run", is_flag=True, help="Show what would be written where; write nothing.")
@click.option("--root", "root", type=click.Path(file_okay=False), hidden=True, help="Write under this prefix.")
def service_install(ctx: Ctx, scope: str | None, config_path: str | None, dry_run: bool, root: str | None) -> None:
    """Write the systemd units with this installation's wangpd/wangpctl paths, then print the systemctl commands.

    \b
    System: /etc/systemd/system/wangpd.{service,socket}, /etc/sysusers.d, /etc/tmpfiles.d.
    User:   ~/.config/systemd/user/wangpd.{service,socket}."""
    import os

    from wangpctl.service import apply, plan_install

    scope = scope or ("system" if os.geteuid() == 0 else "user")
    try:
        plan = plan_install(scope, Path(config_path) if config_path else None, Path(root) if root else None)
        if not dry_run:
            apply(plan)
    except FileNotFoundError as exc:
        click.echo(f"wangpctl: {exc}", err=True)
        sys.exit(protocol.EXIT_DAEMON_ERROR)
    except PermissionError as exc:
        click.echo(f"wangpctl: cannot write {exc.filename}: permission denied (run it with sudo)", err=True)
        sys.exit(protocol.EXIT_DAEMON_ERROR)

    ctx.out(plan.to_dict(dry_run), lambda r: render.service_install(r, colour=ctx.colour))


@cli.group()
def wan2gp() -> None:
    """wangpd inside Wan2GP: its plugin (a "Model downloads" tab; the model you pick fetched first; Wan2GP waits
    for wangpd instead of downloading the same file itself)."""


def _managed_folder(ctx: Ctx) -> Path | None:
    """The Wan2GP folder the daemon manages, or None when it is not running."""
    try:
        status = ctx.client.call("status", {})
    except (DaemonNotRunning, RpcError):
        return None
    return Path(status["wan2gp_directory"])


def _plugin_command(ctx: Ctx, folder: Path | None, action: Callable[[Path, Path | None], dict[str, Any]]) -> Any:
    from wangpctl.wan2gp import PluginInstallError

    managed = _managed_folder(ctx)
    target = folder or managed
    if target is None:
        raise click.UsageError("wangpd is not running: name the Wan2GP folder with --wan2gp DIR")
    try:
        return action(target, managed)
    except PluginInstallError as exc:
        if ctx.as_json:
            click.echo(json.dumps({"error": {"code": protocol.EXIT_DAEMON_ERROR, "message": str(exc)}}))
        else:
            click.echo(f"wangpctl: {exc}", err=True)
        sys.exit(protocol.EXIT_DAEMON_ERROR)


_WAN2GP_DIR = click.option(
    "--wan2gp",
    "folder",
    type=click.Path(file_okay=False, path_type=Path),
    help="The Wan2GP folder (default: the one the running daemon manages).",
)


@command(wan2gp, "install-plugin")
@_WAN2GP_DIR
def wan2gp_install_plugin(ctx: Ctx, folder: Path | None) -> None:
    """Copy the plugin to <Wan2GP>/plugins/wan2gp-wangpd/ (a name Wan2GP's git ignores) and add it to
    enabled_plugins in wgp_config.json (only that value changes; a backup is kept). Then restart Wan2GP."""
    from wangpctl.wan2gp import install_plugin

    socket = ctx.socket_path  # given by --socket or WANGPCTL_SOCKET: the plugin may not find it by itself

    def install(target: Path, managed: Path | None) -> dict[str, Any]:
        return install_plugin(target, running_dir=managed, socket=str(socket) if socket else None)

    ctx.out(_plugin_command(ctx, folder, install), render.plugin_install)


@command(wan2gp, "uninstall-plugin")
@_WAN2GP_DIR
def wan2gp_uninstall_plugin(ctx: Ctx, folder: Path | None) -> None:
    """Take the plugin out of enabled_plugins and remove the folder wangpd installed (nothing else)."""
    from wangpctl.wan2gp import uninstall_plugin

    ctx.out(_plugin_command(ctx, folder, lambda target, _managed: uninstall_plugin(target)), render.plugin_uninstall)


@cli.command()
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
def completion(shell: str) -> None:
    """Print the completion script for SHELL (click's own; completes commands, options and job ids).

    \b
    bash: eval "$(wangpctl completion bash)"        (in ~/.bashrc)
    zsh:  eval "$(wangpctl completion zsh)"         (in ~/.zshrc)
    fish: wangpctl completion fish > ~/.config/fish/completions/wangpctl.fish"""
    from click.shell_completion import get_completion_class

    completer = get_completion_class(shell)
    assert completer is not None
    click.echo(completer(cli, {}, "wangpctl", "_WANGPCTL_COMPLETE").source())


def main() -> None:
    """Console entry point; click's usage errors exit 2. A reader that stops early (`wangpctl queue | head`) ends
    the output quietly, as other Unix tools do."""
    try:
        cli(prog_name="wangpctl")
    except BrokenPipeError:
        quiet_broken_pipe()


def quiet_broken_pipe() -> typing.NoReturn:
    """stdout's reader went away: no traceback, and none either when Python flushes stdout at exit."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    sys.exit(0)
