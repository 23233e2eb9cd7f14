"""The flow of one batch line: the client's own flow, paced by the run's `RateLimiter`. Pure.

`line_flow` wraps `chatlib._flow.request_flow` (retries per the client's policy, deadlines,
redirects) and yields the same commands (`Send`, `ReadBody`, `Sleep`), so any driver of
that flow drives this one (the runner uses `AsyncChat`'s). Around it:

* before every attempt, a turn booked with the limiter (a `Sleep` until it comes);
* every answer's `x-ratelimit-*` headers go to the limiter;
* a 429 pauses the whole run (`RateLimiter.rate_limit_hit`); it does not spend the request's
  retries: the request is sent again after the pause, as a new call, up to
  `max_rate_limit_waits` times; after that the client's policy decides as for any error.
  A 429 that no wait can cure (`insufficient_quota`, `x-should-retry: false`) goes to the
  client's policy at once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import attrs

from chatlib._flow import ERROR_BODY_LIMIT, Flow, ReadBody, Send, Sleep
from chatlib._headers import request_id_of
from chatlib._parse import parse_completion
from chatlib._retry import RetryPolicy
from chatlib.batch._limits import RateLimiter
from chatlib.errors import APIError, error_from_response
from chatlib.models import CreateChatCompletionResponse

__all__ = ["Answer", "Counters", "line_flow", "parse_answer"]

_T = TypeVar("_T")
_RETRYABLE = RetryPolicy()


@attrs.define
class Counters:
    """What the lines of a run add up to, beyond their results."""

    retries: int = 0


@attrs.frozen
class Answer:
    """A successful answer: its status, headers, the body as it came, and the completion."""

    status: int
    headers: Mapping[str, str]
    raw: bytes
    completion: CreateChatCompletionResponse

    @property
    def request_id(self) -> str | None:
        """The server's request id."""
        return request_id_of(self.headers)

    @property
    def total_tokens(self) -> int | None:
        """The answer's `usage.total_tokens`, when it has one."""
        usage = self.completion.usage
        return None if usage is None else usage.total_tokens


def parse_answer(status: int, headers: Mapping[str, str], raw: bytes) -> Answer:
    """A 2xx body, checked as `create()` checks it (malformed or error bodies raise)."""
    return Answer(status, headers, raw, parse_completion(status, headers, raw))


@attrs.frozen
class _ReadResponse:
    """An error response whose body this flow already read, handed on to the inner flow."""

    status_code: int
    headers: Mapping[str, str]
    body: bytes | APIError


def _wait_turn(limiter: RateLimiter, tokens: int, clock: Callable[[], float]) -> Flow[None]:
    """Sleep until the limiter gives this request a start (booked again if a 429 pause
    began while it waited)."""
    while True:
        now = clock()
        ticket = limiter.reserve(now, tokens)
        if ticket.start > now:
            yield Sleep(ticket.start - now)
            now = clock()
        if limiter.still_valid(ticket, now):
            return


def line_flow(
    start: Callable[[], Flow[_T]],
    limiter: RateLimiter,
    *,
    tokens: int,
    clock: Callable[[], float],
    wall_clock: Callable[[], float],
    rand: Callable[[], float],
    counters: Counters,
    max_rate_limit_waits: int,
) -> Flow[_T]:
    """The flow of one line: `start()` makes the client's flow of the call (again after a
    429 pause); `tokens` is the estimate booked per attempt. The clocks and `rand` are the
    caller's, so a test steps this by hand."""
    waits = 0
    while True:
        yield from _wait_turn(limiter, tokens, clock)
        inner = start()
        outcome: Any = None
        try:
            while True:
                try:
                    command = inner.send(outcome)
                except StopIteration as stop:
                    limiter.succeeded()
                    result: _T = stop.value
                    return result
                if isinstance(command, Send):
                    if command.attempt > 0:
                        counters.retries += 1
                    limiter.sent()
                    outcome = yield command
                    if isinstance(outcome, APIError):
                        limiter.answered(None, clock())
                        continue
                    limiter.answered(outcome.headers, clock())
                    if outcome.status_code != 429:
                        continue
                    body = yield ReadBody(outcome, ERROR_BODY_LIMIT)
                    limiter.rate_limit_hit(outcome.headers, clock(), wall_clock(), rand())
                    raw = body if isinstance(body, bytes) else b""
                    error = error_from_response(429, outcome.headers, raw)
                    if waits < max_rate_limit_waits and _RETRYABLE.is_retryable(
                        error, outcome.headers
                    ):
                        waits += 1
                        counters.retries += 1
                        break  # sent again, as a new call, once the pause is over
                    outcome = _ReadResponse(outcome.status_code, outcome.headers, body)
                elif isinstance(command, ReadBody) and isinstance(command.response, _ReadResponse):
                    outcome = command.response.body
                elif isinstance(command, Sleep):
                    outcome = yield command
                    yield from _wait_turn(limiter, tokens, clock)  # the retry's turn
                else:
                    outcome = yield command
        finally:
            inner.close()
