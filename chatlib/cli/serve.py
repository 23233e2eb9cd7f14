"""`chatlib serve`: the bundled OpenAI-compatible server (`chatlib.testing.LocalServer`) in
the foreground, for the tests of other programs, in any language.

The first line on standard output is the API base URL (`http://127.0.0.1:PORT/v1`), so a
test harness can start the command, read one line and point its client there. The server
echoes the last user message (`"Echo: ..."`) unless `--script FILE` gives the replies (a JSON
list, see `chatlib.testing.script_from_json`); it runs until Ctrl-C or SIGTERM, and then
exits with status 0.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from typing import Any

from chatlib.cli._common import UsageError

__all__ = ["register", "run"]


def register(commands: Any) -> None:
    """Add `chatlib serve` to the subcommands."""
    parser = commands.add_parser(
        "serve",
        help="run the bundled test server until Ctrl-C",
        description="Run chatlib's OpenAI-compatible test server in the foreground. The first "
        "line on standard output is its base URL. Stops on Ctrl-C or SIGTERM.",
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="the address to listen on (default: 127.0.0.1)"
    )
    parser.add_argument(
        "--port", type=int, default=0, help="the port (default: 0, a free one, see the first line)"
    )
    parser.add_argument(
        "--script",
        metavar="FILE",
        default=None,
        help="a JSON list of scripted replies, one per request, then echoes ('-': stdin)",
    )
    parser.add_argument(
        "--api-key",
        metavar="KEY",
        default=None,
        help="refuse requests without 'Authorization: Bearer KEY' (401)",
    )
    parser.set_defaults(run=run)


def _load_script(path: str) -> list[Any]:
    from chatlib.testing import script_from_json

    try:
        if path == "-":
            data = json.load(sys.stdin)
        else:
            with open(path, encoding="utf-8") as file:
                data = json.load(file)
        return script_from_json(data)
    except OSError as exc:
        raise UsageError(f"cannot read --script {path}: {exc.strerror or exc}") from None
    except ValueError as exc:  # invalid JSON, or not a script
        raise UsageError(f"--script {path}: {exc}") from None


def run(args: argparse.Namespace) -> int:
    """Serve until interrupted; returns the exit status."""
    actions = _load_script(args.script) if args.script else []
    return asyncio.run(_serve(args, actions))


async def _serve(args: argparse.Namespace, actions: list[Any]) -> int:
    from chatlib.testing import LocalServer

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(signum, stop.set)
        except (NotImplementedError, RuntimeError):  # Windows: Ctrl-C still interrupts
            pass
    server = LocalServer(host=args.host, port=args.port, api_key=args.api_key)
    try:
        await server.astart()
    except OSError as exc:
        print(f"chatlib serve: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    try:
        server.enqueue(*actions)
        print(server.base_url, flush=True)
        scripted = f", {len(actions)} scripted replies" if actions else ""
        print(
            f"chatlib serve: listening on {server.url}{scripted}; Ctrl-C to stop",
            file=sys.stderr,
            flush=True,
        )
        await stop.wait()
    finally:
        await server.astop()
    return 0
