"""An OpenAI-compatible token streamer in the shape of RunPod's vLLM worker, without a model.

The reply is Lincoln's Gettysburg Address (the Bliss copy, public domain),
cut into word tokens, so every reply is deterministic and the example
needs no weights and no GPU. The request's ``seed`` picks the token to
start at. With ``max_tokens`` the reply has that many tokens, wrapping
around the text, and ends with ``finish_reason`` "length". Without it the
reply is the whole address and ends with "stop".

Input, as RunPod's OpenAI route hands it to the worker::

    {"openai_route": "/v1/chat/completions", "openai_input": {...request body...}}
    {"openai_route": "/v1/completions", "openai_input": {...}}
    {"openai_route": "/v1/models"}

With ``"stream": true`` the handler yields server-sent event text, several
``data: {chunk}\\n\\n`` events per yield and ``data: [DONE]\\n\\n`` last,
as the vLLM worker does by default; the endpoint writes those bytes to the
HTTP response unchanged. Set ``RAW_OPENAI_OUTPUT=0`` to yield lists of
chunk dicts instead, the vLLM worker's other mode. Without ``stream`` the
one yielded item is the whole response. A batch holds 1 event first and then
grows threefold per yield up to ``DEFAULT_BATCH_SIZE`` (50), the vLLM
worker's defaults, so the first token leaves at once and long replies cost
few yields. ``token_delay`` in the request body (seconds, default 0) paces
the tokens like a real model.

Input without ``openai_route`` (``{"prompt": "...", "max_tokens": 20}``)
streams the same tokens as plain strings, for ``job.stream()``.
"""

import json
import os
import re
import time

import runpod

MODEL_NAME = "gettysburg-address"

TEXT = (
    "Four score and seven years ago our fathers brought forth on this continent, a new "
    "nation, conceived in Liberty, and dedicated to the proposition that all men are created "
    "equal.\n\n"
    "Now we are engaged in a great civil war, testing whether that nation, or any nation so "
    "conceived and so dedicated, can long endure. We are met on a great battle-field of that "
    "war. We have come to dedicate a portion of that field, as a final resting place for those "
    "who here gave their lives that that nation might live. It is altogether fitting and "
    "proper that we should do this.\n\n"
    "But, in a larger sense, we can not dedicate\u2014we can not consecrate\u2014we can not "
    "hallow\u2014this ground. The brave men, living and dead, who struggled here, have "
    "consecrated it, far above our poor power to add or detract. The world will little note, "
    "nor long remember what we say here, but it can never forget what they did here. It is "
    "for us the living, rather, to be dedicated here to the unfinished work which they who "
    "fought here have thus far so nobly advanced. It is rather for us to be here dedicated to "
    "the great task remaining before us\u2014that from these honored dead we take increased "
    "devotion to that cause for which they gave the last full measure of devotion\u2014that we "
    "here highly resolve that these dead shall not have died in vain\u2014that this nation, "
    "under God, shall have a new birth of freedom\u2014and that government of the people, by "
    "the people, for the people, shall not perish from the earth."
)

# A token is a run of non-space characters with the whitespace before it, so
# joining the tokens gives the text back exactly.
TOKENS = re.findall(r"\s*\S+", TEXT)

MAX_BATCH_SIZE = int(os.environ.get("DEFAULT_BATCH_SIZE", "50"))
BATCH_GROWTH_FACTOR = 3


def reply_tokens(seed=None, max_tokens=None):
    """Return the reply's tokens and its finish reason.

    A reply that wraps around starts the text again after a blank line, so
    the last word and the first never run together.
    """
    start = int(seed or 0) % len(TOKENS)
    count = len(TOKENS) if max_tokens is None else int(max_tokens)
    tokens = []
    for position in range(start, start + count):
        token = TOKENS[position % len(TOKENS)]
        if position > 0 and position % len(TOKENS) == 0:
            token = "\n\n" + token
        tokens.append(token)
    return tokens, "stop" if max_tokens is None else "length"


def error_document(message, code=400):
    """Build the error document the vLLM worker sends for a bad request."""
    return {"object": "error", "message": message, "type": "BadRequestError", "code": code}


def prompt_word_count(body):
    if "messages" in body:
        return sum(len(str(message.get("content", "")).split()) for message in body["messages"])
    prompt = body.get("prompt", "")
    return len(" ".join(prompt).split()) if isinstance(prompt, list) else len(str(prompt).split())


