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
"""

from __future__ import annotations

import json
import math
from typing import Any

__all__ = ["check_json"]

_SCALARS = (str, int, bool, type(None))
_KEY_TYPES = (str, int, float, bool, type(None))


def check_json(value: Any, where: str) -> None:
    """Raise ``TypeError`` naming the first part of ``value`` JSON cannot carry.

    ``where`` names the value in the message, e.g. ``"output"`` or
    ``"stream item 3"``. Accepts what ``json.dumps`` accepts, minus NaN and
    Infinity.
    """
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as error:
        problem = _find_problem(value, where, depth=0) or f"{where} cannot be encoded ({error})"
        raise TypeError(
            f"handler output is not JSON-serialisable: {problem}; return only dicts with "
            "string keys, lists, strings, finite numbers, booleans and None"
        ) from None


def _find_problem(value: Any, path: str, depth: int) -> str | None:
    """Return a description of the first value under ``path`` JSON cannot carry, if any."""
    if depth > 200:
        return f"{path} is nested more than 200 levels deep"
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
