"""Answers that are not valid HTTP, from a raw socket server on 127.0.0.1, for both clients.

Whatever the bytes, the user gets an `APIConnectionError` that says what went wrong (never
an exception of the HTTP library, never a status the server did not send), and a
credential the bytes repeat is redacted.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from chatlib import Timeout
from chatlib.errors import APIConnectionError
from tests.conftest import FacadeDriver

USER = [{"role": "user", "content": "Hi"}]
KEY = "sk-live-echoed-0123456789"
JSON = b"Content-Type: application/json\r\n"

BROKEN = {
    "bad status line": b"HTTP/1.1 abc OK\r\nContent-Length: 2\r\n\r\n{}",
    "not HTTP at all": b"\x00\xff garbage\r\n\r\n",
    "HTTP/0.9 (a body, no head)": b"{}",
    "header line too long": b"HTTP/1.1 200 OK\r\n"
    + JSON
    + b"X-Big: "
    + b"a" * 200_000
    + b"\r\n\r\n",
    "too many headers": b"HTTP/1.1 200 OK\r\n"
    + b"".join(b"X-H%d: v\r\n" % i for i in range(5000))
    + b"Content-Length: 2\r\n\r\n{}",
    "bad chunk size": b"HTTP/1.1 200 OK\r\n"
    + JSON
    + b"Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
    "two content lengths": b"HTTP/1.1 200 OK\r\n"
    + JSON
    + b"Content-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
    "body shorter than its length": b"HTTP/1.1 200 OK\r\n"
    + JSON
    + b'Content-Length: 100\r\n\r\n{"id":',
    "not gzip": b"HTTP/1.1 200 OK\r\n"
    + JSON
    + b"Content-Encoding: gzip\r\nContent-Length: 10\r\n\r\nnotgzip!!!",
    "the key echoed in the status line": b"HTTP/1.1 abc Bearer " + KEY.encode() + b"\r\n\r\n",
}


class RawServer:
    """Answers every request with `self.answer`, then closes the connection."""

    def __init__(self) -> None:
        self.answer = b""
        self.requests = 0
        self._socket = socket.socket()
        self._socket.bind(("127.0.0.1", 0))
        self._socket.listen(16)
        self.base_url = f"http://127.0.0.1:{self._socket.getsockname()[1]}/v1"
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self._socket.accept()
            except OSError:
                return
            with connection:
                connection.settimeout(5)
                try:
                    received = b""
                    while b"\r\n\r\n" not in received:
                        received += connection.recv(65536)
                    self.requests += 1
                    connection.sendall(self.answer)
                    connection.shutdown(socket.SHUT_WR)
                    while connection.recv(65536):
                        pass
                except OSError:
                    pass

    def close(self) -> None:
        self._socket.close()
        self._thread.join(5)


@pytest.fixture(scope="module")
def raw_server() -> Iterator[RawServer]:
    server = RawServer()
    yield server
    server.close()


@pytest.mark.parametrize("case", list(BROKEN), ids=list(BROKEN))
def test_an_answer_that_is_not_http_is_a_connection_error(
    facade: FacadeDriver, raw_server: RawServer, case: str
) -> None:
    raw_server.answer = BROKEN[case]
    chat = facade.client(
        base_url=raw_server.base_url,
        api_key=KEY,
        max_retries=0,
        timeout=Timeout(connect=2, read=2, total=5),
    )
    with pytest.raises(APIConnectionError) as info:
        chat.create(model="m", messages=USER)
    said = str(info.value)
    assert said.startswith("Connection error: ")
    assert "400" not in said  # aiohttp's parser reports a "400" the server never sent
    assert KEY not in said and KEY not in repr(info.value.args)
    assert info.value.__cause__ is None and info.value.__context__ is None
