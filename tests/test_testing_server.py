"""chatlib.testing.LocalServer, driven over real loopback HTTP with ``requests`` and ``aiohttp``."""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
import requests

from chatlib.testing import (
    Disconnect,
    ErrorReply,
    InStreamError,
    LocalServer,
    RawReply,
    RecordedRequest,
    Reply,
    Stall,
    Trickle,
)

REQUEST_ID = re.compile(r"^req_[0-9a-f]+$")


@pytest.fixture
def server() -> Iterator[LocalServer]:
    with LocalServer() as srv:
        yield srv


def body(text: str = "Hello world", **extra: Any) -> dict[str, Any]:
    return {"model": "gpt-test", "messages": [{"role": "user", "content": text}], **extra}


def post(srv: LocalServer, payload: Any = None, **kwargs: Any) -> requests.Response:
    kwargs.setdefault("timeout", 5)
    return requests.post(
        f"{srv.base_url}/chat/completions",
        json=body() if payload is None else payload,
        **kwargs,
    )


def sse_events(raw: bytes) -> list[bytes]:
    """Split an SSE body by hand: the events, without the blank-line separators."""
    assert raw.endswith(b"\n\n")
    return raw.split(b"\n\n")[:-1]


def sse_chunks(raw: bytes) -> list[dict[str, Any]]:
    events = sse_events(raw)
    assert events[-1] == b"data: [DONE]"
    assert all(event.startswith(b"data: ") for event in events)
    return [json.loads(event[len(b"data: ") :]) for event in events[:-1]]


def content_of(chunks: list[dict[str, Any]], index: int = 0) -> str:
    return "".join(
        choice["delta"].get("content") or ""
        for chunk in chunks
        for choice in chunk["choices"]
        if choice["index"] == index
    )


# -- echo replies ------------------------------------------------------------------------------


def test_echo_non_stream_is_an_openai_chat_completion(server: LocalServer) -> None:
    resp = post(server)
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("application/json")
    assert REQUEST_ID.match(resp.headers["x-request-id"])
    data = resp.json()
    assert data["id"].startswith("chatcmpl-")
    assert data["object"] == "chat.completion"
    assert isinstance(data["created"], int)
    assert data["model"] == "gpt-test"
    assert data["system_fingerprint"]
    [choice] = data["choices"]
    assert choice["index"] == 0
    assert choice["finish_reason"] == "stop"
    message = choice["message"]
    assert message["role"] == "assistant"
    assert message["content"] == "Echo: Hello world"
    assert message["refusal"] is None
    assert "tool_calls" not in message
    usage = data["usage"]
    assert usage["prompt_tokens"] == 2
    assert usage["completion_tokens"] == 3
    assert usage["total_tokens"] == 5


def test_echo_uses_last_user_message_and_joins_text_parts(server: LocalServer) -> None:
    payload = {
        "model": "m",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "ok"},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "look at"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA=="}},
                    {"type": "text", "text": "this"},
                ],
            },
        ],
    }
    assert post(server, payload).json()["choices"][0]["message"]["content"] == "Echo: look at this"


def test_echo_stream_is_sse_with_role_first_and_done_last(server: LocalServer) -> None:
    with post(server, body("one two three", stream=True), stream=True) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        assert REQUEST_ID.match(resp.headers["x-request-id"])
        raw = resp.raw.read()
    chunks = sse_chunks(raw)
    assert all(chunk["object"] == "chat.completion.chunk" for chunk in chunks)
    assert len({chunk["id"] for chunk in chunks}) == 1
    assert all(chunk["model"] == "gpt-test" for chunk in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    pieces = [c["choices"][0]["delta"]["content"] for c in chunks[1:-1]]
    assert pieces == ["Echo: ", "one ", "two ", "three"]
    assert chunks[-1]["choices"][0]["delta"] == {}
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:-1])
    assert all("usage" not in chunk for chunk in chunks)


