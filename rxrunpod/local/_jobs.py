"""Jobs as the local endpoint stores them, and their RunPod JSON documents."""

from __future__ import annotations

import asyncio
import os
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from rxrunpod.models import JobStatus

__all__ = ["JobPolicy", "LocalJob", "new_job_id"]

_IN_QUEUE = JobStatus.IN_QUEUE
_IN_PROGRESS = JobStatus.IN_PROGRESS


class _RandomBytes:
    """Bytes from ``os.urandom``, read 4 KiB at a time.

    ``uuid.uuid4()`` calls ``os.urandom`` for each id, and that call releases
    the GIL, so a worker thread waiting for it takes the server thread's place
    on every submitted job. Reading ahead makes that one release per 256 ids.
    """

    _CHUNK = 4096

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._buffer = b""
        self._position = 0

    def take(self, count: int) -> bytes:
        with self._lock:
            if self._position + count > len(self._buffer):
                self._buffer = os.urandom(max(self._CHUNK, count))
                self._position = 0
            start = self._position
            self._position = start + count
            return self._buffer[start : start + count]

    def discard(self) -> None:
        """Drop the bytes read ahead, so a forked child never repeats its parent's ids."""
        self._lock = threading.Lock()
        self._buffer = b""
        self._position = 0


_random_bytes = _RandomBytes()
os.register_at_fork(after_in_child=_random_bytes.discard)


def new_job_id(sync: bool) -> str:
    """Return an id shaped like the hosted service's: ``<uuid>-u1`` or ``sync-<uuid>-u1``.

    The UUID is a random (version 4) one, as ``uuid.uuid4()`` makes.
    """
    text = f"{uuid.UUID(bytes=_random_bytes.take(16), version=4)}-u1"
    return f"sync-{text}" if sync else text


@dataclass(frozen=True, slots=True)
class JobPolicy:
    """Per-job limits from the request's ``policy`` object, in seconds."""

    execution_timeout: float = 600.0
    ttl: float = 24 * 3600.0


@dataclass(eq=False, slots=True)
class LocalJob:
    """One job and everything the routes report about it.

    Times are ``time.monotonic()`` seconds. ``attempt`` grows on each
    ``/retry``, so a late result from an earlier attempt is recognised and
    dropped. Mutated only on the server's event loop.
    """

    id: str
    input: Any
    sync: bool
    policy: JobPolicy
    webhook: str | None
    submitted_at: float
    ttl_deadline: float
    status: JobStatus = _IN_QUEUE
    attempt: int = 0
    started_at: float | None = None
    finished_at: float | None = None
    worker_id: str | None = None
    has_output: bool = False
    output: Any = None
    error: str | None = None
    progress: Any = None
    pending_chunks: list[Any] = field(default_factory=list)
    retention_deadline: float | None = None
    timeout_handle: asyncio.TimerHandle | None = None
    waiters: list[asyncio.Future[None]] | None = None

    def document(self) -> dict[str, Any]:
        """Render the ``/status`` document in RunPod's field names."""
        document: dict[str, Any] = {"id": self.id, "status": self.status.value}
        started = self.started_at
        if started is not None:
            document["delayTime"] = round((started - self.submitted_at) * 1000)
            if self.finished_at is not None:
                document["executionTime"] = round((self.finished_at - started) * 1000)
        if self.worker_id is not None:
            document["workerId"] = self.worker_id
        if self.status is _IN_PROGRESS:
            if self.progress is not None:
                document["output"] = self.progress
        elif self.has_output:
            document["output"] = self.output
        if self.error is not None:
            document["error"] = self.error
        return document

    def wake_waiters(self) -> None:
        """Resolve every future a held request waits on (runsync, stream)."""
        waiters = self.waiters
        if waiters:
            self.waiters = None
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    async def wait_change(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for the next state change or stream chunk."""
        if timeout <= 0:
            return
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        if self.waiters is None:
            self.waiters = []
        self.waiters.append(waiter)
        timer = loop.call_later(timeout, _resolve, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            if self.waiters is not None and waiter in self.waiters:
                self.waiters.remove(waiter)


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def now() -> float:
    """Return the clock the job store uses, in seconds."""
    return time.monotonic()
