"""Start-up time and trivial-job throughput of thread, process and runpod workers.

``python -m benchmarks.isolation_overhead [--workers 4] [--jobs 400] [--clients 8]``

Every mode runs in this one process, one after the other, against the same
trivial handler (it returns its input), so the figures compare the cost of
the worker kind and nothing else. Start-up is the time from ``start()`` to
the moment ``/health`` counts every worker ready; throughput is jobs per
second through ``/runsync`` from several client threads. Each mode stops at
its job count or after ``--seconds``, whichever comes first.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import threading
import time
from pathlib import Path
from typing import Any

import requests

from rxrunpod.local import LocalEndpoint

HANDLERS = Path(__file__).parents[1] / "tests" / "local" / "handlers"


def start_up(endpoint: LocalEndpoint, workers: int, limit: float) -> float:
    started = time.monotonic()
    endpoint.start()
    while time.monotonic() - started < limit:
        if endpoint.health()["workers"]["ready"] >= workers:
            return time.monotonic() - started
        time.sleep(0.01)
    raise RuntimeError(f"{workers} workers were not ready within {limit} s")


def throughput(endpoint: LocalEndpoint, jobs: int, clients: int, seconds: float) -> float:
    url = f"{endpoint.base_url}/bench/runsync"
    deadline = time.monotonic() + seconds
    lock = threading.Lock()
    done = [0]
    left = [jobs]

    def client() -> None:
        with requests.Session() as session:
            while time.monotonic() < deadline:
                with lock:
                    if left[0] == 0:
                        return
                    left[0] -= 1
                answer = session.post(url, json={"input": {"n": 1}}, timeout=60).json()
                if answer.get("status") != "COMPLETED":
                    raise RuntimeError(f"job did not complete: {answer}")
                with lock:
                    done[0] += 1

    threads = [threading.Thread(target=client) for _ in range(clients)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return done[0] / (time.monotonic() - started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--jobs", type=int, default=400)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=30.0)
    arguments = parser.parse_args(argv)
    modes: list[tuple[str, dict[str, Any], str]] = [
        ("thread", {"isolation": "thread"}, "tests.local.handlers.basic:echo"),
        ("process", {"isolation": "process"}, "tests.local.handlers.basic:echo"),
    ]
    if importlib.util.find_spec("runpod") is not None:
        plain = str(HANDLERS / "runpod_worker_plain.py")
        modes.append(("runpod", {"worker": "runpod"}, plain))
    print(f"{arguments.workers} workers, {arguments.clients} clients, trivial jobs via /runsync")
    print(f"{'mode':<8} {'start-up s':>10} {'jobs/s':>8}")
    for name, options, handler in modes:
        endpoint = LocalEndpoint(handler, workers=arguments.workers, **options)
        try:
            ready = start_up(endpoint, arguments.workers, 60.0)
            rate = throughput(endpoint, arguments.jobs, arguments.clients, arguments.seconds)
        finally:
            endpoint.stop()
        print(f"{name:<8} {ready:>10.2f} {rate:>8.1f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
