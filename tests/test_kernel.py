"""What a notebook user sees in a real Jupyter kernel: interrupting a live `stream.display()`
(the stop button), and the displays of a response, an error and a stream.

The kernel is a real `ipykernel` started by `jupyter_client` with the loopback guard loaded
(it may connect to loopback only); it talks to this process over Unix sockets in a temporary
directory. The servers it calls run in this process, on 127.0.0.1.
"""

from __future__ import annotations

import json
import queue
import select
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from batch_support import guard_refusals, guarded_env

from chatlib.testing import ErrorReply, LocalServer

jupyter_client = pytest.importorskip("jupyter_client")
pytest.importorskip("ipykernel")

KEY = "sk-kernel-secret-0123456789"

pytestmark = pytest.mark.timeout(90)


class SlowStreamServer:
    """A loopback HTTP server whose every answer is an SSE stream of `words` one-word chunks,
    `delay` seconds apart, which notices when the client hangs up (`disconnected`)."""

    def __init__(self, words: int = 400, delay: float = 0.05) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._words, self._delay = words, delay
        self.disconnected: queue.Queue[int] = queue.Queue()  # chunks sent before each hang-up
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._listener.getsockname()[1]}/v1"

    def close(self) -> None:
        self._stopping.set()
        self._listener.close()
        self._thread.join(timeout=10)

    def _serve(self) -> None:
        while not self._stopping.is_set():
            ready, _, _ = select.select([self._listener], [], [], 0.1)
            if not ready or self._stopping.is_set():
                continue
            connection, _ = self._listener.accept()
            threading.Thread(target=self._answer, args=(connection,), daemon=True).start()

    def _answer(self, connection: socket.socket) -> None:
        with connection:
            data = b""
            while b"\r\n\r\n" not in data:
                data += connection.recv(65536)
            head, _, body = data.partition(b"\r\n\r\n")
            length = next(
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            while len(body) < length:
                body += connection.recv(65536)
            connection.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                b"x-request-id: req_slow\r\nTransfer-Encoding: chunked\r\n\r\n"
            )
            for index in range(self._words):
                chunk = {
                    "id": "chatcmpl-slow",
                    "object": "chat.completion.chunk",
                    "created": 1,
                    "model": "m",
                    "choices": [
                        {"index": 0, "delta": {"content": f"w{index} "}, "finish_reason": None}
                    ],
                }
                event = b"data: " + json.dumps(chunk).encode() + b"\n\n"
                try:
                    connection.sendall(b"%x\r\n%s\r\n" % (len(event), event))
                except OSError:
                    self.disconnected.put(index)
                    return
                ready, _, _ = select.select([connection], [], [], self._delay)
                try:
                    hung_up = bool(ready) and not connection.recv(1)  # the client's FIN
                except OSError:  # or its RST
                    hung_up = True
                if hung_up:
                    self.disconnected.put(index + 1)
                    return
            event = b"data: [DONE]\n\n"
            connection.sendall(b"%x\r\n%s\r\n0\r\n\r\n" % (len(event), event))


class Kernel:
    """A real IPython kernel: run cells, read their messages, interrupt them."""

    def __init__(self, tmp: Path) -> None:
        from jupyter_client.kernelspec import KernelSpec

        self.guard_log = tmp / "guard.log"
        self.manager = jupyter_client.KernelManager(transport="ipc", ip=str(tmp / "ipc"))
        argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
        self.manager._kernel_spec = KernelSpec(
            argv=argv, display_name="chatlib test", language="python"
        )
        self.manager.start_kernel(env=guarded_env(self.guard_log), cwd=str(tmp))
        self.client = self.manager.client()
        self.client.start_channels()
        self.client.wait_for_ready(timeout=60)

    def run(
        self, code: str, *, interrupt_when: Callable[[dict[str, Any]], bool] | None = None
    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """Run a cell; its iopub messages and its reply. `interrupt_when(message)` true
        interrupts the kernel (as the stop button does) once."""
        msg_id = self.client.execute(code)
        messages = []
        deadline = time.monotonic() + 40
        while True:
            message = self.client.get_iopub_msg(timeout=max(deadline - time.monotonic(), 0.1))
            if message["parent_header"].get("msg_id") != msg_id:
                continue
            messages.append(message)
            if interrupt_when is not None and interrupt_when(message):
                self.manager.interrupt_kernel()
                interrupt_when = None
            content = message["content"]
            if message["msg_type"] == "status" and content["execution_state"] == "idle":
                break
        while True:
            reply = self.client.get_shell_msg(timeout=10)
            if reply["parent_header"].get("msg_id") == msg_id:
                return messages, reply["content"]

    def close(self) -> None:
        self.client.stop_channels()
        self.manager.shutdown_kernel(now=True)


@pytest.fixture(scope="module")
def kernel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kernel]:
    tmp = tmp_path_factory.mktemp("kernel")
    started = Kernel(tmp)
    try:
        yield started
    finally:
        started.close()
    assert guard_refusals(started.guard_log) == ""


@pytest.fixture
def slow_server() -> Iterator[SlowStreamServer]:
    server = SlowStreamServer()
    try:
        yield server
    finally:
        server.close()


def displays(messages: list[dict[str, Any]]) -> list[dict[str, str]]:
    """The bundles a cell displayed or updated, in order."""
    kinds = ("display_data", "update_display_data")
    return [m["content"]["data"] for m in messages if m["msg_type"] in kinds]


def shows(word: str) -> Callable[[dict[str, Any]], bool]:
    """Whether a message updates the live output to show `word`."""

    def check(message: dict[str, Any]) -> bool:
        if message["msg_type"] not in ("display_data", "update_display_data"):
            return False
        return word in message["content"]["data"]["text/plain"]

    return check


