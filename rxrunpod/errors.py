"""The exception tree of rxrunpod.

Every error reaches subscribers through ``on_error`` (and is raised by the
blocking ``.run()``). Transport and HTTP failures sit on one branch, job
outcomes on another, so ``except JobError`` never catches a network fault::

    RunPodError
    ├── APIError                  an HTTP exchange failed
    │   ├── RequestError          no usable response: connection refused or reset, read timeout
    │   ├── InvalidRequest        400: the server rejected the request body or parameters
    │   ├── AuthenticationError   401 or 403: missing or wrong API key
    │   ├── NotFoundError         404
    │   │   ├── EndpointNotFound  no such endpoint id
    │   │   └── JobNotFound       no such job (unknown, expired or purged)
    │   ├── RateLimited           429; ``retry_after`` in seconds when the server sent it
    │   ├── ServerError           5xx
    │   ├── MalformedResponse     a 2xx response that is not the JSON document expected
    │   └── StreamItemsLost       a ``/stream`` response was lost, so items may be missing
    ├── StreamProtocolError       a server-sent event stream broke off or sent an ``error`` event
    ├── BufferOverflow            ``rxrunpod.aio.iterate`` buffered more items than allowed
    ├── JobError                  the job ended without a result; ``state`` is its final JobState
    │   ├── JobFailed             FAILED; ``error_type``, ``error_message``, ``error_traceback``
    │   ├── JobCancelled          CANCELLED
    │   └── JobTimedOut           TIMED_OUT (the server's ``executionTimeout`` or ``ttl``)
    └── WaitTimeout               the client-side deadline passed; also a ``TimeoutError``

No message, ``repr`` or attribute of these errors contains the API key: the
wire layer builds them from the request path and the response, never from the
headers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .models import JobState

__all__ = [
    "APIError",
    "AuthenticationError",
    "BufferOverflow",
    "EndpointNotFound",
    "InvalidRequest",
    "JobCancelled",
    "JobError",
    "JobFailed",
    "JobNotFound",
    "JobTimedOut",
    "MalformedResponse",
    "NotFoundError",
    "RateLimited",
    "RequestError",
    "RunPodError",
    "ServerError",
    "StreamItemsLost",
    "StreamProtocolError",
    "WaitTimeout",
]


class RunPodError(Exception):
    """Base class of every error rxrunpod raises or sends to ``on_error``."""


class APIError(RunPodError):
    """An HTTP exchange with an endpoint failed.

    ``method`` and ``path`` name the request (the path below the base URL, no
    query string); ``status_code`` is None when no response arrived;
    ``server_message`` is the ``error`` text of the response, if any;
    ``attempts`` is how often the request was sent before this error ended it.
    """

    def __init__(
        self,
        message: str,
        *,
        method: str | None = None,
        path: str | None = None,
        status_code: int | None = None,
        server_message: str | None = None,
        endpoint_id: str | None = None,
        job_id: str | None = None,
        attempts: int = 1,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.attempts = attempts
        self.method = method
        self.path = path
        self.status_code = status_code
        self.server_message = server_message
        self.endpoint_id = endpoint_id
        self.job_id = job_id

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild_api_error, (type(self), self.message, dict(self.__dict__)))


def _rebuild_api_error(
    cls: type[APIError], message: str, attributes: dict[str, object]
) -> APIError:
    error = cls.__new__(cls)
    RunPodError.__init__(error, message)
    error.__dict__.update(attributes)
    return error


class RequestError(APIError):
    """No usable response arrived: connection refused or reset, DNS failure, read timeout."""


class InvalidRequest(APIError):
    """The server responded with 400: the request body or parameters are invalid."""


class AuthenticationError(APIError):
    """The server responded with 401 or 403: the API key is missing or wrong."""


class NotFoundError(APIError):
    """The server responded with 404."""


class EndpointNotFound(NotFoundError):
    """The endpoint id is unknown to the server."""


class JobNotFound(NotFoundError):
    """The job id is unknown: never submitted here, expired after its TTL, or purged."""


class RateLimited(APIError):
    """The server responded with 429 and the retry budget is spent.

    ``retry_after`` is the server's ``Retry-After`` in seconds, or None.
    """

    def __init__(
        self, message: str, *, retry_after: float | None = None, **context: object
    ) -> None:
        super().__init__(message, **context)  # type: ignore[arg-type]
        self.retry_after = retry_after


class ServerError(APIError):
    """The server responded with a 5xx status and the retry budget, if any, is spent.

    ``retry_after`` is in seconds when a 503 carried a ``Retry-After`` header.
    """

    def __init__(
        self, message: str, *, retry_after: float | None = None, **context: object
    ) -> None:
        super().__init__(message, **context)  # type: ignore[arg-type]
        self.retry_after = retry_after


class MalformedResponse(APIError):
    """A response that is not the JSON document expected; ``body_start`` holds its first bytes.

    ``body_truncated`` is True when the connection broke off inside the body,
    so sending the same request again may succeed.
    """

    def __init__(
        self, message: str, *, body_start: str = "", body_truncated: bool = False, **context: object
    ) -> None:
        super().__init__(message, **context)  # type: ignore[arg-type]
        self.body_start = body_start
        self.body_truncated = body_truncated


class StreamItemsLost(APIError):
    """A ``/stream`` response was lost after the server may have sent it, so items may be missing.

    The server hands out each chunk once, so a lost response cannot be requested
    again. Submit with ``return_aggregate_stream`` on the handler to let the
    client recover the items from the final status instead.
    """


class StreamProtocolError(RunPodError):
    """A server-sent event stream ended mid-event or carried an ``error`` event."""

    def __init__(self, message: str, *, event: str | None = None, data: str | None = None) -> None:
        super().__init__(message)
        self.event = event
        self.data = data


class BufferOverflow(RunPodError):
    """More than ``buffer_size`` items of an ``iterate()`` source were waiting for the consumer.

    The subscription is disposed when the limit is hit, which stops the source
    (and cancels the remote job where the observable submitted it). Items
    buffered before the overflow are still delivered, then this error is raised.
    """

    def __init__(self, message: str, *, buffer_size: int) -> None:
        super().__init__(message)
        self.buffer_size = buffer_size


class JobError(RunPodError):
    """The job reached a final state other than COMPLETED; ``state`` is that final state."""

    def __init__(self, message: str, state: JobState) -> None:
        super().__init__(message)
        self.state = state

    @property
    def job_id(self) -> str:
        """Id of the job that ended without a result."""
        return self.state.id

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (str(self), self.state))


class JobFailed(JobError):
    """The job ended FAILED.

    The handler raised, returned ``{"error": ...}`` or ran past ``executionTimeout``.
    """

    def __init__(self, message: str, state: JobState) -> None:
        super().__init__(message, state)
        detail = state.error_detail
        self.error_message: str | None = detail.message if detail else None
        self.error_type: str | None = detail.error_type if detail else None
        self.error_traceback: str | None = detail.traceback if detail else None


class JobCancelled(JobError):
    """The job ended CANCELLED, through ``/cancel`` or a purge."""


class JobTimedOut(JobError):
    """The job ended TIMED_OUT on the server."""


class WaitTimeout(RunPodError, TimeoutError):
    """The client-side deadline of a wait passed before the job reached a final state.

    The job itself keeps running on the server unless it was cancelled.
    """

    def __init__(self, message: str, *, job_id: str | None, timeout: float) -> None:
        super().__init__(message)
        self.job_id = job_id
        self.timeout = timeout

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild_wait_timeout, (str(self), self.job_id, self.timeout))


def _rebuild_wait_timeout(message: str, job_id: str | None, timeout: float) -> WaitTimeout:
    return WaitTimeout(message, job_id=job_id, timeout=timeout)
