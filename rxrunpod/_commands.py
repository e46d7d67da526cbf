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
import json
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO, TypeVar

from reactivex import Observable

from . import errors
from ._display import LiveView
from ._progress import AttemptLog, CountingRetryPolicy, WaitProgress
from .models import Health, JobState, JobStatus

if TYPE_CHECKING:
    from .endpoint import Endpoint
    from .job import Job

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

EXIT_OK = 0
EXIT_JOB_FAILED = 1
EXIT_USAGE = 2
EXIT_CONNECTION = 3
EXIT_INTERRUPTED = 130

_T = TypeVar("_T")

logger = logging.getLogger("rxrunpod.cli")

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


CANCEL_WAIT_SECONDS = 5.0
"""How long ``run`` waits for the server to confirm a ``/cancel`` before it exits anyway."""

SYNC_MIN_TIMEOUT = 2.0
"""Smallest ``run --sync --timeout``: /runsync holds a request at least 1 s, plus 1 s margin."""


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
        type=_positive_seconds,
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
        "--jobs", type=_positive_int, default=20, metavar="N", help="jobs to fan out (at least 8)"
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
        "--stream", action="store_true", help="print each streamed output as the handler yields it"
    )
    run.add_argument(
        "--timeout",
        type=_positive_seconds,
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
        type=_positive_seconds,
        default=None,
        metavar="SECONDS",
        help="redraw every SECONDS until interrupted (Ctrl-C)",
    )
    health.add_argument(
        "--count",
        type=_positive_int,
        default=None,
        metavar="N",
        help="with --watch, stop after N snapshots; without --watch it is rejected (exit 2)",
    )
    health.set_defaults(command_function=command_health)


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


# --- commands ---------------------------------------------------------------------------------


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


def command_run(arguments: argparse.Namespace) -> int:
    """Submit one job and print its output; exit 1 unless it COMPLETED."""
    payload = read_input(arguments.input)
    output = _output_for(arguments)
    with _endpoint(arguments) as endpoint:
        if arguments.sync:
            return _run_sync(endpoint, payload, arguments, output)

        job = _submit(endpoint, payload, arguments)
        # The watches do not cancel on dispose, because a cancel sent in the
        # background is lost when the process exits. After --timeout or
        # Ctrl-C this command cancels the job itself and waits for the response.
        deadline = None if arguments.timeout is None else time.monotonic() + arguments.timeout
        try:
            logger.info("submitted job %s", job.id)
            if output.json:
                output.event("submitted", id=job.id)
            else:
                output.view.print(f"submitted job {job.id}")
            if arguments.stream:
                stream = job.stream(cancel_on_dispose=False)
                _print_stream(stream, output, _remaining(deadline))
            updates = job.updates(cancel_on_dispose=False)
            final = _follow(updates, job.id, output, _remaining(deadline))
        except errors.WaitTimeout:
            raise _timed_out(endpoint, job.id, arguments, arguments.timeout) from None
        except KeyboardInterrupt:
            raise _interrupted(endpoint, job.id, arguments) from None
        return _report_final(final, output, print_output=not arguments.stream)


def command_status(arguments: argparse.Namespace) -> int:
    """Print a job's state, or with ``--watch`` each change until it is final.

    Exits 1 when the job is FAILED, CANCELLED or TIMED_OUT.
    """
    output = _output_for(arguments)
    with _endpoint(arguments) as endpoint:
        job = endpoint.job(arguments.job_id)
        if arguments.watch:
            final = _follow(job.updates(), job.id, output, None)
        else:
            final = wait_for(
                job.state(), timeout=None, progress=_progress(arguments, "GET /status")
            )
            if output.json:
                output.event("status", **final.to_json())
            else:
                output.view.print(describe_state(final))
        return _report_final(final, output, print_output=True, announce=False)


def command_cancel(arguments: argparse.Namespace) -> int:
    """Cancel a job and print the state the endpoint returned."""
    output = _output_for(arguments)
    with _endpoint(arguments) as endpoint:
        progress = _progress(arguments, "POST /cancel")
        state = wait_for(endpoint.job(arguments.job_id).cancel(), timeout=None, progress=progress)
        _print_state("cancel", state, output)
        return EXIT_OK


def command_retry(arguments: argparse.Namespace) -> int:
    """Send a FAILED or TIMED_OUT job back to the queue and print its new state."""
    output = _output_for(arguments)
    with _endpoint(arguments) as endpoint:
        progress = _progress(arguments, "POST /retry")
        state = wait_for(endpoint.job(arguments.job_id).retry(), timeout=None, progress=progress)
        _print_state("retry", state, output)
        return EXIT_OK


