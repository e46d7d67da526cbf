"""The shared schedulers: a bounded I/O thread pool and one timer thread.

Tracking thousands of jobs must not cost a thread per job or per timer (as
``reactivex``'s ``TimeoutScheduler`` would), so every poller in the process
shares two schedulers:

- ``TimerScheduler``: one thread that fires timed actions. Actions run on that
  thread, so they must be short; the I/O scheduler only uses it to hand
  actions over to the pool.
- ``IoScheduler``: runs actions on a pool of at most ``max_workers`` threads
  (blocking HTTP calls); ``schedule_relative`` waits on the timer thread, not
  on a pool thread.

Both start threads on demand and let them exit after ``idle_timeout`` seconds
without work, so a process that stops polling returns to its baseline thread
count. ``default_io_scheduler()`` and ``default_timer_scheduler()`` return the
process-wide instances.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

from reactivex import abc, typing
from reactivex.disposable import CompositeDisposable, Disposable, SingleAssignmentDisposable
from reactivex.scheduler.scheduler import Scheduler

__all__ = [
    "DEFAULT_IO_WORKERS",
    "IO_THREADS_VARIABLE",
    "IoScheduler",
    "TimerScheduler",
    "default_io_scheduler",
    "default_timer_scheduler",
    "io_threads_from_environment",
    "on_rxrunpod_thread",
]

log = logging.getLogger("rxrunpod.scheduling")

_TState = TypeVar("_TState")

DEFAULT_IO_WORKERS = 12
"""Threads of the shared I/O pool, which bounds the HTTP requests in flight at once.

The environment variable ``RXRUNPOD_IO_THREADS`` overrides it for the process.
"""

IO_THREADS_VARIABLE = "RXRUNPOD_IO_THREADS"

DEFAULT_IDLE_TIMEOUT = 2.0
"""Seconds an idle pool or timer thread waits for work before it exits."""

# Set on every pool and timer thread, so that a blocking wait started on one
# of them (which could starve the very threads it waits for) can be rejected.
_thread_role = threading.local()


def on_rxrunpod_thread() -> str | None:
    """Return "I/O thread" or "timer thread" when called on one of rxrunpod's threads, else None."""
    role: str | None = getattr(_thread_role, "role", None)
    return role


class _Action:
    """One scheduled action; cancelling it before it runs drops it."""

    __slots__ = ("action", "cancelled", "dequeued", "disposable", "scheduler", "state")

    def __init__(
        self, scheduler: abc.SchedulerBase, action: typing.ScheduledAction[Any], state: Any
    ) -> None:
        self.scheduler = scheduler
        self.action = action
        self.state = state
        self.cancelled = False
        self.dequeued = False
        self.disposable = SingleAssignmentDisposable()

    def invoke(self) -> None:
        if self.cancelled:
            return
        try:
            result = self.action(self.scheduler, self.state)
        except Exception:
            # A scheduled action has no caller to raise to; dropping the error
            # silently would hide bugs, killing the thread would stop every poller.
            log.exception("a scheduled action raised")
            return
        if isinstance(result, abc.DisposableBase):
            self.disposable.disposable = result

    def dispose(self) -> None:
        self.cancelled = True
        self.disposable.dispose()


