"""``RunPodObservable``: the Observable type every rxrunpod call returns."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any, TypeVar

import reactivex

from .scheduling import on_rxrunpod_thread

__all__ = ["RunPodObservable"]

T_co = TypeVar("T_co", covariant=True)


class RunPodObservable(reactivex.Observable[T_co]):
    """A cold ``reactivex.Observable`` that can also be awaited.

    Nothing is sent until subscribe, and each subscription does the work again
    (subscribing to ``ep.run(p)`` twice submits two jobs; use
    ``ops.share()`` to share one). ``.run()`` blocks until completion and
    returns the last item. ``await obs`` inside a running asyncio loop
    resolves to the last item on the loop's thread without blocking it.

    ``.run()`` raises ``RuntimeError`` at once when it is called on one of
    rxrunpod's I/O pool threads or its timer thread (inside an ``on_next``
    or a ``do_action``, for instance): those threads do the HTTP requests
    the wait depends on, so enough such waits block the whole process.
    """

    def run(self, *args: Any, **kwargs: Any) -> T_co:
        """Subscribe, block until the observable completes, and return its last item.

        Arguments go to ``reactivex.Observable.run`` (6.x takes ``scheduler=``,
        5.0 none). Raises ``RuntimeError`` when called on an rxrunpod I/O or
        timer thread.
        """
        role = on_rxrunpod_thread()
        if role is not None:
            raise RuntimeError(
                f"blocking .run() on an rxrunpod {role} would deadlock the shared pool: the "
                "thread would wait for HTTP requests that need the same pool threads. "
                "Compose instead, e.g. ops.flat_map(lambda job: job.output()), move the "
                "work off the pool with ops.observe_on(another scheduler), or subscribe "
                "with callbacks instead of blocking."
            )
        return super().run(*args, **kwargs)

    def __await__(self) -> Generator[Any, None, T_co]:
        from . import aio  # imported here so importing rxrunpod does not import asyncio helpers

        return aio.await_observable(self).__await__()
