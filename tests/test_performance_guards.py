"""Guards of what makes chatlib fast, checked without timing anything (benchmarks/ measures).

* what `import chatlib`, constructing each client and their first calls load: an exact list
  of chatlib's modules, and nothing heavy (tools, typed answers, events, displays, Azure,
  stored completions, the batch runner, cattrs) before it is first used;
* memory while streaming: parsing a stream holds O(1) chunks, however many a read brings,
  and what a stream keeps grows with nothing but its text;
* the first chunk of a read is handed out before the next frame of that read is parsed;
* sequential calls reuse one connection (counted by the server), for both facades.
"""

from __future__ import annotations

import asyncio
import functools
import json
import subprocess
import sys
import tracemalloc
from typing import Any

import pytest

import chatlib._parse
from chatlib import AsyncChat, SyncChat
from chatlib._parse import ChunkParser
from chatlib._stream import StreamState
from chatlib.testing import LocalServer
from chatlib.transports import FakeResponse, FakeTransport

# ---------------------------------------------------------------- modules loaded

# chatlib's modules behind a constructed client: any other one loading here is a regression
# (a capability imported eagerly); a module removed from the core needs this list changed.
CORE = {
    "chatlib",
    "chatlib._accumulate",
    "chatlib._auth",
    "chatlib._call",
    "chatlib._checks",
    "chatlib._client",
    "chatlib._config",
    "chatlib._display",
    "chatlib._endpoint",
    "chatlib._flow",
    "chatlib._headers",
    "chatlib._lazy",
    "chatlib._log",
    "chatlib._metadata",
    "chatlib._model_base",
    "chatlib._params",
    "chatlib._parse",
    "chatlib._request",
    "chatlib._retry",
    "chatlib._serde",
    "chatlib._stream",
    "chatlib._transports",
    "chatlib._transports.base",
    "chatlib._validate",
    "chatlib.errors",
    "chatlib.models",
    "chatlib.sse",
}
SYNC_ONLY = {
    "chatlib._sync",
    "chatlib._environment",
    "chatlib._transports.requests",
    "chatlib._transports.watchdog",
}
ASYNC_ONLY = {"chatlib._async", "chatlib._environment", "chatlib._transports.aiohttp"}

# What attrs (a dependency of every model) brings along, and what the core itself uses from
# the standard library, measured on this Python (3.10's `platform` loads `subprocess`, 3.12's
# `typing` loads `contextlib`). Anything else (beyond the HTTP library's own) is a regression.
_STDLIB_THE_CORE_USES = "import typing, inspect, contextvars, collections.abc, platform, attr"


# Loaded on first use only: each is a capability a plain create() never needs.
CAPABILITIES = {
    "chatlib._events",
    "chatlib._tool_loop",
    "chatlib._tools",
    "chatlib._structured",
    "chatlib._schema",
    "chatlib._typed_json",
    "chatlib._partial_json",
    "chatlib.notebook",
    "chatlib.azure",
    "chatlib._stored",
    "chatlib._stored_sync",
    "chatlib._stored_async",
    "chatlib.batch",
    "chatlib.cli",
    "cattrs",
    "IPython",
    "pickle",
    "difflib",
    "uuid",
}


