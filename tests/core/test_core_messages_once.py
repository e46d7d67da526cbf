"""Messages that state their advice once and match what the client does."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
import reactivex.operators as ops

from rxrunpod import Endpoint, InvalidRequest
from rxrunpod.local import serve
from tests.support.scripted_server import Reply, ScriptedServer

STREAM = "/v2/ep/stream/j1"
STATUS = "/v2/ep/status/j1"


def handler(job: dict[str, Any]) -> Any:
    return "done"


@pytest.fixture(scope="module")
def local() -> Iterator[Endpoint]:
    with serve(handler, workers=1) as base_url, Endpoint("local", base_url=base_url) as ep:
        yield ep


def test_retry_of_completed_job_says_rule_once(local: Endpoint) -> None:
    job = local.run({}).run()
    job.output(timeout=10).run()

    with pytest.raises(InvalidRequest) as caught:
        job.retry().run()

    message = str(caught.value).lower()
    assert "completed" in message
    assert message.count("can be retried") == 1


def test_lost_stream_warning_matches_recovery(
    endpoint: Endpoint, server: ScriptedServer, caplog: pytest.LogCaptureFixture
) -> None:
    server.reply(
        "GET", STREAM, Reply(json={"status": "IN_PROGRESS", "stream": []}), Reply(drop=True)
    )
    server.reply("GET", STATUS, Reply(json={"id": "j1", "status": "COMPLETED", "output": ["a"]}))

    with caplog.at_level(logging.WARNING, logger="rxrunpod.job"):
        items = endpoint.job("j1").stream().pipe(ops.to_list()).run()

    assert items == ["a"]
    [warning] = [record.getMessage() for record in caplog.records if record.levelname == "WARNING"]
    assert "try again" not in warning
    assert "not requested again" in warning
    assert "recover" in warning
