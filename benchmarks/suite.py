"""The benchmark run: each scenario for rxrunpod and the RunPod SDK, one table of ratios.

Every scenario runs against the local endpoint in a process of its own. Each
side of a scenario (rxrunpod, the SDK's sync ``Endpoint``/``Job``, its
``AsyncioEndpoint``) runs in a fresh child process, so thread counts, memory
and CPU time are that side's alone. The sides alternate (their order flips
each repeat) so that drift on a shared machine hits both.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from ._processes import LocalEndpointProcess, SdkApiProcess, run_child
from ._table import (
    Row,
    count,
    format_table,
    machine_lines,
    median,
    megabytes,
    percentile,
    plain,
    rate,
    ratio,
    scientific,
    seconds,
)

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"

GOLDEN = 0.6180339887498949
"""Step of the low-discrepancy sequence that spreads job durations evenly and repeatably."""

SMALL_POOL = 14
"""I/O threads of the extra fan-out variant: with the timer and main threads, 16 in all."""

SCENARIOS = ("lag", "fanout", "stream", "scale", "endpoint", "sse")


@dataclass(frozen=True)
class Settings:
    """Sizes and repeats of one run; ``FULL`` is the documented run, ``QUICK`` the CI one."""

    mode: str
    lag_jobs: int
    lag_repeats: int
    fanout_jobs: int
    fanout_repeats: int
    stream_chunks: int
    stream_repeats: int
    scale_jobs: int
    scale_window: float
    load_seconds: float
    load_repeats: int
    lag_workers: int = 64
    lag_shortest: float = 0.2
    lag_longest: float = 3.0
    fanout_workers: int = 256
    fanout_concurrency: int = 256
    fanout_seconds: float = 0.5
    load_warmup: float = 0.5
    load_clients: tuple[int, ...] = (8, 64)


FULL = Settings(
    mode="full",
    lag_jobs=200,
    lag_repeats=3,
    fanout_jobs=2000,
    fanout_repeats=2,
    stream_chunks=20_000,
    stream_repeats=5,
    scale_jobs=10_000,
    scale_window=30.0,
    load_seconds=3.0,
    load_repeats=2,
)

QUICK = Settings(
    mode="quick",
    lag_jobs=40,
    lag_repeats=1,
    fanout_jobs=300,
    fanout_repeats=1,
    stream_chunks=20_000,
    stream_repeats=1,
    scale_jobs=1000,
    scale_window=5.0,
    load_seconds=1.0,
    load_repeats=1,
)


def alternate(sides: Sequence[str], repeat: int) -> list[str]:
    """Return the sides rotated by ``repeat`` places, so that no side always goes first."""
    shift = repeat % len(sides)
    return [*sides[shift:], *sides[:shift]]


def progress(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def _met(value: float | None, check: Callable[[float], bool]) -> bool | None:
    return None if value is None else check(value)


# -- 1. notification lag ----------------------------------------------------------------------


def lag_durations(settings: Settings) -> list[float]:
    """Return job durations spread evenly over [shortest, longest] seconds, the same every run."""
    span = settings.lag_longest - settings.lag_shortest
    return [
        round(settings.lag_shortest + span * ((index * GOLDEN) % 1.0), 3)
        for index in range(settings.lag_jobs)
    ]


def notification_lag(settings: Settings) -> list[Row]:
    """Lag from the server marking a job final to the client seeing it, and status polls per job.

    rxrunpod: ``run_each`` over every payload at once, the time of ``on_next``
    of each final state. SDK: one thread per job running ``Endpoint.run`` and
    ``Job.output(timeout=600)`` (which polls ``/status`` once a second with
    ``time.sleep``), the time ``output`` returns.
    """
    durations = lag_durations(settings)
    jobs = len(durations)
    lags: dict[str, list[float]] = {"rxrunpod": [], "sdk": []}
    polls: dict[str, list[float]] = {"rxrunpod": [], "sdk": []}
    with LocalEndpointProcess("sleeper", settings.lag_workers) as server:
        for repeat in range(settings.lag_repeats):
            for side in alternate(["rxrunpod", "sdk"], repeat):
                progress(f"lag: {side}, repeat {repeat + 1} of {settings.lag_repeats}")
                before = server.requests_by_route().get("status", 0)
                result = run_child(
                    {
                        "scenario": f"lag/{side}",
                        "base_url": server.base_url,
                        "durations": durations,
                        "limit": 300,
                    },
                    timeout=360,
                )
                after = server.requests_by_route().get("status", 0)
                polls[side].append((after - before) / jobs)
                arrivals: dict[str, float] = result["arrivals"]
                finished = server.finished_times(list(arrivals))
                for job_id, arrived in arrivals.items():
                    final_at = finished[job_id]
                    if final_at is None:
                        raise RuntimeError(f"the server has no final time for job {job_id}")
                    lags[side].append(arrived - final_at)
    ours, theirs = median(lags["rxrunpod"]), median(lags["sdk"])
    lag_ratio = ratio(ours, theirs)
    ours_polls, theirs_polls = median(polls["rxrunpod"]), median(polls["sdk"])
    name = f"1. lag ({jobs} jobs x{settings.lag_repeats})"
    return [
        Row(
            name,
            "median lag",
            ours,
            theirs,
            seconds,
            "<= 0.25x",
            _met(lag_ratio, lambda r: r <= 0.25),
        ),
        Row(
            name, "p90 lag", percentile(lags["rxrunpod"], 90), percentile(lags["sdk"], 90), seconds
        ),
        Row(
            name,
            "status requests/job",
            ours_polls,
            theirs_polls,
            plain,
            "<= SDK",
            None if ours_polls is None or theirs_polls is None else ours_polls <= theirs_polls,
        ),
    ]


# -- 2. fan-out -------------------------------------------------------------------------------


def fan_out(settings: Settings) -> list[Row]:
    """Many short jobs with a bounded number in flight: wall time, peak threads, peak RSS."""
    variants = ["rxrunpod", "rxrunpod-small-pool", "sdk-threads", "sdk-asyncio"]
    walls: dict[str, list[float]] = {variant: [] for variant in variants}
    threads: dict[str, list[float]] = {variant: [] for variant in variants}
    peaks: dict[str, list[float]] = {variant: [] for variant in variants}
    growths: dict[str, list[float]] = {variant: [] for variant in variants}
    jobs = settings.fanout_jobs
    with LocalEndpointProcess("sleeper", settings.fanout_workers) as server:
        for repeat in range(settings.fanout_repeats):
            for variant in alternate(variants, repeat):
                progress(f"fan-out: {variant}, repeat {repeat + 1} of {settings.fanout_repeats}")
                result = run_child(
                    {
                        "scenario": f"fanout/{variant}",
                        "base_url": server.base_url,
                        "jobs": jobs,
                        "seconds": settings.fanout_seconds,
                        "concurrency": settings.fanout_concurrency,
                        "io_workers": SMALL_POOL if variant == "rxrunpod-small-pool" else None,
                        "limit": 300,
                    },
                    timeout=360,
                )
                walls[variant].append(result["wall"])
                threads[variant].append(result["peak_threads"])
                peaks[variant].append(result["peak_rss"])
                growths[variant].append(result["peak_rss"] - result["rss_baseline"])

    def wall(variant: str) -> float | None:
        return median(walls[variant])

    ours = wall("rxrunpod")
    best = min(("sdk-threads", "sdk-asyncio"), key=lambda variant: wall(variant) or float("inf"))
    wall_ratio = ratio(ours, wall(best))
    other = "sdk-asyncio" if best == "sdk-threads" else "sdk-threads"
    ours_threads = median(threads["rxrunpod"])
    ours_peak, their_peak = median(peaks["rxrunpod"]), median(peaks["sdk-threads"])
    name = f"2. fan-out ({jobs} x {settings.fanout_seconds:g} s)"
    return [
        Row(
            name,
            f"wall time vs {best} (best SDK)",
            ours,
            wall(best),
            seconds,
            "<= 0.9x",
            _met(wall_ratio, lambda r: r <= 0.9),
        ),
        Row(name, f"wall time vs {other}", ours, wall(other), seconds),
        Row(
            name,
            "peak threads vs sdk-threads",
            ours_threads,
            median(threads["sdk-threads"]),
            count,
            "rx <= 16",
            _met(ours_threads, lambda value: value <= 16),
        ),
        Row(
            name, "peak threads vs sdk-asyncio", ours_threads, median(threads["sdk-asyncio"]), count
        ),
        Row(
            name,
            f"wall time, IoScheduler({SMALL_POOL}) vs {best}",
            wall("rxrunpod-small-pool"),
            wall(best),
            seconds,
        ),
        Row(
            name,
            f"peak threads, IoScheduler({SMALL_POOL}) vs sdk-threads",
            median(threads["rxrunpod-small-pool"]),
            median(threads["sdk-threads"]),
            count,
        ),
        Row(
            name,
            "peak RSS vs sdk-threads",
            ours_peak,
            their_peak,
            megabytes,
            "<= SDK",
            None if ours_peak is None or their_peak is None else ours_peak <= their_peak,
        ),
        Row(
            name,
            "RSS growth after imports vs sdk-threads",
            median(growths["rxrunpod"]),
            median(growths["sdk-threads"]),
            megabytes,
        ),
    ]


# -- 3. streamed output -----------------------------------------------------------------------


def streamed_output(settings: Settings) -> list[Row]:
    """One generator job of many small chunks: time until the last chunk reaches the subscriber."""
    chunks = settings.stream_chunks
    times: dict[str, list[float]] = {"rxrunpod": [], "sdk": []}
    in_order: dict[str, bool] = {"rxrunpod": True, "sdk": True}
    with LocalEndpointProcess("chunks", 1) as server:
        for repeat in range(settings.stream_repeats):
            for side in alternate(["rxrunpod", "sdk"], repeat):
                progress(f"stream: {side}, repeat {repeat + 1} of {settings.stream_repeats}")
                result = run_child(
                    {
                        "scenario": f"stream/{side}",
                        "base_url": server.base_url,
                        "count": chunks,
                        "limit": 120,
                    },
                    timeout=180,
                )
                in_order[side] = in_order[side] and bool(result["in_order"])
                if result["seconds"] is not None:
                    times[side].append(result["seconds"])
    ours, theirs = median(times["rxrunpod"]), median(times["sdk"])
    stream_ratio = ratio(ours, theirs)
    name = f"3. stream ({chunks:,} chunks x{settings.stream_repeats})"
    return [
        Row(
            name,
            "time to last chunk",
            ours,
            theirs,
            seconds,
            "<= 0.2x (5x faster)",
            _met(stream_ratio, lambda r: r <= 0.2),
        ),
        Row(
            name,
            "every chunk once, in order",
            "yes" if in_order["rxrunpod"] else "no",
            "yes" if in_order["sdk"] else "no",
            plain,
            "both yes",
            in_order["rxrunpod"] and in_order["sdk"],
        ),
    ]


# -- 4. scale ---------------------------------------------------------------------------------


def scale(settings: Settings) -> list[Row]:
    """Many queued jobs tracked at once by ``run_each_updates`` (rxrunpod only)."""
    jobs = settings.scale_jobs
    counters: dict[str, tuple[float, int]] = {}
    with LocalEndpointProcess("parked", 1) as server:

        def on_mark(name: str) -> None:
            if name.startswith("window"):
                counters[name] = (time.monotonic(), server.requests_by_route().get("status", 0))

        progress(f"scale: rxrunpod tracks {jobs} jobs for {settings.scale_window:g} s")
        result = run_child(
            {
                "scenario": "scale/rxrunpod",
                "base_url": server.base_url,
                "jobs": jobs,
                "window": settings.scale_window,
                "limit": 180,
            },
            timeout=600,
            on_mark=on_mark,
        )
    (start, polls_start), (end, polls_end) = counters["window-start"], counters["window-end"]
    none = "no such mode"
    name = f"4. scale ({jobs:,} jobs tracked)"
    return [
        Row(name, "time to submit and track all", result["tracked_after"], none, seconds),
        Row(name, "peak threads", result["peak_threads"], none, count),
        Row(name, "peak RSS", result["peak_rss"], none, megabytes),
        Row(
            name, "CPU s per tracked job per minute", result["cpu_per_job_minute"], none, scientific
        ),
        Row(
            name,
            "status requests/s while tracking",
            (polls_end - polls_start) / (end - start),
            none,
            rate,
        ),
    ]


# -- 5. local endpoint throughput -------------------------------------------------------------


def endpoint_throughput(settings: Settings) -> list[Row]:
    """Trivial jobs per second through the local endpoint and through RunPod's local API.

    The same aiohttp load generator drives both. ``/runsync`` is one request
    per job on both servers. ``/run+/status`` submits, then polls at once
    until the job is final; on RunPod's local API ``/run`` only stores the
    input and ``POST /status`` runs the handler.
    """
    rows: list[Row] = []
    with LocalEndpointProcess("trivial", 4) as server, SdkApiProcess() as sdk_api:
        ours_url = f"{server.base_url}/bench"
        for clients in settings.load_clients:
            for route in ("runsync", "run_status"):
                rates: dict[str, list[float]] = {"rxrunpod": [], "sdk": []}
                for repeat in range(settings.load_repeats):
                    for side in alternate(["rxrunpod", "sdk"], repeat):
                        progress(f"endpoint: {side} {route} with {clients} clients")
                        result = run_child(
                            {
                                "scenario": "load",
                                "mode": route if side == "rxrunpod" else f"sdk_{route}",
                                "url": ours_url if side == "rxrunpod" else sdk_api.url,
                                "clients": clients,
                                "duration": settings.load_seconds,
                                "warmup": settings.load_warmup,
                            },
                            timeout=120,
                        )
                        rates[side].append(result["jobs_per_second"])
                ours, theirs = median(rates["rxrunpod"]), median(rates["sdk"])
                name = "5. local endpoint"
                if route == "runsync":
                    rows.append(
                        Row(
                            name,
                            f"/runsync jobs/s, {clients} clients",
                            ours,
                            theirs,
                            rate,
                            ">= 1.0x",
                            _met(ratio(ours, theirs), lambda r: r >= 1.0),
                        )
                    )
                else:
                    rows.append(
                        Row(
                            name,
                            f"/run+/status jobs/s, {clients} clients",
                            ours,
                            theirs,
                            rate,
                            "rx >= 1,000/s",
                            _met(ours, lambda value: value >= 1000),
                        )
                    )
    return rows


# -- 6. SSE -----------------------------------------------------------------------------------


SSE_OURS = "rxrunpod chat_completions().pipe(texts())"
SSE_BARE = "sseclient-py SSEClient(response)"
SSE_SOURCE = "local endpoint"
"""The source the SSE target applies to; the pre-rendered source shows the readers' own limit."""


