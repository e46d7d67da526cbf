"""Token-stream throughput of rxrunpod's ``chat_completions().pipe(texts())`` and bare sseclient-py.

Two sources serve one chat completion of N small events (about 200 bytes
each) from a child process: the local endpoint running
``examples/handlers/openai_tokens.py``, and a raw server that sends the same
handler's bytes from memory ("pre-rendered"), so that the readers rather
than the server set the pace. Each round reads a source three ways, in turn:

- ``rxrunpod``: ``ep.openai.chat_completions(...).pipe(texts())``, counting
  the deltas in ``on_next``;
- ``sseclient-py``: the loop from sseclient-py's README,
  ``SSEClient(requests_response).events()``, with ``json.loads`` and the
  delta lookup, so both sides do the same work per event;
- ``sseclient-py, iter_content(None)``: the same loop fed with
  ``response.iter_content(chunk_size=None)``, a faster way to feed
  sseclient-py that delivers events late on bodies without chunked encoding.

The reported rate is the best round of each. The ratio compares each
reader with the README loop on the same source. Memory is the client process's RSS, sampled every
10,000 events; "growth" is the RSS at the end minus the RSS after the first
10% of the events, so a client that buffered the body would show it.

Run ``python -m benchmarks.sse_throughput`` (200,000 events, 3 rounds) or
add ``--quick`` (20,000 events, 1 round) for CI. The server takes one of the
two cores while the client runs on the other, so the rates are those of a
client that is not starved by the server.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]
import requests
from sseclient import SSEClient

from rxrunpod import Endpoint
from rxrunpod.openai import texts

__all__ = ["main", "run"]

HANDLER = Path(__file__).resolve().parents[1] / "examples" / "handlers" / "openai_tokens.py"
ENDPOINT_ID = "bench"
MODEL = "gettysburg-address"
MESSAGES = [{"role": "user", "content": "Recite the address."}]
FULL_EVENTS = 200_000
QUICK_EVENTS = 20_000
SAMPLE_EVERY = 10_000
STREAM_TIMEOUT = 300.0
"""Seconds one stream may take before the benchmark gives up."""

SERVER_SCRIPT = """
import sys
from rxrunpod.local import LocalEndpoint

endpoint = LocalEndpoint(sys.argv[1], workers=1)
endpoint.start()
print(endpoint.base_url, flush=True)
sys.stdin.read()  # the parent closes stdin (or exits) to stop the server
endpoint.stop()
"""


PRERENDERED_SCRIPT = """
import os, socket, sys, threading
from rxrunpod.local import load_handler

events = int(sys.argv[2])
body_input = {"messages": [{"role": "user", "content": "x"}], "stream": True, "max_tokens": events}
job = {"id": "bench", "input": {"openai_route": "/v1/chat/completions", "openai_input": body_input}}
body = "".join(load_handler(sys.argv[1]).function(job)).encode()
pieces = [body[start : start + 16384] for start in range(0, len(body), 16384)]
answer = b"HTTP/1.1 200 OK\\r\\nContent-Type: text/event-stream\\r\\n"
answer += b"Transfer-Encoding: chunked\\r\\n\\r\\n"
answer += b"".join(b"%x\\r\\n%s\\r\\n" % (len(piece), piece) for piece in pieces) + b"0\\r\\n\\r\\n"
listener = socket.create_server(("127.0.0.1", 0))
print("http://127.0.0.1:%d/v2" % listener.getsockname()[1], flush=True)
threading.Thread(target=lambda: (sys.stdin.read(), os._exit(0)), daemon=True).start()
while True:
    connection, _ = listener.accept()
    with connection:
        request = b""
        while b"\\r\\n\\r\\n" not in request:
            request += connection.recv(65536)
        head, _, rest = request.partition(b"\\r\\n\\r\\n")
        length = int(head.lower().split(b"content-length:")[1].split(b"\\r\\n")[0])
        while len(rest) < length:
            rest += connection.recv(65536)
        connection.sendall(answer)
