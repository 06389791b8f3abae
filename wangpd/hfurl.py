"""The one reading of a Hugging Face Hub file URL; stdlib only.

``https://huggingface.co/<org>/<repo>/resolve/<rev>/<path>`` and the forms users paste: ``hf.co`` and
``www.huggingface.co``, ``/blob/`` (the web page) for ``/resolve/``, ``?download=true``, percent-escapes, and a
mirror's host (``hub.endpoint``). Every module that accepts a Hub URL (definitions, ``wangpctl add``, InvokeAI's
sources) asks :func:`parse`, so they all give the same answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from wangpd.paths import safe_repo_path

__all__ = [
    "HF_HOSTS",
    "HubFile",
    "file_name_of",
    "host_of",
    "normalize",
    "parse",
    "plain_url_refusal",
    "resolve_url",
    "same_origin",
]

HF_HOSTS = ("huggingface.co", "www.huggingface.co", "hf.co")
_CANONICAL = "huggingface.co"
_NOT_MODELS = ("datasets", "spaces")  # Wan2GP only loads model repos


@dataclass(frozen=True)
class HubFile:
    """One file of one revision of a model repo."""

    repo: str
    revision: str
    path: str


def host_of(url: str) -> str:
    """The lower-case host of ``url`` ("" when it has none or cannot be parsed)."""
    try:
        return (urlsplit(url.strip()).hostname or "").lower()
    except ValueError:
        return ""


def parse(url: str, extra_hosts: tuple[str, ...] = ()) -> HubFile | None:
    """``(repo, revision, path)`` of a Hub file URL, or None when ``url`` is not one (another host, a dataset or a
    space, a page that names no file).

    Raises ValueError, with the reason, for a Hub file URL whose path leaves the repository (``..``, an empty or
    ``.`` segment): such a URL is refused, never taken for a plain one.
    """
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return None
    host = (parts.hostname or "").lower()
    if parts.scheme not in ("http", "https") or host not in (*HF_HOSTS, *(h.lower() for h in extra_hosts)):
        return None
    segments = parts.path.split("/")
    # ['', org, repo, 'resolve', rev, path...]
    if len(segments) < 6 or segments[0] != "" or segments[3] not in ("resolve", "blob"):
        return None
    org, name, revision = unquote(segments[1]), unquote(segments[2]), unquote(segments[4])
    if not org or not name or not revision or org in _NOT_MODELS:
        return None
    path = unquote("/".join(segments[5:]))
    if not path:
        return None
    if not safe_repo_path(path) or "/" in org or "/" in name or name in (".", ".."):
        raise ValueError(f"{url!r}: the path in the repository escapes it ('..', '.' or an empty part)")
    return HubFile(f"{org}/{name}", revision, path)


def plain_url_refusal(url: str, allowed_hosts: tuple[str, ...] | list[str], *, allow_http: bool = False) -> str | None:
    """Why a plain (non-Hub) download URL may not be fetched, or None when it may: HTTPS only, and only from
    ``hub.allowed_hosts`` (user finetunes on other hosts)."""
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return f"{url!r} is not a URL"
    if parts.scheme != "https" and not (allow_http and parts.scheme == "http"):
        return f"{url}: only https:// downloads are allowed"
    host = (parts.hostname or "").lower()
    if host not in {h.lower() for h in allowed_hosts}:
        return f"{url}: host {host or '(none)'} is not in hub.allowed_hosts; add it to the config to download from it"
    return None


def file_name_of(url: str) -> str:
    """The file name a plain URL names (its last path segment, decoded), or ``download`` when it names none safely."""
    try:
        path = urlsplit(url).path
    except ValueError:
        return "download"
    name = unquote(path.rstrip("/").rsplit("/", 1)[-1]) or "download"
    return "download" if name in (".", "..") or "/" in name or "\0" in name else name


def resolve_url(repo: str, revision: str, path: str) -> str:
    """The canonical download URL of a Hub file (what Wan2GP's definitions write)."""
    return f"https://{_CANONICAL}/{repo}/resolve/{revision}/{quote(path, safe='/')}"


def normalize(url: str) -> str:
    """A file URL in one canonical form for comparing: lower-case scheme and host, any Hub host ->
    ``huggingface.co``, ``/blob/`` -> ``/resolve/``, percent-escapes normalised, ``download=true`` dropped, no
    fragment."""
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return url.strip()
    host = (parts.netloc or "").lower()
    path = quote(unquote(parts.path), safe="/:@!$&'()*+,;=-._~")
    if host.split(":")[0] in HF_HOSTS:
        host = _CANONICAL
        segments = path.split("/")
        if len(segments) > 3 and segments[3] == "blob":
            segments[3] = "resolve"
            path = "/".join(segments)
    query = "&".join(q for q in parts.query.split("&") if q and q.lower() != "download=true")
    return urlunsplit((parts.scheme.lower(), host, path, query, ""))


def same_origin(url_a: str, url_b: str) -> bool:
    """True when both URLs share scheme, host and port (where the Hub token may be sent)."""
    a, b = urlsplit(url_a), urlsplit(url_b)
    ports = {"http": 80, "https": 443}
    return (a.scheme, (a.hostname or "").lower(), a.port or ports.get(a.scheme)) == (
        b.scheme,
        (b.hostname or "").lower(),
        b.port or ports.get(b.scheme),
    )
