"""The ``rxrunpod serve`` subcommand: run a handler behind a local endpoint until Ctrl-C."""

from __future__ import annotations

import argparse
import logging
import math
import os
import signal
import sys
import threading
import time
import warnings
from typing import Any

from ._faults import FAULT_KINDS, ROUTES, FaultRule, Faults

__all__ = ["add_serve_command", "command_serve"]

logger = logging.getLogger("rxrunpod.local")

_TRACEBACK_HINT = "rerun with --log-level DEBUG to see the traceback"

# The environment variable ``rxrunpod serve`` reads its API key from when ``--api-key`` is absent.
API_KEY_VARIABLE = "RXRUNPOD_LOCAL_API_KEY"


def _non_negative_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    # float() also reads "nan" and "inf"; an infinite cold start would leave every worker
    # initializing with nothing to say why.
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number of seconds, got {text}")
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected 0 or more seconds, got {text}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected 1 or more, got {text}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected 0 or more, got {text}")
    return value


def add_serve_command(subcommands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``serve`` on the ``rxrunpod`` parser."""
    serve = subcommands.add_parser(
        "serve",
        help="Run a handler behind a local RunPod-compatible endpoint.",
        description=(
            "Serve HANDLER on RunPod's queue API (run, runsync, status, stream, cancel, retry, "
            "purge-queue, health, openai/v1/...) under http://HOST:PORT/v2/<any endpoint id>/. "
            "HANDLER is a .py file that calls runpod.serverless.start(), path.py:function, or "
            "module:function."
        ),
        epilog=(
            f"Fault kinds: {', '.join(FAULT_KINDS)}. Routes: {', '.join(ROUTES)}. "
            "Example: --fault 429=0.1 --fault 503-after@run=0.05 --fault slow@status=0.2"
        ),
    )
    serve.add_argument(
        "handler", metavar="HANDLER", help="handler file, path.py:function or module:function"
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    serve.add_argument(
        "--port",
        type=int,
        default=8000,
        help="TCP port; 0 picks a free one (default: 8000)",
    )
    serve.add_argument(
        "--workers", type=_positive_int, default=4, help="number of workers (default: 4)"
    )
    serve.add_argument(
        "--min-workers",
        type=_non_negative_int,
        default=None,
        help="workers kept running when idle (default: --workers)",
    )
    serve.add_argument(
        "--max-workers",
        type=_positive_int,
        default=None,
        help="workers started at most under load (default: --workers)",
    )
    serve.add_argument(
        "--idle-timeout",
        type=_non_negative_seconds,
        default=5.0,
        help="seconds a surplus worker stays idle before it stops (default: 5)",
    )
    serve.add_argument(
        "--cold-start",
        type=_non_negative_seconds,
        default=0.0,
        help="seconds each new worker takes to start (default: 0)",
    )
    serve.add_argument(
        "--api-key",
        default=None,
        help=f"require this key in the Authorization header; other local users can read it in "
        f"the process list, so prefer setting {API_KEY_VARIABLE} (default: {API_KEY_VARIABLE} "
        "if set, else no key)",
    )
    serve.add_argument(
        "--stop-grace",
        type=_non_negative_seconds,
        default=2.0,
        help="seconds a thread worker's handler gets to return after its job is cancelled or "
        "times out; then the worker is abandoned and replaced (default: 2)",
    )
    serve.add_argument(
        "--return-aggregate-stream",
        action="store_true",
        help="make a generator handler's output the list of its items",
    )
    serve.add_argument(
        "--retention",
        type=_non_negative_seconds,
        default=1800.0,
        help="seconds a finished /run job stays readable (default: 1800)",
    )
    serve.add_argument(
        "--sync-retention",
        type=_non_negative_seconds,
        default=60.0,
        help="seconds a finished /runsync job stays readable (default: 60)",
    )
    serve.add_argument(
        "--webhook-delay",
        type=_non_negative_seconds,
        default=10.0,
        help="seconds between webhook delivery attempts (default: 10)",
    )
    serve.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="KIND[-after][@ROUTES][=SHARE]",
        help="inject a fault into a share (0-1, default 1) of requests; repeatable",
    )
    serve.add_argument(
        "--fault-seed", type=int, default=None, help="seed for the fault draws, to repeat a run"
    )
    serve.add_argument(
        "--retry-after",
        type=_non_negative_seconds,
        default=1.0,
        help="Retry-After seconds on injected 429 and 503 (default: 1)",
    )
    serve.add_argument(
        "--slow-delay",
        type=_non_negative_seconds,
        default=1.0,
        help="seconds an injected slow response is delayed (default: 1)",
    )
    serve.add_argument(
        "--log-level",
        default=argparse.SUPPRESS,
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="log level of the rxrunpod loggers (default: INFO)",
    )
    serve.add_argument(
        "--isolation",
        choices=["thread", "process"],
        default=None,
        help="run workers as threads of the server or as child processes that import the "
        "handler once (default: thread; process with --worker runpod)",
    )
    serve.add_argument(
        "--worker",
        choices=["rxrunpod", "runpod"],
        default="rxrunpod",
        help="runpod: start each worker as 'python HANDLER' running the runpod package's own "
        "worker loop (needs runpod installed) (default: rxrunpod)",
    )
    serve.set_defaults(command_function=command_serve)


def _report_ready(endpoint: Any, stop: threading.Event, started: float) -> None:
    """Print how long the minimum number of workers took to become ready."""
    wanted = endpoint.settings.min_workers
    while wanted and not stop.wait(0.05):
        if endpoint.health()["workers"]["ready"] >= wanted:
            kind = "process" if endpoint.isolation == "process" else "thread"
            print(
                f"{wanted} {kind} worker(s) ready {time.monotonic() - started:.2f} s after start",
                flush=True,
            )
            return


def _load_problem(error: Exception) -> str:
    """Describe why a handler failed to load, on one line, with what to do next."""
    if isinstance(error, SyntaxError):
        where = f"{error.filename}, line {error.lineno}" if error.filename else "the handler"
        text = f"{where}: SyntaxError: {error.msg}; fix the file and run again"
    elif isinstance(error, ValueError | OSError) or type(error) is ModuleNotFoundError:
        text = str(error)
    else:
        text = (
            f"importing it raised {type(error).__name__}: {error}; fix the code that runs at "
            f"import time, or {_TRACEBACK_HINT}"
        )
    return " ".join(text.splitlines())


def _api_key(arguments: argparse.Namespace) -> str | None:
    """Return the key from ``--api-key`` (with a warning) or from the environment, or None."""
    if arguments.api_key is not None:
        print(
            "rxrunpod serve: warning: --api-key on the command line is visible to other local "
            f"users in the process list; set {API_KEY_VARIABLE} in the environment instead",
            file=sys.stderr,
            flush=True,
        )
        key: str | None = arguments.api_key
        return key
    return os.environ.get(API_KEY_VARIABLE) or None


def _endpoint_options(arguments: argparse.Namespace, rules: list[FaultRule]) -> dict[str, Any]:
    """Map the parsed ``serve`` arguments to ``LocalEndpoint`` keyword arguments."""
    return {
        "workers": arguments.workers,
        "min_workers": arguments.min_workers,
        "max_workers": arguments.max_workers,
        "idle_timeout": arguments.idle_timeout,
        "cold_start": arguments.cold_start,
        "api_key": _api_key(arguments),
        "host": arguments.host,
        "port": arguments.port,
        "return_aggregate_stream": arguments.return_aggregate_stream,
        "retention": arguments.retention,
        "sync_retention": arguments.sync_retention,
        "webhook_delay": arguments.webhook_delay,
        "faults": Faults(rules, seed=arguments.fault_seed),
        "isolation": arguments.isolation,
        "worker": arguments.worker,
        "stop_grace": arguments.stop_grace,
    }


def command_serve(arguments: argparse.Namespace) -> int:
    """Run the local endpoint until SIGINT or SIGTERM; return the exit code."""
    from ._endpoint import LocalEndpoint

    if not 0 <= arguments.port <= 65535:
        # Checked here rather than by argparse so that the error is one line without the usage.
        print(
            f"rxrunpod serve: --port {arguments.port} is out of range; "
            "use a TCP port from 0 to 65535 (0 picks a free one)",
            file=sys.stderr,
        )
        return 2
    try:
        rules = [
            FaultRule.parse(text, retry_after=arguments.retry_after, delay=arguments.slow_delay)
            for text in arguments.fault
        ]
    except ValueError as error:
        print(f"rxrunpod serve: {error}", file=sys.stderr)
        return 2
    options = _endpoint_options(arguments, rules)
    try:
        endpoint = LocalEndpoint(arguments.handler, **options)
    except Exception as error:
        # Importing a handler file runs arbitrary module code, so any exception can arrive here.
        logger.debug("loading handler %s failed", arguments.handler, exc_info=True)
        print(
            f"rxrunpod serve: cannot load handler {arguments.handler}: {_load_problem(error)}",
            file=sys.stderr,
        )
        return 2
    stop = threading.Event()

    def on_signal(number: int, frame: Any) -> None:
        stop.set()

    previous = {
        number: signal.signal(number, on_signal) for number in (signal.SIGINT, signal.SIGTERM)
    }
    started = time.monotonic()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            try:
                endpoint.start()
            except (OSError, RuntimeError) as error:
                print(
                    f"rxrunpod serve: cannot start on {arguments.host}:{arguments.port}: {error}",
                    file=sys.stderr,
                )
                return 3
        print(
            f"serving {endpoint.handler.name} at {endpoint.base_url}/<endpoint_id>/ (Ctrl-C stops)",
            flush=True,
        )
        _report_ready(endpoint, stop, started)
        while not stop.wait(0.5):
            pass
        print("stopping", file=sys.stderr, flush=True)
        endpoint.stop()
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
    return 0
