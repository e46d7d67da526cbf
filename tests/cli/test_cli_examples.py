"""The example pipeline scripts run as a user runs them, against local endpoints."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def run_example(*argv: str) -> subprocess.CompletedProcess[str]:
    environment = {key: value for key, value in os.environ.items() if not key.startswith("RUNPOD_")}
    return subprocess.run(
        [sys.executable, str(EXAMPLES / argv[0]), *argv[1:]],
        capture_output=True,
        text=True,
        timeout=90,
        env=environment,
    )


def test_fan_out_with_retries_reports_failures_as_states() -> None:
    result = run_example("fan_out_with_retries.py")

    assert result.returncode == 0, result.stderr[-2000:]
    assert "40 jobs: 34 completed, 6 failed, 0 cancelled, 0 timed out" in result.stdout
    assert result.stdout.count("FAILED") == 6
    assert result.stderr == ""


def test_health_alerts_sees_the_queue_grow() -> None:
    result = run_example("health_alerts.py")

    lines = result.stdout.splitlines()
    assert result.returncode == 0, result.stderr[-2000:]
    assert any(line.endswith("ALERT queue growing") for line in lines)
    assert lines[-1].endswith(": ok")


def test_stream_to_file_writes_every_token(tmp_path: Path) -> None:
    target = tmp_path / "reply.txt"

    result = run_example("stream_to_file.py", str(target))

    assert result.returncode == 0, result.stderr[-2000:]
    written = re.search(r"wrote (\d+) tokens", result.stdout)
    assert written is not None
    text = target.read_text(encoding="utf-8")
    assert text.startswith("You asked: Why stream tokens? ")
    assert len(text.split(" ")) == int(written.group(1))
    assert text.endswith("as soon as the worker yields it.")
