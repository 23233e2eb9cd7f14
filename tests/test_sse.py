"""Tests of chatlib.sse against WHATWG HTML 9.2.6 "Interpreting an event stream"."""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chatlib.errors import BodyTooLargeError, InvalidArgumentError
from chatlib.sse import ServerSentEvent, SSEDecoder

# ---------------------------------------------------------------- helpers


def ev(
    data: str, event: str = "message", id: str | None = None, retry: int | None = None
) -> ServerSentEvent:
    return ServerSentEvent(data=data, event=event, id=id, retry=retry)


def decode_all(stream: bytes, **kwargs: int | None) -> list[ServerSentEvent]:
    decoder = SSEDecoder(**kwargs)
    events = decoder.feed(stream)
    assert decoder.flush() == []
    return events


def decode_pieces(pieces: Iterable[bytes], **kwargs: int | None) -> list[ServerSentEvent]:
    decoder = SSEDecoder(**kwargs)
    events: list[ServerSentEvent] = []
    for piece in pieces:
        events.extend(decoder.feed(piece))
    assert decoder.flush() == []
    return events


def byte_by_byte(stream: bytes) -> list[bytes]:
    return [stream[i : i + 1] for i in range(len(stream))]


def reference_events(stream: bytes) -> list[ServerSentEvent]:
    """The standard's algorithm, transcribed as directly as possible (slow and obvious).

    Decode the whole stream as UTF-8 (replacing errors, dropping one leading BOM), split
    it into lines at CRLF / LF / CR, discard the unterminated last line, then apply the
    field rules line by line.
    """
    text = stream.decode("utf-8", "replace")
    if text.startswith("\ufeff"):
        text = text[1:]
    lines: list[str] = []
    current = ""
    i = 0
    while i < len(text):
        char = text[i]
        if char == "\r":
            lines.append(current)
            current = ""
            if text[i + 1 : i + 2] == "\n":
                i += 1
        elif char == "\n":
            lines.append(current)
            current = ""
        else:
            current += char
        i += 1
    # ``current`` is an incomplete line: at the end of the stream it is discarded.

    events: list[ServerSentEvent] = []
    data_buffer = ""
    event_type_buffer = ""
    last_event_id_buffer: str | None = None
    retry: int | None = None
    for line in lines:
        if line == "":
            if data_buffer != "":
                if data_buffer.endswith("\n"):
                    data_buffer = data_buffer[:-1]
                events.append(
                    ServerSentEvent(
                        data=data_buffer,
                        event=event_type_buffer if event_type_buffer != "" else "message",
                        id=last_event_id_buffer,
                        retry=retry,
                    )
                )
            data_buffer = ""
            event_type_buffer = ""
            retry = None
            continue
        if line.startswith(":"):
            continue
        if ":" in line:
            field, value = line.split(":", 1)
            if value.startswith(" "):
                value = value[1:]
        else:
            field, value = line, ""
        if field == "event":
            event_type_buffer = value
        elif field == "data":
            data_buffer += value + "\n"
        elif field == "id":
            if "\0" not in value:
                last_event_id_buffer = value
        elif field == "retry" and value != "" and all(c in "0123456789" for c in value):
            retry = int(value)
    return events


# ---------------------------------------------------------------- the standard's examples


def test_spec_stock_example_is_one_event_with_newlines_between_data_lines() -> None:
    stream = b"data: YHOO\ndata: +2\ndata: 10\n\n"
    assert decode_all(stream) == [ev("YHOO\n+2\n10")]


SPEC_ID_EXAMPLE = (
    b": test stream\n\ndata: first event\nid: 1\n\ndata:second event\nid\n\ndata:  third event\n"
)


def test_spec_comment_and_id_example() -> None:
    decoder = SSEDecoder()
    events = decoder.feed(SPEC_ID_EXAMPLE + b"\n")
    assert events == [
        ev("first event", id="1"),
        ev("second event", id=""),  # "id" alone resets the last event ID to ""
        ev(" third event", id=""),  # only one leading space is removed
    ]
    assert decoder.last_event_id == ""


def test_spec_last_event_needs_a_blank_line_end_of_stream_is_not_enough() -> None:
    decoder = SSEDecoder()
    events = decoder.feed(SPEC_ID_EXAMPLE)
    assert [e.data for e in events] == ["first event", "second event"]
    assert decoder.flush() == []


