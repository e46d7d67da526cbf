"""The local endpoint's fast paths: job hand-over, batched reports, job ids, public reads."""

from __future__ import annotations

import asyncio
import os
import queue
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from rxrunpod.local import (
    Assignment,
    HandlerSpec,
    LocalEndpoint,
    Outcome,
    ThreadWorker,
    Worker,
    _engine,
    _jobs,
)
from rxrunpod.models import JobStatus

# -- a WorkerEvents that records every report --------------------------------


class RecordingEvents:
    """Collect a worker's reports in order; ``finished`` reports also go to a queue."""

    def __init__(self) -> None:
        self.reports: list[tuple[Any, ...]] = []
        self.finished_jobs: queue.SimpleQueue[tuple[str, Outcome]] = queue.SimpleQueue()
        self.ready_event = threading.Event()
        self.exited_event = threading.Event()

    def ready(self, worker: Worker, capacity: int) -> None:
        self.reports.append(("ready", capacity))
        self.ready_event.set()

    def progress(self, key: tuple[str, int], value: Any) -> None:
        self.reports.append(("progress", key[0], value))

    def chunk(self, key: tuple[str, int], item: Any) -> None:
        self.reports.append(("chunk", key[0], item))

    def finished(
        self, worker: Worker, key: tuple[str, int], outcome: Outcome, capacity: int
    ) -> None:
        self.reports.append(("finished", key[0], outcome.status))
        self.finished_jobs.put((key[0], outcome))

    def exited(self, worker: Worker, reason: str | None) -> None:
        self.reports.append(("exited", reason))
        self.exited_event.set()


@pytest.fixture
def loop_wakeups(monkeypatch: pytest.MonkeyPatch) -> list[Callable[..., Any]]:
    """Record every ``call_soon_threadsafe`` made on any event loop during the test."""
    calls: list[Callable[..., Any]] = []
    original = asyncio.BaseEventLoop.call_soon_threadsafe

    def counting(self: asyncio.BaseEventLoop, callback: Callable[..., Any], *args: Any) -> Any:
        calls.append(callback)
        return original(self, callback, *args)

    monkeypatch.setattr(asyncio.BaseEventLoop, "call_soon_threadsafe", counting)
    return calls


def start_worker(function: Callable[..., Any], events: RecordingEvents) -> ThreadWorker:
    worker = ThreadWorker("w1", events, HandlerSpec(function))
    worker.start()
    assert events.ready_event.wait(5)
    return worker


def stop_worker(worker: ThreadWorker, events: RecordingEvents) -> None:
    worker.stop()
    assert events.exited_event.wait(5)
    assert worker.join(5)


def double(job: dict[str, Any]) -> Any:
    return job["input"] * 2


# -- thread workers and synchronous handlers --------------------------------


def test_sync_handler_jobs_wake_no_event_loop(loop_wakeups: list[Callable[..., Any]]) -> None:
    events = RecordingEvents()
    worker = start_worker(double, events)
    for number in range(20):
        worker.assign(Assignment(f"job-{number}", 0, number))
    results = [events.finished_jobs.get(timeout=5) for _ in range(20)]
    stop_worker(worker, events)

    assert [outcome.output for _, outcome in results] == [number * 2 for number in range(20)]
    assert loop_wakeups == []


def test_sync_handler_runs_its_jobs_in_order() -> None:
    events = RecordingEvents()
    worker = start_worker(double, events)
    for number in range(5):
        worker.assign(Assignment(f"job-{number}", 0, number))
    finished = [events.finished_jobs.get(timeout=5)[0] for _ in range(5)]
    stop_worker(worker, events)

    assert finished == [f"job-{number}" for number in range(5)]


def test_sync_job_cancelled_before_start_never_runs() -> None:
    started = threading.Event()
    release = threading.Event()
    calls: list[Any] = []

    def blocking(job: dict[str, Any]) -> Any:
        calls.append(job["input"])
        started.set()
        release.wait(5)
        return job["input"]

    events = RecordingEvents()
    worker = start_worker(blocking, events)
    worker.assign(Assignment("first", 0, 1))
    assert started.wait(5)
    worker.assign(Assignment("second", 0, 2))
    worker.cancel(("second", 0))
    release.set()
    outcomes = dict(events.finished_jobs.get(timeout=5) for _ in range(2))
    stop_worker(worker, events)

    assert calls == [1]
    assert outcomes["first"].status is JobStatus.COMPLETED
    assert outcomes["second"].status is JobStatus.CANCELLED


