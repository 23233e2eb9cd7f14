"""What every subcommand shares: exit statuses, error reports, the model and sampling options.

Standard library only at import time: the clients load when a command runs.
"""

from __future__ import annotations

import argparse
import codecs
import os
import sys
from collections.abc import Callable
from typing import Any, TextIO

from chatlib._terminal import shown_on

__all__ = [
    "API_ERROR",
    "AUTHENTICATION",
    "BROKEN_PIPE",
    "CONNECTION",
    "INTERRUPTED",
    "OK",
    "USAGE",
    "UsageError",
    "add_client_options",
    "add_model_option",
    "add_sampling_options",
    "exit_status",
    "guarded",
    "prepare_output",
    "report",
    "sampling_params",
    "shown_on",
    "typed_text",
    "writes_unicode",
]

OK = 0
#: The server answered with an error, or with something that is not a completion; also any
#: other failure of a command.
API_ERROR = 1
#: Bad arguments or input: argparse's own errors, an argument chatlib refuses
#: (`InvalidArgumentError`), no prompt, an unreadable `--script` file.
USAGE = 2
#: The server could not be reached, or a timeout passed.
CONNECTION = 3
#: No API key (`MissingAPIKeyError`), or the server refused it (401, 403).
AUTHENTICATION = 4
#: Ctrl-C (SIGINT): what arrived was printed, the connection closed.
INTERRUPTED = 130
#: Standard output was closed early (`chatlib chat ... | head -c 10`): 128 + SIGPIPE.
BROKEN_PIPE = 141


class UsageError(Exception):
    """A command was used wrongly (exit status 2); the message says how."""


def exit_status(error: BaseException) -> int:
    """The exit status of a command that failed with `error`."""
    from chatlib.errors import (
        APIConnectionError,
        AuthenticationError,
        InvalidArgumentError,
        MissingAPIKeyError,
        PermissionDeniedError,
    )

    if isinstance(error, KeyboardInterrupt):
        return INTERRUPTED
    if isinstance(error, (UsageError, InvalidArgumentError)):
        return USAGE
    if isinstance(error, (AuthenticationError, PermissionDeniedError, MissingAPIKeyError)):
        return AUTHENTICATION
    if isinstance(error, APIConnectionError):
        return CONNECTION
    return API_ERROR


def report(error: BaseException, *, prog: str = "chatlib") -> None:
    """One line on standard error: `chatlib: ErrorClass: message` (no traceback)."""
    shown = shown_on(sys.stderr)
    if isinstance(error, UsageError):
        print(f"{prog}: error: {shown(str(error))}", file=sys.stderr)
    else:
        print(f"{prog}: {type(error).__name__}: {shown(str(error))}", file=sys.stderr)
    sys.stderr.flush()


# ---------------------------------------------------------------- text at the terminal


def prepare_output() -> None:
    """Make standard output and error write what their encoding cannot hold as
    backslash escapes (`\\U0001f600` in an ASCII locale) instead of failing."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            try:
                reconfigure(errors="backslashreplace")
            except (ValueError, OSError):  # closed, or not a text wrapper after all
                pass


def writes_unicode(stream: TextIO) -> bool:
    """Whether `stream`'s encoding holds every character (UTF-8, -16, -32)."""
    try:
        name = codecs.lookup(getattr(stream, "encoding", None) or "ascii").name
    except LookupError:
        return False
    return name.startswith("utf")


def typed_text(text: str, encoding: str | None) -> str:
    """Text read from the command line or standard input, its undecodable bytes (kept by
    Python as lone surrogates, `surrogateescape`) decoded as the UTF-8 terminals send, or
    replaced by U+FFFD where they are not UTF-8."""
    if not any("\ud800" <= char <= "\udfff" for char in text):
        return text
    try:
        raw = text.encode(encoding or "utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a surrogate that is no escaped byte
        return text.encode("utf-8", "replace").decode("utf-8")
    return raw.decode("utf-8", "replace")


def guarded(run: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Run a command, turning what can go wrong into a one-line report and an exit status."""
    from chatlib.errors import ChatLibError

    try:
        return run(args)
    except KeyboardInterrupt:
        print("\nchatlib: interrupted", file=sys.stderr)
        return INTERRUPTED
    except (ChatLibError, UsageError) as exc:
        report(exc, prog=_prog(args))
        return exit_status(exc)
    except BrokenPipeError:
        # Whoever read our output has gone: say nothing more, and keep Python from failing
        # again when it flushes standard output at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return BROKEN_PIPE


def _prog(args: argparse.Namespace) -> str:
    command = getattr(args, "command", None)
    return f"chatlib {command}" if command else "chatlib"


# ---------------------------------------------------------------- shared options


def add_model_option(parser: argparse.ArgumentParser) -> None:
    """`--model` (default: `$CHATLIB_MODEL`, else `gpt-4o-mini`)."""
    parser.add_argument(
        "--model",
        default=os.environ.get("CHATLIB_MODEL", "gpt-4o-mini"),
        help="the model (default: $CHATLIB_MODEL or gpt-4o-mini)",
    )


def add_client_options(parser: argparse.ArgumentParser) -> None:
    """`--model` and `--base-url`."""
    add_model_option(parser)
    parser.add_argument(
        "--base-url",
        default=None,
        metavar="URL",
        help="the server's API base URL (default: $OPENAI_BASE_URL, else OpenAI's)",
    )


def add_sampling_options(parser: argparse.ArgumentParser) -> None:
    """`--system`, `-t/--temperature`, `--max-tokens`, `--seed`."""
    parser.add_argument("--system", default=None, metavar="TEXT", help="a system message")
    parser.add_argument(
        "-t", "--temperature", type=float, default=None, help="sampling temperature (0-2)"
    )
    parser.add_argument(
        "--max-tokens", type=int, default=None, metavar="N", help="the longest answer, in tokens"
    )
    parser.add_argument(
        "--seed", type=int, default=None, metavar="N", help="ask for repeatable sampling"
    )


def sampling_params(args: argparse.Namespace) -> dict[str, Any]:
    """The request parameters the sampling options set (only those given)."""
    params: dict[str, Any] = {}
    if args.temperature is not None:
        params["temperature"] = args.temperature
    if args.max_tokens is not None:
        params["max_tokens"] = args.max_tokens
    if args.seed is not None:
        params["seed"] = args.seed
    return params