class TimerScheduler(Scheduler):
    """Fires timed actions on one thread, started on demand and ended when idle.

    Cancelled timers leave the queue at once, so disposing every subscription
    lets the thread exit after ``idle_timeout`` seconds.
    """

    def __init__(
        self, *, name: str = "rxrunpod-timer", idle_timeout: float = DEFAULT_IDLE_TIMEOUT
    ) -> None:
        super().__init__()
        self._name = name
        self._idle_timeout = idle_timeout
        self._condition = threading.Condition(threading.Lock())
        self._heap: list[tuple[float, int, _Action]] = []
        self._sequence = itertools.count()
        self._live = 0
        self._thread: threading.Thread | None = None

    @property
    def pending(self) -> int:
        """Number of timers waiting to fire."""
        with self._condition:
            return self._live

    def schedule(
        self, action: typing.ScheduledAction[_TState], state: _TState | None = None
    ) -> abc.DisposableBase:
        """Run ``action`` on the timer thread as soon as possible."""
        return self._enqueue(0.0, action, state)

    def schedule_relative(
        self,
        duetime: typing.RelativeTime,
        action: typing.ScheduledAction[_TState],
        state: _TState | None = None,
    ) -> abc.DisposableBase:
        """Run ``action`` on the timer thread after ``duetime`` (seconds or ``timedelta``)."""
        return self._enqueue(self.to_seconds(duetime), action, state)

    def schedule_absolute(
        self,
        duetime: typing.AbsoluteTime,
        action: typing.ScheduledAction[_TState],
        state: _TState | None = None,
    ) -> abc.DisposableBase:
        """Run ``action`` on the timer thread at ``duetime`` (wall clock)."""
        seconds = (self.to_datetime(duetime) - self.now).total_seconds()
        return self._enqueue(seconds, action, state)

    def _enqueue(
        self, seconds: float, action: typing.ScheduledAction[Any], state: Any
    ) -> abc.DisposableBase:
        item = _Action(self, action, state)
        due = time.monotonic() + max(0.0, seconds)
        with self._condition:
            heapq.heappush(self._heap, (due, next(self._sequence), item))
            self._live += 1
            self._condition.notify()
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
        return Disposable(lambda: self._cancel(item))

    def _cancel(self, item: _Action) -> None:
        with self._condition:
            if item.cancelled:
                return
            item.cancelled = True
            if item.dequeued:
                # Already off the queue (running or about to run): only the
                # flag and the action's own disposable are left to handle.
                item.disposable.dispose()
                return
            self._live -= 1
            # Drop cancelled entries eagerly once they dominate the heap, so
            # thousands of disposed pollers do not keep the thread waking up.
            if len(self._heap) > 64 and self._live < len(self._heap) // 2:
                self._heap = [entry for entry in self._heap if not entry[2].cancelled]
                heapq.heapify(self._heap)
            self._condition.notify()
        item.disposable.dispose()

    def _run(self) -> None:
        _thread_role.role = "timer thread"
        while True:
            item = self._next_due()
            if item is None:
                return
            item.invoke()

    def _next_due(self) -> _Action | None:
        with self._condition:
            idle_since: float | None = None
            while True:
                while self._heap and self._heap[0][2].cancelled:
                    heapq.heappop(self._heap)
                now = time.monotonic()
                if self._heap:
                    idle_since = None
                    due, _, item = self._heap[0]
                    if due <= now:
                        heapq.heappop(self._heap)
                        self._live -= 1
                        item.dequeued = True
                        return item
                    self._condition.wait(due - now)
                    continue
                if idle_since is None:
                    idle_since = now
                remaining = self._idle_timeout - (now - idle_since)
                if remaining <= 0:
                    self._thread = None
                    return None
                self._condition.wait(remaining)


class _WorkerPool:
    """A thread pool whose threads exit after ``idle_timeout`` seconds without work.

    Only the first thread is started on the thread that submits work. Starting a
    thread blocks its starter until the new thread runs, which would stall an
    asyncio loop that subscribes to hundreds of jobs at once. So each new thread
    starts the next one while work is still waiting, and when every thread is
    busy ``hand_off`` runs the start elsewhere (on the timer thread).
    """

    def __init__(
        self,
        max_workers: int,
        idle_timeout: float,
        name: str,
        hand_off: Callable[[Callable[[], None]], None],
    ) -> None:
        if isinstance(max_workers, bool) or not isinstance(max_workers, int):
            raise TypeError(f"max_workers must be an int, got {type(max_workers).__name__}")
        if max_workers < 1:
            raise ValueError(f"max_workers must be at least 1, got {max_workers}")
        self.max_workers = max_workers
        self._idle_timeout = idle_timeout
        self._name = name
        self._hand_off = hand_off
        self._queue: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._workers = 0
        self._idle = 0
        self._starting = 0
        self._hand_off_pending = False
        self._started = itertools.count(1)

    @property
    def threads(self) -> int:
        """Number of pool threads alive now."""
        with self._lock:
            return self._workers

    def submit(self, work: Callable[[], None]) -> None:
        self._queue.put(work)
        with self._lock:
            if not self._short_of_threads():
                return
            if self._workers > 0:
                # Some thread will start more; make sure one is free to do it.
                hand_off = not self._hand_off_pending
                self._hand_off_pending = True
                name = None
            else:
                hand_off = False
                name = self._reserve_thread()
        if name is not None:
            self._start(name)
        elif hand_off:
            self._hand_off(self._grow_from_hand_off)

    def _short_of_threads(self) -> bool:
        """Tell whether queued work outnumbers the threads free to take it; lock held."""
        waiting = self._queue.qsize() - self._idle - self._starting
        return waiting > 0 and self._workers < self.max_workers

    def _reserve_thread(self) -> str:
        """Count a thread about to start and return its name; lock held."""
        self._workers += 1
        self._starting += 1
        return f"{self._name}-{next(self._started)}"

    def _start(self, name: str) -> None:
        try:
            threading.Thread(target=self._work, name=name, daemon=True).start()
        except BaseException:
            with self._lock:
                self._workers -= 1
                self._starting -= 1
            raise

    def _grow_from_hand_off(self) -> None:
        with self._lock:
            self._hand_off_pending = False
        self._grow()

    def _grow(self) -> None:
        """Start one more thread when work is waiting; that thread repeats the check."""
        with self._lock:
            name = self._reserve_thread() if self._short_of_threads() else None
        if name is not None:
            self._start(name)

    def _work(self) -> None:
        _thread_role.role = "I/O thread"
        with self._lock:
            self._starting -= 1
        self._grow()
        while True:
            with self._lock:
                self._idle += 1
            try:
                work = self._queue.get(timeout=self._idle_timeout)
            except queue.Empty:
                with self._lock:
                    self._idle -= 1
                    # Checked under the lock that submit() takes after its put(),
                    # so work queued now either is seen here or starts a thread.
                    if self._queue.empty():
                        self._workers -= 1
                        return
                continue
            with self._lock:
                self._idle -= 1
            work()


