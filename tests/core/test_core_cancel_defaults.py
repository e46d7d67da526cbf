"""Which Job observables cancel a submitted job when disposed early, against a local endpoint."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import reactivex.operators as ops

from rxrunpod import Endpoint, JobStatus
from rxrunpod.local import serve
from rxrunpod.polling import PollPolicy

FAST = PollPolicy(initial_interval=0.02, max_interval=0.2)


def handler(job: dict[str, Any]) -> Any:
    time.sleep(job["input"].get("sleep", 0))
    return "done"


def token_handler(job: dict[str, Any]) -> Iterator[str]:
    for number in range(job["input"]["count"]):
        time.sleep(0.05)
        yield f"t{number}"


@pytest.fixture(scope="module")
def local() -> Iterator[Endpoint]:
    with (
        serve(handler, workers=4) as base_url,
        Endpoint("local", base_url=base_url, poll=FAST) as ep,
    ):
        yield ep


def final_status(local: Endpoint, job_id: str) -> JobStatus:
    state = local.job(job_id).updates().pipe(ops.last()).run()
    return state.status


def test_first_update_leaves_job_running(local: Endpoint) -> None:
    job = local.run({"sleep": 0.5}).run()

    first = job.updates().pipe(ops.first()).run()

    assert first.status is not JobStatus.CANCELLED
    assert final_status(local, job.id) is JobStatus.COMPLETED


def test_updates_can_still_cancel_on_dispose(local: Endpoint) -> None:
    job = local.run({"sleep": 3.0}).run()

    job.updates(cancel_on_dispose=True).pipe(ops.first()).run()

    assert final_status(local, job.id) is JobStatus.CANCELLED


def test_disposed_output_cancels_submitted_job(local: Endpoint) -> None:
    job = local.run({"sleep": 3.0}).run()
    subscription = job.output().subscribe(on_error=lambda _error: None)
    time.sleep(0.1)

    subscription.dispose()

    assert final_status(local, job.id) is JobStatus.CANCELLED


def test_output_disposed_before_updates_still_cancels(local: Endpoint) -> None:
    job = local.run({"sleep": 3.0}).run()
    watching = job.updates().subscribe()
    consuming = job.output().subscribe(on_error=lambda _error: None)
    time.sleep(0.1)

    consuming.dispose()
    time.sleep(0.2)
    assert local.job(job.id).status().run() is not JobStatus.CANCELLED
    watching.dispose()

    assert final_status(local, job.id) is JobStatus.CANCELLED


def test_taking_stream_items_stops_generation() -> None:
    with (
        serve(token_handler, workers=1) as base_url,
        Endpoint("tokens", base_url=base_url, poll=FAST) as ep,
    ):
        job = ep.run({"count": 100}).run()

        tokens = job.stream().pipe(ops.take(3), ops.to_list()).run()

        assert tokens == ["t0", "t1", "t2"]
        state = ep.job(job.id).updates().pipe(ops.last()).run()
        assert state.status is JobStatus.CANCELLED
