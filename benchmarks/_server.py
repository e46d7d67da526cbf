"""The local endpoint in a process of its own, controlled over stdin and stdout.

The benchmark runs the server apart from the clients so that a client's
thread count, memory and CPU time are its own: the endpoint runs one thread
per worker, 256 of them in the fan-out scenario.

Started as ``python -m benchmarks._server CONFIG_JSON``; it prints one JSON
line ``{"base_url": ...}`` once it serves, then answers one JSON line per
command line read from stdin:

- ``{"op": "stats"}``: the server's request counters per route.
- ``{"op": "finished", "ids": [...]}``: for each job id, the
  ``time.monotonic()`` at which the server marked the job final, or null.
- ``{"op": "stop"}`` (or end of input): stop the endpoint and exit.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from rxrunpod.local import LocalEndpoint

from . import handlers


def finished_times(endpoint: LocalEndpoint, job_ids: list[str]) -> dict[str, float | None]:
    """Read when the server marked each job final (``LocalEndpoint.finished_at``).

    The times are ``time.monotonic()`` of the server process. On Linux that
    clock is CLOCK_MONOTONIC, shared by every process of the machine, so a
    client process can subtract them from its own ``time.monotonic()``.
    """
    return {job_id: endpoint.finished_at(job_id) for job_id in job_ids}


def answer(endpoint: LocalEndpoint, command: dict[str, Any]) -> dict[str, Any]:
    """Carry out one control command and return its JSON answer."""
    operation = command.get("op")
    if operation == "stats":
        return {"requests": endpoint.stats.requests}
    if operation == "finished":
        return {"times": finished_times(endpoint, list(command["ids"]))}
    raise ValueError(f"unknown control command {operation!r}")


def main(argv: list[str]) -> int:
    config = json.loads(argv[1])
    handler = getattr(handlers, config["handler"])
    endpoint = LocalEndpoint(handler, workers=int(config["workers"]))
    with endpoint:
        print(json.dumps({"base_url": endpoint.base_url}), flush=True)
        for line in sys.stdin:
            command = json.loads(line)
            if command.get("op") == "stop":
                break
            try:
                reply = answer(endpoint, command)
            except Exception as error:  # reported to the parent, which raises it
                reply = {"error": f"{type(error).__name__}: {error}"}
            print(json.dumps(reply), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
