"""The public value types of `chatlib.testing`: the actions a script is made of, and the record
of a request the server received. Plain frozen dataclasses, checked when built; no I/O.
"""

from __future__ import annotations

import http
import json
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass
from typing import Any, Final, Literal, TypeAlias, Union, get_args

__all__ = [
    "Action",
    "Disconnect",
    "ErrorReply",
    "InStreamError",
    "RawReply",
    "RecordedRequest",
    "Reply",
    "Responder",
    "Stall",
    "Trickle",
]

_AUTO: Final = "\x00auto\x00"  # sentinel for "computed from the status" defaults

_Stage = Literal["before_headers", "mid_body", "mid_stream"]
_STAGES: Final = get_args(_Stage)


def _check_delay(name: str, value: float) -> None:
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")


def _check_status(status: int) -> None:
    if not 100 <= status <= 599:
        raise ValueError(f"status must be in 100..599, got {status!r}")


def _check_stage(action: str, stage: str) -> None:
    if stage not in _STAGES:
        raise ValueError(f"unknown {action} stage {stage!r}")


@dataclass(frozen=True)
class Reply:
    """A successful chat completion, shaped like OpenAI's, streamed or not as the request asks.

    With `"stream": true` the reply is an SSE stream (`text/event-stream`): a first delta
    `{"role": "assistant", "content": ""}`, then `reasoning_content` deltas, `content`
    deltas split word by word (spaces kept), `refusal` deltas and tool calls (`id`, `type`
    and `function.name` once, then `arguments` in small fragments, by `index`), a final
    chunk with an empty delta and `finish_reason`, a usage-only chunk with `"choices": []`
    when `stream_options.include_usage` is true, and `data: [DONE]`. With `n` > 1 the
    choices' chunks interleave (not always in index order). Otherwise the reply is an
    `application/json` ChatCompletion with `n` identical choices. The response `model` is
    the request's `model`, and there is always an `x-request-id: req_<hex>` header.

    A model that uses tools or answers in a format is a few replies away: several
    `tool_calls` in one turn, `Reply.json(value)` for a `response_format`,
    `Reply(refusal=...)`, `Reply("cut", finish_reason="length")`, and a function of the
    request (a `Responder`) for replies that depend on what the client sent.

    Attributes:
        content: The assistant text. `None` (the default) means `"Echo: <last user message>"`
            - unless `tool_calls` or `refusal` is given, in which case content is `null`.
        finish_reason: `None` (the default) means `"tool_calls"` when `tool_calls` is
            given, else `"stop"`. `"length"` and `"content_filter"` are sent as given.
        tool_calls: OpenAI-shaped tool calls, `{"id", "type": "function", "function":
            {"name", "arguments"}}`, as many as the turn makes. `id` and `type` may be
            omitted (generated), the `function` wrapper may be left out (`{"name",
            "arguments"}`), and `arguments` may be a dict (JSON-encoded for you) or any
            string (invalid JSON included, to test how a client copes).
        reasoning_content: DeepSeek/vLLM-style reasoning text (message field and deltas).
        refusal: The message's `refusal` text (`null` when not given).
        usage: The `usage` object verbatim; by default it is computed from word counts.
        headers: Extra response headers (they override the defaults).
        delay: Seconds to wait before sending the response headers.
        piece_delay: Seconds to wait between two SSE events (streaming only).
        extra_chunk_fields: Top-level fields merged into every streamed chunk (e.g. Azure's
            `prompt_filter_results` or Groq's `x_groq`). Not used for non-streamed replies.
    """

    content: str | None = None
    _: KW_ONLY
    finish_reason: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    reasoning_content: str | None = None
    refusal: str | None = None
    usage: dict[str, Any] | None = None
    headers: dict[str, str] | None = None
    delay: float = 0.0
    piece_delay: float = 0.0
    extra_chunk_fields: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        _check_delay("delay", self.delay)
        _check_delay("piece_delay", self.piece_delay)

    @classmethod
    def json(cls, value: Any, **options: Any) -> Reply:
        """A reply whose content is `value` as JSON text: the answer to a `response_format`.

        `options` are the other `Reply` fields (`finish_reason=`, `delay=`...).
        """
        return cls(json.dumps(value, ensure_ascii=False), **options)


