"""Execute every notebook under notebooks/ headless and check what it leaves behind.

Each notebook starts its own local endpoint, so the run needs no network
beyond 127.0.0.1. The executed copies are kept in memory only: the committed
notebooks stay without outputs.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient
from nbformat import NotebookNode

from rxrunpod.notebook import SUMMARY_MIME

NOTEBOOK_DIR = Path(__file__).resolve().parents[2] / "notebooks"
NOTEBOOKS = sorted(path.name for path in NOTEBOOK_DIR.glob("*.ipynb"))
TIME_LIMIT = 120.0  # seconds per notebook, kernel start included

FINAL_STATUSES = {"COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"}


class CountingClient(NotebookClient):
    """Notebook client that also counts the in-place display updates it applies."""

    def __init__(self, nb: NotebookNode, **kwargs: Any) -> None:
        super().__init__(nb, **kwargs)
        self.display_updates: Counter[str] = Counter()

    def _update_display_id(self, display_id: str, msg: dict[str, Any]) -> None:
        if msg["header"]["msg_type"] == "update_display_data":
            self.display_updates[display_id] += 1
        super()._update_display_id(display_id, msg)


class ExecutedNotebook:
    def __init__(self, name: str) -> None:
        self.name = name
        self.notebook = nbformat.read(NOTEBOOK_DIR / name, as_version=4)  # type: ignore[no-untyped-call]
        self.client = CountingClient(
            self.notebook,
            kernel_name="python3",
            timeout=int(TIME_LIMIT),
            resources={"metadata": {"path": str(NOTEBOOK_DIR)}},
        )
        started = time.monotonic()
        self.client.execute()
        self.seconds = time.monotonic() - started

    def outputs(self) -> list[dict[str, Any]]:
        return [
            output
            for cell in self.notebook.cells
            if cell.cell_type == "code"
            for output in cell.outputs
        ]

    def summaries(self, kind: str) -> list[dict[str, Any]]:
        return [output["data"][SUMMARY_MIME] for output in self.outputs_of(kind)]

    def outputs_of(self, kind: str) -> list[dict[str, Any]]:
        return [
            output
            for output in self.outputs()
            if output.get("data", {}).get(SUMMARY_MIME, {}).get("kind") == kind
        ]


_executed: dict[str, ExecutedNotebook] = {}


def executed(name: str) -> ExecutedNotebook:
    """Execute a notebook once per test session; later tests reuse the result."""
    if name not in _executed:
        _executed[name] = ExecutedNotebook(name)
    return _executed[name]


def test_notebooks_exist() -> None:
    assert NOTEBOOKS == [
        "01-quickstart.ipynb",
        "02-live-health-dashboard.ipynb",
        "03-pipelines.ipynb",
    ]


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_committed_without_outputs(name: str) -> None:
    notebook = nbformat.read(NOTEBOOK_DIR / name, as_version=4)  # type: ignore[no-untyped-call]
    nbformat.validate(notebook)

    code_cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code_cells
    for cell in code_cells:
        assert cell.outputs == [], cell.source[:80]
        assert cell.execution_count is None, cell.source[:80]


@pytest.mark.timeout(300)
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_without_errors(name: str) -> None:
    run = executed(name)

    errors = [output for output in run.outputs() if output["output_type"] == "error"]
    stderr = [
        output["text"]
        for output in run.outputs()
        if output["output_type"] == "stream" and output["name"] == "stderr"
    ]
    assert errors == []
    assert stderr == []
    assert run.seconds < TIME_LIMIT


@pytest.mark.timeout(300)
def test_dashboard_saves_plot_with_series() -> None:
    run = executed("02-live-health-dashboard.ipynb")

    plots = run.outputs_of("health_plot")
    assert plots
    final = plots[-1]["data"]
    summary = final[SUMMARY_MIME]
    assert final["image/png"]
    assert summary["state"] == "disposed"
    assert summary["points"] > 1
    assert len(summary["seconds"]) == summary["points"]
    assert max(summary["series"]["in_queue"]) > 0
    assert max(summary["series"]["completed"]) > 0
    assert max(summary["series"]["workers_running"]) > 0
    assert max(summary["series"]["workers_initializing"]) > 0


@pytest.mark.timeout(300)
def test_dashboard_display_updated_live() -> None:
    run = executed("02-live-health-dashboard.ipynb")

    summary = run.summaries("health_plot")[-1]
    # Frames drawn in the kernel: the first, the throttled redraws, the final.
    assert summary["frames"] > 5
    # In-place updates that reached the client while a cell ran.
    assert max(run.client.display_updates.values()) > 5


@pytest.mark.timeout(300)
@pytest.mark.parametrize("name", ["02-live-health-dashboard.ipynb", "03-pipelines.ipynb"])
def test_job_boards_list_every_job_final(name: str) -> None:
    run = executed(name)

    boards = run.summaries("job_board")
    assert boards
    for board in boards:
        assert board["state"] == "completed"
        assert board["total"] is not None
        assert len(board["jobs"]) == board["total"]
        assert len({job["id"] for job in board["jobs"]}) == board["total"]
        for job in board["jobs"]:
            assert job["status"] in FINAL_STATUSES, job
            assert job["final"] is True, job


@pytest.mark.timeout(300)
def test_pipelines_retry_recovers_flaky_jobs() -> None:
    run = executed("03-pipelines.ipynb")

    fan_out = run.summaries("job_board")[0]
    failed = [job for job in fan_out["jobs"] if job["status"] == "FAILED"]
    # Tasks 0, 5, 10, 15 and 20 fail once and pass on their retry; task 7 always fails.
    assert fan_out["counts"] == {"COMPLETED": 23, "FAILED": 1}
    assert [job["error"] for job in failed] == ["task 7 is set to fail"]
    assert [job["attempt"] for job in failed] == [1]


@pytest.mark.timeout(300)
def test_pipelines_stream_tokens_into_panels() -> None:
    run = executed("03-pipelines.ipynb")

    panels = run.summaries("text_panel")
    assert panels
    for panel in panels:
        assert panel["state"] == "completed"
        assert panel["chunks"] > 1
        assert panel["text"]