def command_purge_queue(arguments: argparse.Namespace) -> int:
    """Remove every queued job of an endpoint and print how many were removed."""
    output = _output_for(arguments)
    with _endpoint(arguments) as endpoint:
        progress = _progress(arguments, "POST /purge-queue")
        result = wait_for(endpoint.purge_queue(), timeout=None, progress=progress)
        if output.json:
            output.event("purge", removed=result.removed, status=result.status)
        else:
            output.out.write(f"removed {result.removed} queued jobs\n")
        return EXIT_OK


def command_health(arguments: argparse.Namespace) -> int:
    """Print one health snapshot, or with ``--watch`` a live view until Ctrl-C or ``--count``."""
    if arguments.count is not None and arguments.watch is None:
        raise CommandError(
            "--count needs --watch SECONDS, e.g. 'rxrunpod health ENDPOINT --watch 5 --count 2'",
            EXIT_USAGE,
        )
    output = _output_for(arguments, view_stream=sys.stdout)
    with _endpoint(arguments) as endpoint:
        if arguments.watch is None:
            progress = _progress(arguments, "GET /health")
            health = wait_for(endpoint.health(), timeout=None, progress=progress)
            _print_health(health, output, live=False)
            return EXIT_OK

        snapshots: Observable[Health] = endpoint.health(every=arguments.watch)
        if arguments.count is not None:
            from reactivex import operators as ops

            snapshots = snapshots.pipe(ops.take(arguments.count))
        for_each(snapshots, lambda health: _print_health(health, output, live=True))
        output.view.close()
        return EXIT_OK


# --- helpers ----------------------------------------------------------------------------------


def read_input(text: str) -> Any:
    """Parse ``--input``: JSON text, ``@path`` for a JSON file, ``@-`` for stdin."""
    source = "--input"
    if text.startswith("@"):
        path = text[1:]
        source = "standard input" if path == "-" else path
        try:
            text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
        except OSError as error:
            raise CommandError(
                f"cannot read the input file {path}: {error.strerror}", EXIT_USAGE
            ) from error
    try:
        return json.loads(text)
    except ValueError as error:
        raise CommandError(
            f"the input from {source} is not valid JSON ({error}); "
            'quote it for the shell, e.g. --input \'{"prompt": "hi"}\'',
            EXIT_USAGE,
        ) from error


def describe_state(state: JobState) -> str:
    """Render a job state as one line for people."""
    parts = [state.id, state.raw_status]
    if state.delay_time is not None:
        parts.append(f"queued {state.delay_time / 1000:.2f} s")
    if state.execution_time is not None:
        parts.append(f"ran {state.execution_time / 1000:.2f} s")
    if state.worker_id:
        parts.append(f"worker {state.worker_id}")
    detail = state.error_detail
    if detail is not None:
        parts.append(f"error: {detail.message.splitlines()[0] if detail.message else ''}")
    return "  ".join(parts)


def describe_health(health: Health) -> list[str]:
    """Render a health snapshot as two lines for people."""
    jobs, workers = health.jobs, health.workers
    return [
        f"jobs     in queue {jobs.in_queue:>4}   in progress {jobs.in_progress:>4}   "
        f"completed {jobs.completed:>6}   failed {jobs.failed:>4}   retried {jobs.retried:>4}",
        f"workers  idle {workers.idle:>3}   running {workers.running:>3}   "
        f"initializing {workers.initializing:>3}   ready {workers.ready:>3}   "
        f"throttled {workers.throttled:>3}   unhealthy {workers.unhealthy:>3}",
    ]


def wait_for(
    source: Observable[_T], *, timeout: float | None, progress: WaitProgress | None = None
) -> _T:
    """Block until ``source`` emits its last item and return it; Ctrl-C disposes the subscription.

    Unlike reactivex's ``run()``, an interrupt here disposes the
    subscription first, so a job submitted by ``source`` is cancelled
    instead of left running. ``progress`` shows the wait on a terminal.
    """
    items: list[_T] = []
    for_each(source, items.append, timeout=timeout, progress=progress)
    if not items:
        raise CommandError("the endpoint returned no result", EXIT_CONNECTION)
    return items[-1]


def for_each(
    source: Observable[_T],
    on_next: Callable[[_T], None],
    *,
    timeout: float | None = None,
    progress: WaitProgress | None = None,
) -> None:
    """Subscribe, call ``on_next`` for each item on its thread, and block until the end."""
    finished = threading.Event()
    failure: list[BaseException] = []

    def on_error(error: Exception) -> None:
        failure.append(error)
        finished.set()

    def guarded(item: _T) -> None:
        try:
            on_next(item)
        except Exception as error:  # a broken pipe or a rendering bug must not hang the wait
            on_error(error)

    subscription = source.subscribe(guarded, on_error, finished.set)
    try:
        _wait(finished, timeout=timeout, progress=progress)
    finally:
        subscription.dispose()
    if failure:
        raise failure[0]


