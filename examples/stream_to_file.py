"""Stream a generator handler's tokens into a file as they arrive.

Each token is written and flushed the moment ``/stream`` hands it out, so
``tail -f`` on the file shows the reply growing. Run:
``python examples/stream_to_file.py reply.txt``. Without an argument the
reply goes to ``rxrunpod-reply.txt`` in the system's temporary directory.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from example_endpoint import open_endpoint
from reactivex import operators as ops


def main(path: Path) -> None:
    with open_endpoint("token_stream.py", workers=1) as endpoint, path.open("w") as file:

        def write(token: str) -> None:
            file.write(token)
            file.flush()

        job = endpoint.run({"prompt": "Why stream tokens?", "token_delay": 0.02}).run()
        count = job.stream().pipe(ops.do_action(write), ops.count()).run()
    print(f"wrote {count} tokens of job {job.id} to {path}")


if __name__ == "__main__":
    default = Path(tempfile.gettempdir()) / "rxrunpod-reply.txt"
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else default
    try:
        main(target)
    except OSError as error:
        sys.exit(f"cannot write the reply to {target}: {error.strerror}; pass a writable file path")
