"""`AsyncChat`: the asyncio face of chatlib. Its driver, its stream and its client.

It moves bytes and time; every rule (building, retrying, parsing) is the core's, and the
bytes come from a transport (`aiohttp` by default). `_sync.py` is this file without
`await`: read them side by side.
"""

from __future__ import annotations

import asyncio
import inspect
import sys
import time
from collections.abc import AsyncIterator, Sequence
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
from chatlib._stream import DRAIN_SECONDS, Drain, StreamBase
from chatlib._transports.aiohttp import AiohttpTransport, ClientSession
from chatlib._transports.base import AsyncResponse, AsyncTransport
from chatlib._transports.base import aread_whole as read_whole
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
    from chatlib._stored_async import AsyncStoredCompletions
    from chatlib._tool_loop import (
        ToolInvocation,
        ToolLoop,
        ToolResult,
        ToolRunEvent,
        ToolRunResult,
    )
    from chatlib.notebook import DisplayHandle

__all__ = ["AsyncChat", "AsyncChatStream"]

_T = TypeVar("_T")


# ---------------------------------------------------------------- the driver


async def _read_body(response: AsyncResponse, limit: int) -> bytes | APIError:
    collector = BodyCollector(limit)
    try:
        body = await read_whole(response, limit)
        if body is not None:
            return body
        async for piece in response.aiter_bytes():
            collector.feed(piece)
    except (APIConnectionError, BodyTooLargeError) as exc:
        return exc
    finally:
        await response.aclose()
    return collector.result()


async def _perform(command: Command, transport: AsyncTransport) -> Any:
    """Do one command of a core flow with asyncio I/O; return its outcome."""
    if isinstance(command, Send):
        try:
            return await transport.send(command.request)
        except APIConnectionError as exc:
            return exc
    if isinstance(command, ReadBody):
        return await _read_body(command.response, command.limit)
    if isinstance(command, GetCredential):
        try:
            return await asyncio.wait_for(command.acall(), command.seconds)
        except asyncio.TimeoutError:
            return command.timed_out()
    await asyncio.sleep(command.seconds)
    return None


async def run_flow(flow: Flow[_T], transport: AsyncTransport) -> _T:
    """Drive a core flow with asyncio I/O: the whole async driver."""
    outcome: Any = None
    try:
        while True:
            outcome = await _perform(flow.send(outcome), transport)
    except StopIteration as stop:
        result: _T = stop.value
        return result
    finally:
        flow.close()


async def _run_tool(invocation: ToolInvocation) -> ToolResult:
    """Run one tool call: an async tool awaited, a sync one in a worker thread."""
    if invocation.result is not None:
        return invocation.result
    try:
        if invocation.is_async:
            value = await invocation.call()
        else:
            value = await asyncio.to_thread(invocation.call)
        if inspect.isawaitable(value):
            value = await value
    except Exception as exc:
        return invocation.failed(exc)
    return invocation.succeeded(value)


async def iterate_flow(flow: ItemFlow[_T], transport: AsyncTransport) -> AsyncIterator[_T]:
    """Drive a core flow that hands out items (the pages of a list), yielding them."""
    outcome: Any = None
    try:
        while True:
            command = flow.send(outcome)
            if isinstance(command, Deliver):
                for item in command.items:
                    yield item
                outcome = None
            else:
                outcome = await _perform(command, transport)
    except StopIteration:
        return
    finally:
        flow.close()


# ---------------------------------------------------------------- the stream


