"""Bridges from reactivex observables to asyncio: ``await``, ``async for`` and a loop scheduler.

Observables in rxrunpod emit on I/O and timer threads, so every bridge here
hands results to the event loop with ``loop.call_soon_threadsafe``, which
also wakes a loop that sits idle in its selector. reactivex's own
``Observable.__await__`` (checked on reactivex 5.0.0 and 6.1.1) sets the
future's result straight from the emitting thread, so an otherwise idle loop
never notices and the ``await`` hangs.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any, Generic, TypeVar

from reactivex import Observable, abc, typing
from reactivex.disposable import CompositeDisposable, Disposable, SingleAssignmentDisposable
from reactivex.internal.exceptions import SequenceContainsNoElementsError
from reactivex.scheduler.eventloop import AsyncIOThreadSafeScheduler

from .errors import BufferOverflow

__all__ = [
    "DEFAULT_BUFFER_SIZE",
    "BufferOverflow",
    "LoopScheduler",
    "ObservableIterator",
    "await_observable",
    "iterate",
    "loop_scheduler",
]

_T = TypeVar("_T")
_TState = TypeVar("_TState")

log = logging.getLogger("rxrunpod.aio")

# Items are references, so the buffer costs little memory. The limit exists to
# turn a consumer that has stopped keeping up into an error instead of
# unbounded growth.
DEFAULT_BUFFER_SIZE = 10_000


def _call_on_loop(
    loop: asyncio.AbstractEventLoop, callback: Callable[..., object], *args: object
) -> None:
    """Schedule ``callback`` on ``loop`` from any thread; a closed loop has no one left to tell."""
    try:
        loop.call_soon_threadsafe(callback, *args)
    except RuntimeError:
        log.debug(
            "event loop is closed; dropped a notification for an awaiter that no longer exists"
        )


def _on_loop_thread(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


def _resolve(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)


def _reject(future: asyncio.Future[Any], error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)


async def await_observable(
    source: Observable[_T], *, scheduler: abc.SchedulerBase | None = None
) -> _T:
    """Subscribe to ``source`` and return its last item once it completes.

    The result is delivered on the running loop's thread whichever thread the
    source completes on. An error from the source is raised as is; a source
    that completes without items raises reactivex's
    ``SequenceContainsNoElementsError``, as ``Observable.run()`` does.
    Cancelling the awaiting task disposes the subscription. ``scheduler`` is
    the subscription's default scheduler (none unless given).
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[_T] = loop.create_future()
    has_value = False
    last_value: Any = None

    def on_next(value: _T) -> None:
        nonlocal has_value, last_value
        has_value = True
        last_value = value

    def on_error(error: Exception) -> None:
        _call_on_loop(loop, _reject, future, error)

    def on_completed() -> None:
        if has_value:
            _call_on_loop(loop, _resolve, future, last_value)
        else:
            _call_on_loop(loop, _reject, future, SequenceContainsNoElementsError())

    subscription = source.subscribe(on_next, on_error, on_completed, scheduler=scheduler)
    try:
        return await future
    finally:
        subscription.dispose()


class _Completed:
    """Marker of a source that completed normally."""


_COMPLETED = _Completed()


