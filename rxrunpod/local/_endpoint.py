"""``LocalEndpoint`` and ``serve``: the local endpoint on a background thread."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import math
import socket
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

from aiohttp import web

from ._engine import Engine, EngineSettings
from ._faults import FaultRule, Faults, Stats
from ._handler import ConcurrencyModifier, HandlerSpec, load_handler
from ._process_worker import ISOLATION_MODES, ProcessPool
from ._server import LocalServer
from ._webhooks import WebhookSender
from ._workers import ThreadWorker, Worker, WorkerEvents, WorkerFactory

__all__ = ["LocalEndpoint", "bind_address", "serve"]

logger = logging.getLogger("rxrunpod.local")

_T = TypeVar("_T")

_START_TIMEOUT = 30.0
_READ_TIMEOUT = 10.0
_WORKER_JOIN_TIMEOUT = 5.0


BindAddress = tuple[socket.AddressFamily, tuple[Any, ...], bool]


def bind_address(host: str, port: int) -> BindAddress:
    """Resolve ``host`` to the family and socket address to bind, and whether it is loopback.

    Prefers IPv4 unless ``host`` is an IPv6 literal. Raises ``OSError`` naming
    the host when it does not resolve.
    """
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as error:
        raise OSError(
            f"cannot resolve host {host!r} ({error}); give an IP address such as 127.0.0.1 "
            "or a name this machine resolves"
        ) from None
    if ":" not in host:
        found.sort(key=lambda entry: entry[0] != socket.AF_INET)
    family, _, _, _, address = found[0]
    try:
        loopback = ipaddress.ip_address(address[0]).is_loopback
    except ValueError:
        loopback = False
    return family, address, loopback


def _check_seconds(**durations: float) -> None:
    """Raise ``ValueError`` naming the first duration that is negative, NaN or infinite."""
    for name, value in durations.items():
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"{name} must be a finite number of 0 or more seconds, got {value!r}")


class LocalEndpoint:
    """A RunPod-compatible endpoint on this machine that runs a real handler.

    ``handler`` is a callable, a ``.py`` file, ``path.py:function`` or
    ``module:function``. ``start()`` binds ``host:port`` (port 0 picks a free
    one), starts the workers and returns once the server accepts requests.
    ``stop()`` ends every request, worker and socket. Used as a context
    manager it starts and stops itself. ``base_url`` ends in ``/v2``, so it
    can be used as ``RUNPOD_ENDPOINT_BASE_URL``; any endpoint id in the path
    reaches the same handler.

    ``workers`` sets both ``min_workers`` and ``max_workers`` unless they are
    given: between the two the pool scales with the queue, and a worker idle
    for ``idle_timeout`` seconds above the minimum stops. Each new worker
    takes ``cold_start`` seconds before it takes jobs. ``retention`` and
    ``sync_retention`` (seconds) keep finished ``/run`` and ``/runsync`` jobs
    readable. ``faults`` (rules or a ``Faults``) and ``stats`` are reachable as
    attributes and may be changed while it runs. ``health()`` and
    ``finished_at(job_id)`` read the server's state from any thread.

    ``isolation="process"`` makes each worker a child process that imports the
    handler once; a worker that crashes or hangs is replaced and takes down
    only its own jobs: they go back to the queue up to ``lost_job_retries``
    times, then FAIL. ``worker="runpod"`` (process isolation only) runs the
    handler file as ``python handler.py`` under the ``runpod`` package's own
    worker loop. See docs/isolation.md.

    A thread cannot be killed, so with ``isolation="thread"`` a worker whose
    handler has not returned ``stop_grace`` seconds after its job was
    cancelled or timed out is abandoned: it is replaced, and ``/health``
    counts its thread as unhealthy until the handler returns. Once
    ``max_abandoned_threads`` such threads run, hung workers are kept (and
    logged) instead of replaced, and ``/health`` counts them as unhealthy, not
    ready, until their handlers return.
    """

    def __init__(
        self,
        handler: str | Callable[..., Any] | HandlerSpec,
        *,
        workers: int = 4,
        api_key: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        return_aggregate_stream: bool = False,
        concurrency_modifier: ConcurrencyModifier | None = None,
        faults: Faults | Iterable[FaultRule] | None = None,
        cold_start: float = 0.0,
        min_workers: int | None = None,
        max_workers: int | None = None,
        idle_timeout: float = 5.0,
        retention: float = 30 * 60.0,
        sync_retention: float = 60.0,
        webhook_retries: int = 2,
        webhook_delay: float = 10.0,
        worker_factory: Callable[[str, WorkerEvents, HandlerSpec], Worker] | None = None,
        isolation: str | None = None,
        worker: str = "rxrunpod",
        lost_job_retries: int = 2,
        stop_grace: float = 2.0,
        max_abandoned_threads: int = 8,
    ) -> None:
        _check_seconds(
            cold_start=cold_start,
            idle_timeout=idle_timeout,
            retention=retention,
            sync_retention=sync_retention,
            webhook_delay=webhook_delay,
            stop_grace=stop_grace,
        )
        self._process: ProcessPool | None = None
        isolation = isolation or ("process" if worker == "runpod" else "thread")
        if isolation not in ISOLATION_MODES:
            raise ValueError(f"isolation must be 'thread' or 'process', got {isolation!r}")
        if isolation == "thread" and worker != "rxrunpod":
            raise ValueError(f"worker={worker!r} runs in worker processes; use isolation='process'")
        if isolation == "process":
            if worker_factory is not None:
                raise ValueError("worker_factory and isolation='process' exclude each other")
            self._process = ProcessPool(
                handler,
                worker=worker,
                return_aggregate_stream=return_aggregate_stream,
                concurrency_modifier=concurrency_modifier,
                cold_start=cold_start,
            )
            self.handler = self._process.spec
        else:
            self.handler = load_handler(
                handler,
                return_aggregate_stream=return_aggregate_stream,
                concurrency_modifier=concurrency_modifier,
            )
        self.isolation = isolation
        maximum = max_workers if max_workers is not None else max(workers, min_workers or 0)
        minimum = min_workers if min_workers is not None else min(workers, maximum)
        if maximum < 1 or minimum < 0 or minimum > maximum:
            raise ValueError(
                "need 0 <= min_workers <= max_workers and max_workers >= 1, "
                f"got min_workers={minimum} and max_workers={maximum}"
            )
        if not 0 <= port <= 65535:
            raise ValueError(f"port must be from 0 to 65535 (0 picks a free one), got {port}")
        if max_abandoned_threads < 0:
            raise ValueError(
                f"max_abandoned_threads must be 0 or more, got {max_abandoned_threads}"
            )
        self.settings = EngineSettings(
            min_workers=minimum,
            max_workers=maximum,
            idle_timeout=idle_timeout,
            retention=retention,
            sync_retention=sync_retention,
            lost_job_retries=lost_job_retries,
            stop_grace=stop_grace,
            max_abandoned_threads=max_abandoned_threads,
        )
        self.host = host
        self._requested_port = port
        self._api_key = api_key
        self.cold_start = cold_start
        self.faults = faults if isinstance(faults, Faults) else Faults(list(faults or ()))
        self.stats = Stats()
        self._webhook_retries = webhook_retries
        self._webhook_delay = webhook_delay
        self._worker_factory = worker_factory
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._engine: Engine | None = None
        self._server: LocalServer | None = None
        self._port: int | None = None

    # -- public ----------------------------------------------------------

    @property
    def port(self) -> int:
        """The TCP port the server listens on; raises ``RuntimeError`` before ``start()``."""
        if self._port is None:
            raise RuntimeError("the local endpoint is not running; call start() first")
        return self._port

    @property
    def url(self) -> str:
        """``http://host:port`` of the running server."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def base_url(self) -> str:
        """The base URL for RunPod clients, ending in ``/v2``."""
        return f"{self.url}/v2"

    @property
    def running(self) -> bool:
        """True between ``start()`` and ``stop()``."""
        return self._thread is not None

    def health(self) -> dict[str, Any]:
        """Return the ``/health`` document, read on the server's thread."""
        return self._read(lambda engine: engine.health())

    def finished_at(self, job_id: str) -> float | None:
        """Return when the server marked a job final, in ``time.monotonic()`` seconds.

        Returns None while the job is queued or running, and for a job id the
        endpoint does not know (never submitted, or its retention or ttl ended).
        On Linux ``time.monotonic()`` is CLOCK_MONOTONIC, which every process on
        the machine shares. Raises ``RuntimeError`` when the endpoint is not
        running.
        """

        def read(engine: Engine) -> float | None:
            job = engine.jobs.get(job_id)
            if job is None or not job.status.is_final:
                return None
            return job.finished_at

        return self._read(read)

    def _read(self, function: Callable[[Engine], _T]) -> _T:
        """Call ``function`` with the engine on the server's thread, where job state changes."""
        loop, engine = self._loop, self._engine
        if loop is None or engine is None:
            raise RuntimeError("the local endpoint is not running; call start() first")

        async def read() -> _T:
            return function(engine)

        return asyncio.run_coroutine_threadsafe(read(), loop).result(timeout=_READ_TIMEOUT)

    def endpoint_url(self, endpoint_id: str = "local") -> str:
        """Return the URL of one endpoint, e.g. ``.../v2/local``."""
        return f"{self.base_url}/{endpoint_id}"

    def start(self) -> LocalEndpoint:
        """Start the server thread and wait until it accepts requests; return self."""
        if self._thread is not None:
            raise RuntimeError("the local endpoint is already running")
        family, address, loopback = bind_address(self.host, self._requested_port)
        if not loopback:
            warnings.warn(
                f"the local endpoint binds {self.host}, which other machines can reach; it is a "
                "development server without TLS, so prefer 127.0.0.1",
                RuntimeWarning,
                stacklevel=2,
            )
        sock = self._bind(family, address)
        ready = threading.Event()
        failure: list[BaseException] = []
        loop = asyncio.new_event_loop()
        self._loop = loop
        thread = threading.Thread(
            target=self._main,
            args=(loop, sock, ready, failure),
            name="rxrunpod-local-server",
            daemon=True,
        )
        self._thread = thread
        thread.start()
        if not ready.wait(_START_TIMEOUT):
            self.stop()
            raise RuntimeError(f"the local endpoint did not start within {_START_TIMEOUT:.0f} s")
        if failure:
            self._thread = None
            thread.join()
            loop.close()
            raise RuntimeError(f"the local endpoint failed to start: {failure[0]}") from failure[0]
        logger.info("local endpoint serving %s at %s", self.handler.name, self.base_url)
        return self

    def stop(self) -> None:
        """Stop the server, its workers and its sockets; safe to call twice."""
        thread, loop = self._thread, self._loop
        if thread is None or loop is None:
            return
        if loop.is_running():
            future = asyncio.run_coroutine_threadsafe(self._shutdown(), loop)
            with contextlib.suppress(Exception):
                future.result(timeout=_WORKER_JOIN_TIMEOUT + 10)
            loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        self._thread = None
        self._loop = None
        self._port = None
        logger.info("local endpoint stopped")

    def __enter__(self) -> LocalEndpoint:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = self.base_url if self._port is not None else "stopped"
        return f"LocalEndpoint({self.handler.name!r}, {where})"

    # -- server thread ---------------------------------------------------

    def _bind(self, family: socket.AddressFamily, address: tuple[Any, ...]) -> socket.socket:
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
            sock.listen(1024)
        except OSError:
            sock.close()
            raise
        sock.setblocking(False)
        self._port = sock.getsockname()[1]
        return sock

    def _make_worker_factory(self) -> WorkerFactory:
        spec, cold_start, custom = self.handler, self.cold_start, self._worker_factory
        if self._process is not None:
            custom = self._process.factory

        def make(worker_id: str, events: WorkerEvents) -> Worker:
            if custom is not None:
                return custom(worker_id, events, spec)
            return ThreadWorker(worker_id, events, spec, cold_start=cold_start)

        return make

    def _main(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: socket.socket,
        ready: threading.Event,
        failure: list[BaseException],
    ) -> None:
        asyncio.set_event_loop(loop)
        try:
            try:
                loop.run_until_complete(self._open(loop, sock))
            except BaseException as error:
                failure.append(error)
                sock.close()
                ready.set()
                return
            ready.set()
            loop.run_forever()
        finally:
            with contextlib.suppress(Exception):
                loop.run_until_complete(loop.shutdown_asyncgens())
            asyncio.set_event_loop(None)
            loop.close()

    async def _open(self, loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
        webhooks = WebhookSender(
            self.stats, retries=self._webhook_retries, delay=self._webhook_delay
        )
        server: LocalServer | None = None

        def on_final(job: Any) -> None:
            if server is not None:
                server.send_webhook(job)

        engine = Engine(loop, self.settings, self._make_worker_factory(), on_final)
        server = LocalServer(
            engine, api_key=self._api_key, faults=self.faults, stats=self.stats, webhooks=webhooks
        )
        runner = web.AppRunner(
            server.application(), access_log=None, handle_signals=False, shutdown_timeout=1.0
        )
        await runner.setup()
        site = web.SockSite(runner, sock)
        await site.start()
        if self._process is not None:
            await self._process.open(loop)
        engine.start()
        self._engine, self._server, self._runner = engine, server, runner

    async def _shutdown(self) -> None:
        engine, server, runner = self._engine, self._server, self._runner
        workers = engine.close() if engine is not None else []
        if runner is not None:
            await runner.cleanup()
        if server is not None:
            await server.webhooks.close()
        loop = asyncio.get_running_loop()
        stuck = await loop.run_in_executor(None, _join_workers, workers)
        for worker_id in stuck:
            # NOTE: a thread cannot be killed; a handler that never returns keeps its thread.
            logger.warning(
                "worker %s did not stop within %.0f s; its handler is still running",
                worker_id,
                _WORKER_JOIN_TIMEOUT,
            )
        if self._process is not None:
            await self._process.close()
        await loop.shutdown_default_executor()
        self._engine = self._server = self._runner = None


def _join_workers(workers: list[Worker]) -> list[str]:
    deadline = time.monotonic() + _WORKER_JOIN_TIMEOUT
    stuck = []
    for worker in workers:
        if not worker.join(max(0.0, deadline - time.monotonic())):
            stuck.append(worker.id)
    return stuck


@contextlib.contextmanager
def serve(handler: str | Callable[..., Any] | HandlerSpec, **options: Any) -> Iterator[str]:
    """Run a ``LocalEndpoint`` for the ``with`` block and yield its base URL (ending in ``/v2``).

    Takes the same options as ``LocalEndpoint``::

        with rxrunpod.local.serve(handler, workers=4) as base_url:
            ep = rxrunpod.Endpoint("local", base_url=base_url)
    """
    endpoint = LocalEndpoint(handler, **options)
    with endpoint:
        yield endpoint.base_url
