"""`SyncChat`: the blocking face of chatlib. Its driver, its stream and its client.

It moves bytes and time; every rule (building, retrying, parsing) is the core's, and the
bytes come from a transport (`requests` by default). `_async.py` is this file with `await`:
read them side by side.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, TypeVar, overload

from typing_extensions import Self, Unpack

from chatlib._call import Call
from chatlib._client import ClientBase
from chatlib._config import ClientSettings, TimeoutLike
from chatlib._flow import Command, Deliver, Flow, GetCredential, ItemFlow, ReadBody, Send
from chatlib._params import with_request_signature
from chatlib._parse import BodyCollector
from chatlib._stream import DRAIN_SECONDS, Drain, StreamBase, StreamState
from chatlib._transports.base import SyncResponse, SyncTransport
from chatlib._transports.requests import RequestsTransport, Session
from chatlib.errors import APIConnectionError, APIError, BodyTooLargeError
from chatlib.models import (
    ChatCompletionParams,
    CreateChatCompletionChunk,
    CreateChatCompletionRequest,
    CreateChatCompletionResponse,
)

if TYPE_CHECKING:
    from chatlib._stored_sync import StoredCompletions

__all__ = ["ChatStream", "SyncChat"]

_T = TypeVar("_T")


# ---------------------------------------------------------------- the driver


def _read_body(response: SyncResponse, limit: int) -> bytes | APIError:
    collector = BodyCollector(limit)
    try:
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
    when you `break` out, call `close`, an exception passes through, or the stream is
    garbage collected.
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
        while not state.pending:
            if state.finished or self._closed:
                self.close()
                state.check()
                raise StopIteration
            try:
                state.advance(next(self._body, None))
            except BaseException:
                self.close()
                raise
        return state.take()

    @property
    def text_stream(self) -> Iterator[str]:
        """The text of the first choice, piece by piece (empty pieces skipped)."""
        return (chunk.text for chunk in self if chunk.text)

    def get_final_completion(self) -> CreateChatCompletionResponse:
        """Read the rest of the stream and return the whole completion."""
        for _ in self:
            pass
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
