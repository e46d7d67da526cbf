"""A scripted HTTP server on 127.0.0.1 for client tests.

It returns exactly the replies a test queues per route, records every request,
and can delay, truncate or drop a reply. Routes are ``(method, pattern)``
pairs where the pattern is an ``fnmatch`` pattern of the path without the
query string, e.g. ``("GET", "/v2/ep/status/*")``::

    with ScriptedServer() as server:
        server.reply("POST", "/v2/ep/run", Reply(json={"id": "j1", "status": "IN_QUEUE"}))
        server.reply("GET", "/v2/ep/status/j1", Reply(json={"id": "j1", "status": "COMPLETED"}))
        ep = Endpoint("ep", base_url=server.base_url)

Queued replies are used once each, in order; the last one of a route repeats
when ``repeat_last`` is set (the default). A route may instead have a
function that builds a reply from the ``RecordedRequest``. A request that
matches no route gets a 599 reply whose body names it, and is listed in
``unmatched``.
"""

from __future__ import annotations

import contextlib
import fnmatch
import itertools
import json
import socket
import ssl
import struct
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["RecordedRequest", "Reply", "ScriptedServer", "unused_port", "wait_until"]

THREAD_PREFIX = "scripted-server"


@dataclass(frozen=True)
class Reply:
    """One scripted reply.

    ``json`` (any JSON value) or ``body`` (bytes or text) is the body;
    ``delay`` seconds pass before anything is sent. ``drop`` closes the
    connection without a reply, ``reset`` closes it with a TCP reset, and
    ``truncate`` sends the full ``Content-Length`` header but only that many
    body bytes before closing.
    """

    status: int = 200
    json: Any = None
    body: bytes | str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    drop: bool = False
    reset: bool = False
    truncate: int | None = None

    def encoded_body(self) -> bytes:
        if self.body is not None:
            return self.body.encode() if isinstance(self.body, str) else self.body
        if self.json is not None:
            return json.dumps(self.json).encode()
        return b""


