"""Handlers the reliability tests serve on the local endpoint."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any


def numbered_items(job: dict[str, Any]) -> Iterator[dict[str, int]]:
    """Yield ``items`` numbered items for payload ``n``, ``pause`` seconds apart."""
    number = int(job["input"]["n"])
    pause = float(job["input"].get("pause", 0.0))
    for position in range(int(job["input"].get("items", 3))):
        if pause:
            time.sleep(pause)
        yield {"n": number, "k": position}


def sleeps(job: dict[str, Any]) -> dict[str, float]:
    """Sleep ``seconds`` and return them."""
    seconds = float(job["input"].get("seconds", 0.0))
    time.sleep(seconds)
    return {"slept": seconds}


def echo(job: dict[str, Any]) -> Any:
    """Return the input unchanged."""
    return job["input"]


def expected_items(number: int, count: int) -> list[dict[str, int]]:
    """The items ``numbered_items`` yields for payload ``number``."""
    return [{"n": number, "k": position} for position in range(count)]