def test_stop_leaves_queued_sync_jobs_unrun() -> None:
    started = threading.Event()
    release = threading.Event()
    calls: list[Any] = []

    def blocking(job: dict[str, Any]) -> Any:
        calls.append(job["input"])
        started.set()
        release.wait(5)
        return job["input"]

    events = RecordingEvents()
    worker = start_worker(blocking, events)
    worker.assign(Assignment("running", 0, 1))
    assert started.wait(5)
    worker.assign(Assignment("queued", 0, 2))
    worker.stop()
    release.set()
    assert events.exited_event.wait(5)

    # The pool requeues a job its worker never reported, so "queued" gets no report.
    assert calls == [1]
    assert events.reports == [
        ("ready", 1),
        ("finished", "running", JobStatus.COMPLETED),
        ("exited", None),
    ]


def test_sync_generator_chunks_precede_its_finish() -> None:
    def counting(job: dict[str, Any]) -> Iterator[int]:
        yield from range(int(job["input"]))

    events = RecordingEvents()
    worker = start_worker(counting, events)
    worker.assign(Assignment("stream", 0, 4))
    events.finished_jobs.get(timeout=5)
    stop_worker(worker, events)

    assert events.reports[1:6] == [
        ("chunk", "stream", 0),
        ("chunk", "stream", 1),
        ("chunk", "stream", 2),
        ("chunk", "stream", 3),
        ("finished", "stream", JobStatus.COMPLETED),
    ]


async def _sleep_then_return(value: Any, seconds: float) -> Any:
    await asyncio.sleep(seconds)
    return value


def test_plain_function_returning_coroutine_completes() -> None:
    events = RecordingEvents()
    worker = start_worker(lambda job: _sleep_then_return(job["input"], 0.01), events)
    worker.assign(Assignment("wrapped", 0, {"x": 1}))
    job_id, outcome = events.finished_jobs.get(timeout=5)
    stop_worker(worker, events)

    assert job_id == "wrapped"
    assert outcome.status is JobStatus.COMPLETED
    assert outcome.output == {"x": 1}


def test_plain_function_returning_coroutine_can_be_cancelled() -> None:
    events = RecordingEvents()
    worker = start_worker(lambda job: _sleep_then_return(job["input"], 30), events)
    worker.assign(Assignment("wrapped", 0, 1))
    # The coroutine starts on the worker's own loop; cancel lands once it is registered.
    for _ in range(100):
        worker.cancel(("wrapped", 0))
        try:
            job_id, outcome = events.finished_jobs.get(timeout=0.05)
            break
        except queue.Empty:
            continue
    else:
        pytest.fail("the cancelled coroutine did not end within 5 s")
    stop_worker(worker, events)

    assert job_id == "wrapped"
    assert outcome.status is JobStatus.CANCELLED


# -- reports from workers reach the server loop in batches -------------------


