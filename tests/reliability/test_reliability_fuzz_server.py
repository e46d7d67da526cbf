"""Fuzzing the local endpoint: generated requests to every route.

For mistakes a client can make (bad bodies, bad query strings, odd headers,
unknown job ids, malformed HTTP) the server must answer a 4xx in RunPod's
JSON error shape, never a 500, never crash, and keep serving a well-behaved
client running jobs alongside.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rxrunpod import Endpoint
from rxrunpod.local import LocalEndpoint
from tests.reliability.handlers import echo

FUZZ_SETTINGS = settings(
    max_examples=1000,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

JOB_ROUTES = ("status", "stream", "cancel", "retry")
ENDPOINT_ROUTES = ("run", "runsync", "purge-queue", "health")
OPENAI_PATHS = ("v1/chat/completions", "v1/completions", "v1/models", "v1/", "v1/x/../y")

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
# "webhook" stays out of generated bodies: the server would POST to any URL found there.
policies = (
    st.none()
    | json_values
    | st.fixed_dictionaries(
        {},
        optional={
            "executionTimeout": json_values,
            "ttl": json_values,
            "lowPriority": json_values,
        },
    )
)
job_documents = st.fixed_dictionaries(
    {},
    optional={
        "input": json_values,
        "policy": policies,
        "s3Config": json_values,
        "stream": st.booleans() | json_values,
        "model": json_values,
        "messages": json_values,
    },
)
bodies = st.one_of(
    st.none(),
    st.binary(max_size=512),
    json_values.map(lambda value: json.dumps(value).encode()),
    job_documents.map(lambda value: json.dumps(value).encode()),
    job_documents.map(lambda value: json.dumps(value).encode()[:-1]),
)
# requests rejects values with leading or trailing whitespace before sending them.
header_values = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40).map(
    str.strip
)
headers = st.dictionaries(
    st.sampled_from(
        ["Authorization", "Content-Type", "Accept", "X-Request-Id", "Accept-Encoding", "Expect"]
    ),
    header_values,
    max_size=4,
).filter(lambda found: found.get("Expect", "").lower() != "100-continue")
queries = st.dictionaries(
    st.sampled_from(["wait", "stream", "limit", "x"]),
    st.text(max_size=12) | st.integers(min_value=-(10**12), max_value=10**12).map(str),
    max_size=3,
)


@pytest.fixture(scope="module")
def server() -> Iterator[LocalEndpoint]:
    with LocalEndpoint(echo, workers=2) as endpoint:
        yield endpoint


@pytest.fixture(scope="module")
def known_job(server: LocalEndpoint) -> str:
    answer = requests.post(f"{server.endpoint_url()}/run", json={"input": {"k": 1}}, timeout=5)
    job_id: str = answer.json()["id"]
    return job_id


class BystanderClient:
    """A well-behaved client that runs jobs on a thread until stopped."""

    def __init__(self, base_url: str) -> None:
        self.finished = 0
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._base_url = base_url
        self._thread = threading.Thread(target=self._loop, name="fuzz-bystander")

    def __enter__(self) -> BystanderClient:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _loop(self) -> None:
        with Endpoint("bystander", base_url=self._base_url) as ep:
            while not self._stop.is_set():
                try:
                    job = ep.run({"turn": self.finished}).run()
                    assert job.output(timeout=10).run() == {"turn": self.finished}
                    self.finished += 1
                except BaseException as error:
                    self.errors.append(error)
                    return
                time.sleep(0.02)


def check_answer(response: requests.Response) -> None:
    assert response.status_code < 500, (response.status_code, response.text[:300])
    # aiohttp answers an unknown Expect header with a plain-text 417 before any route runs.
    if response.status_code >= 400 and response.status_code != 417:
        document = response.json()
        assert isinstance(document, dict)
        error = document.get("error")
        # The OpenAI route responds in OpenAI's shape: {"error": {"message": ..., ...}}.
        if "/openai/" in response.url:
            assert isinstance(error, dict)
            error = error.get("message")
        assert isinstance(error, str)
        assert error


@st.composite
def requests_to_routes(draw: st.DrawFn, known_job: str) -> dict[str, Any]:
    kind = draw(st.sampled_from(["job", "endpoint", "openai", "unknown"]))
    if kind == "job":
        job_id = draw(st.just(known_job) | st.text(min_size=1, max_size=30))
        path = f"{draw(st.sampled_from(JOB_ROUTES))}/{urllib.parse.quote(job_id, safe='')}"
    elif kind == "endpoint":
        path = draw(st.sampled_from(ENDPOINT_ROUTES))
    elif kind == "openai":
        path = f"openai/{draw(st.sampled_from(OPENAI_PATHS))}"
    else:
        path = urllib.parse.quote(draw(st.text(max_size=20)))
    return {
        "method": draw(st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH"])),
        "path": path,
        "endpoint_id": urllib.parse.quote(
            draw(st.sampled_from(["ep", "x y", "é", "a" * 60])), safe=""
        ),
        "body": draw(bodies),
        "headers": draw(headers),
        "params": draw(queries),
    }


def test_routes_never_answer_500(server: LocalEndpoint, known_job: str) -> None:
    sent = 0
    with requests.Session() as session, BystanderClient(server.base_url) as bystander:

        @FUZZ_SETTINGS
        @given(st.data())
        def fuzz(data: st.DataObject) -> None:
            nonlocal sent
            request = data.draw(requests_to_routes(known_job))
            response = session.request(
                request["method"],
                f"{server.base_url}/{request['endpoint_id']}/{request['path']}",
                data=request["body"],
                headers=request["headers"],
                params={**request["params"], "wait": "0"}
                if request["path"].startswith(("stream", "runsync"))
                else request["params"],
                timeout=10,
            )
            sent += 1
            check_answer(response)

        fuzz()
        health = session.get(f"{server.endpoint_url()}/health", timeout=5)

    assert health.status_code == 200
    assert bystander.errors == []
    assert bystander.finished > 0
    assert server.stats.responses.get(500, 0) == 0
    print(f"server fuzz: {sent} requests, bystander finished {bystander.finished} jobs")


@FUZZ_SETTINGS
@given(raw=st.binary(min_size=1, max_size=600))
def test_raw_bytes_never_crash_server(server: LocalEndpoint, raw: bytes) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as connection:
        connection.sendall(raw)
        connection.shutdown(socket.SHUT_WR)
        connection.settimeout(5)
        answer = b""
        try:
            while chunk := connection.recv(65536):
                answer += chunk
        except (ConnectionResetError, TimeoutError):
            pass
    if answer.startswith(b"HTTP/"):
        status = int(answer.split(b" ", 2)[1])
        assert status < 500 or status == 505, answer[:200]
    health = requests.get(f"{server.endpoint_url()}/health", timeout=5)
    assert health.status_code == 200
