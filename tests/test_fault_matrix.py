"""The fault matrix (issue #3): every scripted fault, for both facades, streaming and not.

Each case is one row: a script of server actions, whether the call streams, and the exact
outcome expected (success, or the exact chatlib exception), the attempts the server must see
and the retry waits the client must ask for. Every row also checks that the call did not
outlive its total deadline and that nothing leaked: the client runs with a connection pool of
one and must answer a normal call right after the fault, and once it is closed the process has
no more file descriptors than before, no ResourceWarning was issued and (async) the event loop
reported nothing unclosed.

Retry waits are recorded, not slept, to keep the matrix fast: the drivers' ``sleep`` is
replaced by a recorder (see :func:`sleeps`). A few tests at the end sleep for real, to show the
waits and the total deadline hold on the wall clock too.
"""

from __future__ import annotations

import asyncio
import gc
import json
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from conftest import ClientDriver, FacadeDriver, open_fds, sse_chunk

import chatlib._async
import chatlib._sync
from chatlib import Timeout
from chatlib.errors import (
    APIConnectionError,
    APIError,
    APIResponseValidationError,
    APIStreamError,
    APITimeoutError,
    BadRequestError,
    BodyTooLargeError,
    IncompleteStreamError,
    InsufficientQuotaError,
    InternalServerError,
    RateLimitError,
)
from chatlib.testing import (
    Action,
    Disconnect,
    ErrorReply,
    InStreamError,
    LocalServer,
    RawReply,
    Reply,
    Stall,
    Trickle,
)

MODEL = "gpt-4o-mini"
PROMPT = "hello fault"
ECHO = f"Echo: {PROMPT}"
FAST = Timeout(connect=2, read=0.5, total=3)
SLACK = 0.5  # what a call may run past its total deadline (scheduling, teardown of a socket)
SSE = "text/event-stream"

# Requested retry waits, as (low, high): the policy's backoff is 0.5 s, then 1 s, each
# shortened by up to 25 % of jitter; a server's ``retry-after(-ms)`` of 0 means no wait.
BACKOFF_1 = (0.375, 0.5)
BACKOFF_2 = (0.75, 1.0)
NO_WAIT = (0.0, 0.0)


def _chunk(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
    return sse_chunk(delta, finish_reason, model=MODEL, chunk_id="chatcmpl-raw")


CUT_STREAM = [
    _chunk({"role": "assistant", "content": ""}),
    _chunk({"content": "Half an"}),
    _chunk({"content": " answer"}),
]
HTML_502 = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    b"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n"
    b"</body>\r\n</html>\r\n"
)
HTML_LOGIN = (
    b"<!DOCTYPE html><html><head><title>Sign in to the guest network</title></head>"
    b"<body><form>...</form></body></html>"
)
BROKEN_JSON = b'{"id": "chatcmpl-1", "object": "chat.completion", "choices": ['
COMPLETION_JSON = json.dumps(
    {
        "id": "chatcmpl-json",
        "object": "chat.completion",
        "created": 1,
        "model": MODEL,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "not a stream"},
                "finish_reason": "stop",
            }
        ],
    }
).encode()
ERROR_JSON = json.dumps(
    {"error": {"message": "Invalid value for 'n'", "type": "invalid_request_error"}}
).encode()


@dataclass(frozen=True)
class Case:
    """One row of the matrix."""

    id: str
    script: tuple[Action, ...]
    stream: bool
    attempts: int
    error: type[APIError] | None = None  # None: the call succeeds with the echo reply
    match: str | None = None  # a fragment of str(error)
    delays: tuple[tuple[float, float], ...] = ()  # the retry waits requested, in order
    timeout: Timeout = FAST
    max_retries: int = 2
    limits: dict[str, int] = field(default_factory=dict)  # max_line_bytes, max_body_bytes
    chunks: int | None = None  # streaming: chunks handed out before the error
    content: str = ECHO  # the text of a successful answer
    check: Callable[[APIError], None] | None = None  # more assertions on the error


def _raw_is(expected: bytes) -> Callable[[APIError], None]:
    def check(error: APIError) -> None:
        assert error.raw_body == expected

    return check


def _readable_502(error: APIError) -> None:
    assert isinstance(error, InternalServerError)
    assert error.status_code == 502
    assert str(error) == "502 Bad Gateway"  # the page title repeats the status: said once
    assert error.server_message == "502 Bad Gateway"
    assert "<" not in str(error)
    assert error.raw_body == HTML_502


