"""Endpoint and Job against the local RunPod-compatible endpoint, over real HTTP."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from typing import Any

import pytest
import reactivex
import reactivex.operators as ops
from reactivex import Observable

from rxrunpod import Endpoint, Job, JobCancelled, JobFailed, JobState, JobStatus, WaitTimeout
from rxrunpod.local import serve
from rxrunpod.polling import PollPolicy

FAST = PollPolicy(initial_interval=0.02, max_interval=0.2)


def handler(job: dict[str, Any]) -> Any:
    request = job["input"]
    if request.get("fail"):
        raise ValueError(f"refused {request['fail']}")
    time.sleep(request.get("sleep", 0))
    return {"echo": request.get("text"), "id": job["id"]}


def generator_handler(job: dict[str, Any]) -> Iterator[str]:
    for word in job["input"]["text"].split():
        time.sleep(0.01)
        yield word


def updates_of(job: Job) -> Observable[JobState]:
    return job.updates()


def stream_of(job: Job) -> Observable[Any]:
    return job.stream()


@pytest.fixture(scope="module")
def local() -> Iterator[Endpoint]:
    with (
        serve(handler, workers=4) as base_url,
        Endpoint("local", base_url=base_url, poll=FAST) as ep,
    ):
        yield ep


def test_run_and_output_round_trip(local: Endpoint) -> None:
    job = local.run({"text": "hello"}).run()

    output = job.output(timeout=30).run()

    assert output == {"echo": "hello", "id": job.id}
    assert job.latest_state is not None
    assert job.latest_state.status is JobStatus.COMPLETED


def test_updates_end_with_completed(local: Endpoint) -> None:
    states = (
        local.run({"text": "x", "sleep": 0.2}).pipe(ops.flat_map(updates_of), ops.to_list()).run()
    )

    assert states[-1].status is JobStatus.COMPLETED
    assert states[-1].execution_time is not None
    assert all(not state.is_final for state in states[:-1])
    assert all(earlier != later for earlier, later in itertools.pairwise(states))


def test_run_sync_returns_output(local: Endpoint) -> None:
    assert local.run_sync({"text": "now"}, timeout=30).run()["echo"] == "now"


def test_run_sync_falls_back_to_polling(local: Endpoint) -> None:
    output = local.run_sync({"text": "slow", "sleep": 1.5}, wait=0.2, timeout=30).run()

    assert output["echo"] == "slow"


def test_handler_exception_arrives_as_job_failed(local: Endpoint) -> None:
    def output_of(job: Job) -> Observable[Any]:
        return job.output(timeout=30)

    with pytest.raises(JobFailed) as caught:
        local.run({"fail": "this input"}).pipe(ops.flat_map(output_of)).run()

    assert caught.value.state.status is JobStatus.FAILED
    assert "refused this input" in str(caught.value)


def test_output_timeout_leaves_job_running(local: Endpoint) -> None:
    job = local.run({"text": "t", "sleep": 1.0}).run()

    with pytest.raises(WaitTimeout):
        job.output(timeout=0.2).run()

    assert job.output(timeout=30).run()["echo"] == "t"


def test_cancel_ends_a_running_job(local: Endpoint) -> None:
    job = local.run({"text": "c", "sleep": 3.0}).run()

    job.cancel().run()

    with pytest.raises(JobCancelled):
        job.output(timeout=30).run()


def test_dispose_cancels_job_on_server(local: Endpoint) -> None:
    job = local.run({"text": "d", "sleep": 3.0}).run()
    subscription = job.output().subscribe(on_error=lambda _error: None)
    time.sleep(0.2)

    subscription.dispose()

    cancelled = local.job(job.id).updates().pipe(ops.last()).run()
    assert cancelled.status is JobStatus.CANCELLED


def test_health_counts_jobs(local: Endpoint) -> None:
    health = local.health().run()

    assert health.workers.idle + health.workers.running + health.workers.ready >= 1
    assert health.jobs.completed >= 0


def test_many_jobs_finish_concurrently(local: Endpoint) -> None:
    def output_of(job: Job) -> Observable[Any]:
        return job.output(timeout=60)

    outputs = (
        reactivex.from_iterable(range(100))
        .pipe(
            ops.flat_map(lambda n: local.run({"text": n})),
            ops.flat_map(output_of),
            ops.to_list(),
        )
        .run()
    )

    assert sorted(output["echo"] for output in outputs) == list(range(100))


def test_stream_yields_generator_items_in_order() -> None:
    with (
        serve(generator_handler, workers=1) as base_url,
        Endpoint("local", base_url=base_url, poll=FAST) as endpoint,
    ):
        words = (
            endpoint.run({"text": "one two three four five"})
            .pipe(ops.flat_map(stream_of), ops.to_list())
            .run()
        )

    assert words == ["one", "two", "three", "four", "five"]
