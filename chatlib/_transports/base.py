"""The transport protocols, and the errors every transport raises, worded once.

A transport moves bytes and nothing else. `send` returns once the status line and
headers are in; the body is read through the response's byte iterator. Every failure is
raised as `chatlib.errors.APIConnectionError` (or its subclass
`chatlib.errors.APITimeoutError`), never as the HTTP library's own exception.

Plugging in another HTTP library is a class with a `send` method (sync or async) whose
response has `status_code`, `headers`, a byte iterator and a close method: see
`docs/transports.md`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Protocol, runtime_checkable

from chatlib._headers import safe_url, scrub
from chatlib._request import HttpRequest
from chatlib.errors import APIConnectionError, APITimeoutError, ClientClosedError

__all__ = [
    "AsyncResponse",
    "AsyncTransport",
    "SyncResponse",
    "SyncTransport",
    "aread_whole",
    "client_closed",
    "cut_by_close",
    "read_whole",
    "transport_error",
]


def client_closed() -> ClientClosedError:
    """The error of a call on a client that was closed, worded once for both transports."""
    return ClientClosedError(
        "this client is closed (close()/aclose(), or the end of its `with` block), and its "
        "connection pool with it: make a new client"
    )


def cut_by_close(url: str) -> ClientClosedError:
    """The error of a call in flight (waiting for its answer, reading a stream) when its
    client was closed, worded once for both transports."""
    return ClientClosedError(
        "Connection error: the client was closed while this call was in flight",
        request_url=safe_url(url),
    )


def transport_error(
    exc: BaseException, url: str, *, timed_out: bool, detail: str | None = None
) -> APIConnectionError:
    """The chatlib error for an HTTP library's failure while talking to `url`.

    Worded the same for every transport (`Request timed out: ...` or `Connection error:
    ...`, naming the library's exception, or saying `detail` instead of its text), with
    the URL's secrets scrubbed from the text.
    """
    text = str(exc) if detail is None else detail
    described = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    if timed_out:
        return APITimeoutError(
            scrub(f"Request timed out: {described}", url), request_url=safe_url(url)
        )
    return APIConnectionError(
        scrub(f"Connection error: {described}", url), request_url=safe_url(url)
    )


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
        """Send `request`; raise APIConnectionError/APITimeoutError on failure."""
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
        """Send `request`; raise APIConnectionError/APITimeoutError on failure."""
        ...

    async def aclose(self) -> None:
        """Close every pooled connection."""
        ...


def read_whole(response: SyncResponse, limit: int) -> bytes | None:
    """The whole body in one read, when the response offers one (an optional
    `read_body(limit)` method returning the bytes, or `None` when it cannot tell that the
    body fits in `limit`), else `None`: the caller reads `iter_bytes()`."""
    read = getattr(response, "read_body", None)
    return None if read is None else read(limit)


async def aread_whole(response: AsyncResponse, limit: int) -> bytes | None:
    """`read_whole` for an asyncio response: its optional `aread_body(limit)`, awaited."""
    read = getattr(response, "aread_body", None)
    return None if read is None else await read(limit)
