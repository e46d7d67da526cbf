"""Handlers that use RunPod's worker features: progress, refresh_worker, concurrency, errors."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import runpod

# Jobs each worker thread ran, to see that refresh_worker replaced the worker.
threads_seen: list[str] = []
cancelled_jobs: list[str] = []
running_now = 0
running_peak = 0
_lock = threading.Lock()


def progress(job: dict[str, Any]) -> Any:
    runpod.serverless.progress_update(job, {"step": 1})
    time.sleep(float(job["input"].get("hold", 0.5)))
    return "done"


def refreshing(job: dict[str, Any]) -> Any:
    threads_seen.append(threading.current_thread().name)
    return {"refresh_worker": True, "value": job["input"]}


def returns_error(job: dict[str, Any]) -> Any:
    return {"error": "input was rejected", "detail": job["input"]}


async def slow_async(job: dict[str, Any]) -> Any:
    try:
        await asyncio.sleep(float(job["input"].get("seconds", 5)))
    except asyncio.CancelledError:
        cancelled_jobs.append(job["id"])
        raise
    return "finished"


async def concurrent(job: dict[str, Any]) -> Any:
    global running_now, running_peak
    with _lock:
        running_now += 1
        running_peak = max(running_peak, running_now)
    try:
        await asyncio.sleep(0.2)
    finally:
        with _lock:
            running_now -= 1
    return job["input"]


def up_to_four(current: int) -> int:
    return 4
