"""A ``requests.Session`` that records when each request went out and how it ended."""

from __future__ import annotations

import threading
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any

import requests


@dataclass(frozen=True)
class Attempt:
    """One request: monotonic start and end times, path, and status (None: no response)."""

    started: float
    ended: float
    method: str
    path: str
    status: int | None

    @property
    def seconds(self) -> float:
        return self.ended - self.started


class RecordingSession(requests.Session):
    """Records every request; the attempts are kept in ``attempts`` in start order."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self.attempts: list[Attempt] = []

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> Any:
        started = time.monotonic()
        status: int | None = None
        try:
            response = super().request(method, url, *args, **kwargs)
            status = response.status_code
            return response
        finally:
            path = urllib.parse.urlsplit(str(url)).path
            attempt = Attempt(started, time.monotonic(), str(method), path, status)
            with self._lock:
                self.attempts.append(attempt)

    def snapshot(self) -> list[Attempt]:
        with self._lock:
            return sorted(self.attempts, key=lambda attempt: attempt.started)
