"""Rate limits as math over a clock the caller hands in. Pure: no sleeping, no I/O.

`RateLimiter` decides when the next request may be sent, from three sources:

* **Token buckets** for requests and tokens per minute (the limits you give), kept as
  theoretical arrival times (GCRA): each request pushes the next allowed start back by
  `60 / requests_per_minute` seconds and by `tokens * 60 / tokens_per_minute` seconds. No
  burst: any 60-second window holds at most the limit (plus the one request that opens
  it), and the requests are spread evenly, which is what servers like.
* **A global pause** after a 429: every request waits for the server's `retry-after-ms` /
  `Retry-After` (else an exponential back-off of its own), not only the one that got it.
* **The server's own figures**: `x-ratelimit-remaining-requests/-tokens` and
  `x-ratelimit-reset-requests/-tokens` (OpenAI, Azure, Groq...). When the remaining budget
  is spent, requests wait until it resets.

`reserve(now, tokens)` books a start time and returns how long to wait for it; after the
wait, `still_valid(ticket, now)` says whether a 429 pause began meanwhile (then book again).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from chatlib._metadata import RateLimits
from chatlib._retry import RetryPolicy

__all__ = ["RateLimiter", "Ticket", "estimate_tokens"]

# The pause after a 429 that names no wait: 1 s, 2 s, 4 s... up to a minute. A wait the
# server names is honoured up to 10 minutes.
_PAUSE_POLICY = RetryPolicy(initial_delay=1.0, max_delay=60.0, jitter=0.25, max_retry_after=600.0)
# The same bound for an `x-ratelimit-reset-*` figure: a server saying "99999999s" would
# otherwise hold the whole run for years.
_MAX_RESET = 600.0

# ---------------------------------------------------------------- token estimates

_CHARS_PER_TOKEN = 4
_TOKENS_PER_MESSAGE = 4
_TOKENS_PER_IMAGE = 85


def _text_tokens(value: Any) -> int:
    if isinstance(value, str):
        return -(-len(value) // _CHARS_PER_TOKEN)
    if isinstance(value, list):
        total = 0
        for part in value:
            if isinstance(part, Mapping):
                if isinstance(part.get("text"), str):
                    total += _text_tokens(part["text"])
                elif part.get("type") in ("image_url", "input_image"):
                    total += _TOKENS_PER_IMAGE
        return total
    return 0


def estimate_tokens(body: Mapping[str, Any]) -> int:
    """Tokens a request may use, before sending it: about one per 4 characters of the
    messages (and tools), plus `max_completion_tokens`/`max_tokens` for each of the `n`
    choices. Corrected by the answer's `usage` once it is in."""
    total = 0
    for message in body.get("messages") or ():
        if isinstance(message, Mapping):
            total += _TOKENS_PER_MESSAGE + _text_tokens(message.get("content"))
    tools = body.get("tools")
    if tools:
        total += _text_tokens(repr(tools))
    limit = body.get("max_completion_tokens") or body.get("max_tokens") or 0
    choices = body.get("n") or 1
    if isinstance(limit, int) and isinstance(choices, int):
        total += limit * max(choices, 1)
    return total


# ---------------------------------------------------------------- the limiter


@attrs.frozen
class Ticket:
    """A booked start: when, under which pause epoch, and the tokens it booked."""

    start: float
    epoch: int
    tokens: int


