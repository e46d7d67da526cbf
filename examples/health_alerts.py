"""Watch an endpoint's health and raise an alert when the queue keeps growing.

Health snapshots arrive every 0.2 s. ``buffer_with_time`` groups them into
1-second windows; a window whose queue length rose from its first to its
last snapshot prints an alert. A burst of slow jobs makes the queue grow,
then drain. Run: ``python examples/health_alerts.py``.
"""

from __future__ import annotations

import reactivex
from example_endpoint import open_endpoint
from reactivex import operators as ops

from rxrunpod import Health
from rxrunpod.operators import run_each


def has_snapshots(window: list[Health]) -> bool:
    return len(window) > 0


def describe(window: list[Health]) -> str:
    first, last = window[0].jobs, window[-1].jobs
    trend = "ALERT queue growing" if last.in_queue > first.in_queue else "ok"
    return f"queue {first.in_queue:>2} -> {last.in_queue:>2}, running {last.in_progress}: {trend}"


def main() -> None:
    with open_endpoint("mock_worker.py", workers=2) as endpoint:
        burst = reactivex.from_iterable({"mock_delay": 0.4} for _ in range(16)).pipe(
            run_each(endpoint, max_concurrent=16)
        )
        windows: reactivex.Observable[list[Health]] = endpoint.health(every=0.2).pipe(
            ops.buffer_with_time(1.0)
        )
        reports = windows.pipe(
            ops.filter(has_snapshots),
            ops.map(describe),
            ops.take_until(burst.pipe(ops.last(), ops.delay(1.0))),
        )
        reports.pipe(ops.do_action(print), ops.to_list()).run()


if __name__ == "__main__":
    main()
