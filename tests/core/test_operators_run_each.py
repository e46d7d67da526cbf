"""run_each and friends against a local endpoint running real handler functions."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import reactivex
from reactivex import operators as ops
from reactivex.testing import TestScheduler

from rxrunpod import Endpoint, JobFailed, JobState, JobStatus, WaitTimeout
from rxrunpod.local import LocalEndpoint
from rxrunpod.operators import JobUpdate, outputs, run_each, run_each_updates
from tests.support.scripted_server import wait_until


class GaugedHandler:
    """A handler that records how many jobs run at once, as the server sees them.

    Input: ``{"value": any, "delay": seconds, "fail_times": n, "hold": bool}``.
    ``fail_times`` makes the first n runs of a job id raise; ``hold`` makes a
    run wait until ``release`` is set (at most 10 s).
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running = 0
        self.peak = 0
        self.runs: dict[str, int] = {}
        self.release = threading.Event()

    def __call__(self, job: dict[str, Any]) -> Any:
        job_input = job["input"]
        with self.lock:
            self.running += 1
            self.peak = max(self.peak, self.running)
            run = self.runs.get(job["id"], 0) + 1
            self.runs[job["id"]] = run
        try:
            if job_input.get("hold"):
                self.release.wait(10)
            time.sleep(job_input.get("delay", 0))
            if run <= job_input.get("fail_times", 0):
                raise RuntimeError(f"planned failure {run}")
            return job_input.get("value")
        finally:
            with self.lock:
                self.running -= 1


@pytest.fixture
def gauge() -> Iterator[GaugedHandler]:
    handler = GaugedHandler()
    yield handler
    handler.release.set()


@pytest.fixture
def local(gauge: GaugedHandler) -> Iterator[LocalEndpoint]:
    with LocalEndpoint(gauge, workers=8) as server:
        yield server
        gauge.release.set()  # held handlers return, so stopping the server does not wait for them


@pytest.fixture
def ep(local: LocalEndpoint) -> Iterator[Endpoint]:
    with Endpoint("pipeline", base_url=local.base_url) as endpoint:
        yield endpoint


def collect(source: reactivex.Observable[Any], timeout: float = 20.0) -> list[Any]:
    items: list[Any] = source.pipe(ops.to_list()).run()
    return items


def test_run_each_emits_one_final_state_per_payload(ep: Endpoint) -> None:
    payloads = [{"value": index, "delay": 0.05} for index in range(6)]

    states = collect(reactivex.from_iterable(payloads).pipe(run_each(ep, max_concurrent=3)))

    assert len(states) == 6
    assert all(isinstance(state, JobState) for state in states)
    assert {state.status for state in states} == {JobStatus.COMPLETED}
    assert sorted(state.output for state in states) == list(range(6))


def test_run_each_never_exceeds_max_concurrent(ep: Endpoint, gauge: GaugedHandler) -> None:
    payloads = [{"value": index, "delay": 0.15} for index in range(12)]

    states = collect(reactivex.from_iterable(payloads).pipe(run_each(ep, max_concurrent=3)))

    assert len(states) == 12
    assert gauge.peak == 3


def test_run_each_bound_holds_for_queued_jobs(ep: Endpoint, local: LocalEndpoint) -> None:
    # Four workers for ten jobs: the jobs beyond the bound must not even be submitted.
    seen_in_flight: list[int] = []
    in_flight: set[str] = set()
    lock = threading.Lock()

    def record(update: JobUpdate) -> None:
        with lock:
            if update.final:
                in_flight.discard(update.state.id)
            else:
                in_flight.add(update.state.id)
            seen_in_flight.append(len(in_flight))

    payloads = [{"value": index, "delay": 0.1} for index in range(10)]
    pipeline = reactivex.from_iterable(payloads).pipe(
        run_each_updates(ep, max_concurrent=2), ops.do_action(record)
    )
    collect(pipeline)

    assert max(seen_in_flight) == 2
    assert local.stats.submissions.get("run") == 10


def test_run_each_keep_order_follows_payload_order(ep: Endpoint) -> None:
    # Later payloads finish first, so only the buffer can restore the order.
    payloads = [{"value": index, "delay": 0.05 * (5 - index)} for index in range(6)]

    ordered = collect(
        reactivex.from_iterable(payloads).pipe(run_each(ep, max_concurrent=6, keep_order=True))
    )
    unordered = collect(
        reactivex.from_iterable(payloads).pipe(run_each(ep, max_concurrent=6, keep_order=False))
    )

    assert [state.output for state in ordered] == [0, 1, 2, 3, 4, 5]
    assert sorted(state.output for state in unordered) == [0, 1, 2, 3, 4, 5]
    assert [state.output for state in unordered] != [0, 1, 2, 3, 4, 5]


def test_run_each_retries_failed_jobs(ep: Endpoint, gauge: GaugedHandler) -> None:
    payloads = [{"value": "flaky", "fail_times": 2}, {"value": "steady"}]

    states = collect(reactivex.from_iterable(payloads).pipe(run_each(ep, retries=2)))

    by_output = {state.output: state for state in states}
    assert by_output["flaky"].status is JobStatus.COMPLETED
    assert by_output["steady"].status is JobStatus.COMPLETED
    assert sorted(gauge.runs.values()) == [1, 3]


