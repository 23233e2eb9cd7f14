"""The Batch API file format: request lines, result lines, input checks, the id set, the
resume scan. Pure code, no network."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from batch_support import body
from hypothesis import given, settings
from hypothesis import strategies as st

from chatlib import ChatMessage, CreateChatCompletionRequest, InvalidArgumentError
from chatlib._config import ClientConfig
from chatlib._request import build_request
from chatlib.batch import BatchResult, read_results, request_line, write_requests
from chatlib.batch._format import (
    InputLine,
    InvalidLine,
    LineChecker,
    bounded_lines,
    check_line,
    error_line,
    invalid_line,
    success_line,
)
from chatlib.batch._idset import IdSet
from chatlib.batch._resume import OutputFileError, ResumeScan
from chatlib.errors import APIConnectionError, RateLimitError, error_from_response

# ---------------------------------------------------------------- to_body


def test_to_body_is_the_body_chatlib_sends() -> None:
    request = CreateChatCompletionRequest(
        model="m",
        messages=[ChatMessage.user("Hi")],
        temperature=0,
        extra_body={"top_k": 5},
        extra_headers={"x-trace": "1"},
        extra_query={"api-version": "2"},
    )
    sent = json.loads(
        build_request(ClientConfig.resolve(base_url="http://h/v1"), request, stream=False).body
        or b""
    )
    assert request.to_body() == sent
    assert request.to_body() == {
        "model": "m",
        "messages": [{"role": "user", "content": "Hi"}],
        "temperature": 0,
        "top_k": 5,
    }
    assert "extra_body" in request.to_dict()  # the model's fields, not the wire body


def test_to_body_cleans_assistant_messages_like_a_send() -> None:
    request = CreateChatCompletionRequest(
        model="m",
        messages=[
            {
                "role": "assistant",
                "content": None,
                "refusal": None,
                "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "ok"},
        ],
    )
    assistant = request.to_body()["messages"][0]
    assert "content" not in assistant and "refusal" not in assistant


def test_to_body_refuses_what_a_send_would_refuse() -> None:
    with pytest.raises(InvalidArgumentError, match="messages"):
        CreateChatCompletionRequest(model="m", messages=[]).to_body()
    with pytest.raises(InvalidArgumentError, match="extra_body"):
        CreateChatCompletionRequest(
            model="m", messages=[ChatMessage.user("x")], extra_body={"bad": object()}
        ).to_body()


# ---------------------------------------------------------------- writing requests


def test_request_line_has_the_openai_batch_shape() -> None:
    line = request_line(
        "q1", CreateChatCompletionRequest(model="m", messages=[ChatMessage.user("Hi")])
    )
    assert line == {
        "custom_id": "q1",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": "m", "messages": [{"role": "user", "content": "Hi"}]},
    }
    assert request_line("q2", body("x", stream=True))["body"] == body("x")  # never streamed
    with pytest.raises(InvalidArgumentError, match="custom_id"):
        request_line("", body("x"))
    with pytest.raises(InvalidArgumentError, match="model"):
        request_line("q3", {"messages": [{"role": "user", "content": "x"}]})


def test_write_requests_takes_mappings_pairs_and_plain_requests(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    assert write_requests(path, {"a": body("1"), "b": body("2")}) == 2
    assert [json.loads(x)["custom_id"] for x in path.read_text().splitlines()] == ["a", "b"]
    assert write_requests(path, iter([("x", body("1"))])) == 1
    assert write_requests(path, (body(str(i)) for i in range(3))) == 3
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert [x["custom_id"] for x in lines] == ["request-1", "request-2", "request-3"]
    assert all(check_line(json.dumps(x).encode(), 1).__class__ is InputLine for x in lines)


def test_write_requests_leaves_nothing_half_written(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text("old\n")
    with pytest.raises(InvalidArgumentError, match="'a' is repeated"):
        write_requests(path, [("a", body("1")), ("a", body("2"))])
    with pytest.raises(InvalidArgumentError, match="messages"):
        write_requests(path, [body("1"), {"model": "m", "messages": []}])
    assert path.read_text() == "old\n"
    assert list(tmp_path.iterdir()) == [path]


# ---------------------------------------------------------------- checking input lines


def line(**fields: object) -> bytes:
    return json.dumps(fields).encode() + b"\n"


@pytest.mark.parametrize(
    ("raw", "code", "custom_id", "words"),
    [
        (b"not json\n", "invalid_json", None, "not valid JSON"),
        (b"[1, 2]\n", "invalid_json", None, "not a JSON object"),
        (line(body=body("x")), "missing_custom_id", None, "custom_id is missing"),
        (line(custom_id=7, body=body("x")), "missing_custom_id", None, "7"),
        (line(custom_id="", body=body("x")), "missing_custom_id", None, "''"),
        (line(custom_id="a", method="GET", body=body("x")), "invalid_method", "a", "POST"),
        (line(custom_id="a", url="/v1/embeddings", body=body("x")), "invalid_url", "a", "url"),
        (line(custom_id="a"), "invalid_body", "a", "body must be a JSON object"),
        (line(custom_id="a", body=body("x", stream=True)), "invalid_body", "a", "stream"),
    ],
)
def test_a_bad_line_says_which_line_and_why(
    raw: bytes, code: str, custom_id: str | None, words: str
) -> None:
    result = check_line(raw, 17)
    assert isinstance(result, InvalidLine)
    assert (result.number, result.code, result.custom_id) == (17, code, custom_id)
    assert result.message.startswith("line 17: ") and words in result.message


def test_a_body_is_read_here_and_checked_where_it_is_built() -> None:
    # Field rules (a model, messages, types) are checked once, when the request is built
    # just before sending; the runner reports a failure there as this line's error line.
    result = check_line(line(custom_id="a", body={"messages": []}), 3)
    assert isinstance(result, InputLine)
    with pytest.raises(InvalidArgumentError, match="model"):
        result.request.to_body()


def test_a_good_line_keeps_unknown_body_fields() -> None:
    result = check_line(line(custom_id="a", body=body("x", top_k=3)), 1)
    assert isinstance(result, InputLine)
    assert result.request.to_body()["top_k"] == 3


def test_the_checker_refuses_repeats_and_skips_what_is_done() -> None:
    done = IdSet()
    done.add("b")
    checker = LineChecker(done_ids=done, done_lines={4}, foreign_repeats={9})
    assert isinstance(checker.check(line(custom_id="a", body=body("1")), 1), InputLine)
    assert checker.check(line(custom_id="b", body=body("2")), 2) is None  # done already
    repeat = checker.check(line(custom_id="a", body=body("3")), 3)
    assert isinstance(repeat, InvalidLine) and repeat.code == "duplicate_custom_id"
    assert repeat.custom_id is None and "'a' repeats" in repeat.message
    assert checker.check(b"junk\n", 4) is None  # reported by an earlier run
    assert isinstance(checker.check(b"junk\n", 5), InvalidLine)
    foreign = checker.check(line(custom_id="z", body=body("9")), 9)
    assert isinstance(foreign, InvalidLine) and foreign.code == "duplicate_custom_id"


@pytest.mark.parametrize(
    "raw",
    [
        b'{"custom_id": "s\\ud800", "body": {"model": "m", "messages": []}}\n',  # an escape
        b'{"custom_id": "s\xed\xa0\x80", "body": {"model": "m", "messages": []}}\n',  # bytes
    ],
)
def test_a_custom_id_with_a_lone_surrogate_is_refused_not_a_crash(raw: bytes) -> None:
    # It used to pass, then the runner died with UnicodeEncodeError writing its result line.
    result = check_line(raw, 4)
    assert isinstance(result, InvalidLine) and result.custom_id is None
    assert result.code == "missing_custom_id" and "lone surrogate" in result.message
    invalid_line(result).decode("utf-8")  # its output line can be written


def test_a_huge_bad_value_is_quoted_short() -> None:
    result = check_line(line(custom_id=["x" * 10] * 100_000, body=body("x")), 2)
    assert isinstance(result, InvalidLine) and len(result.message) < 300
    result = check_line(line(custom_id="a", url="/" + "u" * 100_000, body=body("x")), 3)
    assert isinstance(result, InvalidLine) and len(result.message) < 300


def test_a_line_too_long_is_read_in_bounded_memory_and_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("chatlib.batch._format.MAX_LINE_BYTES", 100)
    fits = line(custom_id="ok", body=body("x" * 10))
    exact = b"y" * 100 + b"\n"  # 100 bytes and its line end: not too long
    long_id = b'{"custom_id": "big", "body": {"x": "' + b"z" * 1000 + b'"}}\r\n'
    no_id = b"[" + b"1," * 1000 + b"1]\n"
    last = b"w" * 300  # too long, and no newline at the end of the file
    handle = io.BytesIO(fits + exact + long_id + no_id + last)
    lines = list(bounded_lines(handle))
    assert [length for _, length in lines] == [len(fits), 101, len(long_id), len(no_id), 300]
    assert all(len(raw) <= 101 for raw, _ in lines)  # never more than the limit held
    results = [check_line(raw, number) for number, (raw, _) in enumerate(lines, 1)]
    assert isinstance(results[0], InputLine)
    assert isinstance(results[1], InvalidLine) and results[1].code == "invalid_json"
    for result, custom_id in zip(results[2:], ["big", None, None], strict=True):
        assert isinstance(result, InvalidLine) and result.code == "line_too_long"
        assert result.custom_id == custom_id
        assert result.message.startswith(f"line {result.number}: longer than 100 bytes")


def test_a_line_number_done_in_another_input_does_not_hide_this_inputs_line() -> None:
    # The output holds "line 2: invalid" from another input file; this file's line 2 is good.
    checker = LineChecker(done_lines={2})
    assert isinstance(checker.check(line(custom_id="a", body=body("1")), 1), InputLine)
    again = checker.check(line(custom_id="b", body=body("2")), 2)
    assert isinstance(again, InputLine) and again.custom_id == "b"
    assert LineChecker(done_lines={2}).check(b"junk\n", 2) is None  # the same bad line: done


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (
            b'{"custom_id": "a"}\ngarbage\n{"custom_id": "b"}\n',
            "line 2 of the output file is not JSON",
        ),
        (b'{"custom_id": "a"}\n[1]\n', "line 2 of the output file is not a result line"),
        (b'"x"\n', "line 1 of the output file is not a result line"),
        (b"\xff\xfe\n", "line 1 of the output file is not JSON"),
    ],
)
def test_reading_a_file_that_is_not_an_output_names_the_line(data: bytes, words: str) -> None:
    # These raised JSONDecodeError, AttributeError or UnicodeDecodeError.
    with pytest.raises(OutputFileError, match=words):
        list(read_results(io.BytesIO(data)))


@pytest.mark.parametrize(
    ("requests", "field"),
    [
        ({"s\ud800": body("x")}, "custom_id"),
        ({"a": body("x\udc00")}, "requests\\['a'\\]: holds '\\\\udc00', a lone surrogate"),
        ([("a",)], "requests\\[0\\]: must be a \\(custom_id, request\\) pair"),
    ],
)
def test_write_requests_refuses_what_it_cannot_write(
    tmp_path: Path, requests: object, field: str
) -> None:
    # These raised UnicodeEncodeError and ValueError.
    with pytest.raises(InvalidArgumentError, match=field):
        write_requests(tmp_path / "in.jsonl", requests)  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("tail", [b"{", b'{"id', b'{"id":"batch_req_9","cus', b"  \r"])
def test_the_scan_drops_a_torn_piece_of_a_result_line(tail: bytes) -> None:
    scan = ResumeScan()
    scan.feed(b'{"custom_id": "x"}\n' + tail)
    assert scan.finish().torn == tail and scan.keep_bytes == 19


@pytest.mark.parametrize(
    "tail", [b"\x89PNG\r\x1a\x00\x00", b'{"custom_id": "y"}', b"my notes, no line end"]
)
def test_the_scan_refuses_a_last_line_that_is_not_a_result_line_cut_short(tail: bytes) -> None:
    # It was dropped as a torn line, and the runner truncated the file: a file without any
    # newline (not an output at all) was cut to nothing.
    scan = ResumeScan()
    scan.feed(tail)
    with pytest.raises(OutputFileError, match="line 1 of the output file has no line end"):
        scan.finish()


def test_the_scan_takes_no_boolean_for_a_line_number() -> None:
    # `true == 1` in Python: it used to mark input line 1 as done.
    with pytest.raises(OutputFileError, match="line 1 of the output file is not a result line"):
        ResumeScan().feed(b'{"error": {"code": "x", "line": true}}\n')


# ---------------------------------------------------------------- result lines


COMPLETION = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1,
    "model": "m",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "Hi!"}, "finish_reason": "stop"}
    ],
    "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
}


def test_a_success_line_keeps_the_servers_body_byte_for_byte() -> None:
    raw = json.dumps(COMPLETION, separators=(",", ":")).encode()
    out = success_line("q1", 200, {"x-request-id": "req_1"}, raw, None)
    assert out.endswith(b"\n") and out.count(b"\n") == 1 and raw in out
    data = json.loads(out)
    assert data["custom_id"] == "q1" and data["error"] is None
    assert data["id"].startswith("batch_req_")
    assert data["response"] == {"status_code": 200, "request_id": "req_1", "body": COMPLETION}
    pretty = json.dumps(COMPLETION, indent=2).encode()
    from chatlib.models import CreateChatCompletionResponse

    out = success_line("q2", 200, {}, pretty, CreateChatCompletionResponse.from_dict(COMPLETION))
    assert out.count(b"\n") == 1 and json.loads(out)["response"]["body"] == COMPLETION


def test_a_multi_line_answer_with_a_lone_surrogate_escape_is_written() -> None:
    # Re-encoding it to one line raised UnicodeEncodeError and ended the whole run.
    raw = b'{"choices": [],\n "x": "\\ud800"}'
    line = success_line("a", 200, {}, raw, None)
    assert line.count(b"\n") == 1
    assert json.loads(line)["response"]["body"] == {"choices": [], "x": "\ud800"}


def test_an_error_with_a_lone_surrogate_escape_is_written() -> None:
    # The same UnicodeEncodeError, from an error body's message.
    raw = b'{"error": {"message": "bad \\ud800", "code": "c\\udc00"}}'
    line = error_line("a", error_from_response(400, {}, raw))
    data = json.loads(line)
    assert data["error"]["code"] == "c\udc00" and "bad ?" in data["error"]["message"]
    assert data["response"]["body"]["error"]["message"] == "bad \ud800"


def test_error_lines_carry_the_status_and_body_when_the_server_answered() -> None:
    raw = b'{"error": {"message": "slow down", "type": "requests", "code": "rate_limit_exceeded"}}'
    error = error_from_response(429, {"x-request-id": "req_9"}, raw)
    assert isinstance(error, RateLimitError)
    data = json.loads(error_line("q1", error))
    assert data["custom_id"] == "q1"
    assert (
        data["error"]["code"] == "rate_limit_exceeded" and "slow down" in data["error"]["message"]
    )
    assert data["response"] == {"status_code": 429, "request_id": "req_9", "body": json.loads(raw)}
    data = json.loads(error_line("q2", APIConnectionError("reset by peer")))
    assert data["response"] is None and data["error"]["code"] == "connection_error"
    data = json.loads(invalid_line(InvalidLine(5, None, "invalid_json", "line 5: not valid JSON")))
    assert data["custom_id"] is None and data["error"]["line"] == 5


def test_results_read_back_typed(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    raw = json.dumps(COMPLETION).encode()
    error = error_from_response(400, {}, b'{"error": {"message": "bad", "code": "bad_thing"}}')
    path.write_bytes(
        success_line("a", 200, {}, raw, None)
        + error_line("b", error)
        + invalid_line(InvalidLine(3, None, "invalid_json", "line 3: nope"))
        + b'{"id": "x", "custom_id": "tor'  # a torn last line
    )
    results = list(read_results(path))
    assert [r.custom_id for r in results] == ["a", "b", None]
    ok, failed, bad = results
    assert ok.ok and ok.text == "Hi!" and ok.response is not None and ok.response.usage is not None
    assert not failed.ok and failed.error is not None and failed.error.code == "bad_thing"
    assert failed.status_code == 400 and failed.response is None and failed.text is None
    assert bad.error is not None and bad.error.line == 3
    assert [r.custom_id for r in read_results(io.BytesIO(path.read_bytes()))] == ["a", "b", None]


def test_openai_batch_output_lines_read_too() -> None:
    # The shapes of OpenAI's output and error files.
    ok = BatchResult.from_line(
        {
            "id": "batch_req_1",
            "custom_id": "r1",
            "response": {"status_code": 200, "request_id": "req_1", "body": COMPLETION},
            "error": None,
        }
    )
    assert ok.ok and ok.text == "Hi!" and ok.request_id == "req_1"
    failed = BatchResult.from_line(
        {
            "id": "batch_req_2",
            "custom_id": "r2",
            "response": {
                "status_code": 400,
                "request_id": "req_2",
                "body": {"error": {"message": "Invalid model", "code": "model_not_found"}},
            },
            "error": None,
        }
    )
    assert not failed.ok and failed.error is not None and failed.error.code == "model_not_found"
    expired = BatchResult.from_line(
        {
            "id": "batch_req_3",
            "custom_id": "r3",
            "response": None,
            "error": {"code": "batch_expired", "message": "not completed in time"},
        }
    )
    assert not expired.ok and expired.error is not None and expired.error.code == "batch_expired"


# ---------------------------------------------------------------- the id set


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(max_size=12), max_size=300))
def test_the_id_set_is_a_set(keys: list[str]) -> None:
    ids, reference = IdSet(), set()
    for key in keys:
        assert ids.add(key) == (key not in reference)
        reference.add(key)
        assert key in ids
    assert len(ids) == len(reference)
    assert ("\x00never" in ids) == ("\x00never" in reference)


def test_the_id_set_grows_and_stays_small() -> None:
    ids = IdSet()
    for i in range(50_000):
        assert ids.add(f"request-{i}")
    assert all(f"request-{i}" in ids for i in range(0, 50_000, 97))
    assert "request-50000" not in ids and 5 not in ids
    size = len(ids._arena) + ids._slots.itemsize * len(ids._slots)
    assert size < 50_000 * 40  # a set of str would take ~100 bytes per id


# ---------------------------------------------------------------- the resume scan


def test_the_scan_finds_done_lines_and_a_torn_tail() -> None:
    raw = json.dumps(COMPLETION).encode()
    complete = (
        success_line("a", 200, {}, raw, None)
        + error_line("b", APIConnectionError("x"))
        + invalid_line(InvalidLine(7, None, "invalid_json", "line 7: x"))
        + b'{"id":"batch_req_1","custom_id":"c","response":null,'
        + b'"error":{"code":"x","message":"y"}}\n'
    )
    data = complete + b'{"id":"batch_req_2","custom_id":"d","resp'
    for size in (1, 7, len(data)):
        scan = ResumeScan()
        for start in range(0, len(data), size):
            scan.feed(data[start : start + size])
        scan.finish()
        assert {"a", "b", "c"} == {k for k in "abcd" if k in scan.done_ids}
        assert scan.done_lines == {7}
        assert scan.keep_bytes == len(complete) and scan.torn.startswith(b'{"id":"batch_req_2"')


def test_the_scan_reads_openai_output_and_refuses_foreign_files() -> None:
    scan = ResumeScan()
    scan.feed(b'{"custom_id": "x", "id": "b", "response": null, "error": null}\n\n')
    assert "x" in scan.finish().done_ids and scan.torn == b""
    with pytest.raises(OutputFileError, match=r"line 2 .* not JSON"):
        ResumeScan().feed(b'{"custom_id": "x"}\nhello\n')
    with pytest.raises(OutputFileError, match=r"line 1 .* not a result line"):
        ResumeScan().feed(b'{"hello": 1}\n')


def test_the_id_set_keeps_long_and_unicode_ids_apart() -> None:
    ids = IdSet()
    long_a, long_b = "x" * 5000, "x" * 4999 + "y"
    assert ids.add(long_a) and ids.add(long_b) and ids.add("é-1") and ids.add("\ud800")
    assert not ids.add(long_a) and not ids.add("é-1")
    assert long_b in ids and "x" * 5001 not in ids and "e-1" not in ids