def _loaded(code: str, preload: str = "") -> set[str]:
    """The modules `code` adds to `sys.modules` in a fresh interpreter (after `preload`)."""
    probe = "\n".join(
        [
            "import json, sys",
            preload,
            "before = set(sys.modules)",
            code,
            "print(json.dumps(sorted(set(sys.modules) - before)))",
        ]
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=False, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return set(json.loads(out.stdout.splitlines()[-1]))


def _not_attrs(modules: set[str]) -> set[str]:
    return {m for m in modules if m.split(".")[0] not in ("attr", "attrs", "chatlib")}


@functools.cache
def _allowed_others() -> set[str]:
    measured = _not_attrs(_loaded(_STDLIB_THE_CORE_USES))
    if sys.version_info < (3, 11):  # typing has Self, Unpack... only from 3.11
        measured.add("typing_extensions")
    return measured


def test_import_chatlib_loads_two_modules_of_its_own_and_no_library() -> None:
    loaded = _loaded("import chatlib")
    assert {m for m in loaded if m.startswith("chatlib")} == {"chatlib", "chatlib._lazy"}
    assert _not_attrs(loaded) <= _allowed_others()
    assert not {m for m in loaded if m.split(".")[0] in ("attr", "attrs", "requests", "aiohttp")}


def test_a_sync_client_loads_exactly_the_core_and_its_transport() -> None:
    loaded = _loaded(
        "import chatlib; chatlib.SyncChat(base_url='http://127.0.0.1:9/v1', api_key='k')",
        preload="import requests",  # the HTTP library's own modules are not chatlib's
    )
    assert {m for m in loaded if m.startswith("chatlib")} == CORE | SYNC_ONLY
    assert _not_attrs(loaded) <= _allowed_others(), _not_attrs(loaded) - _allowed_others()
    assert "aiohttp" not in loaded


def test_an_async_client_loads_exactly_the_core_and_its_transport() -> None:
    loaded = _loaded(
        "import chatlib; chatlib.AsyncChat(base_url='http://127.0.0.1:9/v1', api_key='k')",
        preload="import aiohttp",
    )
    assert {m for m in loaded if m.startswith("chatlib")} == CORE | ASYNC_ONLY
    assert _not_attrs(loaded) <= _allowed_others(), _not_attrs(loaded) - _allowed_others()
    assert not {m for m in loaded if m.split(".")[0] in ("requests", "urllib3")}


_FIRST_CALLS = """
import asyncio, chatlib
from chatlib.transports import FakeResponse, FakeTransport
answer = b'{"choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}}]}'
frames = b'data: {"choices": [{"index": 0, "delta": {"content": "hi"}}]}\\n\\ndata: [DONE]\\n\\n'
def script():
    return FakeTransport(FakeResponse(200, {}, [answer]), FakeResponse(200, {}, [frames]))
chat = chatlib.SyncChat(base_url="http://127.0.0.1:9/v1", api_key="k", transport=script())
assert chat.create(model="m", messages=[{"role": "user", "content": "x"}]).text == "hi"
with chat.stream(model="m", messages=[{"role": "user", "content": "x"}]) as s:
    assert "".join(c.text for c in s) == "hi"
async def main():
    achat = chatlib.AsyncChat(
        base_url="http://127.0.0.1:9/v1", api_key="k", transport=script().as_async()
    )
    resp = await achat.create(model="m", messages=[{"role": "user", "content": "x"}])
    assert resp.text == "hi"
    async with achat.stream(model="m", messages=[{"role": "user", "content": "x"}]) as s:
        assert "".join([c.text async for c in s]) == "hi"
asyncio.run(main())
"""


def test_first_calls_and_streams_of_both_facades_load_no_capability() -> None:
    loaded = _loaded(_FIRST_CALLS, preload="import asyncio, requests, aiohttp")
    heavy = {m for m in loaded if m in CAPABILITIES or m.split(".")[0] in CAPABILITIES}
    assert not heavy, f"loaded by a plain create()/stream(): {sorted(heavy)}"
    assert {m for m in loaded if m.startswith("chatlib")} <= CORE | SYNC_ONLY | ASYNC_ONLY | {
        "chatlib.transports",
        "chatlib._transports.fake",
    }


_STREAM = """
import chatlib
from chatlib.transports import FakeResponse, FakeTransport
frames = b'data: {"choices": [{"index": 0, "delta": {"content": "hi"}}]}\\n\\ndata: [DONE]\\n\\n'
chat = chatlib.SyncChat(
    base_url="http://127.0.0.1:9/v1",
    api_key="k",
    transport=FakeTransport(FakeResponse(200, {}, [frames])),
)
"""


@pytest.mark.parametrize(
    ("use", "module"),
    [
        (
            "with chat.stream(model='m', messages=[{'role': 'user', 'content': 'x'}]) as s:"
            " list(s.events())",
            "chatlib._events",
        ),
        ("chat.stored", "chatlib._stored"),
        ("chatlib.function_tool", "chatlib._tools"),
        ("chatlib.AzureChat", "chatlib.azure"),
    ],
)
def test_each_capability_loads_on_its_first_use(use: str, module: str) -> None:
    code = f"{_STREAM}\nassert {module!r} not in sys.modules\n{use}\n"
    assert module in _loaded(code)


# ---------------------------------------------------------------- memory while streaming


def _frames(n: int) -> bytes:
    # Chunks without content: what a stream keeps of them does not grow (no text).
    chunk = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "delta": {}, "finish_reason": None}],
    }
    frame = b"data: " + json.dumps(chunk).encode() + b"\n\n"
    return frame * n + b"data: [DONE]\n\n"


def _stream_through(body: bytes) -> tuple[int, int, int]:
    """Stream `body` (one read) through a `StreamState`, dropping each chunk as it comes;
    the traced bytes kept afterwards, the peak while streaming (both above the start, the
    body itself excluded) and the number of chunks."""
    state = StreamState(
        ChunkParser(request_id=None, max_line_bytes=1 << 20),
        deadline=None,
        clock=lambda: 0.0,
        response_headers={},
    )
    count = 0
    tracemalloc.start()
    try:
        start = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        state.advance(body)
        state.advance(None)
        while state.ready():
            state.take()
            count += 1
        state.check()
        kept, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return kept - start, peak - start, count


