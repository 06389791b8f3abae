"""Wan2GP's rules for one model: a merged definition -> exactly the files Wan2GP will look for. Pure (no I/O).

The rules are Wan2GP's own (``../shared/WAN2GP.md``): string references followed (depth limit 10), one variant
chosen with the settings of ``wgp_config.json`` (:func:`choose_variant`), flat ``ckpts/<name>`` placement,
``|<subdir>`` suffixes, text encoder folders, the family's LoRA folder, modules, plus the files Wan2GP's Python
adds, from the handler table (:mod:`wangpd.handler_table`). It also records which files the JSON itself lists, own
or borrowed (``ModelDef.groups``: what "installed" is judged by). Reading and merging the JSON files is
:mod:`wangpd.catalog`'s job; this module never imports it.
"""

from __future__ import annotations

import posixpath
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from wangpd import hfurl
from wangpd.errors import DefinitionError
from wangpd.handler_table import LORA_DIR_PREFIX, Architecture, HandlerFile, HandlerTable, handler_files_for
from wangpd.models import FileGroup, ModelDef, WanSettings, WantedFile
from wangpd.paths import safe_relative

__all__ = ["MAX_REFERENCE_DEPTH", "OPTIONAL_URL_KEYS", "MergedDef", "Resolver", "choose_variant", "json_kind", "norm"]

MAX_REFERENCE_DEPTH = 10  # Wan2GP raises "Circular Reference" past this many hops
OPTIONAL_URL_KEYS = ("ltx2_lora_distilled",)  # one URL fetched only when a feature is used


def json_kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "true/false", int: "a number"}.get(
        type(value), "null" if value is None else type(value).__name__
    )


# ---------------------------------------------------------------------------------------------------------------
# Variant choice and URLs


def _url_basename(url: str) -> str:
    return posixpath.basename(url.split("|")[0].split("?")[0])


def choose_variant(urls: Sequence[str], quantization: str, dtype: str) -> int:
    """Index of the URL Wan2GP picks (WAN2GP.md "Choosing one variant"); ``dtype`` is ``bf16`` or ``fp16``."""
    if len(urls) <= 1:
        return 0
    order = {"int8": ("int8", "fp8"), "fp8": ("fp8", "int8")}.get(quantization or "bf16", ())
    names = [_url_basename(u) for u in urls]
    sub = [index for token in order for index, name in enumerate(names) if token in name.lower()]
    if not sub:
        return 0
    preferred = [index for index in sub if dtype in names[index] or dtype.upper() in names[index]]
    return (preferred or sub)[0]


def norm(path: str) -> str:
    normal = posixpath.normpath(path)
    return "." if normal in ("", ".") else normal


def _join(*parts: str) -> str:
    return norm(posixpath.join(*parts))


@dataclass(frozen=True)
class _Url:
    url: str
    repo: str | None
    revision: str
    path_in_repo: str
    name: str
    subdir: str | None


def _parse_url(raw: str) -> _Url:
    """Split ``url|subdir``, check it is HTTPS and names a file. Raises ValueError with the reason."""
    parts = raw.split("|")
    if len(parts) > 2:
        raise ValueError(f"{raw!r} has more than one '|'")
    url = parts[0].strip()
    subdir = parts[1].strip() if len(parts) == 2 else None
    if not url:
        raise ValueError("empty URL")
    split = urlsplit(url)
    if split.scheme.lower() != "https" or not split.netloc:
        raise ValueError(f"{url!r} is not an https:// URL")
    if split.query:
        # Wan2GP drops ?download=true from the local name; keep other queries for the download itself.
        query = "&".join(q for q in split.query.split("&") if q.lower() != "download=true")
        url = urlunsplit((split.scheme, split.netloc, split.path, query, ""))
    name = posixpath.basename(unquote(split.path))
    if not name or name in (".", "..") or not safe_relative(name):
        raise ValueError(f"{url!r} does not name a file")
    if subdir is not None and subdir != "%lora_dir":
        if not safe_relative(subdir):
            raise ValueError(f"'|{subdir}' escapes the Wan2GP folder (absolute, empty or '..')")
        subdir = norm(subdir)
    hub_file = hfurl.parse(url)  # ValueError for a Hub URL whose path escapes the repository
    if hub_file is not None:
        return _Url(url, hub_file.repo, hub_file.revision, hub_file.path, name, subdir)
    return _Url(url, None, "", "", name, subdir)


@dataclass
class MergedDef:
    """A model type after the finetune merge (handler defaults first, then each JSON file in order)."""

    model_type: str
    paths: list[Path]
    model: dict[str, Any]
    key_source: dict[str, Path]
    error: str | None = None
    plugin: str | None = None  # the model plugin whose folder holds its first definition


