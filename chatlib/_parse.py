"""Parsing answers: a whole completion body, and the bytes of a stream into chunks. Pure.

Malformed output never escapes as a `json` or model error: it raises the matching chatlib
error with the raw bytes kept (`.raw_body`), and an error object sent with a 200 status (in
a body or mid-stream) raises the error it describes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any, TypeVar, cast

from chatlib._accumulate import ChatCompletionAccumulator
from chatlib._headers import Headers, request_id_of
from chatlib._model_base import Model
from chatlib._serde import ModelShapeError, structure_hook
from chatlib.errors import (
    APIResponseValidationError,
    BodyTooLargeError,
    IncompleteStreamError,
    error_from_stream_payload,
    text_snippet,
)
from chatlib.models import CreateChatCompletionChunk, CreateChatCompletionResponse
from chatlib.sse import SSEDecoder

__all__ = ["BodyCollector", "ChunkParser", "fold_chunk", "json_parser", "parse_completion"]

_M = TypeVar("_M", bound=Model)


_structure_chunk = structure_hook(CreateChatCompletionChunk)
_NOT_SPACE = re.compile(rb"[^ \t\n\r\x0b\x0c]")  # what `bytes.lstrip()` does not strip
# The C scanner `json.loads` ends in (typeshed does not declare the attribute).
_scan_json: Callable[[str, int], tuple[Any, int]] = cast(Any, json.JSONDecoder()).scan_once


def _loads(text: str) -> Any:
    """`json.loads(text)`, minus its wrappers for the common case: a JSON value that starts
    at the first character and ends at the last (anything else takes `json.loads` itself,
    whose error, or value, it is)."""
    try:
        value, end = _scan_json(text, 0)
    except StopIteration:
        return json.loads(text)
    if end != len(text):
        return json.loads(text)
    return value


def _clip(text: str, limit: int = 200) -> str:
    """`text`, cut to `limit` characters with `...` (so a redaction can see the cut)."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _is_error_object(data: dict[str, Any]) -> bool:
    if "choices" in data:
        return False
    return "error" in data or data.get("object") == "error"


def _is_stream_error(data: dict[str, Any]) -> bool:
    """Whether a stream frame reports an error: an error object (OpenAI, llama-server, vLLM),
    or a chunk whose `error` is a non-empty object beside its choices (OpenRouter ends a
    stream that failed after it started so, with `"finish_reason": "error"`; the official
    SDK raises for it too)."""
    if "choices" not in data:
        return _is_error_object(data)
    if "error" not in data:
        return False
    error = data["error"]
    return error.__class__ is dict and bool(error)


def json_parser(cls: type[_M], what: str) -> Callable[[int, Mapping[str, str], bytes], _M]:
    """A parser of 2xx JSON bodies into `cls` (called `what` in errors): malformed bodies
    raise with the raw body kept, and a completion keeps the response's headers (`.headers`,
    `.request_id`, `.rate_limits`)."""
    structure = structure_hook(cls)

    def parse(status: int, headers: Mapping[str, str], raw: bytes) -> _M:
        result: _M = _parse_object(status, headers, raw, structure, what)
        if isinstance(result, CreateChatCompletionResponse):
            result._headers = Headers.of_response(headers)
        return result

    return parse


parse_completion = json_parser(CreateChatCompletionResponse, "a chat completion")
"""Parse a successful non-streaming answer, `(status, headers, body)` in; malformed ones
raise with the raw body kept. The completion keeps the response's headers."""


def _parse_object(
    status: int,
    headers: Mapping[str, str],
    raw: bytes,
    structure: Callable[[Any, Any], Any],
    what: str,
) -> Any:
    try:
        # A UTF-8 object (every server's answer) needs no encoding detected.
        data = _loads(raw.decode("utf-8")) if raw[:1] == b"{" else json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        # An empty body (a 204, a proxy's bare 200) is named: the decoder's "Expecting
        # value: line 1 column 1" does not say it.
        said = f"the body is empty, status {status}" if not raw.strip() else str(exc)
        raise APIResponseValidationError(
            f"the server's answer is not valid JSON ({said}); raw body kept in .raw_body",
            status_code=status,
            raw_body=raw,
            request_id=request_id_of(headers),
        ) from None
    if data.__class__ is not dict:
        raise APIResponseValidationError(
            f"expected a JSON object, got {type(data).__name__}",
            status_code=status,
            raw_body=raw,
            body=data,
            request_id=request_id_of(headers),
        )
    if "choices" not in data and _is_error_object(data):
        raise error_from_stream_payload(
            data, raw, request_id=request_id_of(headers), where="error body with status 200"
        )
    try:
        return structure(data, None)
    except (ModelShapeError, TypeError, ValueError, AttributeError) as exc:
        raise APIResponseValidationError(
            f"the answer does not have the shape of {what}: {exc}",
            status_code=status,
            raw_body=raw,
            body=data,
            request_id=request_id_of(headers),
        ) from None


