"""An unmodified RunPod handler file: it calls runpod.serverless.start at import time."""

from collections.abc import Iterator
from typing import Any

import runpod


def handler(job: dict[str, Any]) -> dict[str, Any]:
    job_input = job["input"]
    runpod.serverless.progress_update(job, "halfway")
    return {"greeting": f"hello {job_input.get('name', 'world')}"}


def generator_handler(job: dict[str, Any]) -> Iterator[str]:
    yield from ("one", "two", "three")


runpod.serverless.start({"handler": generator_handler, "return_aggregate_stream": True})