def _wait(
    finished: threading.Event, *, timeout: float | None, progress: WaitProgress | None = None
) -> None:
    """Block until ``finished`` is set; raise ``WaitTimeout`` after ``timeout`` seconds."""
    try:
        _wait_in_steps(finished, timeout, progress)
    finally:
        if progress is not None:
            progress.close()


def _wait_in_steps(
    finished: threading.Event, timeout: float | None, progress: WaitProgress | None
) -> None:
    # Waiting in short steps lets Ctrl-C reach the main thread promptly.
    deadline = None if timeout is None else time.monotonic() + timeout
    while not finished.wait(0.2):
        if progress is not None:
            progress.tick()
        if timeout is not None and deadline is not None and time.monotonic() > deadline:
            raise errors.WaitTimeout(
                f"no result within {timeout:g} s", job_id=None, timeout=timeout
            )


@contextmanager
def _endpoint(arguments: argparse.Namespace) -> Iterator[Endpoint]:
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


def _progress(arguments: argparse.Namespace, request: str) -> WaitProgress:
    return WaitProgress(request, getattr(arguments, "attempt_log", None))


def _output_for(arguments: argparse.Namespace, view_stream: TextIO | None = None) -> Output:
    return Output(out=sys.stdout, view=LiveView(view_stream or sys.stderr), json=arguments.json)


def _submit(endpoint: Endpoint, payload: Any, arguments: argparse.Namespace) -> Job:
    """Send ``POST /run`` and return the job; on Ctrl-C cancel the job if one was created."""
    jobs: list[Job] = []
    finished = threading.Event()
    failure: list[Exception] = []

    def on_error(error: Exception) -> None:
        failure.append(error)
        finished.set()

    subscription = endpoint.run(payload).subscribe(jobs.append, on_error, finished.set)
    try:
        _wait(finished, timeout=None, progress=_progress(arguments, "POST /run"))
    except KeyboardInterrupt:
        # The POST may already have created a job: wait a little for its id, so
        # that the job can be cancelled instead of left running.
        finished.wait(CANCEL_WAIT_SECONDS)
        if jobs:
            raise _interrupted(endpoint, jobs[0].id, arguments) from None
        raise
    finally:
        subscription.dispose()
    if failure:
        raise failure[0]
    if not jobs:
        raise CommandError("the endpoint returned no job for POST /run", EXIT_CONNECTION)
    return jobs[0]


def _cancel_outcome(
    endpoint: Endpoint, job_id: str, arguments: argparse.Namespace
) -> tuple[bool, str]:
    """Cancel a job, waiting up to ``CANCEL_WAIT_SECONDS`` for the server to confirm it.

    Returns whether the server confirmed the cancel, and a text that
    completes a sentence starting with the job id.
    """
    try:
        state = wait_for(endpoint.job(job_id).cancel(), timeout=CANCEL_WAIT_SECONDS)
    except errors.WaitTimeout:
        reason = f"no response within {CANCEL_WAIT_SECONDS:g} s"
    except KeyboardInterrupt:
        reason = "interrupted again"
    except (CommandError, errors.RunPodError) as error:
        reason = f"{type(error).__name__}: {message_for(error)}"
    else:
        if state.status is JobStatus.CANCELLED:
            return True, "was cancelled"
        if state.is_final:
            return False, f"ended {state.raw_status} before the cancel request arrived"
        reason = f"the server returned status {state.raw_status}"
    logger.warning("cancelling job %s could not be confirmed: %s", job_id, reason)
    command = f"rxrunpod cancel {endpoint.id} {job_id}"
    if arguments.base_url:
        command += f" --base-url {arguments.base_url}"
    return False, (
        f"may still be running, because its cancel request could not be confirmed ({reason}); "
        f"cancel it with '{command}'"
    )


def _timed_out(
    endpoint: Endpoint, job_id: str, arguments: argparse.Namespace, timeout: float
) -> errors.WaitTimeout:
    cancelled, outcome = _cancel_outcome(endpoint, job_id, arguments)
    outcome = "so it was cancelled" if cancelled else f"and it {outcome}"
    return errors.WaitTimeout(
        f"job {job_id} did not finish within {timeout:g} s, {outcome}",
        job_id=job_id,
        timeout=timeout,
    )


def _interrupted(endpoint: Endpoint, job_id: str, arguments: argparse.Namespace) -> Interrupted:
    _, outcome = _cancel_outcome(endpoint, job_id, arguments)
    return Interrupted(f"interrupted; job {job_id} {outcome}", job_id=job_id)


