"""The client subcommands of ``rxrunpod`` against local endpoints running the example handlers."""

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
from tests.support.scripted_server import unused_port, wait_until

HANDLERS = Path(__file__).resolve().parents[2] / "examples" / "handlers"
API_KEY = "cli-test-key-0123456789"


def start_local(handler: str, **options: Any) -> LocalEndpoint:
    return LocalEndpoint(str(HANDLERS / handler), **options)


@pytest.fixture(scope="module")
def mock_worker() -> Iterator[LocalEndpoint]:
    with start_local("mock_worker.py", workers=2) as endpoint:
        yield endpoint


@pytest.fixture(scope="module")
def token_stream() -> Iterator[LocalEndpoint]:
    with start_local("token_stream.py", workers=1) as endpoint:
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


def json_lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_run_prints_output(mock_worker: LocalEndpoint, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli("run", "ep", "--base-url", mock_worker.base_url, "-i", '{"mock_return": {"n": 7}}')

    captured = capsys.readouterr()
    assert code == 0
    assert json.loads(captured.out) == {"n": 7}
    assert "COMPLETED" in captured.err


def test_run_json_prints_event_lines(
    mock_worker: LocalEndpoint, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli(
        "run", "ep", "--base-url", mock_worker.base_url, "--json", "-i", '{"mock_return": "hi"}'
    )

    events = json_lines(capsys.readouterr().out)
    assert code == 0
    assert events[0]["event"] == "submitted"
    assert events[-1]["event"] == "final"
    assert events[-1]["status"] == "COMPLETED"
    assert events[-1]["output"] == "hi"
    assert events[0]["id"] == events[-1]["id"]


def test_run_reads_input_file(
    mock_worker: LocalEndpoint, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    request = tmp_path / "request.json"
    request.write_text('{"input": {"mock_return": "from a file"}}', encoding="utf-8")

    code = cli("run", "ep", "--base-url", mock_worker.base_url, "-i", f"@{request}")

    assert code == 0
    assert capsys.readouterr().out.strip() == "from a file"


def test_run_sync_prints_output(
    mock_worker: LocalEndpoint, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli(
        "run", "ep", "--base-url", mock_worker.base_url, "--sync", "-i", '{"mock_return": 3}'
    )

    assert code == 0
    assert capsys.readouterr().out.strip() == "3"


def test_run_stream_prints_tokens(
    token_stream: LocalEndpoint, capsys: pytest.CaptureFixture[str]
) -> None:
    payload = '{"prompt": "Why stream?", "token_delay": 0.01, "max_tokens": 4}'

    code = cli("run", "ep", "--base-url", token_stream.base_url, "--stream", "-i", payload)

    assert code == 0
    assert capsys.readouterr().out == "You asked: Why stream?\n"


def test_run_failed_job_exits_1(
    mock_worker: LocalEndpoint, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli("run", "ep", "--base-url", mock_worker.base_url, "-i", '{"mock_error": true}')

    captured = capsys.readouterr()
    assert code == 1
    assert captured.out == ""
    assert "Mock error: the input asked this job to fail" in captured.err
    assert captured.err.strip().splitlines()[-1].startswith("rxrunpod: job ")


def test_run_timeout_exits_1_and_cancels(
    mock_worker: LocalEndpoint, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli(
        "run", "ep", "--base-url", mock_worker.base_url, "--json", "--timeout", "0.5",
        "-i", '{"mock_delay": 3}',
    )  # fmt: skip

    captured = capsys.readouterr()
    job_id = str(json_lines(captured.out)[0]["id"])
    assert code == 1
    assert f"job {job_id} did not finish within 0.5 s, so it was cancelled" in captured.err
    with Endpoint("ep", base_url=mock_worker.base_url) as endpoint:
        assert wait_until(lambda: endpoint.job(job_id).state().run().status is JobStatus.CANCELLED)


@pytest.mark.parametrize(
    ("input_text", "message"),
    [
        ("{not json", "is not valid JSON"),
        ("@/nonexistent/request.json", "cannot read the input file /nonexistent/request.json"),
    ],
)
def test_run_bad_input_exits_2(
    input_text: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli("run", "ep", "--base-url", "http://127.0.0.1:9/v2", "-i", input_text)

    captured = capsys.readouterr()
    assert code == 2
    assert message in captured.err
    assert len(captured.err.strip().splitlines()) == 1


def test_missing_argument_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        cli("run", "ep")

    assert caught.value.code == 2
    assert "--input" in capsys.readouterr().err


def test_unreachable_endpoint_exits_3(capsys: pytest.CaptureFixture[str]) -> None:
    base_url = f"http://127.0.0.1:{unused_port()}/v2"

    code = cli("health", "ep", "--base-url", base_url)

    captured = capsys.readouterr()
    assert code == 3
    assert "could not connect" in captured.err
    assert len(captured.err.strip().splitlines()) == 1


def test_wrong_key_exits_3_without_showing_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("RUNPOD_API_KEY", "wrong-key-9876543210")
    with start_local("mock_worker.py", workers=1, api_key=API_KEY) as endpoint:
        code = cli("run", "ep", "--base-url", endpoint.base_url, "-i", '{"mock_return": 1}')

    captured = capsys.readouterr()
    assert code == 3
    assert "401" in captured.err
    assert "wrong-key-9876543210" not in captured.err + captured.out
    assert API_KEY not in captured.err + captured.out


def test_status_reports_completed_job(
    mock_worker: LocalEndpoint, capsys: pytest.CaptureFixture[str]
) -> None:
    with Endpoint("ep", base_url=mock_worker.base_url) as endpoint:
        job = endpoint.run({"mock_return": "done"}).run()
        job.output(timeout=10).run()

    code = cli("status", "ep", job.id, "--base-url", mock_worker.base_url, "--json")

    events = json_lines(capsys.readouterr().out)
    assert code == 0
    assert events == [{"event": "status", **events[0]}]
    assert events[0]["status"] == "COMPLETED"
    assert events[0]["output"] == "done"


def test_status_watch_follows_to_final(
    mock_worker: LocalEndpoint, capsys: pytest.CaptureFixture[str]
) -> None:
    with Endpoint("ep", base_url=mock_worker.base_url) as endpoint:
        job = endpoint.run({"mock_return": "late", "mock_delay": 0.5}).run()

    code = cli("status", "ep", job.id, "--base-url", mock_worker.base_url, "--watch", "--json")

    statuses = [event["status"] for event in json_lines(capsys.readouterr().out)]
    assert code == 0
    assert statuses[-1] == "COMPLETED"
    assert "IN_PROGRESS" in statuses


def test_status_of_unknown_job_exits_1(
    mock_worker: LocalEndpoint, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli("status", "ep", "no-such-job", "--base-url", mock_worker.base_url)

    captured = capsys.readouterr()
    assert code == 1
    assert "no-such-job" in captured.err


def test_status_of_failed_job_exits_1(
    mock_worker: LocalEndpoint, capsys: pytest.CaptureFixture[str]
) -> None:
    with Endpoint("ep", base_url=mock_worker.base_url) as endpoint:
        job = endpoint.run({"mock_error": True}).run()
        assert wait_until(lambda: endpoint.job(job.id).state().run().is_final)

    code = cli("status", "ep", job.id, "--base-url", mock_worker.base_url)

    assert code == 1
    assert "FAILED" in capsys.readouterr().err


def test_cancel_then_retry(mock_worker: LocalEndpoint, capsys: pytest.CaptureFixture[str]) -> None:
    with Endpoint("ep", base_url=mock_worker.base_url) as endpoint:
        job = endpoint.job(endpoint.run({"mock_delay": 2}, cancel_on_dispose=False).run().id)

    cancel_code = cli("cancel", "ep", job.id, "--base-url", mock_worker.base_url, "--json")
    cancelled = json_lines(capsys.readouterr().out)
    retry_code = cli("retry", "ep", job.id, "--base-url", mock_worker.base_url)
    retry_error = capsys.readouterr().err

    assert cancel_code == 0
    assert cancelled[0]["event"] == "cancel"
    assert cancelled[0]["status"] == "CANCELLED"
    # /retry accepts only FAILED and TIMED_OUT jobs, so the server rejects this one with 400.
    assert retry_code == 2
    assert "rxrunpod: " in retry_error


def test_retry_requeues_failed_job(
    mock_worker: LocalEndpoint, capsys: pytest.CaptureFixture[str]
) -> None:
    with Endpoint("ep", base_url=mock_worker.base_url) as endpoint:
        job = endpoint.run({"mock_error": True}).run()
        assert wait_until(lambda: endpoint.job(job.id).state().run().is_final)

    code = cli("retry", "ep", job.id, "--base-url", mock_worker.base_url, "--json")

    event = json_lines(capsys.readouterr().out)[0]
    assert code == 0
    assert event["event"] == "retry"
    assert event["status"] in {"IN_QUEUE", "IN_PROGRESS", "FAILED"}


def test_purge_queue_reports_count(
    mock_worker: LocalEndpoint, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli("purge-queue", "ep", "--base-url", mock_worker.base_url, "--json")

    event = json_lines(capsys.readouterr().out)[0]
    assert code == 0
    assert event["event"] == "purge"
    assert event["removed"] == 0


def test_health_prints_counters(
    mock_worker: LocalEndpoint, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli("health", "ep", "--base-url", mock_worker.base_url)

    lines = capsys.readouterr().out.splitlines()
    assert code == 0
    assert lines[0].startswith("jobs     in queue")
    assert lines[1].startswith("workers  idle")


def test_health_watch_json_stops_after_count(
    mock_worker: LocalEndpoint, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli(
        "health", "ep", "--base-url", mock_worker.base_url, "--json", "--watch", "0.1",
        "--count", "3",
    )  # fmt: skip

    events = json_lines(capsys.readouterr().out)
    assert code == 0
    assert [event["event"] for event in events] == ["health", "health", "health"]
    assert set(events[0]) == {"event", "jobs", "workers"}


def test_console_entry_point_exit_codes(mock_worker: LocalEndpoint) -> None:
    environment = {**os.environ, "RUNPOD_ENDPOINT_BASE_URL": mock_worker.base_url}
    environment.pop("RUNPOD_API_KEY", None)

    def exit_code(*argv: str) -> int:
        command = [sys.executable, "-m", "rxrunpod", *argv]
        return subprocess.run(command, env=environment, capture_output=True, timeout=60).returncode

    assert exit_code("run", "ep", "-i", '{"mock_return": 1}') == 0
    assert exit_code("run", "ep", "-i", '{"mock_error": true}') == 1
    assert exit_code("run", "ep", "-i", "{") == 2
    assert exit_code("health", "ep", "--base-url", f"http://127.0.0.1:{unused_port()}/v2") == 3
