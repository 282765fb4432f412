"""A small progress reporter for long operations (downloads now; any counted work later), with no dependency.

On a terminal it keeps one line up to date with ``\\r`` (done / total, percent, rate), redrawn at most ten times
a second; anywhere else (a log file, a pipe, CI) it writes a plain line at most every ``every_seconds``, so a
log gets a few lines instead of thousands of carriage returns. Both end with a final line on :meth:`close`.

Whether to report at all is the caller's decision: the library reports downloads only on a terminal unless
asked (:func:`fredset.remote.fetch`'s ``progress``), since a library should not write into someone's logs.
Writing is best effort: a closed or broken stream silences the reporter, it never fails the work.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Callable
from typing import TextIO

__all__ = ["Progress", "format_bytes", "is_terminal"]

_TERMINAL_EVERY = 0.1  # seconds between redraws of a terminal line


def format_bytes(count: float) -> str:
    """``count`` bytes in binary units: ``512 B``, ``1.5 KiB``, ``3.2 MiB``, ``1.0 GiB``."""
    if count < 1024:
        return f"{count:.0f} B"
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        count /= 1024
        if count < 1024 or unit == "TiB":
            return f"{count:.1f} {unit}"
    raise AssertionError("unreachable")


def is_terminal(stream: object) -> bool:
    """Whether ``stream`` is an interactive terminal (False for None, closed or odd streams)."""
    try:
        return bool(stream is not None and stream.isatty())  # type: ignore[attr-defined]
    except (AttributeError, OSError, ValueError):
        return False


class Progress:
    """Counts work done toward ``total`` (None: unknown) and reports it on ``stream`` (default: sys.stderr).

    ``unit`` ``"B"`` shows bytes in binary units; any other unit is shown after plain counts (``"it"``,
    ``"images"``). ``terminal`` forces the terminal or the plain-line style (default: ``stream.isatty()``).
    Use it as a context manager, or call :meth:`close` when the work ends (or fails: the final line shows
    how far it got).
    """

    def __init__(self, total: int | None, *, unit: str = "", label: str = "", stream: TextIO | None = None,
                 every_seconds: float = 5.0, terminal: bool | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.total = total
        self.unit = unit
        self.label = label
        self.stream = sys.stderr if stream is None else stream
        self.terminal = is_terminal(self.stream) if terminal is None else terminal
        self.every_seconds = _TERMINAL_EVERY if self.terminal else every_seconds
        self.done = 0
        self._rate_base = 0  # work done before this process started (a resumed run) does not count in the rate
        self.note = ""
        self._clock = clock
        self._started = clock()
        self._shown_at = self._started
        self._width = 0  # length of the terminal line last drawn, to blank what a shorter one leaves
        self._shown: tuple[int, str] | None = None  # (done, note) of the last line written
        self._closed = False

    def update(self, n: int = 1, *, note: str | None = None) -> None:
        """Count ``n`` more units done; ``note`` (a loss, say) replaces the short text shown after the counts."""
        self.done += n
        if note is not None:
            self.note = note
        now = self._clock()
        if not self._closed and now - self._shown_at >= self.every_seconds:
            self._shown_at = now
            self._show(final=False)

    def resume_at(self, done: int) -> None:
        """Start counting from ``done`` units already finished earlier (a resumed run), which the rate leaves out."""
        self.done = self._rate_base = done
        self._started = self._shown_at = self._clock()

    def close(self) -> None:
        """Write the final state and end the line (once; later calls do nothing). Off a terminal the final line
        is left out when the last one written already showed the same state."""
        if not self._closed:
            if self.terminal or self._shown != (self.done, self.note):
                self._show(final=True)
            self._closed = True

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def text(self) -> str:
        """The report line as it stands: label, done [/ total], percent, rate, note."""
        elapsed = max(self._clock() - self._started, 1e-9)
        if self.total is None:
            amount = self._amount(self.done)
        elif self.unit == "B":
            amount = f"{format_bytes(self.done)} / {format_bytes(self.total)}"
        else:  # "3/300 epochs"
            amount = f"{self.done:,}/{self.total:,}" + (f" {self.unit}" if self.unit else "")
        parts = [self.label, amount] if self.label else [amount]
        if self.total:
            parts.append(f"{100 * self.done / self.total:3.0f}%")
        rate = (self.done - self._rate_base) / elapsed
        parts.append(f"{format_bytes(rate)}/s" if self.unit == "B" else f"{rate:.3g} {self.unit or 'units'}/s")
        if self.note:
            parts.append(self.note)
        return "  ".join(parts)

    def _amount(self, count: int) -> str:
        if self.unit == "B":
            return format_bytes(count)
        return f"{count:,} {self.unit}" if self.unit else f"{count:,}"

    def _show(self, final: bool) -> None:
        self._shown = (self.done, self.note)
        line = self.text()
        if self.terminal:
            columns = shutil.get_terminal_size(fallback=(80, 24)).columns
            line = line[:max(columns - 1, 10)]  # a wrapped line could not be redrawn with \r
            out = "\r" + line + " " * max(self._width - len(line), 0) + ("\n" if final else "")
            self._width = len(line)
        else:
            out = line + "\n"
        try:
            self.stream.write(out)
            self.stream.flush()
        except (OSError, ValueError, AttributeError):  # closed, broken pipe, not a stream: stop reporting
            self._closed = True
