"""Stand-ins for the parts of the ``runpod`` package that a handler file touches.

A RunPod ``handler.py`` calls ``runpod.serverless.start({...})`` at import time
and ``runpod.serverless.progress_update(job, value)`` while it runs. The real
``start`` reads ``sys.argv``, looks for ``test_input.json`` and then runs its
worker loop or exits the process, and the real ``progress_update`` posts to
RunPod's servers. The local endpoint needs neither: it wants the ``start``
configuration and the progress values.

With the ``runpod`` package installed, ``install()`` wraps those two functions
in the real package: a wrapped call that belongs to the local endpoint (a
``start`` during ``capture_start()``, a ``progress_update`` for a job the local
endpoint runs) is handled here, and every other call goes to the original.
Without the package, ``install()`` puts a small stand-in ``runpod`` module into
``sys.modules`` that offers the same two functions.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import sys
import threading
import types
from collections.abc import Callable, Iterator, Mapping
from typing import Any

__all__ = ["capture_start", "install", "progress_routes"]

_lock = threading.RLock()
_capture = threading.local()

# Job id -> callable that records a progress value for that job. Job ids are
# UUID-based, so several local endpoints in one process never collide.
progress_routes: dict[str, Callable[[Any], None]] = {}


class _StartCapture:
    def __init__(self) -> None:
        self.config: dict[str, Any] | None = None


def _capturing() -> _StartCapture | None:
    capture: _StartCapture | None = getattr(_capture, "current", None)
    return capture


def _record_start(config: Mapping[str, Any]) -> bool:
    """Store ``config`` when a capture is active on this thread; return whether it did."""
    capture = _capturing()
    if capture is None:
        return False
    if not isinstance(config, Mapping):
        raise TypeError(
            f"runpod.serverless.start expects a dict config, got {type(config).__name__}"
        )
    capture.config = dict(config)
    return True


def _route_progress(job: Any, progress: Any) -> bool:
    job_id = job.get("id") if isinstance(job, Mapping) else None
    route = progress_routes.get(job_id) if isinstance(job_id, str) else None
    if route is None:
        return False
    route(progress)
    return True


def _wrap_start(original: Callable[..., Any]) -> Callable[..., Any]:
    def start(config: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        if _record_start(config):
            return None
        return original(config, *args, **kwargs)

    start.__wrapped__ = original  # type: ignore[attr-defined]
    start.__doc__ = original.__doc__
    return start


def _wrap_progress(original: Callable[..., Any]) -> Callable[..., Any]:
    def progress_update(job: Any, progress: Any, *args: Any, **kwargs: Any) -> Any:
        if _route_progress(job, progress):
            return None
        return original(job, progress, *args, **kwargs)

    progress_update.__wrapped__ = original  # type: ignore[attr-defined]
    progress_update.__doc__ = original.__doc__
    return progress_update


def _standalone_start(config: dict[str, Any]) -> None:
    if not _record_start(config):
        raise RuntimeError(
            "runpod.serverless.start was called outside the rxrunpod local endpoint, and the "
            "runpod package is not installed; install it with 'pip install runpod' to run a "
            "worker against RunPod"
        )


def _standalone_progress(job: Any, progress: Any) -> None:
    # Outside a job that the local endpoint runs there is nowhere to send progress to.
    _route_progress(job, progress)


def _make_standalone_package() -> types.ModuleType:
    package = types.ModuleType("runpod")
    package.__doc__ = "Stand-in for the runpod package, provided by rxrunpod.local."
    package.__path__ = []
    serverless = types.ModuleType("runpod.serverless")
    serverless.__path__ = []
    serverless.start = _standalone_start  # type: ignore[attr-defined]
    serverless.progress_update = _standalone_progress  # type: ignore[attr-defined]
    modules = types.ModuleType("runpod.serverless.modules")
    modules.__path__ = []
    rp_progress = types.ModuleType("runpod.serverless.modules.rp_progress")
    rp_progress.progress_update = _standalone_progress  # type: ignore[attr-defined]
    modules.rp_progress = rp_progress  # type: ignore[attr-defined]
    serverless.modules = modules  # type: ignore[attr-defined]
    package.serverless = serverless  # type: ignore[attr-defined]
    package.api_key = None  # type: ignore[attr-defined]
    package.__version__ = "0+rxrunpod.local"  # type: ignore[attr-defined]
    sys.modules["runpod"] = package
    sys.modules["runpod.serverless"] = serverless
    sys.modules["runpod.serverless.modules"] = modules
    sys.modules["runpod.serverless.modules.rp_progress"] = rp_progress
    return package


def _patch_installed_package() -> None:
    serverless: Any = importlib.import_module("runpod.serverless")
    start = serverless.start
    if not hasattr(start, "__wrapped__"):
        serverless.start = _wrap_start(start)
    progress = serverless.progress_update
    if not hasattr(progress, "__wrapped__"):
        progress = _wrap_progress(progress)
        serverless.progress_update = progress
    with contextlib.suppress(ImportError):
        rp_progress: Any = importlib.import_module("runpod.serverless.modules.rp_progress")
        if not hasattr(rp_progress.progress_update, "__wrapped__"):
            rp_progress.progress_update = progress


def install() -> types.ModuleType:
    """Make ``import runpod`` safe for handler files; return the module they will get.

    Idempotent. The real package is used when it imports; a stand-in otherwise
    (also when ``sys.modules["runpod"]`` is ``None``, which blocks the import).
    """
    with _lock:
        current = sys.modules.get("runpod")
        if current is not None and getattr(current, "serverless", None) is not None:
            serverless = current.serverless
            if getattr(serverless, "start", None) is _standalone_start:
                return current
        # runpod 1.12 calls logging.basicConfig(level=INFO) while it is
        # imported; keep the root logger as the application configured it.
        root = logging.getLogger()
        handlers, level = list(root.handlers), root.level
        try:
            package = importlib.import_module("runpod")
        except ImportError:
            return _make_standalone_package()
        finally:
            root.handlers[:] = handlers
            root.setLevel(level)
        _patch_installed_package()
        return package


@contextlib.contextmanager
def capture_start() -> Iterator[_StartCapture]:
    """Collect the config of a ``runpod.serverless.start`` call made on this thread."""
    install()
    previous = _capturing()
    capture = _StartCapture()
    _capture.current = capture
    try:
        yield capture
    finally:
        _capture.current = previous
