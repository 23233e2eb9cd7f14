"""What real OpenAI-compatible servers send (/work/shared/PROVIDERS.md), byte for byte, to both
facades over real loopback HTTP.

Each test replays one server's habit (llama-cpp-python, llama-server, vLLM, Ollama, Groq,
OpenRouter, DeepSeek, Azure, OpenAI) with `RawReply` and checks what a user reads of it: the
non-streamed answer, and the streamed one every way a stream is read (its chunks,
`accumulated`, `text_stream`, `events()` and `get_final_completion()`), through `SyncChat` and
`AsyncChat` alike. Where the official SDK reads the same bytes, chatlib must read at least as
much (`official_final`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest

from chatlib import CreateChatCompletionChunk, CreateChatCompletionResponse, Timeout
from chatlib.errors import (
    APIError,
    APIStatusError,
    AuthenticationError,
    BadRequestError,
    IncompleteStreamError,
    InsufficientQuotaError,
    InternalServerError,
    NotFoundError,
    RateLimitError,
)
from chatlib.testing import ErrorReply, LocalServer, RawReply, RecordedRequest, Reply

MODEL = "tiny"
USER = [{"role": "user", "content": "Weather in Paris?"}]
DONE = b"data: [DONE]\n\n"
HEAD = {"id": "chatcmpl-p1", "object": "chat.completion.chunk", "created": 1741570000}

# llama-cpp-python writes JSON with spaces after separators; llama-server writes it compact.
SPACED = (", ", ": ")
COMPACT = (",", ":")


def completion_body(message: dict[str, Any], **choice: Any) -> dict[str, Any]:
    """A non-streamed answer with one choice: `message`, and `choice`'s fields beside it."""
    return {
        "id": "chatcmpl-p1",
        "object": "chat.completion",
        "created": 1,
        "model": MODEL,
        "choices": [{"index": 0, "message": message, "finish_reason": "stop", **choice}],
    }


def event(payload: dict[str, Any], separators: tuple[str, str] = SPACED) -> bytes:
    """One `data:` event, LF framed, as the servers write it."""
    return b"data: " + json.dumps(payload, separators=separators).encode() + b"\n\n"


def chunk(
    delta: dict[str, Any] | None,
    finish: str | None = None,
    *,
    index: int = 0,
    model: str = MODEL,
    choice: dict[str, Any] | None = None,
    **top: Any,
) -> dict[str, Any]:
    """A one-choice chunk; `choice` adds fields to the choice, `top` to the chunk."""
    body: dict[str, Any] = {"index": index, "finish_reason": finish, **(choice or {})}
    if delta is not None:
        body["delta"] = delta
    return {**HEAD, "model": model, "choices": [body], **top}


def stream_reply(events: list[bytes], piece_delay: float = 0.0) -> RawReply:
    return RawReply(body=events, content_type="text/event-stream", piece_delay=piece_delay)


@dataclass
class Read:
    """A stream read every way a user reads one (each from its own copy of the reply)."""

    chunks: list[CreateChatCompletionChunk]
    accumulated: CreateChatCompletionResponse
    text: list[str]
    events: list[Any]
    final: CreateChatCompletionResponse

    def of_type(self, kind: str) -> list[Any]:
        return [e for e in self.events if e.type == kind]


def read_every_way(facade: Any, server: LocalServer, reply: RawReply, **params: Any) -> Read:
    """Stream `reply` three times: chunks then `accumulated`; `text_stream`; `events()` then
    `get_final_completion()`."""
    server.enqueue(reply, reply, reply)
    client = facade.client(base_url=server.base_url, max_retries=0)
    request = {"model": MODEL, "messages": USER, **params}
    raw = client.raw
    if facade.is_async:

        async def go() -> Read:
            async with raw.stream(**request) as stream:
                chunks = [c async for c in stream]
                accumulated = stream.accumulated
            async with raw.stream(**request) as stream:
                text = [t async for t in stream.text_stream]
            async with raw.stream(**request) as stream:
                events = [e async for e in stream.events()]
                final = await stream.get_final_completion()
            return Read(chunks, accumulated, text, events, final)

        read: Read = facade.run(go())
    else:
        with raw.stream(**request) as stream:
            chunks = list(stream)
            accumulated = stream.accumulated
        with raw.stream(**request) as stream:
            text = list(stream.text_stream)
        with raw.stream(**request) as stream:
            events = list(stream.events())
            final = stream.get_final_completion()
        read = Read(chunks, accumulated, text, events, final)
    # However it is read, a stream adds up to the same completion.
    assert read.accumulated.to_dict() == read.final.to_dict()
    assert "".join(read.text) == read.final.text
    return read


def stream_failure(facade: Any, server: LocalServer, reply: RawReply, how: str) -> APIError:
    """The error a stream of `reply` raises when read by `how` (`chunks`, `text`, `events`,
    `final`)."""
    server.enqueue(reply)
    client = facade.client(base_url=server.base_url, max_retries=0)
    raw = client.raw
    if facade.is_async:

        async def go() -> None:
            async with raw.stream(model=MODEL, messages=USER) as stream:
                if how == "chunks":
                    [c async for c in stream]
                elif how == "text":
                    [t async for t in stream.text_stream]
                elif how == "events":
                    [e async for e in stream.events()]
                else:
                    await stream.get_final_completion()

        with pytest.raises(APIError) as caught:
            facade.run(go())
    else:
        with pytest.raises(APIError) as caught, raw.stream(model=MODEL, messages=USER) as stream:
            if how == "chunks":
                list(stream)
            elif how == "text":
                list(stream.text_stream)
            elif how == "events":
                list(stream.events())
            else:
                stream.get_final_completion()
    return caught.value


