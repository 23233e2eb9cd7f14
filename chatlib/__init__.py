"""chatlib: a fast, leak-proof sync + async client for OpenAI-compatible Chat Completions.

`import chatlib` is cheap: the clients and their HTTP libraries load on first use. The
public names are listed once, in `chatlib/__init__.pyi`, which type checkers read and this
module reads to load each name from its module when it is first used.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def _read_stub() -> tuple[dict[str, str], tuple[str, ...]]:
    """The stub's imports: each name and the module serving it, and the star-imported modules.

    The stub holds only lines of the form `from MODULE import NAME as NAME` or
    `from MODULE import *` (a test keeps it so).
    """
    names: dict[str, str] = {}
    whole: list[str] = []
    with open(__file__[: -len(".py")] + ".pyi", encoding="utf-8") as stub:
        for line in stub:
            words = line.split()
            if len(words) >= 4 and words[0] == "from" and words[2] == "import":
                if words[3] == "*":
                    whole.append(words[1])
                else:
                    names[words[3]] = words[1]
    return names, tuple(whole)


_LAZY, _WHOLE_MODULES = _read_stub()


def _module_of(name: str) -> str | None:
    module = _LAZY.get(name)
    if module is None:
        import importlib

        for candidate in _WHOLE_MODULES:
            if name in importlib.import_module(candidate).__all__:
                return candidate
    return module


def _public_names() -> list[str]:
    import importlib

    whole = [n for m in _WHOLE_MODULES for n in importlib.import_module(m).__all__]
    return sorted({*_LAZY, *whole, "__version__"})


def __getattr__(name: str) -> Any:
    if name == "__all__":
        return _public_names()
    # `from chatlib import _log` asks for a submodule not yet imported: no public name starts
    # with "_", so the star-imported modules need not be loaded to say so.
    module_name = None if name.startswith("_") else _module_of(name)
    if module_name is None:
        raise AttributeError(f"module 'chatlib' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_public_names()))
