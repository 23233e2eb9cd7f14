"""The transport-agnostic core: build requests, run the send/retry flow, parse answers and streams.

Nothing here does I/O, sleeps or reads a clock it was not handed. ``request_flow`` is a
generator in the style of httpx's ``Auth.auth_flow``: it yields commands (:class:`Send`,
:class:`ReadBody`, :class:`Sleep`) and receives their outcomes; ``SyncChat`` and
``AsyncChat`` drive the very same generator with their own transport and sleep.
"""

from __future__ import annotations

import json
import platform
import random
import time
from collections import deque
from collections.abc import Callable, Generator, Iterable, Mapping
from typing import Any, TypeVar, Union
from urllib.parse import urlencode, urljoin, urlsplit

import attrs

from chatlib import __version__, _log
from chatlib._accumulate import ChatCompletionAccumulator
from chatlib._config import ClientConfig, Timeout, TimeoutLike
from chatlib._headers import is_credential, redact, safe_url
from chatlib._retry import RetryPolicy
from chatlib._serde import ModelShapeError, converter, make_unstructurer, unstructure
from chatlib._validate import check_param_names, validate_request
from chatlib.errors import (
    APIError,
    APIResponseValidationError,
    APITimeoutError,
    BodyTooLargeError,
    ChatLibError,
    IncompleteStreamError,
    InvalidArgumentError,
    error_from_response,
    error_from_stream_payload,
    text_snippet,
)
from chatlib.models import (
    ChatMessage,
    CreateChatCompletionChunk,
    CreateChatCompletionRequest,
    CreateChatCompletionResponse,
)
from chatlib.sse import SSEDecoder

__all__ = [
    "BodyCollector",
    "ChunkParser",
    "HttpRequest",
    "ReadBody",
    "Send",
    "Sleep",
    "build_request",
    "parse_completion",
    "request_flow",
]

_R = TypeVar("_R")
# After ``[DONE]`` a stream reads on to the end of its body, so the connection can be reused:
# at most this much, for at most this long; else the connection is closed instead.
DRAIN_BYTES = 64 * 1024
DRAIN_SECONDS = 0.25
_USER_AGENT = f"chatlib/{__version__} python/{platform.python_version()}"
_ASSISTANT_RESPONSE_ONLY = ("annotations",)
# Only the redirects that keep the method and body: a 301/302/303 would turn the POST into a
# GET that no chat endpoint answers, so it is raised instead, naming where it points.
_REDIRECTS = frozenset({307, 308})
_MAX_REDIRECTS = 5
_DEFAULT_PORTS = {"http": 80, "https": 443}


@attrs.frozen(repr=False)
class HttpRequest:
    """One HTTP request, fully built. ``repr`` hides credentials."""

    method: str
    url: str
    headers: Mapping[str, str]
    body: bytes | None
    timeout: Timeout
    stream: bool = False

    def __repr__(self) -> str:
        return f"HttpRequest({self.method} {safe_url(self.url)}, headers={redact(self.headers)!r})"


# ---------------------------------------------------------------- commands of the flow


@attrs.frozen
class Send:
    """Send ``request``; answer with the transport's response, or the APIConnectionError raised."""

    request: HttpRequest
    attempt: int


@attrs.frozen
class ReadBody:
    """Read ``response``'s whole body (at most ``limit`` bytes) and close it; answer with the
    bytes, or the APIError raised while reading."""

    response: Any
    limit: int


@attrs.frozen
class Sleep:
    """Wait ``seconds``; answer with ``None``."""

    seconds: float


Command = Union[Send, ReadBody, Sleep]


# ---------------------------------------------------------------- building


def _message_to_wire(message: Any) -> Any:
    data: dict[str, Any]
    if message.__class__ is dict:  # the common case, without an abstract isinstance check
        data = unstructure(message)
    elif isinstance(message, ChatMessage):
        data = message.to_dict()
    elif isinstance(message, Mapping):
        data = unstructure(message)
    else:
        return message
    if data.get("role") == "assistant":
        # Messages copied from a response carry fields the request schema does not take, and
        # llama.cpp answers 500 to ``"content": null`` beside tool calls: send the clean form.
        for key in _ASSISTANT_RESPONSE_ONLY:
            data.pop(key, None)
        if data.get("refusal", "") is None:
            del data["refusal"]
        if data.get("content", "") is None and (
            data.get("tool_calls") or data.get("function_call")
        ):
            del data["content"]
        audio = data.get("audio")
        if isinstance(audio, Mapping) and "id" in audio:
            data["audio"] = {"id": audio["id"]}
    return data