def create(facade: Any, server: LocalServer, reply: RawReply, **params: Any) -> Any:
    server.enqueue(reply)
    client = facade.client(base_url=server.base_url, max_retries=0)
    return client.create(model=MODEL, messages=USER, **params)


def status_error(
    facade: Any, server: LocalServer, reply: RawReply, streamed: bool, expected: type[Any]
) -> Any:
    """The error one call (`create`, or a stream read to its end) raises for `reply`."""
    server.enqueue(reply)
    client = facade.client(base_url=server.base_url, max_retries=0)
    with pytest.raises(expected) as caught:
        if streamed:
            client.stream_all(model=MODEL, messages=USER)
        else:
            client.create(model=MODEL, messages=USER)
    return caught.value


def official_final(server: LocalServer, reply: RawReply) -> Any:
    """What the official SDK's stream helper makes of `reply` (the oracle)."""
    openai = pytest.importorskip("openai")
    server.enqueue(reply)
    sdk = openai.OpenAI(base_url=server.base_url, api_key="sk-test-key", max_retries=0)
    with sdk, sdk.chat.completions.stream(model=MODEL, messages=USER) as helper:
        return helper.get_final_completion().model_dump(mode="json")


HOWS = ["chunks", "text", "events", "final"]


# ---------------------------------------------------------------- llama-cpp-python


def llama_cpp_python_stream(words: list[str]) -> list[bytes]:
    """Spaced JSON, a keep-alive ping as the first bytes (a queued request), role first, one
    event per token, an empty last delta with `finish_reason`, `[DONE]`."""
    return [
        b": ping - 2025-03-10 01:23:45.678901\n\n",
        event(chunk({"role": "assistant"})),
        *(event(chunk({"content": word})) for word in words),
        event(chunk({}, "stop")),
        DONE,
    ]


def test_llama_cpp_python_stream_behind_a_ping_reads_every_way(
    facade: Any, server: LocalServer
) -> None:
    words = ["The", " weather", " is", " mild", "."]
    # The ping arrives at once, the answer later: the request was queued behind another one.
    read = read_every_way(
        facade, server, stream_reply(llama_cpp_python_stream(words), piece_delay=0.02)
    )
    assert [c.text for c in read.chunks] == ["", *words, ""]
    assert read.text == words
    message = read.final.choices[0].message
    assert message is not None
    assert message.role == "assistant" and message.content == "The weather is mild."
    assert read.final.choices[0].finish_reason == "stop"
    assert [e.delta for e in read.of_type("content.delta")] == words
    assert [e.content for e in read.of_type("content.done")] == ["The weather is mild."]
    assert len(read.of_type("chunk")) == len(words) + 2


def test_keepalive_comments_keep_a_queued_stream_within_its_read_timeout(
    facade: Any, server: LocalServer
) -> None:
    """Queued behind another request, the stream gets its headers at once and then only
    pings for longer than the read timeout: the pings are bytes, so the call goes on."""
    ping = b": ping - 2025-03-10 01:23:45.678901\n\n"
    events = [ping, ping, ping, ping, *llama_cpp_python_stream(["Hi"])[1:]]
    server.enqueue(stream_reply(events, piece_delay=0.1))
    client = facade.client(
        base_url=server.base_url, max_retries=0, timeout=Timeout(connect=2, read=0.3, total=10)
    )
    assert client.final_completion(model=MODEL, messages=USER).text == "Hi"


def test_llama_cpp_python_ignores_include_usage_and_n(facade: Any, server: LocalServer) -> None:
    read = read_every_way(
        facade,
        server,
        stream_reply(llama_cpp_python_stream(["Hi"])),
        n=2,
        stream_options={"include_usage": True},
    )
    assert read.final.usage is None  # none was sent: nothing made up
    assert [c.index for c in read.final.choices] == [0]
    assert read.final.text == "Hi"
    sent = server.requests[-1].json()
    assert sent["n"] == 2 and sent["stream_options"] == {"include_usage": True}


LOGPROB = {
    "token": "Hi",
    "bytes": None,
    "logprob": -0.25,
    "top_logprobs": [{"token": "Hi", "bytes": None, "logprob": -0.25}],
}


def test_llama_cpp_python_logprobs_with_null_bytes_and_refusal(
    facade: Any, server: LocalServer
) -> None:
    logprobs = {"content": [LOGPROB], "refusal": None}
    body = completion_body({"role": "assistant", "content": "Hi"}, logprobs=logprobs)
    response = create(facade, server, RawReply(body=json.dumps(body).encode()), logprobs=True)
    streamed = read_every_way(
        facade,
        server,
        stream_reply(
            [
                event(chunk({"role": "assistant"})),
                event(chunk({"content": "Hi"}, choice={"logprobs": logprobs})),
                event(chunk({}, "stop", choice={"logprobs": None})),
                DONE,
            ]
        ),
        logprobs=True,
    )
    for completion in (response, streamed.final):
        got = completion.choices[0].logprobs
        assert got is not None and got.refusal is None
        assert got.content is not None and len(got.content) == 1
        token = got.content[0]
        assert (token.token, token.bytes, token.logprob) == ("Hi", None, -0.25)
        assert token.top_logprobs is not None and token.top_logprobs[0].bytes is None
    [done] = streamed.of_type("logprobs.content.done")
    assert [t.token for t in done.content] == ["Hi"]


