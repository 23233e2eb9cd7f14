"""A Server-Sent Events decoder: bytes in, events out, no I/O.

Implements the WHATWG HTML standard, section 9.2.6 "Interpreting an event stream":
line ends are CR LF, LF or CR; a leading UTF-8 BOM is dropped; lines are decoded as
UTF-8 with U+FFFD for invalid bytes; `event`, `data`, `id` and `retry` fields are
interpreted; a blank line dispatches; an incomplete event at the end of the stream is
discarded.

The events produced do not depend on how the bytes are split into `SSEDecoder.feed`
calls, each event is returned by the call that completed it, and the work done is linear
in the number of bytes fed.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable

from chatlib.errors import BodyTooLargeError, InvalidArgumentError

__all__ = ["SSEDecoder", "ServerSentEvent"]

_DEFAULT_MAX_LINE_BYTES = 16 * 1024 * 1024

_BOM = b"\xef\xbb\xbf"
_LINE_END = re.compile(rb"\r\n|\r|\n")
_RAW_BODY_BYTES = 1024
# Longer retry values are ignored: int() may refuse more digits than this (it is the lowest
# limit sys.set_int_max_str_digits accepts), and no reconnection delay is that long anyway.
_MAX_RETRY_DIGITS = 640


class ServerSentEvent:
    """One dispatched event. Treat it as read-only: it is compared and hashed by value.

    Attributes:
        event: the event type; `"message"` when no (non-empty) `event` field was given.
        data: the `data` field values joined with `"\\n"`.
        id: the last event ID when the event was dispatched; `None` until an `id` field
            has been seen (an `id` field with an empty value sets it to `""`).
        retry: the value of a valid `retry` field in this event's own block, else `None`.
    """

    __slots__ = ("data", "event", "id", "retry")

    def __init__(
        self,
        data: str,
        event: str = "message",
        id: str | None = None,
        retry: int | None = None,
    ) -> None:
        self.data = data
        self.event = event
        self.id = id
        self.retry = retry

    def _key(self) -> tuple[str, str, str | None, int | None]:
        return (self.event, self.data, self.id, self.retry)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ServerSentEvent):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return (
            f"ServerSentEvent(event={self.event!r}, data={self.data!r}, "
            f"id={self.id!r}, retry={self.retry!r})"
        )


def _retry_value(value: bytes, current: int | None) -> int | None:
    """The `retry` field's value if valid (ASCII digits only), else `current`."""
    if not value.isdigit():  # bytes.isdigit(): ASCII 0-9 only, and False when empty
        return current
    digits = value.lstrip(b"0") or b"0"
    return int(digits) if len(digits) <= _MAX_RETRY_DIGITS else current