def test_stream_include_usage_ends_with_a_usage_only_chunk(server: LocalServer) -> None:
    payload = body("a b", stream=True, stream_options={"include_usage": True})
    with post(server, payload, stream=True) as resp:
        chunks = sse_chunks(resp.raw.read())
    usage_chunk = chunks[-1]
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"]["prompt_tokens"] == 2
    assert usage_chunk["usage"]["completion_tokens"] == 3
    assert usage_chunk["usage"]["total_tokens"] == 5
    assert all(chunk["usage"] is None for chunk in chunks[:-1])
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"


def test_n_2_gives_two_choices_and_interleaved_stream(server: LocalServer) -> None:
    data = post(server, body("hi", n=2)).json()
    assert [c["index"] for c in data["choices"]] == [0, 1]
    assert {c["message"]["content"] for c in data["choices"]} == {"Echo: hi"}

    with post(server, body("hi there", n=2, stream=True), stream=True) as resp:
        chunks = sse_chunks(resp.raw.read())
    indexes = [chunk["choices"][0]["index"] for chunk in chunks]
    assert sorted(set(indexes)) == [0, 1]
    assert indexes != sorted(indexes)  # interleaved, not one choice after the other
    assert content_of(chunks, 0) == content_of(chunks, 1) == "Echo: hi there"
    finals = [c["choices"][0] for c in chunks if c["choices"][0]["finish_reason"]]
    assert sorted(f["index"] for f in finals) == [0, 1]


def test_streamed_tool_call_fragments_reassemble_into_json(server: LocalServer) -> None:
    arguments = {"city": "Paris", "units": "celsius", "days": [1, 2, 3]}
    server.enqueue(
        Reply(
            tool_calls=[
                {"id": "call_a", "function": {"name": "get_weather", "arguments": arguments}},
                {"name": "get_time", "arguments": '{"tz": "Europe/Paris"}'},
            ]
        )
    )
    with post(server, body(stream=True), stream=True) as resp:
        chunks = sse_chunks(resp.raw.read())
    calls: dict[int, dict[str, Any]] = {}
    for chunk in chunks:
        for fragment in chunk["choices"][0]["delta"].get("tool_calls", []):
            call = calls.setdefault(fragment["index"], {"names": [], "ids": [], "arguments": ""})
            if "id" in fragment:
                call["ids"].append(fragment["id"])
            if "name" in fragment.get("function", {}):
                call["names"].append(fragment["function"]["name"])
            call["arguments"] += fragment.get("function", {}).get("arguments", "")
    assert calls[0]["ids"] == ["call_a"]
    assert calls[0]["names"] == ["get_weather"]
    assert json.loads(calls[0]["arguments"]) == arguments
    assert calls[1]["names"] == ["get_time"]
    assert calls[1]["ids"][0].startswith("call_")
    assert json.loads(calls[1]["arguments"]) == {"tz": "Europe/Paris"}
    fragments = sum(1 for c in chunks if "tool_calls" in c["choices"][0]["delta"])
    assert fragments > 4  # the arguments really are split
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": None}
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"

    server.enqueue(Reply(tool_calls=[{"name": "f", "arguments": {}}]))
    message = post(server).json()["choices"][0]
    assert message["finish_reason"] == "tool_calls"
    assert message["message"]["content"] is None
    assert message["message"]["tool_calls"][0]["function"] == {"name": "f", "arguments": "{}"}