ARGUMENTS = '{ "city" : "Paris" ,  "unit": "celsius" }'  # llama.cpp's extra whitespace


def llama_cpp_tool_delta(piece: str) -> dict[str, Any]:
    """llama-cpp-python's forced tool call delta: the old `function_call` and `tool_calls`
    together, id, type and name repeated in every one."""
    return {
        "role": None,
        "content": None,
        "function_call": {"name": "get_weather", "arguments": piece},
        "tool_calls": [
            {
                "index": 0,
                "id": "call__0_get_weather_cmpl-1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": piece},
            }
        ],
    }


FORCED = {"tool_choice": {"type": "function", "function": {"name": "get_weather"}}}
PIECES = ['{ "city" : ', '"Paris" ,', '  "unit": "celsius" }']


def llama_cpp_forced_tool_stream() -> list[bytes]:
    return [
        event(chunk({"role": "assistant", "content": None, "tool_calls": None})),
        *(event(chunk(llama_cpp_tool_delta(piece))) for piece in PIECES),
        event(chunk({}, "tool_calls")),
        DONE,
    ]


def test_llama_cpp_forced_tool_call_streamed_keeps_one_name_and_id(
    facade: Any, server: LocalServer
) -> None:
    read = read_every_way(facade, server, stream_reply(llama_cpp_forced_tool_stream()), **FORCED)
    choice = read.final.choices[0]
    assert choice.finish_reason == "tool_calls"
    message = choice.message
    assert message is not None and message.content is None
    [call] = message.tool_calls or []
    assert call.id == "call__0_get_weather_cmpl-1"
    assert call.function.name == "get_weather"  # not get_weatherget_weather...
    assert json.loads(call.function.arguments) == {"city": "Paris", "unit": "celsius"}
    assert message.function_call is not None
    assert message.function_call.name == "get_weather"
    assert message.function_call.arguments == ARGUMENTS
    assert read.text == []
    deltas = read.of_type("tool_calls.function.arguments.delta")
    assert [e.arguments_delta for e in deltas] == PIECES
    assert {e.name for e in deltas} == {"get_weather"}
    [done] = read.of_type("tool_calls.function.arguments.done")
    assert (done.name, done.arguments) == ("get_weather", ARGUMENTS)
    # The official helper reads the same arguments (and concatenates the repeated name).
    theirs = official_final(server, stream_reply(llama_cpp_forced_tool_stream()))
    assert theirs["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"] == ARGUMENTS


FORCED_COMPLETION = {
    "id": "chatcmpl-p1",
    "object": "chat.completion",
    "created": 1,
    "model": MODEL,
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": None,
                "function_call": {"name": "get_weather", "arguments": ARGUMENTS},
                "tool_calls": [
                    {
                        "id": "call__0_get_weather_cmpl-1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": ARGUMENTS},
                    }
                ],
            },
            "logprobs": None,
            "finish_reason": "tool_calls",
        }
    ],
    "usage": {"prompt_tokens": 20, "completion_tokens": 12, "total_tokens": 32},
}


def test_llama_cpp_forced_tool_call_not_streamed(facade: Any, server: LocalServer) -> None:
    response = create(
        facade, server, RawReply(body=json.dumps(FORCED_COMPLETION, indent=2).encode()), **FORCED
    )
    message = response.choices[0].message
    assert response.choices[0].finish_reason == "tool_calls"
    assert message.content is None and response.text == ""
    [call] = message.tool_calls
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris", "unit": "celsius"}
    assert message.function_call.name == "get_weather"


def llama_cpp_history_check(request: RecordedRequest) -> Any:
    """llama-cpp-python's rule: an assistant message with tool calls and `"content": null`
    is a 500; without `content` (or with `""`) it is fine."""
    for message in request.json()["messages"]:
        if message.get("tool_calls") and "content" in message and message["content"] is None:
            return RawReply(500, body=b"Internal Server Error", content_type="text/plain")
    return RawReply(body=json.dumps({**FORCED_COMPLETION, "choices": [ANSWER]}).encode())


ANSWER = {
    "index": 0,
    "message": {"role": "assistant", "content": "Mild, 18 C."},
    "finish_reason": "stop",
}


@pytest.mark.parametrize("streamed", [False, True], ids=["create", "stream"])
def test_a_tool_call_sent_back_to_llama_cpp_has_no_null_content(
    facade: Any, server: LocalServer, streamed: bool
) -> None:
    if streamed:
        assistant = (
            read_every_way(facade, server, stream_reply(llama_cpp_forced_tool_stream()), **FORCED)
            .final.choices[0]
            .message
        )
    else:
        assistant = (
            create(facade, server, RawReply(body=json.dumps(FORCED_COMPLETION).encode()), **FORCED)
            .choices[0]
            .message
        )
    assert assistant.content is None  # read as sent
    server.enqueue(llama_cpp_history_check)
    client = facade.client(base_url=server.base_url, max_retries=0)
    tool = {"role": "tool", "tool_call_id": assistant.tool_calls[0].id, "content": "18 C"}
    response = client.create(model=MODEL, messages=[*USER, assistant, tool])
    assert response.text == "Mild, 18 C."
    sent = server.requests[-1].json()["messages"][1]
    assert "content" not in sent and sent["tool_calls"][0]["function"]["name"] == "get_weather"


def get_weather(city: str, unit: str) -> str:
    """The weather in a city.

    Args:
        city: The city.
        unit: `celsius` or `fahrenheit`.
    """
    return f"18 {unit} in {city}"


