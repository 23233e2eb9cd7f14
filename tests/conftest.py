"""Shared fixtures: the bundled server on loopback, and one driver per facade.

A test that takes the ``facade`` fixture runs twice, once for :class:`SyncChat` and once for
:class:`AsyncChat`, with the same body: the driver turns every call into a blocking one (the
async client runs on an event loop the driver owns), so behaviour is asserted once and proven
for both faces.
"""

from __future__ import annotations

import asyncio
import os
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