def _status(code: int) -> Callable[[APIError], None]:
    def check(error: APIError) -> None:
        assert getattr(error, "status_code", None) == code

    return check


CASES = [
    # -- statuses and the retry policy ------------------------------------------------------
    *(
        Case(
            f"503-503-200-{mode}",
            (ErrorReply(503), ErrorReply(503), Reply()),
            stream,
            attempts=3,
            delays=(BACKOFF_1, BACKOFF_2),
        )
        for mode, stream in (("json", False), ("sse", True))
    ),
    *(
        Case(
            f"429-retry-after-0-{mode}",
            (
                ErrorReply(429, headers={"retry-after-ms": "0"}),
                ErrorReply(429, headers={"retry-after": "0"}),
                Reply(),
            ),
            stream,
            attempts=3,
            delays=(NO_WAIT, NO_WAIT),
        )
        for mode, stream in (("json", False), ("sse", True))
    ),
    *(
        Case(
            f"429-insufficient-quota-{mode}",
            (ErrorReply(429, code="insufficient_quota", type="insufficient_quota"), Reply()),
            stream,
            attempts=1,
            error=InsufficientQuotaError,
            match="code=insufficient_quota",
        )
        for mode, stream in (("json", False), ("sse", True))
    ),
    Case(
        "503-x-should-retry-false-json",
        (ErrorReply(503, headers={"x-should-retry": "false"}), Reply()),
        False,
        attempts=1,
        error=InternalServerError,
        match="503 Service Unavailable",
    ),
    Case(
        "400-x-should-retry-true-json",
        (ErrorReply(400, headers={"x-should-retry": "true", "retry-after-ms": "0"}), Reply()),
        False,
        attempts=2,
        delays=(NO_WAIT,),
    ),
    *(
        Case(
            f"400-never-retried-{mode}",
            (ErrorReply(400, "Invalid 'messages'", param="messages"), Reply()),
            stream,
            attempts=1,
            error=BadRequestError,
            match="400 Bad Request: Invalid 'messages'",
        )
        for mode, stream in (("json", False), ("sse", True))
    ),
    *(
        Case(
            f"retries-exhausted-last-error-{mode}",
            (ErrorReply(503, "first"), ErrorReply(502, "second"), ErrorReply(500, "third")),
            stream,
            attempts=3,
            error=InternalServerError,
            match="500 Internal Server Error: third",
            delays=(BACKOFF_1, BACKOFF_2),
        )
        for mode, stream in (("json", False), ("sse", True))
    ),
    Case(
        "max-retries-0-json",
        (ErrorReply(503), Reply()),
        False,
        attempts=1,
        max_retries=0,
        error=InternalServerError,
    ),
    Case(
        "retry-after-past-deadline-fails-fast-json",
        (ErrorReply(429, headers={"retry-after": "10"}), Reply()),
        False,
        attempts=1,
        error=RateLimitError,
        match="429 Too Many Requests",
    ),
    # -- the connection breaks --------------------------------------------------------------
    *(
        Case(
            f"disconnect-before-headers-then-200-{mode}",
            (Disconnect(), Reply()),
            stream,
            attempts=2,
            delays=(BACKOFF_1,),
        )
        for mode, stream in (("json", False), ("sse", True))
    ),
    Case(
        "disconnect-before-headers-always-json",
        (Disconnect(), Disconnect(), Disconnect(), Reply()),
        False,
        attempts=3,
        error=APIConnectionError,
        match="Connection error",
        delays=(BACKOFF_1, BACKOFF_2),
    ),
    Case(
        # Nothing reached the caller yet: sending the request again is safe.
        "disconnect-mid-body-then-200-json",
        (Disconnect("mid_body"), Reply()),
        False,
        attempts=2,
        delays=(BACKOFF_1,),
    ),
    Case(
        # Part of the answer may have reached the caller: never sent again.
        "disconnect-mid-stream-not-retried-sse",
        (Disconnect("mid_stream"), Reply()),
        True,
        attempts=1,
        error=APIConnectionError,
        match="Connection error",
    ),
    # -- silence ----------------------------------------------------------------------------
    *(
        Case(
            f"stall-before-headers-then-200-{mode}",
            (Stall(5), Reply()),
            stream,
            attempts=2,
            delays=(BACKOFF_1,),
        )
        for mode, stream in (("json", False), ("sse", True))
    ),
    Case(
        "stall-before-headers-always-json",
        (Stall(5), Stall(5), Stall(5), Reply()),
        False,
        attempts=3,
        error=APITimeoutError,
        match="timed out",
        timeout=Timeout(connect=2, read=0.2, total=3),
        delays=(BACKOFF_1, BACKOFF_2),
    ),
    Case(
        "stall-mid-body-then-200-json",
        (Stall(5, stage="mid_body"), Reply()),
        False,
        attempts=2,
        delays=(BACKOFF_1,),
    ),
    Case(
        "stall-mid-stream-read-timeout-sse",
        (Stall(5, stage="mid_stream"), Reply()),
        True,
        attempts=1,
        error=APITimeoutError,
        chunks=2,
    ),
    Case(
        "stall-mid-stream-past-total-sse",
        (Stall(5, stage="mid_stream"), Reply()),
        True,
        attempts=1,
        error=APITimeoutError,
        timeout=Timeout(connect=2, read=2, total=0.8),
        chunks=2,
    ),
    # -- a trickle: every byte in time, the whole never -------------------------------------
    Case(
        "trickle-keepalives-forever-sse",
        (Trickle(b": keep-alive\n\n", size=1, interval=0.1, repeat=True), Reply()),
        True,
        attempts=1,
        error=APITimeoutError,
        timeout=Timeout(connect=2, read=0.5, total=0.8),
        chunks=0,
    ),
    Case(
        "trickle-body-past-total-json",
        (Trickle(size=16, interval=0.1), Reply()),
        False,
        attempts=1,
        error=APITimeoutError,
        timeout=Timeout(connect=2, read=0.5, total=0.8),
    ),
    # -- answers that are not what they claim ------------------------------------------------
    Case(
        "malformed-json-200-json",
        (RawReply(body=BROKEN_JSON), Reply()),
        False,
        attempts=1,
        error=APIResponseValidationError,
        match="not valid JSON",
        check=_raw_is(BROKEN_JSON),
    ),
    Case(
        "malformed-json-frame-sse",
        (RawReply(body=[b"data: " + BROKEN_JSON + b"\n\n"], content_type=SSE), Reply()),
        True,
        attempts=1,
        error=APIResponseValidationError,
        match="not valid JSON",
        check=_raw_is(BROKEN_JSON),
    ),
    *(
        Case(
            f"html-502-page-{mode}",
            (RawReply(502, body=HTML_502, content_type="text/html"),) * 2 + (Reply(),),
            stream,
            attempts=2,
            max_retries=1,
            error=InternalServerError,
            check=_readable_502,
            delays=(BACKOFF_1,),
        )
        for mode, stream in (("json", False), ("sse", True))
    ),
    Case(
        "html-502-page-then-200-json",
        (RawReply(502, body=HTML_502, content_type="text/html"), Reply()),
        False,
        attempts=2,
        delays=(BACKOFF_1,),
    ),
    Case(
        "stream-cut-without-done-sse",
        (RawReply(body=CUT_STREAM, content_type=SSE), Reply()),
        True,
        attempts=1,
        error=IncompleteStreamError,
        match="before data: [DONE]",
        chunks=3,
    ),
    Case(
        "stream-without-any-event-sse",
        (RawReply(body=[b""], content_type=SSE), Reply()),
        True,
        attempts=1,
        error=IncompleteStreamError,
        match="without sending any event",
        chunks=0,
    ),
    Case(
        "in-stream-error-typed-sse",
        (InStreamError({"message": "The server is overloaded", "type": "server_error"}),),
        True,
        attempts=1,
        error=InternalServerError,
        match="in-stream error: 500 Internal Server Error: The server is overloaded",
    ),
    Case(
        "in-stream-error-event-sse",
        (InStreamError({"message": "slot unavailable"}, after_chunks=2, as_event=True),),
        True,
        attempts=1,
        error=APIStreamError,
        match="in-stream error: slot unavailable",
        chunks=2,  # every chunk before the error is handed out, however the bytes were split
    ),
    # -- size limits -------------------------------------------------------------------------
    Case(
        "oversized-sse-line-sse",
        (RawReply(body=[b"data: " + b"x" * 4096 + b"\n\n"], content_type=SSE), Reply()),
        True,
        attempts=1,
        error=BodyTooLargeError,
        match="max_line_bytes",
        limits={"max_line_bytes": 1024},
        chunks=0,
    ),
    Case(
        "endless-sse-line-sse",
        (Trickle(b"x" * 4096, size=4096, interval=0, repeat=True), Reply()),
        True,
        attempts=1,
        error=BodyTooLargeError,
        match="max_line_bytes",
        limits={"max_line_bytes": 64 * 1024},
        chunks=0,
    ),
    Case(
        "oversized-body-json",
        (RawReply(body=COMPLETION_JSON + b" " * 4096), Reply()),
        False,
        attempts=1,
        error=BodyTooLargeError,
        match="max_body_bytes",
        limits={"max_body_bytes": 1024},
    ),
    Case(
        "endless-body-json",
        (Trickle(b" " * 4096, size=4096, interval=0, repeat=True), Reply()),
        False,
        attempts=1,
        error=BodyTooLargeError,
        match="max_body_bytes",
        limits={"max_body_bytes": 64 * 1024},
    ),
    # -- the wrong content type --------------------------------------------------------------
    Case(
        "html-200-for-a-stream-sse",
        (RawReply(body=HTML_LOGIN, content_type="text/html"), Reply()),
        True,
        attempts=1,
        error=APIResponseValidationError,
        match="expected an event stream, got an HTML page: 'Sign in to the guest network'",
        check=_raw_is(HTML_LOGIN),
    ),
    Case(
        "json-completion-for-a-stream-sse",
        (RawReply(body=COMPLETION_JSON), Reply()),
        True,
        attempts=1,
        error=APIResponseValidationError,
        match="expected an event stream, got a JSON body",
        check=_raw_is(COMPLETION_JSON),
    ),
    Case(
        "json-error-200-for-a-stream-sse",
        (RawReply(body=ERROR_JSON), Reply()),
        True,
        attempts=1,
        error=BadRequestError,
        match="Invalid value for 'n'",
    ),
    Case(
        "sse-for-a-non-stream-json",
        (RawReply(body=[*CUT_STREAM, b"data: [DONE]\n\n"], content_type=SSE), Reply()),
        False,
        attempts=1,
        error=APIResponseValidationError,
        match="not valid JSON",
        check=_raw_is(b"".join(CUT_STREAM) + b"data: [DONE]\n\n"),
    ),
    Case(
        "html-200-for-a-non-stream-json",
        (RawReply(body=HTML_LOGIN, content_type="text/html"), Reply()),
        False,
        attempts=1,
        error=APIResponseValidationError,
        match="not valid JSON",
        check=_raw_is(HTML_LOGIN),
    ),
]


