"""Logging of chatlib's HTTP traffic, on the `chatlib` logger.

chatlib writes to one logger, `logging.getLogger("chatlib")`; it adds no handler of its own
(just a `logging.NullHandler`), so nothing is printed until you configure logging, or set
`CHATLIB_LOG` (see `configure_from_environment`):

```python
import logging

logging.basicConfig()
logging.getLogger("chatlib").setLevel(logging.DEBUG)
```

Each attempt of a call (the first try and every retry) produces, at `DEBUG`:

* `send` - when the request goes out: method, URL (credentials scrubbed), attempt number (0
  for the first try), the headers with credentials (`Authorization`, `api-key`, ...) shown
  as `<redacted>`, and the body's size in bytes. Bodies are never logged: they may carry
  personal data.
* `outcome` - when the attempt is over: the HTTP status or the error's class, the
  elapsed milliseconds and the server's `x-request-id`. For a stream this is when the
  response headers arrived.

and, at `INFO`:

* `retry` - when the client waits before the next attempt: the delay and the reason.

Every record also carries these values as attributes, for structured log handlers:
`chatlib_event` (`"send"`, `"outcome"` or `"retry"`), `http_method`, `http_url`,
`attempt`, and, where they apply, `http_status`, `error`, `elapsed_ms`,
`request_id`, `delay` and `reason`. No credential appears in a record, and no text of
the server's (which may repeat one). When the logger is not enabled for a level, none of
that level's work is done.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from chatlib._headers import redact, request_id_of, safe_url

if TYPE_CHECKING:
    from chatlib._request import HttpRequest

__all__ = [
    "LOG_FORMAT",
    "CallLog",
    "configure_from_environment",
    "log_outcome",
    "log_retry",
    "log_send",
    "logger",
]

logger = logging.getLogger("chatlib")
logger.addHandler(logging.NullHandler())

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
"""The format of the handler `CHATLIB_LOG` attaches."""
_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING}
_configured = False


def configure_from_environment() -> None:
    """Honour `CHATLIB_LOG` (else `OPENAI_LOG`): `debug`, `info` or `warning`.

    Done once per process, when the first client is built: the `chatlib` logger gets that
    level (unless the application gave it one) and a `stderr` handler, unless the
    application has configured handlers already (on that logger or the root logger: they
    print the records instead). An unknown value is reported once, as a `RuntimeWarning`,
    and ignored.
    """
    global _configured
    if _configured:
        return
    _configured = True
    name = "CHATLIB_LOG" if "CHATLIB_LOG" in os.environ else "OPENAI_LOG"
    value = os.environ.get(name, "").strip()
    if not value:
        return
    level = _LEVELS.get(value.lower())
    if level is None:
        warnings.warn(
            f"{name}={value!r} is not one of debug, info, warning: chatlib's logging is left "
            "as it is",
            RuntimeWarning,
            stacklevel=4,
        )
        return
    if logger.level == logging.NOTSET:
        logger.setLevel(level)  # a level the application set itself is kept
    root = logging.getLogger()
    if any(not isinstance(h, logging.NullHandler) for h in (*logger.handlers, *root.handlers)):
        return  # the application's handlers print the records: no second copy
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    logger.addHandler(handler)


class CallLog:
    """The records of one call's attempts, timed with the call's own clock.

    Whether the logger is enabled for `DEBUG` (and for `INFO`) is decided once, when the
    call starts; when it is not, each event costs one method call and formats nothing.
    """

    __slots__ = ("_clock", "_info", "_on", "_started")

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._on = logger.isEnabledFor(logging.DEBUG)
        self._info = self._on or logger.isEnabledFor(logging.INFO)
        self._started = 0.0

    def send(self, request: HttpRequest, attempt: int) -> None:
        """Attempt `attempt` of `request` is going out."""
        if self._on:
            log_send(request, attempt)
            self._started = self._clock()

    def outcome(
        self,
        request: HttpRequest,
        attempt: int,
        status: int | None,
        headers: Mapping[str, str],
        error: BaseException | None,
    ) -> None:
        """Attempt `attempt` ended: with an HTTP `status`, or with `error`, or both."""
        if self._on:
            elapsed = self._clock() - self._started
            log_outcome(request, attempt, elapsed, status, headers, error)

    def retry(self, request: HttpRequest, attempt: int, delay: float, error: BaseException) -> None:
        """Attempt `attempt` failed with `error`; the next one comes in `delay` seconds."""
        if self._info:
            log_retry(request, attempt, delay, error)


def log_send(request: HttpRequest, attempt: int) -> None:
    """One record: `request` (attempt `attempt`) is being sent."""
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
    status: int | None,
    headers: Mapping[str, str],
    error: BaseException | None,
) -> None:
    """One record: attempt `attempt` ended after `elapsed` s with `status` and/or `error`."""
    url = safe_url(request.url)
    elapsed_ms = round(elapsed * 1000.0, 1)
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
    """One record: attempt `attempt` failed with `error`; the next comes in `delay` s."""
    url = safe_url(request.url)
    status = getattr(error, "status_code", None)
    reason = type(error).__name__ if status is None else f"{status} {type(error).__name__}"
    logger.info(
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
