"""``rxrunpod demo``: a real pipeline against local endpoints running the example handlers.

The demo starts two local endpoints in this process: one runs
``examples/handlers/mock_worker.py`` (RunPod's mock worker inputs:
``mock_return``, ``mock_delay``, ``mock_error``, ``mock_progress``), the other
``examples/handlers/token_stream.py`` (a generator handler that yields
tokens). It then

- fans a batch of payloads out with ``run_each_updates``, 8 jobs in flight
  for 4 workers, so a queue forms and drains;
- shows every job's state in a live table, with the endpoint's health;
- streams one job's tokens from the second endpoint as they are yielded;
- includes one input that fails (retried once through ``/retry``) and one
  slow job that it cancels while it runs;
- ends with a summary: completed, failed and cancelled counts, p50/p95
  latency.

On a terminal the table redraws in place; piped, each change is one line.
The exit status is 0 when every figure came out as planned.
"""

from __future__ import annotations

import sys
import textwrap
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import reactivex
from reactivex import Observable
from reactivex import operators as ops

from ._display import LiveView
from .endpoint import Endpoint
from .job import Job
from .models import Health, JobState, JobStatus
from .operators import JobUpdate, Summary, run_each_updates

__all__ = ["DemoResult", "demo_payloads", "find_handlers", "run_demo"]

MAX_CONCURRENT = 8
WORKERS = 4
RETRIES = 1
DEADLINE_SECONDS = 50.0
"""The demo gives up after this long; a normal run takes about 5 to 10 seconds."""

FAILING_INDEX = 5
CANCELLED_INDEX = 2
SLOW_JOB_SECONDS = 1.8
"""Under the local endpoint's 2 s stop grace, so the cancelled handler returns without a warning."""
TOKEN_PROMPT = "What does a RunPod serverless endpoint do?"

_TEXT_WIDTH = 76
_TEXT_LINES = 3

_WORDS = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india")


def find_handlers(directory: Path | None = None) -> Path:
    """Return the directory of the example handlers; raises ``FileNotFoundError`` naming the fix.

    The handlers live in ``examples/handlers`` of a source checkout, next to
    the ``rxrunpod`` package when it is installed in editable mode.
    """
    candidates = (
        [directory]
        if directory
        else [Path(__file__).resolve().parents[1] / "examples" / "handlers"]
    )
    for candidate in candidates:
        if candidate is not None and (candidate / "mock_worker.py").is_file():
            return candidate
    raise FileNotFoundError(
        f"example handlers not found in {candidates[0]}; run the demo from a source checkout "
        "('pip install -e .' in the clone) or pass --handlers DIR"
    )


def demo_payloads(count: int) -> list[dict[str, Any]]:
    """Build ``count`` mock worker inputs.

    Most are quick jobs; one fails, one is slow enough to be cancelled while
    it runs, and one reports progress.
    """
    if count < 8:
        raise ValueError(f"the demo needs at least 8 jobs, got {count}")
    payloads: list[dict[str, Any]] = []
    for index in range(count):
        word = _WORDS[index % len(_WORDS)]
        # Delays from 0.2 to 1.1 s in a fixed shuffle, so completions arrive out of order.
        delay = 0.2 + (index * 7 % 10) / 10
        payloads.append({"mock_return": f"{word} done", "mock_delay": round(delay, 1)})
    payloads[FAILING_INDEX] = {"mock_error": True, "mock_delay": 0.3}
    payloads[CANCELLED_INDEX] = {"mock_return": "never delivered", "mock_delay": SLOW_JOB_SECONDS}
    payloads[7] = {
        "mock_return": "progress done",
        "mock_progress": {"updates": ["loading", "thinking"], "wait_time": 0.3},
    }
    return payloads


