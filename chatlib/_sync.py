"""``SyncChat``: the blocking face of chatlib, on ``requests``. The only module importing it.

It moves bytes and time; every rule (building, retrying, parsing) is the core's.
"""

from __future__ import annotations

import contextlib
import contextvars
import http.client
import os
import time
from collections.abc import Generator, Iterator, Mapping
from types import TracebackType
from typing import Any, Literal, overload

import requests
import requests.adapters
import requests.utils
import urllib3.connection
import urllib3.connectionpool
import urllib3.exceptions
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
from chatlib._transport import SyncResponse, SyncTransport
from chatlib._watchdog import Watch, watchdog
from chatlib.errors import APIConnectionError, APIError, APITimeoutError, BodyTooLargeError
from chatlib.models import (
    ChatCompletionParams,
    CreateChatCompletionChunk,
    CreateChatCompletionRequest,
    CreateChatCompletionResponse,
)

__all__ = ["ChatStream", "RequestsTransport", "SyncChat"]


def _translate(exc: BaseException, url: str) -> APIConnectionError:
    """A requests/urllib3/socket failure as the chatlib error a user can act on."""
    inner = exc.args[0] if exc.args else None
    if isinstance(
        exc,
        (
            requests.exceptions.Timeout,
            urllib3.exceptions.TimeoutError,
            TimeoutError,
        ),
    ) or isinstance(inner, urllib3.exceptions.TimeoutError):
        return APITimeoutError(
            scrub(f"Request timed out: {type(exc).__name__}: {exc}", url), request_url=safe_url(url)
        )
    return APIConnectionError(
        scrub(f"Connection error: {type(exc).__name__}: {exc}", url), request_url=safe_url(url)
    )


# ValueError: what the HTTP libraries raise for a request they refuse to make.
_FAILURES = (requests.RequestException, urllib3.exceptions.HTTPError, OSError, ValueError)


class _RequestsResponse:
    """A ``requests.Response`` behind the :class:`SyncResponse` protocol."""

    __slots__ = ("_deadline", "_response", "_url", "_watch", "headers", "status_code")

    def __init__(
        self, response: requests.Response, url: str, *, deadline: float | None = None
    ) -> None:
        self._response = response
        self._url = url
        self._deadline = deadline
        self._watch: Watch | None = None
        self.status_code = response.status_code
        self.headers: Mapping[str, str] = response.headers

    def _timed_out(self) -> APITimeoutError:
        return APITimeoutError(
            "Request timed out: the call outlived its total deadline (timeout.total)",
            request_url=safe_url(self._url),
        )

    def iter_bytes(self) -> Iterator[bytes]:
        """The body, piece by piece as it arrives, within the call's total deadline: the
        watchdog shuts the socket down when it passes, even in the middle of a chunk."""
        raw = self._response.raw
        deadline = self._deadline
        if deadline is not None and self._watch is None:
            sock = getattr(getattr(raw, "_connection", None), "sock", None)
            if sock is not None:
                self._watch = watchdog.watch(deadline, sock)
        try:
            if raw.chunked or not hasattr(raw, "read1"):
                pieces: Iterator[bytes] = self._response.iter_content(chunk_size=None)
            else:
                # Not chunked: read1 hands over whatever has arrived, so a stream without
                # chunked encoding (HTTP/1.0 style, close-delimited) is still incremental.
                pieces = iter(lambda: raw.read1(65536, decode_content=True), b"")
            for piece in pieces:
                if deadline is not None and time.monotonic() >= deadline:
                    raise self._timed_out()
                if piece:
                    yield piece
            if self._watch is not None and self._watch.fired:
                raise self._timed_out()  # the body "ended" because the watchdog cut it short
        except _FAILURES as exc:
            if deadline is not None and time.monotonic() >= deadline:
                raise self._timed_out() from None
            raise _translate(exc, self._url) from None
        finally:
            self._unwatch()

    def settle(self, seconds: float) -> None:
        """Wait at most ``seconds`` for each further read (the end of a finished stream)."""
        sock = getattr(getattr(self._response.raw, "_connection", None), "sock", None)
        if sock is not None:
            sock.settimeout(seconds)

    def _unwatch(self) -> None:
        watch, self._watch = self._watch, None
        if watch is not None:
            watchdog.cancel(watch)

    def close(self) -> None:
        self._unwatch()  # before the connection can go back to the pool
        self._response.close()


# The deadline of the call being sent on this thread, for the connections below.
_DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "chatlib_deadline", default=None
)


@contextlib.contextmanager
def _deadline_watch(sock: Any) -> Iterator[None]:
    deadline = _DEADLINE.get()
    if deadline is None or sock is None:
        yield
        return
    watch = watchdog.watch(deadline, sock)
    try:
        yield
    finally:
        watchdog.cancel(watch)
    if watch.fired:  # the headers "ended" because the watchdog cut them short
        raise TimeoutError("the call outlived its total deadline (timeout.total)")


