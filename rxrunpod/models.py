"""Typed, immutable records of RunPod's JSON documents.

This module is the only one the client and the local endpoint share, so it
imports nothing else from rxrunpod. Parsers raise ``ValueError`` with a message
that names the offending field. The client's wire boundary turns that error
into a ``MalformedResponse`` with the HTTP status and the body's first bytes.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "FINAL_STATUSES",
    "Health",
    "HealthJobs",
    "HealthWorkers",
    "JobErrorDetail",
    "JobState",
    "JobStatus",
    "PurgeResult",
    "StreamBatch",
    "parse_status",
]


class JobStatus(str, enum.Enum):
    """State of a job in RunPod's queue.

    ``UNKNOWN`` is never sent by RunPod: it stands for a status string this
    version does not know. The raw string is kept in ``JobState.raw_status``,
    and an unknown status is treated as not final.
    """

    IN_QUEUE = "IN_QUEUE"
    IN_PROGRESS = "IN_PROGRESS"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    TIMED_OUT = "TIMED_OUT"
    UNKNOWN = "UNKNOWN"

    @property
    def is_final(self) -> bool:
        """True for the states a job never leaves (until ``/retry``)."""
        return self in FINAL_STATUSES

    def __str__(self) -> str:
        return self.value


FINAL_STATUSES = frozenset(
    {JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.TIMED_OUT}
)

_KNOWN_STATUSES = {status.value: status for status in JobStatus if status is not JobStatus.UNKNOWN}


def _describe(value: object) -> str:
    """Name a JSON value's type and its first 80 characters for an error message."""
    return f"{type(value).__name__}: {value!r:.80}"


def parse_status(text: object) -> JobStatus:
    """Parse a RunPod status string into ``JobStatus``.

    Raises ``ValueError`` for a value that is not a string. A string that is
    not a known status maps to ``JobStatus.UNKNOWN``; callers that need the
    original text read it from the document.
    """
    if not isinstance(text, str):
        raise ValueError(f"field 'status' must be a string, got {_describe(text)}")
    return _KNOWN_STATUSES.get(text, JobStatus.UNKNOWN)


def _require_mapping(document: object, what: str) -> Mapping[str, Any]:
    if not isinstance(document, Mapping):
        raise ValueError(f"{what} must be a JSON object, got {_describe(document)}")
    return document


def _optional_number(document: Mapping[str, Any], key: str) -> float | None:
    value = document.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"field {key!r} must be a number, got {_describe(value)}")
    return value


def _optional_string(document: Mapping[str, Any], key: str) -> str | None:
    value = document.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"field {key!r} must be a string, got {_describe(value)}")
    return value


def _count(document: Mapping[str, Any], key: str) -> int:
    value = document.get(key, 0)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"field {key!r} must be an integer, got {_describe(value)}")
    return value


@dataclass(frozen=True)
class JobErrorDetail:
    """Parsed ``error`` field of a FAILED job.

    RunPod's worker sends a handler exception as a JSON-encoded object with
    ``error_type``, ``error_message`` and ``error_traceback``; a handler that
    returns ``{"error": "..."}`` produces a plain string. Both parse here.
    """

    message: str
    error_type: str | None = None
    traceback: str | None = None
    raw: object = None

    @classmethod
    def parse(cls, error: object) -> JobErrorDetail | None:
        """Parse an ``error`` value; returns None when there is no error."""
        if error is None or error == "":
            return None
        decoded: object = error
        if isinstance(error, str):
            try:
                decoded = json.loads(error)
            except ValueError:
                return cls(message=error, raw=error)
        if isinstance(decoded, Mapping):
            message = decoded.get("error_message", decoded.get("message"))
            error_type = decoded.get("error_type", decoded.get("type"))
            traceback = decoded.get("error_traceback", decoded.get("traceback"))
            return cls(
                message=str(message) if message is not None else json.dumps(decoded, default=str),
                error_type=str(error_type) if error_type is not None else None,
                traceback=str(traceback) if traceback is not None else None,
                raw=error,
            )
        return cls(message=str(decoded), raw=error)