def test_run_each_reports_failure_after_retries(ep: Endpoint, gauge: GaugedHandler) -> None:
    updates = collect(
        reactivex.of({"value": "broken", "fail_times": 5}).pipe(run_each_updates(ep, retries=1))
    )

    final = updates[-1]
    assert final.final
    assert final.state.status is JobStatus.FAILED
    assert final.attempt == 1
    assert list(gauge.runs.values()) == [2]
    assert final.state.error_detail is not None
    assert "planned failure 2" in final.state.error_detail.message


def test_run_each_failed_job_is_a_state(ep: Endpoint) -> None:
    states = collect(reactivex.from_iterable([{"value": 1}, {"fail_times": 1}]).pipe(run_each(ep)))

    assert sorted(state.status.value for state in states) == ["COMPLETED", "FAILED"]


def test_run_each_raise_failures_ends_with_job_failed(ep: Endpoint) -> None:
    source = reactivex.of({"fail_times": 1}).pipe(run_each(ep, raise_failures=True))

    with pytest.raises(JobFailed) as caught:
        source.run()

    assert caught.value.state.status is JobStatus.FAILED
    assert caught.value.error_message == "planned failure 1"


def test_run_each_dispose_cancels_jobs_in_flight(
    ep: Endpoint, local: LocalEndpoint, gauge: GaugedHandler
) -> None:
    started: list[str] = []
    lock = threading.Lock()

    def on_update(update: JobUpdate) -> None:
        if update.state.status is JobStatus.IN_PROGRESS:
            with lock:
                started.append(update.state.id)

    payloads = [{"value": index, "hold": True} for index in range(10)]
    subscription = (
        reactivex.from_iterable(payloads)
        .pipe(run_each_updates(ep, max_concurrent=4))
        .subscribe(on_update)
    )
    assert wait_until(lambda: len(started) == 4, timeout=10)

    subscription.dispose()

    def state_of(job_id: str) -> JobStatus:
        state: JobState = ep.job(job_id).state().run()
        return state.status

    assert wait_until(
        lambda: all(state_of(job_id) is JobStatus.CANCELLED for job_id in started), timeout=10
    )
    time.sleep(0.3)  # give a wrongly submitted fifth job the time to show up
    assert local.stats.submissions.get("run") == 4


def test_run_each_timeout_cancels_the_job(ep: Endpoint) -> None:
    clock = TestScheduler()
    updates: list[JobUpdate] = []
    done = threading.Event()

    pipeline = reactivex.of({"value": "slow", "hold": True}).pipe(
        run_each_updates(ep, timeout=30.0, scheduler=clock)
    )
    pipeline.subscribe(updates.append, on_completed=done.set)
    assert wait_until(
        lambda: any(update.state.status is JobStatus.IN_PROGRESS for update in updates), timeout=10
    )

    clock.advance_by(31.0)

    assert done.wait(10)
    final = updates[-1]
    assert final.final
    assert final.deadline_passed
    assert final.state.status is JobStatus.CANCELLED
    assert final.elapsed == pytest.approx(31.0)


def test_run_each_timeout_raises_wait_timeout(ep: Endpoint, gauge: GaugedHandler) -> None:
    clock = TestScheduler()
    errors: list[Exception] = []
    ended = threading.Event()

    def on_error(error: Exception) -> None:
        errors.append(error)
        ended.set()

    source = reactivex.of({"value": "slow", "hold": True}).pipe(
        run_each(ep, timeout=5.0, raise_failures=True, scheduler=clock)
    )
    source.subscribe(on_error=on_error, on_completed=ended.set)
    assert wait_until(lambda: gauge.running == 1, timeout=10)
    time.sleep(0.2)  # the submission's answer reaches the operator and arms the deadline

    clock.advance_by(6.0)

    assert ended.wait(10)
    assert len(errors) == 1
    assert isinstance(errors[0], WaitTimeout)
    assert isinstance(errors[0], TimeoutError)
    assert errors[0].job_id is not None


def test_outputs_keeps_completed_results(ep: Endpoint) -> None:
    payloads = [{"value": "a"}, {"fail_times": 1}, {"value": "b"}]

    results = collect(
        reactivex.from_iterable(payloads).pipe(run_each(ep, keep_order=True), outputs())
    )

    assert results == ["a", "b"]


def test_outputs_raise_failures_ends_with_error(ep: Endpoint) -> None:
    source = reactivex.from_iterable([{"value": "a"}, {"fail_times": 1}]).pipe(
        run_each(ep, max_concurrent=1, keep_order=True), outputs(raise_failures=True)
    )

    with pytest.raises(JobFailed):
        source.run()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"max_concurrent": 0}, "max_concurrent must be a positive integer"),
        ({"retries": -1}, "retries must be a non-negative integer"),
        ({"timeout": 0}, "timeout must be a positive number"),
    ],
)
def test_run_each_rejects_bad_limits(ep: Endpoint, arguments: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        run_each(ep, **arguments)