def request_body(request: CreateChatCompletionRequest, *, stream: bool) -> dict[str, Any]:
    """The JSON body for ``request``: the fields that were set, ``extra_body`` merged on top."""
    if request.__class__ is CreateChatCompletionRequest:
        body = _request_fields(request)  # messages and extra_* left unconverted: done below
    else:
        body = request.to_dict()
    for key in ("extra_body", "extra_headers", "extra_query"):
        body.pop(key, None)
    body["messages"] = [_message_to_wire(m) for m in request.messages]
    if stream:
        body["stream"] = True
    if request.extra_body:
        body.update(unstructure(dict(request.extra_body)))
    return body


# ``request.to_dict()``, minus converting the fields ``request_body`` replaces or drops anyway.
_request_fields = make_unstructurer(
    CreateChatCompletionRequest,
    raw=frozenset({"messages", "extra_body", "extra_headers", "extra_query"}),
)
# What ``json.dumps(body, separators=..., ...)`` builds on every call, built once.
_encode_json = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode


def _unencodable_field(request: CreateChatCompletionRequest, body: Mapping[str, Any]) -> str:
    """The argument to blame for a body that ``json.dumps`` refused (an error path only)."""
    extra_keys = set(request.extra_body or ())
    for key, value in body.items():
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError):
            return "extra_body" if key in extra_keys else key
    return "request"


def build_request(
    config: ClientConfig,
    request: CreateChatCompletionRequest,
    *,
    stream: bool,
    timeout: Timeout | None = None,
    idempotency_key: str | None = None,
) -> HttpRequest:
    """Validate ``request`` and turn it into an :class:`HttpRequest` for ``config``'s server."""
    validate_request(request)
    try:
        body = request_body(request, stream=stream)
    except RecursionError:
        raise InvalidArgumentError(
            "messages", "nested too deeply to send (does a message contain itself?)"
        ) from None
    try:
        payload = _encode_json(body)
    except (TypeError, ValueError) as exc:
        field = _unencodable_field(request, body)
        raise InvalidArgumentError(field, f"cannot be sent as JSON: {exc}") from None
    headers: dict[str, str] = {
        "Content-Type": "application/json",
        "Accept": "text/event-stream" if stream else "application/json",
        "User-Agent": _USER_AGENT,
    }
    if config.api_key is not None:
        headers["Authorization"] = f"Bearer {config.api_key.reveal()}"
    if config.organization:
        headers["OpenAI-Organization"] = config.organization
    if config.project:
        headers["OpenAI-Project"] = config.project
    if idempotency_key:
        headers["Idempotency-Key"] = idempotency_key
    headers.update(config.default_headers)
    if request.extra_headers:
        headers.update(request.extra_headers)
    query = {**config.default_query, **(request.extra_query or {})}
    # A base URL may carry its own query (Azure's ``?api-version=``): the path goes before it.
    base, _, base_query = config.base_url.partition("?")
    url = f"{base.rstrip('/')}/chat/completions"
    encoded = "&".join(part for part in (base_query, urlencode(query) if query else "") if part)
    if encoded:
        url += "?" + encoded
    return HttpRequest(
        method="POST",
        url=url,
        headers=headers,
        body=payload.encode("utf-8"),
        timeout=timeout or config.timeout,
        stream=stream,
    )


# ---------------------------------------------------------------- parsing


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None:
        for key, val in headers.items():
            if key.lower() == name:
                return val
    return value


def request_id_of(headers: Mapping[str, str]) -> str | None:
    """The server's request id (``x-request-id``), if it sent one."""
    return _header(headers, "x-request-id")


_structure_completion = converter.get_structure_hook(CreateChatCompletionResponse)
_structure_chunk = converter.get_structure_hook(CreateChatCompletionChunk)


def _is_error_object(data: dict[str, Any]) -> bool:
    if "choices" in data:
        return False
    return "error" in data or data.get("object") == "error"


