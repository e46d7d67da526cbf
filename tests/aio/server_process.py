"""Run a local endpoint in a child process, so its threads leave the test's GIL alone."""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from multiprocessing.connection import Connection
from typing import Any


def _serve_until_told(handler: str, options: dict[str, Any], channel: Connection) -> None:
    import logging

    logging.disable(logging.INFO)
    from rxrunpod.local import serve

    with serve(handler, **options) as base_url:
        channel.send(base_url)
        # Any message, or the parent closing its end, stops the server.
        with suppress(EOFError):
            channel.recv()


@contextmanager
def serve_in_process(handler: str, **options: Any) -> Iterator[str]:
    """Serve ``handler`` (``module:function``) from a child process and yield the base URL."""
    context = multiprocessing.get_context("spawn")
    parent_end, child_end = context.Pipe()
    process = context.Process(
        target=_serve_until_told, args=(handler, options, child_end), daemon=True
    )
    process.start()
    try:
        if not parent_end.poll(30):
            raise RuntimeError(f"the local endpoint for {handler} did not start within 30 s")
        yield parent_end.recv()
    finally:
        parent_end.send("stop")
        process.join(10)
        if process.is_alive():
            process.kill()
            process.join(5)
