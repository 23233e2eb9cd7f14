"""`chatlib batch run` and `chatlib batch make`: the batch runner (`chatlib.batch.cli`) as a
subcommand of the `chatlib` command."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["register"]


def register(commands: Any) -> None:
    """Add `batch` (with `run` and `make`) to the `chatlib` command."""
    from chatlib.batch.cli import add_parser, main

    parser: argparse.ArgumentParser = add_parser(commands)
    parser.set_defaults(run=main)
