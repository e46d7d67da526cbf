"""RunPod's own worker loop (the runpod package) serving jobs from the local endpoint."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import reactivex.operators as ops
import requests

from rxrunpod import Endpoint
from rxrunpod.local import LocalEndpoint

runpod = pytest.importorskip(
    "runpod", reason="--worker runpod runs the runpod package's worker loop"
)

pytestmark = [pytest.mark.sdk, pytest.mark.timeout(120)]

HANDLERS = Path(__file__).parent / "handlers"
KEY = "worker-loop-key"


def wait_idle(endpoint: LocalEndpoint, count: int = 1, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        workers = requests.get(f"{endpoint.base_url}/ep/health", headers=_auth(), timeout=5)
        if workers.json()["workers"]["idle"] == count:
            return
        time.sleep(0.05)
    raise AssertionError(f"{count} worker(s) did not become idle within {timeout} s")


def _auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {KEY}"}


def serve_file(name: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalEndpoint]:
    with LocalEndpoint(str(HANDLERS / name), workers=1, worker="runpod", api_key=KEY) as endpoint:
        monkeypatch.setattr(runpod, "endpoint_url_base", endpoint.base_url)
        monkeypatch.setattr(runpod, "api_key", KEY)
        wait_idle(endpoint)
        yield endpoint


@pytest.fixture
def plain(monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalEndpoint]:
    yield from serve_file("runpod_worker_plain.py", monkeypatch)


@pytest.fixture
def streaming(monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalEndpoint]:
    yield from serve_file("runpod_worker_stream.py", monkeypatch)


@pytest.fixture
def async_streaming(monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalEndpoint]:
    yield from serve_file("runpod_worker_async.py", monkeypatch)


def test_plain_handler_serves_both_clients(plain: LocalEndpoint) -> None:
    sdk_output = runpod.Endpoint("ep").run_sync({"name": "Ada"}, timeout=30)
    with Endpoint("ep", api_key=KEY, base_url=plain.base_url) as endpoint:
        rx_output = endpoint.run_sync({"name": "Grace"}, timeout=30).run()

    assert sdk_output["greeting"] == "hello Ada"
    assert rx_output["greeting"] == "hello Grace"
    assert sdk_output["pid"] == rx_output["pid"]


def test_handler_exception_fails_job(
    plain: LocalEndpoint,
) -> None:
    document = requests.post(
        f"{plain.base_url}/ep/runsync", json={"input": {"fail": True}}, headers=_auth()
    ).json()

    assert document["status"] == "FAILED"
    assert '"error_message": "asked to fail"' in document["error"]


def test_environment_points_at_local_channel(plain: LocalEndpoint) -> None:
    with Endpoint("ep", api_key=KEY, base_url=plain.base_url) as endpoint:
        environment = endpoint.run_sync({"environment": True}, timeout=30).run()

    urls = [value for name, value in environment.items() if name.startswith("RUNPOD_WEBHOOK_")]
    assert len(urls) == 4
    assert all(url.startswith("http://127.0.0.1:") for url in urls)
    assert all(f":{plain.port}/" not in url for url in urls)
    assert environment["RUNPOD_SKIP_GPU_CHECK"] == "true"
    assert environment["RUNPOD_SKIP_AUTO_SYSTEM_CHECKS"] == "true"
    assert environment["RUNPOD_AI_API_KEY"] != KEY


def test_refresh_worker_replaces_process(plain: LocalEndpoint) -> None:
    first = runpod.Endpoint("ep").run_sync({"refresh": True}, timeout=30)
    wait_idle(plain)
    second = runpod.Endpoint("ep").run_sync({"refresh": True}, timeout=30)

    assert first["pid"] != second["pid"]


def test_aggregated_generator_streams_to_both_clients(streaming: LocalEndpoint) -> None:
    sdk_job = runpod.Endpoint("ep").run({"n": 5})
    sdk_items = list(sdk_job.stream())
    with Endpoint("ep", api_key=KEY, base_url=streaming.base_url) as endpoint:
        job = endpoint.run({"n": 4}).run()
        rx_items = job.stream().pipe(ops.to_list()).run()
        rx_output = job.output(timeout=30).run()

    assert sdk_items == [{"n": number} for number in range(5)]
    assert sdk_job.output(timeout=30) == [{"n": number} for number in range(5)]
    assert rx_items == [{"n": number} for number in range(4)]
    assert rx_output == rx_items


def test_async_generator_streams_in_order(async_streaming: LocalEndpoint) -> None:
    with Endpoint("ep", api_key=KEY, base_url=async_streaming.base_url) as endpoint:
        job = endpoint.run({"n": 6, "delay": 0.01}).run()
        items = job.stream().pipe(ops.to_list()).run()
        state = job.state().run()

    assert items == [f"token-{number}" for number in range(6)]
    assert state.status.value == "COMPLETED"


def test_cancel_uses_stop_channel(
    async_streaming: LocalEndpoint,
) -> None:
    base = async_streaming.base_url
    body: dict[str, Any] = {"input": {"n": 1000, "delay": 0.05}}
    job_id = requests.post(f"{base}/ep/run", json=body, headers=_auth()).json()["id"]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if requests.get(f"{base}/ep/status/{job_id}", headers=_auth()).json()["status"] != (
            "IN_QUEUE"
        ):
            break
        time.sleep(0.05)
    running = requests.get(f"{base}/ep/status/{job_id}", headers=_auth()).json()

    cancelled = requests.post(f"{base}/ep/cancel/{job_id}", headers=_auth()).json()
    after = requests.post(
        f"{base}/ep/runsync", json={"input": {"n": 2}}, headers=_auth(), timeout=60
    ).json()

    assert cancelled["status"] == "CANCELLED"
    assert after["status"] == "COMPLETED"
    assert after["workerId"] == running["workerId"]
    assert requests.get(f"{base}/ep/health", headers=_auth()).json()["jobs"]["retried"] == 0
