"""A stream that fails midway keeps what arrived: the error it raises carries `.partial`.

Each kind of failure (the connection drops, the server goes silent, the total deadline passes,
an error event, no `[DONE]`, a frame that is not JSON, a chunk with a wrongly typed value)
over real loopback HTTP, for SyncChat and AsyncChat, read as chunks, as events, or with
`get_final_completion()`. `.partial` is the completion merged from every chunk delivered
before the failure, the same as `stream.accumulated` then; `None` only if none was.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable
from typing import Any

import pytest
from test_chunks import chunk, frame

from chatlib import ChatCompletionAccumulator, Timeout
from chatlib.errors import (
    APIConnectionError,
    APIError,
    APIResponseValidationError,
    APIStatusError,
    APITimeoutError,
    IncompleteStreamError,
    InternalServerError,
)
from chatlib.models import CreateChatCompletionChunk
from chatlib.testing import Disconnect, ErrorReply, InStreamError, LocalServer, RawReply, Stall

SSE = "text/event-stream"
USER = [{"role": "user", "content": "tell me"}]
FAST = Timeout(connect=2, read=0.5, total=5)

HEAD = [
    frame(chunk({"role": "assistant", "content": ""})),
    frame(chunk({"content": "The answer "})),
    frame(chunk({"content": "is 4"})),
]
TOOL_HEAD = [
    frame(chunk({"role": "assistant", "content": None})),
    frame(
        chunk(
            {
                "tool_calls": [
                    {
                        "index": 0,
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": '},
                    }
                ]
            }
        )
    ),
    frame(chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"Par'}}]})),
]
HEAD_BYTES = b"".join(HEAD)


def read(facade: Any, server: LocalServer, how: str, **options: Any) -> tuple[APIError, Any, int]:
    """Open a stream (client `options`), read it `how` ("chunks", "events", "final"); return
    the error, `stream.accumulated` at that moment, and how many chunks were delivered."""
    client = facade.client(base_url=server.base_url, max_retries=0, **options).raw
    delivered = 0
    if facade.is_async:

        async def go() -> tuple[APIError, Any]:
            nonlocal delivered
            stream = client.stream(model="m", messages=USER)
            try:
                if how == "chunks":
                    async for _ in stream:
                        delivered += 1
                elif how == "events":
                    async for event in stream.events():
                        delivered += event.type == "chunk"
                else:
                    await stream.get_final_completion()
            except APIError as exc:
                return exc, stream.accumulated
            raise AssertionError("the stream did not fail")

        error, accumulated = facade.run(go())
    else:
        stream = client.stream(model="m", messages=USER)
        try:
            if how == "chunks":
                for _ in stream:
                    delivered += 1
            elif how == "events":
                for event in stream.events():
                    delivered += event.type == "chunk"
            else:
                stream.get_final_completion()
        except APIError as exc:
            error, accumulated = exc, stream.accumulated
        else:
            raise AssertionError("the stream did not fail")
    return error, accumulated, delivered


FAILURES: dict[str, tuple[Callable[[], Any], type[APIError], str]] = {
    # name: (the server's action, the error, the text that arrived before it)
    "the connection drops": (
        lambda: Disconnect("mid_stream", after=HEAD_BYTES),
        APIConnectionError,
        "The answer is 4",
    ),
    "the connection drops mid-frame": (
        lambda: Disconnect("mid_stream", after=HEAD_BYTES + b'data: {"choices": [{"ind'),
        APIConnectionError,
        "The answer is 4",
    ),
    "the server goes silent (read timeout)": (
        lambda: Stall(5, stage="mid_stream", after=HEAD_BYTES),
        APITimeoutError,
        "The answer is 4",
    ),
    "an error event": (
        lambda: RawReply(
            body=[*HEAD, b'data: {"error": {"message": "overloaded", "type": "server_error"}}\n\n'],
            content_type=SSE,
        ),
        InternalServerError,
        "The answer is 4",
    ),
    "LocalServer's InStreamError": (
        lambda: InStreamError({"message": "slot gone", "type": "server_error"}, after_chunks=2),
        InternalServerError,
        "Echo: ",
    ),
    "no [DONE]": (
        lambda: RawReply(body=HEAD, content_type=SSE),
        IncompleteStreamError,
        "The answer is 4",
    ),
    "a frame that is not JSON": (
        lambda: RawReply(body=[*HEAD, b"data: {not json\n\n"], content_type=SSE),
        APIResponseValidationError,
        "The answer is 4",
    ),
    "a chunk with a number as content": (
        lambda: RawReply(
            body=[*HEAD, frame(chunk({"content": 5}, finish="stop")), b"data: [DONE]\n\n"],
            content_type=SSE,
        ),
        APIResponseValidationError,
        "The answer is 4",  # the bad chunk is not merged, not even its finish_reason
    ),
}


@pytest.mark.parametrize("how", ["chunks", "events", "final"])
@pytest.mark.parametrize("name", list(FAILURES))
def test_the_error_of_a_failed_stream_carries_what_arrived(
    facade: Any, server: LocalServer, name: str, how: str
) -> None:
    action, error_type, text = FAILURES[name]
    server.enqueue(action())
    error, accumulated, delivered = read(facade, server, how, timeout=FAST)
    assert isinstance(error, error_type), repr(error)
    partial = error.partial
    assert partial is not None
    assert partial.text == text
    assert partial.to_dict() == accumulated.to_dict()
    choice = partial.choices[0]
    assert choice.message.role == "assistant"
    assert choice.finish_reason is None  # cut short: nothing said it was finished
    if how != "final":
        assert delivered == (2 if name == "LocalServer's InStreamError" else 3)


def test_a_chunk_the_merge_refuses_ends_the_stream_and_frees_its_connection(
    facade: Any, server: LocalServer
) -> None:
    server.enqueue(FAILURES["a chunk with a number as content"][0]())
    client = facade.client(base_url=server.base_url, max_retries=0, timeout=FAST)
    stream = client.stream(model="m", messages=USER)
    with pytest.raises(APIResponseValidationError):
        stream.collect()
    assert repr(stream.raw).startswith(f"<{type(stream.raw).__name__} closed")
    assert stream.next() is None  # nothing more is handed out


def test_a_total_deadline_mid_stream_keeps_what_arrived(facade: Any, server: LocalServer) -> None:
    server.enqueue(Stall(5, stage="mid_stream", after=b"".join(TOOL_HEAD)))
    error, accumulated, _ = read(
        facade, server, "chunks", timeout=Timeout(connect=2, read=3, total=0.5)
    )
    assert isinstance(error, APITimeoutError)
    assert "total" in str(error)
    partial = error.partial
    assert partial is not None and partial.to_dict() == accumulated.to_dict()
    (call,) = partial.choices[0].message.tool_calls
    assert (call.id, call.function.name, call.function.arguments) == (
        "call_1",
        "get_weather",
        '{"city": "Par',
    )


@pytest.mark.parametrize(
    "after",
    [b"", b": keep-alive\n\n", b'data: {"choices": [{"index": 0, "delta": {"content": "Hi'],
    ids=["no byte", "a comment", "half a frame"],
)
def test_partial_is_none_when_no_chunk_arrived(
    facade: Any, server: LocalServer, after: bytes
) -> None:
    server.enqueue(Disconnect("mid_stream", after=after or b"\n"))
    error, accumulated, delivered = read(facade, server, "chunks", timeout=FAST)
    assert isinstance(error, APIConnectionError)
    assert delivered == 0
    assert error.partial is None
    assert accumulated.choices == []


def test_two_choices_and_usage_are_kept(facade: Any, server: LocalServer) -> None:
    frames = [
        frame(chunk({"role": "assistant", "content": "A"}, index=0)),
        frame(chunk({"role": "assistant", "content": "B"}, index=1)),
        frame(chunk({}, index=1, finish="length")),
        frame({**chunk(), "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}}),
    ]
    server.enqueue(Disconnect("mid_stream", after=b"".join(frames)))
    error, _, _ = read(facade, server, "events", timeout=FAST)
    partial = error.partial
    assert partial is not None
    assert [(c.index, c.message.content, c.finish_reason) for c in partial.choices] == [
        (0, "A", None),
        (1, "B", "length"),
    ]
    assert partial.usage is not None and partial.usage.completion_tokens == 2


def test_errors_before_the_stream_or_without_one_have_no_partial(
    facade: Any, server: LocalServer
) -> None:
    client = facade.client(base_url=server.base_url, max_retries=0)
    server.enqueue(ErrorReply(500))
    with pytest.raises(APIStatusError) as info:
        client.stream_all(model="m", messages=USER)
    assert info.value.partial is None
    server.enqueue(Disconnect("mid_body"))
    with pytest.raises(APIConnectionError) as info2:
        client.create(model="m", messages=USER)
    assert info2.value.partial is None


def test_partial_survives_pickling(facade: Any, server: LocalServer) -> None:
    server.enqueue(RawReply(body=HEAD, content_type=SSE))
    error, _, _ = read(facade, server, "chunks", timeout=FAST)
    clone = pickle.loads(pickle.dumps(error))
    assert type(clone) is IncompleteStreamError
    assert clone.partial is not None
    assert clone.partial.to_dict() == error.partial.to_dict()


# ---------------------------------------------------------------- the public accumulator


def test_the_accumulator_merges_a_chunk_whole_or_not_at_all() -> None:
    accumulator = ChatCompletionAccumulator()
    accumulator.add(chunk({"role": "assistant", "content": "ok"}))
    before = accumulator.result().to_dict()
    bad = chunk({"content": "never", "tool_calls": [{"index": 0, "id": 7}]}, finish="stop")
    bad["usage"] = {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
    with pytest.raises(APIResponseValidationError) as info:
        accumulator.add(bad)
    assert "delta.tool_calls[].id" in str(info.value)
    assert info.value.body["choices"][0]["delta"]["content"] == "never"
    assert json.loads(info.value.raw_body) == info.value.body
    assert accumulator.result().to_dict() == before


@pytest.mark.parametrize(
    "given",
    [42, "data: {}", {"choices": "nope"}, {"choices": [{"index": "0"}]}],
    ids=["a number", "a string", "choices not a list", "a string index"],
)
def test_the_accumulator_refuses_what_is_not_a_chunk(given: Any) -> None:
    accumulator = ChatCompletionAccumulator()
    with pytest.raises(APIResponseValidationError):
        accumulator.add(given)
    assert accumulator.result().choices == []


def test_the_accumulator_keeps_refusal_logprobs() -> None:
    def token(text: str) -> dict[str, Any]:
        return {"token": text, "logprob": -0.1, "bytes": None, "top_logprobs": []}

    accumulator = ChatCompletionAccumulator()
    for piece in ["I can't", " help"]:
        payload = chunk({"refusal": piece})
        payload["choices"][0]["logprobs"] = {"content": None, "refusal": [token(piece)]}
        accumulator.add(CreateChatCompletionChunk.from_dict(payload))
    choice = accumulator.result().choices[0]
    assert choice.message.refusal == "I can't help"
    assert choice.logprobs is not None
    assert choice.logprobs.content is None
    assert [t.token for t in choice.logprobs.refusal or ()] == ["I can't", " help"]
