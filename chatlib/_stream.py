"""What a stream object is, minus its I/O: shared by `ChatStream` and `AsyncChatStream`.

`StreamState` takes the body's bytes and hands out chunks, merging each one it hands out
into `accumulated`; `StreamBase` is the half of both stream classes that reads no bytes:
their properties, their `repr`, the rule for ending a finished stream so its connection can
be reused, and the release of a stream dropped without being closed.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping
from typing import Any, Generic, Protocol, TypeVar

from chatlib._accumulate import ChatCompletionAccumulator
from chatlib._headers import EMPTY_HEADERS, Headers, Secrets
from chatlib._metadata import RateLimits
from chatlib._parse import ChunkParser, fold_chunk
from chatlib.errors import ChatLibError, deadline_exceeded, redact_error
from chatlib.models import CreateChatCompletionChunk, CreateChatCompletionResponse

__all__ = ["DRAIN_BYTES", "DRAIN_SECONDS", "Drain", "StreamBase", "StreamState"]

# After `[DONE]` a stream reads on to the end of its body, so the connection can be reused:
# at most this much, for at most this long; else the connection is closed instead.
DRAIN_BYTES = 64 * 1024
DRAIN_SECONDS = 0.25


class Drain:
    """The budget for reading what follows `[DONE]`: `more(piece)` says whether to go on."""

    __slots__ = ("_left",)

    def __init__(self) -> None:
        self._left = DRAIN_BYTES

    def more(self, piece: bytes) -> bool:
        """Count `piece`; `False` once the budget is spent (the connection is then closed)."""
        self._left -= len(piece)
        return self._left >= 0


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
        "secrets",
    )

    def __init__(
        self,
        parser: ChunkParser,
        *,
        deadline: float | None,
        clock: Callable[[], float],
        response_headers: Mapping[str, str],
        secrets: Secrets | None = None,
    ) -> None:
        self.parser = parser
        self.pending: deque[CreateChatCompletionChunk] = deque()
        self.finished = False
        self.response_headers = (
            response_headers if isinstance(response_headers, Headers) else Headers(response_headers)
        )
        self.secrets = secrets if secrets is not None else Secrets()
        self._clock = clock
        self._deadline = deadline  # the call's, fixed when it started: retries count too
        self._accumulator = ChatCompletionAccumulator()
        self._failure: ChatLibError | None = None

    def on_bytes(self, data: bytes) -> None:
        """Feed body bytes; raises for a broken stream or a passed deadline."""
        if self._deadline is not None and self._clock() > self._deadline:
            raise deadline_exceeded()
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
        """Take the next piece of the body, or `None` for its end (what both streams read).

        The errors it raises (and `check`, `take`) have the call's credentials redacted."""
        try:
            if piece is None:
                self.on_eof()
            else:
                self.on_bytes(piece)
        except ChatLibError as exc:
            redact_error(exc, self.secrets)
            raise

    def check(self) -> None:
        """Raise the failure that was held back behind chunks already handed out, if any."""
        if self._failure is not None:
            failure, self._failure = self._failure, None
            redact_error(failure, self.secrets)
            raise failure

    def take(self) -> CreateChatCompletionChunk:
        """The next pending chunk, folded into `accumulated` as it is handed out."""
        chunk = self.pending.popleft()
        try:
            fold_chunk(self._accumulator, chunk, self.parser.request_id)
        except ChatLibError as exc:
            redact_error(exc, self.secrets)
            raise
        return chunk

    def on_eof(self) -> None:
        """The body ended; raises if that means the answer is incomplete."""
        self.pending.extend(self.parser.finish())
        self.finished = True

    @property
    def accumulated(self) -> CreateChatCompletionResponse:
        """The chunks handed out so far, merged into one completion (which keeps the
        response's headers)."""
        result = self._accumulator.result()
        result._headers = self.response_headers
        return result


# ---------------------------------------------------------------- one call, start to stream


class _ResponseHead(Protocol):
    @property
    def headers(self) -> Mapping[str, str]: ...


_R = TypeVar("_R", bound=_ResponseHead)


class StreamBase(Generic[_R]):
    """The non-I/O half of a stream class: `_response` and `_state` are set once it has
    started (at once for `ChatStream`, on first use for `AsyncChatStream`)."""

    _response: _R | None = None
    _state: StreamState | None = None
    _closed: bool = False

    @property
    def headers(self) -> Headers:
        """The response headers, read-only and case-insensitive (empty until the stream
        has started)."""
        return self._state.response_headers if self._state is not None else EMPTY_HEADERS

    @property
    def request_id(self) -> str | None:
        """The server's `x-request-id`."""
        return self._state.parser.request_id if self._state is not None else None

    @property
    def rate_limits(self) -> RateLimits:
        """The `x-ratelimit-*` figures of the response (all `None` until it has started)."""
        return RateLimits.from_headers(self.headers)

    @property
    def accumulated(self) -> CreateChatCompletionResponse:
        """The chunks handed out so far, merged into one completion."""
        if self._state is None:
            return CreateChatCompletionResponse(choices=[])
        return self._state.accumulated

    def _ended_cleanly(self) -> bool:
        """Whether `[DONE]` arrived: the little that follows it is read (`Drain`), so the
        connection goes back to the pool instead of being closed."""
        return self._state is not None and self._state.parser.done

    def __repr__(self) -> str:
        if self._closed:
            status = "closed"
        elif self._state is None:
            status = "not started"
        else:
            status = "finished" if self._state.finished else "open"
        return f"<{type(self).__name__} {status} request_id={self.request_id!r}>"

    def __del__(self) -> None:
        response: Any = self._response
        if response is not None and not self._closed:
            self._closed = True
            close = getattr(response, "close", None)  # an async response may have aclose only
            if close is not None:
                try:
                    close()
                except RuntimeError:
                    pass  # its loop is gone; nothing left to release
