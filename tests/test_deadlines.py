"""``timeout.total`` bounds the whole call even when the server sends its status line and
headers one byte at a time, which no per-read timeout ever catches (a raw socket server
on loopback plays the hostile part), plus the sync transport's watchdog on its own."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from chatlib import Timeout
from chatlib._transports.watchdog import watchdog
from chatlib.errors import APITimeoutError

USER = {"role": "user", "content": "Hi"}
TOTAL = 0.5
SLACK = 0.6


class TricklingServer:
    """Accepts connections and answers each with ``head`` then ``drip`` one byte at a time."""

    def __init__(self, head: bytes, drip: bytes, interval: float = 0.05, hold: float = 0) -> None:
        self.head, self.drip, self.interval, self.hold = head, drip, interval, hold
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.stopping = threading.Event()
        self.threads: list[threading.Thread] = []
        accept = threading.Thread(target=self._accept, daemon=True)
        accept.start()
        self.threads.append(accept)

    def _accept(self) -> None:
        self.listener.settimeout(0.1)
        while not self.stopping.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                continue
            worker = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            worker.start()
            self.threads.append(worker)

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            try:
                conn.recv(65536)
                conn.sendall(self.head)
                deadline = time.monotonic() + 5  # long past any client's total: fail, not hang
                for byte in self.drip * 1000:
                    if self.stopping.is_set() or time.monotonic() > deadline:
                        return
                    conn.sendall(bytes([byte]))
                    time.sleep(self.interval)
                self.stopping.wait(self.hold)  # keep the connection open, saying nothing
            except OSError:
                return

    def close(self) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout=2)
        self.listener.close()


TRICKLES = {
    "status line": (b"", b"HTTP/1.1 200 OK"),
    "one endless header": (b"HTTP/1.1 200 OK\r\nX-Slow: ", b"a"),
    "header after header": (b"HTTP/1.1 200 OK\r\n", b"X-A: b\r\n"),
    "inside one body chunk": (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n1000\r\n",
        b"a",
    ),
}


@pytest.fixture(params=list(TRICKLES), ids=list(TRICKLES))
def trickling(request: pytest.FixtureRequest) -> Iterator[TricklingServer]:
    head, drip = TRICKLES[request.param]
    server = TricklingServer(head, drip)
    yield server
    server.close()


@pytest.mark.parametrize("stream", [False, True], ids=["create", "stream"])
def test_headers_trickled_forever_end_at_the_total_deadline(
    facade: object, trickling: TricklingServer, stream: bool
) -> None:
    client = facade.client(  # type: ignore[attr-defined]
        base_url=f"http://127.0.0.1:{trickling.port}/v1",
        timeout=Timeout(connect=1, read=0.3, total=TOTAL),
        max_retries=2,
    )
    started = time.monotonic()
    with pytest.raises(APITimeoutError):
        if stream:
            client.stream_all(model="m", messages=[USER])
        else:
            client.create(model="m", messages=[USER])
    elapsed = time.monotonic() - started
    assert TOTAL - 0.05 <= elapsed < TOTAL + SLACK
    client.close()


def test_the_watchdog_wakes_a_blocked_read_at_the_deadline() -> None:
    left, right = socket.socketpair()
    left.settimeout(3)  # a watchdog that never fires fails the test instead of hanging it
    with left, right:
        watch = watchdog.watch(time.monotonic() + 0.2, left)
        started = time.monotonic()
        assert left.recv(10) == b""  # shut down under the blocked read: EOF
        assert 0.15 <= time.monotonic() - started < 1.0
        assert watch.fired


def test_a_cancelled_watch_never_fires() -> None:
    left, right = socket.socketpair()
    with left, right:
        watch = watchdog.watch(time.monotonic() + 0.1, left)
        watchdog.cancel(watch)
        time.sleep(0.3)
        right.sendall(b"still open")
        assert left.recv(10) == b"still open"
        assert not watch.fired


def test_an_earlier_deadline_registered_later_fires_first() -> None:
    late_a, late_b = socket.socketpair()
    early_a, early_b = socket.socketpair()
    early_a.settimeout(3)  # a watchdog that sleeps through the earlier deadline fails, not hangs
    with late_a, late_b, early_a, early_b:
        late = watchdog.watch(time.monotonic() + 5, late_a)
        early = watchdog.watch(time.monotonic() + 0.1, early_a)
        started = time.monotonic()
        assert early_a.recv(1) == b""
        assert time.monotonic() - started < 1.0
        assert early.fired and not late.fired
        watchdog.cancel(late)


COMPLETION = (
    b'{"id":"c","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,'
    b'"message":{"role":"assistant","content":"hello"},"finish_reason":"stop"}]}'
)


def test_interim_1xx_answers_before_the_real_one_are_skipped(facade: object) -> None:
    head = (
        b"HTTP/1.1 103 Early Hints\r\nLink: </x>; rel=preload\r\n\r\n"
        b"HTTP/1.1 102 Processing\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(COMPLETION) + COMPLETION
    )
    server = TricklingServer(head, b"")
    try:
        client = facade.client(  # type: ignore[attr-defined]
            base_url=f"http://127.0.0.1:{server.port}/v1", max_retries=0, timeout=5
        )
        assert client.create(model="m", messages=[USER]).text == "hello"
        client.close()
    finally:
        server.close()


def test_cancelled_watches_do_not_pile_up() -> None:
    left, right = socket.socketpair()
    with left, right:
        for _ in range(2000):
            watchdog.cancel(watchdog.watch(time.monotonic() + 1800, left))
        assert len(watchdog._heap) < 200


def test_a_finished_stream_does_not_wait_for_a_body_that_never_ends(facade: object) -> None:
    frame = b'data: {"choices":[{"index":0,"delta":{"content":"hi"}}]}\n\ndata: [DONE]\n\n'
    head = (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n%x\r\n" % len(frame) + frame + b"\r\n"
    )  # ... and no terminating chunk: the server holds the connection open
    server = TricklingServer(head, b"", hold=30)
    try:
        client = facade.client(  # type: ignore[attr-defined]
            base_url=f"http://127.0.0.1:{server.port}/v1", timeout=Timeout(read=20)
        )
        started = time.monotonic()
        chunks = client.stream_all(model="m", messages=[USER])
        assert [chunk.text for chunk in chunks] == ["hi"]
        assert time.monotonic() - started < 2  # not the 20 s read timeout
        client.close()
    finally:
        server.close()
