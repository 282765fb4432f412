"""Remote .fredset files: an http(s) URL is downloaded once into a local cache, and the reader reads that copy.

``fredset.load``, ``read_file``, ``FredDataset`` and the commands that read a file take a URL wherever they take
a path (a ``str`` starting with ``http://`` or ``https://``; every other string, ``file:`` and ``ftp:`` included,
is a path, and a ``pathlib.Path`` is always a path). The reader then runs all its checks on the cached copy, as
on any local file.

Why the standard library (``urllib.request``) and not requests or httpx: fredset makes one GET per file, with a
size bound, a timeout and a streamed body, and urllib does all three (TLS certificates are verified, proxies
from the environment are honoured); a dependency would add nothing this needs.

The cache (:func:`default_cache_dir`: ``$FREDSET_CACHE``, else the platform's cache folder) holds

* ``sha256/<hex>.fredset`` for a URL opened with ``sha256=``: content-addressed, so two URLs of the same file
  share it; a cached copy is hashed again before it is used, and one whose hash is wrong (a damaged disk,
  an edit) is removed and downloaded again;
* ``url/<sha256(url)[:32]>-<name>`` for a URL opened without ``sha256=``. It is cached **by its URL**: a second
  open uses the copy without a connection, so a file changed on the server is not fetched again. Pin the
  file with ``sha256=``, or remove the entry (:func:`forget`, or delete the file) to fetch it afresh.

A download goes to a temporary file in the cache folder and is renamed into place (atomically) only once it
is complete, within ``max_file_bytes`` and, when pinned, has the SHA-256 asked for; on any failure the
temporary file is removed and nothing is cached. The reader removes a cached copy it refuses (see
:func:`fredset.format.reader.read_file`), so the cache holds only files that were readable.

This module depends on nothing of the reader (the reader imports it).
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import math
import os
import pathlib
import re
import socket
import ssl
import stat
import sys
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from .errors import FredsetError
from .files import file_digest, open_atomically
from .progress import Progress, is_terminal
from .version import __version__

__all__ = ["DEFAULT_TIMEOUT", "cache_path", "check_sha256", "default_cache_dir", "fetch", "forget", "is_url"]

DEFAULT_TIMEOUT = 30.0  # seconds for the connection and for each read
CHUNK_BYTES = 1 << 16
MAX_REDIRECTS = 5

_SCHEMES = ("http://", "https://")
_SHA256 = re.compile(r"[0-9a-fA-F]{64}")
_LENGTH = re.compile(r"[0-9]{1,19}")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def is_url(source: object) -> bool:
    """Whether ``source`` is a URL fredset downloads: a ``str`` starting with ``http://`` or ``https://``
    (any case). Other schemes are not URLs here (a path), nor is a ``pathlib.Path`` (which would have lost the
    ``//`` anyway)."""
    return isinstance(source, str) and source[:8].lower().startswith(_SCHEMES)


def check_sha256(value: object, path: str | os.PathLike | None = None) -> str | None:
    """``value`` as 64 lower-case hex digits (None stays None); FredsetError (naming ``path``) otherwise.

    This is the SHA-256 of the whole file, as ``sha256sum FILE`` prints it (not the checksum in the file's
    header, which covers the payload after the 512-byte header).
    """
    if value is None:
        return None
    if not isinstance(value, str) or _SHA256.fullmatch(value) is None:
        shown = value if isinstance(value, str) else type(value).__name__
        raise FredsetError(f"sha256 must be 64 hexadecimal digits (the SHA-256 of the whole file), not {shown!r}",
                           path)
    return value.lower()


def default_cache_dir() -> pathlib.Path:
    """Where downloads are kept: ``$FREDSET_CACHE`` if set, else ``$XDG_CACHE_HOME/fredset`` or
    ``~/.cache/fredset`` (Linux and other Unix), ``~/Library/Caches/fredset`` (macOS),
    ``%LOCALAPPDATA%\\fredset\\Cache`` (Windows)."""
    configured = os.environ.get("FREDSET_CACHE")
    if configured:
        return pathlib.Path(configured).expanduser()
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or os.path.join(os.path.expanduser("~"), "AppData", "Local")
        return pathlib.Path(base) / "fredset" / "Cache"
    if sys.platform == "darwin":
        return pathlib.Path.home() / "Library" / "Caches" / "fredset"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = pathlib.Path(xdg) if xdg and os.path.isabs(xdg) else pathlib.Path.home() / ".cache"  # XDG: absolute only
    return base / "fredset"


def cache_path(url: str, *, sha256: str | None = None, cache_dir: str | os.PathLike | None = None) -> pathlib.Path:
    """The cache entry of ``url`` (whether or not it exists): by the file's hash when ``sha256`` is given, else
    by the URL's (see the module docstring)."""
    root = pathlib.Path(cache_dir) if cache_dir is not None else default_cache_dir()
    digest = check_sha256(sha256, url)
    if digest is not None:
        return root / "sha256" / f"{digest}.fredset"
    key = hashlib.sha256(url.encode("utf-8", "surrogatepass")).hexdigest()[:32]
    return root / "url" / f"{key}-{_file_name(url)}"


def forget(url: str, *, sha256: str | None = None, cache_dir: str | os.PathLike | None = None) -> bool:
    """Remove ``url``'s cache entry (see :func:`cache_path`), so the next open downloads it; False if there was
    none (or it could not be removed)."""
    try:
        os.unlink(cache_path(url, sha256=sha256, cache_dir=cache_dir))
    except OSError:
        return False
    return True


def fetch(url: str, *, max_file_bytes: int, sha256: str | None = None,
          timeout: float = DEFAULT_TIMEOUT, cache_dir: str | os.PathLike | None = None,
          progress: bool | None = None) -> pathlib.Path:
    """The local path of ``url``'s file: the cached copy, or a new one downloaded into the cache.

    Args:
        url: an ``http://`` or ``https://`` URL (redirects are followed, to http(s) URLs only).
        sha256: the whole file's SHA-256 (hex); the download, and a cached copy, must have it.
        max_file_bytes: refuse a larger file: before the download when the server says its size
            (Content-Length), else as soon as more bytes than this arrive.
        timeout: seconds to wait for the connection and for each read; a server that stops answering
            ends in an error, not a hang.
        cache_dir: the cache folder (default :func:`default_cache_dir`).
        progress: report the download on stderr: None (default) only when stderr is a terminal, True always
            (plain lines every few seconds when it is not a terminal), False never.

    Raises FredsetError, one line naming the URL, for a URL that is not http(s), an HTTP error status, a
    connection that fails or times out, a truncated or oversized transfer, a SHA-256 mismatch, or a cache
    folder that cannot be written; nothing is cached then.
    """
    if not is_url(url):
        raise FredsetError("not an http:// or https:// URL", url)
    try:
        parts = urllib.parse.urlsplit(url)
        has_credentials = parts.username is not None or parts.password is not None
        parts.port  # raises ValueError for a port that is not a number in 0..65535
    except ValueError as error:
        raise FredsetError(f"invalid URL ({error})", url) from None
    if has_credentials:  # they would end up in error messages, FileInfo.path and logs
        shown = parts._replace(netloc="***@" + parts.netloc.rpartition("@")[2]).geturl()
        raise FredsetError("URLs with a user name or password are not supported", shown)
    digest = check_sha256(sha256, url)
    if isinstance(max_file_bytes, bool) or not isinstance(max_file_bytes, int) or max_file_bytes < 0:
        raise FredsetError(f"max_file_bytes must be an integer >= 0, not {max_file_bytes!r}", url)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout < math.inf:
        raise FredsetError(f"timeout must be a number of seconds > 0, not {timeout!r}", url)
    target = cache_path(url, sha256=digest, cache_dir=cache_dir)
    if _usable(target, digest, max_file_bytes, url):
        return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise FredsetError(f"cannot create the download cache folder ({error.strerror or error}); set "
                           "FREDSET_CACHE to a writable folder", target.parent) from None
    show = is_terminal(sys.stderr) if progress is None else progress
    _download(url, target, digest, max_file_bytes, float(timeout), show)
    return target


def _usable(target: pathlib.Path, digest: str | None, limit: int, url: str) -> bool:
    """Whether the cache entry ``target`` exists and can be used (a pinned one: its hash checked again)."""
    try:
        status = os.stat(target)
    except FileNotFoundError:
        return False
    except OSError as error:
        raise FredsetError(f"cannot read the cached copy {target} ({error.strerror or error})", url) from None
    if not stat.S_ISREG(status.st_mode):
        raise FredsetError(f"the cached copy {target} is not a regular file: remove it", url)
    if status.st_size > limit:
        raise FredsetError(f"file is larger than the {limit}-byte limit (max_file_bytes)", url)
    if digest is None or file_digest(target) == digest:
        return True
    with contextlib.suppress(OSError):  # damaged or edited: download it again
        os.unlink(target)
    return False


class _Redirects(urllib.request.HTTPRedirectHandler):
    """Follows at most MAX_REDIRECTS redirects, and only to http(s) URLs (urllib alone would follow ftp:)."""

    max_redirections = MAX_REDIRECTS

    def redirect_request(self, req: urllib.request.Request, fp: Any, code: int, msg: str, headers: Any,
                         newurl: str) -> urllib.request.Request | None:
        if not is_url(newurl):
            raise FredsetError(f"download failed: redirected (HTTP {code}) to {newurl!r}, which is not an "
                               "http(s) URL", req.full_url)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _download(url: str, target: pathlib.Path, digest: str | None, limit: int, timeout: float, show: bool) -> None:
    """GET ``url`` into ``target`` through a temporary file, with every check of :func:`fetch`."""
    request = urllib.request.Request(url, headers={"User-Agent": f"fredset/{__version__}",
                                                   "Accept-Encoding": "identity"})
    try:
        response = urllib.request.build_opener(_Redirects).open(request, timeout=timeout)
    except urllib.error.HTTPError as error:
        error.close()
        raise FredsetError(f"download failed: HTTP {error.code} {error.reason}", url) from None
    except http.client.InvalidURL as error:  # control characters, a bad port
        raise FredsetError(f"invalid URL ({error})", url) from None
    except (OSError, http.client.HTTPException) as error:  # URLError is an OSError
        raise FredsetError(f"download failed: {_reason(error, timeout)}", url) from None
    except ValueError as error:  # http.client.InvalidURL, a bad port, a host name that cannot be encoded
        raise FredsetError(f"invalid URL ({error})", url) from None
    with contextlib.closing(response):
        if response.status != 200:
            raise FredsetError(f"download failed: HTTP {response.status} {response.reason} (expected 200)", url)
        declared = _declared_length(response.headers, url)
        if declared is not None and declared > limit:
            raise FredsetError(f"file is {declared} bytes (Content-Length), larger than the {limit}-byte limit "
                               "(max_file_bytes)", url)
        bar = Progress(declared, unit="B", label=f"downloading {_file_name(url)}") if show else None
        hasher = hashlib.sha256()
        received = 0
        try:
            with open_atomically(target) as stream:
                while True:
                    try:
                        chunk = response.read1(min(CHUNK_BYTES, limit + 1 - received))  # what has arrived
                    except (OSError, http.client.HTTPException, ValueError) as error:
                        raise FredsetError(f"download failed after {received} bytes: {_reason(error, timeout)}",
                                           url) from None
                    if not chunk:
                        break
                    received += len(chunk)
                    if received > limit:
                        raise FredsetError(f"file is larger than the {limit}-byte limit (max_file_bytes); the "
                                           "download was stopped", url)
                    hasher.update(chunk)
                    stream.write(chunk)
                    if bar is not None:
                        bar.update(len(chunk))
                if declared is not None and received < declared:
                    raise FredsetError(f"truncated download: {received} of the {declared} bytes announced "
                                       "(Content-Length) arrived", url)
                if digest is not None and hasher.hexdigest() != digest:
                    raise FredsetError(f"sha256 mismatch: the download's SHA-256 is {hasher.hexdigest()}, not "
                                       f"{digest}; nothing was cached", url)
        finally:
            if bar is not None:
                bar.close()


def _declared_length(headers: Any, url: str) -> int | None:
    """The Content-Length the server sent (None when absent or the body is chunked); a malformed one is refused."""
    value = headers.get("Content-Length")
    if value is None or "chunked" in (headers.get("Transfer-Encoding") or "").lower():
        return None
    if _LENGTH.fullmatch(value.strip()) is None:
        raise FredsetError(f"download failed: invalid Content-Length {value!r}", url)
    return int(value.strip())


def _reason(error: BaseException, timeout: float) -> str:
    """What went wrong with a connection, in a few words."""
    if isinstance(error, urllib.error.URLError):
        if not isinstance(error.reason, BaseException):
            return str(error.reason)
        error = error.reason
    if isinstance(error, TimeoutError):
        return f"no answer within {timeout:g} s (timeout)"
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(error, socket.gaierror):
        return f"cannot resolve the host name ({error.strerror or error})"
    if isinstance(error, ssl.SSLCertVerificationError):
        return f"TLS certificate not accepted ({error.verify_message or error})"
    if isinstance(error, ssl.SSLError):
        return f"TLS error ({error.reason or error})"
    if isinstance(error, http.client.HTTPException):
        return f"bad HTTP response ({type(error).__name__}{': ' + str(error) if str(error) else ''})"
    if isinstance(error, OSError):
        return error.strerror or str(error) or type(error).__name__
    return f"{type(error).__name__}: {error}"


def _file_name(url: str) -> str:
    """The last segment of the URL's path, reduced to safe characters (for cache names and the progress line)."""
    try:
        segment = urllib.parse.unquote(urllib.parse.urlsplit(url).path.rsplit("/", 1)[-1])
    except ValueError:
        segment = ""
    name = _UNSAFE.sub("_", segment).lstrip(".")[-80:]
    return name or "download.fredset"
