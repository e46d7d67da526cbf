"""Handler loading, the runpod shim and RunPod's worker features."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from rxrunpod.local import LocalEndpoint, load_handler
from tests.local.handlers import features
from tests.local.test_local_routes import wait_final

pytestmark = pytest.mark.timeout(60)

HANDLERS = Path(__file__).parent / "handlers"


def test_handler_file_calling_start_at_import_is_served(http: requests.Session) -> None:
    with LocalEndpoint(str(HANDLERS / "runpod_style.py"), workers=1) as endpoint:
        document = http.post(f"{endpoint.base_url}/ep/runsync", json={"input": {}}).json()
    assert document["status"] == "COMPLETED"
    assert document["output"] == ["one", "two", "three"]


def test_named_function_of_handler_file_is_served(http: requests.Session) -> None:
    with LocalEndpoint(f"{HANDLERS / 'runpod_style.py'}:handler", workers=1) as endpoint:
        document = http.post(
            f"{endpoint.base_url}/ep/runsync", json={"input": {"name": "Ada"}}
        ).json()
    assert document["output"] == {"greeting": "hello Ada"}


def test_main_guarded_file_needs_function_name() -> None:
    with pytest.raises(ValueError, match=r"main_guarded\.py:handler"):
        load_handler(str(HANDLERS / "main_guarded.py"))
    spec = load_handler(f"{HANDLERS / 'main_guarded.py'}:generator_handler")
    assert list(spec.function({"id": "x", "input": {"n": 2}})) == [0, 1]


def test_module_colon_function_is_loaded() -> None:
    spec = load_handler("tests.local.handlers.basic:echo")
    assert spec.function({"input": 3}) == {"echo": 3}


def test_missing_handler_file_is_value_error() -> None:
    with pytest.raises(ValueError, match="not found"):
        load_handler("no/such/handler.py")


def test_handler_file_runs_without_runpod_installed(
    http: requests.Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [name for name in sys.modules if name == "runpod" or name.startswith("runpod.")]:
        monkeypatch.delitem(sys.modules, name)
    # None in sys.modules makes "import runpod" raise ImportError, as if it were not installed.
    monkeypatch.setitem(sys.modules, "runpod", None)
    with LocalEndpoint(str(HANDLERS / "runpod_style.py"), workers=1) as endpoint:
        assert str(sys.modules["runpod"].__doc__).startswith("Stand-in")
        document = http.post(f"{endpoint.base_url}/ep/runsync", json={"input": {}}).json()
    assert document["output"] == ["one", "two", "three"]


def test_real_runpod_start_still_works_outside_loading() -> None:
    import runpod

    start = runpod.serverless.start
    load_handler(str(HANDLERS / "runpod_style.py"))
    assert runpod.serverless.start.__wrapped__ is getattr(start, "__wrapped__", start)


def test_progress_update_is_visible_while_in_progress(http: requests.Session) -> None:
    with LocalEndpoint(features.progress, workers=1) as endpoint:
        job_id = http.post(f"{endpoint.base_url}/ep/run", json={"input": {"hold": 0.6}}).json()[
            "id"
        ]
        deadline = time.monotonic() + 5
        seen: dict[str, Any] = {}
        while time.monotonic() < deadline:
            seen = http.get(f"{endpoint.base_url}/ep/status/{job_id}").json()
            if seen.get("output") is not None:
                break
            time.sleep(0.02)
        assert seen["status"] == "IN_PROGRESS"
        assert seen["output"] == {"step": 1}
        assert wait_final(http, f"{endpoint.base_url}/ep/status/{job_id}")["output"] == "done"


def test_refresh_worker_is_stripped_and_worker_replaced(http: requests.Session) -> None:
    features.threads_seen.clear()
    with LocalEndpoint(features.refreshing, workers=1) as endpoint:
        first = http.post(f"{endpoint.base_url}/ep/runsync", json={"input": 1}).json()
        second = http.post(f"{endpoint.base_url}/ep/runsync", json={"input": 2}).json()
    assert first["output"] == {"value": 1}
    assert second["output"] == {"value": 2}
    assert first["workerId"] != second["workerId"]
    assert len(set(features.threads_seen)) == 2


def test_returned_error_marks_failed_and_keeps_rest(http: requests.Session) -> None:
    with LocalEndpoint(features.returns_error, workers=1) as endpoint:
        document = http.post(f"{endpoint.base_url}/ep/runsync", json={"input": 5}).json()
    assert document["status"] == "FAILED"
    assert document["error"] == "input was rejected"
    assert document["output"] == {"detail": 5}


def test_cancel_running_async_handler_raises_cancelled_error(http: requests.Session) -> None:
    features.cancelled_jobs.clear()
    with LocalEndpoint(features.slow_async, workers=1) as endpoint:
        job_id = http.post(f"{endpoint.base_url}/ep/run", json={"input": {"seconds": 10}}).json()[
            "id"
        ]
        time.sleep(0.2)
        answer = http.post(f"{endpoint.base_url}/ep/cancel/{job_id}").json()
        assert answer["status"] == "CANCELLED"
        deadline = time.monotonic() + 5
        while job_id not in features.cancelled_jobs and time.monotonic() < deadline:
            time.sleep(0.02)
        assert features.cancelled_jobs == [job_id]
        follow_up = http.post(
            f"{endpoint.base_url}/ep/runsync", json={"input": {"seconds": 0}}
        ).json()
        assert follow_up["output"] == "finished"


def test_concurrency_modifier_runs_async_jobs_together(http: requests.Session) -> None:
    features.running_peak = 0
    with LocalEndpoint(
        features.concurrent, workers=1, concurrency_modifier=features.up_to_four
    ) as endpoint:
        ids = [
            http.post(f"{endpoint.base_url}/ep/run", json={"input": n}).json()["id"]
            for n in range(4)
        ]
        started = time.monotonic()
        for job_id in ids:
            assert (
                wait_final(http, f"{endpoint.base_url}/ep/status/{job_id}")["status"] == "COMPLETED"
            )
        elapsed = time.monotonic() - started
    assert features.running_peak == 4
    assert elapsed < 0.7
