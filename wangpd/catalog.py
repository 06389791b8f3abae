"""Wan2GP catalog: read a Wan2GP folder (``wgp_config.json``, every definition) and resolve every model type.

Reading is Wan2GP's order: ``defaults/*.json``, then the enabled model plugins' folders, then ``finetunes/*.json``,
sorted by name within each folder, a later file merged key by key into the type of the same stem, each file's keys
type-checked. What files a merged definition needs is :mod:`wangpd.resolver`'s (pure) job.

A broken definition fails its own model only: :attr:`ModelDef.error` says ``"<file>: <key>: <reason>"`` and every
other model still resolves. A model that references a failed one fails too, naming it.

:class:`CatalogLoader` keeps parsed JSON by path, mtime and size, so the file watcher can re-load after a change
without re-reading the unchanged files; :func:`load_catalog` is the one-shot form.
"""

from __future__ import annotations

import fnmatch
import json
import os
import posixpath
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from wangpd.errors import DefinitionError
from wangpd.handler_table import (
    HandlerFile,
    HandlerTable,
    load_handler_table,
)
from wangpd.layout import Layout
from wangpd.models import DEFAULT_SETTINGS, ModelDef, Profile, WanSettings, WantedFile
from wangpd.paths import read_regular
from wangpd.profiles import ProfileFile, read_lsets, read_profiles, read_url_cache
from wangpd.resolver import OPTIONAL_URL_KEYS, MergedDef, Resolver, json_kind, norm

__all__ = [
    "Catalog",
    "CatalogLoader",
    "load_catalog",
    "read_wan_settings",
]

MAX_DEFINITION_BYTES = 16 << 20  # the largest definition of 2026 is 12 KB; a 16 MB one is not Wan2GP's
MAX_JSON_DEPTH = 64
_URL_LIST_KEYS = ("URLs", "URLs2", "preload_URLs", "loras", "text_encoder_URLs", "VAE_URLs")
_TEXT_KEYS = ("name", "architecture", "text_encoder_folder", "source", "source2", "module_source", "module_source2")


# ---------------------------------------------------------------------------------------------------------------
# Public data


@dataclass(frozen=True)
class Catalog:
    """Every model type of one Wan2GP folder. ``errors`` are file-level problems (e.g. a bad wgp_config.json)."""

    wan2gp_dir: Path
    settings: WanSettings
    models: dict[str, ModelDef]
    handler_commit: str | None
    errors: tuple[str, ...] = ()
    all_variants: bool = False
    optional_features: Mapping[str, tuple[WantedFile, ...]] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------------------------
# Settings


def read_wan_settings(config_dir: Path) -> tuple[WanSettings, list[str]]:
    """Read ``<config_dir>/wgp_config.json`` (the Wan2GP folder, or the folder Wan2GP's ``--config DIR`` names).
    Returns the settings and the problems found.

    A missing file gives Wan2GP's defaults silently; a malformed file or key gives the defaults for what could not
    be read, and a message naming the file (and key).
    """
    path = Path(config_dir) / "wgp_config.json"
    try:
        text = read_regular(path, MAX_DEFINITION_BYTES)[0].decode("utf-8")
    except FileNotFoundError:
        return DEFAULT_SETTINGS, []
    except (OSError, UnicodeDecodeError) as exc:
        return DEFAULT_SETTINGS, [f"{path}: cannot read ({exc}); using Wan2GP's default settings"]
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        return DEFAULT_SETTINGS, [f"{path}:{exc.lineno}:{exc.colno}: invalid JSON: {exc.msg}; using Wan2GP's defaults"]
    if not isinstance(data, dict):
        return DEFAULT_SETTINGS, [f"{path}: expected a JSON object; using Wan2GP's default settings"]
    problems: list[str] = []
    values: dict[str, Any] = {}
    for key in ("transformer_quantization", "transformer_dtype_policy", "text_encoder_quantization", "loras_root"):
        if key not in data:
            continue
        if isinstance(data[key], str):
            values[key] = data[key]
        else:
            problems.append(f"{path}: {key}: expected a string, got {data[key]!r}; using the default")
    if "checkpoints_paths" in data:
        roots = data["checkpoints_paths"]
        if isinstance(roots, str):
            roots = [roots]
        if isinstance(roots, list) and roots and all(isinstance(r, str) and r.strip() for r in roots):
            values["checkpoints_paths"] = tuple(norm(r.strip().replace("\\", "/")) for r in roots)
        else:
            problems.append(f"{path}: checkpoints_paths: expected a list of folder names; using ckpts, .")
    if "enabled_plugins" in data:
        plugins = data["enabled_plugins"]
        if isinstance(plugins, list) and all(isinstance(p, str) for p in plugins):
            values["enabled_plugins"] = tuple(dict.fromkeys(p.strip() for p in plugins if p.strip()))
        else:
            problems.append(f"{path}: enabled_plugins: expected a list of plugin ids; reading no plugin's models")
    if values.get("loras_root", "x").strip() == "":
        del values["loras_root"]
    return WanSettings(**values, raw=MappingProxyType(dict(data))), problems


