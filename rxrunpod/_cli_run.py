"""The ``run`` subcommand: submit one job, follow it, and cancel it on --timeout or Ctrl-C."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reactivex import Observable

from . import errors
from ._cli_common import (
    EXIT_CONNECTION,
    EXIT_OK,
    EXIT_USAGE,
    CommandError,
    Interrupted,
    Output,
    message_for,
    open_endpoint,
    output_for,
    progress_for,
)
from ._cli_jobs import follow, report_final
from ._cli_wait import for_each, wait_event, wait_for
from .models import JobStatus

if TYPE_CHECKING:
    from .endpoint import Endpoint
    from .job import Job

__all__ = ["CANCEL_WAIT_SECONDS", "SYNC_MIN_TIMEOUT", "command_run", "read_input"]

logger = logging.getLogger("rxrunpod.cli")


CANCEL_WAIT_SECONDS = 5.0
"""How long ``run`` waits for the server to confirm a ``/cancel`` before it exits anyway."""

SYNC_MIN_TIMEOUT = 2.0
"""Smallest ``run --sync --timeout``: /runsync holds a request at least 1 s, plus 1 s margin."""


def command_run(arguments: argparse.Namespace) -> int:
    """Submit one job and print its output; exit 1 unless it COMPLETED."""
    payload = read_input(arguments.input)
    output = output_for(arguments)
    with open_endpoint(arguments) as endpoint:
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
            streamed = 0
            if arguments.stream:
                stream = job.stream(cancel_on_dispose=False)
                streamed = _print_stream(stream, output, _remaining(deadline))
            updates = job.updates(cancel_on_dispose=False)
            final = follow(updates, job.id, output, _remaining(deadline))
        except errors.WaitTimeout:
            raise _timed_out(endpoint, job.id, arguments, arguments.timeout) from None
        except KeyboardInterrupt:
            raise _interrupted(endpoint, job.id, arguments) from None
        # A handler that returns instead of yielding streams nothing; its output is the result.
        return report_final(final, output, print_output=not arguments.stream or streamed == 0)


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
        wait_event(finished, timeout=None, progress=progress_for(arguments, "POST /run"))
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
    progress = progress_for(arguments, "POST /runsync")
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


def _print_stream(items: Observable[Any], output: Output, timeout: float | None) -> int:
    """Print each streamed item as it arrives; return how many arrived."""
    printed_text = False
    count = 0

    def on_item(item: Any) -> None:
        nonlocal printed_text, count
        count += 1
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
    return count
