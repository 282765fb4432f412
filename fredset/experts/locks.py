"""The claim protocol that lets several processes fill one buffer directory (spec/BUFFER.md).

A process claims a piece of work by creating its lock file exclusively (``O_EXCL``), writing host, pid, time
and a random token in it. Claims are serialised by an advisory ``flock`` on one mutex file per directory
(released by the kernel if the process dies). A lock is stale when its process is dead on this host, or
when it cannot be read and is older than a grace period; locks of other hosts are never stolen.
"""

from __future__ import annotations

import json
import os
import pathlib
import secrets
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager

from ..errors import FredsetError
from ..files import process_alive

try:  # a directory-wide mutex around claims; POSIX only (elsewhere the lock files alone are the protocol)
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["Lock", "claim", "lock_is_stale", "mutex"]

MUTEX = ".claim.mutex"
UNREADABLE_LOCK_GRACE_S = 60.0


@contextmanager
def mutex(directory: pathlib.Path) -> Iterator[None]:
    """Serialise claims among cooperating processes (advisory flock, released by the kernel if we die)."""
    if fcntl is None:  # pragma: no cover
        yield
        return
    try:
        descriptor = os.open(directory / MUTEX, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as error:
        raise FredsetError(f"cannot open the claim mutex ({error.strerror or error})", directory / MUTEX) from None
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)  # closing releases the flock


class Lock:
    """This process's claim: the lock file and the token written in it."""

    def __init__(self, path: pathlib.Path) -> None:
        self.path = path
        self.token = secrets.token_hex(8)
        self.content = json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "time": time.time(),
                                   "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "token": self.token},
                                  sort_keys=True).encode("utf-8")

    def create(self) -> bool:
        try:
            descriptor = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        except OSError as error:
            raise FredsetError(f"cannot create lock file ({error.strerror or error})", self.path) from None
        try:
            os.write(descriptor, self.content)
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        return True

    def release(self) -> None:
        """Remove the lock file if it is still ours."""
        try:
            if self.path.read_bytes() == self.content:
                self.path.unlink()
        except OSError:
            pass


def lock_is_stale(path: pathlib.Path) -> bool:
    """A lock is stale when its process is dead on this host (or it cannot be read and is old)."""
    try:
        raw = path.read_bytes()
        modified = path.stat().st_mtime
    except FileNotFoundError:
        return True  # gone meanwhile: free
    except OSError:
        return False
    try:
        holder = json.loads(raw)
        host, pid = str(holder["host"]), int(holder["pid"])
    except (ValueError, KeyError, TypeError):
        return time.time() - modified > UNREADABLE_LOCK_GRACE_S
    if host != socket.gethostname():
        return False  # another machine's process: we cannot tell, never steal
    return pid == os.getpid() or not process_alive(pid)


def claim(lock_path: pathlib.Path, done: pathlib.Path) -> Lock | None:
    """Claim the work whose result is the file ``done``: None when it exists or another live process holds
    ``lock_path``. The mutex lives in the lock file's directory."""
    lock = Lock(lock_path)
    with mutex(lock_path.parent):
        if done.exists():
            return None
        if not lock.create():
            if not lock_is_stale(lock.path):
                return None
            try:
                lock.path.unlink()
            except FileNotFoundError:
                pass
            except OSError as error:
                raise FredsetError(f"cannot remove a stale lock ({error.strerror or error})", lock.path) from None
            if not lock.create():
                return None
        # checked again after the lock exists: a process that finished meanwhile renamed its file before unlocking
        if done.exists():
            lock.release()
            return None
    return lock
