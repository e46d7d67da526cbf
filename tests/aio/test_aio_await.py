"""Awaiting and iterating the observables of Endpoint and Job inside a running loop."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

import rxrunpod as rr
from rxrunpod.aio import iterate
from rxrunpod.local import serve
from rxrunpod.polling import PollPolicy
from tests.aio.aio_handlers import tokens, work
from tests.aio.conftest import Runner
from tests.aio.server_process import serve_in_process

pytestmark = pytest.mark.timeout(90)

FAST_POLL = PollPolicy(initial_interval=0.02, max_interval=0.2)


@pytest.fixture(scope="module")
def work_ep() -> Iterator[rr.Endpoint]:
    with (
        serve(work, workers=4) as base_url,
        rr.Endpoint("local", base_url=base_url, poll=FAST_POLL) as ep,
    ):
        yield ep


@pytest.fixture(scope="module")
def token_ep() -> Iterator[rr.Endpoint]:
    with (
        serve(tokens, workers=4) as base_url,
        rr.Endpoint("local", base_url=base_url, poll=FAST_POLL) as ep,
    ):
        yield ep


async def wait_for_status(job: rr.Job, expected: rr.JobStatus, within: float = 5.0) -> rr.JobStatus:
    deadline = time.monotonic() + within
    status = await job.status()
    while status is not expected and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        status = await job.status()
    return status


def test_await_run_and_output(runner: Runner, work_ep: rr.Endpoint) -> None:
    async def main() -> tuple[rr.Job, Any, rr.Health]:
        job = await work_ep.run({"value": "seed", "sleep": 0.05})
        output = await job.output(timeout=10)
        health = await work_ep.health()
        return job, output, health

    job, output, health = runner(main)

    assert isinstance(job, rr.Job)
    assert output == {"echo": "seed"}
    assert isinstance(health, rr.Health)


def test_iterate_job_stream(runner: Runner, token_ep: rr.Endpoint) -> None:
    async def main() -> tuple[list[str], set[int], int]:
        job = await token_ep.run({"count": 4, "delay": 0.02})
        chunks = []
        threads = set()
        async for chunk in iterate(job.stream()):
            chunks.append(chunk)
            threads.add(threading.get_ident())
        return chunks, threads, threading.get_ident()

    chunks, threads, loop_thread = runner(main)

    assert chunks == ["token-0", "token-1", "token-2", "token-3"]
    assert threads == {loop_thread}


def test_await_failed_output_raises_job_failed(runner: Runner, work_ep: rr.Endpoint) -> None:
    async def main() -> rr.JobFailed:
        job = await work_ep.run({"fail": "no GPU today"})
        with pytest.raises(rr.JobFailed) as caught:
            await job.output(timeout=10)
        return caught.value

    error = runner(main)

    assert error.error_message is not None
    assert "no GPU today" in error.error_message
    assert error.state.status is rr.JobStatus.FAILED


def test_await_unknown_job_raises_job_not_found(runner: Runner, work_ep: rr.Endpoint) -> None:
    async def main() -> rr.JobNotFound:
        with pytest.raises(rr.JobNotFound) as caught:
            await work_ep.job("no-such-job").status()
        return caught.value

    assert runner(main).status_code == 404


def test_cancelled_await_cancels_job_on_server(runner: Runner, work_ep: rr.Endpoint) -> None:
    async def main() -> rr.JobStatus:
        job = await work_ep.run({"sleep": 5})
        task = asyncio.ensure_future(job.output(timeout=30))
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return await wait_for_status(work_ep.job(job.id), rr.JobStatus.CANCELLED)

    assert runner(main) is rr.JobStatus.CANCELLED


def test_async_for_early_exit_cancels_job_on_server(runner: Runner, token_ep: rr.Endpoint) -> None:
    async def main() -> tuple[list[str], rr.JobStatus]:
        job = await token_ep.run({"count": 200, "delay": 0.02})
        received = []
        async for chunk in iterate(job.stream()):
            received.append(chunk)
            if len(received) == 2:
                break
        return received, await wait_for_status(token_ep.job(job.id), rr.JobStatus.CANCELLED)

    received, status = runner(main)

    assert received == ["token-0", "token-1"]
    assert status is rr.JobStatus.CANCELLED


class LagProbe:
    """Sleeps ``period`` seconds in a loop and records how late each wake-up is."""

    def __init__(self, period: float = 0.005) -> None:
        self.period = period
        self.worst = 0.0
        self.wakeups = 0

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            started = time.perf_counter()
            await asyncio.sleep(self.period)
            self.worst = max(self.worst, time.perf_counter() - started - self.period)
            self.wakeups += 1


# TODO(GIL hand-offs to the I/O pool stay under 50 ms on a 2-core machine): pool
# threads now start off the loop and dispose no longer waits on a delivering
# thread, but the worst lag still measured 49-149 ms over 5 runs (was 200-335 ms).
# Two costs remain, both measured with a per-callback timer on the loop. First,
# gather() runs the first step of all 500 tasks in one loop iteration, about
# 30 us of loop CPU per run() subscription (15-25 ms in all), stretched by
# handing the GIL to pool threads that start their requests meanwhile. Second,
# single callbacks that use 0.1 ms of loop CPU take 30-90 ms of wall time while
# the loop thread waits to get the GIL back from up to 12 busy pool threads.
@pytest.mark.xfail(strict=False, reason="GIL hand-offs to 12 pool threads exceed 50 ms at times")
def test_loop_stays_responsive_tracking_500_jobs() -> None:
    async def track(work_ep: rr.Endpoint, token_ep: rr.Endpoint, index: int) -> Any:
        if index % 2:
            job = await work_ep.run({"value": index})
            return await job.output(timeout=60)
        job = await token_ep.run({"count": 2})
        return [chunk async for chunk in iterate(job.stream())]

    async def main(work_ep: rr.Endpoint, token_ep: rr.Endpoint) -> tuple[list[Any], LagProbe]:
        probe = LagProbe()
        stop = asyncio.Event()
        probing = asyncio.ensure_future(probe.run(stop))
        await asyncio.sleep(0.05)
        try:
            results = await asyncio.gather(
                *(track(work_ep, token_ep, index) for index in range(500))
            )
        finally:
            stop.set()
            await probing
        return results, probe

    # The servers run in child processes so that only the client's own threads
    # compete with the loop for the GIL.
    poll = PollPolicy(initial_interval=0.05, max_interval=0.5)
    with (
        serve_in_process("tests.aio.aio_handlers:work", workers=8) as work_url,
        serve_in_process("tests.aio.aio_handlers:tokens", workers=8) as token_url,
        rr.Endpoint("local", base_url=work_url, poll=poll) as work_ep,
        rr.Endpoint("local", base_url=token_url, poll=poll) as token_ep,
    ):
        started = time.monotonic()
        results, probe = asyncio.run(main(work_ep, token_ep))
        elapsed = time.monotonic() - started

    print(f"500 jobs in {elapsed:.2f} s, worst loop lag {probe.worst * 1000:.1f} ms")
    assert results[1] == {"echo": 1}
    assert results[0] == ["token-0", "token-1"]
    assert results.count({"echo": 499}) == 1
    assert probe.wakeups > 10
    assert probe.worst < 0.050