# --------------------------------------------------------------------------------------------
# Harness
# --------------------------------------------------------------------------------------------


class SleepRecorder:
    """Stands in for the drivers' ``time``/``asyncio`` modules: records every retry wait, and
    sleeps for real only when :attr:`real` is set (else it just yields)."""

    def __init__(self) -> None:
        self.delays: list[float] = []
        self.real = False


class _TimeModule:
    def __init__(self, recorder: SleepRecorder) -> None:
        self._recorder = recorder

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)

    def sleep(self, seconds: float) -> None:
        self._recorder.delays.append(seconds)
        time.sleep(seconds if self._recorder.real else 0)


class _AsyncioModule:
    def __init__(self, recorder: SleepRecorder) -> None:
        self._recorder = recorder

    def __getattr__(self, name: str) -> Any:
        return getattr(asyncio, name)

    async def sleep(self, seconds: float, result: Any = None) -> Any:
        self._recorder.delays.append(seconds)
        return await asyncio.sleep(seconds if self._recorder.real else 0, result)


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> SleepRecorder:
    """The retry waits the drivers ask for (not slept, unless ``real`` is set)."""
    recorder = SleepRecorder()
    monkeypatch.setattr(chatlib._sync, "time", _TimeModule(recorder))
    monkeypatch.setattr(chatlib._async, "asyncio", _AsyncioModule(recorder))
    return recorder


