"""The polling core: request loops on a scheduler, adaptive intervals, shared pollers.

A ``Poll`` describes one polling conversation: ``fetch`` makes one blocking
request, ``on_response`` emits what it learned and returns the delay before
the next request (or None to complete). ``PollLoop`` runs it on a scheduler
with exactly one request in flight: the next request is scheduled only after
the previous response was handled, so a slow server slows the poller down
instead of piling requests up. Transient failures are retried after the
delay ``RetryPolicy`` gives, on the same scheduler, so backoff runs in
virtual time under ``TestScheduler``.

``SharedPoll`` multicasts one loop to any number of subscribers, replaying the
latest value to late subscribers, and stops the loop when the last one leaves.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from reactivex import abc

from .errors import APIError
from .http import RetryPolicy, gave_up

__all__ = ["Poll", "PollLoop", "PollPolicy", "SharedPoll", "SharedPollMember", "check_seconds"]

log = logging.getLogger("rxrunpod.polling")

T = TypeVar("T")
Emit = Callable[[Any], None]


def check_seconds(value: object, name: str, *, allow_zero: bool = False) -> None:
    """Raise ``TypeError``/``ValueError`` naming ``name`` unless ``value`` is None or seconds."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(
            f"{name} must be a number of seconds or None, got {type(value).__name__} {value!r:.40}"
        )
    if not (value >= 0 if allow_zero else value > 0):
        kind = "non-negative" if allow_zero else "positive"
        raise ValueError(f"{name} must be a {kind} number of seconds or None, got {value!r}")


@dataclass(frozen=True)
class PollPolicy:
    """Interval between status polls, in seconds.

    Polling starts every ``initial_interval`` seconds; while the observed state
    stays the same (a job waiting in the queue, say) each interval is
    ``backoff`` times the previous one, up to ``max_interval``. Any change of
    state resets the interval to ``initial_interval``.
    """

    initial_interval: float = 0.1
    max_interval: float = 2.0
    backoff: float = 1.5

    def __post_init__(self) -> None:
        if not self.initial_interval > 0:
            raise ValueError(f"initial_interval must be positive, got {self.initial_interval!r}")
        if not self.max_interval >= self.initial_interval:
            raise ValueError(
                f"max_interval ({self.max_interval!r}) must be at least initial_interval "
                f"({self.initial_interval!r})"
            )
        if not self.backoff >= 1:
            raise ValueError(f"backoff must be at least 1, got {self.backoff!r}")

    def next_interval(self, previous: float | None, *, changed: bool) -> float:
        """Return the interval after one whose length was ``previous`` (None at the start)."""
        if previous is None or changed:
            return self.initial_interval
        return min(self.max_interval, previous * self.backoff)


class Poll(Generic[T]):
    """One polling conversation; subclasses define what to fetch and what a response means.

    A fresh instance serves each subscription, so instances may keep state.
    """

    retry_safe = True
    """False for requests that may only be resent when they provably never reached the server."""

    def __init__(self, retry: RetryPolicy) -> None:
        self.retry = retry

    def fetch(self) -> Any:
        """Send one request (blocking) and return the decoded response; raise ``APIError``."""
        raise NotImplementedError

    def on_response(self, response: Any, emit: Emit) -> float | None:
        """Emit what ``response`` carries; return seconds to the next fetch, or None to complete."""
        raise NotImplementedError

    def on_failure(self, error: APIError, attempt: int, emit: Emit) -> float | None:
        """Return the seconds until the next fetch after ``error``, or raise to end with an error.

        ``attempt`` counts the consecutive failed attempts, 1 for the first.
        The default retries transient failures as ``self.retry`` allows.
        """
        delay = self.retry.delay_before_retry(error, attempt, retry_safe=self.retry_safe)
        if delay is None:
            raise error
        return delay

    def on_discarded(self, response: Any) -> None:
        """Handle a response that arrived after the subscription was disposed (default: drop it)."""


