"""The aiohttp application: RunPod's queue API routes on top of the engine."""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from rxrunpod.models import JobStatus

from ._engine import Engine
from ._faults import FaultRule, Faults, Stats
from ._jobs import JobPolicy, LocalJob
from ._openai import handle_openai, openai_error
from ._output import MAX_JSON_DEPTH, too_deep
from ._webhooks import WebhookSender

__all__ = ["MAX_BODY", "RUNSYNC_BODY_LIMIT", "RUN_BODY_LIMIT", "LocalServer", "json_response"]

logger = logging.getLogger("rxrunpod.local")

MIB = 1024 * 1024
RUN_BODY_LIMIT = 10 * MIB
RUNSYNC_BODY_LIMIT = 20 * MIB
# aiohttp rejects bodies over this size before a route sees them; the answer is
# still RunPod's 400.
MAX_BODY = 64 * MIB

RUNSYNC_WAIT_DEFAULT_MS = 90_000
RUNSYNC_WAIT_MIN_MS = 1_000
RUNSYNC_WAIT_MAX_MS = 300_000
STREAM_WAIT_DEFAULT_MS = 10_000

# RunPod's send-requests and endpoint-configurations docs: executionTimeout at least 5 s, ttl at
# least 10 s, each at most 7 days. The local endpoint accepts shorter values, with a warning, so
# tests can run into them quickly.
POLICY_MAX_MS = 7 * 24 * 3600 * 1000
RUNPOD_POLICY_MIN_MS = {"executionTimeout": 5_000, "ttl": 10_000}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_FINAL = frozenset(
    {JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.TIMED_OUT}
)
_RETRYABLE = frozenset({JobStatus.FAILED, JobStatus.TIMED_OUT})
# Stands for a body json.loads could not parse for its depth.
_TOO_DEEP = object()


