"""The default async transport, on `aiohttp`: the only chatlib module that imports it
(the test server in `chatlib.testing` aside).

One `aiohttp.ClientSession` per event loop, made lazily inside that loop, closed with it;
proxies and the CA bundle follow the environment as `chatlib._environment` says (the same
rule as the sync transport).
"""

from __future__ import annotations

import asyncio
import functools
import io
import os
import re
import select
import ssl
import threading
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from typing import Any

import aiohttp
from aiohttp.client_proto import ResponseHandler

from chatlib._environment import ProxyTable, ca_bundle
from chatlib._request import HttpRequest
from chatlib._transports.base import client_closed, cut_by_close, transport_error
from chatlib.errors import (
    APIConnectionError,
    InvalidArgumentError,
    deadline_exceeded,
)

__all__ = ["AiohttpTransport", "ClientSession"]

ClientSession = aiohttp.ClientSession

# ValueError: what the HTTP libraries raise for a request they refuse to make.
_FAILURES = (aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError)
_TIMEOUTS = (asyncio.TimeoutError, aiohttp.ServerTimeoutError, TimeoutError)
_INHERITED: list[aiohttp.ClientSession] = []  # sessions a forked child must never close
# This process's id, kept current by an at-fork hook: a request compares it with the pid its
# pools were made in, without a `getpid()` system call each time.
_PROCESS = [os.getpid()]
if hasattr(os, "register_at_fork"):  # pragma: no branch - every POSIX Python has it
    os.register_at_fork(after_in_child=lambda: _PROCESS.__setitem__(0, os.getpid()))


def _translate(exc: BaseException, url: str) -> APIConnectionError:
    """An aiohttp/socket failure as the chatlib error a user can act on."""
    if isinstance(exc, _TIMEOUTS) and not str(exc):
        return deadline_exceeded(url)  # aiohttp's total timeout: a bare TimeoutError
    # aiohttp's parser failing on the answer (a bad status line, a header too long, a body
    # shorter than its length...) says "400", which reads like the server's status.
    if type(exc) is aiohttp.ClientResponseError:
        said = " ".join(str(exc.message).split())
        detail = f"the server's answer is not valid HTTP ({said})"
        return transport_error(exc, url, timed_out=False, detail=detail)
    if isinstance(exc, aiohttp.ClientPayloadError):
        said = _PARSER_STATUS.sub(r"\1", " ".join(str(exc).split()))
        return transport_error(exc, url, timed_out=False, detail=said)
    return transport_error(exc, url, timed_out=isinstance(exc, _TIMEOUTS))


_PARSER_STATUS = re.compile(r"\b400, message[=:] ?'?(.*?)'?(?=>|$)")


_READ_SIZE = 16 * 1024
_READ_TIMEOUT_ERROR = getattr(aiohttp, "SocketTimeoutError", aiohttp.ServerTimeoutError)


class _IdleTimer:
    """The read timeout of a body: it fails the body's reader when nothing has arrived for
    `seconds`. Each piece read only notes the time (`last`); the one timer, when it is due,
    re-arms itself for the latest read instead of being moved at every read (which is
    what aiohttp's `sock_read` costs: a timer cancelled and made anew per read)."""

    __slots__ = ("_content", "_handle", "_loop", "_seconds", "last")

    def __init__(
        self, loop: asyncio.AbstractEventLoop, seconds: float, content: aiohttp.StreamReader
    ) -> None:
        self._loop = loop
        self._seconds = seconds
        self._content = content
        self.last = loop.time()
        self._handle: asyncio.TimerHandle | None = loop.call_at(self.last + seconds, self._due)

    def _due(self) -> None:
        due = self.last + self._seconds
        if self._loop.time() < due:
            self._handle = self._loop.call_at(due, self._due)
            return
        self._handle = None
        self._content.set_exception(_READ_TIMEOUT_ERROR("Timeout on reading data from socket"))

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


