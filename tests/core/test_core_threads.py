"""Bounded threads for thousands of pollers, and connection reuse over HTTPS."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from rxrunpod import Endpoint, JobState
from rxrunpod.polling import PollPolicy
from rxrunpod.scheduling import IoScheduler, TimerScheduler
from tests.support.scripted_server import (
    THREAD_PREFIX,
    RecordedRequest,
    Reply,
    ScriptedServer,
    wait_until,
)

SUBSCRIPTIONS = 2000
POOL = 16


def client_threads() -> int:
    """Threads of this process, leaving out the scripted server's own."""
    return sum(1 for thread in threading.enumerate() if not thread.name.startswith(THREAD_PREFIX))


@pytest.fixture
def io() -> Iterator[IoScheduler]:
    timer = TimerScheduler(name="rxrunpod-test-timer", idle_timeout=0.3)
    yield IoScheduler(POOL, timer=timer, idle_timeout=0.3, name="rxrunpod-test-io")


def test_thousands_of_pollers_use_bounded_threads(server: ScriptedServer, io: IoScheduler) -> None:
    def status(request: RecordedRequest) -> Reply:
        job_id = request.path.rsplit("/", 1)[1]
        return Reply(json={"id": job_id, "status": "IN_QUEUE"})

    server.respond("GET", "/v2/ep/status/*", status)
    baseline = client_threads()
    policy = PollPolicy(initial_interval=0.2, max_interval=1.0)
    first_states: set[str] = set()
    lock = threading.Lock()

    def seen(state: JobState) -> None:
        with lock:
            first_states.add(state.id)

    with Endpoint("ep", base_url=server.base_url, scheduler=io, poll=policy) as endpoint:
        subscriptions = [
            endpoint.job(f"job-{index}").updates().subscribe(seen) for index in range(SUBSCRIPTIONS)
        ]
        peak = baseline
        deadline = time.monotonic() + 60
        while len(first_states) < SUBSCRIPTIONS and time.monotonic() < deadline:
            peak = max(peak, client_threads())
            time.sleep(0.01)
        time.sleep(0.5)  # let every poller go round at least once more
        peak = max(peak, client_threads())
        polls = server.count("GET", "/v2/ep/status/*")

        for subscription in subscriptions:
            subscription.dispose()

    assert len(first_states) == SUBSCRIPTIONS
    assert polls > SUBSCRIPTIONS
    assert peak <= baseline + POOL + 1, f"peak {peak} threads, baseline {baseline}"
    assert io.timer.pending == 0
    assert wait_until(lambda: client_threads() <= baseline, timeout=5), (
        f"{client_threads()} threads remain, baseline {baseline}"
    )


def test_dispose_leaves_no_request_behind(server: ScriptedServer, io: IoScheduler) -> None:
    def status(request: RecordedRequest) -> Reply:
        return Reply(json={"id": request.path.rsplit("/", 1)[1], "status": "IN_QUEUE"})

    server.respond("GET", "/v2/ep/status/*", status)
    policy = PollPolicy(initial_interval=0.05, max_interval=0.05)

    with Endpoint("ep", base_url=server.base_url, scheduler=io, poll=policy) as endpoint:
        subscriptions = [endpoint.job(f"j{index}").updates().subscribe() for index in range(50)]
        assert wait_until(lambda: server.count("GET", "/v2/ep/status/*") >= 100)
        for subscription in subscriptions:
            subscription.dispose()
        time.sleep(0.1)  # a request in flight at dispose time may still land
        after_dispose = server.count("GET", "/v2/ep/status/*")
        time.sleep(0.3)

    assert server.count("GET", "/v2/ep/status/*") == after_dispose


def test_one_request_in_flight_per_poller(server: ScriptedServer, io: IoScheduler) -> None:
    in_flight = 0
    most = 0
    lock = threading.Lock()

    def slow_status(request: RecordedRequest) -> Reply:
        nonlocal in_flight, most
        with lock:
            in_flight += 1
            most = max(most, in_flight)
        time.sleep(0.05)
        with lock:
            in_flight -= 1
        return Reply(json={"id": "j1", "status": "IN_PROGRESS"})

    server.respond("GET", "/v2/ep/status/j1", slow_status)
    policy = PollPolicy(initial_interval=0.001, max_interval=0.001)

    with Endpoint("ep", base_url=server.base_url, scheduler=io, poll=policy) as endpoint:
        subscription = endpoint.job("j1").updates().subscribe()
        time.sleep(0.5)
        subscription.dispose()

    assert most == 1
    assert server.count("GET", "/v2/ep/status/j1") >= 5


@pytest.fixture(scope="module")
def certificate_authority() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def tls_server(certificate_authority: trustme.CA) -> Iterator[ScriptedServer]:
    import ssl

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    certificate_authority.issue_cert("127.0.0.1").configure_cert(context)
    with ScriptedServer(tls=context) as scripted:
        yield scripted


def test_https_polling_reuses_connections(
    tls_server: ScriptedServer,
    certificate_authority: trustme.CA,
    tmp_path: Path,
    io: IoScheduler,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ca_file = tmp_path / "ca.pem"
    certificate_authority.cert_pem.write_to_path(str(ca_file))
    # requests prefers these variables over Session.verify.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(ca_file))
    monkeypatch.setenv("CURL_CA_BUNDLE", str(ca_file))
    polls_per_job = 100
    jobs = 10
    counts: dict[str, int] = {}
    lock = threading.Lock()

    def status(request: RecordedRequest) -> Reply:
        job_id = request.path.rsplit("/", 1)[1]
        with lock:
            counts[job_id] = counts.get(job_id, 0) + 1
            done = counts[job_id] >= polls_per_job
        # A changing output makes every poll a new state, so the interval stays at its minimum.
        document: dict[str, object] = {
            "id": job_id,
            "status": "COMPLETED" if done else "IN_PROGRESS",
        }
        document["output"] = counts[job_id]
        return Reply(json=document)

    tls_server.respond("GET", "/v2/ep/status/*", status)
    policy = PollPolicy(initial_interval=0.001, max_interval=0.001)

    with Endpoint("ep", base_url=tls_server.base_url, scheduler=io, poll=policy) as endpoint:
        finished: list[object] = []
        for index in range(jobs):
            endpoint.job(f"j{index}").output(timeout=60).subscribe(finished.append)
        assert wait_until(lambda: len(finished) == jobs, timeout=60)

    polls = tls_server.count("GET", "/v2/ep/status/*")
    assert polls == jobs * polls_per_job
    # At most one connection per concurrent poller; none opened per request.
    assert tls_server.connections_opened <= jobs