def parse_completion(
    status: int, headers: Mapping[str, str], raw: bytes
) -> CreateChatCompletionResponse:
    """Parse a successful non-streaming answer; malformed ones raise with the raw body kept."""
    request_id = request_id_of(headers)
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise APIResponseValidationError(
            f"the server's answer is not valid JSON ({exc}); raw body kept in .raw_body",
            status_code=status,
            raw_body=raw,
            request_id=request_id,
        ) from None
    if not isinstance(data, dict):
        raise APIResponseValidationError(
            f"expected a JSON object, got {type(data).__name__}",
            status_code=status,
            raw_body=raw,
            body=data,
            request_id=request_id,
        )
    if _is_error_object(data):
        raise error_from_stream_payload(
            data, raw, request_id=request_id, where="error body with status 200"
        )
    try:
        result: CreateChatCompletionResponse = _structure_completion(data, None)
    except (ModelShapeError, TypeError, ValueError, AttributeError) as exc:
        raise APIResponseValidationError(
            f"the answer does not have the shape of a chat completion: {exc}",
            status_code=status,
            raw_body=raw,
            body=data,
            request_id=request_id,
        ) from None
    return result


class BodyCollector:
    """Gathers a body piece by piece, refusing to grow past ``limit`` bytes."""

    __slots__ = ("_limit", "_parts", "_size")

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._parts: list[bytes] = []
        self._size = 0

    def feed(self, data: bytes) -> None:
        """Add ``data``; raises BodyTooLargeError once the total exceeds the limit."""
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


# ---------------------------------------------------------------- the flow


# The per-attempt copies below skip attrs' generic paths; only while the classes hold just
# the fields they are written for (anything else falls back to the checked constructors).
_PLAIN_TIMEOUT = tuple(attrs.fields_dict(Timeout)) == ("connect", "read", "total")
_PLAIN_HTTP_REQUEST = tuple(attrs.fields_dict(HttpRequest)) == (
    "method",
    "url",
    "headers",
    "body",
    "timeout",
    "stream",
)


def _attempt_timeout(base: Timeout, deadline: float | None, now: float) -> Timeout:
    if deadline is None:
        return base
    remaining = deadline - now
    if remaining <= 0:
        raise APITimeoutError("the call's total deadline passed (timeout.total)")
    connect = remaining if base.connect is None else min(base.connect, remaining)
    read = remaining if base.read is None else min(base.read, remaining)
    if _PLAIN_TIMEOUT and remaining.__class__ is float and remaining > 0:
        # Capped by a positive float, ``base``'s already checked limits stay valid: build the
        # Timeout without checking them again.
        timeout: Timeout = object.__new__(Timeout)
        object.__setattr__(timeout, "connect", connect)
        object.__setattr__(timeout, "read", read)
        object.__setattr__(timeout, "total", remaining)
        return timeout
    return Timeout(connect=connect, read=read, total=remaining)


def _with_timeout(request: HttpRequest, timeout: Timeout) -> HttpRequest:
    """``request`` with ``timeout``: itself when that is its own, else a copy."""
    if timeout is request.timeout:
        return request
    if _PLAIN_HTTP_REQUEST and request.__class__ is HttpRequest:
        return HttpRequest(
            request.method, request.url, request.headers, request.body, timeout, request.stream
        )
    return attrs.evolve(request, timeout=timeout)


def request_flow(
    request: HttpRequest,
    *,
    policy: RetryPolicy,
    max_body_bytes: int,
    clock: Callable[[], float],
    wall_clock: Callable[[], float],
    rand: Callable[[], float],
    parse: Callable[[int, Mapping[str, str], bytes], _R] | None,
    deadline: float | None = None,
) -> Generator[Command, Any, Any]:
    """Send ``request`` until it succeeds or fails for good, retrying per ``policy``.

    Returns ``parse(status, headers, body)`` for a non-streaming call, or the still-open
    transport response for a stream (``parse=None``). ``clock`` is monotonic seconds (the
    deadline), ``wall_clock`` Unix time (HTTP-date ``Retry-After``), ``rand`` in [0, 1).
    """
    total = request.timeout.total
    if deadline is None and total is not None:
        deadline = clock() + total
    debug = _log.debug_enabled()  # decided once per call: no logging work when off
    started = 0.0
    attempt = 0
    redirects = 0
    while True:
        timeout = _attempt_timeout(request.timeout, deadline, clock())
        if debug:
            _log.log_send(request, attempt)
            started = clock()
        outcome = yield Send(_with_timeout(request, timeout), attempt)
        headers: Mapping[str, str] = {}
        if isinstance(outcome, APIError):
            error: APIError = outcome
        else:
            response = outcome
            status: int = response.status_code
            headers = response.headers
            location = _header(headers, "location") if status in _REDIRECTS else None
            if location is not None and redirects < _MAX_REDIRECTS:
                if debug:
                    _log.log_outcome(request, attempt, clock() - started, outcome)
                yield ReadBody(response, 64 * 1024)  # drained, so the connection is reused
                request = follow_redirect(request, location)
                redirects += 1
                continue  # a redirect is not a retry: same attempt, same budget
            if 200 <= status < 300:
                if parse is None:
                    if debug:
                        _log.log_outcome(request, attempt, clock() - started, outcome)
                    return response
                body = yield ReadBody(response, max_body_bytes)
                if not isinstance(body, APIError):
                    if debug:
                        _log.log_outcome(request, attempt, clock() - started, outcome)
                    return parse(status, headers, body)
                error = body
            else:
                body = yield ReadBody(response, 1024 * 1024)
                if isinstance(body, APIError):
                    body = b""
                error = error_from_response(status, headers, body)
        if debug:
            _log.log_outcome(request, attempt, clock() - started, outcome, error)
        if attempt >= policy.max_retries or not policy.is_retryable(error, headers):
            raise error
        delay = policy.delay(attempt, headers, now=wall_clock(), rand=rand())
        if deadline is not None and clock() + delay >= deadline:
            raise error
        if debug:
            _log.log_retry(request, attempt, delay, error)
        yield Sleep(delay)
        attempt += 1


