"""Helpers that subscribe to an observable and wait for it on the test's thread."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from reactivex import Observable


@dataclass
class Recording:
    """What one subscription received: values, the error if any, and whether it ended."""

    values: list[Any] = field(default_factory=list)
    error: Exception | None = None
    completed: bool = False
    terminal_count: int = 0
    ended: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def on_next(self, value: Any) -> None:
        with self.lock:
            self.values.append(value)

    def on_error(self, error: Exception) -> None:
        with self.lock:
            self.error = error
            self.terminal_count += 1
        self.ended.set()

    def on_completed(self) -> None:
        with self.lock:
            self.completed = True
            self.terminal_count += 1
        self.ended.set()


def record(source: Observable[Any], timeout: float) -> Recording:
    """Subscribe, wait up to ``timeout`` seconds for the end, dispose, and return the recording.

    Raises ``AssertionError`` when the observable did not end in time.
    """
    recording = Recording()
    subscription = source.subscribe(recording.on_next, recording.on_error, recording.on_completed)
    try:
        if not recording.ended.wait(timeout):
            raise AssertionError(
                f"the observable did not end within {timeout} s; "
                f"{len(recording.values)} values arrived"
            )
    finally:
        subscription.dispose()
    return recording
