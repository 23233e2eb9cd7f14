"""ChunkParser: streamed bytes -> chunks -> one accumulated completion. Pure, no I/O."""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chatlib._accumulate import ChatCompletionAccumulator
from chatlib._parse import ChunkParser
from chatlib.errors import (
    APIResponseValidationError,
    APIStatusError,
    APIStreamError,
    AuthenticationError,
    BadRequestError,
    IncompleteStreamError,
    InternalServerError,
    RateLimitError,
)
from chatlib.models import (
    ChatCompletionMessageToolCall,
    CreateChatCompletionChunk,
    CreateChatCompletionResponse,
    FinishReason,
)

MAX_LINE = 1 << 20


def frame(payload: Any, *, compact: bool = True, eol: bytes = b"\n") -> bytes:
    """One SSE event; non-ASCII text is sent as raw UTF-8, as servers do."""
    separators = (",", ":") if compact else (", ", ": ")
    text = json.dumps(payload, separators=separators, ensure_ascii=False)
    return b"data: " + text.encode() + eol + eol


DONE = b"data: [DONE]\n\n"


def chunk(
    delta: dict[str, Any] | None = None,
    *,
    index: int = 0,
    finish: str | None = None,
    **top: Any,
) -> dict[str, Any]:
    choice: dict[str, Any] = {"index": index, "delta": delta or {}, "finish_reason": finish}
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1741569952,
        "model": "gpt-4o-mini",
        "choices": [choice],
        **top,
    }


USAGE = {"prompt_tokens": 8, "completion_tokens": 2, "total_tokens": 10}
OPENAI_STREAM = b"".join(
    [
        frame(chunk({"role": "assistant", "content": "", "refusal": None})),
        frame(chunk({"content": "Hel"})),
        frame(chunk({"content": "lo"})),
        frame(chunk({}, finish="stop")),
        frame({**chunk(), "choices": [], "usage": USAGE}),
        DONE,
    ]
)


def parse(data: bytes | list[bytes], **kwargs: Any) -> tuple[list[Any], ChunkParser]:
    parser = ChunkParser(
        request_id=kwargs.pop("request_id", "req_1"), max_line_bytes=MAX_LINE, **kwargs
    )
    pieces = [data] if isinstance(data, bytes) else data
    out: list[CreateChatCompletionChunk] = []
    for piece in pieces:
        out.extend(parser.feed(piece))
    out.extend(parser.finish())
    return out, parser


def result(chunks: list[CreateChatCompletionChunk]) -> CreateChatCompletionResponse:
    accumulator = ChatCompletionAccumulator()
    for chunk in chunks:
        accumulator.add(chunk)
    return accumulator.result()


# ---------------------------------------------------------------- the happy path


def test_openai_stream_to_chunks_and_completion() -> None:
    chunks, parser = parse(OPENAI_STREAM)
    assert all(isinstance(c, CreateChatCompletionChunk) for c in chunks)
    assert [c.text for c in chunks] == ["", "Hel", "lo", "", ""]
    assert chunks[3].choices[0].finish_reason is FinishReason.STOP
    assert chunks[4].choices == []
    assert chunks[4].usage.total_tokens == 10
    assert parser.done
    completion = result(chunks)
    assert completion.text == "Hello"
    assert completion.id == "chatcmpl-1"
    assert completion.model == "gpt-4o-mini"
    assert completion.object == "chat.completion"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.choices[0].message.role == "assistant"
    assert completion.usage.total_tokens == 10


def test_each_feed_returns_the_chunks_it_completes() -> None:
    parser = ChunkParser(request_id=None, max_line_bytes=MAX_LINE)
    first = frame(chunk({"content": "a"}))
    assert parser.feed(first[:10]) == []
    got = parser.feed(first[10:] + frame(chunk({"content": "b"}))[:-1])
    assert [c.text for c in got] == ["a"]
    assert [c.text for c in parser.feed(b"\n")] == ["b"]


def test_llama_cpp_python_framing_with_keepalive_first() -> None:
    data = (
        b": ping - 2025-03-10 01:02:03.456789\r\n\r\n"
        + frame(chunk({"role": "assistant"}), compact=False)
        + frame(chunk({"content": "Hi"}), compact=False)
        + frame(chunk({}, finish="length"), compact=False)
        + DONE
    )
    chunks, _ = parse(data)
    assert [c.text for c in chunks] == ["", "Hi", ""]
    assert result(chunks).choices[0].finish_reason == "length"


