"""The README's code blocks run as written against a local endpoint."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

from rxrunpod.local import LocalEndpoint
from tests.support.markdown_blocks import ROOT, client_environment, code_blocks, run_blocks

README = ROOT / "README.md"


def readme_blocks(language: str) -> list[str]:
    return code_blocks(README.read_text(encoding="utf-8"), language)


def test_readme_python_blocks_run(tmp_path: Path) -> None:
    blocks = readme_blocks("python")

    handler = ROOT / "examples" / "handlers" / "openai_tokens.py"
    with LocalEndpoint(str(handler), workers=4) as local:
        result = run_blocks(
            blocks, tmp_path, environment=client_environment(local.base_url), timeout=240
        )

    assert len(blocks) >= 6
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert "Four score and seven years ago our fathers brought" in result.stdout
    assert "COMPLETED" in result.stdout
    assert "8 jobs: 8 completed, 0 failed" in result.stdout
    assert "queue peaks: [" in result.stdout


def test_readme_cli_lines_run() -> None:
    """Each ``rxrunpod run`` line of the README's shell blocks succeeds against a mock worker."""
    lines = [
        line.strip()
        for block in readme_blocks("bash")
        for line in block.splitlines()
        if line.strip().startswith("rxrunpod run ")
    ]
    handler = ROOT / "examples" / "handlers" / "mock_worker.py"

    assert lines, "the README shows no 'rxrunpod run' command"
    with LocalEndpoint(str(handler), workers=2) as local:
        for line in lines:
            command = [sys.executable, "-m", "rxrunpod", *shlex.split(line)[1:]]
            result = subprocess.run(
                command,
                capture_output=True,
                text=True,
                timeout=60,
                env=client_environment(local.base_url),
            )
            assert result.returncode == 0, f"{line}: {result.stderr}"
            assert "hi" in result.stdout


def test_client_guide_blocks_run(tmp_path: Path) -> None:
    """docs/client.md starts its own local endpoints, so its blocks run as one script."""
    blocks = code_blocks((ROOT / "docs" / "client.md").read_text(encoding="utf-8"))

    result = run_blocks(blocks, tmp_path, environment=client_environment(), timeout=180)

    assert len(blocks) >= 3
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
