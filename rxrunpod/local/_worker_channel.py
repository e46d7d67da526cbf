"""The worker channel: the private routes RunPod's own worker loop talks to.

With ``worker="runpod"`` each worker process runs the real ``runpod``
package's loop, which pulls jobs and pushes results over HTTP to the URLs in
its environment. This module serves those URLs on a second listener bound to
127.0.0.1 on a free port, apart from the public API, with a random token per
worker in every URL's query string. Routes (``{w}`` is the worker id):

=========================================  ==============================================
``GET  /worker/job-take/{w}``              hold until a job is assigned; respond with
                                           ``{"id", "input", "webhook"?}``, or 204 after
                                           ``HOLD`` seconds. ``job_in_progress=0`` says the
                                           worker runs nothing, so a job it never reported
                                           on was stopped.
``GET  /worker/job-take-batch/{w}``        the same with ``batch_size=N``; answers a list
``GET  /worker/job-stop/{w}``              hold until a job must stop: ``{"jobsToStop": [id]}``
``POST /worker/job-done/{w}/{job}``        the result: ``output``, ``error``, ``stopPod``
                                           (refresh the worker), ``isStream`` in the query;
                                           ``{"status": "IN_PROGRESS", "output": x}`` is a
                                           progress update
``POST /worker/job-stream/{w}/{job}``      one streamed item: ``{"output": item}``
``GET  /worker/ping/{w}``                  heartbeat; ``status=unhealthy`` reports a failed
                                           fitness check
=========================================  ==============================================

Bodies of the POST routes are JSON, whatever their content type says.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import secrets
import socket
from collections import deque
from typing import TYPE_CHECKING, Any

from aiohttp import web

from rxrunpod.models import JobStatus

from ._workers import Assignment, JobKey, Outcome

if TYPE_CHECKING:
    from ._process_worker import RunPodProcessWorker

__all__ = ["HOLD", "Seat", "WorkerChannel"]

logger = logging.getLogger("rxrunpod.local")

# Seconds a job-take or job-stop request is held open when there is nothing to hand out.
HOLD = 10.0
_MAX_BODY = 256 * 1024 * 1024
_FORGET_AFTER = 30.0
_STOP_REPEAT = 1.0


class Seat:
    """A worker process's place on the channel: its token and job hand-over (server loop only)."""

    def __init__(self, channel: WorkerChannel, worker: RunPodProcessWorker) -> None:
        self.channel = channel
        self.worker = worker
        self.token = secrets.token_urlsafe(24)
        self.offered: deque[Assignment] = deque()
        self.taken: dict[str, int] = {}
        self.stops: list[str] = []
        self.stop_requested: set[str] = set()
        self.closed = False
        self._waiters: list[asyncio.Future[None]] = []

    def environment(self) -> dict[str, str]:
        """Return the variables RunPod's worker loop reads to find its job source."""
        base = f"{self.channel.url}/worker"
        query = f"?token={self.token}"
        return {
            "RUNPOD_WEBHOOK_GET_JOB": f"{base}/job-take/$ID{query}",
            "RUNPOD_WEBHOOK_POST_OUTPUT": f"{base}/job-done/$RUNPOD_POD_ID/$ID{query}",
            "RUNPOD_WEBHOOK_POST_STREAM": f"{base}/job-stream/$RUNPOD_POD_ID/$ID{query}",
            "RUNPOD_WEBHOOK_PING": f"{base}/ping/$RUNPOD_POD_ID{query}",
            "RUNPOD_POD_ID": self.worker.id,
            "RUNPOD_POD_HOSTNAME": f"{self.worker.id}-local",
            "RUNPOD_AI_API_KEY": self.token,
            # Off: the GPU check runs nvidia-smi, the system checks probe the network.
            "RUNPOD_SKIP_GPU_CHECK": "true",
            "RUNPOD_SKIP_AUTO_SYSTEM_CHECKS": "true",
        }

    # -- from the worker object ------------------------------------------------

    def offer(self, assignment: Assignment) -> None:
        self.offered.append(assignment)
        self._wake()

    def request_stop(self, key: JobKey) -> None:
        job_id = key[0]
        for assignment in self.offered:
            if assignment.key == key:
                self.offered.remove(assignment)
                self.worker.channel_dropped(key)
                return
        if self.taken.get(job_id) == key[1]:
            self.stop_requested.add(job_id)
            self._send_stop(key)

    def _send_stop(self, key: JobKey) -> None:
        """Queue a stop signal for the job and repeat it each second until the job ends.

        The SDK ignores a signal that arrives before it started the job's task.
        """
        job_id = key[0]
        if self.closed or self.taken.get(job_id) != key[1] or job_id not in self.stop_requested:
            return
        if job_id not in self.stops:
            self.stops.append(job_id)
            self._wake()
        asyncio.get_running_loop().call_later(_STOP_REPEAT, self._send_stop, key)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.offered.clear()
            self.taken.clear()
            self._wake()
            # Reports still in flight (a late progress update) get 200 and are dropped for a
            # while, so they do not show up in the worker's log as 401 errors.
            asyncio.get_running_loop().call_later(_FORGET_AFTER, self.channel.forget, self)

    # -- from the routes -----------------------------------------------------

    def take(self, count: int) -> list[Assignment]:
        taken: list[Assignment] = []
        while self.offered and len(taken) < count:
            assignment = self.offered.popleft()
            self.taken[assignment.job_id] = assignment.attempt
            taken.append(assignment)
        return taken

    def settle_dropped(self) -> None:
        """End every job the worker took but no longer runs without having reported on it."""
        for job_id, attempt in list(self.taken.items()):
            del self.taken[job_id]
            if job_id in self.stop_requested:
                self.stop_requested.discard(job_id)
                self.worker.channel_dropped((job_id, attempt))
            else:
                outcome = Outcome(
                    JobStatus.FAILED, error=f"worker {self.worker.id} dropped the job unreported"
                )
                self.worker.channel_finished((job_id, attempt), outcome)

    async def wait(self, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        self._waiters.append(waiter)
        handle = loop.call_later(timeout, _resolve, waiter)
        try:
            await waiter
        finally:
            handle.cancel()
            if waiter in self._waiters:
                self._waiters.remove(waiter)

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            _resolve(waiter)


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class WorkerChannel:
    """The private HTTP listener for RunPod worker processes."""

    def __init__(self) -> None:
        self._seats: dict[str, Seat] = {}
        self._runner: web.AppRunner | None = None
        self.url = ""

    def seat(self, worker: RunPodProcessWorker) -> Seat:
        """Give ``worker`` its seat: the URLs, token and job hand-over it uses."""
        seat = Seat(self, worker)
        self._seats[worker.id] = seat
        return seat

    def forget(self, seat: Seat) -> None:
        if self._seats.get(seat.worker.id) is seat:
            del self._seats[seat.worker.id]

    async def open(self) -> None:
        """Listen on 127.0.0.1 on a free port."""
        app = web.Application(client_max_size=_MAX_BODY)
        app.router.add_get("/worker/job-take/{worker_id}", self._job_take)
        app.router.add_get("/worker/job-take-batch/{worker_id}", self._job_take)
        app.router.add_get("/worker/job-stop/{worker_id}", self._job_stop)
        app.router.add_post("/worker/job-done/{worker_id}/{job_id}", self._job_done)
        app.router.add_post("/worker/job-stream/{worker_id}/{job_id}", self._job_stream)
        app.router.add_get("/worker/ping/{worker_id}", self._ping)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        sock.listen(128)
        sock.setblocking(False)
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.5)
        await runner.setup()
        await web.SockSite(runner, sock).start()
        self._runner = runner
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        logger.info("worker channel listening at %s", self.url)

    async def close(self) -> None:
        """Release every held request and stop listening."""
        for seat in list(self._seats.values()):
            seat.close()
        self._seats.clear()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- routes ----------------------------------------------------------------

    def _seat_of(self, request: web.Request) -> Seat:
        seat = self._seats.get(request.match_info["worker_id"])
        offered = request.query.get("token", "")
        if seat is None or not hmac.compare_digest(offered.encode(), seat.token.encode()):
            raise web.HTTPUnauthorized(text="unknown worker or wrong token")
        return seat

    async def _job_take(self, request: web.Request) -> web.StreamResponse:
        seat = self._seat_of(request)
        seat.worker.channel_ready()
        if request.query.get("job_in_progress") == "0":
            seat.settle_dropped()
        batch = "job-take-batch" in request.path
        count = _positive(request.query.get("batch_size"), 1) if batch else 1
        deadline = asyncio.get_running_loop().time() + HOLD
        while not seat.offered and not seat.closed:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                break
            await seat.wait(remaining)
        if seat.closed or not seat.offered:
            return web.Response(status=204)
        jobs = [_job_document(assignment) for assignment in seat.take(count)]
        return web.json_response(jobs if batch else jobs[0])

    async def _job_stop(self, request: web.Request) -> web.StreamResponse:
        seat = self._seat_of(request)
        deadline = asyncio.get_running_loop().time() + HOLD
        while not seat.stops and not seat.closed:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                break
            await seat.wait(remaining)
        if not seat.stops:
            return web.Response(status=204)
        stops, seat.stops = seat.stops, []
        return web.json_response({"jobsToStop": stops})

    async def _job_done(self, request: web.Request) -> web.StreamResponse:
        seat = self._seat_of(request)
        job_id = request.match_info["job_id"]
        document = await _read_document(request)
        attempt = seat.taken.get(job_id)
        if attempt is None:
            logger.debug("worker %s reported on job %s it does not run", seat.worker.id, job_id)
            return web.json_response({})
        key = (job_id, attempt)
        if document.get("status") == JobStatus.IN_PROGRESS.value:
            seat.worker.channel_progress(key, document.get("output"))
            return web.json_response({})
        del seat.taken[job_id]
        seat.stop_requested.discard(job_id)
        seat.worker.channel_finished(key, _outcome(document, request.query.get("isStream")))
        return web.json_response({})

    async def _job_stream(self, request: web.Request) -> web.StreamResponse:
        seat = self._seat_of(request)
        job_id = request.match_info["job_id"]
        document = await _read_document(request)
        attempt = seat.taken.get(job_id)
        if attempt is not None:
            seat.worker.channel_chunk((job_id, attempt), document.get("output"))
        return web.json_response({})

    async def _ping(self, request: web.Request) -> web.StreamResponse:
        seat = self._seat_of(request)
        if request.query.get("status") == "unhealthy":
            logger.warning(
                "worker %s failed its fitness check %s: %s",
                seat.worker.id,
                request.query.get("check", "?"),
                request.query.get("reason", ""),
            )
        return web.json_response({})


