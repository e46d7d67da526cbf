"""Fuzzing the client's parsing: generated server answers for every call.

A scripted server on 127.0.0.1 plays arbitrary JSON, documents with fields
of the wrong type, truncated and non-JSON bodies, odd statuses and
``Retry-After`` values. Whatever arrives, every call must end (no hang) with
a value or a typed ``RunPodError``, never a ``KeyError`` or ``TypeError`` from
inside the library.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reactivex import Observable
from reactivex import operators as ops

from rxrunpod import Endpoint
from rxrunpod.errors import RunPodError
from rxrunpod.http import RetryPolicy
from rxrunpod.job import Job
from rxrunpod.polling import PollPolicy
from rxrunpod.scheduling import IoScheduler, TimerScheduler
from tests.reliability.observing import record
from tests.support.scripted_server import RecordedRequest, Reply, ScriptedServer

FUZZ_SETTINGS = settings(
    max_examples=600,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
RETRY = RetryPolicy(max_attempts=2, base_delay=0.001, max_delay=0.005, max_retry_after=0.05)
POLL = PollPolicy(initial_interval=0.001, max_interval=0.01)
# After the generated answers, every request gets this, so each call ends.
FALLBACK = Reply(status=404, json={"error": "job not found"})

STATUSES = ["IN_QUEUE", "IN_PROGRESS", "COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"]
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
documents = st.fixed_dictionaries(
    {},
    optional={
        "id": st.just("j1") | json_values,
        "status": st.sampled_from(STATUSES) | json_values,
        "output": json_values,
        "error": json_values,
        "stream": json_values
        | st.lists(st.fixed_dictionaries({}, optional={"output": json_values}), max_size=3),
        "delayTime": json_values,
        "executionTime": json_values,
        "workerId": json_values,
        "jobs": json_values,
        "workers": json_values,
        "removed": json_values,
        "data": json_values,
    },
)


def encode(document: Any) -> bytes:
    return json.dumps(document).encode()


bodies = st.one_of(
    documents.map(encode),
    json_values.map(encode),
    st.binary(max_size=200),
    st.just(b""),
    st.text(max_size=50).map(str.encode),
)
replies = st.builds(
    lambda status, body, truncate, retry_after, encoding: Reply(
        status=status,
        body=body,
        truncate=min(truncate, len(body)) if truncate is not None else None,
        headers={
            **({"Retry-After": retry_after} if retry_after is not None else {}),
            **({"Content-Encoding": encoding} if encoding is not None else {}),
        },
    ),
    status=st.sampled_from(
        [200, 200, 200, 200, 201, 204, 400, 401, 403, 404, 409, 429, 500, 502, 503, 504]
    ),
    body=bodies,
    truncate=st.none() | st.integers(min_value=0, max_value=300),
    retry_after=st.none()
    | st.sampled_from(["0", "0.01", "-1", "1e9", "abc", "Wed, 21 Oct 2015 07:28:00 GMT", ""]),
    encoding=st.none() | st.sampled_from(["gzip", "identity", "br"]),
)

Call = Callable[[Endpoint], Observable[Any]]


def wait_for_output(job: Job) -> Observable[Any]:
    return job.output(timeout=5)


CALLS: dict[str, Call] = {
    "run": lambda ep: ep.run({"a": 1}),
    "run_sync": lambda ep: ep.run_sync({"a": 1}, timeout=5),
    "state": lambda ep: ep.job("j1").state(),
    "status": lambda ep: ep.job("j1").status(),
    "updates": lambda ep: ep.job("j1").updates(),
    "output": lambda ep: ep.job("j1").output(timeout=5),
    "stream": lambda ep: ep.job("j1").stream(),
    "cancel": lambda ep: ep.job("j1").cancel(),
    "retry": lambda ep: ep.job("j1").retry(),
    "health": lambda ep: ep.health(),
    "purge_queue": lambda ep: ep.purge_queue(),
    "models": lambda ep: ep.openai.models(),
    "run_then_output": lambda ep: ep.run({"a": 1}).pipe(ops.flat_map(wait_for_output)),
}


class ReplyQueue:
    """Hands out the replies of one example in order, then ``FALLBACK``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._replies: list[Reply] = []

    def load(self, replies: list[Reply]) -> None:
        with self._lock:
            self._replies = list(replies)

    def __call__(self, request: RecordedRequest) -> Reply:
        with self._lock:
            return self._replies.pop(0) if self._replies else FALLBACK


@pytest.fixture(scope="module")
def scripted() -> Iterator[tuple[ScriptedServer, ReplyQueue]]:
    queue = ReplyQueue()
    with ScriptedServer() as server:
        for method in ("GET", "POST"):
            server.respond(method, "/v2/ep/*", queue)
        yield server, queue


@pytest.fixture(scope="module")
def endpoint(scripted: tuple[ScriptedServer, ReplyQueue]) -> Iterator[Endpoint]:
    server, _ = scripted
    timer = TimerScheduler(name="fuzz-timer", idle_timeout=0.5)
    io = IoScheduler(8, timer=timer, idle_timeout=0.5, name="fuzz-io")
    with Endpoint(
        "ep", api_key="fuzz-key", base_url=server.base_url, scheduler=io, retry=RETRY, poll=POLL
    ) as ep:
        yield ep


def test_generated_answers_give_typed_errors(
    scripted: tuple[ScriptedServer, ReplyQueue], endpoint: Endpoint
) -> None:
    _, queue = scripted
    outcomes: dict[str, int] = {"value": 0, "error": 0}

    @FUZZ_SETTINGS
    @given(
        call=st.sampled_from(sorted(CALLS)),
        answers=st.lists(replies, min_size=1, max_size=4),
    )
    def fuzz(call: str, answers: list[Reply]) -> None:
        queue.load(answers)
        recording = record(CALLS[call](endpoint), timeout=15)
        if recording.error is not None:
            assert isinstance(recording.error, RunPodError), repr(recording.error)
            outcomes["error"] += 1
        else:
            outcomes["value"] += 1

    fuzz()
    print(f"client fuzz: {sum(outcomes.values())} calls, outcomes {outcomes}")


def test_huge_answer_is_parsed_or_typed(
    scripted: tuple[ScriptedServer, ReplyQueue], endpoint: Endpoint
) -> None:
    _, queue = scripted
    output = "x" * (32 * 1024 * 1024)
    huge = Reply(json={"id": "j1", "status": "COMPLETED", "output": output})
    queue.load([huge, Reply(body=encode({"id": "j1", "status": "COMPLETED"})[:-1] + b" " * 10**7)])

    first = record(endpoint.job("j1").state(), timeout=60)
    second = record(endpoint.job("j1").state(), timeout=60)

    assert first.error is None
    assert first.values[0].output == output
    assert isinstance(second.error, RunPodError)
