"""One side of one scenario, run in a process of its own.

Started as ``python -m benchmarks._child SPEC_JSON`` by the benchmark, which
samples this process's thread count from outside. Prints ``MARK name`` lines
at points the parent times server counters against, and ends with one line
``RESULT {json}``. Every measurement uses ``time.monotonic()``, the clock
the local endpoint stamps its jobs with.
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

ENDPOINT_ID = "bench"
API_KEY = "bench-key"


def mark(name: str) -> None:
    """Tell the parent that this process reached ``name``, so it reads the server's counters."""
    print(f"MARK {name}", flush=True)


def peak_rss_bytes() -> int:
    """Peak resident memory of this process so far (``ru_maxrss`` is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def cpu_seconds() -> float:
    """User plus system CPU time of this process."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# -- rxrunpod ---------------------------------------------------------------------------------


def _rx_endpoint(base_url: str, io_workers: int | None = None) -> Any:
    """An ``Endpoint`` on the shared I/O pool, or on a pool of ``io_workers`` threads."""
    from rxrunpod import Endpoint
    from rxrunpod.scheduling import IoScheduler

    scheduler = IoScheduler(io_workers) if io_workers is not None else None
    return Endpoint(ENDPOINT_ID, api_key=API_KEY, base_url=base_url, scheduler=scheduler)


def _rx_run_each(
    base_url: str,
    payloads: list[Any],
    max_concurrent: int,
    limit: float,
    io_workers: int | None = None,
) -> Any:
    """Run ``payloads`` through ``run_each``; return (final states with arrival times, wall)."""
    import reactivex as rx

    from rxrunpod.operators import run_each

    endpoint = _rx_endpoint(base_url, io_workers)
    arrivals: list[tuple[float, Any]] = []
    finished = threading.Event()
    errors: list[Exception] = []

    def on_error(error: Exception) -> None:
        errors.append(error)
        finished.set()

    started = time.monotonic()
    subscription = (
        rx.from_iterable(payloads)
        .pipe(run_each(endpoint, max_concurrent=max_concurrent))
        .subscribe(
            on_next=lambda state: arrivals.append((time.monotonic(), state)),
            on_error=on_error,
            on_completed=finished.set,
        )
    )
    if not finished.wait(limit):
        subscription.dispose()
        raise TimeoutError(f"run_each did not finish {len(payloads)} jobs within {limit} s")
    wall = time.monotonic() - started
    endpoint.close()
    if errors:
        raise errors[0]
    not_completed = [state.raw_status for _, state in arrivals if state.raw_status != "COMPLETED"]
    if len(arrivals) != len(payloads) or not_completed:
        raise RuntimeError(
            f"expected {len(payloads)} COMPLETED jobs, got {len(arrivals)} "
            f"with {len(not_completed)} in other states"
        )
    return arrivals, wall


def lag_rxrunpod(spec: dict[str, Any]) -> dict[str, Any]:
    payloads = [{"seconds": seconds} for seconds in spec["durations"]]
    arrivals, wall = _rx_run_each(spec["base_url"], payloads, len(payloads), spec["limit"])
    return {"arrivals": {state.id: at for at, state in arrivals}, "wall": wall}


def fanout_rxrunpod(spec: dict[str, Any]) -> dict[str, Any]:
    payloads = [{"seconds": spec["seconds"]} for _ in range(spec["jobs"])]
    baseline = peak_rss_bytes()
    _, wall = _rx_run_each(
        spec["base_url"], payloads, spec["concurrency"], spec["limit"], spec.get("io_workers")
    )
    return {"wall": wall, "rss_baseline": baseline}


def stream_rxrunpod(spec: dict[str, Any]) -> dict[str, Any]:
    from reactivex import Observable
    from reactivex import operators as ops

    from rxrunpod import Job

    endpoint = _rx_endpoint(spec["base_url"])
    count = spec["count"]
    items: list[Any] = []
    last_at: list[float] = []
    finished = threading.Event()
    errors: list[Exception] = []

    def on_next(item: Any) -> None:
        items.append(item)
        if len(items) == count:
            last_at.append(time.monotonic())

    def on_error(error: Exception) -> None:
        errors.append(error)
        finished.set()

    def stream_of(job: Job) -> Observable[Any]:
        return job.stream()

    started = time.monotonic()
    endpoint.run({"count": count}).pipe(ops.flat_map(stream_of)).subscribe(
        on_next=on_next, on_error=on_error, on_completed=finished.set
    )
    if not finished.wait(spec["limit"]):
        raise TimeoutError(f"job.stream() did not complete within {spec['limit']} s")
    endpoint.close()
    if errors:
        raise errors[0]
    return {
        "seconds": last_at[0] - started if last_at else None,
        "in_order": items == list(range(count)),
    }


