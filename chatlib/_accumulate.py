"""Folds streamed chunks into one completion, as if the call had not been streamed.

Robust to what real servers do: Ollama repeats the role in every delta, llama.cpp repeats a
tool call's id, type and name in every delta (only `arguments` are pieces to concatenate),
llama-server interleaves choices and sends one usage chunk per choice, Groq puts usage under
`x_groq.usage`, reasoning servers stream `reasoning_content` (DeepSeek, vLLM) or `reasoning`
(OpenRouter, Ollama) beside `content`. What a server adds to the schema is kept: a delta's
unknown text fields are concatenated, its unknown lists extended (an item whose `index` was
seen is merged into that item, as tool calls are: OpenRouter's `reasoning_details`) and its
other unknown values set; the unknown fields of a choice (Azure's `content_filter_results`)
and of a chunk (Azure's `prompt_filter_results`, llama-server's `timings`, Groq's `x_groq`)
keep their latest value that is not null or empty, in the choice's and the completion's
`extra`. Every stream object keeps one (`stream.accumulated`); it is public as
`chatlib.ChatCompletionAccumulator` for chunks obtained some other way.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from chatlib._model_base import EMPTY_EXTRA
from chatlib._serde import ModelShapeError, structure_hook
from chatlib.errors import APIResponseValidationError
from chatlib.models import (
    ChatCompletionAudio,
    ChatCompletionChoice,
    ChatCompletionMessageToolCall,
    ChatCompletionUsage,
    ChatMessage,
    ChatRole,
    ChoiceLogprobs,
    CreateChatCompletionChunk,
    CreateChatCompletionResponse,
    FinishReason,
    FunctionCall,
    TokenLogprob,
)

__all__ = ["ChatCompletionAccumulator"]


class _ToolCallState:
    __slots__ = ("arguments", "custom_input", "id", "name", "type")

    def __init__(self) -> None:
        self.id: str | None = None
        self.type: str | None = None
        self.name: str | None = None
        self.arguments: list[str] = []
        self.custom_input: list[str] = []


class _AudioState:
    __slots__ = ("data", "expires_at", "id", "transcript")

    def __init__(self) -> None:
        self.id: str | None = None
        self.expires_at: int | None = None
        self.data: list[str] = []
        self.transcript: list[str] = []


class _ChoiceState:
    __slots__ = (
        "audio",
        "choice_extra",
        "content",
        "content_seen",
        "extra_text",
        "extra_values",
        "finish_reason",
        "function_args",
        "function_name",
        "logprobs",
        "refusal",
        "refusal_logprobs",
        "role",
        "tool_calls",
    )

    def __init__(self) -> None:
        self.role: ChatRole | None = None
        self.content: list[str] = []
        self.content_seen = False  # any delta with a content string, "" included
        self.refusal: list[str] = []
        self.tool_calls: dict[int, _ToolCallState] = {}
        self.function_name: str | None = None
        self.function_args: list[str] | None = None
        self.finish_reason: FinishReason | None = None
        self.logprobs: list[TokenLogprob] | None = None
        self.refusal_logprobs: list[TokenLogprob] | None = None
        self.extra_text: dict[str, list[str]] = {}
        self.extra_values: dict[str, Any] = {}  # a delta's unknown fields that are not text
        self.choice_extra: dict[str, Any] = {}  # the choice's own unknown fields
        self.audio: _AudioState | None = None


def _text(value: Any, what: str) -> str | None:
    """`value` if it is text (or absent); a wrong type is the server's fault, reported."""
    if value is None or value.__class__ is str:
        return value
    raise ModelShapeError(f"{what} must be a string, got {type(value).__name__}")


def _filled(value: Any) -> bool:
    """Whether an unknown field's value says something: not null, not `{}`, `[]` or `""`
    (Azure's later chunks send `"content_filter_results": {}`, which must not blank the
    results an earlier chunk carried)."""
    if value is None:
        return False
    return bool(value) if value.__class__ in (dict, list, str) else True


def _keep_latest(target: dict[str, Any], extra: Mapping[str, Any]) -> None:
    for key, value in extra.items():
        if _filled(value):
            target[key] = value


def _index(value: Any, what: str) -> int:
    if value is None:
        return 0  # some servers leave the index out when there is a single choice
    if value.__class__ is int:
        return value
    raise ModelShapeError(f"{what} must be an integer, got {type(value).__name__}")