class _Channel(Generic[_T]):
    """State shared by the observer (any thread) and the iterator (the loop's thread).

    The observer refers only to the channel, never to the iterator, so the
    iterator is freed (and disposes the subscription) as soon as an
    ``async for`` leaves it, even while the source keeps its observer alive.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, buffer_size: int) -> None:
        self.loop = loop
        self.buffer_size = buffer_size
        self.subscription = SingleAssignmentDisposable()
        self._lock = threading.Lock()
        self._items: collections.deque[_T] = collections.deque()
        self._arrived_since_take = 0
        self._end: BaseException | _Completed | None = None
        self._waiter: asyncio.Future[None] | None = None

    def on_next(self, value: _T) -> None:
        with self._lock:
            if self._end is not None:
                return
            self._arrived_since_take += 1
            overflow = len(self._items) >= self.buffer_size
            if overflow:
                self._end = BufferOverflow(self._overflow_message(), buffer_size=self.buffer_size)
            else:
                self._items.append(value)
            waiter = self._take_waiter()
        if overflow:
            log.warning(
                "iterate() buffer of %d items overflowed; disposing the subscription",
                self.buffer_size,
            )
            self.subscription.dispose()
        if waiter is not None:
            _call_on_loop(self.loop, _resolve, waiter, None)

    def _overflow_message(self) -> str:
        """Describe an overflow; lock held."""
        arrived = self._arrived_since_take
        if arrived > self.buffer_size:
            cause = (
                f"{arrived} items arrived while the consumer took none, more than "
                f"buffer_size={self.buffer_size}"
            )
        else:
            cause = (
                f"the consumer fell behind: {len(self._items)} items were still waiting, "
                f"the limit of buffer_size={self.buffer_size}, when another arrived"
            )
        return (
            f"iterate(): {cause}, so the subscription was disposed and this error follows "
            "the buffered items instead of dropping any. A source can emit many items in "
            "one burst (one /stream response can carry many chunks), and they arrive faster "
            "than any consumer takes them, so buffer_size must exceed the largest burst: "
            "pass a larger buffer_size=. To drop items on purpose instead, put ops.sample "
            "or ops.throttle_first before iterate()."
        )

    def on_error(self, error: Exception) -> None:
        self._finish(error)

    def on_completed(self) -> None:
        self._finish(_COMPLETED)

    def _finish(self, end: BaseException | _Completed) -> None:
        with self._lock:
            if self._end is not None:
                return
            self._end = end
            waiter = self._take_waiter()
        if waiter is not None:
            _call_on_loop(self.loop, _resolve, waiter, None)

    def _take_waiter(self) -> asyncio.Future[None] | None:
        waiter, self._waiter = self._waiter, None
        return waiter

    def next_or_wait(self) -> tuple[str, Any]:
        """Take the next item, the end marker or error, or a future to wait on; loop thread only.

        Returns ``("item", item)``, ``("end", marker or error)`` or ``("wait", future)``.
        """
        with self._lock:
            if self._items:
                self._arrived_since_take = 0
                return "item", self._items.popleft()
            if self._end is not None:
                return "end", self._end
            waiter = self.loop.create_future()
            self._waiter = waiter
            return "wait", waiter

    def forget_waiter(self) -> None:
        with self._lock:
            self._waiter = None


class ObservableIterator(AsyncIterator[_T]):
    """Async iterator over an observable's items; ``iterate()`` builds it.

    Subscribes on the first ``__anext__``. Leaving the ``async for`` early
    disposes the subscription when the iterator is freed. In CPython that
    happens at once unless something else refers to the iterator, and
    ``aclose()`` disposes explicitly.
    """

    def __init__(
        self,
        source: Observable[_T],
        *,
        buffer_size: int,
        scheduler: abc.SchedulerBase | None,
    ) -> None:
        self._source = source
        self._buffer_size = buffer_size
        self._scheduler = scheduler
        self._channel: _Channel[_T] | None = None
        self._closed = False

    def __aiter__(self) -> ObservableIterator[_T]:
        return self

    async def __anext__(self) -> _T:
        if self._closed:
            raise StopAsyncIteration
        channel = self._channel
        if channel is None:
            channel = self._subscribe()
        while True:
            kind, value = channel.next_or_wait()
            if kind == "item":
                item: _T = value
                return item
            if kind == "end":
                self._dispose()
                if isinstance(value, _Completed):
                    raise StopAsyncIteration
                raise value
            try:
                await value
            except BaseException:
                # Cancellation of the consuming task ends the subscription too.
                channel.forget_waiter()
                self._dispose()
                raise

    async def aclose(self) -> None:
        """Dispose the subscription; later ``__anext__`` calls end the iteration."""
        self._dispose()

    def _subscribe(self) -> _Channel[_T]:
        channel: _Channel[_T] = _Channel(asyncio.get_running_loop(), self._buffer_size)
        self._channel = channel
        channel.subscription.disposable = self._source.subscribe(
            channel.on_next, channel.on_error, channel.on_completed, scheduler=self._scheduler
        )
        return channel

    def _dispose(self) -> None:
        self._closed = True
        if self._channel is not None:
            self._channel.subscription.dispose()

    def __del__(self) -> None:
        channel = getattr(self, "_channel", None)
        if channel is not None:
            channel.subscription.dispose()


def iterate(
    source: Observable[_T],
    *,
    buffer_size: int = DEFAULT_BUFFER_SIZE,
    scheduler: abc.SchedulerBase | None = None,
) -> ObservableIterator[_T]:
    """Iterate over the items of ``source`` with ``async for``, on the running loop's thread.

    Items wait in a buffer of at most ``buffer_size`` until the loop takes
    them. When the buffer fills up, the subscription is disposed and, after
    the buffered items, ``BufferOverflow`` is raised: no item is dropped
    silently. Items often arrive in bursts that no consumer can keep up
    with, because one ``/stream`` response can carry many chunks, and they
    are emitted together. So ``buffer_size`` must exceed the largest burst
    the source can emit, whatever the consumer's speed. An error from the source is raised after the
    items emitted before it. Leaving the loop early, ``aclose()`` or
    cancelling the task disposes the subscription::

        async for chunk in rr.aio.iterate(job.stream()):
            print(chunk)
    """
    if isinstance(buffer_size, bool) or not isinstance(buffer_size, int) or buffer_size < 1:
        raise ValueError(f"buffer_size must be a positive integer, got {buffer_size!r}")
    return ObservableIterator(source, buffer_size=buffer_size, scheduler=scheduler)


class LoopScheduler(AsyncIOThreadSafeScheduler):
    """Scheduler that runs actions on an asyncio loop's thread; safe to call from any thread.

    Unlike reactivex's ``AsyncIOThreadSafeScheduler`` (6.1.1), disposing a
    scheduled action from another thread never waits for the loop, so it cannot
    deadlock against a loop that is itself waiting on that thread, and an
    action disposed before it starts never runs.
    """

    def schedule(
        self, action: typing.ScheduledAction[_TState], state: _TState | None = None
    ) -> abc.DisposableBase:
        return self._schedule_after(0.0, action, state)

    def schedule_relative(
        self,
        duetime: typing.RelativeTime,
        action: typing.ScheduledAction[_TState],
        state: _TState | None = None,
    ) -> abc.DisposableBase:
        return self._schedule_after(max(0.0, self.to_seconds(duetime)), action, state)

    def _schedule_after(
        self, seconds: float, action: typing.ScheduledAction[_TState], state: _TState | None
    ) -> abc.DisposableBase:
        loop = self._loop
        inner = SingleAssignmentDisposable()
        handles: list[asyncio.Handle] = []
        cancelled = threading.Event()

        def invoke() -> None:
            if not cancelled.is_set():
                inner.disposable = self.invoke_action(action, state=state)

        def arm() -> None:
            if cancelled.is_set():
                return
            if seconds > 0:
                handles.append(loop.call_later(seconds, invoke))
            else:
                invoke()

        def cancel_handles() -> None:
            while handles:
                handles.pop().cancel()

        def dispose() -> None:
            cancelled.set()
            if _on_loop_thread(loop):
                cancel_handles()
            elif not loop.is_closed():
                _call_on_loop(loop, cancel_handles)

        _call_on_loop(loop, arm)
        return CompositeDisposable(inner, Disposable(dispose))


def loop_scheduler(loop: asyncio.AbstractEventLoop | None = None) -> LoopScheduler:
    """Build a scheduler that runs actions on ``loop``'s thread (default: the running loop).

    Use it with ``ops.observe_on`` to receive ``on_next`` calls on the loop,
    or as the ``scheduler=`` of a timer, so no timer thread is started.
    """
    if loop is None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise RuntimeError(
                "loop_scheduler() found no running event loop; "
                "call it from a coroutine or pass loop="
            ) from None
    return LoopScheduler(loop)
