"""Handlers for the process-isolation tests; each worker process imports this module once."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import runpod


def crashes_on_request(job: dict[str, Any]) -> Any:
    """End the worker process with os._exit(1) when the input asks, as RunPod's mock worker can."""
    job_input = job["input"]
    if job_input.get("crash"):
        os._exit(1)
    time.sleep(float(job_input.get("seconds", 0)))
    return {"pid": os.getpid(), "echo": job_input}


def sleeps_with_pid(job: dict[str, Any]) -> Any:
    """Report the worker's process id as progress, then block in a plain sleep."""
    runpod.serverless.progress_update(job, {"pid": os.getpid()})
    time.sleep(float(job["input"].get("seconds", 30)))
    return {"pid": os.getpid()}


async def async_notes_cancel(job: dict[str, Any]) -> Any:
    """Sleep; when cancelled, write the job id to the file named in the input first."""
    runpod.serverless.progress_update(job, {"pid": os.getpid()})
    try:
        await asyncio.sleep(float(job["input"].get("seconds", 30)))
    except asyncio.CancelledError:
        Path(job["input"]["marker"]).write_text(job["id"])
        raise
    return {"pid": os.getpid()}


def refreshes(job: dict[str, Any]) -> Any:
    return {"refresh_worker": True, "pid": os.getpid()}


def pid(job: dict[str, Any]) -> Any:
    return {"pid": os.getpid()}


def counts(job: dict[str, Any]) -> Iterator[int]:
    yield from range(int(job["input"]["n"]))


def large(job: dict[str, Any]) -> Any:
    """Return a text of the requested size with its digest, to check it arrives intact."""
    size = int(job["input"]["bytes"])
    block = hashlib.sha256(b"rxrunpod").hexdigest()
    text = (block * (size // len(block) + 1))[:size]
    return {"text": text, "sha256": hashlib.sha256(text.encode()).hexdigest()}