def test_llama_server_compact_framing_with_null_content_and_timings() -> None:
    data = (
        frame(chunk({"role": "assistant", "content": None}))
        + frame(chunk({"content": "Yo"}, timings={"predicted_n": 1}))
        + frame(chunk({}, finish="stop"))
        + DONE
    )
    chunks, _ = parse(data)
    assert chunks[1].extra["timings"] == {"predicted_n": 1}
    assert result(chunks).text == "Yo"


@pytest.mark.parametrize("eol", [b"\n", b"\r\n", b"\r"])
def test_any_line_ending(eol: bytes) -> None:
    data = frame(chunk({"content": "x"}), eol=eol) + b"data: [DONE]" + eol + eol
    chunks, parser = parse(data)
    assert [c.text for c in chunks] == ["x"]
    assert parser.done


# ---------------------------------------------------------------- [DONE]


def test_done_stops_and_later_events_are_ignored() -> None:
    parser = ChunkParser(request_id=None, max_line_bytes=MAX_LINE)
    got = parser.feed(frame(chunk({"content": "a"})) + DONE + b"data: not json\n\n")
    assert [c.text for c in got] == ["a"]
    assert parser.done
    assert parser.feed(frame(chunk({"content": "late"}))) == []
    assert parser.feed(b'data: {"error": {"message": "late"}}\n\n') == []
    assert parser.finish() == []
    assert result(got).text == "a"


@pytest.mark.parametrize(
    "tail", [b"data: [DONE]\n", b"data: [DONE]", b"data:[DONE]\r\n", b"data: [DONE] \n\n"]
)
def test_done_without_a_trailing_blank_line_is_accepted(tail: bytes) -> None:
    chunks, parser = parse(frame(chunk({"content": "a"})) + tail)
    assert [c.text for c in chunks] == ["a"]
    assert parser.done


# ---------------------------------------------------------------- choices-less chunks


@pytest.mark.parametrize(
    "payload",
    [
        {"id": "c", "choices": [], "usage": USAGE},
        {"id": "c", "choices": None, "usage": USAGE},
        {"id": "c", "usage": USAGE},
        {
            "choices": [],
            "created": 0,
            "id": "",
            "model": "",
            "object": "",
            "prompt_filter_results": [],
        },
    ],
    ids=["openai-usage", "vllm-null", "missing", "azure-first"],
)
def test_chunks_without_choices_parse(payload: dict[str, Any]) -> None:
    chunks, _ = parse(frame(payload) + frame(chunk({"content": "a"})) + DONE)
    assert chunks[0].choices == []
    assert chunks[0].text == ""
    assert chunks[0].to_dict() == payload
    assert result(chunks).text == "a"


# ---------------------------------------------------------------- errors in the stream


@pytest.mark.parametrize(
    ("event", "cls", "status"),
    [
        (
            b'event: error\ndata: {"error": {"message": "overloaded", "type": "server_error"}}\n\n',
            InternalServerError,
            500,
        ),
        (
            b'data: {"error": {"code": 500, "message": "overloaded", "type": "server_error"}}\n\n',
            InternalServerError,
            500,
        ),
        (
            b'data: {"error": {"message": "overloaded", "type": "rate_limit_error"}}\n\n',
            RateLimitError,
            429,
        ),
        (
            b'data: {"object": "error", "message": "overloaded", "code": 400}\n\n',
            BadRequestError,
            400,
        ),
        (b"event: error\ndata: overloaded\n\n", APIStreamError, 200),
        (b'event: error\ndata: {"message": "overloaded"}\n\n', APIStreamError, 200),
        # OpenRouter: a chunk with a top-level error beside a choice finished with "error"
        (
            b'data: {"id": "gen-1", "object": "chat.completion.chunk", "error": {"code": 502, '
            b'"message": "overloaded"}, "choices": [{"index": 0, "delta": {"content": ""}, '
            b'"finish_reason": "error"}]}\n\n',
            InternalServerError,
            502,
        ),
    ],
)
def test_in_stream_errors_raise_the_matching_error(
    event: bytes, cls: type[APIStatusError], status: int
) -> None:
    parser = ChunkParser(request_id="req_e", max_line_bytes=MAX_LINE)
    before = parser.feed(frame(chunk({"content": "partial"})))
    assert [c.text for c in before] == ["partial"]
    with pytest.raises(cls) as info:
        parser.feed(event)
    error = info.value
    assert type(error) is cls
    assert error.status_code == status
    assert "overloaded" in str(error)
    data_line = next(line for line in event.split(b"\n") if line.startswith(b"data: "))
    assert error.raw_body == data_line[len(b"data: ") :]
    assert error.request_id == "req_e"
    assert result(before).text == "partial"


