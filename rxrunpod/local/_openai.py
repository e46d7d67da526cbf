"""The OpenAI-compatible route, ``/v2/{endpoint_id}/openai/v1/...``.

As on RunPod, each request becomes a job whose input is
``{"openai_route": "/v1/...", "openai_input": <request body>}``. With
``"stream": true`` the handler's yielded items go out as server-sent events:
a string is written unchanged (RunPod's vLLM worker yields ready SSE text), a
dict becomes one ``data: {json}`` event and a list one event per element;
``data: [DONE]`` ends the stream unless the handler sent it. Otherwise the
first yielded item (or the return value) is the JSON response body. An item shaped
like OpenAI's error (``{"object": "error", "code": 400, ...}``) becomes an
answer with that status.

Every error the endpoint itself answers on this route (bad body, wrong key,
injected fault, failed job) has OpenAI's shape, ``{"error": {"message",
"type", "param", "code"}}``, which the ``openai`` client reads its message
from. A handler exception is told as its type and message; its traceback goes
to the server log only.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from typing import TYPE_CHECKING, Any

from aiohttp import web

from rxrunpod.models import JobStatus

from ._jobs import JobPolicy, LocalJob

if TYPE_CHECKING:
    from ._server import LocalServer

__all__ = ["handle_openai", "openai_error"]

logger = logging.getLogger("rxrunpod.local")

_DONE = b"data: [DONE]\n\n"
_FINAL = frozenset(
    {JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.TIMED_OUT}
)
# How long a held request waits between checks of the job; the job's own
# executionTimeout bounds the whole request.
_WAIT_SLICE = 30.0


async def handle_openai(server: LocalServer, request: web.Request) -> web.StreamResponse:
    """Handle one OpenAI-compatible request by running it as a job."""
    from ._server import RUNSYNC_BODY_LIMIT, BadRequest, json_response

    route = "/" + request.match_info["path"].strip("/")
    job_input: dict[str, Any] = {"openai_route": route}
    body: Any = None
    if request.method == "POST":
        body = await server.read_json(request, RUNSYNC_BODY_LIMIT, "openai")
        if not isinstance(body, dict):
            raise BadRequest(
                400, f"the OpenAI request body must be a JSON object, got {type(body).__name__}"
            )
        job_input["openai_input"] = body
    job = server.submit(job_input, JobPolicy(), None, sync=True, route="openai")
    streaming = isinstance(body, dict) and body.get("stream") is True
    if streaming:
        return await _stream(server, request, job)
    await _wait(job, server, lambda: job.status in _FINAL)
    failure = _failure(job)
    if failure is not None:
        return failure
    items = server.engine.take_chunks(job)
    answer: Any = items[0] if items else job.output
    if isinstance(answer, list) and len(answer) == 1:
        answer = answer[0]
    return json_response(answer, _error_status(answer) or 200)


async def _wait(job: LocalJob, server: LocalServer, done: Any) -> None:
    while not done() and not server.engine.closed:
        await job.wait_change(_WAIT_SLICE)


def openai_error(status: int, message: str) -> dict[str, Any]:
    """Return OpenAI's error document for a response with ``status``."""
    if status == 401:
        kind = "authentication_error"
    elif status == 429:
        kind = "rate_limit_error"
    elif status >= 500:
        kind = "server_error"
    else:
        kind = "invalid_request_error"
    return {"error": {"message": message, "type": kind, "param": None, "code": status}}


def _failure(job: LocalJob) -> web.Response | None:
    from ._server import json_response

    if job.status is JobStatus.COMPLETED:
        return None
    return json_response(openai_error(500, _failure_message(job)), 500)


def _failure_message(job: LocalJob) -> str:
    """Say why ``job`` did not complete; log a handler's traceback instead of returning it."""
    if job.error is None:
        return f"the job ended {job.status.value}"
    try:
        detail = json.loads(job.error)
    except ValueError:
        return job.error
    if not isinstance(detail, dict) or "error_message" not in detail:
        return job.error
    traceback = detail.get("error_traceback")
    if traceback:
        logger.warning("OpenAI job %s failed in the handler:\n%s", job.id, traceback)
    kind = str(detail.get("error_type", ""))
    match = re.fullmatch(r"<class '(.+)'>", kind)
    name = match.group(1) if match else kind
    message = str(detail["error_message"])
    return f"{name}: {message}" if name else message


def _error_status(item: Any) -> int | None:
    if isinstance(item, dict) and item.get("object") == "error":
        code = item.get("code")
        return code if isinstance(code, int) and 400 <= code <= 599 else 400
    return None


def _encode(item: Any) -> bytes:
    if isinstance(item, str):
        return item.encode() if item.endswith("\n\n") else (item.rstrip("\n") + "\n\n").encode()
    if isinstance(item, bytes):
        return item
    if isinstance(item, list):
        return b"".join(_encode_event(element) for element in item)
    return _encode_event(item)


def _encode_event(item: Any) -> bytes:
    if isinstance(item, str):
        return _encode(item)
    return b"data: " + json.dumps(item, separators=(",", ":")).encode() + b"\n\n"


async def _stream(server: LocalServer, request: web.Request, job: LocalJob) -> web.StreamResponse:
    from ._server import json_response

    await _wait(job, server, lambda: bool(job.pending_chunks) or job.status in _FINAL)
    first = job.pending_chunks[0] if job.pending_chunks else None
    status = _error_status(first)
    if status is not None:
        server.engine.take_chunks(job)
        return json_response(first, status)
    if not job.pending_chunks:
        failure = _failure(job)
        if failure is not None:
            return failure
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    await response.prepare(request)
    sent_done = False
    try:
        while True:
            items = server.engine.take_chunks(job)
            if items:
                payload = b"".join(_encode(item) for item in items)
                sent_done = sent_done or _DONE in payload
                await response.write(payload)
                # Chunks and the final state may have arrived during the write,
                # and their wake-up is spent: look again before waiting.
                continue
            if job.status in _FINAL and not job.pending_chunks:
                break
            if server.engine.closed:
                break
            await job.wait_change(_WAIT_SLICE)
        if job.status is not JobStatus.COMPLETED:
            error = openai_error(500, _failure_message(job))
            await response.write(b"event: error\ndata: " + json.dumps(error).encode() + b"\n\n")
        elif not sent_done:
            await response.write(_DONE)
        await response.write_eof()
    except ConnectionError:
        logger.info("client left the OpenAI stream of job %s; cancelling it", job.id)
        server.engine.cancel(job)
    except asyncio.CancelledError:
        server.engine.cancel(job)
        raise
    return response
