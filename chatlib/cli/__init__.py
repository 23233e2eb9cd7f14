"""The `chatlib` command (also `python -m chatlib`): `chat`, `repl`, `serve`, `demo`, ...

Each subcommand is a module of this package that defines
`register(commands: argparse._SubParsersAction) -> None`: it adds its parser with
`commands.add_parser(NAME, ...)` and sets `run=` (a function of the parsed arguments returning
the exit status) with `parser.set_defaults(run=...)`. The modules are found here at start-up
(every module whose name does not start with `_`), so a new subcommand is one new module and
nothing else. They import chatlib's clients inside `run`, so `chatlib --help` stays fast.

Answers go to standard output, diagnostics to standard error, and the exit status says what
went wrong (see `chatlib.cli._common`): 0 ok, 1 API error, 2 usage, 3 connection or timeout,
4 authentication, 130 interrupted. Ctrl-C never prints a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
from collections.abc import Sequence
from types import ModuleType

from chatlib import __version__
from chatlib.cli._common import guarded, prepare_output

__all__ = ["build_parser", "command_modules", "main"]


def command_modules() -> list[ModuleType]:
    """The subcommand modules of this package, in name order."""
    names = sorted(info.name for info in pkgutil.iter_modules(__path__) if info.name[0] != "_")
    return [importlib.import_module(f"{__name__}.{name}") for name in names]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the `chatlib` command, every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="chatlib",
        description="Talk to an OpenAI-compatible Chat Completions server.",
        epilog="Exit status: 0 ok, 1 API error, 2 usage, 3 connection or timeout, "
        "4 authentication, 130 interrupted. Without a command: the demo.",
    )
    parser.add_argument("--version", action="version", version=f"chatlib {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in command_modules():
        module.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with `argv` (default: `sys.argv[1:]`); returns the exit status.

    Usage errors exit through `SystemExit(2)`, as argparse does.
    """
    prepare_output()
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "run", None) is None:  # bare `chatlib`: the demo, as it always was
        args = parser.parse_args(["demo"])
    return guarded(args.run, args)
