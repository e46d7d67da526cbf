"""A mock worker in the shape of RunPod's ``runpod-workers/mock-worker``.

The job input steers the behaviour, so one endpoint can play a fast model, a
slow one and a broken one::

    {"input": {"mock_return": "any JSON value",    # the output (default "Hello World!")
               "mock_delay": 0.5,                  # seconds to wait before returning
               "mock_error": true,                 # raise, so the job ends FAILED
               "mock_progress": {"updates": ["loading", "thinking"], "wait_time": 0.1},
               "mock_refresh": true}}              # a fresh worker after this job

With ``mock_refresh`` the output is ``{"mock_return": ...}``, because RunPod's
SDK strips the ``refresh_worker`` flag from a returned dict.

Run it locally with ``rxrunpod serve examples/handlers/mock_worker.py``.
RunPod's own mock worker also has ``mock_crash``, which kills the worker
process; it is left out because the local endpoint may run handlers as threads
of its own process.
"""

import time

import runpod


def handler(job):
    job_input = job["input"]

    progress = job_input.get("mock_progress") or {}
    for update in progress.get("updates", []):
        runpod.serverless.progress_update(job, update)
        time.sleep(progress.get("wait_time", 0))

    time.sleep(job_input.get("mock_delay", 0))

    if job_input.get("mock_error", False):
        raise RuntimeError("Mock error: the input asked this job to fail")

    output = job_input.get("mock_return", "Hello World!")
    if job_input.get("mock_refresh", False):
        return {"refresh_worker": True, "mock_return": output}
    return output


runpod.serverless.start({"handler": handler})
