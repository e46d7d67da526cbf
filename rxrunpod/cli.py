"""The ``rxrunpod`` command line.

Each subcommand registers itself on the parser through an ``add_*`` function
and stores the function that runs it as ``command_function``; ``main`` parses
the arguments, configures logging and calls that function.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from ._version import __version__

__all__ = ["build_parser", "main"]

CommandRegistrar = Callable[["argparse._SubParsersAction[argparse.ArgumentParser]"], None]


def _add_serve(subcommands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    # Imported here so that the client subcommands work without aiohttp installed.
    try:
        from .local._command import add_serve_command
    except ImportError as error:
        parser = subcommands.add_parser(
            "serve", help="Run a local endpoint (needs rxrunpod[local])."
        )
        message = f"'rxrunpod serve' needs aiohttp: pip install 'rxrunpod[local]' ({error})"

        def unavailable(arguments: argparse.Namespace) -> int:
            print(message, file=sys.stderr)
            return 2

        parser.set_defaults(command_function=unavailable)
        return
    add_serve_command(subcommands)


def _add_client_commands(subcommands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from ._commands import add_client_commands

    add_client_commands(subcommands)


# The subcommands in the order ``--help`` lists them.
REGISTRARS: list[CommandRegistrar] = [_add_client_commands, _add_serve]


def build_parser() -> argparse.ArgumentParser:
    """Build the ``rxrunpod`` argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="rxrunpod",
        description="ReactiveX client for RunPod serverless endpoints, with a local endpoint.",
    )
    parser.add_argument("--version", action="version", version=f"rxrunpod {__version__}")
    parser.add_argument(
        "--log-level",
        default=None,
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="log level of the rxrunpod loggers on stderr "
        "(default: INFO for serve, WARNING for the other commands)",
    )
    subcommands = parser.add_subparsers(title="commands", metavar="COMMAND")
    for register in REGISTRARS:
        register(subcommands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``rxrunpod`` command; return its exit code (130 after Ctrl-C)."""
    # NOTE: a Ctrl-C before this function runs (while Python starts and imports
    # rxrunpod, about 0.1 s) still ends with Python's own traceback.
    try:
        return _main(argv)
    except KeyboardInterrupt:
        # Ctrl-C while the parser imports the subcommands, before a command runs.
        print("rxrunpod: interrupted", file=sys.stderr)
        return 130


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    arguments = parser.parse_args(argv)
    command = getattr(arguments, "command_function", None)
    if command is None:
        parser.print_help(sys.stderr)
        return 2
    logging.basicConfig(
        level=logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    level = arguments.log_level or getattr(arguments, "default_log_level", "INFO")
    logging.getLogger("rxrunpod").setLevel(level)
    from ._commands import run_command

    return run_command(command, arguments)


if __name__ == "__main__":
    sys.exit(main())
