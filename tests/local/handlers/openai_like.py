"""A small handler for RunPod's OpenAI route: yields chunk dicts, raw SSE text or errors."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

WORDS = ["The", " quick", " brown", " fox"]


def _chunk(route: str, text: str | None, finish: str | None = None) -> dict[str, Any]:
    if route == "/v1/chat/completions":
        choice: dict[str, Any] = {
            "index": 0,
            "delta": {"content": text} if text else {},
            "finish_reason": finish,
        }
        kind = "chat.completion.chunk"
    else:
        choice = {"index": 0, "text": text or "", "finish_reason": finish}
        kind = "text_completion"
    return {"id": "cmpl-1", "object": kind, "created": 0, "model": "words", "choices": [choice]}


def handler(job: dict[str, Any]) -> Iterator[Any]:
    job_input = job["input"]
    route = job_input["openai_route"]
    body = job_input.get("openai_input") or {}
    if route == "/v1/models":
        yield {
            "object": "list",
            "data": [{"id": "words", "object": "model", "created": 0, "owned_by": "me"}],
        }
        return
    if body.get("fail"):
        raise RuntimeError("the model fell over")
    if body.get("bad"):
        yield {
            "object": "error",
            "message": "'bad' is not allowed",
            "type": "BadRequestError",
            "code": 422,
        }
        return
    if not body.get("stream"):
        text = "".join(WORDS)
        if route == "/v1/chat/completions":
            choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": text}}
        else:
            choice = {"index": 0, "text": text}
        yield {
            "id": "cmpl-1",
            "object": "completion",
            "created": 0,
            "model": "words",
            "choices": [choice],
        }
        return
    chunks = [_chunk(route, word) for word in WORDS] + [_chunk(route, None, "stop")]
    if body.get("raw"):
        yield (
            "".join("data: " + json.dumps(chunk) + "\n\n" for chunk in chunks) + "data: [DONE]\n\n"
        )
    else:
        yield chunks[:1]
        yield from chunks[1:]
