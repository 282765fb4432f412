"""The one exception family users catch."""

from __future__ import annotations

import os


def printable(text: str) -> str:
    """``text`` with every character that is not printable escaped as Python's repr() escapes it.

    Line breaks, tabs, ANSI escape sequences, other C0/C1 control characters, lone surrogates and
    invisible format characters (bidi overrides, line separators) come out as ``\\n``, ``\\x1b``,
    ``\\ud800``, ``\\u202e``...: the result is one line and safe to print to a terminal. Text that
    is printable already is returned as it is (so the escaping is idempotent).
    """
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class FredsetError(Exception):
    """Raised for every problem fredset can name: a bad file, bad data or a bad option.

    The message is one line and, when a file is involved, starts with its path, so a
    command-line tool can print it as it is: text that came from a file or a path (names,
    metadata strings) is escaped with :func:`printable`, so a newline or an ANSI escape in
    it cannot break the line or reach a terminal raw. ``path`` keeps the path as given.
    """

    def __init__(self, problem: str, path: str | os.PathLike | None = None) -> None:
        self.problem = printable(str(problem))
        self.path = None if path is None else os.fspath(path)
        shown = None if self.path is None else printable(os.fsdecode(self.path))
        super().__init__(self.problem if shown is None else f"{shown}: {self.problem}")