@dataclass
class DemoResult:
    """Figures measured by one demo run; ``ok`` is True when each came out as planned."""

    summary: Summary
    jobs: int
    retried: int
    token_count: int
    first_token_after: float | None
    text: str
    max_in_queue: int
    health_snapshots: int
    wall_time: float
    failures: dict[int, str] = field(default_factory=dict)
    """Each failed job's error message (first line) and attempt count, by job index."""
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when the run had no problem."""
        return not self.problems


class _Board:
    """Latest state of everything the demo shows, rendered as lines; thread-safe."""

    def __init__(self, payloads: list[dict[str, Any]], view: LiveView) -> None:
        self.payloads = payloads
        self.view = view
        self.lock = threading.Lock()
        self.updates: dict[int, JobUpdate] = {}
        self.health: Health | None = None
        self.health_snapshots = 0
        self.max_in_queue = 0
        self.text = ""
        self.token_count = 0
        self.token_status = "waiting"
        self.first_token_after: float | None = None
        self.started = time.monotonic()
        self.summary = Summary()
        self.retried: set[int] = set()
        self.failures: dict[int, str] = {}

    def on_update(self, update: JobUpdate) -> None:
        with self.lock:
            previous = self.updates.get(update.index)
            self.updates[update.index] = update
            if update.attempt and update.state.status is not JobStatus.FAILED:
                self.retried.add(update.index)
            if update.final:
                self.summary = self.summary.add(update.state)
                if update.state.status is JobStatus.FAILED:
                    attempts = update.attempt + 1
                    self.failures[update.index] = (
                        f"{_error_text(update.state)} (after {attempts} attempts)"
                    )
        changed = previous is None or previous.state.raw_status != update.state.raw_status
        if changed or (previous is not None and previous.attempt != update.attempt):
            self.view.note(self._describe_update(update))

    def on_health(self, health: Health) -> None:
        with self.lock:
            previous = self.health
            self.health = health
            self.health_snapshots += 1
            self.max_in_queue = max(self.max_in_queue, health.jobs.in_queue)
        if previous is None or previous.to_json() != health.to_json():
            self.view.note("health    " + self._describe_health(health))

    def on_token(self, token: Any) -> None:
        with self.lock:
            if self.first_token_after is None:
                self.first_token_after = time.monotonic() - self.started
            self.text += str(token)
            self.token_count += 1
            self.token_status = "streaming"
        self.view.note(f"token     {token!r}")

    def on_tokens_done(self, status: str) -> None:
        with self.lock:
            self.token_status = status
        self.view.note(f"tokens    {status}: {self.text!r}")

    def render(self) -> list[str]:
        with self.lock:
            elapsed = time.monotonic() - self.started
            lines = [
                f"jobs ({len(self.updates)} of {len(self.payloads)} submitted, {elapsed:4.1f} s)"
            ]
            cells = [self._cell(index) for index in range(len(self.payloads))]
            for start in range(0, len(cells), 4):
                lines.append("  " + "  ".join(cells[start : start + 4]))
            health = self._describe_health(self.health) if self.health else "waiting for /health"
            lines.append(f"health  {health}")
            lines.append(f"tokens  [{self.token_status}]")
            wrapped = textwrap.wrap(self.text, width=_TEXT_WIDTH) or [""]
            lines.extend("  " + line for line in wrapped[-_TEXT_LINES:])
            return lines

    def _cell(self, index: int) -> str:
        update = self.updates.get(index)
        if update is None:
            return f"{index:>2} {'-':<14}"
        status = update.state.raw_status
        if update.attempt:
            status += f" r{update.attempt}"
        return f"{index:>2} {status:<14}"

    def _describe_update(self, update: JobUpdate) -> str:
        state = update.state
        text = f"job {update.index:>2}    {state.raw_status:<11} {state.id}"
        if update.attempt:
            text += f"  attempt {update.attempt + 1}"
        if update.final:
            text += f"  after {update.elapsed:.2f} s"
        elif state.status.is_final:
            text += "  -> retry"
        return text

    @staticmethod
    def _describe_health(health: Health) -> str:
        # The local endpoint's /health counts every failed attempt, the retried
        # ones included, while the summary counts jobs; the wording keeps them apart.
        jobs, workers = health.jobs, health.workers
        return (
            f"queue {jobs.in_queue}  in progress {jobs.in_progress}  completed {jobs.completed}  "
            f"failed attempts {jobs.failed}  retried {jobs.retried} | "
            f"workers running {workers.running}  idle {workers.idle}"
        )


def _error_text(state: JobState) -> str:
    detail = state.error_detail
    if detail is None or not detail.message:
        return "no error message was given"
    return detail.message.splitlines()[0]


def run_demo(
    out: TextIO | None = None,
    *,
    jobs: int = 20,
    interactive: bool | None = None,
    handlers: Path | None = None,
) -> DemoResult:
    """Run the demo, drawing on ``out`` (stdout by default), and return what it measured."""
    from .local import LocalEndpoint

    handler_directory = find_handlers(handlers)
    payloads = demo_payloads(jobs)
    view = LiveView(out or sys.stdout, interactive=interactive)

    mock_worker = LocalEndpoint(str(handler_directory / "mock_worker.py"), workers=WORKERS)
    token_stream = LocalEndpoint(str(handler_directory / "token_stream.py"), workers=1)
    with mock_worker, token_stream:
        host = mock_worker.url.rsplit(":", 1)[0]
        view.print(f"rxrunpod demo: two local RunPod endpoints on {host}")
        view.print(f"  mock-worker   {mock_worker.base_url}  {WORKERS} workers, mock_worker.py")
        view.print(f"  token-stream  {token_stream.base_url}  1 worker, token_stream.py")
        view.print(
            f"  {jobs} jobs, at most {MAX_CONCURRENT} in flight, {RETRIES} retry per job; "
            f"job {FAILING_INDEX} fails, job {CANCELLED_INDEX} is cancelled while it runs"
        )
        view.print()

        board = _Board(payloads, view)
        with (
            Endpoint("mock-worker", base_url=mock_worker.base_url) as endpoint,
            Endpoint("token-stream", base_url=token_stream.base_url) as tokens_endpoint,
        ):
            _run_pipeline(endpoint, tokens_endpoint, payloads, board, view)

    summary = board.summary
    result = DemoResult(
        summary=summary,
        jobs=jobs,
        retried=len(board.retried),
        token_count=board.token_count,
        first_token_after=board.first_token_after,
        text=board.text,
        max_in_queue=board.max_in_queue,
        health_snapshots=board.health_snapshots,
        wall_time=time.monotonic() - board.started,
        failures=dict(board.failures),
    )
    result.problems.extend(_check(result))
    _print_summary(result, view)
    return result


def _run_pipeline(
    endpoint: Endpoint,
    tokens_endpoint: Endpoint,
    payloads: list[dict[str, Any]],
    board: _Board,
    view: LiveView,
) -> None:
    jobs_done = threading.Event()
    tokens_done = threading.Event()
    failures: list[BaseException] = []
    cancel_sent = threading.Event()

    def on_update(update: JobUpdate) -> None:
        board.on_update(update)
        is_slow_job = update.index == CANCELLED_INDEX
        if (
            is_slow_job
            and update.state.status is JobStatus.IN_PROGRESS
            and not cancel_sent.is_set()
        ):
            cancel_sent.set()
            view.note(f"job {update.index:>2}    cancel requested for {update.state.id}")
            endpoint.job(update.state.id).cancel().subscribe(on_error=on_failure)

    def on_failure(error: Exception) -> None:
        failures.append(error)
        jobs_done.set()
        tokens_done.set()

    def on_tokens_failure(error: Exception) -> None:
        board.on_tokens_done(f"failed: {error}")
        tokens_done.set()

    def on_tokens_completed() -> None:
        board.on_tokens_done("done")
        tokens_done.set()

    pipeline = reactivex.from_iterable(payloads).pipe(
        run_each_updates(endpoint, max_concurrent=MAX_CONCURRENT, retries=RETRIES)
    )
    token_job = tokens_endpoint.run({"prompt": TOKEN_PROMPT, "token_delay": 0.06}).pipe(
        ops.flat_map(_stream_of)
    )

    subscriptions = [
        endpoint.health(every=0.25).subscribe(board.on_health, lambda error: None),
        pipeline.subscribe(on_update, on_failure, jobs_done.set),
        token_job.subscribe(board.on_token, on_tokens_failure, on_tokens_completed),
    ]
    redraw = _Redrawer(view, board.render)
    try:
        deadline = time.monotonic() + DEADLINE_SECONDS
        while not (jobs_done.is_set() and tokens_done.is_set()):
            if time.monotonic() > deadline:
                failures.append(
                    TimeoutError(f"the demo did not finish within {DEADLINE_SECONDS:g} s")
                )
                break
            redraw.tick()
            time.sleep(0.1)
        # A last health snapshot after the queue drained, so the table ends on the final counts.
        board.on_health(endpoint.health().run())
        redraw.tick()
    finally:
        for subscription in subscriptions:
            subscription.dispose()
        view.close()
    if failures:
        raise failures[0]


def _stream_of(job: Job) -> Observable[Any]:
    return job.stream()


class _Redrawer:
    """Redraws the board on a terminal; ``tick`` is called from the demo's main loop."""

    def __init__(self, view: LiveView, render: Callable[[], list[str]]) -> None:
        self.view = view
        self.render = render

    def tick(self) -> None:
        if self.view.interactive:
            self.view.show(self.render())


