"""Compressed answers over real loopback HTTP, for both clients: a gzip or deflate body is read
like any other, and the size limits count the bytes it expands to, not the bytes sent.

A server (or a hostile proxy) can send a few kilobytes of gzip that expand to gigabytes;
`Content-Length` then counts the compressed bytes, so it must not be trusted to size a read.
"""

from __future__ import annotations

import gzip
import json
import zlib
from typing import Any

import pytest
from test_chunks import chunk, frame

from chatlib.errors import BodyTooLargeError
from chatlib.testing import LocalServer, RawReply
from tests.conftest import FacadeDriver

USER = [{"role": "user", "content": "Hi"}]
COMPLETION = {
    "id": "chatcmpl-z",
    "object": "chat.completion",
    "created": 1,
    "model": "m",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Squeezed."},
            "finish_reason": "stop",
        }
    ],
}


def _deflate(data: bytes) -> bytes:
    return zlib.compress(data)


def _bomb(expanded: int) -> bytes:
    """A JSON-looking gzip body of a few kilobytes that expands to `expanded` bytes."""
    pad = b"0" * (expanded - 40)
    return gzip.compress(b'{"id": "x", "choices": [], "pad": "' + pad + b'"}', compresslevel=9)


@pytest.mark.parametrize(
    ("encoding", "encode"), [("gzip", gzip.compress), ("deflate", _deflate)], ids=str
)
def test_a_compressed_completion_is_read(
    facade: FacadeDriver, server: LocalServer, encoding: str, encode: Any
) -> None:
    body = encode(json.dumps(COMPLETION).encode())
    server.enqueue(RawReply(body=body, headers={"Content-Encoding": encoding}))
    chat = facade.client(base_url=server.base_url)
    assert chat.create(model="m", messages=USER).choices[0].message.content == "Squeezed."


def test_a_compressed_stream_is_read(facade: FacadeDriver, server: LocalServer) -> None:
    events = [frame(chunk({"content": text})) for text in ("Squ", "ee", "zed.")]
    body = gzip.compress(b"".join(events) + b"data: [DONE]\n\n")
    server.enqueue(
        RawReply(
            body=[body[: len(body) // 2], body[len(body) // 2 :]],
            headers={"Content-Encoding": "gzip"},
            content_type="text/event-stream",
        )
    )
    chat = facade.client(base_url=server.base_url)
    chunks = chat.stream_all(model="m", messages=USER)
    assert "".join(c.text for c in chunks) == "Squeezed."


def test_a_gzip_bomb_stops_at_max_body_bytes(facade: FacadeDriver, server: LocalServer) -> None:
    """8 MiB expanded from ~8 KiB sent: `max_body_bytes=1 MiB` holds on the expanded bytes
    (the compressed `Content-Length` is far under the limit)."""
    bomb = _bomb(8 << 20)
    assert len(bomb) < 64 * 1024
    server.enqueue(RawReply(body=bomb, headers={"Content-Encoding": "gzip"}))
    chat = facade.client(base_url=server.base_url, max_body_bytes=1 << 20, max_retries=0)
    with pytest.raises(BodyTooLargeError, match="max_body_bytes"):
        chat.create(model="m", messages=USER)
    assert len(server.requests) == 1
