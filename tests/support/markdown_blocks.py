"""Run the code blocks of a Markdown page as one script, as a reader would paste them."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def code_blocks(markdown: str, language: str = "python") -> list[str]:
    """Return the fenced blocks of ``language`` in page order."""
    pattern = rf"^```{language}\n(.*?)^```"
    return re.findall(pattern, markdown, flags=re.MULTILINE | re.DOTALL)


def client_environment(base_url: str | None = None) -> dict[str, str]:
    """Copy the environment without RUNPOD_* settings, optionally pointing at ``base_url``."""
    environment = {key: value for key, value in os.environ.items() if not key.startswith("RUNPOD_")}
    if base_url is not None:
        environment["RUNPOD_ENDPOINT_BASE_URL"] = base_url
    environment["MPLBACKEND"] = "Agg"
    return environment


def run_blocks(
    blocks: list[str],
    workdir: Path,
    *,
    environment: dict[str, str],
    timeout: float,
) -> subprocess.CompletedProcess[str]:
    """Run ``blocks`` joined into one script in ``workdir``, where ``examples/`` resolves."""
    script = workdir / "blocks.py"
    script.write_text("\n\n".join(blocks), encoding="utf-8")
    # Pages name handlers by their path from the repository root.
    (workdir / "examples").symlink_to(ROOT / "examples")
    return subprocess.run(
        [sys.executable, str(script)],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=environment,
    )
