"""The nouns every stage shares, as plain data: jobs and their states, Hub file metadata, the files a model needs.

No I/O and no wangpd imports: the catalog makes ``ModelDef``/``WantedFile``, the store keeps ``Job``/``FileMeta``,
the engine and the control surface read them. ``JobState`` and ``TRANSITIONS`` are the one place that says what may
happen to a job.
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "ACTIVE",
    "CLEAR_GROUPS",
    "COMMIT_RE",
    "DEFAULT_SETTINGS",
    "FINISHED",
    "MADE_KINDS",
    "PENDING",
    "SHA256_RE",
    "STATE_GROUPS",
    "TRANSITIONS",
    "FileGroup",
    "FileMeta",
    "Job",
    "JobSpec",
    "JobState",
    "Made",
    "ModelDef",
    "Profile",
    "WanSettings",
    "WantedFile",
]

SHA256_RE = re.compile(r"[0-9a-f]{64}")  # an LFS file's id on the Hub, and its blob's name in the HF cache
COMMIT_RE = re.compile(r"[0-9a-f]{40}")  # a git commit, or a small file's git blob id


# ---- jobs ----------------------------------------------------------------------------------------------------------


class JobState(enum.StrEnum):
    """Where a job is. ``protocol.JOB_STATES`` spells the same names for clients (a test ties the two)."""

    #: queued automatically, held until the user approves its batch (`wangpctl approve`)
    NEEDS_APPROVAL = "needs_approval"
    #: waiting for a free download slot
    QUEUED = "queued"
    #: claimed by the engine: its transfer is running (back to queued if the daemon stops)
    DOWNLOADING = "downloading"
    #: held by the user (`wangpctl pause JOB`); its part file is kept
    PAUSED = "paused"
    #: the file is where Wan2GP looks, verified
    COMPLETE = "complete"
    #: gave up; ``last_error`` says why (`wangpctl retry JOB`)
    FAILED = "failed"
    #: stopped by the user, or its batch was rejected
    CANCELLED = "cancelled"


# to-state -> the states a job may come from. The one place that says what may happen to a job.
TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    JobState.QUEUED: frozenset(
        {
            JobState.NEEDS_APPROVAL,
            JobState.DOWNLOADING,
            JobState.PAUSED,
            JobState.FAILED,
            JobState.CANCELLED,
            JobState.COMPLETE,
        }
    ),
    JobState.DOWNLOADING: frozenset({JobState.QUEUED}),
    JobState.PAUSED: frozenset({JobState.QUEUED, JobState.DOWNLOADING, JobState.NEEDS_APPROVAL}),
    JobState.COMPLETE: frozenset({JobState.QUEUED, JobState.DOWNLOADING}),
    JobState.FAILED: frozenset({JobState.QUEUED, JobState.DOWNLOADING}),
    JobState.CANCELLED: frozenset(
        {JobState.NEEDS_APPROVAL, JobState.QUEUED, JobState.DOWNLOADING, JobState.PAUSED, JobState.FAILED}
    ),
    JobState.NEEDS_APPROVAL: frozenset({JobState.CANCELLED, JobState.FAILED, JobState.COMPLETE}),
}
FINISHED = frozenset({JobState.COMPLETE, JobState.FAILED, JobState.CANCELLED})
ACTIVE = frozenset({JobState.NEEDS_APPROVAL, JobState.QUEUED, JobState.DOWNLOADING, JobState.PAUSED})
PENDING = frozenset({JobState.QUEUED, JobState.NEEDS_APPROVAL, JobState.PAUSED})  # not finished, not running
# Names a client may use for several states at once (`wangpctl queue --state active`).
STATE_GROUPS: dict[str, frozenset[JobState]] = {"active": ACTIVE, "pending": PENDING, "finished": FINISHED}
# `wangpctl clear complete|failed|all`: which finished rows each word removes.
CLEAR_GROUPS: dict[str, frozenset[JobState]] = {
    "complete": frozenset({JobState.COMPLETE}),
    "failed": frozenset({JobState.FAILED, JobState.CANCELLED}),
    "all": FINISHED,
}


@dataclass(frozen=True)
class JobSpec:
    """What to download and where to put it (the input of :meth:`Store.add_job`)."""

    url: str
    target: str
    repo: str = ""
    revision: str = "main"
    path: str = ""
    size: int | None = None
    sha256: str | None = None
    wanted_by: tuple[str, ...] = ()
    priority: int = 0
    origin: str = "manual"
    batch: str | None = None


@dataclass(frozen=True)
class Job:
    id: int
    repo: str
    revision: str
    path: str
    url: str
    target: str
    size: int | None
    sha256: str | None
    state: JobState
    bytes_done: int
    speed: float
    attempts: int
    last_error: str | None
    priority: int
    origin: str
    batch: str | None
    source: str | None
    wanted_by: tuple[str, ...]
    created_at: float
    updated_at: float
    started_at: float | None
    finished_at: float | None

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> Job:
        values = list(row)
        values[8] = JobState(values[8])
        values[17] = tuple(json.loads(values[17] or "[]"))
        return cls(*values)

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape clients see (documented in docs/json-schema.md)."""
        return {
            "id": self.id,
            "repo": self.repo,
            "revision": self.revision,
            "path": self.path,
            "url": self.url,
            "target": self.target,
            "size": self.size,
            "sha256": self.sha256,
            "state": self.state.value,
            "bytes_done": self.bytes_done,
            "speed": round(self.speed, 1),
            "attempts": self.attempts,
            "last_error": self.last_error,
            "priority": self.priority,
            "origin": self.origin,
            "batch": self.batch,
            "source": self.source,
            "wanted_by": list(self.wanted_by),
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
        }


