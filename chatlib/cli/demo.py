"""`chatlib demo`: a few sync and async, streamed and whole calls, against the configured
server or, when none is configured, the bundled local server."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from typing import Any, TextIO

from chatlib.cli._common import add_model_option, shown_on

__all__ = ["register", "run"]


def register(commands: Any) -> None:
    """Add `chatlib demo` to the subcommands."""
    parser = commands.add_parser(
        "demo",
        help="run sync/async, streaming/non-streaming calls (the default command)",
        description="Run a few calls with SyncChat and AsyncChat: against the server "
        "configured by OPENAI_BASE_URL / OPENAI_API_KEY, else the bundled local server.",
    )
    add_model_option(parser)
    parser.add_argument(
        "--local", action="store_true", help="use the bundled local server even if a key is set"
    )
    parser.set_defaults(run=run)


def _has_server_configured() -> bool:
    return bool(os.environ.get("OPENAI_API_KEY") or os.environ.get("OPENAI_BASE_URL"))


def run(args: argparse.Namespace) -> int:
    """Run the demo; returns the exit status."""
    from chatlib.testing import LocalServer

    out = sys.stdout

    if _has_server_configured() and not args.local:
        out.write("Using the server configured by OPENAI_BASE_URL / OPENAI_API_KEY.\n")
        return _run_demo(None, args.model, out)
    with LocalServer() as server:
        out.write(
            f"No API key configured: using chatlib's bundled local server at {server.base_url}\n"
        )
        return _run_demo(server.base_url, args.model, out)


def _run_demo(base_url: str | None, model: str, out: TextIO) -> int:
    from chatlib import AsyncChat, ChatMessage, CreateChatCompletionRequest, SyncChat

    shown = shown_on(out)
    with SyncChat(base_url=base_url) as chat:
        started = time.perf_counter()
        resp = chat.create(
            model=model,
            messages=[{"role": "user", "content": "Hello from a script"}],
            max_tokens=50,
            temperature=0.7,
        )
        out.write(
            f"1. sync create     -> {resp.text!r} "
            f"({resp.usage.total_tokens if resp.usage else '?'} tokens, "
            f"{(time.perf_counter() - started) * 1000:.1f} ms)\n"
        )
        out.write("2. sync stream     -> ")
        with chat.stream(
            model=model, messages=[ChatMessage.user("Stream me a sentence")]
        ) as stream:
            pieces = 0
            for text in stream.text_stream:
                out.write(shown(text))
                pieces += 1
        out.write(f"  ({pieces} chunks)\n")

    async def run_async() -> None:
        async with AsyncChat(base_url=base_url) as achat:
            request = CreateChatCompletionRequest(
                model=model, messages=[ChatMessage.user("Hello from asyncio")]
            )
            resp = await achat.create(request)
            out.write(f"3. async create    -> {resp.text!r}\n")
            out.write("4. async stream    -> ")
            async for chunk in achat.stream(
                model=model, messages=[ChatMessage.user("Stream asynchronously")]
            ):
                out.write(shown(chunk.text))
            out.write("\n")
            results = await asyncio.gather(
                *(
                    achat.create(model=model, messages=[ChatMessage.user(f"request {i}")])
                    for i in range(5)
                )
            )
            out.write(f"5. 5 concurrent    -> {[r.text for r in results]}\n")

    asyncio.run(run_async())
    out.write("All demo calls succeeded.\n")
    return 0
