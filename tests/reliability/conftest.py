"""Fixtures of the reliability tests: private schedulers whose threads can be counted."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from rxrunpod.scheduling import IoScheduler, TimerScheduler

IO_THREAD_PREFIX = "reliability-io"
TIMER_THREAD_NAME = "reliability-timer"
IDLE_TIMEOUT = 0.3


def client_threads() -> list[str]:
    """Names of the live threads of the ``io`` fixture's scheduler."""
    return [
        thread.name
        for thread in threading.enumerate()
        if thread.name.startswith((IO_THREAD_PREFIX, TIMER_THREAD_NAME))
    ]


def wait_for_threads(limit: int, timeout: float = 10.0) -> int:
    """Wait until at most ``limit`` threads are alive; return the last count."""
    deadline = time.monotonic() + timeout
    count = threading.active_count()
    while count > limit and time.monotonic() < deadline:
        time.sleep(0.05)
        count = threading.active_count()
    return count


@pytest.fixture
def io() -> Iterator[IoScheduler]:
    """An I/O scheduler of 32 threads whose threads exit 0.3 s after their last work."""
    timer = TimerScheduler(name=TIMER_THREAD_NAME, idle_timeout=IDLE_TIMEOUT)
    yield IoScheduler(32, timer=timer, idle_timeout=IDLE_TIMEOUT, name=IO_THREAD_PREFIX)
