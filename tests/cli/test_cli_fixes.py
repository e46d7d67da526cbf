"""Fixes found by a first-time user of the ``rxrunpod`` command line.

Each test runs the command (in this process or as a child process) against a
local endpoint over HTTP and checks what the user and the server see.
"""

from __future__ import annotations

import io
import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rxrunpod import Endpoint, JobStatus
from rxrunpod._commands import run_command
from rxrunpod.cli import build_parser
from rxrunpod.demo import run_demo
from rxrunpod.local import LocalEndpoint
from tests.support.scripted_server import unused_port

HANDLERS = Path(__file__).resolve().parents[2] / "examples" / "handlers"
SLOW_INPUT = '{"mock_delay": 4}'


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


# --- cancelling on --timeout and Ctrl-C -------------------------------------------------------


def test_run_timeout_cancels_before_exit(mock_worker: LocalEndpoint) -> None:
    # The cancel used to be sent in the background and was lost in 2 of 3 runs when
    # the process exited, so three runs must send three cancels.
    for run in range(1, 4):
        result = rxrunpod_child(
            "run", "ep", "--base-url", mock_worker.base_url, "--json", "--timeout", "0.5",
            "-i", SLOW_INPUT,
        )  # fmt: skip

        job_id = json_lines(result.stdout)[0]["id"]
        assert result.returncode == 1, result.stderr
        assert cancel_requests(mock_worker) == run
        assert f"job {job_id} did not finish within 0.5 s, so it was cancelled" in result.stderr
        assert job_status(mock_worker, job_id) is JobStatus.CANCELLED


def test_run_interrupt_cancels_before_exit(mock_worker: LocalEndpoint) -> None:
    command = [
        sys.executable, "-m", "rxrunpod", "run", "ep", "--base-url", mock_worker.base_url,
        "--json", "-i", SLOW_INPUT,
    ]  # fmt: skip
    with subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=child_environment(),
    ) as child:
        assert child.stdout is not None
        assert child.stderr is not None
        submitted = json.loads(child.stdout.readline())
        child.send_signal(signal.SIGINT)
        code = child.wait(timeout=30)
        error_text = child.stderr.read()

    job_id = submitted["id"]
    assert code == 130
    assert cancel_requests(mock_worker) == 1
    assert f"job {job_id} was cancelled" in error_text
    assert job_status(mock_worker, job_id) is JobStatus.CANCELLED


def test_run_sync_timeout_cancels_and_names_job(mock_worker: LocalEndpoint) -> None:
    result = rxrunpod_child(
        "run", "ep", "--base-url", mock_worker.base_url, "--sync", "--timeout", "2",
        "-i", SLOW_INPUT,
    )  # fmt: skip

    found = re.search(r"job (\S+) did not finish within 2 s, so it was cancelled", result.stderr)
    assert result.returncode == 1, result.stderr
    assert found is not None, result.stderr
    assert cancel_requests(mock_worker) == 1
    assert job_status(mock_worker, found.group(1)) is JobStatus.CANCELLED


def test_run_timeout_reports_unconfirmed_cancel(
    mock_worker: LocalEndpoint, capsys: pytest.CaptureFixture[str]
) -> None:
    mock_worker.faults.add("500", routes="cancel")

    code = cli(
        "run", "ep", "--base-url", mock_worker.base_url, "--json", "--timeout", "0.5",
        "-i", SLOW_INPUT,
    )  # fmt: skip

    captured = capsys.readouterr()
    job_id = json_lines(captured.out)[0]["id"]
    assert code == 1
    assert "so it was cancelled" not in captured.err
    assert "could not be confirmed" in captured.err
    assert f"rxrunpod cancel ep {job_id} --base-url {mock_worker.base_url}" in captured.err


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


# --- request timeouts and progress ------------------------------------------------------------


def test_request_timeout_bounds_silent_server(
    mock_worker: LocalEndpoint, capsys: pytest.CaptureFixture[str]
) -> None:
    mock_worker.faults.add("slow", routes="status", delay=30)
    started = time.monotonic()

    code = cli("status", "ep", "some-job", "--base-url", mock_worker.base_url,
               "--request-timeout", "0.3")  # fmt: skip

    elapsed = time.monotonic() - started
    message = capsys.readouterr().err
    assert code == 3
    assert elapsed < 10
    assert "read timeout of 0.3 s" in message
    assert "after 5 attempts" in message
    assert mock_worker.stats.requests.get("status", 0) == 5


def test_request_timeout_rejects_zero(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        cli("status", "ep", "some-job", "--request-timeout", "0")

    message = capsys.readouterr().err
    assert caught.value.code == 2
    assert "--request-timeout" in message
    assert "expected a positive number of seconds" in message


def read_terminal(descriptor: int, child: subprocess.Popen[bytes], limit: float) -> str:
    """Read what a child writes to a terminal until it exits or ``limit`` seconds pass."""
    received = bytearray()
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        ready, _, _ = select.select([descriptor], [], [], 0.1)
        if ready:
            try:
                chunk = os.read(descriptor, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            received.extend(chunk)
        elif child.poll() is not None:
            break
    return received.decode(errors="replace")


def test_long_wait_shows_progress_on_terminal(mock_worker: LocalEndpoint) -> None:
    mock_worker.faults.add("slow", routes="health", delay=2.5)
    controller, terminal = pty.openpty()
    command = [sys.executable, "-m", "rxrunpod", "health", "ep", "--base-url",
               mock_worker.base_url]  # fmt: skip
    try:
        with subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=terminal,
            env={**child_environment(), "TERM": "xterm"},
        ) as child:
            os.close(terminal)
            terminal = -1
            screen = read_terminal(controller, child, limit=30)
            output, _ = child.communicate(timeout=30)
    finally:
        os.close(controller)
        if terminal >= 0:
            os.close(terminal)

    assert child.returncode == 0
    assert "waiting for GET /health" in screen
    assert output.decode().startswith("jobs     in queue")


def test_piped_wait_shows_no_progress(mock_worker: LocalEndpoint) -> None:
    mock_worker.faults.add("slow", routes="health", delay=1.5)

    result = rxrunpod_child("health", "ep", "--base-url", mock_worker.base_url)

    assert result.returncode == 0
    assert result.stderr == ""


# --- demo wording -----------------------------------------------------------------------------


def test_demo_separates_failed_attempts_from_failed_jobs() -> None:
    out = io.StringIO()

    result = run_demo(out, jobs=8, interactive=False)

    text = out.getvalue()
    health_lines = [line for line in text.splitlines() if line.startswith("health ")]
    assert result.ok, text[-2000:]
    assert health_lines
    assert all("failed attempts" in line for line in health_lines)
    assert "8 submitted: 6 completed, 1 failed, 1 cancelled, 0 timed out" in text
    assert "Mock error: the input asked this job to fail" in text.split("\nsummary\n", 1)[1]
