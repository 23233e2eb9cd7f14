"""What a stream object is, minus its I/O: shared by `ChatStream` and `AsyncChatStream`.

`StreamState` takes the body's bytes and hands out chunks, merging each one it hands out
into `accumulated` (and, once `events()` was asked for, turning it into events); when the
stream fails, the error it raises carries what had arrived (`.partial`). `StreamBase` is the
half of both stream classes that reads no bytes: their properties, their `repr`, the rule for
ending a finished stream so its connection can be reused, and the release of a stream
dropped without being closed.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

import attrs

from chatlib._accumulate import ChatCompletionAccumulator
from chatlib._display import RichDisplay
from chatlib._headers import EMPTY_HEADERS, Headers, Secrets
from chatlib._metadata import RateLimits
from chatlib._parse import ChunkParser, fold_chunk
from chatlib.errors import APIError, ChatLibError, deadline_exceeded, redact_error
from chatlib.models import (
    CreateChatCompletionChunk,
    CreateChatCompletionRequest,
    CreateChatCompletionResponse,
)

if TYPE_CHECKING:  # `_events` and `notebook` load on first use: most streams never need them
    from chatlib._events import ChatCompletionStreamEvent, StreamEvents
    from chatlib._structured import OutputPlan
    from chatlib.notebook import DisplayHandle, LiveView

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
    """Everything a stream object knows, minus its I/O: the parser, the next chunk to hand
    out, the total deadline, the merged completion and the events machine. The sync and
    async streams only move bytes into it.

    Chunks are parsed one at a time, as they are asked for (`ready`): the first chunk of a
    large read is handed out before the rest of the read is parsed. A failure found further
    on is raised (by `check`) once the chunks before it have been handed out.

    Every error it raises, and every error the stream reports through `failed`, carries
    `.partial`: the completion merged from the chunks handed out before the failure (`None`
    when there were none).
    """

    __slots__ = (
        "_accumulator",
        "_clock",
        "_deadline",
        "_events",
        "_failure",
        "_next",
        "_request",
        "_taken",
        "event_queue",
        "finished",
        "outputs",
        "parser",
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
        request: CreateChatCompletionRequest | None = None,
        outputs: OutputPlan | None = None,
        secrets: Secrets | None = None,
    ) -> None:
        self.parser = parser
        self.outputs = outputs  # how to parse the final completion, when types were asked for
        self._next: CreateChatCompletionChunk | None = None  # parsed, not yet handed out
        self.finished = False
        self.response_headers = Headers.of_response(response_headers)
        self.secrets = secrets if secrets is not None else Secrets()
        self._clock = clock
        self._deadline = deadline  # the call's, fixed when it started: retries count too
        self._accumulator = ChatCompletionAccumulator()
        self._failure: ChatLibError | None = None
        self._taken = 0
        self._request = request
        self._events: StreamEvents | None = None
        # The events made and not yet handed out: a queue once `start_events` was called.
        self.event_queue: deque[ChatCompletionStreamEvent] | None = None

    def on_bytes(self, data: bytes) -> None:
        """Take body bytes (parsed as chunks are asked for); raises for a passed deadline,
        or for a body that cannot be a stream."""
        if self._deadline is not None and self._clock() > self._deadline:
            raise self.failed(deadline_exceeded())
        try:
            self.parser.push(data)
        except ChatLibError as exc:
            self.failed(exc)
            raise

    def on_eof(self) -> None:
        """The body ended; once the chunks before its end are handed out, `ready` finds
        out whether that means the answer is incomplete (and `check` raises it)."""
        self.parser.end()

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

    def ready(self) -> bool:
        """Whether a chunk can be taken now: parses the next event of the bytes taken so far.

        `False` means more bytes are needed, or the stream is over (`finished`; a failure
        found is then raised by `check`)."""
        if self._next is not None:
            return True
        if self.finished:
            return False
        try:
            chunk = self.parser.next_chunk()
        except ChatLibError as exc:
            self._failure = exc  # raised by `check`, after the chunks before it
            self.finished = True
            return False
        if chunk is None:
            if self.parser.done:
                self.finished = True
            return False
        self._next = chunk
        return True

    def check(self) -> None:
        """Raise the failure found behind the chunks already handed out, if any."""
        if self._failure is not None:
            failure, self._failure = self._failure, None
            redact_error(failure, self.secrets)
            raise self.failed(failure)

    def take(self) -> CreateChatCompletionChunk:
        """The chunk `ready` found, folded into `accumulated` (and into events, once they
        were asked for) as it is handed out."""
        chunk = self._next
        if chunk is None:
            raise RuntimeError("take() without a chunk: call ready() first")
        self._next = None
        try:
            fold_chunk(self._accumulator, chunk, self.parser.request_id)
        except ChatLibError as exc:
            redact_error(exc, self.secrets)
            self.failed(exc)
            raise
        self._taken += 1
        if self._events is not None and self.event_queue is not None:
            self.event_queue.extend(self._events.on_chunk(chunk))
        return chunk

    def failed(self, exc: BaseException) -> BaseException:
        """Give `exc`, the error that ends the stream, what had arrived: `.partial` is the
        completion merged from the chunks handed out so far (`None` if there were none).
        Returns `exc`."""
        if isinstance(exc, APIError) and exc.partial is None and self._taken:
            exc.partial = self._accumulator.result()
        return exc

    def start_events(self) -> deque[ChatCompletionStreamEvent]:
        """Turn every chunk handed out from now on into events, appended to the queue it
        returns (`event_queue`); idempotent.

        Raises:
            RuntimeError: chunks were handed out already: their events cannot be made.
        """
        if self.event_queue is not None:
            return self.event_queue
        if self._taken:
            raise RuntimeError(
                "stream.events() must be called before any chunk is read: events describe "
                "the whole stream (the chunks read so far are in stream.accumulated)"
            )
        from chatlib._events import EventOptions, StreamEvents

        request = self._request
        options = EventOptions.for_request(request) if request is not None else None
        outputs = self.outputs
        if outputs is not None:  # typed `parsed` at `.done`, as `get_final_completion` has
            base = options or EventOptions()
            options = attrs.evolve(
                base,
                json_content=outputs.content is not None or base.json_content,
                parse_content=outputs.content_parser(self._accumulator.result),
                strict_tools=base.strict_tools | frozenset(outputs.tools),
                parse_arguments=outputs.arguments_parser(self._accumulator.result),
            )
        self._events = StreamEvents(options, accumulator=self._accumulator)
        self.event_queue = deque()
        return self.event_queue

    @property
    def accumulated(self) -> CreateChatCompletionResponse:
        """The chunks handed out so far, merged into one completion (which keeps the
        response's headers)."""
        result = self._accumulator.result()
        result._headers = self.response_headers
        return result

    def final_completion(self) -> CreateChatCompletionResponse:
        """The whole completion of a finished stream, parsed into the types the call asked
        for (`message.parsed`, `parsed_arguments`); raises what `OutputPlan.apply` raises."""
        completion = self.accumulated
        return completion if self.outputs is None else self.outputs.apply(completion)


# ---------------------------------------------------------------- one call, start to stream


class _ResponseHead(Protocol):
    @property
    def headers(self) -> Mapping[str, str]: ...


_R = TypeVar("_R", bound=_ResponseHead)


class StreamBase(RichDisplay, Generic[_R]):
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

    def _final_completion(self) -> CreateChatCompletionResponse:
        """What `get_final_completion` returns once the stream is read to its end."""
        if self._state is None:
            return CreateChatCompletionResponse(choices=[])
        return self._state.final_completion()

    def _ended_cleanly(self) -> bool:
        """Whether `[DONE]` arrived: the little that follows it is read (`Drain`), so the
        connection goes back to the pool instead of being closed."""
        return self._state is not None and self._state.parser.done

    @property
    def _status(self) -> str:
        if self._closed:
            return "closed"
        if self._state is None:
            return "not started"
        return "finished" if self._state.finished else "open"

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._status} request_id={self.request_id!r}>"

    _repr_pretty_ = RichDisplay._repr_pretty_  # beside `__repr__`, for IPython (see there)

    # A stream shows what has arrived so far and where it stands.
    def _repr_markdown_(self) -> str:
        from chatlib.notebook import stream_markdown

        return stream_markdown(self.accumulated, self.request_id, self._display_status())

    def _repr_html_(self) -> str:
        from chatlib.notebook import stream_html

        return stream_html(self.accumulated, self.request_id, self._display_status())

    def _display_status(self) -> str | None:
        """What a display says of the stream: `None` once it is finished (the footer)."""
        if self._state is None:
            return "not started"
        if self._state.finished:
            return None
        return "closed before the end" if self._closed else "streaming…"

    def _live_view(self, handle: DisplayHandle | None, clock: Callable[[], float]) -> LiveView:
        """The output area `display()` pumps this stream's chunks into."""
        from chatlib.notebook import LiveView

        return LiveView(
            lambda: self.accumulated, lambda: self.request_id, clock=clock, handle=handle
        )

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
