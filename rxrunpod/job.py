"""``Job``: one RunPod job, its status, output and stream as observables."""

from __future__ import annotations

import json
import logging
import threading
import urllib.parse
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from reactivex import abc

from .errors import (
    APIError,
    AuthenticationError,
    InvalidRequest,
    JobCancelled,
    JobError,
    JobFailed,
    JobTimedOut,
    MalformedResponse,
    NotFoundError,
    RateLimited,
    StreamItemsLost,
    WaitTimeout,
)
from .http import request_not_sent
from .models import JobState, JobStatus, StreamBatch
from .observable import RunPodObservable
from .polling import (
    Emit,
    Poll,
    PollLoop,
    PollPolicy,
    SharedPoll,
    SharedPollMember,
    check_seconds,
)

if TYPE_CHECKING:
    from .endpoint import Endpoint

__all__ = ["Job", "job_error", "parse_document"]

log = logging.getLogger("rxrunpod.job")

Parsed = TypeVar("Parsed")


class Job:
    """A job on a RunPod endpoint; ``ep.run(p)`` emits one, ``ep.job(job_id)`` makes one.

    Every method returns a cold ``RunPodObservable``. ``updates()`` is shared:
    however many subscribe, one poller per job requests its status.

    ``submitted`` is True for jobs this process submitted (through
    ``ep.run``). Then ``output()`` and ``stream()``, which consume the
    result, default to ``cancel_on_dispose=True``: when such a subscription
    is disposed before the job ends, the job is cancelled on the server as
    soon as no subscription watches it any more. So taking the first tokens
    of a stream stops the generation and its GPU time. ``updates()``, which
    only watches, defaults to False, so peeking at the first state leaves the
    job running. For ``ep.job(job_id)`` every default is False. Pass
    ``cancel_on_dispose=`` to any of the three to choose.
    """

    def __init__(
        self,
        endpoint: Endpoint,
        job_id: str,
        *,
        submitted: bool = False,
        state: JobState | None = None,
    ) -> None:
        if not isinstance(job_id, str) or not job_id.strip():
            raise ValueError(f"job_id must be a non-empty string, got {job_id!r}")
        self.endpoint = endpoint
        self.id = job_id
        self.submitted = submitted
        self._path_id = urllib.parse.quote(job_id, safe="")
        self._lock = threading.Lock()
        self._latest = state
        self._final = state is not None and state.is_final
        self._watchers = 0
        self._cancel_requested = False
        self._cancel_sent = False
        self._unknown_logged = False
        self._shared_updates: SharedPoll[JobState] = SharedPoll(
            lambda: _StatusPoll(self, endpoint.poll), endpoint.scheduler
        )

    def __repr__(self) -> str:
        status = self._latest.raw_status if self._latest is not None else "not fetched"
        return f"Job(id={self.id!r}, endpoint_id={self.endpoint.id!r}, status={status})"

    @property
    def latest_state(self) -> JobState | None:
        """The most recent state any request of this handle observed, or None."""
        return self._latest

    def updates(
        self,
        *,
        poll: PollPolicy | None = None,
        scheduler: abc.SchedulerBase | None = None,
        cancel_on_dispose: bool | None = None,
    ) -> RunPodObservable[JobState]:
        """Poll the job's status: emit each distinct ``JobState``, complete after the final one.

        ``---IN_QUEUE---IN_PROGRESS----COMPLETED|``

        A late subscriber first gets the latest state. FAILED, CANCELLED and
        TIMED_OUT also end the stream normally; errors are only failed
        requests (``JobNotFound``, ``AuthenticationError``, ...). An unknown
        status string is emitted as ``JobStatus.UNKNOWN`` with its raw text.
        With ``poll`` or ``scheduler`` given, this subscription gets a poller of
        its own instead of the shared one.

        Disposing leaves the job running unless ``cancel_on_dispose=True``
        (default False, also for submitted jobs), so
        ``job.updates().pipe(ops.first())`` only peeks.
        """
        cancel = bool(cancel_on_dispose)

        def subscribe(
            observer: abc.ObserverBase[JobState], _: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            watch = _Watch(self, cancel)
            ending = _EndingObserver(observer, watch.finish)
            if poll is None and scheduler is None:
                watch.inner = self._shared_updates.subscribe(ending)
            else:
                status_poll = _StatusPoll(self, poll or self.endpoint.poll)
                watch.inner = PollLoop(
                    status_poll, ending, scheduler or self.endpoint.scheduler
                ).start()
            return watch

        return RunPodObservable(subscribe)

    def state(self, *, scheduler: abc.SchedulerBase | None = None) -> RunPodObservable[JobState]:
        """Fetch ``/status`` once: emit the ``JobState``, then complete."""
        return self._single(
            "GET", f"status/{self._path_id}", self._to_state, scheduler, retry_safe=True
        )

    def status(self, *, scheduler: abc.SchedulerBase | None = None) -> RunPodObservable[JobStatus]:
        """Fetch ``/status`` once: emit the ``JobStatus``, then complete."""
        return self._single(
            "GET",
            f"status/{self._path_id}",
            lambda document: self._to_state(document).status,
            scheduler,
            True,
        )

    def cancel(self, *, scheduler: abc.SchedulerBase | None = None) -> RunPodObservable[JobState]:
        """Ask the server to cancel the job; emit the ``JobState`` it returns."""
        return self._single(
            "POST",
            f"cancel/{self._path_id}",
            lambda document: self._to_state(document, "POST", "cancel"),
            scheduler,
            retry_safe=True,
        )

    def retry(self, *, scheduler: abc.SchedulerBase | None = None) -> RunPodObservable[JobState]:
        """Requeue a FAILED or TIMED_OUT job; emit the ``JobState`` the server returns.

        ``updates()`` subscribed afterwards polls the new run.
        """

        def requeued(document: Any) -> JobState:
            state = self._to_state(document, "POST", "retry")
            with self._lock:
                self._final = state.is_final
                self._cancel_sent = False
            self._shared_updates.reset()
            return state

        # /retry is not idempotent: only resend it when it never reached the server.
        return self._single("POST", f"retry/{self._path_id}", requeued, scheduler, retry_safe=False)

    def output(
        self,
        timeout: float | None = None,
        *,
        scheduler: abc.SchedulerBase | None = None,
        cancel_on_dispose: bool | None = None,
    ) -> RunPodObservable[Any]:
        """Wait for the job to end: emit its output if COMPLETED, then complete.

        ``--------output|`` or ``--------#JobFailed``

        FAILED, CANCELLED and TIMED_OUT arrive as ``JobFailed``,
        ``JobCancelled`` and ``JobTimedOut`` carrying the final ``JobState``.
        When ``timeout`` seconds pass first, ``WaitTimeout`` (a
        ``TimeoutError``) arrives; the job keeps running on the server.
        Disposing before the end cancels the job when ``cancel_on_dispose``
        is True, the default for jobs this process submitted.
        """
        cancel = self.submitted if cancel_on_dispose is None else cancel_on_dispose
        chosen = scheduler or self.endpoint.scheduler
        check_seconds(timeout, "timeout")

        def subscribe(
            observer: abc.ObserverBase[Any], _: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            return _OutputWatch(self, observer, timeout, chosen, cancel).start()

        return RunPodObservable(subscribe)

    def stream(
        self,
        *,
        scheduler: abc.SchedulerBase | None = None,
        cancel_on_dispose: bool | None = None,
    ) -> RunPodObservable[Any]:
        """Emit each item the handler yields, in order, as ``/stream`` hands it out.

        ``--item--item-item--|`` on COMPLETED; a FAILED, CANCELLED or
        TIMED_OUT job ends with ``JobFailed``, ``JobCancelled`` or
        ``JobTimedOut`` after the items that came before. ``/stream`` hands
        out each item once, so a response lost in transit (read timeout, reset)
        is recovered from the final status when the handler aggregates its
        stream (``return_aggregate_stream``); otherwise the stream ends with
        ``StreamItemsLost``. Each subscription reads the stream anew: two
        subscribers split the items between them, so share one with ``share()``.
        Disposing before the end cancels the job when ``cancel_on_dispose``
        is True, the default for jobs this process submitted: ``ops.take(3)``
        stops the generation after three items.
        """
        cancel = self.submitted if cancel_on_dispose is None else cancel_on_dispose
        chosen = scheduler or self.endpoint.scheduler

        def subscribe(
            observer: abc.ObserverBase[Any], _: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            watch = _Watch(self, cancel)
            ending = _EndingObserver(observer, watch.finish)
            watch.inner = PollLoop(_StreamPoll(self, self.endpoint.poll), ending, chosen).start()
            return watch

        return RunPodObservable(subscribe)

    # -- used by the pollers and Endpoint -----------------------------------------------------

    def _single(
        self,
        method: str,
        path: str,
        convert: Callable[[Any], Any],
        scheduler: abc.SchedulerBase | None,
        retry_safe: bool,
    ) -> RunPodObservable[Any]:
        endpoint = self.endpoint

        def make_poll() -> Poll[Any]:
            return RequestPoll(
                endpoint, method, path, convert, retry_safe=retry_safe, job_id=self.id
            )

        return endpoint._loop_observable(make_poll, scheduler)

    def _to_state(self, document: Any, method: str = "GET", route: str = "status") -> JobState:
        """Parse a status document of this job; raise ``MalformedResponse`` for another job's."""
        path = f"/{self.endpoint.id}/{route}/{self._path_id}"
        state = parse_document(
            lambda: JobState.from_json(document, job_id=self.id),
            document,
            method,
            path,
            endpoint_id=self.endpoint.id,
            job_id=self.id,
        )
        if state.id != self.id:
            raise MalformedResponse(
                f"{method} {path} returned the status of job {state.id!r} instead of job "
                f"{self.id!r}. Check that the base URL {self.endpoint.http.base_url!r} points at "
                "a RunPod API and that no proxy or cache in between mixes up responses.",
                body_start=json.dumps(document, default=str)[:200],
                method=method,
                path=path,
                status_code=200,
                endpoint_id=self.endpoint.id,
                job_id=self.id,
            )
        self._observe(state)
        return state

    def _observe(self, state: JobState) -> None:
        with self._lock:
            previous = self._latest
            self._latest = state
            if state.is_final:
                self._final = True
            log_unknown = state.status is JobStatus.UNKNOWN and not self._unknown_logged
            if log_unknown:
                self._unknown_logged = True
        if previous is None or previous.raw_status != state.raw_status:
            log.info("job %s on endpoint %s: %s", self.id, self.endpoint.id, state.raw_status)
        if log_unknown:
            log.warning(
                "job %s reported the unknown status %r; treating it as not final and polling on",
                self.id,
                state.raw_status,
            )

    def _watch(self) -> None:
        with self._lock:
            self._watchers += 1

    def _unwatch(self, *, cancel: bool) -> None:
        # A subscription that asked to cancel may leave while a watch-only one
        # stays; the cancel then waits for the last subscription, whatever its flag.
        with self._lock:
            self._watchers -= 1
            self._cancel_requested = self._cancel_requested or cancel
            cancel = self._cancel_requested and self._watchers == 0 and not self._final
            if self._watchers == 0:
                self._cancel_requested = False
        if cancel:
            self._cancel_once("its last subscription was disposed before the job ended")

    def _cancel_once(self, reason: str, scheduler: abc.SchedulerBase | None = None) -> None:
        """Send one ``/cancel`` in the background, unless one was sent or the job ended."""
        with self._lock:
            if self._cancel_sent or self._final:
                return
            self._cancel_sent = True
        log.info("cancelling job %s on endpoint %s: %s", self.id, self.endpoint.id, reason)
        self.cancel(scheduler=scheduler).subscribe(
            on_error=lambda error: log.warning("cancelling job %s failed: %s", self.id, error),
        )


def job_error(state: JobState) -> JobError:
    """Return the typed error for a final state other than COMPLETED."""
    where = f"job {state.id}"
    if state.status is JobStatus.FAILED:
        detail = state.error_detail
        described = (
            f"{detail.error_type}: {detail.message}" if detail and detail.error_type else None
        )
        message = described or (detail.message if detail else "no error message was given")
        return JobFailed(f"{where} failed: {message}", state)
    if state.status is JobStatus.CANCELLED:
        return JobCancelled(f"{where} was cancelled", state)
    if state.status is JobStatus.TIMED_OUT:
        return JobTimedOut(
            f"{where} timed out on the server (its executionTimeout or ttl ran out); "
            "raise the job's policy limits or make the handler faster",
            state,
        )
    raise ValueError(f"state {state.raw_status} of {where} is not a failure")


def parse_document(
    parse: Callable[[], Parsed],
    document: Any,
    method: str,
    path: str,
    *,
    endpoint_id: str | None = None,
    job_id: str | None = None,
) -> Parsed:
    """Run a ``models`` parser; turn its ``ValueError`` into ``MalformedResponse``.

    ``path`` is the full request path, job id included, as the message shows it.
    """
    try:
        return parse()
    except ValueError as error:
        # NOTE: a 2xx document that echoes the API key shows it here; only error responses
        # and unparsable bodies are scrubbed (HttpClient._redact).
        start = json.dumps(document, default=str)[:200]
        raise MalformedResponse(
            f"{method} {path} returned a JSON document of the wrong shape: {error}; "
            f"it starts with {start!r}",
            body_start=start,
            method=method,
            path=path,
            status_code=200,
            endpoint_id=endpoint_id,
            job_id=job_id,
        ) from error


class RequestPoll(Poll[Any]):
    """One request: emit ``convert(response)``, then complete."""

    def __init__(
        self,
        endpoint: Endpoint,
        method: str,
        path: str,
        convert: Callable[[Any], Any],
        *,
        retry_safe: bool,
        body: bytes | None = None,
        params: dict[str, Any] | None = None,
        job_id: str | None = None,
        timeout: float | tuple[float, float] | None = None,
        on_discarded: Callable[[Any], None] | None = None,
    ) -> None:
        super().__init__(endpoint.http.retry)
        self.retry_safe = retry_safe
        self._endpoint = endpoint
        self._method = method
        self._path = path
        self._convert = convert
        self._body = body
        self._params = params
        self._job_id = job_id
        self._timeout = timeout
        self._discarded = on_discarded

    def fetch(self) -> Any:
        return self._endpoint.http.send_json(
            self._method,
            self._path,
            body=self._body,
            params=self._params,
            job_id=self._job_id,
            timeout=self._timeout,
        )

    def on_response(self, response: Any, emit: Emit) -> float | None:
        emit(self._convert(response))
        return None

    def on_discarded(self, response: Any) -> None:
        if self._discarded is not None:
            self._discarded(response)


class _StatusPoll(Poll[JobState]):
    """Polls ``/status`` until a final state; emits each distinct state."""

    def __init__(self, job: Job, policy: PollPolicy) -> None:
        super().__init__(job.endpoint.http.retry)
        self._job = job
        self._policy = policy
        self._previous: JobState | None = None
        self._interval: float | None = None

    def fetch(self) -> Any:
        job = self._job
        return job.endpoint.http.send_json(
            "GET", f"status/{job._path_id}", job_id=job.id, quiet=True
        )

    def on_response(self, response: Any, emit: Emit) -> float | None:
        state = self._job._to_state(response)
        changed = state != self._previous
        log.debug("polled job %s: %s", state.id, state.raw_status)
        if changed:
            self._previous = state
            emit(state)
        if state.is_final:
            return None
        self._interval = self._policy.next_interval(self._interval, changed=changed)
        return self._interval


class _StreamPoll(Poll[Any]):
    """Reads ``/stream`` until a final status; recovers lost responses from the aggregate."""

    retry_safe = False

    def __init__(self, job: Job, policy: PollPolicy) -> None:
        super().__init__(job.endpoint.http.retry)
        self._job = job
        self._policy = policy
        self._emitted = 0
        self._empty_interval: float | None = None
        self._lost: APIError | None = None
        self._status_interval: float | None = None

    def fetch(self) -> Any:
        job = self._job
        route = "status" if self._lost is not None else "stream"
        return job.endpoint.http.send_json(
            "GET", f"{route}/{job._path_id}", job_id=job.id, quiet=True
        )

    def on_response(self, response: Any, emit: Emit) -> float | None:
        if self._lost is not None:
            return self._recover(response, emit)
        job = self._job
        path = f"/{job.endpoint.id}/stream/{job._path_id}"
        batch: StreamBatch = parse_document(
            lambda: StreamBatch.from_json(response),
            response,
            "GET",
            path,
            endpoint_id=job.endpoint.id,
            job_id=job.id,
        )
        for output in batch.outputs:
            emit(output)
        self._emitted += len(batch.outputs)
        if batch.status.is_final:
            return self._finish(batch)
        if batch.outputs:
            self._empty_interval = None
            return 0.0
        # The server holds /stream while it has nothing, so an empty response
        # already waited. Back off anyway in case a server responds at once.
        self._empty_interval = self._policy.next_interval(self._empty_interval, changed=False)
        return self._empty_interval

    def on_failure(self, error: APIError, attempt: int, emit: Emit) -> float | None:
        if self._lost is not None:
            # Recovery polls /status, which is safe to resend.
            delay = self.retry.delay_before_retry(error, attempt, retry_safe=True)
            if delay is None:
                raise error
            return delay
        if isinstance(error, AuthenticationError | NotFoundError | InvalidRequest):
            raise error
        if isinstance(error, RateLimited) or request_not_sent(error):
            return super().on_failure(error, attempt, emit)
        # The server may have handed out items in a response that never
        # arrived; it will not send them again, so wait for the final status.
        log.warning(
            "a /stream response of job %s was lost: %s It is not requested again; polling "
            "/status to recover the missing items from the job's final status",
            self._job.id,
            error,
        )
        self._lost = error
        self.retry_safe = True
        return 0.0

    def _finish(self, batch: StreamBatch) -> float | None:
        job = self._job
        raw = dict(batch.raw)
        raw.setdefault("id", job.id)
        state = job._to_state(raw, "GET", "stream")
        if state.status is JobStatus.COMPLETED:
            return None
        if state.status is JobStatus.FAILED and not state.error:
            # /stream often omits the error text; /status carries it.
            document = job.endpoint.http.request_json(
                "GET", f"status/{job._path_id}", retry_safe=True, job_id=job.id
            )
            state = job._to_state(document)
        raise job_error(state)

    def _recover(self, response: Any, emit: Emit) -> float | None:
        job = self._job
        state = job._to_state(response)
        if not state.is_final:
            self._status_interval = self._policy.next_interval(self._status_interval, changed=False)
            return self._status_interval
        if state.status is not JobStatus.COMPLETED:
            raise job_error(state)
        aggregate = _aggregate(state)
        if aggregate is None or len(aggregate) < self._emitted:
            raise StreamItemsLost(
                f"a /stream response of job {job.id} was lost ({self._lost}), so items may "
                f"be missing after the first {self._emitted}. The final status carries no "
                "aggregated stream to recover them from. Start the handler with "
                "return_aggregate_stream=True to make streams recoverable.",
                method="GET",
                path=f"/{job.endpoint.id}/stream/{job._path_id}",
                endpoint_id=job.endpoint.id,
                job_id=job.id,
            ) from self._lost
        for item in aggregate[self._emitted :]:
            emit(item)
        log.info(
            "recovered %d stream items of job %s from its final status",
            len(aggregate) - self._emitted,
            job.id,
        )
        return None


def _aggregate(state: JobState) -> list[Any] | None:
    """Return the aggregated stream of a final status: its ``stream`` list or a list ``output``."""
    if state.raw.get("stream") is not None:
        return state.stream
    if isinstance(state.output, list):
        return state.output
    return None


class _Watch(abc.DisposableBase):
    """One subscription watching a job; applies ``cancel_on_dispose`` when disposed early."""

    def __init__(self, job: Job, cancel_on_dispose: bool) -> None:
        self._job = job
        self._cancel = cancel_on_dispose
        self._lock = threading.Lock()
        self._ended = False
        self.inner: abc.DisposableBase | None = None
        job._watch()

    def _end(self) -> bool:
        with self._lock:
            if self._ended:
                return False
            self._ended = True
            return True

    def finish(self) -> None:
        """Record that the subscription ended by itself (completed or failed)."""
        if self._end():
            self._job._unwatch(cancel=False)

    def release(self) -> None:
        """Stop watching without cancelling the job (a client-side timeout)."""
        if self.inner is not None:
            self.inner.dispose()
        if self._end():
            self._job._unwatch(cancel=False)

    def dispose(self) -> None:
        if self.inner is not None:
            self.inner.dispose()
        if self._end():
            self._job._unwatch(cancel=self._cancel)


class _EndingObserver(abc.ObserverBase[Any]):
    """Forwards to ``observer`` and calls ``on_end`` before a terminal notification."""

    def __init__(self, observer: abc.ObserverBase[Any], on_end: Callable[[], None]) -> None:
        self._observer = observer
        self._on_end = on_end

    def on_next(self, value: Any) -> None:
        self._observer.on_next(value)

    def on_error(self, error: Exception) -> None:
        self._on_end()
        self._observer.on_error(error)

    def on_completed(self) -> None:
        self._on_end()
        self._observer.on_completed()


class _OutputWatch(abc.DisposableBase, abc.ObserverBase[JobState]):
    """``Job.output``: watch the shared updates, end on the final state or the deadline."""

    def __init__(
        self,
        job: Job,
        observer: abc.ObserverBase[Any],
        timeout: float | None,
        scheduler: abc.SchedulerBase,
        cancel_on_dispose: bool,
    ) -> None:
        self._job = job
        self._observer = observer
        self._timeout = timeout
        self._scheduler = scheduler
        self._watch = _Watch(job, cancel_on_dispose)
        self._lock = threading.Lock()
        self._done = False
        self._deadline: abc.DisposableBase | None = None

    def start(self) -> _OutputWatch:
        if self._timeout is not None:
            self._deadline = self._scheduler.schedule_relative(self._timeout, self._expire)
        member: SharedPollMember[JobState] = self._job._shared_updates.subscribe(self)
        self._watch.inner = member
        if self._done:
            member.dispose()
        return self

    def dispose(self) -> None:
        self._end()
        self._watch.dispose()

    def on_next(self, value: JobState) -> None:
        if not value.is_final or not self._end():
            return
        self._watch.finish()
        if value.status is JobStatus.COMPLETED:
            self._observer.on_next(value.output)
            self._observer.on_completed()
        else:
            self._observer.on_error(job_error(value))

    def on_error(self, error: Exception) -> None:
        if self._end():
            self._watch.finish()
            self._observer.on_error(error)

    def on_completed(self) -> None:
        # The shared poll completes only after a final state, handled in on_next.
        if self._end():
            self._watch.finish()
            self._observer.on_completed()

    def _end(self) -> bool:
        with self._lock:
            if self._done:
                return False
            self._done = True
            deadline, self._deadline = self._deadline, None
        if deadline is not None:
            deadline.dispose()
        return True

    def _expire(self, _scheduler: abc.SchedulerBase, _state: Any = None) -> None:
        if not self._end():
            return
        self._watch.release()
        job = self._job
        self._observer.on_error(
            WaitTimeout(
                f"job {job.id} did not finish within {self._timeout:g} s (last status: "
                f"{job.latest_state.raw_status if job.latest_state else 'unknown'}); "
                "it keeps running on the server. Raise timeout= or cancel the job.",
                job_id=job.id,
                timeout=float(self._timeout or 0),
            )
        )
