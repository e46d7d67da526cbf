"""What wire errors say, and which inputs are rejected at the public boundary."""

from __future__ import annotations

import json

import pytest

from rxrunpod import Endpoint
from rxrunpod.errors import (
    InvalidRequest,
    JobNotFound,
    MalformedResponse,
    RateLimited,
    RequestError,
)
from rxrunpod.http import RetryPolicy
from tests.core.conftest import FAST_RETRY
from tests.support.scripted_server import Reply, ScriptedServer

STATUS = "/v2/ep/status/j1"


def test_read_timeout_message_counts_attempts(server: ScriptedServer) -> None:
    server.reply("GET", STATUS, Reply(delay=1.0, json={"id": "j1", "status": "IN_QUEUE"}))
    with (
        Endpoint("ep", base_url=server.base_url, timeout=(1.0, 0.1), retry=FAST_RETRY) as ep,
        pytest.raises(RequestError) as caught,
    ):
        ep.job("j1").status().run()

    message = str(caught.value)
    assert "read timeout of 0.1 s per attempt" in message
    assert "Gave up after 3 attempts." in message
    assert caught.value.attempts == 3


def test_blocking_request_counts_attempts(server: ScriptedServer) -> None:
    server.reply("GET", "/v2/ep/health", Reply(delay=1.0, json={}))
    with (
        Endpoint("ep", base_url=server.base_url, timeout=(1.0, 0.1), retry=FAST_RETRY) as ep,
        pytest.raises(RequestError) as caught,
    ):
        ep.http.request_json("GET", "health", retry_safe=True)

    assert str(caught.value).endswith("Gave up after 3 attempts.")


def test_not_found_explained_once(endpoint: Endpoint, server: ScriptedServer) -> None:
    text = "job j1 not found; it never existed, or its retention or ttl ended"
    server.reply("GET", STATUS, Reply(status=404, json={"error": text}))

    with pytest.raises(JobNotFound) as caught:
        endpoint.job("j1").status().run()

    message = str(caught.value)
    assert message.count(text) == 1
    assert "never submitted there" not in message
    assert "'ep'" in message


def test_not_found_without_text_gets_reasons(endpoint: Endpoint, server: ScriptedServer) -> None:
    server.reply("GET", STATUS, Reply(status=404))

    with pytest.raises(JobNotFound, match="never submitted there, its result expired"):
        endpoint.job("j1").status().run()


def test_long_retry_after_names_max_retry_after(endpoint: Endpoint, server: ScriptedServer) -> None:
    server.reply("GET", STATUS, Reply(status=429, headers={"Retry-After": "99999"}))

    with pytest.raises(RateLimited) as caught:
        endpoint.job("j1").status().run()

    message = str(caught.value)
    assert "RetryPolicy.max_retry_after (now 60 s)" in message
    assert "99999 s" in message
    assert "max_attempts" not in message


def test_short_retry_after_names_max_attempts(endpoint: Endpoint, server: ScriptedServer) -> None:
    server.reply("GET", STATUS, Reply(status=429, headers={"Retry-After": "0"}))

    with pytest.raises(RateLimited, match=r"raise RetryPolicy\.max_attempts"):
        endpoint.job("j1").status().run()


def test_retry_of_completed_job_explains_states(endpoint: Endpoint, server: ScriptedServer) -> None:
    server.reply("POST", "/v2/ep/retry/j1", Reply(status=400, json={"error": "job is COMPLETED"}))

    with pytest.raises(InvalidRequest) as caught:
        endpoint.job("j1").retry().run()

    message = str(caught.value)
    assert "Only FAILED or TIMED_OUT jobs can be retried" in message
    assert "Check the payload" not in message


def test_empty_body_reported_as_empty(endpoint: Endpoint, server: ScriptedServer) -> None:
    server.reply("GET", STATUS, Reply(status=200, body=b""))

    with pytest.raises(MalformedResponse) as caught:
        endpoint.job("j1").status().run()

    message = str(caught.value)
    assert "with an empty body" in message
    assert "NoneType" not in message


