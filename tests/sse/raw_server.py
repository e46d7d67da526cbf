"""A raw-socket HTTP server on 127.0.0.1 that sends exactly the bytes a test scripts.

Each accepted connection reads one request (head and ``Content-Length`` body)
and then runs the test's script on the server thread. The script writes
through a ``Connection``: whole pieces, one piece per TCP send with an
optional pause, in chunked transfer encoding or not. The server records every
request and whether the client closed the connection.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field

__all__ = ["Connection", "RawServer", "ReceivedRequest", "Script", "raw_server", "sse_head"]

ACCEPT_TIMEOUT = 10.0
"""Seconds the server waits for a client before it stops listening."""


@dataclass
class ReceivedRequest:
    """The request line, headers and body the server read from one connection."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Connection:
    """Server side of one accepted connection, handed to the script."""

    sock: socket.socket
    request: ReceivedRequest
    chunked: bool = False
    client_closed: threading.Event = field(default_factory=threading.Event)

    def send(self, data: bytes) -> None:
        """Send raw bytes as they are, one TCP send."""
        self.sock.sendall(data)

    def send_body(self, data: bytes) -> None:
        """Send a piece of the body, framed as one HTTP chunk when the response is chunked."""
        if not data:
            return
        if self.chunked:
            data = b"%x\r\n%s\r\n" % (len(data), data)
        self.sock.sendall(data)

    def send_pieces(self, pieces: Iterable[bytes], pause: float = 0.002) -> None:
        """Send each piece as its own body write, pausing so reads see the boundaries."""
        for piece in pieces:
            self.send_body(piece)
            time.sleep(pause)

    def end_body(self) -> None:
        """Send the last chunk of a chunked body; nothing for an unframed one."""
        if self.chunked:
            self.sock.sendall(b"0\r\n\r\n")

    def wait_for_client_close(self, timeout: float) -> bool:
        """Read and drop bytes until the client closes; True if it closed within ``timeout``."""
        self.sock.settimeout(timeout)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if not self.sock.recv(4096):
                    self.client_closed.set()
                    return True
        except ConnectionError:
            self.client_closed.set()
            return True
        except OSError:
            return False
        return False


Script = Callable[[Connection], None]


def sse_head(
    *, chunked: bool = False, status: str = "200 OK", content_type: str = "text/event-stream"
) -> bytes:
    """Build a response head; without ``chunked`` the body ends when the server closes."""
    lines = [f"HTTP/1.1 {status}", f"Content-Type: {content_type}", "Cache-Control: no-cache"]
    if chunked:
        lines.append("Transfer-Encoding: chunked")
    else:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")


class RawServer:
    """Serve connections one after another, each with the current script, until stopped."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.requests: list[ReceivedRequest] = []
        self.connections: list[Connection] = []
        self.errors: list[BaseException] = []
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        self._listener.settimeout(0.2)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="raw-sse-server", daemon=True)

    @property
    def url(self) -> str:
        """Base URL of the server, without a trailing slash."""
        host, port = self._listener.getsockname()
        return f"http://{host}:{port}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=5)
        self._listener.close()

    def _serve(self) -> None:
        idle_since = time.monotonic()
        while not self._stopping.is_set() and time.monotonic() - idle_since < ACCEPT_TIMEOUT:
            try:
                sock, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with sock:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                try:
                    self._handle(sock)
                except (ConnectionError, TimeoutError):
                    pass  # the client went away, which several tests cause on purpose
                except BaseException as error:  # reported to the test by raw_server()
                    self.errors.append(error)
            idle_since = time.monotonic()

    def _handle(self, sock: socket.socket) -> None:
        sock.settimeout(5)
        request = _read_request(sock)
        self.requests.append(request)
        connection = Connection(sock, request)
        self.connections.append(connection)
        self.script(connection)
        with suppress(OSError):
            sock.shutdown(socket.SHUT_WR)


def _read_request(sock: socket.socket) -> ReceivedRequest:
    buffer = b""
    while b"\r\n\r\n" not in buffer:
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("client closed before sending a request head")
        buffer += data
    head, body = buffer.split(b"\r\n\r\n", 1)
    request_line, *header_lines = head.decode("latin-1").split("\r\n")
    method, path, _ = request_line.split(" ", 2)
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("client closed in the middle of the request body")
        body += data
    return ReceivedRequest(method, path, headers, body)


@contextmanager
def raw_server(script: Script) -> Iterator[RawServer]:
    """Run a ``RawServer`` for the block, then stop it and re-raise any script error."""
    server = RawServer(script)
    server.start()
    try:
        yield server
    finally:
        server.stop()
    if server.errors:
        raise server.errors[0]
