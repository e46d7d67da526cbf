"""Every Python block of docs/cookbook.md runs, in order, as one script."""

from __future__ import annotations

from pathlib import Path

from tests.support.markdown_blocks import ROOT, client_environment, code_blocks, run_blocks

COOKBOOK = ROOT / "docs" / "cookbook.md"


def test_cookbook_blocks_run(tmp_path: Path) -> None:
    blocks = code_blocks(COOKBOOK.read_text(encoding="utf-8"))

    result = run_blocks(blocks, tmp_path, environment=client_environment(), timeout=120)

    assert len(blocks) >= 10
    assert result.returncode == 0, result.stderr[-3000:]
    assert "1 failed" in result.stdout
    assert "failed: Mock error: the input asked this job to fail" in result.stdout
    assert "20 jobs: 20 completed, 0 failed, 0 cancelled, 0 timed out" in result.stdout
    assert (tmp_path / "reply.txt").read_text(encoding="utf-8").startswith("You asked: Hello")