class AsyncChatStream(StreamBase[AsyncResponse], AsyncIterator[CreateChatCompletionChunk]):
    """A streamed completion: `async for` it for chunks; use it in `async with`.

    The request is sent when iteration (or the `async with` block) starts. The connection
    goes back to the pool when the stream is exhausted, and is released when you call
    `aclose`, leave its `async with` block, an exception passes through, or the stream is
    collected. After a `break` out of `async for`, a stream you still hold keeps its
    connection until one of those: use `async with`.
    """

    def __init__(self, chat: AsyncChat, call: Call) -> None:
        self._chat = chat
        self._call = call
        self._body: AsyncIterator[bytes] | None = None

    async def _start(self) -> None:
        if self._response is not None or self._closed:
            return
        try:
            await run_flow(self._call.stream_flow(self._opened), self._chat._transport)
        except BaseException:
            self._closed = True
            raise

    def _opened(self, response: AsyncResponse) -> None:
        self._response = response
        self._state = self._call.stream_state(response.headers, time.monotonic)
        self._body = response.aiter_bytes()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> CreateChatCompletionChunk:
        if self._response is None:
            await self._start()
        state = self._state
        if state is None or self._body is None or self._closed:
            raise StopAsyncIteration  # chunks parsed but not handed out before aclose() are dropped
        while not state.ready():
            if state.finished or self._closed:
                await self.aclose()
                state.check()
                raise StopAsyncIteration
            try:
                state.advance(await anext(self._body, None))
            except BaseException as exc:
                if self._closed and isinstance(exc, APIError):
                    raise StopAsyncIteration from None  # `aclose()` by another task cut the read
                await self.aclose()
                state.failed(exc)
                raise
        try:
            return state.take()
        except BaseException:
            await self.aclose()  # a chunk the merge refused ends the stream
            raise

    async def events(self) -> AsyncIterator[ChatCompletionStreamEvent]:
        """The stream as typed events, `async for event in stream.events()`; see
        `ChatStream.events`.

        Raises:
            RuntimeError: chunks were read before the first call: events describe the
                whole stream.
        """
        await self._start()
        state = self._state
        if state is None:
            return  # closed before it started
        queue = state.start_events()
        while True:
            while queue:
                yield queue.popleft()
            if await anext(self, None) is None:
                return

    async def until_done(self) -> Self:
        """Read the rest of the stream; returns the stream
        (`(await stream.until_done()).accumulated`)."""
        async for _ in self:
            pass
        return self

    @property
    def text_stream(self) -> AsyncIterator[str]:
        """The text of the first choice, piece by piece (empty pieces skipped):
        `async for text in stream.text_stream`."""
        return (chunk.text async for chunk in self if chunk.text)

    async def get_final_completion(self) -> CreateChatCompletionResponse:
        """Read the rest of the stream and return the whole completion."""
        await self.until_done()
        return self._final_completion()

    async def display(self, *, handle: DisplayHandle | None = None) -> CreateChatCompletionResponse:
        """Show the answer as it arrives and return the whole completion (`await` it); see
        `ChatStream.display`. Interrupting (the notebook's stop button, a cancelled task)
        closes the stream; what arrived stays shown and in `accumulated`.

        Args:
            handle: The output area to render into (an IPython `DisplayHandle`); by default
                a new one in the current cell.
        """
        view = self._live_view(handle, time.monotonic)
        try:
            async for chunk in self:
                view.chunk(chunk)
        except BaseException as exc:
            try:
                await self.aclose()
            finally:  # even when Ctrl-C, pressed again, lands in the close
                view.end(exc)
            raise
        view.end()
        return self.accumulated

    async def aclose(self) -> None:
        """Release the connection; reading the little that follows `[DONE]` lets it be reused."""
        if self._closed:
            return
        self._closed = True
        if self._response is None or self._body is None:
            return
        try:
            if self._ended_cleanly():
                await _drain_within(self._body, DRAIN_SECONDS)
        except (APIError, asyncio.TimeoutError):
            pass  # the connection is closed instead of reused
        finally:
            await self._response.aclose()

    async def close(self) -> None:
        """Same as `aclose` (the official SDK's name: `await stream.close()`)."""
        await self.aclose()

    async def __aenter__(self) -> Self:
        await self._start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


async def _drain_within(body: AsyncIterator[bytes], seconds: float) -> None:
    if sys.version_info >= (3, 11):  # a deadline on this task, not a task of its own
        async with asyncio.timeout(seconds):
            await _drain(body)
    else:  # pragma: no cover
        await asyncio.wait_for(_drain(body), seconds)


async def _drain(body: AsyncIterator[bytes]) -> None:
    drain = Drain()
    async for piece in body:
        if not drain.more(piece):
            break


# ---------------------------------------------------------------- the client


