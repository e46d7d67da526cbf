"""Endpoint and Job end to end against the scripted server, on the real I/O pool."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
import reactivex.operators as ops
from reactivex import Observable

from rxrunpod import (
    Endpoint,
    Health,
    Job,
    JobCancelled,
    JobError,
    JobFailed,
    JobNotFound,
    JobState,
    JobStatus,
    JobTimedOut,
    PurgeResult,
)
from tests.support.scripted_server import Reply, ScriptedServer, wait_until

STATUS = "/v2/ep/status/j1"


def queued(job_id: str = "j1") -> dict[str, object]:
    return {"id": job_id, "status": "IN_QUEUE"}


def test_run_returns_job_and_sends_wrapped_payload(
    endpoint: Endpoint, server: ScriptedServer
) -> None:
    server.json_reply("POST", "/v2/ep/run", queued())

    job = endpoint.run({"prompt": "hi"}).run()

    assert isinstance(job, Job)
    assert job.id == "j1"
    assert job.submitted
    request = server.requests_to("POST", "/v2/ep/run")[0]
    assert request.json() == {"input": {"prompt": "hi"}}
    assert request.headers["Authorization"] == "Bearer test-key-123"


@pytest.mark.parametrize("payload", [{"input": {}}, {"input": 0}, {"input": None}, {"input": ""}])
def test_run_sends_payload_with_input_as_is(
    endpoint: Endpoint, server: ScriptedServer, payload: dict[str, object]
) -> None:
    server.json_reply("POST", "/v2/ep/run", queued())

    endpoint.run(payload).run()

    assert server.requests_to("POST", "/v2/ep/run")[0].json() == payload


def test_run_adds_webhook_policy_and_s3_config(endpoint: Endpoint, server: ScriptedServer) -> None:
    server.json_reply("POST", "/v2/ep/run", queued())

    endpoint.run(
        [1, 2], webhook="https://hook.test/x", policy={"ttl": 60000}, s3_config={"bucketName": "b"}
    ).run()

    assert server.requests_to("POST", "/v2/ep/run")[0].json() == {
        "input": [1, 2],
        "webhook": "https://hook.test/x",
        "policy": {"ttl": 60000},
        "s3Config": {"bucketName": "b"},
    }


def test_run_is_cold_and_submits_per_subscription(
    endpoint: Endpoint, server: ScriptedServer
) -> None:
    server.json_reply("POST", "/v2/ep/run", queued())

    submission = endpoint.run({"n": 1})
    assert server.count("POST", "/v2/ep/run") == 0
    submission.run()
    submission.run()

    assert server.count("POST", "/v2/ep/run") == 2


@pytest.mark.parametrize("payload", [{"f": object()}, {"x": math.nan}, {1j: 2}])
def test_run_rejects_unserialisable_payload_before_sending(
    endpoint: Endpoint, server: ScriptedServer, payload: object
) -> None:
    with pytest.raises((TypeError, ValueError)):
        endpoint.run(payload)

    assert server.requests == []


def test_output_returns_result_after_polling(endpoint: Endpoint, server: ScriptedServer) -> None:
    server.json_reply(
        "GET",
        STATUS,
        {"id": "j1", "status": "IN_QUEUE"},
        {"id": "j1", "status": "IN_PROGRESS", "output": {"progress": 0.5}},
        {"id": "j1", "status": "COMPLETED", "output": {"text": "done"}, "executionTime": 12},
    )

    output = endpoint.job("j1").output(timeout=10).run()

    assert output == {"text": "done"}
    assert server.count("GET", STATUS) == 3


def test_updates_emits_each_distinct_state_then_completes(
    endpoint: Endpoint, server: ScriptedServer
) -> None:
    server.json_reply(
        "GET",
        STATUS,
        {"id": "j1", "status": "IN_QUEUE"},
        {"id": "j1", "status": "IN_QUEUE"},
        {"id": "j1", "status": "IN_PROGRESS"},
        {"id": "j1", "status": "IN_PROGRESS", "output": 0.5},
        {"id": "j1", "status": "COMPLETED", "output": 1},
    )

    states = endpoint.job("j1").updates().pipe(ops.to_list()).run()

    assert [state.raw_status for state in states] == [
        "IN_QUEUE",
        "IN_PROGRESS",
        "IN_PROGRESS",
        "COMPLETED",
    ]
    assert states[2].output == 0.5
    assert states[-1].is_final


@pytest.mark.parametrize(
    ("document", "error_type"),
    [
        ({"id": "j1", "status": "FAILED", "error": "boom"}, JobFailed),
        ({"id": "j1", "status": "CANCELLED"}, JobCancelled),
        ({"id": "j1", "status": "TIMED_OUT"}, JobTimedOut),
    ],
)
def test_output_raises_typed_error_for_unsuccessful_end(
    endpoint: Endpoint,
    server: ScriptedServer,
    document: dict[str, object],
    error_type: type[JobError],
) -> None:
    server.json_reply("GET", STATUS, document)

    with pytest.raises(error_type) as caught:
        endpoint.job("j1").output(timeout=10).run()

    assert caught.value.state.id == "j1"
    assert caught.value.state.raw_status == document["status"]


def test_failed_job_error_parses_json_encoded_detail(
    endpoint: Endpoint, server: ScriptedServer
) -> None:
    error = json.dumps(
        {"error_type": "ValueError", "error_message": "bad input", "error_traceback": "Trace..."}
    )
    server.json_reply("GET", STATUS, {"id": "j1", "status": "FAILED", "error": error})

    with pytest.raises(JobFailed) as caught:
        endpoint.job("j1").output().run()

    assert caught.value.error_type == "ValueError"
    assert caught.value.error_message == "bad input"
    assert caught.value.error_traceback == "Trace..."
    assert "bad input" in str(caught.value)


def test_unknown_job_raises_job_not_found(endpoint: Endpoint, server: ScriptedServer) -> None:
    server.reply("GET", "/v2/ep/status/nope", Reply(status=404, json={"error": "job not found"}))

    with pytest.raises(JobNotFound) as caught:
        endpoint.job("nope").status().run()

    assert caught.value.job_id == "nope"
    assert "nope" in str(caught.value)


def test_status_and_state_fetch_once(endpoint: Endpoint, server: ScriptedServer) -> None:
    server.json_reply("GET", STATUS, {"id": "j1", "status": "IN_PROGRESS", "workerId": "w1"})
    job = endpoint.job("j1")

    assert job.status().run() is JobStatus.IN_PROGRESS
    state = job.state().run()

    assert state.worker_id == "w1"
    assert server.count("GET", STATUS) == 2


def test_cancel_and_retry_post_to_their_routes(endpoint: Endpoint, server: ScriptedServer) -> None:
    server.json_reply("POST", "/v2/ep/cancel/j1", {"id": "j1", "status": "CANCELLED"})
    server.json_reply("POST", "/v2/ep/retry/j1", {"id": "j1", "status": "IN_QUEUE"})
    job = endpoint.job("j1")

    cancelled = job.cancel().run()
    retried = job.retry().run()

    assert cancelled.status is JobStatus.CANCELLED
    assert retried.status is JobStatus.IN_QUEUE


def test_run_sync_returns_output_of_final_answer(
    endpoint: Endpoint, server: ScriptedServer
) -> None:
    server.json_reply(
        "POST", "/v2/ep/runsync", {"id": "sync-1", "status": "COMPLETED", "output": 42}
    )

    assert endpoint.run_sync({"n": 1}, timeout=30).run() == 42
    request = server.requests_to("POST", "/v2/ep/runsync")[0]
    assert request.query["wait"] == ["30000"]
    assert request.json() == {"input": {"n": 1}}


def test_run_sync_polls_when_wait_ran_out(endpoint: Endpoint, server: ScriptedServer) -> None:
    server.json_reply("POST", "/v2/ep/runsync", {"id": "sync-2", "status": "IN_PROGRESS"})
    server.json_reply(
        "GET",
        "/v2/ep/status/sync-2",
        {"id": "sync-2", "status": "IN_PROGRESS"},
        {"id": "sync-2", "status": "COMPLETED", "output": "late"},
    )

    assert endpoint.run_sync({"n": 1}, wait=1).run() == "late"
    assert server.count("GET", "/v2/ep/status/sync-2") == 2


def test_run_sync_failure_arrives_as_job_failed(endpoint: Endpoint, server: ScriptedServer) -> None:
    server.json_reply("POST", "/v2/ep/runsync", {"id": "s", "status": "FAILED", "error": "nope"})

    with pytest.raises(JobFailed, match="nope"):
        endpoint.run_sync({"n": 1}).run()


def test_health_parses_snapshot(endpoint: Endpoint, server: ScriptedServer) -> None:
    server.json_reply(
        "GET",
        "/v2/ep/health",
        {"jobs": {"completed": 3, "inQueue": 2}, "workers": {"idle": 1, "running": 2}},
    )

    health = endpoint.health().run()

    assert isinstance(health, Health)
    assert health.jobs.completed == 3
    assert health.jobs.in_queue == 2
    assert health.workers.running == 2


def test_purge_queue_returns_removed_count(endpoint: Endpoint, server: ScriptedServer) -> None:
    server.json_reply("POST", "/v2/ep/purge-queue", {"removed": 4, "status": "completed"})

    result = endpoint.purge_queue().run()

    assert result == PurgeResult(removed=4, status="completed")


def test_stream_emits_items_in_order_then_completes(
    endpoint: Endpoint, server: ScriptedServer
) -> None:
    server.json_reply(
        "GET",
        "/v2/ep/stream/j1",
        {"status": "IN_PROGRESS", "stream": [{"output": "a"}, {"output": "b"}]},
        {"status": "IN_PROGRESS", "stream": []},
        {"status": "IN_PROGRESS", "stream": [{"output": "c"}]},
        {"status": "COMPLETED", "stream": [{"output": "d"}]},
    )

    items = endpoint.job("j1").stream().pipe(ops.to_list()).run()

    assert items == ["a", "b", "c", "d"]
    assert server.count("GET", "/v2/ep/stream/j1") == 4


def test_run_then_output_pipeline(endpoint: Endpoint, server: ScriptedServer) -> None:
    server.json_reply("POST", "/v2/ep/run", queued())
    server.json_reply("GET", STATUS, {"id": "j1", "status": "COMPLETED", "output": "ok"})

    def output_of(job: Job) -> Observable[Any]:
        return job.output(timeout=10)

    output = endpoint.run({"x": 1}).pipe(ops.flat_map(output_of)).run()

    assert output == "ok"


def test_shared_updates_poll_once_for_many_subscribers(
    endpoint: Endpoint, server: ScriptedServer
) -> None:
    server.json_reply(
        "GET",
        STATUS,
        {"id": "j1", "status": "IN_QUEUE"},
        {"id": "j1", "status": "IN_PROGRESS"},
        {"id": "j1", "status": "COMPLETED", "output": 1},
    )
    job = endpoint.job("j1")
    seen: list[list[JobState]] = [[] for _ in range(5)]
    done: list[bool] = []
    for index in range(5):
        job.updates().subscribe(seen[index].append, on_completed=lambda: done.append(True))

    assert wait_until(lambda: len(done) == 5)
    for states in seen:
        assert states[-1].status is JobStatus.COMPLETED
    assert server.count("GET", STATUS) == 3
