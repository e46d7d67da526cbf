"""Every Python block of docs/cookbook.md runs, in order, as one script."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
COOKBOOK = ROOT / "docs" / "cookbook.md"


def python_blocks(markdown: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", markdown, flags=re.MULTILINE | re.DOTALL)


def test_cookbook_blocks_run(tmp_path: Path) -> None:
    blocks = python_blocks(COOKBOOK.read_text(encoding="utf-8"))
    script = tmp_path / "cookbook.py"
    script.write_text("\n\n".join(blocks), encoding="utf-8")
    # The recipes name handlers by their path from the repository root.
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    environment = {key: value for key, value in os.environ.items() if not key.startswith("RUNPOD_")}

    result = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env=environment,
    )

    assert len(blocks) >= 10
    assert result.returncode == 0, result.stderr[-3000:]
    assert "1 failed" in result.stdout
    assert "failed: Mock error: the input asked this job to fail" in result.stdout
    assert "20 jobs: 20 completed, 0 failed, 0 cancelled, 0 timed out" in result.stdout
    assert (tmp_path / "reply.txt").read_text(encoding="utf-8").startswith("You asked: Hello")
