"""Shared fixtures: the bundled server on loopback, and one driver per facade.

A test that takes the ``facade`` fixture runs twice, once for :class:`SyncChat` and once for
:class:`AsyncChat`, with the same body: the driver turns every call into a blocking one (the
async client runs on an event loop the driver owns), so behaviour is asserted once and proven
for both faces.
"""

from __future__ import annotations

import asyncio
import functools
import os
import threading
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import pytest

from chatlib import AsyncChat, SyncChat
from chatlib.models import CreateChatCompletionChunk, CreateChatCompletionResponse
from chatlib.testing import LocalServer

T = TypeVar("T")


@pytest.fixture(scope="session")
def _shared_server() -> Iterator[LocalServer]:
    with LocalServer(write_size=7) as server:
        yield server


@pytest.fixture
def server(_shared_server: LocalServer) -> Iterator[LocalServer]:
    """The bundled server (thread mode, 7-byte writes), with an empty script and no records."""
    _shared_server.clear()
    yield _shared_server
    _shared_server.clear()


class StreamDriver:
    """A sync or async stream seen through one blocking interface."""

    def __init__(self, driver: FacadeDriver, stream: Any) -> None:
        self._driver = driver
        self.raw = stream

    def next(self) -> CreateChatCompletionChunk | None:
        """The next chunk, or None once the stream is exhausted."""
        if self._driver.is_async:

            async def step() -> CreateChatCompletionChunk | None:
                try:
                    return await self.raw.__anext__()  # type: ignore[no-any-return]
                except StopAsyncIteration:
                    return None

            return self._driver.run(step())
        return next(self.raw, None)

    def collect(self) -> list[CreateChatCompletionChunk]:
        chunks = []
        while (chunk := self.next()) is not None:
            chunks.append(chunk)
        return chunks

    def close(self) -> None:
        if self._driver.is_async:
            self._driver.run(self.raw.aclose())
        else:
            self.raw.close()

    @property
    def accumulated(self) -> CreateChatCompletionResponse:
        return self.raw.accumulated  # type: ignore[no-any-return]


class ClientDriver:
    """A SyncChat or AsyncChat with blocking ``create``/``stream``."""

    def __init__(self, driver: FacadeDriver, client: Any) -> None:
        self._driver = driver
        self.raw = client

    def create(self, *args: Any, **kwargs: Any) -> Any:
        """``client.create(...)``; with ``stream=True`` returns a :class:`StreamDriver`."""
        if self._driver.is_async:
            result = self._driver.run(self.raw.create(*args, **kwargs))
        else:
            result = self.raw.create(*args, **kwargs)
        if isinstance(result, CreateChatCompletionResponse):
            return result
        return StreamDriver(self._driver, result)

    def stream(self, *args: Any, **kwargs: Any) -> StreamDriver:
        """``client.stream(...)``, not yet read from."""
        return StreamDriver(self._driver, self.raw.stream(*args, **kwargs))

    def stream_all(self, *args: Any, **kwargs: Any) -> list[CreateChatCompletionChunk]:
        """Open a stream, read it to the end inside its context manager, return the chunks."""
        if self._driver.is_async:

            async def collect() -> list[CreateChatCompletionChunk]:
                async with self.raw.stream(*args, **kwargs) as stream:
                    return [chunk async for chunk in stream]

            return self._driver.run(collect())
        with self.raw.stream(*args, **kwargs) as stream:
            return list(stream)

    def with_options(self, **kwargs: Any) -> ClientDriver:
        return ClientDriver(self._driver, self.raw.with_options(**kwargs))

    def parse(self, *args: Any, **kwargs: Any) -> Any:
        """``client.parse(...)``."""
        return self._driver.call(lambda: self.raw.parse(*args, **kwargs))

    def final_completion(self, **kwargs: Any) -> Any:
        """``client.stream(...)`` read to its end: ``get_final_completion()``."""
        if self._driver.is_async:

            async def final() -> Any:
                async with self.raw.stream(**kwargs) as stream:
                    return await stream.get_final_completion()

            return self._driver.run(final())
        with self.raw.stream(**kwargs) as stream:
            return stream.get_final_completion()

    def run_tools(self, **kwargs: Any) -> Any:
        """``client.run_tools(...)``."""
        return self._driver.call(lambda: self.raw.run_tools(**kwargs))

    def run_tools_events(self, **kwargs: Any) -> list[Any]:
        """Every event of ``client.run_tools_stream(...)``."""
        if self._driver.is_async:

            async def collect() -> list[Any]:
                return [event async for event in self.raw.run_tools_stream(**kwargs)]

            return self._driver.run(collect())
        return list(self.raw.run_tools_stream(**kwargs))

    def close(self) -> None:
        if self._driver.is_async:
            self._driver.run(self.raw.aclose())
        else:
            self.raw.close()