def test_reasoning_streams_before_content_and_extras_are_sent(server: LocalServer) -> None:
    server.enqueue(
        Reply(
            "The answer.",
            reasoning_content="Let me think.",
            headers={"x-ratelimit-remaining-requests": "7"},
            extra_chunk_fields={"x_vendor": {"ok": True}},
            finish_reason="length",
        )
    )
    with post(server, body(stream=True), stream=True) as resp:
        assert resp.headers["x-ratelimit-remaining-requests"] == "7"
        chunks = sse_chunks(resp.raw.read())
    kinds = [next(iter(c["choices"][0]["delta"]), None) for c in chunks]
    assert kinds == ["role", *["reasoning_content"] * 3, "content", "content", None]
    assert all(chunk["x_vendor"] == {"ok": True} for chunk in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"


def test_script_is_fifo_then_falls_back_to_echo(server: LocalServer) -> None:
    server.enqueue(Reply("first"))
    server.enqueue(Reply("second"), ErrorReply(503))
    texts = []
    for _ in range(2):
        texts.append(post(server).json()["choices"][0]["message"]["content"])
    assert texts == ["first", "second"]
    assert post(server).status_code == 503
    assert post(server).json()["choices"][0]["message"]["content"] == "Echo: Hello world"


def test_enqueue_rejects_non_actions(server: LocalServer) -> None:
    with pytest.raises(TypeError):
        server.enqueue("hello")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Disconnect("halfway")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        ErrorReply(42)


# -- errors and raw bytes ----------------------------------------------------------------------


def test_error_reply_is_openai_shaped(server: LocalServer) -> None:
    server.enqueue(
        ErrorReply(
            429,
            "Rate limit reached",
            code="rate_limit_exceeded",
            headers={"retry-after": "2"},
        ),
        ErrorReply(500),
        ErrorReply(400, "bad", type=None, code=400, param="messages"),
    )
    resp = post(server)
    assert resp.status_code == 429
    assert resp.headers["retry-after"] == "2"
    assert REQUEST_ID.match(resp.headers["x-request-id"])
    assert resp.json() == {
        "error": {
            "message": "Rate limit reached",
            "type": "requests",
            "param": None,
            "code": "rate_limit_exceeded",
        }
    }
    resp = post(server)
    assert resp.status_code == 500
    assert resp.json()["error"]["type"] == "server_error"
    assert "Internal Server Error" in resp.json()["error"]["message"]
    resp = post(server)
    assert resp.json() == {
        "error": {"message": "bad", "type": None, "param": "messages", "code": 400}
    }


def test_raw_reply_sends_exact_bytes(server: LocalServer) -> None:
    html = b"<html><body><h1>502 Bad Gateway</h1></body></html>\n"
    server.enqueue(
        RawReply(502, body=html, content_type="text/html", headers={"x-proxy": "nginx"}),
        RawReply(body=b'{"id": "chatcmpl-1", "choices": [', content_type="application/json"),
    )
    resp = post(server)
    assert resp.status_code == 502
    assert resp.headers["content-type"] == "text/html"
    assert resp.headers["x-proxy"] == "nginx"
    assert "x-request-id" not in resp.headers
    assert resp.content == html
    assert post(server).content == b'{"id": "chatcmpl-1", "choices": ['


def test_raw_reply_pieces_with_write_size_arrive_in_tiny_chunks() -> None:
    pieces = [
        b'data: {"choices": [{"index": 0, "delta": {"content": "h\xc3\xa9"}}]}\n\n',
        b": keep-alive comment\n\n",
        b'data: {"choices": []}\n',
        b"\n",  # no [DONE]
    ]
    with LocalServer(write_size=3) as srv:
        srv.enqueue(RawReply(body=pieces, content_type="text/event-stream", piece_delay=0.01))
        with post(srv, stream=True) as resp:
            assert resp.headers["transfer-encoding"] == "chunked"
            received = list(resp.iter_content(chunk_size=None))
    assert b"".join(received) == b"".join(pieces)
    assert max(len(chunk) for chunk in received) <= 3
    assert len(received) >= sum(len(p) for p in pieces) // 3


def test_write_size_one_splits_utf8_and_json_yet_bodies_parse() -> None:
    with LocalServer(write_size=1) as srv:
        resp = post(srv, body("héllo 🌍 wörld"))
        assert resp.json()["choices"][0]["message"]["content"] == "Echo: héllo 🌍 wörld"
        with post(srv, body("héllo 🌍", stream=True), stream=True) as resp:
            chunks = sse_chunks(resp.raw.read())
        assert content_of(chunks) == "Echo: héllo 🌍"


# -- connection faults -------------------------------------------------------------------------


def test_disconnect_before_headers_is_a_connection_error(server: LocalServer) -> None:
    server.enqueue(Disconnect())
    with pytest.raises(requests.ConnectionError):
        post(server)
    assert len(server.requests) == 1
    assert post(server).status_code == 200  # the server itself is fine


def test_disconnect_mid_body_is_a_short_read(server: LocalServer) -> None:
    server.enqueue(Disconnect("mid_body"), Disconnect("mid_body", after=b'{"id": "chatc'))
    with pytest.raises(requests.exceptions.ChunkedEncodingError, match="IncompleteRead"):
        post(server)
    with post(server, stream=True) as resp:
        assert resp.status_code == 200
        declared = int(resp.headers["content-length"])
        got = b""
        with pytest.raises(requests.exceptions.ChunkedEncodingError):
            for piece in resp.iter_content(chunk_size=1):
                got += piece
    assert got == b'{"id": "chatc'
    assert declared > len(got)


def test_disconnect_mid_stream_cuts_the_sse_stream(server: LocalServer) -> None:
    two_chunks = b'data: {"choices": [{"index": 0, "delta": {"content": "Hel"}}]}\n\n' * 2
    server.enqueue(Disconnect("mid_stream"), Disconnect("mid_stream", after=two_chunks))
    got = b""
    with post(server, body(stream=True), stream=True) as resp:
        assert resp.headers["content-type"].startswith("text/event-stream")
        with pytest.raises(requests.exceptions.ChunkedEncodingError):
            for piece in resp.iter_content(chunk_size=None):
                got += piece
    events = sse_events(got)
    assert len(events) == 2
    assert json.loads(events[0][6:])["choices"][0]["delta"]["role"] == "assistant"
    assert json.loads(events[1][6:])["choices"][0]["delta"]["content"] == "Echo: "

    got = b""
    with (
        post(server, body(stream=True), stream=True) as resp,
        pytest.raises(requests.exceptions.ChunkedEncodingError),
    ):
        for piece in resp.iter_content(chunk_size=None):
            got += piece
    assert got == two_chunks


async def test_disconnects_seen_by_aiohttp() -> None:
    async with LocalServer() as srv, aiohttp.ClientSession() as session:
        url = f"{srv.base_url}/chat/completions"
        srv.enqueue(Disconnect(), Disconnect("mid_body"), Disconnect("mid_stream"))
        with pytest.raises(aiohttp.ServerDisconnectedError):
            async with session.post(url, json=body()) as resp:
                await resp.read()
        with pytest.raises(aiohttp.ClientPayloadError):
            async with session.post(url, json=body()) as resp:
                await resp.read()
        lines = []
        with pytest.raises(aiohttp.ClientPayloadError):
            async with session.post(url, json=body(stream=True)) as resp:
                assert resp.status == 200
                async for line in resp.content:
                    lines.append(line)
        assert lines[0].startswith(b"data: {")
        async with session.post(url, json=body()) as resp:
            assert (await resp.json())["choices"][0]["message"]["content"] == "Echo: Hello world"


def test_stall_makes_a_short_client_timeout_fire(server: LocalServer) -> None:
    server.enqueue(Stall(10), Stall(10, stage="mid_stream"))
    started = time.monotonic()
    with pytest.raises(requests.exceptions.ReadTimeout):
        post(server, timeout=0.3)
    assert time.monotonic() - started < 2

    got = b""
    with post(server, body(stream=True), stream=True, timeout=0.3) as resp:
        assert resp.status_code == 200
        with pytest.raises(requests.exceptions.ConnectionError, match="timed out"):
            for piece in resp.iter_content(chunk_size=None):
                got += piece
    assert len(sse_events(got)) == 2
    assert time.monotonic() - started < 3


async def test_stall_times_out_an_aiohttp_client() -> None:
    async with LocalServer() as srv:
        srv.enqueue(Stall(10))
        timeout = aiohttp.ClientTimeout(total=5, sock_read=0.3)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            started = time.monotonic()
            with pytest.raises(asyncio.TimeoutError):
                async with session.post(f"{srv.base_url}/chat/completions", json=body()) as r:
                    await r.read()
            assert time.monotonic() - started < 2
        stop_started = time.monotonic()
    assert time.monotonic() - stop_started < 2


def test_in_stream_error_after_normal_chunks(server: LocalServer) -> None:
    error = {"message": "context overflow", "type": "exceed_context_size_error", "code": 400}
    server.enqueue(
        InStreamError(error, after_chunks=2),
        InStreamError({"error": error}, after_chunks=0, as_event=True),
    )
    with post(server, body(stream=True), stream=True) as resp:
        assert resp.status_code == 200
        events = sse_events(resp.raw.read())
    assert len(events) == 3
    assert json.loads(events[0][6:])["choices"][0]["delta"]["role"] == "assistant"
    assert json.loads(events[2][6:]) == {"error": error}
    assert b"[DONE]" not in b"".join(events)

    with post(server, body(stream=True), stream=True) as resp:
        events = sse_events(resp.raw.read())
    assert len(events) == 1
    name, data = events[0].split(b"\n")
    assert name == b"event: error"
    assert json.loads(data[len(b"data: ") :]) == {"error": error}


def test_reply_delays(server: LocalServer) -> None:
    server.enqueue(Reply("a b c d", delay=0.2), Reply("a b c d", piece_delay=0.05))
    started = time.monotonic()
    post(server)
    assert time.monotonic() - started >= 0.2
    started = time.monotonic()
    with post(server, body(stream=True), stream=True) as resp:
        arrivals = [time.monotonic() - started for _ in resp.iter_lines() if _]
    assert len(arrivals) == 7  # role, 4 words, final, [DONE]: 6 gaps of 0.05 s
    assert arrivals[0] < 0.15
    assert arrivals[-1] >= 0.3


# -- auth, routing, recording ------------------------------------------------------------------


def test_api_key_is_enforced() -> None:
    with LocalServer(api_key="sk-test-123456789") as srv:
        srv.enqueue(Reply("scripted"))
        resp = post(srv)
        assert resp.status_code == 401
        assert REQUEST_ID.match(resp.headers["x-request-id"])
        error = resp.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert error["type"] == "invalid_request_error"
        assert "API key" in error["message"]

        resp = post(srv, headers={"Authorization": "Bearer sk-wrong-000000000"})
        assert resp.status_code == 401
        assert resp.json()["error"]["code"] == "invalid_api_key"
        assert "sk-wrong-000000000" not in resp.json()["error"]["message"]

        # the rejected requests did not consume the script
        resp = post(srv, headers={"Authorization": "Bearer sk-test-123456789"})
        assert resp.status_code == 200
        assert resp.json()["choices"][0]["message"]["content"] == "scripted"


def test_other_paths_are_404_and_bad_json_is_400(server: LocalServer) -> None:
    server.enqueue(Reply("kept"))
    for method, path in [
        ("GET", "/v1/models"),
        ("POST", "/v1/completions"),
        ("PUT", "/v1/chat/completions"),  # GET lists the stored completions
        ("POST", "/chat/completions"),
        ("PATCH", "/v1/chat/completions/chatcmpl-1"),
    ]:
        resp = requests.request(method, server.url + path, json={}, timeout=5)
        assert resp.status_code == 404, path
        assert REQUEST_ID.match(resp.headers["x-request-id"])
        error = resp.json()["error"]
        assert error["type"] == "invalid_request_error"
        assert path in error["message"]
    for raw in (b'{"model": "m", "messages": [', b"[1, 2]", b"\xff"):
        resp = requests.post(server.base_url + "/chat/completions", data=raw, timeout=5)
        assert resp.status_code == 400
        assert "JSON" in resp.json()["error"]["message"]
    assert post(server).json()["choices"][0]["message"]["content"] == "kept"


def test_requests_are_recorded_in_order(server: LocalServer) -> None:
    requests.get(server.url + "/health?probe=1&x=y", timeout=5)
    raw = b'{"model": "m", "messages": [{"role": "user", "content": "hi"}]}'
    requests.post(
        server.base_url + "/chat/completions?api-version=2024-10-21",
        data=raw,
        headers={"Content-Type": "application/json", "X-Custom-Header": "Value"},
        timeout=5,
    )
    first, second = server.requests
    assert isinstance(first, RecordedRequest)
    assert (first.method, first.path, first.query) == ("GET", "/health", {"probe": "1", "x": "y"})
    assert first.body == b""
    assert second.method == "POST"
    assert second.path == "/v1/chat/completions"
    assert second.query == {"api-version": "2024-10-21"}
    assert second.headers["x-custom-header"] == "Value"
    assert second.headers["content-type"] == "application/json"
    assert all(name == name.lower() for name in second.headers)
    assert second.body == raw
    assert second.json() == json.loads(raw)

    snapshot = server.requests
    snapshot.clear()  # a copy: the server's record is untouched
    assert len(server.requests) == 2
    server.enqueue(Reply("x"))
    server.clear()
    assert server.requests == []
    assert post(server).json()["choices"][0]["message"]["content"].startswith("Echo:")


# -- lifecycle ---------------------------------------------------------------------------------


def test_sync_lifecycle_is_idempotent_and_restartable() -> None:
    srv = LocalServer()
    with pytest.raises(RuntimeError):
        _ = srv.base_url
    srv.stop()  # not started: harmless
    before = threading.active_count()
    with srv:
        assert srv.start() is srv  # starting twice: harmless
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/v1", srv.base_url)
        assert srv.base_url == srv.url + "/v1"
        assert int(srv.url.rsplit(":", 1)[1]) > 0
        assert threading.active_count() == before + 1
        # enqueue from this (the test's) thread while the server thread serves
        srv.enqueue(Reply("from the test thread"))
        assert post(srv).json()["choices"][0]["message"]["content"] == "from the test thread"
    srv.stop()  # stopping twice: harmless
    assert threading.active_count() == before
    with pytest.raises(requests.ConnectionError):
        post(srv, timeout=1)
    with srv:  # restart
        assert post(srv).status_code == 200
        busy_port = int(srv.url.rsplit(":", 1)[1])
        with pytest.raises(OSError):
            LocalServer(port=busy_port).start()
    assert threading.active_count() == before


async def test_async_context_manager_runs_in_the_current_loop() -> None:
    before = threading.active_count()
    async with LocalServer(model="local-x") as srv:
        assert threading.active_count() == before  # no thread
        assert await srv.astart() is srv
        srv.enqueue(Reply("async hello"))
        async with aiohttp.ClientSession() as session:
            url = f"{srv.base_url}/chat/completions"
            async with session.post(url, json={"messages": []}) as resp:
                data = await resp.json()
            assert data["choices"][0]["message"]["content"] == "async hello"
            assert data["model"] == "local-x"  # no model in the request
            async with session.post(url, json=body(stream=True)) as resp:
                raw = await resp.read()
            assert content_of(sse_chunks(raw)) == "Echo: Hello world"
            results = await asyncio.gather(
                *(session.post(url, json=body(f"n{i}")) for i in range(5))
            )
            texts = []
            for resp in results:
                texts.append((await resp.json())["choices"][0]["message"]["content"])
                resp.release()
            assert texts == [f"Echo: n{i}" for i in range(5)]
    await srv.astop()  # stopping twice: harmless


def test_stop_with_a_stalled_handler_and_keep_alive_client_is_quick() -> None:
    srv = LocalServer().start()
    srv.enqueue(Reply("warm"), Stall(60))
    errors: list[BaseException] = []
    with requests.Session() as keep_alive:
        keep_alive.post(srv.base_url + "/chat/completions", json=body(), timeout=5)

        def client() -> None:
            try:
                requests.post(srv.base_url + "/chat/completions", json=body(), timeout=30)
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=client)
        thread.start()
        deadline = time.monotonic() + 5
        while len(srv.requests) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(srv.requests) == 2
        started = time.monotonic()
        srv.stop()
        assert time.monotonic() - started < 2
        thread.join(5)
        assert not thread.is_alive()
    assert len(errors) == 1
    assert isinstance(errors[0], requests.ConnectionError)