@dataclass
class Outcome:
    error: APIError | None = None
    chunks: list[Any] = field(default_factory=list)
    text: str | None = None
    accumulated: str | None = None
    elapsed: float = 0.0


def make_client(
    facade: FacadeDriver,
    server: LocalServer,
    *,
    timeout: Timeout = FAST,
    max_retries: int = 2,
    limits: dict[str, int] | None = None,
) -> ClientDriver:
    """A client with a connection pool of one, so a connection that is never given back
    shows as the next call hanging (async) or as a file descriptor left open (sync)."""
    return facade.client(
        base_url=server.base_url,
        timeout=timeout,
        max_retries=max_retries,
        pool_maxsize=1,
        **(limits or {}),
    )


def call(client: ClientDriver, *, stream: bool) -> Outcome:
    """One call, read to the end (streams chunk by chunk), timed; chatlib errors captured."""
    outcome = Outcome()
    messages = [{"role": "user", "content": PROMPT}]
    started = time.monotonic()
    try:
        if stream:
            driver = client.stream(model=MODEL, messages=messages)
            try:
                while (chunk := driver.next()) is not None:
                    outcome.chunks.append(chunk)
            finally:
                driver.close()
                outcome.accumulated = driver.accumulated.text
            outcome.text = "".join(chunk.text or "" for chunk in outcome.chunks)
        else:
            outcome.text = client.create(model=MODEL, messages=messages).choices[0].message.content
    except APIError as exc:
        outcome.error = exc
    outcome.elapsed = time.monotonic() - started
    return outcome


