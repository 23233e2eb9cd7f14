"""Clients across processes and event loops: pickling, multiprocessing pools (fork and spawn),
``os.fork()``, and an AsyncChat that outlives its event loop.

A pickled client carries its settings, never its key nor its connections: on the other side
the key is read from ``OPENAI_API_KEY``. Functions run in pool workers live at module level,
so that spawned processes can import them.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import pickle
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import ClientDriver

from chatlib import AsyncChat, SyncChat, Timeout
from chatlib._config import Secret
from chatlib.testing import LocalServer, Reply

# Forking a process that runs server threads is what these tests do on purpose (Python 3.12+
# warns about it); the children only make HTTP calls.
pytestmark = pytest.mark.filterwarnings(
    "ignore:This process .* is multi-threaded:DeprecationWarning"
)

ENV_KEY = "sk-from-the-workers-environment"
TIMEOUT = Timeout(connect=2, read=2, total=5)


def ask(text: str) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": text}]}


# ---------------------------------------------------------------- pickling


def test_a_pickled_client_keeps_its_settings_and_not_its_connections(
    facade: Any, server: LocalServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", ENV_KEY)
    timeout = Timeout(connect=1.5, read=2.5, total=4)
    client = facade.client(
        base_url=server.base_url,
        api_key="sk-given-to-the-original",
        timeout=timeout,
        max_retries=4,
        organization="org-1",
        project="proj-1",
        default_headers={"X-Team": "blue"},
        default_query={"tenant": "t1"},
        require_done=False,
    )
    client.create(**ask("before"))  # the original has a live pool now

    clone = ClientDriver(facade, pickle.loads(pickle.dumps(client.raw)))
    try:
        old, new = client.raw.config, clone.raw.config
        assert new.base_url == server.base_url
        assert (new.timeout, new.max_retries, new.require_done) == (timeout, 4, False)
        assert (new.organization, new.project) == ("org-1", "proj-1")
        assert dict(new.default_headers) == {"X-Team": "blue"}
        assert dict(new.default_query) == {"tenant": "t1"}
        assert new.api_key == Secret(ENV_KEY) != old.api_key  # the key came from the env
        assert clone.raw.transport is not client.raw.transport

        client.close()  # the original's pool is gone; the clone has its own
        assert clone.create(**ask("after")).text == "Echo: after"
    finally:
        clone.close()
    sent = server.requests[-1]
    assert sent.headers["authorization"] == f"Bearer {ENV_KEY}"
    assert sent.headers["x-team"] == "blue"
    assert sent.headers["openai-organization"] == "org-1"
    assert sent.query == {"tenant": "t1"}


def test_a_client_without_a_key_unpickles_without_one(
    facade: Any, server: LocalServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", ENV_KEY)
    client = facade.client(base_url=server.base_url, api_key="")
    assert client.raw.config.api_key is None

    clone = pickle.loads(pickle.dumps(client.raw))

    assert clone.config.api_key is None  # a keyless local server stays keyless


# ---------------------------------------------------------------- multiprocessing pools


def work_with_pickled_client(client: Any, text: str) -> tuple[int, str]:
    """Runs in a pool worker: use a client that arrived by pickle."""
    if isinstance(client, AsyncChat):

        async def main() -> str:
            async with client:
                return (await client.create(**ask(text))).text

        return os.getpid(), asyncio.run(main())
    with client:
        return os.getpid(), client.create(**ask(text)).text


def work_with_new_client(base_url: str, is_async: bool, text: str) -> tuple[int, str]:
    """Runs in a pool worker: build a client there, its key from the environment."""
    if is_async:

        async def main() -> str:
            async with AsyncChat(base_url=base_url, timeout=TIMEOUT) as chat:
                return (await chat.create(**ask(text))).text

        return os.getpid(), asyncio.run(main())
    with SyncChat(base_url=base_url, timeout=TIMEOUT) as chat:
        return os.getpid(), chat.create(**ask(text)).text


@pytest.fixture(scope="module")
def keyed_server() -> Iterator[LocalServer]:
    """A server that answers only requests bearing ENV_KEY."""
    with LocalServer(api_key=ENV_KEY) as server:
        yield server


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_a_multiprocessing_pool_uses_clients_in_its_workers(
    facade: Any, keyed_server: LocalServer, monkeypatch: pytest.MonkeyPatch, method: str
) -> None:
    keyed_server.clear()
    monkeypatch.setenv("OPENAI_API_KEY", ENV_KEY)  # the workers' environment
    client = facade.client(base_url=keyed_server.base_url, api_key="sk-parent", timeout=TIMEOUT)
    context = multiprocessing.get_context(method)

    pool = context.Pool(2)
    try:
        pickled = pool.starmap(work_with_pickled_client, [(client.raw, "a"), (client.raw, "b")])
        fresh = pool.starmap(
            work_with_new_client,
            [(keyed_server.base_url, facade.is_async, text) for text in ("c", "d")],
        )
    finally:
        pool.close()
        pool.join()

    assert [text for _, text in pickled + fresh] == ["Echo: a", "Echo: b", "Echo: c", "Echo: d"]
    assert all(pid != os.getpid() for pid, _ in pickled + fresh)
    authorizations = {request.headers["authorization"] for request in keyed_server.requests}
    assert authorizations == {f"Bearer {ENV_KEY}"}  # the parent's key never left it


# ---------------------------------------------------------------- os.fork()


async def completion_text(request: Any) -> Any:
    from aiohttp import web

    body = await request.json()
    text = body["messages"][-1]["content"]
    return web.json_response(
        {
            "id": "c",
            "object": "chat.completion",
            "created": 1,
            "model": "m",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": f"Echo: {text}"},
                    "finish_reason": "stop",
                }
            ],
        }
    )


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_after_a_fork_the_child_opens_its_own_connections(facade: Any, app_server: Any) -> None:
    server = app_server(completion_text)  # records the client port of every request
    client = facade.client(base_url=f"{server.origin}/v1", timeout=TIMEOUT, max_retries=0)
    assert client.create(**ask("parent")).text == "Echo: parent"

    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 1
        try:
            if facade.is_async:  # a child cannot run the parent's loop: it starts its own
                text = asyncio.run(client.raw.create(**ask("child"))).text
            else:
                text = client.raw.create(**ask("child")).text
            code = 0 if text == "Echo: child" else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)

    assert os.waitstatus_to_exitcode(status) == 0
    assert client.create(**ask("parent again")).text == "Echo: parent again"
    parent_port, child_port, parent_port_again = [seen["peer_port"] for seen in server.seen]
    assert child_port != parent_port  # the child did not write into the parent's socket
    assert parent_port_again == parent_port  # and the parent's connection is intact


# ---------------------------------------------------------------- event loops


def test_an_async_client_made_in_a_closed_loop_works_in_a_new_one(server: LocalServer) -> None:
    async def make() -> AsyncChat:
        return AsyncChat(base_url=server.base_url, api_key="sk-test", timeout=TIMEOUT)

    chat = asyncio.run(make())  # that loop is closed now

    async def use() -> str:
        async with chat:
            return (await chat.create(**ask("new loop"))).text

    assert asyncio.run(use()) == "Echo: new loop"


def test_a_session_from_a_closed_loop_is_refused_clearly(server: LocalServer) -> None:
    import aiohttp

    from chatlib.errors import InvalidArgumentError

    async def make() -> aiohttp.ClientSession:
        return aiohttp.ClientSession()

    session = asyncio.run(make())
    chat = AsyncChat(base_url=server.base_url, api_key="sk-test", session=session)
    try:
        with pytest.raises(InvalidArgumentError, match="another event loop") as info:
            asyncio.run(chat.create(**ask("x")))
        assert info.value.field == "session"
    finally:
        session.detach()  # its loop is gone: nothing is left to close


SUCCESSIVE_LOOPS = textwrap.dedent(
    """
    import asyncio, gc
    from chatlib import AsyncChat
    from chatlib.testing import LocalServer, Reply

    with LocalServer() as server:
        chat = AsyncChat(base_url=server.base_url, api_key="sk-test", timeout=5)

        def ask(text):
            return {"model": "m", "messages": [{"role": "user", "content": text}]}

        async def create(text):
            return (await chat.create(**ask(text))).text

        async def stream(text):
            async with chat.stream(**ask(text)) as s:
                return "".join([chunk.text async for chunk in s])

        async def open_stream(text):
            s = await chat.create(stream=True, **ask(text))
            await s.__anext__()
            return s  # left open when its loop closes

        print(asyncio.run(create("one")))
        print(asyncio.run(create("two")))
        print(asyncio.run(stream("three")))
        left_open = asyncio.run(open_stream("four five six"))
        print(asyncio.run(create("seven")))
        del left_open
        gc.collect()
        asyncio.run(chat.aclose())
        gc.collect()
    print("done")
    """
)


@pytest.mark.parametrize(
    "flags",
    [
        pytest.param([], id="default-warnings"),
        pytest.param(["-X", "dev", "-W", "error::ResourceWarning"], id="resource-warnings"),
    ],
)
def test_an_async_client_survives_successive_asyncio_runs_quietly(flags: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, *flags, "-c", SUCCESSIVE_LOOPS],
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n") == [
        "Echo: one",
        "Echo: two",
        "Echo: three",
        "Echo: seven",
        "done",
        "",
    ]
    assert "Event loop is closed" not in result.stderr
    assert "Traceback" not in result.stderr
    assert "Exception ignored" not in result.stderr
    assert "Warning" not in result.stderr, result.stderr


def test_one_async_client_serves_loops_running_at_once_in_several_threads(
    server: LocalServer,
) -> None:
    """A module-level AsyncChat used by threads that each run their own event loop (a sync
    web framework calling ``asyncio.run`` per request): one session per loop, none stolen."""
    chat = AsyncChat(base_url=server.base_url, api_key="sk-test", timeout=10)
    server.enqueue(*[Reply(f"answer {i}", delay=0.3) for i in range(4)])
    results: list[str] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            results.append(asyncio.run(chat.create(**ask("x"))).text)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
        time.sleep(0.05)  # overlapping, not simultaneous
    for thread in threads:
        thread.join(timeout=20)
    assert errors == []
    assert sorted(results) == [f"answer {i}" for i in range(4)]
    assert time.monotonic() - started < 5  # concurrent, not one after the other's timeout
    asyncio.run(chat.aclose())
