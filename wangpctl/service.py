"""``wangpctl service install``: the units from ``systemd/`` with this installation's paths.

The shipped units name ``/usr/local/bin/wangpd`` (system) and ``%h/.local/bin/wangpd`` (user); a venv or pipx
install puts the scripts elsewhere, and a unit pointing at a missing binary fails with 203/EXEC. This rewrites
``ExecStart=``/``ExecReload=`` to the scripts beside the running interpreter (the same installation as this
wangpctl), adds ``--config`` when one is given, and for the system unit points ``ReadWritePaths=`` at the config's
Wan2GP folder. Every other line is written as shipped, so the sandbox stays the tested one.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["InstallPlan", "UnitFile", "apply", "plan_install", "units_dir"]

# (file in systemd/, destination folder) per scope.
SYSTEM_FILES = (
    ("wangpd.service", "etc/systemd/system"),
    ("wangpd.socket", "etc/systemd/system"),
    ("sysusers.d/wangpd.conf", "etc/sysusers.d"),
    ("tmpfiles.d/wangpd.conf", "etc/tmpfiles.d"),
)
USER_FILES = (("user/wangpd.service", None), ("user/wangpd.socket", None))
HEADER = "# Written by `wangpctl service install` ({scope}): Exec*= point at {bindir}. Re-run it after moving wangpd.\n"


@dataclass
class UnitFile:
    source: Path
    destination: Path
    content: str
    action: str  # new / replace / unchanged
    changed_lines: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": str(self.source),
            "path": str(self.destination),
            "action": self.action,
            "changed_lines": self.changed_lines,
            "content": self.content,
        }


@dataclass
class InstallPlan:
    scope: str
    wangpd: Path
    wangpctl: Path
    config: Path | None
    files: list[UnitFile]
    commands: list[str]
    warnings: list[str]

    def to_dict(self, dry_run: bool) -> dict[str, Any]:
        return {
            "scope": self.scope,
            "dry_run": dry_run,
            "wangpd": str(self.wangpd),
            "wangpctl": str(self.wangpctl),
            "config": str(self.config) if self.config else None,
            "files": [unit.to_dict() for unit in self.files],
            "commands": self.commands,
            "warnings": self.warnings,
        }


def units_dir() -> Path:
    """Where the unit templates are: shipped inside the package, else the source checkout's systemd/."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "systemd", here.parent / "systemd"):
        if (candidate / "wangpd.service").is_file():
            return candidate
    raise FileNotFoundError(f"the unit files were not found in {here / 'systemd'} or {here.parent / 'systemd'}")


