"""Workers that are child processes of the local endpoint.

``ProcessPool`` is made once per ``LocalEndpoint`` with ``isolation="process"``;
its ``factory`` builds one ``ProcessWorker`` per worker the engine requests.

- ``worker="rxrunpod"`` (``RxrunpodProcessWorker``): the child imports the
  handler once and runs jobs in a ``ThreadWorker`` of its own. Jobs go to it
  and reports come back as pickled tuples on a socket pair::

      server -> child: ("assign", job_id, attempt, input, webhook)
                       ("cancel", job_id, attempt)   ("stop",)
      child -> server: ("ready", capacity, kind)    ("failed", message)
                       ("progress", key, value)     ("chunk", key, item)
                       ("finished", key, status, output, has_output, error, refresh, capacity)
                       ("exited", reason)

  One socket and one reader thread keep every job's reports in the order the
  child sent them, each exactly once.
- ``worker="runpod"`` (``RunPodProcessWorker``): the child runs the handler
  file as ``python handler.py`` and RunPod's own worker loop takes jobs from
  the private worker channel (``_worker_channel``).

A worker that exits while it runs jobs is reported to the engine, which
requeues those jobs (see ``Engine.on_exited``). A worker that exits before it
became ready counts as a failed start; the next worker then waits a growing
delay before it starts and ``/health`` counts it as unhealthy.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from rxrunpod.models import JobStatus

from ._handler import ConcurrencyModifier, HandlerSpec, _split_target
from ._workers import Assignment, JobKey, Outcome, Worker, WorkerEvents

__all__ = [
    "ISOLATION_MODES",
    "WORKER_KINDS",
    "ProcessPool",
    "ProcessWorker",
    "RunPodProcessWorker",
    "RxrunpodProcessWorker",
    "live_children",
]

logger = logging.getLogger("rxrunpod.local")

ISOLATION_MODES = ("thread", "process")
WORKER_KINDS = ("rxrunpod", "runpod")

# Seconds a worker gets to stop a job (async handlers, generators) or to stop
# itself before the server kills its process group.
KILL_GRACE = 2.0
# RunPod's loop polls its stop channel and job queue about once a second, so it needs longer.
KILL_GRACE_RUNPOD = 5.0
STOP_GRACE = 3.0
_BACKOFF_FIRST = 0.25
_BACKOFF_MAX = 10.0

_children_lock = threading.Lock()
_children: dict[int, subprocess.Popen[bytes]] = {}


def live_children() -> list[int]:
    """Return the process ids of worker processes this process started that still run."""
    with _children_lock:
        return [pid for pid, process in _children.items() if process.poll() is None]


def _not_here(job: dict[str, Any]) -> Any:
    raise RuntimeError("with process isolation the handler runs in a worker process, not here")


def _reference(function: Callable[..., Any], what: str) -> str:
    """Return ``module:name`` for a callable that a child process can import."""
    module = getattr(function, "__module__", None)
    name = getattr(function, "__qualname__", None)
    if not module or not name or module == "__main__" or "<" in name or "." in name:
        raise ValueError(
            f"process isolation imports the {what} in each worker, so it must be a top-level "
            f"function of an importable module; got {function!r}. Pass 'module:function' or "
            "'path.py:function' instead"
        )
    imported = sys.modules.get(module)
    if imported is None or getattr(imported, name, None) is not function:
        raise ValueError(f"{module}:{name} does not name the {what} {function!r}")
    return f"{module}:{name}"


def _check_target(target: str) -> None:
    """Check that a handler target exists without importing it into the server."""
    path, _ = _split_target(target)
    if path.endswith(".py") or os.sep in path or os.path.isfile(path):
        if not os.path.isfile(path):
            raise ValueError(f"handler file not found: {path}")
        return
    try:
        found = importlib.util.find_spec(path)
    except (ImportError, ValueError) as error:
        raise ValueError(f"handler module {path!r} not found ({error})") from error
    if found is None:
        raise ValueError(f"handler module {path!r} not found")


class ProcessPool:
    """The process workers of one local endpoint and what they share.

    ``handler`` is a file, ``path.py:function``, ``module:function`` or a
    top-level function of an importable module; it is imported only in the
    workers. ``worker="runpod"`` needs a handler file and the ``runpod``
    package. Raises ``ValueError`` saying what does not fit.
    """

    def __init__(
        self,
        handler: str | Callable[..., Any] | HandlerSpec,
        *,
        worker: str = "rxrunpod",
        return_aggregate_stream: bool = False,
        concurrency_modifier: ConcurrencyModifier | None = None,
        cold_start: float = 0.0,
        kill_grace: float | None = None,
    ) -> None:
        if worker not in WORKER_KINDS:
            raise ValueError(f"worker must be one of {', '.join(WORKER_KINDS)}, got {worker!r}")
        if isinstance(handler, HandlerSpec):
            return_aggregate_stream = return_aggregate_stream or handler.return_aggregate_stream
            concurrency_modifier = concurrency_modifier or handler.concurrency_modifier
            handler = handler.function
        target = handler if isinstance(handler, str) else _reference(handler, "handler")
        _check_target(target)
        self.kind = worker
        self.target = target
        self.aggregate = return_aggregate_stream
        self.modifier = (
            _reference(concurrency_modifier, "concurrency_modifier")
            if concurrency_modifier is not None
            else None
        )
        if worker == "runpod":
            self._check_runpod_worker()
        self.cold_start = cold_start
        if kill_grace is None:
            kill_grace = KILL_GRACE_RUNPOD if worker == "runpod" else KILL_GRACE
        self.kill_grace = kill_grace
        self.spec = HandlerSpec(_not_here, return_aggregate_stream, None, name=target)
        self.channel: Any = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()
        self._failed_starts = 0

    def _check_runpod_worker(self) -> None:
        if not self.target.endswith(".py") or not os.path.isfile(self.target):
            raise ValueError(
                "--worker runpod runs the handler as 'python handler.py', so HANDLER must be "
                f"a .py file that calls runpod.serverless.start; got {self.target!r}"
            )
        if importlib.util.find_spec("runpod") is None:
            raise ValueError("--worker runpod needs the runpod package: pip install runpod")
        if self.aggregate or self.modifier is not None:
            raise ValueError(
                "with --worker runpod, return_aggregate_stream and concurrency_modifier come "
                "from the handler file's runpod.serverless.start config"
            )

    # -- life cycle (on the server loop) ---------------------------------

    async def open(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start the worker channel when RunPod's worker loop needs it."""
        self.loop = loop
        if self.kind == "runpod":
            from ._worker_channel import WorkerChannel

            self.channel = WorkerChannel()
            await self.channel.open()

    async def close(self) -> None:
        """Close the worker channel; call after every worker was joined."""
        if self.channel is not None:
            await self.channel.close()
            self.channel = None

    def factory(self, worker_id: str, events: WorkerEvents, spec: HandlerSpec) -> Worker:
        """Build one worker; the engine calls this on the server loop."""
        if self.kind == "runpod":
            return RunPodProcessWorker(worker_id, events, self)
        return RxrunpodProcessWorker(worker_id, events, self)

    # -- crash-loop accounting -------------------------------------------

    def next_delay(self) -> float:
        """Seconds a new worker waits before it starts: 0 unless starts keep failing."""
        with self._lock:
            failures = self._failed_starts
        if failures == 0:
            return 0.0
        return float(min(_BACKOFF_FIRST * 2 ** (failures - 1), _BACKOFF_MAX))

    def record_start(self, succeeded: bool) -> None:
        with self._lock:
            self._failed_starts = 0 if succeeded else self._failed_starts + 1

    @property
    def failing(self) -> bool:
        """True while the last worker start failed."""
        with self._lock:
            return self._failed_starts > 0