def origin_of(url: str) -> str:
    """``scheme://host:port`` of an absolute ``url``, cheaply (for per-server caches)."""
    return "/".join(url.split("/", 3)[:3])


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), parts.port or _DEFAULT_PORTS.get(scheme)


def follow_redirect(request: HttpRequest, location: str) -> HttpRequest:
    """The request to send after a 307/308 redirect to ``location``: the same request.

    Unlike ``requests`` and ``aiohttp``, every header that may carry a credential
    (``Authorization``, ``api-key``, ``x-api-key``, cookies, any ``*token*``/``*secret*``
    header) is dropped when the new URL is on another origin (scheme, host or port), not just
    ``Authorization``.
    """
    url = urljoin(request.url, location)
    headers = dict(request.headers)
    if _origin(url) != _origin(request.url):
        headers = {name: value for name, value in headers.items() if not is_credential(name)}
    return attrs.evolve(request, url=url, headers=headers)


# ---------------------------------------------------------------- streams


class ChunkParser:
    """Turns the bytes of a streamed answer into chunks; pure, fed by either facade.

    Stops at ``data: [DONE]``; raises the matching chatlib error for an in-stream error, a
    frame that is not JSON (keeping the raw frame), or (``require_done``) a stream that ends
    without ``[DONE]``. A JSON body where a stream was expected (an error answered with 200)
    is recognised and reported too. Every chunk is also folded into :attr:`accumulator`
    (unless ``accumulate=False``: a stream object folds chunks in as it hands them out).
    """

    def __init__(
        self,
        *,
        request_id: str | None,
        max_line_bytes: int,
        require_done: bool = True,
        accumulate: bool = True,
    ) -> None:
        self._decoder = SSEDecoder(max_line_bytes=max_line_bytes)
        self._request_id = request_id
        self._require_done = require_done
        self._json_body: bytearray | None = None
        self._max_line_bytes = max_line_bytes
        self._started = False
        self._events_seen = 0
        self.done = False
        self.accumulator = ChatCompletionAccumulator()
        self._accumulate = accumulate

    @property
    def request_id(self) -> str | None:
        """The request id of the response being parsed."""
        return self._request_id

    def feed(self, data: bytes) -> list[CreateChatCompletionChunk]:
        """Chunks completed by ``data`` (none once ``[DONE]`` was seen)."""
        out: deque[CreateChatCompletionChunk] = deque()
        self.feed_into(data, out)
        return list(out)

    def feed_into(self, data: bytes, out: deque[CreateChatCompletionChunk]) -> None:
        """Like :meth:`feed`, appending each chunk to ``out`` as it is made, so the chunks
        that came before a failure in the same ``data`` are in ``out`` when it raises."""
        if self.done or not data:
            return
        if not self._started:
            stripped = data.lstrip()
            if not stripped:
                return
            self._started = True
            if stripped[:1] in (b"{", b"[", b"<"):  # a JSON body or an HTML page, not SSE
                self._json_body = bytearray()
        if self._json_body is not None:
            self._json_body += data
            if len(self._json_body) > self._max_line_bytes:
                raise BodyTooLargeError(
                    "a JSON body where a stream was expected exceeds max_line_bytes",
                    raw_body=bytes(self._json_body[:1024]),
                )
            return
        for event in self._decoder.feed(data):
            chunk = self._on_event(event.event, event.data)
            if chunk is not None:
                out.append(chunk)
            if self.done:
                break

    def _on_event(self, kind: str, data: str) -> CreateChatCompletionChunk | None:
        self._events_seen += 1
        if data == "[DONE]":
            self.done = True
            return None
        if kind not in ("message", "error") or not data:
            # Keep-alives, vendor events (``event: ping``) and a bare ``data:`` are not chunks.
            return None
        try:
            payload = json.loads(data)
        except (ValueError, RecursionError) as exc:
            raw = data.encode("utf-8")
            if kind == "error":
                raise error_from_stream_payload(data, raw, request_id=self._request_id) from None
            raise APIResponseValidationError(
                f"a stream frame is not valid JSON ({exc}); the frame is kept in .raw_body",
                raw_body=raw,
                request_id=self._request_id,
            ) from None
        if kind == "error" or (isinstance(payload, dict) and _is_error_object(payload)):
            raw = data.encode("utf-8")
            raise error_from_stream_payload(payload, raw, request_id=self._request_id)
        if not isinstance(payload, dict):
            raise APIResponseValidationError(
                f"a stream frame is not a JSON object: {data[:200]!r}",
                raw_body=data.encode("utf-8"),
                body=payload,
                request_id=self._request_id,
            )
        try:
            chunk: CreateChatCompletionChunk = _structure_chunk(payload, None)
        except (ModelShapeError, TypeError, ValueError, AttributeError) as exc:
            raise APIResponseValidationError(
                f"a stream frame does not have the shape of a chunk: {exc}",
                raw_body=data.encode("utf-8"),
                body=payload,
                request_id=self._request_id,
            ) from None
        if self._accumulate:
            _fold(self.accumulator, chunk, self._request_id)
        return chunk

    def finish(self) -> list[CreateChatCompletionChunk]:
        """The body ended: report what that means. Returns any last chunks."""
        if self.done:
            return []
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
        chunks: list[CreateChatCompletionChunk] = []
        pending = self._decoder.pending_event()
        if pending is not None and pending.data == "[DONE]":
            self.done = True  # "data: [DONE]" with no blank line after it: finished all the same
            return chunks
        self._decoder.flush()
        if not self._require_done:
            self.done = True
            return chunks
        if not self._started or self._events_seen == 0:
            raise IncompleteStreamError(
                "the server ended the stream without sending any event (llama.cpp does this "
                "when the prompt does not fit the context)"
            )
        raise IncompleteStreamError(
            "the stream ended before data: [DONE]; the answer may be cut off "
            "(what arrived is in stream.accumulated)"
        )