class BodyCollector:
    """Gathers a body piece by piece, refusing to grow past `limit` bytes."""

    __slots__ = ("_limit", "_parts", "_size")

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._parts: list[bytes] = []
        self._size = 0

    def feed(self, data: bytes) -> None:
        """Add `data`; raises BodyTooLargeError once the total exceeds the limit."""
        self._size += len(data)
        if self._size > self._limit:
            raise BodyTooLargeError(
                f"the response body exceeds {self._limit} bytes (max_body_bytes)",
                raw_body=b"".join(self._parts)[:1024],
            )
        self._parts.append(data)

    def result(self) -> bytes:
        """Everything fed so far."""
        return b"".join(self._parts)


class ChunkParser:
    """Turns the bytes of a streamed answer into chunks; pure, fed by either facade.

    Stops at `data: [DONE]`; raises the matching chatlib error for an in-stream error, a
    frame that is not JSON (keeping the raw frame), or (`require_done`) a stream that ends
    without `[DONE]`. A JSON body where a stream was expected (an error answered with 200)
    is recognised and reported too. Chunks are not merged here: a stream merges the chunks
    it hands out (`fold_chunk`), so what it shows as accumulated is what the user saw.

    Incremental: `push` stores bytes and `next_chunk` parses just the next event, so the
    first chunk of a large read is handed out before the rest of the read is parsed, and a
    failure further on is raised only once the chunks before it were taken. `feed` and
    `finish` do the same for a whole read at once.
    """

    __slots__ = (
        "_decoder",
        "_ended",
        "_events_seen",
        "_json_body",
        "_max_line_bytes",
        "_request_id",
        "_require_done",
        "_started",
        "done",
    )

    def __init__(
        self,
        *,
        request_id: str | None,
        max_line_bytes: int,
        require_done: bool = True,
    ) -> None:
        self._decoder = SSEDecoder(max_line_bytes=max_line_bytes)
        self._request_id = request_id
        self._require_done = require_done
        self._json_body: bytearray | None = None
        self._max_line_bytes = max_line_bytes
        self._started = False
        self._ended = False
        self._events_seen = 0
        self.done = False

    @property
    def request_id(self) -> str | None:
        """The request id of the response being parsed."""
        return self._request_id

    def feed(self, data: bytes) -> list[CreateChatCompletionChunk]:
        """Chunks completed by `data` (none once `[DONE]` was seen)."""
        self.push(data)
        return self._drain()

    def finish(self) -> list[CreateChatCompletionChunk]:
        """The body ended: report what that means. Returns any last chunks."""
        self.end()
        return self._drain()

    def _drain(self) -> list[CreateChatCompletionChunk]:
        out: list[CreateChatCompletionChunk] = []
        while True:
            chunk = self.next_chunk()
            if chunk is None:
                return out
            out.append(chunk)

    def push(self, data: bytes) -> None:
        """Store the next bytes of the body (ignored once `[DONE]` was seen); `next_chunk`
        parses them. Push again only once `next_chunk` returned `None`."""
        if self.done or not data:
            return
        if not self._started:
            first = _NOT_SPACE.search(data)  # the first byte that is not whitespace, no copy
            if first is None:
                # Not known yet whether this is SSE or JSON: the decoder keeps it, so a read
                # of whitespace alone parses as it would at the head of a larger read.
                self._decoder.push(data)
                return
            self._started = True
            if first.group() in (b"{", b"[", b"<"):  # a JSON body or an HTML page, not SSE
                self._json_body = bytearray()
        if self._json_body is not None:
            self._json_body += data
            if len(self._json_body) > self._max_line_bytes:
                raise BodyTooLargeError(
                    "a JSON body where a stream was expected exceeds max_line_bytes",
                    raw_body=bytes(self._json_body[:1024]),
                )
            return
        self._decoder.push(data)

    def end(self) -> None:
        """The body ended: the next `next_chunk` that finds no more events says what that
        means (a stream cut short raises)."""
        self._ended = True

    def next_chunk(self) -> CreateChatCompletionChunk | None:
        """The next chunk of the bytes pushed so far, or `None`: more bytes are needed, or
        the stream is over (`done`). Raises for a broken stream, and, after `end`, for one
        that ended too early."""
        next_fields = self._decoder.next_fields
        while not self.done:
            if self._json_body is None:
                fields = next_fields()
                if fields is not None:
                    self._events_seen += 1
                    chunk = self._on_event(fields[1], fields[0])
                    if chunk is not None:
                        return chunk
                    continue
            if self._ended:
                self._on_end()
            return None
        return None

    def _on_event(self, kind: str, data: str) -> CreateChatCompletionChunk | None:
        if data.startswith("[DONE]"):  # as the official SDK reads it: `[DONE] ` ends too
            self.done = True
            return None
        if kind not in ("message", "error") or not data:
            # Keep-alives, vendor events (`event: ping`) and a bare `data:` are not chunks.
            return None
        try:
            payload = _loads(data)
        except (ValueError, RecursionError) as exc:
            raw = data.encode("utf-8")
            if kind == "error":
                raise error_from_stream_payload(data, raw, request_id=self._request_id) from None
            raise APIResponseValidationError(
                f"a stream frame is not valid JSON ({exc}); the frame is kept in .raw_body",
                raw_body=raw,
                request_id=self._request_id,
            ) from None
        if payload.__class__ is not dict:
            if kind == "error":
                raise error_from_stream_payload(
                    payload, data.encode("utf-8"), request_id=self._request_id
                )
            raise APIResponseValidationError(
                f"a stream frame is not a JSON object: {_clip(data)!r}",
                raw_body=data.encode("utf-8"),
                body=payload,
                request_id=self._request_id,
            )
        if kind == "error" or _is_stream_error(payload):
            raw = data.encode("utf-8")
            raise error_from_stream_payload(payload, raw, request_id=self._request_id)
        try:
            chunk: CreateChatCompletionChunk = _structure_chunk(payload, None)
        except (ModelShapeError, TypeError, ValueError, AttributeError) as exc:
            raise APIResponseValidationError(
                f"a stream frame does not have the shape of a chunk: {exc}",
                raw_body=data.encode("utf-8"),
                body=payload,
                request_id=self._request_id,
            ) from None
        return chunk

    def _on_end(self) -> None:
        """The body ended and every event in it was parsed: finished, or raise why not."""
        if self._json_body is not None:
            raw = bytes(self._json_body)
            if raw.lstrip()[:1] == b"<":
                raise APIResponseValidationError(
                    f"expected an event stream, got an HTML page: {text_snippet(raw)!r}; "
                    "raw body kept in .raw_body",
                    raw_body=raw,
                    request_id=self._request_id,
                )
            try:
                payload = json.loads(raw)
            except (ValueError, RecursionError):
                payload = None
            if isinstance(payload, dict) and _is_error_object(payload):
                raise error_from_stream_payload(
                    payload, raw, request_id=self._request_id, where="error body with status 200"
                )
            raise APIResponseValidationError(
                "expected an event stream, got a JSON body; raw body kept in .raw_body",
                raw_body=raw,
                body=payload,
                request_id=self._request_id,
            )
        pending = self._decoder.pending_event()
        if pending is not None and pending.data.startswith("[DONE]"):
            self.done = True  # "data: [DONE]" with no blank line after it: finished all the same
            return
        self._decoder.flush()
        if not self._require_done:
            self.done = True
            return
        if not self._started or self._events_seen == 0:
            raise IncompleteStreamError(
                "the server ended the stream without sending any event (llama.cpp does this "
                "when the prompt does not fit the context)"
            )
        raise IncompleteStreamError(
            "the stream ended before data: [DONE]; the answer may be cut off "
            "(what arrived is in stream.accumulated)"
        )


def fold_chunk(
    accumulator: ChatCompletionAccumulator,
    chunk: CreateChatCompletionChunk,
    request_id: str | None,
) -> None:
    """Merge `chunk` into `accumulator`; a value of the wrong type is the server's fault,
    raised as `APIResponseValidationError` with the chunk as its body and the request id."""
    try:
        accumulator.add(chunk)
    except APIResponseValidationError as exc:
        exc.request_id = request_id
        raise
