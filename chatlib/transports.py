"""The transport seam, public: what a custom transport implements, and fakes for unit tests.

A transport moves bytes; chatlib's core decides everything else (see the transports page).
``SyncChat(transport=...)`` takes a :class:`SyncTransport`, ``AsyncChat(transport=...)`` an
:class:`AsyncTransport`; each ``send`` gets an :class:`HttpRequest` (``repr`` hides the key).
"""

from __future__ import annotations

from chatlib._core import HttpRequest
from chatlib._transport import (
    AsyncResponse,
    AsyncTransport,
    FakeResponse,
    FakeTransport,
    SyncResponse,
    SyncTransport,
)

__all__ = [
    "AsyncResponse",
    "AsyncTransport",
    "FakeResponse",
    "FakeTransport",
    "HttpRequest",
    "SyncResponse",
    "SyncTransport",
]