# ---------------------------------------------------------------------------------------------------------------
# Reading definitions


@dataclass
class _Source:
    """One parsed JSON file, kept while its mtime and size do not change."""

    stamp: tuple[int, int]
    model: dict[str, Any] | None
    error: str | None


def _read_definition(path: Path) -> _Source:
    try:
        raw, stat = read_regular(path, MAX_DEFINITION_BYTES)
        text = raw.decode("utf-8")
    except OSError as exc:
        return _Source((0, 0), None, f"{path}: cannot read: {exc.strerror or exc}")
    except UnicodeDecodeError as exc:
        return _Source((stat.st_mtime_ns, stat.st_size), None, f"{path}: not UTF-8 text (byte {exc.start})")
    stamp = (stat.st_mtime_ns, stat.st_size)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        return _Source(stamp, None, f"{path}:{exc.lineno}:{exc.colno}: invalid JSON: {exc.msg}")
    except RecursionError:
        return _Source(stamp, None, f"{path}: invalid JSON: nested too deeply")
    if _depth(data) > MAX_JSON_DEPTH:
        # Wan2GP's definitions are a few levels deep; a deeper one would exhaust the resolver's recursion.
        return _Source(stamp, None, f"{path}: nested more than {MAX_JSON_DEPTH} levels deep")
    if not isinstance(data, dict):
        return _Source(stamp, None, f"{path}: top level must be a JSON object, got {json_kind(data)}")
    if "model" not in data:
        return _Source(stamp, None, f'{path}: "model" is missing (every definition keeps its files under "model")')
    model = data["model"]
    if not isinstance(model, dict):
        return _Source(stamp, None, f'{path}: "model" must be an object, got {json_kind(model)}')
    problem = _check_types(model)
    if problem:
        return _Source(stamp, None, f"{path}: {problem}")
    return _Source(stamp, model, None)


