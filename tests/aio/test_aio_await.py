"""Awaiting and iterating the observables of Endpoint and Job inside a running loop."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

import rxrunpod as rr
from rxrunpod.aio import AsyncioEndpoint, iterate
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


JOBS_TRACKED = 500

# Jobs start 1 ms apart, so the probe measures the loop while the jobs are
# tracked, not the single loop iteration in which 500 coroutines would start.
START_SPACING = 0.001


def track_jobs_while_probing(
    make_tracker: Any,
) -> tuple[list[Any], LagProbe, float]:
    """Run 500 tracked jobs against two endpoints in child processes; measure the loop's lag."""

    async def main(work_url: str, token_url: str) -> tuple[list[Any], LagProbe]:
        probe = LagProbe()
        stop = asyncio.Event()
        probing = asyncio.ensure_future(probe.run(stop))
        await asyncio.sleep(0.05)
        try:
            async with make_tracker(work_url, token_url) as track:
                results = await asyncio.gather(*(track(index) for index in range(JOBS_TRACKED)))
        finally:
            stop.set()
            await probing
        return results, probe

    # The servers run in child processes so that only the client's own threads
    # compete with the loop for the GIL.
    with (
        serve_in_process("tests.aio.aio_handlers:work", workers=64) as work_url,
        serve_in_process("tests.aio.aio_handlers:tokens", workers=64) as token_url,
    ):
        started = time.monotonic()
        results, probe = asyncio.run(main(work_url, token_url))
        elapsed = time.monotonic() - started
    return results, probe, elapsed


def check_tracked_results(results: list[Any], probe: LagProbe) -> None:
    assert results[1] == {"echo": 1}
    assert results[0] == ["token-0", "token-1"]
    assert results.count({"echo": 499}) == 1
    assert probe.wakeups > 10


class _ObservableTracker:
    """Tracks jobs by awaiting ``rr.Endpoint`` observables, whose HTTP calls run on I/O threads."""

    def __init__(self, work_url: str, token_url: str) -> None:
        poll = PollPolicy(initial_interval=0.05, max_interval=0.5)
        self.work_ep = rr.Endpoint("local", base_url=work_url, poll=poll)
        self.token_ep = rr.Endpoint("local", base_url=token_url, poll=poll)

    async def __aenter__(self) -> Any:
        return self.track

    async def __aexit__(self, *exc_info: object) -> None:
        self.work_ep.close()
        self.token_ep.close()

    async def track(self, index: int) -> Any:
        await asyncio.sleep(index * START_SPACING)
        if index % 2:
            job = await self.work_ep.run({"value": index, "sleep": 0.2})
            return await job.output(timeout=60)
        job = await self.token_ep.run({"count": 2, "delay": 0.1})
        return [chunk async for chunk in iterate(job.stream())]


class _AsyncioTracker:
    """Tracks jobs with ``rr.aio.AsyncioEndpoint``, whose HTTP calls run on the loop itself."""

    def __init__(self, work_url: str, token_url: str) -> None:
        self.urls = (work_url, token_url)

    async def __aenter__(self) -> Any:
        self.session = aiohttp.ClientSession()
        self.work_ep = AsyncioEndpoint("local", self.session, base_url=self.urls[0])
        self.token_ep = AsyncioEndpoint("local", self.session, base_url=self.urls[1])
        return self.track

    async def __aexit__(self, *exc_info: object) -> None:
        await self.session.close()

    async def track(self, index: int) -> Any:
        await asyncio.sleep(index * START_SPACING)
        if index % 2:
            job = await self.work_ep.run({"value": index, "sleep": 0.2})
            return await job.output(timeout=60)
        job = await self.token_ep.run({"count": 2, "delay": 0.1})
        return [chunk async for chunk in job.stream()]


MAX_LAG = 0.050

# The machine is shared, so another process can stall the loop's thread once.
# A run that stays under MAX_LAG shows the library does not block the loop,
# so up to three runs are made and the first one under the bound passes.
ATTEMPTS = 3


def best_lag_run(make_tracker: Any, label: str) -> LagProbe:
    """Measure up to ATTEMPTS runs; return the first probe under MAX_LAG, else the best one."""
    best: LagProbe | None = None
    for _ in range(ATTEMPTS):
        results, probe, elapsed = track_jobs_while_probing(make_tracker)
        print(
            f"{label}: {JOBS_TRACKED} jobs in {elapsed:.2f} s, "
            f"worst loop lag {probe.worst * 1000:.1f} ms"
        )
        check_tracked_results(results, probe)
        if best is None or probe.worst < best.worst:
            best = probe
        if probe.worst < MAX_LAG:
            break
    assert best is not None
    return best


def test_loop_stays_responsive_tracking_500_jobs() -> None:
    """Awaiting rr.Endpoint runs no HTTP on the loop: worst loop lag under 50 ms for 500 jobs."""
    probe = best_lag_run(_ObservableTracker, "awaited Endpoint")

    assert probe.worst < MAX_LAG


def test_loop_responsive_with_asyncio_endpoint() -> None:
    """AsyncioEndpoint runs its HTTP on the loop in short callbacks: lag under 50 ms too."""
    probe = best_lag_run(_AsyncioTracker, "AsyncioEndpoint")

    assert probe.worst < MAX_LAG
