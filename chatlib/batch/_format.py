"""The Batch API file format: request lines in, result lines out. Pure (files aside).

The files are OpenAI's Batch API JSONL, so one file serves OpenAI's server-side batches and
chatlib's runners alike.

An input line:

    {"custom_id": "q1", "method": "POST", "url": "/v1/chat/completions", "body": {...}}

An output line (one per input line, in the order they finished):

    {"id": "batch_req_...", "custom_id": "q1",
     "response": {"status_code": 200, "request_id": "req_...", "body": {...}} | null,
     "error": {"code": "...", "message": "..."} | null}

`error` is `null` exactly when the request succeeded. A request that failed carries its
`error`, and its `response` when the server answered (an HTTP error: its status and body).
An input line that cannot be run (not JSON, no `custom_id`, a repeated `custom_id`, a body
chatlib refuses) gets an output line too, whose `error` names the line number and the
reason; a line whose own `custom_id` is unusable or repeated has `"custom_id": null` and
the line number in `error.line`, so the output still holds each input `custom_id` once.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import secrets
from collections.abc import Collection, Iterable, Iterator, Mapping
from typing import IO, Any, Union

import attrs

from chatlib._headers import request_id_of
from chatlib.batch._idset import IdSet
from chatlib.errors import (
    APIConnectionError,
    APIError,
    APIResponseValidationError,
    APIStatusError,
    APITimeoutError,
    ChatLibError,
    InvalidArgumentError,
)
from chatlib.models import CreateChatCompletionRequest, CreateChatCompletionResponse

__all__ = [
    "BATCH_URL",
    "BatchError",
    "BatchResult",
    "InputLine",
    "MAX_LINE_BYTES",
    "InvalidLine",
    "LineChecker",
    "OutputFileError",
    "PathLike",
    "error_line",
    "bounded_lines",
    "invalid_line",
    "read_results",
    "request_line",
    "success_line",
    "write_requests",
]

BATCH_URL = "/v1/chat/completions"
_URLS = frozenset({BATCH_URL, "/chat/completions"})

MAX_LINE_BYTES = 64 << 20
"""The longest input line read (64 MiB: OpenAI takes up to 50 MB in one request, images
included). A longer line is reported as `line_too_long` without ever being held whole."""

_SHOWN = 100  # characters of a bad value quoted in an error message
_LEADING_ID = re.compile(rb'\s*\{\s*"custom_id"\s*:\s*("(?:[^"\\]|\\.)*")\s*[,}]')

PathLike = Union[str, "os.PathLike[str]"]


class OutputFileError(ChatLibError):
    """The output file holds a line that is not a result line: it was not written by a
    batch run (or was edited). Nothing is overwritten; fix or move the file."""


RequestLike = Union[CreateChatCompletionRequest, Mapping[str, Any]]

# ---------------------------------------------------------------- writing requests


def _as_request(request: RequestLike, where: str) -> CreateChatCompletionRequest:
    if isinstance(request, CreateChatCompletionRequest):
        return request
    if isinstance(request, Mapping):
        try:
            return CreateChatCompletionRequest.from_dict(request)
        except InvalidArgumentError:
            raise
        except Exception as exc:
            raise InvalidArgumentError(where, f"is not a chat completion request: {exc}") from None
    raise InvalidArgumentError(
        where, f"must be a CreateChatCompletionRequest or a dict, got {type(request).__name__}"
    )


def request_line(custom_id: str, request: RequestLike) -> dict[str, Any]:
    """One input line of a Batch API file: `{"custom_id", "method", "url", "body"}`.

    `body` is `request.to_body()`: exactly what chatlib (or OpenAI's Batch API) sends. A
    dict is read as a request body (`CreateChatCompletionRequest.from_dict`) and checked.

    Raises:
        InvalidArgumentError: an empty `custom_id`, or a request chatlib would refuse.
    """
    if not isinstance(custom_id, str) or not custom_id or not _is_text(custom_id):
        raise InvalidArgumentError("custom_id", f"must be a non-empty string, got {custom_id!r}")
    body = _as_request(request, "request").to_body()
    body.pop("stream", None)  # a batch is never streamed
    return {"custom_id": custom_id, "method": "POST", "url": BATCH_URL, "body": body}


def _pairs(
    requests: Mapping[str, RequestLike] | Iterable[RequestLike | tuple[str, RequestLike]],
) -> Iterator[tuple[str, RequestLike]]:
    if isinstance(requests, Mapping):
        yield from requests.items()
        return
    for number, item in enumerate(requests, 1):
        if isinstance(item, tuple):
            if len(item) != 2:
                raise InvalidArgumentError(
                    f"requests[{number - 1}]", f"must be a (custom_id, request) pair, got {item!r}"
                )
            custom_id, request = item
            yield custom_id, request
        else:
            yield f"request-{number}", item


def write_requests(
    path: PathLike,
    requests: Mapping[str, RequestLike] | Iterable[RequestLike | tuple[str, RequestLike]],
) -> int:
    """Write a Batch API input file; returns the number of lines written.

    Args:
        path: The file to (over)write.
        requests: `CreateChatCompletionRequest`s or request dicts, as a mapping
            `custom_id -> request`, an iterable of `(custom_id, request)` pairs, or an
            iterable of requests (numbered `request-1`, `request-2`, ...). Read lazily:
            a generator of a million requests never sits in memory.

    Raises:
        InvalidArgumentError: a request chatlib would refuse, or a repeated `custom_id`;
            nothing is left half-written (the file is written under a temporary name and
            renamed at the end).
    """
    seen = IdSet()
    target = os.fspath(path)
    temporary = f"{target}.tmp-{os.getpid()}"
    count = 0
    try:
        with open(temporary, "wb") as out:
            for custom_id, request in _pairs(requests):
                line = request_line(custom_id, request)
                if not seen.add(custom_id):
                    raise InvalidArgumentError("custom_id", f"{custom_id!r} is repeated")
                try:
                    data = _encode(line).encode("utf-8")
                except UnicodeEncodeError as exc:
                    bad = exc.object[exc.start : exc.end]
                    raise InvalidArgumentError(
                        f"requests[{custom_id!r}]",
                        f"holds {bad!r}, a lone surrogate, which is not text",
                    ) from None
                out.write(data + b"\n")
                count += 1
        os.replace(temporary, target)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    return count


# ---------------------------------------------------------------- checking input lines


@attrs.frozen
class InputLine:
    """An input line that can be run: its number (1-based), `custom_id`, request and body."""

    number: int
    custom_id: str
    request: CreateChatCompletionRequest
    body: dict[str, Any]


@attrs.frozen
class InvalidLine:
    """An input line that cannot be run, and why (`code`: a short name, `message`)."""

    number: int
    custom_id: str | None
    code: str
    message: str


def bounded_lines(handle: IO[bytes]) -> Iterator[tuple[bytes, int]]:
    """The lines of a binary file, each with its length in bytes. A line longer than
    `MAX_LINE_BYTES` comes as its first `MAX_LINE_BYTES + 1` bytes (no line end: the rest
    is read and dropped), so no more than that is ever held; `check_line` refuses it."""
    limit = MAX_LINE_BYTES
    while True:
        raw = handle.readline(limit + 1)
        if not raw:
            return
        length = len(raw)
        if length > limit and not raw.endswith(b"\n"):
            while True:
                rest = handle.readline(1 << 20)
                length += len(rest)
                if not rest or rest.endswith(b"\n"):
                    break
        yield raw, length


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _SHOWN else f"{text[:_SHOWN]}... ({len(text):,} characters)"


def _is_text(value: str) -> bool:
    """Whether a decoded string is text UTF-8 can write (no lone surrogate, which JSON's
    `\\ud800` escapes can smuggle in)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _leading_custom_id(raw: bytes) -> str | None:
    """The `custom_id` a line starts with (as `request_line` writes it), read without
    parsing the rest."""
    match = _LEADING_ID.match(raw)
    if match is None:
        return None
    try:
        value = json.loads(match.group(1))
    except (ValueError, UnicodeDecodeError):
        return None
    return value if isinstance(value, str) and value and _is_text(value) else None


def check_line(raw: bytes, number: int) -> InputLine | InvalidLine:
    """Read one input line: an `InputLine`, or an `InvalidLine` saying what is wrong."""

    def invalid(code: str, why: str, custom_id: str | None = None) -> InvalidLine:
        return InvalidLine(number, custom_id, code, f"line {number}: {why}")

    if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
        return invalid(
            "line_too_long",
            f"longer than {MAX_LINE_BYTES:,} bytes; not read (a request this big is refused "
            "by servers)",
            _leading_custom_id(raw),
        )
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        return invalid("invalid_json", f"not valid JSON ({exc})")
    if not isinstance(data, dict):
        return invalid("invalid_json", f"not a JSON object but {type(data).__name__}")
    custom_id = data.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        shown = "missing" if custom_id is None else f"{_shown(custom_id)} is not a non-empty string"
        return invalid("missing_custom_id", f"custom_id is {shown}")
    if not _is_text(custom_id):
        why = f"custom_id {_shown(custom_id)} holds a lone surrogate, which is not text"
        return invalid("missing_custom_id", why)
    method = data.get("method", "POST")
    if method != "POST":
        return invalid("invalid_method", f"method must be POST, got {_shown(method)}", custom_id)
    url = data.get("url", BATCH_URL)
    if url not in _URLS:
        return invalid("invalid_url", f"url must be {BATCH_URL!r}, got {_shown(url)}", custom_id)
    body = data.get("body")
    if not isinstance(body, dict):
        return invalid("invalid_body", "body must be a JSON object", custom_id)
    if body.get("stream"):
        return invalid("invalid_body", "stream: a batch request is not streamed", custom_id)
    try:
        # Read only: the request is validated where it is built, just before sending.
        request = CreateChatCompletionRequest.from_dict(body)
    except InvalidArgumentError as exc:
        return invalid("invalid_body", f"body.{exc}", custom_id)
    except Exception as exc:
        return invalid("invalid_body", f"body is not a chat completion request: {exc}", custom_id)
    return InputLine(number, custom_id, request, body)


@attrs.define
class LineChecker:
    """Checks input lines in order, remembering `custom_id`s to refuse repeats, and skips the
    lines a previous run already finished.

    Attributes:
        done_ids: The `custom_id`s already in the output (skipped).
        done_lines: The numbers of input lines already reported as invalid (skipped).
        foreign_repeats: Line numbers known (from elsewhere: a scan of the whole file for a
            cluster run) to repeat the `custom_id` of an earlier line.
    """

    done_ids: IdSet = attrs.field(factory=IdSet)
    done_lines: set[int] = attrs.field(factory=set)
    foreign_repeats: Collection[int] = ()
    _seen: IdSet = attrs.field(factory=IdSet)

    def check(self, raw: bytes, number: int) -> InputLine | InvalidLine | None:
        """The line to run, the invalid line to report, or `None` when it is done already."""
        line = check_line(raw, number)
        custom_id = line.custom_id
        if custom_id is not None:
            if number in self.foreign_repeats or not self._seen.add(custom_id):
                line = InvalidLine(
                    number,
                    None,
                    "duplicate_custom_id",
                    f"line {number}: custom_id {_shown(custom_id)} repeats an earlier line",
                )
            elif self.done_ids and custom_id in self.done_ids:
                return None
        # A line number is done only for a line that still has no usable custom_id: an
        # output from another input file must not hide this file's line of that number.
        if line.custom_id is None and number in self.done_lines:
            return None
        return line


# ---------------------------------------------------------------- result lines

_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def _json_bytes(value: Any) -> bytes:
    """`value` as one line of UTF-8 JSON; a lone surrogate (from a server's `\\ud800`
    escape) stays an escape instead of failing the encoding."""
    try:
        return _encode(value).encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(value, separators=(",", ":")).encode("ascii")


_RUN_PREFIX = "batch_req_" + secrets.token_hex(8)
_line_numbers = itertools.count()


def _line_id() -> str:
    """A unique id per output line: a random prefix per process and a counter."""
    return f"{_RUN_PREFIX}{next(_line_numbers):08x}"


def success_line(
    custom_id: str, status: int, headers: Mapping[str, str], raw_body: bytes, body: Any
) -> bytes:
    """The output line of a request that succeeded; the server's body kept as it came
    (re-encoded from `body`, the parsed answer or its model, only when it spans several
    lines)."""
    if b"\n" in raw_body or b"\r" in raw_body:
        if body is None:
            body = json.loads(raw_body)
        elif hasattr(body, "to_dict"):
            body = body.to_dict()
        raw_body = _json_bytes(body)
    head = (
        f'{{"id":"{_line_id()}","custom_id":{_encode(custom_id)},'
        f'"response":{{"status_code":{status},"request_id":{_encode(request_id_of(headers))},'
        f'"body":'
    )
    return head.encode("utf-8") + raw_body + b'},"error":null}\n'


def _error_code(error: APIError) -> str:
    if isinstance(error, APIStatusError):
        if isinstance(error.code, str) and error.code:
            return error.code
        return error.type or f"http_{error.status_code}"
    if isinstance(error, APITimeoutError):
        return "timeout"
    if isinstance(error, APIConnectionError):
        return "connection_error"
    if isinstance(error, APIResponseValidationError):
        return "invalid_response"
    return "api_error"


def _error_body(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw else None
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None


def error_line(custom_id: str, error: ChatLibError) -> bytes:
    """The output line of a request that failed for good (or whose body chatlib refused)."""
    response: dict[str, Any] | None = None
    if isinstance(error, InvalidArgumentError):
        code, message = "invalid_body", f"body.{error}"
    elif not isinstance(error, APIError):
        code, message = "error", str(error)
    else:
        code, message = _error_code(error), str(error)
        status = getattr(error, "status_code", None)
        if isinstance(status, int):
            response = {
                "status_code": status,
                "request_id": getattr(error, "request_id", None),
                "body": _error_body(error.raw_body),
            }
    line = {
        "id": _line_id(),
        "custom_id": custom_id,
        "response": response,
        "error": {"code": code, "message": message},
    }
    return _json_bytes(line) + b"\n"


def invalid_line(line: InvalidLine) -> bytes:
    """The output line reporting an input line that cannot be run."""
    error: dict[str, Any] = {"code": line.code, "message": line.message, "line": line.number}
    data = {"id": _line_id(), "custom_id": line.custom_id, "response": None, "error": error}
    return _json_bytes(data) + b"\n"


# ---------------------------------------------------------------- reading results


@attrs.frozen
class BatchError:
    """Why a line has no answer.

    Attributes:
        code: A short name: the server's error code (`rate_limit_exceeded`,
            `context_length_exceeded`...), else its error type, else `http_<status>`; `timeout`,
            `connection_error`, `invalid_response`, or for a bad input line
            `invalid_json`, `missing_custom_id`, `duplicate_custom_id`, `invalid_body`,
            `invalid_method`, `invalid_url`, `line_too_long`.
        message: What happened, in words (for a bad input line: `line N: ...`).
        line: The input line number, for a bad input line.
    """

    code: str
    message: str
    line: int | None = None


@attrs.frozen
class BatchResult:
    """One output line, read back.

    Attributes:
        custom_id: The input line's `custom_id` (`None` for an input line that had no usable
            one, or repeated one: see `error.line`).
        id: The output line's own id.
        status_code: The HTTP status of the answer, when the server answered.
        request_id: The server's request id, when it sent one.
        body: The server's JSON body as it came (a completion, or an error body).
        error: Why there is no answer; `None` when the request succeeded.
    """

    custom_id: str | None
    id: str | None
    status_code: int | None
    request_id: str | None
    body: Any
    error: BatchError | None

    @property
    def ok(self) -> bool:
        """Whether the request succeeded (no `error`, a 2xx answer)."""
        return self.error is None and self.status_code is not None and self.status_code < 300

    @property
    def response(self) -> CreateChatCompletionResponse | None:
        """The answer as a typed completion (`None` when the request failed)."""
        if not self.ok or not isinstance(self.body, Mapping):
            return None
        return CreateChatCompletionResponse.from_dict(self.body)

    @property
    def text(self) -> str | None:
        """The first choice's text (`None` when the request failed or has no text)."""
        response = self.response
        return None if response is None else response.text

    @classmethod
    def from_line(cls, data: Mapping[str, Any]) -> BatchResult:
        """Read one output line (chatlib's, or a line of an OpenAI Batch API output file)."""
        response = data.get("response")
        error = data.get("error")
        if not isinstance(response, Mapping):
            response = {}
        batch_error = None
        if isinstance(error, Mapping):
            line = error.get("line")
            batch_error = BatchError(
                code=str(error.get("code") or "error"),
                message=str(error.get("message") or ""),
                line=line if isinstance(line, int) else None,
            )
        elif isinstance(response.get("status_code"), int) and response["status_code"] >= 400:
            body = response.get("body")
            detail = body.get("error") if isinstance(body, Mapping) else None
            detail = detail if isinstance(detail, Mapping) else {}
            batch_error = BatchError(
                code=str(detail.get("code") or f"http_{response['status_code']}"),
                message=str(detail.get("message") or f"HTTP {response['status_code']}"),
            )
        status = response.get("status_code")
        return cls(
            custom_id=data.get("custom_id"),
            id=data.get("id"),
            status_code=status if isinstance(status, int) else None,
            request_id=response.get("request_id"),
            body=response.get("body"),
            error=batch_error,
        )


def read_results(source: PathLike | IO[bytes] | IO[str]) -> Iterator[BatchResult]:
    """The lines of an output file as `BatchResult`s, read lazily, in file order.

    Reads chatlib's output files and OpenAI's Batch API output and error files alike. A
    torn last line (a run killed while writing it) is skipped: a re-run redoes it.

    Args:
        source: A path, or a file object opened for reading.

    Raises:
        OutputFileError: a line before the last is not a JSON object (the file is not a
            batch output, or was edited), naming the line.
    """
    if isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as handle:
            yield from _read_results(handle)
    else:
        yield from _read_results(source)


def _read_results(handle: IO[bytes] | IO[str]) -> Iterator[BatchResult]:
    number = 0
    for raw in handle:
        number += 1
        if not raw.strip():
            continue
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError, RecursionError):
            ended = raw.endswith(b"\n") if isinstance(raw, bytes) else raw.endswith("\n")
            if not ended:
                return  # a torn last line
            raise OutputFileError(
                f"line {number} of the output file is not JSON: it was not written by a batch run"
            ) from None
        if not isinstance(data, dict):
            raise OutputFileError(
                f"line {number} of the output file is not a result line (a JSON "
                f"{type(data).__name__}, not an object)"
            )
        yield BatchResult.from_line(data)


# Used by the resume scan: chatlib's own lines start like this, so the `custom_id` is read
# without parsing the whole line.
OWN_LINE_PREFIX = re.compile(rb'\{"id":"[^"\\]*","custom_id":("(?:[^"\\]|\\.)*")')
