"""Open the endpoint an example script talks to: RunPod's when configured, else a local one.

With ``RUNPOD_ENDPOINT_ID`` set, the scripts use that hosted endpoint (the
key comes from ``RUNPOD_API_KEY``), which must run the matching handler.
Otherwise they start a local endpoint running the handler from
``examples/handlers`` in this process.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import rxrunpod as rr

HANDLERS = Path(__file__).resolve().parent / "handlers"


@contextmanager
def open_endpoint(handler_file: str, *, workers: int = 4) -> Iterator[rr.Endpoint]:
    """Yield an ``Endpoint``; the local server, if any, stops when the block ends."""
    endpoint_id = os.environ.get("RUNPOD_ENDPOINT_ID")
    if endpoint_id:
        with rr.Endpoint(endpoint_id) as endpoint:
            yield endpoint
        return

    from rxrunpod.local import LocalEndpoint

    with (
        LocalEndpoint(str(HANDLERS / handler_file), workers=workers) as local,
        rr.Endpoint("local", base_url=local.base_url) as endpoint,
    ):
        yield endpoint
