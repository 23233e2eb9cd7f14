"""A scripted fake transport, for unit tests of either facade without a network.

`FakeTransport` answers each `send` with the next scripted `FakeResponse` (or raises the next
scripted `APIConnectionError`) and records every request; `as_async()` puts the same script
behind the async protocol, so one test body can drive `SyncChat` and `AsyncChat` alike.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from typing import Union

import attrs

from chatlib._request import HttpRequest
from chatlib.errors import APIConnectionError

__all__ = ["AsyncFakeTransport", "FakeOutcome", "FakeResponse", "FakeTransport"]


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
        """The async face of `iter_bytes`."""
        for piece in self.iter_bytes():
            yield piece

    async def aclose(self) -> None:
        """The async face of `close`."""
        self.close()


FakeOutcome = Union[FakeResponse, APIConnectionError]


class FakeTransport:
    """Answers requests from a script, for both `SyncChat` and `AsyncChat`.

    Each `send` takes the next scripted `FakeResponse` (or raises the next
    scripted `APIConnectionError`) and records the request in `requests`.
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
        """Record `request` and play the next scripted outcome."""
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
    """The async face of a `FakeTransport` (same script, same records)."""

    def __init__(self, fake: FakeTransport) -> None:
        self.fake = fake

    async def send(self, request: HttpRequest) -> FakeResponse:
        """Record `request` and play the next scripted outcome."""
        return self.fake.send(request)

    async def aclose(self) -> None:
        """Mark closed."""
        self.fake.close()
