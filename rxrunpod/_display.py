"""A live terminal view: redrawn in place on a terminal, one line per change otherwise.

On a terminal, ``LiveView.show(lines)`` replaces the block drawn last with
``lines`` using plain ANSI escapes (cursor up, erase line), so a table of job
states or a health panel updates in place. When the output is a pipe or a
file, ``show`` draws nothing and callers report each change with ``note``,
which then prints one line, so logs and ``grep`` see every event once.
"""

from __future__ import annotations

import os
import shutil
import threading
from typing import TextIO

__all__ = ["LiveView", "is_interactive"]

_CURSOR_UP = "\x1b[{count}A"
_ERASE_LINE = "\x1b[2K"
_ERASE_BELOW = "\x1b[J"


def is_interactive(stream: TextIO) -> bool:
    """True when ``stream`` is a terminal that understands ANSI escapes."""
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):
        return False
    return tty and os.environ.get("TERM", "") != "dumb"


class LiveView:
    """A block of lines that redraws in place on a terminal; thread-safe.

    ``show`` replaces the block and only draws on a terminal. ``note`` prints
    a line about one change and only prints when not on a terminal. ``print``
    prints a permanent line in both modes, above the block on a terminal.
    ``interactive`` overrides the terminal detection.
    """

    def __init__(self, stream: TextIO, *, interactive: bool | None = None) -> None:
        self._stream = stream
        self.interactive = is_interactive(stream) if interactive is None else interactive
        self._lock = threading.Lock()
        self._drawn = 0
        self._frame: list[str] = []

    def show(self, lines: list[str]) -> None:
        """Replace the live block with ``lines``; does nothing when not on a terminal."""
        if not self.interactive:
            return
        with self._lock:
            self._frame = list(lines)
            self._redraw()

    def note(self, line: str) -> None:
        """Print one change as a line when not on a terminal; on a terminal the block shows it."""
        if self.interactive:
            return
        with self._lock:
            self._stream.write(line + "\n")
            self._stream.flush()

    def print(self, line: str = "") -> None:
        """Print a permanent line in both modes; on a terminal it goes above the live block."""
        with self._lock:
            if self.interactive:
                self._erase()
                self._stream.write(line + "\n")
                self._draw_frame()
            else:
                self._stream.write(line + "\n")
            self._stream.flush()

    def close(self) -> None:
        """Leave the last block on screen and stop redrawing it."""
        with self._lock:
            self._drawn = 0
            self._frame = []

    def _redraw(self) -> None:
        self._erase()
        self._draw_frame()
        self._stream.flush()

    def _erase(self) -> None:
        if self._drawn:
            self._stream.write("\r" + _CURSOR_UP.format(count=self._drawn) + _ERASE_BELOW)
            self._drawn = 0

    def _draw_frame(self) -> None:
        # Lines wider than the terminal would wrap and throw off the count of
        # lines to move up on the next redraw, so each is cut to the width.
        width = max(20, shutil.get_terminal_size().columns - 1)
        for line in self._frame:
            self._stream.write(_ERASE_LINE + line[:width] + "\n")
        self._drawn = len(self._frame)
