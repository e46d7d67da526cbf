"""Framing of server-sent events, each case against a raw HTTP server on 127.0.0.1."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
import requests

from rxrunpod.errors import StreamProtocolError
from rxrunpod.sse import EventStream, ServerSentEvent
from tests.sse.raw_server import Connection, Script, raw_server, sse_head

pytestmark = pytest.mark.timeout(30)

TIMEOUT = (2.0, 5.0)


def body_script(pieces: list[bytes], *, chunked: bool = False, pause: float = 0.002) -> Script:
    """Script that responds 200 and sends the pieces, each as one write, then ends the body."""

    def script(connection: Connection) -> None:
        connection.chunked = chunked
        connection.send(sse_head(chunked=chunked))
        connection.send_pieces(pieces, pause=pause)
        connection.end_body()

    return script


def fetch_events(
    pieces: list[bytes], *, chunked: bool = False, read_size: int = 65536, pause: float = 0.002
) -> list[ServerSentEvent]:
    with raw_server(body_script(pieces, chunked=chunked, pause=pause)) as server:
        response = requests.get(server.url + "/events", stream=True, timeout=TIMEOUT)
        return list(EventStream(response, read_size=read_size))


def datas(events: list[ServerSentEvent]) -> list[str]:
    return [event.data for event in events]


TWO_EVENTS = b'data: {"n": 1}\n\ndata: {"n": 2}\n\n'


@pytest.mark.parametrize("chunked", [False, True], ids=["close-delimited", "chunked"])
def test_two_events_in_one_piece(chunked: bool) -> None:
    events = fetch_events([TWO_EVENTS], chunked=chunked)

    assert events == [
        ServerSentEvent(data='{"n": 1}'),
        ServerSentEvent(data='{"n": 2}'),
    ]


def test_every_split_point_gives_same_events() -> None:
    body = b'event: delta\nid: 7\ndata: {"text": "h\xc3\xa9"}\n\n: ping\n\ndata: a\ndata: b\n\n'
    expected = [
        ServerSentEvent(data='{"text": "hé"}', event="delta", id="7"),
        ServerSentEvent(data="a\nb"),
    ]
    failures = []

    for split in range(1, len(body)):
        events = fetch_events([body[:split], body[split:]], chunked=split % 2 == 0, pause=0.001)
        if events != expected:
            failures.append((split, events))

    assert failures == []


@pytest.mark.parametrize("chunked", [False, True], ids=["close-delimited", "chunked"])
def test_one_byte_at_a_time(chunked: bool) -> None:
    body = b'data: {"n": 1}\r\n\r\n: ping\r\n\r\ndata: line one\r\ndata: line two\r\n\r\n'
    pieces = [body[i : i + 1] for i in range(len(body))]

    events = fetch_events(pieces, chunked=chunked, read_size=1, pause=0.0005)

    assert datas(events) == ['{"n": 1}', "line one\nline two"]


def test_multibyte_character_split_across_pieces() -> None:
    text = "naïve € 😀"
    encoded = text.encode("utf-8")
    euro = encoded.index("€".encode())
    emoji = encoded.index("😀".encode())
    body = b"data: " + encoded + b"\n\n"
    offset = len(b"data: ")
    cuts = [offset + euro + 1, offset + euro + 2, offset + emoji + 1, offset + emoji + 3]
    pieces = [body[start:end] for start, end in zip([0, *cuts], [*cuts, len(body)], strict=True)]

    events = fetch_events(pieces, read_size=1)

    assert datas(events) == [text]


def test_multiline_data_joined_with_newlines() -> None:
    events = fetch_events([b"data: first\ndata:second\ndata:  third\ndata\n\n"])

    assert datas(events) == ["first\nsecond\n third\n"]


@pytest.mark.parametrize("ending", [b"\n", b"\r\n", b"\r"], ids=["LF", "CRLF", "CR"])
def test_line_endings(ending: bytes) -> None:
    lines = [b"event: first", b"data: a", b"data: b", b"", b"data: c", b"", b""]
    body = ending.join(lines)

    events = fetch_events([body])

    assert events == [
        ServerSentEvent(data="a\nb", event="first"),
        ServerSentEvent(data="c"),
    ]


def test_mixed_line_endings() -> None:
    body = b"data: a\n\r\ndata: b\r\r\ndata: c\r\n\n"

    events = fetch_events([body])

    assert datas(events) == ["a", "b", "c"]


def test_crlf_split_between_cr_and_lf() -> None:
    pieces = [b"data: a\r", b"\n\r", b"\ndata: b\r\n\r", b"\n"]

    events = fetch_events(pieces, chunked=True)

    assert datas(events) == ["a", "b"]


def test_comments_and_pings_are_not_events() -> None:
    body = b": ping\n\n:\n\n: keep-alive\ndata: real\n\n: ping\n\n"

    events = fetch_events([body])

    assert datas(events) == ["real"]


def test_pings_only_give_no_events() -> None:
    assert fetch_events([b": ping\n\n", b": ping\n\n"]) == []


def test_event_id_and_retry_fields() -> None:
    body = (
        b"event: token\nid: 42\nretry: 1500\ndata: x\n\n"
        b"id: abc\x00def\nretry: soon\ndata: y\n\n"
        b"event:\ndata: z\n\n"
    )

    events = fetch_events([body])

    assert events == [
        ServerSentEvent(data="x", event="token", id="42", retry=1500),
        ServerSentEvent(data="y", event="message", id=None, retry=None),
        ServerSentEvent(data="z", event="message"),
    ]


def test_unknown_fields_are_ignored() -> None:
    events = fetch_events([b"foo: bar\ndata: x\nbaz\n\n"])

    assert datas(events) == ["x"]


def test_event_without_data_is_not_dispatched() -> None:
    events = fetch_events([b"event: nothing\nid: 1\n\ndata: after\n\n"])

    assert datas(events) == ["after"]


def test_final_event_without_blank_line() -> None:
    events = fetch_events([b"data: one\n\ndata: last\n"])

    assert datas(events) == ["one", "last"]


def test_empty_data_field_is_an_event() -> None:
    events = fetch_events([b"data:\n\ndata: \n\ndata: x\n\n"])

    assert datas(events) == ["", "", "x"]


def test_body_ending_mid_line_raises() -> None:
    received: list[ServerSentEvent] = []

    with raw_server(body_script([b'data: {"n": 1}\n\ndata: {"n": 2'])) as server:
        response = requests.get(server.url, stream=True, timeout=TIMEOUT)
        with pytest.raises(StreamProtocolError, match="ended in the middle of an event") as caught:
            for event in EventStream(response):
                received.append(event)

    assert datas(received) == ['{"n": 1}']
    assert caught.value.data == '{"n": 2'


def test_body_ending_mid_field_without_data_raises() -> None:
    with raw_server(body_script([b"data: 1\n\nevent: upd"])) as server:
        response = requests.get(server.url, stream=True, timeout=TIMEOUT)
        stream = EventStream(response)
        events = iter(stream)

        assert next(events).data == "1"
        with pytest.raises(StreamProtocolError):
            next(events)


def test_invalid_utf8_raises() -> None:
    with raw_server(body_script([b"data: \xff\xfe\n\n"])) as server:
        response = requests.get(server.url, stream=True, timeout=TIMEOUT)
        with pytest.raises(StreamProtocolError, match="not valid UTF-8"):
            list(EventStream(response))


def test_connection_reset_mid_body_raises() -> None:
    def script(connection: Connection) -> None:
        connection.chunked = True
        connection.send(sse_head(chunked=True))
        connection.send_body(b"data: 1\n\n")
        time.sleep(0.05)
        # A chunked body that stops without its last chunk is a broken response.
        connection.sock.shutdown(2)

    with raw_server(script) as server:
        response = requests.get(server.url, stream=True, timeout=TIMEOUT)
        received = []
        with pytest.raises(StreamProtocolError, match="failed after 1 events"):
            for event in EventStream(response):
                received.append(event.data)

    assert received == ["1"]


def test_read_timeout_mid_body_raises() -> None:
    def script(connection: Connection) -> None:
        connection.send(sse_head())
        connection.send(b"data: 1\n\n")
        connection.wait_for_client_close(timeout=5)

    with raw_server(script) as server:
        response = requests.get(server.url, stream=True, timeout=(2.0, 0.3))
        with pytest.raises(StreamProtocolError, match="ReadTimeoutError"):
            list(EventStream(response))


@pytest.mark.parametrize("chunked", [False, True], ids=["close-delimited", "chunked"])
def test_open_stream_delivers_each_event_on_arrival(chunked: bool) -> None:
    """The server sends the next event only after the client has the previous one."""
    delivered = [threading.Event() for _ in range(3)]
    server_waits: list[bool] = []

    def script(connection: Connection) -> None:
        connection.chunked = chunked
        connection.send(sse_head(chunked=chunked))
        for number, seen in enumerate(delivered):
            connection.send_body(b"data: %d\n\n" % number)
            server_waits.append(seen.wait(timeout=3))
        connection.end_body()

    with raw_server(script) as server:
        response = requests.get(server.url, stream=True, timeout=TIMEOUT)
        received = []
        for event in EventStream(response):
            received.append(event.data)
            delivered[len(received) - 1].set()

    assert received == ["0", "1", "2"]
    assert server_waits == [True, True, True]


def test_event_split_across_pauses_arrives_when_complete() -> None:
    release = threading.Event()
    arrival: list[float] = []

    def script(connection: Connection) -> None:
        connection.send(sse_head())
        connection.send(b"data: hel")
        release.wait(timeout=3)
        connection.send(b"lo\n\n")
        connection.wait_for_client_close(timeout=3)

    with raw_server(script) as server:
        response = requests.get(server.url, stream=True, timeout=TIMEOUT)
        stream = EventStream(response)
        events: Iterator[ServerSentEvent] = iter(stream)
        threading.Timer(0.2, release.set).start()
        started = time.monotonic()
        first = next(events)
        arrival.append(time.monotonic() - started)
        stream.close()

    assert first.data == "hello"
    assert arrival[0] >= 0.15


def test_close_from_other_thread_ends_read() -> None:
    client_closed: list[bool] = []

    def script(connection: Connection) -> None:
        connection.send(sse_head())
        connection.send(b"data: 1\n\n")
        client_closed.append(connection.wait_for_client_close(timeout=5))

    with raw_server(script) as server:
        response = requests.get(server.url, stream=True, timeout=(2.0, 30.0))
        stream = EventStream(response)
        received: list[str] = []
        outcome: list[BaseException | None] = []

        def read() -> None:
            try:
                for event in stream:
                    received.append(event.data)
                outcome.append(None)
            except BaseException as error:
                outcome.append(error)

        reader = threading.Thread(target=read)
        reader.start()
        deadline = time.monotonic() + 3
        while not received and time.monotonic() < deadline:
            time.sleep(0.01)
        closed_at = time.monotonic()
        stream.close()
        reader.join(timeout=2)
        reader_seconds = time.monotonic() - closed_at

    assert received == ["1"]
    assert not reader.is_alive()
    assert reader_seconds < 1.0
    assert outcome == [None]
    assert client_closed == [True]
    assert stream.closed


def test_close_inside_loop_stops_iteration() -> None:
    client_closed: list[bool] = []

    def script(connection: Connection) -> None:
        connection.send(sse_head())
        connection.send(b"data: 1\n\ndata: 2\n\ndata: 3\n\n")
        client_closed.append(connection.wait_for_client_close(timeout=5))

    with raw_server(script) as server:
        response = requests.get(server.url, stream=True, timeout=TIMEOUT)
        stream = EventStream(response)
        received = []
        for event in stream:
            received.append(event.data)
            stream.close()

    assert received == ["1"]
    assert client_closed == [True]


def test_iterating_twice_raises() -> None:
    with raw_server(body_script([TWO_EVENTS])) as server:
        response = requests.get(server.url, stream=True, timeout=TIMEOUT)
        stream = EventStream(response)
        list(stream)

        with pytest.raises(RuntimeError, match="only once"):
            iter(stream)


def test_read_size_below_one_is_rejected() -> None:
    with pytest.raises(ValueError, match="at least 1 byte"):
        EventStream(requests.Response(), read_size=0)
