"""A scriptable, OpenAI-compatible Chat Completions server on loopback, for tests and demos.

``chatlib.testing`` is standalone: it needs only the standard library and :mod:`aiohttp`, and it
imports nothing else from chatlib, so it can test any OpenAI client, not just chatlib's.

:class:`LocalServer` answers ``POST /v1/chat/completions`` like OpenAI does (JSON or SSE,
honouring ``stream``, ``stream_options.include_usage`` and ``n``). By default it echoes the last
user message; :meth:`LocalServer.enqueue` scripts the next replies, including faults::

    from chatlib.testing import Disconnect, ErrorReply, LocalServer, Reply, Stall

    with LocalServer() as server:  # a background thread with its own event loop
        server.enqueue(
            ErrorReply(429, headers={"retry-after": "0"}),  # first request
            Reply("Hello!"),  # second request
        )
        ...  # point the client at server.base_url
        assert server.requests[-1].json()["model"] == "gpt-4o-mini"

    async with LocalServer() as server:  # inside a running loop: no thread
        ...

Actions, consumed one per chat-completions request in FIFO order:

* :class:`Reply` - a normal completion (JSON or SSE, as the request asks).
* :class:`ErrorReply` - an OpenAI-shaped ``{"error": {...}}`` JSON error.
* :class:`RawReply` - exactly the given bytes (HTML error pages, broken JSON, hand-made SSE...).
* :class:`Disconnect` - drop the TCP connection before the headers, mid-body or mid-stream.
* :class:`Stall` - send nothing for a while (before the headers, mid-body or mid-stream).
* :class:`Trickle` - a body dribbled out a few bytes at a time, optionally forever.
* :class:`InStreamError` - a 200 stream that breaks off with an ``error`` event.

Scripting faults in your own tests: every failure a client has to survive is one action away.
Enqueue as many actions as the attempts you expect, then assert on the outcome and on
``len(server.requests)`` (how many attempts the client made)::

    server.enqueue(ErrorReply(503), ErrorReply(503), Reply())  # succeeds on the 3rd attempt
    server.enqueue(ErrorReply(429, headers={"retry-after": "1"}))  # asks for a 1 s wait
    server.enqueue(ErrorReply(429, code="insufficient_quota", type="insufficient_quota"))
    server.enqueue(ErrorReply(503, headers={"x-should-retry": "false"}))
    server.enqueue(Disconnect())  # connection closed before any response byte
    server.enqueue(Disconnect("mid_body"))  # a JSON body cut short
    server.enqueue(Disconnect("mid_stream"))  # an SSE stream cut after two events
    server.enqueue(Stall(5))  # silence before the headers: a read timeout
    server.enqueue(Stall(5, stage="mid_stream"))  # silence after two events
    server.enqueue(Trickle(size=1, interval=0.1))  # the echo reply, one byte every 100 ms
    server.enqueue(Trickle(b": keep-alive\\n\\n", repeat=True))  # comments only, forever
    server.enqueue(RawReply(body=b'{"choices": [', status=200))  # malformed JSON
    server.enqueue(RawReply(502, body=b"<html>...</html>", content_type="text/html"))
    # a stream that ends without data: [DONE]
    server.enqueue(RawReply(body=b"data: {...}\\n\\n", content_type="text/event-stream"))
    server.enqueue(RawReply(body=b"data: " + b"x" * 2**25 + b"\\n\\n"))  # an oversized line
    server.enqueue(InStreamError({"message": "overloaded", "type": "server_error"}))

Requests to any other path get an OpenAI-shaped 404, malformed JSON a 400; neither consumes a
scripted action. Every request, on any path, is recorded in :attr:`LocalServer.requests`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import http
import json
import re
import secrets
import socket
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import KW_ONLY, dataclass
from types import TracebackType
from typing import Any, Final, Literal, TypeAlias, Union

from aiohttp import web

__all__ = [
    "Action",
    "Disconnect",
    "ErrorReply",
    "InStreamError",
    "LocalServer",
    "RawReply",
    "RecordedRequest",
    "Reply",
    "Stall",
    "Trickle",
]

_CHAT_PATH: Final = "/v1/chat/completions"
_FINGERPRINT: Final = "fp_chatlib_local"
_SSE_CONTENT_TYPE: Final = "text/event-stream; charset=utf-8"
_JSON_CONTENT_TYPE: Final = "application/json"
_MAX_REQUEST_BODY: Final = 64 * 1024 * 1024
_MAX_CHOICES: Final = 128
_ARGUMENT_FRAGMENT: Final = 8  # characters of tool-call arguments per streamed delta
_SHUTDOWN_TIMEOUT: Final = 0.25  # aiohttp's grace period for busy connections at cleanup
_HANDLER_GRACE: Final = 0.5  # how long stop waits for handlers before cancelling them
_STOP_TIMEOUT: Final = 10.0  # upper bound for a sync stop() (never reached in practice)
_START_TIMEOUT: Final = 10.0
_AUTO: Final = "\x00auto\x00"  # sentinel for "computed from the status" defaults

_Stage = Literal["before_headers", "mid_body", "mid_stream"]


# --------------------------------------------------------------------------------------------
# Actions
# --------------------------------------------------------------------------------------------


def _check_delay(name: str, value: float) -> None:
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")


@dataclass(frozen=True)
class Reply:
    """A successful chat completion, shaped like OpenAI's, streamed or not as the request asks.

    With ``"stream": true`` the reply is an SSE stream (``text/event-stream``): a first delta
    ``{"role": "assistant", "content": ""}``, then ``reasoning_content`` deltas, ``content``
    deltas split word by word (spaces kept), ``refusal`` deltas and tool calls (``id``, ``type``
    and ``function.name`` once, then ``arguments`` in small fragments, by ``index``), a final
    chunk with an empty delta and ``finish_reason``, a usage-only chunk with ``"choices": []``
    when ``stream_options.include_usage`` is true, and ``data: [DONE]``. With ``n`` > 1 the
    choices' chunks interleave (not always in index order). Otherwise the reply is an
    ``application/json`` ChatCompletion with ``n`` identical choices. The response ``model`` is
    the request's ``model``, and there is always an ``x-request-id: req_<hex>`` header.

    Attributes:
        content: The assistant text. ``None`` (the default) means ``"Echo: <last user message>"``
            - unless ``tool_calls`` or ``refusal`` is given, in which case content is ``null``.
        finish_reason: ``None`` (the default) means ``"tool_calls"`` when ``tool_calls`` is
            given, else ``"stop"``.
        tool_calls: OpenAI-shaped tool calls, ``{"id", "type": "function", "function":
            {"name", "arguments"}}``. ``id`` and ``type`` may be omitted (generated), the
            ``function`` wrapper may be left out (``{"name", "arguments"}``), and
            ``arguments`` may be a dict (JSON-encoded for you).
        reasoning_content: DeepSeek/vLLM-style reasoning text (message field and deltas).
        refusal: The message's ``refusal`` text (``null`` when not given).
        usage: The ``usage`` object verbatim; by default it is computed from word counts.
        headers: Extra response headers (they override the defaults).
        delay: Seconds to wait before sending the response headers.
        piece_delay: Seconds to wait between two SSE events (streaming only).
        extra_chunk_fields: Top-level fields merged into every streamed chunk (e.g. Azure's
            ``prompt_filter_results`` or Groq's ``x_groq``). Not used for non-streamed replies.
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
    """An OpenAI-shaped JSON error: ``{"error": {"message", "type", "param", "code"}}``.

    Attributes:
        status: The HTTP status (100-599).
        message: ``error.message``; defaults to the status phrase, e.g. ``"Too Many Requests
            (scripted by chatlib.testing)"``.
        type: ``error.type``; defaults by status: ``"requests"`` for 429 (what OpenAI sends
            for request rate limits), ``"server_error"`` for 5xx, else
            ``"invalid_request_error"``. Pass ``None`` to send ``"type": null``.
        code: ``error.code`` (a string like ``"rate_limit_exceeded"`` or, like llama.cpp,
            an int).
        param: ``error.param``.
        headers: Extra response headers, e.g. ``{"retry-after": "1"}``. An ``x-request-id``
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
        if not 100 <= self.status <= 599:
            raise ValueError(f"status must be in 100..599, got {self.status!r}")
        if self.message == _AUTO:
            object.__setattr__(self, "message", _default_error_message(self.status))
        if self.type == _AUTO:
            object.__setattr__(self, "type", _default_error_type(self.status))


@dataclass(frozen=True)
class RawReply:
    """Exactly these bytes, for the responses no well-behaved server sends.

    HTML error pages, malformed JSON, hand-written SSE, a wrong content type, oversized lines,
    a stream without ``[DONE]``, a trickle of one-byte pieces...

    Attributes:
        status: The HTTP status.
        body: ``bytes`` are sent with a ``Content-Length``. A ``list`` of ``bytes`` is sent with
            chunked transfer encoding, piece by piece, each flushed separately, with
            ``piece_delay`` seconds between pieces.
        headers: Extra response headers (they override ``Content-Type``). Unlike the other
            actions, no ``x-request-id`` is added.
        content_type: The ``Content-Type`` header.
        piece_delay: Seconds between two pieces of a list ``body``.
    """

    status: int = 200
    _: KW_ONLY
    body: bytes | list[bytes] = b""
    headers: dict[str, str] | None = None
    content_type: str = _JSON_CONTENT_TYPE
    piece_delay: float = 0.0

    def __post_init__(self) -> None:
        if not 100 <= self.status <= 599:
            raise ValueError(f"status must be in 100..599, got {self.status!r}")
        _check_delay("piece_delay", self.piece_delay)
        pieces = [self.body] if isinstance(self.body, bytes) else self.body
        if not all(isinstance(piece, bytes) for piece in pieces):
            raise TypeError("RawReply.body must be bytes or a list of bytes")


@dataclass(frozen=True)
class Disconnect:
    """Drop the TCP connection (``transport.abort()``), so the client sees a real EOF/reset.

    Attributes:
        stage: ``"before_headers"``: no response byte at all. ``"mid_body"``: a 200
            ``application/json`` response whose ``Content-Length`` promises more than is sent,
            cut after ``after``. ``"mid_stream"``: a 200 ``text/event-stream`` (chunked)
            response cut after ``after``, without the terminating chunk.
        after: The body bytes sent before the drop. Left empty (the default), the server sends
            a realistic prefix: the first half of the JSON echo reply (``mid_body``), or the
            echo stream's first two SSE events (``mid_stream``). Ignored for
            ``before_headers``.
    """

    stage: _Stage = "before_headers"
    _: KW_ONLY
    after: bytes = b""

    def __post_init__(self) -> None:
        if self.stage not in ("before_headers", "mid_body", "mid_stream"):
            raise ValueError(f"unknown Disconnect stage {self.stage!r}")


@dataclass(frozen=True)
class Stall:
    """Go silent: the client's read timeout, not the server, has to end the request.

    Attributes:
        seconds: How long to stay silent. Afterwards the connection is closed without a
            response (``before_headers``) or dropped (``mid_body``, ``mid_stream``). Stopping
            the server ends a stall at once.
        stage: ``"before_headers"``: accept the request and send nothing. ``"mid_body"``:
            send 200 ``application/json`` headers whose ``Content-Length`` promises more than
            ``after``, then ``after``, then nothing. ``"mid_stream"``: send 200 SSE headers
            and ``after``, then nothing.
        after: The bytes sent before a ``mid_body`` or ``mid_stream`` stall; empty (the
            default) means the first half of the JSON echo reply (``mid_body``), or the echo
            stream's first two SSE events (``mid_stream``).
    """

    seconds: float
    _: KW_ONLY
    stage: Literal["before_headers", "mid_body", "mid_stream"] = "before_headers"
    after: bytes = b""

    def __post_init__(self) -> None:
        _check_delay("seconds", self.seconds)
        if self.stage not in ("before_headers", "mid_body", "mid_stream"):
            raise ValueError(f"unknown Stall stage {self.stage!r}")


@dataclass(frozen=True)
class Trickle:
    """A response whose body dribbles out ``size`` bytes every ``interval`` seconds.

    Each piece arrives well within a client's read timeout, so only a total deadline (or a
    size limit) ends the call: a slow-loris server, a proxy that sends nothing but keep-alive
    comments, a line that never ends. The headers are sent at once; the body uses chunked
    transfer encoding, every piece flushed separately.

    Attributes:
        body: The bytes to send. ``None`` (the default) means the echo reply, JSON or SSE as
            the request asks.
        size: Bytes per piece (at least 1).
        interval: Seconds between two pieces.
        repeat: Send ``body`` again and again, without end, until the client hangs up or the
            server stops (``body`` must not be empty).
        status: The HTTP status.
        content_type: The ``Content-Type``; ``None`` (the default) means
            ``text/event-stream`` when the request streams, else ``application/json``.
        headers: Extra response headers. An ``x-request-id`` header is always added (unless
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
        if not 100 <= self.status <= 599:
            raise ValueError(f"status must be in 100..599, got {self.status!r}")
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
    no ``finish_reason`` chunk and no ``[DONE]``.

    Attributes:
        error: The error object: sent as ``{"error": error}``, or as is when it already is a
            single-key ``{"error": {...}}`` dict.
        after_chunks: How many chunks of the echo stream precede the error (the first one is
            the ``role`` delta; there are never more than the echo reply has).
        as_event: ``False``: ``data: {"error": ...}``. ``True``: ``event: error`` then
            ``data: {"error": ...}``.
    """

    error: dict[str, Any]
    _: KW_ONLY
    after_chunks: int = 1
    as_event: bool = False

    def __post_init__(self) -> None:
        if self.after_chunks < 0:
            raise ValueError(f"after_chunks must be >= 0, got {self.after_chunks!r}")


Action: TypeAlias = Union[Reply, ErrorReply, RawReply, Disconnect, Stall, Trickle, InStreamError]
"""Anything :meth:`LocalServer.enqueue` accepts."""

_ACTION_TYPES: Final = (Reply, ErrorReply, RawReply, Disconnect, Stall, Trickle, InStreamError)


# --------------------------------------------------------------------------------------------
# Recorded requests
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the server received it.

    Attributes:
        method: The HTTP method, e.g. ``"POST"``.
        path: The URL path, e.g. ``"/v1/chat/completions"`` (no query string).
        query: The query parameters (the last value wins when a name repeats).
        headers: The request headers, names lower-cased; repeated headers joined with ``", "``.
        body: The raw request body.
    """

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        """The body decoded as JSON (raises :class:`ValueError` if it is not JSON)."""
        return json.loads(self.body)


# --------------------------------------------------------------------------------------------
# Reply construction (plain dicts)
# --------------------------------------------------------------------------------------------


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


def _sse(obj: Any) -> bytes:
    return b"data: " + _dumps(obj) + b"\n\n"


_SSE_DONE: Final = b"data: [DONE]\n\n"
_WORD_BOUNDARY: Final = re.compile(r"(?<=\s)(?=\S)")


def _split_words(text: str) -> list[str]:
    """Split so that ``"".join(pieces) == text``, one word (and its trailing spaces) a piece."""
    return [piece for piece in _WORD_BOUNDARY.split(text) if piece]


def _count_words(text: str | None) -> int:
    return len(text.split()) if text else 0


def _message_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [
            part["text"]
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        ]
        return " ".join(texts)
    return ""


def _new_id(prefix: str, nbytes: int = 12) -> str:
    return prefix + secrets.token_hex(nbytes)


def _normalize_tool_calls(tool_calls: Sequence[Mapping[str, Any]] | None) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = []
    for call in tool_calls or ():
        function = call.get("function")
        if not isinstance(function, Mapping):
            function = call
        arguments = function.get("arguments", "")
        if not isinstance(arguments, str):
            arguments = json.dumps(arguments)
        result.append(
            {
                "id": call.get("id") or _new_id("call_"),
                "type": call.get("type", "function"),
                "function": {"name": function.get("name", ""), "arguments": arguments},
            }
        )
    return result


@dataclass
class _Call:
    """What a chat-completions request asked for, and the ids of its answer."""

    model: str
    stream: bool
    n: int
    include_usage: bool
    echo: str
    prompt_tokens: int
    completion_id: str
    created: int

    @classmethod
    def from_payload(cls, payload: dict[str, Any], default_model: str) -> _Call:
        model = payload.get("model")
        n = payload.get("n")
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            n = 1
        options = payload.get("stream_options")
        messages = payload.get("messages")
        if not isinstance(messages, list):
            messages = []
        echo = ""
        prompt_words = 0
        for message in messages:
            if not isinstance(message, dict):
                continue
            text = _message_text(message.get("content"))
            prompt_words += _count_words(text)
            if message.get("role") == "user":
                echo = text
        return cls(
            model=model if isinstance(model, str) else default_model,
            stream=payload.get("stream") is True,
            n=min(n, _MAX_CHOICES),
            include_usage=isinstance(options, dict) and options.get("include_usage") is True,
            echo=echo,
            prompt_tokens=prompt_words,
            completion_id=_new_id("chatcmpl-"),
            created=int(time.time()),
        )


@dataclass
class _Resolved:
    """A :class:`Reply` with its defaults filled in for one request."""

    content: str | None
    finish_reason: str
    tool_calls: list[dict[str, Any]]
    usage: dict[str, Any]


def _resolve(call: _Call, reply: Reply) -> _Resolved:
    content = reply.content
    if content is None and not reply.tool_calls and reply.refusal is None:
        content = "Echo: " + call.echo
    tool_calls = _normalize_tool_calls(reply.tool_calls)
    finish_reason = reply.finish_reason
    if finish_reason is None:
        finish_reason = "tool_calls" if tool_calls else "stop"
    if reply.usage is not None:
        usage = dict(reply.usage)
    else:
        reasoning = _count_words(reply.reasoning_content)
        per_choice = (
            _count_words(content)
            + _count_words(reply.refusal)
            + reasoning
            + sum(_count_words(tc["function"]["arguments"]) for tc in tool_calls)
        )
        completion = per_choice * call.n
        usage = {
            "prompt_tokens": call.prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": call.prompt_tokens + completion,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": reasoning * call.n,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }
    return _Resolved(content, finish_reason, tool_calls, usage)


def _completion_body(call: _Call, reply: Reply) -> dict[str, Any]:
    resolved = _resolve(call, reply)
    message: dict[str, Any] = {
        "role": "assistant",
        "content": resolved.content,
        "refusal": reply.refusal,
        "annotations": [],
    }
    if reply.reasoning_content is not None:
        message["reasoning_content"] = reply.reasoning_content
    if resolved.tool_calls:
        message["tool_calls"] = resolved.tool_calls
    return {
        "id": call.completion_id,
        "object": "chat.completion",
        "created": call.created,
        "model": call.model,
        "choices": [
            {
                "index": index,
                "message": dict(message),
                "logprobs": None,
                "finish_reason": resolved.finish_reason,
            }
            for index in range(call.n)
        ],
        "usage": resolved.usage,
        "service_tier": "default",
        "system_fingerprint": _FINGERPRINT,
    }


def _choice_deltas(resolved: _Resolved, reply: Reply) -> list[dict[str, Any]]:
    """The deltas of one streamed choice, without the final finish_reason chunk."""
    content = resolved.content
    deltas: list[dict[str, Any]] = [
        {"role": "assistant", "content": "" if content is not None else None}
    ]
    deltas.extend({"reasoning_content": p} for p in _split_words(reply.reasoning_content or ""))
    deltas.extend({"content": p} for p in _split_words(content or ""))
    deltas.extend({"refusal": p} for p in _split_words(reply.refusal or ""))
    for index, call in enumerate(resolved.tool_calls):
        function = call["function"]
        deltas.append(
            {
                "tool_calls": [
                    {
                        "index": index,
                        "id": call["id"],
                        "type": call["type"],
                        "function": {"name": function["name"], "arguments": ""},
                    }
                ]
            }
        )
        arguments: str = function["arguments"]
        for start in range(0, len(arguments), _ARGUMENT_FRAGMENT):
            fragment = arguments[start : start + _ARGUMENT_FRAGMENT]
            deltas.append({"tool_calls": [{"index": index, "function": {"arguments": fragment}}]})
    return deltas


def _stream_events(call: _Call, reply: Reply, *, complete: bool = True) -> list[bytes]:
    """The SSE events of a streamed reply; ``complete=False`` stops before the final chunk."""
    resolved = _resolve(call, reply)
    extra = reply.extra_chunk_fields or {}

    def chunk(choices: list[dict[str, Any]]) -> dict[str, Any]:
        obj: dict[str, Any] = {
            "id": call.completion_id,
            "object": "chat.completion.chunk",
            "created": call.created,
            "model": call.model,
            "system_fingerprint": _FINGERPRINT,
            "choices": choices,
        }
        if call.include_usage:
            obj["usage"] = None
        obj.update(extra)
        return obj

    per_choice = _choice_deltas(resolved, reply)
    choices: list[list[tuple[dict[str, Any], str | None]]] = [
        [(delta, None) for delta in per_choice] + [({}, resolved.finish_reason)]
        for _ in range(call.n)
    ]
    events: list[bytes] = []
    for step in range(len(choices[0])):
        # Interleave the choices; every other step in reverse index order, like servers that
        # run choices in parallel (index 1 may come before index 0).
        order: Iterator[int] = reversed(range(call.n)) if step % 2 else iter(range(call.n))
        for index in order:
            delta, finish_reason = choices[index][step]
            if finish_reason is not None and not complete:
                return events
            events.append(
                _sse(
                    chunk(
                        [
                            {
                                "index": index,
                                "delta": delta,
                                "logprobs": None,
                                "finish_reason": finish_reason,
                            }
                        ]
                    )
                )
            )
    if call.include_usage:
        usage_chunk = chunk([])
        usage_chunk["usage"] = resolved.usage
        events.append(_sse(usage_chunk))
    events.append(_SSE_DONE)
    return events


def _error_body(
    message: str, type_: str | None, code: str | int | None = None, param: str | None = None
) -> bytes:
    return _dumps({"error": {"message": message, "type": type_, "param": param, "code": code}})


# --------------------------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------------------------


class _Dropped(Exception):
    """Raised inside a handler to end the exchange by closing the connection."""

    def __init__(self, graceful: bool = False) -> None:
        super().__init__()
        self.graceful = graceful


class _Exchange:
    """One request being answered, and the response started for it (if any)."""

    __slots__ = ("request", "response")

    def __init__(self, request: web.Request) -> None:
        self.request = request
        self.response: web.StreamResponse | None = None

    def close(self, *, graceful: bool) -> None:
        if self.response is not None:
            self.response.force_close()
        transport = self.request.transport
        if transport is not None and not transport.is_closing():
            if graceful:
                transport.close()
            else:
                transport.abort()


class LocalServer:
    """An OpenAI-compatible Chat Completions server on loopback, with scripted replies.

    Use it as a context manager, synchronously (``with``: the server runs in a background
    thread with its own event loop) or asynchronously (``async with``: it runs in the current
    event loop, no thread). Starting an already started server, or stopping a stopped one, does
    nothing; a stopped server can be started again (on a new ephemeral port when ``port=0``).

    Args:
        host: The address to listen on (loopback by default).
        port: The port; ``0`` picks a free ephemeral port (see :attr:`url`).
        api_key: When set, every request must carry ``Authorization: Bearer <api_key>``, else
            it gets a 401 with an OpenAI-shaped error body (and consumes no scripted action).
        model: The ``model`` reported when a request does not name one.
        write_size: When set, every response body is written in pieces of at most this many
            bytes, each flushed separately, so clients see tiny, arbitrary chunk boundaries
            (in the middle of SSE lines, JSON strings and UTF-8 characters).

    Attributes:
        api_key: As given.
        model: As given.
        write_size: As given.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        api_key: str | None = None,
        model: str = "chatlib-local",
        write_size: int | None = None,
    ) -> None:
        if write_size is not None and write_size < 1:
            raise ValueError(f"write_size must be >= 1, got {write_size!r}")
        self.api_key = api_key
        self.model = model
        self.write_size = write_size
        self._host = host
        self._port = port
        self._lock = threading.Lock()  # guards _script and _requests
        self._script: deque[Action] = deque()
        self._requests: list[RecordedRequest] = []
        self._state_lock = threading.Lock()  # guards start/stop transitions
        self._mode: Literal["thread", "async"] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._stopping: asyncio.Event | None = None
        self._handlers: set[asyncio.Task[Any]] = set()
        self._origin: str | None = None

    def __repr__(self) -> str:
        where = self._origin if self._mode is not None else "stopped"
        return f"<LocalServer {where}>"

    # -- addresses, script and records ---------------------------------------------------------

    @property
    def url(self) -> str:
        """The origin, ``"http://127.0.0.1:<port>"`` (raises :class:`RuntimeError` before the
        first start; after a stop it still names the last address)."""
        if self._origin is None:
            raise RuntimeError("LocalServer is not started: call start() or astart() first")
        return self._origin

    @property
    def base_url(self) -> str:
        """The API base URL for clients, ``"http://127.0.0.1:<port>/v1"``."""
        return self.url + "/v1"

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received so far, on any path, oldest first (a snapshot copy)."""
        with self._lock:
            return list(self._requests)

    def enqueue(self, *actions: Action) -> None:
        """Script the next chat-completions replies, first in first out.

        Each ``POST /v1/chat/completions`` (that passes the API-key check and carries a JSON
        object) consumes one action; when the script is empty the server echoes the last user
        message. Safe to call from any thread while the server runs.
        """
        for action in actions:
            if not isinstance(action, _ACTION_TYPES):
                raise TypeError(f"not a chatlib.testing action: {action!r}")
        with self._lock:
            self._script.extend(actions)

    def clear(self) -> None:
        """Drop the remaining scripted actions and the recorded requests."""
        with self._lock:
            self._script.clear()
            self._requests.clear()

    # -- sync lifecycle ----------------------------------------------------------------------

    def start(self) -> LocalServer:
        """Start serving from a background thread running its own event loop; returns self.

        Does nothing if the server is already running (in either mode).
        """
        with self._state_lock:
            if self._mode is not None:
                return self
            loop = asyncio.new_event_loop()
            ready = threading.Event()
            failure: list[BaseException] = []
            thread = threading.Thread(
                target=self._thread_main,
                args=(loop, ready, failure),
                name="chatlib.testing.LocalServer",
                daemon=True,
            )
            thread.start()
            if not ready.wait(_START_TIMEOUT):  # pragma: no cover - defensive
                loop.call_soon_threadsafe(loop.stop)
                thread.join(_STOP_TIMEOUT)
                raise RuntimeError("LocalServer did not start in time")
            if failure:
                thread.join(_STOP_TIMEOUT)
                raise failure[0]
            self._mode = "thread"
            self._loop = loop
            self._thread = thread
            return self

    def stop(self) -> None:
        """Stop serving: end in-flight handlers, close all connections, join the thread.

        Returns promptly even when handlers are stalled or clients hold keep-alive
        connections. Does nothing if the server is not running.
        """
        with self._state_lock:
            mode, loop, thread = self._mode, self._loop, self._thread
            if mode is None or loop is None:
                return
            if mode == "async":
                if _running_loop() is loop:
                    raise RuntimeError("this LocalServer was started with astart(): use astop()")
                asyncio.run_coroutine_threadsafe(self.astop(), loop).result(_STOP_TIMEOUT)
                return
            try:
                future = asyncio.run_coroutine_threadsafe(self._close(), loop)
                try:
                    future.result(_STOP_TIMEOUT)
                except (
                    concurrent.futures.TimeoutError
                ):  # pragma: no cover - defensive: the loop is wedged
                    future.cancel()
            finally:
                if thread is not None and thread.is_alive():
                    loop.call_soon_threadsafe(loop.stop)
                    thread.join(_STOP_TIMEOUT)
                self._mode = None
                self._loop = None
                self._thread = None

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _thread_main(
        self,
        loop: asyncio.AbstractEventLoop,
        ready: threading.Event,
        failure: list[BaseException],
    ) -> None:
        asyncio.set_event_loop(loop)
        try:
            try:
                loop.run_until_complete(self._open())
            except BaseException as exc:
                failure.append(exc)
                return
            finally:
                ready.set()
            loop.run_forever()
        finally:
            try:
                _finish_loop(loop)
            finally:
                asyncio.set_event_loop(None)
                loop.close()

    # -- async lifecycle ---------------------------------------------------------------------

    async def astart(self) -> LocalServer:
        """Start serving in the current event loop (no thread); returns self.

        Does nothing if the server is already running (in either mode).
        """
        with self._state_lock:
            if self._mode is not None:
                return self
            self._mode = "async"
            self._loop = asyncio.get_running_loop()
        try:
            await self._open()
        except BaseException:
            self._mode = None
            self._loop = None
            raise
        return self

    async def astop(self) -> None:
        """Stop serving (see :meth:`stop`); call it from the loop that ran :meth:`astart`.

        A server started with :meth:`start` is stopped from a worker thread instead.
        """
        mode, loop = self._mode, self._loop
        if mode is None:
            return
        if mode == "thread":
            await asyncio.to_thread(self.stop)
            return
        if loop is not asyncio.get_running_loop():
            raise RuntimeError("astop() must run in the event loop that ran astart()")
        try:
            await self._close()
        finally:
            if self._loop is loop:
                self._mode = None
                self._loop = None

    async def __aenter__(self) -> LocalServer:
        return await self.astart()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.astop()

    # -- serving -----------------------------------------------------------------------------

    async def _open(self) -> None:
        """Bind, listen and start the aiohttp runner in the running loop."""
        self._stopping = asyncio.Event()
        self._handlers = set()
        app = web.Application(client_max_size=_MAX_REQUEST_BODY)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=_SHUTDOWN_TIMEOUT
        )
        await runner.setup()
        sock: socket.socket | None = None
        try:
            family, kind, proto, _canon, address = socket.getaddrinfo(
                self._host, self._port, type=socket.SOCK_STREAM
            )[0]
            sock = socket.socket(family, kind, proto)
            if sys.platform != "win32":
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
            host, port = sock.getsockname()[:2]
            site = web.SockSite(runner, sock)
            await site.start()
        except BaseException:
            if sock is not None:
                sock.close()
            await runner.cleanup()
            raise
        self._runner = runner
        self._origin = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    async def _close(self) -> None:
        """End handlers, then close the listening socket and every connection."""
        runner = self._runner
        if runner is None:
            return
        self._runner = None
        if self._stopping is not None:
            self._stopping.set()  # wakes stalls and delays: their handlers drop the connection
        pending = {task for task in self._handlers if not task.done()}
        if pending:
            _done, pending = await asyncio.wait(pending, timeout=_HANDLER_GRACE)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=_HANDLER_GRACE)
        await runner.cleanup()
        # Let the connections' own tasks and transports see their cancellation and close.
        for _ in range(5):
            await asyncio.sleep(0)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        exchange = _Exchange(request)
        try:
            try:
                await self._serve(exchange)
            except _Dropped as drop:
                exchange.close(graceful=drop.graceful)
            except ConnectionError:
                exchange.close(graceful=False)
            except web.HTTPException as exc:  # e.g. 413 from request.read()
                if exchange.response is not None:
                    exchange.close(graceful=False)
                else:
                    message = exc.text or exc.reason
                    await self._send_error(exchange, exc.status, message, "invalid_request_error")
            except Exception:
                if exchange.response is not None:
                    exchange.close(graceful=False)
                else:
                    message = "chatlib.testing internal error:\n" + traceback.format_exc()
                    await self._send(
                        exchange,
                        500,
                        self._default_headers(),
                        [_error_body(message, "server_error")],
                    )
            return exchange.response if exchange.response is not None else web.Response()
        finally:
            if task is not None:
                self._handlers.discard(task)

    async def _serve(self, exchange: _Exchange) -> None:
        request = exchange.request
        body = await request.read()
        headers: dict[str, str] = {}
        for name, value in request.headers.items():
            key = name.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        record = RecordedRequest(
            method=request.method,
            path=request.path,
            query=dict(request.query.items()),
            headers=headers,
            body=body,
        )
        with self._lock:
            self._requests.append(record)

        if self.api_key is not None:
            authorization = headers.get("authorization")
            if authorization != f"Bearer {self.api_key}":
                await self._unauthorized(exchange, authorization)
                return
        if request.method != "POST" or request.path != _CHAT_PATH:
            message = (
                f"Invalid URL ({request.method} {request.path}): chatlib.testing.LocalServer "
                f"only serves POST {_CHAT_PATH}"
            )
            await self._send_error(exchange, 404, message, "invalid_request_error")
            return
        try:
            payload = json.loads(body)
        except ValueError:
            payload = None
        if not isinstance(payload, dict):
            message = (
                "We could not parse the JSON body of your request. (HINT: This likely means "
                "you aren't using your HTTP library correctly. The OpenAI API expects a JSON "
                "payload, but what was sent was not valid JSON or not a JSON object.)"
            )
            await self._send_error(exchange, 400, message, "invalid_request_error")
            return

        with self._lock:
            action: Action = self._script.popleft() if self._script else Reply()
        call = _Call.from_payload(payload, self.model)
        await self._perform(exchange, call, action)

    async def _perform(self, exchange: _Exchange, call: _Call, action: Action) -> None:
        if isinstance(action, Reply):
            await self._pause(action.delay)
            headers = self._default_headers()
            headers.update(action.headers or {})
            if call.stream:
                await self._send(
                    exchange,
                    200,
                    headers,
                    _stream_events(call, action),
                    content_type=_SSE_CONTENT_TYPE,
                    piece_delay=action.piece_delay,
                    sized=False,
                )
            else:
                body = _dumps(_completion_body(call, action))
                await self._send(exchange, 200, headers, [body])
        elif isinstance(action, ErrorReply):
            headers = self._default_headers()
            headers.update(action.headers or {})
            body = _error_body(action.message, action.type, action.code, action.param)
            await self._send(exchange, action.status, headers, [body])
        elif isinstance(action, RawReply):
            sized = isinstance(action.body, bytes)
            pieces = [action.body] if isinstance(action.body, bytes) else list(action.body)
            await self._send(
                exchange,
                action.status,
                dict(action.headers or {}),
                pieces,
                content_type=action.content_type,
                piece_delay=action.piece_delay,
                sized=sized,
                request_id=False,
            )
        elif isinstance(action, Disconnect):
            if action.stage == "before_headers":
                raise _Dropped
            await self._begin_partial(exchange, call, action)
            raise _Dropped
        elif isinstance(action, Stall):
            if action.stage == "before_headers":
                await self._pause(action.seconds)
                raise _Dropped(graceful=True)
            await self._begin_partial(exchange, call, action)
            await self._pause(action.seconds)
            raise _Dropped
        elif isinstance(action, Trickle):
            await self._trickle(exchange, call, action)
        else:
            events = _stream_events(call, Reply(), complete=False)[: action.after_chunks]
            error = action.error
            if not (len(error) == 1 and isinstance(error.get("error"), dict)):
                error = {"error": error}
            event = _sse(error)
            if action.as_event:
                event = b"event: error\n" + event
            await self._send(
                exchange,
                200,
                self._default_headers(),
                [*events, event],
                content_type=_SSE_CONTENT_TYPE,
                sized=False,
            )

    async def _begin_partial(
        self, exchange: _Exchange, call: _Call, action: Disconnect | Stall
    ) -> None:
        """Send 200 headers and the part of a body a ``mid_body``/``mid_stream`` fault sends."""
        if action.stage == "mid_body":
            if action.after:
                sent, declared = action.after, 2 * len(action.after) + 1
            else:
                full = _dumps(_completion_body(call, Reply()))
                sent, declared = full[: len(full) // 2], len(full)
            await self._begin(exchange, _JSON_CONTENT_TYPE, declared, sent)
        else:
            await self._begin(exchange, _SSE_CONTENT_TYPE, None, self._prefix(call, action))

    async def _trickle(self, exchange: _Exchange, call: _Call, action: Trickle) -> None:
        body = action.body
        if body is None:
            if call.stream:
                body = b"".join(_stream_events(call, Reply()))
            else:
                body = _dumps(_completion_body(call, Reply()))
        content_type = action.content_type
        if content_type is None:
            content_type = _SSE_CONTENT_TYPE if call.stream else _JSON_CONTENT_TYPE
        response = self._response(exchange, action.status, action.headers or {}, content_type)
        await response.prepare(exchange.request)
        await response.write(b"")  # aiohttp buffers the headers until the first write
        await self._flush(exchange)
        first = True
        while True:
            for start in range(0, len(body), action.size):
                if not first:
                    await self._pause(action.interval)
                first = False
                await self._write(exchange, response, body[start : start + action.size], flush=True)
            if not action.repeat:
                break
        await response.write_eof()

    @staticmethod
    def _prefix(call: _Call, action: Disconnect | Stall) -> bytes:
        if action.after:
            return action.after
        return b"".join(_stream_events(call, Reply(), complete=False)[:2])

    async def _unauthorized(self, exchange: _Exchange, authorization: str | None) -> None:
        if authorization is None:
            message = (
                "You didn't provide an API key. You need to provide your API key in an "
                "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
            )
            code = None
        else:
            shown = authorization.removeprefix("Bearer ")
            if len(shown) > 8:
                shown = shown[:3] + "*" * 4 + shown[-4:]
            message = f"Incorrect API key provided: {shown}."
            code = "invalid_api_key"
        await self._send_error(exchange, 401, message, "invalid_request_error", code)

    async def _send_error(
        self,
        exchange: _Exchange,
        status: int,
        message: str,
        type_: str,
        code: str | None = None,
    ) -> None:
        body = _error_body(message, type_, code)
        await self._send(exchange, status, self._default_headers(), [body])

    @staticmethod
    def _default_headers() -> dict[str, str]:
        return {"x-request-id": _new_id("req_", 16)}

    def _response(
        self,
        exchange: _Exchange,
        status: int,
        headers: Mapping[str, str],
        content_type: str,
        *,
        request_id: bool = True,
    ) -> web.StreamResponse:
        response = web.StreamResponse(status=status)
        response.headers["Content-Type"] = content_type
        if content_type.startswith("text/event-stream"):
            response.headers["Cache-Control"] = "no-cache"
        if request_id:
            response.headers.update(self._default_headers())
        response.headers.update(headers)
        exchange.response = response
        return response

    async def _send(
        self,
        exchange: _Exchange,
        status: int,
        headers: Mapping[str, str],
        pieces: Sequence[bytes],
        *,
        content_type: str = _JSON_CONTENT_TYPE,
        piece_delay: float = 0.0,
        sized: bool = True,
        request_id: bool = True,
    ) -> None:
        """Send a whole response: ``pieces`` in order, ``piece_delay`` seconds apart."""
        response = self._response(exchange, status, headers, content_type, request_id=request_id)
        if sized and "Content-Length" not in response.headers:
            response.content_length = sum(len(piece) for piece in pieces)
        await response.prepare(exchange.request)
        for index, piece in enumerate(pieces):
            if index:
                await self._pause(piece_delay)
            await self._write(exchange, response, piece, flush=not sized)
        await response.write_eof()

    async def _begin(
        self, exchange: _Exchange, content_type: str, content_length: int | None, data: bytes
    ) -> None:
        """Send 200 headers and ``data``, and make sure they left before the caller drops."""
        response = self._response(exchange, 200, {}, content_type)
        if content_length is not None:
            response.content_length = content_length
        await response.prepare(exchange.request)
        await response.write(b"")  # aiohttp buffers the headers until the first write
        await self._write(exchange, response, data, flush=True)

    async def _write(
        self, exchange: _Exchange, response: web.StreamResponse, data: bytes, *, flush: bool
    ) -> None:
        size = self.write_size
        if size is None:
            if data:
                await response.write(data)
            if flush:
                await self._flush(exchange)
            return
        for start in range(0, len(data), size):
            await response.write(data[start : start + size])
            await self._flush(exchange)

    async def _flush(self, exchange: _Exchange) -> None:
        """Wait until the transport has handed everything written so far to the kernel."""
        transport = exchange.request.transport
        while transport is not None and not transport.is_closing():
            if transport.get_write_buffer_size() == 0:
                await asyncio.sleep(0)  # a separate loop iteration: a separate TCP segment
                return
            if self._stopping is not None and self._stopping.is_set():
                raise _Dropped
            await asyncio.sleep(0.001)
        raise ConnectionResetError("the client closed the connection")

    async def _pause(self, seconds: float) -> None:
        """Sleep, but raise :class:`_Dropped` at once when the server stops."""
        stopping = self._stopping
        if stopping is None or stopping.is_set():
            raise _Dropped
        if seconds <= 0:
            return
        try:
            await asyncio.wait_for(stopping.wait(), timeout=seconds)
        except asyncio.TimeoutError:
            return
        raise _Dropped


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _finish_loop(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel what is left on a private loop and shut it down quietly (it is closed after)."""
    tasks = [task for task in asyncio.all_tasks(loop) if not task.done()]
    for task in tasks:
        task.cancel()
    if tasks:
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
    loop.run_until_complete(loop.shutdown_asyncgens())
    loop.run_until_complete(loop.shutdown_default_executor())