def test_spec_data_without_value_example() -> None:
    stream = b"data\n\ndata\ndata\n\ndata:"
    assert decode_all(stream) == [ev(""), ev("\n")]


def test_spec_space_after_colon_is_optional() -> None:
    events = decode_all(b"data:test\n\ndata: test\n\n")
    assert events == [ev("test"), ev("test")]


# ---------------------------------------------------------------- line ends


@pytest.mark.parametrize(
    "newline",
    [b"\n", b"\r", b"\r\n"],
    ids=["LF", "CR", "CRLF"],
)
def test_each_line_end_works(newline: bytes) -> None:
    stream = newline.join([b"event: add", b"data: a", b"data: b", b"", b"data: c", b"", b""])
    assert decode_all(stream) == [ev("a\nb", event="add"), ev("c")]
    assert decode_pieces(byte_by_byte(stream)) == [ev("a\nb", event="add"), ev("c")]


def test_mixed_line_ends_in_one_stream() -> None:
    stream = b"data: a\r\ndata: b\rdata: c\n\r\ndata: d\r\r\n\n"
    # "\r\r\n\n": CR ends "data: d", CRLF is a blank line (dispatch), LF another blank line.
    assert decode_all(stream) == [ev("a\nb\nc"), ev("d")]


def test_crlf_split_across_feeds_is_one_line_end() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\r") == []
    # If this LF were a line end of its own, it would be a blank line and dispatch "a".
    assert decoder.feed(b"\n") == []
    assert decoder.feed(b"data: b\r") == []
    assert decoder.feed(b"\n\r") == [ev("a\nb")]
    assert decoder.feed(b"\n") == []  # the LF of that CRLF: not another blank line


def test_lone_cr_completes_an_event_in_the_same_feed() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: x\r\r") == [ev("x")]
    assert decoder.feed(b"data: y\n\r") == [ev("y")]


def test_a_cr_followed_by_more_bytes_in_the_same_feed_does_not_swallow_a_later_lf() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\rdata: b") == []
    assert decoder.feed(b"\n\n") == [ev("a\nb")]


def test_a_cr_then_a_non_lf_byte_in_the_next_feed() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\r") == []
    assert decoder.feed(b"\r") == [ev("a")]
    assert decoder.feed(b"data: b\r") == []
    assert decoder.feed(b"data: c\r\r") == [ev("b\nc")]


def test_bytearray_and_memoryview_chunks_are_accepted() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(bytearray(b"data: a\n")) == []  # type: ignore[arg-type]
    assert decoder.feed(memoryview(b"\n")) == [ev("a")]  # type: ignore[arg-type]


# ---------------------------------------------------------------- BOM


def test_leading_bom_is_stripped() -> None:
    assert decode_all(b"\xef\xbb\xbfdata: x\n\n") == [ev("x")]


@pytest.mark.parametrize("cut", [1, 2, 3])
def test_leading_bom_split_across_feeds_is_stripped(cut: int) -> None:
    stream = b"\xef\xbb\xbfdata: x\n\n"
    assert decode_pieces([stream[:cut], stream[cut:]]) == [ev("x")]
    assert decode_pieces(byte_by_byte(stream)) == [ev("x")]


def test_bom_is_stripped_only_once_at_stream_start() -> None:
    # A second BOM is part of the line: the field becomes "\ufeffdata", an unknown field.
    assert decode_all(b"\xef\xbb\xbf\xef\xbb\xbfdata: x\n\ndata: y\n\n") == [ev("y")]
    # Not at the start of the stream: not stripped either.
    assert decode_all(b"data: x\n\n\xef\xbb\xbfdata: y\n\n") == [ev("x")]


def test_bom_in_a_data_value_is_kept() -> None:
    assert decode_all(b"data: \xef\xbb\xbfx\n\n") == [ev("\ufeffx")]


def test_partial_bom_is_not_a_bom() -> None:
    # EF BB then "data": an invalid sequence glued to the field name, so no event.
    assert decode_all(b"\xef\xbbdata: x\n\ndata: y\n\n") == [ev("y")]
    assert decode_pieces([b"\xef", b"\xbb", b"data: x\n\ndata: y\n\n"]) == [ev("y")]


