"""Exit codes, errors, output and argument helpers shared by the client subcommands."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TextIO

from . import errors
from ._display import LiveView
from ._progress import AttemptLog, CountingRetryPolicy, WaitProgress

if TYPE_CHECKING:
    from .endpoint import Endpoint

__all__ = [
    "EXIT_CODES_HELP",
    "EXIT_CONNECTION",
    "EXIT_INTERRUPTED",
    "EXIT_JOB_FAILED",
    "EXIT_OK",
    "EXIT_USAGE",
    "CommandError",
    "Interrupted",
    "Output",
    "exit_code_for",
    "message_for",
    "open_endpoint",
    "output_for",
    "positive_int",
    "positive_seconds",
    "progress_for",
    "run_command",
]

EXIT_OK = 0
EXIT_JOB_FAILED = 1
EXIT_USAGE = 2
EXIT_CONNECTION = 3
EXIT_INTERRUPTED = 130

EXIT_CODES_HELP = """\
exit codes:
  0  success
  1  the job did not succeed (FAILED, CANCELLED, TIMED_OUT, not found, wait timed out)
  2  usage error (bad arguments or input, request rejected with 400)
  3  connection or authentication error (unreachable, bad key, unknown endpoint, 5xx)
  130  interrupted (Ctrl-C)

environment:
  RUNPOD_API_KEY            API key, sent as a bearer token (a local endpoint needs none
                            unless it was started with a key)
  RUNPOD_ENDPOINT_BASE_URL  base URL, e.g. http://127.0.0.1:8000/v2 from 'rxrunpod serve'
                            (default https://api.runpod.ai/v2)
"""


class CommandError(Exception):
    """A failure the command reports as one line on stderr, with its exit code."""

    def __init__(self, message: str, exit_code: int, *, job_id: str | None = None) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.job_id = job_id


class Interrupted(CommandError):
    """Ctrl-C ended the command, after it cancelled the job it submitted (if it could)."""

    def __init__(self, message: str, *, job_id: str | None = None) -> None:
        super().__init__(message, EXIT_INTERRUPTED, job_id=job_id)


@dataclass
class Output:
    """Destinations of a command: results to ``out``, progress to ``view`` (stderr).

    With ``json`` set, results are JSON lines, one per event.
    """

    out: TextIO
    view: LiveView
    json: bool

    def event(self, kind: str, **fields: Any) -> None:
        """Write one JSON line with ``event`` set to ``kind``."""
        self.out.write(json.dumps({"event": kind, **fields}, default=str) + "\n")
        self.out.flush()

    def result(self, value: Any) -> None:
        """Write a job output for a person: strings as they are, anything else as indented JSON."""
        text = value if isinstance(value, str) else json.dumps(value, indent=2, default=str)
        self.out.write(text + "\n")
        self.out.flush()


def exit_code_for(error: BaseException) -> int:
    """Return the exit code for an error that ended a command."""
    if isinstance(error, CommandError):
        return error.exit_code
    if isinstance(error, (errors.JobError, errors.WaitTimeout, errors.JobNotFound)):
        return EXIT_JOB_FAILED
    if isinstance(error, errors.InvalidRequest):
        return EXIT_USAGE
    if isinstance(error, errors.RunPodError):
        return EXIT_CONNECTION
    return EXIT_CONNECTION


def message_for(
    error: BaseException, endpoint_id: str | None = None, attempts: int | None = None
) -> str:
    """Return the one-line message for an error: what failed and what to do.

    The wire layer's messages already say what to do about connection,
    key and endpoint errors, so only job outcomes get a hint here.
    ``attempts`` (when more than one) is how often the failed request was sent.
    """
    text = str(error).strip()
    first_line = text.splitlines()[0] if text else type(error).__name__
    if isinstance(error, errors.JobFailed):
        command = f"rxrunpod status {endpoint_id} {error.job_id} --json"
        return f"{first_line}; run '{command}' for the full error"
    if attempts is not None and attempts > 1 and "Gave up after" not in first_line:
        return f"{first_line} Gave up after {attempts} attempts."
    return first_line


def run_command(command: Callable[[argparse.Namespace], int], arguments: argparse.Namespace) -> int:
    """Run a subcommand; turn its errors into a one-line message on stderr and an exit code.

    With ``--json`` the error also goes to stdout as an ``error`` event line.
    """
    try:
        return command(arguments)
    except KeyboardInterrupt:
        _report_error(arguments, "Interrupted", "interrupted", EXIT_INTERRUPTED, None)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader of stdout went away (e.g. `| head`); nothing left to report to.
        return EXIT_OK
    except (CommandError, errors.RunPodError) as error:
        endpoint_id = getattr(arguments, "endpoint", None)
        exit_code = exit_code_for(error)
        job_id = getattr(error, "job_id", None)
        attempt_log: AttemptLog | None = getattr(arguments, "attempt_log", None)
        attempts = attempt_log.attempts_before(error) if attempt_log is not None else None
        message = message_for(error, endpoint_id, attempts)
        _report_error(arguments, type(error).__name__, message, exit_code, job_id)
        return exit_code


def _report_error(
    arguments: argparse.Namespace,
    error_type: str,
    message: str,
    exit_code: int,
    job_id: str | None,
) -> None:
    print(f"rxrunpod: {message}", file=sys.stderr)
    if not getattr(arguments, "json", False):
        return
    event: dict[str, Any] = {"event": "error", "type": error_type, "message": message}
    if job_id is not None:
        event["job_id"] = job_id
    event["exit_code"] = exit_code
    try:
        sys.stdout.write(json.dumps(event) + "\n")
        sys.stdout.flush()
    except (BrokenPipeError, ValueError):
        pass  # stdout is gone or closed; the stderr line above still reports the error


@contextmanager
def open_endpoint(arguments: argparse.Namespace) -> Iterator[Endpoint]:
    """Open the endpoint the arguments name, storing its attempt log on them for ``run_command``."""
    from .endpoint import Endpoint
    from .http import DEFAULT_TIMEOUT

    attempt_log = AttemptLog()
    arguments.attempt_log = attempt_log
    request_timeout: float | None = arguments.request_timeout
    try:
        endpoint = Endpoint(
            arguments.endpoint,
            base_url=arguments.base_url,
            timeout=DEFAULT_TIMEOUT
            if request_timeout is None
            else (request_timeout, request_timeout),
            retry=CountingRetryPolicy(log=attempt_log),
        )
    except ValueError as error:
        raise CommandError(str(error), EXIT_USAGE) from error
    with endpoint:
        yield endpoint


def progress_for(arguments: argparse.Namespace, request: str) -> WaitProgress:
    return WaitProgress(request, getattr(arguments, "attempt_log", None))


def output_for(arguments: argparse.Namespace, view_stream: TextIO | None = None) -> Output:
    return Output(out=sys.stdout, view=LiveView(view_stream or sys.stderr), json=arguments.json)


def positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}")
    return value