"""


@contextmanager
def local_endpoint_process() -> Iterator[str]:
    """Run the local endpoint in a child process; yield its base URL."""
    with server_process(SERVER_SCRIPT, str(HANDLER)) as base_url:
        yield base_url


@contextmanager
def prerendered_process(events: int) -> Iterator[str]:
    """Serve one pre-rendered stream of ``events`` deltas from a child process; yield its base URL.

    The server sends the handler's bytes from memory to every request, so
    the readers, not the server, set the pace.
    """
    with server_process(PRERENDERED_SCRIPT, str(HANDLER), str(events)) as base_url:
        yield base_url


@contextmanager
def server_process(script: str, *arguments: str) -> Iterator[str]:
    """Run a server script in a child process; yield the base URL it prints first."""
    # The server's log goes to a file, shown only when it fails to start.
    with tempfile.TemporaryFile(mode="w+") as log:
        process = subprocess.Popen(
            [sys.executable, "-c", script, *arguments],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
        try:
            assert process.stdout is not None
            base_url = process.stdout.readline().strip()
            if not base_url.startswith("http://"):
                log.seek(0)
                raise RuntimeError(f"the benchmark server did not start:\n{log.read()[-2000:]}")
            yield base_url
        finally:
            _stop(process)


def _stop(process: subprocess.Popen[str]) -> None:
    assert process.stdin is not None
    process.stdin.close()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


class RssSampler:
    """RSS of this process at every ``SAMPLE_EVERY``-th event."""

    def __init__(self, events: int) -> None:
        self._process = psutil.Process()
        self._warm_at = max(1, events // 10)
        self.warm: int | None = None
        self.peak = 0
        self.last = 0

    def sample(self, count: int) -> None:
        rss = int(self._process.memory_info().rss)
        if self.warm is None and count >= self._warm_at:
            self.warm = rss
        self.peak = max(self.peak, rss)
        self.last = rss

    def growth_mb(self) -> float:
        return (self.last - (self.warm or self.last)) / 2**20


def read_with_rxrunpod(base_url: str, events: int) -> tuple[int, float, RssSampler]:
    """Stream through ``chat_completions(...).pipe(texts())``; return deltas, seconds, memory."""
    sampler = RssSampler(events)
    count = 0
    failures: list[Exception] = []
    done = threading.Event()

    def on_next(_: str) -> None:
        nonlocal count
        count += 1
        if count % SAMPLE_EVERY == 0:
            sampler.sample(count)

    def on_error(error: Exception) -> None:
        failures.append(error)
        done.set()

    with Endpoint(ENDPOINT_ID, base_url=base_url, timeout=(5.0, 60.0)) as endpoint:
        chunks = endpoint.openai.chat_completions(MESSAGES, model=MODEL, max_tokens=events)
        started = time.perf_counter()
        chunks.pipe(texts()).subscribe(on_next, on_error, done.set)
        if not done.wait(STREAM_TIMEOUT):
            raise TimeoutError(f"the rxrunpod stream did not finish within {STREAM_TIMEOUT:g} s")
        seconds = time.perf_counter() - started
    if failures:
        raise failures[0]
    sampler.sample(count)
    return count, seconds, sampler


def read_with_sseclient(
    base_url: str, events: int, feed: Callable[[requests.Response], Any]
) -> tuple[int, float, RssSampler]:
    """Stream through a bare sseclient-py loop; ``feed`` turns the response into its input."""
    sampler = RssSampler(events)
    count = 0
    url = f"{base_url}/{ENDPOINT_ID}/openai/v1/chat/completions"
    body = {"model": MODEL, "messages": MESSAGES, "max_tokens": events, "stream": True}
    with requests.Session() as session:
        started = time.perf_counter()
        response = session.post(url, json=body, stream=True, timeout=(5.0, 60.0))
        response.raise_for_status()
        for event in SSEClient(feed(response)).events():
            if event.data == "[DONE]":
                break
            text = json.loads(event.data)["choices"][0]["delta"].get("content")
            if text:
                count += 1
                if count % SAMPLE_EVERY == 0:
                    sampler.sample(count)
        response.close()
        seconds = time.perf_counter() - started
    sampler.sample(count)
    return count, seconds, sampler


def readme_feed(response: requests.Response) -> Any:
    return response


def chunk_feed(response: requests.Response) -> Any:
    return response.iter_content(chunk_size=None)


CASES: list[tuple[str, Callable[[str, int], tuple[int, float, RssSampler]]]] = [
    ("rxrunpod chat_completions().pipe(texts())", read_with_rxrunpod),
    ("sseclient-py SSEClient(response)", lambda url, n: read_with_sseclient(url, n, readme_feed)),
    (
        "sseclient-py SSEClient(iter_content(None))",
        lambda url, n: read_with_sseclient(url, n, chunk_feed),
    ),
]


def run(quick: bool = False) -> list[dict[str, Any]]:
    """Run the benchmark; return one row per source and reader, rxrunpod first per source.

    Each row has ``benchmark``, ``source`` ("local endpoint" or
    "pre-rendered"), ``case``, ``events``, ``seconds`` (best round),
    ``events_per_s``, ``ratio`` (this rate over the sseclient-py README
    loop's on the same source) and ``rss_growth_mb``/``rss_peak_mb`` of the
    best round.
    """
    events = QUICK_EVENTS if quick else FULL_EVENTS
    rounds = 1 if quick else 3
    rows: list[dict[str, Any]] = []
    with local_endpoint_process() as base_url:
        read_with_rxrunpod(base_url, 2_000)  # warm up imports, pools and the handler
        rows += measure("local endpoint", base_url, events, rounds)
    with prerendered_process(events) as base_url:
        rows += measure("pre-rendered", base_url, events, rounds)
    return rows


def measure(source: str, base_url: str, events: int, rounds: int) -> list[dict[str, Any]]:
    """Read ``events`` deltas from ``base_url`` with every reader, ``rounds`` times each."""
    best: dict[str, tuple[int, float, RssSampler]] = {}
    for round_number in range(rounds):
        # Rotate the order so no reader always runs first.
        order = CASES[round_number % len(CASES) :] + CASES[: round_number % len(CASES)]
        for name, reader in order:
            result = reader(base_url, events)
            if result[0] != events:
                raise RuntimeError(
                    f"{name} read {result[0]} deltas from {source}, expected {events}"
                )
            if name not in best or result[1] < best[name][1]:
                best[name] = result

    baseline_rate = events / best[CASES[1][0]][1]
    rows = []
    for name, _ in CASES:
        count, seconds, sampler = best[name]
        rate = count / seconds
        rows.append(
            {
                "benchmark": "sse_throughput",
                "source": source,
                "case": name,
                "events": count,
                "seconds": round(seconds, 3),
                "events_per_s": round(rate),
                "ratio": round(rate / baseline_rate, 3),
                "rss_growth_mb": round(sampler.growth_mb(), 1),
                "rss_peak_mb": round(sampler.peak / 2**20, 1),
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument(
        "--quick", action="store_true", help=f"{QUICK_EVENTS:,} events in one round, for CI"
    )
    arguments = parser.parse_args(argv)
    rows = run(quick=arguments.quick)
    print(
        f"{'source':15} {'case':44} {'events':>8} {'seconds':>8} {'events/s':>10} {'ratio':>6}"
        f" {'RSS growth':>11}"
    )
    for row in rows:
        print(
            f"{row['source']:15} {row['case']:44} {row['events']:>8} {row['seconds']:>8.2f}"
            f" {row['events_per_s']:>10,} {row['ratio']:>6.2f} {row['rss_growth_mb']:>8.1f} MB"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
