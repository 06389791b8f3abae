"""Wan2GP handler files: what Wan2GP's *Python* adds when a model loads, read from a data table.

No JSON model definition lists these files (core preprocessors, default text encoders, VAEs, tokenizers), so they
come from ``wangpd/data/wan2gp-handler-files.yaml`` (its header documents the schema), read from one Wan2GP commit.
A newer Wan2GP needs a newer table: that is data, never code. The table is parsed once with :func:`load_yaml` and
checked at load; every problem raises :class:`ConfigError` naming the file and the entry.

Extra tables (config ``wan2gp.handler_files``) are applied in order on top of the shipped one. An extra table is a
partial table with the same keys, merged like this:

=====================  =====================================================================================
``wan2gp_commit``      replaces the commit shown by ``wangpctl doctor`` (say which Wan2GP the extra matches)
``hub``                replaces the download host of table files
``core.files``         appended (the first writer of a local path still wins)
``core.settings.<k>``  replaces that setting's choices
``text_encoders.<id>`` added, or replaces the encoder of that id
``architectures.<a>``  added, or replaces the whole entry of that architecture (give every key it needs)
``shared_local_paths`` appended
``optional_features``  a feature with the same ``feature`` name is replaced, others appended
``deprecated``         appended (names are never planned)
``renames``            merged by old name (Wan2GP renames the old file at its start: the old name counts as the new)
``profiles``           merged by architecture: the ``profiles/<dir>`` folders of its accelerator profiles
``unlisted``           merged by architecture: why its model code fetches files no table lists (said per model)
=====================  =====================================================================================
"""

from __future__ import annotations

import os
import posixpath
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wangpd.config import load_yaml
from wangpd.errors import ConfigError
from wangpd.paths import safe_relative, safe_repo_path

__all__ = [
    "Architecture",
    "Condition",
    "CoreSetting",
    "HandlerFile",
    "HandlerTable",
    "OnDemandFile",
    "OptionalFeature",
    "TextEncoder",
    "condition_holds",
    "default_table_path",
    "handler_files_for",
    "load_handler_table",
]

LORA_DIR_PREFIX = "%lora_dir/"
_REPO_RE = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_WHEN_KEYS = {
    "key",
    "present",
    "truthy",
    "equals",
    "not_in",
    "url0_contains",
    "urls_variant",
    "urls_lists_contain",
    "not",
}
_URLS_VARIANTS = ("bf16", "int8", "nvfp4")
_ANYTHING_ELSE = "<anything else>"


def default_table_path() -> Path:
    """The table shipped inside the package."""
    return Path(__file__).resolve().parent / "data" / "wan2gp-handler-files.yaml"


# ---------------------------------------------------------------------------------------------------------------
# The table, typed


@dataclass(frozen=True)
class HandlerFile:
    """One file of the table: ``{hub}/{repo}/resolve/main/{path}`` placed at ``local``.

    ``local`` is relative to the first checkpoints root, or starts with ``%lora_dir/`` for the family's LoRA folder.
    ``whole_folder``: a repo folder fetched as a whole (``path`` and ``local`` name folders).
    """

    repo: str
    path: str
    local: str
    whole_folder: bool = False

    def url(self, hub: str) -> str:
        return f"{hub}/{self.repo}/resolve/main/{self.path}"


@dataclass(frozen=True)
class Templated:
    key: str
    default: str | None
    repo: str
    paths: tuple[str, ...]


@dataclass(frozen=True)
class Condition:
    """Applied to an architecture's files when ``when`` holds on the model's merged ``model`` object."""

    when: Mapping[str, Any]
    remove: tuple[str, ...] = ()
    add: tuple[HandlerFile, ...] = ()
    add_templated: Templated | None = None
    set_text_encoder: str | None = None


@dataclass(frozen=True)
class OnDemandFile:
    """Fetched at generation time when a feature is used; the model's ``key`` value (a URL) overrides the file."""

    key: str
    file: HandlerFile
    when: str