def _positive(text: str | None, default: int) -> int:
    try:
        return max(1, int(text)) if text is not None else default
    except ValueError:
        return default


def _job_document(assignment: Assignment) -> dict[str, Any]:
    document: dict[str, Any] = {"id": assignment.job_id, "input": assignment.input}
    if assignment.webhook is not None:
        document["webhook"] = assignment.webhook
    return document


async def _read_document(request: web.Request) -> dict[str, Any]:
    # TODO(runpod worker sends outputs nested past MAX_JSON_DEPTH): such a result is not
    # checked against the 512-level limit of _output.py, and one too deep for json.loads
    # here raises RecursionError (a 500 to the worker) instead of failing the job.
    try:
        document = json.loads(await request.read())
    except (ValueError, UnicodeDecodeError) as error:
        raise web.HTTPBadRequest(text=f"body is not JSON: {error}") from None
    if not isinstance(document, dict):
        raise web.HTTPBadRequest(text="body must be a JSON object")
    return document


def _outcome(document: dict[str, Any], is_stream: str | None) -> Outcome:
    """Turn the worker's result document into an ``Outcome``, as the hosted service reads it."""
    has_output = "output" in document
    output = document.get("output")
    if is_stream == "true" and output == []:
        # A generator without return_aggregate_stream sends an empty list: no output.
        has_output, output = False, None
    refresh = bool(document.get("stopPod"))
    error = document.get("error")
    if error:
        text = error if isinstance(error, str) else json.dumps(error, default=str)
        return Outcome(JobStatus.FAILED, output, has_output, text, refresh)
    return Outcome(JobStatus.COMPLETED, output, has_output, None, refresh)