@dataclass(frozen=True)
class RecordedRequest:
    """A request the server received."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    received_at: float

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


Responder = Callable[[RecordedRequest], Reply]


class _Route:
    def __init__(self, method: str, pattern: str) -> None:
        self.method = method.upper()
        self.pattern = pattern
        self.replies: list[Reply] = []
        self.repeat_last = True
        self.last: Reply | None = None
        self.responder: Responder | None = None

    def matches(self, method: str, path: str) -> bool:
        return self.method == method and fnmatch.fnmatchcase(path, self.pattern)

    def next_reply(self, request: RecordedRequest) -> Reply | None:
        if self.responder is not None:
            return self.responder(request)
        if self.replies:
            self.last = self.replies.pop(0)
            return self.last
        return self.last if self.repeat_last else None


class ScriptedServer:
    """A threaded HTTP/1.1 server (keep-alive) on 127.0.0.1 that plays queued replies.

    Pass an ``ssl.SSLContext`` as ``tls`` to serve HTTPS. ``base_url`` ends in
    ``/v2`` like RunPod's. ``connections_opened`` counts accepted connections.
    """

    def __init__(self, *, tls: ssl.SSLContext | None = None, idle_timeout: float = 10.0) -> None:
        self._tls = tls
        self._idle_timeout = idle_timeout
        self._lock = threading.Lock()
        self._routes: list[_Route] = []
        self._requests: list[RecordedRequest] = []
        self._unmatched: list[RecordedRequest] = []
        self._sockets: set[socket.socket] = set()
        self._connections = 0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> ScriptedServer:
        handler = _make_handler(self)
        server = _Server(("127.0.0.1", 0), handler, owner=self)
        if self._tls is not None:
            server.socket = self._tls.wrap_socket(
                server.socket, server_side=True, do_handshake_on_connect=False
            )
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"{THREAD_PREFIX}-main",
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        with self._lock:
            sockets = list(self._sockets)
        for connection in sockets:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(5)
        for thread in threading.enumerate():
            if thread.name.startswith(f"{THREAD_PREFIX}-conn"):
                thread.join(5)

    def __enter__(self) -> ScriptedServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None, "start the server first"
        return int(self._server.server_address[1])

    @property
    def origin(self) -> str:
        scheme = "https" if self._tls is not None else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.origin}/v2"

    # -- scripting -----------------------------------------------------------------------------

    def reply(self, method: str, pattern: str, *replies: Reply, repeat_last: bool = True) -> None:
        """Queue ``replies`` for a route, after any already queued."""
        route = self._route(method, pattern)
        with self._lock:
            route.replies.extend(replies)
            route.repeat_last = repeat_last
            route.responder = None

    def respond(self, method: str, pattern: str, responder: Responder) -> None:
        """Build every reply of a route with ``responder(request)``."""
        route = self._route(method, pattern)
        with self._lock:
            route.responder = responder
            route.replies.clear()

    def json_reply(self, method: str, pattern: str, *documents: Any) -> None:
        """Queue 200 replies with these JSON bodies."""
        self.reply(method, pattern, *(Reply(json=document) for document in documents))

    def _route(self, method: str, pattern: str) -> _Route:
        with self._lock:
            for route in self._routes:
                if route.method == method.upper() and route.pattern == pattern:
                    return route
            route = _Route(method, pattern)
            self._routes.append(route)
            return route

    # -- inspection ----------------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    @property
    def unmatched(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._unmatched)

    @property
    def connections_opened(self) -> int:
        with self._lock:
            return self._connections

    def requests_to(self, method: str, pattern: str) -> list[RecordedRequest]:
        return [
            request
            for request in self.requests
            if request.method == method.upper() and fnmatch.fnmatchcase(request.path, pattern)
        ]

    def count(self, method: str, pattern: str) -> int:
        return len(self.requests_to(method, pattern))

    # -- called by the handler -----------------------------------------------------------------

    def _record(self, request: RecordedRequest) -> Reply:
        with self._lock:
            self._requests.append(request)
            routes = [
                route for route in self._routes if route.matches(request.method, request.path)
            ]
            reply = (
                routes[0].next_reply(request) if routes and routes[0].responder is None else None
            )
            responder = routes[0].responder if routes else None
        if responder is not None:
            reply = responder(request)
        if reply is None:
            with self._lock:
                self._unmatched.append(request)
            return Reply(
                status=599, json={"error": f"no scripted reply for {request.method} {request.path}"}
            )
        return reply

    def _opened(self, connection: socket.socket) -> None:
        with self._lock:
            self._connections += 1
            self._sockets.add(connection)

    def _closed(self, connection: socket.socket) -> None:
        with self._lock:
            self._sockets.discard(connection)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    _names = itertools.count(1)

    def __init__(
        self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], owner: ScriptedServer
    ):
        self.owner = owner
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        self.owner._opened(request)
        thread = threading.Thread(
            target=self.process_request_thread,
            args=(request, client_address),
            name=f"{THREAD_PREFIX}-conn-{next(self._names)}",
            daemon=True,
        )
        thread.start()

    def shutdown_request(self, request: Any) -> None:
        self.owner._closed(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that drop connections are part of the script; stay quiet.
        pass


def _make_handler(owner: ScriptedServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        timeout = owner._idle_timeout

        def setup(self) -> None:
            super().setup()
            # Without this a reply written in two segments waits for the client's delayed ACK.
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            self._serve()

        def do_POST(self) -> None:
            self._serve()

        def do_PUT(self) -> None:
            self._serve()

        def do_DELETE(self) -> None:
            self._serve()

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            parts = urllib.parse.urlsplit(self.path)
            request = RecordedRequest(
                method=self.command,
                path=parts.path,
                query=urllib.parse.parse_qs(parts.query),
                headers={key: value for key, value in self.headers.items()},
                body=body,
                received_at=time.monotonic(),
            )
            reply = owner._record(request)
            if reply.delay:
                time.sleep(reply.delay)
            if reply.drop or reply.reset:
                self._close(reset=reply.reset)
                return
            payload = reply.encoded_body()
            self.send_response(reply.status)
            headers = {"Content-Type": "application/json", **reply.headers}
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if reply.truncate is not None:
                self.wfile.write(payload[: reply.truncate])
                self.wfile.flush()
                self._close(reset=False)
                return
            self.wfile.write(payload)

        def _close(self, *, reset: bool) -> None:
            if reset:
                self.connection.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
            self.close_connection = True
            try:
                self.wfile.flush()
                if not reset:
                    self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self.connection.close()

    return Handler


def unused_port() -> int:
    """Return a 127.0.0.1 port nothing listens on (connections to it are refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0, interval: float = 0.01) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` seconds pass; return its last value."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return bool(predicate())
        time.sleep(interval)