# ---- Hub metadata --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FileMeta:
    """What the Hub says about one file of one revision.

    ``etag`` names the blob in the HF cache: the sha256 for LFS files, the git blob id otherwise.
    ``location`` is where the bytes are (the CDN URL after the Hub's redirect, or the resolve URL itself).
    ``headers`` are the request headers the download needs (auth only when ``location`` is on the Hub).
    For a plain (non-Hub) URL ``repo``/``revision``/``commit`` are empty and ``etag`` may be empty. Read back from
    the queue database (``hf_file_cache``), ``location``/``url``/``headers`` are empty: ask the Hub again to
    download.
    """

    repo: str
    revision: str
    path: str
    size: int | None
    sha256: str | None
    etag: str
    commit: str | None
    location: str = ""
    url: str = ""
    headers: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)
    fetched_at: float = 0.0  # when the Hub said so (``hf_file_cache``); 0 for an answer not stored yet

    @property
    def git_blob_id(self) -> str | None:
        """The git blob sha1 for non-LFS files (verifiable with ``git hash-object``), else None."""
        return self.etag if self.sha256 is None and COMMIT_RE.fullmatch(self.etag or "") else None


# ---- what Wan2GP needs ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WanSettings:
    """The ``wgp_config.json`` settings that decide files; absent keys take Wan2GP's defaults."""

    transformer_quantization: str = "int8"
    transformer_dtype_policy: str = ""  # "" = auto = bf16 on any GPU wangpd plans for
    text_encoder_quantization: str = "int8"
    checkpoints_paths: tuple[str, ...] = ("ckpts", ".")
    loras_root: str = "loras"
    #: plugin ids Wan2GP loads (``enabled_plugins``); a model plugin among them brings its own definitions
    enabled_plugins: tuple[str, ...] = ()
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False, repr=False)


DEFAULT_SETTINGS = WanSettings()


@dataclass(frozen=True)
class WantedFile:
    """One file Wan2GP will look for.

    ``local`` is a POSIX path relative to the Wan2GP folder (absolute only when ``wgp_config.json`` names an absolute
    checkpoints root) where Wan2GP looks first and where wangpd places the file; ``lookup`` lists every path Wan2GP
    accepts as present. ``whole_folder``: a repo folder Wan2GP fetches as a whole (``local`` is then a folder).
    """

    url: str
    repo: str | None
    revision: str
    path_in_repo: str
    local: str
    lookup: tuple[str, ...]
    role: str
    optional: bool = False
    variant_of: str | None = None
    whole_folder: bool = False


