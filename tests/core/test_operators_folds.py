"""The operators that need no endpoint: the bounded merge, summarize and Summary."""

from __future__ import annotations

import threading
from typing import Any

import pytest
import reactivex
from reactivex import operators as ops
from reactivex.scheduler import ThreadPoolScheduler
from reactivex.subject import Subject

from rxrunpod import JobState
from rxrunpod.operators import Summary, _merge_bounded, summarize


def state(
    status: str, *, delay_ms: float | None = 100, execution_ms: float | None = 900
) -> JobState:
    document: dict[str, Any] = {"id": f"job-{status}", "status": status}
    if delay_ms is not None:
        document["delayTime"] = delay_ms
    if execution_ms is not None:
        document["executionTime"] = execution_ms
    return JobState.from_json(document)


def test_merge_bounded_runs_every_inner_sequence_from_threads() -> None:
    # The source emits on one thread while inner sequences complete on pool
    # threads: every inner sequence must still run, never more than 3 at once.
    pool = ThreadPoolScheduler(4)
    lock = threading.Lock()
    running = 0
    peak = 0

    def inner(value: int) -> reactivex.Observable[int]:
        def subscribe(observer: Any, scheduler: Any = None) -> Any:
            nonlocal running, peak
            with lock:
                running += 1
                peak = max(peak, running)

            def finish(*_: Any) -> None:
                nonlocal running
                with lock:
                    running -= 1
                observer.on_next(value)
                observer.on_completed()

            return pool.schedule_relative(0.001, finish)

        return reactivex.Observable(subscribe)

    source: Subject[reactivex.Observable[int]] = Subject()
    results: list[int] = []
    done = threading.Event()
    source.pipe(_merge_bounded(3)).subscribe(results.append, on_completed=done.set)

    def produce() -> None:
        for value in range(300):
            source.on_next(inner(value))
        source.on_completed()

    producer = threading.Thread(target=produce)
    producer.start()
    producer.join(10)

    assert done.wait(10)
    assert sorted(results) == list(range(300))
    assert peak <= 3


def test_merge_bounded_completes_synchronous_inners_without_recursion() -> None:
    values = list(range(5000))

    results = reactivex.from_iterable(values).pipe(ops.map(reactivex.just), _merge_bounded(2))

    assert sorted(results.pipe(ops.to_list()).run()) == values


def test_merge_bounded_error_ends_stream() -> None:
    inners = [reactivex.just(1), reactivex.throw(ValueError("inner failed")), reactivex.just(3)]

    with pytest.raises(ValueError, match="inner failed"):
        reactivex.from_iterable(inners).pipe(_merge_bounded(1), ops.to_list()).run()


def test_summarize_counts_final_states() -> None:
    states = [
        state("IN_PROGRESS"),
        state("COMPLETED"),
        state("COMPLETED", delay_ms=1000, execution_ms=1000),
        state("FAILED"),
        state("CANCELLED", delay_ms=None, execution_ms=None),
        state("TIMED_OUT"),
    ]

    tallies: reactivex.Observable[Summary] = reactivex.from_iterable(states).pipe(summarize())
    summary = tallies.pipe(ops.last()).run()

    assert summary.total == 5
    assert summary.completed == 2
    assert summary.failed == 1
    assert summary.cancelled == 1
    assert summary.timed_out == 1
    assert summary.latencies == (1.0, 2.0)


def test_summarize_emits_a_running_tally() -> None:
    states = [state("COMPLETED"), state("FAILED"), state("COMPLETED")]

    tallies = reactivex.from_iterable(states).pipe(summarize(), ops.to_list()).run()

    assert [tally.total for tally in tallies] == [1, 2, 3]
    assert [tally.completed for tally in tallies] == [1, 1, 2]


def test_summary_percentiles_use_nearest_rank() -> None:
    summary = Summary(latencies=tuple(float(value) for value in range(1, 21)))

    assert summary.p50 == 10.0
    assert summary.p95 == 19.0
    assert summary.percentile(100) == 20.0


def test_summary_percentiles_empty_are_none() -> None:
    summary = Summary()

    assert summary.p50 is None
    assert summary.p95 is None
    assert "latency" not in str(summary)


def test_summary_rejects_bad_percent() -> None:
    with pytest.raises(ValueError, match="percent must be in"):
        Summary(latencies=(1.0,)).percentile(0)


def test_summary_text_names_every_count() -> None:
    summary = Summary().add(state("COMPLETED")).add(state("FAILED"))

    assert str(summary) == (
        "2 jobs: 1 completed, 1 failed, 0 cancelled, 0 timed out; latency p50 1.00 s, p95 1.00 s"
    )
