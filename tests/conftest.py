"""Checks for the whole test session."""

from __future__ import annotations

import time

import psutil  # type: ignore[import-untyped]
import pytest


def _worker_processes() -> list[psutil.Process]:
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            if "rxrunpod.local._process_child" in " ".join(child.cmdline()):
                found.append(child)
        except psutil.Error:
            continue
    return found


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the session when a local endpoint's worker process outlived its test."""
    deadline = time.monotonic() + 5
    left = _worker_processes()
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = _worker_processes()
    if left:
        pids = ", ".join(str(process.pid) for process in left)
        print(f"\nworker processes left after the test session: {pids}")
        for process in left:
            process.kill()
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