async def test_astop_with_a_stalled_stream_and_a_trickle_is_quick() -> None:
    srv = await LocalServer().astart()
    srv.enqueue(
        Stall(60, stage="mid_stream"),
        RawReply(body=[b"x"] * 1000, content_type="text/plain", piece_delay=0.05),
    )
    url = f"{srv.base_url}/chat/completions"
    async with aiohttp.ClientSession() as session:
        stalled = await session.post(url, json=body(stream=True))
        first = await stalled.content.readuntil(b"\n\n")
        assert first.startswith(b"data: ")
        trickle = await session.post(url, json=body())
        assert await trickle.content.readexactly(2) == b"xx"
        started = time.monotonic()
        await srv.astop()
        assert time.monotonic() - started < 2
        for resp in (stalled, trickle):
            with pytest.raises(aiohttp.ClientPayloadError):
                await resp.read()
            resp.release()


# ---------------------------------------------------------------- Trickle and Stall("mid_body")


def test_trickle_sends_size_bytes_every_interval(server: LocalServer) -> None:
    server.enqueue(Trickle(b"abcdefgh", size=3, interval=0.05, headers={"x-extra": "1"}))
    started = time.monotonic()
    with post(server, stream=True) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"] == "application/json"
        assert resp.headers["transfer-encoding"] == "chunked"
        assert resp.headers["x-extra"] == "1"
        assert REQUEST_ID.match(resp.headers["x-request-id"])
        pieces = list(resp.iter_content(chunk_size=None))
    assert pieces == [b"abc", b"def", b"gh"]
    assert time.monotonic() - started >= 2 * 0.05


