"""Worker processes: crashes, hangs, cancel, refresh, health and data across the boundary."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]
import pytest
import requests

from rxrunpod.local import LocalEndpoint
from rxrunpod.local._process_worker import live_children
from tests.local.handlers import process_handlers

pytestmark = pytest.mark.timeout(90)

HANDLERS = Path(__file__).parent / "handlers"
FINAL = ("COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT")


def wait_for(check: Callable[[], Any], timeout: float = 20.0, what: str = "the condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"{what} did not hold within {timeout} s")


def health(http: requests.Session, endpoint: LocalEndpoint) -> dict[str, Any]:
    document: dict[str, Any] = http.get(f"{endpoint.base_url}/ep/health", timeout=5).json()
    return document


def wait_idle(http: requests.Session, endpoint: LocalEndpoint, count: int) -> None:
    wait_for(
        lambda: health(http, endpoint)["workers"]["idle"] == count,
        what=f"{count} idle workers",
    )


def status(http: requests.Session, endpoint: LocalEndpoint, job_id: str) -> dict[str, Any]:
    document: dict[str, Any] = http.get(f"{endpoint.base_url}/ep/status/{job_id}", timeout=5).json()
    return document


def final(
    http: requests.Session, endpoint: LocalEndpoint, job_id: str, timeout: float = 30.0
) -> dict[str, Any]:
    document: dict[str, Any] = wait_for(
        lambda: (found := status(http, endpoint, job_id))["status"] in FINAL and found,
        timeout,
        f"job {job_id} ending",
    )
    return document


def submit(http: requests.Session, endpoint: LocalEndpoint, body: dict[str, Any]) -> str:
    job_id: str = http.post(f"{endpoint.base_url}/ep/run", json=body, timeout=5).json()["id"]
    return job_id


def progress_pid(http: requests.Session, endpoint: LocalEndpoint, job_id: str) -> int:
    """Wait until the handler reported its process id as progress; return it."""
    document = wait_for(
        lambda: (found := status(http, endpoint, job_id)).get("output") and found,
        what=f"progress of job {job_id}",
    )
    pid: int = document["output"]["pid"]
    return pid


def gone(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


@pytest.fixture
def crashy() -> Iterator[LocalEndpoint]:
    with LocalEndpoint(
        process_handlers.crashes_on_request, workers=2, isolation="process", lost_job_retries=1
    ) as endpoint:
        yield endpoint


def test_worker_crash_fails_only_its_job(http: requests.Session, crashy: LocalEndpoint) -> None:
    wait_idle(http, crashy, 2)
    long_job = submit(http, crashy, {"input": {"seconds": 2}})
    wait_for(lambda: status(http, crashy, long_job)["status"] == "IN_PROGRESS")
    crash_job = submit(http, crashy, {"input": {"crash": True}})

    crashed = final(http, crashy, crash_job)
    survivor = final(http, crashy, long_job)
    after = http.post(f"{crashy.base_url}/ep/runsync", json={"input": {"n": 1}}).json()

    assert crashed["status"] == "FAILED"
    assert crashed["error"].startswith(f"worker {crashed['workerId']} exited: process ")
    assert crashed["error"].endswith("exited with code 1")
    assert survivor["status"] == "COMPLETED"
    assert after["status"] == "COMPLETED"
    assert after["output"]["echo"] == {"n": 1}
    assert after["workerId"] != crashed["workerId"]
    jobs = health(http, crashy)["jobs"]
    assert jobs["retried"] == 1
    assert jobs["failed"] == 1


def test_crashed_job_requeued_as_retried(http: requests.Session, crashy: LocalEndpoint) -> None:
    wait_idle(http, crashy, 2)
    crash_job = submit(http, crashy, {"input": {"crash": True}})

    wait_for(lambda: health(http, crashy)["jobs"]["retried"] == 1, what="one requeue")
    assert final(http, crashy, crash_job)["status"] == "FAILED"
    wait_idle(http, crashy, 2)
    assert health(http, crashy)["workers"]["unhealthy"] == 0


def test_execution_timeout_kills_hanging_worker(
    http: requests.Session,
) -> None:
    with LocalEndpoint(
        process_handlers.sleeps_with_pid, workers=1, isolation="process"
    ) as endpoint:
        job_id = submit(
            http, endpoint, {"input": {"seconds": 60}, "policy": {"executionTimeout": 1500}}
        )
        pid = progress_pid(http, endpoint, job_id)
        ended = final(http, endpoint, job_id, timeout=10)

        assert ended["status"] == "FAILED"
        assert "executionTimeout" in ended["error"]
        wait_for(lambda: gone(pid), 5, f"process {pid} ending")
        wait_idle(http, endpoint, 1)
        next_job = submit(http, endpoint, {"input": {"seconds": 0}})
        assert progress_pid(http, endpoint, next_job) != pid


def test_cancel_sync_handler_kills_worker(
    http: requests.Session,
) -> None:
    with LocalEndpoint(
        process_handlers.sleeps_with_pid, workers=1, isolation="process"
    ) as endpoint:
        job_id = submit(http, endpoint, {"input": {"seconds": 60}})
        pid = progress_pid(http, endpoint, job_id)
        started = time.monotonic()

        answer = http.post(f"{endpoint.base_url}/ep/cancel/{job_id}").json()

        assert answer["status"] == "CANCELLED"
        wait_for(lambda: gone(pid), 5, f"process {pid} ending")
        assert time.monotonic() - started < 2.0
        wait_idle(http, endpoint, 1)
        assert health(http, endpoint)["jobs"]["retried"] == 0


def test_cancel_async_handler_keeps_worker(http: requests.Session, tmp_path: Path) -> None:
    marker = tmp_path / "cancelled.txt"
    with LocalEndpoint(
        process_handlers.async_notes_cancel, workers=1, isolation="process"
    ) as endpoint:
        job_id = submit(http, endpoint, {"input": {"seconds": 60, "marker": str(marker)}})
        pid = progress_pid(http, endpoint, job_id)

        http.post(f"{endpoint.base_url}/ep/cancel/{job_id}")

        wait_for(marker.exists, 5, "the handler seeing CancelledError")
        assert marker.read_text() == job_id
        next_job = submit(http, endpoint, {"input": {"seconds": 0, "marker": str(marker)}})
        assert final(http, endpoint, next_job)["output"] == {"pid": pid}


def test_refresh_worker_starts_new_process(http: requests.Session) -> None:
    with LocalEndpoint(process_handlers.refreshes, workers=1, isolation="process") as endpoint:
        first = http.post(f"{endpoint.base_url}/ep/runsync", json={"input": {}}).json()
        second = http.post(f"{endpoint.base_url}/ep/runsync", json={"input": {}}).json()

    assert first["output"]["pid"] != second["output"]["pid"]
    assert first["workerId"] != second["workerId"]
    assert gone(first["output"]["pid"])


def test_generator_streams_10000_items_in_order(
    http: requests.Session,
) -> None:
    with LocalEndpoint(
        process_handlers.counts, workers=1, isolation="process", return_aggregate_stream=True
    ) as endpoint:
        job_id = submit(http, endpoint, {"input": {"n": 10_000}})
        items: list[Any] = []
        document: dict[str, Any] = {"status": "IN_QUEUE"}
        deadline = time.monotonic() + 60
        while document["status"] not in FINAL and time.monotonic() < deadline:
            document = http.get(f"{endpoint.base_url}/ep/stream/{job_id}").json()
            items.extend(entry["output"] for entry in document["stream"])

    assert document["status"] == "COMPLETED"
    assert items == list(range(10_000))
    assert document["output"] == list(range(10_000))


def test_progress_update_crosses_processes(http: requests.Session) -> None:
    with LocalEndpoint(
        process_handlers.sleeps_with_pid, workers=1, isolation="process"
    ) as endpoint:
        job_id = submit(http, endpoint, {"input": {"seconds": 0.3}})
        pid = progress_pid(http, endpoint, job_id)
        ended = final(http, endpoint, job_id)

    assert pid != os.getpid()
    assert ended["output"] == {"pid": pid}


def test_8_mb_output_arrives_intact(http: requests.Session) -> None:
    size = 8 * 1024 * 1024
    with LocalEndpoint(process_handlers.large, workers=1, isolation="process") as endpoint:
        document = http.post(
            f"{endpoint.base_url}/ep/runsync", json={"input": {"bytes": size}}
        ).json()

    text = document["output"]["text"]
    assert len(text) == size
    assert hashlib.sha256(text.encode()).hexdigest() == document["output"]["sha256"]


def test_health_initializing_during_import(http: requests.Session) -> None:
    with LocalEndpoint(
        str(HANDLERS / "slow_import.py") + ":handler", workers=1, isolation="process"
    ) as endpoint:
        starting = health(http, endpoint)["workers"]
        wait_idle(http, endpoint, 1)

    assert starting["initializing"] == 1
    assert starting["idle"] == 0


def test_health_unhealthy_on_failed_starts(http: requests.Session) -> None:
    with LocalEndpoint(
        str(HANDLERS / "broken_import.py"), workers=1, isolation="process"
    ) as endpoint:
        job_id = submit(http, endpoint, {"input": {}})
        workers = wait_for(
            lambda: (found := health(http, endpoint)["workers"])["unhealthy"] == 1 and found,
            what="an unhealthy worker",
        )
        assert workers["idle"] == 0
        assert status(http, endpoint, job_id)["status"] == "IN_QUEUE"


def test_unimportable_handler_rejected() -> None:
    def local_function(job: dict[str, Any]) -> Any:
        return job

    with pytest.raises(ValueError, match="top-level function of an importable module"):
        LocalEndpoint(local_function, isolation="process")
    with pytest.raises(ValueError, match="handler file not found"):
        LocalEndpoint("no/such/handler.py", isolation="process")
    with pytest.raises(ValueError, match="isolation must be"):
        LocalEndpoint(process_handlers.pid, isolation="container")


def test_stop_leaves_no_worker_process(http: requests.Session) -> None:
    with LocalEndpoint(process_handlers.pid, workers=3, isolation="process") as endpoint:
        wait_idle(http, endpoint, 3)
        pids = live_children()
        assert len(pids) == 3

    assert live_children() == []
    assert all(gone(pid) for pid in pids)


def test_worker_after_failed_start_serves(
    http: requests.Session, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RXRUNPOD_FLAKY_MARKER", str(tmp_path / "flaky"))
    with LocalEndpoint(
        str(HANDLERS / "flaky_import.py") + ":handler", workers=1, isolation="process"
    ) as endpoint:
        document = http.post(f"{endpoint.base_url}/ep/runsync", json={"input": {}}).json()
        workers = health(http, endpoint)["workers"]

    assert document["status"] == "COMPLETED"
    assert (tmp_path / "flaky").read_text() == "failed once"
    assert workers["unhealthy"] == 0
    assert workers["idle"] == 1