def test_bom_is_stripped_again_after_flush_starts_a_new_stream() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"\xef\xbb\xbfdata: a\n\n") == [ev("a")]
    decoder.flush()
    assert decoder.feed(b"\xef\xbb\xbfdata: b\n\n") == [ev("b")]


# ---------------------------------------------------------------- comments and fields


def test_comments_and_keep_alives_before_the_first_event_are_ignored() -> None:
    stream = (
        b":\n"
        b": ping - 2024-05-01 12:00:00.000000+00:00\r\n\r\n"
        b": OPENROUTER PROCESSING\n\n"
        b"data: first\n"
        b": a comment inside an event does not end it\n"
        b"data: second\n\n"
    )
    assert decode_all(stream) == [ev("first\nsecond")]


def test_field_without_colon_has_an_empty_value() -> None:
    assert decode_all(b"data\n\n") == [ev("")]
    assert decode_all(b"event: x\nevent\ndata: y\n\n") == [ev("y")]  # event "" -> "message"


def test_event_type_defaults_to_message_and_can_be_set() -> None:
    stream = b"data: a\n\nevent: delta\ndata: b\n\ndata: c\n\nevent:\ndata: d\n\n"
    assert decode_all(stream) == [ev("a"), ev("b", event="delta"), ev("c"), ev("d")]


def test_event_type_is_taken_literally_after_one_space() -> None:
    assert decode_all(b"event:  spaced \ndata: x\n\n") == [ev("x", event=" spaced ")]


def test_only_the_first_colon_separates_field_and_value() -> None:
    stream = b'data: {"a": "b:c"}\n\nevent:x:y\ndata::\n\n'
    assert decode_all(stream) == [ev('{"a": "b:c"}'), ev(":", event="x:y")]


def test_field_names_are_case_sensitive_and_exact() -> None:
    stream = b"Data: a\ndata : b\n data: c\nDATA: d\ndata: e\n\n"
    assert decode_all(stream) == [ev("e")]


def test_unknown_fields_are_ignored() -> None:
    stream = b"foo: bar\nevent: e\nx\ndata: d\nbaz:\n\n"
    assert decode_all(stream) == [ev("d", event="e")]


def test_block_without_data_dispatches_nothing_and_resets_event_type() -> None:
    stream = b"event: foo\n\ndata: x\n\nevent: bar\nid: 3\n\n"
    assert decode_all(stream) == [ev("x")]


def test_trailing_whitespace_in_data_is_kept() -> None:
    assert decode_all(b"data: a \t\ndata:\n\n") == [ev("a \t\n")]


# ---------------------------------------------------------------- id


def test_last_event_id_persists_across_events() -> None:
    decoder = SSEDecoder()
    assert decoder.last_event_id is None
    events = decoder.feed(b"data: a\n\nid: 7\ndata: b\n\ndata: c\n\n")
    assert events == [ev("a"), ev("b", id="7"), ev("c", id="7")]
    assert decoder.last_event_id == "7"


def test_id_set_in_a_block_that_dispatches_nothing_persists() -> None:
    assert decode_all(b"id: 42\n\ndata: x\n\n") == [ev("x", id="42")]


def test_id_alone_resets_the_id_to_empty_string() -> None:
    decoder = SSEDecoder()
    events = decoder.feed(b"id: 1\ndata: a\n\nid\ndata: b\n\nid:\ndata: c\n\n")
    assert events == [ev("a", id="1"), ev("b", id=""), ev("c", id="")]
    assert decoder.last_event_id == ""


def test_id_containing_nul_is_ignored() -> None:
    decoder = SSEDecoder()
    events = decoder.feed(b"id: 1\n\nid: 2\x003\ndata: x\n\n")
    assert events == [ev("x", id="1")]
    assert decoder.last_event_id == "1"


def test_id_keeps_everything_after_the_one_space() -> None:
    assert decode_all(b"id:  a b \ndata: x\n\n") == [ev("x", id=" a b ")]


def test_last_event_id_survives_flush() -> None:
    decoder = SSEDecoder()
    decoder.feed(b"id: 9\ndata: x\n\nid: 10\n")
    assert decoder.last_event_id == "10"  # the buffer is set as soon as the field is read
    decoder.flush()
    assert decoder.last_event_id == "10"
    assert decoder.feed(b"data: y\n\n") == [ev("y", id="10")]


