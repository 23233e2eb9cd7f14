"""`LocalServer`: its lifecycle (in a thread of its own or in the caller's event loop), the
script of actions, the recorded requests, and the request handler that ties them together.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import socket
import sys
import threading
import traceback
from collections import deque
from types import TracebackType
from typing import Any, Final, Literal, cast, get_args

from aiohttp import web

from chatlib.testing._bodies import Call, completion_dict, dumps
from chatlib.testing._playback import play
from chatlib.testing._routing import Refusal, StoredRoute, admit
from chatlib.testing._store import CompletionStore
from chatlib.testing._wire import Dropped, Exchange
from chatlib.testing.actions import Action, InStreamError, RecordedRequest, Reply, Responder

_ACTION_TYPES: Final = get_args(Action)
_MAX_REQUEST_BODY: Final = 64 * 1024 * 1024
_SHUTDOWN_TIMEOUT: Final = 0.25  # aiohttp's grace period for busy connections at cleanup
_HANDLER_GRACE: Final = 0.5  # how long stop waits for handlers before cancelling them
_STOP_TIMEOUT: Final = 10.0  # upper bound for a sync stop() (never reached in practice)
_START_TIMEOUT: Final = 10.0


class LocalServer:
    """An OpenAI-compatible Chat Completions server on loopback, with scripted replies.

    Use it as a context manager, synchronously (`with`: the server runs in a background
    thread with its own event loop) or asynchronously (`async with`: it runs in the current
    event loop, no thread). Starting an already started server, or stopping a stopped one, does
    nothing; a stopped server can be started again (on a new ephemeral port when `port=0`).

    It also speaks Azure OpenAI's dialect: `POST /openai/deployments/{deployment}/chat/
    completions?api-version=...` is answered like `/v1/chat/completions`, with Azure's
    `prompt_filter_results` and `content_filter_results` added; an `api-key` header is
    accepted there, and a request without `api-version` gets a 404.

    Completions made with `"store": true` (and answered with a `Reply`) are kept, and served
    by the stored-completion endpoints, under `/v1` (and `/openai`, Azure-style):
    `GET /chat/completions` (`after`, `limit`, `order`, `model`, `metadata[key]`),
    `GET`/`POST`/`DELETE /chat/completions/{id}` and `GET /chat/completions/{id}/messages`.
    Those requests consume the next scripted action only when it is a fault (anything but a
    `Reply` or an `InStreamError`), so retries can be tested on them too.

    Args:
        host: The address to listen on (loopback by default).
        port: The port; `0` picks a free ephemeral port (see `url`).
        api_key: When set, every request must carry `Authorization: Bearer <api_key>` (or,
            under `/openai`, `api-key: <api_key>`), else it gets a 401 with an
            OpenAI-shaped error body (and consumes no scripted action).
        model: The `model` reported when a request does not name one.
        write_size: When set, every response body is written in pieces of at most this many
            bytes, each flushed separately, so clients see tiny, arbitrary chunk boundaries
            (in the middle of SSE lines, JSON strings and UTF-8 characters).

    Attributes:
        api_key: As given.
        model: As given.
        write_size: As given.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        api_key: str | None = None,
        model: str = "chatlib-local",
        write_size: int | None = None,
    ) -> None:
        if write_size is not None and write_size < 1:
            raise ValueError(f"write_size must be >= 1, got {write_size!r}")
        self.api_key = api_key
        self.model = model
        self.write_size = write_size
        self._host = host
        self._port = port
        self._lock = threading.Lock()  # guards _script and _requests
        self._script: deque[Action | Responder] = deque()
        self._requests: list[RecordedRequest] = []
        self._store = CompletionStore()
        self._state_lock = threading.Lock()  # guards start/stop transitions
        self._mode: Literal["thread", "async"] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._stopping: asyncio.Event | None = None
        self._handlers: set[asyncio.Task[Any]] = set()
        self._origin: str | None = None

    def __repr__(self) -> str:
        where = self._origin if self._mode is not None else "stopped"
        return f"<LocalServer {where}>"

    # -- addresses, script and records ---------------------------------------------------------

    @property
    def url(self) -> str:
        """The origin, `"http://127.0.0.1:<port>"` (raises `RuntimeError` before the
        first start; after a stop it still names the last address)."""
        if self._origin is None:
            raise RuntimeError("LocalServer is not started: call start() or astart() first")
        return self._origin

    @property
    def base_url(self) -> str:
        """The API base URL for clients, `"http://127.0.0.1:<port>/v1"`."""
        return self.url + "/v1"

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received so far, on any path, oldest first (a snapshot copy)."""
        with self._lock:
            return list(self._requests)

    def enqueue(self, *actions: Action | Responder) -> None:
        """Script the next chat-completions replies, first in first out.

        Each `POST /v1/chat/completions` (that passes the API-key check and carries a JSON
        object) consumes one action; when the script is empty the server echoes the last user
        message. An action may be a `Responder`, a function of the `RecordedRequest` that
        returns the action to play. Safe to call from any thread while the server runs.
        """
        for action in actions:
            if not isinstance(action, _ACTION_TYPES) and not callable(action):
                raise TypeError(f"not a chatlib.testing action: {action!r}")
        with self._lock:
            self._script.extend(actions)

    @property
    def stored(self) -> list[dict[str, Any]]:
        """The stored completions (made with `"store": true`), oldest first, as the
        retrieve endpoint shows them (a snapshot)."""
        page = self._store.answer("list", None, {"limit": "100"}, None).body
        items: list[dict[str, Any]] = []
        while True:
            items.extend(page["data"])
            if not page["has_more"]:
                return items
            query = {"limit": "100", "after": page["last_id"]}
            page = self._store.answer("list", None, query, None).body

    def clear(self) -> None:
        """Drop the remaining scripted actions, the recorded requests and the stored
        completions."""
        with self._lock:
            self._script.clear()
            self._requests.clear()
        self._store.clear()

    # -- sync lifecycle ----------------------------------------------------------------------

    def start(self) -> LocalServer:
        """Start serving from a background thread running its own event loop; returns self.

        Does nothing if the server is already running (in either mode).
        """
        with self._state_lock:
            if self._mode is not None:
                return self
            loop = asyncio.new_event_loop()
            ready = threading.Event()
            failure: list[BaseException] = []
            thread = threading.Thread(
                target=self._thread_main,
                args=(loop, ready, failure),
                name="chatlib.testing.LocalServer",
                daemon=True,
            )
            thread.start()
            if not ready.wait(_START_TIMEOUT):  # pragma: no cover - defensive
                loop.call_soon_threadsafe(loop.stop)
                thread.join(_STOP_TIMEOUT)
                raise RuntimeError("LocalServer did not start in time")
            if failure:
                thread.join(_STOP_TIMEOUT)
                raise failure[0]
            self._mode = "thread"
            self._loop = loop
            self._thread = thread
            return self

    def stop(self) -> None:
        """Stop serving: end in-flight handlers, close all connections, join the thread.

        Returns promptly even when handlers are stalled or clients hold keep-alive
        connections. Does nothing if the server is not running.
        """
        with self._state_lock:
            mode, loop, thread = self._mode, self._loop, self._thread
            if mode is None or loop is None:
                return
            if mode == "async":
                if _running_loop() is loop:
                    raise RuntimeError("this LocalServer was started with astart(): use astop()")
                asyncio.run_coroutine_threadsafe(self.astop(), loop).result(_STOP_TIMEOUT)
                return
            try:
                future = asyncio.run_coroutine_threadsafe(self._close(), loop)
                try:
                    future.result(_STOP_TIMEOUT)
                except (
                    concurrent.futures.TimeoutError
                ):  # pragma: no cover - defensive: the loop is wedged
                    future.cancel()
            finally:
                if thread is not None and thread.is_alive():
                    loop.call_soon_threadsafe(loop.stop)
                    thread.join(_STOP_TIMEOUT)
                self._mode = None
                self._loop = None
                self._thread = None

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _thread_main(
        self,
        loop: asyncio.AbstractEventLoop,
        ready: threading.Event,
        failure: list[BaseException],
    ) -> None:
        asyncio.set_event_loop(loop)
        try:
            try:
                loop.run_until_complete(self._open())
            except BaseException as exc:
                failure.append(exc)
                return
            finally:
                ready.set()
            loop.run_forever()
        finally:
            try:
                _finish_loop(loop)
            finally:
                asyncio.set_event_loop(None)
                loop.close()

    # -- async lifecycle ---------------------------------------------------------------------

    async def astart(self) -> LocalServer:
        """Start serving in the current event loop (no thread); returns self.

        Does nothing if the server is already running (in either mode).
        """
        with self._state_lock:
            if self._mode is not None:
                return self
            self._mode = "async"
            self._loop = asyncio.get_running_loop()
        try:
            await self._open()
        except BaseException:
            self._mode = None
            self._loop = None
            raise
        return self

    async def astop(self) -> None:
        """Stop serving (see `stop`); call it from the loop that ran `astart`.

        A server started with `start` is stopped from a worker thread instead.
        """
        mode, loop = self._mode, self._loop
        if mode is None:
            return
        if mode == "thread":
            await asyncio.to_thread(self.stop)
            return
        if loop is not asyncio.get_running_loop():
            raise RuntimeError("astop() must run in the event loop that ran astart()")
        try:
            await self._close()
        finally:
            if self._loop is loop:
                self._mode = None
                self._loop = None

    async def __aenter__(self) -> LocalServer:
        return await self.astart()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.astop()

    # -- serving -----------------------------------------------------------------------------

    async def _open(self) -> None:
        """Bind, listen and start the aiohttp runner in the running loop."""
        self._stopping = asyncio.Event()
        self._handlers = set()
        app = web.Application(client_max_size=_MAX_REQUEST_BODY)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=_SHUTDOWN_TIMEOUT
        )
        await runner.setup()
        sock: socket.socket | None = None
        try:
            family, kind, proto, _canon, address = socket.getaddrinfo(
                self._host, self._port, type=socket.SOCK_STREAM
            )[0]
            sock = socket.socket(family, kind, proto)
            if sys.platform != "win32":
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
            host, port = sock.getsockname()[:2]
            site = web.SockSite(runner, sock)
            await site.start()
        except BaseException:
            if sock is not None:
                sock.close()
            await runner.cleanup()
            raise
        self._runner = runner
        self._origin = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    async def _close(self) -> None:
        """End handlers, then close the listening socket and every connection."""
        runner = self._runner
        if runner is None:
            return
        self._runner = None
        if self._stopping is not None:
            self._stopping.set()  # wakes stalls and delays: their handlers drop the connection
        pending = {task for task in self._handlers if not task.done()}
        if pending:
            _done, pending = await asyncio.wait(pending, timeout=_HANDLER_GRACE)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=_HANDLER_GRACE)
        await runner.cleanup()
        # Let the connections' own tasks and transports see their cancellation and close.
        for _ in range(5):
            await asyncio.sleep(0)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        exchange = Exchange(request, write_size=self.write_size, stopping=self._stopping)
        try:
            await self._serve_or_fail(exchange)
            return exchange.response if exchange.response is not None else web.Response()
        finally:
            if task is not None:
                self._handlers.discard(task)

    async def _serve_or_fail(self, exchange: Exchange) -> None:
        """Serve, and end the exchange the way each kind of failure calls for."""
        try:
            await self._serve(exchange)
        except Dropped as drop:
            exchange.close(graceful=drop.graceful)
        except ConnectionError:
            exchange.close(graceful=False)
        except web.HTTPException as exc:  # e.g. 413 from request.read()
            await exchange.fail(exc.status, exc.text or exc.reason, "invalid_request_error")
        except Exception:
            message = "chatlib.testing internal error:\n" + traceback.format_exc()
            await exchange.fail(500, message, "server_error")

    async def _serve(self, exchange: Exchange) -> None:
        record = _record(exchange.request, await exchange.request.read())
        with self._lock:
            self._requests.append(record)
        route = admit(record, self.api_key)
        if isinstance(route, Refusal):
            status, message, code = route
            await exchange.send_error(status, message, "invalid_request_error", code)
            return
        if isinstance(route, StoredRoute):
            with self._lock:
                fault = self._script[0] if self._script else None
                # Only a fault is for a stored-completion request: a reply, an in-stream
                # error or a responder waits for the next chat completion.
                if not isinstance(fault, _ACTION_TYPES) or isinstance(
                    fault, (Reply, InStreamError)
                ):
                    fault = None
                else:
                    self._script.popleft()
            if fault is not None:
                await play(exchange, Call.from_payload({}, self.model), fault)
                return
            answer = self._store.answer(
                route.operation, route.completion_id, record.query, route.body
            )
            await exchange.send(answer.status, {}, [dumps(answer.body)])
            return
        with self._lock:
            scripted = self._script.popleft() if self._script else Reply()
        action: object = scripted
        if not isinstance(scripted, _ACTION_TYPES):
            action = cast(Responder, scripted)(record)
        if not isinstance(action, _ACTION_TYPES):
            raise TypeError(f"the responder {scripted!r} returned {action!r}, not an action")
        call = Call.from_payload(route.payload, self.model, azure=route.deployment is not None)
        if isinstance(action, Reply) and route.payload.get("store") is True:
            self._store.add(completion_dict(call, action), route.payload)
        await play(exchange, call, cast(Action, action))


def _record(request: web.Request, body: bytes) -> RecordedRequest:
    headers: dict[str, str] = {}
    for name, value in request.headers.items():
        key = name.lower()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    transport = request.transport
    peer = transport.get_extra_info("peername") if transport is not None else None
    return RecordedRequest(
        method=request.method,
        path=request.path,
        query=dict(request.query.items()),
        headers=headers,
        body=body,
        connection=f"{peer[0]}:{peer[1]}" if peer else "",
    )


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _finish_loop(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel what is left on a private loop and shut it down quietly (it is closed after)."""
    tasks = [task for task in asyncio.all_tasks(loop) if not task.done()]
    for task in tasks:
        task.cancel()
    if tasks:
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
    loop.run_until_complete(loop.shutdown_asyncgens())
    loop.run_until_complete(loop.shutdown_default_executor())
