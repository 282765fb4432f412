"""What every command shares: one-line errors, quiet ranks under torchrun, warnings held back, downloads with
progress, output that survives any terminal encoding."""

from __future__ import annotations

import contextlib
import functools
import os
import re
import sys
import warnings
from typing import Any, Callable, Iterator

import click

from fredset import FredsetError
from fredset.distributed import Context, shutdown
from fredset.format import DEFAULT_MAX_FILE_BYTES
from fredset.remote import fetch, is_url


def reports_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Turn FredsetError into one line on stderr and exit status 2 (no traceback).

    The message is one line already (FredsetError escapes line breaks and control characters);
    it is written so that a terminal that cannot encode a character gets an escape, not a crash.
    """

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except FredsetError as error:
            echo(f"error: {error}", err=True)
            sys.exit(2)

    return wrapper


def across_ranks(command: Callable[..., Any]) -> Callable[..., Any]:
    """A command that may run as one of several processes (torchrun, WORLD_SIZE > 1): ranks other than 0 are
    quiet (their stdout and stderr, C++ libraries' included, go to the null device); an error on any rank is one
    line on that rank's stderr (``error (rank R): ...`` on ranks other than 0, which prints as usual) and a
    non-zero exit, after which torchrun stops the other ranks (or their collectives time out). The process
    group is left at the end. With one process the command runs exactly as it is.

    Goes inside :func:`reports_errors`, which prints rank 0's FredsetError.
    """

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        context = Context.from_environment()
        if not context.distributed:
            return command(*args, **kwargs)
        stderr = 2
        if not context.is_main:
            sys.stdout.flush()
            sys.stderr.flush()
            saved = os.dup(1), os.dup(2)
            stderr = saved[1]
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, 1)
            os.dup2(null, 2)
            os.close(null)
        try:
            result = command(*args, **kwargs)
        except FredsetError as error:
            if context.is_main:
                raise
            _say(stderr, f"error (rank {context.rank}): {error}")
            sys.exit(2)
        except Exception as error:  # a collective that timed out, a peer gone, a crash: one line, no traceback
            message = re.sub(r"^\[[^\]]+:\d+\] ", "", " ".join(str(error).split()))  # gloo's [file.cc:line]
            _say(stderr, f"error (rank {context.rank}): {type(error).__name__}: {message}")
            sys.exit(1)
        finally:
            if not context.is_main:
                sys.stdout.flush()
                sys.stderr.flush()
                os.dup2(saved[0], 1)
                os.dup2(saved[1], 2)
                os.close(saved[0])
                os.close(saved[1])
        shutdown()
        return result

    return wrapper


def _say(descriptor: int, text: str) -> None:
    """One line straight to a file descriptor (a quiet rank's real stderr), escaping what it cannot encode."""
    sys.stderr.flush()
    encoding = getattr(sys.stderr, "encoding", None) or "utf-8"
    try:
        data = (text + "\n").encode(encoding, "backslashreplace")
    except LookupError:
        data = (text + "\n").encode("utf-8", "backslashreplace")
    os.write(descriptor, data)


def echo(text: str, err: bool = False) -> None:
    """click.echo, with characters the stream cannot encode (e.g. on an ASCII terminal) backslash-escaped."""
    encoding = getattr(sys.stderr if err else sys.stdout, "encoding", None) or "utf-8"
    try:
        text.encode(encoding)
    except UnicodeEncodeError:
        text = text.encode(encoding, "backslashreplace").decode(encoding)
    except LookupError:
        pass
    click.echo(text, err=err)


@contextlib.contextmanager
def warnings_unless_refused() -> Iterator[None]:
    """Hold back warnings (numpy's overflow warnings on absurd values, say) until the block ends.

    If it ends with a FredsetError they are dropped: the reader checks what it computed (a value
    that overflowed to infinity is refused), so the one-line error already says what is wrong and
    the warnings would only add lines to stderr. Otherwise they are shown as usual, so nothing is
    hidden for a file that is read (or for a crash).
    """
    held: list[warnings.WarningMessage] = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            try:
                yield
            finally:
                held = list(caught)
    except FredsetError:
        raise
    except BaseException:
        _show_warnings(held)
        raise
    _show_warnings(held)


def _show_warnings(held: list[warnings.WarningMessage]) -> None:
    for warning in held:
        warnings.showwarning(warning.message, warning.category, warning.filename, warning.lineno,
                             warning.file, warning.line)


def fetch_with_progress(file: str, sha256: str | None) -> None:
    """Download a URL into the cache now, reporting progress on a terminal or as plain lines in a log (the
    library alone reports only on a terminal); the reader then opens the cached copy without a connection."""
    if is_url(file):
        fetch(file, sha256=sha256, max_file_bytes=DEFAULT_MAX_FILE_BYTES, progress=True)
