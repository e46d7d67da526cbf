"""Status polls answered 500 are retried, so output() still arrives."""

from __future__ import annotations

import time
from typing import Any

from rxrunpod import Endpoint
from rxrunpod.http import RetryPolicy
from rxrunpod.local import Faults, LocalEndpoint
from rxrunpod.polling import PollPolicy


def short_job(job: dict[str, Any]) -> dict[str, Any]:
    time.sleep(0.1)
    return {"echo": job["input"]["value"]}


def test_output_survives_status_500s() -> None:
    # Eight attempts make five 500s in a row on one poll (0.3**8, about 7e-5)
    # too rare to fail the test; the default of five would fail about 1 run in 20.
    retry = RetryPolicy(max_attempts=8, base_delay=0.01, max_delay=0.05)
    with (
        LocalEndpoint(short_job, workers=3, faults=Faults(seed=11)) as local,
        Endpoint(
            "ep", base_url=local.base_url, retry=retry, poll=PollPolicy(initial_interval=0.05)
        ) as endpoint,
    ):
        local.faults.add(500, 0.3, routes="status")
        jobs = [endpoint.run({"value": index}).run() for index in range(6)]

        outputs = [job.output(timeout=20).run() for job in jobs]

        assert outputs == [{"echo": index} for index in range(6)]
        assert local.stats.faults.get("500", 0) >= 1
        assert local.stats.responses.get(500, 0) >= 1
