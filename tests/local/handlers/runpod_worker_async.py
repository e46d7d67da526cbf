"""A RunPod async-generator handler file."""

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import runpod


async def handler(job: dict[str, Any]) -> AsyncIterator[str]:
    job_input = job["input"]
    for number in range(int(job_input.get("n", 3))):
        await asyncio.sleep(float(job_input.get("delay", 0)))
        yield f"token-{number}"


if __name__ == "__main__":
    runpod.serverless.start({"handler": handler})
