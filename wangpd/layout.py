"""Which folders of a Wan2GP tree wangpd reads, watches and may write into, from its ``wgp_config.json`` settings.

One answer for the watcher (what to watch), the catalog (where definitions are), the linker (where links may go),
``queue.add`` (where a client-named target may go) and ``doctor``. The defaults are Wan2GP's own
(``models.DEFAULT_SETTINGS``), written once.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from wangpd.errors import InvalidParams
from wangpd.models import DEFAULT_SETTINGS, WanSettings

__all__ = ["DEFINITION_DIRS", "Layout", "WatchTargets"]

# Where Wan2GP reads model definitions, in its order: defaults/ first, then the user's own finetunes/.
DEFINITION_DIRS = ("defaults", "finetunes")


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

    def is_definition(self, path: Path) -> bool:
        """A model definition file Wan2GP reads (``defaults/*.json``, ``finetunes/*.json``)."""
        return path.suffix == ".json" and path.parent.name in DEFINITION_DIRS

    def is_definition_dir(self, path: Path) -> bool:
        return path.parent == self.root and path.name in DEFINITION_DIRS

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
        recursive = [*self.definition_dirs(), root / self.settings.loras_root]
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
