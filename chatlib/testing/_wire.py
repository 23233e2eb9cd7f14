"""One response on the wire: headers, body pieces written and flushed one by one, pauses, drops.

A scripted fault is only useful if its bytes leave when the script says, so a flushed write
waits until the transport has handed everything to the kernel, and every wait ends at once
(by raising `Dropped`) when the server stops.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

from aiohttp import web

from chatlib.testing._bodies import JSON_CONTENT_TYPE, error_body, new_id


class Dropped(Exception):
    """Raised inside a handler to end the exchange by closing the connection."""

    def __init__(self, graceful: bool = False) -> None:
        super().__init__()
        self.graceful = graceful


def default_headers() -> dict[str, str]:
    return {"x-request-id": new_id("req_", 16)}


class Exchange:
    """One request being answered, and the response started for it (if any).

    Args:
        request: The request.
        write_size: When set, every body write is split into pieces of at most this many
            bytes, each flushed separately.
        stopping: Set when the server stops; a pause or a flush then raises `Dropped`.
    """

    __slots__ = ("_stopping", "_write_size", "request", "response")

    def __init__(
        self, request: web.Request, *, write_size: int | None, stopping: asyncio.Event | None
    ) -> None:
        self.request = request
        self.response: web.StreamResponse | None = None
        self._write_size = write_size
        self._stopping = stopping

    def close(self, *, graceful: bool) -> None:
        """Close the connection: after what was written (`graceful`), else with a reset."""
        if self.response is not None:
            self.response.force_close()
        transport = self.request.transport
        if transport is not None and not transport.is_closing():
            if graceful:
                transport.close()
            else:
                transport.abort()

    async def send(
        self,
        status: int,
        headers: Mapping[str, str],
        pieces: Sequence[bytes],
        *,
        content_type: str = JSON_CONTENT_TYPE,
        piece_delay: float = 0.0,
        sized: bool = True,
        request_id: bool = True,
    ) -> None:
        """Send a whole response: `pieces` in order, `piece_delay` seconds apart.

        A `sized` body gets a `Content-Length` (unless `headers` has one); otherwise every
        piece is flushed separately, with chunked transfer encoding unless `headers` sets a
        length.
        """
        response = self._start(status, headers, content_type, request_id=request_id)
        if sized and "Content-Length" not in response.headers:
            response.content_length = sum(len(piece) for piece in pieces)
        await response.prepare(self.request)
        for index, piece in enumerate(pieces):
            if index:
                await self.pause(piece_delay)
            await self._write(response, piece, flush=not sized)
        await response.write_eof()

    async def send_error(
        self, status: int, message: str, type_: str, code: str | None = None
    ) -> None:
        """Send an OpenAI-shaped JSON error."""
        await self.send(status, default_headers(), [error_body(message, type_, code)])

    async def fail(self, status: int, message: str, type_: str) -> None:
        """Send an error, or drop the connection if a response has already started."""
        if self.response is not None:
            self.close(graceful=False)
        else:
            await self.send_error(status, message, type_)

    async def send_partial(
        self, content_type: str, content_length: int | None, data: bytes
    ) -> None:
        """Send 200 headers and `data`, and make sure they left before the caller drops."""
        response = self._start(200, {}, content_type)
        if content_length is not None:
            response.content_length = content_length
        await self._send_headers(response)
        await self._write(response, data, flush=True)

    async def trickle(
        self,
        status: int,
        headers: Mapping[str, str],
        content_type: str,
        body: bytes,
        *,
        size: int,
        interval: float,
        repeat: bool,
    ) -> None:
        """Send the headers at once, then `body` `size` bytes every `interval` seconds."""
        response = self._start(status, headers, content_type)
        await self._send_headers(response)
        await self._flush()
        first = True
        while True:
            for start in range(0, len(body), size):
                if not first:
                    await self.pause(interval)
                first = False
                await self._write(response, body[start : start + size], flush=True)
            if not repeat:
                break
        await response.write_eof()

    async def pause(self, seconds: float) -> None:
        """Sleep, but raise `Dropped` at once when the server stops."""
        stopping = self._stopping
        if stopping is None or stopping.is_set():
            raise Dropped
        if seconds <= 0:
            return
        try:
            await asyncio.wait_for(stopping.wait(), timeout=seconds)
        except asyncio.TimeoutError:
            return
        raise Dropped

    def _start(
        self,
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
            response.headers.update(default_headers())
        response.headers.update(headers)
        self.response = response
        return response

    async def _send_headers(self, response: web.StreamResponse) -> None:
        await response.prepare(self.request)
        await response.write(b"")  # aiohttp buffers the headers until the first write

    async def _write(self, response: web.StreamResponse, data: bytes, *, flush: bool) -> None:
        size = self._write_size
        if size is None:
            if data:
                await response.write(data)
            if flush:
                await self._flush()
            return
        for start in range(0, len(data), size):
            await response.write(data[start : start + size])
            await self._flush()

    async def _flush(self) -> None:
        """Wait until the transport has handed everything written so far to the kernel."""
        transport = self.request.transport
        while transport is not None and not transport.is_closing():
            if transport.get_write_buffer_size() == 0:
                await asyncio.sleep(0)  # a separate loop iteration: a separate TCP segment
                return
            if self._stopping is not None and self._stopping.is_set():
                raise Dropped
            await asyncio.sleep(0.001)
        raise ConnectionResetError("the client closed the connection")
