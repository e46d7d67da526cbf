"""Live updates through a real IPython kernel, watched the way JupyterLab watches them.

JupyterLab's kernel connection (``@jupyterlab/services``, also under Notebook
7) routes every ``update_display_data`` message to each cell that displayed
the same display id, whichever request the message names as its parent. So a
helper is live when its updates reach the IOPub channel after the creating
cell has returned and the kernel is idle. This test drives a kernel through
``jupyter_client`` and counts those messages.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Iterator
from typing import Any

import pytest
from jupyter_client.blocking.client import BlockingKernelClient
from jupyter_client.manager import KernelManager

from rxrunpod.notebook import SUMMARY_MIME

pytestmark = pytest.mark.timeout(120)

START_HELPERS = """
import reactivex
from reactivex import operators as ops
import rxrunpod.notebook as rn
from rxrunpod.models import Health

def snapshot(tick):
    return Health.from_json({"jobs": {"inQueue": 10 - tick}, "workers": {"running": tick % 3}})

ticks = reactivex.interval(0.05).pipe(ops.take(40))
plot = rn.health_plot(ticks.pipe(ops.map(snapshot)), interval=0.25)
panel = rn.text_panel(ticks.pipe(ops.map(lambda tick: f"token{tick} ")), interval=0.1)
"""


@pytest.fixture
def kernel() -> Iterator[BlockingKernelClient]:
    manager = KernelManager(kernel_name="python3")
    manager.start_kernel()
    client = manager.client()
    client.start_channels()
    try:
        client.wait_for_ready(timeout=60)
        yield client
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)


def collect_iopub(client: BlockingKernelClient, seconds: float) -> list[dict[str, Any]]:
    messages = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            messages.append(client.get_iopub_msg(timeout=0.1))
        except queue.Empty:
            continue
    return messages


def test_helpers_update_while_kernel_idle(kernel: BlockingKernelClient) -> None:
    reply = kernel.execute_interactive(START_HELPERS, timeout=60)
    assert reply["content"]["status"] == "ok"
    returned_at = time.monotonic()

    # The cell has returned: the 40 ticks over 2 s arrive while no cell runs.
    messages = collect_iopub(kernel, 4.0)
    updates = [
        message["content"]["data"]
        for message in messages
        if message["msg_type"] == "update_display_data"
    ]
    streams = [message for message in messages if message["msg_type"] == "stream"]
    plot_frames = [data for data in updates if data[SUMMARY_MIME]["kind"] == "health_plot"]
    panel_frames = [data for data in updates if data[SUMMARY_MIME]["kind"] == "text_panel"]
    plot_points = [data[SUMMARY_MIME]["points"] for data in plot_frames]

    assert time.monotonic() - returned_at >= 4.0
    assert streams == []
    # 2 s of ticks at one frame per 0.25 s, plus the final frame: about 9.
    assert 4 <= len(plot_frames) <= 12
    assert all(data["image/png"] for data in plot_frames)
    assert plot_points == sorted(plot_points)
    assert plot_points[-1] == 40
    assert plot_frames[-1][SUMMARY_MIME]["state"] == "completed"
    assert len(panel_frames) >= 4
    assert panel_frames[-1][SUMMARY_MIME]["state"] == "completed"
    assert panel_frames[-1][SUMMARY_MIME]["chunks"] == 40