class IoScheduler(Scheduler):
    """Runs actions on a bounded thread pool; delays wait on the timer thread.

    Use it for blocking I/O: at most ``max_workers`` actions run at once, and
    the rest wait in a queue.
    """

    def __init__(
        self,
        max_workers: int = DEFAULT_IO_WORKERS,
        *,
        timer: TimerScheduler | None = None,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
        name: str = "rxrunpod-io",
    ) -> None:
        super().__init__()
        self.timer = timer if timer is not None else default_timer_scheduler()
        self._pool = _WorkerPool(max_workers, idle_timeout, name, self._on_timer_thread)

    def _on_timer_thread(self, start: Callable[[], None]) -> None:
        self.timer.schedule(lambda _scheduler, _state: start())

    @property
    def max_workers(self) -> int:
        """Largest number of pool threads, and so of actions running at once."""
        return self._pool.max_workers

    @property
    def threads(self) -> int:
        """Number of pool threads alive now."""
        return self._pool.threads

    def schedule(
        self, action: typing.ScheduledAction[_TState], state: _TState | None = None
    ) -> abc.DisposableBase:
        """Run ``action`` on a pool thread as soon as one is free."""
        item = _Action(self, action, state)
        self._pool.submit(item.invoke)
        return Disposable(item.dispose)

    def schedule_relative(
        self,
        duetime: typing.RelativeTime,
        action: typing.ScheduledAction[_TState],
        state: _TState | None = None,
    ) -> abc.DisposableBase:
        """Run ``action`` on a pool thread after ``duetime``, waiting on the timer thread."""
        seconds = self.to_seconds(duetime)
        if seconds <= 0:
            return self.schedule(action, state)
        handed_over = SingleAssignmentDisposable()

        def hand_over(_: abc.SchedulerBase, __: Any) -> None:
            handed_over.disposable = self.schedule(action, state)

        timer = self.timer.schedule_relative(seconds, hand_over)
        return CompositeDisposable(timer, handed_over)

    def schedule_absolute(
        self,
        duetime: typing.AbsoluteTime,
        action: typing.ScheduledAction[_TState],
        state: _TState | None = None,
    ) -> abc.DisposableBase:
        """Run ``action`` on a pool thread at ``duetime`` (wall clock)."""
        due: datetime = self.to_datetime(duetime)
        return self.schedule_relative(due - self.now, action, state)


_defaults_lock = threading.Lock()
_default_timer: TimerScheduler | None = None
_default_io: IoScheduler | None = None


def default_timer_scheduler() -> TimerScheduler:
    """Return the process-wide timer scheduler, created on first use."""
    global _default_timer
    with _defaults_lock:
        if _default_timer is None:
            _default_timer = TimerScheduler()
        return _default_timer


def default_io_scheduler() -> IoScheduler:
    """Return the process-wide I/O scheduler, created on first use.

    It has ``RXRUNPOD_IO_THREADS`` threads when that variable is set, else
    ``DEFAULT_IO_WORKERS``.
    """
    global _default_io
    timer = default_timer_scheduler()
    with _defaults_lock:
        if _default_io is None:
            _default_io = IoScheduler(io_threads_from_environment(), timer=timer)
        return _default_io


def io_threads_from_environment() -> int:
    """Return the I/O pool size ``RXRUNPOD_IO_THREADS`` sets, or ``DEFAULT_IO_WORKERS``.

    Raises ``ValueError`` naming the variable when it is not a positive integer.
    """
    text = os.environ.get(IO_THREADS_VARIABLE, "").strip()
    if not text:
        return DEFAULT_IO_WORKERS
    try:
        threads = int(text)
    except ValueError:
        threads = 0
    if threads < 1:
        raise ValueError(
            f"{IO_THREADS_VARIABLE} must be a positive whole number of threads, got {text!r}; "
            f"unset it to use the default of {DEFAULT_IO_WORKERS}"
        )
    return threads
