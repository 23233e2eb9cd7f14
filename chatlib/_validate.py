"""Checks a request before anything is sent; every complaint names the field it is about."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs

from chatlib._checks import check_headers
from chatlib.errors import InvalidArgumentError
from chatlib.models import ChatMessage, CreateChatCompletionRequest

__all__ = ["check_param_names", "validate_request"]

_FIELDS = tuple(
    f.name for f in attrs.fields(CreateChatCompletionRequest) if f.init and f.name != "extra"
)
_FIELD_SET = frozenset(_FIELDS)
_SCALARS = tuple(name for name in _FIELDS if name not in ("model", "messages"))
_CONTENT_REQUIRED = frozenset({"developer", "system", "user", "tool"})
# Roles whose message needs nothing but a role and a content (`tool` and `function` need more).
_PLAIN_ROLES = frozenset({"developer", "system", "user", "assistant"})

# (minimum, maximum) for numeric parameters, from the OpenAPI schema.
_RANGES: dict[str, tuple[float | None, float | None]] = {
    "temperature": (0, 2),
    "top_p": (0, 1),
    "frequency_penalty": (-2, 2),
    "presence_penalty": (-2, 2),
    "top_logprobs": (0, 20),
    "n": (1, 128),
}
_INTS = frozenset({"n", "max_tokens", "max_completion_tokens", "top_logprobs", "seed"})
_FLOATS = frozenset({"temperature", "top_p", "frequency_penalty", "presence_penalty"})
_BOOLS = frozenset({"logprobs", "stream", "store", "parallel_tool_calls"})
_STRS = frozenset(
    {
        "prompt_cache_key",
        "prompt_cache_retention",
        "reasoning_effort",
        "safety_identifier",
        "service_tier",
        "user",
        "verbosity",
    }
)
_DICTS = frozenset(
    {
        "audio",
        "metadata",
        "moderation",
        "prediction",
        "prompt_cache_options",
        "web_search_options",
        "extra_body",
        "extra_headers",
        "extra_query",
        "logit_bias",
    }
)


def check_param_names(names: Sequence[str]) -> None:
    """Reject keyword arguments that are not request parameters, suggesting the closest one."""
    for name in names:
        if name not in _FIELD_SET:
            import difflib  # an error path only

            close = difflib.get_close_matches(name, _FIELDS, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise InvalidArgumentError(
                name,
                f"not a Chat Completions parameter; {hint}"
                "send vendor parameters with extra_body={...}",
            )


def _fail(field: str, problem: str) -> InvalidArgumentError:
    return InvalidArgumentError(field, problem)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_scalar(name: str, value: Any) -> None:
    if name in _INTS and (isinstance(value, bool) or not isinstance(value, int)):
        raise _fail(name, f"must be an integer, got {value!r}")
    if name in _FLOATS and (not _is_number(value) or not math.isfinite(value)):
        raise _fail(name, f"must be a finite number, got {value!r}")
    if name in _BOOLS and not isinstance(value, bool):
        raise _fail(name, f"must be True or False, got {value!r}")
    if name in _STRS and not isinstance(value, str):
        raise _fail(name, f"must be a string, got {value!r}")
    if name in _DICTS and not isinstance(value, Mapping):
        raise _fail(name, f"must be a dict, got {type(value).__name__}")
    low, high = _RANGES.get(name, (None, None))
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f"between {low} and {high}" if high is not None else f">= {low}"
        raise _fail(name, f"must be {bounds}, got {value!r}")


def _compile_scalar_checks() -> Callable[[CreateChatCompletionRequest], None]:
    """`_check_scalar` on every optional parameter that is not None, in field order: one
    attribute read each (most are None), not a loop of `getattr` calls."""
    lines = ["def check_scalars(r):"]
    for name in _SCALARS:
        # What surely passes, tested inline; anything else gets the full check (which
        # raises, or accepts a subclass).
        low, high = _RANGES.get(name, (None, None))
        bounds = "" if low is None else f" and {low!r} <= v <= {high!r}"
        if name in _INTS:
            sure = f"v.__class__ is int{bounds}"
        elif name in _FLOATS and low is not None:
            sure = f"(v.__class__ is float or v.__class__ is int){bounds}"
        elif name in _BOOLS:
            sure = "v.__class__ is bool"
        elif name in _STRS:
            sure = "v.__class__ is str"
        else:
            sure = "False"
        lines += [
            f"    v = r.{name}",
            f"    if v is not None and not ({sure}):",
            f"        _check({name!r}, v)",
        ]
    env: dict[str, Any] = {"_check": _check_scalar}
    exec(compile("\n".join(lines), "<chatlib check_scalars>", "exec"), env)
    check: Callable[[CreateChatCompletionRequest], None] = env["check_scalars"]
    return check


_check_scalars = _compile_scalar_checks()


def _message_fields(message: Any, where: str) -> tuple[Any, Any, Mapping[str, Any] | None]:
    if isinstance(message, ChatMessage):
        return message.role, message.content, None
    if message.__class__ is dict or isinstance(message, Mapping):
        if "role" not in message:
            raise _fail(f"{where}.role", "is required")
        return message["role"], message.get("content"), message
    raise _fail(where, f"must be a ChatMessage or a dict, got {type(message).__name__}")


def _check_plain_message(message: Any, i: int) -> None:
    """`_check_message(message, "messages[i]")`, with the usual message (a dict of a role
    and a string content) passed without building its name."""
    if message.__class__ is dict:
        role = message.get("role")
        if (
            role.__class__ is str
            and message.get("content").__class__ is str
            and role in _PLAIN_ROLES
        ):
            return
    _check_message(message, f"messages[{i}]")


def _check_message(message: Any, where: str) -> None:
    role, content, mapping = _message_fields(message, where)
    if not isinstance(role, str) or not role:
        raise _fail(f"{where}.role", f"must be a non-empty string, got {role!r}")
    has_content = content is not None or (mapping is not None and "content" in mapping)
    if role in _CONTENT_REQUIRED and content is None:
        raise _fail(f"{where}.content", f"is required for a {role} message")
    if has_content and content is not None and not isinstance(content, (str, list, tuple)):
        raise _fail(
            f"{where}.content", f"must be a string or a list of parts, got {type(content).__name__}"
        )
    if isinstance(content, (list, tuple)):
        for i, part in enumerate(content):
            part_type = getattr(part, "type", None)
            if isinstance(part, Mapping):
                part_type = part.get("type")
            if not isinstance(part_type, str):
                raise _fail(f"{where}.content[{i}].type", "every content part needs a type")
    if role == "tool":
        call_id = (
            message.tool_call_id
            if isinstance(message, ChatMessage)
            else (mapping or {}).get("tool_call_id")
        )
        if not isinstance(call_id, str) or not call_id:
            raise _fail(f"{where}.tool_call_id", "is required for a tool message")
    if role == "function":
        name = message.name if isinstance(message, ChatMessage) else (mapping or {}).get("name")
        if not isinstance(name, str) or not name:
            raise _fail(f"{where}.name", "is required for a function message")


def _check_tools(tools: Any) -> None:
    if not isinstance(tools, (list, tuple)):
        raise _fail("tools", f"must be a list, got {type(tools).__name__}")
    for i, tool in enumerate(tools):
        data = tool.to_dict() if hasattr(tool, "to_dict") else tool
        if not isinstance(data, Mapping) or not isinstance(data.get("type"), str):
            raise _fail(f"tools[{i}]", "must be a tool with a type ('function' or 'custom')")
        if data["type"] == "function":
            function = data.get("function")
            if not isinstance(function, Mapping) or not isinstance(function.get("name"), str):
                raise _fail(f"tools[{i}].function.name", "is required")


def validate_request(request: CreateChatCompletionRequest) -> None:
    """Raise `InvalidArgumentError` naming the first field that cannot be right."""
    if not isinstance(request.model, str) or not request.model:
        raise _fail("model", f"must be a non-empty string, got {request.model!r}")
    messages = request.messages
    if messages.__class__ is not list and (
        isinstance(messages, (str, bytes, Mapping)) or not isinstance(messages, Sequence)
    ):
        raise _fail("messages", f"must be a list of messages, got {type(messages).__name__}")
    if not messages:
        raise _fail("messages", "must hold at least one message")
    for i, message in enumerate(messages):
        _check_plain_message(message, i)
    _check_scalars(request)
    stop = request.stop
    if stop is not None and not (
        isinstance(stop, str)
        or (
            isinstance(request.stop, (list, tuple))
            and all(isinstance(s, str) for s in request.stop)
        )
    ):
        raise _fail("stop", "must be a string or a list of strings")
    if request.tools is not None:
        _check_tools(request.tools)
    if request.extra_headers:
        check_headers("extra_headers", request.extra_headers)
