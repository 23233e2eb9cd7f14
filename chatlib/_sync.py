"""`SyncChat`: the blocking face of chatlib. Its driver, its stream and its client.

It moves bytes and time; every rule (building, retrying, parsing) is the core's, and the
bytes come from a transport (`requests` by default). `_async.py` is this file with `await`:
read them side by side.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, TypeVar, overload

if sys.version_info >= (3, 11):  # typing has them: typing_extensions is not loaded
    from typing import Self, Unpack
else:  # pragma: no cover
    from typing_extensions import Self, Unpack

from chatlib._call import Call
from chatlib._client import ClientBase
from chatlib._config import ClientSettings, TimeoutLike
from chatlib._flow import Command, Deliver, Flow, GetCredential, ItemFlow, ReadBody, Send
from chatlib._params import with_request_signature
from chatlib._parse import BodyCollector
from chatlib._stream import DRAIN_SECONDS, Drain, StreamBase, StreamState
from chatlib._transports.base import SyncResponse, SyncTransport, read_whole
from chatlib._transports.requests import RequestsTransport, Session
from chatlib.errors import APIConnectionError, APIError, BodyTooLargeError, ChatLibError
from chatlib.models import (
    ChatCompletionParams,
    CreateChatCompletionChunk,
    CreateChatCompletionRequest,
    CreateChatCompletionResponse,
)

if TYPE_CHECKING:
    # Tools load on first use (`run_tools`): a plain create() never needs them.
    from chatlib._events import ChatCompletionStreamEvent  # loaded when `events()` first runs
    from chatlib._stored_sync import StoredCompletions
    from chatlib._tool_loop import ToolLoop, ToolRunEvent, ToolRunResult
    from chatlib.notebook import DisplayHandle

__all__ = ["ChatStream", "SyncChat"]

_T = TypeVar("_T")


# ---------------------------------------------------------------- the driver


def _read_body(response: SyncResponse, limit: int) -> bytes | APIError:
    collector = BodyCollector(limit)
    try:
        body = read_whole(response, limit)
        if body is not None:
            return body
        for piece in response.iter_bytes():
            collector.feed(piece)
    except (APIConnectionError, BodyTooLargeError) as exc:
        return exc
    finally:
        response.close()
    return collector.result()


def _perform(command: Command, transport: SyncTransport) -> Any:
    """Do one command of a core flow with blocking I/O; return its outcome."""
    if isinstance(command, Send):
        try:
            return transport.send(command.request)
        except APIConnectionError as exc:
            return exc
    if isinstance(command, ReadBody):
        return _read_body(command.response, command.limit)
    if isinstance(command, GetCredential):
        return command.call()
    time.sleep(command.seconds)
    return None


def run_flow(flow: Flow[_T], transport: SyncTransport) -> _T:
    """Drive a core flow with blocking I/O: the whole sync driver."""
    outcome: Any = None
    try:
        while True:
            outcome = _perform(flow.send(outcome), transport)
    except StopIteration as stop:
        result: _T = stop.value
        return result
    finally:
        flow.close()


def iterate_flow(flow: ItemFlow[_T], transport: SyncTransport) -> Iterator[_T]:
    """Drive a core flow that hands out items (the pages of a list), yielding them."""
    outcome: Any = None
    try:
        while True:
            command = flow.send(outcome)
            if isinstance(command, Deliver):
                yield from command.items
                outcome = None
            else:
                outcome = _perform(command, transport)
    except StopIteration:
        return
    finally:
        flow.close()


# ---------------------------------------------------------------- the stream


class ChatStream(StreamBase[SyncResponse], Iterator[CreateChatCompletionChunk]):
    """A streamed completion: iterate it for chunks; use it in a `with` block.

    The connection goes back to the pool when the stream is exhausted, and is released
    when you call `close`, leave its `with` block, an exception passes through, or the
    stream is garbage collected. After a `break` out of a `for` loop, a stream you still
    hold keeps its connection until one of those: use `with`.
    """

    _response: SyncResponse  # set at once: a sync stream starts when it is made
    _state: StreamState

    def __init__(self, response: SyncResponse, call: Call) -> None:
        self._response = response
        self._state = call.stream_state(response.headers, time.monotonic)
        self._body = response.iter_bytes()

    def __iter__(self) -> Self:
        return self

    def __next__(self) -> CreateChatCompletionChunk:
        if self._closed:
            raise StopIteration  # chunks parsed but not handed out before close() are dropped
        state = self._state
        while not state.ready():
            if state.finished or self._closed:
                self.close()
                state.check()
                raise StopIteration
            try:
                state.advance(next(self._body, None))
            except BaseException as exc:
                if self._closed and isinstance(exc, APIError):
                    raise StopIteration from None  # `close()` from another thread cut the read
                self.close()
                state.failed(exc)
                raise
        try:
            return state.take()
        except BaseException:
            self.close()  # a chunk the merge refused ends the stream
            raise

    def events(self) -> Iterator[ChatCompletionStreamEvent]:
        """The stream as typed events, in the official SDK's order: `chunk`,
        `content.delta`/`.done`, `refusal.delta`/`.done`,
        `tool_calls.function.arguments.delta`/`.done`, `logprobs.content.delta`/`.done`...
        (see the stream events page). Call it before reading any chunk; chunks read
        directly afterwards still make their events, handed out by the next iteration.

        Raises:
            RuntimeError: chunks were read before the first call: events describe the
                whole stream.
        """
        state = self._state
        queue = state.start_events()
        while True:
            while queue:
                yield queue.popleft()
            if next(self, None) is None:
                return

    def until_done(self) -> Self:
        """Read the rest of the stream; returns the stream (`stream.until_done().accumulated`)."""
        for _ in self:
            pass
        return self

    @property
    def text_stream(self) -> Iterator[str]:
        """The text of the first choice, piece by piece (empty pieces skipped)."""
        return (chunk.text for chunk in self if chunk.text)

    def get_final_completion(self) -> CreateChatCompletionResponse:
        """Read the rest of the stream and return the whole completion."""
        self.until_done()
        return self._final_completion()

    def display(self, *, handle: DisplayHandle | None = None) -> CreateChatCompletionResponse:
        """Show the answer as it arrives and return the whole completion.

        In Jupyter the answer renders as Markdown in one output area, updated in place (at
        most 20 times a second) and ended with a footer (model, finish reason, tokens,
        request id); elsewhere its text is printed as it arrives. Interrupting (Ctrl-C,
        the notebook's stop button) closes the stream; what arrived stays shown and in
        `accumulated`.

        Args:
            handle: The output area to render into (an IPython `DisplayHandle`); by default
                a new one in the current cell.
        """
        view = self._live_view(handle, time.monotonic)
        try:
            for chunk in self:
                view.chunk(chunk)
        except BaseException as exc:
            try:
                self.close()
            finally:  # even when Ctrl-C, pressed again, lands in the close
                view.end(exc)
            raise
        view.end()
        return self.accumulated

    def close(self) -> None:
        """Release the connection; reading the little that follows `[DONE]` lets it be reused."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._ended_cleanly():
                settle = getattr(self._response, "settle", None)
                if settle is not None:
                    settle(DRAIN_SECONDS)  # each read waits at most this long
                _drain(self._body)
        except APIError:
            pass  # the connection is closed instead of reused
        finally:
            self._response.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _drain(body: Iterator[bytes]) -> None:
    drain = Drain()
    for piece in body:
        if not drain.more(piece):
            break


# ---------------------------------------------------------------- the client


class SyncChat(ClientBase[SyncTransport]):
    """A blocking client for any OpenAI-compatible Chat Completions server.

    `SyncChat()` reads `OPENAI_API_KEY`, `OPENAI_BASE_URL`, `OPENAI_ORG_ID` and
    `OPENAI_PROJECT_ID`. With `base_url` pointing at your own server no key is needed.
    Safe to use from a Jupyter cell (no event loop involved) and from several threads.

    Args:
        session: Your own `requests.Session`; chatlib uses it and never closes it.
        transport: A custom transport (see the transports page); replaces `session`.
        pool_maxsize: Connections kept open to the server (default 10).
        verify: TLS verification: `True` (default), `False`, or a CA bundle path.
        **settings: The client settings, each described in `ClientSettings`.
    """

    _default_transport = RequestsTransport

    def __init__(
        self,
        *,
        session: Session | None = None,
        transport: SyncTransport | None = None,
        pool_maxsize: int = 10,
        verify: bool | str = True,
        **settings: Unpack[ClientSettings],
    ) -> None:
        self._setup(
            settings, transport=transport, session=session, pool_maxsize=pool_maxsize, verify=verify
        )

    @overload
    def create(
        self,
        request: CreateChatCompletionRequest,
        /,
        *,
        timeout: TimeoutLike | None = None,
    ) -> CreateChatCompletionResponse: ...

    @overload
    def create(
        self,
        request: None = None,
        /,
        *,
        stream: Literal[True],
        timeout: TimeoutLike | None = None,
        **params: Unpack[ChatCompletionParams],
    ) -> ChatStream: ...

    @overload
    def create(
        self,
        request: None = None,
        /,
        *,
        stream: Literal[False] | None = None,
        timeout: TimeoutLike | None = None,
        **params: Unpack[ChatCompletionParams],
    ) -> CreateChatCompletionResponse: ...

    @with_request_signature(with_stream=True)
    def create(
        self,
        request: CreateChatCompletionRequest | None = None,
        /,
        *,
        stream: bool | None = None,
        timeout: TimeoutLike | None = None,
        **params: Any,
    ) -> CreateChatCompletionResponse | ChatStream:
        """Create a chat completion.

        Pass a `CreateChatCompletionRequest`, or its fields as keyword arguments (`messages`
        as dicts or `ChatMessage` objects). With `stream=True` (or a request whose `stream`
        is true) this returns a `ChatStream`, like `stream`. `timeout` overrides the
        client's for this call.
        """
        call = self._plan(request, params, stream=stream, timeout=timeout)
        if call.stream:
            return self._open_stream(call)
        return run_flow(call.completion_flow(), self._transport)

    @overload
    def stream(
        self, request: CreateChatCompletionRequest, /, *, timeout: TimeoutLike | None = None
    ) -> ChatStream: ...

    @overload
    def stream(
        self,
        request: None = None,
        /,
        *,
        timeout: TimeoutLike | None = None,
        **params: Unpack[ChatCompletionParams],
    ) -> ChatStream: ...

    @with_request_signature(with_stream=False)
    def stream(
        self,
        request: CreateChatCompletionRequest | None = None,
        /,
        *,
        timeout: TimeoutLike | None = None,
        **params: Any,
    ) -> ChatStream:
        """Stream a chat completion: `with chat.stream(...) as s: for chunk in s: ...`."""
        call = self._plan(request, params, stream=None, timeout=timeout, force_stream=True)
        return self._open_stream(call)

    def _open_stream(self, call: Call) -> ChatStream:
        return run_flow(
            call.stream_flow(lambda response: ChatStream(response, call)), self._transport
        )

    @with_request_signature(with_stream=False)
    def parse(
        self,
        request: CreateChatCompletionRequest | None = None,
        /,
        *,
        timeout: TimeoutLike | None = None,
        **params: Unpack[ChatCompletionParams],
    ) -> CreateChatCompletionResponse:
        """Create a chat completion and parse the answer into `response_format`.

        `response_format` is a class (attrs, dataclass, TypedDict, pydantic-like), sent as a
        strict JSON schema, or a JSON schema as a dict (parsed as a dict). The answer comes
        back in `choices[i].message.parsed` (and `resp.parsed`), the text still in `content`;
        calls to tools given as functions or classes (or strict dicts) get
        `function.parsed_arguments`.

        Raises:
            LengthFinishReasonError: The answer was cut off at the token limit.
            ContentFilterFinishReasonError: The content filter stopped it.
            RefusalError: The model refused (`.refusal`).
            OutputValidationError: The answer (or a call's arguments) is not JSON or does
                not match (`.field` names the first place that fails).
        """
        call = self._plan(request, dict(params), stream=False, timeout=timeout, parse=True)
        return run_flow(call.completion_flow(), self._transport)

    @with_request_signature(with_stream=False, head=("tools", "max_rounds"))
    def run_tools(
        self,
        *,
        tools: Sequence[Any],
        max_rounds: int = 10,
        timeout: TimeoutLike | None = None,
        **params: Any,
    ) -> ToolRunResult:
        """Let the model call your functions until it answers: call it, run the tools it
        asks for (in order), send their results back, repeat.

        `tools` mixes typed functions, classes and ready-made tool dicts (see
        `function_tool`). A tool that raises, arguments that are not JSON or do not match,
        and an unknown tool name are told to the model as the tool's answer. Calls to a
        tool with no function (a dict, a class) end the loop: they are in
        `pending_tool_calls` for you to answer. Async tools need `AsyncChat`. Every other
        keyword argument is the request's (`response_format=T` parses the final answer);
        `timeout` applies to each model call.

        Raises:
            ToolLoopLimitError: The model still asked for tools after `max_rounds` model
                calls (it carries the conversation).
            ChatLibError: A model call failed (`RateLimitError`, `APITimeoutError`...): the
                error also carries the conversation up to that call in `.messages`, with
                `.completions` and `.tool_results`, so the tools already run are not lost.
        """
        from chatlib._tool_loop import ToolRunDone

        loop = self._tool_loop(params, tools, max_rounds, timeout, stream=False)
        for event in self._tool_events(loop):
            if isinstance(event, ToolRunDone):
                return event.result
        raise AssertionError("the tool loop ended without a result")  # pragma: no cover

    @with_request_signature(with_stream=False, head=("tools", "max_rounds"))
    def run_tools_stream(
        self,
        *,
        tools: Sequence[Any],
        max_rounds: int = 10,
        timeout: TimeoutLike | None = None,
        **params: Any,
    ) -> Iterator[ToolRunEvent]:
        """`run_tools`, streamed: yields each chunk of the model's answers
        (`type == "chunk"`), each round's completion (`"completion"`), each tool's result as
        it arrives (`"tool_result"`), and finally `"done"` with the `ToolRunResult`.
        Bad arguments raise here, at once."""
        loop = self._tool_loop(params, tools, max_rounds, timeout, stream=True)
        return self._tool_events(loop)

    def _tool_events(self, loop: ToolLoop) -> Iterator[ToolRunEvent]:
        """Drive a core tool loop (`_tool_loop.py`) with blocking I/O, handing out its events."""
        from chatlib._tool_loop import CallModel, Emit

        outcome: Any = None
        failure: ChatLibError | None = None
        try:
            while True:
                try:
                    # A failed model call goes back into the loop, which adds the conversation.
                    command = loop.send(outcome) if failure is None else loop.throw(failure)
                except StopIteration:
                    return
                outcome = None
                if isinstance(command, Emit):
                    yield command.event
                elif isinstance(command, CallModel):
                    try:
                        if command.call.stream:
                            with self._open_stream(command.call) as stream:
                                for chunk in stream:
                                    yield command.chunk_event(chunk)
                                outcome = stream.get_final_completion()
                        else:
                            outcome = run_flow(command.call.completion_flow(), self._transport)
                    except ChatLibError as exc:
                        failure = exc
                else:
                    outcome = []
                    for invocation in command.invocations:
                        outcome.append(invocation.run())
                        yield outcome[-1]
        finally:
            loop.close()

    @property
    def stored(self) -> StoredCompletions:
        """The completions the server stored (`store=True`): list, retrieve, update, delete
        and their messages."""
        from chatlib._stored_sync import StoredCompletions

        return StoredCompletions(self)

    def close(self) -> None:
        """Close the connection pool (a transport or session you passed in stays open)."""
        if self._owns_transport:
            self._transport.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
