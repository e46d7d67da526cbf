"""Request attempts and waiting progress of the ``rxrunpod`` client commands.

``CountingRetryPolicy`` is the endpoint's ``RetryPolicy`` with an
``AttemptLog`` attached, so a command can report how many attempts a request
made before its error was raised. ``WaitProgress`` shows, on a terminal's
stderr only, how long a request has been waiting.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TextIO

from ._display import LiveView
from .http import RetryPolicy

__all__ = ["PROGRESS_AFTER_SECONDS", "AttemptLog", "CountingRetryPolicy", "WaitProgress"]

PROGRESS_AFTER_SECONDS = 1.0
"""A wait shorter than this shows no progress line."""

_KEPT_ERRORS = 16


class AttemptLog:
    """Counts failed request attempts, and the attempts behind each error raised; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._failures = 0
        # The error objects are kept, so their ids stay unique while they are listed.
        self._raised: deque[tuple[BaseException, int]] = deque(maxlen=_KEPT_ERRORS)

    @property
    def failures(self) -> int:
        """Failed attempts of every request so far."""
        with self._lock:
            return self._failures

    def record(self, error: BaseException, attempt: int, *, raised: bool) -> None:
        """Count failed attempt number ``attempt``; ``raised`` when no retry follows it."""
        with self._lock:
            self._failures += 1
            if raised:
                self._raised.append((error, attempt))

    def attempts_before(self, error: BaseException) -> int | None:
        """Return how many attempts the request made before ``error`` was raised, if recorded."""
        with self._lock:
            for recorded, attempts in self._raised:
                if recorded is error:
                    return attempts
        return None


@dataclass(frozen=True)
class CountingRetryPolicy(RetryPolicy):
    """A ``RetryPolicy`` that records each failed attempt in ``log``."""

    log: AttemptLog = field(default_factory=AttemptLog, repr=False, compare=False)

    def delay_before_retry(
        self, error: Exception, attempt: int, *, retry_safe: bool
    ) -> float | None:
        delay = super().delay_before_retry(error, attempt, retry_safe=retry_safe)
        self.log.record(error, attempt, raised=delay is None)
        return delay


class WaitProgress:
    """A line on stderr that shows what a command waits for and for how long.

    It is drawn only on a terminal and only after ``PROGRESS_AFTER_SECONDS``,
    so piped output and quick requests stay as they were.
    """

    def __init__(self, request: str, log: AttemptLog | None, stream: TextIO | None = None) -> None:
        self._request = request
        self._log = log
        self._view = LiveView(stream or sys.stderr)
        self._started = time.monotonic()
        self._failures_before = log.failures if log is not None else 0
        self._drawn = False

    def tick(self) -> None:
        """Redraw the line; call it every fraction of a second while waiting."""
        if not self._view.interactive:
            return
        elapsed = time.monotonic() - self._started
        if elapsed < PROGRESS_AFTER_SECONDS:
            return
        text = f"waiting for {self._request}: {elapsed:.0f} s"
        failed = (self._log.failures if self._log is not None else 0) - self._failures_before
        if failed:
            text += f", {failed} failed {'attempt' if failed == 1 else 'attempts'} so far"
        self._view.show([text])
        self._drawn = True

    def close(self) -> None:
        """Erase the line."""
        if self._drawn:
            self._view.show([])
            self._drawn = False