def llama_cpp_tool_model(request: RecordedRequest) -> Any:
    """A llama-cpp-python model: a forced tool call, then the answer once a tool result is in
    the history; 500 for a null `content` beside `tool_calls`, as the server does."""
    body = request.json()
    if llama_cpp_history_check(request).status == 500:
        return llama_cpp_history_check(request)
    answered = any(message["role"] == "tool" for message in body["messages"])
    if body.get("stream"):
        if answered:
            return stream_reply(llama_cpp_python_stream(["Mild,", " 18 C."])[1:])
        return stream_reply(llama_cpp_forced_tool_stream())
    completion = {**FORCED_COMPLETION, "choices": [ANSWER]} if answered else FORCED_COMPLETION
    return RawReply(body=json.dumps(completion).encode())


@pytest.mark.parametrize("streamed", [False, True], ids=["run_tools", "run_tools_stream"])
def test_the_tool_loop_runs_against_llama_cpp_python(
    facade: Any, server: LocalServer, streamed: bool
) -> None:
    server.enqueue(llama_cpp_tool_model, llama_cpp_tool_model)
    client = facade.client(base_url=server.base_url, max_retries=0)
    params = {"model": MODEL, "messages": USER, "tools": [get_weather], "max_rounds": 2}
    if streamed:
        events = client.run_tools_events(**params)
        result = events[-1].result
        assert "".join(e.chunk.text for e in events if e.type == "chunk") == "Mild, 18 C."
    else:
        result = client.run_tools(**params)
    assert result.completion.text == "Mild, 18 C."
    [ran] = result.tool_results
    assert ran.name == "get_weather"
    assert ran.parsed_arguments == {"city": "Paris", "unit": "celsius"}
    assert ran.output == "18 celsius in Paris"
    history = server.requests[-1].json()["messages"]
    assert [m["role"] for m in history] == ["user", "assistant", "tool"]
    assert "content" not in history[1]


@pytest.mark.parametrize("queued", [False, True], ids=["alone", "after a ping"])
@pytest.mark.parametrize("how", HOWS)
def test_llama_cpp_empty_200_stream_for_a_too_long_prompt_raises(
    facade: Any, server: LocalServer, how: str, queued: bool
) -> None:
    body = [b": ping - 2025-03-10 01:23:45.678901\n\n"] if queued else [b""]
    error = stream_failure(facade, server, stream_reply(body), how)
    assert isinstance(error, IncompleteStreamError)
    assert "without sending any event" in str(error)
    assert error.partial is None


LLAMA_CPP_PYTHON_ERRORS = [
    # FastAPI's shape, for a wrong key, a wrong path, a wrong method
    (
        401,
        b'{"detail": "Invalid API key"}',
        "application/json",
        AuthenticationError,
        "Invalid API key",
    ),
    (404, b'{"detail": "Not Found"}', "application/json", NotFoundError, "Not Found"),
    (
        405,
        b'{"detail": "Method Not Allowed"}',
        "application/json",
        APIStatusError,
        "Method Not Allowed",
    ),
    # invalid JSON in the request: plain text
    (
        500,
        b"Internal Server Error",
        "text/plain; charset=utf-8",
        InternalServerError,
        "Internal Server Error",
    ),
    # request validation errors: OpenAI's shape with a 500
    (
        500,
        b"{\"error\": {\"message\": \"[{'type': 'missing', 'loc': ('body', 'messages')}]\", "
        b'"type": "internal_server_error", "param": null, "code": null}}',
        "application/json",
        InternalServerError,
        "'missing'",
    ),
    # context overflow: OpenAI's shape with a 400
    (
        400,
        b'{"error": {"message": "Requested tokens (5000) exceed context window of 2048", '
        b'"type": "invalid_request_error", "param": "messages", '
        b'"code": "context_length_exceeded"}}',
        "application/json",
        BadRequestError,
        "exceed context window of 2048",
    ),
]


@pytest.mark.parametrize("streamed", [False, True], ids=["create", "stream"])
@pytest.mark.parametrize(
    ("status", "body", "content_type", "cls", "says"),
    LLAMA_CPP_PYTHON_ERRORS,
    ids=["401-detail", "404-detail", "405-detail", "500-text", "500-openai", "400-openai"],
)
def test_llama_cpp_python_error_shapes(
    facade: Any,
    server: LocalServer,
    streamed: bool,
    status: int,
    body: bytes,
    content_type: str,
    cls: type[APIStatusError],
    says: str,
) -> None:
    reply = RawReply(status, body=body, content_type=content_type)
    error = status_error(facade, server, reply, streamed, APIStatusError)
    assert type(error) is cls
    assert error.status_code == status
    assert says in str(error)
    assert error.raw_body == body


# ---------------------------------------------------------------- llama-server (C++)


