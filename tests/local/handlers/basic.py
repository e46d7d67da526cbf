"""Handlers for the local endpoint tests: one per kind RunPod runs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any


def echo(job: dict[str, Any]) -> Any:
    return {"echo": job["input"]}


def sleepy(job: dict[str, Any]) -> Any:
    time.sleep(float(job["input"].get("seconds", 0.1)))
    return {"slept": job["input"].get("seconds", 0.1)}


def raises(job: dict[str, Any]) -> Any:
    raise ValueError(f"bad input {job['input']!r}")


def counts(job: dict[str, Any]) -> Iterator[int]:
    for number in range(int(job["input"]["n"])):
        delay = job["input"].get("delay", 0)
        if delay:
            time.sleep(delay)
        yield number


async def async_echo(job: dict[str, Any]) -> Any:
    await asyncio.sleep(float(job["input"].get("seconds", 0)))
    return {"echo": job["input"]}


async def async_counts(job: dict[str, Any]) -> AsyncIterator[int]:
    for number in range(int(job["input"]["n"])):
        await asyncio.sleep(float(job["input"].get("delay", 0)))
        yield number
