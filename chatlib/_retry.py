"""Retry policy as pure math: whether to retry, and how long to wait first.

No clock and no randomness of its own: the caller hands in `now` (for HTTP-date
`Retry-After`) and `rand` (a number in [0, 1) for jitter), so every decision is a
plain function of its inputs and can be tested as a table.
"""

from __future__ import annotations

import email.utils
from collections.abc import Mapping

import attrs

from chatlib._headers import header
from chatlib.errors import (
    APIConnectionError,
    APIError,
    APIStatusError,
    BodyTooLargeError,
    ClientClosedError,
    InsufficientQuotaError,
)

__all__ = ["RetryPolicy", "retry_policy"]

_RETRY_STATUSES = frozenset({408, 409, 429})


@attrs.frozen
class RetryPolicy:
    """Which failures are retried and how long to wait between attempts.

    Retried: 408, 409, 429 (except `insufficient_quota`), every 5xx, and connection
    failures or timeouts, all only before any part of the answer reached the caller.
    A server's `x-should-retry: true|false` overrides the status rule.

    Delay before retry number `n` (0-based): `retry-after-ms`, else `Retry-After`
    (seconds or an HTTP date) when it is between 0 and `max_retry_after`; else
    `min(initial_delay * 2**n, max_delay)` reduced by up to `jitter` (a fraction).
    """

    max_retries: int = 2
    initial_delay: float = 0.5
    max_delay: float = 8.0
    jitter: float = 0.25
    max_retry_after: float = 60.0

    def is_retryable(self, error: APIError, headers: Mapping[str, str]) -> bool:
        """Whether this failure may succeed if the same request is sent again."""
        if isinstance(error, (InsufficientQuotaError, BodyTooLargeError, ClientClosedError)):
            return False
        should = header(headers, "x-should-retry")
        if should == "true":
            return True
        if should == "false":
            return False
        if isinstance(error, APIConnectionError):
            return True
        if isinstance(error, APIStatusError):
            return error.status_code in _RETRY_STATUSES or error.status_code >= 500
        return False

    def delay(self, retry: int, headers: Mapping[str, str], *, now: float, rand: float) -> float:
        """Seconds to wait before retry number `retry` (0 for the first retry).

        `now` is the current Unix time (for an HTTP-date `Retry-After`); `rand` in [0, 1).
        """
        server = self._server_delay(headers, now)
        if server is not None:
            return server
        base = min(self.initial_delay * (2.0**retry), self.max_delay)
        return base * (1.0 - self.jitter * rand)

    def _server_delay(self, headers: Mapping[str, str], now: float) -> float | None:
        millis = header(headers, "retry-after-ms")
        if millis is not None:
            try:
                seconds = float(millis) / 1000.0
            except ValueError:
                seconds = -1.0
            if 0 <= seconds <= self.max_retry_after:
                return seconds
        after = header(headers, "retry-after")
        if after is None:
            return None
        try:
            seconds = float(after)
        except ValueError:
            parsed = email.utils.parsedate_tz(after)
            if parsed is None:
                return None
            try:
                seconds = email.utils.mktime_tz(parsed) - now
            except (ValueError, OverflowError):
                return None  # a date no clock can hold: fall back to backoff
        if 0 <= seconds <= self.max_retry_after:
            return seconds
        return None


# The default policies for the usual retry counts, made once: a policy is immutable, and a
# call would otherwise build its own.
_DEFAULT_POLICIES = tuple(RetryPolicy(max_retries=count) for count in range(11))


def retry_policy(max_retries: int) -> RetryPolicy:
    """The default policy with `max_retries` retries (a shared one for the usual counts)."""
    if max_retries.__class__ is int and 0 <= max_retries < len(_DEFAULT_POLICIES):
        return _DEFAULT_POLICIES[max_retries]
    return RetryPolicy(max_retries=max_retries)
