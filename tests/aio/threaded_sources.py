"""Observables that emit from a thread of their own, as rxrunpod's I/O pool does."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import reactivex
from reactivex import abc
from reactivex.disposable import Disposable


class ThreadedSource:
    """A cold observable factory whose subscriptions emit ``items`` on a new thread.

    ``disposed`` is set when a subscription is disposed; ``subscriptions``
    counts subscribe calls. ``delay`` is the pause in seconds before each item,
    ``error`` is sent after the items instead of ``on_completed``, and
    ``complete=False`` leaves the sequence open until disposed.
    """

    def __init__(
        self,
        items: Sequence[Any] = (),
        *,
        delay: float = 0.0,
        error: Exception | None = None,
        complete: bool = True,
    ) -> None:
        self.items = list(items)
        self.delay = delay
        self.error = error
        self.complete = complete
        self.disposed = threading.Event()
        self.finished = threading.Event()
        self.subscriptions = 0
        self.emitter_threads: set[int] = set()

    def observable(self) -> reactivex.Observable[Any]:
        def subscribe(
            observer: abc.ObserverBase[Any], scheduler: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            self.subscriptions += 1

            def emit() -> None:
                self.emitter_threads.add(threading.get_ident())
                try:
                    for item in self.items:
                        if self.disposed.wait(self.delay) and self.disposed.is_set():
                            return
                        observer.on_next(item)
                    if self.error is not None:
                        observer.on_error(self.error)
                    elif self.complete:
                        observer.on_completed()
                    else:
                        self.disposed.wait(10.0)
                finally:
                    self.finished.set()

            threading.Thread(target=emit, name="threaded-source", daemon=True).start()
            return Disposable(self.disposed.set)

        return reactivex.create(subscribe)
