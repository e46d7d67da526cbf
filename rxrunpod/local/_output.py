"""Check that handler outputs can travel as JSON before the endpoint stores them.

RunPod's worker encodes every result and stream item with ``json.dumps``
before it sends it. In runpod 1.12.0 a value that fails to encode is logged
as "Error while returning job result" and never sent, so the hosted job waits
for its executionTimeout. Workers here call ``check_json`` on each output
instead, so such a job ends FAILED at once with a message that names the
offending value, and items streamed before it stay readable.

NOTE: NaN and +/-Infinity are rejected too. Python's ``json`` writes them as
the bare words ``NaN`` and ``Infinity``, which are not JSON and which strict
parsers (browsers, Go, ``jq``) reject, so a job whose output contains them
FAILS rather than having them silently replaced by ``null``.

Values nested more than ``MAX_JSON_DEPTH`` (512) levels deep are rejected as
well. Whether ``json`` can encode or decode a deep value depends on how much
of the recursion limit the calling code already uses, so a value that passes a
check on a worker thread may still fail on the server's stack, where every
``/status`` answer would then be a 500. One fixed limit, well below the
recursion limit, makes the answer the same everywhere.
"""

from __future__ import annotations

import json
import math
from typing import Any

__all__ = ["MAX_JSON_DEPTH", "check_json", "nested_deeper_than", "too_deep"]

# Deepest nesting of lists and dicts the endpoint accepts in request bodies and
# handler outputs. Python's default recursion limit is 1000 frames; 512 leaves
# room for the frames of aiohttp and of the routes that encode the value.
MAX_JSON_DEPTH = 512

_SCALARS = (str, int, bool, type(None))
_KEY_TYPES = (str, int, float, bool, type(None))
_CONTAINERS = (dict, list, tuple)


def check_json(value: Any, where: str) -> None:
    """Raise ``TypeError`` naming the first part of ``value`` JSON cannot carry.

    ``where`` names the value in the message, e.g. ``"output"`` or
    ``"stream item 3"``. Accepts what ``json.dumps`` accepts, minus NaN,
    Infinity and nesting deeper than ``MAX_JSON_DEPTH`` levels.
    """
    problem: str | None = None
    try:
        text = json.dumps(value, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as error:
        if nested_deeper_than(value, MAX_JSON_DEPTH):
            problem = f"{where} is nested more than {MAX_JSON_DEPTH} levels deep"
        else:
            problem = _find_problem(value, where, 0) or f"{where} cannot be encoded ({error})"
    else:
        if too_deep(value, text):
            problem = f"{where} is nested more than {MAX_JSON_DEPTH} levels deep"
    if problem is not None:
        raise TypeError(
            f"handler output is not JSON-serialisable: {problem}; return only dicts with "
            "string keys, lists, strings, finite numbers, booleans and None"
        ) from None


def _find_problem(value: Any, path: str, depth: int) -> str | None:
    """Return a description of the first value under ``path`` JSON cannot carry, if any."""
    if depth > MAX_JSON_DEPTH:
        return f"{path} is nested more than {MAX_JSON_DEPTH} levels deep"
    if isinstance(value, float):
        if math.isfinite(value):
            return None
        return f"{path} is {value!r}, and JSON has no NaN or Infinity"
    if isinstance(value, _SCALARS):
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, _KEY_TYPES):
                return f"{path} has a key of type {type(key).__name__}"
            found = _find_problem(item, f"{path}[{key!r}]", depth + 1)
            if found is not None:
                return found
        return None
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            found = _find_problem(item, f"{path}[{index}]", depth + 1)
            if found is not None:
                return found
        return None
    return f"{path} is of type {type(value).__name__}"


def too_deep(value: Any, encoded: str | bytes) -> bool:
    """Return whether ``value``, whose JSON text is ``encoded``, nests past ``MAX_JSON_DEPTH``.

    Text with no more opening brackets than the limit cannot nest deeper, so
    only values with many brackets are walked.
    """
    brackets = (
        encoded.count(b"[") + encoded.count(b"{")
        if isinstance(encoded, bytes)
        else encoded.count("[") + encoded.count("{")
    )
    return brackets > MAX_JSON_DEPTH and nested_deeper_than(value, MAX_JSON_DEPTH)


def nested_deeper_than(value: Any, limit: int) -> bool:
    """Return whether lists, tuples and dicts in ``value`` nest more than ``limit`` levels.

    Walks one level at a time without recursion, so any depth is safe to ask
    about; scalars count as no level and ``[]`` as one.
    """
    level = [value] if isinstance(value, _CONTAINERS) else []
    depth = 0
    while level:
        depth += 1
        if depth > limit:
            return True
        below: list[Any] = []
        for item in level:
            children = item.values() if isinstance(item, dict) else item
            below.extend(child for child in children if isinstance(child, _CONTAINERS))
        level = below
    return False