def test_streaming_holds_o1_chunks_however_many_one_read_brings() -> None:
    small, big = _frames(100), _frames(2000)
    kept_small, peak_small, n_small = _stream_through(small)
    kept_big, peak_big, n_big = _stream_through(big)
    assert (n_small, n_big) == (100, 2000)
    # A chunk and its dict are ~1-2 KB: the peak while 2,000 chunks go through one read is
    # that of a few, not of 2,000 (the whole read parsed at once would be ~3 MB).
    assert peak_big - peak_small < 16 * 1024, (peak_small, peak_big)
    # What the stream keeps afterwards (its merged answer) does not grow with the chunks.
    assert kept_big - kept_small < 4 * 1024, (kept_small, kept_big)


def test_a_kept_chunk_is_smaller_than_its_json_dict() -> None:
    frame = _frames(1)
    data = json.loads(frame[6 : frame.index(b"\n\n")])
    parser = ChunkParser(request_id=None, max_line_bytes=1 << 20)
    parser.feed(frame)  # compiles and warms the hooks

    def per_item(make: Any) -> float:
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            items = make()
            after = tracemalloc.get_traced_memory()[0]
        finally:
            tracemalloc.stop()
        return (after - before) / len(items)

    raw = json.dumps(data).encode()
    dicts = per_item(lambda: [json.loads(raw) for _ in range(500)])
    chunks = per_item(lambda: [parser_chunk(raw) for _ in range(500)])
    assert chunks <= 1.1 * dicts, (chunks, dicts)


def parser_chunk(raw: bytes) -> Any:
    return chatlib._parse._structure_chunk(json.loads(raw), None)


# ---------------------------------------------------------------- the first chunk first


class _CountingHook:
    """Wraps the chunk parser's structuring hook: counts the frames turned into chunks."""

    def __init__(self) -> None:
        self.parsed = 0
        self._hook = chatlib._parse._structure_chunk

    def __call__(self, payload: Any, cls: Any) -> Any:
        self.parsed += 1
        return self._hook(payload, cls)


def _three_frames_in_one_read() -> FakeTransport:
    frames = b"".join(
        b'data: {"choices": [{"index": 0, "delta": {"content": "%d"}}]}\n\n' % i for i in range(3)
    )
    return FakeTransport(FakeResponse(200, {}, [frames + b"data: [DONE]\n\n"]))


def test_sync_stream_hands_out_the_first_chunk_before_parsing_the_second(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    counter = _CountingHook()
    monkeypatch.setattr(chatlib._parse, "_structure_chunk", counter)
    chat = SyncChat(
        base_url="http://127.0.0.1:9/v1", api_key="k", transport=_three_frames_in_one_read()
    )
    with chat.stream(model="m", messages=[{"role": "user", "content": "x"}]) as stream:
        seen = []
        for chunk in stream:
            seen.append((chunk.text, counter.parsed))
    assert seen == [("0", 1), ("1", 2), ("2", 3)]


async def test_async_stream_hands_out_the_first_chunk_before_parsing_the_second(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    counter = _CountingHook()
    monkeypatch.setattr(chatlib._parse, "_structure_chunk", counter)
    chat = AsyncChat(
        base_url="http://127.0.0.1:9/v1",
        api_key="k",
        transport=_three_frames_in_one_read().as_async(),
    )
    async with chat.stream(model="m", messages=[{"role": "user", "content": "x"}]) as stream:
        seen = [(chunk.text, counter.parsed) async for chunk in stream]
    assert seen == [("0", 1), ("1", 2), ("2", 3)]


# ---------------------------------------------------------------- connections reused


def test_sequential_calls_and_streams_reuse_one_connection(
    facade: Any, server: LocalServer
) -> None:
    client = facade.client(base_url=server.base_url)
    for _ in range(3):
        assert client.create(model="m", messages=[{"role": "user", "content": "hi"}]).text
    for _ in range(3):
        assert client.stream_all(model="m", messages=[{"role": "user", "content": "hi"}])
    connections = {record.connection for record in server.requests}
    assert len(server.requests) == 6
    assert len(connections) == 1 and "" not in connections, connections


# ---------------------------------------------------------------- the async read timeout


def _idle_timers(loop: Any) -> list[Any]:
    """The read-timeout timers of async streams still scheduled on `loop`."""
    return [
        handle
        for handle in loop._scheduled  # asyncio's heap of timers
        if not handle.cancelled()
        and getattr(handle._callback, "__qualname__", "").startswith("_IdleTimer")
    ]


async def test_async_streams_leave_no_read_timer_behind(server: LocalServer) -> None:
    # The body's read timeout is one timer per stream, re-armed lazily (not one new timer
    # per read): whether read to the end or left half-way, a closed stream cancels it.
    loop = asyncio.get_running_loop()
    async with AsyncChat(base_url=server.base_url, api_key="sk-test-key") as chat:
        messages = [{"role": "user", "content": "one two three four"}]
        async with chat.stream(model="m", messages=messages) as stream:
            assert "".join([chunk.text async for chunk in stream])
        async with chat.stream(model="m", messages=messages) as stream:
            await anext(stream)
            assert _idle_timers(loop)  # armed while the body is read
        assert _idle_timers(loop) == []
