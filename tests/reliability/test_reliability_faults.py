"""Fault matrix: jobs through ``run_each`` and ``job.stream()`` while the local endpoint fails.

The local endpoint injects, per route, HTTP 500, 429 with ``Retry-After``,
dropped connections and slow responses. Every payload must end in exactly one
final state, delivered once; the server must count exactly one submission per
payload; streamed items must arrive once and in order; and the client's
threads must be gone after the pipeline ends.

``POST /run`` gets only 429s inside the matrix. After a 500 or a dropped
connection on ``/run`` the client cannot know whether the job exists, and
RunPod's API has no idempotency key, so the library reports the error instead
of resubmitting. ``test_run_faults_never_resubmit`` covers that case.
"""

from __future__ import annotations

import collections
import threading
import time
from typing import Any

import pytest
import reactivex as rx
from reactivex import operators as ops

from rxrunpod import Endpoint
from rxrunpod.errors import RequestError, RunPodError, ServerError
from rxrunpod.http import RetryPolicy
from rxrunpod.job import Job
from rxrunpod.local import Faults, LocalEndpoint
from rxrunpod.models import JobState, JobStatus
from rxrunpod.operators import run_each
from rxrunpod.polling import PollPolicy
from rxrunpod.scheduling import IoScheduler
from tests.reliability.conftest import client_threads, wait_for_threads
from tests.reliability.handlers import expected_items, numbered_items
from tests.reliability.observing import record
from tests.support.scripted_server import Reply, ScriptedServer

ITEMS = 3
RETRY = RetryPolicy(max_attempts=10, base_delay=0.02, max_delay=0.4)
POLL = PollPolicy(initial_interval=0.05, max_interval=0.5)


def matrix_faults(seed: int) -> Faults:
    """5% 429 on every route, 5% 500 and 2% drops on the job routes, 10% slow polls."""
    faults = Faults(seed=seed)
    faults.add("429", 0.05, routes=("run", "status", "stream", "cancel"), retry_after=0.05)
    faults.add("500", 0.05, routes=("status", "stream", "cancel"))
    faults.add("drop", 0.02, routes=("status", "stream", "cancel"))
    faults.add("slow", 0.10, routes=("status", "stream"), delay=0.2)
    return faults


def run_matrix(jobs: int, io: IoScheduler) -> None:
    baseline = threading.active_count()
    server = LocalEndpoint(
        numbered_items, workers=8, faults=matrix_faults(seed=1), return_aggregate_stream=True
    )
    with (
        server,
        Endpoint("matrix", base_url=server.base_url, scheduler=io, retry=RETRY, poll=POLL) as ep,
    ):
        payloads = [{"n": number, "items": ITEMS, "pause": 0.005} for number in range(jobs)]
        pipeline = rx.from_iterable(payloads).pipe(run_each(ep, max_concurrent=32))
        recording = record(pipeline, timeout=240)
        stats = server.stats.snapshot()

    assert recording.error is None
    assert recording.completed
    assert recording.terminal_count == 1
    states: list[JobState] = recording.values
    assert len(states) == jobs
    numbers = collections.Counter(state.output[0]["n"] for state in states)
    assert sorted(numbers) == list(range(jobs))
    assert set(numbers.values()) == {1}
    assert {state.status for state in states} == {JobStatus.COMPLETED}
    for state in states:
        number = state.output[0]["n"]
        assert state.output == expected_items(number, ITEMS)
    assert stats["submissions"] == {"run": jobs}
    for kind in ("429", "500", "drop", "slow"):
        assert stats["faults"].get(kind, 0) > 0, f"no {kind} fault was injected"
    print(f"fault matrix: {jobs} jobs, faults injected {stats['faults']}")

    assert wait_for_threads(baseline) <= baseline
    assert client_threads() == []


def test_fault_matrix_small(io: IoScheduler) -> None:
    run_matrix(150, io)


@pytest.mark.slow
def test_fault_matrix_thousand_jobs(io: IoScheduler) -> None:
    run_matrix(1000, io)