class ChatCompletionAccumulator:
    """Merges streamed chunks into the completion they make up, as the server would have sent
    it unstreamed: `add` each chunk in order, read `result()` whenever you like.

    Every stream keeps one (`stream.accumulated`, and the `.partial` of the error a failed
    stream raises); use your own for chunks obtained elsewhere (a queue, a log, another
    client's stream). Content, refusals, reasoning text, tool call arguments and log
    probabilities are concatenated per choice; roles, ids, tool names and usage are set, so
    servers that repeat them (Ollama, llama.cpp) do not get `assistantassistant`. Fields a
    server adds are kept in `.extra`: a delta's (text joined, lists merged by `index`) in the
    message's, a choice's and a chunk's (their latest non-empty value) in the choice's and
    the completion's.

    ```python
    from chatlib import ChatCompletionAccumulator

    accumulator = ChatCompletionAccumulator()
    for piece in ["Hel", "lo"]:
        accumulator.add({"id": "c1", "choices": [{"index": 0, "delta": {"content": piece}}]})
    assert accumulator.result().text == "Hello"
    ```
    """

    def __init__(self) -> None:
        self._choices: dict[int, _ChoiceState] = {}
        self._header: dict[str, Any] = {}
        self._extra: dict[str, Any] = {}  # the chunks' unknown top-level fields
        self._usage: ChatCompletionUsage | None = None

    def add(self, chunk: CreateChatCompletionChunk | Mapping[str, Any] | Any) -> None:
        """Merge one chunk in: a `CreateChatCompletionChunk`, its JSON as a dict, or a chunk
        object of another library that has `model_dump()` (the official SDK's).

        A chunk is merged whole or not at all.

        Raises:
            APIResponseValidationError: the chunk does not have the shape of a chunk, or a
                value the merge needs has the wrong type (e.g. a number as `delta.content`);
                the chunk is in `.body`, and nothing of it was merged.
        """
        if not isinstance(chunk, CreateChatCompletionChunk):
            chunk = _as_chunk(chunk)
        try:
            _check(chunk)
        except ModelShapeError as exc:
            raise _shape_error(
                f"a stream chunk has a value of the wrong type: {exc}", chunk
            ) from None
        self._add(chunk)

    def _add(self, chunk: CreateChatCompletionChunk) -> None:
        header = self._header
        # Azure's first chunk has empty id/model: keep the real ones.
        if chunk.id:
            header["id"] = chunk.id
        if chunk.created:
            header["created"] = chunk.created
        if chunk.model:
            header["model"] = chunk.model
        if chunk.system_fingerprint:
            header["system_fingerprint"] = chunk.system_fingerprint
        if chunk.service_tier:
            header["service_tier"] = chunk.service_tier
        if chunk.moderation is not None:  # the moderation chunk of a moderated completion
            header["moderation"] = chunk.moderation
        extra = chunk.extra
        if extra is not EMPTY_EXTRA and extra:
            _keep_latest(self._extra, extra)
        if chunk.usage is not None:
            self._usage = chunk.usage
        elif extra is not EMPTY_EXTRA and extra:
            groq = extra.get("x_groq")
            if isinstance(groq, dict) and isinstance(groq.get("usage"), dict):
                self._usage = ChatCompletionUsage.from_dict(groq["usage"])
        for choice in chunk.choices:
            index = choice.index or 0  # some servers leave it out when there is one choice
            state = self._choices.get(index)
            if state is None:
                state = self._choices[index] = _ChoiceState()
            if choice.finish_reason is not None:
                state.finish_reason = choice.finish_reason
            if choice.extra is not EMPTY_EXTRA and choice.extra:
                _keep_latest(state.choice_extra, choice.extra)
            logprobs = choice.logprobs
            if logprobs is not None:
                if logprobs.content:
                    if state.logprobs is None:
                        state.logprobs = []
                    state.logprobs.extend(logprobs.content)
                if logprobs.refusal:
                    if state.refusal_logprobs is None:
                        state.refusal_logprobs = []
                    state.refusal_logprobs.extend(logprobs.refusal)
            delta = choice.delta
            if delta is None:
                continue
            if delta.role is not None:
                state.role = delta.role
            content = delta.content
            if content is not None:
                state.content_seen = True
                if content:
                    state.content.append(content)
            if delta.refusal:
                state.refusal.append(delta.refusal)
            if delta.tool_calls:
                _add_tool_calls(state, delta.tool_calls)
            function_call = delta.function_call
            if function_call is not None:
                if function_call.name:
                    state.function_name = function_call.name
                if state.function_args is None:
                    state.function_args = []
                if function_call.arguments:
                    state.function_args.append(function_call.arguments)
            if delta.audio is not None:
                _add_audio(state, delta.audio)
            if delta.extra is not EMPTY_EXTRA and delta.extra:
                for key, value in delta.extra.items():
                    if isinstance(value, str):
                        state.extra_text.setdefault(key, []).append(value)
                    elif isinstance(value, list):  # e.g. OpenRouter's `reasoning_details`
                        pieces = state.extra_values.get(key)
                        if not isinstance(pieces, list):
                            pieces = state.extra_values[key] = []
                        _extend_pieces(pieces, value)
                    elif value is not None:
                        state.extra_values[key] = value

    def result(self) -> CreateChatCompletionResponse:
        """The completion assembled from the chunks added so far."""
        choices = [_build_choice(i, self._choices[i]) for i in sorted(self._choices)]
        header = self._header
        response = CreateChatCompletionResponse(
            id=header.get("id"),
            object="chat.completion",
            created=header.get("created"),
            model=header.get("model"),
            choices=choices,
        )
        if self._usage is not None:
            response.usage = self._usage
        for name in ("system_fingerprint", "service_tier", "moderation"):
            if name in header:
                setattr(response, name, header[name])
        if self._extra:
            response.extra = dict(self._extra)
        return response