@dataclass(frozen=True)
class FileGroup:
    """One file a definition's JSON lists (main, main2, a module, a preload, a VAE, a LoRA, a JSON text encoder), as
    every variant of it: ``locals`` are the local paths of all of them (the chosen one and the alternatives).

    ``key`` names the group: for main files, text encoders and modules the planner's variant-group name
    (``"<holder>:URLs"``, ``"<owner>:modules[0]"``), else ``"<holder>:<key>[<index>]"``. ``own``: the URLs stand
    literally in this model's merged definition (not borrowed through a model-type reference). Core, handler and
    default text-encoder files never form a group (they are family-wide).
    """

    key: str
    role: str
    locals: tuple[str, ...]
    own: bool


@dataclass(frozen=True)
class ModelDef:
    """One model type, resolved. ``files`` are needed to load it; ``error`` set means ``files`` is empty."""

    model_type: str
    name: str
    architecture: str | None
    family: str
    definition_files: tuple[Path, ...]
    files: tuple[WantedFile, ...] = ()
    optional_files: tuple[WantedFile, ...] = ()
    alternatives: tuple[WantedFile, ...] = ()
    main_files: tuple[str, ...] = ()
    error: str | None = None
    warnings: tuple[str, ...] = ()
    lora_dir: str = ""
    #: the files its JSON lists, one group per file (:class:`FileGroup`); what "installed" is judged by
    groups: tuple[FileGroup, ...] = ()
    #: ``"visible": false`` hides it from Wan2GP's model list (it cannot be picked in the UI)
    visible: bool = True
    #: the enabled Wan2GP plugin whose definition folder defines it (None: defaults/ or finetunes/)
    plugin: str | None = None
    #: its accelerator profiles (``profiles/<dir>/*.json``): LoRAs Wan2GP fetches when the user picks one
    profiles: tuple[Profile, ...] = ()
    #: why some files its model code fetches by itself cannot be listed (None: every file is known)
    unlisted: str | None = None


@dataclass(frozen=True)
class Profile:
    """One accelerator profile of a model: ``files`` are its LoRAs where Wan2GP puts them. ``used``: Wan2GP's
    LoRA URL cache names every one of them (the user picked it); ``included``: ``auto_queue.include_profiles``
    names it. Either makes its files part of the model's files."""

    name: str  # <profiles dir>/<file stem>
    files: tuple[WantedFile, ...]
    used: bool = False
    included: bool = False


# ---- the keep-set ----------------------------------------------------------------------------------------------------

# Why a model is kept complete, strongest first: the user's word, then Wan2GP's own traces of use, then the config's
# globs, then what is new or already on disk. ``all`` (auto_queue.track: all) is a live rule, never remembered.
KEEP_REASONS = ("manual", "transformer_types", "queued", "used", "finetune", "include", "new", "installed")
# The user said no: `wangpctl drop TYPE`, or its proposed batch was rejected. Only `wangpctl add` lifts it.
REFUSALS = ("dropped", "rejected")


@dataclass(frozen=True)
class KeepEntry:
    """One remembered model (``keep_set`` table): kept for ``reason`` since ``since``, with the file set it had."""

    model_type: str
    reason: str  # one of KEEP_REASONS, or one of REFUSALS
    all_variants: bool
    since: float
    updated_at: float
    files: tuple[str, ...]
    gone_at: float | None  # its definition disappeared (reported, kept until dropped)

    @property
    def kept(self) -> bool:
        return self.reason not in REFUSALS


MADE_KINDS = ("link", "folder", "blob", "snapshot")


@dataclass(frozen=True)
class Made:
    """One path wangpd created (``made`` table): a link (or copy) at a Wan2GP path, a folder of links, a blob it
    downloaded into the HF cache or the snapshot link to it. ``identity`` ("dev:ino" of the lstat when made) tells
    it from something put at the same path later, which is not wangpd's to remove."""

    path: str
    kind: str  # one of MADE_KINDS
    mode: str | None  # link: symlink | hardlink | copy
    points_to: str | None  # a symlink's text; a blob's repo or URL
    identity: str | None
    job_id: int | None
    made_at: float
