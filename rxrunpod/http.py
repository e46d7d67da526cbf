"""The wire layer: one pooled ``requests.Session`` per client, typed errors, retries.

This module never imports ``reactivex``. ``HttpClient.request_json`` is the
blocking call with retries (it sleeps between attempts);
``HttpClient.send_json`` makes exactly one attempt, so the observable layer can
schedule the retries itself on a scheduler (virtual time in tests, the timer
thread in production) using ``RetryPolicy.delay_before_retry``.

Retry rules: connection failures and the statuses 429, 502, 503 and 504 are
transient. A request marked ``retry_safe`` (GET, ``/cancel``, ``/purge-queue``)
is retried after any transient failure and after a 500, because sending it
again changes nothing on the server. Other requests (``POST /run``,
``/runsync``, ``/stream``) are retried only when the request provably did not
reach the server: the connection could not be opened, or the server responded
with 429. So the library never submits the same job twice.
"""

from __future__ import annotations

import json as jsonlib
import logging
import os
import random
import ssl
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar

import requests
import urllib3.exceptions
from requests.adapters import HTTPAdapter

from .errors import (
    APIError,
    AuthenticationError,
    EndpointNotFound,
    InvalidRequest,
    JobNotFound,
    MalformedResponse,
    NotFoundError,
    RateLimited,
    RequestError,
    ServerError,
)

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_MAX_RESPONSE_SIZE",
    "DEFAULT_POOL_SIZE",
    "DEFAULT_TIMEOUT",
    "HttpClient",
    "RetryPolicy",
    "encode_json",
    "gave_up",
    "request_not_sent",
]

log = logging.getLogger("rxrunpod.http")

_Sent = TypeVar("_Sent")

DEFAULT_BASE_URL = "https://api.runpod.ai/v2"
DEFAULT_TIMEOUT = (5.0, 30.0)
"""Connect and read timeouts in seconds for every request."""

DEFAULT_POOL_SIZE = 12
"""Connections kept per host; matches the default I/O pool size of ``rxrunpod.scheduling``."""

DEFAULT_MAX_RESPONSE_SIZE = 64 * 1024 * 1024
"""Bytes of one response body read at most before the request fails (64 MiB).

RunPod documents a maximum payload of 20 MB for ``/runsync``
(docs.runpod.io, "Operation reference"); the default leaves room above it for
JSON escaping while keeping a runaway body from exhausting memory.
"""

BODY_START_LENGTH = 200
"""How many characters of a bad response's body an error message shows."""

TRANSIENT_STATUSES = frozenset({429, 502, 503, 504})
RETRY_SAFE_STATUSES = TRANSIENT_STATUSES | {500}
"""Statuses after which a ``retry_safe`` request is sent again.

One 500 on a status poll must not end a pipeline that tracks thousands of jobs.
"""
ENDPOINT_ROUTES = frozenset({"run", "runsync", "health", "purge-queue"})


