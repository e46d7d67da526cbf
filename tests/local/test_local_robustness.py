"""Robustness of the local endpoint against handlers and requests that misbehave.

Outputs that JSON cannot carry, handlers that never return, handler files
that fail to import and out-of-range request values must each end in a clear
error, never a 500, a lost worker or a raw traceback.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from rxrunpod.local import LocalEndpoint
from tests.local.test_local_routes import wait_final

pytestmark = pytest.mark.timeout(60)


# -- handlers ---------------------------------------------------------------


def returns_object(job: dict[str, Any]) -> Any:
    return {"obj": object()}


def returns_nan(job: dict[str, Any]) -> Any:
    return {"values": [1.0, float(job["input"]["value"])]}


def yields_object_third(job: dict[str, Any]) -> Iterator[Any]:
    yield 1
    yield {"two": 2}
    yield {"bad": {1, 2}}
    yield 4


def echo(job: dict[str, Any]) -> Any:
    return job["input"]


# -- outputs JSON cannot carry ----------------------------------------------


def error_message(document: dict[str, Any]) -> str:
    """Return the message inside a FAILED job's ``error`` (a JSON document in a string)."""
    message: str = json.loads(document["error"])["error_message"]
    return message


def test_unserialisable_return_fails_job(http: requests.Session) -> None:
    with LocalEndpoint(returns_object, workers=1) as endpoint:
        job_id = http.post(f"{endpoint.base_url}/ep/run", json={"input": {}}).json()["id"]
        url = f"{endpoint.base_url}/ep/status/{job_id}"
        document = wait_final(http, url)
        again = http.get(url)

    assert document["status"] == "FAILED"
    assert "not JSON-serialisable" in error_message(document)
    assert "output['obj'] is of type object" in error_message(document)
    assert "output" not in document
    assert again.status_code == 200
    assert again.json()["status"] == "FAILED"


def test_unserialisable_return_fails_in_process_worker(http: requests.Session) -> None:
    with LocalEndpoint(returns_object, workers=1, isolation="process") as endpoint:
        document = http.post(f"{endpoint.base_url}/ep/runsync", json={"input": {}}).json()

    assert document["status"] == "FAILED"
    assert "output['obj'] is of type object" in error_message(document)


def test_unserialisable_item_keeps_earlier_items(http: requests.Session) -> None:
    with LocalEndpoint(yields_object_third, workers=1) as endpoint:
        job_id = http.post(f"{endpoint.base_url}/ep/run", json={"input": {}}).json()["id"]
        document = wait_final(http, f"{endpoint.base_url}/ep/status/{job_id}")
        first = http.get(f"{endpoint.base_url}/ep/stream/{job_id}")
        second = http.get(f"{endpoint.base_url}/ep/stream/{job_id}")

    assert document["status"] == "FAILED"
    assert "stream item 2['bad'] is of type set" in error_message(document)
    assert first.status_code == 200
    assert first.json()["stream"] == [{"output": 1}, {"output": {"two": 2}}]
    assert first.json()["status"] == "FAILED"
    assert second.status_code == 200
    assert second.json()["stream"] == []


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_non_finite_output_fails_job(http: requests.Session, value: str) -> None:
    with LocalEndpoint(returns_nan, workers=1) as endpoint:
        body = {"input": {"value": value}}
        document = http.post(f"{endpoint.base_url}/ep/runsync", json=body).json()

    assert document["status"] == "FAILED"
    assert "output['values'][1] is" in error_message(document)
    assert "JSON has no NaN or Infinity" in error_message(document)


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_request_is_400(http: requests.Session, constant: str) -> None:
    with LocalEndpoint(echo, workers=1) as endpoint:
        body = f'{{"input": {{"x": {constant}}}}}'
        response = http.post(f"{endpoint.base_url}/ep/run", data=body)

    assert response.status_code == 400
    assert constant in response.json()["error"]
    assert "not valid JSON" in response.json()["error"]


# -- handlers that never return ---------------------------------------------

