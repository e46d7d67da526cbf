"""Fixtures that run a test's coroutine from asyncio.run and from a loop that is already running."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import pytest

_T = TypeVar("_T")

Runner = Callable[[Callable[[], Awaitable[Any]]], Any]


@pytest.fixture
def background_loop() -> Iterator[asyncio.AbstractEventLoop]:
    """A loop that is already running in another thread, as in a Jupyter kernel."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="background-loop", daemon=True)
    thread.start()
    yield loop
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    loop.close()


def run_in(
    loop: asyncio.AbstractEventLoop | None, make: Callable[[], Awaitable[_T]], timeout: float = 60
) -> _T:
    """Run a coroutine with asyncio.run (loop None) or inside an already running loop."""

    async def main() -> _T:
        return await make()

    if loop is None:
        return asyncio.run(main())
    return asyncio.run_coroutine_threadsafe(main(), loop).result(timeout)


@pytest.fixture(params=["asyncio.run", "running loop"])
def runner(request: pytest.FixtureRequest, background_loop: asyncio.AbstractEventLoop) -> Runner:
    """Run a coroutine both ways: the same test code must pass from a script and from a kernel."""
    loop = None if request.param == "asyncio.run" else background_loop
    return lambda make: run_in(loop, make)