@dataclass(frozen=True)
class RetryPolicy:
    """Retry settings for transient failures: how many attempts and how long to wait.

    ``max_attempts`` counts the first attempt, so 1 means no retries. The wait
    before retry ``n`` (1-based) is ``base_delay * 2 ** (n - 1)`` capped at
    ``max_delay``, with "equal jitter": a random value between half and all of
    it. A ``Retry-After`` response header replaces that wait; when it asks for
    more than ``max_retry_after`` seconds the error is raised instead.
    """

    max_attempts: int = 5
    base_delay: float = 0.25
    max_delay: float = 8.0
    max_retry_after: float = 60.0
    random: Callable[[], float] = field(default=random.random, repr=False, compare=False)

    def __post_init__(self) -> None:
        if isinstance(self.max_attempts, bool) or not isinstance(self.max_attempts, int):
            raise TypeError(
                f"RetryPolicy.max_attempts must be an int, got "
                f"{type(self.max_attempts).__name__} {self.max_attempts!r:.40}"
            )
        for name in ("base_delay", "max_delay", "max_retry_after"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise TypeError(
                    f"RetryPolicy.{name} must be a number of seconds, got "
                    f"{type(value).__name__} {value!r:.40}"
                )
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {self.max_attempts}")
        if self.base_delay < 0 or self.max_delay < 0 or self.max_retry_after < 0:
            raise ValueError("base_delay, max_delay and max_retry_after must not be negative")

    def delay_before_retry(
        self, error: Exception, attempt: int, *, retry_safe: bool
    ) -> float | None:
        """Return the seconds to wait before attempt ``attempt + 1``, or None to give up.

        ``attempt`` is the number of attempts made so far (1 after the first).
        """
        if attempt >= self.max_attempts or not is_transient(error, retry_safe=retry_safe):
            return None
        if isinstance(error, RateLimited | ServerError) and error.retry_after is not None:
            return error.retry_after if error.retry_after <= self.max_retry_after else None
        ceiling = min(self.max_delay, self.base_delay * 2.0 ** (attempt - 1))
        return ceiling / 2 + self.random() * ceiling / 2


NO_RETRY = RetryPolicy(max_attempts=1)


def gave_up(error: APIError, attempts: int) -> APIError:
    """Record on ``error`` that the request was sent ``attempts`` times; return ``error``.

    With more than one attempt the message says so, because a final read
    timeout after five attempts took five times the read timeout.
    """
    error.attempts = attempts
    if attempts > 1 and "Gave up after" not in error.message:
        error.message = f"{error.message} Gave up after {attempts} attempts."
        error.args = (error.message, *error.args[1:])
    return error


def is_transient(error: Exception, *, retry_safe: bool) -> bool:
    """Tell whether ``error`` may go away when the same request is sent again.

    For a request that is not ``retry_safe`` only failures that prove the
    server never saw the request count: an unopened connection or a 429.
    """
    if isinstance(error, RateLimited):
        return True
    if not retry_safe:
        return isinstance(error, RequestError) and request_not_sent(error)
    if isinstance(error, RequestError):
        return True
    if isinstance(error, MalformedResponse):
        return error.body_truncated
    return isinstance(error, APIError) and error.status_code in RETRY_SAFE_STATUSES


def request_not_sent(error: BaseException) -> bool:
    """Tell whether a failed request provably never reached the server.

    True when the connection could not be opened (refused, DNS failure,
    connect timeout, a TLS certificate that failed verification); False for
    a reset or read timeout after sending.
    """
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(
            current,
            requests.exceptions.ConnectTimeout
            | urllib3.exceptions.NewConnectionError
            | urllib3.exceptions.ConnectTimeoutError
            | ConnectionRefusedError
            | ssl.SSLCertVerificationError,
        ):
            return True
        if isinstance(current, urllib3.exceptions.MaxRetryError) and current.reason is not None:
            current = current.reason
            continue
        arguments = getattr(current, "args", ())
        nested = next((arg for arg in arguments if isinstance(arg, BaseException)), None)
        current = current.__cause__ or current.__context__ or nested
    return False


def encode_json(document: object) -> bytes:
    """Encode a request body; raise ``TypeError``/``ValueError`` for what JSON cannot carry.

    NaN and infinity are rejected because RunPod's JSON parser rejects them.
    """
    try:
        return jsonlib.dumps(document, allow_nan=False, separators=(",", ":")).encode()
    except TypeError as error:
        raise TypeError(f"the payload is not JSON-serialisable: {error}") from error
    except ValueError as error:
        raise ValueError(f"the payload is not valid JSON: {error}") from error


class HttpClient:
    """The HTTP side of one endpoint: base URL, auth, timeouts, pooled connections.

    ``api_key`` defaults to ``RUNPOD_API_KEY`` and ``base_url`` to
    ``RUNPOD_ENDPOINT_BASE_URL`` or ``https://api.runpod.ai/v2``. The key is
    checked here: one that is not a ``str`` raises ``TypeError``; an empty one,
    or one holding a control character, a space or non-ASCII text, raises
    ``ValueError`` without showing the key. An empty ``RUNPOD_API_KEY`` counts
    as unset (no ``Authorization`` header). A ``session``
    passed in is used as is and never closed by ``close()``; otherwise the
    client owns a session whose connection pool keeps ``pool_size``
    connections per host, so polling reuses connections. A response body
    longer than ``max_response_size`` bytes ends the request with
    ``MalformedResponse``.
    """

    def __init__(
        self,
        endpoint_id: str,
        api_key: str | None = None,
        base_url: str | None = None,
        *,
        session: requests.Session | None = None,
        timeout: tuple[float, float] = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
        pool_size: int = DEFAULT_POOL_SIZE,
        max_response_size: int = DEFAULT_MAX_RESPONSE_SIZE,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.endpoint_id = _check_endpoint_id(endpoint_id)
        if api_key is not None:
            self._api_key: str | None = _check_api_key(api_key, "api_key")
        else:
            from_environment = os.environ.get("RUNPOD_API_KEY") or None
            self._api_key = (
                None
                if from_environment is None
                else _check_api_key(from_environment, "RUNPOD_API_KEY")
            )
        self.base_url = _check_base_url(
            base_url or os.environ.get("RUNPOD_ENDPOINT_BASE_URL") or DEFAULT_BASE_URL
        )
        self.timeout = _check_timeout(timeout)
        if retry is not None and not isinstance(retry, RetryPolicy):
            raise TypeError(f"retry must be a RetryPolicy or None, got {type(retry).__name__}")
        self.retry = retry if retry is not None else RetryPolicy()
        self.max_response_size = _check_positive_int(max_response_size, "max_response_size")
        self._sleep = sleep
        self._owns_session = session is None
        self.session = session if session is not None else _pooled_session(pool_size)

    def __repr__(self) -> str:
        key = "set" if self._api_key else "not set"
        return (
            f"HttpClient(endpoint_id={self.endpoint_id!r}, base_url={self.base_url!r}, "
            f"api_key {key})"
        )

    @property
    def has_api_key(self) -> bool:
        """True when requests carry an ``Authorization`` header."""
        return self._api_key is not None

    def url(self, path: str) -> str:
        """Return the absolute URL of ``path`` below the endpoint, e.g. ``url("run")``."""
        return f"{self.base_url}/{self.endpoint_id}/{path.lstrip('/')}"

    def headers(self) -> dict[str, str]:
        """Return the auth and JSON headers of every request; never log them."""
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self._api_key is not None:
            headers["Authorization"] = f"Bearer {self._api_key}"
        return headers

    def close(self) -> None:
        """Close the pooled connections, unless the session was passed in."""
        if self._owns_session:
            self.session.close()

    def request_json(
        self,
        method: str,
        path: str,
        *,
        json: object = None,
        params: Mapping[str, Any] | None = None,
        retry_safe: bool,
        job_id: str | None = None,
        timeout: float | tuple[float, float] | None = None,
    ) -> Any:
        """Send a request, retrying transient failures, and return the decoded JSON response.

        Blocks, sleeping between attempts. Raises a subclass of ``APIError``.
        """
        body = None if json is None else encode_json(json)

        def send() -> Any:
            return self.send_json(
                method, path, body=body, params=params, job_id=job_id, timeout=timeout
            )

        return self._with_retries(method, path, send, retry_safe=retry_safe)

    def _with_retries(
        self, method: str, path: str, send: Callable[[], _Sent], *, retry_safe: bool
    ) -> _Sent:
        """Call ``send`` until it succeeds or the retry policy gives up, sleeping in between."""
        attempt = 0
        while True:
            attempt += 1
            try:
                return send()
            except APIError as error:
                delay = self.retry.delay_before_retry(error, attempt, retry_safe=retry_safe)
                if delay is None:
                    gave_up(error, attempt)
                    raise
                log.info(
                    "retrying %s %s in %.2f s after attempt %d: %s",
                    method,
                    path,
                    delay,
                    attempt,
                    error,
                )
                self._sleep(delay)

    def send_json(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        params: Mapping[str, Any] | None = None,
        job_id: str | None = None,
        timeout: float | tuple[float, float] | None = None,
        quiet: bool = False,
    ) -> Any:
        """Make exactly one attempt and return the decoded JSON response.

        ``body`` is already encoded (see ``encode_json``). ``quiet`` logs the
        exchange at DEBUG instead of INFO, for poll ticks. Raises a subclass of
        ``APIError``: ``RequestError`` when no response arrived.
        """
        started = time.monotonic()
        response = self._send(method, path, body=body, params=params, timeout=timeout, stream=True)
        try:
            content = self._read_body(response, method, path, job_id)
        finally:
            response.close()
        elapsed_ms = (time.monotonic() - started) * 1000
        log.log(
            logging.DEBUG if quiet else logging.INFO,
            "%s %s -> %d in %.0f ms",
            method,
            self._log_path(path),
            response.status_code,
            elapsed_ms,
        )
        if response.status_code >= 400:
            raise self._error_for(response.status_code, response, content, method, path, job_id)
        if not content.strip() and response.status_code != 204:
            raise MalformedResponse(
                f"{method} {self._log_path(path)} returned {response.status_code} with an empty "
                f"body instead of a JSON document. Check that the base URL {self.base_url!r} "
                "points at a RunPod API.",
                **self._context(method, path, response.status_code, job_id),
            )
        return self._decode(content, response.status_code, method, path, job_id)

    def open_stream(
        self,
        method: str,
        path: str,
        *,
        json: object = None,
        headers: Mapping[str, str] | None = None,
    ) -> requests.Response:
        """Open a streamed response (``stream=True``) after checking its status.

        The caller closes the response. The request is resent only while it
        provably did not reach the server. Raises a subclass of ``APIError``
        for an error status.
        """
        body = None if json is None else encode_json(json)

        def send() -> requests.Response:
            response = self._send(method, path, body=body, headers=headers, stream=True)
            self.raise_for_answer(response, method, path)
            return response

        response = self._with_retries(method, path, send, retry_safe=False)
        log.info("%s %s -> %d (streaming)", method, self._log_path(path), response.status_code)
        return response

    def raise_for_answer(
        self, response: requests.Response, method: str, path: str, job_id: str | None = None
    ) -> None:
        """Raise the typed error for an error status; the one place responses become errors.

        Reads and closes the body of an error response and leaves a 2xx response untouched.
        """
        if response.status_code < 400:
            return
        try:
            content = self._read_body(response, method, path, job_id)
        except MalformedResponse:
            content = b""
        finally:
            response.close()
        raise self._error_for(response.status_code, response, content, method, path, job_id)

    def _send(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | tuple[float, float] | None = None,
        stream: bool,
    ) -> requests.Response:
        all_headers = self.headers()
        if headers:
            all_headers.update(headers)
        try:
            return self.session.request(
                method,
                self.url(path),
                data=body,
                params=dict(params) if params else None,
                headers=all_headers,
                timeout=timeout if timeout is not None else self.timeout,
                stream=stream,
            )
        except requests.RequestException as error:
            translated = self._request_error(error, method, path, timeout)
            if not self._mentions_key(error):
                raise translated from error
        # The key reached a foreign message (an invalid header echoes its
        # value), so the cause is left out: raised here, outside the except
        # block, not even __context__ refers to it.
        raise translated

    def _read_body(
        self, response: requests.Response, method: str, path: str, job_id: str | None
    ) -> bytes:
        self._check_declared_size(response, method, path, job_id)
        received = bytearray()
        # urllib3 would raise on a short body and drop the bytes that did
        # arrive; compare against Content-Length here instead, so the error
        # can show them.
        response.raw.enforce_content_length = False
        failure: Exception | None = None
        try:
            for chunk in response.iter_content(chunk_size=65536):
                received.extend(chunk)
                if len(received) > self.max_response_size:
                    raise self._too_large(response, method, path, job_id, f"over {len(received)}")
        except (requests.RequestException, urllib3.exceptions.HTTPError) as error:
            failure = error
        declared = response.headers.get("Content-Length")
        encoded = response.headers.get("Content-Encoding", "identity") != "identity"
        short = (
            declared is not None
            and declared.isdigit()
            and not encoded
            and len(received) < int(declared)
        )
        if failure is None and not short:
            return bytes(received)
        received = bytearray(self._redact(bytes(received)))
        cause = type(failure).__name__ if failure else f"{declared} bytes were declared"
        raise MalformedResponse(
            f"{method} {self._log_path(path)} returned {response.status_code} but the body "
            f"broke off after {len(received)} bytes ({cause}); the response is lost, so send "
            "the request again.",
            body_start=_body_start(bytes(received)),
            body_truncated=True,
            **self._context(method, path, response.status_code, job_id),
        ) from failure

    def _check_declared_size(
        self, response: requests.Response, method: str, path: str, job_id: str | None
    ) -> None:
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > self.max_response_size:
            raise self._too_large(response, method, path, job_id, declared)

    def _too_large(
        self,
        response: requests.Response,
        method: str,
        path: str,
        job_id: str | None,
        size: str,
    ) -> MalformedResponse:
        response.close()
        return MalformedResponse(
            f"{method} {self._log_path(path)} returned {response.status_code} with a body of "
            f"{size} bytes, more than the limit of {self.max_response_size} bytes. Raise "
            "max_response_size= on Endpoint (or HttpClient) if such large results are expected.",
            **self._context(method, path, response.status_code, job_id),
        )

    def _decode(
        self, content: bytes, status: int, method: str, path: str, job_id: str | None
    ) -> Any:
        if not content.strip():
            return None
        try:
            return jsonlib.loads(content)
        except ValueError as error:
            content = self._redact(content)
            raise MalformedResponse(
                f"{method} {self._log_path(path)} returned {status} with a body that is not "
                f"valid JSON "
                f"({error}); it starts with {_body_start(content)!r}. Check that the base URL "
                f"{self.base_url!r} points at a RunPod API.",
                body_start=_body_start(content),
                **self._context(method, path, status, job_id),
            ) from error

    def _error_for(
        self,
        status: int,
        response: requests.Response,
        content: bytes,
        method: str,
        path: str,
        job_id: str | None,
    ) -> APIError:
        content = self._redact(content)
        server_message = _server_message(content)
        request = f"{method} {self._log_path(path)}"
        status_line = f"{status} {response.reason or ''}".strip()
        detail = f": {server_message}" if server_message else ""
        context = self._context(method, path, status, job_id, server_message)
        if status in (401, 403):
            key_state = "The API key was rejected." if self._api_key else "No API key was sent."
            return AuthenticationError(
                f"{request} returned {status_line}{detail}. {key_state} Set the RUNPOD_API_KEY "
                "environment variable or pass api_key= to Endpoint.",
                **context,
            )
        if status == 404:
            return self._not_found(request, status_line, detail, path, job_id, context)
        if status == 429:
            retry_after = _retry_after(response.headers.get("Retry-After"))
            wait = (
                f" The server request to wait {retry_after:g} s." if retry_after is not None else ""
            )
            return RateLimited(
                f"{request} returned {status_line}{detail}.{wait} Lower the request rate or the "
                f"concurrency, {self._retry_advice(retry_after)}",
                retry_after=retry_after,
                **context,
            )
        if status == 400:
            if not path.startswith("retry/"):
                advice = "Check the payload and parameters."
            elif server_message and "can be retried" in server_message.lower():
                # The server has stated the rule already (the local endpoint does).
                advice = "Check the job's status first."
            else:
                advice = (
                    "Only FAILED or TIMED_OUT jobs can be retried; check the job's status first."
                )
            return InvalidRequest(
                f"{request} was rejected as invalid ({status_line}){detail}. {advice}",
                **context,
            )
        if status >= 500:
            retry_after = _retry_after(response.headers.get("Retry-After"))
            not_resent = _not_resent_advice(method, path)
            if not_resent is not None:
                advice = not_resent
            elif retry_after is not None and retry_after > self.retry.max_retry_after:
                advice = f"Try again later, {self._retry_advice(retry_after)}"
            else:
                advice = "Try again later."
            return ServerError(
                f"{request} returned {status_line}{detail}. The endpoint failed to handle the "
                f"request. {advice}",
                retry_after=retry_after,
                **context,
            )
        return APIError(f"{request} returned {status_line}{detail}.", **context)

    def _retry_advice(self, retry_after: float | None) -> str:
        """Name the retry setting that would have let the request wait and succeed."""
        limit = self.retry.max_retry_after
        if retry_after is not None and retry_after > limit:
            return (
                f"or raise RetryPolicy.max_retry_after (now {limit:g} s) to at least "
                f"{retry_after:g} s so the client waits as requested."
            )
        return "or raise RetryPolicy.max_attempts."

    def _not_found(
        self,
        request: str,
        status_line: str,
        detail: str,
        path: str,
        job_id: str | None,
        context: dict[str, Any],
    ) -> APIError:
        if job_id is not None:
            # The server's own text usually explains already why the job is unknown.
            reason = (
                f"Check that job {job_id!r} belongs to endpoint {self.endpoint_id!r}."
                if detail
                else f"Job {job_id!r} is unknown to endpoint {self.endpoint_id!r}: it was never "
                "submitted there, its result expired, or it was purged."
            )
            return JobNotFound(f"{request} returned {status_line}{detail}. {reason}", **context)
        if path.split("/", 1)[0] in ENDPOINT_ROUTES:
            return EndpointNotFound(
                f"{request} returned {status_line}{detail}. Endpoint {self.endpoint_id!r} "
                f"was not found at {self.base_url}; check the endpoint id and the base URL.",
                **context,
            )
        return NotFoundError(f"{request} returned {status_line}{detail}.", **context)

    def _request_error(
        self,
        error: requests.RequestException,
        method: str,
        path: str,
        timeout: float | tuple[float, float] | None,
    ) -> RequestError:
        request = f"{method} {self._log_path(path)}"
        host = urllib.parse.urlsplit(self.base_url).netloc
        not_resent = _not_resent_advice(method, path)
        if request_not_sent(error):
            what = f"could not connect to {host} ({_root_cause(error)})"
            advice = "Check that the endpoint is running and that the base URL is right."
        elif isinstance(error, requests.exceptions.ReadTimeout):
            limit = timeout if timeout is not None else self.timeout
            read = limit[1] if isinstance(limit, tuple) else limit
            what = f"got no response from {host} within the read timeout of {read:g} s per attempt"
            advice = (
                "The request may have reached the server; raise timeout= if the server is slow."
                if not_resent is None
                else f"{not_resent} Raise timeout= if the server is slow."
            )
        elif isinstance(error, requests.exceptions.InvalidHeader):
            what = f"was not sent because a header is invalid ({_root_cause(error)})"
            advice = "Check api_key / RUNPOD_API_KEY for stray characters."
        else:
            what = f"lost the connection to {host} ({_root_cause(error)})"
            advice = (
                not_resent
                if not_resent is not None
                else "The request may have reached the server; try again."
            )
        return RequestError(
            self._scrub(f"{request} {what}. {advice}"), **self._context(method, path, None, None)
        )

    def _key_forms(self) -> list[str]:
        """Return the key as a foreign message may spell it: as is, ``repr``-escaped, stripped."""
        if self._api_key is None:
            return []
        forms = {self._api_key, repr(self._api_key)[1:-1], self._api_key.strip()}
        return sorted((form for form in forms if form), key=len, reverse=True)

    def _scrub(self, text: str) -> str:
        """Blank the API key out of text that came from a foreign error."""
        for form in self._key_forms():
            text = text.replace(form, "<api key>")
        return text

    def _mentions_key(self, error: BaseException) -> bool:
        """Return whether the text of ``error`` or of any error it chains contains the API key."""
        forms = self._key_forms()
        if not forms:
            return False
        seen: set[int] = set()
        pending: list[BaseException] = [error]
        while pending:
            current = pending.pop()
            if id(current) in seen:
                continue
            seen.add(id(current))
            text = f"{current} {current.args!r}"
            if any(form in text for form in forms):
                return True
            following = [current.__cause__, current.__context__, getattr(current, "reason", None)]
            following += [arg for arg in current.args if isinstance(arg, BaseException)]
            pending.extend(item for item in following if isinstance(item, BaseException))
        return False

    def _context(
        self,
        method: str,
        path: str,
        status: int | None,
        job_id: str | None,
        server_message: str | None = None,
    ) -> dict[str, Any]:
        return {
            "method": method,
            "path": self._log_path(path),
            "status_code": status,
            "server_message": server_message,
            "endpoint_id": self.endpoint_id,
            "job_id": job_id,
        }

    def _log_path(self, path: str) -> str:
        return f"/{self.endpoint_id}/{path.lstrip('/')}"

    def _redact(self, content: bytes) -> bytes:
        """Blank the API key out of a response body that becomes part of an error.

        The error page of a proxy or server may echo the request headers back.
        """
        for form in self._key_forms():
            content = content.replace(form.encode(), b"<api key>")
        return content


def _not_resent_advice(method: str, path: str) -> str | None:
    """Explain a failed request that may have reached the server and is not resent, or None.

    Covers the requests that change state on the server when repeated:
    ``POST /run`` and ``/runsync`` (a second job), ``/retry`` (a second
    requeue) and ``GET /stream`` (the server hands out each item once).
    """
    route = path.lstrip("/").split("/", 1)[0].split("?", 1)[0]
    if method == "POST" and route in ("run", "runsync"):
        return (
            "The job may have been created anyway; it was not resubmitted, to avoid a "
            "duplicate. Check the endpoint's queue (ep.health()), or submit the payload "
            "again if a duplicate job is acceptable."
        )
    if method == "POST" and route == "retry":
        return (
            "The job may have been requeued anyway; it was not retried again, to avoid a "
            "second run. Check the job's status before sending /retry again."
        )
    if method == "GET" and route == "stream":
        return (
            "The lost response may have carried stream items, which the server does not "
            "hand out again."
        )
    return None


def _pooled_session(pool_size: int) -> requests.Session:
    if pool_size < 1:
        raise ValueError(f"pool_size must be at least 1, got {pool_size}")
    session = requests.Session()
    # urllib3 must not retry on its own: the retry rules above decide what is safe to resend.
    adapter = HTTPAdapter(
        pool_connections=4, pool_maxsize=pool_size, max_retries=0, pool_block=False
    )
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def _check_endpoint_id(endpoint_id: object) -> str:
    if not isinstance(endpoint_id, str) or not endpoint_id.strip():
        raise ValueError(f"endpoint_id must be a non-empty string, got {endpoint_id!r}")
    if any(character in endpoint_id for character in "/?#% \t\r\n"):
        raise ValueError(
            f"endpoint_id must not contain '/', '?', '#', '%' or whitespace, got {endpoint_id!r}"
        )
    return endpoint_id


def _check_api_key(api_key: object, source: str) -> str:
    """Check a key before it goes into a header; messages never show the key itself."""
    if not isinstance(api_key, str):
        raise TypeError(
            f"{source} must be a str, got {type(api_key).__name__}; pass the key as text"
        )
    if not api_key.strip():
        raise ValueError(
            f"{source} is empty or only whitespace; set it to your RunPod API key, "
            "or leave it unset (None) to send no Authorization header"
        )
    for position, character in enumerate(api_key):
        if ord(character) < 32 or ord(character) == 127:
            raise ValueError(
                f"{source} contains a newline or control character at position {position}; "
                "remove it (a key read from a file often ends with a newline)"
            )
        if not character.isascii() or character == " ":
            raise ValueError(
                f"{source} contains a space or a non-ASCII character at position {position}; "
                "RunPod API keys are printable ASCII, so check that the whole key was copied"
            )
    return api_key


def _check_positive_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r:.40}")
    if value < 1:
        raise ValueError(f"{name} must be at least 1, got {value}")
    return value


def _check_base_url(base_url: str) -> str:
    parts = urllib.parse.urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(
            f"base_url must be an http:// or https:// URL such as {DEFAULT_BASE_URL!r}, "
            f"got {base_url!r}"
        )
    return base_url.rstrip("/")


def _check_timeout(timeout: object) -> tuple[float, float]:
    if (
        not isinstance(timeout, tuple)
        or len(timeout) != 2
        or not all(isinstance(part, int | float) and part > 0 for part in timeout)
    ):
        raise ValueError(
            f"timeout must be a (connect, read) pair of positive seconds, got {timeout!r}"
        )
    return (float(timeout[0]), float(timeout[1]))


def _body_start(content: bytes) -> str:
    return content[:BODY_START_LENGTH].decode("utf-8", errors="replace")


def _server_message(content: bytes) -> str | None:
    if not content.strip():
        return None
    try:
        document = jsonlib.loads(content)
    except ValueError:
        return _body_start(content).strip() or None
    if isinstance(document, dict):
        for key in ("error", "message", "detail"):
            value = document.get(key)
            if isinstance(value, str) and value:
                return value
            if isinstance(value, dict) and isinstance(value.get("message"), str):
                return str(value["message"])
    return _body_start(content).strip() or None


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _root_cause(error: BaseException) -> str:
    current: BaseException = error
    seen: set[int] = set()
    while id(current) not in seen:
        seen.add(id(current))
        following = current.__cause__ or current.__context__
        if (
            following is None
            and isinstance(current, urllib3.exceptions.MaxRetryError)
            and current.reason
        ):
            following = current.reason
        if following is None:
            nested = [arg for arg in getattr(current, "args", ()) if isinstance(arg, BaseException)]
            following = nested[0] if nested else None
        if following is None:
            break
        current = following
    text = str(current)
    return f"{type(current).__name__}: {text}" if text else type(current).__name__
