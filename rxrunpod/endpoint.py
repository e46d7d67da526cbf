"""``Endpoint``: a RunPod serverless endpoint whose every call is an Observable."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any

import requests
from reactivex import abc

from .errors import APIError, AuthenticationError, InvalidRequest, NotFoundError, WaitTimeout
from .http import (
    DEFAULT_MAX_RESPONSE_SIZE,
    DEFAULT_POOL_SIZE,
    DEFAULT_TIMEOUT,
    HttpClient,
    RetryPolicy,
    encode_json,
)
from .job import Job, RequestPoll, job_error, parse_document
from .models import Health, JobState, JobStatus, PurgeResult
from .observable import RunPodObservable
from .polling import Emit, Poll, PollLoop, PollPolicy, check_seconds
from .scheduling import IoScheduler, default_io_scheduler, default_timer_scheduler

if TYPE_CHECKING:
    from .openai import OpenAIRoutes

__all__ = ["DEFAULT_RUNSYNC_WAIT", "Endpoint", "request_body"]

log = logging.getLogger("rxrunpod.endpoint")

# NOTE: a held /runsync occupies one I/O pool thread for up to its wait, so more
# concurrent run_sync calls than pool threads delay other polls; prefer run() for fan-out.
DEFAULT_RUNSYNC_WAIT = 30.0
"""Seconds ``run_sync`` requests the server to hold ``/runsync`` before it switches to polling."""

RUNSYNC_READ_MARGIN = 10.0
"""Seconds the read timeout of ``/runsync`` adds to its ``wait``."""


class Endpoint:
    """A RunPod serverless endpoint.

    ``api_key`` defaults to ``RUNPOD_API_KEY``; ``base_url`` to
    ``RUNPOD_ENDPOINT_BASE_URL`` or ``https://api.runpod.ai/v2``. Every method
    returns a cold ``RunPodObservable``: nothing is sent until subscribe, and
    each subscription sends again.

    ``scheduler`` runs the blocking HTTP calls and the poll timers; the
    default is the process-wide I/O pool (``io_scheduler``), whose delays wait
    on one shared timer thread (``timer_scheduler``). Pass a
    ``reactivex.testing.TestScheduler`` to drive polling in virtual time.
    ``io_threads`` gives this endpoint an I/O pool of its own with that many
    threads instead of the shared one (whose size ``RXRUNPOD_IO_THREADS``
    sets, default 12). ``poll`` sets the polling intervals, ``timeout`` the
    (connect, read) timeouts in seconds, ``retry`` the retries of transient
    failures, ``max_response_size`` the bytes one response body may have
    (default 64 MiB).
    """

    def __init__(
        self,
        endpoint_id: str,
        api_key: str | None = None,
        base_url: str | None = None,
        *,
        session: requests.Session | None = None,
        scheduler: abc.SchedulerBase | None = None,
        poll: PollPolicy | None = None,
        timeout: tuple[float, float] = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
        io_threads: int | None = None,
        max_response_size: int = DEFAULT_MAX_RESPONSE_SIZE,
    ) -> None:
        if poll is not None and not isinstance(poll, PollPolicy):
            raise TypeError(f"poll must be a PollPolicy or None, got {type(poll).__name__}")
        self.scheduler: abc.SchedulerBase = _choose_scheduler(scheduler, io_threads)
        pool_size = (
            self.scheduler.max_workers
            if isinstance(self.scheduler, IoScheduler)
            else DEFAULT_POOL_SIZE
        )
        self.http = HttpClient(
            endpoint_id,
            api_key,
            base_url,
            session=session,
            timeout=timeout,
            retry=retry,
            pool_size=pool_size,
            max_response_size=max_response_size,
        )
        self.poll = poll if poll is not None else PollPolicy()
        self._openai: OpenAIRoutes | None = None
        self._openai_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Endpoint({self.id!r}, base_url={self.http.base_url!r})"

    def __enter__(self) -> Endpoint:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def id(self) -> str:
        """The endpoint id."""
        return self.http.endpoint_id

    @property
    def io_scheduler(self) -> abc.SchedulerBase:
        """Scheduler of the HTTP calls: the shared I/O pool unless ``scheduler=`` was given."""
        return self.scheduler

    @property
    def timer_scheduler(self) -> abc.SchedulerBase:
        """Scheduler of the poll timers: the shared timer thread unless ``scheduler=`` was given.

        Actions run on the timer thread itself, so keep them short.
        """
        if isinstance(self.scheduler, IoScheduler):
            return self.scheduler.timer
        return self.scheduler

    @property
    def openai(self) -> OpenAIRoutes:
        """The OpenAI-compatible routes of this endpoint (``rxrunpod.openai.OpenAIRoutes``)."""
        with self._openai_lock:
            if self._openai is None:
                from .openai import OpenAIRoutes

                self._openai = OpenAIRoutes(self)
            return self._openai

    def close(self) -> None:
        """Close the pooled HTTP connections (not a session passed in)."""
        self.http.close()

    def job(self, job_id: str) -> Job:
        """Return a handle on a job submitted elsewhere; ``cancel_on_dispose`` is off by default."""
        return Job(self, job_id, submitted=False)

    def run(
        self,
        payload: Any,
        *,
        webhook: str | None = None,
        policy: Mapping[str, Any] | None = None,
        s3_config: Mapping[str, Any] | None = None,
        scheduler: abc.SchedulerBase | None = None,
        cancel_on_dispose: bool = True,
    ) -> RunPodObservable[Job]:
        """Submit a job on subscribe (``POST /run``); emit its ``Job``, then complete.

        ``---Job|``

        A payload without an ``input`` key is sent as ``{"input": payload}``.
        Raises ``TypeError``/``ValueError`` here, before anything is sent, when
        the payload is not JSON-serialisable. Each subscription submits a new
        job: ``ep.run(p).pipe(ops.share())`` submits one for many subscribers.
        The ``POST`` is resent only when it provably never reached the server,
        so a job is never submitted twice. When the subscription is disposed
        while the ``POST`` is in flight and ``cancel_on_dispose`` is True, the
        job it created is cancelled as soon as its id arrives.
        """
        body = encode_json(
            request_body(payload, webhook=webhook, policy=policy, s3_config=s3_config)
        )

        def submitted(document: Any) -> Job:
            state = self._submitted_state(document, "run")
            return Job(self, state.id, submitted=True, state=state)

        def make_poll() -> Poll[Any]:
            return RequestPoll(
                self,
                "POST",
                "run",
                submitted,
                retry_safe=False,
                body=body,
                on_discarded=self._cancel_orphan if cancel_on_dispose else None,
            )

        return self._loop_observable(make_poll, scheduler)

    def run_sync(
        self,
        payload: Any,
        *,
        timeout: float | None = None,
        wait: float | None = None,
        webhook: str | None = None,
        policy: Mapping[str, Any] | None = None,
        s3_config: Mapping[str, Any] | None = None,
        scheduler: abc.SchedulerBase | None = None,
        cancel_on_dispose: bool = True,
    ) -> RunPodObservable[Any]:
        """Submit a job through ``POST /runsync`` and emit its output, then complete.

        ``--------output|``

        ``wait`` (seconds, default ``min(timeout, 30)``) asks the server to hold
        the request that long; when the job has not ended by then the server
        returns its id and this polls ``/status`` until the end. ``timeout``
        bounds the whole call: ``WaitTimeout`` arrives when it passes, and the
        job keeps running. Failed, cancelled and timed-out jobs arrive as
        ``JobFailed``, ``JobCancelled`` and ``JobTimedOut``. Disposing before the
        end cancels the job when ``cancel_on_dispose`` is True.
        """
        check_seconds(timeout, "timeout")
        check_seconds(wait, "wait", allow_zero=True)
        body = encode_json(
            request_body(payload, webhook=webhook, policy=policy, s3_config=s3_config)
        )
        hold = (
            wait if wait is not None else min(timeout or DEFAULT_RUNSYNC_WAIT, DEFAULT_RUNSYNC_WAIT)
        )
        chosen = scheduler or self.scheduler

        def subscribe(
            observer: abc.ObserverBase[Any], _: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            return _RunSync(self, observer, body, hold, timeout, chosen, cancel_on_dispose).start()

        return RunPodObservable(subscribe)

    def health(
        self, *, every: float | None = None, scheduler: abc.SchedulerBase | None = None
    ) -> RunPodObservable[Health]:
        """Fetch ``/health``: one ``Health``, or with ``every`` one per period until disposed.

        ``---h|`` or, with ``every``, ``---h----h----h---...``

        With ``every``, a failed request is logged and the next period tries
        again; only permanent errors (401/403, 404, 400) end the stream.
        """
        check_seconds(every, "every")
        chosen = scheduler or self.scheduler
        return self._loop_observable(lambda: _HealthPoll(self, every, chosen), chosen)

    def purge_queue(
        self, *, scheduler: abc.SchedulerBase | None = None
    ) -> RunPodObservable[PurgeResult]:
        """Remove the jobs still waiting in the queue; emit a ``PurgeResult``."""

        def convert(document: Any) -> PurgeResult:
            path = f"/{self.id}/purge-queue"
            result: PurgeResult = parse_document(
                lambda: PurgeResult.from_json(document), document, "POST", path
            )
            return result

        return self._loop_observable(
            lambda: RequestPoll(self, "POST", "purge-queue", convert, retry_safe=True), scheduler
        )

    # -- shared plumbing -----------------------------------------------------------------------

    def _loop_observable(
        self, make_poll: Callable[[], Poll[Any]], scheduler: abc.SchedulerBase | None
    ) -> RunPodObservable[Any]:
        chosen = scheduler or self.scheduler

        def subscribe(
            observer: abc.ObserverBase[Any], _: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            return PollLoop(make_poll(), observer, chosen).start()

        return RunPodObservable(subscribe)

    def _submitted_state(self, document: Any, route: str) -> JobState:
        state: JobState = parse_document(
            lambda: JobState.from_json(document), document, "POST", f"/{self.id}/{route}"
        )
        log.info(
            "submitted job %s to endpoint %s through /%s: %s",
            state.id,
            self.id,
            route,
            state.raw_status,
        )
        return state

    def _cancel_orphan(self, document: Any) -> None:
        """Cancel a job whose submission returned after its subscriber left."""
        if isinstance(document, Mapping) and isinstance(document.get("id"), str) and document["id"]:
            state = JobState.from_json(document) if "status" in document else None
            if state is not None and state.is_final:
                return
            job = Job(self, document["id"], submitted=True)
            job._cancel_once("its submission returned after the subscription was disposed")


def _choose_scheduler(
    scheduler: abc.SchedulerBase | None, io_threads: int | None
) -> abc.SchedulerBase:
    if io_threads is None:
        return scheduler if scheduler is not None else default_io_scheduler()
    if isinstance(io_threads, bool) or not isinstance(io_threads, int):
        raise TypeError(
            f"io_threads must be an int or None, got {type(io_threads).__name__} {io_threads!r}"
        )
    if io_threads < 1:
        raise ValueError(f"io_threads must be at least 1, got {io_threads}")
    if scheduler is not None:
        raise ValueError("pass either scheduler= or io_threads=, not both")
    return IoScheduler(io_threads, timer=default_timer_scheduler())


def request_body(
    payload: Any,
    *,
    webhook: str | None = None,
    policy: Mapping[str, Any] | None = None,
    s3_config: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Build the JSON body of ``/run`` and ``/runsync``.

    A mapping with an ``input`` key is sent as is, even when ``input`` is empty
    or falsy; anything else becomes ``{"input": payload}``.
    """
    if webhook is not None and not isinstance(webhook, str):
        raise TypeError(f"webhook must be a URL string or None, got {type(webhook).__name__}")
    for name, value in (("policy", policy), ("s3_config", s3_config)):
        if value is not None and not isinstance(value, Mapping):
            raise TypeError(
                f"{name} must be a mapping such as a dict or None, got "
                f"{type(value).__name__} {value!r:.60}"
            )
    if isinstance(payload, Mapping) and "input" in payload:
        body = dict(payload)
    else:
        body = {"input": payload}
    if webhook is not None:
        body["webhook"] = webhook
    if policy is not None:
        body["policy"] = dict(policy)
    if s3_config is not None:
        body["s3Config"] = dict(s3_config)
    return body


