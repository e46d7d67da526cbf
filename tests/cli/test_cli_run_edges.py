"""`rxrunpod run` edge cases: --stream on a handler that returns, Ctrl-C during start-up."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path

import pytest

import rxrunpod.cli as cli_module
from rxrunpod._commands import run_command
from rxrunpod.cli import build_parser, main
from rxrunpod.local import LocalEndpoint

HANDLERS = Path(__file__).resolve().parents[2] / "examples" / "handlers"


@pytest.fixture(scope="module")
def mock_worker() -> Iterator[LocalEndpoint]:
    with LocalEndpoint(str(HANDLERS / "mock_worker.py"), workers=1) as endpoint:
        yield endpoint


@pytest.fixture(scope="module")
def token_stream() -> Iterator[LocalEndpoint]:
    with LocalEndpoint(str(HANDLERS / "token_stream.py"), workers=1) as endpoint:
        yield endpoint


def cli(*argv: str) -> int:
    arguments = build_parser().parse_args(list(argv))
    code: int = run_command(arguments.command_function, arguments)
    return code


def test_stream_of_returning_handler_prints_output(
    mock_worker: LocalEndpoint, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli(
        "run", "ep", "--base-url", mock_worker.base_url, "--stream",
        "--input", '{"mock_return": "plain result"}',
    )  # fmt: skip

    captured = capsys.readouterr()
    assert code == 0
    assert "plain result" in captured.out


def test_stream_of_generator_prints_items_once(
    token_stream: LocalEndpoint, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli(
        "run", "ep", "--base-url", token_stream.base_url, "--stream",
        "--input", '{"prompt": "one two three", "token_delay": 0}',
    )  # fmt: skip

    captured = capsys.readouterr()
    assert code == 0
    assert captured.out.startswith("You asked: one two three")
    # The items were printed, so the aggregated output (a list) is not printed again.
    assert "[" not in captured.out


def test_stream_help_mentions_output_fallback() -> None:
    parser = build_parser()
    subcommands = next(
        action for action in parser._actions if isinstance(action, argparse._SubParsersAction)
    )
    help_text = subcommands.choices["run"].format_help()

    assert "streams nothing" in " ".join(help_text.split())


def test_interrupt_while_building_parser_exits_130(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def interrupted(_subcommands: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_module, "REGISTRARS", [interrupted])

    code = main(["run", "ep", "--input", "{}"])

    captured = capsys.readouterr()
    assert code == 130
    assert captured.err.strip() == "rxrunpod: interrupted"
    assert "Traceback" not in captured.err
