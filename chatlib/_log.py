"""Debug logging of chatlib's HTTP traffic, on the ``chatlib`` logger.

chatlib writes to one logger, ``logging.getLogger("chatlib")``, and only at ``DEBUG``; it adds
no handler of its own (just a :class:`logging.NullHandler`), so nothing is printed until you
configure logging::

    import logging

    logging.basicConfig()
    logging.getLogger("chatlib").setLevel(logging.DEBUG)

Each attempt of a call (the first try and every retry) produces:

* ``send`` - when the request goes out: method, URL, attempt number (0 for the first try),
  the headers with credentials (``Authorization``, ``api-key``, ...) shown as
  ``<redacted>``, and the body's size in bytes. Bodies are never logged: they may carry
  personal data.
* ``outcome`` - when the attempt is over: the HTTP status or the error's class, the
  elapsed milliseconds and the server's ``x-request-id``. For a stream this is when the
  response headers arrived.
* ``retry`` - when the client waits before the next attempt: the delay and the reason.

Every record also carries these values as attributes, for structured log handlers:
``chatlib_event`` (``"send"``, ``"outcome"`` or ``"retry"``), ``http_method``, ``http_url``,
``attempt``, and, where they apply, ``http_status``, ``error``, ``elapsed_ms``,
``request_id``, ``delay`` and ``reason``. The API key never appears in a record. When the
logger is not enabled for ``DEBUG`` none of this work is done.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING

from chatlib._headers import redact, safe_url

if TYPE_CHECKING:
    from chatlib._core import HttpRequest

__all__ = ["debug_enabled", "log_outcome", "log_retry", "log_send", "logger", "safe_url"]

logger = logging.getLogger("chatlib")
logger.addHandler(logging.NullHandler())


def debug_enabled() -> bool:
    """Whether the ``chatlib`` logger would emit a DEBUG record (cheap: cached by logging)."""
    return logger.isEnabledFor(logging.DEBUG)


def log_send(request: HttpRequest, attempt: int) -> None:
    """One record: ``request`` (attempt ``attempt``) is being sent."""
    url = safe_url(request.url)
    size = 0 if request.body is None else len(request.body)
    logger.debug(
        "send %s %s attempt=%d headers=%r body=%d bytes",
        request.method,
        url,
        attempt,
        redact(request.headers),
        size,
        extra={
            "chatlib_event": "send",
            "http_method": request.method,
            "http_url": url,
            "attempt": attempt,
        },
    )


def log_outcome(
    request: HttpRequest,
    attempt: int,
    elapsed: float,
    outcome: object,
    error: BaseException | None = None,
) -> None:
    """One record: attempt ``attempt`` ended after ``elapsed`` s with ``outcome`` (the
    transport's response, or the error it raised) and, if it failed, ``error``."""
    from chatlib._core import request_id_of

    url = safe_url(request.url)
    elapsed_ms = round(elapsed * 1000.0, 1)
    if error is None and isinstance(outcome, BaseException):
        error = outcome
    status = getattr(outcome, "status_code", None)
    headers: Mapping[str, str] = getattr(outcome, "headers", None) or {}
    request_id = request_id_of(headers)
    error_name = None if error is None else type(error).__name__
    shown = " ".join(str(part) for part in (status, error_name) if part is not None)
    logger.debug(
        "outcome %s %s attempt=%d -> %s in %.1f ms request_id=%s",
        request.method,
        url,
        attempt,
        shown,
        elapsed_ms,
        request_id,
        extra={
            "chatlib_event": "outcome",
            "http_method": request.method,
            "http_url": url,
            "attempt": attempt,
            "http_status": status,
            "error": error_name,
            "elapsed_ms": elapsed_ms,
            "request_id": request_id,
        },
    )


def log_retry(request: HttpRequest, attempt: int, delay: float, error: BaseException) -> None:
    """One record: attempt ``attempt`` failed with ``error``; the next comes in ``delay`` s."""
    url = safe_url(request.url)
    status = getattr(error, "status_code", None)
    reason = type(error).__name__ if status is None else f"{status} {type(error).__name__}"
    logger.debug(
        "retry %s %s in %.3f s after attempt=%d failed: %s",
        request.method,
        url,
        delay,
        attempt,
        reason,
        extra={
            "chatlib_event": "retry",
            "http_method": request.method,
            "http_url": url,
            "attempt": attempt,
            "delay": delay,
            "reason": reason,
        },
    )
