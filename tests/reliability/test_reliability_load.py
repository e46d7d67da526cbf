"""Load and soak: 200 clients polling and streaming against one local endpoint.

The server runs in its own process (``rxrunpod serve``), so the memory of
client and server can be measured apart. Each client repeats one round until
time is up: submit a streaming job, read its stream, fetch its status. No
faults are injected, so every failed request is a finding. The test reports
p99 status latency and asserts that neither process's memory grows by 10% or
more between the first and the last window of the run (a minute each in
the full soak). The server keeps finished jobs for 5 s instead of RunPod's
30 minutes, so its job store stays the same size and any growth is a leak.

``RXRUNPOD_SOAK_SECONDS`` sets the duration (default 20; the full soak is 180).
"""

from __future__ import annotations

import collections
import math
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import psutil  # type: ignore[import-untyped]
import pytest
import requests
from reactivex import operators as ops

from rxrunpod import Endpoint
from rxrunpod.job import Job
from rxrunpod.polling import PollPolicy
from rxrunpod.scheduling import IoScheduler
from tests.reliability.conftest import client_threads, wait_for_threads
from tests.reliability.handlers import expected_items

CLIENTS = 200
ITEMS = 4
SOAK_SECONDS = float(os.environ.get("RXRUNPOD_SOAK_SECONDS", "20"))
GROWTH_LIMIT = 0.10


class LatencyRecorder:
    """Counts answers per status and keeps /status latencies in 0.1 ms buckets (bounded memory)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.buckets: collections.Counter[int] = collections.Counter()
        self.statuses: collections.Counter[int | None] = collections.Counter()

    def add(self, path: str, seconds: float, status: int | None) -> None:
        with self._lock:
            self.statuses[status] += 1
            if "/status/" in path:
                self.buckets[int(seconds * 10_000)] += 1

    def percentile(self, percent: float) -> float:
        with self._lock:
            total = sum(self.buckets.values())
            rank = math.ceil(percent / 100 * total)
            seen = 0
            for bucket in sorted(self.buckets):
                seen += self.buckets[bucket]
                if seen >= rank:
                    return bucket / 10_000
        return math.nan


class TimedSession(requests.Session):
    """A session that reports each request's latency and status to a ``LatencyRecorder``."""

    def __init__(self, recorder: LatencyRecorder) -> None:
        super().__init__()
        self._recorder = recorder

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> Any:
        started = time.monotonic()
        status = None
        try:
            response = super().request(method, url, *args, **kwargs)
            status = response.status_code
            return response
        finally:
            self._recorder.add(str(url), time.monotonic() - started, status)


class Client:
    """One endpoint client repeating submit, stream, status rounds until ``stop`` is set."""

    def __init__(self, number: int, base_url: str, io: IoScheduler, recorder: LatencyRecorder):
        self.number = number
        self.rounds = 0
        self.errors: list[BaseException] = []
        self.wrong: list[Any] = []
        self.idle = threading.Event()
        self._stop = threading.Event()
        self._io = io
        self.endpoint = Endpoint(
            "load",
            base_url=base_url,
            session=TimedSession(recorder),
            scheduler=io,
            poll=PollPolicy(initial_interval=0.05, max_interval=0.5),
        )

    def start(self) -> None:
        self._next_round()

    def stop(self) -> None:
        self._stop.set()

    def _next_round(self) -> None:
        if self._stop.is_set():
            self.idle.set()
            return
        payload = {"n": self.number, "items": ITEMS, "pause": 0.01}

        def stream_then_status(job: Job) -> Any:
            return job.stream().pipe(
                ops.to_list(),
                ops.flat_map(lambda items: job.state().pipe(ops.map(lambda s: (items, s)))),
            )

        self.endpoint.run(payload).pipe(ops.flat_map(stream_then_status)).subscribe(
            self._on_round, self._on_error
        )

    def _on_round(self, result: tuple[list[Any], Any]) -> None:
        items, state = result
        if items != expected_items(self.number, ITEMS) or state.output != items:
            self.wrong.append(result)
        self.rounds += 1
        # Start the next round from the pool, not from inside this callback.
        self._io.schedule(lambda *_: self._next_round())

    def _on_error(self, error: Exception) -> None:
        self.errors.append(error)
        self.idle.set()


@pytest.fixture
def server_process() -> Iterator[tuple[str, psutil.Process]]:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "rxrunpod",
            "serve",
            "tests.reliability.handlers:numbered_items",
            "--port",
            "0",
            "--workers",
            "16",
            "--return-aggregate-stream",
            "--retention",
            "5",
            "--log-level",
            "WARNING",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        base_url = line.split(" at ", 1)[1].split("/<endpoint_id>", 1)[0]
        yield base_url, psutil.Process(process.pid)
    finally:
        process.terminate()
        process.wait(timeout=30)
        if process.stdout is not None:
            process.stdout.close()


def growth(samples: list[float], window: int) -> float:
    first = sum(samples[:window]) / window
    last = sum(samples[-window:]) / window
    return (last - first) / first


@pytest.mark.slow
def test_200_clients_hold_latency_and_memory(
    server_process: tuple[str, psutil.Process], io: IoScheduler
) -> None:
    base_url, server = server_process
    baseline = threading.active_count()
    recorder = LatencyRecorder()
    me = psutil.Process()
    clients = [Client(number, base_url, io, recorder) for number in range(CLIENTS)]
    client_memory: list[float] = []
    server_memory: list[float] = []
    for client in clients:
        client.start()
    ends = time.monotonic() + SOAK_SECONDS
    while time.monotonic() < ends:
        client_memory.append(me.memory_info().rss)
        server_memory.append(server.memory_info().rss)
        time.sleep(1.0)
    for client in clients:
        client.stop()
    for client in clients:
        assert client.idle.wait(60), f"client {client.number} did not finish its round"
        client.endpoint.close()

    errors = [error for client in clients for error in client.errors]
    wrong = [result for client in clients for result in client.wrong]
    rounds = sum(client.rounds for client in clients)
    p50, p99 = recorder.percentile(50), recorder.percentile(99)
    window = max(1, min(60, len(client_memory) // 3))
    client_growth = growth(client_memory, window)
    server_growth = growth(server_memory, window)
    print(
        f"load: {CLIENTS} clients for {SOAK_SECONDS:.0f} s, {rounds} rounds, "
        f"{sum(recorder.statuses.values())} requests {dict(recorder.statuses)}, "
        f"status latency p50 {p50 * 1000:.1f} ms p99 {p99 * 1000:.1f} ms, "
        f"memory growth client {client_growth:+.1%} server {server_growth:+.1%} "
        f"(client {client_memory[-1] / 2**20:.0f} MiB, server {server_memory[-1] / 2**20:.0f} MiB)"
    )

    assert errors == []
    assert wrong == []
    assert set(recorder.statuses) == {200}
    assert all(client.rounds > 0 for client in clients)
    assert client_growth < GROWTH_LIMIT
    assert server_growth < GROWTH_LIMIT
    assert wait_for_threads(baseline) <= baseline
    assert client_threads() == []
