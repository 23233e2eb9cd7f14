"""`chatlib chat [PROMPT]`: one answer, streamed to standard output as it arrives.

The prompt is the argument, or standard input when the argument is `-`, or absent while
standard input is not a terminal (`echo "..." | chatlib chat`). `--json` prints the final
completion as JSON and nothing else; `--usage` adds tokens and time on standard error.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from chatlib.cli._common import (
    UsageError,
    add_client_options,
    add_sampling_options,
    sampling_params,
    shown_on,
    typed_text,
    writes_unicode,
)

__all__ = ["register", "run"]


def register(commands: Any) -> None:
    """Add `chatlib chat` to the subcommands."""
    parser = commands.add_parser(
        "chat",
        help="answer one prompt (streamed)",
        description="Answer one prompt, streaming the text to standard output.",
    )
    parser.add_argument(
        "prompt",
        nargs="?",
        default=None,
        metavar="PROMPT",
        help="the prompt; '-' or none (with standard input not a terminal) reads standard input",
    )
    add_client_options(parser)
    add_sampling_options(parser)
    parser.add_argument("--no-stream", action="store_true", help="ask for the whole answer at once")
    parser.add_argument(
        "--json",
        action="store_true",
        help="print the final completion as JSON on standard output, nothing else",
    )
    parser.add_argument(
        "--usage", action="store_true", help="print tokens and time on standard error"
    )
    parser.set_defaults(run=run)


def read_prompt(argument: str | None) -> str:
    """The prompt: `argument`, or standard input for `-` or no argument (when piped)."""
    if argument is not None and argument != "-":
        return typed_text(argument, sys.getfilesystemencoding())
    if argument is None and sys.stdin.isatty():
        raise UsageError("no prompt: give one as an argument, or pipe it on standard input")
    text = typed_text(sys.stdin.read(), sys.stdin.encoding)
    if text.endswith("\n"):
        text = text[:-1]
    if not text.strip():
        raise UsageError("the prompt read from standard input is empty")
    return text


def run(args: argparse.Namespace) -> int:
    """Answer one prompt; returns the exit status."""
    prompt = read_prompt(args.prompt)
    from chatlib import SyncChat

    messages = []
    if args.system:
        messages.append({"role": "system", "content": args.system})
    messages.append({"role": "user", "content": prompt})
    params = sampling_params(args)
    out = sys.stdout
    shown = shown_on(out)
    started = time.perf_counter()
    with SyncChat(base_url=args.base_url) as chat:
        if args.no_stream:
            completion = chat.create(model=args.model, messages=messages, **params)
            if not args.json:
                out.write(shown(completion.text) + "\n")
        else:
            with chat.stream(
                model=args.model,
                messages=messages,
                stream_options={"include_usage": True},
                **params,
            ) as stream:
                for text in stream.text_stream:
                    if not args.json:
                        out.write(shown(text))
                        out.flush()
            completion = stream.accumulated
            if not args.json:
                out.write("\n")
    elapsed = time.perf_counter() - started
    if args.json:
        plain = writes_unicode(out)  # else \u escapes: the JSON stays valid in any locale
        out.write(json.dumps(completion.to_dict(), ensure_ascii=not plain) + "\n")
    out.flush()
    _notes(completion, elapsed, usage=args.usage)
    return 0


def _notes(completion: Any, elapsed: float, *, usage: bool) -> None:
    """What standard error says after the answer: a refusal, a cut-off answer, usage."""
    choice = completion.choices[0] if completion.choices else None
    message = choice.message if choice is not None else None
    if message is not None and message.refusal:
        refusal = shown_on(sys.stderr)(message.refusal)
        print(f"chatlib chat: the model refused: {refusal}", file=sys.stderr)
    if choice is not None and choice.finish_reason == "length":
        print("chatlib chat: the answer was cut off (finish_reason: length)", file=sys.stderr)
    if usage:
        counts = completion.usage
        if counts is None:
            tokens = "no usage reported"
        else:
            tokens = (
                f"{counts.prompt_tokens} prompt + {counts.completion_tokens} completion"
                f" = {counts.total_tokens} tokens"
            )
        print(f"[{tokens}, {elapsed:.3f} s]", file=sys.stderr)