class _AiohttpResponse:
    """An `aiohttp.ClientResponse` behind the `AsyncResponse` protocol."""

    __slots__ = (
        "_idle",
        "_read_timeout",
        "_response",
        "_transport",
        "_url",
        "headers",
        "status_code",
    )

    def __init__(
        self,
        response: aiohttp.ClientResponse,
        url: str,
        read_timeout: float | None = None,
        transport: AiohttpTransport | None = None,
    ) -> None:
        self._response = response
        self._transport = transport  # to tell a body cut by the client's close
        self._url = url
        self._read_timeout = read_timeout
        self._idle: _IdleTimer | None = None
        self.status_code = response.status
        self.headers: Mapping[str, str] = response.headers

    def _watch_idle(self) -> _IdleTimer | None:
        """Take the body's read timeout over from aiohttp (see `_IdleTimer`); `None` keeps
        aiohttp's own (no read timeout, or a connection this cannot reach)."""
        seconds = self._read_timeout
        connection = self._response.connection
        protocol = getattr(connection, "protocol", None)
        if not seconds or protocol is None or not hasattr(protocol, "read_timeout"):
            return None
        self._idle = _IdleTimer(asyncio.get_running_loop(), seconds, self._response.content)
        protocol.read_timeout = None  # aiohttp's per-read timer stops at the next read
        return self._idle

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        # What has arrived, at most _READ_SIZE bytes a read: `iter_any()` would join all of
        # it, which after a burst from a fast server is a megabyte (and a Python call per
        # HTTP chunk in it) before the first event can be parsed.
        failure: APIConnectionError | None = None
        idle = self._watch_idle()
        read = self._response.content.read
        try:
            if idle is None:
                while piece := await read(_READ_SIZE):
                    yield piece
            else:
                clock = asyncio.get_running_loop().time
                while piece := await read(_READ_SIZE):
                    idle.last = clock()
                    yield piece
        except _FAILURES as exc:
            failure = self._failure(exc)
        finally:
            if idle is not None:
                idle.cancel()
        if failure is not None:
            raise failure  # raised outside the except: see `AiohttpTransport.send`

    async def aread_body(self, limit: int) -> bytes | None:
        """The whole body in one read when its `Content-Length` is known and at most
        `limit` (the usual JSON answer), else `None`: the caller reads it piece by piece.

        Not for a compressed body: its `Content-Length` counts the compressed bytes, and a
        few megabytes of gzip can hold gigabytes; read piece by piece, the limit holds."""
        response = self._response
        length = response.content_length
        if length is None or length > limit:
            return None
        if response.headers.get("Content-Encoding", "identity").lower() != "identity":
            return None
        failure: APIConnectionError | None = None
        try:
            return await response.read()
        except _FAILURES as exc:
            failure = self._failure(exc)
        raise failure  # raised outside the except: see `AiohttpTransport.send`

    def _failure(self, exc: BaseException) -> APIConnectionError:
        transport = self._transport
        if transport is not None and transport._closed:  # the client closed it mid-read
            return cut_by_close(self._url)
        return _translate(exc, self._url)

    async def aclose(self) -> None:
        self.close()

    def close(self) -> None:
        """Synchronous release (aiohttp's own is synchronous): usable from `__del__`."""
        if self._idle is not None:
            self._idle.cancel()
        response = self._response
        loop = getattr(response, "_loop", None)
        if response.content.is_eof() and loop is not None and not loop.is_closed():
            response.release()  # read to the end: the connection goes back to the pool
        else:
            _close_response(response)


def _close_response(response: aiohttp.ClientResponse) -> None:
    """Close a response whose body was not read to its end; a task reading it gets an error
    at once. Also when its loop is closed: aiohttp's `close()` then does nothing, and the
    socket and its connection were left to warn when collected."""
    loop = getattr(response, "_loop", None)
    connection = response.connection
    try:
        if loop is not None and loop.is_closed() and connection is not None:
            _close_socket(connection.protocol)
            connection.close()
        response.close()
    except RuntimeError:  # pragma: no cover - a waiter of the closed loop
        pass


_LARGE_BODY = 2**20  # aiohttp's ResourceWarning ("a large body ... as raw bytes") above this


def _payload(body: bytes | None) -> bytes | io.BytesIO | None:
    """The request body as aiohttp takes it without a warning: a large one (a few images
    in base64, say) as `io.BytesIO`, which aiohttp also writes in pieces. Raw bytes over
    1 MiB made it warn on every call, and where warnings are errors that warning escaped as
    the call's exception."""
    if body is not None and len(body) > _LARGE_BODY:
        return io.BytesIO(body)
    return body


# ---------------------------------------------------------------- pooled connections


# A server that says something while nobody asked (a second answer to one request, from a
# broken proxy, say) left it waiting on the idle pooled connection: aiohttp handed it to the
# next call as that call's answer, and every later call on the connection got the answer of
# the call before. urllib3 drops a pooled connection with unread bytes; so does this pool:
# when the bytes arrive (`_Protocol`), or, if the event loop was not running then, when the
# connection is taken from the pool (`_Connector.connect`).


