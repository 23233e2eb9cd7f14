"""The default sync transport, on `requests`: the only module that imports requests/urllib3.

Besides sending, it enforces the call's total deadline on blocking sockets (a watchdog shuts
a socket down when the deadline passes, also while headers or a body trickle in), cuts the
calls in flight when it is closed (so a thread blocked in one wakes with `ClientClosedError`),
skips interim 1xx answers, reads proxy settings once per server, and gives a forked child its
own connection pool.
"""

from __future__ import annotations

import contextlib
import contextvars
import http.client
import os
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any

import requests
import requests.adapters
import urllib3.connection
import urllib3.connectionpool
import urllib3.exceptions

from chatlib._environment import ProxyTable, ca_bundle
from chatlib._request import HttpRequest
from chatlib._transports.base import client_closed, cut_by_close, transport_error
from chatlib._transports.watchdog import Watch, watchdog
from chatlib.errors import APIConnectionError, deadline_exceeded

__all__ = ["RequestsTransport", "Session"]

Session = requests.Session

# ValueError: what the HTTP libraries raise for a request they refuse to make.
_FAILURES = (requests.RequestException, urllib3.exceptions.HTTPError, OSError, ValueError)
_TIMEOUTS = (requests.exceptions.Timeout, urllib3.exceptions.TimeoutError, TimeoutError)


def _translate(
    exc: BaseException, url: str, deadline: float | None, calls: _InFlight
) -> APIConnectionError:
    """A requests/urllib3/socket failure as the chatlib error a user can act on."""
    if calls.closed:
        return cut_by_close(url)
    if deadline is not None and time.monotonic() >= deadline:
        return deadline_exceeded(url)
    inner = exc.args[0] if exc.args else None
    timed_out = isinstance(exc, _TIMEOUTS) or isinstance(inner, urllib3.exceptions.TimeoutError)
    return transport_error(exc, url, timed_out=timed_out)


def _shut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)  # wakes a thread blocked reading it
    except OSError:
        pass  # already closed


class _InFlight:
    """The sockets of a transport's calls in progress, so that `close` can cut them: a
    thread blocked in a create or a stream wakes instead of waiting for its deadline."""

    __slots__ = ("_lock", "_socks", "closed")

    def __init__(self, *, closed: bool = False) -> None:
        self._lock = threading.Lock()
        self._socks: set[socket.socket] = set()
        self.closed = closed

    def add(self, sock: socket.socket) -> None:
        with self._lock:
            if not self.closed:
                self._socks.add(sock)
                return
        _shut(sock)  # closed meanwhile: the call fails at its next read

    def discard(self, sock: socket.socket) -> None:
        with self._lock:
            self._socks.discard(sock)

    def close(self) -> None:
        with self._lock:
            self.closed = True
            socks, self._socks = self._socks, set()
        for sock in socks:
            _shut(sock)


class _RequestsResponse:
    """A `requests.Response` behind the `SyncResponse` protocol."""

    __slots__ = (
        "_calls",
        "_deadline",
        "_response",
        "_sock",
        "_url",
        "_watch",
        "headers",
        "status_code",
    )

    def __init__(
        self,
        response: requests.Response,
        url: str,
        *,
        deadline: float | None = None,
        calls: _InFlight | None = None,
    ) -> None:
        self._response = response
        self._url = url
        self._deadline = deadline
        self._calls = calls if calls is not None else _InFlight()
        self._sock: socket.socket | None = None
        self._watch: Watch | None = None
        self.status_code = response.status_code
        self.headers: Mapping[str, str] = response.headers

    def iter_bytes(self) -> Iterator[bytes]:
        """The body, piece by piece as it arrives, within the call's total deadline: the
        watchdog shuts the socket down when it passes, even in the middle of a chunk."""
        raw = self._response.raw
        deadline = self._deadline
        sock = getattr(getattr(raw, "_connection", None), "sock", None)
        if sock is not None and self._sock is None:
            self._sock = sock
            self._calls.add(sock)
        if deadline is not None and self._watch is None and sock is not None:
            self._watch = watchdog.watch(deadline, sock)
        failure: APIConnectionError | None = None
        try:
            if raw.chunked or not hasattr(raw, "read1"):
                pieces: Iterator[bytes] = self._response.iter_content(chunk_size=None)
            else:
                # Not chunked: read1 hands over whatever has arrived, so a stream without
                # chunked encoding (HTTP/1.0 style, close-delimited) is still incremental.
                pieces = iter(lambda: raw.read1(65536, decode_content=True), b"")
            for piece in pieces:
                if deadline is not None and time.monotonic() >= deadline:
                    raise deadline_exceeded(self._url)
                if piece:
                    yield piece
            if self._watch is not None and self._watch.fired:
                raise deadline_exceeded(self._url)  # the body "ended": the watchdog cut it
            if self._calls.closed:
                raise cut_by_close(self._url)  # the body "ended": `close` cut it
        except _FAILURES as exc:
            failure = _translate(exc, self._url, deadline, self._calls)
        finally:
            self._unwatch()
        if failure is not None:
            raise failure  # raised outside the except: see `send`

    def settle(self, seconds: float) -> None:
        """Wait at most `seconds` for each further read (the end of a finished stream)."""
        sock = getattr(getattr(self._response.raw, "_connection", None), "sock", None)
        if sock is not None:
            sock.settimeout(seconds)

    def _unwatch(self) -> None:
        watch, self._watch = self._watch, None
        if watch is not None:
            watchdog.cancel(watch)
        sock, self._sock = self._sock, None
        if sock is not None:
            self._calls.discard(sock)

    def close(self) -> None:
        raw = self._response.raw
        connection = getattr(raw, "_connection", None)
        sock = getattr(connection, "sock", None)
        if sock is not None and not _body_complete(raw):
            # The connection cannot be reused anyway; shutting it down first wakes a thread
            # blocked reading this body (closing alone would wait for that read to end).
            _shut(sock)
        self._unwatch()  # before the connection can go back to the pool
        self._response.close()