class PollLoop(abc.DisposableBase):
    """Runs a ``Poll`` on a scheduler for one observer; dispose stops it at once.

    A request already in flight when disposed finishes on its thread (it
    cannot be aborted), but its response is not emitted.
    """

    def __init__(
        self, poll: Poll[Any], observer: abc.ObserverBase[Any], scheduler: abc.SchedulerBase
    ) -> None:
        self._poll = poll
        self._observer = observer
        self._scheduler = scheduler
        self._lock = threading.Lock()
        self._pending: abc.DisposableBase | None = None
        self._disposed = False
        self._stopped = False
        self._failures = 0

    @property
    def is_disposed(self) -> bool:
        """True once disposed or ended."""
        return self._disposed or self._stopped

    def start(self) -> PollLoop:
        """Schedule the first request now; return self."""
        self._schedule(0.0)
        return self

    def dispose(self) -> None:
        """Stop polling: cancel the scheduled request and drop any response still to come."""
        with self._lock:
            self._disposed = True
            pending, self._pending = self._pending, None
        if pending is not None:
            pending.dispose()

    def _schedule(self, delay: float) -> None:
        with self._lock:
            if self._disposed or self._stopped:
                return
            if delay <= 0:
                self._pending = self._scheduler.schedule(self._tick)
            else:
                self._pending = self._scheduler.schedule_relative(delay, self._tick)

    def _tick(self, _scheduler: abc.SchedulerBase, _state: Any = None) -> None:
        if self.is_disposed:
            return
        try:
            response = self._poll.fetch()
        except APIError as error:
            self._failed(error)
            return
        except Exception as error:
            self._fail(error)
            return
        if self.is_disposed:
            self._discard(response)
            return
        self._failures = 0
        try:
            delay = self._poll.on_response(response, self._emit)
        except Exception as error:
            self._fail(error)
            return
        self._continue(delay)

    def _failed(self, error: APIError) -> None:
        self._failures += 1
        try:
            delay = self._poll.on_failure(error, self._failures, self._emit)
        except Exception as final_error:
            if final_error is error:
                gave_up(error, self._failures)
            self._fail(final_error)
            return
        if delay is not None:
            log.debug(
                "request failed (attempt %d), next one in %.2f s: %s", self._failures, delay, error
            )
        self._continue(delay)

    def _continue(self, delay: float | None) -> None:
        if self.is_disposed:
            return
        if delay is None:
            self._complete()
        else:
            self._schedule(delay)

    def _discard(self, response: Any) -> None:
        try:
            self._poll.on_discarded(response)
        except Exception:
            log.exception("handling a response that arrived after dispose failed")

    def _emit(self, value: Any) -> None:
        if self.is_disposed:
            return
        try:
            self._observer.on_next(value)
        except Exception as error:
            # A subscriber's on_next raised: end this subscription with that error.
            self._fail(error)

    def _stop(self) -> bool:
        with self._lock:
            if self._stopped or self._disposed:
                return False
            self._stopped = True
            return True

    def _complete(self) -> None:
        if self._stop():
            self._observer.on_completed()

    def _fail(self, error: Exception) -> None:
        if self._stop():
            self._observer.on_error(error)


