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
from collections.abc import Callable
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


def spell_out_settings(function: Callable[..., Any]) -> None:
    """Give `function(..., **settings: Unpack[ClientSettings])` a runtime signature listing
    every setting (each defaults to `None`: from the environment, else the default)."""
    signature = inspect.signature(function)
    fixed = [p for p in signature.parameters.values() if p.kind is not p.VAR_KEYWORD]
    settings = [
        inspect.Parameter(name, _KW, default=None, annotation=ClientSettings.__annotations__[name])
        for name in SETTING_NAMES
    ]
    function.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=fixed + settings
    )


_SETTINGS_ARG = re.compile(r"^( *)\*\*settings:.*(?:\n\1 .*)*", re.MULTILINE)


def document_settings(doc: str | None) -> str | None:
    """`doc` with its `**settings:` argument replaced by one entry per setting, taken from
    the `Attributes` of `ClientSettings` (written once, there)."""
    source = ClientSettings.__doc__ or ""
    _, _, attributes = source.partition("Attributes:\n")
    if doc is None or not attributes:
        return doc
    lines = textwrap.dedent(attributes).rstrip().splitlines()

    def entries(match: re.Match[str]) -> str:
        return textwrap.indent("\n".join(lines), match.group(1))

    return _SETTINGS_ARG.sub(entries, doc, count=1)