@contextmanager
def no_leaks(facade: FacadeDriver) -> Iterator[None]:
    """Fails if the block leaves file descriptors open, issues a ResourceWarning, or (async)
    makes the event loop report anything (unclosed sessions, responses, transports).

    Close every client made inside the block before it ends."""
    loop_reports: list[Any] = []
    if facade.is_async:

        async def install() -> None:
            asyncio.get_running_loop().set_exception_handler(
                lambda _loop, context: loop_reports.append(context)
            )

        facade.run(install())
    gc.collect()
    baseline = open_fds()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        yield
        gc.collect()
    fds = settle_fds(baseline)
    resource_warnings = [w for w in caught if issubclass(w.category, ResourceWarning)]
    assert not resource_warnings, [str(w.message) for w in resource_warnings]
    assert not loop_reports, loop_reports
    assert fds <= baseline, f"{fds - baseline} file descriptor(s) left open"


def settle_fds(baseline: int, wait: float = 3.0) -> int:
    """``open_fds()`` once it is back to ``baseline`` (sockets close on the server thread a
    moment after the client lets go), or after ``wait`` seconds."""
    deadline = time.monotonic() + wait
    fds = open_fds()
    while fds > baseline and time.monotonic() < deadline:
        time.sleep(0.02)
        gc.collect()
        fds = open_fds()
    return fds


# --------------------------------------------------------------------------------------------
# The matrix
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_fault_matrix(
    case: Case,
    facade: FacadeDriver,
    server: LocalServer,
    sleeps: SleepRecorder,
) -> None:
    with no_leaks(facade):
        client = make_client(
            facade, server, timeout=case.timeout, max_retries=case.max_retries, limits=case.limits
        )
        server.enqueue(*case.script)

        outcome = call(client, stream=case.stream)
        attempts = len(server.requests)
        retry_waits = list(sleeps.delays)

        # Whatever happened, the client is fine: a normal call on its single pooled connection.
        server.clear()
        follow_up = call(client, stream=False)
        client.close()

    assert case.timeout.total is not None
    assert outcome.elapsed < case.timeout.total + SLACK
    if case.error is None:
        assert outcome.error is None, repr(outcome.error)
        assert outcome.text == case.content
    else:
        assert type(outcome.error) is case.error, repr(outcome.error)
        if case.match is not None:
            assert case.match in str(outcome.error)
        if case.check is not None:
            case.check(outcome.error)
        if case.chunks is not None:
            assert len(outcome.chunks) == case.chunks
        # What a failed stream delivered stays on its error; `None` when nothing had come.
        partial = outcome.error.partial
        if outcome.chunks:
            assert partial is not None
            assert partial.text == outcome.accumulated == "".join(c.text for c in outcome.chunks)
        else:
            assert partial is None
    assert attempts == case.attempts
    assert len(retry_waits) == len(case.delays), retry_waits
    for wait, (low, high) in zip(retry_waits, case.delays, strict=True):
        assert low <= wait <= high, retry_waits
    assert follow_up.error is None, repr(follow_up.error)
    assert follow_up.text == ECHO


# --------------------------------------------------------------------------------------------
# On the wall clock
# --------------------------------------------------------------------------------------------


