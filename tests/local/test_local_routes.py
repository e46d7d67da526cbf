"""The queue API routes against a running local endpoint."""

from __future__ import annotations

import re
import threading
import time
from typing import Any

import pytest
import requests

from rxrunpod.local import LocalEndpoint, serve
from tests.local.handlers import basic

pytestmark = pytest.mark.timeout(60)

RUN_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}-u1$")


def wait_final(session: requests.Session, url: str, timeout: float = 10.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        document: dict[str, Any] = session.get(url).json()
        if document["status"] in ("COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"):
            return document
        time.sleep(0.01)
    raise AssertionError(f"{url} did not reach a final state in {timeout} s")


def test_serve_yields_base_url_ending_in_v2() -> None:
    with serve(basic.echo, workers=1) as base_url:
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/v2", base_url)
        assert requests.get(f"{base_url}/any/health", timeout=5).status_code == 200


def test_run_answers_id_and_in_queue(echo_endpoint: LocalEndpoint, http: requests.Session) -> None:
    response = http.post(f"{echo_endpoint.base_url}/ep/run", json={"input": {"x": 1}})
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    document = response.json()
    assert document["status"] == "IN_QUEUE"
    assert RUN_ID.match(document["id"])


def test_status_of_completed_job_has_runpod_fields(
    echo_endpoint: LocalEndpoint, http: requests.Session
) -> None:
    job_id = http.post(f"{echo_endpoint.base_url}/ep/run", json={"input": {"x": 1}}).json()["id"]
    document = wait_final(http, f"{echo_endpoint.base_url}/ep/status/{job_id}")
    assert document["id"] == job_id
    assert document["status"] == "COMPLETED"
    assert document["output"] == {"echo": {"x": 1}}
    assert isinstance(document["delayTime"], int)
    assert isinstance(document["executionTime"], int)
    assert re.fullmatch(r"[a-z0-9]{14}", document["workerId"])


def test_status_answers_on_post_too(echo_endpoint: LocalEndpoint, http: requests.Session) -> None:
    job_id = http.post(f"{echo_endpoint.base_url}/ep/run", json={"input": 1}).json()["id"]
    assert http.post(f"{echo_endpoint.base_url}/ep/status/{job_id}").json()["id"] == job_id


def test_runsync_returns_output_and_sync_id(
    echo_endpoint: LocalEndpoint, http: requests.Session
) -> None:
    document = http.post(f"{echo_endpoint.base_url}/ep/runsync", json={"input": "hi"}).json()
    assert document["status"] == "COMPLETED"
    assert document["output"] == {"echo": "hi"}
    assert document["id"].startswith("sync-")
    assert document["id"].endswith("-u1")


def test_runsync_answers_in_progress_when_wait_ends(http: requests.Session) -> None:
    with LocalEndpoint(basic.sleepy, workers=1) as endpoint:
        started = time.monotonic()
        response = http.post(
            f"{endpoint.base_url}/ep/runsync?wait=1000", json={"input": {"seconds": 2.5}}
        )
        elapsed = time.monotonic() - started
        document = response.json()
        assert document["status"] == "IN_PROGRESS"
        assert 0.9 < elapsed < 2.0
        final = wait_final(http, f"{endpoint.base_url}/ep/status/{document['id']}")
        assert final["output"] == {"slept": 2.5}


def test_unknown_job_is_404_json(echo_endpoint: LocalEndpoint, http: requests.Session) -> None:
    response = http.get(f"{echo_endpoint.base_url}/ep/status/nope-u1")
    assert response.status_code == 404
    assert response.headers["Content-Type"] == "application/json"
    assert "nope-u1" in response.json()["error"]


def test_unknown_route_is_404_json(echo_endpoint: LocalEndpoint, http: requests.Session) -> None:
    response = http.get(f"{echo_endpoint.base_url}/ep/frobnicate")
    assert response.status_code == 404
    assert response.headers["Content-Type"] == "application/json"
    assert "error" in response.json()


def test_handler_exception_marks_job_failed(http: requests.Session) -> None:
    with LocalEndpoint(basic.raises, workers=1) as endpoint:
        document = http.post(f"{endpoint.base_url}/ep/runsync", json={"input": 7}).json()
    assert document["status"] == "FAILED"
    assert "bad input 7" in document["error"]
    assert "ValueError" in document["error"]


def test_generator_chunks_are_handed_out_once(http: requests.Session) -> None:
    with LocalEndpoint(basic.counts, workers=1) as endpoint:
        job_id = http.post(
            f"{endpoint.base_url}/ep/run", json={"input": {"n": 5, "delay": 0.01}}
        ).json()["id"]
        received: list[int] = []
        status = "IN_QUEUE"
        while status not in ("COMPLETED", "FAILED"):
            answer = http.get(f"{endpoint.base_url}/ep/stream/{job_id}").json()
            status = answer["status"]
            received.extend(chunk["output"] for chunk in answer["stream"])
        assert received == [0, 1, 2, 3, 4]
        assert http.get(f"{endpoint.base_url}/ep/stream/{job_id}").json()["stream"] == []


def test_async_generator_streams_in_order(http: requests.Session) -> None:
    with LocalEndpoint(basic.async_counts, workers=1, return_aggregate_stream=True) as endpoint:
        job_id = http.post(f"{endpoint.base_url}/ep/run", json={"input": {"n": 4}}).json()["id"]
        final = wait_final(http, f"{endpoint.base_url}/ep/status/{job_id}")
        assert final["output"] == [0, 1, 2, 3]


def test_async_handler_completes(http: requests.Session) -> None:
    with LocalEndpoint(basic.async_echo, workers=1) as endpoint:
        document = http.post(
            f"{endpoint.base_url}/ep/runsync", json={"input": {"seconds": 0.01}}
        ).json()
    assert document["output"] == {"echo": {"seconds": 0.01}}


def test_jobs_queue_behind_busy_workers(http: requests.Session) -> None:
    with LocalEndpoint(basic.sleepy, workers=1) as endpoint:
        first = http.post(f"{endpoint.base_url}/ep/run", json={"input": {"seconds": 0.5}}).json()[
            "id"
        ]
        second = http.post(f"{endpoint.base_url}/ep/run", json={"input": {"seconds": 0.01}}).json()[
            "id"
        ]
        time.sleep(0.2)
        assert http.get(f"{endpoint.base_url}/ep/status/{first}").json()["status"] == "IN_PROGRESS"
        assert http.get(f"{endpoint.base_url}/ep/status/{second}").json()["status"] == "IN_QUEUE"
        health = http.get(f"{endpoint.base_url}/ep/health").json()
        assert health["jobs"]["inQueue"] == 1
        assert health["jobs"]["inProgress"] == 1
        assert health["workers"]["running"] == 1
        assert wait_final(http, f"{endpoint.base_url}/ep/status/{second}")["status"] == "COMPLETED"


def test_cancel_queued_job(http: requests.Session) -> None:
    with LocalEndpoint(basic.sleepy, workers=1) as endpoint:
        http.post(f"{endpoint.base_url}/ep/run", json={"input": {"seconds": 0.5}})
        queued = http.post(f"{endpoint.base_url}/ep/run", json={"input": {"seconds": 0.01}}).json()[
            "id"
        ]
        answer = http.post(f"{endpoint.base_url}/ep/cancel/{queued}").json()
        assert answer == {"id": queued, "status": "CANCELLED"}
        assert http.get(f"{endpoint.base_url}/ep/status/{queued}").json()["status"] == "CANCELLED"


def test_purge_queue_removes_only_queued_jobs(http: requests.Session) -> None:
    with LocalEndpoint(basic.sleepy, workers=1) as endpoint:
        running = http.post(f"{endpoint.base_url}/ep/run", json={"input": {"seconds": 0.5}}).json()[
            "id"
        ]
        for _ in range(3):
            http.post(f"{endpoint.base_url}/ep/run", json={"input": {"seconds": 0.01}})
        time.sleep(0.1)
        answer = http.post(f"{endpoint.base_url}/ep/purge-queue").json()
        assert answer == {"removed": 3, "status": "completed"}
        assert wait_final(http, f"{endpoint.base_url}/ep/status/{running}")["status"] == "COMPLETED"


def test_retry_requeues_failed_job_under_same_id(http: requests.Session) -> None:
    with LocalEndpoint(basic.raises, workers=1) as endpoint:
        job_id = http.post(f"{endpoint.base_url}/ep/run", json={"input": 1}).json()["id"]
        assert wait_final(http, f"{endpoint.base_url}/ep/status/{job_id}")["status"] == "FAILED"
        answer = http.post(f"{endpoint.base_url}/ep/retry/{job_id}").json()
        assert answer["id"] == job_id
        assert wait_final(http, f"{endpoint.base_url}/ep/status/{job_id}")["status"] == "FAILED"
        health = http.get(f"{endpoint.base_url}/ep/health").json()
        assert health["jobs"]["retried"] == 1
        assert health["jobs"]["failed"] == 2


def test_retry_of_completed_job_is_400(
    echo_endpoint: LocalEndpoint, http: requests.Session
) -> None:
    job_id = http.post(f"{echo_endpoint.base_url}/ep/run", json={"input": 1}).json()["id"]
    wait_final(http, f"{echo_endpoint.base_url}/ep/status/{job_id}")
    response = http.post(f"{echo_endpoint.base_url}/ep/retry/{job_id}")
    assert response.status_code == 400
    assert "only FAILED or TIMED_OUT" in response.json()["error"]


def test_stop_leaves_no_threads() -> None:
    before = {thread.ident for thread in threading.enumerate()}
    with LocalEndpoint(basic.echo, workers=3) as endpoint:
        requests.post(f"{endpoint.base_url}/ep/runsync", json={"input": 1}, timeout=5)
    leftover = [thread for thread in threading.enumerate() if thread.ident not in before]
    assert leftover == []
