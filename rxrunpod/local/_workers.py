"""Workers that run handler code for the local endpoint.

The pool talks to every worker through the small ``Worker`` interface and
hears back through ``WorkerEvents``, so a worker that lives in another process
can take a thread worker's place: it needs to accept assignments and
cancellations from any thread and report progress, stream chunks and results
through the events object.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import inspect
import json
import logging
import os
import queue
import secrets
import string
import threading
import traceback
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from rxrunpod.models import JobStatus

from . import _runpod_shim
from ._handler import HandlerSpec
from ._output import check_json

__all__ = [
    "Assignment",
    "JobKey",
    "Outcome",
    "ThreadWorker",
    "Worker",
    "WorkerEvents",
    "WorkerFactory",
    "is_async_handler",
    "new_worker_id",
    "run_handler",
    "run_sync_handler",
]

logger = logging.getLogger("rxrunpod.local")

# (job id, attempt): a result reported for an older attempt of a retried job is dropped.
JobKey = tuple[str, int]

_WORKER_ID_ALPHABET = string.ascii_lowercase + string.digits


def new_worker_id() -> str:
    """Return a worker id shaped like the hosted service's (14 lowercase letters and digits)."""
    return "".join(secrets.choice(_WORKER_ID_ALPHABET) for _ in range(14))


@dataclass(frozen=True, slots=True)
class Assignment:
    """A job handed to a worker: what the handler receives as ``job``."""

    job_id: str
    attempt: int
    input: Any
    webhook: str | None = None

    @property
    def key(self) -> JobKey:
        """The (job id, attempt) pair that the worker's reports carry."""
        return (self.job_id, self.attempt)

    def handler_argument(self) -> dict[str, Any]:
        """Build the ``job`` dict a RunPod handler is called with."""
        job: dict[str, Any] = {"id": self.job_id, "input": self.input}
        if self.webhook is not None:
            job["webhook"] = self.webhook
        return job


@dataclass(frozen=True, slots=True)
class Outcome:
    """Outcome of a job on its worker."""

    status: JobStatus
    output: Any = None
    has_output: bool = False
    error: str | None = None
    refresh_worker: bool = False


class WorkerEvents(Protocol):
    """Reports from a worker to its pool; every method may be called from any thread."""

    def ready(self, worker: Worker, capacity: int) -> None:
        """The worker finished starting and can take ``capacity`` jobs at once."""

    def progress(self, key: JobKey, value: Any) -> None:
        """The handler called ``progress_update`` for the job."""

    def chunk(self, key: JobKey, item: Any) -> None:
        """A generator handler yielded ``item``."""

    def finished(self, worker: Worker, key: JobKey, outcome: Outcome, capacity: int) -> None:
        """The job ended; the worker can now take ``capacity`` jobs at once."""

    def exited(self, worker: Worker, reason: str | None) -> None:
        """The worker stopped; ``reason`` is None after a requested stop."""


