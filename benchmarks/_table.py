"""The results table: rows, their formatting, and the RESULTS.md page."""

from __future__ import annotations

import datetime
import os
import platform
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import metadata

__all__ = ["Row", "format_table", "machine_lines", "median", "percentile", "ratio"]


def median(values: Sequence[float]) -> float | None:
    """Return the median, or None for no values."""
    return statistics.median(values) if values else None


def percentile(values: Sequence[float], percent: float) -> float | None:
    """Return the nearest-rank percentile, or None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, round(percent / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def ratio(ours: float | None, theirs: float | None) -> float | None:
    """Return ``ours / theirs``, or None when either is missing or ``theirs`` is 0."""
    if ours is None or theirs is None or theirs == 0:
        return None
    return ours / theirs


def seconds(value: float) -> str:
    return f"{value:.3f} s" if value < 10 else f"{value:.1f} s"


def megabytes(value: float) -> str:
    # Adding 0.0 turns -0.0 (a tiny negative growth, rounded) into 0.0.
    return f"{round(value / 2**20, 1) + 0.0:.1f} MB"


def count(value: float) -> str:
    return f"{value:.0f}"


def rate(value: float) -> str:
    return f"{value:,.0f}/s"


def plain(value: float) -> str:
    return f"{value:.2f}"


def scientific(value: float) -> str:
    return f"{value:.2e}"


@dataclass
class Row:
    """One line of the table.

    ``sdk`` is a number, or a text giving the reason there is none.
    ``met`` is None where the row has no target.
    """

    scenario: str
    metric: str
    rxrunpod: float | str | None
    sdk: float | str | None
    unit: Callable[[float], str]
    target: str = "-"
    met: bool | None = None

    def cells(self) -> list[str]:
        def show(value: float | str | None) -> str:
            if value is None:
                return "-"
            if isinstance(value, str):
                return value
            return self.unit(value)

        numeric_sdk = self.sdk if isinstance(self.sdk, (int, float)) else None
        numeric_ours = self.rxrunpod if isinstance(self.rxrunpod, (int, float)) else None
        shown_ratio = ratio(numeric_ours, numeric_sdk)
        verdict = "-"
        if self.met is not None:
            verdict = "met" if self.met else "NOT met"
        return [
            self.scenario,
            self.metric,
            show(self.rxrunpod),
            show(self.sdk),
            "-" if shown_ratio is None else f"{shown_ratio:.2f}x",
            self.target,
            verdict,
        ]


HEADER = ["scenario", "metric", "rxrunpod", "SDK", "ratio", "target", "result"]


def format_table(rows: Sequence[Row], *, markdown: bool) -> str:
    """Render the rows as aligned plain text or as a Markdown table."""
    lines = [HEADER, *(row.cells() for row in rows)]
    if markdown:
        rendered = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
        rendered += ["| " + " | ".join(cells) + " |" for cells in lines[1:]]
        return "\n".join(rendered)
    widths = [max(len(cells[column]) for cells in lines) for column in range(len(HEADER))]
    rendered = [
        "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True))
        for cells in lines
    ]
    rendered.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(line.rstrip() for line in rendered)


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine_lines(started: datetime.datetime, elapsed: float, mode: str) -> list[str]:
    """Describe the run: date, machine and the versions measured."""
    packages = ["rxrunpod", "runpod", "reactivex", "requests", "aiohttp", "sseclient-py"]
    versions = ", ".join(f"{package} {_version(package)}" for package in packages)
    return [
        f"- date: {started:%Y-%m-%d %H:%M} UTC; mode: {mode}; run time {elapsed:.0f} s",
        f"- machine: {os.cpu_count()} CPUs ({_cpu_model()}), {platform.system()} "
        f"{platform.release()}",
        f"- python {platform.python_version()}; {versions}",
    ]