RELEASE = threading.Event()
# Ids of the jobs whose handler started blocking: a job cancelled before its
# handler starts is never run, so a test cancels only after the id arrives here.
BLOCKING: queue.SimpleQueue[str] = queue.SimpleQueue()


def blocks_unless_quick(job: dict[str, Any]) -> Any:
    """Return at once for ``{"quick": true}``, else block until the test releases it."""
    if not job["input"].get("quick"):
        BLOCKING.put(job["id"])
        RELEASE.wait(30)
    return {"done": True}


@pytest.fixture
def release() -> Iterator[threading.Event]:
    """Clear ``RELEASE`` for the test and set it afterwards, so abandoned threads end."""
    RELEASE.clear()
    while not BLOCKING.empty():
        BLOCKING.get_nowait()
    yield RELEASE
    RELEASE.set()


def wait_blocking(job_id: str) -> None:
    """Wait until the handler of ``job_id`` runs and blocks; other ids that arrive stay queued."""
    others: list[str] = []
    try:
        while (started := BLOCKING.get(timeout=10)) != job_id:
            others.append(started)
    finally:
        for started in others:
            BLOCKING.put(started)


def submit(http: requests.Session, endpoint: LocalEndpoint, body: dict[str, Any]) -> str:
    job_id: str = http.post(f"{endpoint.base_url}/ep/run", json=body).json()["id"]
    return job_id


def wait_status(
    http: requests.Session, endpoint: LocalEndpoint, job_id: str, wanted: str
) -> dict[str, Any]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        document: dict[str, Any] = http.get(f"{endpoint.base_url}/ep/status/{job_id}").json()
        if document["status"] == wanted:
            return document
        time.sleep(0.02)
    raise AssertionError(f"job {job_id} did not reach {wanted} in 10 s: {document}")


def health_workers(http: requests.Session, endpoint: LocalEndpoint) -> dict[str, int]:
    workers: dict[str, int] = http.get(f"{endpoint.base_url}/ep/health").json()["workers"]
    return workers


