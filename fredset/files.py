"""Small file and device utilities every layer shares: atomic and exclusive writes, SHA-256 of a file,
and the one device policy.

Device policy (:func:`resolve_device`): ``"auto"`` picks CUDA when it is available, else the CPU; ``None``
means the CPU; any device named explicitly must exist, or :class:`~fredset.errors.FredsetError` says so.
Nothing falls back silently: a run asked to use a GPU never quietly takes hours on the CPU instead.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pathlib
import re
import secrets
import stat
import time
from collections.abc import Iterator
from typing import Any, BinaryIO

import torch

from .errors import FredsetError

__all__ = ["create_exclusively", "file_digest", "open_atomically", "process_alive", "remove_stale_temporaries",
           "resolve_device", "sha256_file", "summarised_source", "write_atomically"]


def write_atomically(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to a temporary sibling of ``path``, flush it to disk, then rename it over ``path``.

    An interrupted write never leaves a partial file at ``path``. The file gets the mode ``path`` had
    when it existed, else the default for a new file (0666 & ~umask), as a plain ``open`` would give.

    Temporary files are named ``.NAME.PID.RANDOM.tmp`` (PID: the writing process). A writer that is
    killed leaves its temporary file behind, so after each successful write the siblings of that
    form (and the ``.NAME.XXXXXXXX.tmp`` names of earlier versions, which hold no PID) are removed
    when they are stale: unmodified for STALE_TEMPORARY_SECONDS and, where the name holds a PID, that
    process is gone from this machine. A concurrent writer's temporary file is therefore never
    removed: it is fresh (written moments ago, in one call) and its process is alive; the age test
    also covers a PID seen from another machine sharing the folder.
    """
    with open_atomically(path) as stream:
        stream.write(data)


@contextlib.contextmanager
def open_atomically(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """A binary stream whose bytes replace ``path`` when the block ends, for data written in pieces (a download).

    The same temporary file, mode, fsync, rename and stale-temporary rules as :func:`write_atomically`. If the
    block raises, the temporary file is removed and ``path`` is untouched; an ``OSError`` from the block or the
    disk becomes a FredsetError naming ``path`` ("cannot write file"), so errors that are not the disk's should
    be turned into FredsetError inside the block.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    name = os.path.basename(path)
    temporary = os.path.join(folder, f".{name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        status = os.stat(path)
        mode = stat.S_IMODE(status.st_mode) if stat.S_ISREG(status.st_mode) else None
    except (OSError, ValueError):  # no such file (or not one we can stat): a new file's default
        mode = None
    try:  # 0o666 is reduced by the umask, like a plain open(); the old mode is restored with fchmod
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    except OSError as error:
        raise FredsetError(f"cannot write here ({error.strerror or error})", path) from None
    except ValueError as error:  # a NUL byte in the path
        raise FredsetError(f"invalid path ({error})", path) from None
    try:
        with os.fdopen(descriptor, "wb") as stream:
            if mode is not None:
                try:
                    os.fchmod(stream.fileno(), mode)
                except (OSError, AttributeError):  # a file system without modes (or no fchmod): keep the default
                    pass
            yield stream
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException as error:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        if isinstance(error, OSError):
            raise FredsetError(f"cannot write file ({error.strerror or error})", path) from None
        raise
    remove_stale_temporaries(path)


#: A temporary sibling unmodified for this long, whose writer is gone, is left over from a killed write.
STALE_TEMPORARY_SECONDS = 10 * 60

# .NAME.PID.RANDOM.tmp (this module), or .NAME.XXXXXXXX.tmp (tempfile.mkstemp, earlier versions).
_TEMPORARY = re.compile(r"(?:(?P<pid>[0-9]{1,10})\.[0-9a-f]{8}|[a-z0-9_]{8})\.tmp")


def remove_stale_temporaries(path: str | os.PathLike, *, older_than: float = STALE_TEMPORARY_SECONDS) -> list[str]:
    """Remove the stale temporary siblings of ``path`` that killed writes left (see :func:`write_atomically`);
    return the paths removed. Best effort: a sibling that cannot be checked or removed is skipped."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    prefix = f".{os.path.basename(path)}."
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    now = time.time()
    for entry in entries:
        if not entry.name.startswith(prefix):
            continue
        match = _TEMPORARY.fullmatch(entry.name[len(prefix):])
        if match is None:
            continue
        try:
            if (not entry.is_file(follow_symlinks=False)
                    or now - entry.stat(follow_symlinks=False).st_mtime < older_than):
                continue
            if match["pid"] is not None and process_alive(int(match["pid"])):
                continue
            os.unlink(entry.path)
        except OSError:
            continue
        removed.append(entry.path)
    return removed


def process_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this machine (another user's counts); unsure means alive."""
    if pid == os.getpid():
        return True
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OSError, OverflowError, ValueError):  # PermissionError: alive, another user's; else: unsure
        return True
    return True


def create_exclusively(path: str | os.PathLike, data: bytes) -> bool:
    """Write ``path`` only if it does not exist yet, atomically; False when another process got there first."""
    path = pathlib.Path(path)
    if path.exists():
        return False
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with open(temporary, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        try:
            os.link(temporary, path)  # fails if path exists: never replaces another process's file
        except FileExistsError:
            return False
        except OSError:  # a file system without hard links: the caller's mutex is the only guard there
            if path.exists():
                return False
            os.replace(temporary, path)
        return True
    except OSError as error:
        raise FredsetError(f"cannot write file ({error.strerror or error})", path) from None
    finally:
        try:
            os.unlink(temporary)
        except OSError:
            pass


def file_digest(path: str | os.PathLike, algorithm: str = "sha256") -> str:
    """The ``hashlib`` digest (hex) of a file's bytes, read in 1 MiB blocks; FredsetError naming the file if
    it cannot be read."""
    digest = hashlib.new(algorithm)
    try:
        with open(path, "rb") as stream:
            while block := stream.read(1 << 20):
                digest.update(block)
    except OSError as error:
        raise FredsetError(f"cannot read ({error.strerror or error})", path) from None
    return digest.hexdigest()


def sha256_file(path: str | os.PathLike) -> str:
    """SHA-256 (hex) of a file's bytes (:func:`file_digest`)."""
    return file_digest(path, "sha256")


def summarised_source(source: dict[str, Any], limit: int = 64) -> dict[str, Any]:
    """A data source's provenance with a long ``files`` map (an ImageFolder) replaced by its count and one
    digest, so metadata stays small; the digest is SHA-256 over the sorted ``"name sha256\\n"`` lines."""
    files = source.get("files", {})
    if len(files) <= limit:
        return source
    listing = "".join(f"{name} {digest}\n" for name, digest in sorted(files.items()))
    return {**{key: value for key, value in source.items() if key != "files"},
            "files_count": len(files), "files_sha256": hashlib.sha256(listing.encode()).hexdigest()}


def resolve_device(device: torch.device | str | None) -> torch.device:
    """The device to work on, by the policy of this module's docstring."""
    if isinstance(device, str) and device.strip().lower() == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device if device is not None else "cpu")
    except (RuntimeError, TypeError) as error:
        raise FredsetError(f"unknown device {device!r} ({error}); use cpu, cuda, cuda:N or auto") from None
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise FredsetError(f"device {device}: CUDA is not available on this machine (use cpu or auto)")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise FredsetError(f"device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif resolved.type not in ("cpu", "mps", "xpu"):
        raise FredsetError(f"device {device}: not supported (use cpu, cuda, cuda:N or auto)")
    return resolved