def test_llama_server_compact_stream_with_timings(facade: Any, server: LocalServer) -> None:
    fingerprint = {"system_fingerprint": "b5000-abcdef12"}
    timings = {"prompt_n": 4, "prompt_ms": 1.2, "predicted_n": 2, "predicted_ms": 0.8}
    events = [
        event(chunk({"role": "assistant", "content": None}, **fingerprint), COMPACT),
        event(chunk({"content": "Mild"}, **fingerprint), COMPACT),
        event(chunk({"content": "."}, **fingerprint), COMPACT),
        event(chunk({}, "stop", **fingerprint, timings=timings), COMPACT),
        DONE,
    ]
    read = read_every_way(facade, server, stream_reply(events))
    assert read.text == ["Mild", "."]
    assert read.final.text == "Mild."  # the first delta's null content adds nothing
    assert read.final.system_fingerprint == "b5000-abcdef12"
    assert read.chunks[-1].extra["timings"] == timings
    assert read.final.extra["timings"] == timings
    assert [e.content for e in read.of_type("content.done")] == ["Mild."]
    completion = {
        "choices": [
            {
                "finish_reason": "stop",
                "index": 0,
                "message": {"role": "assistant", "content": "Mild."},
            }
        ],
        "created": 1741570002,
        "model": MODEL,
        **fingerprint,
        "object": "chat.completion",
        "usage": {"completion_tokens": 2, "prompt_tokens": 4, "total_tokens": 6},
        "id": "chatcmpl-Zq1",
        "timings": timings,
    }
    body = json.dumps(completion, separators=COMPACT).encode()
    response = create(facade, server, RawReply(body=body))
    assert response.text == "Mild." and response.system_fingerprint == "b5000-abcdef12"
    assert response.extra["timings"] == timings


def test_llama_server_two_choices_with_a_usage_chunk_each(facade: Any, server: LocalServer) -> None:
    """`n: 2`: choices interleave, index 1 first, and each choice ends with its own usage-only
    chunk, the first one in the middle of the stream."""
    usage = {
        "completion_tokens": 2,
        "prompt_tokens": 9,
        "total_tokens": 11,
        "prompt_tokens_details": {"cached_tokens": 3},
    }
    last_usage = {**usage, "completion_tokens": 1, "total_tokens": 10}
    events = [
        event(chunk({"role": "assistant", "content": None}, index=1), COMPACT),
        event(chunk({"content": "B1"}, index=1), COMPACT),
        event(chunk({"role": "assistant", "content": None}, index=0), COMPACT),
        event(chunk({"content": " B2"}, index=1), COMPACT),
        event(chunk({}, "stop", index=1), COMPACT),
        event({**HEAD, "model": MODEL, "choices": [], "usage": usage}, COMPACT),
        event(chunk({"content": "A1"}, index=0), COMPACT),
        event(chunk({}, "length", index=0), COMPACT),
        event({**HEAD, "model": MODEL, "choices": [], "usage": last_usage}, COMPACT),
        DONE,
    ]
    read = read_every_way(
        facade, server, stream_reply(events), n=2, stream_options={"include_usage": True}
    )
    assert len(read.chunks) == 9  # the usage chunk in the middle does not end the stream
    texts = [(c.index, c.message.content, c.finish_reason) for c in read.final.choices]
    assert texts == [(0, "A1", "length"), (1, "B1 B2", "stop")]
    assert read.text == ["A1"]  # `text_stream` is the first choice's text
    assert read.final.usage is not None
    assert read.final.usage.prompt_tokens == 9
    assert read.final.usage.prompt_tokens_details.cached_tokens == 3
    done = [(e.choice_index, e.content) for e in read.of_type("content.done")]
    assert sorted(done) == [(0, "A1"), (1, "B1 B2")]


def test_llama_server_logprobs_with_token_ids_and_bytes(facade: Any, server: LocalServer) -> None:
    token = {
        "id": 13347,
        "token": "Hi",
        "bytes": [72, 105],
        "logprob": -0.01,
        "top_logprobs": [{"id": 13347, "token": "Hi", "bytes": [72, 105], "logprob": -0.01}],
    }
    body = completion_body({"role": "assistant", "content": "Hi"}, logprobs={"content": [token]})
    response = create(
        facade, server, RawReply(body=json.dumps(body, separators=COMPACT).encode()), logprobs=True
    )
    streamed = read_every_way(
        facade,
        server,
        stream_reply(
            [
                event(chunk({"role": "assistant", "content": None}), COMPACT),
                event(chunk({"content": "Hi"}, choice={"logprobs": {"content": [token]}}), COMPACT),
                event(chunk({}, "stop"), COMPACT),
                DONE,
            ]
        ),
        logprobs=True,
    )
    for completion in (response, streamed.final):
        [got] = completion.choices[0].logprobs.content
        assert bytes(got.bytes).decode() == "Hi"
        assert got.extra["id"] == 13347
        assert got.top_logprobs[0].extra["id"] == 13347


LLAMA_SERVER_OVERFLOW = (
    b'{"error":{"code":400,"message":"the request exceeds the available context size, try '
    b'increasing it","type":"exceed_context_size_error","n_prompt_tokens":5000,"n_ctx":4096}}'
)


@pytest.mark.parametrize("streamed", [False, True], ids=["create", "stream"])
def test_llama_server_context_overflow_keeps_its_figures(
    facade: Any, server: LocalServer, streamed: bool
) -> None:
    reply = RawReply(400, body=LLAMA_SERVER_OVERFLOW)
    error = status_error(facade, server, reply, streamed, BadRequestError)
    assert error.type == "exceed_context_size_error"
    assert str(error.code) == "400"  # an integer on the wire
    assert "exceeds the available context size" in str(error)
    assert error.body["n_prompt_tokens"] == 5000 and error.body["n_ctx"] == 4096


