"""Typed stream events, derived from the chunks: the state machine behind `stream.events()`. Pure.

`StreamEvents.on_chunk(chunk)` returns the events one chunk produces; the stream classes only
feed it the chunks they hand out. The events, their `type` strings and their order are those
of the official SDK's `client.chat.completions.stream()`:

- `chunk` for every chunk (but Azure's content-filter frames, whose `object` is `""`), then,
  for each choice in it:
- `content.delta`, `refusal.delta`, `tool_calls.function.arguments.delta` (one per tool call
  fragment), `logprobs.content.delta`, `logprobs.refusal.delta` for what it adds;
- the `.done` events of what it ends: once the choice has a `finish_reason`, its content,
  refusal, logprobs and last tool call are done; and when a new tool call starts, the content
  and the previous tool call are.

Where chatlib differs, on purpose (each one checked against the SDK by tests/test_events.py):

- every per-choice event carries `choice_index` (the SDK's do not say which choice they are
  about when `n` > 1);
- a tool call's `name` is set, not concatenated (llama.cpp repeats it in every fragment; the
  SDK then reports `get_weatherget_weather...`);
- streams the SDK cannot read work: a first chunk about choice 1, a first chunk with
  `"choices": null`, chunks without an `object` field (the SDK drops them), a choice without
  `delta`, a tool call fragment without `type` or `function`;
- a tool call that starts in the chunk that carries the choice's `finish_reason` gets its
  `.done` event (the SDK's never comes), and the stream's first chunk is parsed like the
  others (the SDK skips parsing there);
- log probabilities are counted once (the SDK repeats the first ones of a choice that first
  appears after the stream's first chunk), and a `snapshot` list is not extended afterwards;
- `parsed` is never an exception: JSON that cannot be parsed gives `None` (the SDK raises),
  and a `length` finish does not raise (the SDK raises `LengthFinishReasonError` when it
  parses).

`parsed` and `parsed_arguments` follow `EventOptions`, the hook typed classes plug into; by
default they are the JSON values, as the SDK gives them for a class `response_format` and for
`strict` tools.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal, Union

import attrs

from chatlib._accumulate import ChatCompletionAccumulator
from chatlib._partial_json import NOTHING, PartialJSON
from chatlib.models import (
    ChatCompletionChunkChoice,
    ChoiceDeltaToolCall,
    CreateChatCompletionChunk,
    CreateChatCompletionRequest,
    CreateChatCompletionResponse,
    TokenLogprob,
)

__all__ = [  # the public names (`chatlib.ContentDeltaEvent`...); the machine is internal
    "ChatCompletionStreamEvent",
    "ChunkEvent",
    "ContentDeltaEvent",
    "ContentDoneEvent",
    "FunctionToolCallArgumentsDeltaEvent",
    "FunctionToolCallArgumentsDoneEvent",
    "LogprobsContentDeltaEvent",
    "LogprobsContentDoneEvent",
    "LogprobsRefusalDeltaEvent",
    "LogprobsRefusalDoneEvent",
    "RefusalDeltaEvent",
    "RefusalDoneEvent",
]


# ---------------------------------------------------------------- the events


@attrs.frozen(kw_only=True)
class ChunkEvent:
    """A chunk arrived. Always the first event of its chunk.

    Attributes:
        chunk: The chunk as the server sent it.
        snapshot: The completion merged from every chunk so far, this one included.
    """

    type: Literal["chunk"] = attrs.field(default="chunk", init=False)
    chunk: CreateChatCompletionChunk
    snapshot: CreateChatCompletionResponse


@attrs.frozen(kw_only=True)
class ContentDeltaEvent:
    """A piece of a choice's content arrived.

    Attributes:
        delta: The new piece (may be `""`).
        snapshot: The content so far.
        parsed: For a JSON `response_format`: the value of the JSON that has fully arrived
            (see `EventOptions`); else `None`.
        choice_index: The choice it belongs to.
    """

    type: Literal["content.delta"] = attrs.field(default="content.delta", init=False)
    delta: str
    snapshot: str
    parsed: object | None = None
    choice_index: int = 0


@attrs.frozen(kw_only=True)
class ContentDoneEvent:
    """A choice's content is complete (it has a `finish_reason`, or a tool call started).

    Attributes:
        content: The whole content.
        parsed: For a JSON `response_format`: the parsed content (see `EventOptions`);
            `None` when there is none, the content is not JSON, or the choice refused.
        choice_index: The choice it belongs to.
    """

    type: Literal["content.done"] = attrs.field(default="content.done", init=False)
    content: str
    parsed: object | None = None
    choice_index: int = 0


@attrs.frozen(kw_only=True)
class RefusalDeltaEvent:
    """A piece of a choice's refusal arrived.

    Attributes:
        delta: The new piece.
        snapshot: The refusal so far.
        choice_index: The choice it belongs to.
    """

    type: Literal["refusal.delta"] = attrs.field(default="refusal.delta", init=False)
    delta: str
    snapshot: str
    choice_index: int = 0


@attrs.frozen(kw_only=True)
class RefusalDoneEvent:
    """A choice's refusal is complete.

    Attributes:
        refusal: The whole refusal.
        choice_index: The choice it belongs to.
    """

    type: Literal["refusal.done"] = attrs.field(default="refusal.done", init=False)
    refusal: str
    choice_index: int = 0


@attrs.frozen(kw_only=True)
class FunctionToolCallArgumentsDeltaEvent:
    """A fragment of a function tool call arrived.

    Attributes:
        name: The function's name.
        index: The tool call's index in the message.
        arguments: The arguments so far (raw JSON text).
        parsed_arguments: For a `strict` tool: the value of the arguments that have fully
            arrived; else `None`.
        arguments_delta: The new piece of the arguments (may be `""`).
        choice_index: The choice it belongs to.
    """

    type: Literal["tool_calls.function.arguments.delta"] = attrs.field(
        default="tool_calls.function.arguments.delta", init=False
    )
    name: str
    index: int
    arguments: str
    parsed_arguments: object | None = None
    arguments_delta: str
    choice_index: int = 0


@attrs.frozen(kw_only=True)
class FunctionToolCallArgumentsDoneEvent:
    """A function tool call is complete (the next one started, or the choice finished).

    Attributes:
        name: The function's name.
        index: The tool call's index in the message.
        arguments: The whole arguments (raw JSON text).
        parsed_arguments: For a `strict` tool: the parsed arguments (see `EventOptions`);
            `None` for other tools and for arguments that are not JSON.
        choice_index: The choice it belongs to.
    """

    type: Literal["tool_calls.function.arguments.done"] = attrs.field(
        default="tool_calls.function.arguments.done", init=False
    )
    name: str
    index: int
    arguments: str
    parsed_arguments: object | None = None
    choice_index: int = 0


@attrs.frozen(kw_only=True)
class LogprobsContentDeltaEvent:
    """Log probabilities of content tokens arrived.

    Attributes:
        content: The new tokens' log probabilities.
        snapshot: All of the choice's so far.
        choice_index: The choice it belongs to.
    """

    type: Literal["logprobs.content.delta"] = attrs.field(
        default="logprobs.content.delta", init=False
    )
    content: list[TokenLogprob]
    snapshot: list[TokenLogprob]
    choice_index: int = 0


@attrs.frozen(kw_only=True)
class LogprobsContentDoneEvent:
    """A choice's content log probabilities are complete.

    Attributes:
        content: All of them.
        choice_index: The choice it belongs to.
    """

    type: Literal["logprobs.content.done"] = attrs.field(
        default="logprobs.content.done", init=False
    )
    content: list[TokenLogprob]
    choice_index: int = 0


@attrs.frozen(kw_only=True)
class LogprobsRefusalDeltaEvent:
    """Log probabilities of refusal tokens arrived.

    Attributes:
        refusal: The new tokens' log probabilities.
        snapshot: All of the choice's so far.
        choice_index: The choice it belongs to.
    """

    type: Literal["logprobs.refusal.delta"] = attrs.field(
        default="logprobs.refusal.delta", init=False
    )
    refusal: list[TokenLogprob]
    snapshot: list[TokenLogprob]
    choice_index: int = 0


@attrs.frozen(kw_only=True)
class LogprobsRefusalDoneEvent:
    """A choice's refusal log probabilities are complete.

    Attributes:
        refusal: All of them.
        choice_index: The choice it belongs to.
    """

    type: Literal["logprobs.refusal.done"] = attrs.field(
        default="logprobs.refusal.done", init=False
    )
    refusal: list[TokenLogprob]
    choice_index: int = 0


ChatCompletionStreamEvent = Union[
    ChunkEvent,
    ContentDeltaEvent,
    ContentDoneEvent,
    RefusalDeltaEvent,
    RefusalDoneEvent,
    FunctionToolCallArgumentsDeltaEvent,
    FunctionToolCallArgumentsDoneEvent,
    LogprobsContentDeltaEvent,
    LogprobsContentDoneEvent,
    LogprobsRefusalDeltaEvent,
    LogprobsRefusalDoneEvent,
]
"""Any event of `stream.events()`; tell them apart by `event.type` (type checkers narrow on it)."""


# ---------------------------------------------------------------- what gets parsed


def _loads(text: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None


@attrs.frozen(kw_only=True)
class EventOptions:
    """What the events parse, and how: the hook for typed structured outputs.

    `EventOptions.for_request(request)` gives the defaults: content is JSON when
    `response_format` is a `json_schema` or `json_object` format, and the arguments of the
    tools declared `"strict": true` are parsed. Converting the JSON values into typed objects
    (a class given as `response_format`, a typed function as a tool) is done by passing the
    conversions below.

    Attributes:
        json_content: Whether the content is JSON: `content.delta` then has `parsed` (the
            JSON that has fully arrived) and `content.done` the parsed content.
        parse_partial: Turns the JSON that has fully arrived (a dict, for an object) into
            `content.delta`'s `parsed`; default: the JSON value itself.
        parse_content: Turns the whole content into `content.done`'s `parsed`; default:
            `json.loads`, with `None` for content that is not JSON.
        strict_tools: The names of the functions whose arguments are parsed, partially in
            `tool_calls.function.arguments.delta`, whole in `.done`.
        parse_arguments: Turns `(name, arguments)` into `.done`'s `parsed_arguments` for
            those functions; default: `json.loads`, with `None` for arguments that are not JSON.

    An exception a conversion raises comes out of the `events()` loop as it is (a validation
    error of the typed parsing, say); the defaults never raise.
    """

    json_content: bool = False
    parse_partial: Callable[[Any], object] | None = None
    parse_content: Callable[[str], object] | None = None
    strict_tools: frozenset[str] = frozenset()
    parse_arguments: Callable[[str, str], object] | None = None

    @classmethod
    def for_request(cls, request: CreateChatCompletionRequest) -> EventOptions:
        """The defaults for `request`: JSON content for a `json_schema`/`json_object`
        `response_format`; parsed arguments for the functions declared strict."""
        return cls(
            json_content=_format_type(request.response_format) in ("json_schema", "json_object"),
            strict_tools=frozenset(_strict_functions(request.tools or ())),
        )


def _as_dict(value: Any) -> Any:
    to_dict = getattr(value, "to_dict", None)
    return to_dict() if callable(to_dict) else value


def _format_type(response_format: Any) -> Any:
    response_format = _as_dict(response_format)
    return response_format.get("type") if isinstance(response_format, Mapping) else None


def _strict_functions(tools: Iterable[Any]) -> Iterable[str]:
    for tool in tools:
        tool = _as_dict(tool)
        if not isinstance(tool, Mapping) or tool.get("type", "function") != "function":
            continue
        function = tool.get("function")
        if isinstance(function, Mapping) and function.get("strict") and function.get("name"):
            yield function["name"]


# ---------------------------------------------------------------- the state machine


class _ToolCall:
    __slots__ = ("arguments", "json", "name", "type")

    def __init__(self) -> None:
        self.name = ""
        self.type: str | None = None
        self.arguments = ""
        self.json: PartialJSON | None = None


class _Choice:
    __slots__ = (
        "content",
        "content_done",
        "content_json",
        "current_tool",
        "done_tools",
        "finished",
        "logprobs_content",
        "logprobs_content_done",
        "logprobs_refusal",
        "logprobs_refusal_done",
        "logprobs_seen",
        "refusal",
        "refusal_done",
        "tools",
    )

    def __init__(self) -> None:
        self.content: str | None = None
        self.refusal: str | None = None
        self.finished = False
        self.tools: dict[int, _ToolCall] = {}
        self.current_tool: int | None = None
        self.done_tools: set[int] = set()
        self.logprobs_seen = False
        self.logprobs_content: list[TokenLogprob] | None = None
        self.logprobs_refusal: list[TokenLogprob] | None = None
        self.content_done = self.refusal_done = False
        self.logprobs_content_done = self.logprobs_refusal_done = False
        self.content_json: PartialJSON | None = None


class StreamEvents:
    """Feed it the chunks of one stream, in order; each `on_chunk` returns that chunk's events.

    Args:
        options: What to parse (`EventOptions`); default: nothing.
        accumulator: The accumulator whose `result()` is each `chunk` event's `snapshot`.
            Pass a stream's own, fed before `on_chunk` is called; by default the machine
            keeps one and feeds it itself.
    """

    def __init__(
        self,
        options: EventOptions | None = None,
        *,
        accumulator: ChatCompletionAccumulator | None = None,
    ) -> None:
        self._options = options if options is not None else EventOptions()
        self._feeds_accumulator = accumulator is None
        self._accumulator = accumulator if accumulator is not None else ChatCompletionAccumulator()
        self._choices: dict[int, _Choice] = {}

    def on_chunk(self, chunk: CreateChatCompletionChunk) -> list[ChatCompletionStreamEvent]:
        """The events `chunk` produces, in the official SDK's order."""
        if self._feeds_accumulator:
            self._accumulator.add(chunk)
        if chunk.object == "":
            return []  # Azure's asynchronous content-filter frames: not chunks (as in the SDK)
        events: list[ChatCompletionStreamEvent] = [
            ChunkEvent(chunk=chunk, snapshot=self._accumulator.result())
        ]
        for choice in chunk.choices:
            index = choice.index or 0
            state = self._choices.get(index)
            if state is None:
                state = self._choices[index] = _Choice()
            self._on_choice(state, index, choice, events)
        return events

    def _on_choice(
        self,
        state: _Choice,
        index: int,
        choice: ChatCompletionChunkChoice,
        events: list[ChatCompletionStreamEvent],
    ) -> None:
        delta = choice.delta
        content = refusal = None
        fragments: list[ChoiceDeltaToolCall] = []
        if delta is not None:
            content, refusal = delta.content, delta.refusal
            fragments = delta.tool_calls or fragments
        if choice.finish_reason:
            state.finished = True
        # What the chunk adds.
        if content is not None:
            state.content = content if state.content is None else state.content + content
            if self._options.json_content:
                if state.content_json is None:
                    state.content_json = PartialJSON()
                state.content_json.feed(content)
        if refusal is not None:
            state.refusal = refusal if state.refusal is None else state.refusal + refusal
        for fragment in fragments:
            call = state.tools.get(fragment.index or 0)
            if call is None:
                call = state.tools[fragment.index or 0] = _ToolCall()
            if fragment.type:
                call.type = fragment.type
            function = fragment.function
            if function is not None:
                if function.name:
                    call.name = function.name
                if function.arguments:
                    call.arguments += function.arguments
                    if call.json is not None:
                        call.json.feed(function.arguments)
                    elif call.name in self._options.strict_tools:
                        call.json = PartialJSON()
                        call.json.feed(call.arguments)
        logprobs = choice.logprobs
        if logprobs is not None:
            if not state.logprobs_seen:
                state.logprobs_seen = True
                if logprobs.content is not None:
                    state.logprobs_content = list(logprobs.content)
                if logprobs.refusal is not None:
                    state.logprobs_refusal = list(logprobs.refusal)
            else:
                if logprobs.content:
                    state.logprobs_content = [*(state.logprobs_content or ()), *logprobs.content]
                if logprobs.refusal:
                    state.logprobs_refusal = [*(state.logprobs_refusal or ()), *logprobs.refusal]
        # Its delta events.
        if content is not None and state.content is not None:
            events.append(
                ContentDeltaEvent(
                    delta=content,
                    snapshot=state.content,
                    parsed=self._partial_content(state),
                    choice_index=index,
                )
            )
        if refusal is not None and state.refusal is not None:
            events.append(
                RefusalDeltaEvent(delta=refusal, snapshot=state.refusal, choice_index=index)
            )
        for fragment in fragments:
            call = state.tools[fragment.index or 0]
            if call.type == "custom":
                continue
            function = fragment.function
            events.append(
                FunctionToolCallArgumentsDeltaEvent(
                    name=call.name,
                    index=fragment.index or 0,
                    arguments=call.arguments,
                    parsed_arguments=_value(call.json),
                    arguments_delta=(function.arguments or "") if function is not None else "",
                    choice_index=index,
                )
            )
        if logprobs is not None and state.logprobs_seen:
            if logprobs.content and state.logprobs_content:
                events.append(
                    LogprobsContentDeltaEvent(
                        content=list(logprobs.content),
                        snapshot=state.logprobs_content,
                        choice_index=index,
                    )
                )
            if logprobs.refusal and state.logprobs_refusal:
                events.append(
                    LogprobsRefusalDeltaEvent(
                        refusal=list(logprobs.refusal),
                        snapshot=state.logprobs_refusal,
                        choice_index=index,
                    )
                )
        # The done events of what it ends.
        if state.finished:
            self._content_done(state, index, events)
            if state.current_tool is not None:
                self._tool_done(state, index, state.current_tool, events)
        for fragment in fragments:
            tool_index = fragment.index or 0
            if state.current_tool != tool_index:
                self._content_done(state, index, events)
                if state.current_tool is not None:
                    self._tool_done(state, index, state.current_tool, events)
            state.current_tool = tool_index
        if state.finished and state.current_tool is not None:
            # A tool call that started in the finishing chunk (the SDK leaves it undone).
            self._tool_done(state, index, state.current_tool, events)

    def _partial_content(self, state: _Choice) -> object | None:
        parser = state.content_json
        if parser is None or state.refusal or not state.content or not state.content.strip():
            return None
        value = parser.value()
        if value is NOTHING:
            return None
        parse = self._options.parse_partial
        return value if parse is None else parse(value)

    def _content_done(
        self, state: _Choice, index: int, events: list[ChatCompletionStreamEvent]
    ) -> None:
        if state.content and not state.content_done:
            state.content_done = True
            parsed = None
            if self._options.json_content and not state.refusal:
                parse = self._options.parse_content
                parsed = _loads(state.content) if parse is None else parse(state.content)
            events.append(
                ContentDoneEvent(content=state.content, parsed=parsed, choice_index=index)
            )
        if state.refusal is not None and not state.refusal_done:
            state.refusal_done = True
            events.append(RefusalDoneEvent(refusal=state.refusal, choice_index=index))
        if state.logprobs_content is not None and not state.logprobs_content_done:
            state.logprobs_content_done = True
            events.append(
                LogprobsContentDoneEvent(content=state.logprobs_content, choice_index=index)
            )
        if state.logprobs_refusal is not None and not state.logprobs_refusal_done:
            state.logprobs_refusal_done = True
            events.append(
                LogprobsRefusalDoneEvent(refusal=state.logprobs_refusal, choice_index=index)
            )

    def _tool_done(
        self, state: _Choice, index: int, tool_index: int, events: list[ChatCompletionStreamEvent]
    ) -> None:
        if tool_index in state.done_tools:
            return
        state.done_tools.add(tool_index)
        call = state.tools[tool_index]
        if call.type == "custom":
            return
        parsed = None
        if call.name in self._options.strict_tools:
            parse = self._options.parse_arguments
            parsed = _loads(call.arguments) if parse is None else parse(call.name, call.arguments)
        events.append(
            FunctionToolCallArgumentsDoneEvent(
                name=call.name,
                index=tool_index,
                arguments=call.arguments,
                parsed_arguments=parsed,
                choice_index=index,
            )
        )


def _value(parser: PartialJSON | None) -> Any:
    if parser is None:
        return None
    value = parser.value()
    return None if value is NOTHING else value
