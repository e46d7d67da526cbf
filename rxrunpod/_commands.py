"""The client subcommands of ``rxrunpod``: run, status, cancel, retry, purge-queue, health.

Each command talks to one endpoint through ``rxrunpod.Endpoint``, so it works
the same against the local endpoint and against RunPod. Results go to
stdout (``--json``: one JSON object per line, with an ``event`` field);
progress and messages go to stderr. With ``--json`` an error is printed on
both: as an ``error`` event on stdout and as a text line on stderr. Exit codes:

    0  success
    1  the job did not succeed: FAILED, CANCELLED, TIMED_OUT, not found, or the wait timed out
    2  usage error: bad arguments, an input that is not JSON, a request the server rejected (400)
    3  connection or authentication error: unreachable, bad key, unknown endpoint, server errors
  130  interrupted (Ctrl-C)
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ._cli_common import (
    EXIT_CODES_HELP,
    EXIT_CONNECTION,
    EXIT_INTERRUPTED,
    EXIT_JOB_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    CommandError,
    exit_code_for,
    message_for,
    positive_int,
    positive_seconds,
    run_command,
)
from ._cli_health import command_health
from ._cli_jobs import command_cancel, command_purge_queue, command_retry, command_status
from ._cli_run import CANCEL_WAIT_SECONDS, SYNC_MIN_TIMEOUT, command_run

__all__ = [
    "EXIT_CONNECTION",
    "EXIT_INTERRUPTED",
    "EXIT_JOB_FAILED",
    "EXIT_OK",
    "EXIT_USAGE",
    "CommandError",
    "add_client_commands",
    "exit_code_for",
    "message_for",
    "run_command",
]


def add_client_commands(subcommands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register run, status, cancel, retry, purge-queue and health on the ``rxrunpod`` parser."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--base-url",
        default=None,
        help="API base URL ending in /v2 (default: $RUNPOD_ENDPOINT_BASE_URL, else https://api.runpod.ai/v2)",
    )
    common.add_argument(
        "--request-timeout",
        type=positive_seconds,
        default=None,
        metavar="SECONDS",
        help="connect and read timeout of each HTTP request (default: 5 s connect, 30 s read); "
        "a request that fails this way is tried up to 5 times. With --stream keep it above "
        "the time the server holds an empty /stream request (10 s on the local endpoint)",
    )
    common.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object per line instead of text; an error is also printed on "
        'stdout as {"event": "error", "type": ..., "message": ..., "exit_code": ...} '
        '(with "job_id" when a job is involved), and its text line stays on stderr',
    )

    def add(name: str, help_text: str, *, client: bool = True) -> argparse.ArgumentParser:
        parser = subcommands.add_parser(
            name,
            parents=[common] if client else [],
            help=help_text,
            description=help_text,
            epilog=EXIT_CODES_HELP if client else None,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        parser.set_defaults(default_log_level="WARNING")
        return parser

    demo = add(
        "demo",
        "Run a pipeline against local endpoints that run the example handlers.",
        client=False,
    )
    demo.add_argument(
        "--jobs", type=positive_int, default=20, metavar="N", help="jobs to fan out (at least 8)"
    )
    demo.add_argument(
        "--handlers",
        default=None,
        metavar="DIR",
        help="directory with mock_worker.py and token_stream.py (default: examples/handlers)",
    )
    demo.set_defaults(command_function=command_demo)

    run = add("run", "Submit one job and wait for its output.")
    run.add_argument("endpoint", help="endpoint id")
    run.add_argument(
        "--input",
        "-i",
        required=True,
        metavar="JSON|@FILE",
        help="job input as JSON text, @path to read a JSON file, or @- for stdin; "
        'a document without an "input" key is wrapped as {"input": ...}',
    )
    mode = run.add_mutually_exclusive_group()
    mode.add_argument(
        "--sync", action="store_true", help="use /runsync: one request that waits for the result"
    )
    mode.add_argument(
        "--stream",
        action="store_true",
        help="print each streamed output as the handler yields it; when the job streams nothing "
        "(a handler that returns instead of yielding), print its output at the end",
    )
    run.add_argument(
        "--timeout",
        type=positive_seconds,
        default=None,
        metavar="SECONDS",
        help="cancel the job when it has not finished after this many seconds, and wait up to "
        f"{CANCEL_WAIT_SECONDS:g} s for the server to confirm the cancel (default: no limit); "
        f"with --sync at least {SYNC_MIN_TIMEOUT:g} s, because /runsync holds a request at least "
        "1 s before it returns the job id",
    )
    run.set_defaults(command_function=command_run)

    status = add("status", "Show the state of a job.")
    status.add_argument("endpoint", help="endpoint id")
    status.add_argument("job_id", help="job id, as printed by 'rxrunpod run'")
    status.add_argument(
        "--watch", action="store_true", help="follow the job until it reaches a final state"
    )
    status.set_defaults(command_function=command_status)

    cancel = add("cancel", "Cancel a queued or running job.")
    cancel.add_argument("endpoint", help="endpoint id")
    cancel.add_argument("job_id", help="job id")
    cancel.set_defaults(command_function=command_cancel)

    retry = add("retry", "Run a FAILED or TIMED_OUT job again under the same id.")
    retry.add_argument("endpoint", help="endpoint id")
    retry.add_argument("job_id", help="job id")
    retry.set_defaults(command_function=command_retry)

    purge = add("purge-queue", "Remove every queued job of an endpoint (running jobs go on).")
    purge.add_argument("endpoint", help="endpoint id")
    purge.set_defaults(command_function=command_purge_queue)

    health = add("health", "Show the job and worker counters of an endpoint.")
    health.add_argument("endpoint", help="endpoint id")
    health.add_argument(
        "--watch",
        type=positive_seconds,
        default=None,
        metavar="SECONDS",
        help="redraw every SECONDS until interrupted (Ctrl-C)",
    )
    health.add_argument(
        "--count",
        type=positive_int,
        default=None,
        metavar="N",
        help="with --watch, stop after N snapshots; without --watch it is rejected (exit 2)",
    )
    health.set_defaults(command_function=command_health)


def command_demo(arguments: argparse.Namespace) -> int:
    """Run ``rxrunpod demo``; exit 1 when a figure did not come out as planned."""
    from .demo import main as demo_main

    if arguments.jobs < 8:
        raise CommandError(f"--jobs must be at least 8, got {arguments.jobs}", EXIT_USAGE)
    handlers = Path(arguments.handlers) if arguments.handlers else None
    try:
        return demo_main(jobs=arguments.jobs, handlers=handlers)
    except FileNotFoundError as error:
        raise CommandError(str(error), EXIT_USAGE) from error
