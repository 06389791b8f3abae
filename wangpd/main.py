"""``wangpd``: the daemon's command line (click). ``wangpd`` alone = ``wangpd run``."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import typing
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import click

from wangpd import __version__, protocol
from wangpd.config import Config, load_config
from wangpd.errors import ConfigError, WangpError

__all__ = ["cli", "find_config"]

log = logging.getLogger("wangpd")


def find_config(explicit: str | None) -> Path:
    """--config, else $WANGPD_CONFIG, else systemd's $CONFIGURATION_DIRECTORY, else the usual places."""
    if explicit:
        return Path(explicit)
    if os.environ.get("WANGPD_CONFIG"):
        return Path(os.environ["WANGPD_CONFIG"])
    candidates = []
    if os.environ.get("CONFIGURATION_DIRECTORY"):
        candidates.append(Path(os.environ["CONFIGURATION_DIRECTORY"].split(":")[0]) / "config.yaml")
    xdg = os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")
    candidates += [Path(xdg) / "wangpd" / "config.yaml", Path("/etc/wangpd/config.yaml"), Path("config.yaml")]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    return candidates[0]


class _JournalFormatter(logging.Formatter):
    """Under journald (JOURNAL_STREAM set) no timestamp (journald adds one) and a <N> syslog priority prefix,
    so `journalctl -p warning -u wangpd` filters properly."""

    PRIORITY: typing.ClassVar[dict[int, int]] = {
        logging.DEBUG: 7,
        logging.INFO: 6,
        logging.WARNING: 4,
        logging.ERROR: 3,
        logging.CRITICAL: 2,
    }

    def format(self, record: logging.LogRecord) -> str:
        return f"<{self.PRIORITY.get(record.levelno, 6)}>{super().format(record)}"


def setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if os.environ.get("JOURNAL_STREAM"):
        handler.setFormatter(_JournalFormatter("%(name)s: %(message)s"))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiohttp's access log is off; its own warnings stay. huggingface_hub's HTTP client logs every request at INFO:
    # hundreds of lines per rescan in the journal, so only its warnings are kept.
    for noisy in ("aiohttp.access", "httpx", "httpx2", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _load(config_path: str | None) -> Config:
    path = find_config(config_path)
    try:
        return load_config(path)
    except WangpError as exc:
        click.echo(f"wangpd: {exc}", err=True)
        sys.exit(protocol.EXIT_CONFIG)


@click.group(invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_path",
    metavar="PATH",
    help="config.yaml (default: $WANGPD_CONFIG, "
    "$CONFIGURATION_DIRECTORY/config.yaml, ~/.config/wangpd/config.yaml, /etc/wangpd/config.yaml, ./config.yaml)",
)
@click.version_option(__version__, prog_name="wangpd")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None) -> None:
    """wangpd: keeps Wan2GP's model files complete. Run without a command to start the daemon."""
    ctx.obj = {"config_path": config_path}
    if ctx.invoked_subcommand is None:
        ctx.invoke(run)


@cli.command()
@click.option("--config", "config_path", metavar="PATH", help="config.yaml (overrides the group option)")
@click.pass_context
def run(ctx: click.Context, config_path: str | None) -> None:
    """Start the daemon (foreground; systemd runs this)."""
    config = _load(config_path or (ctx.obj or {}).get("config_path"))
    setup_logging(config.daemon.log_level)
    raise_fd_limit()
    from wangpd.app import Daemon  # imported here so `wangpd check-config` and `--help` stay light

    try:
        code = asyncio.run(Daemon(config).run())
    except WangpError as exc:  # AlreadyRunning included
        click.echo(f"wangpd: {exc}", err=True)
        sys.exit(1)
    sys.exit(code)


def raise_fd_limit(want: int = 65536) -> None:
    """Lift the soft descriptor limit towards the hard one, as systemd.exec(5) asks of services that need more.

    systemd keeps the soft limit at 1024 for select()'s sake; asyncio does not use select() here, and transfers,
    the database, the watcher and the control connections all draw on the same pool.
    """
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as exc:  # a container may forbid it; the connection cap follows the soft limit
            log.warning("could not raise the open-file limit from %d to %d: %s", soft, target, exc)


@cli.command("check-config")
@click.option("--config", "config_path", metavar="PATH", help="config.yaml to check")
@click.pass_context
def check_config(ctx: click.Context, config_path: str | None) -> None:
    """Check the config file and print where things will go; exit 78 when it is bad."""
    config = _load(config_path or (ctx.obj or {}).get("config_path"))
    from wangpd.handler_table import load_handler_table

    try:  # the extra handler tables the config names are part of it: a bad one must not pass as "OK"
        table = load_handler_table(config.wan2gp.handler_files)
    except ConfigError as exc:
        click.echo(f"wangpd: {exc}", err=True)
        sys.exit(protocol.EXIT_CONFIG)
    click.echo(f"{config.path}: OK")
    click.echo(f"  Wan2GP folder : {config.wan2gp.directory}")
    click.echo(f"  queue database: {config.daemon.db_path}")
    click.echo(f"  socket        : {config.daemon.socket}")
    click.echo(f"  HF cache      : {config.hub.cache_dir} (endpoint {_without_credentials(config.hub.endpoint)})")
    from wangpd.units import format_rate

    click.echo(f"  bandwidth     : {format_rate(config.download.bandwidth)}, {config.download.concurrency} at a time")
    click.echo(
        f"  handler table : Wan2GP commit {(table.commit or 'unknown')[:12]}, {len(table.architectures)} architectures"
    )


@cli.command("plan")
@click.option("--wan2gp", "wan2gp_dir", metavar="DIR", help="Wan2GP folder (default: wan2gp_directory of the config).")
@click.option("--model", "model_globs", multiple=True, metavar="GLOB", help="Only these model types (repeatable).")
@click.option("--all-variants", is_flag=True, help="Every variant, not only the one Wan2GP would load.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable JSON output.")
@click.option("--config", "config_path", metavar="PATH", help="config.yaml (for wan2gp_directory and handler tables)")
@click.pass_context
def plan_command(
    ctx: click.Context,
    wan2gp_dir: str | None,
    model_globs: tuple[str, ...],
    all_variants: bool,
    as_json: bool,
    config_path: str | None,
) -> None:
    """Print what Wan2GP will need and what is missing, without a daemon ("what would this cost me")."""
    from wangpd.planner import run_plan_cli

    handler_files: tuple[Path, ...] = ()
    if wan2gp_dir is None:
        config = _load(config_path or (ctx.obj or {}).get("config_path"))
        folder = config.wan2gp.directory
        handler_files = config.wan2gp.handler_files
    else:
        folder = Path(wan2gp_dir)
        if not folder.is_dir():
            click.echo(f"wangpd plan: --wan2gp {wan2gp_dir}: no such folder", err=True)
            sys.exit(protocol.EXIT_USAGE)
    sys.exit(run_plan_cli(folder, model_globs, all_variants, as_json, handler_files=handler_files))


def _without_credentials(url: str) -> str:
    """``https://user:secret@mirror`` as ``https://***@mirror``: check-config's output lands in logs and issues."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit((parts.scheme, "***@" + parts.netloc.rsplit("@", 1)[1], parts.path, parts.query, parts.fragment))