@pytest.mark.parametrize("error", [None, {}, "", "none"])
def test_a_chunk_with_an_empty_error_field_is_a_chunk(error: Any) -> None:
    parser = ChunkParser(request_id=None, max_line_bytes=MAX_LINE)
    [got] = parser.feed(frame(chunk({"content": "fine"}, error=error)))
    assert got.text == "fine" and got.extra["error"] == error


@pytest.mark.parametrize(
    "data",
    ["{not json", '{"id": "c", "choices": [', "hello world", "{'single': 'quotes'}"],
)
def test_a_non_json_frame_raises_with_the_raw_frame(data: str) -> None:
    parser = ChunkParser(request_id="req_j", max_line_bytes=MAX_LINE)
    with pytest.raises(APIResponseValidationError) as info:
        parser.feed(frame(chunk({"content": "ok"})) + b"data: " + data.encode() + b"\n\n")
    assert info.value.raw_body == data.encode()
    assert info.value.request_id == "req_j"
    assert "JSON" in str(info.value)


@pytest.mark.parametrize("data", ["42", "[1, 2]", '"text"', "null", "true"])
def test_a_non_object_json_frame_raises(data: str) -> None:
    with pytest.raises(APIResponseValidationError) as info:
        parse(b"data: " + data.encode() + b"\n\n" + DONE)
    assert info.value.raw_body == data.encode()
    assert info.value.body == json.loads(data)


@pytest.mark.parametrize(
    "payload",
    [
        {"choices": "nope"},
        {"choices": [{"index": 0, "delta": "text"}]},
        {"choices": [{"index": 0, "delta": {"tool_calls": {"index": 0}}}]},
        {"choices": [{"index": 0, "logprobs": {"content": "x"}}]},
    ],
)
def test_a_frame_of_the_wrong_shape_raises_a_validation_error(payload: Any) -> None:
    with pytest.raises(APIResponseValidationError) as info:
        parse(frame(payload) + DONE)
    assert json.loads(info.value.raw_body) == payload


@pytest.mark.parametrize(
    "payload",
    [
        {"choices": [None]},
        {"choices": [{"index": 0, "delta": {"tool_calls": [None]}}]},
    ],
)
def test_a_null_choice_is_rejected_or_dropped(payload: Any) -> None:
    try:
        chunks, _ = parse(frame(payload) + DONE)
    except APIResponseValidationError as exc:
        assert json.loads(exc.raw_body) == payload
        return
    # Dropping the null item would be fine too, as long as nothing crashes.
    assert [c.text for c in chunks] == [""]
    assert result(chunks).text == ""


# ---------------------------------------------------------------- a stream that ends early


def test_stream_ending_without_done_raises_incomplete() -> None:
    parser = ChunkParser(request_id=None, max_line_bytes=MAX_LINE)
    got = parser.feed(frame(chunk({"role": "assistant"})) + frame(chunk({"content": "cut"})))
    assert [c.text for c in got] == ["", "cut"]
    with pytest.raises(IncompleteStreamError) as info:
        parser.finish()
    assert "[DONE]" in str(info.value)
    assert result(got).text == "cut"


def test_an_unterminated_last_event_is_not_delivered() -> None:
    data = frame(chunk({"content": "a"})) + b'data: {"choices": []}'
    with pytest.raises(IncompleteStreamError):
        parse(data)


@pytest.mark.parametrize("body", [b"", b"\n", b"  \r\n", b": ping\n\n"])
def test_empty_stream_raises_incomplete_with_a_clear_message(body: bytes) -> None:
    with pytest.raises(IncompleteStreamError) as info:
        parse(body)
    message = str(info.value)
    assert "without sending any event" in message
    assert "context" in message


