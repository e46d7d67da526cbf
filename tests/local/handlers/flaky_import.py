"""A handler file whose first import fails and whose later imports succeed.

The marker file named by RXRUNPOD_FLAKY_MARKER records that the first import happened.
"""

import os
from pathlib import Path
from typing import Any

_marker = Path(os.environ["RXRUNPOD_FLAKY_MARKER"])
if not _marker.exists():
    _marker.write_text("failed once")
    raise RuntimeError("first import fails")


def handler(job: dict[str, Any]) -> Any:
    return {"pid": os.getpid()}