def test_cancelled_hung_jobs_free_their_workers(
    http: requests.Session, release: threading.Event, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="rxrunpod.local")
    with LocalEndpoint(blocks_unless_quick, workers=2, stop_grace=0.2) as endpoint:
        hung = [submit(http, endpoint, {"input": {}}) for _ in range(2)]
        for job_id in hung:
            wait_blocking(job_id)
            http.post(f"{endpoint.base_url}/ep/cancel/{job_id}")
        quick = submit(http, endpoint, {"input": {"quick": True}})
        document = wait_status(http, endpoint, quick, "COMPLETED")
        workers = health_workers(http, endpoint)

    assert document["output"] == {"done": True}
    assert workers["unhealthy"] == 2
    assert workers["running"] == 0
    assert workers["idle"] == 2
    warnings = [record for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 2
    for job_id, record in zip(hung, warnings, strict=True):
        assert job_id in record.getMessage()
        assert "abandoning its thread" in record.getMessage()


def test_timed_out_hung_job_frees_its_worker(
    http: requests.Session, release: threading.Event
) -> None:
    with LocalEndpoint(blocks_unless_quick, workers=1, stop_grace=0.2) as endpoint:
        hung = submit(http, endpoint, {"input": {}, "policy": {"executionTimeout": 200}})
        failed = wait_status(http, endpoint, hung, "FAILED")
        quick = submit(http, endpoint, {"input": {"quick": True}})
        document = wait_status(http, endpoint, quick, "COMPLETED")

    assert failed["error"] == "executionTimeout exceeded"
    assert document["output"] == {"done": True}


def test_abandoned_threads_are_bounded(
    http: requests.Session, release: threading.Event, caplog: pytest.LogCaptureFixture
) -> None:
    with LocalEndpoint(
        blocks_unless_quick, workers=1, stop_grace=0.2, max_abandoned_threads=1
    ) as endpoint:
        for _ in range(2):
            job_id = submit(http, endpoint, {"input": {}})
            wait_blocking(job_id)
            http.post(f"{endpoint.base_url}/ep/cancel/{job_id}")
        quick = submit(http, endpoint, {"input": {"quick": True}})
        time.sleep(1.0)
        waiting = http.get(f"{endpoint.base_url}/ep/status/{quick}").json()
        workers = health_workers(http, endpoint)
        release.set()
        document = wait_status(http, endpoint, quick, "COMPLETED")

    assert waiting["status"] == "IN_QUEUE"
    assert workers["unhealthy"] == 2
    assert workers["running"] == 0
    assert workers["ready"] == 0
    assert workers["idle"] == 0
    assert document["output"] == {"done": True}
    errors = [record for record in caplog.records if record.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "--isolation process" in errors[0].getMessage()


def test_pool_of_hung_workers_is_unhealthy(
    http: requests.Session, release: threading.Event
) -> None:
    with LocalEndpoint(
        blocks_unless_quick, workers=2, stop_grace=0.2, max_abandoned_threads=2
    ) as endpoint:
        for _ in range(4):
            job_id = submit(http, endpoint, {"input": {}})
            wait_blocking(job_id)
            http.post(f"{endpoint.base_url}/ep/cancel/{job_id}")
            wait_status(http, endpoint, job_id, "CANCELLED")
        time.sleep(0.6)
        quick = submit(http, endpoint, {"input": {"quick": True}})
        time.sleep(0.3)
        health = http.get(f"{endpoint.base_url}/ep/health").json()
        release.set()
        document = wait_status(http, endpoint, quick, "COMPLETED")

    assert health["workers"]["unhealthy"] == 4
    assert health["workers"]["ready"] == 0
    assert health["workers"]["idle"] == 0
    assert health["workers"]["running"] == 0
    assert health["jobs"]["inQueue"] == 1
    assert document["output"] == {"done": True}


# -- rxrunpod serve start-up errors -----------------------------------------

ROOT = Path(__file__).parents[2]
BROKEN_IMPORT = Path(__file__).parent / "handlers" / "broken_import.py"


def run_serve(*arguments: str) -> subprocess.CompletedProcess[str]:
    """Run ``rxrunpod serve`` with ``arguments`` in a child process that must exit by itself."""
    return subprocess.run(
        [sys.executable, "-m", "rxrunpod", "serve", *arguments],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=False,
    )


def test_serve_syntax_error_is_one_line(tmp_path: Path) -> None:
    handler = tmp_path / "typo.py"
    handler.write_text("def handler(job):\n    return job[\n")
    finished = run_serve(str(handler), "--port", "0")

    assert finished.returncode == 2
    assert finished.stderr.count("\n") == 1
    assert str(handler) in finished.stderr
    assert "SyntaxError" in finished.stderr
    assert "line 2" in finished.stderr
    assert "Traceback" not in finished.stderr


def test_serve_import_error_is_one_line() -> None:
    finished = run_serve(str(BROKEN_IMPORT), "--port", "0")

    assert finished.returncode == 2
    assert finished.stderr.count("\n") == 1
    assert str(BROKEN_IMPORT) in finished.stderr
    assert "RuntimeError: this handler cannot be imported" in finished.stderr
    assert "Traceback" not in finished.stderr


def test_serve_import_traceback_at_debug() -> None:
    finished = run_serve(str(BROKEN_IMPORT), "--port", "0", "--log-level", "DEBUG")

    assert finished.returncode == 2
    assert "Traceback" in finished.stderr
    assert 'broken_import.py", line 3' in finished.stderr


@pytest.mark.parametrize("port", ["99999", "65536", "-1"])
def test_serve_port_out_of_range_exits_2(port: str) -> None:
    finished = run_serve(str(BROKEN_IMPORT), "--port", port)

    assert finished.returncode == 2
    assert finished.stderr.count("\n") == 1
    assert f"--port {port} is out of range" in finished.stderr
    assert "from 0 to 65535" in finished.stderr
    assert "Traceback" not in finished.stderr


def test_endpoint_rejects_port_out_of_range() -> None:
    with pytest.raises(
        ValueError, match=r"port must be from 0 to 65535 \(0 picks a free one\), got 99999"
    ):
        LocalEndpoint(echo, port=99999)


# -- request and option checks ----------------------------------------------

SEVEN_DAYS_MS = 7 * 24 * 3600 * 1000


@pytest.mark.parametrize("field", ["executionTimeout", "ttl"])
@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("1e400", "inf"),
        ("1e23", "1e+23"),
        ("-5", "-5"),
        ("0", "0"),
        ("1.5", "1.5"),
        (str(SEVEN_DAYS_MS + 1), str(SEVEN_DAYS_MS + 1)),
        ("true", "True"),
        ('"600"', "'600'"),
    ],
)
def test_policy_out_of_range_is_400(
    echo_endpoint: LocalEndpoint, http: requests.Session, field: str, raw: str, shown: str
) -> None:
    body = f'{{"input": 1, "policy": {{"{field}": {raw}}}}}'
    response = http.post(f"{echo_endpoint.base_url}/ep/run", data=body)

    assert response.status_code == 400
    message = response.json()["error"]
    assert f"'policy.{field}' must be a whole number of milliseconds" in message
    assert f"from 1 to {SEVEN_DAYS_MS} (7 days)" in message
    assert message.endswith(f"got {shown}")
    assert echo_endpoint.stats.submissions == {}


