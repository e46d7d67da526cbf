"""Blocking ``.run()`` on rxrunpod's own I/O and timer threads is rejected at once."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import reactivex

from rxrunpod import Endpoint, Job
from rxrunpod.local import serve
from rxrunpod.polling import PollPolicy
from rxrunpod.scheduling import IoScheduler, TimerScheduler, on_rxrunpod_thread

FAST = PollPolicy(initial_interval=0.02, max_interval=0.2)


def handler(job: dict[str, Any]) -> Any:
    time.sleep(job["input"].get("sleep", 0))
    return job["input"].get("text")


@pytest.fixture(scope="module")
def local() -> Iterator[Endpoint]:
    with (
        serve(handler, workers=4) as base_url,
        Endpoint("local", base_url=base_url, poll=FAST, io_threads=2) as ep,
    ):
        yield ep


def block_in(callback: Any) -> BaseException | None:
    """Run ``callback`` on an I/O pool thread; return what it raised, or None."""
    raised: list[BaseException | None] = []
    done = threading.Event()

    def action(_scheduler: Any, _state: Any = None) -> None:
        try:
            callback()
            raised.append(None)
        except BaseException as error:
            raised.append(error)
        done.set()

    IoScheduler(1, timer=TimerScheduler(idle_timeout=0.2), idle_timeout=0.2).schedule(action)
    assert done.wait(10), "the pool action never ran"
    return raised[0]


def test_run_inside_on_next_raises_runtime_error(local: Endpoint) -> None:
    failures: list[BaseException] = []
    seen = threading.Event()

    def on_job(job: Job) -> None:
        try:
            job.output(timeout=5).run()
        except RuntimeError as error:
            failures.append(error)
        seen.set()

    local.run({"text": "x", "sleep": 0.1}).subscribe(on_job)

    assert seen.wait(10)
    assert len(failures) == 1
    message = str(failures[0])
    assert "I/O thread would deadlock" in message
    assert "flat_map" in message


def test_run_on_timer_thread_raises_runtime_error() -> None:
    timer = TimerScheduler(name="guard-test-timer", idle_timeout=0.2)
    raised: list[BaseException] = []
    done = threading.Event()

    def action(_scheduler: Any, _state: Any = None) -> None:
        try:
            Endpoint("e", base_url="http://127.0.0.1:9").health().run()
        except BaseException as error:
            raised.append(error)
        done.set()

    timer.schedule(action)

    assert done.wait(10)
    assert isinstance(raised[0], RuntimeError)
    assert "timer thread" in str(raised[0])


def test_pool_threads_are_marked() -> None:
    assert not on_rxrunpod_thread()
    assert block_in(lambda: None if on_rxrunpod_thread() else 1 / 0) is None


def test_run_on_plain_thread_still_blocks_and_returns(local: Endpoint) -> None:
    outputs: list[Any] = []

    def worker() -> None:
        job = local.run({"text": "plain"}).run()
        outputs.append(job.output(timeout=10).run())

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join(15)

    assert outputs == ["plain"]


def test_plain_reactivex_run_is_untouched() -> None:
    assert block_in(lambda: reactivex.of(1, 2).run()) is None
