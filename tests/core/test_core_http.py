"""The wire layer: auth, typed errors, malformed bodies, retry rules, bad input."""

from __future__ import annotations

import traceback

import pytest
import requests

from rxrunpod import (
    AuthenticationError,
    Endpoint,
    EndpointNotFound,
    InvalidRequest,
    MalformedResponse,
    RequestError,
    ServerError,
)
from rxrunpod.http import HttpClient, RetryPolicy, request_not_sent
from tests.support.scripted_server import Reply, ScriptedServer, unused_port

KEY = "rk_SECRET_never_show_1234"


def client(
    base_url: str, *, api_key: str | None = KEY, attempts: int = 3
) -> tuple[HttpClient, list[float]]:
    sleeps: list[float] = []
    http = HttpClient(
        "ep",
        api_key=api_key,
        base_url=base_url,
        retry=RetryPolicy(max_attempts=attempts, base_delay=0.01, max_delay=0.02),
        sleep=sleeps.append,
    )
    return http, sleeps


def full_text(error: BaseException) -> str:
    return "".join(traceback.format_exception(error)) + repr(error) + repr(vars(error))


def test_key_and_base_url_come_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNPOD_API_KEY", KEY)
    monkeypatch.setenv("RUNPOD_ENDPOINT_BASE_URL", "http://127.0.0.1:9/v2/")

    http = HttpClient("ep")

    assert http.base_url == "http://127.0.0.1:9/v2"
    assert http.headers()["Authorization"] == f"Bearer {KEY}"
    assert http.url("status/j1") == "http://127.0.0.1:9/v2/ep/status/j1"


