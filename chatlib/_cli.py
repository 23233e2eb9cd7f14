"""The `chatlib` command: `chatlib chat "prompt"` and `chatlib demo`."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Sequence
from typing import TextIO

from chatlib import __version__

__all__ = ["main"]


def _has_server_configured() -> bool:
    return bool(os.environ.get("OPENAI_API_KEY") or os.environ.get("OPENAI_BASE_URL"))


def _chat(args: argparse.Namespace, out: TextIO) -> int:
    from chatlib import SyncChat
    from chatlib.errors import ChatLibError

    try:
        with SyncChat(base_url=args.base_url) as chat:
            messages = []
            if args.system:
                messages.append({"role": "system", "content": args.system})
            messages.append({"role": "user", "content": args.prompt})
            with chat.stream(
                model=args.model,
                messages=messages,
                stream_options={"include_usage": True},
            ) as stream:
                for text in stream.text_stream:
                    out.write(text)
                    out.flush()
                usage = stream.accumulated.usage
            out.write("\n")
            if usage is not None and args.usage:
                prompt, completion = usage.prompt_tokens, usage.completion_tokens
                out.write(f"[{prompt} prompt + {completion} completion tokens]\n")
    except ChatLibError as exc:
        print(f"chatlib: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


def _demo(args: argparse.Namespace, out: TextIO) -> int:
    from chatlib.testing import LocalServer

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
    from chatlib.errors import ChatLibError

    try:
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
                    out.write(text)
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
                    out.write(chunk.text)
                out.write("\n")
                results = await asyncio.gather(
                    *(
                        achat.create(model=model, messages=[ChatMessage.user(f"request {i}")])
                        for i in range(5)
                    )
                )
                out.write(f"5. 5 concurrent    -> {[r.text for r in results]}\n")

        asyncio.run(run_async())
    except ChatLibError as exc:
        print(f"chatlib: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    out.write("All demo calls succeeded.\n")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the `chatlib` command."""
    parser = argparse.ArgumentParser(
        prog="chatlib", description="Talk to an OpenAI-compatible Chat Completions server."
    )
    parser.add_argument("--version", action="version", version=f"chatlib {__version__}")
    sub = parser.add_subparsers(dest="command")
    chat = sub.add_parser("chat", help="stream an answer to a prompt")
    chat.add_argument("prompt")
    chat.add_argument("--model", default=os.environ.get("CHATLIB_MODEL", "gpt-4o-mini"))
    chat.add_argument("--system", default=None, help="a system message")
    chat.add_argument("--base-url", default=None, help="default: OPENAI_BASE_URL or OpenAI")
    chat.add_argument("--usage", action="store_true", help="print token usage after the answer")
    demo = sub.add_parser("demo", help="run sync/async, streaming/non-streaming calls")
    demo.add_argument("--model", default=os.environ.get("CHATLIB_MODEL", "gpt-4o-mini"))
    demo.add_argument(
        "--local", action="store_true", help="use the bundled local server even if a key is set"
    )
    return parser


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    stream = out if out is not None else sys.stdout
    if args.command == "chat":
        return _chat(args, stream)
    if args.command == "demo" or args.command is None:
        return _demo(args if args.command else build_parser().parse_args(["demo"]), stream)
    return 2