def test_require_done_false_accepts_a_cut_stream() -> None:
    chunks, parser = parse(
        frame(chunk({"content": "a"})) + frame(chunk({"content": "b"})), require_done=False
    )
    assert [c.text for c in chunks] == ["a", "b"]
    assert parser.done
    assert result(chunks).text == "ab"
    empty, _ = parse(b"", require_done=False)
    assert empty == []


# ---------------------------------------------------------------- keep-alives and vendor events


def test_keepalives_and_ping_events_are_ignored() -> None:
    data = (
        b":\n\n"
        + b": ping - 2025-03-10 01:02:03\n\n"
        + frame(chunk({"content": "a"}))
        + b"event: ping\ndata: {}\n\n"
        + b"event: ping\n\n"
        + b": OPENROUTER PROCESSING\n\n"
        + b"id: 7\nretry: 1000\n"
        + frame(chunk({"content": "b"}))
        + b"event: ping\ndata: not json at all\n\n"
        + b"data:\n\n"  # an empty data line: an event with no payload, not a broken frame
        + b"data: \n\n"
        + DONE
    )
    chunks, _ = parse(data)
    assert [c.text for c in chunks] == ["a", "b"]
    assert result(chunks).text == "ab"


# ---------------------------------------------------------------- a JSON body instead of a stream


@pytest.mark.parametrize(
    ("body", "cls"),
    [
        (b'{"error": {"message": "bad key", "type": "invalid_request_error"}}', BadRequestError),
        (b'{"error": {"message": "bad key", "code": 401}}', AuthenticationError),
        (b'  \n{"object": "error", "message": "bad key", "code": 400}', BadRequestError),
        (b'{"error": {"message": "bad key", "type": "new_kind"}}', APIStreamError),
    ],
)
def test_a_json_error_body_where_a_stream_was_expected(
    body: bytes, cls: type[APIStatusError]
) -> None:
    with pytest.raises(cls) as info:
        parse([body[:7], body[7:]])
    assert type(info.value) is cls
    assert "bad key" in str(info.value)
    assert info.value.raw_body.strip() == body.strip()


@pytest.mark.parametrize("body", [b'{"id": "chatcmpl-1", "choices": []}', b"[1, 2]", b'{"broken'])
def test_a_non_error_json_body_where_a_stream_was_expected(body: bytes) -> None:
    with pytest.raises(APIResponseValidationError) as info:
        parse(body)
    assert info.value.raw_body == body
    assert "event stream" in str(info.value)


# ---------------------------------------------------------------- split invariance


SPLIT_STREAM = (
    b": keep-alive\r\n\r\n"
    + frame(chunk({"role": "assistant", "content": ""}), eol=b"\r\n")
    + frame(chunk({"content": "h\u00e9llo \u2713 "}))
    + b"data: "
    + json.dumps(chunk({"content": "\U0001f389"}), ensure_ascii=False).encode()
    + b"\r\n\r\n"
    + frame(
        chunk(
            {
                "tool_calls": [
                    {
                        "index": 0,
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "f", "arguments": '{"a"'},
                    }
                ]
            }
        )
    )
    + frame(chunk({"tool_calls": [{"index": 0, "function": {"arguments": ": 1}"}}]}), eol=b"\r")
    + b"event: ping\ndata: {}\n\n"
    + frame(chunk({}, finish="tool_calls"))
    + frame({**chunk(), "choices": [], "usage": USAGE})
    + DONE
)


@settings(max_examples=200, deadline=None)
@given(cuts=st.lists(st.integers(1, len(SPLIT_STREAM) - 1), max_size=12, unique=True))
def test_any_split_gives_the_same_chunks(cuts: list[int]) -> None:
    bounds = [0, *sorted(cuts), len(SPLIT_STREAM)]
    pieces = [SPLIT_STREAM[a:b] for a, b in itertools.pairwise(bounds)]
    chunks, _ = parse(pieces)
    assert [c.to_dict() for c in chunks] == EXPECTED_SPLIT_CHUNKS
    assert result(chunks).to_dict() == EXPECTED_SPLIT_RESULT


