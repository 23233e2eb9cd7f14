"""chatlib: a fast, leak-proof sync + async client for OpenAI-compatible Chat Completions.

`import chatlib` is cheap: the clients and their HTTP libraries load on first use. The
public names are listed once, in `chatlib/__init__.pyi`, which type checkers read and this
module reads (`chatlib._lazy`) to load each name from its module when it is first used.
"""

from __future__ import annotations

from chatlib._lazy import attach_stub

__version__ = "0.1.0"

__getattr__, __dir__ = attach_stub(__name__, __file__, globals(), extra=("__version__",))
