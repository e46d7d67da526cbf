"""await_observable, iterate and loop_scheduler against plain reactivex sources."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
import reactivex
from reactivex import operators as ops
from reactivex.internal.exceptions import SequenceContainsNoElementsError
from reactivex.scheduler import ThreadPoolScheduler

from rxrunpod import JobNotFound
from rxrunpod.aio import BufferOverflow, await_observable, iterate, loop_scheduler
from tests.aio.threaded_sources import ThreadedSource

pytestmark = pytest.mark.timeout(30)


def test_await_resolves_when_source_completes_on_a_worker_thread(runner: Any) -> None:
    source = ThreadedSource([1, 2, 3], delay=0.05)

    async def main() -> tuple[Any, float]:
        started = time.monotonic()
        # An idle loop is woken only by call_soon_threadsafe, so a plain
        # future.set_result from the worker thread would wait for this timeout.
        value = await asyncio.wait_for(await_observable(source.observable()), 5.0)
        return value, time.monotonic() - started

    value, elapsed = runner(main)

    assert value == 3
    assert elapsed < 2.0


def test_await_raises_source_error_unchanged(runner: Any) -> None:
    error = JobNotFound("job 'abc' was not found", job_id="abc")
    source = ThreadedSource([1], error=error)

    async def main() -> Any:
        return await await_observable(source.observable())

    with pytest.raises(JobNotFound) as caught:
        runner(main)

    assert caught.value is error


def test_await_of_empty_source_raises_no_elements() -> None:
    async def main() -> Any:
        return await await_observable(reactivex.empty())

    with pytest.raises(SequenceContainsNoElementsError):
        asyncio.run(main())


def test_await_of_synchronous_source_returns_last_item() -> None:
    async def main() -> Any:
        return await await_observable(reactivex.of("a", "b"))

    assert asyncio.run(main()) == "b"


def test_cancelling_await_disposes_subscription(runner: Any) -> None:
    source = ThreadedSource([1], complete=False)

    async def main() -> None:
        task = asyncio.ensure_future(await_observable(source.observable()))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    runner(main)

    assert source.disposed.is_set()


def test_iterate_yields_items_in_order_on_loop_thread(runner: Any) -> None:
    source = ThreadedSource(range(200))

    async def main() -> tuple[list[int], set[int], int]:
        items = []
        consumer_threads = set()
        async for item in iterate(source.observable()):
            items.append(item)
            consumer_threads.add(threading.get_ident())
        return items, consumer_threads, threading.get_ident()

    items, consumer_threads, loop_thread = runner(main)

    assert items == list(range(200))
    assert consumer_threads == {loop_thread}
    assert loop_thread not in source.emitter_threads


def test_iterate_raises_source_error_after_items(runner: Any) -> None:
    error = JobNotFound("job 'abc' was not found", job_id="abc")
    source = ThreadedSource(["x", "y"], error=error)

    async def main() -> list[str]:
        received = []
        with pytest.raises(JobNotFound) as caught:
            async for item in iterate(source.observable()):
                received.append(item)
        assert caught.value is error
        return received

    assert runner(main) == ["x", "y"]


def test_iterate_subscribes_only_when_iteration_starts() -> None:
    source = ThreadedSource([1])

    async def main() -> tuple[int, int]:
        iterator = iterate(source.observable())
        before = source.subscriptions
        await iterator.__anext__()
        await iterator.aclose()
        return before, source.subscriptions

    before, after = asyncio.run(main())

    assert before == 0
    assert after == 1


def test_iterate_overflow_raises_after_buffered_items_and_disposes() -> None:
    source = ThreadedSource(range(100), complete=False)

    async def main() -> list[int]:
        iterator = iterate(source.observable(), buffer_size=10)
        received = [await iterator.__anext__()]
        # Block the loop so the source overruns the buffer.
        assert source.disposed.wait(5.0)
        with pytest.raises(BufferOverflow) as caught:
            async for item in iterator:
                received.append(item)
        assert caught.value.buffer_size == 10
        return received

    received = asyncio.run(main())

    # The first item may be taken before or after the buffer fills, so the
    # consumer sees the 10 buffered items plus possibly that first one.
    assert len(received) in (10, 11)
    assert received == list(range(len(received)))


def test_iterate_overflow_message_names_burst_and_fix() -> None:
    burst = reactivex.from_iterable(range(50))

    async def main() -> BufferOverflow:
        with pytest.raises(BufferOverflow) as caught:
            async for _ in iterate(burst, buffer_size=10):
                pass
        return caught.value

    message = str(asyncio.run(main()))

    assert "11 items arrived while the consumer took none" in message
    assert "buffer_size=10" in message
    assert "one burst" in message
    assert "Consume faster" not in message


def test_iterate_early_break_disposes_at_once(runner: Any) -> None:
    source = ThreadedSource(range(1000), delay=0.001, complete=False)

    async def main() -> bool:
        async for item in iterate(source.observable()):
            if item == 3:
                break
        # No await between the break and this check: disposal is synchronous.
        return source.disposed.is_set()

    assert runner(main) is True
    assert source.finished.wait(5.0)


def test_iterate_cancelled_task_disposes_subscription(runner: Any) -> None:
    source = ThreadedSource([1], complete=False)

    async def consume() -> None:
        async for _ in iterate(source.observable()):
            pass

    async def main() -> None:
        task = asyncio.ensure_future(consume())
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    runner(main)

    assert source.disposed.is_set()


def test_iterate_aclose_disposes_and_ends_iteration() -> None:
    source = ThreadedSource(range(10), delay=0.01, complete=False)

    async def main() -> None:
        iterator = iterate(source.observable())
        assert await iterator.__anext__() == 0
        await iterator.aclose()
        with pytest.raises(StopAsyncIteration):
            await iterator.__anext__()

    asyncio.run(main())

    assert source.disposed.is_set()


@pytest.mark.parametrize("size", [0, -1, 2.5, True, None])
def test_iterate_rejects_invalid_buffer_size(size: Any) -> None:
    with pytest.raises(ValueError, match="buffer_size must be a positive integer"):
        iterate(reactivex.empty(), buffer_size=size)


def test_loop_scheduler_observe_on_delivers_on_loop_thread(runner: Any) -> None:
    pool = ThreadPoolScheduler(2)

    async def main() -> tuple[set[int], int, list[int]]:
        seen_threads: set[int] = set()
        items: list[int] = []
        done = asyncio.get_running_loop().create_future()

        def on_next(item: int) -> None:
            seen_threads.add(threading.get_ident())
            items.append(item)

        reactivex.range(5).pipe(
            ops.subscribe_on(pool),
            ops.observe_on(loop_scheduler()),
        ).subscribe(on_next, done.set_exception, lambda: done.set_result(None))
        await asyncio.wait_for(done, 5.0)
        return seen_threads, threading.get_ident(), items

    seen_threads, loop_thread, items = runner(main)
    pool.executor.shutdown()

    assert seen_threads == {loop_thread}
    assert items == [0, 1, 2, 3, 4]


def test_loop_scheduler_timer_runs_on_loop() -> None:
    async def main() -> tuple[int, int, float]:
        loop = asyncio.get_running_loop()
        scheduler = loop_scheduler()
        fired = loop.create_future()
        started = time.monotonic()

        def schedule_from_thread() -> None:
            scheduler.schedule_relative(
                0.05, lambda _s, _t: fired.set_result(threading.get_ident())
            )

        threading.Thread(target=schedule_from_thread).start()
        thread_id = await asyncio.wait_for(fired, 5.0)
        return thread_id, threading.get_ident(), time.monotonic() - started

    fired_on, loop_thread, elapsed = asyncio.run(main())

    assert fired_on == loop_thread
    assert elapsed >= 0.04


def test_loop_scheduler_disposed_action_never_runs() -> None:
    async def main() -> list[str]:
        scheduler = loop_scheduler()
        ran: list[str] = []
        timer = scheduler.schedule_relative(0.05, lambda _s, _t: ran.append("timer"))
        soon = scheduler.schedule(lambda _s, _t: ran.append("soon"))
        disposer = threading.Thread(target=lambda: (timer.dispose(), soon.dispose()))
        disposer.start()
        disposer.join()
        await asyncio.sleep(0.15)
        return ran

    assert asyncio.run(main()) == []


def test_loop_scheduler_dispose_never_blocks(
    background_loop: asyncio.AbstractEventLoop,
) -> None:
    async def schedule_and_wait() -> float:
        scheduler = loop_scheduler()
        disposable = scheduler.schedule_relative(10.0, lambda _s, _t: None)

        async def dispose_elsewhere() -> float:
            started = time.monotonic()
            disposable.dispose()
            return time.monotonic() - started

        # The disposing thread runs a loop of its own while this loop waits for
        # it: a dispose that waited for this loop would deadlock here.
        future = asyncio.run_coroutine_threadsafe(dispose_elsewhere(), background_loop)
        return future.result(5.0)

    assert asyncio.run(schedule_and_wait()) < 1.0


def test_loop_scheduler_without_running_loop_raises() -> None:
    with pytest.raises(RuntimeError, match="no running event loop"):
        loop_scheduler()