def sse(settings: Settings) -> list[Row]:
    """Rows of ``benchmarks.sse_throughput``: rxrunpod against a bare sseclient-py loop.

    ``sse_throughput.run`` returns one row per source and reader; each
    source's rxrunpod rate is set against the README loop on that source.
    """
    from . import sse_throughput

    progress("sse: sse_throughput.run()")
    results = sse_throughput.run(quick=settings.mode == "quick")
    rows: list[Row] = []
    sources = list(dict.fromkeys(result.get("source", SSE_SOURCE) for result in results))
    for source in sources:
        by_case = {
            result["case"]: result
            for result in results
            if result.get("source", SSE_SOURCE) == source
        }
        ours, bare = by_case[SSE_OURS], by_case[SSE_BARE]
        name = f"6. SSE, {source} ({ours['events']:,} events; SDK = bare sseclient-py)"
        targeted = source == SSE_SOURCE
        sse_ratio = ratio(ours["events_per_s"], bare["events_per_s"])
        rows.append(
            Row(
                name,
                "events/s via chat_completions().pipe(texts())",
                ours["events_per_s"],
                bare["events_per_s"],
                rate,
                ">= 0.8x" if targeted else "-",
                _met(sse_ratio, lambda r: r >= 0.8) if targeted else None,
            )
        )
        if targeted:
            growth = ours["rss_growth_mb"] * 2**20
            rows.append(
                Row(
                    name,
                    "RSS growth over the stream",
                    growth,
                    bare["rss_growth_mb"] * 2**20,
                    megabytes,
                    "rx <= 4 MB (flat)",
                    growth <= 4 * 2**20,
                )
            )
    return rows


