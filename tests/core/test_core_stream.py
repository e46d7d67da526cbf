"""``Job.stream()``: order, final states, and recovery of lost ``/stream`` responses."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import reactivex.operators as ops
from reactivex import Observable
from reactivex.testing import ReactiveTest, TestScheduler

from rxrunpod import Endpoint, Job, JobCancelled, JobFailed, JobTimedOut, StreamItemsLost
from rxrunpod.http import RetryPolicy
from rxrunpod.polling import PollPolicy
from tests.support.scripted_server import RecordedRequest, Reply, ScriptedServer

STREAM = "/v2/ep/stream/j1"
STATUS = "/v2/ep/status/j1"


def batch(status: str, *items: object) -> Reply:
    return Reply(json={"status": status, "stream": [{"output": item} for item in items]})


def stream_of(job: Job) -> Observable[Any]:
    return job.stream()


def collect(endpoint: Endpoint) -> list[object]:
    items: list[object] = endpoint.job("j1").stream().pipe(ops.to_list()).run()
    return items


def test_stream_ends_with_items_then_cancelled(endpoint: Endpoint, server: ScriptedServer) -> None:
    server.reply("GET", STREAM, batch("IN_PROGRESS", 1, 2), batch("CANCELLED"))
    seen: list[object] = []

    with pytest.raises(JobCancelled) as caught:
        endpoint.job("j1").stream().pipe(ops.do_action(seen.append)).run()

    assert seen == [1, 2]
    assert caught.value.state.id == "j1"


def test_stream_ends_on_timed_out(endpoint: Endpoint, server: ScriptedServer) -> None:
    server.reply("GET", STREAM, batch("TIMED_OUT", "last"))
    seen: list[object] = []

    with pytest.raises(JobTimedOut):
        endpoint.job("j1").stream().pipe(ops.do_action(seen.append)).run()

    assert seen == ["last"]


def test_failed_stream_without_error_fetches_status_once(
    endpoint: Endpoint, server: ScriptedServer
) -> None:
    server.reply("GET", STREAM, batch("IN_PROGRESS", "a"), batch("FAILED"))
    server.reply(
        "GET", STATUS, Reply(json={"id": "j1", "status": "FAILED", "error": "CUDA out of memory"})
    )

    with pytest.raises(JobFailed, match="CUDA out of memory") as caught:
        collect(endpoint)

    assert caught.value.error_message == "CUDA out of memory"
    assert server.count("GET", STATUS) == 1


def test_failed_stream_with_error_needs_no_status(
    endpoint: Endpoint, server: ScriptedServer
) -> None:
    server.reply("GET", STREAM, Reply(json={"status": "FAILED", "stream": [], "error": "bad"}))

    with pytest.raises(JobFailed, match="bad"):
        collect(endpoint)

    assert server.count("GET", STATUS) == 0


def test_lost_response_is_recovered_from_aggregate(
    endpoint: Endpoint, server: ScriptedServer
) -> None:
    server.reply("GET", STREAM, batch("IN_PROGRESS", "a", "b"), Reply(drop=True))
    server.reply(
        "GET",
        STATUS,
        Reply(json={"id": "j1", "status": "IN_PROGRESS"}),
        Reply(json={"id": "j1", "status": "COMPLETED", "output": ["a", "b", "c", "d"]}),
    )

    assert collect(endpoint) == ["a", "b", "c", "d"]
    assert server.count("GET", STREAM) == 2


def test_lost_response_recovered_from_stream_field(
    endpoint: Endpoint, server: ScriptedServer
) -> None:
    server.reply("GET", STREAM, batch("IN_PROGRESS", "a"), Reply(status=502))
    server.reply(
        "GET",
        STATUS,
        Reply(
            json={"id": "j1", "status": "COMPLETED", "stream": [{"output": "a"}, {"output": "b"}]}
        ),
    )

    assert collect(endpoint) == ["a", "b"]
    assert server.count("GET", STREAM) == 2


def test_lost_response_without_aggregate_raises_items_lost(
    endpoint: Endpoint, server: ScriptedServer
) -> None:
    server.reply("GET", STREAM, batch("IN_PROGRESS", "a"), Reply(reset=True))
    server.reply(
        "GET", STATUS, Reply(json={"id": "j1", "status": "COMPLETED", "output": "summary"})
    )
    seen: list[object] = []

    with pytest.raises(StreamItemsLost) as caught:
        endpoint.job("j1").stream().pipe(ops.do_action(seen.append)).run()

    assert seen == ["a"]
    assert caught.value.job_id == "j1"
    assert "return_aggregate_stream" in str(caught.value)
    assert server.count("GET", STREAM) == 2


def test_read_timeout_on_stream_is_a_loss_not_a_retry(server: ScriptedServer) -> None:
    server.reply(
        "GET", STREAM, batch("IN_PROGRESS", 1), Reply(delay=0.6, json={"status": "IN_PROGRESS"})
    )
    server.reply("GET", STATUS, Reply(json={"id": "j1", "status": "COMPLETED", "output": [1, 2]}))
    retry = RetryPolicy(max_attempts=3, base_delay=0.01)

    with Endpoint("ep", base_url=server.base_url, timeout=(1.0, 0.3), retry=retry) as endpoint:
        assert collect(endpoint) == [1, 2]

    assert server.count("GET", STREAM) == 2


def test_rate_limited_stream_request_is_resent(endpoint: Endpoint, server: ScriptedServer) -> None:
    server.reply(
        "GET", STREAM, Reply(status=429, headers={"Retry-After": "0"}), batch("COMPLETED", "x")
    )

    assert collect(endpoint) == ["x"]
    assert server.count("GET", STREAM) == 2
    assert server.count("GET", STATUS) == 0


@pytest.fixture
def virtual(server: ScriptedServer, scheduler: TestScheduler) -> Iterator[Endpoint]:
    policy = PollPolicy(initial_interval=1.0, max_interval=4.0, backoff=2.0)
    with Endpoint("ep", base_url=server.base_url, scheduler=scheduler, poll=policy) as endpoint:
        yield endpoint


def test_stream_polls_again_at_once_after_items(
    virtual: Endpoint, server: ScriptedServer, scheduler: TestScheduler
) -> None:
    server.reply(
        "GET",
        STREAM,
        batch("IN_PROGRESS", "a"),
        batch("IN_PROGRESS", "b"),
        batch("IN_PROGRESS"),
        batch("IN_PROGRESS"),
        batch("COMPLETED", "c"),
    )
    times: list[float] = []
    original = server._record

    def record(request: RecordedRequest) -> Reply:
        times.append(scheduler.clock)
        return original(request)

    server._record = record  # type: ignore[method-assign]
    observer = scheduler.start(
        lambda: virtual.job("j1").stream(), created=0.5, subscribed=1.0, disposed=100
    )

    # Items: ask again at once. Empty (the server already held the request): back off.
    assert times == [1.0, 1.0, 1.0, 2.0, 4.0]
    assert observer.messages == [
        ReactiveTest.on_next(1, "a"),
        ReactiveTest.on_next(1, "b"),
        ReactiveTest.on_next(4, "c"),
        ReactiveTest.on_completed(4),
    ]


def test_stream_dispose_cancels_submitted_job(
    virtual: Endpoint, server: ScriptedServer, scheduler: TestScheduler
) -> None:
    server.reply("POST", "/v2/ep/run", Reply(json={"id": "j1", "status": "IN_QUEUE"}))
    server.reply("GET", STREAM, batch("IN_PROGRESS"))
    server.reply("POST", "/v2/ep/cancel/j1", Reply(json={"id": "j1", "status": "CANCELLED"}))

    scheduler.start(
        lambda: virtual.run({"a": 1}).pipe(ops.flat_map(stream_of)),
        created=0.5,
        subscribed=1.0,
        disposed=10.0,
    )

    assert server.count("POST", "/v2/ep/cancel/j1") == 1
