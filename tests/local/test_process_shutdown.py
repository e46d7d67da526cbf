"""No worker process outlives its server: clean stop, Ctrl-C, or a server that is killed."""

from __future__ import annotations

import contextlib
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil  # type: ignore[import-untyped]
import pytest

pytestmark = pytest.mark.timeout(90)

ROOT = Path(__file__).parents[2]
HANDLERS = Path(__file__).parent / "handlers"

try:
    import runpod  # noqa: F401
except ImportError:
    HAVE_RUNPOD = False
else:
    HAVE_RUNPOD = True

SERVERS = [
    pytest.param(
        [f"{HANDLERS / 'process_handlers.py'}:pid", "--isolation", "process"], id="rxrunpod"
    ),
    pytest.param(
        [str(HANDLERS / "runpod_worker_plain.py"), "--worker", "runpod"],
        id="runpod",
        marks=pytest.mark.skipif(
            not HAVE_RUNPOD, reason="--worker runpod needs the runpod package"
        ),
    ),
]


def read_lines(stream: object, lines: queue.Queue[str]) -> None:
    # The stream closes under this thread when the fixture ends first.
    with contextlib.suppress(ValueError, OSError):
        for line in stream:  # type: ignore[attr-defined]
            lines.put(line)


@pytest.fixture
def server(request: pytest.FixtureRequest) -> Iterator[tuple[subprocess.Popen[str], list[int]]]:
    """Start 'rxrunpod serve' with two process workers; yield it and its descendants' pids."""
    command = [sys.executable, "-m", "rxrunpod", "--log-level", "WARNING", "serve"]
    command += [*request.param, "--workers", "2", "--port", "0"]
    process = subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=read_lines, args=(process.stdout, lines), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            if "worker(s) ready" in line:
                break
        descendants = [child.pid for child in psutil.Process(process.pid).children(recursive=True)]
        yield process, descendants
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(10)
        reader.join(5)
        if process.stdout is not None:
            process.stdout.close()


def all_gone(pids: list[int], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = [pid for pid in pids if psutil.pid_exists(pid) and not zombie(pid)]
        if not alive:
            return True
        time.sleep(0.05)
    return False


def zombie(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


@pytest.mark.parametrize("server", SERVERS, indirect=True)
def test_ctrl_c_stops_every_worker(
    server: tuple[subprocess.Popen[str], list[int]],
) -> None:
    process, descendants = server

    process.send_signal(signal.SIGINT)

    assert process.wait(20) == 0
    assert len(descendants) >= 2
    assert all_gone(descendants)


@pytest.mark.parametrize("server", SERVERS, indirect=True)
def test_killed_server_leaves_no_orphans(
    server: tuple[subprocess.Popen[str], list[int]],
) -> None:
    process, descendants = server

    process.kill()
    process.wait(10)

    assert len(descendants) >= 2
    assert all_gone(descendants)
