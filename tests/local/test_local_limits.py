"""Bad input, keys, policies, retention, webhooks and fault injection on the local endpoint."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests

from rxrunpod.local import FaultRule, LocalEndpoint
from tests.local.handlers import basic
from tests.local.test_local_routes import wait_final

pytestmark = pytest.mark.timeout(60)

MIB = 1024 * 1024


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"{not json", "not valid JSON"),
        (b"", "body was empty"),
        (b'{"inputs": 1}', "missing the 'input' field"),
        (b"[1, 2]", "must be a JSON object"),
        (b'{"input": 1, "policy": {"executionTimeout": "soon"}}', "policy.executionTimeout"),
        (b'{"input": 1, "policy": {"ttl": -5}}', "policy.ttl"),
        (b'{"input": 1, "policy": 3}', "'policy' must be a JSON object"),
        (b'{"input": 1, "webhook": 42}', "'webhook'"),
    ],
)
def test_bad_run_body_is_400_with_reason(
    echo_endpoint: LocalEndpoint, http: requests.Session, body: bytes, fragment: str
) -> None:
    response = http.post(f"{echo_endpoint.base_url}/ep/run", data=body)
    assert response.status_code == 400
    assert response.headers["Content-Type"] == "application/json"
    assert fragment in response.json()["error"]
    assert echo_endpoint.stats.submissions == {}


def test_run_body_over_10_mib_is_400_naming_limit(
    echo_endpoint: LocalEndpoint, http: requests.Session
) -> None:
    payload = json.dumps({"input": "x" * (10 * MIB)})
    response = http.post(f"{echo_endpoint.base_url}/ep/run", data=payload)
    assert response.status_code == 400
    assert "10 MiB limit of /run" in response.json()["error"]


def test_runsync_accepts_15_mib_but_not_21(
    echo_endpoint: LocalEndpoint, http: requests.Session
) -> None:
    accepted = http.post(
        f"{echo_endpoint.base_url}/ep/runsync", data=json.dumps({"input": "y" * (15 * MIB)})
    )
    assert accepted.status_code == 200
    assert accepted.json()["status"] == "COMPLETED"
    rejected = http.post(
        f"{echo_endpoint.base_url}/ep/runsync", data=json.dumps({"input": "y" * (21 * MIB)})
    )
    assert rejected.status_code == 400
    assert "20 MiB limit of /runsync" in rejected.json()["error"]


def test_body_over_server_maximum_is_still_400(
    echo_endpoint: LocalEndpoint, http: requests.Session
) -> None:
    response = http.post(f"{echo_endpoint.base_url}/ep/run", data=b"z" * (70 * MIB))
    assert response.status_code == 400
    assert "10 MiB limit" in response.json()["error"]


def test_key_accepted_as_bearer_or_bare(http: requests.Session) -> None:
    with LocalEndpoint(basic.echo, workers=1, api_key="s3cret") as endpoint:
        url = f"{endpoint.base_url}/ep/health"
        assert http.get(url).status_code == 401
        assert http.get(url, headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert http.get(url, headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert http.get(url, headers={"Authorization": "s3cret"}).status_code == 200
        rejected = http.post(f"{endpoint.base_url}/ep/run", json={"input": 1})
        assert rejected.status_code == 401
        assert "s3cret" not in rejected.text
        assert endpoint.stats.submissions == {}


def test_non_loopback_host_warns() -> None:
    endpoint = LocalEndpoint(basic.echo, workers=1, host="0.0.0.0")
    with pytest.warns(RuntimeWarning, match="0.0.0.0"):
        endpoint.start()
    endpoint.stop()


def test_execution_timeout_fails_job(http: requests.Session) -> None:
    with LocalEndpoint(basic.sleepy, workers=1) as endpoint:
        body = {"input": {"seconds": 1.5}, "policy": {"executionTimeout": 300}}
        job_id = http.post(f"{endpoint.base_url}/ep/run", json=body).json()["id"]
        document = wait_final(http, f"{endpoint.base_url}/ep/status/{job_id}")
    assert document["status"] == "FAILED"
    assert document["error"] == "executionTimeout exceeded"


def test_ttl_expiry_deletes_job(http: requests.Session) -> None:
    with LocalEndpoint(basic.sleepy, workers=1) as endpoint:
        http.post(f"{endpoint.base_url}/ep/run", json={"input": {"seconds": 1.0}})
        queued = http.post(
            f"{endpoint.base_url}/ep/run", json={"input": {}, "policy": {"ttl": 300}}
        ).json()["id"]
        assert http.get(f"{endpoint.base_url}/ep/status/{queued}").status_code == 200
        time.sleep(0.6)
        assert http.get(f"{endpoint.base_url}/ep/status/{queued}").status_code == 404


def test_retention_ends_for_run_and_runsync(http: requests.Session) -> None:
    with LocalEndpoint(basic.echo, workers=1, retention=0.5, sync_retention=0.2) as endpoint:
        run_id = http.post(f"{endpoint.base_url}/ep/run", json={"input": 1}).json()["id"]
        sync_id = http.post(f"{endpoint.base_url}/ep/runsync", json={"input": 1}).json()["id"]
        wait_final(http, f"{endpoint.base_url}/ep/status/{run_id}")
        time.sleep(0.35)
        assert http.get(f"{endpoint.base_url}/ep/status/{sync_id}").status_code == 404
        assert http.get(f"{endpoint.base_url}/ep/status/{run_id}").status_code == 200
        time.sleep(0.4)
        assert http.get(f"{endpoint.base_url}/ep/status/{run_id}").status_code == 404


class _WebhookReceiver:
    """A small HTTP server on 127.0.0.1 that records POSTs and fails the first few."""

    def __init__(self, failures: int) -> None:
        self.received: list[dict[str, Any]] = []
        self.failures = failures
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers["Content-Length"])
                receiver.received.append(json.loads(self.rfile.read(length)))
                status = 500 if len(receiver.received) <= receiver.failures else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> _WebhookReceiver:
        self.thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


def test_webhook_posted_with_retries(http: requests.Session) -> None:
    with (
        _WebhookReceiver(failures=2) as receiver,
        LocalEndpoint(basic.echo, workers=1, webhook_delay=0.1) as endpoint,
    ):
        job_id = http.post(
            f"{endpoint.base_url}/ep/run", json={"input": {"a": 1}, "webhook": receiver.url}
        ).json()["id"]
        deadline = time.monotonic() + 5
        while len(receiver.received) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.3)
        assert len(receiver.received) == 3
        document = receiver.received[-1]
        assert document["id"] == job_id
        assert document["status"] == "COMPLETED"
        assert document["output"] == {"echo": {"a": 1}}
        assert document["input"] == {"a": 1}
        assert document["webhook"] == receiver.url
        assert endpoint.stats.webhooks == {"retried": 2, "delivered": 1}


def test_webhook_gives_up_after_two_retries(http: requests.Session) -> None:
    with (
        _WebhookReceiver(failures=10) as receiver,
        LocalEndpoint(basic.echo, workers=1, webhook_delay=0.05) as endpoint,
    ):
        http.post(f"{endpoint.base_url}/ep/run", json={"input": 1, "webhook": receiver.url})
        deadline = time.monotonic() + 5
        while endpoint.stats.webhooks.get("failed") is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(receiver.received) == 3
        assert endpoint.stats.webhooks == {"retried": 2, "failed": 1}


def test_fault_429_carries_retry_after_and_creates_no_job(
    echo_endpoint: LocalEndpoint, http: requests.Session
) -> None:
    echo_endpoint.faults.add(429, routes="run", times=2, retry_after=3)
    answers = [http.post(f"{echo_endpoint.base_url}/ep/run", json={"input": 1}) for _ in range(3)]
    assert [answer.status_code for answer in answers] == [429, 429, 200]
    assert answers[0].headers["Retry-After"] == "3"
    assert echo_endpoint.stats.submissions == {"run": 1}
    assert echo_endpoint.stats.requests["run"] == 3
    assert echo_endpoint.stats.faults == {"429": 2}


def test_fault_after_creates_job_but_fails_answer(
    echo_endpoint: LocalEndpoint, http: requests.Session
) -> None:
    echo_endpoint.faults.add(502, routes=["run"], after=True, times=1)
    response = http.post(f"{echo_endpoint.base_url}/ep/run", json={"input": 1})
    assert response.status_code == 502
    assert echo_endpoint.stats.submissions == {"run": 1}
    health = http.get(f"{echo_endpoint.base_url}/ep/health").json()
    assert (
        health["jobs"]["completed"] + health["jobs"]["inQueue"] + health["jobs"]["inProgress"] == 1
    )


def test_fault_drop_closes_connection(echo_endpoint: LocalEndpoint, http: requests.Session) -> None:
    echo_endpoint.faults.add("drop", routes="status", times=1)
    job_id = http.post(f"{echo_endpoint.base_url}/ep/run", json={"input": 1}).json()["id"]
    with pytest.raises(requests.ConnectionError):
        http.get(f"{echo_endpoint.base_url}/ep/status/{job_id}")
    assert http.get(f"{echo_endpoint.base_url}/ep/status/{job_id}").status_code == 200


def test_fault_slow_delays_answer(echo_endpoint: LocalEndpoint, http: requests.Session) -> None:
    echo_endpoint.faults.add("slow", routes="health", delay=0.4, times=1)
    started = time.monotonic()
    assert http.get(f"{echo_endpoint.base_url}/ep/health").status_code == 200
    assert time.monotonic() - started >= 0.4


def test_fault_share_is_seeded_and_partial(
    echo_endpoint: LocalEndpoint, http: requests.Session
) -> None:
    echo_endpoint.faults.seed(7)
    echo_endpoint.faults.add(503, 0.5, routes="health")
    codes = [http.get(f"{echo_endpoint.base_url}/ep/health").status_code for _ in range(60)]
    assert 10 < codes.count(503) < 50
    assert set(codes) == {200, 503}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("429=0.1", FaultRule("429", 0.1)),
        (
            "503-after@run,runsync=0.05",
            FaultRule("503", 0.05, frozenset({"run", "runsync"}), after=True),
        ),
        ("drop@status", FaultRule("drop", 1.0, frozenset({"status"}))),
    ],
)
def test_fault_rule_parses_command_line_form(text: str, expected: FaultRule) -> None:
    assert FaultRule.parse(text) == expected


@pytest.mark.parametrize("text", ["418=0.1", "429=lots", "429@nowhere=0.1", "500=1.5"])
def test_fault_rule_rejects_bad_text(text: str) -> None:
    with pytest.raises(ValueError, match="fault"):
        FaultRule.parse(text)


def test_info_log_has_state_changes_not_bodies(
    echo_endpoint: LocalEndpoint, http: requests.Session, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="rxrunpod.local"):
        job_id = http.post(
            f"{echo_endpoint.base_url}/ep/run", json={"input": "secret-payload"}
        ).json()["id"]
        wait_final(http, f"{echo_endpoint.base_url}/ep/status/{job_id}")
        time.sleep(0.05)
    messages = [record.getMessage() for record in caplog.records if record.name == "rxrunpod.local"]
    assert f"job {job_id} IN_QUEUE" in messages
    assert f"job {job_id} COMPLETED" in messages
    assert not any("secret-payload" in message for message in messages)


@pytest.fixture
def many_threads_endpoint() -> Iterator[LocalEndpoint]:
    with LocalEndpoint(basic.echo, workers=4) as endpoint:
        yield endpoint


def test_every_accepted_id_is_readable_under_load(
    many_threads_endpoint: LocalEndpoint,
) -> None:
    base = many_threads_endpoint.base_url
    ids: list[str] = []
    lock = threading.Lock()

    def submit() -> None:
        with requests.Session() as session:
            for _ in range(100):
                job_id = session.post(f"{base}/ep/run", json={"input": 1}).json()["id"]
                with lock:
                    ids.append(job_id)

    threads = [threading.Thread(target=submit) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with requests.Session() as session:
        statuses = {session.get(f"{base}/ep/status/{job_id}").status_code for job_id in ids}
    assert len(set(ids)) == 400
    assert statuses == {200}
    assert many_threads_endpoint.stats.submissions == {"run": 400}