class _Protocol(ResponseHandler):
    """aiohttp's connection protocol, closed when the server writes to it while pooled."""

    pooled = False  # set while the connection waits in the pool, unasked

    def set_response_params(self, *args: Any, **kwargs: Any) -> None:
        self.pooled = False  # a request is about to go out on this connection
        super().set_response_params(*args, **kwargs)

    def data_received(self, data: bytes) -> None:
        if self.pooled and data:
            self.close()  # the pool finds it disconnected and opens another
            return
        super().data_received(data)


class _Connector(aiohttp.TCPConnector):
    """A `TCPConnector` whose connections are `_Protocol`s, told when they are pooled."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        factory: Any = functools.partial(_Protocol, loop=self._loop)
        self._factory = factory

    def _release(self, key: Any, protocol: ResponseHandler, **kwargs: Any) -> None:
        super()._release(key, protocol, **kwargs)
        if isinstance(protocol, _Protocol) and protocol.is_connected():
            protocol.pooled = True

    async def connect(self, *args: Any, **kwargs: Any) -> Any:
        """A connection from the pool (or a new one) with nothing unread waiting on it."""
        for _ in range(3):  # a server that speaks first on every new connection: give up
            connection = await super().connect(*args, **kwargs)
            protocol = connection.protocol
            # Only a pooled connection can hold what nobody asked for (a new one: a server
            # that speaks first, left to the read).
            if not getattr(protocol, "pooled", False) or not _has_unread(protocol):
                break
            connection.close()
        return connection


def _has_unread(protocol: ResponseHandler | None) -> bool:
    """Whether a connection just taken from the pool is closed, or has bytes (or the
    server's end of stream) waiting in its socket that no request asked for."""
    transport = None if protocol is None else protocol.transport
    if transport is None or transport.is_closing():
        return True
    sock = transport.get_extra_info("socket")
    if sock is None:
        return False
    if hasattr(select, "poll"):  # select() fails on descriptors past FD_SETSIZE
        poller = select.poll()
        poller.register(sock.fileno(), select.POLLIN)
        return bool(poller.poll(0))
    return bool(select.select([sock], [], [], 0)[0])


def _close_socket(protocol: ResponseHandler | None) -> None:
    """Close the socket of a connection whose event loop is closed.

    asyncio's `transport.close()` leaves the socket's close to a callback of the loop, which
    a closed loop refuses (`RuntimeError`): the socket then stayed open until the garbage
    collector found it, with a ResourceWarning. Closing it here needs no loop (the selector
    transport's own last step); another loop's transports (uvloop's) are left to it."""
    transport = None if protocol is None else protocol.transport
    if transport is None:
        return
    try:
        transport.close()  # marks it closing, so nothing closes it twice
    except RuntimeError:
        pass
    lost = getattr(transport, "_call_connection_lost", None)
    if lost is not None and getattr(transport, "_sock", None) is not None:
        try:
            lost(None)  # tells the protocol, then closes the socket
        except RuntimeError:
            pass  # the protocol's futures belong to the closed loop; the socket is closed


# ---------------------------------------------------------------- one pool per event loop


class _LoopShutdownGuard:
    """Closes a session when its loop shuts down its async generators, which `asyncio.run`
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
                self.close_responses()
                if not self.session.closed:
                    await self.session.close()

    def close_responses(self) -> None:
        """Close the responses still open, first: a connection aiohttp closes itself leaves
        its body's reader waiting forever (or cancelled), while a closed response fails it
        with an error (`APIConnectionError` for the user)."""
        for response in list(self.responses):
            _close_response(response)

    def disarm(self) -> None:
        """Finish the watcher without closing anything (the session is dealt with elsewhere)."""
        self._armed = False
        closing = self._watcher.aclose()
        try:
            closing.send(None)
        except (StopIteration, RuntimeError):
            pass


class _LoopPool:
    """One event loop's session, and the guard that closes it when that loop shuts down."""

    __slots__ = ("guard", "session")

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session
        self.guard = _LoopShutdownGuard(session)

    def discard(self) -> None:
        """Drop the session of a loop that is gone or not running, without that loop (sync,
        quiet): with the loop closed, the sockets are closed here; else their close is left
        to the loop's next run, as aiohttp's own sync close does."""
        self.guard.close_responses()
        self.guard.disarm()
        connector = self.session.connector
        self.session.detach()
        if connector is not None:
            if connector._loop.is_closed():  # its `_close()` would close nothing
                for protocol in [p for ps in connector._conns.values() for p, _ in ps]:
                    _close_socket(protocol)
                for protocol in list(connector._acquired):
                    _close_socket(protocol)
            try:
                connector._close()  # sync; a no-op when its loop is closed
            except RuntimeError:
                pass

    async def aclose(self) -> None:
        """Close the session, in its own loop."""
        self.guard.close_responses()
        self.guard.disarm()
        await self.session.close()


# ---------------------------------------------------------------- the transport


class AiohttpTransport:
    """The default async transport: one `aiohttp.ClientSession` per event loop, made lazily.

    A session is created on first use inside the running event loop (never at import or
    construction). A client used from several loops (two `asyncio.run` calls, a notebook
    kernel restart, threads each running their own loop) gets one session per loop, and a
    forked child gets new ones. A session is closed with its loop; one whose loop is gone is
    dropped quietly.
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
        self._verify = ca_bundle(verify)
        self._pools: dict[asyncio.AbstractEventLoop, _LoopPool] = {}
        self._lock = threading.Lock()  # loops in several threads may share this transport
        self._pid = os.getpid()
        self._proxies = ProxyTable(from_environment=session is None)
        self._closed = False

    def __del__(self) -> None:
        # The pools of loops closed without `shutdown_asyncgens` (a bare `loop.close()`),
        # which no guard closed: their sockets are closed here instead of warning.
        pools = getattr(self, "_pools", None)
        if not pools or getattr(self, "_pid", None) != _PROCESS[0]:
            return
        for loop, pool in list(pools.items()):
            if loop.is_closed():
                pool.discard()

    def _ssl(self) -> bool | ssl.SSLContext:
        if isinstance(self._verify, bool):
            return self._verify
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
        if pool is not None and self._pid == _PROCESS[0] and not pool.session.closed:
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
                    connector=_Connector(limit=self._pool_maxsize, ssl=self._ssl()),
                    timeout=aiohttp.ClientTimeout(total=None),
                    auto_decompress=True,
                    trust_env=False,  # the environment is read by ProxyTable
                )
            )
            return pool

    async def send(self, request: HttpRequest) -> _AiohttpResponse:
        """Send `request`; returns once headers are in (the body is streamed)."""
        if self._closed:
            raise client_closed()
        loop = asyncio.get_running_loop()
        pool = None if not self._owns_session else self._pool_for(loop)
        session = pool.session if pool is not None else self._callers_session(loop)
        timeout = request.timeout
        failure: APIConnectionError | None = None
        headers = request.headers
        try:
            response = await session.request(
                request.method,
                request.url,
                # aiohttp copies the headers it is given; any mapping other than a dict is
                # copied here first (aiohttp takes dicts and multidicts).
                headers=headers if headers.__class__ is dict else dict(headers),
                data=_payload(request.body),
                timeout=aiohttp.ClientTimeout(
                    total=timeout.total,
                    sock_connect=timeout.connect,
                    sock_read=timeout.read,
                ),
                proxy=self._proxies.proxy_for(request.url),
                allow_redirects=False,  # the core follows redirects (credentials stay home)
            )
        except _FAILURES as exc:
            # Closed by the client while waiting for the answer: said so, and not retried.
            failure = cut_by_close(request.url) if self._closed else _translate(exc, request.url)
        if failure is not None:
            # Raised outside the `except`, so the library's exception (whose request info
            # holds the headers, the key among them) is not its `__context__`.
            raise failure
        if pool is not None:
            pool.guard.responses.add(response)
        return _AiohttpResponse(
            response, request.url, timeout.read if request.stream else None, self
        )

    async def aclose(self) -> None:
        """Close every pool (a session passed in by the caller is left open): this loop's
        here, another running loop's in that loop, a closed or idle loop's quietly. Sending after
        it raises `ClientClosedError`."""
        self._closed = True
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
            elif pool_loop.is_closed() or not pool_loop.is_running():
                # A loop that is not running would never run a coroutine sent to it (left
                # "never awaited", or a task "destroyed but pending" if it runs briefly).
                pool.discard()
            else:
                asyncio.run_coroutine_threadsafe(pool.aclose(), pool_loop)
