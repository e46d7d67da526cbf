"""The RunPod SDK's asyncio client shape on an ``aiohttp.ClientSession``, with typed results.

``AsyncioEndpoint`` keeps the method names of ``runpod.AsyncioEndpoint``
(``run``, ``health``, ``purge_queue``) and ``AsyncioJob`` those of
``runpod.AsyncioJob`` (``status``, ``output``, ``stream``, ``cancel``). They
return the records of ``rxrunpod.models`` and raise the errors of
``rxrunpod.errors``, as the observable API does. Each object's ``rx`` attribute offers the
same calls as cold observables.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json as jsonlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping
from typing import Any, TypeVar

import aiohttp
from reactivex import Observable, abc
from reactivex.disposable import Disposable

from .errors import (
    APIError,
    JobError,
    MalformedResponse,
    RequestError,
    WaitTimeout,
)
from .http import HttpClient, RetryPolicy, encode_json
from .job import job_error
from .models import Health, JobState, JobStatus, PurgeResult, StreamBatch
from .observable import RunPodObservable
from .polling import PollPolicy

__all__ = ["AsyncioEndpoint", "AsyncioJob", "ObservableEndpoint", "ObservableJob"]

_T = TypeVar("_T")

log = logging.getLogger("rxrunpod.aio")


class _AnswerView:
    """The parts of an HTTP response that the shared error translator reads: reason and headers."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.reason = response.reason
        self.headers: Mapping[str, str] = response.headers