class ProcessWorker(Worker):
    """A worker that is a child process; subclasses define how jobs reach it.

    ``unhealthy`` is true from the start of a worker that replaces one that
    failed to start, until it is ready.
    """

    def __init__(self, worker_id: str, events: WorkerEvents, pool: ProcessPool) -> None:
        super().__init__(worker_id)
        self._events = events
        self._pool = pool
        self._lock = threading.RLock()
        self._process: subprocess.Popen[bytes] | None = None
        self._connection: Connection | None = None
        self._running: set[JobKey] = set()
        self._ready = False
        self._stopping = False
        self._killed = False
        self._exit_reported = False
        self._timers: list[threading.Timer] = []
        self._ended = threading.Event()
        self._failure: str | None = None
        self.unhealthy = pool.failing
        self.kind = "cooperative"

    # -- Worker ------------------------------------------------------------

    def start(self) -> None:
        delay = self._pool.next_delay()
        loop = self._pool.loop
        if delay > 0 and loop is not None:
            logger.info("worker %s starts in %.2f s after failed starts", self.id, delay)
            # Launched from the server loop's thread: the child's parent-death signal
            # fires when the thread that started it ends, so never from a timer thread.
            loop.call_soon_threadsafe(loop.call_later, delay, self._launch)
        else:
            self._launch()

    def stop(self) -> None:
        with self._lock:
            if self._stopping:
                return
            self._stopping = True
            process = self._process
        if process is None:
            self._report_exit(None)
            return
        self._request_stop()
        self._later(STOP_GRACE, self._kill)

    def join(self, timeout: float) -> bool:
        if self._ended.wait(timeout):
            return True
        self._kill()
        return self._ended.wait(1.0)

    def cancel(self, key: JobKey) -> None:
        with self._lock:
            if key not in self._running:
                return
        if self.kind == "sync":
            logger.info(
                "worker %s runs a plain function; killing it to stop job %s", self.id, key[0]
            )
            self._kill()
            return
        self._request_cancel(key)
        self._later(self._pool.kill_grace, self._kill_if_running, key)

    # -- for subclasses ------------------------------------------------------

    def _command(self, fd: int) -> list[str]:
        raise NotImplementedError

    def _environment(self) -> dict[str, str]:
        environment = dict(os.environ)
        # The child imports what the server can import: give it the server's sys.path.
        paths = [entry or os.getcwd() for entry in sys.path]
        environment["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
        return environment

    def _request_stop(self) -> None:
        raise NotImplementedError

    def _request_cancel(self, key: JobKey) -> None:
        raise NotImplementedError

    def _after_launch(self, connection: Connection) -> None:
        """Start whatever watches the process; it must call ``_process_ended`` at the end."""
        raise NotImplementedError

    def _mark_ready(self, capacity: int) -> None:
        with self._lock:
            self._ready = True
        self.unhealthy = False
        self._pool.record_start(succeeded=True)
        self._events.ready(self, capacity)

    def _job_started(self, key: JobKey) -> None:
        with self._lock:
            self._running.add(key)

    def _job_finished(self, key: JobKey, outcome: Outcome, capacity: int) -> None:
        with self._lock:
            if key not in self._running:
                return
            self._running.discard(key)
        self._events.finished(self, key, outcome, capacity)

    # -- process handling ----------------------------------------------------

    def _launch(self) -> None:
        with self._lock:
            if self._stopping:
                return
        server_end, child_end = socket.socketpair()
        try:
            process = subprocess.Popen(
                self._command(child_end.fileno()),
                pass_fds=(child_end.fileno(),),
                env=self._environment(),
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        except OSError as error:
            server_end.close()
            child_end.close()
            self._pool.record_start(succeeded=False)
            self._report_exit(f"worker process {self.id} could not start: {error}")
            return
        finally:
            child_end.close()
        with _children_lock:
            _children[process.pid] = process
        connection = Connection(server_end.detach())
        with self._lock:
            self._process = process
            self._connection = connection
        logger.info("worker %s started as process %d", self.id, process.pid)
        self._after_launch(connection)

    def _process_ended(self) -> None:
        """Reap the process, kill what it left in its group and report the exit."""
        process = self._process
        assert process is not None
        code = process.wait()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        with _children_lock:
            _children.pop(process.pid, None)
        if self._connection is not None:
            self._connection.close()
        for timer in self._timers:
            timer.cancel()
        with self._lock:
            deliberate = self._stopping or self._killed
            ready = self._ready
        if deliberate:
            reason = None
        else:
            reason = f"process {process.pid} {_describe_exit(code)}"
            if self._failure is not None:
                reason = f"{reason}: {self._failure}"
            if not ready:
                self._pool.record_start(succeeded=False)
        self._report_exit(reason)

    def _report_exit(self, reason: str | None) -> None:
        with self._lock:
            if self._exit_reported:
                return
            self._exit_reported = True
        self._ended.set()
        self._events.exited(self, reason)

    def _kill(self) -> None:
        with self._lock:
            process = self._process
            if process is None or process.poll() is not None:
                return
            self._killed = True
        logger.info("worker %s: killing process %d", self.id, process.pid)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)

    def _kill_if_running(self, key: JobKey) -> None:
        with self._lock:
            still = key in self._running
        if still:
            logger.info(
                "worker %s did not stop job %s within %.1f s",
                self.id,
                key[0],
                self._pool.kill_grace,
            )
            self._kill()

    def _later(self, delay: float, function: Callable[..., None], *args: Any) -> None:
        timer = threading.Timer(delay, function, args)
        timer.daemon = True
        with self._lock:
            self._timers = [t for t in self._timers if t.is_alive()]
            self._timers.append(timer)
        timer.start()

    def _child_arguments(self, mode: str, fd: int) -> list[str]:
        return [
            sys.executable,
            "-m",
            "rxrunpod.local._process_child",
            mode,
            self._pool.target,
            "--fd",
            str(fd),
            "--parent",
            str(os.getpid()),
            "--worker-id",
            self.id,
        ]


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"was killed by {name}"
    return f"exited with code {code}"


class RxrunpodProcessWorker(ProcessWorker):
    """A child process that runs the handler in a ``ThreadWorker`` and reports over a socket."""

    def _command(self, fd: int) -> list[str]:
        command = self._child_arguments("rxrunpod", fd)
        if self._pool.aggregate:
            command.append("--aggregate")
        if self._pool.cold_start > 0:
            command += ["--cold-start", str(self._pool.cold_start)]
        if self._pool.modifier is not None:
            command += ["--concurrency-modifier", self._pool.modifier]
        return command

    def assign(self, assignment: Assignment) -> None:
        self._job_started(assignment.key)
        message = (
            "assign",
            assignment.job_id,
            assignment.attempt,
            assignment.input,
            assignment.webhook,
        )
        if not self._send(message):
            logger.info("worker %s is gone; job %s waits for its exit", self.id, assignment.job_id)

    def _request_cancel(self, key: JobKey) -> None:
        self._send(("cancel", key[0], key[1]))

    def _request_stop(self) -> None:
        self._send(("stop",))

    def _send(self, message: tuple[Any, ...]) -> bool:
        connection = self._connection
        if connection is None:
            return False
        try:
            with self._lock:
                connection.send(message)
        except (OSError, ValueError):
            return False
        return True

    def _after_launch(self, connection: Connection) -> None:
        threading.Thread(
            target=self._read, args=(connection,), name=f"rxrunpod-process-{self.id}", daemon=True
        ).start()

    def _read(self, connection: Connection) -> None:
        events = self._events
        try:
            while True:
                message = connection.recv()
                tag = message[0]
                if tag == "chunk":
                    events.chunk(message[1], message[2])
                elif tag == "progress":
                    events.progress(message[1], message[2])
                elif tag == "finished":
                    _, key, status, output, has_output, error, refresh, capacity = message
                    outcome = Outcome(JobStatus(status), output, has_output, error, refresh)
                    self._job_finished(key, outcome, capacity)
                elif tag == "ready":
                    self.kind = message[2]
                    self._mark_ready(message[1])
                elif tag == "failed":
                    self._failure = message[1]
                elif tag == "exited":
                    break
        except (EOFError, OSError):
            pass
        self._process_ended()


class RunPodProcessWorker(ProcessWorker):
    """A child process running RunPod's worker loop against the worker channel."""

    def __init__(self, worker_id: str, events: WorkerEvents, pool: ProcessPool) -> None:
        super().__init__(worker_id, events, pool)
        channel = pool.channel
        if channel is None:
            raise RuntimeError("the worker channel is not open")
        self.seat = channel.seat(self)

    def _command(self, fd: int) -> list[str]:
        return self._child_arguments("runpod", fd)

    def _environment(self) -> dict[str, str]:
        environment = {
            name: value
            for name, value in super()._environment().items()
            if not name.startswith("RUNPOD_") or name == "RUNPOD_LOG_LEVEL"
        }
        environment.setdefault("RUNPOD_LOG_LEVEL", "WARN")
        environment.update(self.seat.environment())
        return environment

    def assign(self, assignment: Assignment) -> None:
        self._job_started(assignment.key)
        self._on_loop(self.seat.offer, assignment)

    def _request_cancel(self, key: JobKey) -> None:
        self._on_loop(self.seat.request_stop, key)

    def _request_stop(self) -> None:
        self._on_loop(self.seat.close)
        process = self._process
        if process is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGTERM)

    def _on_loop(self, function: Callable[..., None], *args: Any) -> None:
        loop = self._pool.loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(function, *args)

    def _after_launch(self, connection: Connection) -> None:
        threading.Thread(target=self._wait, name=f"rxrunpod-process-{self.id}", daemon=True).start()

    def _wait(self) -> None:
        self._process_ended()
        self._on_loop(self.seat.close)

    # -- called by the channel, on the server loop ---------------------------

    def channel_ready(self) -> None:
        """RunPod's loop asked for its first job: the worker finished starting."""
        # TODO(engine takes capacity updates outside ready/finished): offer a RunPod worker
        # as many jobs as its job-take-batch requests, so concurrency_modifier takes effect.
        if not self._ready:
            self._mark_ready(1)

    def channel_progress(self, key: JobKey, value: Any) -> None:
        self._events.progress(key, value)

    def channel_chunk(self, key: JobKey, item: Any) -> None:
        self._events.chunk(key, item)

    def channel_finished(self, key: JobKey, outcome: Outcome) -> None:
        self._job_finished(key, outcome, 1)

    def channel_dropped(self, key: JobKey) -> None:
        """RunPod's loop no longer runs a job it never reported: it stopped the job."""
        self._job_finished(key, Outcome(JobStatus.CANCELLED), 1)