@pytest.mark.parametrize("how", HOWS)
def test_llama_server_error_after_the_stream_started(
    facade: Any, server: LocalServer, how: str
) -> None:
    events = [
        event(chunk({"role": "assistant", "content": None}), COMPACT),
        event(chunk({"content": "Par"}), COMPACT),
        b'data: {"error":{"code":500,"message":"slot unavailable","type":"server_error"}}\n\n',
    ]
    error = stream_failure(facade, server, stream_reply(events), how)
    assert isinstance(error, InternalServerError)
    assert "slot unavailable" in str(error)
    assert error.partial is not None and error.partial.text == "Par"  # what arrived is kept


def test_llama_server_empty_keepalive_comments_are_skipped(
    facade: Any, server: LocalServer
) -> None:
    events = [
        b":\n\n",
        event(chunk({"role": "assistant", "content": None}), COMPACT),
        b":\n\n",
        event(chunk({"content": "Hi"}), COMPACT),
        b":\n\n:\n\n",
        event(chunk({}, "stop"), COMPACT),
        DONE,
    ]
    read = read_every_way(facade, server, stream_reply(events))
    assert len(read.chunks) == 3
    assert read.final.text == "Hi" and read.text == ["Hi"]


# ---------------------------------------------------------------- vLLM


VLLM_USAGE = {"prompt_tokens": 7, "total_tokens": 10, "completion_tokens": 3}


@pytest.mark.parametrize("shape", ["choices null", "no choices key"])
def test_vllm_usage_chunk_without_choices(facade: Any, server: LocalServer, shape: str) -> None:
    last: dict[str, Any] = {**HEAD, "model": MODEL, "usage": VLLM_USAGE}
    if shape == "choices null":
        last["choices"] = None
    events = [
        event(chunk({"role": "assistant", "content": ""})),
        event(chunk({"reasoning_content": "Paris is in France."})),
        event(chunk({"content": "Mild."})),
        event(chunk({"content": ""}, "stop", choice={"stop_reason": None})),
        event(last),
        DONE,
    ]
    read = read_every_way(
        facade, server, stream_reply(events), stream_options={"include_usage": True}
    )
    assert read.chunks[-1].choices == [] and read.chunks[-1].text == ""
    assert read.final.usage is not None and read.final.usage.completion_tokens == 3
    assert read.final.text == "Mild." and read.text == ["Mild."]
    assert read.final.choices[0].message.extra["reasoning_content"] == "Paris is in France."
    assert len(read.of_type("chunk")) == 5


VLLM_ERROR = (
    b'{"object":"error","message":"max_tokens is too large","type":"BadRequestError",'
    b'"param":null,"code":400}'
)


@pytest.mark.parametrize("streamed", [False, True], ids=["create", "stream"])
def test_vllm_top_level_error_object(facade: Any, server: LocalServer, streamed: bool) -> None:
    error = status_error(facade, server, RawReply(400, body=VLLM_ERROR), streamed, BadRequestError)
    assert "max_tokens is too large" in str(error)
    assert error.type == "BadRequestError"
    assert error.raw_body == VLLM_ERROR


@pytest.mark.parametrize("how", HOWS)
def test_vllm_error_object_inside_a_stream(facade: Any, server: LocalServer, how: str) -> None:
    events = [event(chunk({"role": "assistant", "content": ""})), event(chunk({"content": "M"}))]
    events.append(b"data: " + VLLM_ERROR + b"\n\n")
    error = stream_failure(facade, server, stream_reply(events), how)
    assert isinstance(error, BadRequestError)
    assert "max_tokens is too large" in str(error)
    assert error.partial is not None and error.partial.text == "M"


def test_vllm_error_object_with_status_200(facade: Any, server: LocalServer) -> None:
    server.enqueue(RawReply(200, body=VLLM_ERROR))
    client = facade.client(base_url=server.base_url, max_retries=0)
    with pytest.raises(BadRequestError) as caught:
        client.create(model=MODEL, messages=USER)
    assert "max_tokens is too large" in str(caught.value)  # the SDK returns an empty answer


# ---------------------------------------------------------------- reasoning fields


def reasoning_completion(field: str) -> bytes:
    message = {"role": "assistant", "content": "9.8 is larger.", field: "Compare the tenths."}
    return json.dumps(completion_body(message)).encode()


REASONING_SERVERS = {
    # DeepSeek and vLLM: `reasoning_content`; the role once, content null while thinking.
    "deepseek": (
        "reasoning_content",
        [
            chunk({"role": "assistant", "content": None, "reasoning_content": ""}),
            chunk({"content": None, "reasoning_content": "Compare "}),
            chunk({"content": None, "reasoning_content": "the tenths."}),
            chunk({"content": "9.8", "reasoning_content": None}),
            chunk({"content": " is larger."}),
            chunk({"content": ""}, "stop"),
        ],
    ),
    # Ollama: `reasoning`, and the role repeated in every delta.
    "ollama": (
        "reasoning",
        [
            chunk({"role": "assistant", "content": "", "reasoning": "Compare "}),
            chunk({"role": "assistant", "content": "", "reasoning": "the tenths."}),
            chunk({"role": "assistant", "content": "9.8"}),
            chunk({"role": "assistant", "content": " is larger."}),
            chunk({"role": "assistant", "content": ""}, "stop"),
        ],
    ),
    # OpenRouter: `reasoning` (null once the answer starts) and `reasoning_details` pieces.
    "openrouter": (
        "reasoning",
        [
            chunk(
                {
                    "role": "assistant",
                    "content": "",
                    "reasoning": "Compare ",
                    "reasoning_details": [
                        {"type": "reasoning.text", "text": "Compare ", "index": 0}
                    ],
                }
            ),
            chunk(
                {
                    "role": "assistant",
                    "content": "",
                    "reasoning": "the tenths.",
                    "reasoning_details": [
                        {"type": "reasoning.text", "text": "the tenths.", "index": 0}
                    ],
                }
            ),
            chunk({"role": "assistant", "content": "9.8", "reasoning": None}),
            chunk({"role": "assistant", "content": " is larger.", "reasoning": None}),
            chunk(
                {"role": "assistant", "content": ""},
                "stop",
                choice={"native_finish_reason": "stop"},
                provider="OpenAI",
            ),
        ],
    ),
}


