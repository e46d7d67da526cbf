"""Fixes found by a first-time user of the ``rxrunpod`` command line.

Each test runs the command (in this process or as a child process) against a
local endpoint over HTTP and checks what the user and the server see.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rxrunpod import Endpoint, JobStatus
from rxrunpod._commands import run_command
from rxrunpod.cli import build_parser
from rxrunpod.local import LocalEndpoint
from tests.support.scripted_server import unused_port

HANDLERS = Path(__file__).resolve().parents[2] / "examples" / "handlers"
SLOW_INPUT = '{"mock_delay": 8}'


@pytest.fixture()
def mock_worker() -> Iterator[LocalEndpoint]:
    # A fresh endpoint per test, so its request counters start at zero.
    with LocalEndpoint(str(HANDLERS / "mock_worker.py"), workers=2) as endpoint:
        yield endpoint


@pytest.fixture(autouse=True)
def no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RUNPOD_API_KEY", raising=False)
    monkeypatch.delenv("RUNPOD_ENDPOINT_BASE_URL", raising=False)


def cli(*argv: str) -> int:
    """Run ``rxrunpod ARGV`` in this process as ``main`` does, without configuring logging."""
    arguments = build_parser().parse_args(list(argv))
    code: int = run_command(arguments.command_function, arguments)
    return code


def child_environment() -> dict[str, str]:
    return {key: value for key, value in os.environ.items() if not key.startswith("RUNPOD_")}


def rxrunpod_child(*argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rxrunpod", *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=child_environment(),
    )


def cancel_requests(endpoint: LocalEndpoint) -> int:
    return endpoint.stats.requests.get("cancel", 0)


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def job_status(endpoint: LocalEndpoint, job_id: str) -> JobStatus:
    with Endpoint("ep", base_url=endpoint.base_url) as client:
        return client.job(job_id).state().run().status


# --- errors as JSON lines ---------------------------------------------------------------------


def test_json_error_is_an_event_line(capsys: pytest.CaptureFixture[str]) -> None:
    base_url = f"http://127.0.0.1:{unused_port()}/v2"

    code = cli("health", "ep", "--base-url", base_url, "--json")

    captured = capsys.readouterr()
    events = json_lines(captured.out)
    assert code == 3
    assert len(events) == 1
    assert events[0]["event"] == "error"
    assert events[0]["type"] == "RequestError"
    assert events[0]["exit_code"] == 3
    assert "could not connect" in events[0]["message"]
    assert "could not connect" in captured.err


def test_json_job_timeout_error_names_job(
    mock_worker: LocalEndpoint, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli(
        "run", "ep", "--base-url", mock_worker.base_url, "--json", "--timeout", "0.5",
        "-i", SLOW_INPUT,
    )  # fmt: skip

    events = json_lines(capsys.readouterr().out)
    assert code == 1
    assert events[-1]["event"] == "error"
    assert events[-1]["type"] == "WaitTimeout"
    assert events[-1]["exit_code"] == 1
    assert events[-1]["job_id"] == events[0]["id"]


def test_json_usage_error_is_an_event_line(capsys: pytest.CaptureFixture[str]) -> None:
    code = cli("run", "ep", "--base-url", "http://127.0.0.1:9/v2", "--json", "-i", "{bad")

    events = json_lines(capsys.readouterr().out)
    assert code == 2
    assert events[0]["event"] == "error"
    assert events[0]["exit_code"] == 2
    assert "not valid JSON" in events[0]["message"]


# --- health --count -------------------------------------------------------------------------


def test_health_count_without_watch_exits_2(
    mock_worker: LocalEndpoint, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli("health", "ep", "--base-url", mock_worker.base_url, "--count", "2")

    captured = capsys.readouterr()
    assert code == 2
    assert captured.out == ""
    assert "--count needs --watch" in captured.err
    assert mock_worker.stats.requests.get("health", 0) == 0

