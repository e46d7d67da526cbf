"""A generator handler that streams a reply one token at a time, like an LLM worker.

Input: ``{"prompt": "...", "max_tokens": 64, "token_delay": 0.05}``. Each
yielded token is one chunk of ``/stream``. With ``return_aggregate_stream``
the finished job's output is also the list of all tokens, so
``job.output()`` works as well.

The reply is canned text built from the prompt, so the example needs no
model weights and no GPU.
"""

import time

import runpod


def reply_for(prompt):
    return (
        f"You asked: {prompt.strip()} "
        "This answer is streamed token by token from a RunPod generator handler, "
        "so the client can show each word as soon as the worker yields it."
    )


def handler(job):
    job_input = job["input"]
    prompt = job_input.get("prompt", "")
    if not isinstance(prompt, str) or not prompt.strip():
        yield {"error": "input 'prompt' must be a non-empty string"}
        return

    max_tokens = int(job_input.get("max_tokens", 64))
    delay = float(job_input.get("token_delay", 0.05))
    words = reply_for(prompt).split(" ")[:max_tokens]
    for position, word in enumerate(words):
        time.sleep(delay)
        yield word if position == 0 else " " + word


runpod.serverless.start({"handler": handler, "return_aggregate_stream": True})
