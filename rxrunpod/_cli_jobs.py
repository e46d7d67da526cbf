"""The ``status``, ``cancel``, ``retry`` and ``purge-queue`` subcommands, and job state output."""

from __future__ import annotations

import argparse
import time

from reactivex import Observable

from ._cli_common import (
    EXIT_CONNECTION,
    EXIT_JOB_FAILED,
    EXIT_OK,
    CommandError,
    Output,
    open_endpoint,
    output_for,
    progress_for,
)
from ._cli_wait import for_each, wait_for
from .models import JobState, JobStatus

__all__ = [
    "command_cancel",
    "command_purge_queue",
    "command_retry",
    "command_status",
    "describe_state",
    "follow",
    "report_final",
]


def command_status(arguments: argparse.Namespace) -> int:
    """Print a job's state, or with ``--watch`` each change until it is final.

    Exits 1 when the job is FAILED, CANCELLED or TIMED_OUT.
    """
    output = output_for(arguments)
    with open_endpoint(arguments) as endpoint:
        job = endpoint.job(arguments.job_id)
        if arguments.watch:
            final = follow(job.updates(), job.id, output, None)
        else:
            final = wait_for(
                job.state(), timeout=None, progress=progress_for(arguments, "GET /status")
            )
            if output.json:
                output.event("status", **final.to_json())
            else:
                output.view.print(describe_state(final))
        return report_final(final, output, print_output=True, announce=False)


def command_cancel(arguments: argparse.Namespace) -> int:
    """Cancel a job and print the state the endpoint returned."""
    output = output_for(arguments)
    with open_endpoint(arguments) as endpoint:
        progress = progress_for(arguments, "POST /cancel")
        state = wait_for(endpoint.job(arguments.job_id).cancel(), timeout=None, progress=progress)
        _print_state("cancel", state, output)
        return EXIT_OK


def command_retry(arguments: argparse.Namespace) -> int:
    """Send a FAILED or TIMED_OUT job back to the queue and print its new state."""
    output = output_for(arguments)
    with open_endpoint(arguments) as endpoint:
        progress = progress_for(arguments, "POST /retry")
        state = wait_for(endpoint.job(arguments.job_id).retry(), timeout=None, progress=progress)
        _print_state("retry", state, output)
        return EXIT_OK


def command_purge_queue(arguments: argparse.Namespace) -> int:
    """Remove every queued job of an endpoint and print how many were removed."""
    output = output_for(arguments)
    with open_endpoint(arguments) as endpoint:
        progress = progress_for(arguments, "POST /purge-queue")
        result = wait_for(endpoint.purge_queue(), timeout=None, progress=progress)
        if output.json:
            output.event("purge", removed=result.removed, status=result.status)
        else:
            output.out.write(f"removed {result.removed} queued jobs\n")
        return EXIT_OK


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


def follow(
    updates: Observable[JobState], job_id: str, output: Output, timeout: float | None
) -> JobState:
    """Show each state change of a job until ``updates`` ends, and return the last state."""
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


def report_final(
    final: JobState, output: Output, *, print_output: bool, announce: bool = True
) -> int:
    """Print a job's final state (and output if asked), and return the command's exit code."""
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