@pytest.mark.parametrize(
    "jobs", [pytest.param(40, id="40"), pytest.param(200, marks=pytest.mark.slow, id="200")]
)
def test_streams_survive_fault_matrix(io: IoScheduler, jobs: int) -> None:
    baseline = threading.active_count()
    server = LocalEndpoint(
        numbered_items, workers=8, faults=matrix_faults(seed=2), return_aggregate_stream=True
    )
    with (
        server,
        Endpoint("streams", base_url=server.base_url, scheduler=io, retry=RETRY, poll=POLL) as ep,
    ):

        def stream_one(payload: dict[str, Any]) -> rx.Observable[tuple[int, list[Any]]]:
            def follow(job: Job) -> rx.Observable[tuple[int, list[Any]]]:
                def pair(items: list[Any]) -> tuple[int, list[Any]]:
                    return payload["n"], list(items)

                return job.stream().pipe(ops.to_list(), ops.map(pair))

            return ep.run(payload).pipe(ops.flat_map(follow))

        payloads = [{"n": number, "items": 5, "pause": 0.01} for number in range(jobs)]
        recording = record(rx.from_iterable(payloads).pipe(ops.flat_map(stream_one)), 240)
        stats = server.stats.snapshot()

    assert recording.error is None
    results = dict(recording.values)
    assert len(recording.values) == jobs
    assert sorted(results) == list(range(jobs))
    for number, items in results.items():
        assert items == expected_items(number, 5)
    assert stats["submissions"] == {"run": jobs}
    assert stats["faults"].get("500", 0) + stats["faults"].get("drop", 0) > 0
    assert wait_for_threads(baseline) <= baseline


def test_run_faults_never_resubmit(io: IoScheduler) -> None:
    executed: list[int] = []
    lock = threading.Lock()

    def remember(job: dict[str, Any]) -> int:
        with lock:
            executed.append(job["input"]["n"])
        return int(job["input"]["n"])

    faults = Faults(seed=3)
    faults.add("429", 0.10, routes="run", retry_after=0.02)
    faults.add("500", 0.08, routes="run")
    faults.add("500", 0.08, routes="run", after=True)
    faults.add("drop", 0.05, routes="run")
    faults.add("drop", 0.05, routes="run", after=True)
    payloads = 200
    with (
        LocalEndpoint(remember, workers=4, faults=faults) as server,
        Endpoint("submit", base_url=server.base_url, scheduler=io, retry=RETRY, poll=POLL) as ep,
    ):
        outcomes: dict[int, list[Any]] = collections.defaultdict(list)

        def submit(number: int) -> rx.Observable[tuple[int, Any]]:
            def accepted(job: Job) -> tuple[int, Any]:
                return number, job

            def rejected(error: Exception, _: Any) -> rx.Observable[tuple[int, Any]]:
                return rx.just((number, error))

            return ep.run({"n": number}, cancel_on_dispose=False).pipe(
                ops.map(accepted), ops.catch(rejected)
            )

        recording = record(rx.range(payloads).pipe(ops.flat_map(submit)), 60)
        for number, outcome in recording.values:
            outcomes[number].append(outcome)
        accepted = [number for number, (outcome,) in outcomes.items() if isinstance(outcome, Job)]
        for number in accepted:
            job = outcomes[number][0]
            assert job.output(timeout=30).run() == number
        time.sleep(0.3)  # let jobs created behind a dropped response finish too
        stats = server.stats.snapshot()

    assert recording.error is None
    assert sorted(outcomes) == list(range(payloads))
    assert {len(outcome) for outcome in outcomes.values()} == {1}
    errors = [outcome[0] for outcome in outcomes.values() if not isinstance(outcome[0], Job)]
    assert errors, "no 500 or drop reached a submission"
    assert all(isinstance(error, ServerError | RequestError) for error in errors)
    # Each POST beyond the first of a payload follows a 429 response, the only safe resend.
    assert stats["requests"]["run"] == payloads + stats["faults"]["429"]
    assert set(collections.Counter(executed).values()) == {1}
    assert set(accepted) <= set(executed)
    assert len(executed) == stats["submissions"]["run"]


def test_status_poll_survives_server_error(io: IoScheduler) -> None:
    with ScriptedServer() as server:
        server.reply(
            "GET",
            "/v2/ep/status/j1",
            Reply(status=500, json={"error": "worker hiccup"}),
            Reply(status=500, json={"error": "worker hiccup"}),
            Reply(json={"id": "j1", "status": "COMPLETED", "output": 7}),
        )
        with Endpoint("ep", base_url=server.base_url, scheduler=io, retry=RETRY, poll=POLL) as ep:
            recording = record(ep.job("j1").updates(), timeout=10)

    assert recording.error is None
    assert [state.status for state in recording.values] == [JobStatus.COMPLETED]
    assert server.count("GET", "/v2/ep/status/j1") == 3


def test_submission_error_is_typed_not_retried(io: IoScheduler) -> None:
    with ScriptedServer() as server:
        server.reply("POST", "/v2/ep/run", Reply(status=500, json={"error": "boom"}))
        with Endpoint("ep", base_url=server.base_url, scheduler=io, retry=RETRY) as ep:
            recording = record(ep.run({"a": 1}), timeout=10)

    assert isinstance(recording.error, ServerError)
    assert isinstance(recording.error, RunPodError)
    assert server.count("POST", "/v2/ep/run") == 1
