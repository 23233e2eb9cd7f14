"""Text a server wrote, on its way to a terminal: shown, never obeyed.

A terminal acts on the control characters it is sent: escape sequences recolour, retitle,
clear or rewrite the screen, write to the clipboard (OSC 52), a bell rings, a backspace or a
carriage return hides what came before. An answer is the server's (or the model's) text, so
where it is written to a terminal (`chatlib chat`, `chatlib repl`, `stream.display()` outside a
notebook) its control characters are written as escapes; written to a file or a pipe, it
stays exactly as it came. Pure: the stream is handed in, and only asked whether it is a
terminal.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TextIO

__all__ = ["shown_on", "terminal_text"]

# What a terminal would act on instead of showing: C0 controls but tab and line feed, a
# carriage return that does not end a line, DEL and the C1 controls (U+009B is a CSI).
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]|\r(?!\n)")


def terminal_text(text: str) -> str:
    """`text` with its control characters written as `\\\\x1b`-style escapes (tab and line
    ends kept)."""
    return _CONTROL.sub(lambda match: f"\\x{ord(match.group()):02x}", text)


def _as_is(text: str) -> str:
    return text


def shown_on(stream: TextIO) -> Callable[[str], str]:
    """How text a server wrote is written to `stream`: at a terminal, its control characters
    as `\\x1b`-style escapes (so an answer cannot recolour, retitle, clear or rewrite the
    screen, nor ring the bell); elsewhere (a file, a pipe) exactly as it is."""
    try:
        at_terminal = stream.isatty()
    except (AttributeError, ValueError, OSError):
        at_terminal = False
    return terminal_text if at_terminal else _as_is