def test_trickle_defaults_to_the_echo_reply_json_or_sse(server: LocalServer) -> None:
    server.enqueue(Trickle(size=50, interval=0), Trickle(size=50, interval=0))
    resp = post(server)
    assert resp.headers["content-type"] == "application/json"
    assert resp.json()["choices"][0]["message"]["content"] == "Echo: Hello world"
    resp = post(server, body(stream=True))
    assert resp.headers["content-type"].startswith("text/event-stream")
    assert content_of(sse_chunks(resp.content)) == "Echo: Hello world"


def test_trickle_status_and_content_type_are_as_given(server: LocalServer) -> None:
    server.enqueue(Trickle(b"<html>busy</html>", size=4, status=503, content_type="text/html"))
    resp = post(server)
    assert resp.status_code == 503
    assert resp.headers["content-type"] == "text/html"
    assert resp.content == b"<html>busy</html>"


def test_a_repeating_trickle_goes_on_until_the_client_hangs_up() -> None:
    with LocalServer() as srv:
        srv.enqueue(Trickle(b"ab", size=2, interval=0, repeat=True))
        with post(srv, stream=True) as resp:
            received = 0
            for piece in resp.iter_content(chunk_size=None):
                assert set(piece) <= set(b"ab")
                received += len(piece)
                if received > 100_000:
                    break
        assert received > 100_000
        assert post(srv).json()["choices"][0]["message"]["content"] == "Echo: Hello world"
        # A trickle that never ends does not hold up stop() either.
        srv.enqueue(Trickle(b"x", interval=0.05, repeat=True))
        with post(srv, stream=True) as resp:
            assert resp.raw.read(2) == b"xx"
            started = time.monotonic()
            srv.stop()
            assert time.monotonic() - started < 2
            with pytest.raises(requests.RequestException):
                resp.content  # noqa: B018


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"size": 0}, ValueError),
        ({"size": 1.5}, ValueError),
        ({"interval": -1}, ValueError),
        ({"status": 99}, ValueError),
        ({"body": b"", "repeat": True}, ValueError),
        ({"body": "text"}, TypeError),
    ],
)
def test_trickle_rejects_bad_settings(kwargs: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        Trickle(**kwargs)


def test_stall_mid_body_sends_half_a_json_body_then_silence(server: LocalServer) -> None:
    server.enqueue(Stall(5, stage="mid_body"), Stall(5, stage="mid_body", after=b'{"id"'))
    for expected_prefix in (b'{"id":"chatcmpl-', b'{"id"'):
        with post(server, stream=True, timeout=(5, 0.3)) as resp:
            assert resp.status_code == 200
            assert resp.headers["content-type"] == "application/json"
            declared = int(resp.headers["content-length"])
            first = resp.raw.read(len(expected_prefix))
            assert first == expected_prefix
            assert declared > len(expected_prefix)
            with pytest.raises(requests.ConnectionError, match="timed out"):
                resp.content  # noqa: B018


def test_stall_rejects_an_unknown_stage() -> None:
    with pytest.raises(ValueError, match="unknown Stall stage"):
        Stall(1, stage="mid_header")  # type: ignore[arg-type]
