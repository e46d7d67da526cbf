"""Server restart: the local endpoint goes away for a few seconds and comes back empty.

Pollers must back off while nothing answers (never faster than their retry
policy allows), resume when the port answers again, and end in
``JobNotFound`` for jobs the restarted server no longer has.
"""

from __future__ import annotations

import collections
import itertools
import threading
import time
from typing import Any

from rxrunpod import Endpoint
from rxrunpod.errors import JobNotFound
from rxrunpod.http import RetryPolicy
from rxrunpod.local import LocalEndpoint
from rxrunpod.models import JobStatus
from rxrunpod.polling import PollPolicy
from rxrunpod.scheduling import IoScheduler
from tests.reliability.conftest import client_threads, wait_for_threads
from tests.reliability.observing import Recording
from tests.reliability.recording_session import Attempt, RecordingSession

DOWNTIME = 3.0
RETRY = RetryPolicy(max_attempts=30, base_delay=0.1, max_delay=1.0)
POLL = PollPolicy(initial_interval=0.05, max_interval=0.3)
TRACKED = 8
HEALTH_PERIOD = 0.2


def shortest_retry_wait(failures: int) -> float:
    """The least wait ``RETRY`` allows after ``failures`` consecutive failures (equal jitter)."""
    ceiling = min(RETRY.max_delay, RETRY.base_delay * 2.0 ** (failures - 1))
    return ceiling / 2


def backoff_violations(attempts: list[Attempt]) -> list[str]:
    """Gaps between consecutive failed attempts on one path that were shorter than allowed."""
    by_path: dict[str, list[Attempt]] = collections.defaultdict(list)
    for attempt in attempts:
        by_path[attempt.path].append(attempt)
    violations = []
    for path, sequence in by_path.items():
        failures = 0
        for previous, current in itertools.pairwise(sequence):
            failures = failures + 1 if previous.status is None else 0
            if failures == 0:
                continue
            gap = current.started - previous.ended
            allowed = shortest_retry_wait(failures)
            # The timer thread may fire a little early by clock rounding, never by much.
            if gap < allowed - 0.01:
                violations.append(f"{path}: {gap:.3f} s after failure {failures} < {allowed:.3f} s")
    return violations


def test_restart_ends_unknown_jobs_in_job_not_found(io: IoScheduler) -> None:
    baseline = threading.active_count()
    release = threading.Event()

    def blocking(job: dict[str, Any]) -> Any:
        release.wait(20)
        return job["input"]

    session = RecordingSession()
    first = LocalEndpoint(blocking, workers=1).start()
    port = first.port
    ep = Endpoint(
        "restart", base_url=first.base_url, session=session, scheduler=io, retry=RETRY, poll=POLL
    )
    try:
        ep.run({"blocker": True}, cancel_on_dispose=False).run()
        jobs = [ep.run({"n": n}, cancel_on_dispose=False).run() for n in range(TRACKED)]
        recordings = [Recording() for _ in jobs]
        subscriptions = [
            job.updates().subscribe(rec.on_next, rec.on_error, rec.on_completed)
            for job, rec in zip(jobs, recordings, strict=True)
        ]
        health = Recording()
        health_subscription = ep.health(every=HEALTH_PERIOD).subscribe(
            health.on_next, health.on_error, health.on_completed
        )
        time.sleep(0.5)
        assert all(rec.values and rec.values[0].status is JobStatus.IN_QUEUE for rec in recordings)

        release.set()
        first.stop()
        down_from = time.monotonic()
        health_before = len(health.values)
        time.sleep(DOWNTIME)
        second = LocalEndpoint(blocking, workers=1, port=port).start()
        down_until = time.monotonic()
        try:
            for rec in recordings:
                assert rec.ended.wait(15), "a poller did not end after the restart"
            deadline = time.monotonic() + 5
            while len(health.values) <= health_before and time.monotonic() < deadline:
                time.sleep(0.05)
            health_after = len(health.values)
            fresh = ep.run({"after": "restart"}, cancel_on_dispose=False).run()
            assert fresh.output(timeout=10).run() == {"after": "restart"}
        finally:
            for subscription in subscriptions:
                subscription.dispose()
            health_subscription.dispose()
            second.stop()
    finally:
        release.set()
        first.stop()
        ep.close()

    for rec in recordings:
        assert isinstance(rec.error, JobNotFound)
        assert rec.terminal_count == 1
    assert health.error is None
    assert health_after > health_before

    attempts = session.snapshot()
    down = [a for a in attempts if down_from <= a.started < down_until]
    assert down, "no poll was sent while the server was down"
    assert all(attempt.status is None for attempt in down)
    status_attempts = [a for a in attempts if "/status/" in a.path]
    assert backoff_violations(status_attempts) == []
    # With equal jitter each status poller waits at least base_delay / 2 between
    # failures, so no more than DOWNTIME / (base_delay / 2) + 1 attempts fit in the gap.
    down_status = [a for a in down if "/status/" in a.path]
    assert len(down_status) <= TRACKED * (DOWNTIME / (RETRY.base_delay / 2) + 1)
    # health(every=) keeps its period while the server is away: one attempt per period.
    health_starts = [a.started for a in attempts if a.path.endswith("/health")]
    health_gaps = [later - earlier for earlier, later in itertools.pairwise(health_starts)]
    assert min(health_gaps) >= HEALTH_PERIOD - 0.02
    rate = len(down) / (down_until - down_from)
    print(f"restart: {len(down)} requests in {down_until - down_from:.1f} s down ({rate:.1f}/s)")

    assert wait_for_threads(baseline) <= baseline
    assert client_threads() == []
