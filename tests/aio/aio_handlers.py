"""RunPod handlers for the asyncio tests, driven by the job input."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any


def work(job: dict[str, Any]) -> Any:
    """Sleep ``sleep`` seconds, raise ``ValueError(fail)`` when given, else echo ``value``."""
    request = job["input"]
    time.sleep(request.get("sleep", 0))
    if "fail" in request:
        raise ValueError(request["fail"])
    return {"echo": request.get("value")}


def tokens(job: dict[str, Any]) -> Iterator[str]:
    """Yield ``count`` tokens ``delay`` seconds apart, then raise ``ValueError(fail)`` if given."""
    request = job["input"]
    for index in range(request.get("count", 3)):
        time.sleep(request.get("delay", 0))
        yield f"token-{index}"
    if "fail" in request:
        raise ValueError(request["fail"])
