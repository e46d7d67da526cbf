"""A RunPod handler file run as is: a plain function with progress updates."""

import os
from typing import Any

import runpod


def handler(job: dict[str, Any]) -> Any:
    runpod.serverless.progress_update(job, "working")
    job_input = job["input"]
    if job_input.get("fail"):
        raise ValueError("asked to fail")
    if job_input.get("environment"):
        return {name: value for name, value in os.environ.items() if name.startswith("RUNPOD_")}
    if job_input.get("refresh"):
        return {"pid": os.getpid(), "refresh_worker": True}
    return {"greeting": f"hello {job_input.get('name', 'world')}", "pid": os.getpid()}


if __name__ == "__main__":
    runpod.serverless.start({"handler": handler})