class RecordingEngine:
    """The engine methods ``_LoopEvents`` calls, recording what they receive."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def on_ready(self, worker: Any, capacity: int) -> None:
        self.calls.append(("ready", capacity))

    def on_progress(self, key: tuple[str, int], value: Any) -> None:
        self.calls.append(("progress", value))

    def on_chunk(self, key: tuple[str, int], item: Any) -> None:
        self.calls.append(("chunk", item))

    def on_finished(
        self, worker: Any, key: tuple[str, int], outcome: Outcome, capacity: int
    ) -> None:
        self.calls.append(("finished", key[0]))

    def on_exited(self, worker: Any, reason: str | None) -> None:
        self.calls.append(("exited", reason))


def test_reports_while_loop_busy_wake_it_once(loop_wakeups: list[Callable[..., Any]]) -> None:
    loop = asyncio.new_event_loop()
    engine = RecordingEngine()
    events = _engine._LoopEvents(engine, loop)  # type: ignore[arg-type]
    busy = threading.Event()
    reported = threading.Event()

    def hold_loop() -> None:
        busy.set()
        assert reported.wait(5)

    def report() -> None:
        assert busy.wait(5)
        for item in range(10):
            events.chunk(("job", 0), item)
        events.progress(("job", 0), "half")
        events.finished(None, ("job", 0), Outcome(JobStatus.COMPLETED), 1)  # type: ignore[arg-type]
        reported.set()

    reporter = threading.Thread(target=report)
    reporter.start()
    try:
        loop.call_soon(hold_loop)
        loop.run_until_complete(asyncio.sleep(0.05))
    finally:
        reporter.join(5)
        loop.close()

    assert engine.calls == [
        *(("chunk", item) for item in range(10)),
        ("progress", "half"),
        ("finished", "job"),
    ]
    assert len(loop_wakeups) == 1


# -- job ids ------------------------------------------------------------------


def test_job_ids_read_urandom_once_per_256(monkeypatch: pytest.MonkeyPatch) -> None:
    reads: list[int] = []
    original = os.urandom

    def counting(size: int) -> bytes:
        reads.append(size)
        return original(size)

    monkeypatch.setattr(_jobs, "_random_bytes", _jobs._RandomBytes())
    monkeypatch.setattr(os, "urandom", counting)
    ids = {_jobs.new_job_id(sync=False) for _ in range(512)}

    assert len(ids) == 512
    assert len(reads) == 2


def test_job_ids_are_version_4_uuids() -> None:
    job_id = _jobs.new_job_id(sync=True)
    parsed = uuid.UUID(job_id.removeprefix("sync-").removesuffix("-u1"))

    assert job_id.startswith("sync-")
    assert job_id.endswith("-u1")
    assert parsed.version == 4
    assert parsed.variant == uuid.RFC_4122


# -- the endpoint end to end ----------------------------------------------------


def test_runsync_burst_completes_every_job(http: requests.Session) -> None:
    with LocalEndpoint(double, workers=4) as endpoint:
        url = f"{endpoint.base_url}/ep/runsync"
        documents = [http.post(url, json={"input": number}).json() for number in range(50)]

    assert [document["status"] for document in documents] == ["COMPLETED"] * 50
    assert [document["output"] for document in documents] == [n * 2 for n in range(50)]


# -- LocalEndpoint.finished_at ----------------------------------------------


def test_finished_at_reads_the_final_moment(http: requests.Session) -> None:
    with LocalEndpoint(double, workers=1) as endpoint:
        before = time.monotonic()
        document = http.post(f"{endpoint.base_url}/ep/runsync", json={"input": 3}).json()
        after = time.monotonic()
        finished = endpoint.finished_at(document["id"])

    assert document["status"] == "COMPLETED"
    assert finished is not None
    assert before <= finished <= after


def test_finished_at_is_none_before_the_end(http: requests.Session) -> None:
    release = threading.Event()

    def blocking(job: dict[str, Any]) -> Any:
        release.wait(10)
        return job["input"]

    with LocalEndpoint(blocking, workers=1) as endpoint:
        running = http.post(f"{endpoint.base_url}/ep/run", json={"input": 1}).json()["id"]
        queued = http.post(f"{endpoint.base_url}/ep/run", json={"input": 2}).json()["id"]
        readings = [endpoint.finished_at(running), endpoint.finished_at(queued)]
        release.set()

    assert readings == [None, None]


def test_finished_at_of_unknown_job_is_none() -> None:
    with LocalEndpoint(double, workers=1) as endpoint:
        reading = endpoint.finished_at("no-such-job")

    assert reading is None


def test_finished_at_needs_a_running_endpoint() -> None:
    endpoint = LocalEndpoint(double, workers=1)

    with pytest.raises(RuntimeError, match="not running"):
        endpoint.finished_at("any")


# -- the runpod package is imported only by handlers that import it ----------

HANDLERS = Path(__file__).parent / "handlers"
ROOT = Path(__file__).parents[2]


def run_python(code: str) -> str:
    """Run ``code`` in a fresh interpreter, where no test imported ``runpod`` yet."""
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_plain_handler_file_leaves_runpod_unimported() -> None:
    output = run_python(
        "import sys\n"
        "from rxrunpod.local import load_handler\n"
        f"load_handler({str(HANDLERS / 'basic.py')!r} + ':echo')\n"
        "print('runpod' in sys.modules)\n"
    )

    assert output == "False"


def test_runpod_imported_by_handler_is_intercepted(tmp_path: Path) -> None:
    handler_file = tmp_path / "from_import.py"
    handler_file.write_text(
        "from runpod.serverless import start\n"
        "\n"
        "def handler(job):\n"
        "    return job['input']\n"
        "\n"
        "start({'handler': handler, 'return_aggregate_stream': True})\n"
    )
    output = run_python(
        "import logging\n"
        "from rxrunpod.local import load_handler\n"
        f"spec = load_handler({str(handler_file)!r})\n"
        "import runpod\n"
        "print(spec.function.__name__, spec.return_aggregate_stream)\n"
        "print(runpod.serverless.start.__wrapped__ is not None)\n"
        "print(type(runpod.__loader__).__name__, logging.getLogger().handlers)\n"
    )

    assert output.splitlines() == ["handler True", "True", "SourceFileLoader []"]