def _default_error_type(status: int) -> str:
    if status == 429:
        return "requests"
    if status >= 500:
        return "server_error"
    return "invalid_request_error"


def _default_error_message(status: int) -> str:
    try:
        phrase = http.HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    return f"{phrase} (scripted by chatlib.testing)"


@dataclass(frozen=True)
class ErrorReply:
    """An OpenAI-shaped JSON error: `{"error": {"message", "type", "param", "code"}}`.

    Attributes:
        status: The HTTP status (100-599).
        message: `error.message`; defaults to the status phrase, e.g. `"Too Many Requests
            (scripted by chatlib.testing)"`.
        type: `error.type`; defaults by status: `"requests"` for 429 (what OpenAI sends
            for request rate limits), `"server_error"` for 5xx, else
            `"invalid_request_error"`. Pass `None` to send `"type": null`.
        code: `error.code` (a string like `"rate_limit_exceeded"` or, like llama.cpp,
            an int).
        param: `error.param`.
        headers: Extra response headers, e.g. `{"retry-after": "1"}`. An `x-request-id`
            header is always added (unless given here).
    """

    status: int
    message: str = _AUTO
    _: KW_ONLY
    type: str | None = _AUTO
    code: str | int | None = None
    param: str | None = None
    headers: dict[str, str] | None = None

    def __post_init__(self) -> None:
        _check_status(self.status)
        if self.message == _AUTO:
            object.__setattr__(self, "message", _default_error_message(self.status))
        if self.type == _AUTO:
            object.__setattr__(self, "type", _default_error_type(self.status))


@dataclass(frozen=True)
class RawReply:
    """Exactly these bytes, for the responses no well-behaved server sends.

    HTML error pages, malformed JSON, hand-written SSE, a wrong content type, oversized lines,
    a stream without `[DONE]`, a trickle of one-byte pieces...

    Attributes:
        status: The HTTP status.
        body: `bytes` are sent with a `Content-Length`. A `list` of `bytes` is sent with
            chunked transfer encoding, piece by piece, each flushed separately, with
            `piece_delay` seconds between pieces.
        headers: Extra response headers (they override `Content-Type`). Unlike the other
            actions, no `x-request-id` is added.
        content_type: The `Content-Type` header.
        piece_delay: Seconds between two pieces of a list `body`.
    """

    status: int = 200
    _: KW_ONLY
    body: bytes | list[bytes] = b""
    headers: dict[str, str] | None = None
    content_type: str = "application/json"
    piece_delay: float = 0.0

    def __post_init__(self) -> None:
        _check_status(self.status)
        _check_delay("piece_delay", self.piece_delay)
        pieces = [self.body] if isinstance(self.body, bytes) else self.body
        if not all(isinstance(piece, bytes) for piece in pieces):
            raise TypeError("RawReply.body must be bytes or a list of bytes")


@dataclass(frozen=True)
class Disconnect:
    """Drop the TCP connection (`transport.abort()`), so the client sees a real EOF/reset.

    Attributes:
        stage: `"before_headers"`: no response byte at all. `"mid_body"`: a 200
            `application/json` response whose `Content-Length` promises more than is sent,
            cut after `after`. `"mid_stream"`: a 200 `text/event-stream` (chunked)
            response cut after `after`, without the terminating chunk.
        after: The body bytes sent before the drop. Left empty (the default), the server sends
            a realistic prefix: the first half of the JSON echo reply (`mid_body`), or the
            echo stream's first two SSE events (`mid_stream`). Ignored for
            `before_headers`.
    """

    stage: _Stage = "before_headers"
    _: KW_ONLY
    after: bytes = b""

    def __post_init__(self) -> None:
        _check_stage("Disconnect", self.stage)


@dataclass(frozen=True)
class Stall:
    """Go silent: the client's read timeout, not the server, has to end the request.

    Attributes:
        seconds: How long to stay silent. Afterwards the connection is closed without a
            response (`before_headers`) or dropped (`mid_body`, `mid_stream`). Stopping
            the server ends a stall at once.
        stage: `"before_headers"`: accept the request and send nothing. `"mid_body"`:
            send 200 `application/json` headers whose `Content-Length` promises more than
            `after`, then `after`, then nothing. `"mid_stream"`: send 200 SSE headers
            and `after`, then nothing.
        after: The bytes sent before a `mid_body` or `mid_stream` stall; empty (the
            default) means the first half of the JSON echo reply (`mid_body`), or the echo
            stream's first two SSE events (`mid_stream`).
    """

    seconds: float
    _: KW_ONLY
    stage: Literal["before_headers", "mid_body", "mid_stream"] = "before_headers"
    after: bytes = b""

    def __post_init__(self) -> None:
        _check_delay("seconds", self.seconds)
        _check_stage("Stall", self.stage)