@pytest.mark.parametrize("name", list(REASONING_SERVERS))
def test_reasoning_is_kept_and_reachable(facade: Any, server: LocalServer, name: str) -> None:
    field, chunks = REASONING_SERVERS[name]
    response = create(facade, server, RawReply(body=reasoning_completion(field)))
    assert response.choices[0].message.extra[field] == "Compare the tenths."
    read = read_every_way(facade, server, stream_reply([*map(event, chunks), DONE]))
    pieces = [
        c.choices[0].delta.extra.get(field) for c in read.chunks if c.choices[0].delta is not None
    ]
    assert "".join(p for p in pieces if p) == "Compare the tenths."
    message = read.final.choices[0].message
    assert message.role == "assistant"  # Ollama's repeated role is not concatenated
    assert message.content == "9.8 is larger."
    assert message.extra[field] == "Compare the tenths."
    assert read.text == ["9.8", " is larger."]  # reasoning is not answer text
    assert [e.content for e in read.of_type("content.done")] == ["9.8 is larger."]
    if name == "openrouter":
        # One entry per index, as a non-streamed answer has it.
        assert message.extra["reasoning_details"] == [
            {"type": "reasoning.text", "text": "Compare the tenths.", "index": 0}
        ]
        assert read.final.choices[0].extra["native_finish_reason"] == "stop"
        assert read.final.extra["provider"] == "OpenAI"
    # The official helper keeps the reasoning too: chatlib reads at least as much.
    theirs = official_final(server, stream_reply([*map(event, chunks), DONE]))
    assert theirs["choices"][0]["message"][field] == message.extra[field]


@pytest.mark.parametrize("how", HOWS)
def test_openrouter_error_after_the_stream_started_raises(
    facade: Any, server: LocalServer, how: str
) -> None:
    """OpenRouter cannot change the status once tokens went out: it sends a chunk with a
    top-level `error` beside a choice finished with `"error"`. That is a failure, not an
    answer (the official SDK raises too)."""
    failed = chunk(
        {"content": ""},
        "error",
        provider="OpenAI",
        error={"code": "server_error", "message": "Provider disconnected unexpectedly"},
    )
    events = [
        b": OPENROUTER PROCESSING\n\n",
        event(chunk({"role": "assistant", "content": "Par"})),
        event(failed),
        DONE,
    ]
    error = stream_failure(facade, server, stream_reply(events), how)
    assert isinstance(error, InternalServerError)
    assert "Provider disconnected unexpectedly" in str(error)
    assert error.partial is not None and error.partial.text == "Par"


# ---------------------------------------------------------------- Azure, Groq, OpenAI


AZURE_SAFE = {
    "hate": {"filtered": False, "severity": "safe"},
    "violence": {"filtered": False, "severity": "safe"},
}


def azure_stream() -> list[bytes]:
    first = {
        "choices": [],
        "created": 0,
        "id": "",
        "model": "",
        "object": "",
        "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": AZURE_SAFE}],
    }
    return [
        event(first),
        event(chunk({"role": "assistant", "content": ""}, choice={"content_filter_results": {}})),
        event(chunk({"content": "Mild."}, choice={"content_filter_results": AZURE_SAFE})),
        event(chunk({}, "stop", choice={"content_filter_results": {}})),
        # The asynchronous filter's frame: blank header, a choice without delta.
        event(
            {
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": None,
                        "content_filter_offsets": {
                            "check_offset": 0,
                            "start_offset": 0,
                            "end_offset": 5,
                        },
                        "content_filter_results": {},
                    }
                ],
                "created": 0,
                "id": "",
                "model": "",
                "object": "",
            }
        ),
        DONE,
    ]


def test_azure_stream_keeps_ids_and_filter_results(facade: Any, server: LocalServer) -> None:
    read = read_every_way(facade, server, stream_reply(azure_stream()))
    assert read.chunks[0].choices == [] and read.chunks[0].id == ""
    assert read.final.id == "chatcmpl-p1" and read.final.model == MODEL  # not blanked
    assert read.final.created == 1741570000
    assert read.final.choices[0].finish_reason == "stop"
    assert read.final.text == "Mild." and read.text == ["Mild."]
    prompt = read.final.extra["prompt_filter_results"]
    assert prompt[0]["content_filter_results"] == AZURE_SAFE
    # The last results that said something, not the `{}` of the closing chunk.
    assert read.final.choices[0].extra["content_filter_results"] == AZURE_SAFE
    assert read.final.choices[0].extra["content_filter_offsets"]["end_offset"] == 5
    assert len(read.chunks) == 5
    assert len(read.of_type("chunk")) == 3  # Azure's filter frames are not chunk events
    theirs = official_final(server, stream_reply(azure_stream()))
    assert "content_filter_results" in theirs["choices"][0]