# ---------------------------------------------------------------- retry


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b"retry: 5", 5),
        (b"retry:5", 5),
        (b"retry: 3000", 3000),
        (b"retry: 0", 0),
        (b"retry: 007", 7),
        (b"retry:  5", None),  # value " 5": only one space is removed, so not all digits
        (b"retry: 12a", None),
        (b"retry: -1", None),
        (b"retry: 1.5", None),
        (b"retry: +5", None),
        (b"retry: 1_000", None),
        (b"retry: 5 ", None),
        (b"retry:", None),
        (b"retry", None),
        ("retry: \u0665".encode(), None),  # ARABIC-INDIC DIGIT FIVE is not an ASCII digit
        ("retry: \uff15".encode(), None),  # FULLWIDTH DIGIT FIVE neither
    ],
)
def test_retry_must_be_ascii_digits(line: bytes, expected: int | None) -> None:
    assert decode_all(line + b"\ndata: x\n\n") == [ev("x", retry=expected)]


def test_retry_belongs_to_its_own_block_only() -> None:
    stream = b"retry: 10\ndata: a\n\ndata: b\n\nretry: 20\n\ndata: c\n\n"
    assert decode_all(stream) == [ev("a", retry=10), ev("b"), ev("c")]


def test_invalid_retry_does_not_clear_a_valid_one_last_valid_wins() -> None:
    stream = b"retry: 10\nretry: x\ndata: a\n\nretry: 1\nretry: 2\ndata: b\n\n"
    assert decode_all(stream) == [ev("a", retry=10), ev("b", retry=2)]


def test_retry_with_huge_number_of_digits() -> None:
    huge = b"9" * 5000  # more digits than int() may convert: ignored, on every Python
    assert decode_all(b"retry: " + huge + b"\ndata: x\n\n") == [ev("x")]
    padded = b"0" * 5000 + b"7"
    assert decode_all(b"retry: " + padded + b"\ndata: x\n\n") == [ev("x", retry=7)]


# ---------------------------------------------------------------- end of stream


def test_flush_discards_an_incomplete_event_and_resets() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\n\nevent: e\ndata: b\ndata: partial") == [ev("a")]
    assert decoder.flush() == []
    assert decoder.feed(b"data: c\n\n") == [ev("c")]  # no "b", no event type "e"


def test_flush_never_raises_and_is_idempotent() -> None:
    decoder = SSEDecoder(max_line_bytes=10)
    assert decoder.flush() == []
    assert decoder.flush() == []


def test_flush_forgets_a_pending_cr() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\r") == []
    decoder.flush()
    # A new stream: its leading LF is a blank line of its own, not the end of a CRLF.
    assert decoder.feed(b"\ndata: b\n\n") == [ev("b")]


def test_pending_event_with_unterminated_last_line() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: {}\n\ndata: [DONE]") == [ev("{}")]
    assert decoder.pending_event() == ev("[DONE]")
    assert decoder.pending_event() == ev("[DONE]")  # no state change
    assert decoder.feed(b"\n\n") == [ev("[DONE]")]
    assert decoder.pending_event() is None


@pytest.mark.parametrize("tail", [b"data: [DONE]\n", b"data: [DONE]\r", b"data: [DONE]\r\n"])
def test_pending_event_with_terminated_line_but_no_blank_line(tail: bytes) -> None:
    decoder = SSEDecoder()
    assert decoder.feed(tail) == []
    assert decoder.pending_event() == ev("[DONE]")


def test_pending_event_joins_data_lines_and_sees_id_event_retry() -> None:
    decoder = SSEDecoder()
    decoder.feed(b"id: 5\n\nevent: e\nretry: 9\ndata: a\ndata: b")
    assert decoder.pending_event() == ev("a\nb", event="e", id="5", retry=9)
    assert decoder.last_event_id == "5"
    assert decoder.feed(b"\n\n") == [ev("a\nb", event="e", id="5", retry=9)]


def test_pending_event_counts_the_unterminated_line_without_committing_it() -> None:
    decoder = SSEDecoder()
    decoder.feed(b"data: a\nid: 77")
    assert decoder.pending_event() == ev("a", id="77")
    assert decoder.last_event_id is None  # the unterminated id line is not applied
    decoder.feed(b"8\n\n")
    assert decoder.last_event_id == "778"