def test_wrong_shape_error_keeps_job_id(endpoint: Endpoint, server: ScriptedServer) -> None:
    server.reply("GET", "/v2/ep/status/wrongtypes", Reply(json={"id": "wrongtypes"}))

    with pytest.raises(MalformedResponse) as caught:
        endpoint.job("wrongtypes").status().run()

    assert "GET /ep/status/wrongtypes returned" in str(caught.value)
    assert caught.value.path == "/ep/status/wrongtypes"
    assert caught.value.job_id == "wrongtypes"


def test_status_of_other_job_rejected(endpoint: Endpoint, server: ScriptedServer) -> None:
    server.reply("GET", STATUS, Reply(json={"id": "j2", "status": "COMPLETED", "output": 1}))

    with pytest.raises(MalformedResponse) as caught:
        endpoint.job("j1").output(timeout=5).run()

    message = str(caught.value)
    assert "job 'j2' instead of job 'j1'" in message
    assert caught.value.job_id == "j1"


def test_oversized_body_rejected(server: ScriptedServer) -> None:
    output = "x" * 5000
    server.reply("GET", STATUS, Reply(json={"id": "j1", "status": "COMPLETED", "output": output}))
    with (
        Endpoint("ep", base_url=server.base_url, retry=FAST_RETRY, max_response_size=1000) as ep,
        pytest.raises(MalformedResponse) as caught,
    ):
        ep.job("j1").output(timeout=5).run()

    message = str(caught.value)
    assert "more than the limit of 1000 bytes" in message
    assert "max_response_size=" in message
    assert len(server.requests) == 1


def test_body_at_limit_accepted(server: ScriptedServer) -> None:
    document = {"id": "j1", "status": "COMPLETED", "output": "ok"}
    size = len(json.dumps(document))
    server.reply("GET", STATUS, Reply(json=document))
    with Endpoint("ep", base_url=server.base_url, max_response_size=size) as endpoint:
        assert endpoint.job("j1").output(timeout=5).run() == "ok"


@pytest.mark.parametrize("size", [0, "64"])
def test_invalid_max_response_size_rejected(size: object) -> None:
    with pytest.raises((TypeError, ValueError), match="max_response_size"):
        Endpoint("ep", base_url="http://127.0.0.1:9/v2", max_response_size=size)  # type: ignore[arg-type]


def test_policy_list_rejected_with_name() -> None:
    endpoint = Endpoint("ep", base_url="http://127.0.0.1:9/v2")

    with pytest.raises(TypeError, match=r"policy must be a mapping .* got list \[1, 2\]"):
        endpoint.run({"x": 1}, policy=[1, 2])  # type: ignore[arg-type]


def test_retry_policy_text_attempts_rejected() -> None:
    with pytest.raises(TypeError, match=r"RetryPolicy\.max_attempts must be an int, got str '3'"):
        RetryPolicy(max_attempts="3")  # type: ignore[arg-type]


def test_retry_policy_text_delay_rejected() -> None:
    with pytest.raises(TypeError, match=r"RetryPolicy\.base_delay must be a number of seconds"):
        RetryPolicy(base_delay="1")  # type: ignore[arg-type]


@pytest.mark.parametrize("call", ["output", "run_sync", "health"])
def test_text_seconds_rejected_with_name(call: str) -> None:
    endpoint = Endpoint("ep", base_url="http://127.0.0.1:9/v2")

    with pytest.raises(TypeError, match=r"(timeout|every) must be a number of seconds .* str '5'"):
        if call == "output":
            endpoint.job("j1").output(timeout="5")  # type: ignore[arg-type]
        elif call == "run_sync":
            endpoint.run_sync({"x": 1}, timeout="5")  # type: ignore[arg-type]
        else:
            endpoint.health(every="5")  # type: ignore[arg-type]
