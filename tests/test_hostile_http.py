"""A hostile or broken server, played on a raw socket on 127.0.0.1, against both clients.

Complements `test_broken_http.py` (answers that are not HTTP), `test_deadlines.py` (headers
trickled forever) and `test_fault_matrix.py` (scripted faults on the test server): here the
answers are valid HTTP but odd (a redirect with an endless body or a `Location` that is not
a URL, interim answers, empty bodies, answers closed after every call...). Whatever the
bytes, a call ends by its total deadline, raises only chatlib errors, and leaves no socket
open.
"""

from __future__ import annotations

import gc
import json
import socket
import threading
import time
import warnings
from collections.abc import Callable, Iterator

import pytest

from chatlib import Timeout
from chatlib.errors import (
    APIConnectionError,
    APIResponseValidationError,
    APIStatusError,
    APITimeoutError,
    InternalServerError,
)
from chatlib.testing import ErrorReply, LocalServer, Reply
from tests.conftest import FacadeDriver, open_fds

USER = [{"role": "user", "content": "Hi"}]
KEY = "sk-live-hostile-0123456789"
SLACK = 0.6  # what a call may run past its total deadline on a loaded machine
HOLD = 5.0  # how long a hostile answer lasts at most: a client that waits for it fails, not hangs
COMPLETION = (
    b'{"id":"c","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,'
    b'"message":{"role":"assistant","content":"hello"},"finish_reason":"stop"}]}'
)
OK = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
    % len(COMPLETION)
    + COMPLETION
)

Handler = Callable[["RawServer", socket.socket, bytes], bool]
"""Answers one request (its head, the body already read); returns whether to keep the
connection for another request."""