def test_policy_nan_is_400(echo_endpoint: LocalEndpoint, http: requests.Session) -> None:
    body = '{"input": 1, "policy": {"executionTimeout": NaN}}'
    response = http.post(f"{echo_endpoint.base_url}/ep/run", data=body)

    assert response.status_code == 400
    assert "NaN is not a JSON value" in response.json()["error"]


@pytest.mark.parametrize(
    "policy", [{"executionTimeout": 5000, "ttl": 10000}, {"executionTimeout": SEVEN_DAYS_MS}]
)
def test_policy_in_range_is_accepted(
    echo_endpoint: LocalEndpoint, http: requests.Session, policy: dict[str, int]
) -> None:
    response = http.post(
        f"{echo_endpoint.base_url}/ep/runsync", json={"input": 1, "policy": policy}
    )

    assert response.status_code == 200
    assert response.json()["status"] == "COMPLETED"


def test_policy_below_runpod_minimum_warns_once(
    echo_endpoint: LocalEndpoint, http: requests.Session, caplog: pytest.LogCaptureFixture
) -> None:
    for _ in range(3):
        body = {"input": 1, "policy": {"executionTimeout": 300, "ttl": 2000}}
        response = http.post(f"{echo_endpoint.base_url}/ep/runsync", json=body)
        assert response.json()["status"] == "COMPLETED"

    warnings = [
        record.getMessage() for record in caplog.records if record.levelno == logging.WARNING
    ]
    assert len(warnings) == 2
    assert "policy.executionTimeout 300 ms is below RunPod's minimum of 5000 ms" in warnings[0]
    assert "policy.ttl 2000 ms is below RunPod's minimum of 10000 ms" in warnings[1]


def test_unresolvable_host_fails_without_warning() -> None:
    endpoint = LocalEndpoint(echo, host="127.0.0.999")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(OSError, match=r"cannot resolve host '127\.0\.0\.999'"):
            endpoint.start()

    assert [str(warning.message) for warning in caught] == []
    assert not endpoint.running


def test_serve_unresolvable_host_is_one_line() -> None:
    finished = run_serve(
        str(ROOT / "tests/local/handlers/runpod_style.py"), "--host", "127.0.0.999"
    )

    assert finished.returncode == 3
    assert finished.stderr.count("\n") == 1
    assert "cannot resolve host '127.0.0.999'" in finished.stderr
    assert "other machines" not in finished.stderr


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("localhost", True), ("::1", True), ("0.0.0.0", False)],
)
def test_bind_address_detects_loopback(host: str, loopback: bool) -> None:
    from rxrunpod.local._endpoint import bind_address

    assert bind_address(host, 0)[2] is loopback
