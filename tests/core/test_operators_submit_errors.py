"""run_each with submit_errors="emit": one failed POST /run is reported, not fatal."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import reactivex
from reactivex import operators as ops

from rxrunpod import Endpoint, JobStatus, ServerError
from rxrunpod.http import RetryPolicy
from rxrunpod.operators import (
    JobUpdate,
    SubmissionFailed,
    outputs,
    run_each,
    run_each_updates,
    summarize,
)
from tests.support.scripted_server import RecordedRequest, Reply, ScriptedServer

RUN = "/v2/ep/run"
NAN = float("nan")


def completed(request: RecordedRequest) -> Reply:
    job_id = request.path.rsplit("/", 1)[1]
    return Reply(json={"id": job_id, "status": "COMPLETED", "output": job_id})


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    with ScriptedServer() as scripted:
        scripted.respond("GET", "/v2/ep/status/*", completed)
        yield scripted


@pytest.fixture
def ep(server: ScriptedServer) -> Iterator[Endpoint]:
    retry = RetryPolicy(max_attempts=3, base_delay=0.01, max_delay=0.05)
    with Endpoint("ep", base_url=server.base_url, retry=retry) as endpoint:
        yield endpoint


def queue_submissions(server: ScriptedServer, *replies: Reply) -> None:
    server.reply("POST", RUN, *replies, repeat_last=False)


def accepted(job_id: str) -> Reply:
    return Reply(json={"id": job_id, "status": "IN_QUEUE"})


def test_nan_payload_is_emitted_as_submission_failed(ep: Endpoint, server: ScriptedServer) -> None:
    queue_submissions(server, accepted("j0"), accepted("j2"))

    items = (
        reactivex.of({"n": 0}, {"n": NAN}, {"n": 2})
        .pipe(run_each(ep, keep_order=True, submit_errors="emit"), ops.to_list())
        .run()
    )

    assert [type(item).__name__ for item in items] == ["JobState", "SubmissionFailed", "JobState"]
    failed = items[1]
    assert isinstance(failed, SubmissionFailed)
    assert failed.index == 1
    assert isinstance(failed.error, ValueError)
    assert server.count("POST", RUN) == 2
    assert server.count("POST", "/v2/ep/cancel/*") == 0


def test_server_error_is_not_resubmitted(ep: Endpoint, server: ScriptedServer) -> None:
    queue_submissions(
        server,
        accepted("j0"),
        Reply(status=503, json={"error": "overloaded"}, headers={"Retry-After": "1"}),
        accepted("j2"),
    )

    items = (
        reactivex.of("a", "b", "c")
        .pipe(run_each(ep, max_concurrent=1, submit_errors="emit"), ops.to_list())
        .run()
    )

    failures = [item for item in items if isinstance(item, SubmissionFailed)]
    assert len(failures) == 1
    assert failures[0].index == 1
    assert failures[0].payload == "b"
    assert isinstance(failures[0].error, ServerError)
    assert server.count("POST", RUN) == 3
    bodies = [json.loads(request.body) for request in server.requests_to("POST", RUN)]
    assert bodies == [{"input": "a"}, {"input": "b"}, {"input": "c"}]


def test_server_error_message_warns_of_duplicate(ep: Endpoint, server: ScriptedServer) -> None:
    queue_submissions(server, Reply(status=503, headers={"Retry-After": "120"}))

    with pytest.raises(ServerError) as caught:
        ep.run({"x": 1}).run()

    message = str(caught.value)
    assert "may have been created" in message
    assert "not resubmitted" in message
    assert "try again later" not in message
    assert "max_retry_after" not in message


def test_submission_failure_raises_by_default(ep: Endpoint, server: ScriptedServer) -> None:
    queue_submissions(server, accepted("j0"))

    with pytest.raises(ValueError, match="not valid JSON"):
        reactivex.of({"n": 0}, {"n": NAN}).pipe(run_each(ep, max_concurrent=1)).run()


def test_updates_emit_submission_failed(ep: Endpoint, server: ScriptedServer) -> None:
    queue_submissions(server, accepted("j1"))

    items = (
        reactivex.of({"n": NAN}, {"n": 1})
        .pipe(run_each_updates(ep, max_concurrent=1, submit_errors="emit"), ops.to_list())
        .run()
    )

    assert isinstance(items[0], SubmissionFailed)
    assert items[0].index == 0
    finals = [item for item in items if isinstance(item, JobUpdate) and item.final]
    assert [update.state.status for update in finals] == [JobStatus.COMPLETED]


def test_folds_count_submission_failures(ep: Endpoint, server: ScriptedServer) -> None:
    queue_submissions(server, accepted("j1"))
    results = reactivex.of({"n": NAN}, {"n": 1}).pipe(
        run_each(ep, max_concurrent=1, submit_errors="emit")
    )

    summaries = results.pipe(summarize())
    summary = summaries.pipe(ops.last()).run()

    assert summary.total == 2
    assert summary.submission_failed == 1
    assert summary.completed == 1
    assert "1 not submitted" in str(summary)


def test_outputs_skip_or_raise_submission_failures(ep: Endpoint, server: ScriptedServer) -> None:
    queue_submissions(server, accepted("j1"), accepted("j2"))
    batch = reactivex.of({"n": NAN}, {"n": 1})

    kept = batch.pipe(
        run_each(ep, max_concurrent=1, submit_errors="emit"), outputs(), ops.to_list()
    ).run()
    assert kept == ["j1"]

    with pytest.raises(ValueError, match="not valid JSON"):
        batch.pipe(
            run_each(ep, max_concurrent=1, submit_errors="emit"), outputs(raise_failures=True)
        ).run()


def test_submit_errors_rejects_unknown_mode(ep: Endpoint) -> None:
    with pytest.raises(ValueError, match="submit_errors"):
        run_each(ep, submit_errors="skip")  # type: ignore[call-overload]