def _script(name: str) -> Path:
    """The console script of this installation: beside sys.executable (a venv's bin/, not its resolved target),
    else on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside.absolute()
    found = shutil.which(name)
    if found:
        return Path(found).absolute()
    raise FileNotFoundError(f"no `{name}` script next to {sys.executable} or on PATH; install wangpd first")


def _quote(path: Path) -> str:
    # systemd splits Exec lines like a shell and accepts double quotes; plain paths stay unquoted (as shipped).
    text = str(path)
    return text if re.fullmatch(r"[\w@%+=:,./-]+", text) else '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _wan2gp_directory(config: Path) -> Path | None:
    """The top-level ``wan2gp_directory`` of a config file, read without a YAML parser (wangpctl stays light):
    only the plain ``key: value`` form; anything fancier leaves the shipped ReadWritePaths= alone."""
    try:
        text = config.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    match = re.search(r"^wan2gp_directory:[ \t]*(?P<value>[^#\n]+)", text, re.MULTILINE)
    if not match:
        return None
    value = match["value"].strip().strip("'\"")
    if not value:
        return None
    path = Path(os.path.expanduser(value))
    return path if path.is_absolute() else (config.parent / path).absolute()


def _rewrite(
    text: str, wangpd: Path, wangpctl: Path, config: Path | None, wan2gp: Path | None
) -> tuple[str, list[str]]:
    lines = text.splitlines(keepends=True)
    changed: list[str] = []
    for index, line in enumerate(lines):
        new = None
        if line.startswith("ExecStart="):
            new = f"ExecStart={_quote(wangpd)} run" + (f" --config {_quote(config)}" if config else "")
        elif line.startswith("ExecReload="):
            new = f"ExecReload={_quote(wangpctl)} reload"
        elif line.startswith("ReadWritePaths=-/srv/wan2gp") and wan2gp is not None:
            new = f"ReadWritePaths=-{_quote(wan2gp)}"
        if new is not None:
            lines[index] = new + "\n"
            changed.append(new)
    return "".join(lines), changed


def _under_home(path: Path) -> bool:
    return path.is_relative_to("/home") or path.is_relative_to("/root")


def plan_install(scope: str, config: Path | None, root: Path | None = None) -> InstallPlan:
    """What ``service install`` would write. ``root``: a prefix for every destination (tests, packaging)."""
    source_dir = units_dir()
    wangpd, wangpctl = _script("wangpd"), _script("wangpctl")
    config = config.absolute() if config else None
    warnings: list[str] = []
    prefix = root if root is not None else Path("/")
    if scope == "system":
        targets = [(source_dir / name, prefix / folder / Path(name).name) for name, folder in SYSTEM_FILES]
        wan2gp = _wan2gp_directory(config) if config else None
        for what, path in (("wangpd", wangpd), ("the config", config)):
            if path is not None and _under_home(path):
                warnings.append(
                    f"{what} is at {path}, under a home folder the system service cannot see (ProtectHome=yes): "
                    "install wangpd under /opt (docs/systemd.md, step 1) and keep the config in /etc/wangpd"
                )
        if config is None and not (prefix / "etc/wangpd/config.yaml").is_file():
            warnings.append(
                "no /etc/wangpd/config.yaml yet: copy the repository's config.yaml there and set wan2gp_directory"
            )
        if config is not None and wan2gp is None:
            warnings.append(f"could not read wan2gp_directory from {config}; ReadWritePaths= stays /srv/wan2gp")
    else:
        config_home = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
        unit_dir = prefix / config_home.relative_to("/") / "systemd" / "user"
        targets = [(source_dir / name, unit_dir / Path(name).name) for name, _ in USER_FILES]
        wan2gp = None
        if config is None and not (prefix / config_home.relative_to("/") / "wangpd" / "config.yaml").is_file():
            warnings.append(f"no {config_home / 'wangpd' / 'config.yaml'} yet: copy config.yaml there (or --config)")
    if config is not None and not (prefix / config.relative_to("/")).is_file() and not config.is_file():
        warnings.append(f"{config} does not exist yet: the service will exit 78 until it does")

    files = []
    for source, destination in targets:
        text = source.read_text(encoding="utf-8")
        if source.suffix in (".service", ".socket"):
            text, changed = _rewrite(text, wangpd, wangpctl, config, wan2gp)
            text = HEADER.format(scope=scope, bindir=wangpd.parent) + text
        else:
            changed = []
        if not destination.exists():
            action = "new"
        elif destination.read_text(encoding="utf-8", errors="replace") == text:
            action = "unchanged"
        else:
            action = "replace"
        files.append(UnitFile(source, destination, text, action, changed))

    sudo = "" if os.geteuid() == 0 else "sudo "
    if scope == "system":
        commands = [
            f"{sudo}systemd-sysusers",
            f"{sudo}systemd-tmpfiles --create wangpd.conf",
            f"{sudo}systemctl daemon-reload",
            f"{sudo}systemctl enable --now wangpd.socket wangpd.service",
            "systemctl status wangpd",
        ]
        invoker = os.environ.get("SUDO_USER")
        if invoker:
            commands.insert(2, f"{sudo}usermod -aG wangpd {invoker}  # so that {invoker} may use wangpctl")
    else:
        try:
            user = pwd.getpwuid(os.getuid()).pw_name
        except KeyError:
            user = "$USER"
        commands = [
            "systemctl --user daemon-reload",
            "systemctl --user enable --now wangpd.socket wangpd.service",
            f"loginctl enable-linger {user}  # keep it running without a login session, and start it at boot",
            "systemctl --user status wangpd",
        ]
    return InstallPlan(scope, wangpd, wangpctl, config, files, commands, warnings)


def apply(plan: InstallPlan) -> None:
    """Write the files (atomically: a half-written unit must never be what systemd reads)."""
    for unit in plan.files:
        if unit.action == "unchanged":
            continue
        unit.destination.parent.mkdir(parents=True, exist_ok=True)
        temporary = unit.destination.with_name(f".{unit.destination.name}.wangpctl-tmp")
        temporary.write_text(unit.content, encoding="utf-8")
        temporary.chmod(0o644)
        os.replace(temporary, unit.destination)