class BadRequest(Exception):
    """A request the server rejects with an error status and ``{"error": message}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def json_response(
    document: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    """Return a JSON response with ``document`` as its body."""
    return web.Response(
        body=json.dumps(document).encode(),
        status=status,
        content_type="application/json",
        headers=headers,
    )


def _error_response(
    status: int, message: str, headers: dict[str, str] | None = None, route: str | None = None
) -> web.Response:
    """Return RunPod's ``{"error": message}`` response, or OpenAI's error shape on its route."""
    document = openai_error(status, message) if route == "openai" else {"error": message}
    return json_response(document, status, headers)


class LocalServer:
    """Builds the aiohttp application and answers the routes from the engine."""

    def __init__(
        self,
        engine: Engine,
        *,
        api_key: str | None,
        faults: Faults,
        stats: Stats,
        webhooks: WebhookSender,
    ) -> None:
        self.engine = engine
        self._api_key = api_key.encode() if api_key else None
        self.faults = faults
        self.stats = stats
        self.webhooks = webhooks
        # Policy fields already warned about being below RunPod's minimum; warned once each.
        self._short_policy_warned: set[str] = set()

    def application(self) -> web.Application:
        """Build the application with every route under ``/v2/{endpoint_id}/``."""
        app = web.Application(middlewares=[self._middleware], client_max_size=MAX_BODY)
        base = "/v2/{endpoint_id}"
        routes = app.router
        routes.add_post(f"{base}/run", self.run, name="run")
        routes.add_post(f"{base}/runsync", self.runsync, name="runsync")
        routes.add_post(f"{base}/retry/{{job_id}}", self.retry, name="retry")
        for name, path, handler in (
            ("status", "status/{job_id}", self.status),
            ("stream", "stream/{job_id}", self.stream),
            ("cancel", "cancel/{job_id}", self.cancel),
            ("purge-queue", "purge-queue", self.purge_queue),
            ("health", "health", self.health),
        ):
            resource = routes.add_resource(f"{base}/{path}", name=name)
            resource.add_route("GET", handler)
            resource.add_route("POST", handler)
        openai = routes.add_resource(f"{base}/openai/{{path:v1/.*}}", name="openai")
        openai.add_route("GET", self.openai)
        openai.add_route("POST", self.openai)
        return app

    # -- middleware: routing names, auth, faults, counters, JSON errors -----

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        route = request.match_info.route.name
        if route is None:
            return await self._unknown_route(request, handler)
        self.stats.count_request(route)
        fault = self.faults.pick(route) if self.faults else None
        if fault is not None and not fault.after:
            early = await self._apply_fault(request, fault, route)
            if early is not None:
                return early
        response: web.StreamResponse
        if not self._authorized(request):
            response = _error_response(
                401, "missing or invalid API key; send 'Authorization: Bearer <key>'", route=route
            )
        else:
            try:
                response = await handler(request)
            except BadRequest as error:
                response = _error_response(error.status, error.message, route=route)
        if fault is not None and fault.after:
            late = await self._apply_fault(request, fault, route)
            if late is not None:
                return late
        self.stats.count_response(response.status)
        return response

    async def _unknown_route(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException as error:
            self.stats.count_response(error.status)
            message = f"{request.method} {request.path}: {error.reason}"
            if error.status == 404:
                message = f"no route {request.path}; routes live under /v2/<endpoint_id>/"
            headers = {"Allow": error.headers["Allow"]} if "Allow" in error.headers else None
            route = "openai" if "/openai/" in request.path else None
            return _error_response(error.status, message, headers, route)

    def _authorized(self, request: web.Request) -> bool:
        if self._api_key is None:
            return True
        header = request.headers.get("Authorization", "")
        scheme, _, credentials = header.partition(" ")
        offered = credentials.strip() if scheme.lower() == "bearer" else header.strip()
        return hmac.compare_digest(offered.encode(), self._api_key)

    async def _apply_fault(
        self, request: web.Request, fault: FaultRule, route: str
    ) -> web.StreamResponse | None:
        """Carry out ``fault``; return the answer to send instead, or None to go on normally."""
        self.stats.count_fault(fault.kind)
        logger.info("fault %s injected on %s %s", fault.kind, request.method, route)
        if fault.kind == "slow":
            await asyncio.sleep(fault.delay)
            return None
        if fault.kind == "drop":
            if request.transport is not None:
                request.transport.abort()
            raise asyncio.CancelledError()
        status = fault.status or 500
        headers = None
        if status in (429, 503):
            headers = {"Retry-After": f"{fault.retry_after:g}"}
        self.stats.count_response(status)
        messages = {
            429: "too many requests (injected fault); retry after the Retry-After delay",
            500: "internal server error (injected fault)",
            502: "bad gateway (injected fault)",
            503: "service unavailable (injected fault); retry after the Retry-After delay",
        }
        return _error_response(status, messages.get(status, "injected fault"), headers, route)

    # -- request parsing ---------------------------------------------------

    async def read_json(self, request: web.Request, limit: int, route: str) -> Any:
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise BadRequest(400, _too_large(route, limit, None)) from None
        if len(body) > limit:
            raise BadRequest(400, _too_large(route, limit, len(body)))
        if not body:
            expected = "an OpenAI request body" if route == "openai" else "an 'input' field"
            raise BadRequest(400, f"/{route} needs a JSON body with {expected}; the body was empty")
        try:
            document = json.loads(body, parse_constant=_reject_constant)
        except (ValueError, UnicodeDecodeError) as error:
            raise BadRequest(400, f"request body is not valid JSON: {error}") from None
        except RecursionError:
            document = _TOO_DEEP
        if document is _TOO_DEEP or too_deep(document, body):
            raise BadRequest(
                400,
                f"request body is nested more than {MAX_JSON_DEPTH} levels deep, the limit of "
                "the local endpoint; flatten the input",
            )
        return document

    def _job_request(self, document: Any, route: str) -> tuple[Any, JobPolicy, str | None]:
        if not isinstance(document, dict):
            raise BadRequest(
                400, f"/{route} body must be a JSON object, got {type(document).__name__}"
            )
        if "input" not in document:
            raise BadRequest(
                400, f"/{route} body is missing the 'input' field, e.g. {{\"input\": {{...}}}}"
            )
        policy = _parse_policy(document.get("policy"), self._short_policy_warned)
        webhook = document.get("webhook")
        if webhook is not None and (
            not isinstance(webhook, str) or not webhook.startswith(("http://", "https://"))
        ):
            raise BadRequest(400, f"'webhook' must be an http(s) URL string, got {webhook!r:.80}")
        return document["input"], policy, webhook

    def _job(self, request: web.Request) -> LocalJob:
        job_id = request.match_info["job_id"]
        job = self.engine.jobs.get(job_id)
        if job is None:
            raise BadRequest(
                404, f"job {job_id} not found; it never existed, or its retention or ttl ended"
            )
        return job

    # -- routes ------------------------------------------------------------

    def submit(
        self, job_input: Any, policy: JobPolicy, webhook: str | None, *, sync: bool, route: str
    ) -> LocalJob:
        """Create a job and count the submission under ``route``."""
        self.stats.count_submission(route)
        return self.engine.submit(job_input, policy, webhook, sync=sync)

    async def run(self, request: web.Request) -> web.StreamResponse:
        document = await self.read_json(request, RUN_BODY_LIMIT, "run")
        job_input, policy, webhook = self._job_request(document, "run")
        job = self.submit(job_input, policy, webhook, sync=False, route="run")
        return json_response({"id": job.id, "status": JobStatus.IN_QUEUE.value})

    async def runsync(self, request: web.Request) -> web.StreamResponse:
        wait_ms = _wait_parameter(
            request, RUNSYNC_WAIT_DEFAULT_MS, RUNSYNC_WAIT_MIN_MS, RUNSYNC_WAIT_MAX_MS
        )
        document = await self.read_json(request, RUNSYNC_BODY_LIMIT, "runsync")
        job_input, policy, webhook = self._job_request(document, "runsync")
        job = self.submit(job_input, policy, webhook, sync=True, route="runsync")
        deadline = self.engine.loop.time() + wait_ms / 1000
        while job.status not in _FINAL and not self.engine.closed:
            remaining = deadline - self.engine.loop.time()
            if remaining <= 0:
                break
            await job.wait_change(remaining)
        answer = job.document()
        if job.status in _FINAL and job.pending_chunks and not job.has_output:
            answer["stream"] = [{"output": item} for item in self.engine.take_chunks(job)]
        return json_response(answer)

    async def status(self, request: web.Request) -> web.StreamResponse:
        return json_response(self._job(request).document())

    async def stream(self, request: web.Request) -> web.StreamResponse:
        wait_ms = _wait_parameter(request, STREAM_WAIT_DEFAULT_MS, 0, RUNSYNC_WAIT_MAX_MS)
        job = self._job(request)
        deadline = self.engine.loop.time() + wait_ms / 1000
        while not job.pending_chunks and job.status not in _FINAL and not self.engine.closed:
            remaining = deadline - self.engine.loop.time()
            if remaining <= 0:
                break
            await job.wait_change(remaining)
            if self.engine.jobs.get(job.id) is not job:
                raise BadRequest(404, f"job {job.id} not found; its retention or ttl ended")
        answer: dict[str, Any] = {"id": job.id, "status": job.status.value}
        answer["stream"] = [{"output": item} for item in self.engine.take_chunks(job)]
        if job.status in _FINAL:
            if job.error is not None:
                answer["error"] = job.error
            if job.has_output:
                answer["output"] = job.output
        return json_response(answer)

    async def cancel(self, request: web.Request) -> web.StreamResponse:
        job = self._job(request)
        self.engine.cancel(job)
        return json_response({"id": job.id, "status": job.status.value})

    async def retry(self, request: web.Request) -> web.StreamResponse:
        job = self._job(request)
        if job.status not in _RETRYABLE:
            raise BadRequest(
                400,
                f"job {job.id} is {job.status.value}; only FAILED or TIMED_OUT jobs can be retried",
            )
        self.engine.retry(job)
        return json_response({"id": job.id, "status": job.status.value})

    async def purge_queue(self, request: web.Request) -> web.StreamResponse:
        removed = self.engine.purge()
        return json_response({"removed": removed, "status": "completed"})

    async def health(self, request: web.Request) -> web.StreamResponse:
        return json_response(self.engine.health())

    async def openai(self, request: web.Request) -> web.StreamResponse:
        return await handle_openai(self, request)

    def send_webhook(self, job: LocalJob) -> None:
        """Deliver the final document of ``job`` to its webhook URL."""
        if job.webhook is None:
            return
        document = job.document()
        document["input"] = job.input
        document["webhook"] = job.webhook
        self.webhooks.send(job.webhook, document)


def _too_large(route: str, limit: int, size: int | None) -> str:
    actual = f" is {size} bytes and" if size is not None else ""
    return (
        f"request body{actual} exceeds the {limit // MIB} MiB limit of /{route}; "
        "upload large inputs elsewhere and pass a URL"
    )


def _policy_milliseconds(field: str, value: Any) -> int:
    """Return ``value`` as whole milliseconds, or raise ``BadRequest`` naming the allowed range."""
    whole = isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    if isinstance(value, bool) or not whole or not 1 <= value <= POLICY_MAX_MS:
        raise BadRequest(
            400,
            f"'policy.{field}' must be a whole number of milliseconds from 1 to {POLICY_MAX_MS} "
            f"(7 days), got {value!r:.40}",
        )
    return int(value)


def _reject_constant(name: str) -> Any:
    # Python's json accepts NaN and Infinity, but JSON (RFC 8259) has no such words and strict
    # parsers reject them; an accepted NaN would come back in outputs and webhooks as invalid JSON.
    raise ValueError(f"{name} is not a JSON value; send null or a finite number")


def _wait_parameter(request: web.Request, default: int, low: int, high: int) -> int:
    text = request.query.get("wait")
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise BadRequest(
            400, f"query parameter 'wait' must be an integer in milliseconds, got {text!r:.40}"
        ) from None
    return min(max(value, low), high)


def _parse_policy(policy: Any, warned: set[str]) -> JobPolicy:
    if policy is None:
        return JobPolicy()
    if not isinstance(policy, dict):
        raise BadRequest(400, f"'policy' must be a JSON object, got {type(policy).__name__}")
    values: dict[str, float] = {}
    for field, attribute in (("executionTimeout", "execution_timeout"), ("ttl", "ttl")):
        value = policy.get(field)
        if value is None:
            continue
        milliseconds = _policy_milliseconds(field, value)
        minimum = RUNPOD_POLICY_MIN_MS[field]
        if milliseconds < minimum and field not in warned:
            warned.add(field)
            logger.warning(
                "policy.%s %d ms is below RunPod's minimum of %d ms; the hosted service "
                "rejects it with 400 (warned once)",
                field,
                milliseconds,
                minimum,
            )
        values[attribute] = milliseconds / 1000
    low_priority = policy.get("lowPriority")
    if low_priority is not None and not isinstance(low_priority, bool):
        raise BadRequest(
            400, f"'policy.lowPriority' must be true or false, got {low_priority!r:.40}"
        )
    return JobPolicy(**values)