class _HealthPoll(Poll[Health]):
    """One ``/health`` request, or one per period when ``every`` is set."""

    def __init__(
        self, endpoint: Endpoint, every: float | None, scheduler: abc.SchedulerBase
    ) -> None:
        super().__init__(endpoint.http.retry)
        self._endpoint = endpoint
        self._every = every
        self._scheduler = scheduler
        self._failures = 0

    def fetch(self) -> Any:
        return self._endpoint.http.send_json("GET", "health", quiet=self._every is not None)

    def on_response(self, response: Any, emit: Emit) -> float | None:
        received = self._scheduler.now.timestamp()
        path = f"/{self._endpoint.id}/health"
        health = parse_document(
            lambda: Health.from_json(response, received_at=received), response, "GET", path
        )
        if self._failures:
            log.info(
                "health of endpoint %s is readable again after %d failed requests",
                self._endpoint.id,
                self._failures,
            )
            self._failures = 0
        emit(health)
        return self._every

    def on_failure(self, error: APIError, attempt: int, emit: Emit) -> float | None:
        if self._every is None:
            return super().on_failure(error, attempt, emit)
        if isinstance(error, AuthenticationError | NotFoundError | InvalidRequest):
            raise error
        self._failures += 1
        # Only the first failure in a row is a warning, so a long outage logs one warning.
        level = logging.WARNING if self._failures == 1 else logging.DEBUG
        log.log(
            level,
            "health request %d failed; trying again in %g s: %s",
            self._failures,
            self._every,
            error,
        )
        return self._every


