"""Size of the I/O pool, which thread starts its threads, and their retirement."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from reactivex import abc

import rxrunpod.scheduling as scheduling
from rxrunpod import Endpoint
from rxrunpod.http import DEFAULT_POOL_SIZE, HttpClient
from rxrunpod.local import LocalEndpoint
from rxrunpod.polling import PollPolicy
from rxrunpod.scheduling import IoScheduler, TimerScheduler
from tests.support.scripted_server import wait_until


class RecordingThread(threading.Thread):
    """A ``threading.Thread`` that records the name of the thread calling ``start``."""

    starters: list[str] = []

    def start(self) -> None:
        RecordingThread.starters.append(threading.current_thread().name)
        super().start()


@pytest.fixture
def starters(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    RecordingThread.starters = []
    monkeypatch.setattr("rxrunpod.scheduling.threading.Thread", RecordingThread)
    yield RecordingThread.starters


@pytest.fixture
def timer() -> TimerScheduler:
    return TimerScheduler(name="pool-test-timer", idle_timeout=0.2)


def adapter_pool_size(http: HttpClient) -> int:
    adapter: Any = http.session.get_adapter("http://127.0.0.1/")
    return int(adapter._pool_maxsize)


def test_default_pool_has_twelve_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RXRUNPOD_IO_THREADS", raising=False)

    assert scheduling.DEFAULT_IO_WORKERS == 12
    assert DEFAULT_POOL_SIZE == 12
    assert scheduling.io_threads_from_environment() == 12


def test_environment_variable_sets_pool_size(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RXRUNPOD_IO_THREADS", " 5 ")

    assert scheduling.io_threads_from_environment() == 5


@pytest.mark.parametrize("text", ["0", "-3", "many", "2.5"])
def test_invalid_environment_pool_size_rejected(monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    monkeypatch.setenv("RXRUNPOD_IO_THREADS", text)

    with pytest.raises(ValueError, match="RXRUNPOD_IO_THREADS must be a positive whole number"):
        scheduling.io_threads_from_environment()


def test_endpoint_io_threads_builds_own_pool() -> None:
    with Endpoint("ep", base_url="http://127.0.0.1:9/v2", io_threads=3) as endpoint:
        pool = endpoint.io_scheduler

        assert isinstance(pool, IoScheduler)
        assert pool is not scheduling.default_io_scheduler()
        assert pool.max_workers == 3
        assert adapter_pool_size(endpoint.http) == 3


def test_default_endpoint_connection_pool_matches_io_pool() -> None:
    with Endpoint("ep", base_url="http://127.0.0.1:9/v2") as endpoint:
        pool = endpoint.io_scheduler

        assert isinstance(pool, IoScheduler)
        assert adapter_pool_size(endpoint.http) == pool.max_workers


@pytest.mark.parametrize(
    ("io_threads", "error"), [(0, ValueError), ("4", TypeError), (True, TypeError)]
)
def test_invalid_io_threads_rejected(io_threads: Any, error: type[Exception]) -> None:
    with pytest.raises(error, match="io_threads"):
        Endpoint("ep", base_url="http://127.0.0.1:9/v2", io_threads=io_threads)


def test_caller_starts_first_pool_thread_only(starters: list[str], timer: TimerScheduler) -> None:
    pool = IoScheduler(6, timer=timer, idle_timeout=0.2, name="pool-test-burst")
    gate = threading.Event()
    running: set[str] = set()
    lock = threading.Lock()

    def work(_scheduler: abc.SchedulerBase, _state: Any) -> None:
        with lock:
            running.add(threading.current_thread().name)
        gate.wait(5)

    for _ in range(200):
        pool.schedule(work)

    assert wait_until(lambda: len(running) == 6)
    gate.set()
    caller = threading.current_thread().name
    assert starters.count(caller) <= 2  # the first pool thread, and the timer thread
    assert sum(name.startswith("pool-test-burst") for name in starters) >= 4
    assert wait_until(lambda: pool.threads == 0, timeout=5)


def test_busy_pool_gets_new_thread_from_timer(starters: list[str], timer: TimerScheduler) -> None:
    pool = IoScheduler(2, timer=timer, idle_timeout=0.2, name="pool-test-busy")
    gate = threading.Event()
    ran = threading.Event()

    def block(_scheduler: abc.SchedulerBase, _state: Any) -> None:
        gate.wait(5)

    pool.schedule(block)
    assert wait_until(lambda: pool.threads == 1)
    time.sleep(0.05)

    pool.schedule(lambda _s, _t: ran.set())

    assert ran.wait(3)
    gate.set()
    assert starters[-1] == "pool-test-timer"
    assert wait_until(lambda: pool.threads == 0, timeout=5)


def sleepy(job: dict[str, Any]) -> str:
    time.sleep(float(job["input"]["sleep"]))
    return "done"


def test_pool_threads_retire_after_tracked_jobs_disposed() -> None:
    with (
        LocalEndpoint(sleepy, workers=2, stop_grace=0.2) as local,
        Endpoint(
            "ep", base_url=local.base_url, io_threads=12, poll=PollPolicy(initial_interval=0.05)
        ) as endpoint,
    ):
        pool = endpoint.io_scheduler
        assert isinstance(pool, IoScheduler)
        jobs = [endpoint.run({"sleep": 20}).run() for _ in range(200)]
        seen: list[Any] = []
        subscriptions = [job.updates(cancel_on_dispose=True).subscribe(seen.append) for job in jobs]
        assert wait_until(lambda: len(seen) >= 200, timeout=20)
        # How far the pool grows depends on the machine's load; it never passes 12.
        assert 1 < pool.threads <= 12

        for subscription in subscriptions:
            subscription.dispose()

        # 200 /cancel requests go out first; then 2 s idle retire every thread.
        assert wait_until(lambda: local.stats.requests.get("cancel", 0) == 200, timeout=20)
        assert wait_until(lambda: pool.threads == 0, timeout=scheduling.DEFAULT_IDLE_TIMEOUT + 8)
