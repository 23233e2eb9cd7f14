"""The transport seam, public: what a custom transport implements, and fakes for unit tests.

A transport moves bytes; chatlib's core decides everything else (see the transports page).
`SyncChat(transport=...)` takes a `SyncTransport`, `AsyncChat(transport=...)` an `AsyncTransport`;
each `send` gets an `HttpRequest` (`repr` hides the key).
"""

from __future__ import annotations

from chatlib._request import HttpRequest
from chatlib._transports.base import AsyncResponse, AsyncTransport, SyncResponse, SyncTransport
from chatlib._transports.fake import FakeResponse, FakeTransport

__all__ = [
    "AsyncResponse",
    "AsyncTransport",
    "FakeResponse",
    "FakeTransport",
    "HttpRequest",
    "SyncResponse",
    "SyncTransport",
]
