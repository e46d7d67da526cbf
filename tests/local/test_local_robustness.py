"""Robustness of the local endpoint against handlers and requests that misbehave.

Outputs that JSON cannot carry, handlers that never return, handler files
that fail to import and out-of-range request values must each end in a clear
error, never a 500, a lost worker or a raw traceback.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
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
