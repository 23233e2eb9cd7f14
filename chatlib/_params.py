"""The runtime signature of ``create``/``stream``, generated from the request model.

Static tools (mypy, Pylance) read the ``Unpack[ChatCompletionParams]`` annotation; live
tools (Jupyter, ``help()``, ``inspect.signature``) read ``__signature__``, set here from
the fields of :class:`CreateChatCompletionRequest`, so both list every parameter.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, TypeVar

import attrs

from chatlib.models import CreateChatCompletionRequest

__all__ = ["with_request_signature"]

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


def with_request_signature(*, with_stream: bool) -> Callable[[_F], _F]:
    """Give a facade method the full keyword signature of a chat completion request."""

    def decorate(fn: _F) -> _F:
        original = inspect.signature(fn)
        head = [
            original.parameters["self"],
            inspect.Parameter(
                "request",
                inspect.Parameter.POSITIONAL_ONLY,
                default=None,
                annotation="CreateChatCompletionRequest | None",
            ),
        ]
        fn.__signature__ = original.replace(  # type: ignore[attr-defined]
            parameters=head + _request_parameters(with_stream=with_stream)
        )
        return fn

    return decorate
