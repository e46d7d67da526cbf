"""Fixtures of the client core tests: a scripted server and endpoints bound to it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from reactivex.testing import TestScheduler

from rxrunpod import Endpoint
from rxrunpod.http import RetryPolicy
from tests.support.scripted_server import ScriptedServer

FAST_RETRY = RetryPolicy(max_attempts=3, base_delay=0.01, max_delay=0.05)


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    with ScriptedServer() as scripted:
        yield scripted


@pytest.fixture
def endpoint(server: ScriptedServer) -> Iterator[Endpoint]:
    """An endpoint on the shared I/O pool, with fast retries."""
    with Endpoint("ep", api_key="test-key-123", base_url=server.base_url, retry=FAST_RETRY) as ep:
        yield ep


@pytest.fixture
def scheduler() -> TestScheduler:
    return TestScheduler()


@pytest.fixture
def virtual_endpoint(server: ScriptedServer, scheduler: TestScheduler) -> Iterator[Endpoint]:
    """An endpoint whose HTTP runs inline on a TestScheduler's virtual clock."""
    with Endpoint(
        "ep",
        api_key="test-key-123",
        base_url=server.base_url,
        scheduler=scheduler,
        retry=FAST_RETRY,
    ) as ep:
        yield ep