class FacadeDriver:
    """Makes clients of one facade and runs their calls to completion."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.is_async = kind == "async"
        self.client_class: type[SyncChat] | type[AsyncChat] = (
            AsyncChat if self.is_async else SyncChat
        )
        self._loop = asyncio.new_event_loop() if self.is_async else None
        self._clients: list[ClientDriver] = []

    def run(self, awaitable: Awaitable[T]) -> T:
        assert self._loop is not None
        return self._loop.run_until_complete(awaitable)

    def client(self, **kwargs: Any) -> ClientDriver:
        """A new client (closed at teardown); pass ``base_url=server.base_url``."""
        kwargs.setdefault("api_key", "sk-test-key")
        if self.is_async:

            async def make() -> Any:
                return AsyncChat(**kwargs)

            raw = self.run(make())
        else:
            raw = SyncChat(**kwargs)
        client = ClientDriver(self, raw)
        self._clients.append(client)
        return client

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn()``, awaiting its result when it is awaitable (async facade)."""
        result = fn()
        if self.is_async and hasattr(result, "__await__"):
            return self.run(result)
        return result

    def close(self) -> None:
        for client in self._clients:
            client.close()
        if self._loop is not None:
            self._loop.run_until_complete(self._loop.shutdown_asyncgens())
            self._loop.close()


@pytest.fixture(params=["sync", "async"])
def facade(request: pytest.FixtureRequest) -> Iterator[FacadeDriver]:
    """Runs the test once per facade; see :class:`FacadeDriver`."""
    driver = FacadeDriver(request.param)
    try:
        yield driver
    finally:
        driver.close()


def open_fds() -> int:
    """How many file descriptors this process has open (Linux)."""
    return len(os.listdir("/proc/self/fd"))


# ---------------------------------------------------------------- the OpenAPI request schema


def _openapi_nullable(node: Any) -> Any:
    """OpenAPI 3.0's ``nullable: true`` (still used in the document) as JSON Schema."""
    if isinstance(node, list):
        return [_openapi_nullable(item) for item in node]
    if not isinstance(node, dict):
        return node
    converted = {k: _openapi_nullable(v) for k, v in node.items() if k != "nullable"}
    if node.get("nullable") is True:
        return {"anyOf": [{"type": "null"}, converted]}
    return converted


@functools.cache
def request_validator() -> Any:
    """A jsonschema validator for ``CreateChatCompletionRequest`` of the bundled OpenAPI
    document (tests/data/chat-completions.json): ``validator.validate(body)``."""
    import json
    from pathlib import Path

    import jsonschema
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT202012

    path = Path(__file__).parent / "data" / "chat-completions.json"
    document = _openapi_nullable(json.loads(path.read_text()))
    uri = "urn:openai:chat-completions"
    registry: Registry[Any] = Registry().with_resource(
        uri, Resource.from_contents(document, default_specification=DRAFT202012)
    )
    schema = {"$ref": f"{uri}#/components/schemas/CreateChatCompletionRequest"}
    return jsonschema.Draft202012Validator(schema, registry=registry)


@pytest.fixture(scope="session")
def chat_request_validator() -> Any:
    """:func:`request_validator` as a fixture."""
    return request_validator()


def sse_chunk(
    delta: dict[str, Any],
    finish_reason: str | None = None,
    *,
    model: str = "m",
    chunk_id: str = "chatcmpl-test",
) -> bytes:
    """One ``data:`` event holding a one-choice chunk, as a server streams it."""
    import json

    chunk = {
        "id": chunk_id,
        "object": "chat.completion.chunk",
        "created": 1,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
    }
    return b"data: " + json.dumps(chunk).encode() + b"\n\n"