@pytest.mark.parametrize(
    "body",
    [b" data: [DONE]\n\n", b"  \n" + OPENAI_STREAM, b"\n\n" + OPENAI_STREAM, b' {"error": {}}'],
)
def test_leading_whitespace_read_alone_parses_as_in_one_read(body: bytes) -> None:
    def outcome(pieces: list[bytes]) -> Any:
        try:
            return [c.to_dict() for c in parse(pieces)[0]]
        except Exception as exc:  # the kind of failure is what is compared
            return type(exc).__name__

    cut = len(body) - len(body.lstrip())
    assert outcome([body[:cut], body[cut:]]) == outcome([body])


def test_byte_by_byte_feeding() -> None:
    chunks, _ = parse([SPLIT_STREAM[i : i + 1] for i in range(len(SPLIT_STREAM))])
    assert [c.to_dict() for c in chunks] == EXPECTED_SPLIT_CHUNKS
    completion = result(chunks)
    assert completion.text == "h\u00e9llo \u2713 \U0001f389"
    assert completion.choices[0].message.tool_calls[0].function.arguments == '{"a": 1}'


_whole, _whole_parser = parse(SPLIT_STREAM)
EXPECTED_SPLIT_CHUNKS = [c.to_dict() for c in _whole]
EXPECTED_SPLIT_RESULT = result(_whole).to_dict()
assert len(EXPECTED_SPLIT_CHUNKS) == 7


# ---------------------------------------------------------------- the accumulator


def test_tool_call_arguments_concatenate_by_index_openai_style() -> None:
    data = (
        frame(chunk({"role": "assistant", "content": None}))
        + frame(
            chunk(
                {
                    "tool_calls": [
                        {
                            "index": 0,
                            "id": "call_a",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": ""},
                        }
                    ]
                }
            )
        )
        + frame(chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city":'}}]}))
        + frame(
            chunk(
                {
                    "tool_calls": [
                        {
                            "index": 1,
                            "id": "call_b",
                            "type": "function",
                            "function": {"name": "get_time", "arguments": "{}"},
                        }
                    ]
                }
            )
        )
        + frame(chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]}))
        + frame(chunk({}, finish="tool_calls"))
        + DONE
    )
    chunks, _ = parse(data)
    message = result(chunks).choices[0].message
    assert message.content is None
    first, second = message.tool_calls
    assert isinstance(first, ChatCompletionMessageToolCall)
    assert (first.id, first.function.name, first.function.arguments) == (
        "call_a",
        "get_weather",
        '{"city":"Paris"}',
    )
    assert (second.id, second.function.name, second.function.arguments) == (
        "call_b",
        "get_time",
        "{}",
    )
    assert result(chunks).choices[0].finish_reason == "tool_calls"


def test_llama_cpp_repeated_tool_call_id_and_name_are_not_concatenated() -> None:
    pieces = ['{ "city"', ': "Par', 'is" }']
    data = frame(chunk({"role": "assistant"}), compact=False)
    for piece in pieces:
        call = {
            "index": 0,
            "id": "call__0_get_weather_cmpl-1",
            "type": "function",
            "function": {"name": "get_weather", "arguments": piece},
        }
        data += frame(chunk({"tool_calls": [call]}), compact=False)
    data += frame(chunk({}, finish="tool_calls"), compact=False) + DONE
    chunks, _ = parse(data)
    (call,) = result(chunks).choices[0].message.tool_calls
    assert call.id == "call__0_get_weather_cmpl-1"
    assert call.type == "function"
    assert call.function.name == "get_weather"
    assert call.function.arguments == '{ "city": "Paris" }'


def test_custom_tool_call_input_is_concatenated() -> None:
    data = (
        frame(
            chunk(
                {
                    "tool_calls": [
                        {
                            "index": 0,
                            "id": "c1",
                            "type": "custom",
                            "custom": {"name": "sql", "input": "SEL"},
                        }
                    ]
                }
            )
        )
        + frame(chunk({"tool_calls": [{"index": 0, "custom": {"input": "ECT 1"}}]}))
        + DONE
    )
    chunks, _ = parse(data)
    (call,) = result(chunks).choices[0].message.to_dict()["tool_calls"]
    assert call == {"id": "c1", "type": "custom", "custom": {"name": "sql", "input": "SELECT 1"}}