@pytest.mark.parametrize(
    "stream",
    [b"", b"data: a\n\n", b": keep-alive", b"event: x\n", b"id: 1", b"data: a\n\n\xef\xbb"],
)
def test_pending_event_is_none_when_nothing_would_dispatch(stream: bytes) -> None:
    decoder = SSEDecoder()
    decoder.feed(stream)
    assert decoder.pending_event() is None


def test_pending_event_after_flush_is_none() -> None:
    decoder = SSEDecoder()
    decoder.feed(b"data: x")
    decoder.flush()
    assert decoder.pending_event() is None


# ---------------------------------------------------------------- UTF-8


def test_invalid_utf8_becomes_replacement_characters() -> None:
    stream = b"data: a\xffb\xc3(\xe2\x82\n\nevent: \xfe\ndata: x\n\nid: \xe2\ndata: y\n\n"
    assert decode_all(stream) == [
        ev("a\ufffdb\ufffd(\ufffd"),
        ev("x", event="\ufffd"),
        ev("y", id="\ufffd"),
    ]


def test_multibyte_characters_split_across_feeds_decode_correctly() -> None:
    text = "héllo € 😀 日本語"
    stream = b"data: " + text.encode() + b"\n\n"
    assert decode_pieces(byte_by_byte(stream)) == [ev(text)]
    middle_of_euro = stream.index("€".encode()) + 1
    assert decode_pieces([stream[:middle_of_euro], stream[middle_of_euro:]]) == [ev(text)]


def test_nul_in_data_is_kept() -> None:
    assert decode_all(b"data: a\x00b\n\n") == [ev("a\x00b")]


# ---------------------------------------------------------------- limits


def test_line_longer_than_the_limit_without_newline_raises() -> None:
    decoder = SSEDecoder(max_line_bytes=1000)
    decoder.feed(b"data: " + b"x" * 900)
    with pytest.raises(BodyTooLargeError) as info:
        decoder.feed(b"y" * 200)
    message = str(info.value)
    assert "line" in message
    assert "max_line_bytes" in message
    assert "1000" in message
    assert info.value.raw_body == (b"data: " + b"x" * 900 + b"y" * 200)[:1024]


def test_complete_line_longer_than_the_limit_raises_and_raw_body_is_capped() -> None:
    line = b"data: " + b"z" * 5000
    with pytest.raises(BodyTooLargeError) as info:
        SSEDecoder(max_line_bytes=4096).feed(line + b"\n\n")
    assert len(info.value.raw_body) == 1024
    assert line.startswith(info.value.raw_body)


def test_comment_line_longer_than_the_limit_raises_too() -> None:
    with pytest.raises(BodyTooLargeError):
        SSEDecoder(max_line_bytes=100).feed(b":" + b"c" * 200 + b"\n")


def test_many_data_lines_adding_up_past_the_limit_raise() -> None:
    decoder = SSEDecoder(max_line_bytes=1000)
    line = b"data: " + b"d" * 99 + b"\n"  # 100 bytes of data buffer per line, value + "\n"
    decoder.feed(line * 10)  # exactly 1000: fine
    with pytest.raises(BodyTooLargeError) as info:
        decoder.feed(line)
    message = str(info.value)
    assert "data" in message
    assert "max_line_bytes" in message
    assert info.value.raw_body == line[:-1]


def test_data_buffer_limit_is_per_event() -> None:
    line = b"data: " + b"d" * 99 + b"\n"
    stream = (line * 10 + b"\n") * 5
    events = decode_all(stream, max_line_bytes=1000)
    assert events == [ev("\n".join(["d" * 99] * 10))] * 5


def test_content_just_under_the_limit_is_accepted() -> None:
    limit = 1000
    line = b"data: " + b"x" * (limit - 6)  # a line of exactly `limit` bytes
    assert len(line) == limit
    stream = line + b"\r\n\r\n"
    expected = [ev("x" * (limit - 6))]
    assert decode_all(stream, max_line_bytes=limit) == expected
    assert decode_pieces(byte_by_byte(stream), max_line_bytes=limit) == expected
    decoder = SSEDecoder(max_line_bytes=limit)
    decoder.feed(line)  # unterminated but not over the limit
    assert decoder.pending_event() == expected[0]


def test_no_limit_with_none() -> None:
    value = "v" * 100_000
    assert decode_all(f"data: {value}\n\n".encode(), max_line_bytes=None) == [ev(value)]


