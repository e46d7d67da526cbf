"""Stand-ins for the parts of the ``runpod`` package that a handler file touches.

A RunPod ``handler.py`` calls ``runpod.serverless.start({...})`` at import time
and ``runpod.serverless.progress_update(job, value)`` while it runs. The real
``start`` reads ``sys.argv``, looks for ``test_input.json`` and then runs its
worker loop or exits the process, and the real ``progress_update`` posts to
RunPod's servers. The local endpoint needs neither: it wants the ``start``
configuration and the progress values.

With the ``runpod`` package installed, those two functions are wrapped in the
real package: a wrapped call that belongs to the local endpoint (a ``start``
during ``capture_start()``, a ``progress_update`` for a job the local endpoint
runs) is handled here, and every other call goes to the original. Importing
``runpod`` takes more than a second, so ``install()`` does not import it: it
patches a package that is already imported, and otherwise adds an import hook
that patches the package right after something first imports it. Without the
package, ``install()`` puts a small stand-in ``runpod`` module into
``sys.modules`` that offers the same two functions.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import logging
import sys
import threading
import types
from collections.abc import Callable, Iterator, Mapping, Sequence
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


class _PatchingLoader(importlib.abc.Loader):
    """Run the ``runpod`` package's own loader, then wrap its two functions."""

    def __init__(self, loader: importlib.abc.Loader) -> None:
        self._loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: types.ModuleType) -> None:
        # Give the package its own loader back, as a normal import leaves it.
        module.__loader__ = self._loader
        if module.__spec__ is not None:
            module.__spec__.loader = self._loader
        with _root_logging_kept():
            self._loader.exec_module(module)
        # Not under _lock: install() may hold it while it waits for this import to end.
        _patch_installed_package()


class _PatchOnImport(importlib.abc.MetaPathFinder):
    """Find ``runpod`` through the other finders and patch it once it has been executed."""

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: types.ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != "runpod":
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec: importlib.machinery.ModuleSpec | None = finder.find_spec(fullname, path, target)
            if spec is None:
                continue
            loader = spec.loader
            if isinstance(loader, importlib.abc.Loader) and hasattr(loader, "exec_module"):
                spec.loader = _PatchingLoader(loader)
            return spec
        return None


_import_hook = _PatchOnImport()


@contextlib.contextmanager
def _root_logging_kept() -> Iterator[None]:
    """Keep the root logger as the application configured it.

    runpod 1.12 calls ``logging.basicConfig(level=INFO)`` while it is imported.
    """
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def _runpod_importable() -> bool:
    """Tell whether ``import runpod`` would find the package, without importing it."""
    if "runpod" in sys.modules:
        # None there blocks the import, and a module there is what the import returns.
        return sys.modules["runpod"] is not None
    try:
        return importlib.util.find_spec("runpod") is not None
    except (ImportError, ValueError):
        return False


def install() -> None:
    """Make ``import runpod`` safe for handler files, without importing ``runpod`` now.

    Idempotent. An imported ``runpod`` package is patched at once; an installed
    one that is not imported yet is patched when something first imports it. A
    stand-in is used when the package is not installed (also when
    ``sys.modules["runpod"]`` is ``None``, which blocks the import).
    """
    with _lock:
        current = sys.modules.get("runpod")
        if current is not None:
            serverless = getattr(current, "serverless", None)
            if getattr(serverless, "start", None) is not _standalone_start:
                # This waits for an import of runpod that another thread has under way.
                _patch_installed_package()
            return
        if not _runpod_importable():
            _make_standalone_package()
            return
        if _import_hook not in sys.meta_path:
            sys.meta_path.insert(0, _import_hook)


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
