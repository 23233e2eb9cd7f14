"""The transport protocols, and a scripted fake transport for tests.

A transport moves bytes and nothing else. ``send`` returns once the status line and
headers are in; the body is read through the response's byte iterator. Every failure is
raised as :class:`chatlib.errors.APIConnectionError` (or its subclass
:class:`chatlib.errors.APITimeoutError`), never as the HTTP library's own exception.

Plugging in another HTTP library is a class with a ``send`` method (sync or async) whose
response has ``status_code``, ``headers``, a byte iterator and a close method: see
``docs/transports.md``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from typing import Protocol, Union, runtime_checkable

import attrs

from chatlib._core import HttpRequest
from chatlib.errors import APIConnectionError

__all__ = [
    "AsyncResponse",
    "AsyncTransport",
    "FakeResponse",
    "FakeTransport",
    "SyncResponse",
    "SyncTransport",
]


@runtime_checkable
class SyncResponse(Protocol):
    """An HTTP response whose body has not been read yet (blocking I/O)."""

    status_code: int
    headers: Mapping[str, str]

    def iter_bytes(self) -> Iterator[bytes]:
        """The body, in pieces as they arrive."""
        ...

    def close(self) -> None:
        """Release the connection (back to the pool if the body was read to its end)."""
        ...


@runtime_checkable
class SyncTransport(Protocol):
    """Sends one request and returns the response once its headers have arrived."""

    def send(self, request: HttpRequest) -> SyncResponse:
        """Send ``request``; raise APIConnectionError/APITimeoutError on failure."""
        ...

    def close(self) -> None:
        """Close every pooled connection."""
        ...


@runtime_checkable
class AsyncResponse(Protocol):
    """An HTTP response whose body has not been read yet (asyncio)."""

    status_code: int
    headers: Mapping[str, str]

    def aiter_bytes(self) -> AsyncIterator[bytes]:
        """The body, in pieces as they arrive."""
        ...

    async def aclose(self) -> None:
        """Release the connection (back to the pool if the body was read to its end)."""
        ...


@runtime_checkable
class AsyncTransport(Protocol):
    """Sends one request and returns the response once its headers have arrived."""

    async def send(self, request: HttpRequest) -> AsyncResponse:
        """Send ``request``; raise APIConnectionError/APITimeoutError on failure."""
        ...

    async def aclose(self) -> None:
        """Close every pooled connection."""
        ...


# ---------------------------------------------------------------- the fake


@attrs.define
class FakeResponse:
    """A scripted response: status, headers, body pieces, and optionally a failure after them."""

    status_code: int = 200
    headers: Mapping[str, str] = attrs.field(factory=dict)
    pieces: Sequence[bytes] = ()
    fail_with: APIConnectionError | None = None
    closed: bool = False
    read_to_end: bool = False

    def iter_bytes(self) -> Iterator[bytes]:
        """The scripted pieces, then the scripted failure (if any)."""
        for piece in self.pieces:
            if self.closed:
                return
            yield piece
        if self.fail_with is not None:
            raise self.fail_with
        self.read_to_end = True

    def close(self) -> None:
        """Mark closed."""
        self.closed = True

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        """The async face of :meth:`iter_bytes`."""
        for piece in self.iter_bytes():
            yield piece

    async def aclose(self) -> None:
        """The async face of :meth:`close`."""
        self.close()


FakeOutcome = Union[FakeResponse, APIConnectionError]


class FakeTransport:
    """Answers requests from a script, for both ``SyncChat`` and ``AsyncChat``.

    Each ``send`` takes the next scripted :class:`FakeResponse` (or raises the next
    scripted ``APIConnectionError``) and records the request in :attr:`requests`.
    """

    def __init__(self, *outcomes: FakeOutcome) -> None:
        self.script: list[FakeOutcome] = list(outcomes)
        self.requests: list[HttpRequest] = []
        self.responses: list[FakeResponse] = []
        self.closed = False

    def add(self, *outcomes: FakeOutcome) -> None:
        """Append to the script."""
        self.script.extend(outcomes)

    def send(self, request: HttpRequest) -> FakeResponse:
        """Record ``request`` and play the next scripted outcome."""
        self.requests.append(request)
        if not self.script:
            raise AssertionError(f"FakeTransport: no scripted answer left for {request!r}")
        outcome = self.script.pop(0)
        if isinstance(outcome, APIConnectionError):
            raise outcome
        self.responses.append(outcome)
        return outcome

    def close(self) -> None:
        """Mark closed."""
        self.closed = True

    @property
    def open_responses(self) -> list[FakeResponse]:
        """Responses handed out and not closed yet (a leak, once a call has returned)."""
        return [r for r in self.responses if not r.closed]

    def as_async(self) -> AsyncFakeTransport:
        """The same script behind the async transport protocol."""
        return AsyncFakeTransport(self)


class AsyncFakeTransport:
    """The async face of a :class:`FakeTransport` (same script, same records)."""

    def __init__(self, fake: FakeTransport) -> None:
        self.fake = fake

    async def send(self, request: HttpRequest) -> FakeResponse:
        """Record ``request`` and play the next scripted outcome."""
        return self.fake.send(request)

    async def aclose(self) -> None:
        """Mark closed."""
        self.fake.close()