def test_ollama_repeated_role_is_not_concatenated() -> None:
    data = b"".join(
        frame(chunk({"role": "assistant", "content": piece})) for piece in ["The", " sky", " is"]
    )
    chunks, _ = parse(
        data + frame(chunk({"role": "assistant", "content": ""}, finish="stop")) + DONE
    )
    message = result(chunks).choices[0].message
    assert message.role == "assistant"
    assert message.content == "The sky is"


def test_interleaved_choices_are_kept_apart() -> None:
    data = (
        frame(chunk({"role": "assistant", "content": "B1"}, index=1))
        + frame(chunk({"role": "assistant", "content": "A1"}, index=0))
        + frame(chunk({"content": "A2"}, index=0))
        + frame({**chunk(), "choices": [], "usage": {**USAGE, "completion_tokens": 1}})
        + frame(chunk({"content": "B2"}, index=1))
        + frame(chunk({}, index=1, finish="length"))
        + frame(chunk({}, index=0, finish="stop"))
        + frame({**chunk(), "choices": [], "usage": USAGE})
        + DONE
    )
    chunks, _ = parse(data)
    assert [c.text for c in chunks] == ["", "A1", "A2", "", "", "", "", ""]
    completion = result(chunks)
    assert [c.index for c in completion.choices] == [0, 1]
    assert [c.message.content for c in completion.choices] == ["A1A2", "B1B2"]
    assert [c.finish_reason for c in completion.choices] == ["stop", "length"]
    assert completion.text == "A1A2"
    assert completion.usage.to_dict() == USAGE


def test_usage_only_final_chunk_lands_in_the_completion() -> None:
    chunks, _ = parse(OPENAI_STREAM)
    assert result(chunks).usage.to_dict() == USAGE


def test_no_usage_when_the_server_sends_none() -> None:
    chunks, _ = parse(frame(chunk({"content": "a"})) + DONE)
    assert result(chunks).usage is None
    assert "usage" not in result(chunks).to_dict()


def test_groq_usage_under_x_groq() -> None:
    groq_usage = {
        "queue_time": 0.017,
        "prompt_tokens": 11,
        "prompt_time": 0.0008,
        "completion_tokens": 8,
        "completion_time": 0.0067,
        "total_tokens": 19,
        "total_time": 0.0075,
    }
    data = (
        frame(chunk({"role": "assistant", "content": ""}, x_groq={"id": "req_01"}))
        + frame(chunk({"content": "Hi"}))
        + frame(chunk({}, finish="stop", x_groq={"id": "req_01", "usage": groq_usage}))
        + DONE
    )
    chunks, _ = parse(data)
    usage = result(chunks).usage
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (11, 8, 19)
    assert usage.extra["queue_time"] == 0.017


def test_reasoning_content_is_collected_into_message_extra() -> None:
    data = (
        frame(chunk({"role": "assistant", "content": None, "reasoning_content": ""}))
        + frame(chunk({"content": None, "reasoning_content": "Compare "}))
        + frame(chunk({"content": None, "reasoning_content": "the tenths."}))
        + frame(chunk({"content": "9.8", "reasoning_content": None}))
        + frame(chunk({"content": " is larger"}, finish="stop"))
        + DONE
    )
    chunks, _ = parse(data)
    assert chunks[1].choices[0].delta.extra["reasoning_content"] == "Compare "
    message = result(chunks).choices[0].message
    assert message.content == "9.8 is larger"
    assert message.extra["reasoning_content"] == "Compare the tenths."


