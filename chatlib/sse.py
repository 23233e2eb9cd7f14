"""A Server-Sent Events decoder: bytes in, events out, no I/O.

Implements the WHATWG HTML standard, section 9.2.6 "Interpreting an event stream":
line ends are CR LF, LF or CR; a leading UTF-8 BOM is dropped; lines are decoded as
UTF-8 with U+FFFD for invalid bytes; `event`, `data`, `id` and `retry` fields are
interpreted; a blank line dispatches; an incomplete event at the end of the stream is
discarded.

The events produced do not depend on how the bytes are split into `SSEDecoder.feed`
calls, each event is returned by the call that completed it, and the work done is linear
in the number of bytes fed. `push`/`next_event` decode one event at a time, so the first
event of a large read is available before the rest of the read is decoded.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import NoReturn

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

    `feed` returns every event the bytes complete. `push` and `next_event` are the same
    decoder one event at a time: `push` only stores the bytes, and each `next_event` reads
    just far enough to return the next complete event (or `None` when the bytes pushed so
    far complete no more), so a consumer can act on the first event of a large read before
    the rest of it is decoded. Push again only once `next_event` returned `None`.

    Args:
        max_line_bytes: the longest line, and the largest data buffer of one event (each
            `data` value plus its `"\\n"`), in bytes; past it `feed` (or `next_event`)
            raises `BodyTooLargeError`. `None` means unbounded. A decoder that raised is in
            an unspecified state and should be discarded.
    """

    __slots__ = (
        "_block",
        "_bom_done",
        "_cr",
        "_cr_seen",
        "_data",
        "_data_size",
        "_event_type",
        "_head",
        "_last_id",
        "_lf",
        "_max",
        "_pos",
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
        self._head = bytearray()  # the start of an unterminated line; never holds a CR or LF
        self._block = b""  # the bytes pushed and not yet read, from `_pos` on
        self._pos = 0
        # The next LF in `_block` at or after `_pos` (-1: none left), searched again only once
        # `_pos` has passed it; a CR is looked for only before that LF (up to `_cr_seen`, the
        # end of what was searched, `_cr` is the first one found or -1): every byte is
        # scanned a fixed number of times, and never past the event being decoded.
        self._lf = -1
        self._cr = -1
        self._cr_seen = 0
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
        self.push(chunk)
        events: list[ServerSentEvent] = []
        while True:
            fields = self.next_fields()
            if fields is None:
                return events
            events.append(ServerSentEvent(*fields))

    def next_event(self) -> ServerSentEvent | None:
        """The next event the bytes pushed so far complete, or `None` (push more).

        Raises:
            BodyTooLargeError: a line, or the data of one event, exceeds `max_line_bytes`.
        """
        fields = self.next_fields()
        return None if fields is None else ServerSentEvent(*fields)

    def push(self, chunk: bytes) -> None:
        """Store the next bytes of the stream; `next_event` decodes them."""
        if not chunk:
            return
        if chunk.__class__ is not bytes:
            chunk = bytes(chunk)
        if self._skip_lf:
            self._skip_lf = False
            if chunk[0] == 0x0A:
                chunk = chunk[1:]
                if not chunk:
                    return
        if not self._bom_done:
            head = self._head  # holds at most the start of a BOM here
            if head:
                chunk = bytes(head) + chunk
                head.clear()
            if len(chunk) < len(_BOM) and _BOM.startswith(chunk):
                head += chunk
                return  # maybe the start of a BOM: wait for more
            self._bom_done = True
            if chunk.startswith(_BOM):
                chunk = chunk[3:]
                if not chunk:
                    return
        if self._pos < len(self._block):  # pushed before the last bytes were read: keep both
            chunk = self._block[self._pos :] + chunk
        self._block = chunk
        self._pos = 0
        self._lf = chunk.find(b"\n")
        self._cr = -1
        self._cr_seen = 0

    def next_fields(self) -> tuple[str, str, str | None, int | None] | None:
        """`next_event` without the event object: `(data, event, id, retry)` or `None`."""
        block = self._block
        pos = self._pos
        size = len(block)
        limit = self._max
        while pos < size:
            lf = self._lf
            if lf != -1 and lf < pos:
                lf = self._lf = block.find(b"\n", pos)
            cr = self._cr
            if cr < pos:  # none found yet at or after `pos`: look up to the LF
                until = size if lf == -1 else lf
                start = self._cr_seen if self._cr_seen > pos else pos
                cr = block.find(b"\r", start, until) if start < until else -1
                self._cr = cr
                self._cr_seen = until if cr == -1 else cr
            if cr == -1 or (lf != -1 and lf < cr):  # the common case: an LF ends the line
                if lf == -1:
                    break
                end = lf
                after = lf + 1
                if (
                    after < size
                    and block[after] == 0x0A
                    and not self._head
                    and not self._data
                    and block.startswith(b"data: ", pos)
                    and (limit is None or end - pos <= limit)
                ):
                    # The usual event, `data: <value>` and a blank line, in one step: the
                    # same as the two lines below, without the buffers between them.
                    retry = self._retry
                    event_type = self._event_type
                    self._event_type = ""
                    self._retry = None
                    self._pos = after + 1
                    text = block[pos + 6 : end].decode("utf-8", "replace")
                    return (text, event_type or "message", self._last_id, retry)
            else:  # a CR ends the line (the first line end; a CRLF is one)
                end = cr
                if cr + 1 < size:
                    after = cr + 2 if block[cr + 1] == 0x0A else cr + 1
                else:
                    after = size
                    self._skip_lf = True  # an LF at the start of the next bytes is its
            line = block[pos:end]
            pos = after
            if self._head:
                self._head += line
                line = bytes(self._head)
                self._head.clear()
            if limit is not None and len(line) > limit:
                self._pos = pos
                self._line_too_long(line)
            if not line:  # blank line: dispatch
                data = self._data
                retry = self._retry
                event_type = self._event_type
                self._event_type = ""
                self._retry = None
                if data:
                    self._pos = pos
                    text = data[0] if len(data) == 1 else "\n".join(data)
                    self._data = []
                    self._data_size = 0
                    return (text, event_type or "message", self._last_id, retry)
                continue
            if line.startswith(b"data: "):  # the common case, first
                value = line[6:]
            else:
                other = self._field(line)
                if other is None:
                    continue
                value = other
            self._add_data(value, line, limit)
        self._pos = size
        if pos < size:
            head = self._head
            head += memoryview(block)[pos:]
            if limit is not None and len(head) > limit:
                self._line_too_long(head)
        return None

    def _field(self, line: bytes) -> bytes | None:
        """Apply a field line other than `data: ...`; returns a `data` value, else `None`."""
        if line.startswith(b"data:"):
            return line[5:]
        colon = line.find(b":")
        if colon == 0:
            return None  # comment
        field, value = (line, b"") if colon < 0 else (line[:colon], line[colon + 1 :])
        if value[:1] == b" ":
            value = value[1:]
        if field == b"event":
            self._event_type = value.decode("utf-8", "replace")
        elif field == b"id":
            if b"\0" not in value:
                self._last_id = value.decode("utf-8", "replace")
        elif field == b"retry":
            self._retry = _retry_value(value, self._retry)
        elif field == b"data":
            return value
        return None  # an unknown field is ignored

    def _add_data(self, value: bytes, line: bytes, limit: int | None) -> None:
        size = self._data_size + len(value) + 1
        if limit is not None and size > limit:
            raise BodyTooLargeError(
                f"the data of one server-sent event is larger than max_line_bytes "
                f"({limit} bytes); pass a larger max_line_bytes, or None for no "
                "limit, to accept it",
                raw_body=line[:_RAW_BODY_BYTES],
            )
        self._data_size = size
        self._data.append(value.decode("utf-8", "replace"))

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
        rest = bytes(self._head) + self._block[self._pos :]
        lines = _LINE_END.split(rest) if rest else []
        events = self._interpret([*lines, b""])
        return events[0] if events else None

    def _line_too_long(self, line: bytes | bytearray) -> NoReturn:
        raise BodyTooLargeError(
            f"an event-stream line is longer than max_line_bytes ({self._max} bytes); "
            "pass a larger max_line_bytes, or None for no limit, to accept it",
            raw_body=bytes(line[:_RAW_BODY_BYTES]),
        )

    def _interpret(self, lines: Iterable[bytes]) -> list[ServerSentEvent]:
        """The field/dispatch rules over complete lines, on a copy of the state."""
        events: list[ServerSentEvent] = []
        data = list(self._data)
        event_type = self._event_type
        retry = self._retry
        last_id = self._last_id
        for line in lines:
            if not line:  # blank line: dispatch
                if data:
                    events.append(
                        ServerSentEvent("\n".join(data), event_type or "message", last_id, retry)
                    )
                    data = []
                event_type = ""
                retry = None
                continue
            if line.startswith(b"data:"):
                value = line[6:] if line[5:6] == b" " else line[5:]
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
            data.append(value.decode("utf-8", "replace"))
        return events
