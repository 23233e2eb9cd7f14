"""The tool loop: call the model, run the tools it asks for, answer them, repeat. Pure.

`tool_loop` is a generator in the style of `request_flow`: it yields commands and receives
their outcomes, and both facades drive it in a few lines:

- `CallModel(call)`: run `call` (streamed when `call.stream`, handing out each chunk);
  answer with the completion.
- `RunTools(invocations)`: run each (`SyncChat`: in order; `AsyncChat`: all at once, async
  tools awaited, sync ones in worker threads), handing out each `ToolResult` as it arrives;
  answer with the `ToolResult`s in the order given.
- `Emit(event)`: hand `event` out; answer with `None`.

Every rule is here: which calls can run, what the model is told when one cannot (unknown
tool, arguments that are not JSON or do not match), what a result or an error becomes as a
`tool` message, when to stop, and `ToolLoopLimitError`.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterable, Mapping
from typing import Any, Literal, Union

import attrs

from chatlib._call import Call
from chatlib._structured import OutputPlan
from chatlib._tools import FunctionTool, ToolSpec, as_tools, format_result
from chatlib._typed_json import Mismatch
from chatlib.errors import ChatLibError, InvalidArgumentError, ToolCallError, ToolLoopLimitError
from chatlib.models import (
    ChatCompletionMessageToolCall,
    ChatMessage,
    CreateChatCompletionChunk,
    CreateChatCompletionResponse,
)

__all__ = [
    "CallModel",
    "Emit",
    "RunTools",
    "ToolInvocation",
    "ToolLoop",
    "ToolResult",
    "ToolRunChunk",
    "ToolRunCompletion",
    "ToolRunDone",
    "ToolRunEvent",
    "ToolRunResult",
    "ToolSetup",
    "prepare_tool_run",
    "tool_loop",
]


# ---------------------------------------------------------------- what the user sees


@attrs.frozen
class ToolResult:
    """One tool call answered: what was called, what came back, and what the model is told.

    Also an event of `run_tools_stream` (`type == "tool_result"`).

    Attributes:
        tool_call_id: The id of the call (the `tool` message answers it).
        name: The tool the model called.
        arguments: The arguments as the model sent them (JSON text).
        parsed_arguments: The arguments converted to the function's types (`None` when they
            could not be).
        output: What the function returned (`None` when it raised or did not run).
        error: What went wrong: the exception the function raised (with its traceback, for
            you; the model only sees its type and message), or a `ToolCallError` when the
            call could not run (unknown tool, invalid arguments). `None` on success.
        content: The text of the `tool` message sent back to the model.
        type: `"tool_result"`.
    """

    tool_call_id: str
    name: str
    arguments: str
    parsed_arguments: Any
    output: Any
    error: BaseException | None
    content: str
    type: Literal["tool_result"] = "tool_result"

    @property
    def message(self) -> ChatMessage:
        """The `tool` message that answers the call."""
        return ChatMessage.tool(self.content, tool_call_id=self.tool_call_id)


@attrs.frozen
class ToolRunResult:
    """What `run_tools` returns.

    Attributes:
        completion: The last completion: the model's answer (`completion.text`), or, when
            `pending_tool_calls` is not empty, the turn that asked for them.
        messages: The whole conversation: your messages, then every assistant turn and tool
            message, and the final answer. Pass it as `messages` to go on.
        completions: The completion of every round, in order.
        tool_results: Every tool call answered, in order.
        pending_tool_calls: Tool calls chatlib could not run because they are yours to
            handle: calls to a tool given as a dict or a class (no function to call) or to a
            custom tool. The loop stops at the turn that made them; answer each with a `tool`
            message appended to `messages` and call `run_tools` again.
    """

    completion: CreateChatCompletionResponse
    messages: list[Any]
    completions: list[CreateChatCompletionResponse]
    tool_results: list[ToolResult]
    pending_tool_calls: list[Any] = attrs.field(factory=list)

    @property
    def text(self) -> str:
        """The text of the final answer (`completion.text`)."""
        return self.completion.text

    @property
    def parsed(self) -> Any:
        """The final answer parsed into `response_format`, when one was given."""
        return self.completion.parsed


@attrs.frozen
class ToolRunChunk:
    """A chunk of the model's answer, as `run_tools_stream` streams it (`type == "chunk"`).

    Attributes:
        chunk: The chunk.
        round: The round (model call) it belongs to, from 1.
    """

    chunk: CreateChatCompletionChunk
    round: int
    type: Literal["chunk"] = "chunk"


@attrs.frozen
class ToolRunCompletion:
    """A round's whole completion, once it arrived (`type == "completion"`).

    Attributes:
        completion: The completion (its tool calls carry `parsed_arguments`).
        round: The round, from 1.
    """

    completion: CreateChatCompletionResponse
    round: int
    type: Literal["completion"] = "completion"


@attrs.frozen
class ToolRunDone:
    """The last event of `run_tools_stream` (`type == "done"`).

    Attributes:
        result: What `run_tools` would have returned.
    """

    result: ToolRunResult
    type: Literal["done"] = "done"


ToolRunEvent = Union[ToolRunChunk, ToolRunCompletion, ToolResult, ToolRunDone]
"""What `run_tools_stream` yields; tell them apart by `type`."""


# ---------------------------------------------------------------- one call to run


@attrs.define
class ToolInvocation:
    """A tool call ready to run, or already answered with why it cannot (`result`).

    Attributes:
        tool_call_id: The call's id.
        name: The tool's name.
        arguments: The arguments as sent.
        spec: The tool (`None` when the model named an unknown one).
        parsed_arguments: The arguments converted for the function.
        result: The answer when the call cannot run (unknown tool, invalid arguments).
    """

    tool_call_id: str
    name: str
    arguments: str
    spec: ToolSpec | None
    parsed_arguments: Any = None
    result: ToolResult | None = None

    @property
    def is_async(self) -> bool:
        """Whether `call()` returns a coroutine to await."""
        return self.spec is not None and self.spec.is_async

    def call(self) -> Any:
        """Call the function (a coroutine for an async tool)."""
        assert self.spec is not None
        return self.spec.call(self.parsed_arguments)

    def run(self) -> ToolResult:
        """Run a sync tool here and now (what `SyncChat` does)."""
        if self.result is not None:
            return self.result
        try:
            value = self.call()
        except Exception as exc:
            return self.failed(exc)
        return self.succeeded(value)

    def succeeded(self, value: Any) -> ToolResult:
        """The answer for a function that returned `value`."""
        try:
            content = format_result(value)
        except TypeError as exc:
            return self._answer(
                value,
                exc,
                f"Error: {self.name} returned a value that cannot be sent as JSON "
                f"({type(exc).__name__}: {exc})",
            )
        return self._answer(value, None, content)

    def failed(self, exc: BaseException) -> ToolResult:
        """The answer for a function that raised `exc`: its type and message, no traceback."""
        text = str(exc)
        said = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
        return self._answer(None, exc, f"Error: {self.name} raised {said}")

    def _answer(self, output: Any, error: BaseException | None, content: str) -> ToolResult:
        return ToolResult(
            tool_call_id=self.tool_call_id,
            name=self.name,
            arguments=self.arguments,
            parsed_arguments=self.parsed_arguments,
            output=output,
            error=error,
            content=content,
        )


def _rejected(invocation: ToolInvocation, message: str) -> ToolInvocation:
    error = ToolCallError(message, name=invocation.name, tool_call_id=invocation.tool_call_id)
    invocation.result = invocation._answer(None, error, "Error: " + message)
    return invocation


# ---------------------------------------------------------------- commands


@attrs.frozen
class CallModel:
    """Call the model with `call` and answer with its completion (streamed when
    `call.stream`: hand out `chunk_event(chunk)` for each chunk, then answer with the
    stream's final completion)."""

    call: Call
    round: int

    def chunk_event(self, chunk: CreateChatCompletionChunk) -> ToolRunChunk:
        """The event that hands `chunk` out."""
        return ToolRunChunk(chunk, self.round)


@attrs.frozen
class RunTools:
    """Run every invocation (one that already has a `result` is answered with it) and answer
    with the `ToolResult`s in this order; hand each out as it arrives."""

    invocations: tuple[ToolInvocation, ...]


@attrs.frozen
class Emit:
    """Hand `event` out; answer with `None`."""

    event: ToolRunEvent


ToolCommand = Union[CallModel, RunTools, Emit]
ToolLoop = Generator[ToolCommand, Any, ToolRunResult]


# ---------------------------------------------------------------- setting up


@attrs.frozen
class ToolSetup:
    """A tool run's arguments, checked: the request parameters (without `messages`), the
    tools as sent, the tools chatlib can parse or run by name, every declared function
    name, and the conversation to start from."""

    params: dict[str, Any]
    tools: list[Any]
    specs: Mapping[str, ToolSpec]
    names: tuple[str, ...]
    messages: list[Any]
    max_rounds: int


def prepare_tool_run(
    params: dict[str, Any], tools: Any, *, max_rounds: Any, allow_async: bool
) -> ToolSetup:
    """Check `run_tools`' arguments before any request; raises `InvalidArgumentError`."""
    if isinstance(max_rounds, bool) or not isinstance(max_rounds, int) or max_rounds < 1:
        raise InvalidArgumentError("max_rounds", f"must be an integer >= 1, got {max_rounds!r}")
    if not isinstance(tools, (list, tuple)) or not tools:
        raise InvalidArgumentError("tools", "run_tools needs a non-empty list of tools")
    for name, problem in (
        ("stream", "run_tools does not take stream: use run_tools_stream"),
        ("n", "the tool loop follows one answer: n must be 1"),
    ):
        if params.get(name) not in (None, 1 if name == "n" else None):
            raise InvalidArgumentError(name, problem)
    if "messages" not in params:
        raise InvalidArgumentError("messages", "is required")
    wire, specs = as_tools(list(tools))
    names: list[str] = []
    for i, tool in enumerate(wire):
        spec = tool.spec if isinstance(tool, FunctionTool) else None
        if spec is not None and spec.is_async and not allow_async:
            raise InvalidArgumentError(
                f"tools[{i}]",
                f"{spec.name} is an async function: run it with AsyncChat.run_tools",
            )
        declared = _function_name(tool)
        if declared is not None:
            names.append(declared)
    rest = {k: v for k, v in params.items() if k not in ("messages", "tools")}
    messages = params["messages"]
    if isinstance(messages, (str, bytes, Mapping)) or not isinstance(messages, Iterable):
        raise InvalidArgumentError(
            "messages", f"must be a list of messages, got {type(messages).__name__}"
        )
    return ToolSetup(rest, wire, specs, tuple(names), list(messages), max_rounds)


def _function_name(tool: Any) -> str | None:
    data = tool.to_dict() if hasattr(tool, "to_dict") else tool
    if isinstance(data, Mapping) and data.get("type") == "function":
        function = data.get("function")
        if isinstance(function, Mapping) and isinstance(function.get("name"), str):
            return str(function["name"])
    return None


def round_call(call: Call) -> Call:
    """A round's call parses the answer (`response_format`) but not the tool arguments: the
    loop checks those itself and tells the model what is wrong, instead of raising."""
    outputs = call.outputs
    if outputs is not None and outputs.tools:
        call.outputs = OutputPlan(outputs.content) if outputs.content is not None else None
    return call


# ---------------------------------------------------------------- the loop


def tool_loop(
    setup: ToolSetup, plan: Callable[[list[Any]], Call], *, first: Call | None = None
) -> ToolLoop:
    """Run the conversation until the model answers without tool calls.

    `plan(messages)` plans one round's call (`first`, when given, is the first round's,
    planned early so that bad arguments raise before anything runs). Returns the
    `ToolRunResult`; raises `ToolLoopLimitError` after `setup.max_rounds` rounds that all
    asked for tools (the last round's tools are run first, so the conversation can go on).
    """
    messages = list(setup.messages)
    completions: list[CreateChatCompletionResponse] = []
    results: list[ToolResult] = []
    for round_number in range(1, setup.max_rounds + 1):
        call = round_call(first if first is not None and round_number == 1 else plan(messages))
        try:
            completion = yield CallModel(call, round_number)
        except ChatLibError as exc:
            # The tools already run (and paid for) are not lost: the error carries the
            # conversation up to the failed call, so the caller can retry from there.
            vars(exc).update(messages=messages, completions=completions, tool_results=results)
            raise
        completions.append(completion)
        yield Emit(ToolRunCompletion(completion, round_number))
        message = completion.choices[0].message if completion.choices else None
        if message is not None:
            messages.append(message)
        tool_calls = list(message.tool_calls or ()) if message is not None else []
        if not tool_calls:
            return (yield from _done(completion, messages, completions, results, []))
        invocations: list[ToolInvocation] = []
        pending: list[Any] = []
        for tool_call in tool_calls:
            invocation = _invocation(tool_call, setup)
            if invocation is None:
                pending.append(tool_call)
            else:
                invocations.append(invocation)
        if invocations:
            answered: list[ToolResult] = yield RunTools(tuple(invocations))
            results.extend(answered)
            messages.extend(result.message for result in answered)
        if pending:
            return (yield from _done(completion, messages, completions, results, pending))
    raise ToolLoopLimitError(
        f"the model still asked for tools after {setup.max_rounds} rounds (max_rounds); the "
        "conversation so far is in .messages",
        max_rounds=setup.max_rounds,
        messages=messages,
        completions=completions,
        tool_results=results,
    )


def _done(
    completion: CreateChatCompletionResponse,
    messages: list[Any],
    completions: list[CreateChatCompletionResponse],
    results: list[ToolResult],
    pending: list[Any],
) -> Generator[ToolCommand, Any, ToolRunResult]:
    result = ToolRunResult(completion, messages, completions, results, pending)
    yield Emit(ToolRunDone(result))
    return result


def _invocation(tool_call: Any, setup: ToolSetup) -> ToolInvocation | None:
    """The call to run, or `None` when it is the caller's to handle (a tool with no
    function: a dict, a class, a custom tool)."""
    if not isinstance(tool_call, ChatCompletionMessageToolCall):
        return None
    function = tool_call.function
    spec = setup.specs.get(function.name)
    invocation = ToolInvocation(tool_call.id, function.name, function.arguments, spec)
    if spec is None:
        if function.name in setup.names:
            return None  # declared as a dict: the caller runs it
        known = ", ".join(setup.names) or "none"
        return _rejected(
            invocation, f"there is no tool named {function.name!r} (the tools are: {known})"
        )
    try:
        parsed = spec.parse_arguments(function.arguments)
    except Mismatch as exc:
        if not spec.runnable:
            return None
        what = f"are {exc.reason}" if exc.not_json else f"do not match its parameters: {exc}"
        return _rejected(
            invocation,
            f"the arguments of {function.name} {what}. Call it again with valid arguments.",
        )
    function.parsed_arguments = invocation.parsed_arguments = parsed
    return invocation if spec.runnable else None
