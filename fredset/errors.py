"""The one exception family users catch."""

from __future__ import annotations

import os


class FredsetError(Exception):
    """Raised for every problem fredset can name: a bad file, bad data or a bad option.

    The message is one line and, when a file is involved, starts with its path, so a
    command-line tool can print it as it is.
    """

    def __init__(self, problem: str, path: str | os.PathLike | None = None) -> None:
        self.problem = problem
        self.path = None if path is None else os.fspath(path)
        super().__init__(problem if self.path is None else f"{self.path}: {problem}")
