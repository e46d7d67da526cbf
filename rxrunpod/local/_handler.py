"""Load the handler a local endpoint runs: a callable, a file, or ``module:function``."""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import os
import sys
import types
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from . import _runpod_shim

__all__ = ["HandlerSpec", "load_handler"]

ConcurrencyModifier = Callable[[int], int]


@dataclass(frozen=True)
class HandlerSpec:
    """A handler and the worker settings RunPod's ``start`` config gives it."""

    function: Callable[[dict[str, Any]], Any]
    return_aggregate_stream: bool = False
    concurrency_modifier: ConcurrencyModifier | None = None
    name: str = "handler"

    @classmethod
    def from_config(cls, config: Mapping[str, Any], name: str) -> HandlerSpec:
        """Build a spec from the dict a handler file passed to ``runpod.serverless.start``."""
        function = config.get("handler")
        if not callable(function):
            raise ValueError(
                f"{name}: runpod.serverless.start was called without a callable 'handler' "
                f"(got {type(function).__name__})"
            )
        modifier = config.get("concurrency_modifier")
        if modifier is not None and not callable(modifier):
            raise ValueError(f"{name}: 'concurrency_modifier' must be callable")
        return cls(
            function=function,
            return_aggregate_stream=bool(config.get("return_aggregate_stream", False)),
            concurrency_modifier=modifier,
            name=name,
        )


def load_handler(
    target: str | Callable[..., Any] | HandlerSpec,
    *,
    return_aggregate_stream: bool = False,
    concurrency_modifier: ConcurrencyModifier | None = None,
) -> HandlerSpec:
    """Resolve ``target`` into a ``HandlerSpec``.

    ``target`` is a callable, a path to a ``.py`` file, ``path.py:function`` or
    ``package.module:function``. A file or module that calls
    ``runpod.serverless.start({...})`` while it is imported is served with that
    config; the call is intercepted, so RunPod's worker loop never starts.
    ``return_aggregate_stream=True`` or a ``concurrency_modifier`` given here
    apply on top of the config. Raises ``ValueError`` saying what is missing.
    """
    if isinstance(target, HandlerSpec):
        spec = target
    elif callable(target):
        name = getattr(target, "__qualname__", None) or type(target).__name__
        spec = HandlerSpec(function=target, name=str(name))
    elif isinstance(target, str | os.PathLike):
        spec = _load_from_text(os.fspath(target))
    else:
        raise TypeError(f"handler must be a callable or a string, got {type(target).__name__}")
    if return_aggregate_stream and not spec.return_aggregate_stream:
        spec = HandlerSpec(spec.function, True, spec.concurrency_modifier, spec.name)
    if concurrency_modifier is not None:
        spec = HandlerSpec(
            spec.function, spec.return_aggregate_stream, concurrency_modifier, spec.name
        )
    return spec


def _load_from_text(text: str) -> HandlerSpec:
    path_part, function_name = _split_target(text)
    if path_part.endswith(".py") or os.sep in path_part or os.path.isfile(path_part):
        if not os.path.isfile(path_part):
            raise ValueError(f"handler file not found: {path_part}")
        module, config = _import_file(path_part)
    else:
        module, config = _import_module(path_part)
    if function_name is not None:
        function = getattr(module, function_name, None)
        if not callable(function):
            raise ValueError(f"{path_part} has no function named {function_name!r}")
        base = HandlerSpec.from_config(config, text) if config is not None else None
        return HandlerSpec(
            function=function,
            return_aggregate_stream=base.return_aggregate_stream if base else False,
            concurrency_modifier=base.concurrency_modifier if base else None,
            name=text,
        )
    if config is not None:
        return HandlerSpec.from_config(config, text)
    raise ValueError(
        f"{text} did not call runpod.serverless.start() while being imported; "
        f"name the handler function instead, e.g. '{text}:handler'"
    )


def _split_target(text: str) -> tuple[str, str | None]:
    # A Windows drive letter ("C:\\x.py") has its colon at index 1; a function
    # name is whatever follows the last colon when that rest is an identifier.
    head, separator, tail = text.rpartition(":")
    if separator and tail.isidentifier() and len(head) > 1:
        return head, tail
    return text, None


def _import_file(path: str) -> tuple[types.ModuleType, dict[str, Any] | None]:
    path = os.path.abspath(path)
    digest = hashlib.sha1(path.encode()).hexdigest()[:12]
    stem = os.path.splitext(os.path.basename(path))[0]
    module_name = f"_rxrunpod_handler_{stem}_{digest}"
    cached = sys.modules.get(module_name)
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ValueError(f"cannot import {path} as a Python module")
    module = importlib.util.module_from_spec(spec)
    with _sibling_imports(os.path.dirname(path)), _runpod_shim.capture_start() as capture:
        sys.modules[module_name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            if cached is not None:
                sys.modules[module_name] = cached
            else:
                sys.modules.pop(module_name, None)
            raise
    return module, capture.config


def _import_module(name: str) -> tuple[types.ModuleType, dict[str, Any] | None]:
    with _runpod_shim.capture_start() as capture:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as error:
            if error.name is not None and name.startswith(error.name):
                raise ValueError(f"handler module {name!r} not found ({error})") from error
            raise
    return module, capture.config


@contextlib.contextmanager
def _sibling_imports(directory: str) -> Iterator[None]:
    """Let a handler file import modules next to it, as ``python handler.py`` would.

    The directory stays on ``sys.path`` afterwards because handlers may import
    lazily while they run jobs.
    """
    if directory not in sys.path:
        sys.path.insert(0, directory)
    yield