# ---------------------------------------------------------------- custom loopback servers


class AppServer:
    """One ``aiohttp.web`` handler served on loopback from a background thread, for answers
    LocalServer cannot script (redirects, TLS) or facts it does not record (the client's port).

    Every request is recorded in :attr:`seen` as a dict: ``method``, ``path``, ``headers``
    (names lower-cased), ``body`` and ``peer_port``, before ``handler`` answers it.
    """

    def __init__(self, handler: Callable[[Any], Awaitable[Any]], *, ssl_context: Any = None):
        from aiohttp import web

        self.seen: list[dict[str, Any]] = []

        async def record(request: web.Request) -> web.StreamResponse:
            peer = request.transport.get_extra_info("peername") if request.transport else None
            self.seen.append(
                {
                    "method": request.method,
                    "path": request.path,
                    "headers": {k.lower(): v for k, v in request.headers.items()},
                    "body": await request.read(),
                    "peer_port": peer[1] if peer else None,
                }
            )
            return await handler(request)  # type: ignore[no-any-return]

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", record)
        self._loop = asyncio.new_event_loop()
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.25)
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=ssl_context)
        self._loop.run_until_complete(site.start())
        port = self._runner.addresses[0][1]
        self.origin = f"{'https' if ssl_context else 'http'}://127.0.0.1:{port}"
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        async def close() -> None:
            server = self._runner.server
            for handler in server.connections if server is not None else []:
                if handler.transport is not None:
                    handler.transport.abort()  # no TLS goodbye: the client may not answer
            await self._runner.cleanup()
            for _ in range(5):  # let the aborted transports close their sockets
                await asyncio.sleep(0)

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()


@pytest.fixture
def app_server() -> Iterator[Callable[..., AppServer]]:
    """``app_server(handler, ssl_context=None)`` starts an :class:`AppServer`; all are stopped
    at teardown."""
    servers: list[AppServer] = []

    def start(handler: Callable[[Any], Awaitable[Any]], **kwargs: Any) -> AppServer:
        server = AppServer(handler, **kwargs)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


# ---------------------------------------------------------------- OpenAI's strict mode, documented


# The keywords OpenAI's Structured Outputs guide lists as supported in strict mode.
STRICT_KEYWORDS = {
    "type",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "anyOf",
    "enum",
    "const",
    "$ref",
    "$defs",
    "definitions",
    "description",
    "title",
    "pattern",
    "format",
    "multipleOf",
    "maximum",
    "exclusiveMaximum",
    "minimum",
    "exclusiveMinimum",
    "minItems",
    "maxItems",
}


def assert_strict_schema(schema: dict[str, Any]) -> None:
    """Fail unless ``schema`` follows the rules of OpenAI's strict mode (written here from the
    guide, independently of chatlib's code): an object at the root; every object closed with
    ``additionalProperties: false`` and listing all its properties in ``required``; only
    supported keywords; a ``$ref`` alone in its node and pointing somewhere."""
    assert schema.get("type") == "object", "the root must be an object"

    def visit(node: Any, where: str) -> None:
        assert isinstance(node, dict), where
        unknown = set(node) - STRICT_KEYWORDS
        assert not unknown, f"{where}: keywords strict mode refuses: {sorted(unknown)}"
        if "$ref" in node:
            assert set(node) == {"$ref"}, f"{where}: $ref with siblings"
            ref = node["$ref"]
            if ref != "#":
                assert ref.startswith("#/$defs/") and ref[8:] in schema.get("$defs", {}), where
            return
        assert {"type", "anyOf", "enum", "const"} & set(node), f"{where}: no type"
        kinds = node.get("type")
        kinds = kinds if isinstance(kinds, list) else [kinds]
        if "object" in kinds:
            assert node.get("additionalProperties") is False, f"{where}: not closed"
            assert list(node.get("required", [])) == list(node.get("properties", {})), where
        for name, sub in node.get("properties", {}).items():
            visit(sub, f"{where}.{name}")
        if "items" in node:
            visit(node["items"], f"{where}[]")
        for i, sub in enumerate(node.get("anyOf", [])):
            visit(sub, f"{where}|{i}")
        for name, sub in node.get("$defs", {}).items():
            visit(sub, f"$defs.{name}")

    visit(schema, "(root)")
