"""Public names served lazily, listed once in a package's `__init__.pyi` stub.

The `lazy_loader` (SPEC 1) pattern: type checkers and IDEs read the stub; at run time the
package reads the same stub to know which module serves each name, and imports that module
the first time the name is used. The stub holds only lines of the form
`from MODULE import NAME as NAME` or `from MODULE import *` (the star: every name of that
module's `__all__`), comments, and annotations of plain attributes such as `__version__`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

__all__ = ["attach_stub"]


def _read_stub(path: str) -> tuple[dict[str, str], tuple[str, ...]]:
    names: dict[str, str] = {}
    whole: list[str] = []
    with open(path, encoding="utf-8") as stub:
        for line in stub:
            words = line.split()
            if len(words) >= 4 and words[0] == "from" and words[2] == "import":
                if words[3] == "*":
                    whole.append(words[1])
                else:
                    names[words[3]] = words[1]
    return names, tuple(whole)


def attach_stub(
    package: str, init_file: str, namespace: dict[str, Any], *, extra: tuple[str, ...] = ()
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The `__getattr__` and `__dir__` of `package`, whose `__init__.py` is `init_file` and
    whose globals are `namespace`; `extra` names defined in the package itself (listed in
    `__all__` too). `__all__` is computed on first use."""
    lazy, whole_modules = _read_stub(init_file[: -len(".py")] + ".pyi")

    def module_of(name: str) -> str | None:
        module = lazy.get(name)
        if module is None:
            for candidate in whole_modules:
                if name in importlib.import_module(candidate).__all__:
                    return candidate
        return module

    def public_names() -> list[str]:
        whole = [n for m in whole_modules for n in importlib.import_module(m).__all__]
        return sorted({*lazy, *whole, *extra})

    def __getattr__(name: str) -> Any:
        if name == "__all__":
            return public_names()
        # `from package import _private` asks for a submodule not yet imported: no public
        # name starts with "_", so the star-imported modules need not be loaded to say so.
        module_name = None if name.startswith("_") else module_of(name)
        if module_name is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module_name), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(public_names()))

    return __getattr__, __dir__
