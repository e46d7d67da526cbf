"""The shared I/O pool and timer thread."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import pytest
from reactivex import abc

from rxrunpod.scheduling import IoScheduler, TimerScheduler
from tests.support.scripted_server import wait_until


def names(prefix: str) -> list[str]:
    return [thread.name for thread in threading.enumerate() if thread.name.startswith(prefix)]


@pytest.fixture
def timer() -> TimerScheduler:
    return TimerScheduler(name="test-timer", idle_timeout=0.1)


def test_pool_runs_work_after_its_thread_retired(timer: TimerScheduler) -> None:
    pool = IoScheduler(1, timer=timer, idle_timeout=0.1, name="test-io-retire")
    gate = threading.Event()
    ran: list[str] = []

    def wait_for_gate(_scheduler: abc.SchedulerBase, _state: Any) -> None:
        gate.wait(2)

    pool.schedule(wait_for_gate)
    pool.schedule(lambda _s, _t: ran.append("queued while busy"))
    gate.set()
    assert wait_until(lambda: ran == ["queued while busy"])
    assert wait_until(lambda: pool.threads == 0)
    pool.schedule(lambda _s, _t: ran.append("after retiring"))

    assert wait_until(lambda: ran == ["queued while busy", "after retiring"], timeout=2)


def test_pool_never_exceeds_max_workers(timer: TimerScheduler) -> None:
    pool = IoScheduler(4, timer=timer, idle_timeout=0.2, name="test-io-max")
    running = 0
    most = 0
    lock = threading.Lock()
    done: list[int] = []

    def work(_scheduler: abc.SchedulerBase, index: Any) -> None:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.01)
        with lock:
            running -= 1
            done.append(index)

    for index in range(100):
        pool.schedule(work, index)

    assert wait_until(lambda: len(done) == 100, timeout=10)
    assert most == 4
    assert len(names("test-io-max")) <= 4


def test_pool_threads_exit_when_idle(timer: TimerScheduler) -> None:
    pool = IoScheduler(8, timer=timer, idle_timeout=0.1, name="test-io-idle")
    for _ in range(8):
        pool.schedule(lambda _s, _t: time.sleep(0.05))
    assert wait_until(lambda: len(names("test-io-idle")) > 1)

    assert wait_until(lambda: names("test-io-idle") == [], timeout=3)
    assert wait_until(lambda: names("test-timer") == [], timeout=3)


def test_timer_fires_in_due_order(timer: TimerScheduler) -> None:
    # The action's state parameter is typed Optional, so the list accepts None too.
    fired: list[float | None] = []
    for delay in (0.15, 0.05, 0.1):
        timer.schedule_relative(delay, lambda _s, due: fired.append(due), delay)

    assert wait_until(lambda: len(fired) == 3)
    assert fired == [0.05, 0.1, 0.15]


def test_cancelled_timer_never_fires_and_leaves_queue(timer: TimerScheduler) -> None:
    fired: list[int] = []
    handles = [timer.schedule_relative(30.0, lambda _s, _t: fired.append(1)) for _ in range(200)]
    assert timer.pending == 200

    for handle in handles:
        handle.dispose()

    assert timer.pending == 0
    assert wait_until(lambda: names("test-timer") == [], timeout=3)
    assert fired == []


def test_delayed_io_waits_on_timer_not_on_pool(timer: TimerScheduler) -> None:
    pool = IoScheduler(2, timer=timer, idle_timeout=0.1, name="test-io-delay")
    fired = threading.Event()

    pool.schedule_relative(0.2, lambda _s, _t: fired.set())
    time.sleep(0.05)

    assert names("test-io-delay") == []
    assert fired.wait(2)
    assert threading.current_thread().name not in names("test-io-delay")


def test_disposed_delayed_io_never_runs(timer: TimerScheduler) -> None:
    pool = IoScheduler(2, timer=timer, idle_timeout=0.1, name="test-io-cancel")
    fired: list[int] = []

    pool.schedule_relative(0.1, lambda _s, _t: fired.append(1)).dispose()
    time.sleep(0.3)

    assert fired == []


def test_raising_action_is_logged_and_thread_survives(
    timer: TimerScheduler, caplog: pytest.LogCaptureFixture
) -> None:
    fired: list[int] = []

    def explode(_scheduler: abc.SchedulerBase, _state: Any) -> None:
        raise RuntimeError("action bug")

    with caplog.at_level(logging.ERROR, logger="rxrunpod.scheduling"):
        timer.schedule_relative(0.01, explode)
        timer.schedule_relative(0.05, lambda _s, _t: fired.append(1))
        assert wait_until(lambda: fired == [1])

    assert any("raised" in record.getMessage() for record in caplog.records)