@dataclass(frozen=True)
class TextEncoder:
    id: str
    folder: str
    variants: tuple[HandlerFile, ...]  # choose one with the variant rule on basename(path)


@dataclass(frozen=True)
class CoreSetting:
    """A ``wgp_config.json`` key that swaps core files."""

    key: str
    default: str
    unknown_value: str | None
    aliases: Mapping[str, tuple[str, ...]]
    choices: Mapping[str, tuple[HandlerFile, ...]]

    def choose(self, value: Any) -> str:
        """The choice Wan2GP makes for ``value`` (``None`` = key absent)."""
        text = self.default if value is None else str(value)
        fallback = None
        for choice, names in self.aliases.items():
            if text in names:
                return choice
            if _ANYTHING_ELSE in names:
                fallback = choice
        if text in self.choices:
            return text
        if fallback is not None:
            return fallback
        return self.unknown_value if self.unknown_value in self.choices else self.default


@dataclass(frozen=True)
class Architecture:
    name: str
    family: str
    lora_dir: str
    text_encoder: str | None
    text_encoder_folder: str | None
    dtype: str | None
    files: tuple[HandlerFile, ...]
    conditions: tuple[Condition, ...] = ()
    preload: tuple[HandlerFile, ...] = ()
    preload_to_lora_dir: frozenset[str] = frozenset()
    on_demand: tuple[OnDemandFile, ...] = ()
    system_configs: tuple[Mapping[str, Any], ...] = ()  # generation-time choices: not applied to the default plan


@dataclass(frozen=True)
class OptionalFeature:
    feature: str
    when: str
    files: tuple[HandlerFile, ...]


@dataclass(frozen=True)
class HandlerTable:
    """The merged, checked table. ``sources`` lists the files it was read from, shipped one first."""

    commit: str | None
    hub: str
    sources: tuple[Path, ...]
    core_files: tuple[HandlerFile, ...]
    core_settings: Mapping[str, CoreSetting]
    text_encoders: Mapping[str, TextEncoder]
    architectures: Mapping[str, Architecture]
    shared_local_paths: tuple[Mapping[str, Any], ...]
    optional_features: tuple[OptionalFeature, ...]
    deprecated: frozenset[str]
    # old file name -> the name Wan2GP renames it to at its start (in any checkpoints root).
    renames: Mapping[str, str] = field(default_factory=dict)
    # architecture -> its handler's profiles_dir: the folders under profiles/ that hold its accelerator profiles.
    profiles: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # architecture -> why its model code downloads files by itself, beyond any list (shown in `models show`).
    unlisted: Mapping[str, str] = field(default_factory=dict)
    arch_source: Mapping[str, Path] = field(default_factory=dict, repr=False, compare=False)

    def core_files_for(self, settings: Mapping[str, Any]) -> list[HandlerFile]:
        """Core files for every model load, the setting-dependent ones chosen from ``wgp_config.json`` values."""
        files = list(self.core_files)
        for key, setting in self.core_settings.items():
            files.extend(setting.choices.get(setting.choose(settings.get(key)), ()))
        return files


# ---------------------------------------------------------------------------------------------------------------
# Checking one file


