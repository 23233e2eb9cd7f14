"""Response metadata: the rate-limit figures a server sends in its headers. Pure.

OpenAI (and Groq, Azure, OpenRouter... when they send them) reports its limits in
`x-ratelimit-{limit,remaining,reset}-{requests,tokens}`; the resets are durations written
like Go's (`"6m0s"`, `"1.5s"`, `"250ms"`, `"1h2m3.5s"`) or plain seconds (`"20"`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

import attrs

__all__ = ["RateLimits", "parse_duration"]

_UNIT_SECONDS = {
    "h": 3600.0,
    "m": 60.0,
    "s": 1.0,
    "ms": 1e-3,
    "us": 1e-6,
    "\u00b5s": 1e-6,  # micro sign
    "\u03bcs": 1e-6,  # Greek mu
    "ns": 1e-9,
}
_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)"
_PART = re.compile(rf"({_NUMBER})(h|ms|m|s|us|\u00b5s|\u03bcs|ns)")
_DURATION = re.compile(rf"(?:{_NUMBER}(?:h|ms|m|s|us|\u00b5s|\u03bcs|ns))+")
_PLAIN = re.compile(_NUMBER)
_PREFIX = "x-ratelimit-"


def parse_duration(text: str | None) -> float | None:
    """Seconds in a reset duration (`"6m0s"` -> 360.0, `"250ms"` -> 0.25, `"1.5"` -> 1.5);
    `None` for a missing or unreadable one."""
    if text is None:
        return None
    text = text.strip()
    if _PLAIN.fullmatch(text):
        seconds = float(text)
    elif _DURATION.fullmatch(text):
        seconds = sum(float(n) * _UNIT_SECONDS[unit] for n, unit in _PART.findall(text))
    else:
        return None
    return seconds if math.isfinite(seconds) else None


def _count(text: str | None) -> int | None:
    if text is None:
        return None
    text = text.strip()
    if text.isdigit():
        return int(text)
    try:
        value = float(text)
    except ValueError:
        return None
    return int(value) if math.isfinite(value) and value >= 0 and value.is_integer() else None


@attrs.frozen
class RateLimits:
    """The rate-limit figures of one response (`None` for each one the server did not send).

    Attributes:
        limit_requests: Requests allowed per window (`x-ratelimit-limit-requests`).
        limit_tokens: Tokens allowed per window (`x-ratelimit-limit-tokens`).
        remaining_requests: Requests left in this window (`x-ratelimit-remaining-requests`).
        remaining_tokens: Tokens left in this window (`x-ratelimit-remaining-tokens`).
        reset_requests: Seconds until the request limit resets (`x-ratelimit-reset-requests`,
            e.g. `"6m0s"` -> `360.0`).
        reset_tokens: Seconds until the token limit resets (`x-ratelimit-reset-tokens`).
    """

    limit_requests: int | None = None
    limit_tokens: int | None = None
    remaining_requests: int | None = None
    remaining_tokens: int | None = None
    reset_requests: float | None = None
    reset_tokens: float | None = None

    @classmethod
    def from_headers(cls, headers: Mapping[str, str]) -> RateLimits:
        """Read the `x-ratelimit-*` headers (any case)."""
        # One pass over the headers (most servers send none of these), keeping the first
        # value of each name, as a case-insensitive lookup would.
        found: dict[str, str] = {}
        for name, text in headers.items():
            if name[:12].lower() == _PREFIX:
                found.setdefault(name.lower(), text)
        if not found:
            return _NONE
        return cls(
            limit_requests=_count(found.get("x-ratelimit-limit-requests")),
            limit_tokens=_count(found.get("x-ratelimit-limit-tokens")),
            remaining_requests=_count(found.get("x-ratelimit-remaining-requests")),
            remaining_tokens=_count(found.get("x-ratelimit-remaining-tokens")),
            reset_requests=parse_duration(found.get("x-ratelimit-reset-requests")),
            reset_tokens=parse_duration(found.get("x-ratelimit-reset-tokens")),
        )

    def __bool__(self) -> bool:
        """Whether the server sent any of the figures."""
        return any(value is not None for value in attrs.astuple(self))


_NONE = RateLimits()
