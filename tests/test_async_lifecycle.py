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


async def test_closing_the_client_ends_a_create_waiting_for_its_answer(
    server: LocalServer,
) -> None:
    """Before, it failed as a plain connection error (and with retries on, was sent again
    after a back-off and only then refused)."""
    chat = chat_for(server)
    server.enqueue(Reply("late", delay=3.0))
    call = asyncio.ensure_future(chat.create(model="m", messages=USER))
    while not server.requests:
        await asyncio.sleep(0.01)
    loop = asyncio.get_running_loop()
    closed_at = loop.time()
    await chat.aclose()
    with pytest.raises(ClientClosedError, match="closed while this call was in flight"):
        await asyncio.wait_for(call, 3)
    assert loop.time() - closed_at < 0.3  # at once: no back-off, no retry
    assert len(server.requests) == 1


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
    with pytest.raises(ClientClosedError, match="closed while this call was in flight") as failure:
        await asyncio.wait_for(reader, 3)
    assert isinstance(failure.value, APIConnectionError)  # as for any connection cut
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
    assert isinstance(error, ClientClosedError), repr(error)
    assert "closed while this call was in flight" in str(error)


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


# ---------------------------------------------------------------- cancellation, task groups


async def _one_call(chat: AsyncChat, server: LocalServer, kind: str) -> None:
    """One call of `kind`, each reply slow enough to be cancelled at any await point."""
    if kind == "create":
        server.enqueue(Reply(delay=0.02))
        await chat.create(model="m", messages=USER)
    elif kind == "stream":
        server.enqueue(Reply("word " * 40, piece_delay=0.001))
        async for _ in chat.stream(model="m", messages=USER):
            pass
    elif kind == "final":
        server.enqueue(Reply("word " * 40, piece_delay=0.001))
        stream = await chat.create(model="m", messages=USER, stream=True)
        await stream.get_final_completion()
    elif kind in ("run_tools", "run_tools_stream"):
        server.enqueue(Reply(tool_calls=[{"name": "tool", "arguments": {"x": 1}}], delay=0.01))
        server.enqueue(Reply("word " * 20, delay=0.01, piece_delay=0.001))
        if kind == "run_tools":
            await chat.run_tools(model="m", messages=USER, tools=[tool])
        else:
            async for _ in chat.run_tools_stream(model="m", messages=USER, tools=[tool]):
                pass
    else:
        async for _ in chat.stored.list(limit=1):  # a page per completion
            await asyncio.sleep(0)


@pytest.mark.parametrize(
    "kind", ["create", "stream", "final", "run_tools", "run_tools_stream", "stored_list"]
)
async def test_a_call_cancelled_at_any_point_frees_its_connection(
    server: LocalServer, kind: str
) -> None:
    """`wait_for` around a call, from before its request to its last read: the caller gets
    the `TimeoutError` it asked for, never a library's exception, no task is left behind,
    and the pool of one connection still serves the next call."""
    async with AsyncChat(
        base_url=server.base_url, api_key="sk-test", timeout=TIMEOUT, pool_maxsize=1
    ) as chat:
        if kind == "stored_list":
            for _ in range(3):
                await chat.create(model="m", messages=USER, store=True)
        for ms in (0, 1, 3, 8, 20, 50):
            try:
                await asyncio.wait_for(_one_call(chat, server, kind), ms / 1000)
            except asyncio.TimeoutError:
                pass
            gc.collect()
            if kind != "stored_list":  # the stored completions stay
                server.clear()
            answer = await asyncio.wait_for(chat.create(model="m", messages=USER), 5)
            assert answer.text == "Echo: Hello there"
        assert asyncio.all_tasks() == {asyncio.current_task()}


@pytest.mark.skipif(sys.version_info < (3, 11), reason="asyncio.TaskGroup is 3.11+")
async def test_a_failing_task_cancelling_many_streams_frees_every_connection(
    server: LocalServer,
) -> None:
    streams = 20
    async with AsyncChat(
        base_url=server.base_url, api_key="sk-test", timeout=TIMEOUT, pool_maxsize=streams
    ) as chat:
        server.enqueue(*[LONG] * streams)
        opened = 0

        async def read(held: bool) -> None:
            nonlocal opened
            if held:
                async with chat.stream(model="m", messages=USER) as stream:
                    async for _ in stream:
                        opened += 1
            else:
                async for _ in chat.stream(model="m", messages=USER):
                    opened += 1

        async def fail() -> None:
            while opened < streams:
                await asyncio.sleep(0.01)
            raise LookupError("one task failed")

        with pytest.raises(BaseException) as group:
            async with asyncio.TaskGroup() as tasks:  # type: ignore[attr-defined]
                for i in range(streams):
                    tasks.create_task(read(held=i % 2 == 0))
                tasks.create_task(fail())
        # The failure alone: the cancelled streams raise nothing of their own.
        assert [type(e) for e in group.value.exceptions] == [LookupError]  # type: ignore[attr-defined]
        server.clear()

        # Every connection is back: as many streams as the pool holds open at once.
        async def first_chunk() -> None:
            async with chat.stream(model="m", messages=USER) as stream:
                await stream.__anext__()
                await asyncio.sleep(0.05)

        await asyncio.wait_for(asyncio.gather(*[first_chunk() for _ in range(streams)]), 5)


@pytest.mark.skipif(
    not hasattr(asyncio, "eager_task_factory"), reason="the eager task factory is 3.12+"
)
async def test_an_eager_task_factory_changes_nothing(server: LocalServer) -> None:
    loop = asyncio.get_running_loop()
    previous = loop.get_task_factory()
    loop.set_task_factory(asyncio.eager_task_factory)  # type: ignore[attr-defined]
    try:
        async with chat_for(server) as chat:
            server.enqueue(Reply(tool_calls=[{"name": "tool", "arguments": {"x": 2}}]))
            result = await chat.run_tools(model="m", messages=USER, tools=[tool])
            assert [r.content for r in result.tool_results] == ["2"]
            texts = await asyncio.gather(*[chat.create(model="m", messages=USER) for _ in range(5)])
            assert {t.text for t in texts} == {"Echo: Hello there"}
            async for _ in chat.stream(model="m", messages=USER):
                break
    finally:
        loop.set_task_factory(previous)