class AsyncioEndpoint:
    """A RunPod endpoint driven through an ``aiohttp.ClientSession`` on the running loop.

    ``api_key`` defaults to ``RUNPOD_API_KEY`` and ``base_url`` to
    ``RUNPOD_ENDPOINT_BASE_URL`` or ``https://api.runpod.ai/v2``. The session
    belongs to the caller and is never closed here. Transient failures are
    retried by ``retry`` with the same rules as ``Endpoint``: ``POST /run`` is
    resent only when the request provably never reached the server.
    """

    def __init__(
        self,
        endpoint_id: str,
        session: aiohttp.ClientSession,
        api_key: str | None = None,
        base_url: str | None = None,
        *,
        poll: PollPolicy | None = None,
        retry: RetryPolicy | None = None,
        timeout: aiohttp.ClientTimeout | None = None,
    ) -> None:
        # HttpClient is used only for its address, headers and error translation,
        # so the sync and asyncio clients word every error alike; it never sends.
        self._wire = HttpClient(endpoint_id, api_key, base_url)
        self._wire.close()
        self.session = session
        self.poll = poll if poll is not None else PollPolicy()
        self.retry = retry if retry is not None else RetryPolicy()
        self.timeout = (
            timeout if timeout is not None else aiohttp.ClientTimeout(sock_connect=5, sock_read=30)
        )
        self._loop = _running_loop_or_none()
        self._background: set[asyncio.Task[Any]] = set()
        self.rx = ObservableEndpoint(self)

    @property
    def endpoint_id(self) -> str:
        """Id of the endpoint, as in the URL path."""
        return self._wire.endpoint_id

    @property
    def base_url(self) -> str:
        """Base URL of the API, without a trailing slash."""
        return self._wire.base_url

    def __repr__(self) -> str:
        key = "set" if self._wire.has_api_key else "not set"
        return (
            f"AsyncioEndpoint(endpoint_id={self.endpoint_id!r}, base_url={self.base_url!r}, "
            f"api_key {key})"
        )

    async def run(self, endpoint_input: Any) -> AsyncioJob:
        """Submit a job with ``endpoint_input`` as its ``input`` and return its handle.

        Each call submits a new job. The job is cancelled on the server when a
        later ``output()`` or ``stream()`` of this handle is cancelled.
        """
        answer = await self.request("POST", "run", json={"input": endpoint_input}, retry_safe=False)
        state = self._parse(JobState.from_json, answer, "POST", "run", None)
        log.info("job %s submitted to endpoint %s: %s", state.id, self.endpoint_id, state.status)
        return AsyncioJob(self, state.id, submitted=True)

    async def health(self) -> Health:
        """Fetch one ``/health`` snapshot of the endpoint's jobs and workers."""
        answer = await self.request("GET", "health", retry_safe=True)
        return self._parse(
            lambda document: Health.from_json(document, received_at=time.time()),
            answer,
            "GET",
            "health",
            None,
        )

    async def purge_queue(self) -> PurgeResult:
        """Remove every job still waiting in the queue; running jobs are left alone."""
        answer = await self.request("POST", "purge-queue", retry_safe=True)
        return self._parse(PurgeResult.from_json, answer, "POST", "purge-queue", None)

    def job(self, job_id: str) -> AsyncioJob:
        """Return a handle for a job submitted elsewhere; it never cancels the job by itself."""
        if not isinstance(job_id, str) or not job_id:
            raise ValueError(f"job_id must be a non-empty string, got {job_id!r}")
        return AsyncioJob(self, job_id)

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: object = None,
        retry_safe: bool,
        job_id: str | None = None,
        quiet: bool = False,
    ) -> Any:
        """Send a request below the endpoint, retry transient failures, return the decoded JSON.

        Raises a subclass of ``APIError``. ``quiet`` logs the exchange at DEBUG
        (poll ticks) instead of INFO.
        """
        body = None if json is None else encode_json(json)
        attempt = 0
        while True:
            attempt += 1
            try:
                return await self._send(method, path, body, job_id, quiet)
            except APIError as error:
                safe = retry_safe or _request_not_sent(error)
                delay = self.retry.delay_before_retry(error, attempt, retry_safe=safe)
                if delay is None:
                    raise
                log.info(
                    "retrying %s %s in %.2f s after attempt %d: %s",
                    method,
                    path,
                    delay,
                    attempt,
                    error,
                )
            await asyncio.sleep(delay)

    async def _send(
        self, method: str, path: str, body: bytes | None, job_id: str | None, quiet: bool
    ) -> Any:
        started = time.monotonic()
        try:
            async with self.session.request(
                method,
                self._wire.url(path),
                data=body,
                headers=self._wire.headers(),
                timeout=self.timeout,
            ) as response:
                content = await response.read()
                view = _AnswerView(response)
                status = response.status
        except (aiohttp.ClientError, asyncio.TimeoutError) as failure:
            raise self._request_error(failure, method, path, job_id) from failure
        log.log(
            logging.DEBUG if quiet else logging.INFO,
            "%s /%s/%s -> %d in %.0f ms",
            method,
            self.endpoint_id,
            path,
            status,
            (time.monotonic() - started) * 1000,
        )
        if status >= 400:
            raise self._wire._error_for(status, view, content, method, path, job_id)  # type: ignore[arg-type]
        return self._wire._decode(content, status, method, path, job_id)

    def _request_error(
        self, failure: BaseException, method: str, path: str, job_id: str | None
    ) -> RequestError:
        asked = f"{method} /{self.endpoint_id}/{path}"
        cause = f"{type(failure).__name__}: {failure}" if str(failure) else type(failure).__name__
        if isinstance(failure, _NOT_SENT_FAILURES):
            advice = "Check that the endpoint is running and that the base URL is right."
            message = f"{asked} could not connect to {self.base_url} ({cause}). {advice}"
        else:
            message = (
                f"{asked} got no usable answer ({cause}). The request may have reached the server."
            )
        return RequestError(
            message,
            method=method,
            path=f"/{self.endpoint_id}/{path}",
            endpoint_id=self.endpoint_id,
            job_id=job_id,
        )

    def _parse(
        self, parser: Callable[[Any], _T], answer: Any, method: str, path: str, job_id: str | None
    ) -> _T:
        try:
            return parser(answer)
        except ValueError as error:
            body = jsonlib.dumps(answer, default=str)[:200]
            raise MalformedResponse(
                f"{method} /{self.endpoint_id}/{path} returned a document of the wrong shape: "
                f"{error}. It starts with {body!r}.",
                body_start=body,
                method=method,
                path=f"/{self.endpoint_id}/{path}",
                status_code=200,
                endpoint_id=self.endpoint_id,
                job_id=job_id,
            ) from error

    def _in_background(self, coroutine: Coroutine[Any, Any, Any]) -> None:
        loop = _running_loop_or_none()
        if loop is None:
            coroutine.close()
            log.warning(
                "no running event loop left to send a request of endpoint %s", self.endpoint_id
            )
            return
        task = loop.create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _observable_loop(self) -> asyncio.AbstractEventLoop:
        loop = _running_loop_or_none() or self._loop
        if loop is None or loop.is_closed():
            raise RuntimeError(
                "the observable form of AsyncioEndpoint needs the event loop of its aiohttp "
                "session; create the AsyncioEndpoint inside a coroutine, or subscribe from one"
            )
        return loop


# aiohttp raises these only when no connection to the server could be opened,
# so the request provably never arrived and resending it cannot duplicate a job.
_NOT_SENT_FAILURES = (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError)


def _request_not_sent(error: APIError) -> bool:
    return isinstance(error, RequestError) and isinstance(error.__cause__, _NOT_SENT_FAILURES)