def _run_sync(
    endpoint: Endpoint, payload: Any, arguments: argparse.Namespace, output: Output
) -> int:
    timeout: float | None = arguments.timeout
    progress = _progress(arguments, "POST /runsync")
    try:
        if timeout is None:
            result = wait_for(endpoint.run_sync(payload), timeout=None, progress=progress)
        else:
            # The server keeps /runsync open for ``wait`` seconds (at least 1 s)
            # and then returns the job id. Asking for a wait one second shorter than
            # the timeout lets the timeout name the job and cancel it.
            from .endpoint import DEFAULT_RUNSYNC_WAIT

            timeout = max(timeout, SYNC_MIN_TIMEOUT)
            wait = min(timeout - 1.0, DEFAULT_RUNSYNC_WAIT)
            result = wait_for(
                endpoint.run_sync(payload, timeout=timeout, wait=wait),
                timeout=None,
                progress=progress,
            )
    except errors.WaitTimeout as error:
        if error.job_id is None:
            raise errors.WaitTimeout(
                f"/runsync did not return within {error.timeout:g} s, so the job id is unknown "
                "and the job was not cancelled; check the queue with "
                f"'rxrunpod health {endpoint.id}'",
                job_id=None,
                timeout=error.timeout,
            ) from None
        raise _timed_out(endpoint, error.job_id, arguments, error.timeout) from None
    except KeyboardInterrupt:
        # NOTE: /runsync returns the job id only when the job ends or its wait
        # passes, so here the id may be unknown. The library then cancels the
        # job in the background once the id arrives, and exiting can cut that short.
        raise Interrupted(
            "interrupted during /runsync; the job, if the server created one, may still be "
            f"running: check the queue with 'rxrunpod health {endpoint.id}'"
        ) from None
    if output.json:
        output.event("output", output=result)
    else:
        output.result(result)
    return EXIT_OK


def _remaining(deadline: float | None) -> float | None:
    if deadline is None:
        return None
    left = deadline - time.monotonic()
    if left <= 0:
        raise errors.WaitTimeout("the deadline passed", job_id=None, timeout=0.0)
    return left


def _print_stream(items: Observable[Any], output: Output, timeout: float | None) -> None:
    printed_text = False

    def on_item(item: Any) -> None:
        nonlocal printed_text
        if output.json:
            output.event("stream", output=item)
        elif isinstance(item, str):
            output.out.write(item)
            output.out.flush()
            printed_text = True
        else:
            output.out.write(json.dumps(item, default=str) + "\n")
            output.out.flush()

    try:
        for_each(items, on_item, timeout=timeout)
    except errors.JobError:
        pass  # the final state below reports the failure with its exit code
    finally:
        if printed_text:
            output.out.write("\n")
            output.out.flush()


def _follow(
    updates: Observable[JobState], job_id: str, output: Output, timeout: float | None
) -> JobState:
    started = time.monotonic()
    last: list[JobState] = []

    def on_state(state: JobState) -> None:
        changed = not last or last[-1].raw_status != state.raw_status
        last.append(state)
        if output.json:
            if changed:
                output.event("status", **state.to_json())
            return
        elapsed = time.monotonic() - started
        output.view.show([f"job {state.id}  {state.raw_status}  {elapsed:.1f} s"])
        if changed:
            output.view.note(f"job {state.id}  {state.raw_status}")

    try:
        for_each(updates, on_state, timeout=timeout)
    finally:
        output.view.show([])
        output.view.close()
    if not last:
        raise CommandError(f"the endpoint sent no status for job {job_id}", EXIT_CONNECTION)
    return last[-1]


def _report_final(
    final: JobState, output: Output, *, print_output: bool, announce: bool = True
) -> int:
    completed = final.status is JobStatus.COMPLETED
    if output.json:
        if announce or not completed:
            output.event("final", **final.to_json())
    else:
        if announce:
            output.view.print(describe_state(final))
        if completed and print_output and final.output is not None:
            output.result(final.output)
    if completed or not final.is_final:
        return EXIT_OK
    if not output.json:
        output.view.print(f"rxrunpod: job {final.id} ended {final.raw_status}")
    return EXIT_JOB_FAILED


def _print_state(action: str, state: JobState, output: Output) -> None:
    if output.json:
        output.event(action, **state.to_json())
    else:
        output.out.write(describe_state(state) + "\n")


def _print_health(health: Health, output: Output, *, live: bool) -> None:
    if output.json:
        output.event("health", **health.to_json())
        return
    lines = describe_health(health)
    if live and output.view.interactive:
        output.view.show([time.strftime("%H:%M:%S"), *lines])
    else:
        for line in lines:
            output.out.write(line + "\n")
        output.out.flush()


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}")
    return value
