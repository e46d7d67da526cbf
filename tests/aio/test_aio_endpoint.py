"""AsyncioEndpoint and AsyncioJob against the local endpoint over HTTP."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

import rxrunpod as rr
from rxrunpod.aio import AsyncioEndpoint, AsyncioJob
from rxrunpod.http import RetryPolicy
from rxrunpod.local import serve
from rxrunpod.polling import PollPolicy
from tests.aio.aio_handlers import tokens, work
from tests.aio.conftest import Runner

pytestmark = pytest.mark.timeout(60)

FAST_POLL = PollPolicy(initial_interval=0.02, max_interval=0.2)
SECRET = "sk-test-secret-key-value"


@pytest.fixture(scope="module")
def work_url() -> Iterator[str]:
    with serve(work, workers=4) as base_url:
        yield base_url


@pytest.fixture(scope="module")
def token_url() -> Iterator[str]:
    with serve(tokens, workers=4) as base_url:
        yield base_url


@pytest.fixture(scope="module")
def keyed_url() -> Iterator[str]:
    with serve(work, workers=1, api_key=SECRET) as base_url:
        yield base_url


def endpoint(session: aiohttp.ClientSession, base_url: str, **options: Any) -> AsyncioEndpoint:
    options.setdefault("poll", FAST_POLL)
    return AsyncioEndpoint("local", session, base_url=base_url, **options)


async def wait_for_status(
    job: AsyncioJob, expected: rr.JobStatus, within: float = 5.0
) -> rr.JobStatus:
    deadline = time.monotonic() + within
    status = await job.status()
    while status is not expected and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        status = await job.status()
    return status


def test_seed_flow_run_status_output(runner: Runner, work_url: str) -> None:
    async def main() -> tuple[Any, Any, AsyncioJob]:
        async with aiohttp.ClientSession() as session:
            ep = endpoint(session, work_url)
            job = await ep.run({"value": 7, "sleep": 0.05})
            status = await job.status()
            output = await job.output(timeout=10)
            return status, output, job

    status, output, job = runner(main)

    assert status in {rr.JobStatus.IN_QUEUE, rr.JobStatus.IN_PROGRESS, rr.JobStatus.COMPLETED}
    assert output == {"echo": 7}
    assert job.last_state is not None
    assert job.last_state.status == "COMPLETED"


def test_stream_yields_every_token(runner: Runner, token_url: str) -> None:
    async def main() -> list[str]:
        async with aiohttp.ClientSession() as session:
            job = await endpoint(session, token_url).run({"count": 5, "delay": 0.02})
            return [chunk async for chunk in job.stream()]

    assert runner(main) == [f"token-{index}" for index in range(5)]


def test_stream_raises_job_failed_after_items(token_url: str) -> None:
    async def main() -> tuple[list[str], rr.JobFailed]:
        received = []
        async with aiohttp.ClientSession() as session:
            job = await endpoint(session, token_url).run({"count": 2, "fail": "tokenizer broke"})
            with pytest.raises(rr.JobFailed) as caught:
                async for chunk in job.stream():
                    received.append(chunk)
        return received, caught.value

    received, error = asyncio.run(main())

    assert received == ["token-0", "token-1"]
    assert error.error_message is not None
    assert "tokenizer broke" in error.error_message


def test_output_of_failed_job_raises_job_failed(runner: Runner, work_url: str) -> None:
    async def main() -> rr.JobFailed:
        async with aiohttp.ClientSession() as session:
            job = await endpoint(session, work_url).run({"fail": "bad prompt"})
            with pytest.raises(rr.JobFailed) as caught:
                await job.output(timeout=10)
            return caught.value

    error = runner(main)

    assert error.state.status is rr.JobStatus.FAILED
    assert error.error_message is not None
    assert "bad prompt" in error.error_message
    assert error.job_id == error.state.id


def test_output_deadline_raises_wait_timeout(work_url: str) -> None:
    async def main() -> tuple[rr.WaitTimeout, str]:
        async with aiohttp.ClientSession() as session:
            job = await endpoint(session, work_url).run({"sleep": 2})
            with pytest.raises(rr.WaitTimeout) as caught:
                await job.output(timeout=0.2)
            await job.cancel()
            return caught.value, job.id

    error, job_id = asyncio.run(main())

    assert isinstance(error, TimeoutError)
    assert error.job_id == job_id
    assert error.timeout == 0.2


def test_unknown_job_raises_job_not_found(runner: Runner, work_url: str) -> None:
    async def main() -> rr.JobNotFound:
        async with aiohttp.ClientSession() as session:
            with pytest.raises(rr.JobNotFound) as caught:
                await endpoint(session, work_url).job("no-such-job").status()
            return caught.value

    error = runner(main)

    assert error.status_code == 404
    assert error.job_id == "no-such-job"


def test_wrong_key_raises_authentication_error_without_key(keyed_url: str) -> None:
    async def main() -> tuple[rr.AuthenticationError, str]:
        async with aiohttp.ClientSession() as session:
            ep = endpoint(session, keyed_url, api_key="sk-wrong-key-value")
            with pytest.raises(rr.AuthenticationError) as caught:
                await ep.health()
            return caught.value, repr(ep)

    error, text = asyncio.run(main())

    assert error.status_code == 401
    assert "sk-wrong-key-value" not in str(error)
    assert "sk-wrong-key-value" not in text
    assert "sk-wrong-key-value" not in repr(error.__dict__)


def test_right_key_reaches_endpoint(keyed_url: str) -> None:
    async def main() -> rr.Health:
        async with aiohttp.ClientSession() as session:
            return await endpoint(session, keyed_url, api_key=SECRET).health()

    health = asyncio.run(main())

    assert isinstance(health, rr.Health)
    assert health.workers.idle + health.workers.running + health.workers.ready >= 1


def test_refused_connection_raises_request_error() -> None:
    async def main() -> rr.RequestError:
        async with aiohttp.ClientSession() as session:
            ep = endpoint(
                session,
                "http://127.0.0.1:9/v2",
                retry=RetryPolicy(max_attempts=2, base_delay=0.01),
            )
            with pytest.raises(rr.RequestError) as caught:
                await ep.run({"value": 1})
            return caught.value

    error = asyncio.run(main())

    assert "could not connect" in str(error)
    assert error.status_code is None


def test_purge_queue_removes_waiting_jobs() -> None:
    async def main() -> tuple[rr.PurgeResult, list[rr.JobStatus]]:
        async with aiohttp.ClientSession() as session:
            with serve(work, workers=1) as base_url:
                ep = endpoint(session, base_url)
                jobs = [await ep.run({"sleep": 0.5}) for _ in range(4)]
                await wait_for_status(jobs[0], rr.JobStatus.IN_PROGRESS)
                result = await ep.purge_queue()
                statuses = [await job.status() for job in jobs[1:]]
                await jobs[0].cancel()
        return result, statuses

    result, statuses = asyncio.run(main())

    assert result.removed == 3
    assert all(status is not rr.JobStatus.COMPLETED for status in statuses)


def test_cancelling_output_task_cancels_job_on_server(runner: Runner, work_url: str) -> None:
    async def main() -> rr.JobStatus:
        async with aiohttp.ClientSession() as session:
            ep = endpoint(session, work_url)
            job = await ep.run({"sleep": 5})
            task = asyncio.ensure_future(job.output(timeout=30))
            await asyncio.sleep(0.2)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            return await wait_for_status(ep.job(job.id), rr.JobStatus.CANCELLED)

    assert runner(main) is rr.JobStatus.CANCELLED


def test_leaving_stream_early_cancels_job_on_server(runner: Runner, token_url: str) -> None:
    async def main() -> tuple[list[str], rr.JobStatus]:
        received = []
        async with aiohttp.ClientSession() as session:
            ep = endpoint(session, token_url)
            job = await ep.run({"count": 200, "delay": 0.02})
            # No aclose(): the loop's async generator hook closes the dropped stream.
            async for chunk in job.stream():
                received.append(chunk)
                if len(received) == 2:
                    break
            return received, await wait_for_status(ep.job(job.id), rr.JobStatus.CANCELLED)

    received, status = runner(main)

    assert received == ["token-0", "token-1"]
    assert status is rr.JobStatus.CANCELLED


def test_handle_of_foreign_job_never_cancels_it(work_url: str) -> None:
    async def main() -> Any:
        async with aiohttp.ClientSession() as session:
            ep = endpoint(session, work_url)
            submitted = await ep.run({"sleep": 0.3, "value": "kept"})
            task = asyncio.ensure_future(ep.job(submitted.id).output(timeout=10))
            await asyncio.sleep(0.05)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            return await submitted.output(timeout=10)

    assert asyncio.run(main()) == {"echo": "kept"}


def test_observable_forms_emit_records(runner: Runner, work_url: str) -> None:
    async def main() -> tuple[Any, rr.Health, rr.JobStatus]:
        async with aiohttp.ClientSession() as session:
            ep = endpoint(session, work_url)
            job = await ep.rx.run({"value": "rx"})
            output = await job.rx.output(timeout=10)
            health = await ep.rx.health()
            status = await job.rx.status()
            return output, health, status

    output, health, status = runner(main)

    assert output == {"echo": "rx"}
    assert isinstance(health, rr.Health)
    assert status is rr.JobStatus.COMPLETED


def test_observable_form_blocks_from_another_thread(
    background_loop: asyncio.AbstractEventLoop, token_url: str
) -> None:
    async def make() -> tuple[aiohttp.ClientSession, AsyncioEndpoint]:
        session = aiohttp.ClientSession()
        return session, endpoint(session, token_url)

    session, ep = asyncio.run_coroutine_threadsafe(make(), background_loop).result(5)
    try:
        job = ep.rx.run({"count": 3}).run()
        chunks = job.rx.stream().pipe(rr_ops_to_list()).run()
    finally:
        asyncio.run_coroutine_threadsafe(session.close(), background_loop).result(5)

    assert chunks == ["token-0", "token-1", "token-2"]


def rr_ops_to_list() -> Any:
    from reactivex import operators as ops

    return ops.to_list()