class Worker(abc.ABC):
    """One worker of the pool. Every method may be called from any thread."""

    def __init__(self, worker_id: str) -> None:
        self.id = worker_id
        # True while the worker is starting again after failed starts; /health counts it.
        self.unhealthy = False

    @abc.abstractmethod
    def start(self) -> None:
        """Start the worker; it reports ``ready`` once it can take jobs."""

    @abc.abstractmethod
    def assign(self, assignment: Assignment) -> None:
        """Run a job; the worker reports ``finished`` for it exactly once."""

    @abc.abstractmethod
    def cancel(self, key: JobKey) -> None:
        """Stop a job the worker runs; a no-op for a job it does not run."""

    @abc.abstractmethod
    def stop(self) -> None:
        """Ask the worker to stop: jobs in flight are cancelled, then ``exited`` is reported."""

    @abc.abstractmethod
    def join(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the worker to end; return whether it did."""


WorkerFactory = Callable[[str, WorkerEvents], Worker]


def _error_document(error: BaseException) -> str:
    """Encode an exception the way RunPod's worker sends it: a JSON object in a string."""
    return json.dumps(
        {
            "error_type": str(type(error)),
            "error_message": str(error),
            "error_traceback": "".join(traceback.format_exception(error)),
            "hostname": os.environ.get("RUNPOD_POD_HOSTNAME", "localhost"),
            "worker_id": os.environ.get("RUNPOD_POD_ID", "local"),
        }
    )


def _outcome_of_return(value: Any) -> Outcome:
    """Apply RunPod's rules to a handler's return value."""
    if not isinstance(value, dict):
        check_json(value, "output")
        return Outcome(JobStatus.COMPLETED, value, has_output=True)
    output = dict(value)
    error = output.pop("error", None)
    refresh = bool(output.pop("refresh_worker", False))
    check_json(output, "output")
    has_output = bool(output)
    if error:
        message = error if isinstance(error, str) else json.dumps(error, default=str)
        return Outcome(
            JobStatus.FAILED, output if has_output else None, has_output, message, refresh
        )
    return Outcome(JobStatus.COMPLETED, output if has_output else None, has_output, None, refresh)


async def run_handler(
    spec: HandlerSpec,
    assignment: Assignment,
    events: WorkerEvents,
    is_cancelled: Callable[[], bool],
) -> Outcome:
    """Run one job through the handler and return how it ended.

    Plain and ``async`` handlers end with their return value; generators and
    async generators report each item through ``events.chunk`` (collected as
    the output when ``return_aggregate_stream`` is set). A synchronous
    generator is closed at the next item after ``is_cancelled()`` turns true.
    Raises ``asyncio.CancelledError`` when the task running it is cancelled.
    """
    with _progress_route(assignment, events):
        try:
            result = spec.function(assignment.handler_argument())
            return await _settle(result, spec, assignment.key, events, is_cancelled)
        except (Exception, SystemExit) as error:
            return _failure(assignment.job_id, error)


def run_sync_handler(
    spec: HandlerSpec,
    assignment: Assignment,
    events: WorkerEvents,
    is_cancelled: Callable[[], bool],
    run_coroutine: Callable[[Coroutine[Any, Any, Outcome]], Outcome],
) -> Outcome:
    """Run one job like ``run_handler``, on the calling thread, without an event loop.

    A handler that returns an awaitable or an async generator anyway (a
    lambda around an ``async def``, say) is finished by ``run_coroutine``,
    which may raise ``asyncio.CancelledError``.
    """
    with _progress_route(assignment, events):
        try:
            result = spec.function(assignment.handler_argument())
            if inspect.isawaitable(result) or inspect.isasyncgen(result):
                return run_coroutine(_settle(result, spec, assignment.key, events, is_cancelled))
            return _outcome_of_result(result, spec, assignment.key, events, is_cancelled)
        except (Exception, SystemExit) as error:
            return _failure(assignment.job_id, error)


async def _settle(
    result: Any,
    spec: HandlerSpec,
    key: JobKey,
    events: WorkerEvents,
    is_cancelled: Callable[[], bool],
) -> Outcome:
    """Await what the handler returned and turn it into an outcome, draining generators."""
    if inspect.isawaitable(result):
        result = await result
    if inspect.isasyncgen(result):
        collected = await _drain_async_generator(result, key, events, spec.return_aggregate_stream)
        return Outcome(JobStatus.COMPLETED, collected, collected is not None)
    return _outcome_of_result(result, spec, key, events, is_cancelled)


def _outcome_of_result(
    result: Any,
    spec: HandlerSpec,
    key: JobKey,
    events: WorkerEvents,
    is_cancelled: Callable[[], bool],
) -> Outcome:
    """Turn a plain return value or a generator into an outcome, reporting each item."""
    if inspect.isgenerator(result):
        collected = _drain_generator(
            result, key, events, spec.return_aggregate_stream, is_cancelled
        )
        return Outcome(JobStatus.COMPLETED, collected, collected is not None)
    return _outcome_of_return(result)


def _failure(job_id: str, error: BaseException) -> Outcome:
    logger.debug("handler raised for job %s", job_id, exc_info=True)
    return Outcome(JobStatus.FAILED, error=_error_document(error))


@contextlib.contextmanager
def _progress_route(assignment: Assignment, events: WorkerEvents) -> Iterator[None]:
    """Send the job's ``runpod.serverless.progress_update`` calls to ``events`` meanwhile."""
    key = assignment.key
    job_id = assignment.job_id
    _runpod_shim.progress_routes[job_id] = lambda value: _report_progress(events, key, value)
    try:
        yield
    finally:
        if _runpod_shim.progress_routes.get(job_id) is not None:
            del _runpod_shim.progress_routes[job_id]


def _report_progress(events: WorkerEvents, key: JobKey, value: Any) -> None:
    try:
        check_json(value, "progress_update value")
    except TypeError as error:
        # RunPod's SDK sends progress from a background thread, so a bad value is lost, not fatal.
        logger.warning("job %s: progress update dropped: %s", key[0], error)
        return
    events.progress(key, value)


async def _drain_async_generator(
    generator: Any, key: JobKey, events: WorkerEvents, aggregate: bool
) -> list[Any] | None:
    collected: list[Any] | None = [] if aggregate else None
    index = 0
    try:
        async for item in generator:
            check_json(item, f"stream item {index}")
            index += 1
            events.chunk(key, item)
            if collected is not None:
                collected.append(item)
    finally:
        await generator.aclose()
    return collected


def _drain_generator(
    generator: Any,
    key: JobKey,
    events: WorkerEvents,
    aggregate: bool,
    is_cancelled: Callable[[], bool],
) -> list[Any] | None:
    collected: list[Any] | None = [] if aggregate else None
    try:
        for index, item in enumerate(generator):
            check_json(item, f"stream item {index}")
            events.chunk(key, item)
            if collected is not None:
                collected.append(item)
            if is_cancelled():
                break
    finally:
        generator.close()
    return collected


def is_async_handler(function: Callable[..., Any]) -> bool:
    """Tell whether ``function`` is an ``async def`` function or async generator function.

    A ``functools.partial`` is unwrapped; for another callable object its
    ``__call__`` decides.
    """
    candidates: list[Any] = [function]
    if not inspect.isroutine(function):
        candidates.append(type(function).__call__)
    return any(
        inspect.iscoroutinefunction(candidate) or inspect.isasyncgenfunction(candidate)
        for candidate in candidates
    )


class ThreadWorker(Worker):
    """A worker that is a thread of the server process.

    For a synchronous handler (a plain function or a generator function) the
    thread blocks on a ``queue.SimpleQueue`` and runs one job after another,
    so handing it a job costs one queue put and no event loop wake-up. A
    handler declared ``async def`` (a coroutine or async generator function)
    runs on the thread's own event loop instead, where ``concurrency_modifier``
    can let several jobs run at once. A synchronous handler runs its jobs one
    at a time even when ``concurrency_modifier`` grants more seats: the later
    ones are IN_PROGRESS but wait until the current one returns.

    Cancelling a running ``async`` handler raises ``asyncio.CancelledError``
    inside it. A synchronous generator stops at its next item. A plain
    synchronous function runs to its end, and its result is dropped. A job
    cancelled before it started is not run.

    NOTE: RunPod's worker (runpod 1.12) calls a synchronous handler from inside
    its running event loop; here no loop runs on the thread, so such a handler
    can call ``asyncio.run`` locally but not on RunPod.
    """

    def __init__(
        self,
        worker_id: str,
        events: WorkerEvents,
        spec: HandlerSpec,
        *,
        cold_start: float = 0.0,
    ) -> None:
        super().__init__(worker_id)
        self._events = events
        self._spec = spec
        self._cold_start = cold_start
        self._uses_loop = is_async_handler(spec.function)
        # Set up front for an async handler; made on first use for a synchronous
        # handler that returns an awaitable anyway (see _run_coroutine).
        self._loop: asyncio.AbstractEventLoop | None = (
            asyncio.new_event_loop() if self._uses_loop else None
        )
        self._inbox: asyncio.Queue[Assignment | None] = asyncio.Queue()
        self._jobs: queue.SimpleQueue[Assignment | None] = queue.SimpleQueue()
        self._tasks: dict[JobKey, asyncio.Task[Any]] = {}
        self._cancelled: set[JobKey] = set()
        self._stopping = False
        self._concurrency = 1
        target = self._main_loop if self._uses_loop else self._main_blocking
        self._thread = threading.Thread(
            target=target, name=f"rxrunpod-worker-{worker_id}", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def assign(self, assignment: Assignment) -> None:
        if self._uses_loop:
            self._call(self._inbox.put_nowait, assignment)
        else:
            # NOTE: a job still costs a thread wake-up and two GIL hand-overs, so /runsync
            # of a trivial handler stays below a server that runs it inside the request.
            self._jobs.put(assignment)

    def cancel(self, key: JobKey) -> None:
        # Added before the task lookup; _run_coroutine checks it after registering its task.
        self._cancelled.add(key)
        self._call(self._cancel_task, key)

    def stop(self) -> None:
        self._stopping = True
        if self._uses_loop:
            self._call(self._inbox.put_nowait, None)
        else:
            self._jobs.put(None)
            self._call(self._cancel_tasks)

    def join(self, timeout: float) -> bool:
        if self._thread.ident is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _call(self, callback: Callable[..., None], *args: Any) -> None:
        loop = self._loop
        if loop is None:
            return
        # A RuntimeError means the loop already closed: the worker has exited and reported it.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(callback, *args)

    def _cancel_task(self, key: JobKey) -> None:
        task = self._tasks.get(key)
        if task is not None:
            task.cancel()

    def _cancel_tasks(self) -> None:
        for task in list(self._tasks.values()):
            task.cancel()

    # -- synchronous handlers: the thread blocks on the job queue -----------

    def _main_blocking(self) -> None:
        reason: str | None = None
        try:
            self._serve_blocking()
        except Exception as error:  # pragma: no cover - a bug in the worker itself
            reason = f"worker crashed: {error!r}"
            logger.exception("worker %s crashed", self.id)
        finally:
            loop = self._loop
            if loop is not None:
                try:
                    loop.run_until_complete(loop.shutdown_asyncgens())
                finally:
                    asyncio.set_event_loop(None)
                    loop.close()
            self._events.exited(self, reason)

    def _serve_blocking(self) -> None:
        jobs = self._jobs
        if self._cold_start > 0:
            # Sleep through the cold start unless a stop request arrives first.
            with contextlib.suppress(queue.Empty):
                if jobs.get(timeout=self._cold_start) is None:
                    return
        if self._stopping:
            return
        self._events.ready(self, self._update_capacity())
        while True:
            assignment = jobs.get()
            # Jobs still queued at a stop are not reported: the pool requeues or
            # fails them when it hears that the worker exited, as for a dead worker.
            if assignment is None or self._stopping:
                break
            self._run_blocking(assignment)

    def _run_blocking(self, assignment: Assignment) -> None:
        key = assignment.key
        cancelled = self._cancelled
        if key in cancelled:
            outcome = Outcome(JobStatus.CANCELLED)
        else:
            try:
                outcome = run_sync_handler(
                    self._spec,
                    assignment,
                    self._events,
                    lambda: key in cancelled,
                    lambda coroutine: self._run_coroutine(key, coroutine),
                )
            except asyncio.CancelledError:
                outcome = Outcome(JobStatus.CANCELLED)
        cancelled.discard(key)
        self._events.finished(self, key, outcome, self._update_capacity())

    def _run_coroutine(self, key: JobKey, coroutine: Coroutine[Any, Any, Outcome]) -> Outcome:
        """Finish an awaitable a synchronous handler returned, on this thread's own loop."""
        loop = self._loop
        if loop is None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            self._loop = loop
        task = loop.create_task(coroutine)
        self._tasks[key] = task
        if key in self._cancelled or self._stopping:
            task.cancel()
        try:
            return loop.run_until_complete(task)
        finally:
            del self._tasks[key]

    # -- async handlers: the thread runs its own event loop -----------------

    def _main_loop(self) -> None:
        loop = self._loop
        assert loop is not None
        asyncio.set_event_loop(loop)
        reason: str | None = None
        try:
            loop.run_until_complete(self._serve())
        except Exception as error:  # pragma: no cover - a bug in the worker itself
            reason = f"worker crashed: {error!r}"
            logger.exception("worker %s crashed", self.id)
        finally:
            try:
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                asyncio.set_event_loop(None)
                loop.close()
            self._events.exited(self, reason)

    async def _serve(self) -> None:
        if self._cold_start > 0:
            first = await self._wait_inbox(self._cold_start)
            if first is None and self._stopping:
                return
        if self._stopping:
            return
        self._events.ready(self, self._update_capacity())
        loop = asyncio.get_running_loop()
        while True:
            assignment = await self._inbox.get()
            if assignment is None:
                break
            task = loop.create_task(self._run(assignment))
            self._tasks[assignment.key] = task
        for task in list(self._tasks.values()):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks.values()))

    async def _wait_inbox(self, timeout: float) -> Assignment | None:
        """Sleep through the cold start unless a stop request arrives first."""
        try:
            return await asyncio.wait_for(self._inbox.get(), timeout)
        except asyncio.TimeoutError:
            return None

    async def _run(self, assignment: Assignment) -> None:
        key = assignment.key
        try:
            outcome = await run_handler(
                self._spec, assignment, self._events, lambda: key in self._cancelled
            )
        except asyncio.CancelledError:
            outcome = Outcome(JobStatus.CANCELLED)
        finally:
            self._tasks.pop(key, None)
            self._cancelled.discard(key)
        self._events.finished(self, key, outcome, self._update_capacity())

    def _update_capacity(self) -> int:
        """Ask ``concurrency_modifier`` for the concurrency, as RunPod's worker does."""
        modifier = self._spec.concurrency_modifier
        if modifier is None:
            return 1
        try:
            wanted = int(modifier(self._concurrency))
        except Exception:
            logger.exception(
                "concurrency_modifier raised on worker %s; keeping %d", self.id, self._concurrency
            )
            return self._concurrency
        self._concurrency = max(1, wanted)
        return self._concurrency
