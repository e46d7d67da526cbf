"""The official RunPod SDK, an independent client, against the local endpoint."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest

from rxrunpod.local import LocalEndpoint
from tests.local.handlers import basic

runpod = pytest.importorskip("runpod", reason="the conformance test needs the runpod package")

pytestmark = [pytest.mark.sdk, pytest.mark.timeout(90)]

API_KEY = "conformance-key"


@pytest.fixture
def sdk_endpoint(monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalEndpoint]:
    def handler(job: dict[str, object]) -> object:
        job_input = job["input"]
        if isinstance(job_input, dict) and "stream" in job_input:
            return basic.counts({"input": {"n": job_input["stream"]}})
        if isinstance(job_input, dict) and "seconds" in job_input:
            return basic.sleepy(job)
        return basic.echo(job)

    with LocalEndpoint(handler, workers=2, api_key=API_KEY) as endpoint:
        monkeypatch.setattr(runpod, "endpoint_url_base", endpoint.base_url)
        monkeypatch.setattr(runpod, "api_key", API_KEY)
        yield endpoint


def test_sdk_run_status_output(sdk_endpoint: LocalEndpoint) -> None:
    endpoint = runpod.Endpoint("conformance")
    job = endpoint.run({"prompt": "hi"})
    assert job.status() in ("IN_QUEUE", "IN_PROGRESS", "COMPLETED")
    assert job.output(timeout=10) == {"echo": {"prompt": "hi"}}
    assert job.status() == "COMPLETED"


def test_sdk_run_sync(sdk_endpoint: LocalEndpoint) -> None:
    assert runpod.Endpoint("conformance").run_sync({"input": {"x": 1}}, timeout=10) == {
        "echo": {"x": 1}
    }


def test_sdk_stream_over_generator(sdk_endpoint: LocalEndpoint) -> None:
    job = runpod.Endpoint("conformance").run({"stream": 4})
    assert list(job.stream()) == [0, 1, 2, 3]


def test_sdk_health_purge_and_cancel(sdk_endpoint: LocalEndpoint) -> None:
    endpoint = runpod.Endpoint("conformance")
    busy = [endpoint.run({"seconds": 1.0}) for _ in range(2)]
    queued = endpoint.run({"seconds": 0.1})
    extra = endpoint.run({"seconds": 0.1})
    time.sleep(0.2)
    health = endpoint.health()
    assert health["jobs"]["inQueue"] == 2
    assert health["workers"]["running"] == 2
    assert queued.cancel()["status"] == "CANCELLED"
    assert endpoint.purge_queue() == {"removed": 1, "status": "completed"}
    assert extra.status() == "CANCELLED"
    assert [job.output(timeout=10) for job in busy] == [{"slept": 1.0}, {"slept": 1.0}]


def test_sdk_asyncio_endpoint(sdk_endpoint: LocalEndpoint) -> None:
    aiohttp = pytest.importorskip("aiohttp")

    async def scenario() -> tuple[Any, Any, Any]:
        async with aiohttp.ClientSession() as session:
            endpoint = runpod.AsyncioEndpoint("conformance", session)
            job = await endpoint.run({"async": True})
            status = await job.status()
            output = await job.output(timeout=10)
            health = await endpoint.health()
            return status, output, health

    status, output, health = asyncio.run(scenario())
    assert status in ("IN_QUEUE", "IN_PROGRESS", "COMPLETED")
    assert output == {"echo": {"async": True}}
    assert health["jobs"]["completed"] >= 1
