"""The program a worker process runs: ``python -m rxrunpod.local._process_child``.

Two modes share one start-up. Both get the file descriptor of a socket whose
other end the server holds; when that socket reports end of file the server
is gone, and the child kills its own process group (itself and anything the
handler started), so no worker outlives its server. On Linux the child also
asks the kernel for a signal when the server dies (``PR_SET_PDEATHSIG``), which
interrupts the main thread even when the watching thread cannot run.

- ``rxrunpod TARGET``: imports the handler once and runs jobs that arrive on
  the socket in a ``ThreadWorker``, sending every report back as a pickled
  tuple (see ``_process_worker`` for the messages).
- ``runpod SCRIPT``: runs the handler file as ``__main__``, exactly as
  ``python SCRIPT`` would, so ``runpod.serverless.start`` runs RunPod's own
  worker loop against the worker channel named in the environment.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import ctypes.util
import inspect
import os
import runpy
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from typing import Any

__all__ = ["handler_kind", "main"]

_PR_SET_PDEATHSIG = 1


def handler_kind(function: Callable[..., Any]) -> str:
    """Name how a handler runs: ``"sync"`` for a plain function, else ``"cooperative"``.

    A plain function cannot be interrupted, so the server kills its worker at
    once to stop a job; async handlers and generators get a chance to stop.
    """
    target = function if inspect.isroutine(function) else type(function).__call__
    if (
        inspect.iscoroutinefunction(target)
        or inspect.isasyncgenfunction(target)
        or inspect.isgeneratorfunction(target)
    ):
        return "cooperative"
    return "sync"


def _die_with_parent(parent_pid: int) -> None:
    """Ask Linux for SIGUSR2 when the server exits, and end the process group on it.

    A plain SIGKILL would end only this process and leave its children (RunPod's
    ping process, whatever the handler started) behind. A no-op off Linux.
    """
    if not sys.platform.startswith("linux"):
        return
    signal.signal(signal.SIGUSR2, lambda number, frame: _kill_group())
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGUSR2, 0, 0, 0)
    except (OSError, AttributeError):
        return
    # The server may have died before prctl took effect.
    if os.getppid() != parent_pid:
        _kill_group()


def _kill_group() -> None:
    """End this process and, when it leads its process group, everything in that group."""
    if os.getpgrp() == os.getpid():
        os.killpg(os.getpgrp(), signal.SIGKILL)
    os._exit(1)


def _watch_parent(sock: Connection) -> None:
    """Block until the server's end of the socket closes, then end the process group.

    NOTE: neither this thread nor the SIGUSR2 handler runs while a handler holds
    the GIL inside C code; a server killed then leaves that worker's children.
    """
    while True:
        try:
            sock.recv_bytes()
        except (EOFError, OSError):
            _kill_group()


class _PipeEvents:
    """``WorkerEvents`` that send each report to the server over the socket."""

    def __init__(self, connection: Connection, kind: str) -> None:
        self._connection = connection
        self._kind = kind
        self._lock = threading.Lock()
        self.done = threading.Event()

    def _send(self, message: tuple[Any, ...]) -> None:
        with self._lock:
            self._connection.send(message)

    def ready(self, worker: Any, capacity: int) -> None:
        self._send(("ready", capacity, self._kind))

    def progress(self, key: tuple[str, int], value: Any) -> None:
        self._send(("progress", key, value))

    def chunk(self, key: tuple[str, int], item: Any) -> None:
        self._send(("chunk", key, item))

    def finished(self, worker: Any, key: tuple[str, int], outcome: Any, capacity: int) -> None:
        message = (
            "finished",
            key,
            outcome.status.value,
            outcome.output,
            outcome.has_output,
            outcome.error,
            outcome.refresh_worker,
            capacity,
        )
        try:
            self._send(message)
        except Exception as error:
            # Pickling failed before anything was written; report the job as failed instead.
            text = f"the handler's output cannot cross the process boundary: {error!r}"
            self._send(("finished", key, "FAILED", None, False, text, False, capacity))

    def exited(self, worker: Any, reason: str | None) -> None:
        with contextlib.suppress(OSError):
            self._send(("exited", reason))
        self.done.set()


def _serve_rxrunpod(connection: Connection, arguments: argparse.Namespace) -> int:
    from ._handler import load_handler
    from ._workers import Assignment, ThreadWorker

    try:
        spec = load_handler(
            arguments.target,
            return_aggregate_stream=arguments.aggregate,
            concurrency_modifier=_resolve(arguments.concurrency_modifier),
        )
    except BaseException as error:
        connection.send(("failed", f"cannot load handler {arguments.target}: {error!r}"))
        return 1
    events = _PipeEvents(connection, handler_kind(spec.function))
    worker = ThreadWorker(arguments.worker_id, events, spec, cold_start=arguments.cold_start)
    worker.start()
    while not events.done.is_set():
        try:
            message = connection.recv()
        except (EOFError, OSError):
            _kill_group()
        command = message[0]
        if command == "assign":
            _, job_id, attempt, job_input, webhook = message
            worker.assign(Assignment(job_id, attempt, job_input, webhook))
        elif command == "cancel":
            worker.cancel((message[1], message[2]))
        elif command == "stop":
            worker.stop()
            break
    events.done.wait()
    return 0


def _resolve(reference: str | None) -> Callable[[int], int] | None:
    if reference is None:
        return None
    module_name, _, name = reference.partition(":")
    module = __import__(module_name, fromlist=["_"])
    function: Callable[[int], int] = getattr(module, name)
    return function


def _serve_runpod(connection: Connection, arguments: argparse.Namespace) -> int:
    threading.Thread(
        target=_watch_parent, args=(connection,), name="rxrunpod-parent-watch", daemon=True
    ).start()
    script = os.path.abspath(arguments.target)
    sys.argv = [script]
    sys.path.insert(0, os.path.dirname(script))
    runpy.run_path(script, run_name="__main__")
    return 0


def _parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m rxrunpod.local._process_child")
    parser.add_argument("mode", choices=["rxrunpod", "runpod"])
    parser.add_argument("target")
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--parent", type=int, required=True)
    parser.add_argument("--worker-id", required=True)
    parser.add_argument("--aggregate", action="store_true")
    parser.add_argument("--cold-start", type=float, default=0.0)
    parser.add_argument("--concurrency-modifier", default=None)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one worker process; return its exit code."""
    arguments = _parse(sys.argv[1:] if argv is None else argv)
    _die_with_parent(arguments.parent)
    # Ctrl-C goes to the server's process group only; the server decides when workers stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    connection = Connection(arguments.fd)
    if arguments.mode == "runpod":
        return _serve_runpod(connection, arguments)
    return _serve_rxrunpod(connection, arguments)


if __name__ == "__main__":
    sys.exit(main())
