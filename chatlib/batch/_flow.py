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

import json
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import attrs

from chatlib._flow import ERROR_BODY_LIMIT, Flow, ReadBody, Send, Sleep
from chatlib._headers import request_id_of
from chatlib._parse import _is_error_object as is_error_object
from chatlib._retry import RetryPolicy
from chatlib.batch._limits import RateLimiter
from chatlib.errors import (
    APIError,
    APIResponseValidationError,
    error_from_response,
    error_from_stream_payload,
)

__all__ = ["Answer", "Counters", "line_flow", "parse_answer"]

_T = TypeVar("_T")
_RETRYABLE = RetryPolicy()


@attrs.define
class Counters:
    """What the lines of a run add up to, beyond their results."""

    retries: int = 0


class Answer:
    """A successful answer: its status, headers, the body as it came, and that body parsed."""

    __slots__ = ("data", "headers", "raw", "status")

    def __init__(
        self, status: int, headers: Mapping[str, str], raw: bytes, data: dict[str, Any]
    ) -> None:
        self.status = status
        self.headers = headers
        self.raw = raw
        self.data = data

    @property
    def request_id(self) -> str | None:
        """The server's request id."""
        return request_id_of(self.headers)

    def usage(self) -> tuple[int, int, int]:
        """The answer's `usage` as (prompt, completion, total) tokens; zeros when absent."""
        usage = self.data.get("usage")
        if not isinstance(usage, dict):
            return 0, 0, 0
        prompt, completion, total = (
            usage.get("prompt_tokens"),
            usage.get("completion_tokens"),
            usage.get("total_tokens"),
        )
        prompt = prompt if isinstance(prompt, int) else 0
        completion = completion if isinstance(completion, int) else 0
        return prompt, completion, total if isinstance(total, int) else prompt + completion


def parse_answer(status: int, headers: Mapping[str, str], raw: bytes) -> Answer:
    """A 2xx body, checked: JSON, an object with a `choices` list, not an error object (an
    error answered with 200 raises the error it describes); malformed bodies raise
    `APIResponseValidationError` with the raw body kept.

    The body is written to the output as it came, so it is not built into a typed model
    here (`BatchResult.response` does that when it is read back).
    """
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise APIResponseValidationError(
            f"the server's answer is not valid JSON ({exc}); raw body kept in .raw_body",
            status_code=status,
            raw_body=raw,
            request_id=request_id_of(headers),
        ) from None
    if data.__class__ is not dict or not isinstance(data.get("choices"), list):
        if isinstance(data, dict) and is_error_object(data):
            raise error_from_stream_payload(
                data, raw, request_id=request_id_of(headers), where="error body with status 200"
            )
        shape = "no choices list" if isinstance(data, dict) else type(data).__name__
        raise APIResponseValidationError(
            f"the answer does not have the shape of a chat completion ({shape})",
            status_code=status,
            raw_body=raw,
            body=data,
            request_id=request_id_of(headers),
        )
    return Answer(status, headers, raw, data)


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
        if limiter.free(now):
            return
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