def test_retry_after_is_waited_for_real(
    facade: FacadeDriver, server: LocalServer, sleeps: SleepRecorder
) -> None:
    sleeps.real = True
    with no_leaks(facade):
        client = make_client(facade, server)
        server.enqueue(ErrorReply(429, headers={"retry-after": "1"}), Reply())
        outcome = call(client, stream=False)
        client.close()
    assert outcome.error is None, repr(outcome.error)
    assert outcome.text == ECHO
    assert len(server.requests) == 2
    assert sleeps.delays == [1.0]
    assert 1.0 <= outcome.elapsed < 1.0 + SLACK


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_retries_waits_and_the_body_share_one_total_deadline(
    facade: FacadeDriver, server: LocalServer, sleeps: SleepRecorder, stream: bool
) -> None:
    # Attempt 1 hears nothing for its 0.3 s read timeout; after a real backoff wait of
    # 0.375-0.5 s attempt 2 gets headers, then a body that never ends (a byte every 0.1 s,
    # each within the read timeout). The call must end at the 1 s total, not 1 s after the
    # stream started, and not whenever the body ends.
    sleeps.real = True
    timeout = Timeout(connect=2, read=0.3, total=1)
    with no_leaks(facade):
        client = make_client(facade, server, timeout=timeout)
        server.enqueue(
            Stall(5),
            Trickle(b": keep-alive\n\n" if stream else b" ", interval=0.1, repeat=True),
            Reply(),
        )
        outcome = call(client, stream=stream)
        client.close()
    assert type(outcome.error) is APITimeoutError, repr(outcome.error)
    assert len(server.requests) == 2
    assert len(sleeps.delays) == 1
    assert BACKOFF_1[0] <= sleeps.delays[0] <= BACKOFF_1[1]
    assert 1 - 0.05 <= outcome.elapsed < 1 + SLACK


# --------------------------------------------------------------------------------------------
# Leaving a stream early
# --------------------------------------------------------------------------------------------

LONG_REPLY = "word " * 400


@pytest.mark.parametrize("how", ["close", "drop"])
def test_early_break_then_new_calls_on_a_pool_of_one(
    facade: FacadeDriver, server: LocalServer, how: str
) -> None:
    """Leave a long stream after two chunks - closing it, or just dropping it - and the single
    pooled connection is free for the next calls at once."""
    with no_leaks(facade):
        client = make_client(facade, server)
        for opened in ("create", "stream"):
            server.enqueue(Reply(LONG_REPLY))
            messages = [{"role": "user", "content": PROMPT}]
            if opened == "create":
                stream = client.create(model=MODEL, messages=messages, stream=True)
            else:
                stream = client.stream(model=MODEL, messages=messages)
            first, second = stream.next(), stream.next()
            assert first is not None and second is not None
            assert second.text == "word "
            if how == "close":
                stream.close()
                assert stream.next() is None
            del stream, first, second

            started = time.monotonic()
            assert call(client, stream=False).text == ECHO
            assert call(client, stream=True).text == ECHO
            assert time.monotonic() - started < 1.0
        client.close()
    assert len(server.requests) == 6


# --------------------------------------------------------------------------------------------
# The default size limits
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bulk_server() -> Iterator[LocalServer]:
    """A server writing in large pieces (the shared one writes 7 bytes at a time)."""
    with LocalServer() as server:
        yield server


@pytest.mark.parametrize(
    ("stream", "limit", "name"),
    [(True, 16 * 2**20, "max_line_bytes"), (False, 64 * 2**20, "max_body_bytes")],
    ids=["sse-line-16MiB", "json-body-64MiB"],
)
def test_default_limits_stop_an_endless_answer(
    facade: FacadeDriver,
    bulk_server: LocalServer,
    sleeps: SleepRecorder,
    stream: bool,
    limit: int,
    name: str,
) -> None:
    bulk_server.clear()
    with no_leaks(facade):
        client = facade.client(base_url=bulk_server.base_url, timeout=Timeout(total=20))
        assert getattr(client.raw.config, name) == limit
        piece = b"x" * 2**20
        bulk_server.enqueue(Trickle(piece, size=len(piece), interval=0, repeat=True))
        outcome = call(client, stream=stream)
        client.close()
    assert type(outcome.error) is BodyTooLargeError, repr(outcome.error)
    assert name in str(outcome.error)
    assert len(outcome.error.raw_body) <= 1024
    assert len(bulk_server.requests) == 1


def test_chunks_read_together_with_an_in_stream_error_still_reach_the_caller(
    facade: FacadeDriver, bulk_server: LocalServer
) -> None:
    # One write, one read: the two chunks and the error event arrive together.
    bulk_server.clear()
    error = b'data: {"error": {"message": "slot unavailable"}}\n\n'
    bulk_server.enqueue(RawReply(body=b"".join(CUT_STREAM[:2]) + error, content_type=SSE))
    with no_leaks(facade):
        client = make_client(facade, bulk_server)
        outcome = call(client, stream=True)
        client.close()
    assert type(outcome.error) is APIStreamError, repr(outcome.error)
    assert outcome.accumulated == "Half an"
    assert [chunk.text for chunk in outcome.chunks] == ["", "Half an"]