@attrs.define
class RateLimiter:
    """When the next request may go, for every request of a run (see the module docstring).

    All times are seconds on the caller's monotonic clock.

    Attributes:
        requests_per_minute: The request limit (`None`: none).
        tokens_per_minute: The token limit (`None`: none).
        paused_until: No request starts before this (a 429 pause).
        rate_limited: How many 429 answers were seen.
        in_flight: Requests sent and not answered yet.
    """

    requests_per_minute: float | None = None
    tokens_per_minute: float | None = None
    paused_until: float = 0.0
    rate_limited: int = 0
    in_flight: int = 0
    _epoch: int = 0
    _request_tat: float = 0.0
    _token_tat: float = 0.0
    _streak: int = 0  # 429s since the last success
    _request_budget: int | None = None
    _request_reset_at: float = 0.0
    _token_budget: int | None = None
    _token_reset_at: float = 0.0

    def __attrs_post_init__(self) -> None:
        for name in ("requests_per_minute", "tokens_per_minute"):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0
            ):
                from chatlib.errors import InvalidArgumentError

                raise InvalidArgumentError(name, f"must be a positive number, got {value!r}")

    def free(self, now: float) -> bool:
        """Whether a request may go at `now` without booking anything: no limit set, no
        pause on, no server budget known (the common case without limits: nothing to do)."""
        return (
            self.requests_per_minute is None
            and self.tokens_per_minute is None
            and self._request_budget is None
            and self._token_budget is None
            and now >= self.paused_until
        )

    @property
    def counts_tokens(self) -> bool:
        """Whether token estimates matter: a token limit, or a server's token budget."""
        return self.tokens_per_minute is not None or self._token_budget is not None

    def reserve(self, now: float, tokens: int = 0) -> Ticket:
        """Book the earliest start for a request of `tokens` tokens; wait until
        `ticket.start` before sending it."""
        start = max(now, self.paused_until)
        if self._request_budget is not None:
            if now >= self._request_reset_at:
                self._request_budget = None
            elif self._request_budget <= 0:
                start = max(start, self._request_reset_at)
            else:
                self._request_budget -= 1
        if self._token_budget is not None:
            if now >= self._token_reset_at:
                self._token_budget = None
            elif self._token_budget < tokens:
                start = max(start, self._token_reset_at)
            else:
                self._token_budget -= tokens
        if self.requests_per_minute is not None:
            start = max(start, self._request_tat)
        if self.tokens_per_minute is not None:
            start = max(start, self._token_tat)
        if self.requests_per_minute is not None:
            self._request_tat = start + 60.0 / self.requests_per_minute
        if self.tokens_per_minute is not None:
            self._token_tat = start + self._capped(tokens) * 60.0 / self.tokens_per_minute
        return Ticket(start, self._epoch, tokens)

    def _capped(self, tokens: int) -> float:
        """`tokens`, at most one minute's budget: a request that claims more (a huge
        `max_tokens`, a server's absurd `usage`) holds the run for a minute at most, not
        for as long as its figure says (years, for `max_tokens: 10**12`)."""
        limit = self.tokens_per_minute
        return tokens if limit is None else max(min(tokens, limit), -limit)

    def still_valid(self, ticket: Ticket, now: float) -> bool:
        """Whether a request booked with `ticket` may go at `now`: `False` when a 429 pause
        began after the booking and is still on (book again)."""
        return ticket.epoch == self._epoch or now >= self.paused_until

    def sent(self) -> None:
        """A request went out."""
        self.in_flight += 1

    def answered(self, headers: Mapping[str, str] | None, now: float) -> None:
        """A request came back (`headers` is `None` when no response arrived): take the
        server's remaining budgets into account."""
        self.in_flight = max(self.in_flight - 1, 0)
        if not headers:
            return
        limits = RateLimits.from_headers(headers)
        # The server counted up to this request; those still in flight come off its figure.
        if limits.remaining_requests is not None and limits.reset_requests is not None:
            self._request_budget = limits.remaining_requests - self.in_flight
            self._request_reset_at = now + min(limits.reset_requests, _MAX_RESET)
        if limits.remaining_tokens is not None and limits.reset_tokens is not None:
            self._token_budget = limits.remaining_tokens
            self._token_reset_at = now + min(limits.reset_tokens, _MAX_RESET)

    def succeeded(self) -> None:
        """A request got its answer: the 429 back-off starts over."""
        self._streak = 0

    def rate_limit_hit(
        self, headers: Mapping[str, str], now: float, wall_clock: float, rand: float
    ) -> float:
        """A 429 came back: pause every request; returns the pause in seconds.

        The pause is the server's `retry-after-ms`/`Retry-After` when it names one, else
        its `x-ratelimit-reset-*` when a budget is spent, else 1 s, 2 s, 4 s... (to 60 s)
        for 429s in a row, jittered by `rand` in [0, 1).
        """
        self.rate_limited += 1
        delay = _PAUSE_POLICY._server_delay(headers, wall_clock)
        if delay is None:
            limits = RateLimits.from_headers(headers)
            resets = [
                reset
                for remaining, reset in (
                    (limits.remaining_requests, limits.reset_requests),
                    (limits.remaining_tokens, limits.reset_tokens),
                )
                if remaining == 0 and reset is not None
            ]
            delay = min(max(resets), _MAX_RESET) if resets else None
        if delay is None:
            delay = _PAUSE_POLICY.delay(self._streak, {}, now=wall_clock, rand=rand)
        self._streak += 1
        until = now + delay
        if until > self.paused_until:
            self.paused_until = until
            self._epoch += 1
        # Requests resume spread out at the limits' pace, not all at once.
        self._request_tat = max(self._request_tat, self.paused_until)
        self._token_tat = max(self._token_tat, self.paused_until)
        return delay

    def settle(self, estimated: int, actual: int) -> None:
        """A request used `actual` tokens where `estimated` were booked: move the token
        bucket by the difference."""
        if self.tokens_per_minute is not None and actual != estimated:
            moved = self._capped(actual) - self._capped(estimated)
            self._token_tat += moved * 60.0 / self.tokens_per_minute
