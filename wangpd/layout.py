"""Which folders of a Wan2GP tree wangpd reads, watches and may write into, from its ``wgp_config.json`` settings.

One answer for the watcher (what to watch), the catalog (where definitions are), the linker (where links may go),
``queue.add`` (where a client-named target may go) and ``doctor``. The defaults are Wan2GP's own
(``models.DEFAULT_SETTINGS``), written once.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from wangpd.errors import InvalidParams
from wangpd.models import DEFAULT_SETTINGS, WanSettings
from wangpd.paths import read_regular, safe_relative

__all__ = ["DEFINITION_DIRS", "PLUGINS_DIR", "DefinitionDir", "Layout", "WatchTargets"]

# Where Wan2GP reads model definitions, in its order: defaults/ first, then the user's own finetunes/.
DEFINITION_DIRS = ("defaults", "finetunes")
# Wan2GP's plugin folders (plugins/<id>/plugin_info.json); an enabled model plugin names its own definitions folder.
PLUGINS_DIR = "plugins"
_MAX_PLUGIN_INFO_BYTES = 1 << 20


@dataclass(frozen=True)
class DefinitionDir:
    """One folder of definitions, in reading order; ``plugin`` is the id of the model plugin that brings it."""

    path: Path
    plugin: str | None = None


@dataclass(frozen=True)
class WatchTargets:
    """``recursive``: folders watched with their subfolders (defaults/, finetunes/, ckpts/, loras/);
    ``shallow``: folders watched without subfolders (the Wan2GP folder itself, for wgp_config.json and for
    defaults/ or finetunes/ appearing)."""

    recursive: tuple[Path, ...]
    shallow: tuple[Path, ...]


@dataclass(frozen=True)
class Layout:
    """One Wan2GP folder as its settings lay it out (Wan2GP's defaults until ``wgp_config.json`` has been read)."""

    root: Path
    settings: WanSettings = field(default=DEFAULT_SETTINGS)
    config_dir: Path | None = None  # Wan2GP's --config DIR, when it keeps wgp_config.json and queue.zip elsewhere

    def checkpoints_root(self) -> str:
        """Where Wan2GP downloads a file by default (the first checkpoints path), relative to the root."""
        return self.settings.checkpoints_paths[0]

    def definition_dirs(self) -> tuple[Path, ...]:
        return tuple(self.root / name for name in DEFINITION_DIRS)

    def definition_sources(self) -> tuple[list[DefinitionDir], list[str]]:
        """Every definition folder in Wan2GP's reading order: ``defaults/``, the enabled model plugins' folders (in
        ``enabled_plugins`` order), then ``finetunes/``, so a user's finetune still has the last word. Returns the
        folders and the problems found (a bad ``plugin_info.json`` skips that plugin only, naming the file)."""
        folders = [DefinitionDir(self.root / DEFINITION_DIRS[0])]
        problems: list[str] = []
        for plugin_id in self.settings.enabled_plugins:
            if not safe_relative(plugin_id) or "/" in plugin_id:
                problems.append(f"wgp_config.json: enabled_plugins: {plugin_id!r} is not a plugin folder name")
                continue
            folder = self.root / PLUGINS_DIR / plugin_id
            info_path = folder / "plugin_info.json"
            try:
                info = json.loads(read_regular(info_path, _MAX_PLUGIN_INFO_BYTES)[0].decode("utf-8"))
            except FileNotFoundError:
                continue  # enabled but not installed (or not a folder plugin): Wan2GP loads nothing from it either
            except (OSError, ValueError) as exc:
                problems.append(f"{info_path}: cannot read ({exc}); its models are not listed")
                continue
            defaults = info.get("defaults") if isinstance(info, dict) else None
            if defaults is None:
                continue  # a UI plugin, not a model plugin
            if not isinstance(defaults, str) or not safe_relative(defaults):
                problems.append(f"{info_path}: defaults: expected a folder inside the plugin, got {defaults!r}")
                continue
            real, plugin_root = Path(os.path.realpath(folder / defaults)), Path(os.path.realpath(folder))
            if real != plugin_root and plugin_root not in real.parents:
                problems.append(f"{info_path}: defaults: {defaults!r} leads out of the plugin folder")
                continue
            folders.append(DefinitionDir(folder / defaults, plugin_id))
        folders.append(DefinitionDir(self.root / DEFINITION_DIRS[1]))
        return folders, problems

    def is_definition(self, path: Path) -> bool:
        """A model definition file Wan2GP may read (``defaults/*.json``, ``finetunes/*.json``, a JSON file in a
        plugin's folder): the catalog re-reads it even when its size and mtime look unchanged."""
        if path.suffix != ".json":
            return False
        if path.parent.name in DEFINITION_DIRS:
            return True
        return (self.root / PLUGINS_DIR) in path.parents

    def is_definition_dir(self, path: Path) -> bool:
        """A folder whose coming or going changes what is watched (plugins/ is watched whole, so what appears
        inside it is seen without a restart)."""
        return path.parent == self.root and path.name in (*DEFINITION_DIRS, PLUGINS_DIR)

    def content_roots(self) -> list[Path]:
        """The checkpoints and LoRA folders as they really are: a ckpts/ that is a symlink to another disk is a
        place Wan2GP uses, so files may be linked there (a symlink deeper inside still may not lead out)."""
        names = [*self.settings.checkpoints_paths, self.settings.loras_root]
        return list(dict.fromkeys(Path(os.path.realpath(self.root / n)) for n in names if (self.root / n).is_dir()))

    def link_roots(self) -> list[Path]:
        """Every folder a link may be created under: the Wan2GP folder and its content roots."""
        return [self.root, *self.content_roots()]

    def watch_targets(self) -> WatchTargets:
        """Definitions and content folders recursively; the root itself shallowly (``.`` as a checkpoints root is
        the whole Wan2GP folder with its venv and outputs: never watched recursively)."""
        root = self.root
        # plugins/ as a whole: a plugin enabled later, or its plugin_info.json edited, changes the definitions.
        # profiles/: a Wan2GP update that adds an accelerator profile changes what models show (and may include).
        recursive = [*self.definition_dirs(), root / PLUGINS_DIR, root / "profiles", root / self.settings.loras_root]
        recursive += [root / r for r in self.settings.checkpoints_paths if (root / r).resolve() != root.resolve()]
        shallow = (root,) if self.config_dir is None else tuple(dict.fromkeys((root, self.config_dir)))
        return WatchTargets(recursive=tuple(dict.fromkeys(recursive)), shallow=shallow)

    def resolve_target(self, relative: str) -> Path:
        """An absolute path inside the Wan2GP folder for a client-given relative target. Raises InvalidParams for
        an absolute path or one that leaves the folder (also through a symlink)."""
        if not relative or os.path.isabs(relative) or "\\" in relative or "\0" in relative:
            raise InvalidParams(f"target {relative!r} must be a path relative to the Wan2GP folder, e.g. ckpts/x")
        root = self.root.resolve()
        given = root / relative
        if given.name in ("", ".", ".."):
            raise InvalidParams(f"target {relative!r} names no file")
        # The folder is resolved, not the file: the file may already be wangpd's link into the HF cache (a file
        # added again, or after `clear complete`), which resolves outside the Wan2GP folder by design.
        candidate = given.parent.resolve() / given.name
        if not any(r == candidate.parent or r in candidate.parents for r in (root, *self.content_roots())):
            raise InvalidParams(f"target {relative!r} is outside the Wan2GP folder {root}")
        return candidate