class _Checker:
    """Builds typed entries from one YAML file; every error names the file and the dotted entry."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, where: str, problem: str) -> ConfigError:
        return ConfigError(f"{self.path}: {where}: {problem}")

    def mapping(self, value: Any, where: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(where, f"expected a mapping, got {type(value).__name__}")
        return value

    def seq(self, value: Any, where: str) -> list[Any]:
        if value is None:
            return []
        if not isinstance(value, list):
            raise self.fail(where, f"expected a list, got {type(value).__name__}")
        return value

    def text(self, value: Any, where: str, *, optional: bool = False) -> str | None:
        if value is None and optional:
            return None
        if not isinstance(value, str) or not value:
            raise self.fail(where, f"expected a non-empty string, got {value!r}")
        return value

    def relative(self, value: Any, where: str, *, allow_lora: bool = False) -> str:
        text = self.text(value, where)
        assert text is not None
        rest = text[len(LORA_DIR_PREFIX) :] if allow_lora and text.startswith(LORA_DIR_PREFIX) else text
        if not safe_relative(rest.rstrip("/")):
            raise self.fail(where, f"{text!r} must be a relative path inside the folder (no '..', not absolute)")
        return text

    def file(self, value: Any, where: str, *, allow_lora: bool = True) -> HandlerFile:
        entry = self.mapping(value, where)
        unknown = set(entry) - {"repo", "path", "local", "whole_folder"}
        if unknown:
            raise self.fail(where, f"unknown key {sorted(unknown)[0]!r} (allowed: repo, path, local, whole_folder)")
        repo = self.text(entry.get("repo"), f"{where}.repo")
        assert repo is not None
        if not _REPO_RE.match(repo):
            raise self.fail(f"{where}.repo", f"expected Org/Name, got {repo!r}")
        path = self.text(entry.get("path"), f"{where}.path")
        assert path is not None
        # A whole folder is written with a trailing slash (``folder/``); the rest is a repo path like any other.
        if not safe_repo_path(path.rstrip("/") if entry.get("whole_folder") is True else path):
            raise self.fail(f"{where}.path", f"{path!r} must be a path inside the repo")
        local = self.relative(entry.get("local", path), f"{where}.local", allow_lora=allow_lora)
        whole = entry.get("whole_folder", False)
        if not isinstance(whole, bool):
            raise self.fail(f"{where}.whole_folder", f"expected true or false, got {whole!r}")
        return HandlerFile(repo=repo, path=path, local=local.rstrip("/") if whole else local, whole_folder=whole)

    def files(self, value: Any, where: str, *, allow_lora: bool = True) -> tuple[HandlerFile, ...]:
        return tuple(
            self.file(item, f"{where}[{index}]", allow_lora=allow_lora)
            for index, item in enumerate(self.seq(value, where))
        )

    def when(self, value: Any, where: str) -> dict[str, Any]:
        when = self.mapping(value, where)
        unknown = set(when) - _WHEN_KEYS
        if unknown or not when:
            raise self.fail(where, f"unknown test {sorted(unknown)[0]!r}" if unknown else "empty test")
        if "key" in when:
            self.text(when["key"], f"{where}.key")
            if not {"present", "truthy", "equals", "not_in"} & set(when):
                raise self.fail(where, "a key test needs present, truthy, equals or not_in")
        elif {"present", "truthy", "equals", "not_in"} & set(when):
            raise self.fail(where, "present/truthy/equals/not_in need a key")
        for flag in ("present", "truthy"):
            if flag in when and not isinstance(when[flag], bool):
                raise self.fail(f"{where}.{flag}", f"expected true or false, got {when[flag]!r}")
        if "not_in" in when:
            self.seq(when["not_in"], f"{where}.not_in")
        for text_key in ("url0_contains", "urls_lists_contain"):
            if text_key in when:
                self.text(when[text_key], f"{where}.{text_key}")
        if "urls_variant" in when and when["urls_variant"] not in _URLS_VARIANTS:
            raise self.fail(f"{where}.urls_variant", f"must be one of {', '.join(_URLS_VARIANTS)}")
        if "not" in when:
            self.when(when["not"], f"{where}.not")
        return when

    def condition(self, value: Any, where: str) -> Condition:
        entry = self.mapping(value, where)
        unknown = set(entry) - {"when", "remove", "add", "add_templated", "set_text_encoder", "note"}
        if unknown:
            raise self.fail(where, f"unknown key {sorted(unknown)[0]!r}")
        if "when" not in entry:
            raise self.fail(where, "'when' is required")
        templated = None
        if entry.get("add_templated") is not None:
            raw = self.mapping(entry["add_templated"], f"{where}.add_templated")
            key = self.text(raw.get("key"), f"{where}.add_templated.key")
            repo = self.text(raw.get("repo"), f"{where}.add_templated.repo")
            paths = self.seq(raw.get("paths"), f"{where}.add_templated.paths")
            if not paths or not all(isinstance(p, str) and "{value}" in p for p in paths):
                raise self.fail(f"{where}.add_templated.paths", "expected a list of paths containing {value}")
            assert key is not None and repo is not None
            templated = Templated(
                key=key,
                default=self.text(raw.get("default"), f"{where}.add_templated.default", optional=True),
                repo=repo,
                paths=tuple(paths),
            )
        return Condition(
            when=self.when(entry["when"], f"{where}.when"),
            remove=tuple(
                self.relative(item, f"{where}.remove[{i}]", allow_lora=True)
                for i, item in enumerate(self.seq(entry.get("remove"), f"{where}.remove"))
            ),
            add=self.files(entry.get("add"), f"{where}.add"),
            add_templated=templated,
            set_text_encoder=self.text(entry.get("set_text_encoder"), f"{where}.set_text_encoder", optional=True),
        )

    def architecture(self, name: str, value: Any) -> Architecture:
        where = f"architectures.{name}"
        entry = self.mapping(value, where)
        allowed = {
            "handler",
            "family",
            "lora_dir",
            "text_encoder",
            "text_encoder_folder",
            "dtype",
            "files",
            "conditions",
            "preload",
            "preload_to_lora_dir",
            "on_demand",
            "system_configs",
            "note",
        }
        unknown = set(entry) - allowed
        if unknown:
            raise self.fail(where, f"unknown key {sorted(unknown)[0]!r}")
        if "files" not in entry:
            raise self.fail(where, "'files' is required (an empty list when the handler adds none)")
        lora_dir = self.relative(entry.get("lora_dir", name), f"{where}.lora_dir")
        folder = entry.get("text_encoder_folder")
        if folder is not None:
            folder = self.relative(folder, f"{where}.text_encoder_folder")
        dtype = entry.get("dtype")
        if dtype not in (None, "bf16", "fp16"):
            raise self.fail(f"{where}.dtype", f"must be bf16 or fp16, got {dtype!r}")
        on_demand = []
        for index, item in enumerate(self.seq(entry.get("on_demand"), f"{where}.on_demand")):
            item_where = f"{where}.on_demand[{index}]"
            raw = self.mapping(item, item_where)
            key = self.text(raw.get("key"), f"{item_where}.key")
            assert key is not None
            file_part = {k: v for k, v in raw.items() if k in ("repo", "path", "local")}
            on_demand.append(
                OnDemandFile(key=key, file=self.file(file_part, item_where), when=str(raw.get("when", "")))
            )
        preload_to_lora = self.seq(entry.get("preload_to_lora_dir"), f"{where}.preload_to_lora_dir")
        if not all(isinstance(item, str) and item for item in preload_to_lora):
            raise self.fail(f"{where}.preload_to_lora_dir", "expected a list of file names")
        return Architecture(
            name=name,
            family=self.text(entry.get("family", name), f"{where}.family") or name,
            lora_dir=lora_dir,
            text_encoder=self.text(entry.get("text_encoder"), f"{where}.text_encoder", optional=True),
            text_encoder_folder=folder,
            dtype=dtype,
            files=self.files(entry["files"], f"{where}.files"),
            conditions=tuple(
                self.condition(item, f"{where}.conditions[{i}]")
                for i, item in enumerate(self.seq(entry.get("conditions"), f"{where}.conditions"))
            ),
            preload=self.files(entry.get("preload"), f"{where}.preload"),
            preload_to_lora_dir=frozenset(preload_to_lora),
            on_demand=tuple(on_demand),
            system_configs=tuple(
                self.mapping(item, f"{where}.system_configs[{i}]")
                for i, item in enumerate(self.seq(entry.get("system_configs"), f"{where}.system_configs"))
            ),
        )

    def text_encoder(self, name: str, value: Any) -> TextEncoder:
        where = f"text_encoders.{name}"
        entry = self.mapping(value, where)
        folder = self.relative(entry.get("folder"), f"{where}.folder")
        variants = []
        for index, item in enumerate(self.seq(entry.get("variants"), f"{where}.variants")):
            raw = self.mapping(item, f"{where}.variants[{index}]")
            path = self.text(raw.get("path"), f"{where}.variants[{index}].path") or ""
            plain = {"repo": raw.get("repo"), "path": path, "local": f"{folder}/{posixpath.basename(path)}"}
            variants.append(self.file(plain, f"{where}.variants[{index}]", allow_lora=False))
        if not variants:
            raise self.fail(f"{where}.variants", "at least one variant is required")
        return TextEncoder(id=name, folder=folder, variants=tuple(variants))

    def core_setting(self, key: str, value: Any) -> CoreSetting:
        where = f"core.settings.{key}"
        entry = self.mapping(value, where)
        choices_raw = self.mapping(entry.get("choices"), f"{where}.choices")
        choices = {str(name): self.files(files, f"{where}.choices.{name}") for name, files in choices_raw.items()}
        default = str(entry.get("default", ""))
        if default not in choices:
            raise self.fail(f"{where}.default", f"{default!r} is not one of the choices ({', '.join(choices)})")
        aliases_raw = self.mapping(entry.get("aliases") or {}, f"{where}.aliases")
        aliases = {}
        for name, names in aliases_raw.items():
            if str(name) not in choices:
                raise self.fail(f"{where}.aliases.{name}", "alias of an unknown choice")
            aliases[str(name)] = tuple(str(item) for item in self.seq(names, f"{where}.aliases.{name}"))
        unknown_value = entry.get("unknown_value")
        return CoreSetting(
            key=key,
            default=default,
            unknown_value=None if unknown_value is None else str(unknown_value),
            aliases=aliases,
            choices=choices,
        )


# ---------------------------------------------------------------------------------------------------------------
# Loading and merging

_TOP_KEYS = {
    "wan2gp_commit",
    "hub",
    "url",
    "checkpoints_root",
    "lora_root",
    "rules",
    "core",
    "text_encoders",
    "architectures",
    "shared_local_paths",
    "optional_features",
    "deprecated",
    "renames",
    "profiles",
    "unlisted",
}

# Parsed tables, keyed by (path, mtime_ns, size) of every source: the watcher reloads the catalog often and the
# shipped table is the slowest thing to parse.
_CACHE: dict[tuple[tuple[str, int, int], ...], HandlerTable] = {}


def load_handler_table(extra: Sequence[Path] = (), *, base: Path | None = None) -> HandlerTable:
    """Read the shipped table (or ``base``) and apply each ``extra`` table on top, in order.

    Raises ConfigError naming the file and the bad entry. Results are cached by the files' mtime and size.
    """
    paths = [Path(base) if base is not None else default_table_path(), *(Path(p) for p in extra)]
    try:
        cache_key = tuple((str(p), (st := os.stat(p)).st_mtime_ns, st.st_size) for p in paths)
    except OSError as exc:
        raise ConfigError(f"{exc.filename}: cannot read handler table: {exc.strerror or exc}") from None
    cached = _CACHE.get(cache_key)
    if cached is not None:
        return cached

    commit: str | None = None
    hub = "https://huggingface.co"
    core_files: list[HandlerFile] = []
    core_settings: dict[str, CoreSetting] = {}
    encoders: dict[str, TextEncoder] = {}
    encoder_source: dict[str, Path] = {}
    archs: dict[str, Architecture] = {}
    arch_source: dict[str, Path] = {}
    shared: list[Mapping[str, Any]] = []
    features: dict[str, OptionalFeature] = {}
    deprecated: set[str] = set()
    renames: dict[str, str] = {}
    profiles: dict[str, tuple[str, ...]] = {}
    unlisted: dict[str, str] = {}

    for index, path in enumerate(paths):
        check = _Checker(path)
        data = load_yaml(path, trusted=path == default_table_path())  # the shipped one: no alias check
        if data is None and index > 0:
            continue
        data = check.mapping(data, "top level")
        unknown = set(data) - _TOP_KEYS
        if unknown:
            raise check.fail(str(sorted(unknown)[0]), f"unknown key (known: {', '.join(sorted(_TOP_KEYS))})")
        if index == 0:
            for required in ("core", "architectures"):
                if required not in data:
                    raise check.fail(required, "required in the base table")
        if data.get("wan2gp_commit") is not None:
            commit = str(data["wan2gp_commit"])
        if data.get("hub") is not None:
            hub_text = check.text(data["hub"], "hub") or ""
            if not hub_text.startswith("https://"):
                raise check.fail("hub", f"expected an https:// URL, got {hub_text!r}")
            hub = hub_text.rstrip("/")
        core = check.mapping(data.get("core") or {}, "core")
        unknown = set(core) - {"files", "settings"}
        if unknown:
            raise check.fail(f"core.{sorted(unknown)[0]}", "unknown key (allowed: files, settings)")
        core_files.extend(check.files(core.get("files"), "core.files", allow_lora=False))
        for key, value in check.mapping(core.get("settings") or {}, "core.settings").items():
            core_settings[str(key)] = check.core_setting(str(key), value)
        for name, value in check.mapping(data.get("text_encoders") or {}, "text_encoders").items():
            encoders[str(name)] = check.text_encoder(str(name), value)
            encoder_source[str(name)] = path
        for name, value in check.mapping(data.get("architectures") or {}, "architectures").items():
            archs[str(name)] = check.architecture(str(name), value)
            arch_source[str(name)] = path
        for i, item in enumerate(check.seq(data.get("shared_local_paths"), "shared_local_paths")):
            entry = check.mapping(item, f"shared_local_paths[{i}]")
            check.relative(entry.get("local"), f"shared_local_paths[{i}].local")
            shared.append(entry)
        for i, item in enumerate(check.seq(data.get("optional_features"), "optional_features")):
            where = f"optional_features[{i}]"
            entry = check.mapping(item, where)
            name = check.text(entry.get("feature"), f"{where}.feature") or ""
            files = check.files(entry.get("files"), f"{where}.files", allow_lora=False)
            features[name] = OptionalFeature(feature=name, when=str(entry.get("when", "")), files=files)
        for i, item in enumerate(check.seq(data.get("deprecated"), "deprecated")):
            deprecated.add(check.text(item, f"deprecated[{i}]") or "")
        for old, new in check.mapping(data.get("renames") or {}, "renames").items():
            old_name = check.text(old, "renames")
            new_name = check.text(new, f"renames.{old}")
            if not old_name or not new_name or "/" in old_name + new_name or old_name == new_name:
                raise check.fail(f"renames.{old}", "expected one file name renamed to another (no folders)")
            renames[old_name] = new_name
        for arch_name, folders in check.mapping(data.get("profiles") or {}, "profiles").items():
            where = f"profiles.{arch_name}"
            names = [check.text(item, where) or "" for item in check.seq(folders, where)]
            if not all(safe_relative(name) and "/" not in name for name in names):
                raise check.fail(where, "expected folder names under profiles/ (no paths)")
            profiles[str(arch_name)] = tuple(names)
        for arch_name, why in check.mapping(data.get("unlisted") or {}, "unlisted").items():
            unlisted[str(arch_name)] = check.text(why, f"unlisted.{arch_name}") or ""

    # References between entries are checked once everything is merged: an extra may add the encoder it uses.
    for name, arch in archs.items():
        check = _Checker(arch_source[name])
        wanted = [(f"architectures.{name}.text_encoder", arch.text_encoder)]
        wanted += [
            (f"architectures.{name}.conditions[{i}].set_text_encoder", cond.set_text_encoder)
            for i, cond in enumerate(arch.conditions)
        ]
        for where, encoder_id in wanted:
            if encoder_id is not None and encoder_id not in encoders:
                raise check.fail(where, f"unknown text encoder {encoder_id!r} (not under text_encoders)")

    table = HandlerTable(
        commit=commit,
        hub=hub,
        sources=tuple(paths),
        core_files=tuple(core_files),
        core_settings=core_settings,
        text_encoders=encoders,
        architectures=archs,
        shared_local_paths=tuple(shared),
        optional_features=tuple(features.values()),
        deprecated=frozenset(deprecated),
        renames=renames,
        profiles=profiles,
        unlisted=unlisted,
        arch_source=arch_source,
    )
    if len(_CACHE) > 8:
        _CACHE.clear()
    _CACHE[cache_key] = table
    return table


# ---------------------------------------------------------------------------------------------------------------
# Applying an architecture to one model


def _basename(value: Any) -> str:
    text = str(value).split("|")[0].split("?")[0]
    return posixpath.basename(text)


def condition_holds(when: Mapping[str, Any], model: Mapping[str, Any]) -> bool:
    """Whether a condition's ``when`` holds on a model's merged ``model`` object (see the table header)."""
    if "key" in when:
        key = when["key"]
        present = key in model
        value = model.get(key)
        if "present" in when and present != when["present"]:
            return False
        if "truthy" in when and bool(value) != when["truthy"]:
            return False
        if "equals" in when and not (present and value == when["equals"]):
            return False
        if "not_in" in when and present and value in when["not_in"]:
            return False
    urls = model.get("URLs")
    if "url0_contains" in when:
        first = urls if isinstance(urls, str) else (urls[0] if isinstance(urls, list) and urls else "")
        if when["url0_contains"] not in _basename(first):
            return False
    if "urls_variant" in when:
        entries = [urls] if isinstance(urls, str) else [u for u in (urls or []) if isinstance(u, str)]
        variants = set()
        for entry in entries:
            name = _basename(entry).lower()
            variants.add("nvfp4" if "nvfp4" in name else "int8" if "int8" in name else "bf16")
        if when["urls_variant"] not in (variants or {"bf16"}):
            return False
    if "urls_lists_contain" in when:
        lists = [model.get(k) for k in ("URLs", "URLs2")]
        text = when["urls_lists_contain"]
        if not any(isinstance(v, list) and any(isinstance(e, str) and text in e for e in v) for v in lists):
            return False
    return not ("not" in when and condition_holds(when["not"], model))


def handler_files_for(arch: Architecture, model: Mapping[str, Any]) -> tuple[list[HandlerFile], str | None]:
    """An architecture's handler files for one model, after its conditions, and the default text encoder id.

    Raises ValueError when a templated key holds something that is not a file name.
    """
    files = list(arch.files)
    encoder = arch.text_encoder
    for condition in arch.conditions:
        if not condition_holds(condition.when, model):
            continue
        if condition.remove:
            removed = set(condition.remove)
            files = [f for f in files if f.local not in removed]
        files.extend(condition.add)
        templated = condition.add_templated
        if templated is not None:
            value = model.get(templated.key) or templated.default
            if not isinstance(value, str) or not value:
                raise ValueError(f"{templated.key}: expected a file or folder name, got {value!r}")
            for template in templated.paths:
                path = template.replace("{value}", value)
                if not safe_relative(path):
                    raise ValueError(f"{templated.key}: {value!r} escapes the checkpoints folder")
                files.append(HandlerFile(repo=templated.repo, path=path, local=path))
        if condition.set_text_encoder is not None:
            encoder = condition.set_text_encoder
    return files, encoder
