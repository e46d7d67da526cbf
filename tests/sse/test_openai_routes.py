"""OpenAIRoutes and the text operators, against a raw HTTP server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import reactivex
from reactivex import operators as ops
from reactivex.scheduler import NewThreadScheduler

from rxrunpod import Endpoint
from rxrunpod.errors import (
    APIError,
    AuthenticationError,
    InvalidRequest,
    MalformedResponse,
    StreamProtocolError,
)
from rxrunpod.http import RetryPolicy
from rxrunpod.openai import chunk_text, collect_text, texts
from tests.sse.raw_server import Connection, RawServer, Script, raw_server, sse_head

pytestmark = pytest.mark.timeout(30)

MESSAGES = [{"role": "user", "content": "Say hello"}]

MakeEndpoint = Callable[..., Endpoint]


def chat_chunk(text: str | None, finish_reason: str | None = None) -> dict[str, Any]:
    delta: dict[str, Any] = {} if text is None else {"content": text}
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
    }


def completion_chunk(text: str) -> dict[str, Any]:
    return {"id": "cmpl-1", "object": "text_completion", "choices": [{"index": 0, "text": text}]}


def event(document: object) -> bytes:
    return b"data: " + json.dumps(document).encode() + b"\n\n"


HELLO_EVENTS = [
    event(
        {
            "id": "chatcmpl-1",
            "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}],
        }
    ),
    event(chat_chunk("Hel")),
    b": ping\n\n",
    event(chat_chunk("lo")),
    event(chat_chunk("!")),
    event(chat_chunk(None, "stop")),
    b"data: [DONE]\n\n",
]


def stream_script(pieces: list[bytes], *, chunked: bool = True) -> Script:
    def script(connection: Connection) -> None:
        connection.chunked = chunked
        connection.send(sse_head(chunked=chunked))
        connection.send_pieces(pieces, pause=0.001)
        connection.end_body()

    return script


def json_script(status: str, document: object) -> Script:
    def script(connection: Connection) -> None:
        body = json.dumps(document).encode()
        connection.send(
            f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            + body
        )

    return script


@pytest.fixture
def endpoint_for() -> Iterator[MakeEndpoint]:
    endpoints: list[Endpoint] = []

    def make(server: RawServer, **options: Any) -> Endpoint:
        options.setdefault("retry", RetryPolicy(max_attempts=1))
        endpoint = Endpoint("ep-1", api_key="test-key", base_url=server.url + "/v2", **options)
        endpoints.append(endpoint)
        return endpoint

    yield make
    for endpoint in endpoints:
        endpoint.close()


def collect(
    observable: reactivex.Observable[Any], timeout: float = 10
) -> tuple[list[Any], BaseException | None]:
    """Subscribe, wait for the end, and return the items and the error (None after completion)."""
    items: list[Any] = []
    errors: list[BaseException | None] = []
    done = threading.Event()

    def on_error(error: Exception) -> None:
        errors.append(error)
        done.set()

    def on_completed() -> None:
        errors.append(None)
        done.set()

    observable.subscribe(items.append, on_error, on_completed)
    assert done.wait(timeout), "the observable neither completed nor failed in time"
    return items, errors[0]


def test_chat_stream_emits_chunks_until_done(endpoint_for: MakeEndpoint) -> None:
    with raw_server(stream_script([*HELLO_EVENTS, event(chat_chunk("after done"))])) as server:
        endpoint = endpoint_for(server)
        items, error = collect(
            endpoint.openai.chat_completions(MESSAGES, model="m1", temperature=0)
        )

    assert error is None
    assert len(items) == 5
    assert items[1] == chat_chunk("Hel")
    assert items[4]["choices"][0]["finish_reason"] == "stop"


def test_chat_request_carries_body_and_headers(endpoint_for: MakeEndpoint) -> None:
    with raw_server(stream_script(HELLO_EVENTS)) as server:
        endpoint = endpoint_for(server)
        collect(endpoint.openai.chat_completions(MESSAGES, model="m1", max_tokens=5))

    request = server.requests[0]
    assert request.method == "POST"
    assert request.path == "/v2/ep-1/openai/v1/chat/completions"
    assert json.loads(request.body) == {
        "model": "m1",
        "messages": MESSAGES,
        "max_tokens": 5,
        "stream": True,
    }
    assert request.headers["accept"] == "text/event-stream"
    assert request.headers["authorization"] == "Bearer test-key"


def test_texts_emits_chat_deltas(endpoint_for: MakeEndpoint) -> None:
    with raw_server(stream_script(HELLO_EVENTS)) as server:
        endpoint = endpoint_for(server)
        items, error = collect(endpoint.openai.chat_completions(MESSAGES).pipe(texts()))

    assert error is None
    assert items == ["Hel", "lo", "!"]


def test_collect_text_joins_deltas(endpoint_for: MakeEndpoint) -> None:
    with raw_server(stream_script(HELLO_EVENTS)) as server:
        endpoint = endpoint_for(server)
        text = endpoint.openai.chat_completions(MESSAGES).pipe(collect_text()).run()

    assert text == "Hello!"


def test_completions_stream_texts(endpoint_for: MakeEndpoint) -> None:
    pieces = [
        event(completion_chunk("Four")),
        event(completion_chunk(" score")),
        b"data: [DONE]\n\n",
    ]

    with raw_server(stream_script(pieces)) as server:
        endpoint = endpoint_for(server)
        items, error = collect(endpoint.openai.completions("Once", model="m1").pipe(texts()))

    assert error is None
    assert items == ["Four", " score"]
    assert server.requests[0].path == "/v2/ep-1/openai/v1/completions"
    assert json.loads(server.requests[0].body) == {"model": "m1", "prompt": "Once", "stream": True}


def test_end_of_body_without_done_completes(endpoint_for: MakeEndpoint) -> None:
    pieces = [event(chat_chunk("a")), event(chat_chunk("b"))]

    with raw_server(stream_script(pieces, chunked=False)) as server:
        endpoint = endpoint_for(server)
        items, error = collect(endpoint.openai.chat_completions(MESSAGES).pipe(texts()))

    assert error is None
    assert items == ["a", "b"]


def test_error_event_fails_stream(endpoint_for: MakeEndpoint) -> None:
    pieces = [event(chat_chunk("a")), b'event: error\ndata: {"message": "worker lost"}\n\n']

    with raw_server(stream_script(pieces)) as server:
        endpoint = endpoint_for(server)
        items, error = collect(endpoint.openai.chat_completions(MESSAGES).pipe(texts()))

    assert items == ["a"]
    assert isinstance(error, StreamProtocolError)
    assert "worker lost" in str(error)
    assert error.event == "error"


@pytest.mark.parametrize(
    "document",
    [
        {"error": {"message": "context length exceeded", "type": "BadRequestError"}},
        {"object": "error", "message": "context length exceeded", "code": 400},
    ],
    ids=["openai", "vllm"],
)
def test_error_chunk_fails_stream(endpoint_for: MakeEndpoint, document: dict[str, Any]) -> None:
    pieces = [event(chat_chunk("a")), event(document)]

    with raw_server(stream_script(pieces)) as server:
        endpoint = endpoint_for(server)
        items, error = collect(endpoint.openai.chat_completions(MESSAGES))

    assert len(items) == 1
    assert isinstance(error, StreamProtocolError)
    assert "context length exceeded" in str(error)


def test_error_status_carries_server_message(endpoint_for: MakeEndpoint) -> None:
    script = json_script("400 Bad Request", {"error": "'messages' must be a non-empty list"})

    with raw_server(script) as server:
        endpoint = endpoint_for(server)
        items, error = collect(endpoint.openai.chat_completions(MESSAGES))

    assert items == []
    assert isinstance(error, InvalidRequest)
    assert error.status_code == 400
    assert error.server_message == "'messages' must be a non-empty list"


def test_unauthorized_status_is_authentication_error(endpoint_for: MakeEndpoint) -> None:
    with raw_server(json_script("401 Unauthorized", {"error": "bad key"})) as server:
        endpoint = endpoint_for(server)
        _, error = collect(endpoint.openai.completions("x"))

    assert isinstance(error, AuthenticationError)
    assert "test-key" not in str(error)


def test_body_ending_mid_event_fails_stream(endpoint_for: MakeEndpoint) -> None:
    pieces = [event(chat_chunk("a")), b'data: {"choices": [{"delta": {"cont']

    with raw_server(stream_script(pieces, chunked=False)) as server:
        endpoint = endpoint_for(server)
        items, error = collect(endpoint.openai.chat_completions(MESSAGES).pipe(texts()))

    assert items == ["a"]
    assert isinstance(error, StreamProtocolError)
    assert "middle of an event" in str(error)


def test_non_json_event_data_is_malformed(endpoint_for: MakeEndpoint) -> None:
    with raw_server(stream_script([b"data: hello there\n\n"])) as server:
        endpoint = endpoint_for(server)
        _, error = collect(endpoint.openai.chat_completions(MESSAGES))

    assert isinstance(error, MalformedResponse)
    assert error.body_start == "hello there"


def test_non_streamed_answer_is_one_item(endpoint_for: MakeEndpoint) -> None:
    answer = {
        "id": "chatcmpl-2",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi there"}}],
    }

    with raw_server(json_script("200 OK", answer)) as server:
        endpoint = endpoint_for(server)
        items, error = collect(endpoint.openai.chat_completions(MESSAGES, stream=False))
        text = endpoint.openai.chat_completions(MESSAGES, stream=False).pipe(collect_text()).run()

    assert error is None
    assert items == [answer]
    assert text == "Hi there"
    assert json.loads(server.requests[0].body)["stream"] is False


def test_non_streamed_error_document_fails(endpoint_for: MakeEndpoint) -> None:
    document = {"object": "error", "message": "The model 'x' does not exist", "code": 404}

    with raw_server(json_script("200 OK", document)) as server:
        endpoint = endpoint_for(server)
        _, error = collect(endpoint.openai.completions("x", stream=False))

    assert isinstance(error, APIError)
    assert error.server_message == "The model 'x' does not exist"


def test_json_answer_to_stream_request_is_one_item(endpoint_for: MakeEndpoint) -> None:
    answer = {"id": "cmpl-3", "choices": [{"index": 0, "text": "whole"}]}

    with raw_server(json_script("200 OK", answer)) as server:
        endpoint = endpoint_for(server)
        items, error = collect(endpoint.openai.completions("x"))

    assert error is None
    assert items == [answer]


def test_models_emits_answer(endpoint_for: MakeEndpoint) -> None:
    answer = {"object": "list", "data": [{"id": "m1", "object": "model"}]}

    with raw_server(json_script("200 OK", answer)) as server:
        endpoint = endpoint_for(server)
        items, error = collect(endpoint.openai.models())

    assert error is None
    assert items == [answer]
    assert server.requests[0].method == "GET"
    assert server.requests[0].path == "/v2/ep-1/openai/v1/models"


def test_nothing_is_sent_before_subscribe(endpoint_for: MakeEndpoint) -> None:
    with raw_server(stream_script(HELLO_EVENTS)) as server:
        endpoint = endpoint_for(server)
        chunks = endpoint.openai.chat_completions(MESSAGES)
        time.sleep(0.2)
        requests_before = len(server.requests)
        first = chunks.pipe(collect_text()).run()
        second = chunks.pipe(collect_text()).run()

    assert requests_before == 0
    assert first == second == "Hello!"
    assert len(server.requests) == 2


def test_dispose_closes_connection_and_ends_reader(endpoint_for: MakeEndpoint) -> None:
    first_chunk = threading.Event()
    client_closed: list[bool] = []
    reader_threads: list[threading.Thread] = []

    def script(connection: Connection) -> None:
        connection.send(sse_head())
        connection.send(event(chat_chunk("a")))
        client_closed.append(connection.wait_for_client_close(timeout=5))

    def on_next(chunk: Any) -> None:
        reader_threads.append(threading.current_thread())
        first_chunk.set()

    with raw_server(script) as server:
        endpoint = endpoint_for(server, timeout=(2.0, 30.0))
        chunks = endpoint.openai.chat_completions(MESSAGES, scheduler=NewThreadScheduler())
        errors: list[Exception] = []
        subscription = chunks.subscribe(on_next, errors.append)
        assert first_chunk.wait(5)
        disposed_at = time.monotonic()
        subscription.dispose()
        reader_threads[0].join(timeout=2)
        reader_seconds = time.monotonic() - disposed_at

    assert client_closed == [True]
    assert not reader_threads[0].is_alive()
    assert reader_seconds < 1.0
    assert errors == []


def test_take_disposes_from_inside_on_next(endpoint_for: MakeEndpoint) -> None:
    client_closed: list[bool] = []

    def script(connection: Connection) -> None:
        connection.send(sse_head())
        connection.send(b"".join(event(chat_chunk(str(number))) for number in range(5)))
        client_closed.append(connection.wait_for_client_close(timeout=5))

    with raw_server(script) as server:
        endpoint = endpoint_for(server)
        items, error = collect(
            endpoint.openai.chat_completions(MESSAGES).pipe(texts(), ops.take(2))
        )

    assert error is None
    assert items == ["0", "1"]
    assert client_closed == [True]


def test_raising_on_next_reaches_on_error(endpoint_for: MakeEndpoint) -> None:
    errors: list[Exception] = []
    done = threading.Event()

    def on_next(chunk: Any) -> None:
        raise RuntimeError("display failed")

    def on_error(error: Exception) -> None:
        errors.append(error)
        done.set()

    with raw_server(stream_script(HELLO_EVENTS)) as server:
        endpoint = endpoint_for(server)
        endpoint.openai.chat_completions(MESSAGES).subscribe(on_next, on_error)
        assert done.wait(5)

    assert len(errors) == 1
    assert str(errors[0]) == "display failed"


def test_await_collect_text(endpoint_for: MakeEndpoint) -> None:
    with raw_server(stream_script(HELLO_EVENTS)) as server:
        endpoint = endpoint_for(server)

        async def main() -> str:
            return await endpoint.openai.chat_completions(MESSAGES).pipe(collect_text())

        text = asyncio.run(main())

    assert text == "Hello!"


def test_bad_arguments_raise_at_call() -> None:
    endpoint = Endpoint("ep-1", base_url="http://127.0.0.1:9/v2")

    with pytest.raises(TypeError, match="list of chat messages"):
        endpoint.openai.chat_completions("hello")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least one"):
        endpoint.openai.chat_completions([])
    with pytest.raises(TypeError, match=r"messages\[1\]"):
        endpoint.openai.chat_completions([{"role": "user", "content": "a"}, "b"])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="prompt"):
        endpoint.openai.completions(5)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("chunk", "expected"),
    [
        (chat_chunk("Hel"), "Hel"),
        (chat_chunk(None, "stop"), ""),
        ({"choices": [{"index": 0, "delta": {"role": "assistant", "content": None}}]}, ""),
        ({"choices": [{"index": 0, "message": {"content": "whole"}}]}, "whole"),
        (completion_chunk(" score"), " score"),
        ({"choices": [{"tokens": ["Four", " score"]}], "usage": {"output": 2}}, "Four score"),
        ({"choices": [], "usage": {"total_tokens": 3}}, ""),
        ({"object": "something else"}, ""),
        (" plain", " plain"),
    ],
    ids=["delta", "finish", "role", "message", "completion", "native", "usage", "other", "string"],
)
def test_chunk_text_shapes(chunk: Any, expected: str) -> None:
    assert chunk_text(chunk) == expected


def test_chunk_text_picks_choice_index() -> None:
    chunk = {"choices": [{"index": 1, "text": "B"}, {"index": 0, "text": "A"}]}

    assert chunk_text(chunk) == "A"
    assert chunk_text(chunk, index=1) == "B"
    assert chunk_text(chunk, index=None) == "BA"


def test_texts_rejects_other_item_types() -> None:
    items, error = collect(reactivex.of(chat_chunk("a"), 42).pipe(texts()))

    assert items == ["a"]
    assert isinstance(error, TypeError)
    assert "int" in str(error)


def test_collect_text_of_empty_source_is_empty() -> None:
    assert reactivex.empty().pipe(collect_text()).run() == ""