@pytest.mark.parametrize("bad", [0, -1, True, 1.5, "10"])
def test_invalid_limit_is_rejected(bad: object) -> None:
    with pytest.raises(InvalidArgumentError):
        SSEDecoder(max_line_bytes=bad)  # type: ignore[arg-type]


# ---------------------------------------------------------------- linear cost


def test_one_mib_line_fed_one_byte_at_a_time_is_fast() -> None:
    value = b"a" * (1024 * 1024)
    stream = b"data: " + value + b"\n\n"
    decoder = SSEDecoder()
    events: list[ServerSentEvent] = []
    started = time.perf_counter()
    for i in range(len(stream)):
        events.extend(decoder.feed(stream[i : i + 1]))
    elapsed = time.perf_counter() - started
    assert events == [ev(value.decode())]
    assert elapsed < 10, f"{elapsed:.1f}s: feeding is not linear"


def test_one_mib_line_fed_in_one_piece() -> None:
    value = "é" * (512 * 1024)  # 1 MiB of UTF-8
    started = time.perf_counter()
    events = decode_all(f"data: {value}\r\n\r\n".encode())
    assert time.perf_counter() - started < 10
    assert events == [ev(value)]


def test_many_small_events_fed_one_byte_at_a_time_is_fast() -> None:
    stream = b"data: x\r\n\r\n" * 50_000
    started = time.perf_counter()
    events = decode_pieces(byte_by_byte(stream))
    assert time.perf_counter() - started < 10
    assert events == [ev("x")] * 50_000


# ---------------------------------------------------------------- an OpenAI stream


def _openai_stream() -> tuple[bytes, list[dict[str, object]]]:
    base = {
        "id": "chatcmpl-123",
        "object": "chat.completion.chunk",
        "created": 1694268190,
        "model": "gpt-4o-mini",
        "system_fingerprint": "fp_44709d6fcb",
    }
    deltas: list[dict[str, object]] = [
        {"role": "assistant", "content": ""},
        {"content": "Hello"},
        {"content": " wörld 🌍"},
        {},
    ]
    chunks = [
        {
            **base,
            "choices": [
                {
                    "index": 0,
                    "delta": delta,
                    "logprobs": None,
                    "finish_reason": "stop" if not delta else None,
                }
            ],
        }
        for delta in deltas
    ]
    body = b": OPENROUTER PROCESSING\n\n"
    body += b"".join(
        b"data: " + json.dumps(c, ensure_ascii=False).encode() + b"\n\n" for c in chunks
    )
    body += b"data: [DONE]\n\n"
    return body, chunks


def test_typical_openai_stream_whole_and_byte_by_byte() -> None:
    body, chunks = _openai_stream()
    for events in (decode_all(body), decode_pieces(byte_by_byte(body))):
        assert [e.event for e in events] == ["message"] * (len(chunks) + 1)
        assert [json.loads(e.data) for e in events[:-1]] == chunks
        assert events[-1] == ev("[DONE]")


def test_typical_openai_stream_with_crlf_in_odd_pieces() -> None:
    body, chunks = _openai_stream()
    body = body.replace(b"\n", b"\r\n")
    pieces = [body[i : i + 7] for i in range(0, len(body), 7)]
    events = decode_pieces(pieces)
    assert [json.loads(e.data) for e in events[:-1]] == chunks
    assert events[-1].data == "[DONE]"


# ---------------------------------------------------------------- the event value


def test_server_sent_event_value_semantics() -> None:
    a = ServerSentEvent(data="x", event="e", id="1", retry=5)
    assert a == ServerSentEvent(data="x", event="e", id="1", retry=5)
    assert a != ServerSentEvent(data="x", event="e", id="1", retry=None)
    assert a != ServerSentEvent(data="x", event="e", id=None, retry=5)
    assert a != ("e", "x", "1", 5)
    assert hash(a) == hash(ServerSentEvent(data="x", event="e", id="1", retry=5))
    assert repr(a) == "ServerSentEvent(event='e', data='x', id='1', retry=5)"
    assert ServerSentEvent(data="d") == ServerSentEvent("d", "message", None, None)
    with pytest.raises(AttributeError):
        a.other = 1  # type: ignore[attr-defined]  # slotted


