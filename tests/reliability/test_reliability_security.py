"""Security: API key checks on every route, loopback binding, body limits, no key leaks."""

from __future__ import annotations

import inspect
import logging
import os
import signal
import subprocess
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

import rxrunpod.local
from rxrunpod import Endpoint
from rxrunpod.errors import (
    AuthenticationError,
    JobFailed,
    JobNotFound,
    MalformedResponse,
    RequestError,
    RunPodError,
    ServerError,
)
from rxrunpod.http import RetryPolicy
from rxrunpod.local import Faults, LocalEndpoint
from rxrunpod.local._server import MAX_BODY, RUN_BODY_LIMIT, RUNSYNC_BODY_LIMIT, LocalServer
from rxrunpod.scheduling import IoScheduler
from tests.reliability.handlers import echo
from tests.reliability.observing import record
from tests.support.scripted_server import RecordedRequest, Reply, ScriptedServer, unused_port

KEY = "rk_reliability_0123456789abcdefSECRET"
WRONG_KEYS = [
    None,
    "",
    "Bearer",
    "Bearer wrong",
    f"Bearer {KEY}x",
    f"Bearer {KEY[:-1]}",
    f"Basic {KEY}",
]
# Every route of the local endpoint with a method it serves and a body it accepts.
ROUTES = [
    ("POST", "run", {"input": {"a": 1}}),
    ("POST", "runsync", {"input": {"a": 1}}),
    ("GET", "status/job-1", None),
    ("POST", "status/job-1", None),
    ("GET", "stream/job-1", None),
    ("POST", "cancel/job-1", None),
    ("POST", "retry/job-1", None),
    ("POST", "purge-queue", None),
    ("GET", "health", None),
    ("POST", "openai/v1/chat/completions", {"model": "m", "messages": []}),
    ("POST", "openai/v1/completions", {"model": "m", "prompt": "hi"}),
    ("GET", "openai/v1/models", None),
]
FAST_RETRY = RetryPolicy(max_attempts=2, base_delay=0.01, max_delay=0.02)


def error_message(answer: requests.Response) -> str:
    """Return the error text of RunPod's error document or of OpenAI's nested one."""
    error = answer.json()["error"]
    if isinstance(error, dict):
        error = error["message"]
    assert isinstance(error, str)
    return error


def fails(job: dict[str, Any]) -> Any:
    raise RuntimeError(f"handler failed on {job['input']!r}")


@pytest.fixture(scope="module")
def keyed() -> Iterator[LocalEndpoint]:
    with LocalEndpoint(echo, workers=1, api_key=KEY) as endpoint:
        yield endpoint


# -- authentication -----------------------------------------------------------------------------


