"""A RunPod handler file that starts the worker only when run as a script."""

from collections.abc import Iterator
from typing import Any

import runpod


def generator_handler(job: dict[str, Any]) -> Iterator[int]:
    yield from range(int(job["input"]["n"]))


if __name__ == "__main__":
    runpod.serverless.start({"handler": generator_handler})