def _depth(value: Any) -> int:
    """How deeply lists and objects nest in a parsed JSON value (iterative: never recurses itself)."""
    deepest, todo = 0, [(value, 1)]
    while todo:
        item, level = todo.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, level)
            if level <= MAX_JSON_DEPTH:
                todo.extend((child, level + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def _check_types(model: Mapping[str, Any]) -> str | None:
    """The first wrongly typed file key of one JSON ``model`` object, as ``"<key>: <problem>"``."""
    for key in _TEXT_KEYS:
        if key in model and not isinstance(model[key], str):
            return f"{key}: expected a string, got {json_kind(model[key])}"
    if "architecture" in model and not model["architecture"].strip():
        return "architecture: empty"
    for key in _URL_LIST_KEYS:
        value = model.get(key)
        if value is None or isinstance(value, str):
            continue
        if not isinstance(value, list):
            return f"{key}: expected a list of URLs or a model type name, got {json_kind(value)}"
        for index, item in enumerate(value):
            if not isinstance(item, str):
                return f"{key}[{index}]: expected a URL string, got {json_kind(item)}"
    for key in OPTIONAL_URL_KEYS:
        if key in model and model[key] is not None and not isinstance(model[key], str):
            return f"{key}: expected a URL string, got {json_kind(model[key])}"
    modules = model.get("modules")
    if modules is not None and not isinstance(modules, str):
        if not isinstance(modules, list):
            return f"modules: expected a list of modules or a model type name, got {json_kind(modules)}"
        for index, module in enumerate(modules):
            problem = _check_module(module, f"modules[{index}]")
            if problem:
                return problem
    return None


def _check_module(module: Any, where: str) -> str | None:
    if isinstance(module, str):
        return None
    if isinstance(module, list):
        for index, item in enumerate(module):
            if not isinstance(item, str):
                return f"{where}[{index}]: expected a URL string, got {json_kind(item)}"
        return None
    if isinstance(module, dict):
        unknown = set(module) - {"URLs", "URLs2"}
        if unknown:
            return f"{where}: unknown key {sorted(unknown)[0]!r} (a module object has URLs and URLs2)"
        for sub, value in module.items():
            problem = _check_module(value, f"{where}.{sub}")
            if problem:
                return problem
        return None
    return f"{where}: expected a list of URL variants, a model type name or an object, got {json_kind(module)}"


# ---------------------------------------------------------------------------------------------------------------
# Loading


class CatalogLoader:
    """Loads a Wan2GP folder's catalog; keeps parsed definitions so a reload re-reads only what changed.

    Call :meth:`load` after each watcher batch, passing the changed paths: those are always re-read (an edit within
    the file system's mtime granularity keeps size and mtime), the others only when their mtime or size changed.
    """

    def __init__(
        self,
        wan2gp_dir: Path,
        *,
        handler_files: Sequence[Path] = (),
        all_variants: bool = False,
        config_dir: Path | None = None,
        include_profiles: Sequence[str] = (),
    ) -> None:
        """``include_profiles``: globs of profile names (``wan_2_2/Lightning*``) whose LoRAs are part of their
        models' files, as if the user had picked them."""
        self.wan2gp_dir = Path(wan2gp_dir)
        self.config_dir = Path(config_dir) if config_dir is not None else self.wan2gp_dir
        self.handler_files = tuple(Path(p) for p in handler_files)
        self.all_variants = all_variants
        self.include_profiles = tuple(include_profiles)
        self._sources: dict[Path, _Source] = {}

    def _definition_paths(self, settings: WanSettings, errors: list[str]) -> list[tuple[Path, str | None]]:
        """Every definition file with the plugin that brings it, in Wan2GP's order: folder by folder
        (:meth:`Layout.definition_sources`), sorted by name within each."""
        folders, problems = Layout(self.wan2gp_dir, settings).definition_sources()
        errors.extend(problems)
        paths: list[tuple[Path, str | None]] = []
        for folder in folders:
            directory = folder.path
            try:
                with os.scandir(directory) as entries:
                    names = sorted(e.name for e in entries if e.name.endswith(".json") and not e.name.startswith("."))
            except FileNotFoundError:
                if directory == self.wan2gp_dir / "defaults":
                    errors.append(f"{directory}: folder not found (is {self.wan2gp_dir} Wan2GP's folder?)")
                elif folder.plugin is not None:
                    errors.append(f"{directory}: the definitions folder of plugin {folder.plugin!r} is missing")
                continue
            except OSError as exc:
                errors.append(f"{directory}: cannot list: {exc.strerror or exc}")
                continue
            paths.extend((directory / name, folder.plugin) for name in names)
        return paths

    def _source(self, path: Path, force: bool) -> _Source:
        cached = self._sources.get(path)
        if cached is not None and not force:
            try:
                stat = path.stat()
            except OSError:
                stat = None
            if stat is not None and (stat.st_mtime_ns, stat.st_size) == cached.stamp:
                return cached
        source = _read_definition(path)
        self._sources[path] = source
        return source

    def load(self, changed: Iterable[Path] = ()) -> Catalog:
        """Read and resolve every model type. Raises ConfigError only for a bad handler table."""
        table = load_handler_table(self.handler_files)
        settings, problems = read_wan_settings(self.config_dir)
        errors = list(problems)
        forced = {Path(p) for p in changed}
        paths = self._definition_paths(settings, errors)
        live = {path for path, _plugin in paths}
        for stale in [p for p in self._sources if p not in live]:
            del self._sources[stale]

        defs: dict[str, MergedDef] = {}
        for path, plugin in paths:
            source = self._source(path, path in forced)
            model_type = path.stem
            existing = defs.get(model_type)
            if existing is None:
                d = MergedDef(model_type, [path], {}, {}, plugin=plugin)
                arch = table.architectures.get(source.model.get("architecture")) if source.model else None
                if arch is not None and arch.preload:
                    # The handler's query_model_def defaults, under the JSON (which replaces them).
                    d.model["preload_URLs"] = [_handler_url(table, f) for f in arch.preload]
                defs[model_type] = d
            else:
                existing.paths.append(path)
                d = existing
            if d.error is not None:
                continue
            if source.error is not None:
                d.error = source.error
                continue
            assert source.model is not None
            d.model.update(source.model)
            d.key_source.update(dict.fromkeys(source.model, path))

        resolver = Resolver(defs, table, settings, self.all_variants)
        models = {model_type: resolver.resolve(defs[model_type]) for model_type in sorted(defs)}
        profiles, problems = read_profiles(self.wan2gp_dir, [d for dirs in table.profiles.values() for d in dirs])
        errors.extend(problems)
        # Wan2GP writes its LoRA URL cache in the folder it runs in: its own, not a --config folder.
        used, problems = read_url_cache(self.wan2gp_dir)
        errors.extend(problems)
        lora_folders = sorted({posixpath.join(settings.loras_root, m.lora_dir) for m in models.values() if m.lora_dir})
        lsets, problems = read_lsets(self.wan2gp_dir, lora_folders)
        errors.extend(problems)
        extras = _Extras(resolver, table, settings, profiles, used, self.include_profiles, lsets)
        models = {t: extras.add(defs[t], model) for t, model in models.items()}
        features = {
            feature.feature: tuple(
                replace(resolver.from_handler(item, role="optional", lora_dir=""), optional=True)
                for item in feature.files
            )
            for feature in table.optional_features
        }
        return Catalog(
            wan2gp_dir=self.wan2gp_dir,
            settings=settings,
            models=models,
            handler_commit=table.commit,
            errors=tuple(errors),
            all_variants=self.all_variants,
            optional_features=features,
        )


class _Extras:
    """Adds to resolved models what Wan2GP fetches at generation rather than at load: the LoRAs of their
    accelerator profiles (listed; wanted when picked or included) and the LoRAs its URL cache says were picked."""

    def __init__(
        self,
        resolver: Resolver,
        table: HandlerTable,
        settings: WanSettings,
        profiles: Mapping[str, list[ProfileFile]],
        used: Mapping[str, Mapping[str, str]],
        include: Sequence[str],
        lsets: Mapping[str, list[ProfileFile]] | None = None,
    ) -> None:
        self.resolver, self.table, self.settings = resolver, table, settings
        self.profiles, self.used, self.include = profiles, used, include
        self.lsets = lsets or {}

    def _lora(self, d: MergedDef, key: str, url: str, relative: str | None, role: str, lora_dir: str) -> WantedFile:
        folder = posixpath.dirname(relative) if relative else ""
        raw = f"{url}|{folder}" if folder else url
        return self.resolver.from_url(d, key, raw, role=role, lora_dir=lora_dir, lora=True)

    def add(self, d: MergedDef, model: ModelDef) -> ModelDef:
        unlisted = self.table.unlisted.get(model.architecture or "")
        if model.error is not None:
            return replace(model, unlisted=unlisted)
        folder = posixpath.join(self.settings.loras_root, model.lora_dir).removeprefix("./")
        picked = self.used.get(folder, {})
        picked_urls = set(picked.values())
        warnings = list(model.warnings)
        extra: list[WantedFile] = []
        profiles = []
        presets = [p for d in self.table.profiles.get(model.architecture or "", ()) for p in self.profiles.get(d, ())]
        presets += self.lsets.get(posixpath.join(self.settings.loras_root, model.lora_dir), [])  # the user's .lset
        for profile in presets:
            files = []
            for url in profile.urls:
                try:
                    files.append(self._lora(d, str(profile.path), url, None, "profile_lora", model.lora_dir))
                except DefinitionError as exc:
                    warnings.append(f"profile {profile.name}: {exc}")
            used = bool(files) and all(f.url in picked_urls for f in files)
            stem = profile.name.split("/", 1)[1]
            included = any(fnmatch.fnmatchcase(n, g) for g in self.include for n in (profile.name, stem))
            profiles.append(Profile(profile.name, tuple(files), used=used, included=included))
            if included:
                extra.extend(files)
        for relative, url in sorted(picked.items()):
            try:
                wanted = self._lora(d, "loras_url_cache_v2.json", url, relative, "used_lora", model.lora_dir)
            except DefinitionError:
                continue  # a URL Wan2GP cannot fetch either
            if wanted.repo is not None:  # other hosts: Wan2GP fetches those itself (hub.allowed_hosts is per job)
                extra.append(wanted)
        have = {f.local for f in model.files}
        added = tuple(f for f in dict((f.local, f) for f in extra).values() if f.local not in have)
        return replace(
            model, files=model.files + added, profiles=tuple(profiles), unlisted=unlisted, warnings=tuple(warnings)
        )


def _handler_url(table: HandlerTable, item: HandlerFile) -> str:
    folder = posixpath.dirname(item.local)
    url = item.url(table.hub)
    return f"{url}|{folder}" if folder and posixpath.basename(item.local) == posixpath.basename(item.path) else url


def load_catalog(wan2gp_dir: Path, *, handler_files: Sequence[Path] = (), all_variants: bool = False) -> Catalog:
    """Read a Wan2GP folder's definitions, ``wgp_config.json`` and the handler table(s), and resolve every model.

    ``all_variants=True`` puts every variant into ``files`` instead of the one Wan2GP would pick.
    Raises ConfigError for a bad handler table; definition problems are reported per model, settings problems in
    :attr:`Catalog.errors`.
    """
    return CatalogLoader(wan2gp_dir, handler_files=handler_files, all_variants=all_variants).load()