@pytest.mark.parametrize(
    ("client", "call", "raised"),
    [
        ("SyncChat", "stream.display()", "KeyboardInterrupt"),
        # ipykernel stops an awaiting cell by cancelling it: any `await` ends that way.
        ("AsyncChat", "await stream.display()", "CancelledError"),
    ],
    ids=["sync", "async"],
)
def test_interrupting_a_live_display_in_a_real_kernel(
    client: str, call: str, raised: str, kernel: Kernel, slow_server: SlowStreamServer
) -> None:
    code = (
        f"from chatlib import {client}\n"
        f"chat = {client}(base_url={slow_server.base_url!r})\n"
        "stream = chat.stream(model='m', messages=[{'role': 'user', 'content': 'Hi'}])\n"
        f"{call}\n"
    )
    messages, reply = kernel.run(code, interrupt_when=shows("w3 "))
    assert (reply["status"], reply["ename"]) == ("error", raised)
    shown = displays(messages)
    assert shown[0]["text/plain"].startswith("w0 ")
    last = shown[-1]
    assert last["text/plain"].startswith("w0 w1 w2 w3 ")  # what arrived stays on screen
    assert last["text/markdown"].endswith("· *interrupted: what arrived is kept*\n")
    assert "<em>interrupted: what arrived is kept</em>" in last["text/html"]
    assert "w399" not in last["text/plain"]

    # The connection was closed: the server sees the hang-up long before its 400 chunks.
    sent = slow_server.disconnected.get(timeout=10)
    assert sent < 400

    # The kernel goes on: the next cell runs, and sees the stream closed with what arrived.
    messages, reply = kernel.run("print(repr(stream)); print(stream.accumulated.text)")
    assert reply["status"] == "ok"
    (printed,) = [m["content"]["text"] for m in messages if m["msg_type"] == "stream"]
    first, text = printed.splitlines()
    stream_class = "ChatStream" if client == "SyncChat" else "AsyncChatStream"
    assert first.startswith(f"<{stream_class} closed request_id='req_slow'")
    assert text.strip() == last["text/plain"].strip()


def test_the_stop_button_pressed_twice_in_a_real_kernel(
    kernel: Kernel, slow_server: SlowStreamServer
) -> None:
    code = (
        "from chatlib import SyncChat\n"
        f"chat = SyncChat(base_url={slow_server.base_url!r})\n"
        "stream = chat.stream(model='m', messages=[{'role': 'user', 'content': 'Hi'}])\n"
        "stream.display()\n"
    )
    see_w3 = shows("w3 ")

    def twice(message: dict[str, Any]) -> bool:
        if see_w3(message):
            kernel.manager.interrupt_kernel()  # and `run` presses once more, at once
            return True
        return False

    messages, reply = kernel.run(code, interrupt_when=twice)
    assert (reply["status"], reply["ename"]) == ("error", "KeyboardInterrupt")
    last = displays(messages)[-1]
    assert last["text/markdown"].endswith("· *interrupted: what arrived is kept*\n")
    assert slow_server.disconnected.get(timeout=10) < 400
    _, reply = kernel.run("assert repr(stream).startswith('<ChatStream closed')")
    assert reply["status"] == "ok"


def test_displays_in_a_real_kernel_are_markdown_and_html_without_the_key(
    kernel: Kernel,
) -> None:
    with LocalServer(api_key=KEY) as server:
        server.enqueue(ErrorReply(429, "Slow down", code="rate_limit_exceeded"))
        setup = (
            "from chatlib import SyncChat\n"
            f"chat = SyncChat(base_url={server.base_url!r}, api_key={KEY!r}, max_retries=0)\n"
            "messages = [{'role': 'user', 'content': 'Say <b>hi</b>'}]\n"
            "try:\n"
            "    chat.create(model='gpt-4o-mini', messages=messages)\n"
            "except Exception as exc:\n"
            "    error = exc\n"
            "stream = chat.stream(model='gpt-4o-mini', messages=messages)\n"
        )
        _, reply = kernel.run(setup)
        assert reply["status"] == "ok", reply

        cells = {
            "response": "chat.create(model='gpt-4o-mini', messages=messages)",
            "error": "error",
            "stream open": "stream",  # SyncChat.stream sent the request: headers are in
            "stream after": "for _ in stream: pass\nstream",
        }
        results = {}
        every_message = []
        for name, code in cells.items():
            messages, reply = kernel.run(code)
            assert reply["status"] == "ok", (name, reply)
            every_message += messages
            (result,) = [
                m["content"]["data"] for m in messages if m["msg_type"] == "execute_result"
            ]
            assert {"text/plain", "text/markdown", "text/html"} <= set(result), name
            results[name] = result

    md = {name: result["text/markdown"] for name, result in results.items()}
    assert md["response"].startswith("Echo: Say &lt;b>hi&lt;/b>\n\n---\n\n`gpt-4o-mini` · finish")
    assert "Echo: Say &lt;b&gt;hi&lt;/b&gt;" in results["response"]["text/html"]
    assert md["error"].startswith("**RateLimitError** · status `429` · type `requests`")
    assert md["stream open"].startswith("*(no choices)*\n\n---\n\nrequest `req_")
    assert md["stream open"].endswith("· *streaming…*\n")
    assert md["stream after"].startswith("Echo: Say &lt;b>hi&lt;/b>\n\n---\n\n`gpt-4o-mini` · ")
    assert "finish `stop`" in md["stream after"]
    for result in results.values():
        assert "<b>" not in result["text/html"]
    assert KEY not in json.dumps([m["content"] for m in every_message])
