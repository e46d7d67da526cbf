"""``RunPodObservable``: the Observable type every rxrunpod call returns."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any, TypeVar

import reactivex

__all__ = ["RunPodObservable"]

T_co = TypeVar("T_co", covariant=True)


class RunPodObservable(reactivex.Observable[T_co]):
    """A cold ``reactivex.Observable`` that can also be awaited.

    Nothing is sent until subscribe, and each subscription does the work again
    (subscribing to ``ep.run(p)`` twice submits two jobs; use
    ``ops.share()`` to share one). ``.run()`` blocks until completion and
    returns the last item. ``await obs`` inside a running asyncio loop
    resolves to the last item on the loop's thread without blocking it.
    """

    def __await__(self) -> Generator[Any, None, T_co]:
        from . import aio  # imported here so importing rxrunpod does not import asyncio helpers

        return aio.await_observable(self).__await__()
