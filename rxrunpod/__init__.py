"""rxrunpod: RunPod serverless endpoints as ReactiveX observables.

``Endpoint`` and ``Job`` turn each RunPod call into a cold ``Observable``; the
records and errors they emit live in ``rxrunpod.models`` and
``rxrunpod.errors``. The submodules ``aio``, ``operators``, ``local``,
``notebook`` and ``openai`` load on first access, so importing rxrunpod does
not import aiohttp or matplotlib.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from ._version import __version__
from .endpoint import Endpoint
from .errors import (
    APIError,
    AuthenticationError,
    BufferOverflow,
    EndpointNotFound,
    InvalidRequest,
    JobCancelled,
    JobError,
    JobFailed,
    JobNotFound,
    JobTimedOut,
    MalformedResponse,
    NotFoundError,
    RateLimited,
    RequestError,
    RunPodError,
    ServerError,
    StreamItemsLost,
    StreamProtocolError,
    WaitTimeout,
)
from .http import RetryPolicy
from .job import Job
from .models import (
    Health,
    HealthJobs,
    HealthWorkers,
    JobErrorDetail,
    JobState,
    JobStatus,
    PurgeResult,
    StreamBatch,
)
from .observable import RunPodObservable
from .polling import PollPolicy

__all__ = [
    "APIError",
    "AuthenticationError",
    "BufferOverflow",
    "Endpoint",
    "EndpointNotFound",
    "Health",
    "HealthJobs",
    "HealthWorkers",
    "InvalidRequest",
    "Job",
    "JobCancelled",
    "JobError",
    "JobErrorDetail",
    "JobFailed",
    "JobNotFound",
    "JobState",
    "JobStatus",
    "JobTimedOut",
    "MalformedResponse",
    "NotFoundError",
    "PollPolicy",
    "PurgeResult",
    "RateLimited",
    "RequestError",
    "RetryPolicy",
    "RunPodError",
    "RunPodObservable",
    "ServerError",
    "StreamBatch",
    "StreamItemsLost",
    "StreamProtocolError",
    "WaitTimeout",
    "__version__",
]

_LAZY_SUBMODULES = frozenset({"aio", "local", "notebook", "openai", "operators"})


def __getattr__(name: str) -> ModuleType:
    if name in _LAZY_SUBMODULES:
        module = importlib.import_module(f".{name}", __name__)
        globals()[name] = module
        return module
    raise AttributeError(f"module 'rxrunpod' has no attribute {name!r}")
