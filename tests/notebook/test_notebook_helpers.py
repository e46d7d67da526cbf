"""Live notebook helpers on synthetic observables: throttling, final frames, dispose, threads."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Mapping
from typing import Any

import pytest
import reactivex
from reactivex import operators as ops
from reactivex.subject import Subject
from reactivex.testing import TestScheduler

from rxrunpod import notebook
from rxrunpod.models import Health, JobState
from rxrunpod.notebook import SUMMARY_MIME
from rxrunpod.operators import JobUpdate

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class RecordingSink:
    """Keeps every frame a helper sends, in order, as ``(action, bundle)``."""

    def __init__(self) -> None:
        self.frames: list[tuple[str, dict[str, Any]]] = []
        self.threads: set[str] = set()
        self._lock = threading.Lock()

    def show(self, bundle: Mapping[str, Any]) -> None:
        self._record("show", bundle)

    def update(self, bundle: Mapping[str, Any]) -> None:
        self._record("update", bundle)

    def _record(self, action: str, bundle: Mapping[str, Any]) -> None:
        with self._lock:
            self.frames.append((action, dict(bundle)))
            self.threads.add(threading.current_thread().name)

    @property
    def last(self) -> dict[str, Any]:
        return self.frames[-1][1]

    @property
    def last_summary(self) -> dict[str, Any]:
        summary: dict[str, Any] = self.last[SUMMARY_MIME]
        return summary


def make_health(in_queue: int, running: int, completed: int = 0) -> Health:
    return Health.from_json(
        {
            "jobs": {"inQueue": in_queue, "inProgress": running, "completed": completed},
            "workers": {"idle": 2 - running, "running": running},
        }
    )


def make_state(job_id: str, status: str, **fields: Any) -> JobState:
    return JobState.from_json({"id": job_id, "status": status, **fields})


def ticking(items: list[Any], period: float, scheduler: TestScheduler) -> reactivex.Observable[Any]:
    """Emit ``items`` one per ``period`` seconds of virtual time, then complete."""

    def first(pair: tuple[Any, int]) -> Any:
        return pair[0]

    return reactivex.from_iterable(items).pipe(
        ops.zip(reactivex.interval(period, scheduler=scheduler)),
        ops.map(first),
    )


def test_health_plot_shows_first_frame_at_once() -> None:
    sink = RecordingSink()
    notebook.health_plot(Subject(), sink=sink, scheduler=TestScheduler())

    assert [action for action, _ in sink.frames] == ["show"]
    assert sink.last["image/png"].startswith(PNG_SIGNATURE)
    assert sink.last_summary["state"] == "running"
    assert sink.last_summary["points"] == 0


def test_health_plot_throttles_fast_ticks() -> None:
    scheduler = TestScheduler()
    sink = RecordingSink()
    snapshots = [make_health(in_queue=40 - i, running=i % 3) for i in range(40)]

    plot = notebook.health_plot(
        ticking(snapshots, 0.05, scheduler), interval=0.5, sink=sink, scheduler=scheduler
    )
    scheduler.advance_to(1.0)
    updates_after_one_second = len(sink.frames) - 1
    scheduler.advance_to(10.0)

    # 40 ticks over 2 s at 0.5 s per frame: a redraw at 0.5, 1.0, 1.5 and
    # 2.0 s, plus the final frame on completion.
    assert updates_after_one_second == 2
    assert len(sink.frames) - 1 <= 6
    assert plot.summary()["items"] == 40
    assert plot.state == "completed"


def test_health_plot_final_frame_holds_every_point() -> None:
    scheduler = TestScheduler()
    sink = RecordingSink()
    snapshots = [make_health(in_queue=5 - i, running=min(i, 2), completed=i) for i in range(6)]

    plot = notebook.health_plot(ticking(snapshots, 1.0, scheduler), sink=sink, scheduler=scheduler)
    scheduler.advance_to(20.0)

    summary = sink.last_summary
    assert plot.done
    assert summary["state"] == "completed"
    assert summary["points"] == 6
    assert summary["seconds"] == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    assert summary["series"]["in_queue"] == [5, 4, 3, 2, 1, 0]
    assert summary["series"]["completed"] == [0, 1, 2, 3, 4, 5]
    assert summary["series"]["workers_running"] == [0, 1, 2, 2, 2, 2]
    assert sink.last["image/png"].startswith(PNG_SIGNATURE)
    assert "6 snapshots (completed)" in sink.last["text/plain"]


def test_health_plot_keeps_newest_points() -> None:
    subject: Subject[Health] = Subject()
    sink = RecordingSink()
    plot = notebook.health_plot(subject, max_points=3, sink=sink, scheduler=TestScheduler())

    for count in range(5):
        subject.on_next(make_health(in_queue=count, running=0))
    plot.dispose()

    assert sink.last_summary["series"]["in_queue"] == [2, 3, 4]


def test_dispose_stops_updates_and_keeps_last_frame() -> None:
    scheduler = TestScheduler()
    subject: Subject[Health] = Subject()
    sink = RecordingSink()
    plot = notebook.health_plot(subject, sink=sink, scheduler=scheduler)

    subject.on_next(make_health(in_queue=3, running=1))
    subject.on_next(make_health(in_queue=2, running=2))
    plot.dispose()
    frames_at_dispose = len(sink.frames)
    subject.on_next(make_health(in_queue=1, running=2))
    scheduler.advance_to(10.0)
    plot.dispose()

    assert len(sink.frames) == frames_at_dispose
    assert not subject.observers
    assert sink.last_summary["state"] == "disposed"
    assert sink.last_summary["series"]["in_queue"] == [3, 2]
    assert "(disposed)" in sink.last["text/plain"]


def test_error_ends_display_with_message() -> None:
    subject: Subject[Health] = Subject()
    sink = RecordingSink()
    plot = notebook.health_plot(subject, sink=sink, scheduler=TestScheduler())

    subject.on_next(make_health(in_queue=1, running=0))
    subject.on_error(ConnectionError("endpoint went away"))

    assert plot.state == "failed"
    assert plot.error == "ConnectionError: endpoint went away"
    assert sink.last_summary["error"] == "ConnectionError: endpoint went away"
    assert sink.last_summary["points"] == 1


def test_wrong_item_type_fails_helper() -> None:
    subject: Subject[Any] = Subject()
    sink = RecordingSink()
    plot = notebook.health_plot(subject, sink=sink, scheduler=TestScheduler())

    subject.on_next({"jobs": {}})

    assert plot.state == "failed"
    assert plot.error is not None
    assert plot.error.startswith("TypeError: health_plot expects Health snapshots")
    assert plot.error.endswith("got dict")
    assert not subject.observers


def test_source_failing_on_subscribe_is_shown() -> None:
    sink = RecordingSink()
    board = notebook.job_board(
        reactivex.throw(ValueError("bad payload")), sink=sink, scheduler=TestScheduler()
    )

    assert board.done
    assert board.error == "ValueError: bad payload"
    assert [action for action, _ in sink.frames] == ["show", "update"]


def test_job_board_lists_every_job_with_latest_state() -> None:
    scheduler = TestScheduler()
    sink = RecordingSink()
    states = [
        make_state("job-1", "IN_QUEUE"),
        make_state("job-2", "IN_PROGRESS", delayTime=40, workerId="w1"),
        make_state("job-1", "COMPLETED", delayTime=12, executionTime=250, workerId="w0"),
        make_state("job-2", "FAILED", delayTime=40, executionTime=90, error="boom"),
        make_state("job-3", "CANCELLED"),
    ]

    board = notebook.job_board(
        ticking(states, 0.1, scheduler), total=3, sink=sink, scheduler=scheduler
    )
    scheduler.advance_to(5.0)

    summary = sink.last_summary
    assert board.state == "completed"
    assert [job["id"] for job in summary["jobs"]] == ["job-1", "job-2", "job-3"]
    assert [job["status"] for job in summary["jobs"]] == ["COMPLETED", "FAILED", "CANCELLED"]
    assert all(job["final"] for job in summary["jobs"])
    assert summary["jobs"][0]["delay_time"] == 12
    assert summary["jobs"][0]["execution_time"] == 250
    assert summary["jobs"][1]["error"] == "boom"
    assert summary["counts"] == {"COMPLETED": 1, "FAILED": 1, "CANCELLED": 1}
    assert summary["total"] == 3
    table = sink.last["text/html"]
    assert table.count("<tr>") == 4
    assert "<th>attempt</th>" in table
    assert "jobs: 3/3 jobs (completed)" in table
    assert ">250<" in table


def test_job_board_follows_run_each_updates() -> None:
    subject: Subject[JobUpdate] = Subject()
    sink = RecordingSink()
    board = notebook.job_board(subject, sink=sink, scheduler=TestScheduler())

    failed = make_state("job-1", "FAILED", error="flaky")
    subject.on_next(JobUpdate(index=0, payload={}, state=make_state("job-1", "IN_QUEUE")))
    subject.on_next(JobUpdate(index=0, payload={}, state=failed, attempt=0, final=False))
    first_pass = board.summary()["jobs"][0]
    subject.on_next(
        JobUpdate(
            index=0, payload={}, state=make_state("job-1", "COMPLETED"), attempt=1, final=True
        )
    )
    subject.on_completed()

    assert first_pass["status"] == "FAILED"
    assert first_pass["final"] is False
    jobs = sink.last_summary["jobs"]
    assert len(jobs) == 1
    assert jobs[0]["status"] == "COMPLETED"
    assert jobs[0]["final"] is True
    assert jobs[0]["attempt"] == 1


def test_job_board_escapes_html() -> None:
    sink = RecordingSink()
    notebook.job_board(
        reactivex.of(make_state("<script>", "FAILED", error="<b>x</b>")),
        sink=sink,
        scheduler=TestScheduler(),
    )

    table = sink.last["text/html"]
    assert "<script>" not in table
    assert "&lt;script&gt;" in table
    assert "&lt;b&gt;x&lt;/b&gt;" in table


def test_text_panel_appends_chunks() -> None:
    scheduler = TestScheduler()
    sink = RecordingSink()
    chunks = ["Hel", "lo", ", ", "world", 42]

    panel = notebook.text_panel(ticking(chunks, 0.01, scheduler), sink=sink, scheduler=scheduler)
    scheduler.advance_to(1.0)

    assert panel.text == "Hello, world42"
    assert sink.last_summary["text"] == "Hello, world42"
    assert sink.last_summary["chunks"] == 5
    assert sink.last["text/plain"] == "Hello, world42"
    assert "▌" not in sink.last["text/html"]


def test_frames_from_worker_threads_are_coalesced() -> None:
    subject: Subject[JobState] = Subject()
    sink = RecordingSink()
    board = notebook.job_board(subject, interval=0.05, sink=sink)
    lock = threading.Lock()

    def submit(worker: int) -> None:
        for index in range(50):
            with lock:  # Rx observers expect serialized calls
                subject.on_next(make_state(f"job-{worker}-{index}", "COMPLETED"))

    threads = [threading.Thread(target=submit, args=(worker,)) for worker in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    subject.on_completed()

    assert board.wait(timeout=10)
    assert sink.last_summary["counts"] == {"COMPLETED": 200}
    assert sink.last_summary["state"] == "completed"
    assert len(sink.frames) < 200


def test_redraw_thread_restarts_after_idle() -> None:
    subject: Subject[str] = Subject()
    sink = RecordingSink()
    panel = notebook.text_panel(subject, interval=0.01, sink=sink)

    subject.on_next("a")
    deadline = time.monotonic() + 5
    while len(sink.frames) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)  # long enough for the idle redraw thread to end
    subject.on_next("b")
    while len(sink.frames) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    panel.dispose()

    texts = [bundle[SUMMARY_MIME]["text"] for _, bundle in sink.frames]
    assert texts == ["", "a", "ab", "ab"]


class BrokenSink(RecordingSink):
    def update(self, bundle: Mapping[str, Any]) -> None:
        raise RuntimeError("display closed")


def test_failing_display_ends_helper_and_logs(caplog: pytest.LogCaptureFixture) -> None:
    subject: Subject[str] = Subject()
    panel = notebook.text_panel(subject, interval=0.0, sink=BrokenSink())

    subject.on_next("a")

    assert panel.wait(timeout=5)
    assert panel.state == "failed"
    assert panel.error == "RuntimeError: display closed"
    assert not subject.observers
    assert "drawing a frame failed" in caplog.text
    assert "drawing the final frame failed" in caplog.text


def test_wait_times_out_on_endless_source() -> None:
    plot = notebook.health_plot(Subject(), sink=RecordingSink())

    assert plot.wait(timeout=0.05) is False
    assert notebook.wait(plot, timeout=0.05) is False
    plot.dispose()
    assert notebook.wait(plot, timeout=0.05) is True


def test_wait_async_resolves_when_worker_thread_completes() -> None:
    subject: Subject[str] = Subject()
    panel = notebook.text_panel(subject, sink=RecordingSink())

    async def main() -> bool:
        threading.Timer(0.05, subject.on_completed).start()
        return await panel.wait_async(timeout=5)

    assert asyncio.run(main()) is True
    assert panel.state == "completed"


def test_helpers_outside_ipython_print_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    panel = notebook.text_panel(reactivex.of("a", "b"))

    assert panel.summary()["text"] == "ab"
    assert capsys.readouterr() == ("", "")


def test_negative_interval_rejected() -> None:
    with pytest.raises(ValueError, match="interval must be 0 or more seconds, got -1"):
        notebook.text_panel(Subject(), interval=-1)
