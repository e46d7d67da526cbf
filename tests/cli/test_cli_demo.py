"""``rxrunpod demo`` as a user runs it, and the live view it draws with."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import time

from rxrunpod._display import LiveView


def test_demo_exits_0_with_planned_figures() -> None:
    environment = {key: value for key, value in os.environ.items() if not key.startswith("RUNPOD_")}
    started = time.monotonic()

    result = subprocess.run(
        [sys.executable, "-m", "rxrunpod", "demo"],
        capture_output=True,
        text=True,
        timeout=120,
        env=environment,
    )

    elapsed = time.monotonic() - started
    output = result.stdout
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "20 submitted: 18 completed, 1 failed, 1 cancelled, 0 timed out" in output
    latency = re.search(r"latency +p50 ([0-9.]+) s, p95 ([0-9.]+) s", output)
    assert latency is not None
    assert 0 < float(latency.group(1)) <= float(latency.group(2))
    tokens = re.search(r"tokens +(\d+) streamed from one job", output)
    assert tokens is not None
    assert int(tokens.group(1)) > 10
    assert "problem" not in output
    assert result.stderr == ""
    assert elapsed < 60


def test_demo_piped_output_has_one_line_per_change() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "rxrunpod", "demo", "--jobs", "8"],
        capture_output=True,
        text=True,
        timeout=120,
    )

    lines = result.stdout.splitlines()
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "\x1b[" not in result.stdout
    assert any(re.match(r"job +5 +FAILED .* -> retry", line) for line in lines)
    assert any(re.match(r"job +2 +CANCELLED", line) for line in lines)
    assert any(line.startswith("token ") for line in lines)
    assert any(line.startswith("health ") for line in lines)
    assert "8 submitted: 6 completed, 1 failed, 1 cancelled, 0 timed out" in result.stdout


def test_demo_rejects_too_few_jobs() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "rxrunpod", "demo", "--jobs", "3"],
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 2
    assert result.stderr.strip() == "rxrunpod: --jobs must be at least 8, got 3"


def test_live_view_redraws_in_place_on_a_terminal() -> None:
    stream = io.StringIO()
    view = LiveView(stream, interactive=True)

    view.show(["first", "second"])
    view.show(["third"])

    assert stream.getvalue() == (
        "\x1b[2Kfirst\n\x1b[2Ksecond\n" + "\r\x1b[2A\x1b[J" + "\x1b[2Kthird\n"
    )


def test_live_view_prints_above_the_block() -> None:
    stream = io.StringIO()
    view = LiveView(stream, interactive=True)
    view.show(["table"])

    view.print("message")

    assert stream.getvalue().endswith("\r\x1b[1A\x1b[Jmessage\n\x1b[2Ktable\n")


def test_live_view_piped_prints_notes_only() -> None:
    stream = io.StringIO()
    view = LiveView(stream)

    view.show(["table"])
    view.note("job 1 COMPLETED")
    view.print("summary")

    assert view.interactive is False
    assert stream.getvalue() == "job 1 COMPLETED\nsummary\n"
