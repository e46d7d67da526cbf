"""``rxrunpod serve`` as a separate process."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import requests

from rxrunpod.cli import build_parser

pytestmark = pytest.mark.timeout(60)

HANDLER = Path(__file__).parent / "handlers" / "runpod_style.py"
ROOT = Path(__file__).parents[2]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def test_serve_runs_handler_file_until_sigint() -> None:
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "rxrunpod",
        "serve",
        str(HANDLER),
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    environment = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment
    )
    try:
        assert process.stdout is not None
        banner = process.stdout.readline()
        assert f"http://127.0.0.1:{port}/v2" in banner
        answer = requests.post(
            f"http://127.0.0.1:{port}/v2/any/runsync", json={"input": {}}, timeout=10
        ).json()
        assert answer["output"] == ["one", "two", "three"]
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=15) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()
        if process.stderr is not None:
            stderr = process.stderr.read()
            process.stderr.close()
            assert "Traceback" not in stderr
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}/v2/any/health", timeout=2)


def test_serve_parses_faults_and_worker_options() -> None:
    arguments = build_parser().parse_args(
        [
            "serve",
            "h.py",
            "--fault",
            "429@run=0.1",
            "--min-workers",
            "0",
            "--max-workers",
            "3",
            "--log-level",
            "DEBUG",
        ]
    )
    assert arguments.fault == ["429@run=0.1"]
    assert arguments.min_workers == 0
    assert arguments.max_workers == 3
    assert arguments.log_level == "DEBUG"


def test_serve_rejects_bad_fault_with_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    from rxrunpod.cli import main

    assert main(["serve", str(HANDLER), "--fault", "418=0.5"]) == 2
    assert "unknown fault kind '418'" in capsys.readouterr().err


# -- the API key of rxrunpod serve ----------------------------------------------

KEY = "serve-test-key-5d1f"


def serve_until_first_request(
    extra: list[str], environment: dict[str, str]
) -> tuple[list[int], str]:
    """Start ``rxrunpod serve``, send /health without and with ``KEY``, then stop it.

    Returns the two status codes and everything the server wrote to stderr.
    """
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "rxrunpod",
            "serve",
            str(HANDLER),
            "--port",
            "0",
            "--workers",
            "1",
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT), **environment},
    )
    try:
        assert process.stdout is not None
        banner = process.stdout.readline()
        base_url = banner.split(" at ", 1)[1].split("/<endpoint_id>", 1)[0]
        codes = [
            requests.get(f"{base_url}/any/health", headers=headers, timeout=10).status_code
            for headers in ({}, {"Authorization": f"Bearer {KEY}"})
        ]
    finally:
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=30)
    return codes, stderr


def test_serve_reads_key_from_environment() -> None:
    environment = {"RXRUNPOD_LOCAL_API_KEY": KEY}
    codes, stderr = serve_until_first_request([], environment)

    assert codes == [401, 200]
    assert "warning" not in stderr
    assert KEY not in stderr


def test_serve_warns_about_key_on_command_line() -> None:
    codes, stderr = serve_until_first_request(["--api-key", KEY], {})

    assert codes == [401, 200]
    assert "--api-key on the command line is visible" in stderr
    assert "RXRUNPOD_LOCAL_API_KEY" in stderr
    assert KEY not in stderr


def test_serve_command_line_key_beats_environment() -> None:
    environment = {"RXRUNPOD_LOCAL_API_KEY": "other-key"}
    codes, _ = serve_until_first_request(["--api-key", KEY], environment)

    assert codes == [401, 200]


def test_serve_help_names_key_variable(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--help"])

    assert "RXRUNPOD_LOCAL_API_KEY" in capsys.readouterr().out


def test_serve_passes_stop_grace_on() -> None:
    from rxrunpod.local._command import _endpoint_options

    given = build_parser().parse_args(["serve", "h.py", "--stop-grace", "0.5"])
    default = build_parser().parse_args(["serve", "h.py"])

    assert _endpoint_options(given, [])["stop_grace"] == 0.5
    assert _endpoint_options(default, [])["stop_grace"] == 2.0


def test_serve_rejects_negative_stop_grace(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "h.py", "--stop-grace", "-1"])

    assert "expected 0 or more seconds, got -1" in capsys.readouterr().err


@pytest.mark.parametrize(
    "option",
    [
        "--cold-start",
        "--idle-timeout",
        "--retention",
        "--sync-retention",
        "--webhook-delay",
        "--stop-grace",
        "--retry-after",
        "--slow-delay",
    ],
)
@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "-0.5"])
def test_serve_rejects_bad_seconds(
    capsys: pytest.CaptureFixture[str], option: str, value: str
) -> None:
    from rxrunpod.cli import main

    with pytest.raises(SystemExit) as raised:
        main(["serve", str(HANDLER), f"{option}={value}"])

    assert raised.value.code == 2
    error = capsys.readouterr().err
    assert f"argument {option}:" in error
    assert f"got {value}" in error


@pytest.mark.parametrize(
    "keyword",
    ["cold_start", "idle_timeout", "retention", "sync_retention", "webhook_delay", "stop_grace"],
)
@pytest.mark.parametrize("value", [float("nan"), float("inf"), -1.0])
def test_endpoint_rejects_bad_seconds(keyword: str, value: float) -> None:
    from rxrunpod.local import LocalEndpoint

    options: dict[str, Any] = {keyword: value}
    with pytest.raises(ValueError, match=f"{keyword} must be a finite number") as raised:
        LocalEndpoint(str(HANDLER), **options)

    assert repr(value) in str(raised.value)


@pytest.mark.parametrize("keyword", ["retry_after", "delay"])
def test_fault_rule_rejects_infinite_seconds(keyword: str) -> None:
    from rxrunpod.local import FaultRule

    options: dict[str, Any] = {keyword: float("inf")}
    with pytest.raises(ValueError, match=f"fault {keyword} must be a finite number"):
        FaultRule("429", **options)