@pytest.mark.parametrize("authorization", WRONG_KEYS)
@pytest.mark.parametrize(("method", "path", "body"), ROUTES, ids=[f"{m} {p}" for m, p, _ in ROUTES])
def test_route_rejects_missing_or_wrong_key(
    keyed: LocalEndpoint, method: str, path: str, body: Any, authorization: str | None
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    before = keyed.stats.total_submissions

    answer = requests.request(
        method, f"{keyed.endpoint_url()}/{path}", json=body, headers=headers, timeout=10
    )

    assert answer.status_code == 401
    assert "API key" in error_message(answer)
    assert KEY not in answer.text
    assert keyed.stats.total_submissions == before


@pytest.mark.parametrize(("method", "path", "body"), ROUTES, ids=[f"{m} {p}" for m, p, _ in ROUTES])
def test_route_accepts_right_key(keyed: LocalEndpoint, method: str, path: str, body: Any) -> None:
    answer = requests.request(
        method,
        f"{keyed.endpoint_url()}/{path}",
        json=body,
        headers={"Authorization": f"Bearer {KEY}"},
        params={"wait": "0"} if path.startswith("stream") else None,
        timeout=30,
    )

    assert answer.status_code != 401


def test_key_compared_in_constant_time() -> None:
    source = inspect.getsource(LocalServer._authorized)
    assert "hmac.compare_digest(" in source
    package = Path(rxrunpod.local.__file__).parent
    for module in package.glob("*.py"):
        text = module.read_text()
        assert "== self._api_key" not in text, module.name
        assert "_api_key ==" not in text, module.name


# -- binding and size limits --------------------------------------------------------------------


def test_server_binds_loopback_by_default() -> None:
    with LocalEndpoint(echo, workers=1) as endpoint:
        assert endpoint.host == "127.0.0.1"
        assert endpoint.base_url.startswith("http://127.0.0.1:")


def test_serve_command_binds_loopback_by_default() -> None:
    from rxrunpod.cli import build_parser

    arguments = build_parser().parse_args(["serve", "handler.py"])
    assert arguments.host == "127.0.0.1"


def test_other_host_warns_before_binding() -> None:
    # 192.0.2.1 is TEST-NET-1: never assigned here, so nothing is exposed and bind fails.
    endpoint = LocalEndpoint(echo, workers=1, host="192.0.2.1")
    with pytest.warns(RuntimeWarning, match="other machines can reach"), pytest.raises(OSError):
        endpoint.start()
    assert not endpoint.running


@pytest.mark.parametrize(
    ("path", "limit"),
    [
        ("run", RUN_BODY_LIMIT),
        ("runsync", RUNSYNC_BODY_LIMIT),
        ("openai/v1/chat/completions", RUNSYNC_BODY_LIMIT),
    ],
)
def test_body_over_limit_rejected(path: str, limit: int) -> None:
    prefix = b'{"input": "'
    body = prefix + b"x" * (limit - len(prefix) - 1) + b'"}'
    assert len(body) == limit + 1
    with LocalEndpoint(echo, workers=1) as endpoint:
        answer = requests.post(f"{endpoint.endpoint_url()}/{path}", data=body, timeout=30)
        submissions = endpoint.stats.total_submissions

    assert answer.status_code == 400
    assert "exceeds" in error_message(answer)
    assert submissions == 0


def test_body_at_limit_accepted() -> None:
    prefix = b'{"input": "'
    body = prefix + b"x" * (RUN_BODY_LIMIT - len(prefix) - 2) + b'"}'
    assert len(body) == RUN_BODY_LIMIT
    with LocalEndpoint(echo, workers=1) as endpoint:
        answer = requests.post(f"{endpoint.endpoint_url()}/run", data=body, timeout=30)

    assert answer.status_code == 200


def test_body_over_server_maximum_rejected() -> None:
    with LocalEndpoint(echo, workers=1) as endpoint:
        answer = requests.post(
            f"{endpoint.endpoint_url()}/run", data=b"x" * (MAX_BODY + 1), timeout=60
        )
        alive = requests.get(f"{endpoint.endpoint_url()}/health", timeout=5)

    assert answer.status_code == 400
    assert alive.status_code == 200


# -- the key never leaks ------------------------------------------------------------------------


def echo_authorization(request: RecordedRequest) -> Reply:
    """A hostile server that copies the request's Authorization header into its answer."""
    seen = request.headers.get("Authorization", "")
    if request.path.endswith("/health"):
        return Reply(body=f"<html>not json, you sent {seen}</html>")
    return Reply(status=500, json={"error": f"bad credentials {seen}"})


def failing_calls(io: IoScheduler) -> list[tuple[str, BaseException | None, list[str]]]:
    """Make failing calls that each involve the key; return (name, error, reprs) per call."""
    outcomes: list[tuple[str, BaseException | None, list[str]]] = []

    def observe(name: str, ep: Endpoint, source: Any) -> None:
        recording = record(source, timeout=30)
        outcomes.append((name, recording.error, [repr(ep), repr(ep.http), str(recording.values)]))

    other = LocalEndpoint(echo, workers=1, api_key="the-other-key")
    with other, Endpoint("e", api_key=KEY, base_url=other.base_url, scheduler=io) as ep:
        observe("wrong key", ep, ep.run({"a": 1}))
    with (
        LocalEndpoint(fails, workers=1, api_key=KEY, faults=Faults()) as server,
        Endpoint("e", api_key=KEY, base_url=server.base_url, scheduler=io, retry=FAST_RETRY) as ep,
    ):
        job = ep.run({"a": 1}).run()
        observe("job failed", ep, job.output(timeout=10))
        observe("unknown job", ep, ep.job("no-such-job").state())
        server.faults.add("500", routes="health")
        observe("server error", ep, ep.health())
        server.faults.add("drop", routes="status")
        observe("dropped", ep, job.state())
        outcomes[-1][2].append(repr(job))
    with Endpoint(
        "e",
        api_key=KEY,
        base_url=f"http://127.0.0.1:{unused_port()}/v2",
        scheduler=io,
        retry=FAST_RETRY,
    ) as ep:
        observe("refused", ep, ep.health())
    with ScriptedServer() as hostile:
        for method in ("GET", "POST"):
            hostile.respond(method, "/v2/e/*", echo_authorization)
        with Endpoint(
            "e", api_key=KEY, base_url=hostile.base_url, scheduler=io, retry=FAST_RETRY
        ) as ep:
            observe("reflected in error", ep, ep.run({"a": 1}))
            observe("reflected in body", ep, ep.health())
    return outcomes


def test_key_never_in_errors_logs_or_reprs(
    io: IoScheduler, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    outcomes = failing_calls(io)

    kinds = {name: type(error) for name, error, _ in outcomes}
    assert kinds == {
        "wrong key": AuthenticationError,
        "job failed": JobFailed,
        "unknown job": JobNotFound,
        "server error": ServerError,
        "dropped": RequestError,
        "refused": RequestError,
        "reflected in error": ServerError,
        "reflected in body": MalformedResponse,
    }
    for name, error, reprs in outcomes:
        assert isinstance(error, RunPodError)
        text = "".join(traceback.format_exception(error))
        assert KEY not in text, name
        assert KEY not in repr(error), name
        assert KEY not in repr(vars(error)), name
        for shown in reprs:
            assert KEY not in shown, name
    assert caplog.records, "nothing was logged at DEBUG"
    assert KEY not in caplog.text
    for log_record in caplog.records:
        assert KEY not in str(log_record.args), log_record.getMessage()


def run_cli(*arguments: str, key: str = KEY) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "RUNPOD_API_KEY": key, "PYTHONWARNINGS": "ignore"}
    return subprocess.run(
        [sys.executable, "-m", "rxrunpod", "--log-level", "DEBUG", *arguments],
        capture_output=True,
        text=True,
        timeout=60,
        env=environment,
    )


def test_cli_never_prints_key() -> None:
    with (
        LocalEndpoint(echo, workers=1, api_key="the-other-key") as other,
        ScriptedServer() as hostile,
    ):
        for method in ("GET", "POST"):
            hostile.respond(method, "/v2/e/*", echo_authorization)
        results = [
            run_cli("run", "e", "--base-url", other.base_url, "--input", '{"a": 1}'),
            run_cli("status", "e", "job-1", "--base-url", other.base_url, "--json"),
            run_cli("health", "e", "--base-url", f"http://127.0.0.1:{unused_port()}/v2"),
            run_cli("run", "e", "--base-url", hostile.base_url, "--input", "{}", "--json"),
            run_cli("health", "e", "--base-url", hostile.base_url),
        ]

    for result in results:
        assert result.returncode == 3, result.stderr
        assert result.stderr, "the CLI printed no error"
        assert KEY not in result.stdout
        assert KEY not in result.stderr


def test_serve_command_never_prints_key(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "rxrunpod",
            "serve",
            "tests.reliability.handlers:echo",
            "--port",
            "0",
            "--api-key",
            KEY,
            "--log-level",
            "DEBUG",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        base_url = line.split(" at ", 1)[1].split("/<endpoint_id>", 1)[0]
        for authorization in ("Bearer wrong", f"Bearer {KEY}"):
            requests.post(
                f"{base_url}/e/run",
                json={"input": {"a": 1}},
                headers={"Authorization": authorization},
                timeout=10,
            )
    finally:
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=30)

    assert process.returncode == 0, stderr
    assert "local endpoint serving" in stderr
    assert KEY not in line + stdout
    assert KEY not in stderr
