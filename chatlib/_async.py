"""``AsyncChat``: the asyncio face of chatlib, on ``aiohttp``. The only module importing it.

It moves bytes and time; every rule (building, retrying, parsing) is the core's.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
import urllib.request
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Generator, Mapping
from types import TracebackType
from typing import Any, Literal, overload

import aiohttp
from typing_extensions import Self, Unpack

from chatlib._client import ClientBase
from chatlib._config import ClientConfig, TimeoutLike
from chatlib._core import (
    DRAIN_BYTES,
    DRAIN_SECONDS,
    BodyCollector,
    Call,
    Command,
    HttpRequest,
    ReadBody,
    Send,
    origin_of,
)
from chatlib._headers import safe_url, scrub
from chatlib._params import with_request_signature
from chatlib._transport import AsyncResponse, AsyncTransport
from chatlib.errors import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    BodyTooLargeError,
    InvalidArgumentError,
)
from chatlib.models import (
    ChatCompletionParams,
    CreateChatCompletionChunk,
    CreateChatCompletionRequest,
    CreateChatCompletionResponse,
)

__all__ = ["AiohttpTransport", "AsyncChat", "AsyncChatStream"]

_INHERITED: list[aiohttp.ClientSession] = []  # sessions a forked child must never close


def _translate(exc: BaseException, url: str) -> APIConnectionError:
    if isinstance(exc, (asyncio.TimeoutError, aiohttp.ServerTimeoutError, TimeoutError)):
        # aiohttp's total-deadline timeout is a bare TimeoutError with no message.
        why = str(exc) or "the call outlived its total deadline (timeout.total)"
        return APITimeoutError(scrub(f"Request timed out: {why}", url), request_url=safe_url(url))
    return APIConnectionError(
        scrub(f"Connection error: {type(exc).__name__}: {exc}", url), request_url=safe_url(url)
    )


# ValueError: what the HTTP libraries raise for a request they refuse to make.
_FAILURES = (aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError)


class _AiohttpResponse:
    """An ``aiohttp.ClientResponse`` behind the :class:`AsyncResponse` protocol."""

    __slots__ = ("_response", "_url", "headers", "status_code")

    def __init__(self, response: aiohttp.ClientResponse, url: str) -> None:
        self._response = response
        self._url = url
        self.status_code = response.status
        self.headers: Mapping[str, str] = response.headers

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        try:
            async for piece in self._response.content.iter_any():
                yield piece
        except _FAILURES as exc:
            raise _translate(exc, self._url) from None

    async def aclose(self) -> None:
        self.close()

    def close(self) -> None:
        """Synchronous release (aiohttp's own is synchronous): usable from ``__del__``."""
        response = self._response
        if response.content.is_eof():
            response.release()  # read to the end: the connection goes back to the pool
        else:
            response.close()


def _environment_proxy(url: str) -> str | None:
    host = url.split("://", 1)[-1].split("/", 1)[0].split(":", 1)[0]
    if urllib.request.proxy_bypass(host):
        return None
    proxies = urllib.request.getproxies()
    return proxies.get("https" if url.startswith("https") else "http")


class _LoopPool:
    """One event loop's session, and the guard that closes it when that loop shuts down."""

    __slots__ = ("guard", "session")

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session
        self.guard = _LoopShutdownGuard(session)

    def discard(self) -> None:
        """Drop the session of a loop that is gone, without its loop (sync, quiet)."""
        self.guard.disarm()
        connector = self.session.connector
        self.session.detach()
        if connector is not None:
            try:
                connector._close()  # sync; a no-op when its loop is closed
            except RuntimeError:
                pass

    async def aclose(self) -> None:
        """Close the session, in its own loop."""
        self.guard.disarm()
        await self.session.close()


class AiohttpTransport:
    """The default async transport: one ``aiohttp.ClientSession`` per event loop, made lazily.

    A session is created on first use inside the running event loop (never at import or
    construction). A client used from several loops (two ``asyncio.run`` calls, a notebook
    kernel restart, threads each running their own loop) gets one session per loop, and a
    forked child gets new ones. A session is closed with its loop; one whose loop is gone is
    dropped quietly. Proxy settings are read from the environment once per server.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession | None = None,
        *,
        pool_maxsize: int = 100,
        verify: bool | str = True,
    ) -> None:
        self._owns_session = session is None
        self._session = session  # only when the caller gave one
        self._pool_maxsize = pool_maxsize
        self._verify = verify
        self._pools: dict[asyncio.AbstractEventLoop, _LoopPool] = {}
        self._lock = threading.Lock()  # loops in several threads may share this transport
        self._pid = os.getpid()
        self._proxies: dict[str, str | None] = {}  # by origin: read once per server

    def _ssl(self) -> Any:
        if self._verify is True:
            return True
        if self._verify is False:
            return False
        import ssl

        return ssl.create_default_context(cafile=self._verify)

    def _callers_session(self, loop: asyncio.AbstractEventLoop) -> aiohttp.ClientSession:
        assert self._session is not None
        if getattr(self._session, "_loop", loop) is not loop:
            raise InvalidArgumentError(
                "session",
                "belongs to another event loop (one that is closed or not running here); "
                "an aiohttp session cannot move between loops: make one in this loop, or "
                "let AsyncChat make its own",
            )
        return self._session

    def _pool_for(self, loop: asyncio.AbstractEventLoop) -> _LoopPool:
        pool = self._pools.get(loop)
        if pool is not None and not pool.session.closed and self._pid == os.getpid():
            return pool
        with self._lock:
            if self._pid != os.getpid():
                # A forked child shares the parent's sockets and its loops' epoll instances:
                # closing them here would unregister them from the parent's loop. Keep them.
                for inherited in self._pools.values():
                    inherited.guard.disarm()
                    _INHERITED.append(inherited.session)
                self._pools = {}
                self._pid = os.getpid()
            for other, stale in list(self._pools.items()):
                if other.is_closed() or stale.session.closed:
                    del self._pools[other]
                    stale.discard()
            pool = self._pools[loop] = _LoopPool(
                aiohttp.ClientSession(
                    connector=aiohttp.TCPConnector(limit=self._pool_maxsize, ssl=self._ssl()),
                    timeout=aiohttp.ClientTimeout(total=None),
                    auto_decompress=True,
                    trust_env=False,
                )
            )
            return pool

    async def send(self, request: HttpRequest) -> _AiohttpResponse:
        """Send ``request``; returns once headers are in (the body is streamed)."""
        loop = asyncio.get_running_loop()
        pool = None if not self._owns_session else self._pool_for(loop)
        session = pool.session if pool is not None else self._callers_session(loop)
        origin = origin_of(request.url)
        if origin in self._proxies:
            proxy = self._proxies[origin]
        else:
            proxy = self._proxies[origin] = (
                _environment_proxy(request.url) if self._owns_session else None
            )
        timeout = request.timeout
        try:
            response = await session.request(
                request.method,
                request.url,
                headers=dict(request.headers),
                data=request.body,
                timeout=aiohttp.ClientTimeout(
                    total=timeout.total,
                    sock_connect=timeout.connect,
                    sock_read=timeout.read,
                ),
                proxy=proxy,
                allow_redirects=False,  # the core follows redirects (credentials stay home)
            )
        except _FAILURES as exc:
            raise _translate(exc, request.url) from None
        if pool is not None:
            pool.guard.responses.add(response)
        return _AiohttpResponse(response, request.url)

    async def aclose(self) -> None:
        """Close every pool (a session passed in by the caller is left open): this loop's
        here, another running loop's in that loop, a closed loop's quietly."""
        if not self._owns_session:
            return
        with self._lock:
            pools, self._pools = self._pools, {}
            forked = self._pid != os.getpid()
        loop = asyncio.get_running_loop()
        for pool_loop, pool in pools.items():
            if forked:
                pool.guard.disarm()
                _INHERITED.append(pool.session)
            elif pool_loop is loop:
                await pool.aclose()
            elif pool_loop.is_closed():
                pool.discard()
            else:
                asyncio.run_coroutine_threadsafe(pool.aclose(), pool_loop)


async def _drain(body: AsyncIterator[bytes]) -> None:
    drained = 0
    async for piece in body:
        drained += len(piece)
        if drained > DRAIN_BYTES:
            break


class _LoopShutdownGuard:
    """Closes a session when its loop shuts down its async generators, which ``asyncio.run``
    does just before closing the loop: pooled sockets then close cleanly with their loop
    instead of being reaped by the garbage collector with ResourceWarnings."""

    __slots__ = ("_armed", "_watcher", "responses", "session")

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session
        # Responses still open (streams not finished): released first, so their connections
        # don't complain when collected after the loop is gone.
        self.responses: weakref.WeakSet[aiohttp.ClientResponse] = weakref.WeakSet()
        self._armed = True
        self._watcher = self._watch()
        try:  # the first step registers the generator with the running loop
            self._watcher.asend(None).send(None)
        except StopIteration:
            pass

    async def _watch(self) -> AsyncGenerator[None, None]:
        try:
            yield
        finally:
            if self._armed:
                for response in list(self.responses):
                    response.close()
                if not self.session.closed:
                    await self.session.close()

    def disarm(self) -> None:
        """Finish the watcher without closing anything (the session is dealt with elsewhere)."""
        self._armed = False
        closing = self._watcher.aclose()
        try:
            closing.send(None)
        except (StopIteration, RuntimeError):
            pass


async def _read_body(response: AsyncResponse, limit: int) -> bytes | APIError:
    collector = BodyCollector(limit)
    try:
        async for piece in response.aiter_bytes():
            collector.feed(piece)
    except (APIConnectionError, BodyTooLargeError) as exc:
        return exc
    finally:
        await response.aclose()
    return collector.result()


async def run_flow(flow: Generator[Command, Any, Any], transport: AsyncTransport) -> Any:
    """Drive a core flow with asyncio I/O: the whole async driver."""
    outcome: Any = None
    try:
        while True:
            command = flow.send(outcome)
            if isinstance(command, Send):
                try:
                    outcome = await transport.send(command.request)
                except APIConnectionError as exc:
                    outcome = exc
            elif isinstance(command, ReadBody):
                outcome = await _read_body(command.response, command.limit)
            else:
                await asyncio.sleep(command.seconds)
                outcome = None
    except StopIteration as stop:
        return stop.value
    finally:
        flow.close()


class AsyncChatStream(AsyncIterator[CreateChatCompletionChunk]):
    """A streamed completion: ``async for`` it for chunks; use it in ``async with``.

    The request is sent when iteration (or the ``async with`` block) starts. The connection
    goes back to the pool when the stream is exhausted, and is released when you ``break``
    out, call :meth:`aclose`, an exception passes through, or the stream is collected.
    """

    def __init__(self, chat: AsyncChat, call: Call) -> None:
        self._chat = chat
        self._call = call
        self._response: AsyncResponse | None = None
        self._state: Any = None
        self._body: AsyncIterator[bytes] | None = None
        self._closed = False

    async def _start(self) -> None:
        if self._response is None and not self._closed:
            flow = self._call.flow()
            response: AsyncResponse = await run_flow(flow, self._chat._transport)
            self._response = response
            self._state = self._call.stream_state(response.headers, time.monotonic)
            self._body = response.aiter_bytes()

    @property
    def headers(self) -> Mapping[str, str]:
        """The response headers (empty until the stream has started)."""
        return self._response.headers if self._response is not None else {}

    @property
    def request_id(self) -> str | None:
        """The server's ``x-request-id``."""
        return self._state.parser.request_id if self._state is not None else None

    @property
    def accumulated(self) -> CreateChatCompletionResponse:
        """Everything received so far, merged into one completion."""
        if self._state is None:
            return CreateChatCompletionResponse(choices=[])
        result: CreateChatCompletionResponse = self._state.accumulated
        return result

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> CreateChatCompletionChunk:
        try:
            await self._start()
        except BaseException:
            self._closed = True
            raise
        state = self._state
        if state is None or self._closed:
            raise StopAsyncIteration  # chunks parsed but not handed out before aclose() are dropped
        while not state.pending:
            if state.finished or self._closed:
                await self.aclose()
                state.check()
                raise StopAsyncIteration
            assert self._body is not None
            try:
                state.advance(await anext(self._body, None))
            except BaseException:
                await self.aclose()
                raise
        chunk: CreateChatCompletionChunk = state.take()
        return chunk

    @property
    def text_stream(self) -> AsyncIterator[str]:
        """The text of the first choice, piece by piece (empty pieces skipped):
        ``async for text in stream.text_stream``."""
        return self._texts()

    async def _texts(self) -> AsyncIterator[str]:
        async for chunk in self:
            if chunk.text:
                yield chunk.text

    async def get_final_completion(self) -> CreateChatCompletionResponse:
        """Read the rest of the stream and return the whole completion."""
        async for _ in self:
            pass
        return self.accumulated

    def __repr__(self) -> str:
        if self._closed:
            status = "closed"
        elif self._state is None:
            status = "not started"
        else:
            status = "finished" if self._state.finished else "open"
        return f"<AsyncChatStream {status} request_id={self.request_id!r}>"

    async def close(self) -> None:
        """Same as :meth:`aclose` (the official SDK's name: ``await stream.close()``)."""
        await self.aclose()

    async def aclose(self) -> None:
        """Release the connection; reading the little that follows ``[DONE]`` lets it be reused."""
        if self._closed:
            return
        self._closed = True
        if self._response is None:
            return
        try:
            if self._state is not None and self._state.parser.done and self._body is not None:
                await asyncio.wait_for(_drain(self._body), DRAIN_SECONDS)
        except (APIError, asyncio.TimeoutError):
            pass  # the connection is closed instead of reused
        finally:
            await self._response.aclose()

    async def __aenter__(self) -> Self:
        try:
            await self._start()
        except BaseException:
            self._closed = True
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __del__(self) -> None:
        response = getattr(self, "_response", None)
        if response is not None and not self._closed:
            self._closed = True
            close = getattr(response, "close", None)
            if close is not None:
                try:
                    close()
                except RuntimeError:
                    pass  # its loop is gone; nothing left to release


class AsyncChat(ClientBase):
    """An asyncio client for any OpenAI-compatible Chat Completions server.

    ``AsyncChat()`` reads ``OPENAI_API_KEY``, ``OPENAI_BASE_URL``, ``OPENAI_ORG_ID`` and
    ``OPENAI_PROJECT_ID``. The aiohttp session is created lazily inside the running loop,
    so a client can be made at import time or in a notebook cell and used with top-level
    ``await``. Use ``async with AsyncChat() as chat:`` or call :meth:`aclose`.

    Args:
        api_key: The bearer key; default ``OPENAI_API_KEY``. Never shown, logged or pickled.
        base_url: The API root, e.g. ``"http://127.0.0.1:8080/v1"``; default
            ``OPENAI_BASE_URL``, else OpenAI's. A query string (Azure's ``?api-version=``)
            is kept after the path.
        organization: ``OpenAI-Organization`` header; default ``OPENAI_ORG_ID``.
        project: ``OpenAI-Project`` header; default ``OPENAI_PROJECT_ID``.
        timeout: A :class:`~chatlib.Timeout` or a number of seconds for all three limits;
            default ``Timeout(connect=10, read=600, total=1800)``.
        max_retries: Retries after the first attempt (default 2); see the retry policy.
        default_headers: Headers sent with every request.
        default_query: Query parameters sent with every request.
        require_done: Raise :class:`~chatlib.errors.IncompleteStreamError` for a stream that
            ends without ``data: [DONE]`` (default). ``False`` accepts such streams.
        max_body_bytes: The largest non-streamed body accepted (default 64 MiB).
        max_line_bytes: The largest line or event of a stream accepted (default 16 MiB).
        session: Your own ``aiohttp.ClientSession`` (made in the loop you use it in);
            chatlib uses it and never closes it.
        transport: A custom transport (see the transports page); replaces ``session``.
        pool_maxsize: Connections kept open to the server (default 100).
        verify: TLS verification: ``True`` (default), ``False``, or a CA bundle path.
    """

    _default_transport = AiohttpTransport

    def __init__(
        self,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        organization: str | None = None,
        project: str | None = None,
        timeout: TimeoutLike | None = None,
        max_retries: int | None = None,
        default_headers: Mapping[str, str] | None = None,
        default_query: Mapping[str, str] | None = None,
        require_done: bool = True,
        max_body_bytes: int | None = None,
        max_line_bytes: int | None = None,
        session: aiohttp.ClientSession | None = None,
        transport: AsyncTransport | None = None,
        pool_maxsize: int = 100,
        verify: bool | str = True,
    ) -> None:
        self._config = ClientConfig.resolve(
            api_key=api_key,
            base_url=base_url,
            organization=organization,
            project=project,
            timeout=timeout,
            max_retries=max_retries,
            default_headers=default_headers,
            default_query=default_query,
            require_done=require_done,
            max_body_bytes=max_body_bytes,
            max_line_bytes=max_line_bytes,
        )
        self._transport_options: dict[str, Any] = {"pool_maxsize": pool_maxsize, "verify": verify}
        self._custom_transport = transport is not None or session is not None
        self._transport: AsyncTransport = (
            transport
            if transport is not None
            else AiohttpTransport(session, pool_maxsize=pool_maxsize, verify=verify)
        )
        self._owns_transport = transport is None

    @property
    def transport(self) -> AsyncTransport:
        """The transport this client sends through."""
        return self._transport

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
        """Create a chat completion (``await`` it).

        Pass a :class:`CreateChatCompletionRequest`, or its fields as keyword arguments.
        With ``stream=True`` (or a request whose ``stream`` is true) the awaited result is an
        :class:`AsyncChatStream` that has already received the response headers.
        """
        call = self._plan(request, params, stream=stream, timeout=timeout)
        if call.stream:
            stream_obj = AsyncChatStream(self, call)
            await stream_obj.__aenter__()
            return stream_obj
        flow = call.flow()
        completion: CreateChatCompletionResponse = await run_flow(flow, self._transport)
        return completion

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
        """Stream a chat completion; not awaited: ``async for chunk in chat.stream(...)``
        or ``async with chat.stream(...) as s``. Invalid arguments raise here, at once."""
        call = self._plan(request, params, stream=None, timeout=timeout, force_stream=True)
        return AsyncChatStream(self, call)

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