def _fold(
    accumulator: ChatCompletionAccumulator,
    chunk: CreateChatCompletionChunk,
    request_id: str | None,
) -> None:
    try:
        accumulator.add(chunk)
    except ModelShapeError as exc:
        body = chunk.to_dict()
        raise APIResponseValidationError(
            f"a stream chunk has a value of the wrong type: {exc}",
            raw_body=json.dumps(body, ensure_ascii=False).encode("utf-8"),
            body=body,
            request_id=request_id,
        ) from None


class StreamState:
    """Everything a stream object knows, minus its I/O: the parser, the queue of chunks not
    yet handed out, the total deadline. The sync and async streams only move bytes into it."""

    __slots__ = (
        "_accumulator",
        "_clock",
        "_deadline",
        "_failure",
        "finished",
        "parser",
        "pending",
        "response_headers",
    )

    def __init__(
        self,
        parser: ChunkParser,
        *,
        deadline: float | None,
        clock: Callable[[], float],
        response_headers: Mapping[str, str],
    ) -> None:
        self.parser = parser
        self.pending: deque[CreateChatCompletionChunk] = deque()
        self.finished = False
        self.response_headers = response_headers
        self._clock = clock
        self._deadline = deadline  # the call's, fixed when it started: retries count too
        self._accumulator = ChatCompletionAccumulator()
        self._failure: ChatLibError | None = None

    def on_bytes(self, data: bytes) -> None:
        """Feed body bytes; raises for a broken stream or a passed deadline."""
        if self._deadline is not None and self._clock() > self._deadline:
            raise APITimeoutError("the stream outlived its total deadline (timeout.total)")
        try:
            self.parser.feed_into(data, self.pending)
        except ChatLibError as exc:
            if not self.pending:
                raise
            self._failure = exc  # raised once the chunks that came before it are handed out
            self.finished = True
            return
        if self.parser.done:
            self.finished = True

    def advance(self, piece: bytes | None) -> None:
        """Take the next piece of the body, or ``None`` for its end (what both streams read)."""
        if piece is None:
            self.on_eof()
        else:
            self.on_bytes(piece)

    def check(self) -> None:
        """Raise the failure that was held back behind chunks already handed out, if any."""
        if self._failure is not None:
            failure, self._failure = self._failure, None
            raise failure

    def take(self) -> CreateChatCompletionChunk:
        """The next pending chunk, folded into :attr:`accumulated` as it is handed out."""
        chunk = self.pending.popleft()
        _fold(self._accumulator, chunk, self.parser.request_id)
        return chunk

    def on_eof(self) -> None:
        """The body ended; raises if that means the answer is incomplete."""
        self.pending.extend(self.parser.finish())
        self.finished = True

    @property
    def accumulated(self) -> CreateChatCompletionResponse:
        """The chunks handed out so far, merged into one completion."""
        return self._accumulator.result()


