"""Folds streamed chunks into one completion, as if the call had not been streamed.

Robust to what real servers do: Ollama repeats the role in every delta, llama.cpp repeats a
tool call's id, type and name in every delta (only ``arguments`` are pieces to concatenate),
llama-server interleaves choices and sends one usage chunk per choice, Groq puts usage under
``x_groq.usage``, reasoning servers stream ``reasoning_content`` beside ``content``.
"""

from __future__ import annotations

from typing import Any

from chatlib.models import (
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


class _ChoiceState:
    __slots__ = (
        "content",
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
        self.refusal: list[str] = []
        self.tool_calls: dict[int, _ToolCallState] = {}
        self.function_name: str | None = None
        self.function_args: list[str] | None = None
        self.finish_reason: FinishReason | None = None
        self.logprobs: list[TokenLogprob] | None = None
        self.extra_text: dict[str, list[str]] = {}


class ChatCompletionAccumulator:
    """Add chunks with :meth:`add`; :meth:`result` is the completion they make up so far."""

    def __init__(self) -> None:
        self._choices: dict[int, _ChoiceState] = {}
        self._header: dict[str, Any] = {}
        self._usage: ChatCompletionUsage | None = None

    def add(self, chunk: CreateChatCompletionChunk) -> None:
        """Fold one chunk in."""
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
            state = self._choices.get(choice.index)
            if state is None:
                state = self._choices[choice.index] = _ChoiceState()
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
            if delta.content:
                state.content.append(delta.content)
            if delta.refusal:
                state.refusal.append(delta.refusal)
            if delta.tool_calls:
                _add_tool_calls(state, delta.tool_calls)
            if delta.function_call is not None:
                if delta.function_call.name:
                    state.function_name = delta.function_call.name
                if state.function_args is None:
                    state.function_args = []
                if delta.function_call.arguments:
                    state.function_args.append(delta.function_call.arguments)
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
        call = state.tool_calls.get(fragment.index)
        if call is None:
            call = state.tool_calls[fragment.index] = _ToolCallState()
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


def _build_choice(index: int, state: _ChoiceState) -> ChatCompletionChoice:
    message = ChatMessage(
        role=state.role or ChatRole.ASSISTANT,
        content="".join(state.content) if state.content or not state.tool_calls else None,
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
    if state.extra_text:
        message.extra = {key: "".join(parts) for key, parts in state.extra_text.items()}
    choice = ChatCompletionChoice(index=index, message=message, finish_reason=state.finish_reason)
    if state.logprobs is not None:
        choice.logprobs = ChoiceLogprobs(content=state.logprobs)
    return choice
