"""The job store, queue and worker pool of the local endpoint.

Everything here runs on the server's event loop thread; workers report back
through ``_LoopEvents``, which hops onto that loop. Because of that, job state
needs no locks.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rxrunpod.models import JobStatus

from ._jobs import JobPolicy, LocalJob, new_job_id, now
from ._workers import (
    Assignment,
    JobKey,
    Outcome,
    ThreadWorker,
    Worker,
    WorkerEvents,
    WorkerFactory,
    new_worker_id,
)

__all__ = ["Engine", "EngineSettings"]

logger = logging.getLogger("rxrunpod.local")

_SWEEP_INTERVAL = 0.1


@dataclass(frozen=True)
class EngineSettings:
    """Queue, retention and scaling settings; times in seconds."""

    min_workers: int = 4
    max_workers: int = 4
    idle_timeout: float = 5.0
    retention: float = 30 * 60.0
    sync_retention: float = 60.0
    # Times a job whose worker exits under it goes back to the queue before it FAILs.
    lost_job_retries: int = 2
    # Seconds a cancelled or timed-out job gets to end before its thread worker is abandoned.
    stop_grace: float = 2.0
    # Abandoned worker threads still running at which hung workers stop being replaced.
    max_abandoned_threads: int = 8


@dataclass(eq=False)
class _WorkerSlot:
    worker: Worker
    state: str = "initializing"  # initializing -> ready -> stopping
    capacity: int = 1
    jobs: set[JobKey] = field(default_factory=set)
    idle_since: float = 0.0
    listed: bool = False
    refresh: bool = False
    # True once a hung job should have got this worker abandoned but the limit was reached.
    held_at_limit: bool = False


class _LoopEvents:
    """``WorkerEvents`` that run the engine's handlers on the server loop, in report order.

    Reports from every worker go into one list, and only the report that finds
    the list empty wakes the loop through ``call_soon_threadsafe``, which writes
    to the loop's self-pipe. That one wake-up delivers every report queued
    before the loop reaches it, so a busy loop is not woken once per job.
    """

    def __init__(self, engine: Engine, loop: asyncio.AbstractEventLoop) -> None:
        self._engine = engine
        self._loop = loop
        self._lock = threading.Lock()
        self._pending: list[tuple[Callable[..., None], tuple[Any, ...]]] = []

    def _call(self, callback: Callable[..., None], *args: Any) -> None:
        with self._lock:
            self._pending.append((callback, args))
            if len(self._pending) > 1:
                return
        # A RuntimeError means the server loop closed during shutdown, so the report has no reader.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._deliver)

    def _deliver(self) -> None:
        with self._lock:
            batch, self._pending = self._pending, []
        for callback, args in batch:
            try:
                callback(*args)
            except Exception:  # pragma: no cover - a bug in the engine; the rest still apply
                logger.exception("the engine failed to apply a worker report")

    def ready(self, worker: Worker, capacity: int) -> None:
        self._call(self._engine.on_ready, worker, capacity)

    def progress(self, key: JobKey, value: Any) -> None:
        self._call(self._engine.on_progress, key, value)

    def chunk(self, key: JobKey, item: Any) -> None:
        self._call(self._engine.on_chunk, key, item)

    def finished(self, worker: Worker, key: JobKey, outcome: Outcome, capacity: int) -> None:
        self._call(self._engine.on_finished, worker, key, outcome, capacity)

    def exited(self, worker: Worker, reason: str | None) -> None:
        self._call(self._engine.on_exited, worker, reason)


class Engine:
    """Jobs, the queue and the workers, driven from the server's event loop."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        settings: EngineSettings,
        worker_factory: WorkerFactory,
        on_final: Callable[[LocalJob], None] | None = None,
    ) -> None:
        self.loop = loop
        self.settings = settings
        self._worker_factory = worker_factory
        self._events: WorkerEvents = _LoopEvents(self, loop)
        self._on_final = on_final
        self.jobs: dict[str, LocalJob] = {}
        self._queue: dict[str, LocalJob] = {}
        self._running: dict[str, LocalJob] = {}
        self._slots: dict[Worker, _WorkerSlot] = {}
        # Thread workers left to a handler that ignored its cancel; see _abandon.
        self._abandoned: dict[Worker, _WorkerSlot] = {}
        self._available: deque[_WorkerSlot] = deque()
        self._ttl_heap: list[tuple[float, int, str]] = []
        self._retained: deque[tuple[float, LocalJob]] = deque()
        self._retained_sync: deque[tuple[float, LocalJob]] = deque()
        self._sequence = 0
        self._sweeper: asyncio.TimerHandle | None = None
        self._closed = False
        self.completed = 0
        self.failed = 0
        self.retried = 0
        self._lost: dict[str, int] = {}

    # -- life cycle ------------------------------------------------------

    def start(self) -> None:
        """Start the minimum number of workers and the expiry sweeper."""
        for _ in range(self.settings.min_workers):
            self._spawn()
        self._sweeper = self.loop.call_later(_SWEEP_INTERVAL, self._sweep)

    def close(self) -> list[Worker]:
        """Stop taking work, cancel waiting requests and ask every worker to stop."""
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
        for job in self.jobs.values():
            if job.timeout_handle is not None:
                job.timeout_handle.cancel()
            job.wake_waiters()
        workers = list(self._slots)
        for worker in workers:
            worker.stop()
        return workers

    @property
    def closed(self) -> bool:
        """True once ``close()`` ran."""
        return self._closed

    # -- requests --------------------------------------------------------

    def submit(
        self, job_input: Any, policy: JobPolicy, webhook: str | None, *, sync: bool
    ) -> LocalJob:
        """Create a job, queue it and hand it to a free worker if there is one."""
        submitted = now()
        job = LocalJob(
            id=new_job_id(sync),
            input=job_input,
            sync=sync,
            policy=policy,
            webhook=webhook,
            submitted_at=submitted,
            ttl_deadline=submitted + policy.ttl,
        )
        self.jobs[job.id] = job
        self._sequence += 1
        heapq.heappush(self._ttl_heap, (job.ttl_deadline, self._sequence, job.id))
        self._queue[job.id] = job
        logger.info("job %s IN_QUEUE", job.id)
        self._dispatch()
        return job

    def cancel(self, job: LocalJob) -> None:
        """Cancel a queued or running job; a job in a final state stays as it is."""
        if job.status is JobStatus.IN_QUEUE:
            self._queue.pop(job.id, None)
            self._finish(job, JobStatus.CANCELLED)
        elif job.status is JobStatus.IN_PROGRESS:
            self._stop_on_worker(job)
            self._finish(job, JobStatus.CANCELLED)

    def retry(self, job: LocalJob) -> None:
        """Queue a FAILED or TIMED_OUT job again under the same id; the caller checks the state."""
        job.attempt += 1
        job.status = JobStatus.IN_QUEUE
        job.started_at = job.finished_at = None
        job.worker_id = None
        job.has_output = False
        job.output = job.error = job.progress = None
        job.pending_chunks = []
        job.retention_deadline = None
        job.submitted_at = now()
        self.retried += 1
        self._queue[job.id] = job
        logger.info("job %s IN_QUEUE (retry %d)", job.id, job.attempt)
        self._dispatch()

    def purge(self) -> int:
        """Cancel every queued job; return how many there were."""
        queued = list(self._queue.values())
        self._queue.clear()
        for job in queued:
            self._finish(job, JobStatus.CANCELLED)
        return len(queued)

    def take_chunks(self, job: LocalJob) -> list[Any]:
        """Return the stream chunks not yet handed out and mark them taken."""
        chunks = job.pending_chunks
        if chunks:
            job.pending_chunks = []
        return chunks

    def health(self) -> dict[str, Any]:
        """Build the ``/health`` document."""
        idle = running = initializing = 0
        free_seats = 0
        unhealthy = 0
        for slot in self._slots.values():
            if slot.state == "initializing" and slot.worker.unhealthy:
                unhealthy += 1
            elif slot.held_at_limit:
                # Kept past max_abandoned_threads with a handler that ignored its cancel: it
                # takes no work until the handler returns, so it is not counted as ready.
                unhealthy += 1
            elif slot.state == "initializing":
                initializing += 1
            elif slot.state == "ready":
                if slot.jobs:
                    running += 1
                else:
                    idle += 1
                free_seats += max(0, slot.capacity - len(slot.jobs))
        # NOTE: an abandoned worker thread (a handler that ignored its cancel or timeout) is
        # counted as unhealthy until its handler returns; it is no capacity, so never running.
        unhealthy += len(self._abandoned)
        queued = len(self._queue)
        # NOTE: RunPod does not define "throttled" precisely; here it counts the queued jobs
        # that max_workers keeps from getting a worker, at most max_workers.
        throttled = 0
        if len(self._slots) >= self.settings.max_workers:
            throttled = min(max(0, queued - free_seats - initializing), self.settings.max_workers)
        return {
            "jobs": {
                "completed": self.completed,
                "failed": self.failed,
                "inProgress": len(self._running),
                "inQueue": queued,
                "retried": self.retried,
            },
            "workers": {
                "idle": idle,
                "initializing": initializing,
                "ready": idle + running,
                "running": running,
                "throttled": throttled,
                "unhealthy": unhealthy,
            },
        }

    # -- worker reports (on the loop) -------------------------------------

    def on_ready(self, worker: Worker, capacity: int) -> None:
        slot = self._slots.get(worker)
        if slot is None or slot.state != "initializing":
            return
        slot.state = "ready"
        slot.capacity = capacity
        slot.idle_since = now()
        logger.info("worker %s ready", worker.id)
        self._list(slot)
        self._dispatch()

    def on_progress(self, key: JobKey, value: Any) -> None:
        job = self._current(key)
        if job is not None:
            job.progress = value
            job.wake_waiters()

    def on_chunk(self, key: JobKey, item: Any) -> None:
        job = self._current(key)
        if job is not None:
            job.pending_chunks.append(item)
            job.wake_waiters()

    def on_finished(self, worker: Worker, key: JobKey, outcome: Outcome, capacity: int) -> None:
        slot = self._slots.get(worker)
        job = self._current(key)
        if job is not None:
            self._finish(job, outcome.status, outcome.output, outcome.has_output, outcome.error)
        if slot is None:
            abandoned = self._abandoned.get(worker)
            if abandoned is not None:
                abandoned.jobs.discard(key)
            return
        slot.jobs.discard(key)
        slot.capacity = capacity
        if not slot.jobs:
            slot.idle_since = now()
            slot.held_at_limit = False
        if outcome.refresh_worker:
            slot.refresh = True
        if slot.refresh and not slot.jobs and slot.state == "ready":
            logger.info("worker %s refreshing after job %s", worker.id, key[0])
            self._retire(slot)
            self._spawn()
        else:
            self._list(slot)
        self._dispatch()

    def on_exited(self, worker: Worker, reason: str | None) -> None:
        slot = self._slots.pop(worker, None)
        if slot is None:
            slot = self._abandoned.pop(worker, None)
            if slot is None:
                return
            logger.info("abandoned worker %s ended: its handler returned", worker.id)
            self._abandon_held()
        if reason is not None:
            logger.error("worker %s exited: %s", worker.id, reason)
        else:
            logger.info("worker %s stopped", worker.id)
        for job_id, attempt in list(slot.jobs):
            job = self.jobs.get(job_id)
            if job is not None and job.attempt == attempt and job.status is JobStatus.IN_PROGRESS:
                message = f"worker {worker.id} exited: {reason or 'stopped'}"
                if self._closed or not self._requeue_lost(job, message):
                    self._finish(job, JobStatus.FAILED, error=message)
        if not self._closed and len(self._slots) < self.settings.min_workers:
            self._spawn()
        self._dispatch()

    # -- internals -------------------------------------------------------

    def _requeue_lost(self, job: LocalJob, message: str) -> bool:
        """Put a job whose worker died back at the head of the queue, as RunPod does.

        Counted in ``/health`` as retried. Returns False once the job has used
        up ``lost_job_retries``; the caller then marks it FAILED.
        """
        lost = self._lost.get(job.id, 0)
        if lost >= self.settings.lost_job_retries:
            self._lost.pop(job.id, None)
            return False
        self._lost[job.id] = lost + 1
        self._running.pop(job.id, None)
        if job.timeout_handle is not None:
            job.timeout_handle.cancel()
            job.timeout_handle = None
        job.attempt += 1
        job.status = JobStatus.IN_QUEUE
        job.started_at = None
        job.worker_id = None
        job.progress = None
        self.retried += 1
        self._queue = {job.id: job, **self._queue}
        logger.info("job %s IN_QUEUE again (%s)", job.id, message)
        job.wake_waiters()
        return True

    def _current(self, key: JobKey) -> LocalJob | None:
        job = self._running.get(key[0])
        if job is None or job.attempt != key[1]:
            return None
        return job

    def _spawn(self) -> None:
        if self._closed:
            return
        worker = self._worker_factory(new_worker_id(), self._events)
        self._slots[worker] = _WorkerSlot(worker)
        logger.info("worker %s initializing", worker.id)
        worker.start()

    def _retire(self, slot: _WorkerSlot) -> None:
        slot.state = "stopping"
        slot.worker.stop()

    def _list(self, slot: _WorkerSlot) -> None:
        if not slot.listed and slot.state == "ready" and len(slot.jobs) < slot.capacity:
            slot.listed = True
            self._available.append(slot)

    def _dispatch(self) -> None:
        queue = self._queue
        available = self._available
        while queue and available and not self._closed:
            slot = available.popleft()
            slot.listed = False
            if slot.state != "ready" or len(slot.jobs) >= slot.capacity:
                continue
            job_id = next(iter(queue))
            job = queue.pop(job_id)
            self._start_job(job, slot)
            self._list(slot)
        if queue and not self._closed:
            self._scale_up()

    def _start_job(self, job: LocalJob, slot: _WorkerSlot) -> None:
        job.status = JobStatus.IN_PROGRESS
        job.started_at = now()
        job.worker_id = slot.worker.id
        self._running[job.id] = job
        key = (job.id, job.attempt)
        slot.jobs.add(key)
        job.timeout_handle = self.loop.call_later(
            job.policy.execution_timeout, self._time_out, job, key
        )
        logger.info("job %s IN_PROGRESS on worker %s", job.id, slot.worker.id)
        job.wake_waiters()
        slot.worker.assign(Assignment(job.id, job.attempt, job.input, job.webhook))

    def _scale_up(self) -> None:
        starting = sum(1 for slot in self._slots.values() if slot.state == "initializing")
        active = sum(1 for slot in self._slots.values() if slot.state != "stopping")
        wanted = len(self._queue) - starting
        while wanted > 0 and active < self.settings.max_workers:
            self._spawn()
            active += 1
            wanted -= 1

    def _time_out(self, job: LocalJob, key: JobKey) -> None:
        if self._current(key) is not job:
            return
        # The hosted service reports an exceeded executionTimeout as FAILED, so TIMED_OUT
        # is never produced here.
        logger.info(
            "job %s exceeded its executionTimeout of %.3f s", job.id, job.policy.execution_timeout
        )
        self._stop_on_worker(job)
        self._finish(job, JobStatus.FAILED, error="executionTimeout exceeded")

    def _stop_on_worker(self, job: LocalJob) -> None:
        key = (job.id, job.attempt)
        for slot in (*self._slots.values(), *self._abandoned.values()):
            if key in slot.jobs:
                slot.worker.cancel(key)
                if isinstance(slot.worker, ThreadWorker) and slot.state != "abandoned":
                    self.loop.call_later(self.settings.stop_grace, self._check_stopped, slot, key)
                break

    def _check_stopped(self, slot: _WorkerSlot, key: JobKey) -> None:
        """Abandon a thread worker whose handler still runs a job it was told to stop.

        A Python thread cannot be killed, so the worker is retired and replaced to
        keep the pool's capacity; its daemon thread ends when the handler returns.
        Past ``max_abandoned_threads`` live abandoned threads, hung workers are
        kept instead, so a handler that hangs on every job cannot start threads
        without bound.
        """
        if self._closed or self._slots.get(slot.worker) is not slot or key not in slot.jobs:
            return
        if len(self._abandoned) >= self.settings.max_abandoned_threads:
            if not slot.held_at_limit:
                slot.held_at_limit = True
                logger.error(
                    "worker %s still runs job %s %.1f s after it was cancelled or timed out, "
                    "and %d abandoned worker threads still run, so it is not replaced and the "
                    "pool has one worker less until its handler returns; serve with "
                    "--isolation process (isolation='process') so hung handlers are killed",
                    slot.worker.id,
                    key[0],
                    self.settings.stop_grace,
                    len(self._abandoned),
                )
            return
        logger.warning(
            "worker %s did not stop job %s within %.1f s of its cancel or timeout; abandoning "
            "its thread, which ends when the handler returns, and starting a replacement",
            slot.worker.id,
            key[0],
            self.settings.stop_grace,
        )
        self._abandon(slot)

    def _abandon(self, slot: _WorkerSlot) -> None:
        del self._slots[slot.worker]
        self._abandoned[slot.worker] = slot
        slot.state = "abandoned"
        slot.worker.stop()
        if len(self._slots) < self.settings.min_workers:
            self._spawn()
        self._dispatch()

    def _abandon_held(self) -> None:
        """Abandon one hung worker that was kept at the limit, now that a thread ended."""
        if self._closed or len(self._abandoned) >= self.settings.max_abandoned_threads:
            return
        for slot in self._slots.values():
            if slot.held_at_limit and slot.jobs:
                logger.warning(
                    "worker %s still runs a cancelled or timed-out job; abandoning its thread "
                    "now that another abandoned thread ended, and starting a replacement",
                    slot.worker.id,
                )
                self._abandon(slot)
                return

    def _finish(
        self,
        job: LocalJob,
        status: JobStatus,
        output: Any = None,
        has_output: bool = False,
        error: str | None = None,
    ) -> None:
        self._running.pop(job.id, None)
        self._lost.pop(job.id, None)
        if job.timeout_handle is not None:
            job.timeout_handle.cancel()
            job.timeout_handle = None
        finished = now()
        job.status = status
        job.finished_at = finished
        job.has_output = has_output
        job.output = output
        job.error = error
        job.progress = None
        if status is JobStatus.COMPLETED:
            self.completed += 1
        elif status is JobStatus.FAILED:
            self.failed += 1
        if job.sync:
            job.retention_deadline = finished + self.settings.sync_retention
            self._retained_sync.append((job.retention_deadline, job))
        else:
            job.retention_deadline = finished + self.settings.retention
            self._retained.append((job.retention_deadline, job))
        if error is not None:
            logger.info("job %s %s: %.200s", job.id, status.value, error)
        else:
            logger.info("job %s %s", job.id, status.value)
        job.wake_waiters()
        if self._on_final is not None and job.webhook is not None:
            self._on_final(job)

    def _sweep(self) -> None:
        """Delete jobs whose retention or TTL ended, and stop workers idle too long."""
        current = now()
        for retained in (self._retained, self._retained_sync):
            while retained and retained[0][0] <= current:
                deadline, job = retained.popleft()
                if job.retention_deadline == deadline:
                    self._delete(job, "retention ended")
        heap = self._ttl_heap
        while heap and heap[0][0] <= current:
            deadline, _, job_id = heapq.heappop(heap)
            expired = self.jobs.get(job_id)
            if expired is not None and expired.ttl_deadline == deadline:
                self._delete(expired, "ttl expired")
        if len(heap) > 2 * len(self.jobs) + 1024:
            # Deleted jobs leave their entries behind; drop them before they pile up.
            self._ttl_heap = [entry for entry in heap if entry[2] in self.jobs]
            heapq.heapify(self._ttl_heap)
        self._stop_idle_workers(current)
        self._sweeper = self.loop.call_later(_SWEEP_INTERVAL, self._sweep)

    def _delete(self, job: LocalJob, reason: str) -> None:
        if job.status is JobStatus.IN_PROGRESS:
            self._stop_on_worker(job)
            self._running.pop(job.id, None)
        if job.timeout_handle is not None:
            job.timeout_handle.cancel()
        self._queue.pop(job.id, None)
        del self.jobs[job.id]
        job.retention_deadline = None
        logger.info("job %s deleted (%s)", job.id, reason)
        job.wake_waiters()

    def _stop_idle_workers(self, current: float) -> None:
        active = [slot for slot in self._slots.values() if slot.state != "stopping"]
        surplus = len(active) - self.settings.min_workers
        if surplus <= 0:
            return
        for slot in active:
            if surplus <= 0:
                break
            if (
                slot.state == "ready"
                and not slot.jobs
                and current - slot.idle_since >= self.settings.idle_timeout
            ):
                logger.info(
                    "worker %s idle for %.1f s, scaling down",
                    slot.worker.id,
                    current - slot.idle_since,
                )
                self._retire(slot)
                surplus -= 1