@dataclass(frozen=True)
class JobState:
    """One observation of a job, as ``/status``, ``/run`` or ``/runsync`` return it.

    ``output`` is the handler's result only when ``status`` is COMPLETED;
    while IN_PROGRESS it contains the latest progress value, if any. Times are in
    milliseconds. ``raw`` is the JSON document as received.
    """

    id: str
    status: JobStatus
    raw_status: str
    output: Any = None
    error: str | None = None
    delay_time: float | None = None
    execution_time: float | None = None
    worker_id: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def is_final(self) -> bool:
        """True once the job reached COMPLETED, FAILED, CANCELLED or TIMED_OUT."""
        return self.status.is_final

    @property
    def error_detail(self) -> JobErrorDetail | None:
        """The ``error`` field parsed into type, message and traceback."""
        return JobErrorDetail.parse(self.raw.get("error", self.error))

    @property
    def stream(self) -> list[Any]:
        """Outputs carried in the document's ``stream`` list (aggregated or final chunks)."""
        return _stream_outputs(self.raw)

    @classmethod
    def from_json(cls, document: object, *, job_id: str | None = None) -> JobState:
        """Parse a status document; ``job_id`` fills in a document without ``id``.

        Raises ``ValueError`` naming the field when the document has the wrong shape.
        """
        document = _require_mapping(document, "job status")
        identifier = document.get("id", job_id)
        if not isinstance(identifier, str) or not identifier:
            raise ValueError(f"field 'id' must be a non-empty string, got {identifier!r:.80}")
        if "status" not in document:
            raise ValueError("field 'status' is missing")
        raw_status = document["status"]
        status = parse_status(raw_status)
        error = document.get("error")
        if error is not None and not isinstance(error, str):
            error = json.dumps(error, default=str)
        worker = document.get("workerId")
        return cls(
            id=identifier,
            status=status,
            raw_status=str(raw_status),
            output=document.get("output"),
            error=error,
            delay_time=_optional_number(document, "delayTime"),
            execution_time=_optional_number(document, "executionTime"),
            worker_id=str(worker) if worker is not None else None,
            raw=dict(document),
        )

    def to_json(self) -> dict[str, Any]:
        """Render the document in RunPod's field names, as the local endpoint sends it."""
        document: dict[str, Any] = {"id": self.id, "status": self.raw_status}
        if self.delay_time is not None:
            document["delayTime"] = self.delay_time
        if self.execution_time is not None:
            document["executionTime"] = self.execution_time
        if self.worker_id is not None:
            document["workerId"] = self.worker_id
        if self.output is not None:
            document["output"] = self.output
        if self.error is not None:
            document["error"] = self.error
        return document


def _stream_outputs(document: Mapping[str, Any]) -> list[Any]:
    chunks = document.get("stream")
    if chunks is None:
        return []
    if not isinstance(chunks, list):
        raise ValueError(f"field 'stream' must be a list, got {_describe(chunks)}")
    outputs = []
    for chunk in chunks:
        if isinstance(chunk, Mapping) and "output" in chunk:
            outputs.append(chunk["output"])
        else:
            message = f"each 'stream' entry must be an object with 'output', got {_describe(chunk)}"
            raise ValueError(message)
    return outputs


@dataclass(frozen=True)
class StreamBatch:
    """One response of ``/stream``: the chunks handed out by this request and the job's status."""

    status: JobStatus
    raw_status: str
    outputs: tuple[Any, ...]
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, document: object) -> StreamBatch:
        """Parse a ``/stream`` response; raises ``ValueError`` on the wrong shape."""
        document = _require_mapping(document, "stream response")
        raw_status = document.get("status")
        status = parse_status(raw_status)
        return cls(
            status=status,
            raw_status=str(raw_status),
            outputs=tuple(_stream_outputs(document)),
            raw=dict(document),
        )


@dataclass(frozen=True)
class HealthJobs:
    """Job counters of ``/health``."""

    completed: int = 0
    failed: int = 0
    in_progress: int = 0
    in_queue: int = 0
    retried: int = 0


@dataclass(frozen=True)
class HealthWorkers:
    """Worker counters of ``/health``."""

    idle: int = 0
    initializing: int = 0
    ready: int = 0
    running: int = 0
    throttled: int = 0
    unhealthy: int = 0


@dataclass(frozen=True)
class Health:
    """One ``/health`` snapshot; ``received_at`` is the client's clock (seconds) when it arrived."""

    jobs: HealthJobs
    workers: HealthWorkers
    received_at: float | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, document: object, *, received_at: float | None = None) -> Health:
        """Parse a ``/health`` response; raises ``ValueError`` on the wrong shape."""
        document = _require_mapping(document, "health response")
        jobs = _require_mapping(document.get("jobs", {}), "field 'jobs'")
        workers = _require_mapping(document.get("workers", {}), "field 'workers'")
        return cls(
            jobs=HealthJobs(
                completed=_count(jobs, "completed"),
                failed=_count(jobs, "failed"),
                in_progress=_count(jobs, "inProgress"),
                in_queue=_count(jobs, "inQueue"),
                retried=_count(jobs, "retried"),
            ),
            workers=HealthWorkers(
                idle=_count(workers, "idle"),
                initializing=_count(workers, "initializing"),
                ready=_count(workers, "ready"),
                running=_count(workers, "running"),
                throttled=_count(workers, "throttled"),
                unhealthy=_count(workers, "unhealthy"),
            ),
            received_at=received_at,
            raw=dict(document),
        )

    def to_json(self) -> dict[str, Any]:
        """Render the document in RunPod's field names."""
        return {
            "jobs": {
                "completed": self.jobs.completed,
                "failed": self.jobs.failed,
                "inProgress": self.jobs.in_progress,
                "inQueue": self.jobs.in_queue,
                "retried": self.jobs.retried,
            },
            "workers": {
                "idle": self.workers.idle,
                "initializing": self.workers.initializing,
                "ready": self.workers.ready,
                "running": self.workers.running,
                "throttled": self.workers.throttled,
                "unhealthy": self.workers.unhealthy,
            },
        }


@dataclass(frozen=True)
class PurgeResult:
    """Response of ``/purge-queue``: how many queued jobs were removed."""

    removed: int
    status: str
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, document: object) -> PurgeResult:
        """Parse a ``/purge-queue`` response; raises ``ValueError`` on the wrong shape."""
        document = _require_mapping(document, "purge-queue response")
        status = _optional_string(document, "status") or ""
        return cls(removed=_count(document, "removed"), status=status, raw=dict(document))