def scale_rxrunpod(spec: dict[str, Any]) -> dict[str, Any]:
    """Track ``jobs`` queued jobs at once for ``window`` seconds, then purge them."""
    import reactivex as rx

    from rxrunpod.operators import run_each_updates

    endpoint = _rx_endpoint(spec["base_url"])
    jobs = spec["jobs"]
    seen: set[int] = set()
    open_ids: dict[int, str] = {}
    all_seen = threading.Event()
    finished = threading.Event()
    errors: list[Exception] = []
    lock = threading.Lock()

    def on_next(update: Any) -> None:
        with lock:
            seen.add(update.index)
            if update.final:
                open_ids.pop(update.index, None)
            else:
                open_ids[update.index] = update.state.id
            if len(seen) == jobs:
                all_seen.set()

    def on_error(error: Exception) -> None:
        errors.append(error)
        all_seen.set()
        finished.set()

    payloads = [{"seconds": 3600.0} for _ in range(jobs)]
    started = time.monotonic()
    subscription = (
        rx.from_iterable(payloads)
        .pipe(run_each_updates(endpoint, max_concurrent=jobs))
        .subscribe(on_next=on_next, on_error=on_error, on_completed=finished.set)
    )
    if not all_seen.wait(spec["limit"]):
        subscription.dispose()
        raise TimeoutError(f"{jobs} jobs were not all tracked within {spec['limit']} s")
    if errors:
        raise errors[0]
    tracked_after = time.monotonic() - started
    mark("window-start")
    cpu_start, window_start = cpu_seconds(), time.monotonic()
    time.sleep(spec["window"])
    cpu_used, window = cpu_seconds() - cpu_start, time.monotonic() - window_start
    mark("window-end")
    # End every job on the server: the queued ones by purging, the running one by a cancel.
    endpoint.purge_queue().run()
    with lock:
        still_open = list(open_ids.values())
    for job_id in still_open:
        endpoint.job(job_id).cancel().run()
    if not finished.wait(spec["limit"]):
        subscription.dispose()
        raise TimeoutError(f"{jobs} tracked jobs did not all end within {spec['limit']} s")
    endpoint.close()
    if errors:
        raise errors[0]
    return {
        "tracked_after": tracked_after,
        "window": window,
        "window_cpu": cpu_used,
        "cpu_per_job_minute": cpu_used / jobs / (window / 60.0),
    }


# -- RunPod SDK -------------------------------------------------------------------------------


def _sdk(base_url: str) -> Any:
    import runpod

    runpod.api_key = API_KEY
    runpod.endpoint_url_base = base_url
    return runpod


def _sdk_threads(
    base_url: str, payloads: list[Any], threads: int
) -> tuple[list[tuple[str, float]], float]:
    """Run each payload as users of the sync SDK do: ``run`` then ``output(timeout=)``."""
    runpod = _sdk(base_url)
    endpoint = runpod.Endpoint(ENDPOINT_ID)

    def one(payload: Any) -> tuple[str, float]:
        job = endpoint.run(payload)
        job.output(timeout=600)
        if job.status() != "COMPLETED":
            raise RuntimeError(f"SDK job {job.job_id} ended {job.status()}")
        return job.job_id, time.monotonic()

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        results = list(pool.map(one, payloads))
    return results, time.monotonic() - started


def lag_sdk(spec: dict[str, Any]) -> dict[str, Any]:
    payloads = [{"seconds": seconds} for seconds in spec["durations"]]
    results, wall = _sdk_threads(spec["base_url"], payloads, len(payloads))
    return {"arrivals": dict(results), "wall": wall}


def fanout_sdk_threads(spec: dict[str, Any]) -> dict[str, Any]:
    _sdk(spec["base_url"])
    baseline = peak_rss_bytes()
    payloads = [{"seconds": spec["seconds"]} for _ in range(spec["jobs"])]
    _, wall = _sdk_threads(spec["base_url"], payloads, spec["concurrency"])
    return {"wall": wall, "rss_baseline": baseline}


