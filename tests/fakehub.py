"""A fake HuggingFace Hub on loopback, faithful enough for huggingface_hub 2.4 and for wangpd's transfers.

Two aiohttp servers: the *hub* on 127.0.0.1 and a *CDN* on 127.0.0.2 (another origin, like the real
``cas-bridge.xethub.hf.co``, so huggingface_hub stops at the 302 and reads the metadata from it, and aiohttp
drops the Authorization header when it follows the redirect).

Hub protocol spoken (as read in huggingface_hub 2.4 ``file_download.get_hf_file_metadata`` and
``utils/_http.py``):

- ``HEAD|GET /{org}/{repo}/resolve/{rev}/{path}``: LFS files answer 302 to the CDN with ``X-Repo-Commit``,
  ``X-Linked-Etag: "<sha256>"``, ``X-Linked-Size`` and ``ETag: "<pointer blob id>"``; small (non-LFS) files
  answer 200 with the bytes, ``ETag: "<git blob sha1>"`` and ``X-Repo-Commit``. Errors carry ``X-Error-Code``
  (``RepoNotFound``, ``GatedRepo``, ``RevisionNotFound``, ``EntryNotFound``) the way ``hf_raise_for_status``
  reads them.
- ``GET /api/models/{org}/{repo}[/revision/{rev}]`` (model info), ``GET /api/models/{org}/{repo}/tree/{rev}``
  (what ``hf cache verify`` lists).
- CDN ``HEAD|GET /blobs/{sha256}``: bytes with ``Range`` (206 + ``Content-Range``).

Files are registered in memory or generated from a seed (1 GiB never sits in memory). Faults can be injected
per file; counters record bytes served and requests seen.

Use: ``async with FakeHub() as hub:`` in async code, ``with FakeHubThread() as hub:`` from sync code (the servers
run on their own loop in a thread), or ``python tests/fakehub.py --size 1GiB`` as a separate process (prints one
JSON line with the endpoint and the file, serves until stdin closes or SIGTERM).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import signal
import struct
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

__all__ = ["FakeFile", "FakeHub", "FakeHubThread", "Fault", "Request"]

_BLOCK = 1024 * 1024
_LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".gguf", ".onnx", ".pkl", ".sft")
_LFS_THRESHOLD = 10 * 1000 * 1000  # the Hub's default: bigger files go to LFS


@dataclass
class Fault:
    """One injected failure, used for the next ``times`` matching requests.

    ``on="resolve"`` applies to the Hub's resolve endpoint (status faults only); ``on="body"`` applies where the
    bytes are served (the CDN for LFS files, the resolve endpoint for small files).
    """

    on: str = "body"
    times: int = 1
    status: int | None = None  # answer with this status instead
    retry_after: str | None = None  # Retry-After header with the status
    error_code: str | None = None  # X-Error-Code header with the status
    drop_after: int | None = None  # close the connection after this many body bytes
    flip_at: int | None = None  # absolute file offset of a byte to flip
    drip_after: int | None = None  # after this many body bytes, send one byte every 0.1 s (a dying server)
    stall_after: int | None = None  # stop sending after this many body bytes...
    stall_for: float = 30.0  # ...for this long (or until the client goes away)
    ignore_range: bool = False  # answer 200 with the whole file despite Range
    length_delta: int = 0  # lie in Content-Length by this many bytes
    redirect_loop: bool = False  # answer 302 to the same URL (a misconfigured CDN or mirror)
    redirect_to: str | None = None  # answer 302 to this URL (a hostile or broken CDN)
    where: int | None = None  # only a request whose bytes include this file offset (one segment of many)
    rate: int | None = None  # send this response's body at this many bytes/s (one slow connection among fast ones)


@dataclass
class FakeFile:
    """A file in a fake repo. Content is ``data`` or generated from ``seed`` (position-dependent blocks)."""

    repo: str
    path: str
    size: int
    lfs: bool
    data: bytes | None = None
    seed: int = 0
    sha256: str = ""
    blob_id: str = ""  # git blob sha1 of the content (non-LFS) or of the LFS pointer (LFS)
    faults: list[Fault] = field(default_factory=list)
    bytes_served: int = 0
    _base: bytes = b""

    def __post_init__(self) -> None:
        if self.data is None:
            self._base = hashlib.shake_256(b"fakehub-seed-%d" % self.seed).digest(_BLOCK)
        sha = hashlib.sha256()
        git = hashlib.sha1(b"blob %d\0" % self.size)
        for piece in self.iter_range(0, self.size):
            sha.update(piece)
            if not self.lfs:
                git.update(piece)
        self.sha256 = sha.hexdigest()
        if self.lfs:
            pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{self.sha256}\nsize {self.size}\n"
            self.blob_id = hashlib.sha1(b"blob %d\0" % len(pointer) + pointer.encode()).hexdigest()
        else:
            self.blob_id = git.hexdigest()

    def _block(self, index: int) -> bytes:
        # The block number in the first 8 bytes makes every block distinct: a resume at a wrong offset shows.
        return struct.pack(">Q", index ^ (self.seed << 32)) + self._base[8:]

    def iter_range(self, start: int, end: int, step: int = _BLOCK) -> Iterator[bytes]:
        """The bytes ``[start, end)`` in pieces of at most ``step``."""
        position = start
        while position < end:
            if self.data is not None:
                stop = min(end, position + step)
                yield self.data[position:stop]
            else:
                index, offset = divmod(position, _BLOCK)
                stop = min(end, (index + 1) * _BLOCK, position + step)
                block = self._block(index)
                yield block[offset : offset + (stop - position)]
            position = stop

    def content(self) -> bytes:
        """The whole file (only for small files)."""
        return b"".join(self.iter_range(0, self.size))

    def take_fault(self, on: str, start: int = 0, end: int | None = None) -> Fault | None:
        for fault in self.faults:
            covered = fault.where is None or start <= fault.where < (self.size if end is None else end)
            if fault.on == on and fault.times > 0 and covered:
                fault.times -= 1
                return fault
        return None


@dataclass(frozen=True)
class Request:
    """One request a fake server saw."""

    server: str  # "hub" or "cdn"
    method: str
    path: str
    range: str | None
    authorized: bool  # an Authorization header was sent


@dataclass
class _Repo:
    name: str
    private: bool = False
    gated: bool = False
    revisions: dict[str, str] = field(default_factory=dict)  # branch -> commit


def _commit_for(repo: str, revision: str) -> str:
    return hashlib.sha1(f"{repo}@{revision}".encode()).hexdigest()


class FakeHub:
    """The fake Hub + CDN. Register files with :meth:`add_file`, inject faults with :meth:`inject`."""

    def __init__(self, *, cdn_host: str = "127.0.0.2", tokens: tuple[str, ...] = ("hf_test_token",)) -> None:
        self.cdn_host = cdn_host
        self.tokens = set(tokens)  # valid tokens
        self.gated_access: set[str] = set()  # tokens that accepted the gated repos' licences
        self.repos: dict[str, _Repo] = {}
        self.files: dict[tuple[str, str], FakeFile] = {}
        self.by_sha256: dict[str, FakeFile] = {}
        self.requests: list[Request] = []
        self.bytes_served = 0
        self.endpoint = ""
        self.cdn = ""
        self._runners: list[web.AppRunner] = []
        self._closing: asyncio.Event | None = None
        # Bytes/s of each response's body, 0 = as fast as it goes: what users see of the HuggingFace CDN, about
        # 40 MB/s per TCP connection (huggingface_hub #2658), whatever the line.
        self.per_connection_rate = 0
        self.active = 0  # bodies being sent right now, and the most at once: how many connections a client used
        self.max_active = 0

    # -- registration ---------------------------------------------------------------------------------------
    def add_repo(self, repo: str, *, private: bool = False, gated: bool = False) -> _Repo:
        entry = self.repos.get(repo)
        if entry is None:
            entry = _Repo(repo, private, gated, {"main": _commit_for(repo, "main")})
            self.repos[repo] = entry
        entry.private, entry.gated = private or entry.private, gated or entry.gated
        return entry

    def add_file(
        self,
        repo: str,
        path: str,
        data: bytes | None = None,
        *,
        size: int | None = None,
        seed: int = 0,
        lfs: bool | None = None,
    ) -> FakeFile:
        """Register a file: ``data`` in memory, or ``size`` bytes generated from ``seed``."""
        self.add_repo(repo)
        if data is None and size is None:
            raise ValueError("give data or size")
        length = len(data) if data is not None else int(size or 0)
        if lfs is None:
            lfs = path.endswith(_LFS_SUFFIXES) or length > _LFS_THRESHOLD
        fake = FakeFile(repo=repo, path=path, size=length, lfs=lfs, data=data, seed=seed)
        self.files[(repo, path)] = fake
        self.by_sha256[fake.sha256] = fake
        return fake

    def commit(self, repo: str, revision: str = "main") -> str:
        return self.repos[repo].revisions[revision]

    def inject(self, repo: str, path: str, *faults: Fault) -> None:
        self.files[(repo, path)].faults.extend(faults)

    def url(self, repo: str, path: str, revision: str = "main") -> str:
        """The resolve URL on this hub."""
        return f"{self.endpoint}/{repo}/resolve/{revision}/{path}"

    def count(self, server: str, method: str = "GET") -> int:
        return sum(1 for entry in self.requests if entry.server == server and entry.method == method)

    # -- lifecycle ------------------------------------------------------------------------------------------
    async def start(self, port: int = 0, cdn_port: int = 0) -> FakeHub:
        self._closing = asyncio.Event()
        hub_app = web.Application()
        hub_app.router.add_route("*", "/api/models/{org}/{name}/revision/{rev}", self._api_model)
        hub_app.router.add_route("*", "/api/models/{org}/{name}/tree/{rev}", self._api_tree)
        hub_app.router.add_route("*", "/api/models/{org}/{name}/tree/{rev}/{sub:.+}", self._api_tree)
        hub_app.router.add_route("*", "/api/models/{org}/{name}", self._api_model)
        hub_app.router.add_route("*", "/{org}/{name}/resolve/{rev}/{path:.+}", self._resolve)
        cdn_app = web.Application()
        cdn_app.router.add_route("*", "/blobs/{sha256}", self._cdn)
        host_port = await self._serve(hub_app, "127.0.0.1", port)
        self.endpoint = f"http://127.0.0.1:{host_port}"
        try:
            cdn_port_bound = await self._serve(cdn_app, self.cdn_host, cdn_port)
        except OSError:  # no 127.0.0.2 here: a second port still makes it another origin
            self.cdn_host = "127.0.0.1"
            cdn_port_bound = await self._serve(cdn_app, self.cdn_host, cdn_port)
        self.cdn = f"http://{self.cdn_host}:{cdn_port_bound}"
        return self

    async def _serve(self, app: web.Application, host: str, port: int) -> int:
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, host, port, backlog=128)
        try:
            await site.start()
        except OSError:
            await runner.cleanup()
            raise
        self._runners.append(runner)
        server = site._server
        assert server is not None and server.sockets  # type: ignore[attr-defined]
        return int(server.sockets[0].getsockname()[1])  # type: ignore[attr-defined]

    async def stop(self) -> None:
        if self._closing is not None:
            self._closing.set()
        for runner in reversed(self._runners):
            await runner.cleanup()
        self._runners.clear()

    async def __aenter__(self) -> FakeHub:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # -- handlers -------------------------------------------------------------------------------------------
    def _log(self, server: str, request: web.Request) -> None:
        authorized = "Authorization" in request.headers
        self.requests.append(Request(server, request.method, request.path, request.headers.get("Range"), authorized))

    def _auth_error(self, repo: _Repo, request: web.Request) -> web.Response | None:
        auth = request.headers.get("Authorization", "")
        token = auth.removeprefix("Bearer ").strip() if auth.startswith("Bearer ") else None
        if token is not None and token not in self.tokens:
            return _error(401, "Invalid credentials in Authorization header", None)
        if repo.private and token is None:
            return _error(401, "Repository not found", "RepoNotFound")
        if repo.gated:
            if token is None:
                return _error(
                    401,
                    f"Access to model {repo.name} is restricted. You must have access to it and be authenticated "
                    "to access it. Please log in.",
                    "GatedRepo",
                )
            if token not in self.gated_access:
                return _error(
                    403,
                    f"Access to model {repo.name} is restricted and you are not in the authorized list. "
                    f"Visit https://huggingface.co/{repo.name} to ask for access.",
                    "GatedRepo",
                )
        return None

    def _lookup(self, request: web.Request) -> tuple[_Repo | None, str | None, web.Response | None]:
        name = f"{request.match_info['org']}/{request.match_info['name']}"
        repo = self.repos.get(name)
        if repo is None:
            return None, None, _error(401, "Repository not found", "RepoNotFound")
        denied = self._auth_error(repo, request)
        if denied is not None:
            return repo, None, denied
        revision = request.match_info.get("rev", "main")
        commit = repo.revisions.get(revision) or (revision if revision in repo.revisions.values() else None)
        if commit is None:
            return repo, None, _error(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return repo, commit, None

    async def _resolve(self, request: web.Request) -> web.StreamResponse:
        self._log("hub", request)
        repo, commit, problem = self._lookup(request)
        if problem is not None:
            return problem
        assert repo is not None and commit is not None
        fake = self.files.get((repo.name, request.match_info["path"]))
        if fake is None:
            return _error(404, "Entry not found", "EntryNotFound")
        fault = fake.take_fault("resolve")
        if fault is not None and fault.status:
            return _fault_response(fault)
        headers = {"X-Repo-Commit": commit, "Accept-Ranges": "bytes", "Vary": "Origin, Accept"}
        if fake.lfs:
            headers.update(
                {
                    "Location": f"{self.cdn}/blobs/{fake.sha256}?X-Amz-Signature=fake&repo={repo.name}",
                    "X-Linked-Etag": f'"{fake.sha256}"',
                    "X-Linked-Size": str(fake.size),
                    "ETag": f'"{fake.blob_id}"',
                    "Content-Type": "text/plain; charset=utf-8",
                }
            )
            return web.Response(status=302, headers=headers, text="Found. Redirecting")
        headers["ETag"] = f'"{fake.blob_id}"'
        return await self._send_bytes(request, fake, headers)

    async def _cdn(self, request: web.Request) -> web.StreamResponse:
        self._log("cdn", request)
        fake = self.by_sha256.get(request.match_info["sha256"])
        if fake is None:
            return web.Response(status=404, text="NoSuchKey")
        return await self._send_bytes(request, fake, {"ETag": f'"{fake.sha256}"', "Accept-Ranges": "bytes"})

    async def _send_bytes(self, request: web.Request, fake: FakeFile, headers: dict[str, str]) -> web.StreamResponse:
        asked = _parse_range(request.headers.get("Range", ""), fake.size) if request.headers.get("Range") else None
        fault = fake.take_fault("body", *(asked or (0, fake.size))) if request.method == "GET" else None
        if fault is not None and fault.redirect_loop:
            fault.times += 1  # every hop of the loop counts as the same fault
            return web.Response(status=302, headers={"Location": str(request.url)})
        if fault is not None and fault.redirect_to:
            return web.Response(status=302, headers={"Location": fault.redirect_to})
        if fault is not None and fault.status:
            return _fault_response(fault)
        start, end = 0, fake.size  # [start, end)
        status = 200
        wanted = request.headers.get("Range")
        validator = request.headers.get("If-Range")
        if wanted and validator is not None and validator != headers.get("ETag"):
            wanted = None  # RFC 9110 13.1.5: the representation changed, so the whole of it, 200
        if wanted and not (fault and fault.ignore_range):
            parsed = _parse_range(wanted, fake.size)
            if parsed is None:
                return web.Response(status=416, headers={"Content-Range": f"bytes */{fake.size}"})
            start, end = parsed
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{fake.size}"
        length = end - start + (fault.length_delta if fault else 0)
        response = web.StreamResponse(status=status, headers=headers)
        response.content_type = "application/octet-stream"
        response.content_length = max(0, length)
        if fault is not None and fault.length_delta > 0:
            response.force_close()  # the body ends short: close so the client sees it
        await response.prepare(request)
        if request.method == "HEAD":
            return response
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            return await self._body(request, response, fake, fault, start, end, length)
        except ConnectionError:
            # The client went away (a segment it no longer needs, a cancelled job) or the fault dropped it.
            return response
        finally:
            self.active -= 1

    async def _body(
        self,
        request: web.Request,
        response: web.StreamResponse,
        fake: FakeFile,
        fault: Fault | None,
        start: int,
        end: int,
        length: int,
    ) -> web.StreamResponse:
        sent = 0
        limit = min(end - start, max(0, length))
        rate = fault.rate if fault is not None and fault.rate else self.per_connection_rate
        began = asyncio.get_running_loop().time()
        step = max(16 * 1024, rate // 50) if rate else _BLOCK  # paced in 20 ms steps under a cap
        for piece in fake.iter_range(start, start + limit, step):
            if rate:
                due = began + sent / rate
                delay = due - asyncio.get_running_loop().time()
                if delay > 0:
                    await asyncio.sleep(delay)
            if (
                fault is not None
                and fault.flip_at is not None
                and start + sent <= fault.flip_at < start + sent + len(piece)
            ):
                index = fault.flip_at - start - sent
                piece = piece[:index] + bytes([piece[index] ^ 0xFF]) + piece[index + 1 :]
            cut = None
            if fault is not None and fault.drop_after is not None and sent + len(piece) >= fault.drop_after:
                cut = fault.drop_after - sent
            if fault is not None and fault.stall_after is not None and sent + len(piece) >= fault.stall_after:
                cut = fault.stall_after - sent if cut is None else min(cut, fault.stall_after - sent)
            if cut is not None:
                piece = piece[:cut]
            if fault is not None and fault.drip_after is not None and sent + len(piece) > fault.drip_after:
                head, piece = piece[: max(0, fault.drip_after - sent)], piece[max(0, fault.drip_after - sent) :]
                await response.write(head)
                sent += len(head)
                for index in range(len(piece)):  # bounded by the piece; the client gives up long before
                    if self._closing is not None and self._closing.is_set():
                        break
                    await response.write(piece[index : index + 1])
                    sent += 1
                    await asyncio.sleep(0.1)
                fake.bytes_served += sent
                self.bytes_served += sent
                continue
            if piece:
                await response.write(piece)
                sent += len(piece)
                fake.bytes_served += len(piece)
                self.bytes_served += len(piece)
            if cut is not None:
                assert fault is not None
                if fault.stall_after is not None and sent >= fault.stall_after:
                    await self._stall(request, fault.stall_for)
                    fault.stall_after = None
                    if fault.drop_after is None:
                        continue
                # Abort mid-body: the client sees the connection drop after exactly `sent` bytes.
                await asyncio.sleep(0.05)  # let the transport flush what was written
                if request.transport is not None:
                    request.transport.close()
                raise ConnectionResetError("fakehub: dropped on purpose")
        await response.write_eof()
        return response

    async def _stall(self, request: web.Request, seconds: float) -> None:
        assert self._closing is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while loop.time() < deadline and not self._closing.is_set():
            if request.transport is None or request.transport.is_closing():
                return
            await asyncio.sleep(0.02)

    async def _api_model(self, request: web.Request) -> web.Response:
        self._log("hub", request)
        repo, commit, problem = self._lookup(request)
        if problem is not None:
            return problem
        assert repo is not None
        files = sorted(path for (name, path) in self.files if name == repo.name)
        return web.json_response(
            {
                "_id": hashlib.md5(repo.name.encode()).hexdigest()[:24],
                "id": repo.name,
                "modelId": repo.name,
                "author": repo.name.split("/")[0],
                "sha": commit,
                "lastModified": "2025-01-01T00:00:00.000Z",
                "createdAt": "2024-01-01T00:00:00.000Z",
                "private": repo.private,
                "gated": "auto" if repo.gated else False,
                "disabled": False,
                "downloads": 0,
                "likes": 0,
                "tags": [],
                "siblings": [{"rfilename": path} for path in files],
            },
            headers={"X-Repo-Commit": commit or ""},
        )

    async def _api_tree(self, request: web.Request) -> web.Response:
        self._log("hub", request)
        repo, _commit, problem = self._lookup(request)
        if problem is not None:
            return problem
        assert repo is not None
        prefix = request.match_info.get("sub", "").strip("/")
        recursive = request.query.get("recursive", "false").lower() in ("1", "true")
        entries: dict[str, dict[str, Any]] = {}
        for (name, path), fake in sorted(self.files.items()):
            if name != repo.name or (prefix and not path.startswith(prefix + "/")):
                continue
            relative = path[len(prefix) + 1 :] if prefix else path
            parts = relative.split("/")
            if len(parts) > 1:
                for depth in range(1, len(parts) if recursive else 2):
                    folder = "/".join(([prefix] if prefix else []) + parts[:depth])
                    entries.setdefault(
                        folder,
                        {"type": "directory", "oid": hashlib.sha1(folder.encode()).hexdigest(), "size": 0,
                         "path": folder},
                    )  # fmt: skip
                if not recursive:
                    continue
            entry: dict[str, Any] = {"type": "file", "oid": fake.blob_id, "size": fake.size, "path": path}
            if fake.lfs:
                entry["lfs"] = {"oid": fake.sha256, "size": fake.size, "pointerSize": 134}
            entries[path] = entry
        return web.json_response(list(entries.values()))


def _error(status: int, message: str, code: str | None) -> web.Response:
    headers = {"X-Error-Message": message}
    if code:
        headers["X-Error-Code"] = code
    return web.json_response({"error": message}, status=status, headers=headers)


def _fault_response(fault: Fault) -> web.Response:
    assert fault.status is not None
    headers = {}
    if fault.retry_after is not None:
        headers["Retry-After"] = fault.retry_after
    message = {429: "Too Many Requests", 503: "Service Unavailable"}.get(fault.status, "injected fault")
    if fault.error_code:
        headers["X-Error-Code"] = fault.error_code
    headers["X-Error-Message"] = message
    return web.json_response({"error": message}, status=fault.status, headers=headers)


def _parse_range(value: str, size: int) -> tuple[int, int] | None:
    """``bytes=a-b`` / ``bytes=a-`` / ``bytes=-n`` -> [start, end), or None when unsatisfiable."""
    if not value.startswith("bytes=") or "," in value:
        return None
    first, _, last = value[6:].strip().partition("-")
    try:
        if first == "":
            count = int(last)
            return (max(0, size - count), size) if count > 0 else None
        start = int(first)
        end = int(last) + 1 if last else size
    except ValueError:
        return None
    if start >= size or end <= start:
        return None
    return start, min(end, size)


class FakeHubThread:
    """Run a :class:`FakeHub` on its own event loop in a daemon thread, for synchronous tests and benches.

    ``with FakeHubThread() as hub:`` gives the :class:`FakeHub`; register files before requests reach them.
    """

    def __init__(self, **kwargs: Any) -> None:
        self.hub = FakeHub(**kwargs)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fakehub", daemon=True)

    def __enter__(self) -> FakeHub:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.hub.start(), self._loop).result(timeout=10)
        return self.hub

    def __exit__(self, *exc_info: object) -> None:
        try:
            asyncio.run_coroutine_threadsafe(self.hub.stop(), self._loop).result(timeout=10)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            self._loop.close()


def _parse_size(text: str) -> int:
    units = {"": 1, "k": 1000, "m": 1000**2, "g": 1000**3, "kib": 1024, "mib": 1024**2, "gib": 1024**3}
    lowered = text.strip().lower()
    number = lowered.rstrip("abcdefghijklmnopqrstuvwxyz")
    return int(float(number) * units[lowered[len(number) :]])


async def _serve_forever(args: argparse.Namespace) -> None:
    hub = FakeHub()
    fakes = []
    for index in range(args.count):
        # --count N serves N files: the path gets a number before its suffix (big1.safetensors, ...).
        stem, dot, suffix = args.path.rpartition(".")
        path = args.path if args.count == 1 else f"{stem}{index}{dot}{suffix}"
        fakes.append(hub.add_file(args.repo, path, size=_parse_size(args.size), seed=args.seed + index, lfs=True))
    fake = fakes[0]
    hub.per_connection_rate = _parse_size(args.per_connection_rate) if args.per_connection_rate else 0
    await hub.start(port=args.port)
    print(
        json.dumps(
            {"endpoint": hub.endpoint, "cdn": hub.cdn, "repo": args.repo, "path": fake.path, "size": fake.size,
             "sha256": fake.sha256, "commit": hub.commit(args.repo), "paths": [f.path for f in fakes]}
        ),
        flush=True,
    )  # fmt: skip
    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, done.set)
    # stdin closing (the parent went away) also ends the server.
    loop.add_reader(sys.stdin.fileno(), lambda: done.set() if not sys.stdin.buffer.read1(1) else None)
    await done.wait()
    with contextlib.suppress(Exception):
        loop.remove_reader(sys.stdin.fileno())
    await hub.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description="Serve one generated file from a fake HuggingFace Hub")
    parser.add_argument("--size", default="1GiB")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repo", default="bench/big")
    parser.add_argument("--path", default="big.safetensors")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--count", type=int, default=1, help="serve this many files of --size")
    parser.add_argument("--per-connection-rate", default="", help="cap each response's body, e.g. 40MiB (per second)")
    asyncio.run(_serve_forever(parser.parse_args()))


if __name__ == "__main__":
    main()
