"""The processes a benchmark run starts: endpoints and one-shot clients."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import psutil  # type: ignore[import-untyped]
import requests

ROOT = Path(__file__).resolve().parents[1]
"""The repository root: every child runs there, so ``benchmarks`` is importable."""

_START_TIMEOUT = 60.0
_STOP_TIMEOUT = 20.0
_SAMPLE_INTERVAL = 0.02


def child_environment() -> dict[str, str]:
    """Return this environment without ``RUNPOD_*`` variables.

    The SDK's local API starts a heartbeat process that pings RunPod when
    ``RUNPOD_AI_API_KEY`` and ``RUNPOD_POD_ID`` are set. Without them it sends
    nothing, so no child reaches any host but 127.0.0.1.
    """
    environment = {
        name: value for name, value in os.environ.items() if not name.startswith("RUNPOD_")
    }
    environment["PYTHONUNBUFFERED"] = "1"
    environment["UVICORN_LOG_LEVEL"] = "warning"
    return environment


def _tail(log: IO[str], characters: int = 3000) -> str:
    log.flush()
    log.seek(0)
    return log.read()[-characters:]


class ChildFailed(RuntimeError):
    """A benchmark child process exited with an error or timed out."""


class LocalEndpointProcess:
    """The local endpoint in a child process (``benchmarks._server``), as a context manager."""

    def __init__(self, handler: str, workers: int) -> None:
        self._config = json.dumps({"handler": handler, "workers": workers})
        self._log: IO[str] | None = None
        self._process: subprocess.Popen[str] | None = None
        self.base_url = ""

    def __enter__(self) -> LocalEndpointProcess:
        self._log = tempfile.TemporaryFile(mode="w+")
        self._process = subprocess.Popen(
            [sys.executable, "-m", "benchmarks._server", self._config],
            cwd=ROOT,
            env=child_environment(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
        )
        try:
            self.base_url = self._read()["base_url"]
        except Exception:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        process, log = self._process, self._log
        if process is not None:
            try:
                assert process.stdin is not None
                process.stdin.write(json.dumps({"op": "stop"}) + "\n")
                process.stdin.close()
            except OSError:
                pass
            try:
                process.wait(_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(_STOP_TIMEOUT)
        if log is not None:
            log.close()
        self._process = self._log = None

    def _read(self) -> dict[str, Any]:
        assert self._process is not None and self._process.stdout is not None
        line = self._process.stdout.readline()
        if not line:
            assert self._log is not None
            raise ChildFailed(f"the local endpoint process exited:\n{_tail(self._log)}")
        reply: dict[str, Any] = json.loads(line)
        if "error" in reply:
            raise ChildFailed(f"the local endpoint process failed: {reply['error']}")
        return reply

    def command(self, operation: str, **arguments: Any) -> dict[str, Any]:
        """Send one control command and return the reply."""
        assert self._process is not None and self._process.stdin is not None
        self._process.stdin.write(json.dumps({"op": operation, **arguments}) + "\n")
        self._process.stdin.flush()
        return self._read()

    def requests_by_route(self) -> dict[str, int]:
        """Return the server's count of requests received per route so far."""
        counts: dict[str, int] = self.command("stats")["requests"]
        return counts

    def finished_times(self, job_ids: list[str]) -> dict[str, float | None]:
        """Return the ``time.monotonic()`` at which the server marked each job final, or None."""
        times: dict[str, float | None] = self.command("finished", ids=job_ids)["times"]
        return times


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class SdkApiProcess:
    """RunPod SDK's ``--rp_serve_api`` server with the trivial handler, as a context manager."""

    def __init__(self) -> None:
        self._log: IO[str] | None = None
        self._process: subprocess.Popen[str] | None = None
        self.url = ""

    def __enter__(self) -> SdkApiProcess:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self._log = tempfile.TemporaryFile(mode="w+")
        self._process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "benchmarks._sdk_api",
                "--rp_serve_api",
                "--rp_api_host",
                "127.0.0.1",
                "--rp_api_port",
                str(port),
                "--rp_log_level",
                "ERROR",
            ],
            cwd=ROOT,
            env=child_environment(),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            self._wait_ready()
        except Exception:
            self.__exit__(None, None, None)
            raise
        return self

    def _wait_ready(self) -> None:
        assert self._process is not None and self._log is not None
        deadline = time.monotonic() + _START_TIMEOUT
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise ChildFailed(f"RunPod's local API exited:\n{_tail(self._log)}")
            try:
                answer = requests.post(f"{self.url}/runsync", json={"input": {"n": 0}}, timeout=5)
                if answer.status_code == 200:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.2)
        raise ChildFailed(f"RunPod's local API did not respond within {_START_TIMEOUT:g} s")

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        process, log = self._process, self._log
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(_STOP_TIMEOUT)
        if log is not None:
            log.close()
        self._process = self._log = None


class _ThreadSampler:
    """Samples a process's OS thread count from outside until stopped; keeps the peak."""

    def __init__(self, pid: int) -> None:
        self._process = psutil.Process(pid)
        self._stop = threading.Event()
        self.peak_threads = 0
        self._thread = threading.Thread(target=self._run, name="bench-sampler", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak_threads = max(self.peak_threads, self._process.num_threads())
            except psutil.Error:
                return
            self._stop.wait(_SAMPLE_INTERVAL)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def run_child(
    spec: dict[str, Any],
    *,
    timeout: float,
    on_mark: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run one ``benchmarks._child`` scenario and return its result plus ``peak_threads``.

    ``on_mark`` is called with each ``MARK`` name the child prints. Raises
    ``ChildFailed`` with the end of the child's stderr when it fails or runs
    longer than ``timeout`` seconds.
    """
    with tempfile.TemporaryFile(mode="w+") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "benchmarks._child", json.dumps(spec)],
            cwd=ROOT,
            env=child_environment(),
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
        killer = threading.Timer(timeout, process.kill)
        killer.start()
        sampler = _ThreadSampler(process.pid)
        result: dict[str, Any] | None = None
        try:
            assert process.stdout is not None
            for line in process.stdout:
                if line.startswith("MARK "):
                    if on_mark is not None:
                        on_mark(line[5:].strip())
                elif line.startswith("RESULT "):
                    result = json.loads(line[7:])
            code = process.wait()
        finally:
            killer.cancel()
            sampler.stop()
            if process.poll() is None:
                process.kill()
                process.wait()
        if code != 0 or result is None:
            killed = code == -signal.SIGKILL
            reason = f"was killed after {timeout:g} s" if killed else f"exited with code {code}"
            raise ChildFailed(f"benchmark child {spec.get('scenario')} {reason}:\n{_tail(log)}")
        result["peak_threads"] = sampler.peak_threads
        return result
