"""`chatlib repl`: an interactive, multi-turn chat at the terminal.

Each line you type is sent with the whole conversation so far, and the answer streams back.
Lines starting with `/` are commands: `/system TEXT`, `/reset`, `/save FILE`, `/help`,
`/exit`. Ctrl-C stops the answer being streamed (what arrived stays in the conversation) and
returns to the prompt; Ctrl-D (or `/exit`) leaves. Where `readline` is available, lines can
be edited and recalled, and the history is kept in `$CHATLIB_HISTORY` (default
`~/.chatlib_history`; set it empty to keep none).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from chatlib.cli._common import (
    add_client_options,
    add_sampling_options,
    report,
    sampling_params,
    shown_on,
    typed_text,
)

__all__ = ["PROMPT", "Conversation", "register", "run"]

PROMPT = "you> "
HELP = """commands:
  /system TEXT   set the system message (/system alone shows it)
  /reset         forget the conversation (the system message stays)
  /save FILE     write the conversation to FILE as JSON
  /help          this help
  /exit          leave (or Ctrl-D)
Ctrl-C stops an answer being streamed."""


def register(commands: Any) -> None:
    """Add `chatlib repl` to the subcommands."""
    parser = commands.add_parser(
        "repl",
        help="chat interactively, keeping the conversation",
        description="An interactive multi-turn chat. " + HELP.replace("\n", " "),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_client_options(parser)
    add_sampling_options(parser)
    parser.set_defaults(run=run)


class Conversation:
    """The messages so far, and the system message sent before them."""

    def __init__(self, system: str | None) -> None:
        self.system = system
        self.turns: list[dict[str, str]] = []

    def messages(self) -> list[dict[str, str]]:
        """What the next request sends."""
        head = [{"role": "system", "content": self.system}] if self.system else []
        return head + self.turns

    def save(self, path: str, model: str) -> int:
        """Write `{"model": ..., "messages": [...]}` to `path`; returns how many messages."""
        messages = self.messages()
        with open(path, "w", encoding="utf-8") as file:
            json.dump({"model": model, "messages": messages}, file, ensure_ascii=False, indent=2)
            file.write("\n")
        return len(messages)


def _history() -> tuple[Any, str | None]:
    """`readline` (or `None`) and the history file it reads and writes (or `None`)."""
    if not sys.stdin.isatty():
        return None, None
    try:
        import readline
    except ImportError:  # Windows without pyreadline: plain input() still works
        return None, None
    path = os.environ.get("CHATLIB_HISTORY", os.path.join("~", ".chatlib_history"))
    if not path:
        return readline, None
    path = os.path.expanduser(path)
    try:
        readline.read_history_file(path)
    except OSError:
        pass  # no history yet
    readline.set_history_length(1000)
    return readline, path


def _command(line: str, conversation: Conversation, model: str) -> bool:
    """Run a `/command`; returns `False` when the REPL should end."""
    name, _, argument = line.partition(" ")
    argument = argument.strip()
    if name in ("/exit", "/quit"):
        return False
    if name == "/reset":
        conversation.turns.clear()
        print("(conversation cleared)", file=sys.stderr)
    elif name == "/system":
        if argument:
            conversation.system = argument
            print("(system message set)", file=sys.stderr)
        else:
            print(f"(system message: {conversation.system!r})", file=sys.stderr)
    elif name == "/save":
        if not argument:
            print("usage: /save FILE", file=sys.stderr)
        else:
            try:
                count = conversation.save(argument, model)
            except OSError as exc:
                print(f"chatlib repl: cannot save: {exc}", file=sys.stderr)
            else:
                print(f"(saved {count} messages to {argument})", file=sys.stderr)
    elif name == "/help":
        print(HELP, file=sys.stderr)
    else:
        print(f"unknown command {name!r}: /help lists them", file=sys.stderr)
    return True


def _answer(chat: Any, args: argparse.Namespace, conversation: Conversation) -> None:
    """Stream the answer to the last turn; keep what arrived, even when interrupted."""
    from chatlib.errors import ChatLibError

    params = sampling_params(args)
    shown = shown_on(sys.stdout)
    stream = None
    try:
        stream = chat.stream(model=args.model, messages=conversation.messages(), **params)
        with stream:
            for text in stream.text_stream:
                sys.stdout.write(shown(text))
                sys.stdout.flush()
        sys.stdout.write("\n")
    except KeyboardInterrupt:
        sys.stdout.write("\n")
        print("(interrupted)", file=sys.stderr)
    except ChatLibError as exc:
        if stream is not None and stream.accumulated.text:
            sys.stdout.write("\n")
        report(exc, prog="chatlib repl")
    answer = stream.accumulated.text if stream is not None else ""
    if answer:
        conversation.turns.append({"role": "assistant", "content": answer})
    else:
        conversation.turns.pop()  # nothing came back: the question is not part of it


def run(args: argparse.Namespace) -> int:
    """Chat until `/exit` or end of input; returns the exit status."""
    from chatlib import SyncChat

    readline, history = _history()
    conversation = Conversation(args.system)
    with SyncChat(base_url=args.base_url) as chat:
        where = args.base_url or chat.config.base_url
        print(
            f"chatlib repl: {args.model} at {where}. /help for commands, Ctrl-D to leave.",
            file=sys.stderr,
        )
        try:
            while True:
                try:
                    line = typed_text(input(PROMPT), sys.stdin.encoding).strip()
                except EOFError:
                    sys.stdout.write("\n")
                    return 0
                except KeyboardInterrupt:
                    sys.stdout.write("\n")
                    continue
                if not line:
                    continue
                if line.startswith("/"):
                    if not _command(line, conversation, args.model):
                        return 0
                    continue
                conversation.turns.append({"role": "user", "content": line})
                _answer(chat, args, conversation)
        finally:
            if readline is not None and history is not None:
                try:
                    readline.write_history_file(history)
                except OSError:
                    pass
