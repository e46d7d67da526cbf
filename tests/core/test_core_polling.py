"""Polling, backoff, deadlines and dispose in virtual time.

The endpoint runs on a ``TestScheduler``: each request is real HTTP to the
scripted server, made inline while the virtual clock stands still, so the
times below are exact.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from reactivex import Observable
from reactivex.testing import ReactiveTest, TestScheduler

from rxrunpod import (
    AuthenticationError,
    Endpoint,
    Job,
    JobState,
    JobStatus,
    RateLimited,
    ServerError,
    WaitTimeout,
)
from rxrunpod.http import RetryPolicy
from rxrunpod.polling import PollPolicy
from tests.support.recorded import error_of, notification_of, value_of
from tests.support.scripted_server import RecordedRequest, Reply, ScriptedServer

STATUS = "/v2/ep/status/j1"
# ReactiveTest types ticks as int, so whole virtual seconds are written 1, not 1.0.
on_next = ReactiveTest.on_next
on_completed = ReactiveTest.on_completed

POLICY = PollPolicy(initial_interval=1.0, max_interval=4.0, backoff=2.0)
NO_JITTER = RetryPolicy(max_attempts=4, base_delay=2.0, max_delay=30.0, random=lambda: 1.0)


def state(status: str, output: object = None) -> JobState:
    document: dict[str, object] = {"id": "j1", "status": status}
    if output is not None:
        document["output"] = output
    return JobState.from_json(document)


def status_reply(status: str, output: object = None) -> Reply:
    document: dict[str, object] = {"id": "j1", "status": status}
    if output is not None:
        document["output"] = output
    return Reply(json=document)


@pytest.fixture
def ep(server: ScriptedServer, scheduler: TestScheduler) -> Iterator[Endpoint]:
    with Endpoint(
        "ep",
        api_key="k",
        base_url=server.base_url,
        scheduler=scheduler,
        poll=POLICY,
        retry=NO_JITTER,
    ) as endpoint:
        yield endpoint


def request_clock(
    server: ScriptedServer, scheduler: TestScheduler, method: str, pattern: str
) -> list[float]:
    """Virtual times of the requests, recorded as they arrive."""
    times: list[float] = []
    original = server._record

    def record(request: RecordedRequest) -> Reply:
        if request.method == method and request.path == pattern:
            times.append(scheduler.clock)
        return original(request)

    server._record = record  # type: ignore[method-assign]
    return times


def test_updates_back_off_while_queued_then_reset(
    ep: Endpoint, server: ScriptedServer, scheduler: TestScheduler
) -> None:
    server.reply(
        "GET",
        STATUS,
        *[status_reply("IN_QUEUE")] * 6,
        status_reply("IN_PROGRESS"),
        status_reply("COMPLETED", output="x"),
    )
    times = request_clock(server, scheduler, "GET", STATUS)

    observer = scheduler.start(
        lambda: ep.job("j1").updates(), created=0.5, subscribed=1.0, disposed=500
    )

    assert times == [1.0, 2.0, 4.0, 8.0, 12.0, 16.0, 20.0, 21.0]
    assert observer.messages == [
        on_next(1, state("IN_QUEUE")),
        on_next(20, state("IN_PROGRESS")),
        on_next(21, state("COMPLETED", output="x")),
        on_completed(21),
    ]


def test_dispose_stops_polling_at_once(
    ep: Endpoint, server: ScriptedServer, scheduler: TestScheduler
) -> None:
    server.reply("GET", STATUS, status_reply("IN_QUEUE"))
    times = request_clock(server, scheduler, "GET", STATUS)

    scheduler.start(lambda: ep.job("j1").updates(), created=0.5, subscribed=1.0, disposed=9.0)
    scheduler.advance_to(100.0)

    assert times == [1.0, 2.0, 4.0, 8.0]
    assert len(scheduler._queue) == 0


def test_output_times_out_with_wait_timeout(
    ep: Endpoint, server: ScriptedServer, scheduler: TestScheduler
) -> None:
    server.reply("GET", STATUS, status_reply("IN_PROGRESS"))

    observer = scheduler.start(
        lambda: ep.job("j1").output(timeout=10), created=0.5, subscribed=1.0, disposed=500
    )

    [message] = observer.messages
    assert message.time == 11.0
    error = error_of(message)
    assert isinstance(error, WaitTimeout)
    assert isinstance(error, TimeoutError)
    assert error.job_id == "j1"
    assert error.timeout == 10
    assert "IN_PROGRESS" in str(error)
    assert server.count("POST", "/v2/ep/cancel/*") == 0


def test_unknown_status_polls_on_and_logs_once(
    ep: Endpoint, server: ScriptedServer, scheduler: TestScheduler, caplog: pytest.LogCaptureFixture
) -> None:
    server.reply(
        "GET", STATUS, *[status_reply("WARMING_UP")] * 3, status_reply("COMPLETED", output=1)
    )

    with caplog.at_level(logging.WARNING, logger="rxrunpod.job"):
        observer = scheduler.start(
            lambda: ep.job("j1").updates(), created=0.5, subscribed=1.0, disposed=500
        )

    first = value_of(observer.messages[0])
    assert first.status is JobStatus.UNKNOWN
    assert first.raw_status == "WARMING_UP"
    assert not first.is_final
    assert observer.messages[-1] == on_completed(8)
    warnings = [record for record in caplog.records if "WARMING_UP" in record.getMessage()]
    assert len(warnings) == 1


def test_unknown_status_still_hits_deadline(
    ep: Endpoint, server: ScriptedServer, scheduler: TestScheduler
) -> None:
    server.reply("GET", STATUS, status_reply("SOMETHING_NEW"))

    observer = scheduler.start(
        lambda: ep.job("j1").output(timeout=5), created=0.5, subscribed=1.0, disposed=500
    )

    assert isinstance(error_of(observer.messages[0]), WaitTimeout)
    assert observer.messages[0].time == 6.0


def test_transient_status_failure_retries_after_retry_after(
    ep: Endpoint, server: ScriptedServer, scheduler: TestScheduler
) -> None:
    server.reply(
        "GET",
        STATUS,
        Reply(status=503, headers={"Retry-After": "7"}, json={"error": "busy"}),
        status_reply("COMPLETED", output=5),
    )
    times = request_clock(server, scheduler, "GET", STATUS)

    observer = scheduler.start(
        lambda: ep.job("j1").output(), created=0.5, subscribed=1.0, disposed=500
    )

    assert times == [1.0, 8.0]
    assert observer.messages == [on_next(8, 5), on_completed(8)]


def test_retries_back_off_exponentially_then_give_up(
    ep: Endpoint, server: ScriptedServer, scheduler: TestScheduler
) -> None:
    server.reply("GET", STATUS, Reply(status=502, body="bad gateway"))
    times = request_clock(server, scheduler, "GET", STATUS)

    observer = scheduler.start(
        lambda: ep.job("j1").state(), created=0.5, subscribed=1.0, disposed=500
    )

    # base 2 s doubling, jitter pinned to its maximum: waits of 2, 4 and 8 s.
    assert times == [1.0, 3.0, 7.0, 15.0]
    error = error_of(observer.messages[0])
    assert isinstance(error, ServerError)
    assert error.status_code == 502


def test_run_is_not_resent_after_server_error(
    ep: Endpoint, server: ScriptedServer, scheduler: TestScheduler
) -> None:
    server.reply("POST", "/v2/ep/run", Reply(status=503, json={"error": "overloaded"}))

    observer = scheduler.start(lambda: ep.run({"a": 1}), created=0.5, subscribed=1.0, disposed=500)

    assert server.count("POST", "/v2/ep/run") == 1
    assert isinstance(error_of(observer.messages[0]), ServerError)


def test_run_is_not_resent_after_dropped_connection(
    ep: Endpoint, server: ScriptedServer, scheduler: TestScheduler
) -> None:
    server.reply("POST", "/v2/ep/run", Reply(drop=True))

    observer = scheduler.start(lambda: ep.run({"a": 1}), created=0.5, subscribed=1.0, disposed=500)

    assert server.count("POST", "/v2/ep/run") == 1
    assert "may have been created" in str(error_of(observer.messages[0]))


def test_run_is_resent_after_rate_limit(
    ep: Endpoint, server: ScriptedServer, scheduler: TestScheduler
) -> None:
    server.reply(
        "POST",
        "/v2/ep/run",
        Reply(status=429, headers={"Retry-After": "3"}),
        Reply(json={"id": "j1", "status": "IN_QUEUE"}),
    )

    observer = scheduler.start(lambda: ep.run({"a": 1}), created=0.5, subscribed=1.0, disposed=500)

    assert server.count("POST", "/v2/ep/run") == 2
    assert observer.messages[0].time == 4.0
    assert isinstance(value_of(observer.messages[0]), Job)


def test_rate_limit_gives_up_when_retry_after_is_too_long(
    ep: Endpoint, server: ScriptedServer, scheduler: TestScheduler
) -> None:
    server.reply("POST", "/v2/ep/run", Reply(status=429, headers={"Retry-After": "3600"}))

    observer = scheduler.start(lambda: ep.run({"a": 1}), created=0.5, subscribed=1.0, disposed=500)

    error = error_of(observer.messages[0])
    assert isinstance(error, RateLimited)
    assert error.retry_after == 3600
    assert server.count("POST", "/v2/ep/run") == 1


def submitted_job(ep: Endpoint, server: ScriptedServer) -> Job:
    server.reply("POST", "/v2/ep/run", Reply(json={"id": "j1", "status": "IN_QUEUE"}))
    jobs: list[Job] = []
    ep.run({"a": 1}).subscribe(jobs.append)
    scheduler = ep.scheduler
    assert isinstance(scheduler, TestScheduler)
    scheduler.advance_by(0.5)
    return jobs[0]


def test_dispose_cancels_submitted_job_once(
    ep: Endpoint, server: ScriptedServer, scheduler: TestScheduler
) -> None:
    server.reply("GET", STATUS, status_reply("IN_QUEUE"))
    server.reply("POST", "/v2/ep/cancel/j1", Reply(json={"id": "j1", "status": "CANCELLED"}))
    job = submitted_job(ep, server)

    first = job.updates().subscribe()
    second = job.output().subscribe()
    scheduler.advance_by(5.0)
    first.dispose()
    scheduler.advance_by(1.0)
    assert server.count("POST", "/v2/ep/cancel/j1") == 0
    second.dispose()
    second.dispose()
    scheduler.advance_by(5.0)

    assert server.count("POST", "/v2/ep/cancel/j1") == 1


def test_dispose_leaves_job_of_other_origin_running(
    ep: Endpoint, server: ScriptedServer, scheduler: TestScheduler
) -> None:
    server.reply("GET", STATUS, status_reply("IN_QUEUE"))

    subscription = ep.job("j1").updates().subscribe()
    scheduler.advance_by(3.0)
    subscription.dispose()
    scheduler.advance_by(10.0)

    assert server.count("POST", "/v2/ep/cancel/*") == 0


def test_dispose_after_final_state_does_not_cancel(
    ep: Endpoint, server: ScriptedServer, scheduler: TestScheduler
) -> None:
    server.reply("GET", STATUS, status_reply("COMPLETED", output=1))
    job = submitted_job(ep, server)

    subscription = job.output().subscribe()
    scheduler.advance_by(3.0)
    subscription.dispose()
    scheduler.advance_by(3.0)

    assert server.count("POST", "/v2/ep/cancel/*") == 0


def test_cancel_on_dispose_can_be_turned_off(
    ep: Endpoint, server: ScriptedServer, scheduler: TestScheduler
) -> None:
    server.reply("GET", STATUS, status_reply("IN_PROGRESS"))
    job = submitted_job(ep, server)

    subscription = job.updates(cancel_on_dispose=False).subscribe()
    scheduler.advance_by(3.0)
    subscription.dispose()
    scheduler.advance_by(3.0)

    assert server.count("POST", "/v2/ep/cancel/*") == 0


def test_run_sync_times_out_while_polling(
    ep: Endpoint, server: ScriptedServer, scheduler: TestScheduler
) -> None:
    server.reply("POST", "/v2/ep/runsync", Reply(json={"id": "sync-1", "status": "IN_QUEUE"}))
    server.reply("GET", "/v2/ep/status/sync-1", Reply(json={"id": "sync-1", "status": "IN_QUEUE"}))

    observer = scheduler.start(
        lambda: ep.run_sync({"a": 1}, timeout=20), created=0.5, subscribed=1.0, disposed=500
    )

    [message] = observer.messages
    assert message.time == 21.0
    error = error_of(message)
    assert isinstance(error, WaitTimeout)
    assert error.job_id == "sync-1"
    assert server.requests_to("POST", "/v2/ep/runsync")[0].query["wait"] == ["20000"]


def test_run_sync_dispose_cancels_its_job(
    ep: Endpoint, server: ScriptedServer, scheduler: TestScheduler
) -> None:
    server.reply("POST", "/v2/ep/runsync", Reply(json={"id": "sync-1", "status": "IN_PROGRESS"}))
    server.reply(
        "GET", "/v2/ep/status/sync-1", Reply(json={"id": "sync-1", "status": "IN_PROGRESS"})
    )
    server.reply(
        "POST", "/v2/ep/cancel/sync-1", Reply(json={"id": "sync-1", "status": "CANCELLED"})
    )

    scheduler.start(lambda: ep.run_sync({"a": 1}), created=0.5, subscribed=1.0, disposed=6.0)

    assert server.count("POST", "/v2/ep/cancel/sync-1") == 1


def test_periodic_health_survives_transient_failure(
    ep: Endpoint, server: ScriptedServer, scheduler: TestScheduler
) -> None:
    snapshot = {"jobs": {"inQueue": 1}, "workers": {"idle": 2}}
    server.reply(
        "GET", "/v2/ep/health", Reply(json=snapshot), Reply(status=503), Reply(json=snapshot)
    )

    observer = scheduler.start(
        lambda: ep.health(every=5.0), created=0.5, subscribed=1.0, disposed=17.0
    )

    assert [message.time for message in observer.messages] == [1.0, 11.0, 16.0]
    assert all(notification_of(message).kind == "N" for message in observer.messages)
    assert value_of(observer.messages[0]).received_at == 1.0


def test_periodic_health_ends_on_authentication_error(
    ep: Endpoint, server: ScriptedServer, scheduler: TestScheduler
) -> None:
    server.reply(
        "GET", "/v2/ep/health", Reply(json={}), Reply(status=401, json={"error": "Unauthorized"})
    )

    observer = scheduler.start(
        lambda: ep.health(every=5.0), created=0.5, subscribed=1.0, disposed=100.0
    )

    assert observer.messages[-1].time == 6.0
    assert isinstance(error_of(observer.messages[-1]), AuthenticationError)
    assert server.count("GET", "/v2/ep/health") == 2


def test_shared_updates_replay_latest_to_late_subscriber(
    ep: Endpoint, server: ScriptedServer, scheduler: TestScheduler
) -> None:
    server.reply("GET", STATUS, status_reply("IN_PROGRESS"))
    job = ep.job("j1")
    early: list[JobState] = []
    late: list[JobState] = []

    job.updates().subscribe(early.append)
    scheduler.advance_by(5.0)
    requests_before = server.count("GET", STATUS)
    job.updates().subscribe(late.append)

    assert late == [state("IN_PROGRESS")]
    assert server.count("GET", STATUS) == requests_before


def test_subscriber_error_in_on_next_reaches_on_error(
    ep: Endpoint, server: ScriptedServer, scheduler: TestScheduler
) -> None:
    server.reply("GET", "/v2/ep/health", Reply(json={}))
    errors: list[Exception] = []

    def explode(_: object) -> None:
        raise RuntimeError("subscriber bug")

    source: Observable[object] = ep.health()
    source.subscribe(explode, errors.append)
    scheduler.advance_by(1.0)

    assert [str(error) for error in errors] == ["subscriber bug"]