class SSEDecoder:
    """Incremental event-stream decoder for one stream: `feed` bytes, get events.

    Args:
        max_line_bytes: the longest line, and the largest data buffer of one event (each
            `data` value plus its `"\\n"`), in bytes; past it `feed` raises
            `BodyTooLargeError`. `None` means unbounded. A decoder
            that raised is in an unspecified state and should be discarded.
    """

    __slots__ = (
        "_bom_done",
        "_buf",
        "_data",
        "_data_size",
        "_event_type",
        "_last_id",
        "_max",
        "_retry",
        "_skip_lf",
    )

    def __init__(self, *, max_line_bytes: int | None = _DEFAULT_MAX_LINE_BYTES) -> None:
        if max_line_bytes is not None and (
            isinstance(max_line_bytes, bool)
            or not isinstance(max_line_bytes, int)
            or max_line_bytes <= 0
        ):
            raise InvalidArgumentError(
                "max_line_bytes", f"must be a positive int or None, got {max_line_bytes!r}"
            )
        self._max = max_line_bytes
        self._last_id: str | None = None
        self._reset_stream()

    def _reset_stream(self) -> None:
        self._buf = bytearray()  # the unterminated last line; never holds a CR or LF
        self._skip_lf = False  # the last line ended with a CR: a following LF belongs to it
        self._bom_done = False
        self._data: list[str] = []
        self._data_size = 0
        self._event_type = ""
        self._retry: int | None = None

    @property
    def last_event_id(self) -> str | None:
        """The last event ID buffer: the value of the latest valid `id` field, or `None`.

        It survives `flush`, so it can be sent as `Last-Event-ID` on reconnection.
        """
        return self._last_id

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        """Decode the next bytes of the stream; return the events they complete, in order.

        Raises:
            BodyTooLargeError: a line, or the data of one event, exceeds `max_line_bytes`.
        """
        if not chunk:
            return []
        if not isinstance(chunk, bytes):
            chunk = bytes(chunk)
        if self._skip_lf:
            self._skip_lf = False
            if chunk[0] == 0x0A:
                chunk = chunk[1:]
                if not chunk:
                    return []
        buf = self._buf
        if not self._bom_done:
            buf += chunk
            if len(buf) < len(_BOM) and _BOM.startswith(buf):
                return []  # maybe the start of a BOM: wait for more
            self._bom_done = True
            chunk = bytes(buf[3:] if buf.startswith(_BOM) else buf)
            buf.clear()
        # _buf holds no line end, so only the new bytes, from `scan` on, are searched: each
        # byte is examined a fixed number of times however the stream is split (linear cost).
        data: bytes | bytearray
        if buf:
            scan = len(buf)
            buf += chunk
            data = buf
        else:
            data, scan = chunk, 0
        last_lf = data.rfind(b"\n", scan)
        last_cr = data.rfind(b"\r", scan)
        end = max(last_lf, last_cr) + 1
        if end == 0:  # no complete line yet
            if data is chunk:
                buf += chunk
            self._check_line(buf)
            return []
        if data is chunk:
            block = chunk if end == len(chunk) else chunk[:end]
            buf += memoryview(chunk)[end:]
        else:
            block = bytes(buf[:end])
            del buf[:end]
        self._check_line(buf)
        if last_cr < 0:
            lines = block.split(b"\n")
        else:
            lines = _LINE_END.split(block)
            if last_cr > last_lf and not buf:
                self._skip_lf = True
        lines.pop()  # the empty piece after the last line end
        if self._max is not None and len(block) > self._max:
            for line in lines:
                self._check_line(line)
        return self._interpret(lines, commit=True)

    def flush(self) -> list[ServerSentEvent]:
        """End of stream: discard any incomplete event (per the standard) and return `[]`.

        Resets the decoder for a new stream (a BOM is stripped again); `last_event_id`
        is kept. Never raises.
        """
        self._reset_stream()
        return []

    def pending_event(self) -> ServerSentEvent | None:
        """The event a blank line would dispatch now, an unterminated last line included.

        For a lenient end of stream, e.g. a server whose last bytes are `data: [DONE]`
        with no blank line. Changes no state and enforces no limit.
        """
        lines = [bytes(self._buf)] if self._buf else []
        events = self._interpret([*lines, b""], commit=False)
        return events[0] if events else None

    def _check_line(self, line: bytes | bytearray) -> None:
        if self._max is not None and len(line) > self._max:
            raise BodyTooLargeError(
                f"an event-stream line is longer than max_line_bytes ({self._max} bytes); "
                "pass a larger max_line_bytes, or None for no limit, to accept it",
                raw_body=bytes(line[:_RAW_BODY_BYTES]),
            )

    def _interpret(self, lines: Iterable[bytes], *, commit: bool) -> list[ServerSentEvent]:
        """Run the field/dispatch rules over complete lines; with `commit=False` on a copy."""
        events: list[ServerSentEvent] = []
        data = self._data if commit else list(self._data)
        size = self._data_size
        event_type = self._event_type
        retry = self._retry
        last_id = self._last_id
        limit = (self._max or sys.maxsize) if commit else sys.maxsize
        # Fields are split on the raw bytes and only values are decoded: ":" and " " are ASCII
        # and end any invalid UTF-8 sequence, so this equals decoding the whole line first.
        for line in lines:
            if not line:  # blank line: dispatch
                if data:
                    text = data[0] if len(data) == 1 else "\n".join(data)
                    events.append(ServerSentEvent(text, event_type or "message", last_id, retry))
                    data = []
                    size = 0
                event_type = ""
                retry = None
                continue
            if line.startswith(b"data: "):  # the common case, first
                value = line[6:]
            elif line.startswith(b"data:"):
                value = line[5:]
            else:
                colon = line.find(b":")
                if colon == 0:
                    continue  # comment
                field, value = (line, b"") if colon < 0 else (line[:colon], line[colon + 1 :])
                if value[:1] == b" ":
                    value = value[1:]
                if field == b"event":
                    event_type = value.decode("utf-8", "replace")
                    continue
                if field == b"id":
                    if b"\0" not in value:
                        last_id = value.decode("utf-8", "replace")
                    continue
                if field == b"retry":
                    retry = _retry_value(value, retry)
                    continue
                if field != b"data":
                    continue  # unknown field: ignored
            size += len(value) + 1
            if size > limit:
                raise BodyTooLargeError(
                    f"the data of one server-sent event is larger than max_line_bytes "
                    f"({limit} bytes); pass a larger max_line_bytes, or None for no "
                    "limit, to accept it",
                    raw_body=line[:_RAW_BODY_BYTES],
                )
            data.append(value.decode("utf-8", "replace"))
        if commit:
            self._data = data
            self._data_size = size
            self._event_type = event_type
            self._retry = retry
            self._last_id = last_id
        return events