def check_request(route, body):
    """Return an error message for a request this handler cannot serve, else None."""
    if not isinstance(body, dict):
        return "openai_input must be a JSON object with the request body"
    if route == "/v1/chat/completions":
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return "'messages' must be a non-empty list of chat messages"
        if not all(isinstance(message, dict) for message in messages):
            return "every item of 'messages' must be an object with 'role' and 'content'"
    elif "prompt" not in body:
        return "'prompt' is required"
    if body.get("n", 1) != 1:
        return "only n=1 is supported"
    max_tokens = body.get("max_tokens", body.get("max_completion_tokens"))
    if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 1):
        return "'max_tokens' must be a positive integer"
    return None


def chunk(route, completion_id, model, created, text=None, finish_reason=None, role=False):
    """Build one streamed chunk of a chat completion or a completion."""
    if route == "/v1/chat/completions":
        delta = {"role": "assistant", "content": ""} if role else {}
        if text is not None:
            delta["content"] = text
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        kind = "chat.completion.chunk"
    else:
        choice = {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish_reason}
        kind = "text_completion"
    return {
        "id": completion_id,
        "object": kind,
        "created": created,
        "model": model,
        "choices": [choice],
    }


def stream_chunks(route, body, completion_id, created):
    """Yield every chunk of a streamed response, in order."""
    model = body.get("model") or MODEL_NAME
    tokens, finish_reason = reply_tokens(
        body.get("seed"), body.get("max_tokens", body.get("max_completion_tokens"))
    )
    delay = float(body.get("token_delay", 0))
    if route == "/v1/chat/completions":
        yield chunk(route, completion_id, model, created, role=True)
    for token in tokens:
        if delay:
            time.sleep(delay)
        yield chunk(route, completion_id, model, created, text=token)
    yield chunk(route, completion_id, model, created, finish_reason=finish_reason)
    if (body.get("stream_options") or {}).get("include_usage"):
        final = chunk(route, completion_id, model, created)
        final["choices"] = []
        final["usage"] = usage_of(body, len(tokens))
        yield final


def usage_of(body, completion_tokens):
    prompt_tokens = prompt_word_count(body)
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def full_answer(route, body, completion_id, created):
    """Build the one JSON response to a request without ``stream``."""
    model = body.get("model") or MODEL_NAME
    tokens, finish_reason = reply_tokens(
        body.get("seed"), body.get("max_tokens", body.get("max_completion_tokens"))
    )
    text = "".join(tokens)
    if route == "/v1/chat/completions":
        choice = {
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "logprobs": None,
            "finish_reason": finish_reason,
        }
        kind = "chat.completion"
    else:
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}
        kind = "text_completion"
    return {
        "id": completion_id,
        "object": kind,
        "created": created,
        "model": model,
        "choices": [choice],
        "usage": usage_of(body, len(tokens)),
    }


def batches(items, raw):
    """Group items into growing batches: SSE text when ``raw``, else lists of chunk dicts."""
    size = 1
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield "".join(batch) if raw else batch
            batch = []
            size = min(size * BATCH_GROWTH_FACTOR, MAX_BATCH_SIZE)
    if batch:
        yield "".join(batch) if raw else batch


def openai_handler(job, route, body):
    if route == "/v1/models":
        yield {
            "object": "list",
            "data": [{"id": MODEL_NAME, "object": "model", "created": 0, "owned_by": "rxrunpod"}],
        }
        return
    if route not in ("/v1/chat/completions", "/v1/completions"):
        yield error_document(f"unknown OpenAI route {route!r}", code=404)
        return
    problem = check_request(route, body)
    if problem is not None:
        yield error_document(problem)
        return

    prefix = "chatcmpl-" if route == "/v1/chat/completions" else "cmpl-"
    completion_id = prefix + str(job.get("id", "local"))
    created = int(time.time())
    if not body.get("stream"):
        yield full_answer(route, body, completion_id, created)
        return

    chunks = stream_chunks(route, body, completion_id, created)
    if os.environ.get("RAW_OPENAI_OUTPUT", "1") == "0":
        yield from batches(chunks, raw=False)
    else:
        yield from batches(sse_events(chunks), raw=True)


def sse_events(chunks):
    """Yield each chunk as an SSE event, then the ``[DONE]`` event."""
    for document in chunks:
        yield "data: " + json.dumps(document, separators=(",", ":")) + "\n\n"
    yield "data: [DONE]\n\n"


def handler(job):
    job_input = job.get("input") or {}
    route = job_input.get("openai_route")
    if route is not None:
        yield from openai_handler(job, route, job_input.get("openai_input") or {})
        return

    tokens, _ = reply_tokens(job_input.get("seed"), job_input.get("max_tokens"))
    delay = float(job_input.get("token_delay", 0))
    for token in tokens:
        if delay:
            time.sleep(delay)
        yield token


runpod.serverless.start({"handler": handler, "return_aggregate_stream": True})
