"""A minimal keep-alive HTTP/1.1 server for the benchmarks (run as its own process).

It does as little as possible per request so that the client's cost is what gets measured:
answers are pre-built bytes. Prints its port on stdout, then serves until terminated.

Routes (only the path prefix matters; the body decides streaming, like OpenAI):

* ``/burst/<n>/v1/chat/completions`` with ``"stream": true``: ``n`` chunks plus ``[DONE]``,
  one HTTP chunk per SSE event (as OpenAI sends them), all written at once.
* ``/paced/<n>/v1/...`` streaming: the same events written one by one with a short pause,
  (~0.5 ms), so the client reads them one at a time, the way tokens arrive from a real model.
* ``/gate/<id>/<streams>/<n>/v1`` streaming: the first of ``n`` chunks at once, the rest
  only once ``streams`` requests have arrived on gate ``<id>``: when the client holds its
  first chunks, every stream is open at the same time (the scale benchmarks).
* any non-streaming request: a typical JSON completion.
"""

from __future__ import annotations

import asyncio
import json
import re
import resource
import sys
import time
from functools import cache
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import completion_dict, sse_frames

PACE_SECONDS = 0.0004  # ~0.5 ms with the sleep's overshoot: above any client's cost per chunk
_STREAM_TRUE = re.compile(rb'"stream"\s*:\s*true')
_PATH = re.compile(rb"^/(burst|paced)/(\d+)/")
_GATE = re.compile(rb"^/gate/(\w+)/(\d+)/(\d+)/")
# Each gate's connections holding their first chunk, with the rest still to send.
_GATES: dict[bytes, list[tuple[_Http, int]]] = {}

_SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\n"
    b"Content-Type: text/event-stream; charset=utf-8\r\n"
    b"Transfer-Encoding: chunked\r\n"
    b"Cache-Control: no-cache\r\n"
    b"x-request-id: req_bench0123456789\r\n"
    b"openai-processing-ms: 12\r\n"
    b"\r\n"
)


def _chunked(piece: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(piece), piece)


@cache
def _stream_pieces(n: int) -> tuple[bytes, ...]:
    return (*(_chunked(frame) for frame in sse_frames(n)), b"0\r\n\r\n")


@cache
def _stream_burst(n: int) -> bytes:
    return _SSE_HEAD + b"".join(_stream_pieces(n))


_JSON_BODY = json.dumps(completion_dict(), separators=(",", ":")).encode()
_JSON_ANSWER = (
    b"HTTP/1.1 200 OK\r\n"
    b"Content-Type: application/json\r\n"
    b"Content-Length: %d\r\n"
    b"x-request-id: req_bench0123456789\r\n"
    b"openai-processing-ms: 12\r\n"
    b"\r\n%s" % (len(_JSON_BODY), _JSON_BODY)
)
_NOT_FOUND = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"


class _Http(asyncio.Protocol):
    def __init__(self) -> None:
        self._buf = bytearray()
        self._transport: asyncio.Transport | None = None
        self._busy = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None

    def data_received(self, data: bytes) -> None:
        self._buf += data
        self._next()

    def _next(self) -> None:
        while not self._busy and self._transport is not None:
            end = self._buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self._buf[:end])
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if len(self._buf) < end + 4 + length:
                return
            body = bytes(self._buf[end + 4 : end + 4 + length])
            del self._buf[: end + 4 + length]
            path = head.split(b" ", 2)[1]
            self._answer(path, body)

    def _answer(self, path: bytes, body: bytes) -> None:
        assert self._transport is not None
        if not _STREAM_TRUE.search(body):
            self._transport.write(_JSON_ANSWER)
            return
        gate = _GATE.match(path)
        if gate is not None:
            self._gate(gate.group(1), int(gate.group(2)), int(gate.group(3)))
            return
        match = _PATH.match(path)
        if match is None:
            self._transport.write(_NOT_FOUND)
            return
        n = int(match.group(2))
        if match.group(1) == b"burst":
            self._transport.write(_stream_burst(n))
            return
        self._busy = True
        asyncio.get_running_loop().create_task(self._paced(n))

    def _gate(self, gate: bytes, streams: int, n: int) -> None:
        assert self._transport is not None
        pieces = _stream_pieces(n)
        self._transport.write(_SSE_HEAD + pieces[0])
        self._busy = True
        waiting = _GATES.setdefault(gate, [])
        waiting.append((self, n))
        if len(waiting) >= streams:
            del _GATES[gate]
            for conn, count in waiting:
                conn._release(count)

    def _release(self, n: int) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(b"".join(_stream_pieces(n)[1:]))
        self._busy = False
        self._next()

    async def _paced(self, n: int) -> None:
        # A blocking sleep: asyncio's timers are only ~1 ms precise. It stalls this server's
        # loop, which is fine: paced streams are benchmarked one at a time. ``write`` sends
        # at once when the socket buffer is empty, so each piece leaves before the pause.
        transport = self._transport
        assert transport is not None
        transport.write(_SSE_HEAD)
        for piece in _stream_pieces(n):
            if transport.is_closing():
                return
            transport.write(piece)
            time.sleep(PACE_SECONDS)
        await asyncio.sleep(0)
        self._busy = False
        self._next()


async def _main() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # the scale runs: 10,000 sockets
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_Http, "127.0.0.1", 0, backlog=8192)
    port = server.sockets[0].getsockname()[1]
    print(port, flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(_main())
    except KeyboardInterrupt:
        pass
