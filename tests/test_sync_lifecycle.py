"""`SyncChat` the way scripts and services use it: shared by many threads, closed from another
thread, used after `close()`, interrupted by signals (Ctrl-C, SIGTERM, an alarm), forked
with a stream open, and left with a stream open when the interpreter exits.

Signals and interpreter exits run in child processes (with the loopback guard) against a
`LocalServer` in this process; every child has a timeout.
"""

from __future__ import annotations

import logging
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from batch_support import guard_refusals, guarded_env
from conftest import open_fds

from chatlib import SyncChat, Timeout
from chatlib.errors import ClientClosedError
from chatlib.testing import LocalServer, Reply

pytestmark = pytest.mark.filterwarnings(
    "ignore:This process .* is multi-threaded:DeprecationWarning"
)

TIMEOUT = Timeout(connect=5, read=10, total=20)
LONG = "word " * 400


def ask(text: str) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": text}]}


def settled_fds(baseline: int, wait: float = 3.0) -> int:
    deadline = time.monotonic() + wait
    while open_fds() > baseline and time.monotonic() < deadline:
        time.sleep(0.02)
    return open_fds()


# ---------------------------------------------------------------- threads


def test_one_client_shared_by_64_threads_creating_and_streaming(
    server: LocalServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Every call completes, no pool warning with a pool sized to the threads (the
    performance page's advice), at most one connection per thread, none left open."""
    threads_before, fds_before = threading.active_count(), open_fds()
    chat = SyncChat(base_url=server.base_url, api_key="sk-test", timeout=TIMEOUT, pool_maxsize=64)
    results: list[str] = []
    errors: list[BaseException] = []
    start = threading.Barrier(64)

    def worker(i: int) -> None:
        try:
            start.wait(10)
            for round_ in range(2):
                if (i + round_) % 2:
                    results.append(chat.create(**ask(f"q{i}")).text or "")
                else:
                    with chat.stream(**ask(f"q{i}")) as stream:
                        results.append("".join(stream.text_stream))
        except BaseException as exc:
            errors.append(exc)

    with caplog.at_level(logging.WARNING, logger="urllib3"):
        workers = [threading.Thread(target=worker, args=(i,)) for i in range(64)]
        for thread in workers:
            thread.start()
        for thread in workers:
            thread.join(30)
    chat.close()

    assert errors == []
    assert sorted(results) == sorted(f"Echo: q{i}" for i in range(64) for _ in range(2))
    assert not [r for r in caplog.records if "pool is full" in r.getMessage()]
    assert len({request.connection for request in server.requests}) <= 64
    assert threading.active_count() <= threads_before + 1  # at most the watchdog, once
    assert settled_fds(fds_before) <= fds_before


# ---------------------------------------------------------------- close()


@pytest.mark.parametrize("blocked_in", ["create", "stream"])
def test_closing_the_client_wakes_a_thread_blocked_in_a_call(
    server: LocalServer, blocked_in: str
) -> None:
    fds_before = open_fds()
    chat = SyncChat(base_url=server.base_url, api_key="sk-test", timeout=TIMEOUT, max_retries=2)
    if blocked_in == "create":
        server.enqueue(Reply(delay=8))
    else:
        server.enqueue(Reply(LONG, piece_delay=0.05))
    outcome: list[Any] = []
    started = threading.Event()

    def worker() -> None:
        try:
            if blocked_in == "create":
                started.set()
                chat.create(**ask("x"))
            else:
                with chat.stream(**ask("x")) as stream:
                    for _ in stream:
                        started.set()
            outcome.append("returned")
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=worker, daemon=True)
    thread.start()
    assert started.wait(5)
    time.sleep(0.3)  # blocked reading now
    closed_at = time.monotonic()
    chat.close()
    thread.join(5)

    assert not thread.is_alive()
    assert time.monotonic() - closed_at < 1.0  # not the read timeout nor the deadline
    (error,) = outcome
    assert isinstance(error, ClientClosedError), repr(error)
    assert "closed while this call was in flight" in str(error)
    assert error.__context__ is None and error.__cause__ is None  # no library exception
    assert "sk-test" not in repr(pickle.loads(pickle.dumps(error)).__dict__)
    assert len(server.requests) == 1  # not retried
    assert settled_fds(fds_before) <= fds_before


def test_closing_a_stream_from_another_thread_ends_its_iteration_at_once(
    server: LocalServer,
) -> None:
    """A stream read in one thread, closed in another (a cancel button): `close()` returns at
    once instead of waiting for the blocked read's timeout, and the reader's loop just ends."""
    fds_before = open_fds()
    chat = SyncChat(base_url=server.base_url, api_key="sk-test", timeout=TIMEOUT)
    server.enqueue(Reply(LONG, piece_delay=3))  # a chunk, then a long silence
    stream = chat.stream(**ask("x"))
    read: list[Any] = []

    def reader() -> None:
        try:
            read.extend(chunk.text for chunk in stream)
            read.append("ended")
        except BaseException as exc:
            read.append(exc)

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    time.sleep(0.5)  # the reader is blocked in the silence
    started = time.monotonic()
    stream.close()
    thread.join(5)

    assert time.monotonic() - started < 1.0
    assert not thread.is_alive()
    assert read[-1] == "ended"
    assert chat.create(**ask("next")).text == "Echo: next"
    chat.close()
    assert settled_fds(fds_before) <= fds_before


def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


def test_a_closed_client_refuses_calls_before_sending(server: LocalServer) -> None:
    with SyncChat(base_url=server.base_url, api_key="sk-test", max_retries=3) as chat:
        assert chat.create(**ask("inside")).text == "Echo: inside"
        copy = chat.with_options(max_retries=1)
    started = time.monotonic()
    for call in (
        lambda: chat.create(**ask("after")),
        lambda: chat.stream(**ask("after")),
        lambda: copy.create(**ask("after")),  # a copy shares the closed pool
        lambda: list(chat.run_tools_stream(tools=[add], **ask("after"))),
    ):
        with pytest.raises(ClientClosedError, match="this client is closed"):
            call()
    assert time.monotonic() - started < 0.5  # no retries, no backoff
    assert len(server.requests) == 1


def test_closing_a_copy_leaves_the_original_open(server: LocalServer) -> None:
    with SyncChat(base_url=server.base_url, api_key="sk-test") as chat:
        chat.with_options(max_retries=0).close()
        assert chat.create(**ask("still open")).text == "Echo: still open"


# ---------------------------------------------------------------- timeouts


@pytest.mark.parametrize("timeout", [float("inf"), 1e12, Timeout(connect=None, read=float("inf"))])
def test_an_endless_timeout_means_no_limit(facade: Any, server: LocalServer, timeout: Any) -> None:
    """Sockets and timers refuse such values (`OverflowError`); chatlib takes them as `None`."""
    client = facade.client(base_url=server.base_url, timeout=timeout, max_retries=0)
    assert client.create(**ask("forever")).text == "Echo: forever"
    assert client.create(**ask("per call"), timeout=timeout).text == "Echo: per call"
    assert "".join(c.text or "" for c in client.stream_all(**ask("s"))) == "Echo: s"
    assert Timeout.of(float("inf")) == Timeout(connect=None, read=None, total=None)
    assert Timeout(total=1e9).total == 1e9  # a long but finite limit is kept


# ---------------------------------------------------------------- signals, in a child process

SIGNALLED = textwrap.dedent(
    """
    import os, signal, sys, threading, time
    from chatlib import SyncChat

    class Alarm(Exception):
        pass

    def term(*_):
        raise SystemExit(3)

    def alarm(*_):
        raise Alarm

    signal.signal(signal.SIGTERM, term)
    signal.signal(signal.SIGALRM, alarm)

    def sockets():
        return sum(
            os.readlink(f"/proc/self/fd/{fd}").startswith("socket")
            for fd in os.listdir("/proc/self/fd")
            if os.path.exists(f"/proc/self/fd/{fd}")
        )

    base_url, call, how = sys.argv[1:4]
    chat = SyncChat(base_url=base_url, api_key="sk-child-secret", timeout=30, max_retries=0)
    ask = lambda text: {"model": "m", "messages": [{"role": "user", "content": text}]}
    threads = threading.active_count()
    if how == "alarm":
        signal.setitimer(signal.ITIMER_REAL, 0.5)
    else:
        print("waiting", flush=True)
    try:
        if call == "create":
            chat.create(**ask("slow"))
        else:
            for chunk in chat.stream(**ask("slow")):
                pass
        print("not interrupted", flush=True)
    except (KeyboardInterrupt, SystemExit, Alarm) as exc:
        print("caught", type(exc).__name__, time.monotonic(), flush=True)
    print("sockets", sockets(), flush=True)
    print("threads", threading.active_count() - threads, flush=True)
    print("next", chat.create(**ask("again")).text, flush=True)
    chat.close()
    """
)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize("call", ["create", "stream"])
@pytest.mark.parametrize(
    ("how", "caught"),
    [("SIGINT", "KeyboardInterrupt"), ("SIGTERM", "SystemExit"), ("alarm", "Alarm")],
)
def test_a_signal_interrupts_a_blocking_call_promptly_and_cleanly(
    tmp_path: Path, call: str, how: str, caught: str
) -> None:
    """Ctrl-C (or SIGTERM with a handler raising SystemExit, or an alarm handler) lands in
    the call at once, the connection is closed, nothing is printed by a background thread,
    and the next call works."""
    log = tmp_path / "guard.log"
    with LocalServer() as server:
        slow = Reply(delay=30) if call == "create" else Reply(LONG, piece_delay=0.05)
        server.enqueue(slow, Reply())
        child = subprocess.Popen(
            [sys.executable, "-c", SIGNALLED, server.base_url, call, how],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=guarded_env(log),
        )
        try:
            if how != "alarm":
                assert child.stdout is not None and child.stdout.readline() == "waiting\n"
                deadline = time.monotonic() + 10
                while not server.requests and time.monotonic() < deadline:
                    time.sleep(0.02)
                time.sleep(0.3)  # blocked reading the answer now
                sent_at = time.monotonic()
                child.send_signal(getattr(signal, how))
            out, err = child.communicate(timeout=30)
        finally:
            child.kill()
            child.wait()
    lines = dict(line.split(" ", 1) for line in out.splitlines() if " " in line)
    assert child.returncode == 0, err
    name, at = lines["caught"].split()
    assert name == caught
    if how != "alarm":
        assert float(at) - sent_at < 0.5  # CLOCK_MONOTONIC is the machine's
    assert lines["sockets"] == "0"  # the interrupted connection was closed, not pooled
    assert lines["threads"] in ("0", "1")  # the watchdog, and nothing else
    assert lines["next"] == "Echo: again"
    assert err == ""  # no traceback from the watchdog or a finalizer
    assert guard_refusals(log) == ""


# ---------------------------------------------------------------- interpreter exit

AT_EXIT = textwrap.dedent(
    """
    import sys, threading
    from chatlib import SyncChat
    from chatlib._transports.watchdog import watchdog

    base_url, left_open = sys.argv[1:3]
    chat = SyncChat(base_url=base_url, api_key="sk-child-secret", timeout=30)
    ask = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
    if left_open == "stream":
        kept = chat.stream(**ask)
        next(kept)
    elif left_open == "text_stream":
        kept = chat.stream(**ask).text_stream
        next(kept)
    elif left_open == "events":
        kept = chat.stream(**ask).events()
        next(kept)
    else:
        def add(a: int, b: int) -> int:
            "Add two numbers."
            return a + b

        kept = chat.run_tools_stream(tools=[add], **ask)
        next(kept)

    # At exit, daemon threads freeze where they are: the watchdog may be frozen holding its
    # lock (it happened, under load). Make it so, for certain: a thread that takes the lock
    # and ends leaves it taken for good.
    holder = threading.Thread(target=watchdog._cond.acquire)
    holder.start()
    holder.join()
    print("leaving", flush=True)
    """
)


@pytest.mark.parametrize("left_open", ["stream", "text_stream", "events", "run_tools_stream"])
def test_exiting_with_a_stream_open_neither_hangs_nor_prints(
    tmp_path: Path, left_open: str
) -> None:
    log = tmp_path / "guard.log"
    with LocalServer() as server:
        server.enqueue(Reply(LONG, piece_delay=0.05))
        result = subprocess.run(
            [sys.executable, "-X", "dev", "-c", AT_EXIT, server.base_url, left_open],
            capture_output=True,
            text=True,
            timeout=15,
            env=guarded_env(log),
        )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "leaving\n"
    assert result.stderr == ""  # no "Exception ignored", no ResourceWarning
    assert guard_refusals(log) == ""


# ---------------------------------------------------------------- fork


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_closing_the_client_leaves_the_parents_stream_alone(
    server: LocalServer,
) -> None:
    chat = SyncChat(base_url=server.base_url, api_key="sk-test", timeout=TIMEOUT, max_retries=0)
    server.enqueue(Reply(LONG, piece_delay=0.01), Reply(), Reply())
    stream = chat.stream(**ask("x"))
    assert next(stream).text == ""

    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 1
        try:
            text = chat.create(**ask("child")).text
            chat.close()
            try:
                chat.create(**ask("after close"))
            except ClientClosedError:
                code = 0 if text == "Echo: child" else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)

    assert os.waitstatus_to_exitcode(status) == 0
    assert "".join(chunk.text or "" for chunk in stream) == LONG  # not cut by the child
    assert chat.create(**ask("parent")).text == "Echo: parent"
    chat.close()
