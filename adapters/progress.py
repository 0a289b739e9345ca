"""Progress for long commands (``verify``, ``verify-log``, ``bench``, ``chaos``, ``conformance``) on stderr.

On a terminal: one live line, rewritten in place -- ``[3/7  12s] ModuleMachine (100 examples)``,
plus a bar and a counter when a step reports how far it is (``[####......] 1,204/5,000``).
Redraws are throttled (``min_interval``) so a fast loop does not spend its time on the terminal,
and the line is cleared when the work ends, leaving the command's real output alone.

Not on a terminal (a pipe, a CI log, a file): plain lines, one per step, no control characters,
and no counter updates -- the output stays readable and diffable.  stdout is never touched, so
``--json`` output is unaffected either way.  A command that prints its own lines while a step runs
(``chaos`` prints its schedule) goes through ``note`` so the live line is not torn.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

BAR_WIDTH = 24
CLEAR = "\r\x1b[K"


class Progress:
    def __init__(self, total: int, out: TextIO | None = None, *, tty: bool | None = None,
                 clock: Callable[[], float] = time.monotonic, min_interval: float = 0.1) -> None:
        self.total = total
        self.done = 0
        self.out = out if out is not None else sys.stderr
        self.tty = self.out.isatty() if tty is None else tty
        self.clock = clock
        self.min_interval = min_interval
        self.started = clock()
        self.label = ""
        self._drawn = float("-inf")

    def _head(self) -> str:
        return f"[{self.done}/{self.total} {self.clock() - self.started:4.0f}s] {self.label}"

    def _write(self, text: str) -> None:
        self.out.write(text)
        self.out.flush()

    def step(self, label: str) -> None:
        """The next step starts: ``label`` says what is running."""
        self.done += 1
        self.label = label
        if self.tty:
            self._write(CLEAR + self._head())
            self._drawn = self.clock()
        else:
            self._write(self._head() + "\n")

    def count(self, done: int, of: int | None = None) -> None:
        """How far the current step is (a terminal only; throttled, the last call always drawn by
        ``finish`` or the next step)."""
        if not self.tty:
            return
        now = self.clock()
        if now - self._drawn < self.min_interval and (of is None or done < of):
            return
        self._drawn = now
        if of:
            filled = min(BAR_WIDTH, BAR_WIDTH * done // of)
            tail = f" [{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {done:,}/{of:,}"
        else:
            tail = f" {done:,}"
        self._write(CLEAR + self._head() + tail)

    def note(self, text: str, out: TextIO) -> None:
        """Print a line of the command's own output to ``out`` without tearing the live line: on a
        terminal the live line is cleared first and drawn again after it."""
        if self.tty:
            self._write(CLEAR)
        print(text, file=out, flush=True)
        if self.tty and self.done:
            self._write(self._head())
            self._drawn = self.clock()

    def finish(self) -> None:
        if self.tty:
            self._write(CLEAR)
