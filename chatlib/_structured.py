"""Typed answers: what a `response_format` type and typed tools ask of the server, and the
answer parsed back into those types. Pure.

`prepare_outputs` turns what the caller passed (a class as `response_format`, functions and
classes in `tools`) into what the server receives, and returns the `OutputPlan` that parses
the answer: `OutputPlan.apply(completion)` fills `message.parsed` and
`function.parsed_arguments`, or raises the `StructuredOutputError` that says why it cannot.
Both facades (and their streams, for the final completion) call it; neither holds a rule.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from chatlib._model_base import Model
from chatlib._schema import (
    SchemaError,
    describe_type,
    field_name,
    path_text,
    require_object_root,
    schema_of,
    strict_schema,
    unwrap,
)
from chatlib._tools import ToolSpec, as_tools
from chatlib._typed_json import Mismatch, load_checked, structure
from chatlib.errors import (
    ContentFilterFinishReasonError,
    InvalidArgumentError,
    LengthFinishReasonError,
    OutputValidationError,
    RefusalError,
)
from chatlib.models import (
    ChatCompletionMessageToolCall,
    CreateChatCompletionResponse,
    ResponseFormat,
)

__all__ = ["ContentTarget", "OutputPlan", "prepare_outputs"]

_FORMAT_TYPES = frozenset({"text", "json_object", "json_schema"})
_NAME_CHARS = re.compile(r"[^A-Za-z0-9_-]")


@attrs.frozen(eq=False)
class ContentTarget:
    """What a message's content is parsed into.

    Attributes:
        label: How messages name it (`"Person"`).
        schema: The schema the JSON must match (`None`: any JSON, for `json_object`).
        tp: The type to build from the JSON; `None` keeps the JSON (a dict).
        strict: Whether `schema` is a strict-mode one.
    """

    label: str
    schema: Mapping[str, Any] | None
    tp: Any = None
    strict: bool = True

    def parse(self, text: str) -> Any:
        """`text` as the target: checked, then built. Raises `Mismatch`."""
        data = load_checked(text, self.schema)
        if self.tp is None:
            return data
        try:
            return structure(data, self.tp, strict=self.strict)
        except SchemaError as exc:
            raise Mismatch(exc.path, exc.reason) from None


@attrs.frozen(eq=False)
class OutputPlan:
    """How to parse a call's answer: the content's target, and the tools chatlib can parse.

    Attributes:
        content: The target of the message content; `None` leaves the content alone.
        tools: The parsable function tools, by name.
    """

    content: ContentTarget | None = None
    tools: Mapping[str, ToolSpec] = attrs.field(factory=dict)

    def apply(
        self, completion: CreateChatCompletionResponse, *, tool_arguments: bool = True
    ) -> CreateChatCompletionResponse:
        """Fill `parsed` and `parsed_arguments` on `completion` (in place) and return it.

        Raises (each carrying the completion): `LengthFinishReasonError`,
        `ContentFilterFinishReasonError`, `RefusalError` (when a content target is set), and
        `OutputValidationError` for content or arguments that are not JSON or do not match.
        `tool_arguments=False` leaves the arguments to the caller (the tool loop, which tells
        the model instead of raising).
        """
        for choice in completion.choices:
            message = choice.message
            if message is None:
                continue
            index = choice.index
            if self.content is not None:
                _check_finish(completion, choice.finish_reason, message.refusal, index)
            if tool_arguments and self.tools:
                for call in message.tool_calls or ():
                    if isinstance(call, ChatCompletionMessageToolCall):
                        self._parse_call(completion, call, index)
            if self.content is None:
                continue
            if message.content is None and message.tool_calls:
                continue  # a turn of tool calls has no answer to parse yet
            text = message.text
            try:
                message.parsed = self.content.parse(text)
            except Mismatch as exc:
                raise _content_error(completion, self.content.label, text, exc, index) from None
        return completion

    def content_parser(
        self, snapshot: Callable[[], CreateChatCompletionResponse]
    ) -> Callable[[str], Any] | None:
        """The whole content as the target (for `content.done`'s `parsed`), or `None` when
        there is no content target; a mismatch raises `OutputValidationError` carrying
        `snapshot()`."""
        target = self.content
        if target is None:
            return None

        def parse_content(text: str) -> Any:
            try:
                return target.parse(text)
            except Mismatch as exc:
                raise _content_error(snapshot(), target.label, text, exc, 0) from None

        return parse_content

    def arguments_parser(
        self, snapshot: Callable[[], CreateChatCompletionResponse]
    ) -> Callable[[str, str], Any]:
        """A function call's whole arguments converted as its tool's types say (for
        `tool_calls.function.arguments.done`'s `parsed_arguments`); the JSON itself for a
        tool chatlib knows nothing of; a mismatch raises `OutputValidationError`."""

        def parse_arguments(name: str, arguments: str) -> Any:
            spec = self.tools.get(name)
            if spec is None:
                try:
                    return json.loads(arguments)
                except ValueError:
                    return None
            try:
                return spec.parse_arguments(arguments)
            except Mismatch as exc:
                raise OutputValidationError(
                    f"the arguments of a call to {name} "
                    + (f"are {exc.reason}" if exc.not_json else f"do not match: {exc}"),
                    completion=snapshot(),
                    field=path_text(exc.path),
                    problem=exc.reason,
                    content=arguments,
                ) from None

        return parse_arguments

    def _parse_call(
        self,
        completion: CreateChatCompletionResponse,
        call: ChatCompletionMessageToolCall,
        index: int,
    ) -> None:
        spec = self.tools.get(call.function.name)
        if spec is None:
            return
        try:
            call.function.parsed_arguments = spec.parse_arguments(call.function.arguments)
        except Mismatch as exc:
            where = path_text(exc.path)
            raise OutputValidationError(
                f"the arguments of the call {call.id} to {spec.name} "
                + (f"are {exc.reason}" if exc.not_json else f"do not match: {exc}"),
                completion=completion,
                field=where,
                problem=exc.reason,
                content=call.function.arguments,
                tool_call_id=call.id,
                choice_index=index,
            ) from None


def _check_finish(
    completion: CreateChatCompletionResponse, finish: Any, refusal: str | None, index: int
) -> None:
    if finish == "length":
        usage = completion.usage
        tokens = (
            f" after {usage.completion_tokens} tokens" if usage and usage.completion_tokens else ""
        )
        raise LengthFinishReasonError(
            f"the answer was cut off at the token limit{tokens} (finish_reason 'length'), so "
            "it cannot be parsed; allow more tokens (max_completion_tokens) or ask for less",
            completion=completion,
            choice_index=index,
        )
    if finish == "content_filter":
        raise ContentFilterFinishReasonError(
            "the server's content filter stopped the answer (finish_reason 'content_filter')",
            completion=completion,
            choice_index=index,
        )
    if refusal:
        raise RefusalError(
            f"the model refused: {refusal}",
            completion=completion,
            refusal=refusal,
            choice_index=index,
        )


def _content_error(
    completion: CreateChatCompletionResponse, label: str, text: str, exc: Mismatch, index: int
) -> OutputValidationError:
    if not text.strip():
        message = "the answer is empty"
    elif exc.not_json:
        message = f"the answer is {exc.reason}"
    else:
        message = f"the answer does not match {label}: {exc}"
    return OutputValidationError(
        message,
        completion=completion,
        field=path_text(exc.path),
        problem=exc.reason if text.strip() else "the answer is empty",
        content=text,
        choice_index=index,
    )


# ---------------------------------------------------------------- the request side


def _schema_name(text: str) -> str:
    return _NAME_CHARS.sub("_", text)[:64] or "response"


def _type_format(tp: Any) -> tuple[dict[str, Any], ContentTarget]:
    bare, _ = unwrap(tp)
    label = describe_type(bare)
    try:
        schema = schema_of(tp, strict=True)
        require_object_root(schema, tp)
    except SchemaError as exc:
        raise InvalidArgumentError(field_name("response_format", exc.path), exc.reason) from None
    wire = {  # a copy: the cached schema stays out of reach of whoever holds the request
        "type": "json_schema",
        "json_schema": {
            "name": _schema_name(label),
            "schema": copy.deepcopy(schema),
            "strict": True,
        },
    }
    return wire, ContentTarget(label, schema, tp, strict=True)


def _dict_format(value: Mapping[str, Any], parse: bool) -> tuple[Any, ContentTarget | None]:
    """A dict `response_format`: as given to `create`; to `parse`, a bare schema is wrapped
    (and made strict) and the answer is parsed as JSON."""
    kind = value.get("type")
    if kind in _FORMAT_TYPES and ("json_schema" in value or kind != "json_schema"):
        if not parse or kind == "text":
            return value, None
        if kind == "json_object":
            return value, ContentTarget("a JSON object", None)
        spec = value.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, Mapping) else None
        name = spec.get("name") if isinstance(spec, Mapping) else None
        label = name if isinstance(name, str) else "the schema"
        strict = isinstance(spec, Mapping) and spec.get("strict") is True
        return value, ContentTarget(
            label, schema if isinstance(schema, Mapping) else None, None, strict
        )
    if not parse:
        return value, None
    try:
        schema = strict_schema(value)
    except SchemaError as exc:
        raise InvalidArgumentError(field_name("response_format", exc.path), exc.reason) from None
    title = value.get("title")
    name = _schema_name(title) if isinstance(title, str) else "response"
    wire = {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}
    return wire, ContentTarget(name, schema, None, strict=True)


def prepare_outputs(
    response_format: Any, tools: Any, *, parse: bool
) -> tuple[Any, Any, OutputPlan | None]:
    """What to send for `response_format` and `tools`, and how to parse the answer.

    A type as `response_format` (attrs class, dataclass, TypedDict, pydantic-like class) is
    sent as a strict `json_schema` format and parsed into; functions and classes in `tools`
    become `FunctionTool`s whose calls get `parsed_arguments`. With `parse=True` (`chat.parse`)
    a dict `response_format` is parsed too: a JSON schema (bare, made strict and wrapped, or a
    whole `json_schema` format) as a dict, `json_object` as JSON. Returns `None` as the plan
    when there is nothing to parse. Raises `InvalidArgumentError` naming the field.
    """
    target: ContentTarget | None = None
    if response_format is None or isinstance(response_format, ResponseFormat):
        if parse and isinstance(response_format, ResponseFormat):
            response_format, target = _dict_format(response_format.to_dict(), parse=True)
    elif isinstance(response_format, Mapping):
        response_format, target = _dict_format(response_format, parse)
    elif isinstance(response_format, Model):
        raise InvalidArgumentError(
            "response_format",
            f"a {type(response_format).__name__} is not a response format",
        )
    else:
        response_format, target = _type_format(response_format)
    specs: dict[str, ToolSpec] = {}
    if tools is not None:
        tools, specs = as_tools(tools, parse_dicts=parse)
    if target is None and not specs:
        return response_format, tools, None
    return response_format, tools, OutputPlan(target, specs)
