"""The README's code blocks run as written against a local endpoint."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

from rxrunpod.local import LocalEndpoint

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def code_blocks(language: str) -> list[str]:
    markdown = README.read_text(encoding="utf-8")
    pattern = rf"^```{language}\n(.*?)^```"
    return re.findall(pattern, markdown, flags=re.MULTILINE | re.DOTALL)


def client_environment(base_url: str) -> dict[str, str]:
    environment = {key: value for key, value in os.environ.items() if not key.startswith("RUNPOD_")}
    environment["RUNPOD_ENDPOINT_BASE_URL"] = base_url
    environment["MPLBACKEND"] = "Agg"
    return environment


def test_readme_python_blocks_run(tmp_path: Path) -> None:
    blocks = code_blocks("python")
    script = tmp_path / "readme.py"
    script.write_text("\n\n".join(blocks), encoding="utf-8")

    handler = ROOT / "examples" / "handlers" / "openai_tokens.py"
    with LocalEndpoint(str(handler), workers=4) as local:
        result = subprocess.run(
            [sys.executable, str(script)],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=240,
            env=client_environment(local.base_url),
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
        for block in code_blocks("bash")
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
    markdown = (ROOT / "docs" / "client.md").read_text(encoding="utf-8")
    blocks = re.findall(r"^```python\n(.*?)^```", markdown, flags=re.MULTILINE | re.DOTALL)
    script = tmp_path / "client_guide.py"
    script.write_text("\n\n".join(blocks), encoding="utf-8")
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    environment = {key: value for key, value in os.environ.items() if not key.startswith("RUNPOD_")}

    result = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
        env=environment,
    )

    assert len(blocks) >= 3
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
