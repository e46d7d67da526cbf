"""A local RunPod-compatible endpoint that runs real handler code.

``serve(handler)`` is a context manager that yields the base URL (ending in
``/v2``); ``LocalEndpoint`` is the same as an object with ``start()``,
``stop()``, ``stats`` and ``faults``. The server speaks RunPod's queue API
(``run``, ``runsync``, ``status``, ``stream``, ``cancel``, ``retry``,
``purge-queue``, ``health``) and the OpenAI-compatible route on 127.0.0.1,
with a real queue and a pool of workers. It needs aiohttp
(``pip install rxrunpod[local]``).
"""

from __future__ import annotations

from ._endpoint import LocalEndpoint, serve
from ._faults import FAULT_KINDS, ROUTES, FaultRule, Faults, Stats
from ._handler import HandlerSpec, load_handler
from ._workers import Assignment, Outcome, ThreadWorker, Worker, WorkerEvents

__all__ = [
    "FAULT_KINDS",
    "ROUTES",
    "Assignment",
    "FaultRule",
    "Faults",
    "HandlerSpec",
    "LocalEndpoint",
    "Outcome",
    "Stats",
    "ThreadWorker",
    "Worker",
    "WorkerEvents",
    "load_handler",
    "serve",
]