class _HTTPResponse(http.client.HTTPResponse):
    """Skips every interim 1xx answer (``103 Early Hints``...); ``http.client`` skips only 100."""

    def _read_status(self) -> Any:
        while True:
            version, status, reason = super()._read_status()  # type: ignore[misc]
            if not 101 < status < 200:  # 100: http.client skips it; 101 would end HTTP itself
                return version, status, reason
            http.client._read_headers(self.fp)  # type: ignore[attr-defined]


class _HTTPConnection(urllib3.connection.HTTPConnection):
    """Waits for the response headers no longer than the call's total deadline."""

    response_class = _HTTPResponse

    def getresponse(self) -> Any:
        with _deadline_watch(self.sock):
            return super().getresponse()


class _HTTPSConnection(urllib3.connection.HTTPSConnection):
    """Waits for the response headers no longer than the call's total deadline."""

    response_class = _HTTPResponse

    def getresponse(self) -> Any:
        with _deadline_watch(self.sock):
            return super().getresponse()


class _HTTPPool(urllib3.connectionpool.HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(urllib3.connectionpool.HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


_POOLS: dict[str, Any] = {"http": _HTTPPool, "https": _HTTPSPool}


class _DeadlineAdapter(requests.adapters.HTTPAdapter):
    """An adapter whose connections honour ``timeout.total`` while headers trickle in."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _POOLS

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        manager.pool_classes_by_scheme = _POOLS
        return manager


class RequestsTransport:
    """The default sync transport: a ``requests.Session`` with its own connection pool.

    Proxy settings are read from the environment once per server, on the first request to it
    (``requests`` would re-scan the environment twice per request), and still honoured.
    A process that forks gets a fresh session in the child instead of sharing sockets.
    """

    def __init__(
        self,
        session: requests.Session | None = None,
        *,
        pool_maxsize: int = 10,
        verify: bool | str = True,
    ) -> None:
        self._owns_session = session is None
        self._pool_maxsize = pool_maxsize
        self._verify = verify
        self._session = session if session is not None else self._new_session()
        self._pid = os.getpid()
        self._proxies: dict[str, dict[str, str]] = {}  # by origin: read once per server

    def _new_session(self) -> requests.Session:
        session = requests.Session()
        session.trust_env = False  # environment read once below; and no .netrc over our key
        adapter = _DeadlineAdapter(
            pool_connections=1, pool_maxsize=self._pool_maxsize, max_retries=0
        )
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        return session

    def _session_for_this_process(self) -> requests.Session:
        if self._owns_session and os.getpid() != self._pid:
            self._session = self._new_session()  # the parent's sockets stay the parent's
            self._pid = os.getpid()
        return self._session

    def _environment(self, url: str) -> tuple[dict[str, str], bool | str | None]:
        origin = origin_of(url)
        proxies = self._proxies.get(origin)
        if proxies is None:
            proxies = self._proxies[origin] = (
                dict(requests.utils.get_environ_proxies(url)) if self._owns_session else {}
            )
        verify: bool | str | None = self._verify
        if verify is True and self._owns_session:
            verify = (
                os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
            )
        elif verify is True:
            verify = None  # a session passed in keeps its own ``session.verify`` (CA bundle)
        return proxies, verify

    def send(self, request: HttpRequest) -> _RequestsResponse:
        """Send ``request``; returns once headers are in (the body is streamed)."""
        session = self._session_for_this_process()
        proxies, verify = self._environment(request.url)
        timeout = request.timeout
        deadline = None if timeout.total is None else time.monotonic() + timeout.total
        context = _DEADLINE.set(deadline)
        try:
            response = session.request(
                request.method,
                request.url,
                headers=dict(request.headers),
                data=request.body,
                stream=True,
                timeout=(timeout.connect, timeout.read),
                proxies=proxies or None,
                allow_redirects=False,  # the core follows redirects (credentials stay home)
                verify=verify,
            )
        except _FAILURES as exc:
            if deadline is not None and time.monotonic() >= deadline:
                raise APITimeoutError(
                    "Request timed out: the call outlived its total deadline (timeout.total)",
                    request_url=safe_url(request.url),
                ) from None
            raise _translate(exc, request.url) from None
        finally:
            _DEADLINE.reset(context)
        return _RequestsResponse(response, request.url, deadline=deadline)

    def close(self) -> None:
        """Close the pool (a session passed in by the caller is left open)."""
        if self._owns_session:
            # urllib3 2 only forgets its pools on clear() and closes them when collected: an
            # exception or response still referenced would keep their sockets open. Close now.
            for adapter in set(self._session.adapters.values()):
                manager = getattr(adapter, "poolmanager", None)
                pools: Any = getattr(manager, "pools", None) or {}
                for key in list(pools.keys()):
                    pool = pools.get(key)
                    if pool is not None:
                        pool.close()
            self._session.close()


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


def run_flow(flow: Generator[Command, Any, Any], transport: SyncTransport) -> Any:
    """Drive a core flow with blocking I/O: the whole sync driver."""
    outcome: Any = None
    try:
        while True:
            command = flow.send(outcome)
            if isinstance(command, Send):
                try:
                    outcome = transport.send(command.request)
                except APIConnectionError as exc:
                    outcome = exc
            elif isinstance(command, ReadBody):
                outcome = _read_body(command.response, command.limit)
            else:
                time.sleep(command.seconds)
                outcome = None
    except StopIteration as stop:
        return stop.value
    finally:
        flow.close()


class ChatStream(Iterator[CreateChatCompletionChunk]):
    """A streamed completion: iterate it for chunks; use it in a ``with`` block.

    The connection goes back to the pool when the stream is exhausted, and is released
    when you ``break`` out, call :meth:`close`, an exception passes through, or the stream
    is garbage collected.
    """

    def __init__(self, response: SyncResponse, call: Call) -> None:
        self._response = response
        self._state = call.stream_state(response.headers, time.monotonic)
        self._body = response.iter_bytes()
        self._closed = False

    @property
    def headers(self) -> Mapping[str, str]:
        """The response headers."""
        return self._response.headers

    @property
    def request_id(self) -> str | None:
        """The server's ``x-request-id``."""
        return self._state.parser.request_id

    @property
    def accumulated(self) -> CreateChatCompletionResponse:
        """Everything received so far, merged into one completion."""
        return self._state.accumulated

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
        return self._state.accumulated

    def __repr__(self) -> str:
        status = "closed" if self._closed else "finished" if self._state.finished else "open"
        return f"<ChatStream {status} request_id={self.request_id!r}>"

    def close(self) -> None:
        """Release the connection; reading the little that follows ``[DONE]`` lets it be reused."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._state.parser.done:  # a clean end: what follows [DONE] is tiny
                settle = getattr(self._response, "settle", None)
                if settle is not None:
                    settle(DRAIN_SECONDS)
                drained = 0
                for piece in self._body:
                    drained += len(piece)
                    if drained > DRAIN_BYTES:
                        break
        except APIError:
            pass
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

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):
            self._closed = True
            self._response.close()


class SyncChat(ClientBase):
    """A blocking client for any OpenAI-compatible Chat Completions server.

    ``SyncChat()`` reads ``OPENAI_API_KEY``, ``OPENAI_BASE_URL``, ``OPENAI_ORG_ID`` and
    ``OPENAI_PROJECT_ID``. With ``base_url`` pointing at your own server no key is needed.
    Safe to use from a Jupyter cell (no event loop involved) and from several threads.

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
        session: Your own ``requests.Session``; chatlib uses it and never closes it.
        transport: A custom transport (see the transports page); replaces ``session``.
        pool_maxsize: Connections kept open to the server (default 10).
        verify: TLS verification: ``True`` (default), ``False``, or a CA bundle path.
    """

    _default_transport = RequestsTransport

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
        session: requests.Session | None = None,
        transport: SyncTransport | None = None,
        pool_maxsize: int = 10,
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
        self._transport: SyncTransport = (
            transport
            if transport is not None
            else RequestsTransport(session, pool_maxsize=pool_maxsize, verify=verify)
        )
        self._owns_transport = transport is None

    @property
    def transport(self) -> SyncTransport:
        """The transport this client sends through."""
        return self._transport

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

        Pass a :class:`CreateChatCompletionRequest`, or its fields as keyword arguments
        (``messages`` as dicts or :class:`ChatMessage` objects). With ``stream=True`` (or a
        request whose ``stream`` is true) this returns a :class:`ChatStream`, like
        :meth:`stream`. ``timeout`` overrides the client's for this call.
        """
        call = self._plan(request, params, stream=stream, timeout=timeout)
        return self._run(call)

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
        """Stream a chat completion: ``with chat.stream(...) as s: for chunk in s: ...``."""
        call = self._plan(request, params, stream=None, timeout=timeout, force_stream=True)
        result = self._run(call)
        assert isinstance(result, ChatStream)
        return result

    def _run(self, call: Call) -> CreateChatCompletionResponse | ChatStream:
        flow = call.flow()
        result = run_flow(flow, self._transport)
        if call.stream:
            return ChatStream(result, call)
        completion: CreateChatCompletionResponse = result
        return completion

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
