"""The official ``openai`` package as an oracle: same arguments, same bytes on the wire; same
server bytes, same parsed values and the same kind of error.

Both clients talk to the bundled server over loopback; the server records what each sent.
``openai`` is a test dependency only (chatlib never imports it).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from test_models import CHUNK_FIXTURES, COMPLETION_FIXTURES

from chatlib import SyncChat
from chatlib.errors import APIStatusError, InsufficientQuotaError, RateLimitError
from chatlib.testing import ErrorReply, LocalServer, RawReply, Reply

openai = pytest.importorskip("openai")

USER = {"role": "user", "content": "What is the capital of France?"}
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        "strict": True,
    },
}


@pytest.fixture
def clients(server: LocalServer) -> Iterator[tuple[Any, SyncChat]]:
    official = openai.OpenAI(base_url=server.base_url, api_key="sk-oracle", max_retries=0)
    ours = SyncChat(base_url=server.base_url, api_key="sk-oracle", max_retries=0)
    with official, ours:
        yield official, ours


REQUESTS: dict[str, dict[str, Any]] = {
    "minimal": {"model": "gpt-4o-mini", "messages": [USER]},
    "falsy values that were set": {
        "model": "m",
        "messages": [USER],
        "temperature": 0,
        "seed": 0,
        "logprobs": False,
        "n": 1,
        "presence_penalty": 0.0,
        "max_tokens": 1,
    },
    "explicit nulls": {"model": "m", "messages": [USER], "temperature": None, "stop": None},
    "vendor extensions": {
        "model": "m",
        "messages": [USER],
        "extra_body": {"top_k": 40, "repetition_penalty": 1.1, "chat_template_kwargs": {"x": 1}},
        "extra_query": {"api-version": "2024-10-21"},
        "extra_headers": {"X-Trace": "abc"},
    },
    "tools and tool choice": {
        "model": "m",
        "messages": [
            {"role": "system", "content": "Be brief."},
            USER,
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        ],
        "tools": [WEATHER_TOOL],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "parallel_tool_calls": False,
    },
    "structured output": {
        "model": "m",
        "messages": [USER],
        "response_format": {
            "type": "json_schema",
            "json_schema": {
                "name": "answer",
                "schema": {"type": "object", "properties": {"city": {"type": "string"}}},
                "strict": True,
            },
        },
    },
    "content parts": {
        "model": "m",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {
                        "type": "image_url",
                        "image_url": {"url": "data:image/png;base64,AAAA", "detail": "low"},
                    },
                ],
            }
        ],
    },
    "sampling and limits": {
        "model": "m",
        "messages": [USER],
        "top_p": 0.9,
        "frequency_penalty": -0.5,
        "logit_bias": {"50256": -100},
        "top_logprobs": 3,
        "logprobs": True,
        "max_completion_tokens": 64,
        "stop": ["\n\n", "END"],
        "user": "u-1",
        "metadata": {"k": "v"},
        "store": False,
        "service_tier": "auto",
        "reasoning_effort": "low",
    },
}


def _without_null_content_beside_tool_calls(body: dict[str, Any]) -> dict[str, Any]:
    """chatlib's deliberate differences, for assistant messages only: with tool calls, no
    ``"content": null`` (llama.cpp's server answers 500 to it; the schema makes ``content``
    optional there); and a message copied from a response goes back without the fields the
    request schema does not take (``annotations``, ``"refusal": null``)."""
    for message in body["messages"]:
        if message.get("role") != "assistant":
            continue
        if message.get("tool_calls") and message.get("content", "") is None:
            del message["content"]
        message.pop("annotations", None)
        if message.get("refusal", "") is None:
            del message["refusal"]
    return body


@pytest.mark.parametrize("kwargs", list(REQUESTS.values()), ids=list(REQUESTS))
@pytest.mark.parametrize("stream", [False, True], ids=["create", "stream"])
def test_the_request_body_matches_the_official_sdk(
    clients: tuple[Any, SyncChat], server: LocalServer, kwargs: dict[str, Any], stream: bool
) -> None:
    official, ours = clients
    extra = {"stream": True, "stream_options": {"include_usage": True}} if stream else {}
    result = official.chat.completions.create(**kwargs, **extra)
    if stream:
        list(result)
    theirs = server.requests[-1]
    if stream:
        with ours.stream(**kwargs, stream_options={"include_usage": True}) as chunks:
            list(chunks)
    else:
        ours.create(**kwargs)
    mine = server.requests[-1]
    assert mine.json() == _without_null_content_beside_tool_calls(theirs.json())
    assert mine.path == theirs.path
    assert mine.query == theirs.query
    for name in ("authorization", "content-type", "x-trace"):
        assert mine.headers.get(name) == theirs.headers.get(name)


@pytest.mark.parametrize("name", list(COMPLETION_FIXTURES))
def test_a_completion_parses_to_the_same_values(
    clients: tuple[Any, SyncChat], server: LocalServer, name: str
) -> None:
    official, ours = clients
    body = json.dumps(COMPLETION_FIXTURES[name]).encode()
    server.enqueue(RawReply(body=body), RawReply(body=body))
    theirs = official.chat.completions.create(model="m", messages=[USER])
    mine = ours.create(model="m", messages=[USER])
    assert mine.to_dict() == theirs.to_dict() == COMPLETION_FIXTURES[name]
    assert mine.choices[0].message.content == theirs.choices[0].message.content
    assert mine.choices[0].finish_reason == theirs.choices[0].finish_reason


def test_a_stream_parses_to_the_same_chunks(
    clients: tuple[Any, SyncChat], server: LocalServer
) -> None:
    official, ours = clients
    frames = b"".join(
        b"data: " + json.dumps(chunk).encode() + b"\n\n" for chunk in CHUNK_FIXTURES.values()
    )
    raw = RawReply(body=[frames, b"data: [DONE]\n\n"], content_type="text/event-stream")
    server.enqueue(raw, raw)
    theirs = [
        c.to_dict() for c in official.chat.completions.create(**REQUESTS["minimal"], stream=True)
    ]
    with ours.stream(**REQUESTS["minimal"]) as stream:
        mine = [c.to_dict() for c in stream]
    assert mine == theirs == list(CHUNK_FIXTURES.values())


def test_streamed_tool_calls_accumulate_like_the_official_stream_helper(
    clients: tuple[Any, SyncChat], server: LocalServer
) -> None:
    official, ours = clients
    reply = Reply(
        "Let me check.",
        tool_calls=[
            {"id": "call_paris", "name": "get_weather", "arguments": {"city": "Paris"}},
            {"id": "call_lyon", "name": "get_weather", "arguments": {"city": "Lyon"}},
        ],
        finish_reason="tool_calls",
    )
    server.enqueue(reply, reply)
    request = {**REQUESTS["minimal"], "tools": [WEATHER_TOOL]}
    with official.chat.completions.stream(**request) as helper:
        theirs = helper.get_final_completion()
    with ours.stream(**request) as stream:
        mine = stream.get_final_completion()
    their_message, my_message = theirs.choices[0].message, mine.choices[0].message
    assert my_message.content == their_message.content == "Let me check."
    assert [(c.id, c.function.name, c.function.arguments) for c in my_message.tool_calls] == [
        (c.id, c.function.name, c.function.arguments) for c in their_message.tool_calls
    ]
    assert mine.choices[0].finish_reason == theirs.choices[0].finish_reason == "tool_calls"


RID = {"x-request-id": "req_oracle"}
ERRORS = [
    ErrorReply(400, code="context_length_exceeded", param="messages", headers=RID),
    ErrorReply(400, code=400, type="invalid_request_error", headers=RID),  # llama.cpp's int code
    ErrorReply(401, code="invalid_api_key", headers=RID),
    ErrorReply(403, headers=RID),
    ErrorReply(404, code="model_not_found", param="model", headers=RID),
    ErrorReply(409, headers=RID),
    ErrorReply(422, headers=RID),
    ErrorReply(429, code="rate_limit_exceeded", headers=RID),
    ErrorReply(429, code="insufficient_quota", type="insufficient_quota", headers=RID),
    ErrorReply(500, headers=RID),
    ErrorReply(503, headers=RID),
]


@pytest.mark.parametrize("reply", ERRORS, ids=lambda r: f"{r.status}-{r.code}")
def test_an_error_maps_to_the_same_exception(
    clients: tuple[Any, SyncChat], server: LocalServer, reply: ErrorReply
) -> None:
    official, ours = clients
    server.enqueue(reply, reply)
    with pytest.raises(openai.APIStatusError) as theirs:
        official.chat.completions.create(**REQUESTS["minimal"])
    with pytest.raises(APIStatusError) as mine:
        ours.create(**REQUESTS["minimal"])
    their_error, my_error = theirs.value, mine.value
    if isinstance(my_error, InsufficientQuotaError):
        # chatlib's own subclass: never retried, still a RateLimitError like openai's.
        assert isinstance(my_error, RateLimitError)
        assert type(their_error).__name__ == "RateLimitError"
    else:
        assert type(my_error).__name__ == type(their_error).__name__
    assert my_error.status_code == their_error.status_code
    assert my_error.request_id == their_error.request_id
    assert (my_error.code, my_error.type, my_error.param) == (
        their_error.code,
        their_error.type,
        their_error.param,
    )
    assert my_error.body == their_error.body
    assert my_error.server_message == their_error.body["message"]
    assert their_error.body["message"] in str(my_error)


def test_a_message_object_of_the_official_sdk_can_be_sent_back(
    clients: tuple[Any, SyncChat], server: LocalServer
) -> None:
    official, ours = clients
    reply = Reply(tool_calls=[{"id": "call_1", "name": "get_weather", "arguments": {"c": 1}}])
    server.enqueue(reply)
    their_message = official.chat.completions.create(**REQUESTS["minimal"]).choices[0].message
    history = [USER, their_message, {"role": "tool", "tool_call_id": "call_1", "content": "ok"}]
    official.chat.completions.create(model="m", messages=history)
    theirs = server.requests[-1].json()
    ours.create(model="m", messages=history)
    assert server.requests[-1].json() == _without_null_content_beside_tool_calls(theirs)


def _merged_view(completion: Any) -> Any:
    """What a user reads from a merged stream, whichever SDK merged it."""
    data = completion.to_dict()
    view = []
    for choice in data["choices"]:
        message = choice["message"]
        view.append(
            (
                choice["index"],
                choice.get("finish_reason"),
                message.get("role"),
                message.get("content"),
                message.get("refusal"),
                message.get("reasoning_content"),
                [
                    (call["id"], call["function"]["name"], call["function"]["arguments"])
                    for call in message.get("tool_calls") or []
                ],
            )
        )
    return view, data.get("usage")


MERGES = {
    "two choices with usage": (
        Reply("two words here"),
        {"n": 2, "stream_options": {"include_usage": True}},
    ),
    "a refusal": (Reply(refusal="I can't help with that"), {}),
    "reasoning beside the answer": (Reply("42", reasoning_content="thinking it over"), {}),
    "two tool calls": (
        Reply(
            tool_calls=[
                {"id": "c1", "name": "f", "arguments": {"a": 1}},
                {"id": "c2", "name": "g", "arguments": {"b": [1, 2]}},
            ]
        ),
        {"stream_options": {"include_usage": True}},
    ),
}


@pytest.mark.parametrize(("reply", "extra"), list(MERGES.values()), ids=list(MERGES))
def test_a_stream_merges_to_what_the_official_stream_helper_gives(
    clients: tuple[Any, SyncChat], reply: Reply, extra: dict[str, Any]
) -> None:
    official, ours = clients
    with LocalServer(write_size=5) as server:  # chunk boundaries anywhere, even in UTF-8
        official = official.with_options(base_url=server.base_url)
        server.enqueue(reply, reply)
        request = {**REQUESTS["minimal"], **extra}
        with official.chat.completions.stream(**request) as helper:
            theirs = helper.get_final_completion()
        with ours.with_options(base_url=server.base_url).stream(**request) as stream:
            mine = stream.get_final_completion()
    assert _merged_view(mine) == _merged_view(theirs)
