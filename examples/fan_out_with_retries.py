"""Fan 40 inputs out to a mock worker, retry the failures, and print results as they land.

Every seventh input asks the worker to fail, so those jobs are retried once
through ``/retry`` and then reported as FAILED states, not as an error that
would stop the pipeline. Run: ``python examples/fan_out_with_retries.py``.
"""

from __future__ import annotations

import reactivex
from example_endpoint import open_endpoint
from reactivex import operators as ops

from rxrunpod import JobState
from rxrunpod.operators import Summary, run_each, summarize


def payload(number: int) -> dict[str, object]:
    if number % 7 == 3:
        return {"mock_error": True}
    return {"mock_return": number * number, "mock_delay": 0.05 * (number % 5)}


def show(state: JobState) -> None:
    print(f"{state.id[:8]}  {state.status:<9} {state.output}")


def main() -> None:
    with open_endpoint("mock_worker.py", workers=4) as endpoint:
        states = reactivex.range(40).pipe(
            ops.map(payload),
            run_each(endpoint, max_concurrent=8, retries=1, timeout=60),
            ops.do_action(show),
        )
        summaries: reactivex.Observable[Summary] = states.pipe(summarize())
        summary = summaries.pipe(ops.last()).run()
        print(summary)


if __name__ == "__main__":
    main()
