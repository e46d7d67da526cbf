"""The API key is checked when a client is built and never leaks through a foreign error."""

from __future__ import annotations

import traceback

import pytest

from rxrunpod import Endpoint
from rxrunpod.errors import AuthenticationError, RequestError
from rxrunpod.http import HttpClient, RetryPolicy
from tests.support.scripted_server import Reply, ScriptedServer

SECRET = "SECRETKEY123abc"
LOCAL = "http://127.0.0.1:9/v2"


def full_text(error: BaseException) -> str:
    """Everything a traceback, a repr or a debugger would show of ``error`` and its chain."""
    parts = ["".join(traceback.format_exception(error)), repr(error), repr(vars(error))]
    current = error.__cause__ or error.__context__
    while current is not None:
        parts.append(repr(current))
        current = current.__cause__ or current.__context__
    return "".join(parts)


def test_environment_key_with_newline_rejected(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RUNPOD_API_KEY", SECRET + "\n")

    with pytest.raises(ValueError) as caught:
        Endpoint("ep", base_url=LOCAL)

    message = str(caught.value)
    assert "RUNPOD_API_KEY contains a newline or control character at position 15" in message
    assert SECRET not in full_text(caught.value)


@pytest.mark.parametrize("bad", [f"{SECRET}\r", "SECRET\tKEY", f"{SECRET}\x00", f"{SECRET}\x7f"])
def test_key_with_control_character_rejected(bad: str) -> None:
    with pytest.raises(
        ValueError, match="api_key contains a newline or control character"
    ) as caught:
        HttpClient("ep", api_key=bad, base_url=LOCAL)

    assert "SECRET" not in str(caught.value)


@pytest.mark.parametrize("bad", [f"{SECRET} tail", f"{SECRET}\u2019"])
def test_key_with_space_or_non_ascii_is_rejected(bad: str) -> None:
    with pytest.raises(ValueError, match="space or a non-ASCII character at position 15"):
        HttpClient("ep", api_key=bad, base_url=LOCAL)


@pytest.mark.parametrize("bad", [SECRET.encode(), 12345])
def test_non_str_key_raises_type_error(bad: object) -> None:
    with pytest.raises(TypeError, match="api_key must be a str, got") as caught:
        HttpClient("ep", api_key=bad, base_url=LOCAL)  # type: ignore[arg-type]

    assert SECRET not in str(caught.value)
    assert "12345" not in str(caught.value)


@pytest.mark.parametrize("bad", ["", "   "])
def test_empty_key_argument_is_rejected(bad: str) -> None:
    with pytest.raises(ValueError, match="api_key is empty or only whitespace"):
        Endpoint("ep", api_key=bad, base_url=LOCAL)


def test_empty_environment_key_counts_as_unset(
    server: ScriptedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNPOD_API_KEY", "")
    server.reply("GET", "/v2/ep/health", Reply(status=401))
    http = HttpClient("ep", base_url=server.base_url, retry=RetryPolicy(max_attempts=1))

    with pytest.raises(AuthenticationError, match="No API key was sent"):
        http.request_json("GET", "health", retry_safe=True)

    assert not http.has_api_key
    assert "Authorization" not in server.requests[0].headers


def test_foreign_error_text_scrubbed_of_key(server: ScriptedServer) -> None:
    http = HttpClient("ep", api_key=SECRET, base_url=server.base_url)
    # Get past the check at construction, as a key changed later would: requests
    # then raises InvalidHeader, whose text carries the whole header value.
    http._api_key = SECRET + "\n"

    with pytest.raises(RequestError) as caught:
        http.request_json("GET", "health", retry_safe=False)

    assert SECRET not in full_text(caught.value)
    assert caught.value.__cause__ is None
    assert caught.value.__context__ is None
    assert server.requests == []