def test_groq_usage_under_x_groq(facade: Any, server: LocalServer) -> None:
    x_usage = {
        "queue_time": 0.02,
        "prompt_tokens": 12,
        "prompt_time": 0.001,
        "completion_tokens": 2,
        "completion_time": 0.004,
        "total_tokens": 14,
        "total_time": 0.005,
    }
    events = [
        event(chunk({"role": "assistant", "content": ""}, x_groq={"id": "req_01"})),
        event(chunk({"content": "Mild."})),
        event(chunk({}, "stop", x_groq={"id": "req_01", "usage": x_usage})),
        DONE,
    ]
    read = read_every_way(facade, server, stream_reply(events))
    usage = read.final.usage
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (12, 2, 14)
    assert usage.extra["queue_time"] == 0.02
    assert read.final.extra["x_groq"]["id"] == "req_01"
    assert read.final.text == "Mild."
    theirs = official_final(server, stream_reply(events))  # it keeps `x_groq`, not the usage
    assert theirs["x_groq"]["id"] == read.final.extra["x_groq"]["id"]


@pytest.mark.parametrize(
    "done",
    [
        b"data: [DONE]\n\n",
        b"data:[DONE]\n\n",
        b"data: [DONE]\r\n\r\n",
        b"data: [DONE]\n",
        b"data: [DONE]",
        b"data: [DONE] \n\n",
    ],
    ids=["openai", "no space", "crlf", "one newline", "no newline", "trailing space"],
)
def test_every_done_variant_ends_the_stream_cleanly(
    facade: Any, server: LocalServer, done: bytes
) -> None:
    events = [
        event(chunk({"role": "assistant", "content": ""})),
        event(chunk({"content": "Hi"}, "stop")),
        done,
    ]
    read = read_every_way(facade, server, stream_reply(events))
    assert read.final.text == "Hi" and read.final.choices[0].finish_reason == "stop"


def test_a_stream_cut_before_done_raises_with_what_arrived(
    facade: Any, server: LocalServer
) -> None:
    events = [event(chunk({"role": "assistant", "content": ""})), event(chunk({"content": "Hi"}))]
    for how in HOWS:
        error = stream_failure(facade, server, stream_reply(events), how)
        assert isinstance(error, IncompleteStreamError), how
        assert error.partial is not None and error.partial.text == "Hi"


def test_openai_usage_chunk_with_empty_choices(facade: Any, server: LocalServer) -> None:
    usage = {
        "prompt_tokens": 9,
        "completion_tokens": 1,
        "total_tokens": 10,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
    }
    events = [
        event(chunk({"role": "assistant", "content": "", "refusal": None}, obfuscation="x1")),
        event(chunk({"content": "Hi"}, obfuscation="y2")),
        event(chunk({}, "stop", obfuscation="z3")),
        event({**HEAD, "model": MODEL, "choices": [], "usage": usage, "obfuscation": "w4"}),
        DONE,
    ]
    read = read_every_way(
        facade, server, stream_reply(events), stream_options={"include_usage": True}
    )
    assert read.final.usage is not None
    assert read.final.usage.to_dict() == usage
    assert read.final.text == "Hi" and read.text == ["Hi"]
    assert not read.final.extra  # `obfuscation` is padding, not part of the answer


@pytest.mark.parametrize("streamed", [False, True], ids=["create", "stream"])
def test_openai_insufficient_quota_is_not_retried_but_a_rate_limit_is(
    facade: Any, server: LocalServer, streamed: bool
) -> None:
    now = {"retry-after-ms": "0", "x-request-id": "req_quota"}
    server.enqueue(
        ErrorReply(429, "You exceeded your current quota", code="insufficient_quota", headers=now),
        ErrorReply(429, "Rate limit reached", code="rate_limit_exceeded", headers=now),
        Reply("Hi"),
    )
    client = facade.client(base_url=server.base_url, max_retries=2)

    def call() -> str:
        if streamed:
            return "".join(c.text for c in client.stream_all(model=MODEL, messages=USER))
        return str(client.create(model=MODEL, messages=USER).text)

    with pytest.raises(InsufficientQuotaError) as caught:
        call()
    assert isinstance(caught.value, RateLimitError)
    assert caught.value.request_id == "req_quota"
    assert len(server.requests) == 1  # not retried: it would not succeed
    assert call() == "Hi"  # a plain rate limit is retried
    assert len(server.requests) == 3


MODERATION = {
    "input": {
        "type": "moderation_results",
        "model": "omni-moderation-latest",
        "results": [
            {
                "type": "moderation_result",
                "model": "omni-moderation-latest",
                "flagged": False,
                "categories": {"violence": False},
                "category_scores": {"violence": 0.001},
                "category_applied_input_types": {"violence": ["text"]},
            }
        ],
    },
    "output": {"type": "error", "code": "moderation_unavailable", "message": "try later"},
}


def test_openai_moderation_chunk_reaches_the_completion(facade: Any, server: LocalServer) -> None:
    events = [
        event(chunk({"role": "assistant", "content": ""})),
        event(chunk({"content": "Hi"}, "stop")),
        event({**HEAD, "model": MODEL, "choices": [], "moderation": MODERATION}),
        DONE,
    ]
    read = read_every_way(
        facade, server, stream_reply(events), moderation={"model": "omni-moderation-latest"}
    )
    assert read.chunks[-1].moderation == MODERATION
    assert read.final.moderation == MODERATION  # as a non-streamed answer has it
    assert read.final.text == "Hi"
    theirs = official_final(server, stream_reply(events))  # the official helper keeps it too
    assert theirs["moderation"]["output"]["code"] == read.final.moderation["output"]["code"]