# ---------------------------------------------------------------------------------------------------------------
# Resolving


class _Files:
    """Ordered files of one model: the first writer of a local path wins; deprecated names are dropped."""

    def __init__(self, deprecated: frozenset[str]) -> None:
        self.deprecated = deprecated
        self.files: dict[str, WantedFile] = {}
        self.optional: dict[str, WantedFile] = {}
        self.alternatives: dict[str, WantedFile] = {}
        self.warnings: list[str] = []
        self.groups: list[FileGroup] = []

    def group(self, key: str, role: str, choices: Sequence[WantedFile], *, own: bool) -> None:
        """Record one file the JSON lists (every variant of it) for :attr:`ModelDef.groups`; deprecated names drop."""
        locals_ = tuple(dict.fromkeys(c.local for c in choices if posixpath.basename(c.local) not in self.deprecated))
        if locals_:
            self.groups.append(FileGroup(key=key, role=role, locals=locals_, own=own))

    def add(self, wanted: WantedFile, *, kind: str = "files") -> bool:
        if posixpath.basename(wanted.local) in self.deprecated:
            if kind == "files":
                self.warnings.append(f"{wanted.local}: on Wan2GP's deprecated list (it deletes it): not planned")
            return False
        target = getattr(self, kind)
        if wanted.local in target:
            return False
        target[wanted.local] = wanted
        return True