def _body_complete(raw: Any) -> bool:
    """Whether the whole body was read (`http.client` closes its response at the end)."""
    isclosed = getattr(getattr(raw, "_fp", None), "isclosed", None)
    return isclosed is None or bool(isclosed())


# ---------------------------------------------------------------- deadline-aware connections

# The deadline of the call being sent on this thread, and its transport's calls in flight,
# for the connections below.
_DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "chatlib_deadline", default=None
)
_CALLS: contextvars.ContextVar[_InFlight | None] = contextvars.ContextVar(
    "chatlib_calls", default=None
)


@contextlib.contextmanager
def _deadline_watch(sock: Any) -> Iterator[None]:
    calls = _CALLS.get()
    if calls is not None and sock is not None:
        calls.add(sock)
    try:
        with _watched(sock):
            yield
    finally:
        if calls is not None and sock is not None:
            calls.discard(sock)


@contextlib.contextmanager
def _watched(sock: Any) -> Iterator[None]:
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
        raise TimeoutError  # reported as the deadline's own error by _translate


class _HTTPResponse(http.client.HTTPResponse):
    """Skips every interim 1xx answer (`103 Early Hints`...); `http.client` skips only 100."""

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
    """An adapter whose connections honour `timeout.total` while headers trickle in."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _POOLS

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        manager.pool_classes_by_scheme = _POOLS
        return manager


class _Session(requests.Session):
    """A session that never reads ahead into a redirect.

    Even with `allow_redirects=False`, `requests` prepares `Response.next` for a 3xx with a
    `Location`, and that reads the whole redirect body first, with no size limit and no
    total deadline (a 307 trickling its body kept a call past `timeout.total`, a 307
    flooding it filled memory), and raises `ValueError` on a `Location` it cannot parse.
    The core follows redirects itself, reading at most a small body within the deadline."""

    def get_redirect_target(self, resp: requests.Response) -> None:
        return None


# ---------------------------------------------------------------- the transport


class RequestsTransport:
    """The default sync transport: a `requests.Session` with its own connection pool.

    Proxies and the CA bundle follow the environment as `chatlib._environment` says (the
    same rule as the async transport); a session passed in keeps its own settings. A
    process that forks gets a fresh session in the child instead of sharing sockets.
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
        # A session passed in keeps its own `session.verify` (CA bundle) unless told otherwise.
        self._verify: bool | str | None = (
            ca_bundle(verify) if session is None else (None if verify is True else verify)
        )
        self._proxies = ProxyTable(from_environment=session is None)
        self._session = session if session is not None else self._new_session()
        self._pid = os.getpid()
        self._calls = _InFlight()

    def _new_session(self) -> requests.Session:
        session = _Session()
        session.trust_env = False  # the environment is read by ProxyTable; no .netrc over our key
        adapter = _DeadlineAdapter(
            pool_connections=1, pool_maxsize=self._pool_maxsize, max_retries=0
        )
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        return session

    def _session_for_this_process(self) -> requests.Session:
        if os.getpid() != self._pid:
            # The parent's sockets stay the parent's: never used, nor cut by `close`, here.
            self._calls = _InFlight(closed=self._calls.closed)
            if self._owns_session:
                self._session = self._new_session()
            self._pid = os.getpid()
        return self._session

    def send(self, request: HttpRequest) -> _RequestsResponse:
        """Send `request`; returns once headers are in (the body is streamed)."""
        session = self._session_for_this_process()
        calls = self._calls
        if calls.closed:
            raise client_closed()
        proxy = self._proxies.proxy_for(request.url)
        timeout = request.timeout
        deadline = None if timeout.total is None else time.monotonic() + timeout.total
        context = _DEADLINE.set(deadline)
        calls_context = _CALLS.set(calls)
        failure: APIConnectionError | None = None
        try:
            response = session.request(
                request.method,
                request.url,
                headers=dict(request.headers),
                data=request.body,
                stream=True,
                timeout=(timeout.connect, timeout.read),
                proxies=None if proxy is None else {"all": proxy},
                allow_redirects=False,  # the core follows redirects (credentials stay home)
                verify=self._verify,
            )
        except _FAILURES as exc:
            failure = _translate(exc, request.url, deadline, calls)
        finally:
            _CALLS.reset(calls_context)
            _DEADLINE.reset(context)
        if failure is not None:
            # Raised outside the `except`, so the library's exception is not its
            # `__context__`: that one holds the prepared request, Authorization header and all,
            # and would travel with the error wherever it is pickled with its chain.
            raise failure
        return _RequestsResponse(response, request.url, deadline=deadline, calls=calls)

    def close(self) -> None:
        """Close the pool (a session passed in by the caller is left open) and cut the
        calls in flight: they, and every later call, raise `ClientClosedError`."""
        if os.getpid() != self._pid:
            self._calls = _InFlight(closed=True)  # a forked child leaves the parent's calls be
        else:
            self._calls.close()
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
