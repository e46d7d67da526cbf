"""The ``health`` subcommand: one snapshot or a live view of an endpoint's counters."""

from __future__ import annotations

import argparse
import sys
import time

from reactivex import Observable

from ._cli_common import (
    EXIT_OK,
    EXIT_USAGE,
    CommandError,
    Output,
    open_endpoint,
    output_for,
    progress_for,
)
from ._cli_wait import for_each, wait_for
from .models import Health

__all__ = ["command_health", "describe_health"]


def command_health(arguments: argparse.Namespace) -> int:
    """Print one health snapshot, or with ``--watch`` a live view until Ctrl-C or ``--count``."""
    if arguments.count is not None and arguments.watch is None:
        raise CommandError(
            "--count needs --watch SECONDS, e.g. 'rxrunpod health ENDPOINT --watch 5 --count 2'",
            EXIT_USAGE,
        )
    output = output_for(arguments, view_stream=sys.stdout)
    with open_endpoint(arguments) as endpoint:
        if arguments.watch is None:
            progress = progress_for(arguments, "GET /health")
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