# ---------------------------------------------------------------- properties

_TOKENS = [
    b"\r",
    b"\n",
    b"\r\n",
    b"\n\n",
    b":",
    b" ",
    b"  ",
    b"data",
    b"data:",
    b"data: ",
    b"id",
    b"id:",
    b"event",
    b"event:",
    b"retry",
    b"retry:",
    b"message",
    b"x",
    b"1",
    b"5",
    b"12a",
    b"\x00",
    b"\xef\xbb\xbf",
    b"\xef",
    b"\xbb",
    b"\xbf",
    b"\xff",
    b"\xe2\x82",
    b"\xf0\x9f",
    "é".encode(),
    "€".encode(),
    "😀".encode(),
    b"[DONE]",
    b'{"a": 1}',
]

_LINES = [
    b"",
    b"",
    b"data: x",
    b"data:y",
    b"data",
    b"data:  two",
    "data: é€😀".encode(),
    b"data: \xff\xe2\x82",
    b"event: e",
    b"event",
    b"id: 1",
    b"id",
    b"id: \x00",
    b"retry: 5",
    b"retry: 5x",
    b": comment",
    b":",
    b"other: z",
    b"\xef\xbb\xbfdata: bom",
]

# Whole lines with random line ends: a stream that produces many events.
line_streams = st.lists(
    st.tuples(st.sampled_from(_LINES), st.sampled_from([b"\n", b"\r", b"\r\n"])),
    max_size=30,
).map(lambda pairs: b"".join(line + end for line, end in pairs))

streams = st.one_of(
    line_streams,
    st.lists(st.sampled_from(_TOKENS), max_size=60).map(b"".join),
    st.lists(st.one_of(st.sampled_from(_TOKENS), st.binary(max_size=4)), max_size=40).map(b"".join),
)


@st.composite
def split_streams(draw: st.DrawFn) -> tuple[bytes, list[bytes]]:
    stream = draw(streams)
    cuts = sorted(set(draw(st.lists(st.integers(0, len(stream)), max_size=len(stream) + 1))))
    bounds = [0, *cuts, len(stream)]
    return stream, [stream[a:b] for a, b in itertools.pairwise(bounds)]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(split_streams())
def test_any_split_gives_the_reference_events_each_from_the_feed_that_completed_it(
    case: tuple[bytes, list[bytes]],
) -> None:
    stream, pieces = case
    decoder = SSEDecoder()
    seen: list[ServerSentEvent] = []
    fed = b""
    for piece in pieces:
        seen.extend(decoder.feed(piece))
        fed += piece
        # Exactly the events the bytes so far complete: none late, none early.
        assert seen == reference_events(fed)
    assert seen == decode_all(stream)
    assert decoder.flush() == []


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(split_streams())
def test_pending_event_is_what_a_blank_line_would_dispatch(
    case: tuple[bytes, list[bytes]],
) -> None:
    _, pieces = case
    decoder = SSEDecoder()
    fed = b""
    for piece in pieces:
        decoder.feed(piece)
        fed += piece
        # End the unterminated line (if any), then add a blank line. A CR is used so that
        # it cannot merge with a CR already fed into one CRLF.
        ends_line = fed == b"" or fed.endswith((b"\r", b"\n"))
        closing = b"\r" if ends_line else b"\r\r"
        before = reference_events(fed)
        after = reference_events(fed + closing)
        assert len(after) - len(before) <= 1
        expected = after[len(before)] if len(after) > len(before) else None
        assert decoder.pending_event() == expected
    assert decoder.pending_event() == decoder.pending_event()  # no state change


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(split_streams(), st.integers(1, 24))
def test_limit_outcome_does_not_depend_on_the_split(
    case: tuple[bytes, list[bytes]], limit: int
) -> None:
    stream, pieces = case

    def run(parts: list[bytes]) -> tuple[bool, list[ServerSentEvent]]:
        decoder = SSEDecoder(max_line_bytes=limit)
        out: list[ServerSentEvent] = []
        try:
            for part in parts:
                out.extend(decoder.feed(part))
        except BodyTooLargeError:
            return True, out
        return False, out

    whole_raised, whole_events = run([stream])
    split_raised, split_events = run(pieces)
    assert whole_raised == split_raised
    if not whole_raised:
        assert whole_events == split_events == reference_events(stream)
