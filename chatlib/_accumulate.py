"""Folds streamed chunks into one completion, as if the call had not been streamed.

Robust to what real servers do: Ollama repeats the role in every delta, llama.cpp repeats a
tool call's id, type and name in every delta (only `arguments` are pieces to concatenate),
llama-server interleaves choices and sends one usage chunk per choice, Groq puts usage under
`x_groq.usage`, reasoning servers stream `reasoning_content` beside `content`.
"""

from __future__ import annotations

from typing import Any

from chatlib._serde import ModelShapeError
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
        "content",
        "content_seen",
        "extra_text",
        "finish_reason",
        "function_args",
        "function_name",
        "logprobs",
        "refusal",
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
        self.extra_text: dict[str, list[str]] = {}
        self.audio: _AudioState | None = None


def _text(value: Any, what: str) -> str | None:
    """`value` if it is text (or absent); a wrong type is the server's fault, reported."""
    if value is None or value.__class__ is str:
        return value
    raise ModelShapeError(f"{what} must be a string, got {type(value).__name__}")


def _index(value: Any, what: str) -> int:
    if value is None:
        return 0  # some servers leave the index out when there is a single choice
    if value.__class__ is int:
        return value
    raise ModelShapeError(f"{what} must be an integer, got {type(value).__name__}")


class ChatCompletionAccumulator:
    """Add chunks with `add`; `result` is the completion they make up so far."""

    def __init__(self) -> None:
        self._choices: dict[int, _ChoiceState] = {}
        self._header: dict[str, Any] = {}
        self._usage: ChatCompletionUsage | None = None

    def add(self, chunk: CreateChatCompletionChunk) -> None:
        """Fold one chunk in.

        Raises:
            ModelShapeError: a value the merge needs has the wrong type (e.g. a number as
                `delta.content`); the core reports it as `APIResponseValidationError`.
        """
        header = self._header
        for name in ("id", "created", "model", "system_fingerprint", "service_tier"):
            value = getattr(chunk, name)
            if value:  # Azure's first chunk has empty id/model: keep the real ones
                header[name] = value
        if chunk.usage is not None:
            self._usage = chunk.usage
        else:
            groq = chunk.extra.get("x_groq")
            if isinstance(groq, dict) and isinstance(groq.get("usage"), dict):
                self._usage = ChatCompletionUsage.from_dict(groq["usage"])
        for choice in chunk.choices:
            index = _index(choice.index, "choices[].index")
            state = self._choices.get(index)
            if state is None:
                state = self._choices[index] = _ChoiceState()
            if choice.finish_reason is not None:
                state.finish_reason = choice.finish_reason
            if choice.logprobs is not None and choice.logprobs.content:
                if state.logprobs is None:
                    state.logprobs = []
                state.logprobs.extend(choice.logprobs.content)
            delta = choice.delta
            if delta is None:
                continue
            if delta.role is not None:
                state.role = delta.role
            content = _text(delta.content, "delta.content")
            if content is not None:
                state.content_seen = True
                if content:
                    state.content.append(content)
            refusal = _text(delta.refusal, "delta.refusal")
            if refusal:
                state.refusal.append(refusal)
            if delta.tool_calls:
                _add_tool_calls(state, delta.tool_calls)
            if delta.function_call is not None:
                function_name = _text(delta.function_call.name, "delta.function_call.name")
                if function_name:
                    state.function_name = function_name
                if state.function_args is None:
                    state.function_args = []
                arguments = _text(delta.function_call.arguments, "delta.function_call.arguments")
                if arguments:
                    state.function_args.append(arguments)
            if delta.audio is not None:
                _add_audio(state, delta.audio)
            for key, value in delta.extra.items():
                if isinstance(value, str):
                    state.extra_text.setdefault(key, []).append(value)

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
        for name in ("system_fingerprint", "service_tier"):
            if name in header:
                setattr(response, name, header[name])
        return response


def _add_tool_calls(state: _ChoiceState, fragments: list[Any]) -> None:
    for fragment in fragments:
        index = _index(fragment.index, "delta.tool_calls[].index")
        call = state.tool_calls.get(index)
        if call is None:
            call = state.tool_calls[index] = _ToolCallState()
        if fragment.id:
            call.id = _text(fragment.id, "delta.tool_calls[].id")
        if fragment.type:
            call.type = _text(fragment.type, "delta.tool_calls[].type")
        function = fragment.function
        if function is not None:
            name = _text(function.name, "delta.tool_calls[].function.name")
            if name:
                call.name = name  # set, never concatenated (llama.cpp repeats it)
            arguments = _text(function.arguments, "delta.tool_calls[].function.arguments")
            if arguments:
                call.arguments.append(arguments)
        custom = fragment.custom
        if isinstance(custom, dict):
            name = _text(custom.get("name"), "delta.tool_calls[].custom.name")
            if name:
                call.name = name
            piece = _text(custom.get("input"), "delta.tool_calls[].custom.input")
            if piece:
                call.custom_input.append(piece)


def _add_audio(state: _ChoiceState, audio: ChatCompletionAudio) -> None:
    """Audio output streams as base64 `data` and `transcript` pieces, plus its `id`."""
    if state.audio is None:
        state.audio = _AudioState()
    merged = state.audio
    if audio.id:
        merged.id = _text(audio.id, "delta.audio.id")
    if audio.expires_at is not None:
        merged.expires_at = audio.expires_at
    data = _text(audio.data, "delta.audio.data")
    if data:
        merged.data.append(data)
    transcript = _text(audio.transcript, "delta.audio.transcript")
    if transcript:
        merged.transcript.append(transcript)


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
    if state.extra_text:
        message.extra = {key: "".join(parts) for key, parts in state.extra_text.items()}
    choice = ChatCompletionChoice(index=index, message=message, finish_reason=state.finish_reason)
    if state.logprobs is not None:
        choice.logprobs = ChoiceLogprobs(content=state.logprobs)
    return choice
