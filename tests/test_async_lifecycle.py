"""An `AsyncChat` across its whole life: closed and used again, closed while a stream is read
(in its own loop, from another thread's), and event loops closed the quick way
(`loop.close()` without `shutdown_asyncgens`) or left idle while the client is closed.

The promise: no hang, only chatlib errors, and no ResourceWarning, "never awaited" coroutine
or "destroyed but pending" task, ever.
"""

from __future__ import annotations

import asyncio
import gc
import subprocess
import sys
import textwrap
import threading
import warnings
from typing import Any

import pytest

from chatlib import AsyncChat, Timeout
from chatlib.errors import APIConnectionError, ClientClosedError
from chatlib.testing import LocalServer, Reply

USER = [{"role": "user", "content": "Hello there"}]
TIMEOUT = Timeout(connect=2, read=5, total=10)
LONG = Reply("word " * 400, piece_delay=0.005)  # about two seconds of stream


def chat_for(server: LocalServer) -> AsyncChat:
    return AsyncChat(base_url=server.base_url, api_key="sk-test", timeout=TIMEOUT, max_retries=0)


def tool(x: int) -> int:
    """Returns x."""
    return x


async def test_a_closed_client_refuses_every_call_clearly_and_sends_nothing(
    server: LocalServer,
) -> None:
    async with chat_for(server) as chat:
        assert (await chat.create(model="m", messages=USER)).text == "Echo: Hello there"
    await chat.aclose()  # closing again is fine
    sent = len(server.requests)

    async def iterate_stream() -> None:
        async for _ in chat.stream(model="m", messages=USER):
            pass

    async def iterate_pages() -> None:
        async for _ in chat.stored.list():
            pass

    async def iterate_tool_events() -> None:
        async for _ in chat.run_tools_stream(model="m", messages=USER, tools=[tool]):
            pass

    calls: list[Any] = [
        chat.create(model="m", messages=USER),
        chat.create(model="m", messages=USER, stream=True),
        iterate_stream(),
        iterate_pages(),
        chat.run_tools(model="m", messages=USER, tools=[tool]),
        iterate_tool_events(),
        chat.with_options(max_retries=3).create(model="m", messages=USER),  # shares the pool
    ]
    for call in calls:
        with pytest.raises(ClientClosedError, match="closed"):
            await call
    assert len(server.requests) == sent
    assert isinstance(ClientClosedError("x"), RuntimeError)


async def test_closing_the_client_ends_a_stream_another_task_reads(server: LocalServer) -> None:
    """Before, the reading task got a bare `CancelledError` nobody asked for."""
    chat = chat_for(server)
    server.enqueue(LONG)
    first = asyncio.Event()
    chunks = 0

    async def read() -> None:
        nonlocal chunks
        async for _ in chat.stream(model="m", messages=USER):
            chunks += 1
            first.set()

    reader = asyncio.ensure_future(read())
    await asyncio.wait_for(first.wait(), 5)
    await chat.aclose()
    with pytest.raises(APIConnectionError) as failure:
        await asyncio.wait_for(reader, 3)
    assert failure.value.partial is not None  # what arrived is kept
    assert chunks >= 1


def test_closing_the_client_ends_a_stream_read_in_another_threads_loop(
    server: LocalServer,
) -> None:
    """Before, the other loop's reader waited forever: aiohttp closing a connection itself
    drops the body's reader without waking it."""
    chat = chat_for(server)
    server.enqueue(LONG)
    first = threading.Event()
    outcome: list[BaseException | None] = []

    async def read() -> None:
        async for _ in chat.stream(model="m", messages=USER):
            first.set()

    def worker() -> None:
        try:
            asyncio.run(read())
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=worker, daemon=True)
    thread.start()
    assert first.wait(5)
    asyncio.run(chat.aclose())
    thread.join(3)
    assert not thread.is_alive(), "the stream read in the other loop hung"
    (error,) = outcome
    assert isinstance(error, APIConnectionError)


def test_closing_the_client_while_another_loop_is_idle_sends_it_no_coroutine(
    server: LocalServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A loop that is open but not running (`run_until_complete` style) would never run a
    coroutine sent to it: it was left "never awaited", or "destroyed but pending"."""
    chat = chat_for(server)
    idle = asyncio.new_event_loop()
    try:
        idle.run_until_complete(chat.create(model="m", messages=USER))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            asyncio.run(chat.aclose())
            idle.run_until_complete(idle.shutdown_asyncgens())
            gc.collect()
        with pytest.raises(ClientClosedError):
            idle.run_until_complete(chat.create(model="m", messages=USER))
    finally:
        idle.close()
    gc.collect()
    assert [str(w.message) for w in caught] == []
    assert "destroyed but it is pending" not in caplog.text


QUICK_CLOSE = textwrap.dedent(
    """
    import asyncio, gc
    from chatlib import AsyncChat
    from chatlib.testing import LocalServer, Reply, Trickle

    def ask(text):
        return {"model": "m", "messages": [{"role": "user", "content": text}]}

    with LocalServer() as server:
        def new_chat():
            return AsyncChat(base_url=server.base_url, api_key="sk-test", timeout=5)

        # 1. a loop closed bare after a call; the client dropped afterwards
        chat = new_chat()
        loop = asyncio.new_event_loop()
        print(loop.run_until_complete(chat.create(**ask("one"))).text)
        loop.close()
        del chat
        gc.collect()

        # 2. the same, the client used again in a new loop (the old pool is dropped)
        chat = new_chat()
        loop = asyncio.new_event_loop()
        print(loop.run_until_complete(chat.create(**ask("two"))).text)
        loop.close()
        print(asyncio.run(chat.create(**ask("three"))).text)
        del chat
        gc.collect()

        # 3. a stream left open by the user when its loop is closed bare
        chat = new_chat()
        loop = asyncio.new_event_loop()
        server.enqueue(Trickle(b"data: {}\\n\\n", size=10, interval=0.01, repeat=True))
        left_open = loop.run_until_complete(chat.create(stream=True, **ask("four")))
        loop.close()
        del left_open, chat
        gc.collect()
    print("done")
    """
)


def test_loops_closed_without_shutting_down_leave_no_socket_behind() -> None:
    """`loop.run_until_complete(...)` then `loop.close()`, skipping `shutdown_asyncgens`:
    no guard closed the pool, and aiohttp's own close does nothing on a closed loop, so
    every pooled or streaming socket was reaped by the garbage collector with warnings."""
    result = subprocess.run(
        [sys.executable, "-X", "dev", "-W", "error::ResourceWarning", "-c", QUICK_CLOSE],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n") == ["Echo: one", "Echo: two", "Echo: three", "done", ""]
    assert "Exception ignored" not in result.stderr, result.stderr
    assert "Warning" not in result.stderr, result.stderr
    assert "Unclosed" not in result.stderr, result.stderr