class Resolver:
    def __init__(
        self, defs: dict[str, MergedDef], table: HandlerTable, settings: WanSettings, all_variants: bool
    ) -> None:
        self.defs = defs
        self.table = table
        self.settings = settings
        self.all_variants = all_variants
        self.core = table.core_files_for(settings.raw)
        self._placed: dict[tuple[str, str, bool], tuple[str, tuple[str, ...]]] = {}
        # Files Wan2GP renames at its start: either name on disk stands for the file (the old one is renamed to the
        # new one before anything loads; an older definition that still names the old file finds the new one).
        self._same_file: dict[str, tuple[str, ...]] = {}
        for old, new in table.renames.items():
            self._same_file[old] = (*self._same_file.get(old, ()), new)
            self._same_file[new] = (*self._same_file.get(new, ()), old)
        self._handled: dict[tuple[HandlerFile, str, str], WantedFile] = {}

    # -- helpers -------------------------------------------------------------------------------------------------

    @staticmethod
    def fail(d: MergedDef, key: str, problem: str) -> DefinitionError:
        return DefinitionError(f"{d.key_source.get(key.split('[')[0], d.paths[-1])}: {key}: {problem}")

    def referenced(self, d: MergedDef, key: str, target: str, chain: list[str]) -> MergedDef:
        """The definition ``target`` names, reached from ``d`` by ``chain``; a cycle, an unknown or a failed
        target fails ``d``'s ``key``."""
        if target in chain or len(chain) > MAX_REFERENCE_DEPTH:
            raise self.fail(d, key, f"circular reference: {' -> '.join([*chain, target])}")
        ref = self.defs.get(target)
        if ref is None:
            raise self.fail(d, key, f"unknown model type {target!r}" + _via(chain))
        if ref.error:
            raise self.fail(d, key, f"references {target!r}, which failed")
        return ref

    def follow(self, d: MergedDef, key: str) -> tuple[MergedDef, Any]:
        """Follow ``key`` through string references; returns the holder of the final value and that value."""
        chain = [d.model_type]
        holder = d
        value = d.model.get(key)
        while isinstance(value, str):
            target = value.strip()
            if not target:
                raise self.fail(d, key, "empty model type reference")
            ref = self.referenced(d, key, target, chain)
            chain.append(target)
            holder, value = ref, ref.model.get(key)
        return holder, list(value or [])

    def place(self, rel: str, lora_dir: str, *, lora: bool) -> tuple[str, tuple[str, ...]]:
        key = (rel, lora_dir if lora else "", lora)
        placed = self._placed.get(key)
        if placed is None:
            placed = self._placed[key] = self._place(rel, lora_dir, lora=lora)
        return placed

    def _place(self, rel: str, lora_dir: str, *, lora: bool) -> tuple[str, tuple[str, ...]]:
        if lora:
            local = _join(self.settings.loras_root, lora_dir, rel)
            return local, (local,)
        lookup = tuple(dict.fromkeys(_join(root, rel) for root in self.settings.checkpoints_paths))
        other_names = self._same_file.get(posixpath.basename(rel), ())
        if other_names:
            folder = posixpath.dirname(rel)
            lookup += tuple(
                _join(root, folder, name) for name in other_names for root in self.settings.checkpoints_paths
            )
        return lookup[0], tuple(dict.fromkeys(lookup))

    def from_url(
        self,
        d: MergedDef,
        key: str,
        raw: str,
        *,
        role: str,
        lora_dir: str,
        folder: str | None = None,
        lora: bool = False,
    ) -> WantedFile:
        try:
            parsed = _parse_url(raw)
        except ValueError as exc:
            raise self.fail(d, key, str(exc)) from None
        if parsed.subdir == "%lora_dir":
            rel, lora = parsed.name, True
        elif parsed.subdir is not None:
            # Relative to the folder the key puts files in: a `loras` entry stays in the family's LoRA folder
            # (loras/<family>/<subdir>/<name>, issue 17), everything else goes under the checkpoints roots.
            rel = f"{parsed.subdir}/{parsed.name}"
        elif folder:
            rel = f"{folder}/{parsed.name}"
        else:
            rel = parsed.name
        local, lookup = self.place(rel, lora_dir, lora=lora)
        return WantedFile(
            url=parsed.url,
            repo=parsed.repo,
            revision=parsed.revision,
            path_in_repo=parsed.path_in_repo,
            local=local,
            lookup=lookup,
            role=role,
            optional=role in ("on_demand", "optional"),
        )

    def from_handler(self, item: HandlerFile, *, role: str, lora_dir: str) -> WantedFile:
        # Core and family files are the same objects for most models: build each WantedFile once per load.
        key = (item, role, lora_dir)
        wanted = self._handled.get(key)
        if wanted is None:
            wanted = self._handled[key] = self._from_handler(item, role=role, lora_dir=lora_dir)
        return wanted

    def _from_handler(self, item: HandlerFile, *, role: str, lora_dir: str) -> WantedFile:
        lora = item.local.startswith(LORA_DIR_PREFIX)
        rel = item.local[len(LORA_DIR_PREFIX) :] if lora else item.local
        local, lookup = self.place(rel, lora_dir, lora=lora)
        return WantedFile(
            url=item.url(self.table.hub),
            repo=item.repo,
            revision="main",
            path_in_repo=item.path.rstrip("/"),
            local=local,
            lookup=lookup,
            role=role,
            optional=role in ("on_demand", "optional"),
            whole_folder=item.whole_folder,
        )

    def variants(self, out: _Files, choices: list[WantedFile], group: str, quantization: str, dtype: str) -> str:
        """Add one variant group: the chosen file to ``files``, the others to ``alternatives``. Returns its local."""
        if not choices:
            return ""
        grouped = [replace(c, variant_of=group if len(choices) > 1 else None) for c in choices]
        chosen = choose_variant([c.url for c in grouped], quantization, dtype)
        for index, wanted in enumerate(grouped):
            if index == chosen or self.all_variants:
                out.add(wanted)
            else:
                out.add(wanted, kind="alternatives")
        return grouped[chosen].local

    # -- one model -----------------------------------------------------------------------------------------------

    def resolve(self, d: MergedDef) -> ModelDef:
        arch_name = d.model.get("architecture")
        arch = self.table.architectures.get(arch_name) if arch_name else None
        family = arch.family if arch else (arch_name or "unknown")
        lora_dir = arch.lora_dir if arch else (arch_name or "unknown")
        name = d.model.get("name") if isinstance(d.model.get("name"), str) else d.model_type
        base = ModelDef(
            model_type=d.model_type,
            name=name,
            architecture=arch_name,
            family=family,
            definition_files=tuple(d.paths),
            lora_dir=lora_dir,
            visible=bool(d.model.get("visible", True)),
            plugin=d.plugin,
        )
        if d.error is not None:
            return replace(base, error=d.error)
        try:
            return self._resolve(d, base, arch)
        except DefinitionError as exc:
            return replace(base, error=str(exc))

    def _resolve(self, d: MergedDef, base: ModelDef, arch: Architecture | None) -> ModelDef:
        model = d.model
        out = _Files(self.table.deprecated)
        warnings = out.warnings
        lora_dir = base.lora_dir
        quant = self.settings.transformer_quantization
        dtype = (arch.dtype if arch and arch.dtype else None) or (
            "fp16" if self.settings.transformer_dtype_policy == "fp16" else "bf16"
        )
        if not model.get("architecture"):
            raise self.fail(d, "architecture", "missing: every model names its architecture (the base model type)")
        if arch is None:
            warnings.append(
                f"architecture {base.architecture!r} unknown to the handler table (commit {self.table.commit}): "
                "handler files not planned"
            )

        for item in self.core:
            out.add(self.from_handler(item, role="core", lora_dir=lora_dir))

        handler_files: list[HandlerFile] = []
        encoder_id = None
        if arch is not None:
            try:
                handler_files, encoder_id = handler_files_for(arch, model)
            except ValueError as exc:
                key = str(exc).split(":")[0]
                raise self.fail(d, key, str(exc).split(": ", 1)[-1]) from None

        main_files: list[str] = []
        for number, key in ((1, "URLs"), (2, "URLs2")):
            source_key = "source" if number == 1 else "source2"
            if model.get(source_key):
                # Wan2GP builds this transformer from a local source file: nothing to download for it.
                if model.get(key):
                    warnings.append(f"{key}: skipped, {source_key} builds it locally")
            else:
                holder, urls = self.follow(d, key)
                role = "main" if number == 1 else "main2"
                choices = [self.from_url(d, key, u, role=role, lora_dir=lora_dir) for u in urls]
                chosen = self.variants(out, choices, f"{holder.model_type}:{key}", quant, dtype)
                out.group(f"{holder.model_type}:{key}", role, choices, own=holder is d)
                if chosen and chosen in out.files:
                    main_files.append(chosen)
            if number == 1:
                self._side_files(d, out, arch, lora_dir, handler_files)

        # Wan2GP extracts the modules from a local model named by module_source (download_models skips file type 1
        # then; modules are loaded as submodel 1 whatever URLs list they pair with, so module_source2 does not).
        module_groups = [] if model.get("module_source") else self.modules(d)
        if model.get("module_source") and model.get("modules"):
            warnings.append("modules: skipped, module_source builds them locally")
        for group, urls in module_groups:
            choices = [self.from_url(d, "modules", u, role="module", lora_dir=lora_dir) for u in urls]
            self.variants(out, choices, group, quant, dtype)
            out.group(group, "module", choices, own=group.startswith(f"{d.model_type}:"))

        self._text_encoder(d, out, arch, encoder_id, lora_dir, dtype)

        for key in OPTIONAL_URL_KEYS:
            if isinstance(model.get(key), str) and model[key] and not (arch and _has_on_demand(arch, key)):
                out.add(
                    self.from_url(d, key, f"{model[key].split('|')[0]}|%lora_dir", role="on_demand", lora_dir=lora_dir),
                    kind="optional",
                )
        if arch is not None:
            for item in arch.on_demand:
                value = model.get(item.key)
                if isinstance(value, str) and value:
                    wanted = self.from_url(
                        d, item.key, f"{value.split('|')[0]}|%lora_dir", role="on_demand", lora_dir=lora_dir
                    )
                else:
                    wanted = self.from_handler(item.file, role="on_demand", lora_dir=lora_dir)
                out.add(wanted, kind="optional")

        files = tuple(out.files.values())
        optional = tuple(f for f in out.optional.values() if f.local not in out.files)
        alternatives = tuple(f for f in out.alternatives.values() if f.local not in out.files)
        return replace(
            base,
            files=files,
            optional_files=optional,
            alternatives=alternatives,
            main_files=tuple(main_files),
            warnings=tuple(warnings),
            groups=tuple(out.groups),
        )

    def _side_files(
        self, d: MergedDef, out: _Files, arch: Architecture | None, lora_dir: str, handler_files: list[HandlerFile]
    ) -> None:
        """After the main file: preload_URLs, VAE_URLs, loras, then the handler's files (Wan2GP's order)."""
        model = d.model
        holder, preloads = self.follow(d, "preload_URLs")
        # The catalog puts the handler's preload defaults under the JSON; those are handler files, not the JSON's.
        from_json = "preload_URLs" in holder.key_source
        to_lora = arch.preload_to_lora_dir if arch and isinstance(model.get("preload_URLs"), list) else frozenset()
        for index, url in enumerate(preloads):
            if "|" not in url and _url_basename(url) in to_lora:
                url = f"{url}|%lora_dir"
            wanted = self.from_url(d, "preload_URLs", url, role="preload", lora_dir=lora_dir)
            out.add(wanted)
            if from_json:
                out.group(f"{holder.model_type}:preload_URLs[{index}]", "preload", [wanted], own=holder is d)
        vaes = model.get("VAE_URLs") or []
        for index, url in enumerate([vaes] if isinstance(vaes, str) else vaes):  # not recursive: a string is one URL
            wanted = self.from_url(d, "VAE_URLs", url, role="vae", lora_dir=lora_dir)
            out.add(wanted)
            out.group(f"{d.model_type}:VAE_URLs[{index}]", "vae", [wanted], own=True)
        holder, loras = self.follow(d, "loras")
        for index, url in enumerate(loras):
            wanted = self.from_url(d, "loras", url, role="lora", lora_dir=lora_dir, lora=True)
            out.add(wanted)
            out.group(f"{holder.model_type}:loras[{index}]", "lora", [wanted], own=holder is d)
        for item in handler_files:
            out.add(self.from_handler(item, role="handler", lora_dir=lora_dir))

    def _text_encoder(
        self, d: MergedDef, out: _Files, arch: Architecture | None, encoder_id: str | None, lora_dir: str, dtype: str
    ) -> None:
        model = d.model
        quant = self.settings.text_encoder_quantization
        folder = model.get("text_encoder_folder")
        if folder is not None:
            folder = folder.strip().strip("/")
            if folder and not safe_relative(folder):
                raise self.fail(d, "text_encoder_folder", f"{folder!r} escapes the Wan2GP folder")
        holder, urls = self.follow(d, "text_encoder_URLs") if "text_encoder_URLs" in model else (d, [])
        if urls:
            # The JSON list replaces the handler's default encoder (and its folder unless the JSON sets one).
            folder = folder if folder is not None else (arch.text_encoder_folder if arch else None)
            choices = [
                self.from_url(d, "text_encoder_URLs", u, role="text_encoder", lora_dir=lora_dir, folder=folder or "")
                for u in urls
            ]
            self.variants(out, choices, f"{holder.model_type}:text_encoder_URLs", quant, dtype)
            out.group(f"{holder.model_type}:text_encoder_URLs", "text_encoder", choices, own=holder is d)
            return
        if encoder_id is None:
            return
        encoder = self.table.text_encoders[encoder_id]
        chosen_folder = folder or encoder.folder
        choices = [
            self.from_handler(
                HandlerFile(v.repo, v.path, f"{chosen_folder}/{posixpath.basename(v.path)}"),
                role="text_encoder",
                lora_dir=lora_dir,
            )
            for v in encoder.variants
        ]
        self.variants(out, choices, f"text_encoder:{encoder_id}", quant, dtype)

    def modules(self, d: MergedDef) -> list[tuple[str, list[str]]]:
        """Every module of a model as (variant group key, URL variants)."""
        holder, entries = self.follow(d, "modules")
        groups: list[tuple[str, list[str]]] = []
        for index, entry in enumerate(entries):
            self._module(d, entry, f"{holder.model_type}:modules[{index}]", [d.model_type], groups)
        return groups

    def _module(self, d: MergedDef, entry: Any, group: str, chain: list[str], groups: list) -> None:
        where = "modules"
        if isinstance(entry, list):
            if not entry:
                raise self.fail(d, where, f"{group}: empty URL list (a module needs at least one URL)")
            groups.append((group, entry))
            return
        if isinstance(entry, dict):
            for sub in ("URLs", "URLs2"):
                if sub in entry:
                    self._module(d, entry[sub], f"{group}.{sub}", chain, groups)
            return
        if not isinstance(entry, str) or not entry.strip():
            raise self.fail(d, where, f"{group}: expected URLs, a model type or an object, got {json_kind(entry)}")
        if "://" in entry:
            groups.append((group, [entry]))
            return
        if "#" in entry:  # "type#key": one named module of that type (Wan2GP splits at the last '#')
            target, sub = entry[: entry.rfind("#")], entry[entry.rfind("#") + 1 :]
        else:
            target, sub = entry, ""
        ref = self.referenced(d, where, target, chain)
        holder, value = (
            self.follow(ref, "modules")
            if isinstance(ref.model.get("modules"), str)
            else (
                ref,
                ref.model.get("modules"),
            )
        )
        owner = holder.model_type
        if not sub:
            if not isinstance(value, list) or len(value) != 1:
                count = len(value) if isinstance(value, list) else 0
                raise self.fail(
                    d, where, f"{entry!r} must define exactly one module to be used as one (it has {count})"
                )
            self._module(d, value[0], f"{owner}:modules[0]", [*chain, target], groups)
            return
        picked = None
        if isinstance(value, dict):
            picked = value.get(sub)
        elif isinstance(value, list) and len(value) == 1 and isinstance(value[0], dict):
            picked = value[0].get(sub)
        if picked is None:
            raise self.fail(d, where, f"{entry!r}: model type {target!r} has no module {sub!r}")
        self._module(d, picked, f"{owner}:modules#{sub}", [*chain, target], groups)


def _via(chain: list[str]) -> str:
    return f" (via {' -> '.join(chain)})" if len(chain) > 1 else ""


def _has_on_demand(arch: Architecture, key: str) -> bool:
    return any(item.key == key for item in arch.on_demand)
