"""RunPod SDK's own local API (``--rp_serve_api``) serving the trivial handler.

Started by the benchmark as ``python -m benchmarks._sdk_api --rp_serve_api
--rp_api_host 127.0.0.1 --rp_api_port PORT``: ``runpod.serverless.start``
reads those flags from ``sys.argv`` and runs uvicorn with FastAPI routes
``/run``, ``/runsync``, ``/status/{id}`` and ``/stream/{id}`` at the root.
"""

from __future__ import annotations

import runpod

from .handlers import trivial

if __name__ == "__main__":
    runpod.serverless.start({"handler": trivial})