class SharedPollMember(abc.DisposableBase, Generic[T]):
    """One subscriber of a ``SharedPoll``; delivers each value once, in order."""

    def __init__(self, shared: SharedPoll[T], observer: abc.ObserverBase[T]) -> None:
        self._shared = shared
        self._observer = observer
        self._lock = threading.RLock()
        self._delivered = 0
        self._stopped = False

    def dispose(self) -> None:
        """Leave the shared poll; the loop stops when no member is left.

        Does not wait for a delivery in progress on another thread: that thread
        may hold the lock while it waits for the GIL, and an asyncio loop that
        disposes an awaited subscription would stall until it got it. A value
        being delivered at this moment may still reach the observer.
        """
        self._stopped = True
        self._shared.remove(self)

    @property
    def is_stopped(self) -> bool:
        """True once the member completed, failed or was disposed."""
        return self._stopped

    def deliver(self, version: int, value: T) -> None:
        with self._lock:
            if self._stopped or version <= self._delivered:
                return
            self._delivered = version
            try:
                self._observer.on_next(value)
            except Exception as error:
                self._stopped = True
                self._observer.on_error(error)
                stopped = True
            else:
                stopped = False
        if stopped:
            self._shared.remove(self)

    def complete(self, version: int, value: T | None) -> None:
        with self._lock:
            if version and value is not None:
                self.deliver(version, value)
            if self._stopped:
                return
            self._stopped = True
            self._observer.on_completed()

    def fail(self, error: Exception) -> None:
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            self._observer.on_error(error)


class SharedPoll(Generic[T]):
    """One ``PollLoop`` shared by every subscriber: ``share()`` plus replay of the latest value.

    The loop starts with the first member and stops when the last member
    leaves. After the loop completes, new members get the last value and
    completion at once, without a request, until ``reset()``. After an error,
    the next member starts a fresh loop.
    """

    def __init__(self, make_poll: Callable[[], Poll[T]], scheduler: abc.SchedulerBase) -> None:
        self._make_poll = make_poll
        self._scheduler = scheduler
        self._lock = threading.Lock()
        self._members: list[SharedPollMember[T]] = []
        self._loop: PollLoop | None = None
        self._version = 0
        self._latest: T | None = None
        self._completed = False

    @property
    def member_count(self) -> int:
        """Number of current subscribers."""
        with self._lock:
            return len(self._members)

    def subscribe(self, observer: abc.ObserverBase[T]) -> SharedPollMember[T]:
        """Add a subscriber: replay the latest value, start the loop if it is not running."""
        member = SharedPollMember(self, observer)
        new_loop: PollLoop | None = None
        with self._lock:
            version, latest, completed = self._version, self._latest, self._completed
            if not completed:
                self._members.append(member)
                if self._loop is None:
                    new_loop = PollLoop(self._make_poll(), _LoopObserver(self), self._scheduler)
                    self._loop = new_loop
        if completed:
            member.complete(version, latest)
            return member
        if version and latest is not None:
            member.deliver(version, latest)
        if new_loop is not None:
            new_loop.start()
        return member

    def remove(self, member: SharedPollMember[T]) -> None:
        """Drop a member; stop the loop when it was the last one."""
        with self._lock:
            if member in self._members:
                self._members.remove(member)
            loop = self._loop if not self._members else None
            if loop is not None:
                self._loop = None
        if loop is not None:
            loop.dispose()

    def reset(self) -> None:
        """Forget a completed run, so the next subscriber polls again (after ``/retry``)."""
        with self._lock:
            if self._completed:
                self._completed = False
                self._latest = None

    def _on_next(self, value: T) -> None:
        with self._lock:
            self._version += 1
            self._latest = value
            version, members = self._version, list(self._members)
        for member in members:
            member.deliver(version, value)

    def _on_completed(self) -> None:
        with self._lock:
            self._completed = True
            self._loop = None
            version, latest, members = self._version, self._latest, self._members
            self._members = []
        for member in members:
            member.complete(version, latest)

    def _on_error(self, error: Exception) -> None:
        with self._lock:
            self._loop = None
            members, self._members = self._members, []
        for member in members:
            member.fail(error)


class _LoopObserver(abc.ObserverBase[Any]):
    """Forwards a shared loop's notifications to its ``SharedPoll``."""

    def __init__(self, shared: SharedPoll[Any]) -> None:
        self._shared = shared

    def on_next(self, value: Any) -> None:
        self._shared._on_next(value)

    def on_error(self, error: Exception) -> None:
        self._shared._on_error(error)

    def on_completed(self) -> None:
        self._shared._on_completed()
