"""Server-sent events read from a streamed ``requests.Response``.

This is the wire layer under ``rxrunpod.openai``: it imports no reactivex.
``EventStream`` feeds the body to sseclient-py as the bytes arrive and yields
one ``ServerSentEvent`` per dispatched event::

    response = client.open_stream("POST", "openai/v1/chat/completions", json=body)
    with EventStream(response) as stream:
        for event in stream:
            print(event.event, event.data)

Framing follows the WHATWG ``EventSource`` rules, with two deliberate
choices for a body that ends without a blank line. A final event whose lines
are complete (``data: x\\n`` and then the end of the body) is dispatched. A
body that ends inside a line (``data: {"ch``) raises ``StreamProtocolError``,
because the server was cut off in the middle of an event.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Iterator
from types import TracebackType
from typing import Any, NamedTuple

import requests
from sseclient import SSEClient

from .errors import StreamProtocolError

__all__ = ["DEFAULT_READ_SIZE", "EventStream", "ServerSentEvent"]

logger = logging.getLogger("rxrunpod.sse")

DEFAULT_READ_SIZE = 65536
"""Largest read from the socket in bytes; a read returns as soon as any bytes arrive."""


class ServerSentEvent(NamedTuple):
    """One dispatched event of a ``text/event-stream`` body.

    ``data`` joins the event's ``data:`` lines with newlines. ``event`` is
    ``"message"`` when the server named none. ``id`` is the event's own
    ``id:`` field (None without one or when it contains NUL). ``retry`` is
    the reconnection time in milliseconds the event asked for, None unless
    it carried a ``retry:`` field of ASCII digits. A named tuple, because
    it is built once per event and a tuple is the cheapest immutable record.
    """

    data: str
    event: str = "message"
    id: str | None = None
    retry: int | None = None


class EventStream:
    """Events of a streamed ``requests.Response``, parsed by sseclient-py.

    Iterate once. Each event is yielded as soon as its closing blank line
    arrives, whatever the transfer encoding: the body is read with
    ``read1``, which returns what the socket has instead of waiting for a
    full buffer. Comments (``: ping``) and events without a ``data:`` line
    are not yielded.

    ``close()`` may be called from any thread, also while another thread is
    blocked reading: it shuts the socket down, so the server sees the
    connection close at once and the reading thread returns without
    yielding anything more. The response is always closed when iteration
    ends.

    Raises ``StreamProtocolError`` when the body ends inside a line, when
    the connection breaks or times out mid-body, or when a line is not valid
    UTF-8.
    """

    def __init__(self, response: requests.Response, *, read_size: int = DEFAULT_READ_SIZE) -> None:
        if read_size < 1:
            raise ValueError(f"read_size must be at least 1 byte, got {read_size}")
        self._response = response
        self._read_size = read_size
        self._lock = threading.Lock()
        self._closing = False
        self._reading = False
        self._started = False
        self._exhausted = False
        self._ended_mid_line = False
        self._bytes_read = 0
        self.events_dispatched = 0

    @property
    def response(self) -> requests.Response:
        """The HTTP response the events are read from."""
        return self._response

    @property
    def closed(self) -> bool:
        """True once ``close()`` was called or iteration ended."""
        return self._closing or self._exhausted

    def __enter__(self) -> EventStream:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __iter__(self) -> Iterator[ServerSentEvent]:
        with self._lock:
            if self._started:
                raise RuntimeError("an EventStream can be iterated only once")
            self._started = True
        return self._events()

    def close(self) -> None:
        """Close the connection now; safe from any thread and more than once."""
        with self._lock:
            if self._closing:
                return
            self._closing = True
            busy = self._reading
            if busy:
                # Closing the response here would wait for the reader's buffer
                # lock, so shut the socket down instead: the server sees the
                # connection end, and the blocked read returns at once. The
                # reader then closes the response. Holding the lock keeps the
                # reader from closing the descriptor while it is duplicated.
                self._shutdown_socket()
        if not busy:
            self._response.close()

    def _events(self) -> Iterator[ServerSentEvent]:
        client = SSEClient(self._chunks())
        try:
            for raw in client.events():
                if self._closing:
                    return
                if self._exhausted and self._ended_mid_line:
                    raise self._truncated_error(raw.data)
                self.events_dispatched += 1
                event_id = raw.id
                if event_id is not None and "\0" in event_id:
                    event_id = None
                retry = raw.retry
                if retry is not None:
                    retry = _retry_milliseconds(retry)
                yield ServerSentEvent(raw.data, raw.event, event_id, retry)
            if self._ended_mid_line and not self._closing:
                raise self._truncated_error(None)
        except UnicodeDecodeError as error:
            raise StreamProtocolError(
                f"an event line of {self._response.url} is not valid UTF-8 ({error.reason} "
                f"at byte {error.start}); the server must send text/event-stream as UTF-8"
            ) from error
        finally:
            with self._lock:
                self._closing = True
            self._response.close()
            logger.debug(
                "event stream of %s ended after %d events, %d bytes",
                self._response.url,
                self.events_dispatched,
                self._bytes_read,
            )

    def _chunks(self) -> Iterator[bytes]:
        """Yield the body as it arrives, with CRLF and CR line endings turned into LF.

        sseclient-py 1.9 ends an event only where its buffer ends in two equal
        line endings, so it misses a blank line after a different ending
        (``data: x\\n\\r\\n``) and merges the next event into this one.
        Normalising first makes every blank line ``\\n\\n``.
        """
        read = _partial_reader(self._response)
        after_cr = False
        last_byte = b"\n"
        while True:
            with self._lock:
                if self._closing:
                    break
                self._reading = True
            try:
                chunk = read(self._read_size)
            except Exception as error:
                if self._closing:
                    break
                raise self._broken_error(error) from error
            finally:
                with self._lock:
                    self._reading = False
            if not chunk:
                break
            self._bytes_read += len(chunk)
            if after_cr and chunk[:1] == b"\n":
                chunk = chunk[1:]
            if b"\r" in chunk:
                after_cr = chunk[-1:] == b"\r"
                chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
            else:
                after_cr = False
            if chunk:
                last_byte = chunk[-1:]
                yield chunk
        self._ended_mid_line = last_byte != b"\n" and not self._closing
        self._exhausted = True

    def _shutdown_socket(self) -> None:
        # When a response ends the connection, http.client hands the socket
        # over to the response and the connection object forgets it. The
        # response's file descriptor is the one handle every body keeps.
        try:
            descriptor = self._response.raw.fileno()
        except (AttributeError, OSError, ValueError):
            return  # the body is closed already
        try:
            with socket.socket(fileno=os.dup(descriptor)) as duplicate:
                duplicate.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # already reset by the peer

    def _truncated_error(self, data: str | None) -> StreamProtocolError:
        return StreamProtocolError(
            f"the event stream of {self._response.url} ended in the middle of an event after "
            f"{self.events_dispatched} complete events; the server or a proxy cut the body off",
            data=data,
        )

    def _broken_error(self, error: Exception) -> StreamProtocolError:
        return StreamProtocolError(
            f"reading the event stream of {self._response.url} failed after "
            f"{self.events_dispatched} events: {type(error).__name__}: {error}"
        )


def _partial_reader(response: requests.Response) -> Any:
    """Return ``read1`` of the response body: at most n bytes, without waiting for all n.

    urllib3 2.x offers ``read1`` with content decoding. Older urllib3 lacks
    it, so the undecoded ``http.client`` response below it is read instead;
    the OpenAI layer requests an identity encoding, so nothing is lost there.
    """
    raw = response.raw
    read1 = getattr(raw, "read1", None)
    if read1 is not None:
        return read1
    fallback = getattr(getattr(raw, "_fp", None), "read1", None)
    if fallback is None:
        raise TypeError(
            f"cannot read the body of {response.url} incrementally: its raw stream "
            f"{type(raw).__name__} has no read1; install urllib3 2.x"
        )
    return fallback


def _retry_milliseconds(value: str) -> int | None:
    if not value.isascii() or not value.isdigit():
        return None
    return int(value)