def _check(result: DemoResult) -> list[str]:
    summary = result.summary
    expected = {
        "completed": (summary.completed, result.jobs - 2),
        "failed": (summary.failed, 1),
        "cancelled": (summary.cancelled, 1),
    }
    problems = [
        f"expected {want} {name}, got {got}"
        for name, (got, want) in expected.items()
        if got != want
    ]
    if result.token_count == 0:
        problems.append("no token was streamed")
    if summary.p50 is None:
        problems.append("no latency was reported")
    return problems


def _print_summary(result: DemoResult, view: LiveView) -> None:
    summary = result.summary
    view.print()
    view.print("summary")
    view.print(
        f"  jobs        {result.jobs} submitted: {summary.completed} completed, "
        f"{summary.failed} failed, {summary.cancelled} cancelled, {summary.timed_out} timed out"
    )
    for index, error in sorted(result.failures.items()):
        view.print(f"  failed      job {index}: {error}")
    if summary.p50 is not None and summary.p95 is not None:
        view.print(
            f"  latency     p50 {summary.p50:.2f} s, p95 {summary.p95:.2f} s "
            "(queue wait + execution, as the endpoint reports them)"
        )
    first = (
        f", first after {result.first_token_after:.2f} s"
        if result.first_token_after is not None
        else ""
    )
    view.print(f"  tokens      {result.token_count} streamed from one job{first}")
    peak = result.max_in_queue
    view.print(f"  health      {result.health_snapshots} snapshots, queue peaked at {peak} jobs")
    view.print(f"  wall time   {result.wall_time:.1f} s")
    for problem in result.problems:
        view.print(f"  problem     {problem}")


def main(out: TextIO | None = None, *, jobs: int = 20, handlers: Path | None = None) -> int:
    """Run the demo for the command line; return its exit status."""
    result = run_demo(out, jobs=jobs, handlers=handlers)
    return 0 if result.ok else 1