class AsyncioJob:
    """A job on an ``AsyncioEndpoint``.

    ``cancel_on_dispose`` (True for jobs this client submitted) cancels the job
    on the server when ``output()`` is cancelled or a ``stream()`` is left
    before the job ended, so abandoned work stops using GPU time.
    """

    def __init__(
        self,
        endpoint: AsyncioEndpoint,
        job_id: str,
        *,
        submitted: bool = False,
        cancel_on_dispose: bool | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.id = job_id
        self.cancel_on_dispose = submitted if cancel_on_dispose is None else cancel_on_dispose
        self.last_state: JobState | None = None
        self.rx = ObservableJob(self)

    @property
    def job_id(self) -> str:
        """Id of the job; the RunPod SDK's name for ``id``."""
        return self.id

    def __repr__(self) -> str:
        status = self.last_state.status if self.last_state is not None else "not fetched"
        endpoint_id = self.endpoint.endpoint_id
        return f"AsyncioJob(id={self.id!r}, endpoint_id={endpoint_id!r}, status={status})"

    async def state(self) -> JobState:
        """Fetch ``/status`` once and return the whole ``JobState``."""
        return await self._fetch_state(quiet=False)

    async def status(self) -> JobStatus:
        """Fetch the job's status once; ``JobStatus`` compares equal to RunPod's strings."""
        return (await self.state()).status

    async def output(self, timeout: float | None = None) -> Any:
        """Poll until the job ends and return its output.

        Raises ``JobFailed``, ``JobCancelled`` or ``JobTimedOut`` (with the
        final ``JobState``) when the job ends without a result. Raises
        ``WaitTimeout`` when ``timeout`` seconds pass first, and the job then
        keeps running. Cancelling the awaiting task cancels the job on the
        server when ``cancel_on_dispose`` is set.
        """
        if timeout is not None and timeout <= 0:
            raise ValueError(
                f"timeout must be a positive number of seconds or None, got {timeout!r}"
            )
        try:
            state = await asyncio.wait_for(self._wait_until_final(), timeout)
        except asyncio.TimeoutError:
            raise WaitTimeout(
                f"job {self.id} did not finish within {timeout:g} s and keeps running on the "
                "server. Raise timeout= or cancel the job.",
                job_id=self.id,
                timeout=float(timeout or 0),
            ) from None
        except asyncio.CancelledError:
            self._cancel_abandoned()
            raise
        error = _final_error(state)
        if error is not None:
            raise error
        return state.output

    async def stream(self) -> AsyncIterator[Any]:
        """Yield each streamed output of the job as ``/stream`` hands it out.

        Ends when the job ends; raises ``JobFailed``, ``JobCancelled`` or
        ``JobTimedOut`` after the items when it ends without a result. Leaving
        the ``async for`` early (or cancelling the task) cancels the job on the
        server when ``cancel_on_dispose`` is set.
        """
        finished = False
        try:
            async for output in self._stream_outputs():
                yield output
            finished = True
        finally:
            if not finished:
                self._cancel_abandoned()

    async def cancel(self) -> JobState:
        """Ask the server to cancel the job and return the state it reports."""
        answer = await self.endpoint.request(
            "POST", f"cancel/{self.id}", retry_safe=True, job_id=self.id
        )
        state = self.endpoint._parse(
            lambda document: JobState.from_json(document, job_id=self.id),
            answer,
            "POST",
            "cancel",
            self.id,
        )
        log.info("job %s cancel requested: %s", self.id, state.status)
        self.last_state = state
        return state

    async def _fetch_state(self, *, quiet: bool) -> JobState:
        path = f"status/{self.id}"
        answer = await self.endpoint.request(
            "GET", path, retry_safe=True, job_id=self.id, quiet=quiet
        )
        state = self.endpoint._parse(
            lambda document: JobState.from_json(document, job_id=self.id),
            answer,
            "GET",
            path,
            self.id,
        )
        previous = self.last_state
        if previous is None or previous.status is not state.status:
            log.info("job %s is %s", self.id, state.status)
        self.last_state = state
        return state

    async def _wait_until_final(self) -> JobState:
        interval: float | None = None
        previous: JobStatus | None = None
        while True:
            state = await self._fetch_state(quiet=True)
            if state.is_final:
                return state
            changed = state.status is not previous
            previous = state.status
            interval = self.endpoint.poll.next_interval(interval, changed=changed)
            await asyncio.sleep(interval)

    async def _stream_outputs(self) -> AsyncIterator[Any]:
        interval: float | None = None
        path = f"stream/{self.id}"
        while True:
            answer = await self.endpoint.request(
                "GET", path, retry_safe=False, job_id=self.id, quiet=True
            )
            batch = self.endpoint._parse(StreamBatch.from_json, answer, "GET", path, self.id)
            for output in batch.outputs:
                yield output
            if batch.status.is_final:
                break
            # The server keeps an empty /stream request open for a while, so the
            # next request follows a batch with items at once.
            if batch.outputs:
                interval = None
            else:
                interval = self.endpoint.poll.next_interval(interval, changed=False)
                await asyncio.sleep(interval)
        if batch.status is not JobStatus.COMPLETED:
            error = _final_error(await self._fetch_state(quiet=False))
            if error is not None:
                raise error

    def _cancel_abandoned(self) -> None:
        if not self.cancel_on_dispose or (self.last_state is not None and self.last_state.is_final):
            return
        # The awaiting task is being cancelled, so the request goes out from a task of its own.
        # NOTE: asyncio.run cancels tasks still pending when its main coroutine returns,
        # so a cancel request started just before that may never be sent.
        self.endpoint._in_background(self._cancel_quietly())

    async def _cancel_quietly(self) -> None:
        try:
            await self.cancel()
        except APIError as error:
            log.warning("could not cancel abandoned job %s: %s", self.id, error)


def _final_error(state: JobState) -> JobError | None:
    return job_error(state) if state.is_final and state.status is not JobStatus.COMPLETED else None


def _running_loop_or_none() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class ObservableEndpoint:
    """The calls of an ``AsyncioEndpoint`` as cold observables (``endpoint.rx``).

    Each subscription runs the call as a task on the session's loop and emits
    on that loop's thread; disposing cancels the task.
    """

    def __init__(self, endpoint: AsyncioEndpoint) -> None:
        self._endpoint = endpoint

    def run(self, endpoint_input: Any) -> Observable[AsyncioJob]:
        """Observable form of ``AsyncioEndpoint.run``: submits one job per subscription."""
        return _from_coroutine(self._endpoint, lambda: self._endpoint.run(endpoint_input))

    def health(self) -> Observable[Health]:
        """Observable form of ``AsyncioEndpoint.health``."""
        return _from_coroutine(self._endpoint, self._endpoint.health)

    def purge_queue(self) -> Observable[PurgeResult]:
        """Observable form of ``AsyncioEndpoint.purge_queue``."""
        return _from_coroutine(self._endpoint, self._endpoint.purge_queue)


class ObservableJob:
    """The calls of an ``AsyncioJob`` as cold observables (``job.rx``)."""

    def __init__(self, job: AsyncioJob) -> None:
        self._job = job

    def state(self) -> Observable[JobState]:
        """Observable form of ``AsyncioJob.state``."""
        return _from_coroutine(self._job.endpoint, self._job.state)

    def status(self) -> Observable[JobStatus]:
        """Observable form of ``AsyncioJob.status``."""
        return _from_coroutine(self._job.endpoint, self._job.status)

    def output(self, timeout: float | None = None) -> Observable[Any]:
        """Observable form of ``AsyncioJob.output``; disposing acts as cancelling the task there."""
        return _from_coroutine(self._job.endpoint, lambda: self._job.output(timeout))

    def stream(self) -> Observable[Any]:
        """Observable form of ``AsyncioJob.stream``: one item per streamed output."""
        return _from_async_iterator(self._job.endpoint, self._job.stream)

    def cancel(self) -> Observable[JobState]:
        """Observable form of ``AsyncioJob.cancel``."""
        return _from_coroutine(self._job.endpoint, self._job.cancel)


def _from_coroutine(endpoint: AsyncioEndpoint, call: Callable[[], Awaitable[_T]]) -> Observable[_T]:
    async def emit(observer: abc.ObserverBase[_T]) -> None:
        value = await call()
        observer.on_next(value)
        observer.on_completed()

    return _on_loop(endpoint, emit)


def _from_async_iterator(
    endpoint: AsyncioEndpoint, open_iterator: Callable[[], AsyncIterator[_T]]
) -> Observable[_T]:
    async def emit(observer: abc.ObserverBase[_T]) -> None:
        iterator = open_iterator()
        try:
            async for item in iterator:
                observer.on_next(item)
        finally:
            aclose = getattr(iterator, "aclose", None)
            if aclose is not None:
                await aclose()
        observer.on_completed()

    return _on_loop(endpoint, emit)


def _on_loop(
    endpoint: AsyncioEndpoint, emit: Callable[[abc.ObserverBase[_T]], Awaitable[None]]
) -> Observable[_T]:
    """Build a cold observable whose subscriptions run ``emit`` as a task on the endpoint's loop."""

    def subscribe(
        observer: abc.ObserverBase[_T], scheduler: abc.SchedulerBase | None = None
    ) -> abc.DisposableBase:
        loop = endpoint._observable_loop()

        async def guarded() -> None:
            try:
                await emit(observer)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                observer.on_error(error)

        if _running_loop_or_none() is loop:
            task = loop.create_task(guarded())
            return Disposable(lambda: _cancel_task(task))
        future = asyncio.run_coroutine_threadsafe(guarded(), loop)
        return Disposable(lambda: _cancel_task(future))

    return RunPodObservable(subscribe)


def _cancel_task(task: asyncio.Future[Any] | concurrent.futures.Future[Any]) -> None:
    task.cancel()