def fanout_sdk_asyncio(spec: dict[str, Any]) -> dict[str, Any]:
    """``AsyncioEndpoint`` with ``asyncio.gather``, at most ``concurrency`` jobs in flight."""
    import aiohttp

    runpod = _sdk(spec["base_url"])
    baseline = peak_rss_bytes()

    async def main() -> float:
        async with aiohttp.ClientSession() as session:
            endpoint = runpod.AsyncioEndpoint(ENDPOINT_ID, session)
            gate = asyncio.Semaphore(spec["concurrency"])

            async def one() -> None:
                async with gate:
                    job = await endpoint.run({"seconds": spec["seconds"]})
                    await job.output(timeout=600)
                    status = await job.status()
                    if status != "COMPLETED":
                        raise RuntimeError(f"SDK job {job.job_id} ended {status}")

            started = time.monotonic()
            await asyncio.gather(*(one() for _ in range(spec["jobs"])))
            return time.monotonic() - started

    return {"wall": asyncio.run(main()), "rss_baseline": baseline}


def stream_sdk(spec: dict[str, Any]) -> dict[str, Any]:
    runpod = _sdk(spec["base_url"])
    endpoint = runpod.Endpoint(ENDPOINT_ID)
    count = spec["count"]
    items: list[Any] = []
    last_at: float | None = None
    started = time.monotonic()
    job = endpoint.run({"count": count})
    for item in job.stream():
        items.append(item)
        if len(items) == count:
            last_at = time.monotonic()
    return {
        "seconds": last_at - started if last_at is not None else None,
        "in_order": items == list(range(count)),
    }


# -- load generator for the endpoint throughput ----------------------------------------------


def load(spec: dict[str, Any]) -> dict[str, Any]:
    """Drive trivial jobs through one route with ``clients`` concurrent aiohttp clients.

    Modes: ``runsync`` (one ``POST /runsync`` per job), ``run_status`` (``POST
    /run``, then ``GET /status`` at once until the job is final), and the same
    two on the SDK's local API (``sdk_runsync``; ``sdk_run_status`` with its
    ``POST /status``). Jobs that end inside the measuring window count.
    """
    import aiohttp

    mode, clients, url = spec["mode"], spec["clients"], spec["url"]
    headers = {"Authorization": f"Bearer {API_KEY}"}

    async def runsync(session: aiohttp.ClientSession, number: int) -> None:
        async with session.post(f"{url}/runsync", json={"input": {"n": number}}) as response:
            document = await response.json()
        if document.get("status") != "COMPLETED" or document.get("output") != {"n": number}:
            raise RuntimeError(f"/runsync returned {document!r}")

    async def run_status(session: aiohttp.ClientSession, number: int) -> int:
        async with session.post(f"{url}/run", json={"input": {"n": number}}) as response:
            job_id = (await response.json())["id"]
        polls = 0
        while True:
            polls += 1
            if mode == "sdk_run_status":
                request = session.post(f"{url}/status/{job_id}")
            else:
                request = session.get(f"{url}/status/{job_id}")
            async with request as response:
                document = await response.json()
            if document["status"] in ("COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"):
                break
        if document["status"] != "COMPLETED" or document.get("output") != {"n": number}:
            raise RuntimeError(f"/status returned {document!r}")
        return polls

    async def main() -> dict[str, Any]:
        connector = aiohttp.TCPConnector(limit=clients)
        async with aiohttp.ClientSession(connector=connector, headers=headers) as session:
            loop = asyncio.get_running_loop()
            begin = loop.time() + spec["warmup"]
            end = begin + spec["duration"]
            counted = [0, 0]
            numbers = iter(range(10**9))

            async def client() -> None:
                while loop.time() < end:
                    number = next(numbers)
                    if mode.endswith("runsync"):
                        await runsync(session, number)
                        polls = 0
                    else:
                        polls = await run_status(session, number)
                    if begin <= loop.time() <= end:
                        counted[0] += 1
                        counted[1] += polls

            await asyncio.gather(*(client() for _ in range(clients)))
            return {
                "jobs_per_second": counted[0] / spec["duration"],
                "polls_per_job": counted[1] / counted[0] if counted[0] else None,
            }

    return asyncio.run(main())


SCENARIOS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "lag/rxrunpod": lag_rxrunpod,
    "lag/sdk": lag_sdk,
    "fanout/rxrunpod": fanout_rxrunpod,
    "fanout/rxrunpod-small-pool": fanout_rxrunpod,
    "fanout/sdk-threads": fanout_sdk_threads,
    "fanout/sdk-asyncio": fanout_sdk_asyncio,
    "stream/rxrunpod": stream_rxrunpod,
    "stream/sdk": stream_sdk,
    "scale/rxrunpod": scale_rxrunpod,
    "load": load,
}


def main(argv: list[str]) -> int:
    spec = json.loads(argv[1])
    mark("ready")
    cpu_start = cpu_seconds()
    result = SCENARIOS[spec["scenario"]](spec)
    result.setdefault("cpu", cpu_seconds() - cpu_start)
    result["peak_rss"] = peak_rss_bytes()
    print("RESULT " + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
