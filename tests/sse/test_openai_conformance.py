"""The official ``openai`` client and rxrunpod read the same text from the local endpoint.

The handler is ``examples/handlers/openai_tokens.py``, which streams the
Gettysburg Address the way RunPod's vLLM worker streams tokens.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from openai.types.chat import ChatCompletionUserMessageParam
from reactivex import Observable
from reactivex import operators as ops

from rxrunpod import Endpoint, local
from rxrunpod.errors import InvalidRequest
from rxrunpod.openai import collect_text, texts

pytestmark = [pytest.mark.timeout(60), pytest.mark.sdk]

HANDLER = Path(__file__).resolve().parents[2] / "examples" / "handlers" / "openai_tokens.py"
MODEL = "gettysburg-address"
MESSAGES: list[ChatCompletionUserMessageParam] = [
    {"role": "user", "content": "Recite the address."}
]
OPENING = "Four score and seven years ago our fathers brought forth on this continent"
CLOSING = "shall not perish from the earth."


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    with local.serve(str(HANDLER), workers=2) as url:
        yield url


@pytest.fixture
def endpoint(base_url: str) -> Iterator[Endpoint]:
    with Endpoint("conformance", base_url=base_url) as endpoint:
        yield endpoint


@pytest.fixture
def client(base_url: str) -> Iterator[openai.OpenAI]:
    client = openai.OpenAI(
        api_key="unused", base_url=f"{base_url}/conformance/openai/v1", max_retries=0
    )
    yield client
    client.close()


def test_chat_stream_text_matches_openai_client(endpoint: Endpoint, client: openai.OpenAI) -> None:
    ours = endpoint.openai.chat_completions(MESSAGES, model=MODEL).pipe(collect_text()).run()

    theirs = []
    for chunk in client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True):
        if chunk.choices and chunk.choices[0].delta.content:
            theirs.append(chunk.choices[0].delta.content)

    assert ours == "".join(theirs)
    assert ours.startswith(OPENING)
    assert ours.endswith(CLOSING)
    assert len(re.findall(r"\S+", ours)) == 264


def test_completion_stream_text_matches_openai_client(
    endpoint: Endpoint, client: openai.OpenAI
) -> None:
    options: dict[str, Any] = {"max_tokens": 300, "seed": 10}
    ours = endpoint.openai.completions("Once", model=MODEL, **options).pipe(collect_text()).run()

    theirs = []
    for chunk in client.completions.create(model=MODEL, prompt="Once", stream=True, **options):
        theirs.append(chunk.choices[0].text)

    assert ours == "".join(theirs)
    assert len(re.findall(r"\S+", ours)) == 300
    assert ours.startswith(" on this continent, a")


def test_non_streamed_text_matches_openai_client(endpoint: Endpoint, client: openai.OpenAI) -> None:
    ours_chat = endpoint.openai.chat_completions(MESSAGES, model=MODEL, stream=False, max_tokens=7)
    ours_completion = endpoint.openai.completions("x", model=MODEL, stream=False, max_tokens=7)

    chat = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=7)
    completion = client.completions.create(model=MODEL, prompt="x", max_tokens=7)

    assert ours_chat.pipe(collect_text()).run() == chat.choices[0].message.content
    assert ours_completion.pipe(collect_text()).run() == completion.choices[0].text
    assert chat.choices[0].message.content == "Four score and seven years ago our"
    assert chat.choices[0].finish_reason == "length"


def test_streamed_chunks_arrive_one_event_each(endpoint: Endpoint) -> None:
    chunks = (
        endpoint.openai.chat_completions(MESSAGES, model=MODEL, max_tokens=20)
        .pipe(ops.to_list())
        .run()
    )

    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert [chunk["object"] for chunk in chunks] == ["chat.completion.chunk"] * 22
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"


def test_models_lists_handler_model(endpoint: Endpoint, client: openai.OpenAI) -> None:
    ours = endpoint.openai.models().run()
    theirs = [model.id for model in client.models.list()]

    assert [model["id"] for model in ours["data"]] == theirs == [MODEL]


def test_bad_request_is_invalid_request(endpoint: Endpoint, client: openai.OpenAI) -> None:
    with pytest.raises(InvalidRequest, match="only n=1"):
        endpoint.openai.chat_completions(MESSAGES, model=MODEL, n=2).run()
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=MODEL, messages=MESSAGES, n=2, stream=True)


def test_first_token_arrives_before_stream_ends(endpoint: Endpoint) -> None:
    """With 50 ms per token the first delta must arrive long before the last."""
    arrivals: list[float] = []
    done = threading.Event()
    started = time.monotonic()

    endpoint.openai.chat_completions(MESSAGES, model=MODEL, max_tokens=12, token_delay=0.05).pipe(
        texts()
    ).subscribe(
        lambda _: arrivals.append(time.monotonic() - started),
        lambda error: done.set(),
        done.set,
    )

    assert done.wait(20)
    assert len(arrivals) == 12
    assert arrivals[0] < 0.4
    assert arrivals[-1] - arrivals[0] > 0.4


def test_stream_ends_after_slow_reader(endpoint: Endpoint) -> None:
    """The handler finishes while the server waits on a full socket; the stream must not stall."""
    started = time.monotonic()
    paused: list[bool] = []

    def pause_once(text: str) -> str:
        if not paused:
            paused.append(True)
            time.sleep(1.0)
        return text

    deltas = endpoint.openai.chat_completions(MESSAGES, model=MODEL, max_tokens=60_000).pipe(
        texts()
    )
    paced: Observable[str] = deltas.pipe(ops.map(pause_once))
    count = paced.pipe(ops.count()).run()

    assert count == 60_000
    assert time.monotonic() - started < 15
