"""Deeply nested JSON in request bodies and handler outputs meets one fixed limit."""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests

from rxrunpod.local import LocalEndpoint
from rxrunpod.local._output import MAX_JSON_DEPTH, check_json, nested_deeper_than
from tests.local.test_local_routes import wait_final

pytestmark = pytest.mark.timeout(60)


def nested(depth: int) -> Any:
    value: Any = []
    for _ in range(depth - 1):
        value = [value]
    return value


def nested_output(job: dict[str, Any]) -> Any:
    return nested(int(job["input"]["depth"]))


@pytest.mark.parametrize("depth", [980, 5000])
def test_too_deep_output_fails_job(http: requests.Session, depth: int) -> None:
    with LocalEndpoint(nested_output, workers=1) as endpoint:
        url = f"{endpoint.base_url}/ep"
        job_id = http.post(f"{url}/run", json={"input": {"depth": depth}}).json()["id"]
        document = wait_final(http, f"{url}/status/{job_id}")
        assert document["status"] == "FAILED"
        error = json.loads(document["error"])
        assert f"output is nested more than {MAX_JSON_DEPTH} levels deep" in error["error_message"]
        assert http.get(f"{url}/status/{job_id}").status_code == 200


def test_output_at_depth_limit_completes(http: requests.Session) -> None:
    with LocalEndpoint(nested_output, workers=1) as endpoint:
        url = f"{endpoint.base_url}/ep"
        job_id = http.post(f"{url}/run", json={"input": {"depth": MAX_JSON_DEPTH}}).json()["id"]
        document = wait_final(http, f"{url}/status/{job_id}")
        assert document["status"] == "COMPLETED"
        assert document["output"] == nested(MAX_JSON_DEPTH)


@pytest.mark.parametrize("depth", [1000, 100_000])
def test_too_deep_body_is_400(
    echo_endpoint: LocalEndpoint, http: requests.Session, depth: int
) -> None:
    body = '{"input": ' + "[" * depth + "]" * depth + "}"
    response = http.post(f"{echo_endpoint.base_url}/ep/run", data=body)
    assert response.status_code == 400
    assert f"nested more than {MAX_JSON_DEPTH} levels deep" in response.json()["error"]
    assert echo_endpoint.stats.submissions == {}


def test_body_one_level_past_limit_is_400(
    echo_endpoint: LocalEndpoint, http: requests.Session
) -> None:
    # The body object adds one level to the input's.
    body = json.dumps({"input": nested(MAX_JSON_DEPTH)})
    response = http.post(f"{echo_endpoint.base_url}/ep/run", data=body)
    assert response.status_code == 400
    accepted = http.post(
        f"{echo_endpoint.base_url}/ep/run", json={"input": nested(MAX_JSON_DEPTH - 1)}
    )
    assert accepted.status_code == 200


def test_wide_shallow_output_passes() -> None:
    wide = [[index] for index in range(10 * MAX_JSON_DEPTH)]
    check_json(wide, "output")
    assert not nested_deeper_than(wide, 2)
    assert nested_deeper_than(wide, 1)


def test_depth_counts_containers_only() -> None:
    assert not nested_deeper_than(7, 0)
    assert nested_deeper_than({}, 0)
    assert not nested_deeper_than({"a": [1, "x"]}, 2)
    assert nested_deeper_than({"a": [1, {"b": None}]}, 2)
