"""Cold starts, worker scaling and /health worker counts."""

from __future__ import annotations

import time
from typing import Any

import pytest
import requests

from rxrunpod.local import LocalEndpoint
from tests.local.handlers import basic
from tests.local.test_local_routes import wait_final

pytestmark = pytest.mark.timeout(60)


def workers(http: requests.Session, endpoint: LocalEndpoint) -> dict[str, Any]:
    document: dict[str, Any] = http.get(f"{endpoint.base_url}/ep/health").json()["workers"]
    return document


def test_cold_start_delays_first_job_and_shows_initializing(http: requests.Session) -> None:
    with LocalEndpoint(basic.echo, workers=2, cold_start=0.5) as endpoint:
        assert workers(http, endpoint)["initializing"] == 2
        job_id = http.post(f"{endpoint.base_url}/ep/run", json={"input": 1}).json()["id"]
        document = wait_final(http, f"{endpoint.base_url}/ep/status/{job_id}")
        assert document["delayTime"] >= 400
        assert workers(http, endpoint)["idle"] == 2


def test_pool_scales_up_to_max_and_back_down(http: requests.Session) -> None:
    with LocalEndpoint(
        basic.sleepy, min_workers=0, max_workers=3, idle_timeout=0.3, cold_start=0.1
    ) as endpoint:
        assert workers(http, endpoint) == {
            "idle": 0,
            "initializing": 0,
            "ready": 0,
            "running": 0,
            "throttled": 0,
            "unhealthy": 0,
        }
        ids = [
            http.post(f"{endpoint.base_url}/ep/run", json={"input": {"seconds": 0.6}}).json()["id"]
            for _ in range(5)
        ]
        counts = workers(http, endpoint)
        assert counts["initializing"] == 3
        assert counts["throttled"] == 2
        time.sleep(0.3)
        assert workers(http, endpoint)["running"] == 3
        for job_id in ids:
            assert (
                wait_final(http, f"{endpoint.base_url}/ep/status/{job_id}")["status"] == "COMPLETED"
            )
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and sum(workers(http, endpoint).values()) > 0:
            time.sleep(0.05)
        assert workers(http, endpoint)["idle"] == 0


def test_min_workers_stay_when_idle(http: requests.Session) -> None:
    with LocalEndpoint(basic.echo, min_workers=1, max_workers=2, idle_timeout=0.1) as endpoint:
        http.post(f"{endpoint.base_url}/ep/runsync", json={"input": 1})
        time.sleep(0.4)
        assert workers(http, endpoint)["idle"] == 1


def test_invalid_worker_counts_are_rejected() -> None:
    with pytest.raises(ValueError, match="min_workers"):
        LocalEndpoint(basic.echo, min_workers=3, max_workers=2)