class RawServer:
    """A thread per connection; each request read whole, then answered by `handler`."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[bytes] = []  # the request lines, in order
        self.stopping = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.base_url = f"http://127.0.0.1:{self._listener.getsockname()[1]}/v1"
        self._threads: list[threading.Thread] = []
        self._start(self._accept)

    def _start(self, target: Callable[..., None], *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                connection, _ = self._listener.accept()
            except OSError:
                continue
            self._start(self._serve, connection)

    def _serve(self, connection: socket.socket) -> None:
        with connection:
            connection.settimeout(HOLD)
            try:
                pending = b""
                while True:
                    while b"\r\n\r\n" not in pending:
                        received = connection.recv(65536)
                        if not received:
                            return
                        pending += received
                    head, _, pending = pending.partition(b"\r\n\r\n")
                    length = 0
                    for line in head.split(b"\r\n")[1:]:
                        name, _, value = line.partition(b":")
                        if name.strip().lower() == b"content-length":
                            length = int(value)
                    while len(pending) < length:
                        received = connection.recv(65536)
                        if not received:
                            return
                        pending += received
                    pending = pending[length:]
                    self.requests.append(head.split(b"\r\n")[0])
                    if not self.handler(self, connection, head):
                        return
            except OSError:
                return

    def hold(self, connection: socket.socket, pieces: Iterator[bytes], interval: float) -> None:
        """Send `pieces` every `interval` s until the server stops or `HOLD` s have passed."""
        deadline = time.monotonic() + HOLD
        for piece in pieces:
            if self.stopping.is_set() or time.monotonic() > deadline:
                return
            connection.sendall(piece)
            time.sleep(interval)

    def close(self) -> None:
        self.stopping.set()
        for thread in self._threads:
            thread.join(timeout=HOLD + 1)
        self._listener.close()


@pytest.fixture
def raw_server() -> Iterator[Callable[[Handler], RawServer]]:
    servers: list[RawServer] = []

    def start(handler: Handler) -> RawServer:
        servers.append(RawServer(handler))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def ok_on_v2(answer: Handler) -> Handler:
    """`answer` for the first path, the completion for `/v2/...` (where redirects lead)."""

    def handler(server: RawServer, connection: socket.socket, head: bytes) -> bool:
        if b" /v2/" in head.split(b"\r\n")[0]:
            connection.sendall(OK)
            return True
        return answer(server, connection, head)

    return handler


# ---------------------------------------------------------------- redirects


def redirect_with_body(status: int, body: str) -> Handler:
    """A `status` redirect to `/v2/chat/completions` whose chunked body trickles a byte every
    0.1 s (never a read timeout) or floods 16 MiB at once then says nothing more."""

    def handler(server: RawServer, connection: socket.socket, head: bytes) -> bool:
        connection.sendall(
            b"HTTP/1.1 %d Moved\r\nLocation: /v2/chat/completions\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n" % status
        )
        if body == "trickle":
            server.hold(connection, iter(lambda: b"1\r\nx\r\n", None), 0.1)
        else:
            piece = b"100000\r\n" + b"x" * 0x100000 + b"\r\n"
            connection.sendall(piece * 16)
            server.hold(connection, iter(lambda: b"", None), 0.1)
        return False

    return handler


@pytest.mark.parametrize("status", [307, 302])
def test_a_redirect_trickling_its_body_ends_at_the_total_deadline(
    facade: FacadeDriver, raw_server: Callable[[Handler], RawServer], status: int
) -> None:
    # requests read the whole body of any 3xx with a Location before it returned (to
    # prepare `Response.next`, even with allow_redirects=False), outside the total deadline:
    # the sync call lasted as long as the server kept trickling.
    server = raw_server(ok_on_v2(redirect_with_body(status, "trickle")))
    total = 1.0
    chat = facade.client(
        base_url=server.base_url, max_retries=0, timeout=Timeout(connect=1, read=0.5, total=total)
    )
    started = time.monotonic()
    with pytest.raises(APIStatusError if status == 302 else APITimeoutError) as info:
        chat.create(model="m", messages=USER)
    assert time.monotonic() - started < total + SLACK
    if status == 302:
        assert "redirected to /v2/chat/completions" in str(info.value)
    chat.close()


def test_a_redirect_flooding_its_body_is_followed_without_reading_it_whole(
    facade: FacadeDriver, raw_server: Callable[[Handler], RawServer]
) -> None:
    # Before: requests read all 16 MiB into memory, then waited on the silent connection
    # until the read timeout, and the call failed instead of following the redirect.
    server = raw_server(ok_on_v2(redirect_with_body(307, "flood")))
    chat = facade.client(
        base_url=server.base_url, max_retries=0, timeout=Timeout(connect=1, read=1, total=3)
    )
    started = time.monotonic()
    assert chat.create(model="m", messages=USER).text == "hello"
    assert time.monotonic() - started < 1
    assert [line.split()[1] for line in server.requests] == [
        b"/v1/chat/completions",
        b"/v2/chat/completions",
    ]
    chat.close()


@pytest.mark.parametrize(
    "location",
    ["http://[::1", "http://127.0.0.1:abc/x", "ftp://127.0.0.1/x", "mailto:someone"],
    ids=["bad-ipv6", "bad-port", "ftp", "mailto"],
)
def test_a_redirect_to_something_that_is_not_an_http_url_is_the_servers_answer(
    facade: FacadeDriver, raw_server: Callable[[Handler], RawServer], location: str
) -> None:
    # Before: a raw ValueError (async; "Connection error: ValueError" sync) for a Location
    # urllib cannot parse, and a connection error naming the HTTP library for another scheme.
    def handler(server: RawServer, connection: socket.socket, head: bytes) -> bool:
        connection.sendall(
            b"HTTP/1.1 307 Moved\r\nLocation: %s\r\nContent-Length: 0\r\n\r\n" % location.encode()
        )
        return True

    server = raw_server(handler)
    chat = facade.client(base_url=server.base_url, api_key=KEY, max_retries=2, timeout=3)
    with pytest.raises(APIStatusError) as info:
        chat.create(model="m", messages=USER)
    assert info.value.status_code == 307
    assert f"redirected to {location}" in str(info.value)
    assert len(server.requests) == 1  # a 307 is not retried
    chat.close()


# ---------------------------------------------------------------- an answer nobody asked for


def numbered(number: int, word: str = "answer") -> bytes:
    body = COMPLETION.replace(b"hello", b"%s-%d" % (word.encode(), number))
    return (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
        % len(body)
        + body
    )


def test_an_answer_sent_to_an_idle_pooled_connection_is_never_another_calls_answer(
    facade: FacadeDriver, raw_server: Callable[[Handler], RawServer]
) -> None:
    # Before (async): the unsolicited answer was queued on the pooled connection and handed
    # to the next call, and every later call on it got the answer of the call before.
    def handler(server: RawServer, connection: socket.socket, head: bytes) -> bool:
        number = len(server.requests)
        connection.sendall(numbered(number))
        if number == 1:
            time.sleep(0.05)
            connection.sendall(numbered(99, "unsolicited"))
        return True

    server = raw_server(handler)
    chat = facade.client(base_url=server.base_url, max_retries=0, timeout=3, pool_maxsize=1)
    answers = []
    for _ in range(4):
        answers.append(chat.create(model="m", messages=USER).text)
        time.sleep(0.2)  # the unsolicited answer arrives while the connection is idle
    assert answers == ["answer-1", "answer-2", "answer-3", "answer-4"]
    chat.close()


# ---------------------------------------------------------------- bytes that are not text


def test_an_error_made_of_undecodable_bytes_can_be_printed_and_logged(
    facade: FacadeDriver, raw_server: Callable[[Handler], RawServer]
) -> None:
    # Before (async): aiohttp keeps invalid UTF-8 in a header as lone surrogates, and the
    # message `request_id=\udcff...` raised UnicodeEncodeError when printed to a UTF-8
    # stream or logged to a UTF-8 file; a JSON error spelling "\ud800" did so for both.
    body = b'{"error": {"message": "bad \\ud800 input", "type": "server_error"}}'

    def handler(server: RawServer, connection: socket.socket, head: bytes) -> bool:
        connection.sendall(
            b"HTTP/1.1 500 Oops\r\nContent-Type: application/json\r\n"
            b"x-request-id: req-\xff\xfe\r\nContent-Length: %d\r\n\r\n" % len(body) + body
        )
        return True

    server = raw_server(handler)
    chat = facade.client(base_url=server.base_url, max_retries=0, timeout=3)
    with pytest.raises(InternalServerError) as info:
        chat.create(model="m", messages=USER)
    said = str(info.value)
    said.encode("utf-8")  # strict: what print() and a UTF-8 log file do
    assert said.startswith("500 Internal Server Error: bad ? input")
    assert "request_id=req-" in said
    assert info.value.raw_body == body  # the bytes themselves stay exact
    chat.close()


# ---------------------------------------------------------------- odd but valid answers

JSON_HEAD = b"Content-Type: application/json\r\n"
SSE_HEAD = b"Content-Type: text/event-stream\r\n"
FRAMES = (
    b'data: {"id":"x","object":"chat.completion.chunk","created":1,"model":"m",'
    b'"choices":[{"index":0,"delta":{"content":"hi"}}]}\n\ndata: [DONE]\n\n'
)

ODD_BUT_VALID = {
    "100 Continue first": (False, b"HTTP/1.1 100 Continue\r\n\r\n" + OK),
    "HTTP/1.0, no length, closed": (
        False,
        b"HTTP/1.0 200 OK\r\n" + JSON_HEAD + b"\r\n" + COMPLETION,
    ),
    "HTTP/1.0 stream, closed": (True, b"HTTP/1.0 200 OK\r\n" + SSE_HEAD + b"\r\n" + FRAMES),
    "chunked stream with trailers": (
        True,
        b"HTTP/1.1 200 OK\r\n" + SSE_HEAD + b"Transfer-Encoding: chunked\r\n\r\n"
        b"%x\r\n%s\r\n0\r\nX-Trailer: 1\r\n\r\n" % (len(FRAMES), FRAMES),
    ),
    "stream longer by its length than [DONE]": (
        True,
        b"HTTP/1.1 200 OK\r\n"
        + SSE_HEAD
        + b"Content-Length: %d\r\n\r\n" % (len(FRAMES) + 100)
        + FRAMES,
    ),
}


@pytest.mark.parametrize("case", list(ODD_BUT_VALID), ids=list(ODD_BUT_VALID))
def test_odd_but_valid_answers_are_read(
    facade: FacadeDriver, raw_server: Callable[[Handler], RawServer], case: str
) -> None:
    stream, answer = ODD_BUT_VALID[case]

    def handler(server: RawServer, connection: socket.socket, head: bytes) -> bool:
        connection.sendall(answer)
        connection.shutdown(socket.SHUT_WR)
        return False

    server = raw_server(handler)
    chat = facade.client(base_url=server.base_url, max_retries=0, timeout=Timeout(total=3))
    if stream:
        assert [chunk.text for chunk in chat.stream_all(model="m", messages=USER)] == ["hi"]
    else:
        assert chat.create(model="m", messages=USER).text == "hello"
    chat.close()


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 204 No Content\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n" + JSON_HEAD + b"Content-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n" + JSON_HEAD + b"Connection: close\r\n\r\n",
    ],
    ids=["204", "200-length-0", "200-closed-at-once"],
)
def test_an_empty_answer_to_a_create_says_it_is_empty(
    facade: FacadeDriver, raw_server: Callable[[Handler], RawServer], answer: bytes
) -> None:
    # Before: "not valid JSON (Expecting value: line 1 column 1 (char 0))".
    def handler(server: RawServer, connection: socket.socket, head: bytes) -> bool:
        connection.sendall(answer)
        return False

    server = raw_server(handler)
    chat = facade.client(base_url=server.base_url, max_retries=2, timeout=3)
    with pytest.raises(APIResponseValidationError) as info:
        chat.create(model="m", messages=USER)
    status = answer.split()[1].decode()
    assert f"(the body is empty, status {status})" in str(info.value)
    assert info.value.raw_body == b""
    assert len(server.requests) == 1  # a 2xx is never sent again
    chat.close()


# ---------------------------------------------------------------- connections that go away


def test_a_pooled_connection_the_server_closes_as_the_next_call_arrives(
    facade: FacadeDriver, raw_server: Callable[[Handler], RawServer]
) -> None:
    # The server keeps the connection alive, then closes it without answering the next
    # request (a keep-alive timeout racing the call): nothing was answered, so the call is
    # sent again on a new connection; with no retries left it fails as a connection error.
    answered: set[socket.socket] = set()

    def handler(server: RawServer, connection: socket.socket, head: bytes) -> bool:
        if connection in answered:
            return False  # the second request on a connection: closed unanswered
        answered.add(connection)
        connection.sendall(OK)
        return True

    server = raw_server(handler)
    chat = facade.client(base_url=server.base_url, max_retries=1, timeout=3, pool_maxsize=1)
    for _ in range(2):
        assert chat.create(model="m", messages=USER).text == "hello"
    assert len(server.requests) == 3
    chat.close()

    once = facade.client(base_url=server.base_url, max_retries=0, timeout=3, pool_maxsize=1)
    assert once.create(model="m", messages=USER).text == "hello"
    with pytest.raises(APIConnectionError, match=r"^Connection error: "):
        once.create(model="m", messages=USER)
    once.close()


def test_an_error_answered_before_the_request_body_is_read_is_the_servers_answer(
    facade: FacadeDriver,
) -> None:
    # A proxy refusing a large request answers 413 after the head and closes, while the
    # client is still sending the body: the user gets the 413, not a broken pipe.
    body = b'{"error": {"message": "request too large", "type": "invalid_request_error"}}'

    class EarlyServer(RawServer):
        def _serve(self, connection: socket.socket) -> None:
            with connection:
                connection.settimeout(HOLD)
                try:
                    received = b""
                    while b"\r\n\r\n" not in received:
                        piece = connection.recv(65536)
                        if not piece:
                            return
                        received += piece
                    self.requests.append(received.split(b"\r\n")[0])
                    connection.sendall(
                        b"HTTP/1.1 413 Payload Too Large\r\n" + JSON_HEAD + b"Connection: close\r\n"
                        b"Content-Length: %d\r\n\r\n" % len(body) + body
                    )
                    connection.shutdown(socket.SHUT_WR)
                    time.sleep(0.3)
                except OSError:
                    return

    server = EarlyServer(lambda *_: False)
    try:
        chat = facade.client(base_url=server.base_url, max_retries=2, timeout=5)
        with pytest.raises(APIStatusError) as info:
            chat.create(model="m", messages=[{"role": "user", "content": "x" * 8_000_000}])
        assert info.value.status_code == 413
        assert "request too large" in str(info.value)
        assert len(server.requests) == 1  # a 413 is not sent again
        chat.close()
    finally:
        server.close()


def test_connection_close_on_every_answer_leaves_no_socket_open(
    facade: FacadeDriver, raw_server: Callable[[Handler], RawServer]
) -> None:
    def handler(server: RawServer, connection: socket.socket, head: bytes) -> bool:
        connection.sendall(OK.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n", 1))
        return False

    server = raw_server(handler)
    chat = facade.client(base_url=server.base_url, max_retries=0, timeout=3)
    assert chat.create(model="m", messages=USER).text == "hello"  # the pool is made
    gc.collect()
    baseline = open_fds()
    for _ in range(60):
        assert chat.create(model="m", messages=USER).text == "hello"
    deadline = time.monotonic() + 3  # the server's threads close their ends a moment later
    while open_fds() > baseline and time.monotonic() < deadline:
        time.sleep(0.02)
        gc.collect()
    assert open_fds() <= baseline
    chat.close()


def test_a_large_request_body_arrives_whole_and_warns_nothing(
    facade: FacadeDriver, server: LocalServer
) -> None:
    # Before (async): aiohttp warned "Sending a large body directly with raw bytes..." on
    # every call over 1 MiB; with warnings as errors (as here) the call raised it.
    content = "x" * (3 * 2**20)
    chat = facade.client(base_url=server.base_url, max_retries=1, timeout=10)
    server.enqueue(ErrorReply(503, headers={"retry-after-ms": "0"}), Reply("fine"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        reply = chat.create(model="m", messages=[{"role": "user", "content": content}])
    assert reply.text == "fine"  # the body was sent twice: once more after the 503
    bodies = [json.loads(request.body) for request in server.requests]
    assert [body["messages"][0]["content"] == content for body in bodies] == [True, True]
    assert int(server.requests[-1].headers["content-length"]) == len(server.requests[-1].body)
    chat.close()
