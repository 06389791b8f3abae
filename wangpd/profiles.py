"""Wan2GP's accelerator profiles and the LoRA URLs it remembers: files Wan2GP fetches at generation, not at load.

An accelerator profile (``profiles/<dir>/<name>.json``: Lightning, FusioniX, CausVid...) is a settings file whose
``activated_loras`` lists LoRA URLs; its folder is the model handler's ``profiles_dir`` (the handler table's
``profiles``). Applying one downloads nothing: Wan2GP records each URL in ``loras_url_cache_v2.json`` (in its own
folder) as ``"<lora dir>|<path in it>": "<URL>"`` and fetches the file into ``<lora dir>/<path>`` when a generation
starts. That file is therefore the trace of the LoRAs a user has picked, by profile, ``.lset`` or loaded settings.

Reading is forgiving: a profile that is not valid JSON (one shipped Lightning profile was not) is skipped and
named; a bad cache file is named and read as empty. Blocking (small files): call it from the catalog's thread.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from wangpd.paths import read_regular

__all__ = ["PROFILES_DIR", "URL_CACHE", "ProfileFile", "read_lsets", "read_profiles", "read_url_cache"]

PROFILES_DIR = "profiles"
URL_CACHE = "loras_url_cache_v2.json"  # written by Wan2GP's update_loras_url_cache, relative to its own folder
_MAX_BYTES = 1 << 20


@dataclass(frozen=True)
class ProfileFile:
    """One profile as read: ``name`` is ``<dir>/<file stem>`` (what Wan2GP shows is the stem)."""

    name: str
    path: Path
    urls: tuple[str, ...]


def _load(path: Path) -> object:
    return json.loads(read_regular(path, _MAX_BYTES)[0].decode("utf-8"))


def _listed(directory: Path, suffix: str) -> list[str]:
    """The names of the regular files in ``directory`` ending in ``suffix``, sorted; raises OSError."""
    with os.scandir(directory) as entries:
        return sorted(e.name for e in entries if e.name.endswith(suffix) and e.is_file())


def _read(path: Path, what: str, problems: list[str]) -> object | None:
    """The JSON in ``path``, or None with the problem noted (the file is skipped, nothing else)."""
    try:
        return _load(path)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        problems.append(f"{path}: not a readable {what} ({exc}); skipped")
        return None


def _urls(entries: list[object]) -> tuple[str, ...]:
    return tuple(u for u in entries if isinstance(u, str) and u.startswith(("http://", "https://")))


def read_profiles(wan2gp_dir: Path, folders: Iterable[str]) -> tuple[dict[str, list[ProfileFile]], list[str]]:
    """The profiles of each folder under ``profiles/`` (sorted by name), and the problems found."""
    found: dict[str, list[ProfileFile]] = {}
    problems: list[str] = []
    for folder in dict.fromkeys(folders):
        directory = Path(wan2gp_dir) / PROFILES_DIR / folder
        try:
            names = _listed(directory, ".json")
        except FileNotFoundError:
            continue  # an older or newer Wan2GP without this folder
        except OSError as exc:
            problems.append(f"{directory}: cannot list: {exc.strerror or exc}")
            continue
        profiles = found.setdefault(folder, [])
        for name in names:
            path = directory / name
            data = _read(path, "profile", problems)
            loras = data.get("activated_loras") if isinstance(data, dict) else None
            if loras is None:
                continue  # unreadable, or a profile of settings only
            if not isinstance(loras, list) or not all(isinstance(u, str) for u in loras):
                problems.append(f"{path}: activated_loras: expected a list of URLs; skipped")
                continue
            urls = _urls(loras)
            if urls:
                profiles.append(ProfileFile(f"{folder}/{name[: -len('.json')]}", path, urls))
    return found, problems


def read_lsets(wan2gp_dir: Path, folders: Iterable[str]) -> tuple[dict[str, list[ProfileFile]], list[str]]:
    """The ``.lset`` presets in each LoRA folder (Wan2GP's ``save_lset``: ``{"loras": [...], "loras_mult": ...}``,
    in the family's LoRA folder, not its sub-folders), named ``<folder name>/<file>.lset``; only their URL entries
    name files (a plain name is a LoRA already there)."""
    found: dict[str, list[ProfileFile]] = {}
    problems: list[str] = []
    for folder in dict.fromkeys(folders):
        directory = Path(wan2gp_dir) / folder
        try:
            names = _listed(directory, ".lset")
        except OSError:
            continue  # no LoRA folder yet: nothing saved in it
        presets = found.setdefault(folder, [])
        for name in names:
            path = directory / name
            data = _read(path, ".lset", problems)
            loras = data.get("loras") if isinstance(data, dict) else None
            urls = _urls(loras) if isinstance(loras, list) else ()
            if urls:
                presets.append(ProfileFile(f"{Path(folder).name}/{name}", path, urls))
    return found, problems


def read_url_cache(wan2gp_dir: Path) -> tuple[dict[str, dict[str, str]], list[str]]:
    """``loras_url_cache_v2.json`` as {lora dir (POSIX, as Wan2GP named it): {path in it: URL}}, and problems."""
    path = Path(wan2gp_dir) / URL_CACHE
    try:
        data = _load(path)
    except FileNotFoundError:
        return {}, []
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        return {}, [f"{path}: cannot read ({exc}); no LoRA counts as used"]
    if not isinstance(data, dict):
        return {}, [f"{path}: expected a JSON object; no LoRA counts as used"]
    cache: dict[str, dict[str, str]] = {}
    for key, url in data.items():
        if not isinstance(key, str) or not isinstance(url, str) or "|" not in key:
            continue
        folder, relative = key.replace("\\", "/").split("|", 1)  # Windows writes loras\wan
        folder, relative = folder.rstrip("/").removeprefix("./"), relative.strip("/")
        if folder and relative and url.startswith(("http://", "https://")):
            cache.setdefault(folder, {})[relative] = url.split("|")[0]
    return cache, []
