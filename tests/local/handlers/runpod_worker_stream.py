"""A RunPod generator handler file with return_aggregate_stream."""

from collections.abc import Iterator
from typing import Any

import runpod


def handler(job: dict[str, Any]) -> Iterator[dict[str, int]]:
    for number in range(int(job["input"]["n"])):
        yield {"n": number}


runpod.serverless.start({"handler": handler, "return_aggregate_stream": True})