def test_default_base_url_is_runpod(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RUNPOD_ENDPOINT_BASE_URL", raising=False)

    assert HttpClient("ep").base_url == "https://api.runpod.ai/v2"


def test_repr_never_shows_key() -> None:
    endpoint = Endpoint("ep", api_key=KEY, base_url="http://127.0.0.1:9/v2")

    assert KEY not in repr(endpoint.http)
    assert KEY not in repr(endpoint)
    assert "api_key set" in repr(endpoint.http)


def test_wrong_key_error_says_how_to_set_it(server: ScriptedServer) -> None:
    server.reply("GET", "/v2/ep/health", Reply(status=401, json={"error": "Unauthorized"}))
    http, _ = client(server.base_url)

    with pytest.raises(AuthenticationError) as caught:
        http.request_json("GET", "health", retry_safe=True)

    message = str(caught.value)
    assert "RUNPOD_API_KEY" in message
    assert "rejected" in message
    assert caught.value.status_code == 401
    assert KEY not in full_text(caught.value)


def test_missing_key_error_says_none_was_sent(
    server: ScriptedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RUNPOD_API_KEY", raising=False)
    server.reply("GET", "/v2/ep/health", Reply(status=401))
    http, _ = client(server.base_url, api_key=None)

    with pytest.raises(AuthenticationError, match="No API key was sent"):
        http.request_json("GET", "health", retry_safe=True)

    assert "Authorization" not in server.requests[0].headers


def test_key_absent_from_connection_error_traceback() -> None:
    http, _ = client(f"http://127.0.0.1:{unused_port()}/v2", attempts=1)

    with pytest.raises(RequestError) as caught:
        http.request_json("POST", "run", json={"input": 1}, retry_safe=False)

    assert KEY not in full_text(caught.value)


def test_non_json_body_names_status_and_first_bytes(server: ScriptedServer) -> None:
    server.reply("GET", "/v2/ep/health", Reply(body="<html>gateway page</html>"))
    http, _ = client(server.base_url)

    with pytest.raises(MalformedResponse) as caught:
        http.request_json("GET", "health", retry_safe=True)

    assert caught.value.status_code == 200
    assert caught.value.body_start.startswith("<html>gateway")
    assert "200" in str(caught.value)
    assert "<html>gateway" in str(caught.value)
    assert server.count("GET", "/v2/ep/health") == 1


def test_truncated_body_is_retried_when_safe(server: ScriptedServer) -> None:
    server.reply(
        "GET",
        "/v2/ep/health",
        Reply(json={"jobs": {"inQueue": 1}, "workers": {}}, truncate=9),
        Reply(json={"jobs": {"inQueue": 1}, "workers": {}}),
    )
    http, sleeps = client(server.base_url)

    document = http.request_json("GET", "health", retry_safe=True)

    assert document["jobs"] == {"inQueue": 1}
    assert len(sleeps) == 1


def test_truncated_body_error_shows_partial_bytes(server: ScriptedServer) -> None:
    server.reply(
        "GET", "/v2/ep/status/j1", Reply(json={"id": "j1", "status": "COMPLETED"}, truncate=12)
    )
    http, _ = client(server.base_url, attempts=1)

    with pytest.raises(MalformedResponse) as caught:
        http.request_json("GET", "status/j1", retry_safe=True, job_id="j1")

    assert caught.value.body_truncated
    assert caught.value.status_code == 200
    assert caught.value.body_start == '{"id": "j1",'


def test_wrong_shape_status_is_malformed_not_key_error(
    endpoint: Endpoint, server: ScriptedServer
) -> None:
    server.reply("GET", "/v2/ep/status/j1", Reply(json={"id": "j1"}))

    with pytest.raises(MalformedResponse, match="status"):
        endpoint.job("j1").state().run()


def test_json_list_instead_of_object_is_malformed(
    endpoint: Endpoint, server: ScriptedServer
) -> None:
    server.reply("POST", "/v2/ep/run", Reply(json=[1, 2, 3]))

    with pytest.raises(MalformedResponse):
        endpoint.run({"a": 1}).run()


def test_post_run_resent_only_when_connection_refused() -> None:
    http, sleeps = client(f"http://127.0.0.1:{unused_port()}/v2", attempts=3)

    with pytest.raises(RequestError) as caught:
        http.request_json("POST", "run", json={"input": 1}, retry_safe=False)

    assert request_not_sent(caught.value)
    assert "could not connect" in str(caught.value)
    assert len(sleeps) == 2


def test_post_run_not_resent_after_reset(server: ScriptedServer) -> None:
    server.reply("POST", "/v2/ep/run", Reply(reset=True))
    http, sleeps = client(server.base_url)

    with pytest.raises(RequestError) as caught:
        http.request_json("POST", "run", json={"input": 1}, retry_safe=False)

    assert not request_not_sent(caught.value)
    assert sleeps == []
    assert server.count("POST", "/v2/ep/run") == 1


def test_get_resent_after_server_errors(server: ScriptedServer) -> None:
    server.reply(
        "GET",
        "/v2/ep/status/j1",
        Reply(status=502, body="bad gateway"),
        Reply(status=504),
        Reply(json={"id": "j1", "status": "COMPLETED"}),
    )
    http, sleeps = client(server.base_url)

    document = http.request_json("GET", "status/j1", retry_safe=True, job_id="j1")

    assert document["status"] == "COMPLETED"
    assert len(sleeps) == 2


def test_server_error_after_budget_says_what_came_back(server: ScriptedServer) -> None:
    server.reply("GET", "/v2/ep/status/j1", Reply(status=500, json={"error": "handler crashed"}))
    http, _ = client(server.base_url)

    with pytest.raises(ServerError) as caught:
        http.request_json("GET", "status/j1", retry_safe=True, job_id="j1")

    assert caught.value.server_message == "handler crashed"
    assert "GET /ep/status/j1 returned 500" in str(caught.value)
    assert server.count("GET", "/v2/ep/status/j1") == 3


def test_unknown_endpoint_raises_endpoint_not_found(
    endpoint: Endpoint, server: ScriptedServer
) -> None:
    server.reply("POST", "/v2/ep/run", Reply(status=404, json={"error": "not found"}))

    with pytest.raises(EndpointNotFound, match="endpoint id"):
        endpoint.run({"a": 1}).run()


def test_bad_request_raises_invalid_request(endpoint: Endpoint, server: ScriptedServer) -> None:
    server.reply("POST", "/v2/ep/run", Reply(status=400, json={"error": "input is required"}))

    with pytest.raises(InvalidRequest, match="input is required"):
        endpoint.run({"input": None}).run()


def test_job_id_is_escaped_in_path(endpoint: Endpoint, server: ScriptedServer) -> None:
    server.reply("GET", "/v2/ep/status/*", Reply(json={"id": "a/../b", "status": "IN_QUEUE"}))

    endpoint.job("a/../b").status().run()

    assert server.requests[0].path == "/v2/ep/status/a%2F..%2Fb"


@pytest.mark.parametrize("endpoint_id", ["", "  ", "a/b", "a b", None, 3])
def test_bad_endpoint_id_is_rejected(endpoint_id: object) -> None:
    with pytest.raises(ValueError, match="endpoint_id"):
        Endpoint(endpoint_id, base_url="http://127.0.0.1:9/v2")  # type: ignore[arg-type]


@pytest.mark.parametrize("base_url", ["ftp://x/v2", "127.0.0.1:8000", "http://"])
def test_bad_base_url_is_rejected(base_url: str) -> None:
    with pytest.raises(ValueError, match="base_url"):
        Endpoint("ep", base_url=base_url)


@pytest.mark.parametrize("job_id", ["", None, 5])
def test_bad_job_id_is_rejected(job_id: object) -> None:
    with pytest.raises(ValueError, match="job_id"):
        Endpoint("ep", base_url="http://127.0.0.1:9/v2").job(job_id)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "call",
    [
        lambda ep: ep.job("j").output(timeout=0),
        lambda ep: ep.run_sync({}, timeout=-1),
        lambda ep: ep.health(every=0),
    ],
)
def test_bad_durations_are_rejected(call: object) -> None:
    endpoint = Endpoint("ep", base_url="http://127.0.0.1:9/v2")
    with pytest.raises(ValueError, match="positive"):
        call(endpoint)  # type: ignore[operator]


def test_passed_session_is_used_and_left_open(server: ScriptedServer) -> None:
    server.reply("GET", "/v2/ep/health", Reply(json={}))
    session = requests.Session()
    endpoint = Endpoint("ep", base_url=server.base_url, session=session)

    endpoint.health().run()
    endpoint.close()

    assert endpoint.http.session is session
    assert session.adapters  # close() of the endpoint did not close it
    session.close()
