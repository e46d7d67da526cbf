"""asyncio support: await observables, iterate them with ``async for``, the SDK's asyncio client.

Inside a running loop (a Jupyter kernel included)::

    job = await ep.run(payload)                       # RunPodObservable.__await__
    output = await job.output(timeout=60)
    async for chunk in rr.aio.iterate(job.stream()):
        print(chunk)

Everything here delivers on the loop's thread and never blocks it: the
observables of ``Endpoint`` and ``Job`` do their HTTP on rxrunpod's I/O pool,
and the results cross to the loop through ``loop.call_soon_threadsafe``.
``AsyncioEndpoint`` keeps the RunPod SDK's asyncio shape on an
``aiohttp.ClientSession``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._aio_bridge import (
    DEFAULT_BUFFER_SIZE,
    LoopScheduler,
    ObservableIterator,
    await_observable,
    iterate,
    loop_scheduler,
)
from .errors import BufferOverflow

if TYPE_CHECKING:
    from ._aio_endpoint import AsyncioEndpoint, AsyncioJob, ObservableEndpoint, ObservableJob

__all__ = [
    "DEFAULT_BUFFER_SIZE",
    "AsyncioEndpoint",
    "AsyncioJob",
    "BufferOverflow",
    "LoopScheduler",
    "ObservableEndpoint",
    "ObservableIterator",
    "ObservableJob",
    "await_observable",
    "iterate",
    "loop_scheduler",
]

# The aiohttp client loads on first use: ``await observable`` needs only the
# bridges, and aiohttp is an optional dependency (the ``local`` extra).
_ENDPOINT_NAMES = frozenset(
    {"AsyncioEndpoint", "AsyncioJob", "ObservableEndpoint", "ObservableJob"}
)


def __getattr__(name: str) -> Any:
    if name in _ENDPOINT_NAMES:
        from . import _aio_endpoint

        value = getattr(_aio_endpoint, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'rxrunpod.aio' has no attribute {name!r}")
