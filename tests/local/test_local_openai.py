"""The OpenAI-compatible route of the local endpoint."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
import requests

from rxrunpod.local import LocalEndpoint
from tests.local.handlers import openai_like

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def openai_endpoint() -> Iterator[LocalEndpoint]:
    with LocalEndpoint(openai_like.handler, workers=2) as endpoint:
        yield endpoint


def openai_url(endpoint: LocalEndpoint, path: str) -> str:
    return f"{endpoint.base_url}/ep/openai/v1/{path}"


def sse_data(text: str) -> list[str]:
    return [line[len("data: ") :] for line in text.split("\n") if line.startswith("data: ")]


def test_streamed_chat_is_sse_ending_in_done(
    openai_endpoint: LocalEndpoint, http: requests.Session
) -> None:
    body = {"model": "words", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    response = http.post(openai_url(openai_endpoint, "chat/completions"), json=body)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/event-stream")
    events = sse_data(response.text)
    assert events[-1] == "[DONE]"
    assert len(events) == 6
    assert response.text.count("\n\n") == 6


def test_raw_sse_text_passes_through_unchanged(
    openai_endpoint: LocalEndpoint, http: requests.Session
) -> None:
    body = {"model": "words", "prompt": "x", "stream": True, "raw": True}
    response = http.post(openai_url(openai_endpoint, "completions"), json=body)
    events = sse_data(response.text)
    assert events.count("[DONE]") == 1
    assert len(events) == 6


def test_unstreamed_answer_is_one_json_body(
    openai_endpoint: LocalEndpoint, http: requests.Session
) -> None:
    body = {"model": "words", "messages": [{"role": "user", "content": "hi"}]}
    response = http.post(openai_url(openai_endpoint, "chat/completions"), json=body)
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"] == "The quick brown fox"


def test_models_route_lists_models(openai_endpoint: LocalEndpoint, http: requests.Session) -> None:
    response = http.get(openai_url(openai_endpoint, "models"))
    assert response.json()["data"][0]["id"] == "words"


def test_job_input_carries_route_and_body(http: requests.Session) -> None:
    seen: list[object] = []

    def recorder(job: dict[str, object]) -> object:
        seen.append(job["input"])
        return {"ok": True}

    with LocalEndpoint(recorder, workers=1) as endpoint:
        http.post(openai_url(endpoint, "completions"), json={"prompt": "p"})
    assert seen == [{"openai_route": "/v1/completions", "openai_input": {"prompt": "p"}}]


def test_error_item_becomes_its_status(
    openai_endpoint: LocalEndpoint, http: requests.Session
) -> None:
    for stream in (False, True):
        body = {"prompt": "x", "bad": True, "stream": stream}
        response = http.post(openai_url(openai_endpoint, "completions"), json=body)
        assert response.status_code == 422
        assert response.json()["message"] == "'bad' is not allowed"


def test_failed_handler_is_500_json(openai_endpoint: LocalEndpoint, http: requests.Session) -> None:
    response = http.post(
        openai_url(openai_endpoint, "completions"), json={"prompt": "x", "fail": True}
    )
    assert response.status_code == 500
    assert "the model fell over" in response.json()["error"]["message"]


def test_official_openai_client_streams_text(openai_endpoint: LocalEndpoint) -> None:
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=f"{openai_endpoint.base_url}/ep/openai/v1", api_key="unused")
    try:
        stream = client.chat.completions.create(
            model="words", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    finally:
        client.close()
    assert text == "The quick brown fox"
    assert openai_endpoint.stats.submissions == {"openai": 1}


def assert_openai_error(response: requests.Response, status: int, fragment: str) -> None:
    assert response.status_code == status
    document = response.json()
    assert set(document) == {"error"}
    assert set(document["error"]) == {"message", "type", "param", "code"}
    assert document["error"]["code"] == status
    assert fragment in document["error"]["message"]


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "must be a JSON object, got list"),
        (b"", "body was empty"),
        pytest.param(b"[" * 1000 + b"]" * 1000, "nested more than 512 levels", id="too-deep"),
    ],
)
def test_bad_openai_body_is_openai_error(
    openai_endpoint: LocalEndpoint, http: requests.Session, body: bytes, fragment: str
) -> None:
    response = http.post(openai_url(openai_endpoint, "completions"), data=body)

    assert_openai_error(response, 400, fragment)
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_openai_key_and_fault_errors_have_openai_shape(http: requests.Session) -> None:
    with LocalEndpoint(openai_like.handler, workers=1, api_key="k-1") as endpoint:
        unauthorized = http.get(openai_url(endpoint, "models"))
        endpoint.faults.add(503, routes="openai")
        unavailable = http.get(openai_url(endpoint, "models"), headers={"Authorization": "k-1"})

    assert_openai_error(unauthorized, 401, "missing or invalid API key")
    assert unauthorized.json()["error"]["type"] == "authentication_error"
    assert_openai_error(unavailable, 503, "service unavailable")
    assert unavailable.json()["error"]["type"] == "server_error"


@pytest.mark.parametrize("stream", [False, True])
def test_handler_exception_gives_message_not_traceback(
    openai_endpoint: LocalEndpoint,
    http: requests.Session,
    caplog: pytest.LogCaptureFixture,
    stream: bool,
) -> None:
    body = {"prompt": "x", "fail": True, "stream": stream}
    with caplog.at_level(logging.WARNING, logger="rxrunpod.local"):
        response = http.post(openai_url(openai_endpoint, "completions"), json=body)

    assert_openai_error(response, 500, "RuntimeError: the model fell over")
    assert response.json()["error"]["message"] == "RuntimeError: the model fell over"
    assert "Traceback" not in response.text
    assert "Traceback (most recent call last)" in caplog.text


def test_official_client_reads_error_message(openai_endpoint: LocalEndpoint) -> None:
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(
        base_url=f"{openai_endpoint.base_url}/ep/openai/v1", api_key="unused", max_retries=0
    )
    try:
        with pytest.raises(openai.InternalServerError) as raised:
            client.completions.create(model="words", prompt="x", extra_body={"fail": True})
    finally:
        client.close()

    assert raised.value.message == "Error code: 500 - RuntimeError: the model fell over"
    assert raised.value.type == "server_error"