class AsyncChat(ClientBase[AsyncTransport]):
    """An asyncio client for any OpenAI-compatible Chat Completions server.

    `AsyncChat()` reads `OPENAI_API_KEY`, `OPENAI_BASE_URL`, `OPENAI_ORG_ID` and
    `OPENAI_PROJECT_ID`. The aiohttp session is created lazily inside the running loop, so
    a client can be made at import time or in a notebook cell and used with top-level
    `await`. Use `async with AsyncChat() as chat:` or call `aclose`.

    Args:
        session: Your own `aiohttp.ClientSession` (made in the loop you use it in);
            chatlib uses it and never closes it.
        transport: A custom transport (see the transports page); replaces `session`.
        pool_maxsize: Connections kept open to the server (default 100).
        verify: TLS verification: `True` (default), `False`, or a CA bundle path.
        **settings: The client settings, each described in `ClientSettings`.
    """

    _default_transport = AiohttpTransport
    _awaits = True

    def __init__(
        self,
        *,
        session: ClientSession | None = None,
        transport: AsyncTransport | None = None,
        pool_maxsize: int = 100,
        verify: bool | str = True,
        **settings: Unpack[ClientSettings],
    ) -> None:
        self._setup(
            settings, transport=transport, session=session, pool_maxsize=pool_maxsize, verify=verify
        )

    @overload
    async def create(
        self,
        request: CreateChatCompletionRequest,
        /,
        *,
        timeout: TimeoutLike | None = None,
    ) -> CreateChatCompletionResponse: ...

    @overload
    async def create(
        self,
        request: None = None,
        /,
        *,
        stream: Literal[True],
        timeout: TimeoutLike | None = None,
        **params: Unpack[ChatCompletionParams],
    ) -> AsyncChatStream: ...

    @overload
    async def create(
        self,
        request: None = None,
        /,
        *,
        stream: Literal[False] | None = None,
        timeout: TimeoutLike | None = None,
        **params: Unpack[ChatCompletionParams],
    ) -> CreateChatCompletionResponse: ...

    @with_request_signature(with_stream=True)
    async def create(
        self,
        request: CreateChatCompletionRequest | None = None,
        /,
        *,
        stream: bool | None = None,
        timeout: TimeoutLike | None = None,
        **params: Any,
    ) -> CreateChatCompletionResponse | AsyncChatStream:
        """Create a chat completion (`await` it).

        Pass a `CreateChatCompletionRequest`, or its fields as keyword arguments. With
        `stream=True` (or a request whose `stream` is true) the awaited result is an
        `AsyncChatStream` that has already received the response headers.
        """
        call = self._plan(request, params, stream=stream, timeout=timeout)
        if call.stream:
            return await AsyncChatStream(self, call).__aenter__()
        return await run_flow(call.completion_flow(), self._transport)

    @overload
    def stream(
        self, request: CreateChatCompletionRequest, /, *, timeout: TimeoutLike | None = None
    ) -> AsyncChatStream: ...

    @overload
    def stream(
        self,
        request: None = None,
        /,
        *,
        timeout: TimeoutLike | None = None,
        **params: Unpack[ChatCompletionParams],
    ) -> AsyncChatStream: ...

    @with_request_signature(with_stream=False)
    def stream(
        self,
        request: CreateChatCompletionRequest | None = None,
        /,
        *,
        timeout: TimeoutLike | None = None,
        **params: Any,
    ) -> AsyncChatStream:
        """Stream a chat completion; not awaited: `async for chunk in chat.stream(...)` or
        `async with chat.stream(...) as s`. Invalid arguments raise here, at once."""
        call = self._plan(request, params, stream=None, timeout=timeout, force_stream=True)
        return AsyncChatStream(self, call)

    @with_request_signature(with_stream=False)
    async def parse(
        self,
        request: CreateChatCompletionRequest | None = None,
        /,
        *,
        timeout: TimeoutLike | None = None,
        **params: Unpack[ChatCompletionParams],
    ) -> CreateChatCompletionResponse:
        """Create a chat completion and parse the answer into `response_format` (`await`
        it); see `SyncChat.parse`, and the errors it raises."""
        call = self._plan(request, dict(params), stream=False, timeout=timeout, parse=True)
        return await run_flow(call.completion_flow(), self._transport)

    @with_request_signature(with_stream=False, head=("tools", "max_rounds"))
    async def run_tools(
        self,
        *,
        tools: Sequence[Any],
        max_rounds: int = 10,
        timeout: TimeoutLike | None = None,
        **params: Any,
    ) -> ToolRunResult:
        """Let the model call your functions until it answers (`await` it); see
        `SyncChat.run_tools`, and the errors it raises. The calls of one turn run at once:
        async tools are awaited, sync ones run in worker threads."""
        from chatlib._tool_loop import ToolRunDone

        loop = self._tool_loop(params, tools, max_rounds, timeout, stream=False)
        async for event in self._tool_events(loop):
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
    ) -> AsyncIterator[ToolRunEvent]:
        """`run_tools`, streamed (not awaited: `async for event in achat.run_tools_stream(...)`);
        see `SyncChat.run_tools_stream`. Bad arguments raise here, at once."""
        loop = self._tool_loop(params, tools, max_rounds, timeout, stream=True)
        return self._tool_events(loop)

    async def _tool_events(self, loop: ToolLoop) -> AsyncIterator[ToolRunEvent]:
        """Drive a core tool loop (`_tool_loop.py`) with asyncio I/O, handing out its events."""
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
                            async with AsyncChatStream(self, command.call) as stream:
                                async for chunk in stream:
                                    yield command.chunk_event(chunk)
                                outcome = await stream.get_final_completion()
                        else:
                            flow = command.call.completion_flow()
                            outcome = await run_flow(flow, self._transport)
                    except ChatLibError as exc:
                        failure = exc
                else:
                    tasks = [asyncio.ensure_future(_run_tool(i)) for i in command.invocations]
                    try:
                        for arrived in asyncio.as_completed(tasks):
                            yield await arrived
                    finally:
                        for task in tasks:
                            task.cancel()
                    outcome = [task.result() for task in tasks]
        finally:
            loop.close()

    @property
    def stored(self) -> AsyncStoredCompletions:
        """The completions the server stored (`store=True`): list, retrieve, update, delete
        and their messages."""
        from chatlib._stored_async import AsyncStoredCompletions

        return AsyncStoredCompletions(self)

    async def aclose(self) -> None:
        """Close the connection pool (a transport or session you passed in stays open)."""
        if self._owns_transport:
            await self._transport.aclose()

    close = aclose

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
