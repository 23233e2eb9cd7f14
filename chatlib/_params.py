"""Runtime signatures generated from the typed declarations they unpack.

Static tools (mypy, Pylance) read `Unpack[ChatCompletionParams]` and
`Unpack[ClientSettings]` annotations; live tools (Jupyter, `help()`, `inspect.signature`)
read `__signature__`, set here from the fields of `CreateChatCompletionRequest` and of
`ClientSettings`, so both list every parameter, and the docstrings of the clients list
every setting.
"""

from __future__ import annotations

import inspect
import re
import textwrap
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import attrs

from chatlib._config import SETTING_NAMES, ClientSettings
from chatlib.models import CreateChatCompletionRequest

__all__ = ["document_settings", "spell_out_settings", "with_request_signature"]

_F = TypeVar("_F", bound=Callable[..., Any])
_KW = inspect.Parameter.KEYWORD_ONLY


def _request_parameters(*, with_stream: bool) -> list[inspect.Parameter]:
    params = []
    for field in attrs.fields(CreateChatCompletionRequest):
        if not field.init or field.name == "extra" or field.name == "stream":
            continue
        required = field.name in ("model", "messages")
        params.append(
            inspect.Parameter(
                field.name,
                _KW,
                default=inspect.Parameter.empty if required else None,
                annotation=field.type,
            )
        )
    if with_stream:
        params.append(inspect.Parameter("stream", _KW, default=None, annotation="bool | None"))
    params.append(
        inspect.Parameter("timeout", _KW, default=None, annotation="float | Timeout | None")
    )
    return params


def with_request_signature(
    *, with_stream: bool, head: tuple[str, ...] | None = None
) -> Callable[[_F], _F]:
    """Give a facade method the full keyword signature of a chat completion request.

    `head` names the method's own keyword parameters that come first (`run_tools`' `tools`
    and `max_rounds`), instead of the positional `request`.
    """

    def decorate(fn: _F) -> _F:
        original = inspect.signature(fn)
        first = [original.parameters["self"]]
        if head is None:
            first.append(
                inspect.Parameter(
                    "request",
                    inspect.Parameter.POSITIONAL_ONLY,
                    default=None,
                    annotation="CreateChatCompletionRequest | None",
                )
            )
        else:
            first.extend(original.parameters[name] for name in head)
        taken = {p.name for p in first}
        rest = [p for p in _request_parameters(with_stream=with_stream) if p.name not in taken]
        fn.__signature__ = original.replace(parameters=first + rest)  # type: ignore[attr-defined]
        return fn

    return decorate


def spell_out_settings(
    function: Callable[..., Any],
    names: Sequence[str] = SETTING_NAMES,
    settings_type: Any = ClientSettings,
) -> None:
    """Give `function(..., **settings: Unpack[ClientSettings])` a runtime signature listing
    every setting (each defaults to `None`: from the environment, else the default).

    A client with settings of its own (Azure's) passes their `TypedDict` and their order."""
    signature = inspect.signature(function)
    fixed = [p for p in signature.parameters.values() if p.kind is not p.VAR_KEYWORD]
    annotations = settings_type.__annotations__
    settings = [
        inspect.Parameter(name, _KW, default=None, annotation=annotations[name]) for name in names
    ]
    function.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=fixed + settings
    )


_SETTINGS_ARG = re.compile(r"^( *)\*\*settings:.*(?:\n\1 .*)*", re.MULTILINE)
_ENTRY = re.compile(r"^(\w+): ")


def _attribute_entries(source: Any) -> dict[str, list[str]]:
    """The `Attributes:` entries of a class docstring, by name (each its lines, dedented)."""
    _, _, attributes = (source.__doc__ or "").partition("Attributes:\n")
    entries: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in textwrap.dedent(attributes).rstrip().splitlines():
        match = _ENTRY.match(line)
        if match is not None:
            current = entries.setdefault(match.group(1), [])
        if current is not None:
            current.append(line)
    return entries


def document_settings(
    doc: str | None,
    names: Sequence[str] = SETTING_NAMES,
    sources: Sequence[Any] = (ClientSettings,),
) -> str | None:
    """`doc` with its `**settings:` argument replaced by one entry per setting, taken from
    the `Attributes` of `ClientSettings` (written once, there), or of the first of
    `sources` that documents it."""
    documented: dict[str, list[str]] = {}
    for source in sources:
        for name, lines in _attribute_entries(source).items():
            documented.setdefault(name, lines)
    if doc is None or not documented:
        return doc
    lines = [line for name in names for line in documented.get(name, ())]

    def entries(match: re.Match[str]) -> str:
        return textwrap.indent("\n".join(lines), match.group(1))

    return _SETTINGS_ARG.sub(entries, doc, count=1)