RUNNERS: dict[str, Callable[[Settings], list[Row]]] = {
    "lag": notification_lag,
    "fanout": fan_out,
    "stream": streamed_output,
    "scale": scale,
    "endpoint": endpoint_throughput,
    "sse": sse,
}


RESULTS_NOTE = (
    "ratio = rxrunpod / SDK. Lag and wall times are medians over all jobs "
    "and repeats; peaks are the median over repeats of each process's peak."
)


def write_results(path: Path, table_rows: list[str], header: list[str]) -> None:
    """Write the Markdown page: the run's description, the table and how to read it."""
    markdown_header = format_table([], markdown=True)
    text = "\n".join(
        [
            "# Benchmark results",
            "",
            "Generated by `python -m benchmarks`; do not edit by hand. How each "
            "scenario is measured: docs/benchmarks.md.",
            "",
            *header,
            "",
            markdown_header,
            *table_rows,
            "",
            RESULTS_NOTE,
            "",
        ]
    )
    path.write_text(text, encoding="utf-8")


def _scenario_number(table_row: str) -> int:
    """Return the scenario number a Markdown table row starts with (``| 3. stream ...``)."""
    return int(table_row.removeprefix("| ").split(".", 1)[0])


def update_results(path: Path, rows: Sequence[Row], header: list[str]) -> None:
    """Replace the rows of the scenarios just run in an existing page and keep the others.

    The page keeps its first description and gains one line per update, so
    it says which rows come from which run.
    """
    lines = path.read_text(encoding="utf-8").splitlines()
    old_header = [line for line in lines if line.startswith("- ")]
    old_rows = [line for line in lines if line.startswith("| ") and line[2:3].isdigit()]
    new_rows = format_table(rows, markdown=True).splitlines()[2:]
    replaced = {_scenario_number(line) for line in new_rows}
    kept = [line for line in old_rows if _scenario_number(line) not in replaced]
    merged = sorted(kept + new_rows, key=_scenario_number)
    scenarios = ", ".join(str(number) for number in sorted(replaced))
    update = [f"- scenario(s) {scenarios} re-run later: {header[0].removeprefix('- ')}"]
    write_results(path, merged, old_header + update)


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Benchmark rxrunpod side by side with the RunPod SDK on a local endpoint.",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="small sizes and one repeat (under 2 minutes), for CI; "
        "does not write RESULTS.md unless --output is given",
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=SCENARIOS,
        help="run only this scenario (repeatable); default: all",
    )
    parser.add_argument(
        "--update",
        action="store_true",
        help="replace only the rows of the scenarios run in the existing results page "
        f"(--output, default {RESULTS.name}) and keep the other rows",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help=f"Markdown file for the table (default: {RESULTS.name} in a full run)",
    )
    return parser.parse_args(argv)


def iterate_rows(settings: Settings, chosen: Sequence[str]) -> Iterator[Row]:
    for scenario in chosen:
        yield from RUNNERS[scenario](settings)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark, print the table and write it; return 0 unless something crashed."""
    arguments = parse_arguments(argv)
    settings = QUICK if arguments.quick else FULL
    chosen = arguments.only or list(SCENARIOS)
    started = datetime.datetime.now(datetime.timezone.utc)
    clock = time.monotonic()
    rows = list(iterate_rows(settings, chosen))
    header = machine_lines(started, time.monotonic() - clock, settings.mode)
    print("\n".join(header))
    print()
    print(format_table(rows, markdown=False))
    output = arguments.output
    if output is None and (arguments.update or (not arguments.quick and arguments.only is None)):
        output = RESULTS
    if output is not None and arguments.update:
        update_results(output, rows, header)
        print(f"\nupdated {output}")
    elif output is not None:
        write_results(output, format_table(rows, markdown=True).splitlines()[2:], header)
        print(f"\nwrote {output}")
    unmet = [row for row in rows if row.met is False]
    if unmet:
        print(f"{len(unmet)} target(s) not met; see docs/benchmarks.md for the reasons.")
    return 0
