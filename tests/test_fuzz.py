"""Property tests: whatever bytes a server sends, a stream yields chunks or raises a chatlib
error, nothing else; and the result never depends on how the bytes were split."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chatlib._config import ClientConfig
from chatlib._parse import ChunkParser, parse_completion
from chatlib._stream import StreamState
from chatlib.errors import APIResponseValidationError, ChatLibError, error_from_response

# Small values, so that type confusions (a number where text belongs, a list as an index...)
# come up often rather than once in a million examples.
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-2, 3)
    | st.floats(allow_nan=False, allow_infinity=False, width=16)
    | st.sampled_from(["", "a", "assistant", "stop", "function", "0", "{", "[DONE]"]),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(
            st.sampled_from(["index", "name", "arguments", "x", "type"]), children, max_size=3
        )
    ),
    max_leaves=6,
)

# Objects shaped roughly like chunks, with any value in any slot: the accumulator must cope.
deltas = st.fixed_dictionaries(
    {},
    optional={
        "role": json_values,
        "content": json_values,
        "refusal": json_values,
        "reasoning_content": json_values,
        "tool_calls": st.lists(
            st.fixed_dictionaries(
                {},
                optional={
                    "index": json_values,
                    "id": json_values,
                    "type": json_values,
                    "function": st.fixed_dictionaries(
                        {}, optional={"name": json_values, "arguments": json_values}
                    )
                    | json_values,
                },
            )
            | json_values,
            max_size=3,
        )
        | json_values,
        "function_call": json_values,
    },
)
choices = st.fixed_dictionaries(
    {},
    optional={
        "index": json_values,
        "delta": deltas | json_values,
        "finish_reason": json_values,
        "logprobs": json_values,
    },
)
chunks = st.fixed_dictionaries(
    {},
    optional={
        "id": json_values,
        "object": json_values,
        "created": json_values,
        "model": json_values,
        "choices": st.lists(choices | json_values, max_size=3) | json_values,
        "usage": json_values,
        "error": json_values,
    },
)


def _frame(payload: Any, event: str | None) -> bytes:
    head = f"event: {event}\n".encode() if event else b""
    return head + b"data: " + json.dumps(payload).encode() + b"\n\n"


frames = st.lists(
    st.tuples(chunks | json_values, st.sampled_from([None, None, None, "error", "ping"])).map(
        lambda pair: _frame(*pair)
    )
    | st.binary(max_size=40),
    max_size=6,
)


def _run(pieces: list[bytes], max_line_bytes: int = 4096) -> list[dict[str, Any]] | str:
    """Feed a stream the way the facades do; the chunks handed out, or the error's class."""
    config = ClientConfig.resolve(base_url="http://127.0.0.1:9/v1", max_line_bytes=max_line_bytes)
    parser = ChunkParser(request_id=None, max_line_bytes=config.max_line_bytes)
    state = StreamState(parser, deadline=None, clock=time.monotonic, response_headers={})
    out: list[dict[str, Any]] = []
    try:
        for piece in pieces:
            state.check()
            state.on_bytes(piece)
            while state.ready():
                out.append(state.take().to_dict())
        state.check()
        if not state.finished:
            state.on_eof()
        while state.ready():
            out.append(state.take().to_dict())
        state.check()
        state.accumulated  # noqa: B018 - building the merged answer must not fail either
    except ChatLibError as exc:
        return type(exc).__name__
    return out


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frames, st.booleans(), st.lists(st.integers(0, 10_000), max_size=8))
def test_any_stream_yields_chunks_or_a_chatlib_error_whatever_the_split(
    body: list[bytes], done: bool, cuts: list[int]
) -> None:
    data = b"".join(body) + (b"data: [DONE]\n\n" if done else b"")
    whole = _run([data])  # anything but a ChatLibError escapes and fails the test
    split = _run(_split(data, cuts))
    if isinstance(whole, list) and isinstance(split, list):
        assert split == whole
    else:
        # Chunks that came before a failure are handed out first, so only the error's kind
        # is compared: a split can make a bad frame arrive in a later read, never another one.
        assert isinstance(whole, str) and isinstance(split, str)
        assert split == whole


# Chunk-shaped frames whose nested objects have the right shape and whose leaves are any
# scalar, so a stream gets deep into the merge instead of stopping at a malformed frame.
scalars = st.none() | st.booleans() | st.integers(-1, 2) | st.sampled_from(["", "a", "{", "0"])
tight_deltas = st.fixed_dictionaries(
    {},
    optional={
        "role": scalars,
        "content": scalars,
        "refusal": scalars,
        "reasoning_content": scalars,
        "tool_calls": st.lists(
            st.fixed_dictionaries(
                {},
                optional={
                    "index": scalars,
                    "id": scalars,
                    "type": scalars,
                    "function": st.fixed_dictionaries(
                        {}, optional={"name": scalars, "arguments": scalars}
                    ),
                },
            ),
            max_size=2,
        ),
        "function_call": st.fixed_dictionaries(
            {}, optional={"name": scalars, "arguments": scalars}
        ),
    },
)
tight_chunks = st.fixed_dictionaries(
    {
        "choices": st.lists(
            st.fixed_dictionaries(
                {"delta": tight_deltas}, optional={"index": scalars, "finish_reason": scalars}
            ),
            max_size=2,
        )
    },
    optional={"id": scalars, "model": scalars, "created": scalars},
)
chunk_frames = st.lists(tight_chunks.map(lambda c: _frame(c, None)), max_size=6)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(chunk_frames)
def test_chunk_shaped_frames_with_any_values_merge_or_raise_a_chatlib_error(
    body: list[bytes],
) -> None:
    assert _run([*body, b"data: [DONE]\n\n"]) is not None


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_escape_as_anything_but_a_chatlib_error(data: bytes) -> None:
    _run([data])


@settings(max_examples=300, deadline=None)
@given(chunks | json_values | st.binary(max_size=60))
def test_any_non_streamed_body_parses_or_raises_a_chatlib_error(body: Any) -> None:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    try:
        response = parse_completion(200, {}, raw)
    except ChatLibError:
        return
    response.text  # noqa: B018 - the convenience accessor must not fail on a parsed answer
    response.to_dict()


DEEP = b'{"x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"


def test_json_nested_past_the_recursion_limit_is_a_chatlib_error_everywhere() -> None:
    with pytest.raises(APIResponseValidationError):
        parse_completion(200, {}, DEEP)
    assert _run([b"data: " + DEEP + b"\n\n"], 1 << 20) == "APIResponseValidationError"
    assert (
        _run([DEEP], 1 << 20) == "APIResponseValidationError"
    )  # a JSON body where a stream was due
    error = error_from_response(500, {}, DEEP)
    assert error.status_code == 500 and error.raw_body == DEEP
