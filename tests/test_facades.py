"""SyncChat and AsyncChat end to end: the same test body runs for both facades, against the
bundled server over real loopback HTTP, with responses written in 7-byte pieces.

Every chat-completions request body the SDK sends in this module is checked against the
``CreateChatCompletionRequest`` schema of the OpenAPI document (see the autouse fixture).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
import requests

import chatlib
from chatlib import (
    ChatMessage,
    CreateChatCompletionChunk,
    CreateChatCompletionRequest,
    CreateChatCompletionResponse,
    FinishReason,
    Timeout,
    create_chat_completion,
    create_chat_completion_stream,
)
from chatlib.errors import (
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    InsufficientQuotaError,
    InternalServerError,
    InvalidArgumentError,
    MissingAPIKeyError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    UnprocessableEntityError,
)
from chatlib.testing import ErrorReply, LocalServer, RawReply, Reply

MODEL = "gpt-4o-mini"
USER = [{"role": "user", "content": "Hello there"}]
NO_WAIT = {"retry-after-ms": "0"}  # retry at once: the server's own word beats the backoff
FAST = Timeout(connect=2, read=0.3, total=3)


@pytest.fixture(autouse=True)
def _every_sent_body_matches_the_openapi_schema(
    server: LocalServer, chat_request_validator: Any
) -> Iterator[None]:
    yield
    for record in server.requests:
        if record.method == "POST" and record.path == "/v1/chat/completions":
            chat_request_validator.validate(record.json())


def last_body(server: LocalServer) -> dict[str, Any]:
    body: dict[str, Any] = server.requests[-1].json()
    return body


def text_of(chunks: list[CreateChatCompletionChunk]) -> str:
    return "".join(chunk.text for chunk in chunks)


def text_pieces(facade: Any, stream: Any) -> list[str]:
    """``stream.text_stream`` read to the end (``for`` or ``async for``)."""
    if facade.is_async:

        async def read() -> list[str]:
            return [text async for text in stream.text_stream]

        return facade.run(read())  # type: ignore[no-any-return]
    return list(stream.text_stream)


def read_all(facade: Any, stream: Any) -> list[CreateChatCompletionChunk]:
    """Iterate a raw ChatStream / AsyncChatStream to the end."""
    if facade.is_async:

        async def read() -> list[CreateChatCompletionChunk]:
            return [chunk async for chunk in stream]

        return facade.run(read())  # type: ignore[no-any-return]
    return list(stream)


def first_chunk_in_a_with_block(facade: Any, client: Any, **params: Any) -> Any:
    """Open a stream in a ``with``/``async with`` block and leave it after the first chunk."""
    if facade.is_async:

        async def leave_early() -> Any:
            async with client.raw.stream(**params) as stream:
                async for chunk in stream:
                    return chunk, stream
            raise AssertionError("the stream yielded nothing")

        return facade.run(leave_early())
    with client.raw.stream(**params) as stream:
        for chunk in stream:
            return chunk, stream
    raise AssertionError("the stream yielded nothing")


def sse(obj: Any) -> bytes:
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


def pool_of_one(facade: Any) -> dict[str, int]:
    """The constructor argument that limits a client to one connection."""
    return {"pool_maxsize": 1}


# ---------------------------------------------------------------- create(): what goes out


def test_create_with_keywords_and_dict_messages(facade: Any, server: LocalServer) -> None:
    client = facade.client(base_url=server.base_url)
    response = client.create(model=MODEL, messages=USER)
    assert isinstance(response, CreateChatCompletionResponse)
    assert response.text == "Echo: Hello there"
    assert response.model == MODEL
    assert response.choices[0].finish_reason == FinishReason.STOP
    assert last_body(server) == {"model": MODEL, "messages": USER}
    assert server.requests[-1].path == "/v1/chat/completions"


def test_create_with_chat_message_models(facade: Any, server: LocalServer) -> None:
    client = facade.client(base_url=server.base_url)
    response = client.create(
        model=MODEL, messages=[ChatMessage.system("Be terse."), ChatMessage.user("Hi")]
    )
    assert response.text == "Echo: Hi"
    assert last_body(server)["messages"] == [
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": "Hi"},
    ]


def test_create_with_a_request_object(facade: Any, server: LocalServer) -> None:
    client = facade.client(base_url=server.base_url)
    request = CreateChatCompletionRequest(
        model=MODEL, messages=[ChatMessage.user("Hi")], temperature=0.2, max_tokens=20
    )
    response = client.create(request)
    assert response.text == "Echo: Hi"
    assert last_body(server) == {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Hi"}],
        "temperature": 0.2,
        "max_tokens": 20,
    }


def test_a_request_object_and_keywords_send_the_same_body(facade: Any, server: LocalServer) -> None:
    client = facade.client(base_url=server.base_url)
    params: dict[str, Any] = {"model": MODEL, "messages": USER, "top_p": 0.5, "stop": ["\n"]}
    client.create(**params)
    client.create(CreateChatCompletionRequest(**params))
    first, second = (record.json() for record in server.requests)
    assert first == second


def test_falsy_values_that_were_set_are_sent(facade: Any, server: LocalServer) -> None:
    client = facade.client(base_url=server.base_url)
    client.create(
        model=MODEL,
        messages=USER,
        temperature=0,
        seed=0,
        logprobs=False,
        n=1,
        presence_penalty=0.0,
        store=False,
    )
    body = last_body(server)
    assert body == {
        "model": MODEL,
        "messages": USER,
        "temperature": 0,
        "seed": 0,
        "logprobs": False,
        "n": 1,
        "presence_penalty": 0.0,
        "store": False,
    }


def test_parameters_not_given_are_never_sent(facade: Any, server: LocalServer) -> None:
    client = facade.client(base_url=server.base_url)
    client.create(model=MODEL, messages=USER)
    client.create(CreateChatCompletionRequest(model=MODEL, messages=USER))
    for record in server.requests:
        assert set(record.json()) == {"model", "messages"}


def test_extra_body_is_merged_at_the_top_level(facade: Any, server: LocalServer) -> None:
    client = facade.client(base_url=server.base_url)
    client.create(
        model=MODEL,
        messages=USER,
        temperature=0.5,
        extra_body={"top_k": 40, "chat_template_kwargs": {"enable_thinking": False}},
    )
    body = last_body(server)
    assert body["top_k"] == 40
    assert body["chat_template_kwargs"] == {"enable_thinking": False}
    assert body["temperature"] == 0.5
    assert not {"extra_body", "extra_headers", "extra_query"} & set(body)


def test_extra_headers_are_sent_and_extra_query_goes_in_the_url(
    facade: Any, server: LocalServer
) -> None:
    client = facade.client(base_url=server.base_url)
    client.create(
        model=MODEL,
        messages=USER,
        extra_headers={"X-Trace-Id": "trace-1"},
        extra_query={"api-version": "2024-10-21"},
    )
    record = server.requests[-1]
    assert record.headers["x-trace-id"] == "trace-1"
    assert record.query == {"api-version": "2024-10-21"}
    assert record.path == "/v1/chat/completions"
    assert set(record.json()) == {"model", "messages"}


def test_default_headers_and_default_query_go_on_every_request(
    facade: Any, server: LocalServer
) -> None:
    client = facade.client(
        base_url=server.base_url,
        default_headers={"X-Team": "search", "X-Env": "test"},
        default_query={"api-version": "2024-10-21"},
    )
    client.create(model=MODEL, messages=USER)
    client.stream_all(
        model=MODEL,
        messages=USER,
        extra_headers={"X-Team": "ads"},
        extra_query={"debug": "1"},
    )
    plain, overridden = server.requests
    assert plain.headers["x-team"] == "search"
    assert plain.headers["x-env"] == "test"
    assert plain.query == {"api-version": "2024-10-21"}
    assert overridden.headers["x-team"] == "ads"  # the per-call value wins
    assert overridden.headers["x-env"] == "test"
    assert overridden.query == {"api-version": "2024-10-21", "debug": "1"}


def test_the_api_key_is_sent_as_a_bearer_token(facade: Any, server: LocalServer) -> None:
    client = facade.client(base_url=server.base_url, api_key="sk-test-123")
    client.create(model=MODEL, messages=USER)
    client.stream_all(model=MODEL, messages=USER)
    for record in server.requests:
        assert record.headers["authorization"] == "Bearer sk-test-123"


def test_organization_and_project_headers_from_arguments(facade: Any, server: LocalServer) -> None:
    client = facade.client(base_url=server.base_url, organization="org-1", project="proj-1")
    client.create(model=MODEL, messages=USER)
    headers = server.requests[-1].headers
    assert headers["openai-organization"] == "org-1"
    assert headers["openai-project"] == "proj-1"


def test_organization_and_project_headers_from_the_environment(
    facade: Any, server: LocalServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_ORG_ID", "org-env")
    monkeypatch.setenv("OPENAI_PROJECT_ID", "proj-env")
    client = facade.client(base_url=server.base_url)
    client.create(model=MODEL, messages=USER)
    headers = server.requests[-1].headers
    assert headers["openai-organization"] == "org-env"
    assert headers["openai-project"] == "proj-env"


def test_no_organization_or_project_header_unless_configured(
    facade: Any, server: LocalServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_ORG_ID", raising=False)
    monkeypatch.delenv("OPENAI_PROJECT_ID", raising=False)
    client = facade.client(base_url=server.base_url)
    client.create(model=MODEL, messages=USER)
    headers = server.requests[-1].headers
    assert "openai-organization" not in headers
    assert "openai-project" not in headers


def test_user_agent_names_chatlib_and_its_version(facade: Any, server: LocalServer) -> None:
    client = facade.client(base_url=server.base_url)
    client.create(model=MODEL, messages=USER)
    client.stream_all(model=MODEL, messages=USER)
    for record in server.requests:
        assert record.headers["user-agent"].startswith(f"chatlib/{chatlib.__version__} ")


def test_json_content_type_and_accept_headers(facade: Any, server: LocalServer) -> None:
    client = facade.client(base_url=server.base_url)
    client.create(model=MODEL, messages=USER)
    client.stream_all(model=MODEL, messages=USER)
    plain, streamed = server.requests
    assert plain.headers["content-type"] == "application/json"
    assert plain.headers["accept"] == "application/json"
    assert streamed.headers["accept"] == "text/event-stream"


def test_idempotency_key_is_kept_across_retries_and_new_for_each_call(
    facade: Any, server: LocalServer
) -> None:
    client = facade.client(base_url=server.base_url, max_retries=2)
    server.enqueue(ErrorReply(500, headers=NO_WAIT), ErrorReply(503, headers=NO_WAIT))
    assert client.create(model=MODEL, messages=USER).text == "Echo: Hello there"
    client.create(model=MODEL, messages=USER)
    records = server.requests
    assert len(records) == 4
    keys = [record.headers["idempotency-key"] for record in records]
    assert keys[0] == keys[1] == keys[2]  # three attempts of one call
    assert keys[3] != keys[0]  # a new call
    assert records[0].body == records[1].body == records[2].body


def test_idempotency_key_is_kept_when_a_stream_is_retried(facade: Any, server: LocalServer) -> None:
    client = facade.client(base_url=server.base_url, max_retries=1)
    server.enqueue(ErrorReply(429, headers=NO_WAIT))
    assert text_of(client.stream_all(model=MODEL, messages=USER)) == "Echo: Hello there"
    first, second = server.requests
    assert first.headers["idempotency-key"] == second.headers["idempotency-key"]
    assert first.json() == second.json()


# ---------------------------------------------------------------- streaming


def test_stream_sends_stream_true_and_yields_the_answer_in_pieces(
    facade: Any, server: LocalServer
) -> None:
    client = facade.client(base_url=server.base_url)
    messages = [{"role": "user", "content": "one two three four"}]
    chunks = client.stream_all(model=MODEL, messages=messages)
    assert last_body(server) == {"model": MODEL, "messages": messages, "stream": True}
    assert text_of(chunks) == "Echo: one two three four"
    assert sum(1 for chunk in chunks if chunk.text) > 1
    assert all(isinstance(chunk, CreateChatCompletionChunk) for chunk in chunks)
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_create_with_stream_true_behaves_like_stream(facade: Any, server: LocalServer) -> None:
    client = facade.client(base_url=server.base_url)
    stream = client.create(model=MODEL, messages=USER, stream=True)
    chunks = stream.collect()
    assert last_body(server)["stream"] is True
    assert text_of(chunks) == "Echo: Hello there"
    assert stream.accumulated.text == "Echo: Hello there"


def test_a_request_object_with_stream_true_is_streamed(facade: Any, server: LocalServer) -> None:
    client = facade.client(base_url=server.base_url)
    stream = client.create(CreateChatCompletionRequest(model=MODEL, messages=USER, stream=True))
    assert text_of(stream.collect()) == "Echo: Hello there"
    assert last_body(server)["stream"] is True


def test_create_with_stream_false_is_not_streamed(facade: Any, server: LocalServer) -> None:
    client = facade.client(base_url=server.base_url)
    response = client.create(model=MODEL, messages=USER, stream=False)
    assert isinstance(response, CreateChatCompletionResponse)
    assert last_body(server)["stream"] is False


def test_include_usage_puts_the_usage_on_accumulated(facade: Any, server: LocalServer) -> None:
    client = facade.client(base_url=server.base_url)
    stream = client.stream(model=MODEL, messages=USER, stream_options={"include_usage": True})
    chunks = stream.collect()
    assert last_body(server)["stream_options"] == {"include_usage": True}
    assert chunks[-1].choices == []  # the usage-only chunk
    usage = stream.accumulated.usage
    assert usage is not None
    assert usage.completion_tokens == 3  # "Echo: Hello there"
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_without_include_usage_accumulated_has_no_usage(facade: Any, server: LocalServer) -> None:
    client = facade.client(base_url=server.base_url)
    stream = client.stream(model=MODEL, messages=USER)
    stream.collect()
    assert stream.accumulated.usage is None


def test_accumulated_equals_the_non_streamed_answer(facade: Any, server: LocalServer) -> None:
    client = facade.client(base_url=server.base_url)
    plain = client.create(model=MODEL, messages=USER)
    stream = client.stream(model=MODEL, messages=USER)
    stream.collect()
    streamed = stream.accumulated
    assert streamed.text == plain.text
    assert streamed.model == plain.model == MODEL
    assert streamed.system_fingerprint == plain.system_fingerprint
    choice = streamed.choices[0]
    assert choice.message is not None
    assert choice.message.role == "assistant"
    assert choice.finish_reason == plain.choices[0].finish_reason == "stop"


@pytest.fixture(scope="module")
def whole_server() -> Iterator[LocalServer]:
    """A server that writes each body in one piece (the client gets several events at once)."""
    with LocalServer() as server:
        yield server


def test_accumulated_follows_the_chunks_handed_out(
    facade: Any, whole_server: LocalServer, chat_request_validator: Any
) -> None:
    head = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    body = b"".join(
        sse({**head, "choices": [{"index": 0, "delta": {"content": word}}]})
        for word in ("one ", "two ", "three")
    )
    whole_server.clear()
    whole_server.enqueue(
        RawReply(body=body + b"data: [DONE]\n\n", content_type="text/event-stream")
    )
    client = facade.client(base_url=whole_server.base_url)
    stream = client.stream(model=MODEL, messages=USER)
    seen = []
    while stream.next() is not None:
        seen.append(stream.accumulated.text)
    chat_request_validator.validate(whole_server.requests[-1].json())
    assert seen == ["one ", "one two ", "one two three"]


def test_get_final_completion_reads_the_rest_of_the_stream(
    facade: Any, server: LocalServer
) -> None:
    client = facade.client(base_url=server.base_url)
    stream = client.stream(model=MODEL, messages=USER)
    assert stream.next() is not None
    final = facade.call(stream.raw.get_final_completion)
    assert isinstance(final, CreateChatCompletionResponse)
    assert final.text == "Echo: Hello there"
    assert stream.next() is None


def test_text_stream_yields_only_the_text(facade: Any, server: LocalServer) -> None:
    client = facade.client(base_url=server.base_url)
    pieces = text_pieces(facade, client.stream(model=MODEL, messages=USER).raw)
    assert "".join(pieces) == "Echo: Hello there"
    assert len(pieces) == 3  # word by word; the role-only and finish chunks are skipped
    assert all(pieces)


def test_stream_as_a_context_manager_and_an_iterator(facade: Any, server: LocalServer) -> None:
    client = facade.client(base_url=server.base_url)
    if facade.is_async:

        async def use() -> tuple[list[CreateChatCompletionChunk], Any]:
            async with client.raw.stream(model=MODEL, messages=USER) as stream:
                assert stream.request_id is not None
                assert stream.request_id.startswith("req_")
                return [chunk async for chunk in stream], stream

        chunks, raw = facade.run(use())
    else:
        with client.raw.stream(model=MODEL, messages=USER) as raw:
            assert iter(raw) is raw
            assert raw.request_id is not None
            assert raw.request_id.startswith("req_")
            chunks = list(raw)
    assert text_of(chunks) == "Echo: Hello there"
    assert read_all(facade, raw) == []  # exhausted and closed


def test_breaking_out_of_a_stream_frees_the_only_connection(
    facade: Any, server: LocalServer
) -> None:
    client = facade.client(base_url=server.base_url, timeout=FAST, **pool_of_one(facade))
    long_prompt = [{"role": "user", "content": " ".join(["word"] * 50)}]
    for _ in range(3):
        chunk, stream = first_chunk_in_a_with_block(
            facade, client, model=MODEL, messages=long_prompt
        )
        assert chunk.choices[0].delta.role == "assistant"
        assert read_all(facade, stream) == []  # leaving the block closed it
        assert client.create(model=MODEL, messages=USER).text == "Echo: Hello there"
    assert len(server.requests) == 6


def test_closing_a_stream_early_frees_the_only_connection(facade: Any, server: LocalServer) -> None:
    client = facade.client(base_url=server.base_url, timeout=FAST, **pool_of_one(facade))
    for _ in range(3):
        stream = client.stream(model=MODEL, messages=[{"role": "user", "content": "a b c d e"}])
        assert stream.next() is not None
        stream.close()
        stream.close()  # twice is fine
        assert stream.next() is None
        assert text_of(client.stream_all(model=MODEL, messages=USER)) == "Echo: Hello there"


def test_closing_a_stream_before_reading_it(facade: Any, server: LocalServer) -> None:
    client = facade.client(base_url=server.base_url)
    stream = client.stream(model=MODEL, messages=USER)
    stream.close()
    # AsyncChat sends when iteration starts; SyncChat sent when stream() returned.
    assert len(server.requests) == (0 if facade.is_async else 1)
    assert stream.next() is None


# ---------------------------------------------------------------- n, tool calls, extras


def test_n_2_returns_two_choices(facade: Any, server: LocalServer) -> None:
    client = facade.client(base_url=server.base_url)
    response = client.create(model=MODEL, messages=USER, n=2)
    assert last_body(server)["n"] == 2
    assert [choice.index for choice in response.choices] == [0, 1]
    assert all(
        c.message is not None and c.message.text == "Echo: Hello there" for c in response.choices
    )


def test_n_2_streamed_choices_are_accumulated_separately(facade: Any, server: LocalServer) -> None:
    client = facade.client(base_url=server.base_url)
    stream = client.stream(model=MODEL, messages=USER, n=2)
    chunks = stream.collect()
    assert {choice.index for chunk in chunks for choice in chunk.choices} == {0, 1}
    accumulated = stream.accumulated
    assert [choice.index for choice in accumulated.choices] == [0, 1]
    for choice in accumulated.choices:
        assert choice.message is not None
        assert choice.message.text == "Echo: Hello there"
        assert choice.finish_reason == "stop"
    assert text_of(chunks) == "Echo: Hello there"  # chunk.text follows choice 0 only


TOOL_CALLS = [
    {"id": "call_weather", "name": "get_weather", "arguments": {"city": "Paris", "unit": "C"}},
    {"id": "call_time", "name": "get_time", "arguments": {"timezone": "Europe/Paris"}},
]
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    },
    {"type": "function", "function": {"name": "get_time"}},
]


def test_streamed_tool_calls_are_accumulated(facade: Any, server: LocalServer) -> None:
    client = facade.client(base_url=server.base_url)
    server.enqueue(Reply(tool_calls=TOOL_CALLS))
    stream = client.stream(model=MODEL, messages=USER, tools=TOOLS, tool_choice="auto")
    chunks = stream.collect()
    fragments = [
        c for c in chunks if c.choices and c.choices[0].delta and c.choices[0].delta.tool_calls
    ]
    assert len(fragments) > 4  # names once, then the arguments in small pieces
    assert last_body(server)["tools"] == TOOLS
    choice = stream.accumulated.choices[0]
    assert choice.finish_reason == FinishReason.TOOL_CALLS
    assert choice.message is not None
    calls = choice.message.tool_calls
    assert calls is not None
    assert [call.id for call in calls] == ["call_weather", "call_time"]
    assert [call.function.name for call in calls] == ["get_weather", "get_time"]
    assert json.loads(calls[0].function.arguments) == {"city": "Paris", "unit": "C"}
    assert json.loads(calls[1].function.arguments) == {"timezone": "Europe/Paris"}


def test_tool_calls_in_a_non_streamed_completion(facade: Any, server: LocalServer) -> None:
    client = facade.client(base_url=server.base_url)
    server.enqueue(Reply(tool_calls=TOOL_CALLS[:1]))
    response = client.create(model=MODEL, messages=USER, tools=TOOLS)
    choice = response.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message is not None
    assert choice.message.content is None
    calls = choice.message.tool_calls
    assert calls is not None
    assert calls[0].function.name == "get_weather"
    assert json.loads(calls[0].function.arguments) == {"city": "Paris", "unit": "C"}


def test_a_tool_call_answer_can_be_sent_back(facade: Any, server: LocalServer) -> None:
    client = facade.client(base_url=server.base_url)
    server.enqueue(Reply(tool_calls=TOOL_CALLS[:1]))
    stream = client.stream(model=MODEL, messages=USER, tools=TOOLS)
    stream.collect()
    assistant = stream.accumulated.choices[0].message
    assert assistant is not None
    history = [*USER, assistant, ChatMessage.tool('{"temp": 21}', tool_call_id="call_weather")]
    response = client.create(model=MODEL, messages=history, tools=TOOLS)
    assert response.choices[0].finish_reason == "stop"
    sent = last_body(server)["messages"]
    assert sent[1]["role"] == "assistant"
    assert sent[1]["tool_calls"][0]["id"] == "call_weather"
    assert sent[1]["tool_calls"][0]["function"]["name"] == "get_weather"
    assert sent[2] == {"role": "tool", "content": '{"temp": 21}', "tool_call_id": "call_weather"}


def test_reasoning_content_reaches_delta_extra_and_accumulated(
    facade: Any, server: LocalServer
) -> None:
    client = facade.client(base_url=server.base_url)
    server.enqueue(Reply("The answer.", reasoning_content="Let me think hard."))
    stream = client.stream(model=MODEL, messages=USER)
    chunks = stream.collect()
    reasoning = "".join(
        choice.delta.extra.get("reasoning_content", "")
        for chunk in chunks
        for choice in chunk.choices
        if choice.delta is not None
    )
    assert reasoning == "Let me think hard."
    message = stream.accumulated.choices[0].message
    assert message is not None
    assert message.text == "The answer."
    assert message.extra["reasoning_content"] == "Let me think hard."


def test_unknown_fields_of_a_completion_are_kept_in_extra(facade: Any, server: LocalServer) -> None:
    body = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "vendor-model",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "Hi",
                    "reasoning_content": "short thought",
                },
                "finish_reason": "end_of_turn",
                "stop_reason": 128009,
            }
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2, "queue_time": 0.5},
        "x_vendor": {"region": "eu"},
    }
    server.enqueue(RawReply(body=json.dumps(body).encode()))
    client = facade.client(base_url=server.base_url)
    response = client.create(model=MODEL, messages=USER)
    assert response.text == "Hi"
    assert response.extra["x_vendor"] == {"region": "eu"}
    choice = response.choices[0]
    assert choice.finish_reason == "end_of_turn"
    assert isinstance(choice.finish_reason, FinishReason)
    assert choice.extra["stop_reason"] == 128009
    assert choice.message is not None
    assert choice.message.extra["reasoning_content"] == "short thought"
    assert response.usage is not None
    assert response.usage.extra["queue_time"] == 0.5


def test_unknown_fields_of_stream_chunks_are_kept_in_extra(
    facade: Any, server: LocalServer
) -> None:
    head = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    events = [
        sse({**head, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}),
        sse({**head, "choices": [{"index": 0, "delta": {"reasoning_content": "Hmm, "}}]}),
        sse({**head, "choices": [{"index": 0, "delta": {"reasoning_content": "yes."}}]}),
        sse({**head, "choices": [{"index": 0, "delta": {"content": "Yes"}}]}),
        sse(
            {
                **head,
                "choices": [{"index": 0, "delta": {}, "finish_reason": "eos_token"}],
                "x_groq": {"id": "req_1"},
            }
        ),
        b"data: [DONE]\n\n",
    ]
    server.enqueue(RawReply(body=events, content_type="text/event-stream"))
    client = facade.client(base_url=server.base_url)
    stream = client.stream(model=MODEL, messages=USER)
    chunks = stream.collect()
    assert len(chunks) == 5
    assert chunks[1].choices[0].delta is not None
    assert chunks[1].choices[0].delta.extra == {"reasoning_content": "Hmm, "}
    assert chunks[4].extra["x_groq"] == {"id": "req_1"}
    choice = stream.accumulated.choices[0]
    assert choice.finish_reason == "eos_token"
    assert choice.message is not None
    assert choice.message.text == "Yes"
    assert choice.message.extra["reasoning_content"] == "Hmm, yes."


# ---------------------------------------------------------------- errors


STATUS_CLASSES = [
    (400, BadRequestError),
    (401, AuthenticationError),
    (403, PermissionDeniedError),
    (404, NotFoundError),
    (409, ConflictError),
    (422, UnprocessableEntityError),
    (429, RateLimitError),
    (500, InternalServerError),
]


@pytest.mark.parametrize(("status", "cls"), STATUS_CLASSES)
def test_error_status_maps_to_its_exception(
    facade: Any, server: LocalServer, status: int, cls: type[APIStatusError]
) -> None:
    server.enqueue(
        ErrorReply(
            status,
            "The scripted failure",
            code="scripted_code",
            param="messages",
            headers={"x-request-id": "req_0123abc"},
        )
    )
    client = facade.client(base_url=server.base_url, max_retries=0)
    with pytest.raises(cls) as caught:
        client.create(model=MODEL, messages=USER)
    exc = caught.value
    assert type(exc) is cls
    assert exc.status_code == status
    assert exc.request_id == "req_0123abc"
    assert exc.code == "scripted_code"
    assert exc.param == "messages"
    assert "The scripted failure" in exc.message
    assert str(exc) == exc.message
    assert str(status) in str(exc)
    assert isinstance(exc.body, dict)
    assert exc.body["message"] == "The scripted failure"  # the error object, as openai has it
    assert exc.headers["x-request-id"] == "req_0123abc"
    assert len(server.requests) == 1  # max_retries=0: no second attempt


@pytest.mark.parametrize(
    ("status", "cls"),
    [(401, AuthenticationError), (429, RateLimitError), (503, InternalServerError)],
)
def test_error_status_of_a_stream_raises_when_it_opens(
    facade: Any, server: LocalServer, status: int, cls: type[APIStatusError]
) -> None:
    server.enqueue(ErrorReply(status, "No stream for you"))
    client = facade.client(base_url=server.base_url, max_retries=0)
    with pytest.raises(cls) as caught:
        client.stream(model=MODEL, messages=USER).next()
    assert caught.value.status_code == status
    assert "No stream for you" in str(caught.value)
    assert caught.value.request_id is not None


def test_retryable_errors_are_retried_until_success(facade: Any, server: LocalServer) -> None:
    server.enqueue(ErrorReply(429, headers=NO_WAIT), ErrorReply(502, headers=NO_WAIT))
    client = facade.client(base_url=server.base_url, max_retries=2)
    assert client.create(model=MODEL, messages=USER).text == "Echo: Hello there"
    assert len(server.requests) == 3


def test_exhausted_retries_raise_the_last_error(facade: Any, server: LocalServer) -> None:
    server.enqueue(
        ErrorReply(500, headers=NO_WAIT),
        ErrorReply(502, headers=NO_WAIT),
        ErrorReply(503, "still down", headers=NO_WAIT),
    )
    client = facade.client(base_url=server.base_url, max_retries=2)
    with pytest.raises(InternalServerError) as caught:
        client.create(model=MODEL, messages=USER)
    assert caught.value.status_code == 503
    assert "still down" in str(caught.value)
    assert len(server.requests) == 3


def test_insufficient_quota_is_not_retried(facade: Any, server: LocalServer) -> None:
    server.enqueue(ErrorReply(429, "Top up", code="insufficient_quota", headers=NO_WAIT))
    client = facade.client(base_url=server.base_url, max_retries=2)
    with pytest.raises(InsufficientQuotaError) as caught:
        client.create(model=MODEL, messages=USER)
    assert isinstance(caught.value, RateLimitError)
    assert len(server.requests) == 1


HTML_PAGE = (
    b"<!DOCTYPE html>\n<html>\n<head><title>502 Bad Gateway</title></head>\n"
    b"<body>\n<center><h1>502 Bad Gateway</h1></center>\n<hr><center>nginx</center>\n"
    b"</body>\n</html>\n"
)


def test_an_html_error_page_gives_a_readable_message(facade: Any, server: LocalServer) -> None:
    server.enqueue(RawReply(502, body=HTML_PAGE, content_type="text/html"))
    client = facade.client(base_url=server.base_url, max_retries=0)
    with pytest.raises(InternalServerError) as caught:
        client.create(model=MODEL, messages=USER)
    exc = caught.value
    assert exc.status_code == 502
    assert "502 Bad Gateway" in str(exc)
    assert "<" not in str(exc)
    assert "\n" not in str(exc)
    assert exc.raw_body == HTML_PAGE


def test_a_plain_text_error_body_gives_a_readable_message(facade: Any, server: LocalServer) -> None:
    text = b"upstream connect error or disconnect/reset before headers"
    server.enqueue(RawReply(503, body=text, content_type="text/plain"))
    client = facade.client(base_url=server.base_url, max_retries=0)
    with pytest.raises(InternalServerError) as caught:
        client.stream(model=MODEL, messages=USER).next()
    exc = caught.value
    assert exc.status_code == 503
    assert text.decode() in str(exc)
    assert exc.body == text.decode()


@pytest.fixture(scope="module")
def auth_server() -> Iterator[LocalServer]:
    with LocalServer(api_key="sk-right-key-0000", write_size=7) as server:
        yield server


def test_a_wrong_api_key_raises_authentication_error_without_echoing_it(
    facade: Any, auth_server: LocalServer, chat_request_validator: Any
) -> None:
    auth_server.clear()
    wrong = facade.client(base_url=auth_server.base_url, api_key="sk-wrong-key-9876543")
    with pytest.raises(AuthenticationError) as caught:
        wrong.create(model=MODEL, messages=USER)
    exc = caught.value
    assert exc.status_code == 401
    assert exc.code == "invalid_api_key"
    assert "sk-wrong-key-9876543" not in str(exc)
    assert "sk-wrong-key-9876543" not in repr(exc)
    assert len(auth_server.requests) == 1  # a 401 is not retried
    right = facade.client(base_url=auth_server.base_url, api_key="sk-right-key-0000")
    assert right.create(model=MODEL, messages=USER).text == "Echo: Hello there"
    for record in auth_server.requests:
        chat_request_validator.validate(record.json())


def test_no_api_key_for_a_server_that_wants_one(
    facade: Any, auth_server: LocalServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    client = facade.client(base_url=auth_server.base_url, api_key=None)
    with pytest.raises(AuthenticationError) as caught:
        client.stream(model=MODEL, messages=USER).next()
    assert "didn't provide an API key" in str(caught.value)


@pytest.mark.parametrize("env_key", [None, ""], ids=["unset", "empty"])
def test_missing_api_key_for_openai_raises_at_construction(
    facade: Any, monkeypatch: pytest.MonkeyPatch, env_key: str | None
) -> None:
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    if env_key is None:
        monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    else:
        monkeypatch.setenv("OPENAI_API_KEY", env_key)
    with pytest.raises(MissingAPIKeyError) as caught:
        facade.client_class()
    assert "OPENAI_API_KEY" in str(caught.value)
    assert "base_url" in str(caught.value)


def test_no_api_key_is_needed_for_a_custom_base_url(
    facade: Any, server: LocalServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    client = facade.client(base_url=server.base_url, api_key=None)
    assert client.create(model=MODEL, messages=USER).text == "Echo: Hello there"
    assert "authorization" not in server.requests[-1].headers


def test_base_url_and_key_from_the_environment(
    facade: Any, server: LocalServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
    client = facade.client(api_key=None)
    assert client.create(model=MODEL, messages=USER).text == "Echo: Hello there"
    assert server.requests[-1].headers["authorization"] == "Bearer sk-from-env"


INVALID_CALLS = [
    pytest.param({"temprature": 0.5}, "temprature", "did you mean 'temperature'", id="typo"),
    pytest.param({"temperature": 5}, "temperature", "between 0 and 2", id="temperature-5"),
    pytest.param({"n": 0}, "n", "between 1 and 128", id="n-0"),
    pytest.param({"messages": []}, "messages", "at least one", id="no-messages"),
    pytest.param({"model": ""}, "model", "non-empty", id="empty-model"),
    pytest.param(
        {"messages": [{"role": "user"}]}, "messages[0].content", "required", id="no-content"
    ),
]


@pytest.mark.parametrize("method", ["create", "stream"])
@pytest.mark.parametrize(("change", "field", "hint"), INVALID_CALLS)
def test_invalid_arguments_raise_before_any_request(
    facade: Any,
    server: LocalServer,
    method: str,
    change: dict[str, Any],
    field: str,
    hint: str,
) -> None:
    client = facade.client(base_url=server.base_url)
    params = {"model": MODEL, "messages": USER, **change}
    with pytest.raises(InvalidArgumentError) as caught:
        if method == "stream":
            client.stream(**params).next()
        else:
            client.create(**params)
    assert caught.value.field == field
    assert hint in str(caught.value)
    assert str(caught.value).startswith(field)
    assert server.requests == []


def test_an_invalid_request_object_raises_before_any_request(
    facade: Any, server: LocalServer
) -> None:
    client = facade.client(base_url=server.base_url)
    request = CreateChatCompletionRequest(model=MODEL, messages=USER, top_p=1.5)
    with pytest.raises(InvalidArgumentError) as caught:
        client.create(request)
    assert caught.value.field == "top_p"
    assert isinstance(caught.value, ValueError)
    assert server.requests == []


def test_per_call_timeout_raises_api_timeout_error(facade: Any, server: LocalServer) -> None:
    server.enqueue(Reply(delay=1.0))
    client = facade.client(base_url=server.base_url, max_retries=0)
    with pytest.raises(APITimeoutError):
        client.create(model=MODEL, messages=USER, timeout=FAST)
    assert client.create(model=MODEL, messages=USER).text == "Echo: Hello there"


# ---------------------------------------------------------------- the client object


def test_with_options_returns_a_copy_that_shares_the_pool(facade: Any, server: LocalServer) -> None:
    client = facade.client(base_url=server.base_url, max_retries=2)
    copy = client.with_options(max_retries=0, timeout=FAST)
    assert copy.raw is not client.raw
    assert type(copy.raw) is type(client.raw)
    assert copy.raw.transport is client.raw.transport
    assert copy.raw.config.max_retries == 0
    assert copy.raw.config.timeout == FAST
    assert client.raw.config.max_retries == 2
    assert client.raw.config.timeout == Timeout()
    assert copy.raw.config.base_url == client.raw.config.base_url


def test_with_options_max_retries_changes_how_often_a_call_is_sent(
    facade: Any, server: LocalServer
) -> None:
    client = facade.client(base_url=server.base_url, max_retries=2)
    server.enqueue(ErrorReply(500, headers=NO_WAIT))
    with pytest.raises(InternalServerError):
        client.with_options(max_retries=0).create(model=MODEL, messages=USER)
    assert len(server.requests) == 1
    server.enqueue(ErrorReply(500, headers=NO_WAIT))
    assert client.create(model=MODEL, messages=USER).text == "Echo: Hello there"
    assert len(server.requests) == 3


def test_with_options_timeout_applies_to_the_copy_only(facade: Any, server: LocalServer) -> None:
    client = facade.client(base_url=server.base_url, max_retries=0)
    server.enqueue(Reply(delay=1.0))
    with pytest.raises(APITimeoutError):
        client.with_options(timeout=FAST).create(model=MODEL, messages=USER)
    server.enqueue(Reply("slow but fine", delay=0.5))
    assert client.create(model=MODEL, messages=USER).text == "slow but fine"


def test_closing_a_with_options_copy_keeps_the_original_working(
    facade: Any, server: LocalServer
) -> None:
    client = facade.client(base_url=server.base_url)
    client.create(model=MODEL, messages=USER)
    copy = client.with_options(max_retries=1)
    copy.create(model=MODEL, messages=USER)
    copy.close()
    assert client.create(model=MODEL, messages=USER).text == "Echo: Hello there"
    assert text_of(client.stream_all(model=MODEL, messages=USER)) == "Echo: Hello there"


def test_with_options_changes_key_headers_query_and_server_for_the_copy_only(
    facade: Any, server: LocalServer
) -> None:
    client = facade.client(
        base_url="http://127.0.0.1:9/v1",  # nothing listens there: only the copy can work
        api_key="sk-original",
        default_headers={"X-Team": "a"},
    )
    copy = client.with_options(
        base_url=server.base_url,
        api_key="sk-other",
        default_headers={"X-Trace": "t"},
        default_query={"v": "2"},
        organization="org-2",
    )
    assert copy.create(model=MODEL, messages=USER).text == "Echo: Hello there"
    sent = server.requests[-1]
    assert sent.headers["authorization"] == "Bearer sk-other"
    assert (sent.headers["x-team"], sent.headers["x-trace"]) == ("a", "t")  # merged
    assert sent.headers["openai-organization"] == "org-2"
    assert sent.query == {"v": "2"}
    assert client.raw.config.base_url == "http://127.0.0.1:9/v1"
    assert "sk-other" not in repr(copy.raw)


def test_with_options_checks_what_it_is_given(facade: Any, server: LocalServer) -> None:
    client = facade.client(base_url=server.base_url)
    with pytest.raises(InvalidArgumentError) as info:
        client.with_options(api_key="sk-bad\nkey")
    assert info.value.field == "api_key"
    with pytest.raises(InvalidArgumentError):
        client.with_options(base_url="ftp://nowhere")


@pytest.mark.parametrize("how", [copy.copy, copy.deepcopy], ids=["copy", "deepcopy"])
def test_copying_a_client_keeps_its_key_and_shares_its_pool(
    facade: Any, server: LocalServer, monkeypatch: pytest.MonkeyPatch, how: Any
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")  # must not replace the explicit key
    client = facade.client(base_url=server.base_url, api_key="sk-explicit")
    twin = how(client.raw)
    assert twin is not client.raw and twin.transport is client.raw.transport
    duplicate = type(client)(facade, twin)
    assert duplicate.create(model=MODEL, messages=USER).text == "Echo: Hello there"
    assert server.requests[-1].headers["authorization"] == "Bearer sk-explicit"
    duplicate.close()  # a copy does not own the pool
    assert client.create(model=MODEL, messages=USER).text == "Echo: Hello there"


def test_closing_a_client_twice_is_fine(facade: Any, server: LocalServer) -> None:
    client = facade.client(base_url=server.base_url)
    client.create(model=MODEL, messages=USER)
    client.close()
    client.close()


def test_a_closed_client_refuses_calls_clearly_and_its_copies_too(
    facade: Any, server: LocalServer
) -> None:
    """Before, a closed client quietly opened a new pool (one never closed again)."""
    client = facade.client(base_url=server.base_url)
    copy = client.with_options(max_retries=3)  # shares the pool
    client.create(model=MODEL, messages=USER)
    client.close()
    for call in (
        lambda: client.create(model=MODEL, messages=USER),
        lambda: client.stream_all(model=MODEL, messages=USER),
        lambda: copy.create(model=MODEL, messages=USER),
    ):
        with pytest.raises(chatlib.errors.ClientClosedError, match="make a new client"):
            call()
    assert len(server.requests) == 1  # nothing sent, nothing retried


def test_a_client_used_as_a_context_manager(facade: Any, server: LocalServer) -> None:
    if facade.is_async:

        async def use() -> str:
            async with chatlib.AsyncChat(base_url=server.base_url, api_key="k") as chat:
                response = await chat.create(model=MODEL, messages=USER)
            return response.text

        assert facade.run(use()) == "Echo: Hello there"
    else:
        with chatlib.SyncChat(base_url=server.base_url, api_key="k") as chat:
            assert chat.create(model=MODEL, messages=USER).text == "Echo: Hello there"


def test_the_repr_of_a_client_never_shows_the_key(facade: Any, server: LocalServer) -> None:
    client = facade.client(base_url=server.base_url, api_key="sk-very-secret-value-42")
    for shown in (repr(client.raw), str(client.raw), repr(client.raw.config)):
        assert "sk-very-secret-value-42" not in shown
        assert "secret-value" not in shown
    assert "api_key=set" in repr(client.raw)
    assert server.base_url in repr(client.raw)


class CountingSession(requests.Session):
    """A user's own requests session that remembers being closed."""

    def __init__(self) -> None:
        super().__init__()
        self.closed_times = 0
        self.headers["X-Users-Session"] = "yes"

    def close(self) -> None:
        self.closed_times += 1
        super().close()