# ---------------------------------------------------------------- one call, start to stream


@attrs.define
class Call:
    """A call ready to run: its request, whether it streams, and the settings it runs under.
    One per call: :meth:`flow` fixes its total deadline, which its stream then keeps to."""

    http_request: HttpRequest
    stream: bool
    config: ClientConfig
    deadline: float | None = None

    def flow(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        rand: Callable[[], float] = random.random,
    ) -> Generator[Command, Any, Any]:
        """The send/retry flow of this call (see :func:`request_flow`); tests pass their own
        clocks and randomness."""
        total = self.http_request.timeout.total
        self.deadline = None if total is None else clock() + total
        return request_flow(
            self.http_request,
            policy=RetryPolicy(max_retries=self.config.max_retries),
            max_body_bytes=self.config.max_body_bytes,
            clock=clock,
            wall_clock=wall_clock,
            rand=rand,
            parse=None if self.stream else parse_completion,
            deadline=self.deadline,
        )

    def stream_state(
        self, response_headers: Mapping[str, str], clock: Callable[[], float]
    ) -> StreamState:
        """The state of the stream this call opened."""
        parser = ChunkParser(
            request_id=request_id_of(response_headers),
            max_line_bytes=self.config.max_line_bytes,
            require_done=self.config.require_done,
            accumulate=False,
        )
        return StreamState(
            parser, deadline=self.deadline, clock=clock, response_headers=response_headers
        )


def _foreign_message(message: Any) -> Any:
    """A message object from another library as a dict: the official SDK's pydantic models
    (``resp.choices[0].message`` of ``openai``) and anything else with ``model_dump``."""
    dump = getattr(message, "model_dump", None)
    if callable(dump) and not isinstance(message, (ChatMessage, Mapping)):
        try:
            return dump(exclude_unset=True, mode="json")
        except TypeError:
            return dump()
    return message


def plan_call(
    config: ClientConfig,
    request: CreateChatCompletionRequest | None,
    params: dict[str, Any],
    *,
    stream: bool | None,
    force_stream: bool = False,
    timeout: TimeoutLike | None = None,
    idempotency_key: str | None = None,
) -> Call:
    """Everything ``create``/``stream`` do before I/O: gather arguments, validate, build."""
    if request is not None:
        if params:
            raise InvalidArgumentError(
                "request", "pass a CreateChatCompletionRequest or keyword arguments, not both"
            )
        if not isinstance(request, CreateChatCompletionRequest):
            raise InvalidArgumentError(
                "request", f"must be a CreateChatCompletionRequest, got {type(request).__name__}"
            )
        if stream is not None and not force_stream:
            request = request.replace(stream=stream)
    else:
        check_param_names(list(params))
        for required in ("model", "messages"):
            if required not in params:
                raise InvalidArgumentError(required, "is required")
        messages = params["messages"]
        if messages.__class__ is not list and (
            isinstance(messages, Iterable) and not isinstance(messages, (str, bytes, Mapping))
        ):
            messages = params["messages"] = list(messages)  # a tuple, a generator...
        if messages.__class__ is list and not all(
            m.__class__ is dict or isinstance(m, (ChatMessage, Mapping)) for m in messages
        ):
            params["messages"] = [_foreign_message(m) for m in messages]
        if stream is not None and not force_stream:
            params["stream"] = stream
        request = CreateChatCompletionRequest(**params)
    streaming = force_stream or request.stream is True
    http_request = build_request(
        config,
        request,
        stream=streaming,
        timeout=None if timeout is None else Timeout.of(timeout),
        idempotency_key=idempotency_key,
    )
    return Call(http_request=http_request, stream=streaming, config=config)