class _RunSync(abc.DisposableBase):
    """``Endpoint.run_sync``: ``/runsync``, then polling if the job outlived the wait."""

    def __init__(
        self,
        endpoint: Endpoint,
        observer: abc.ObserverBase[Any],
        body: bytes,
        hold: float,
        timeout: float | None,
        scheduler: abc.SchedulerBase,
        cancel_on_dispose: bool,
    ) -> None:
        self._endpoint = endpoint
        self._observer = observer
        self._body = body
        self._hold = hold
        self._timeout = timeout
        self._scheduler = scheduler
        self._cancel = cancel_on_dispose
        self._lock = threading.Lock()
        self._done = False
        self._job: Job | None = None
        self._inner: abc.DisposableBase | None = None
        self._deadline: abc.DisposableBase | None = None

    def start(self) -> _RunSync:
        if self._timeout is not None:
            self._deadline = self._scheduler.schedule_relative(self._timeout, self._expire)
        params = {"wait": int(self._hold * 1000)}
        read_timeout = self._hold + RUNSYNC_READ_MARGIN
        connect_timeout = self._endpoint.http.timeout[0]
        submit = RequestPoll(
            self._endpoint,
            "POST",
            "runsync",
            self._submitted,
            retry_safe=False,
            body=self._body,
            params=params,
            timeout=(connect_timeout, max(read_timeout, self._endpoint.http.timeout[1])),
            on_discarded=self._endpoint._cancel_orphan if self._cancel else None,
        )
        loop = PollLoop(submit, _Callbacks(self._on_state, self._fail), self._scheduler)
        with self._lock:
            self._inner = loop
        loop.start()
        return self

    def dispose(self) -> None:
        job = self._job
        if not self._end():
            return
        with self._lock:
            inner = self._inner
        if inner is not None:
            inner.dispose()
        if self._cancel and job is not None:
            job._cancel_once("its run_sync subscription was disposed before the job ended")

    def _submitted(self, document: Any) -> JobState:
        return self._endpoint._submitted_state(document, "runsync")

    def _on_state(self, state: JobState) -> None:
        if state.is_final:
            self._finish(state)
            return
        job = Job(self._endpoint, state.id, submitted=True, state=state)
        self._job = job
        log.info(
            "job %s outlived the /runsync wait of %g s; polling its status", state.id, self._hold
        )
        # The deadline of this call covers the polling, so the inner output() has none.
        output = job.output(scheduler=self._scheduler, cancel_on_dispose=False)
        subscription = output.subscribe(
            on_next=self._emit_output, on_error=self._fail, on_completed=lambda: None
        )
        with self._lock:
            if self._done:
                stale = True
            else:
                stale = False
                self._inner = subscription
        if stale:
            subscription.dispose()

    def _finish(self, state: JobState) -> None:
        if state.status is JobStatus.COMPLETED:
            self._emit_output(state.output)
        else:
            self._fail(job_error(state))

    def _emit_output(self, output: Any) -> None:
        if self._end():
            self._observer.on_next(output)
            self._observer.on_completed()

    def _fail(self, error: Exception) -> None:
        if self._end():
            self._observer.on_error(error)

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
        job = self._job
        if not self._end():
            return
        with self._lock:
            inner = self._inner
        if inner is not None:
            inner.dispose()
        job_text = f"job {job.id}" if job is not None else "the /runsync request"
        self._observer.on_error(
            WaitTimeout(
                f"{job_text} on endpoint {self._endpoint.id} did not finish within "
                f"{self._timeout:g} s; the job keeps running on the server. "
                "Raise timeout= or cancel the job.",
                job_id=job.id if job is not None else None,
                timeout=float(self._timeout or 0),
            )
        )


class _Callbacks(abc.ObserverBase[Any]):
    """An observer made of two callbacks; completion is implied by ``on_next``."""

    def __init__(
        self, on_next: Callable[[Any], None], on_error: Callable[[Exception], None]
    ) -> None:
        self._on_next = on_next
        self._on_error = on_error

    def on_next(self, value: Any) -> None:
        self._on_next(value)

    def on_error(self, error: Exception) -> None:
        self._on_error(error)

    def on_completed(self) -> None:
        pass