# The fields of an indexed list item that name it rather than carry streamed text.
_ITEM_NAMES = frozenset({"index", "type", "id", "format"})


def _extend_pieces(pieces: list[Any], items: list[Any]) -> None:
    """Add a delta list's items: one whose `index` was seen is merged into that item (its
    text fields concatenated, its other fields set), as for tool calls; the rest appended.
    So OpenRouter's `reasoning_details` pieces make the entries a non-streamed answer has."""
    for item in items:
        position = item.get("index") if isinstance(item, dict) else None
        if position.__class__ is not int:
            pieces.append(item)
            continue
        for seen in pieces:
            if isinstance(seen, dict) and seen.get("index") == position:
                for name, value in item.items():
                    before = seen.get(name)
                    if name not in _ITEM_NAMES and isinstance(value, str):
                        seen[name] = before + value if isinstance(before, str) else value
                    elif value is not None:
                        seen[name] = value
                break
        else:
            pieces.append(dict(item))


def _add_tool_calls(state: _ChoiceState, fragments: list[Any]) -> None:
    for fragment in fragments:
        index = fragment.index or 0
        call = state.tool_calls.get(index)
        if call is None:
            call = state.tool_calls[index] = _ToolCallState()
        if fragment.id:
            call.id = fragment.id
        if fragment.type:
            call.type = fragment.type
        function = fragment.function
        if function is not None:
            if function.name:
                call.name = function.name  # set, never concatenated (llama.cpp repeats it)
            if function.arguments:
                call.arguments.append(function.arguments)
        custom = fragment.custom
        if isinstance(custom, dict):
            if custom.get("name"):
                call.name = custom["name"]
            if custom.get("input"):
                call.custom_input.append(custom["input"])


def _add_audio(state: _ChoiceState, audio: ChatCompletionAudio) -> None:
    """Audio output streams as base64 `data` and `transcript` pieces, plus its `id`."""
    if state.audio is None:
        state.audio = _AudioState()
    merged = state.audio
    if audio.id:
        merged.id = audio.id
    if audio.expires_at is not None:
        merged.expires_at = audio.expires_at
    if audio.data:
        merged.data.append(audio.data)
    if audio.transcript:
        merged.transcript.append(audio.transcript)


# ---------------------------------------------------------------- checked before merging


