"""A handler file that takes a while to import, like one that loads a model."""

import time
from typing import Any

time.sleep(1.5)


def handler(job: dict[str, Any]) -> Any:
    return {"echo": job["input"]}