@dataclass(frozen=True)
class Trickle:
    """A response whose body dribbles out `size` bytes every `interval` seconds.

    Each piece arrives well within a client's read timeout, so only a total deadline (or a
    size limit) ends the call: a slow-loris server, a proxy that sends nothing but keep-alive
    comments, a line that never ends. The headers are sent at once; the body uses chunked
    transfer encoding, every piece flushed separately.

    Attributes:
        body: The bytes to send. `None` (the default) means the echo reply, JSON or SSE as
            the request asks.
        size: Bytes per piece (at least 1).
        interval: Seconds between two pieces.
        repeat: Send `body` again and again, without end, until the client hangs up or the
            server stops (`body` must not be empty).
        status: The HTTP status.
        content_type: The `Content-Type`; `None` (the default) means
            `text/event-stream` when the request streams, else `application/json`.
        headers: Extra response headers. An `x-request-id` header is always added (unless
            given here).
    """

    body: bytes | None = None
    _: KW_ONLY
    size: int = 1
    interval: float = 0.1
    repeat: bool = False
    status: int = 200
    content_type: str | None = None
    headers: dict[str, str] | None = None

    def __post_init__(self) -> None:
        _check_status(self.status)
        _check_delay("interval", self.interval)
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 1:
            raise ValueError(f"size must be an int >= 1, got {self.size!r}")
        if self.body is not None and not isinstance(self.body, bytes):
            raise TypeError("Trickle.body must be bytes or None")
        if self.repeat and self.body == b"":
            raise ValueError("a repeated Trickle needs a non-empty body")


@dataclass(frozen=True)
class InStreamError:
    """A 200 SSE stream that sends some normal chunks, then an error event, then ends.

    This is what llama.cpp's server and others do when a failure happens after the headers
    went out. The stream ends (cleanly, at the HTTP level) right after the error event, with
    no `finish_reason` chunk and no `[DONE]`.

    Attributes:
        error: The error object: sent as `{"error": error}`, or as is when it already is a
            single-key `{"error": {...}}` dict.
        after_chunks: How many chunks of the echo stream precede the error (the first one is
            the `role` delta; there are never more than the echo reply has).
        as_event: `False`: `data: {"error": ...}`. `True`: `event: error` then
            `data: {"error": ...}`.
    """

    error: dict[str, Any]
    _: KW_ONLY
    after_chunks: int = 1
    as_event: bool = False

    def __post_init__(self) -> None:
        if self.after_chunks < 0:
            raise ValueError(f"after_chunks must be >= 0, got {self.after_chunks!r}")


Action: TypeAlias = Union[Reply, ErrorReply, RawReply, Disconnect, Stall, Trickle, InStreamError]
"""A scripted action (`LocalServer.enqueue` also takes a `Responder`)."""

Responder: TypeAlias = Callable[["RecordedRequest"], Action]
"""A function `LocalServer.enqueue` takes in place of an action: it receives the request
(`request.json()` is the body the client sent) and returns the action that answers it, so a
scripted model can answer what it was asked (a tool result, a schema) rather than in a fixed
order. It runs in the server's event loop: keep it quick. If it raises, the client gets a 500
whose message holds the traceback."""


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the server received it.

    Attributes:
        method: The HTTP method, e.g. `"POST"`.
        path: The URL path, e.g. `"/v1/chat/completions"` (no query string).
        query: The query parameters (the last value wins when a name repeats).
        headers: The request headers, names lower-cased; repeated headers joined with `", "`.
        body: The raw request body.
        connection: The client's end of the TCP connection the request came on, as
            `"host:port"`: requests sent over one kept-alive connection share it, so the
            number of distinct values is the number of connections the client opened.
    """

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    connection: str = ""

    def json(self) -> Any:
        """The body decoded as JSON (raises `ValueError` if it is not JSON)."""
        return json.loads(self.body)
