"""An ``async`` handler that serves several jobs at once on one worker.

Input: ``{"text": "...", "delay": 0.2}``. The handler waits ``delay`` seconds
(standing in for a call to a model server) and returns word and character
counts of ``text``. ``concurrency_modifier`` lets each worker take up to four
jobs at the same time, as RunPod's SDK does for I/O-bound handlers.
"""

import asyncio

import runpod

MAX_JOBS_PER_WORKER = 4


async def handler(job):
    job_input = job["input"]
    text = job_input.get("text")
    if not isinstance(text, str):
        return {"error": "input 'text' must be a string"}

    await asyncio.sleep(float(job_input.get("delay", 0.2)))
    return {"words": len(text.split()), "characters": len(text)}


def concurrency_modifier(current_concurrency):
    return MAX_JOBS_PER_WORKER


runpod.serverless.start({"handler": handler, "concurrency_modifier": concurrency_modifier})