def test_a_session_of_your_own_is_used_and_left_open(facade: Any, server: LocalServer) -> None:
    if facade.is_async:

        async def make() -> aiohttp.ClientSession:
            return aiohttp.ClientSession(headers={"X-Users-Session": "yes"})

        session: Any = facade.run(make())
    else:
        session = CountingSession()
    try:
        client = facade.client(base_url=server.base_url, session=session)
        assert client.create(model=MODEL, messages=USER).text == "Echo: Hello there"
        assert text_of(client.stream_all(model=MODEL, messages=USER)) == "Echo: Hello there"
        assert all(r.headers["x-users-session"] == "yes" for r in server.requests)
        client.close()
        client.close()
        if facade.is_async:
            assert not session.closed
        else:
            assert session.closed_times == 0
    finally:
        if facade.is_async:
            facade.run(session.close())
        else:
            session.close()


def test_crate_style_functions_work_for_both_clients(facade: Any, server: LocalServer) -> None:
    client = facade.client(base_url=server.base_url)
    request = CreateChatCompletionRequest(model=MODEL, messages=[ChatMessage.user("Hi")])
    response = facade.call(lambda: create_chat_completion(client.raw, request))
    assert isinstance(response, CreateChatCompletionResponse)
    assert response.text == "Echo: Hi"
    assert "stream" not in last_body(server)
    chunks = read_all(facade, create_chat_completion_stream(client.raw, request))
    assert text_of(chunks) == "Echo: Hi"
    assert last_body(server)["stream"] is True


def test_create_chat_completion_never_streams(facade: Any, server: LocalServer) -> None:
    client = facade.client(base_url=server.base_url)
    request = CreateChatCompletionRequest(model=MODEL, messages=USER, stream=True)
    response = facade.call(lambda: create_chat_completion(client.raw, request))
    assert isinstance(response, CreateChatCompletionResponse)
    assert response.text == "Echo: Hello there"
    assert last_body(server).get("stream") is False
    assert request.stream is True  # the caller's request is left as it was


def test_proxy_settings_are_read_per_server_not_once_for_all(
    facade: Any, server: LocalServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    with LocalServer() as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        monkeypatch.setenv("NO_PROXY", "localhost")
        monkeypatch.delenv("http_proxy", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        direct = facade.client(base_url=server.base_url.replace("127.0.0.1", "localhost"))
        assert direct.create(model=MODEL, messages=USER).text == "Echo: Hello there"
        assert proxy.requests == []  # NO_PROXY: straight to the server
        via_proxy = direct.with_options(base_url=server.base_url)  # same pool, other host
        assert via_proxy.create(model=MODEL, messages=USER).text == "Echo: Hello there"
        assert len(proxy.requests) == 1
