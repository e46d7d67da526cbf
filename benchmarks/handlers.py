"""Handlers the benchmark endpoints run, in RunPod's handler style."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

__all__ = ["chunks", "parked", "sleeper", "trivial"]


def trivial(job: dict[str, Any]) -> Any:
    """Return the input at once: the cheapest job a queue can run."""
    return job["input"]


def sleeper(job: dict[str, Any]) -> dict[str, float]:
    """Block the worker for ``input.seconds``, like a model call of that length."""
    seconds = float(job["input"]["seconds"])
    time.sleep(seconds)
    return {"slept": seconds}


def chunks(job: dict[str, Any]) -> Iterator[int]:
    """Yield the integers ``0 .. input.count - 1`` as fast as the worker can."""
    yield from range(int(job["input"]["count"]))


async def parked(job: dict[str, Any]) -> dict[str, float]:
    """Sleep ``input.seconds`` without blocking; a cancel ends it at once."""
    seconds = float(job["input"]["seconds"])
    await asyncio.sleep(seconds)
    return {"slept": seconds}