def test_unknown_fields_of_deltas_choices_and_chunks_reach_the_completion() -> None:
    accumulator = ChatCompletionAccumulator()
    pieces = [
        {"index": 0, "type": "reasoning.text", "text": "a", "format": "f"},
        {"index": 0, "type": "reasoning.text", "text": "b", "format": "f", "signature": "s"},
        {"index": 1, "type": "reasoning.encrypted", "data": "xyz"},
        "plain",
    ]
    accumulator.add(
        {
            "id": "c1",
            "timings": {"n": 1},
            "blank": {"x": 1},
            "choices": [
                {
                    "index": 0,
                    "delta": {"reasoning": "a", "reasoning_details": pieces[:1], "score": 1},
                    "content_filter_results": {"hate": "safe"},
                }
            ],
        }
    )
    accumulator.add(
        {
            "id": "c1",
            "timings": {"n": 2},
            "blank": {},  # empty: does not blank what an earlier chunk said
            "choices": [
                {
                    "index": 0,
                    "delta": {"reasoning": "b", "reasoning_details": pieces[1:], "score": None},
                    "content_filter_results": {},
                    "stop_reason": 0,
                }
            ],
        }
    )
    completion = accumulator.result()
    message = completion.choices[0].message
    assert message is not None
    merged = {"index": 0, "type": "reasoning.text", "text": "ab", "format": "f", "signature": "s"}
    assert message.extra == {
        "reasoning": "ab",
        "reasoning_details": [merged, pieces[2], "plain"],  # by index, as tool calls
        "score": 1,
    }
    assert pieces[0]["text"] == "a"  # the chunks are left as they came
    assert completion.choices[0].extra == {
        "content_filter_results": {"hate": "safe"},
        "stop_reason": 0,
    }
    assert completion.extra == {"timings": {"n": 2}, "blank": {"x": 1}}
    assert completion.to_dict()["timings"] == {"n": 2}


def test_azure_empty_first_chunk_does_not_blank_the_id_and_model() -> None:
    azure_first = {
        "choices": [],
        "created": 0,
        "id": "",
        "model": "",
        "object": "",
        "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": {}}],
    }
    # With the asynchronous content filter, Azure also sends a blank-header chunk at the end.
    azure_filter_tail = {
        "choices": [
            {
                "index": 0,
                "finish_reason": None,
                "content_filter_offsets": {"check_offset": 0, "start_offset": 0, "end_offset": 1},
                "content_filter_results": {},
            }
        ],
        "created": 0,
        "id": "",
        "model": "",
        "object": "",
    }
    data = frame(azure_first) + frame(chunk({"content": "x"})) + frame(azure_filter_tail) + DONE
    chunks, _ = parse(data)
    assert result(chunks).text == "x"
    completion = result(chunks)
    assert completion.id == "chatcmpl-1"
    assert completion.model == "gpt-4o-mini"
    assert completion.created == 1741569952


def test_accumulated_result_is_available_mid_stream() -> None:
    parser = ChunkParser(request_id=None, max_line_bytes=MAX_LINE)
    seen = parser.feed(frame(chunk({"content": "a"})))
    assert result(seen).text == "a"
    seen += parser.feed(frame(chunk({"content": "b"})))
    assert result(seen).text == "ab"


def test_request_id_is_exposed() -> None:
    assert ChunkParser(request_id="req_x", max_line_bytes=MAX_LINE).request_id == "req_x"


def test_logprobs_are_concatenated_per_choice() -> None:
    def token(text: str) -> dict[str, Any]:
        return {"token": text, "logprob": -0.5, "bytes": None, "top_logprobs": []}

    data = (
        frame(
            {
                **chunk({"content": "He"}),
                "choices": [
                    {"index": 0, "delta": {"content": "He"}, "logprobs": {"content": [token("He")]}}
                ],
            }
        )
        + frame(
            {
                **chunk(),
                "choices": [
                    {"index": 0, "delta": {"content": "y"}, "logprobs": {"content": [token("y")]}}
                ],
            }
        )
        + frame(chunk({}, finish="stop"))
        + DONE
    )
    chunks, _ = parse(data)
    choice = result(chunks).choices[0]
    assert [t.token for t in choice.logprobs.content] == ["He", "y"]
    assert choice.message.content == "Hey"


def test_streamed_audio_output_is_merged_like_text() -> None:
    data = (
        frame(chunk({"role": "assistant", "audio": {"id": "audio_1", "transcript": "Hel"}}))
        + frame(chunk({"audio": {"data": "UklG", "transcript": "lo"}}))
        + frame(chunk({"audio": {"data": "RiQA", "expires_at": 1741570000}}, finish="stop"))
        + DONE
    )
    chunks, _ = parse(data)
    audio = result(chunks).choices[0].message.audio
    assert audio is not None
    assert (audio.id, audio.transcript, audio.data, audio.expires_at) == (
        "audio_1",
        "Hello",
        "UklGRiQA",
        1741570000,
    )