def _check(chunk: CreateChatCompletionChunk) -> None:
    """Raise `ModelShapeError` for a value the merge needs that has the wrong type, before
    anything is merged: a chunk goes in whole or not at all."""
    for choice in chunk.choices:
        index = choice.index
        if index is not None and index.__class__ is not int:
            _index(index, "choices[].index")
        delta = choice.delta
        if delta is None:
            continue
        content = delta.content
        if content is not None and content.__class__ is not str:
            _text(content, "delta.content")
        if delta.refusal is not None:
            _text(delta.refusal, "delta.refusal")
        for fragment in delta.tool_calls or ():
            _index(fragment.index, "delta.tool_calls[].index")
            _text(fragment.id or None, "delta.tool_calls[].id")
            _text(fragment.type or None, "delta.tool_calls[].type")
            function = fragment.function
            if function is not None:
                _text(function.name, "delta.tool_calls[].function.name")
                _text(function.arguments, "delta.tool_calls[].function.arguments")
            custom = fragment.custom
            if isinstance(custom, dict):
                _text(custom.get("name"), "delta.tool_calls[].custom.name")
                _text(custom.get("input"), "delta.tool_calls[].custom.input")
        if delta.function_call is not None:
            _text(delta.function_call.name, "delta.function_call.name")
            _text(delta.function_call.arguments, "delta.function_call.arguments")
        audio = delta.audio
        if audio is not None:
            _text(audio.id or None, "delta.audio.id")
            _text(audio.data, "delta.audio.data")
            _text(audio.transcript, "delta.audio.transcript")


_structure_chunk = structure_hook(CreateChatCompletionChunk)


def _as_chunk(data: Any) -> CreateChatCompletionChunk:
    """A chunk given as JSON data or as another library's model object, as ours."""
    dump = getattr(data, "model_dump", None)
    if callable(dump) and not isinstance(data, Mapping):
        try:
            data = dump(mode="json", exclude_unset=True)
        except TypeError:
            data = dump()
    if not isinstance(data, Mapping):
        raise APIResponseValidationError(
            f"expected a chunk (a CreateChatCompletionChunk or its JSON), got {type(data).__name__}"
        )
    try:
        chunk: CreateChatCompletionChunk = _structure_chunk(data, None)
    except (ModelShapeError, TypeError, ValueError, AttributeError) as exc:
        raise APIResponseValidationError(
            f"a stream frame does not have the shape of a chunk: {exc}",
            raw_body=_json_bytes(data),
            body=data,
        ) from None
    return chunk


def _json_bytes(data: Any) -> bytes:
    try:
        return json.dumps(data, ensure_ascii=False, default=repr).encode("utf-8")
    except (TypeError, ValueError):
        return repr(data).encode("utf-8")


def _shape_error(message: str, chunk: CreateChatCompletionChunk) -> APIResponseValidationError:
    body = chunk.to_dict()
    return APIResponseValidationError(message, raw_body=_json_bytes(body), body=body)


def _build_choice(index: int, state: _ChoiceState) -> ChatCompletionChoice:
    message = ChatMessage(
        role=state.role or ChatRole.ASSISTANT,
        # As the official SDK merges it: null unless some delta carried content ("" counts).
        content="".join(state.content) if state.content_seen else None,
    )
    if state.refusal:
        message.refusal = "".join(state.refusal)
    if state.tool_calls:
        calls: list[Any] = []
        for i in sorted(state.tool_calls):
            call = state.tool_calls[i]
            if call.type == "custom":
                calls.append(
                    {
                        "id": call.id or "",
                        "type": "custom",
                        "custom": {"name": call.name or "", "input": "".join(call.custom_input)},
                    }
                )
            else:
                calls.append(
                    ChatCompletionMessageToolCall(
                        id=call.id or "",
                        function=FunctionCall(
                            name=call.name or "", arguments="".join(call.arguments)
                        ),
                    )
                )
        message.tool_calls = calls
    if state.function_args is not None:
        message.function_call = FunctionCall(
            name=state.function_name or "", arguments="".join(state.function_args)
        )
    if state.audio is not None:
        audio = ChatCompletionAudio(
            id=state.audio.id,
            data="".join(state.audio.data),
            transcript="".join(state.audio.transcript),
        )
        if state.audio.expires_at is not None:
            audio.expires_at = state.audio.expires_at
        message.audio = audio
    if state.extra_text or state.extra_values:
        extra = {
            key: [dict(v) if isinstance(v, dict) else v for v in value]
            if isinstance(value, list)
            else value
            for key, value in state.extra_values.items()
        }
        extra.update((key, "".join(parts)) for key, parts in state.extra_text.items())
        message.extra = extra
    choice = ChatCompletionChoice(index=index, message=message, finish_reason=state.finish_reason)
    if state.choice_extra:
        choice.extra = dict(state.choice_extra)
    if state.logprobs is not None or state.refusal_logprobs is not None:
        choice.logprobs = ChoiceLogprobs(content=state.logprobs)
        if state.refusal_logprobs is not None:
            choice.logprobs.refusal = state.refusal_logprobs
    return choice
