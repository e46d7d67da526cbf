"""Blocking waits on observables that Ctrl-C and a deadline can end."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TypeVar

from reactivex import Observable

from . import errors
from ._cli_common import EXIT_CONNECTION, CommandError
from ._progress import WaitProgress

__all__ = ["for_each", "wait_event", "wait_for"]

_T = TypeVar("_T")


def wait_for(
    source: Observable[_T], *, timeout: float | None, progress: WaitProgress | None = None
) -> _T:
    """Block until ``source`` emits its last item and return it; Ctrl-C disposes the subscription.

    Unlike reactivex's ``run()``, an interrupt here disposes the
    subscription first, so a job submitted by ``source`` is cancelled
    instead of left running. ``progress`` shows the wait on a terminal.
    """
    items: list[_T] = []
    for_each(source, items.append, timeout=timeout, progress=progress)
    if not items:
        raise CommandError("the endpoint returned no result", EXIT_CONNECTION)
    return items[-1]


def for_each(
    source: Observable[_T],
    on_next: Callable[[_T], None],
    *,
    timeout: float | None = None,
    progress: WaitProgress | None = None,
) -> None:
    """Subscribe, call ``on_next`` for each item on its thread, and block until the end."""
    finished = threading.Event()
    failure: list[BaseException] = []

    def on_error(error: Exception) -> None:
        failure.append(error)
        finished.set()

    def guarded(item: _T) -> None:
        try:
            on_next(item)
        except Exception as error:  # a broken pipe or a rendering bug must not hang the wait
            on_error(error)

    subscription = source.subscribe(guarded, on_error, finished.set)
    try:
        wait_event(finished, timeout=timeout, progress=progress)
    finally:
        subscription.dispose()
    if failure:
        raise failure[0]


def wait_event(
    finished: threading.Event, *, timeout: float | None, progress: WaitProgress | None = None
) -> None:
    """Block until ``finished`` is set; raise ``WaitTimeout`` after ``timeout`` seconds."""
    try:
        _wait_in_steps(finished, timeout, progress)
    finally:
        if progress is not None:
            progress.close()


def _wait_in_steps(
    finished: threading.Event, timeout: float | None, progress: WaitProgress | None
) -> None:
    # Waiting in short steps lets Ctrl-C reach the main thread promptly.
    deadline = None if timeout is None else time.monotonic() + timeout
    while not finished.wait(0.2):
        if progress is not None:
            progress.tick()
        if timeout is not None and deadline is not None and time.monotonic() > deadline:
            raise errors.WaitTimeout(
                f"no result within {timeout:g} s", job_id=None, timeout=timeout
            )
