"""Rate limits as math (the limiter over a hand-held clock), the line flow stepped by hand,
and the progress text. Pure code, no network, no sleeping."""

from __future__ import annotations

import json
from typing import Any

import pytest

from chatlib import RateLimitError
from chatlib._call import Call
from chatlib._config import ClientConfig
from chatlib._flow import ReadBody, Send, Sleep, parse_body
from chatlib._metadata import RateLimits
from chatlib._metadata import parse_duration as parse_reset
from chatlib._request import build_request
from chatlib.batch import RateLimiter
from chatlib.batch._flow import Counters, line_flow, parse_answer
from chatlib.batch._limits import estimate_tokens
from chatlib.batch._progress import ProgressMeter, format_duration, progress_line
from chatlib.errors import APIConnectionError, InsufficientQuotaError, InvalidArgumentError
from chatlib.models import CreateChatCompletionRequest
from chatlib.transports import FakeResponse

# ---------------------------------------------------------------- headers


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("6m0s", 360.0),
        ("1s", 1.0),
        ("1.5s", 1.5),
        ("250ms", 0.25),
        ("1h2m3s", 3723.0),
        ("20ms", 0.02),
        ("0s", 0.0),
        ("12", 12.0),
        ("0.5", 0.5),
        ("soon", None),
        ("5x", None),
        ("-1", None),
        ("", None),
        (None, None),
    ],
)
def test_reset_durations(text: str | None, seconds: float | None) -> None:
    assert parse_reset(text) == (pytest.approx(seconds) if seconds is not None else None)


def test_rate_limit_headers_are_read_case_insensitively() -> None:
    limits = RateLimits.from_headers(
        {
            "X-RateLimit-Limit-Requests": "10000",
            "x-ratelimit-remaining-requests": "9999",
            "x-ratelimit-reset-requests": "6ms",
            "x-ratelimit-limit-tokens": "2000000",
            "x-ratelimit-remaining-tokens": "1999000",
            "x-ratelimit-reset-tokens": "30ms",
        }
    )
    assert (limits.limit_requests, limits.remaining_requests) == (10000, 9999)
    assert limits.reset_requests == pytest.approx(0.006)
    assert (limits.limit_tokens, limits.remaining_tokens) == (2_000_000, 1_999_000)
    assert (
        RateLimits.from_headers({"x-ratelimit-remaining-requests": "lots"}).remaining_requests
        is None
    )


def test_token_estimates_count_text_and_the_answer_budget() -> None:
    short = {"model": "m", "messages": [{"role": "user", "content": "x" * 40}]}
    assert estimate_tokens(short) == 4 + 10
    assert estimate_tokens({**short, "max_tokens": 100}) == 114
    assert estimate_tokens({**short, "max_completion_tokens": 50, "n": 3}) == 164
    parts = {
        "model": "m",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "y" * 8},
                    {"type": "image_url", "image_url": {"url": "u"}},
                ],
            }
        ],
    }
    assert estimate_tokens(parts) == 4 + 2 + 85


# ---------------------------------------------------------------- the limiter


def test_requests_per_minute_are_spread_evenly() -> None:
    limiter = RateLimiter(requests_per_minute=600)  # one per 0.1 s
    starts = [limiter.reserve(5.0).start for _ in range(5)]
    assert starts == pytest.approx([5.0, 5.1, 5.2, 5.3, 5.4])
    assert limiter.reserve(10.0).start == 10.0  # idle time is not banked: no burst
    assert limiter.reserve(10.0).start == pytest.approx(10.1)


def test_any_minute_holds_at_most_the_limit() -> None:
    limiter = RateLimiter(requests_per_minute=120)
    starts = [limiter.reserve(0.0).start for _ in range(600)]
    for i, start in enumerate(starts):
        in_window = sum(1 for s in starts[i:] if s < start + 60.0)
        assert in_window <= 120


def test_tokens_per_minute_delay_the_next_request_and_usage_corrects_them() -> None:
    limiter = RateLimiter(tokens_per_minute=6000)  # 100 tokens a second
    assert limiter.reserve(0.0, 200).start == 0.0
    assert limiter.reserve(0.0, 100).start == pytest.approx(2.0)
    limiter.settle(estimated=100, actual=300)  # used more than booked: the next waits longer
    assert limiter.reserve(0.0, 0).start == pytest.approx(5.0)
    limiter.settle(estimated=0, actual=0)


def test_one_request_holds_the_token_bucket_a_minute_at_most() -> None:
    # One line with `max_tokens: 10**12` held every later request for 60 million seconds;
    # a server's absurd `usage` did the same.
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 10**12}
    limiter = RateLimiter(tokens_per_minute=1_000_000)
    assert limiter.reserve(0.0, estimate_tokens(body)).start == 0.0
    assert limiter.reserve(0.0, 10).start == pytest.approx(60.0)
    limiter = RateLimiter(tokens_per_minute=6000)
    limiter.reserve(0.0, 100)
    limiter.settle(estimated=100, actual=10**15)
    assert limiter.reserve(0.0, 0).start == pytest.approx(60.0)
    limiter.settle(estimated=10**12, actual=10)  # nor does it hand out years of credit
    assert limiter.reserve(60.0, 6000).start == pytest.approx(60.0)
    assert limiter.reserve(60.0, 0).start == pytest.approx(120.0)


def test_a_servers_reset_figure_holds_the_run_ten_minutes_at_most() -> None:
    # "reset in 99999999s" held every request for three years.
    spent = {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "99999999s"}
    limiter = RateLimiter()
    limiter.answered(spent, 0.0)
    assert limiter.reserve(0.0).start == pytest.approx(600.0)
    tokens = {"x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "9999h"}
    limiter = RateLimiter()
    limiter.answered(tokens, 0.0)
    assert limiter.reserve(0.0, 5).start == pytest.approx(600.0)
    assert RateLimiter().rate_limit_hit(spent, 0.0, 0.0, 0.5) == pytest.approx(600.0)


def test_both_limits_at_once_take_the_later_start() -> None:
    limiter = RateLimiter(requests_per_minute=60, tokens_per_minute=60)
    assert limiter.reserve(0.0, 5).start == 0.0
    assert limiter.reserve(0.0, 5).start == pytest.approx(5.0)  # tokens: 5 s
    assert limiter.reserve(0.0, 0).start == pytest.approx(10.0)


def test_a_429_pauses_everyone_for_the_servers_wait() -> None:
    limiter = RateLimiter()
    ticket = limiter.reserve(100.0)
    assert ticket.start == 100.0
    pause = limiter.rate_limit_hit({"retry-after-ms": "1500"}, 100.0, 1e9, 0.0)
    assert pause == 1.5 and limiter.rate_limited == 1
    assert not limiter.still_valid(ticket, 100.5)  # booked before the pause: book again
    assert limiter.still_valid(ticket, 101.5)
    assert limiter.reserve(100.5).start == 101.5
    assert limiter.rate_limit_hit({"retry-after": "3"}, 101.0, 1e9, 0.0) == 3.0
    assert limiter.paused_until == 104.0


def test_a_429_without_a_wait_uses_the_reset_header_or_backs_off() -> None:
    limiter = RateLimiter()
    headers = {"x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "2s"}
    assert limiter.rate_limit_hit(headers, 0.0, 0.0, 0.0) == 2.0
    pauses = [limiter.rate_limit_hit({}, 0.0, 0.0, 0.0) for _ in range(9)]
    assert pauses == [2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0, 60.0, 60.0]
    limiter.succeeded()
    assert limiter.rate_limit_hit({}, 0.0, 0.0, 0.0) == 1.0
    # After a pause the limits' pace resumes from its end, not in a burst.
    paced = RateLimiter(requests_per_minute=60)
    paced.rate_limit_hit({"retry-after": "10"}, 0.0, 0.0, 0.0)
    assert [paced.reserve(1.0).start for _ in range(3)] == [10.0, 11.0, 12.0]


def test_the_servers_remaining_budget_holds_requests_until_its_reset() -> None:
    limiter = RateLimiter()
    limiter.sent()
    limiter.sent()
    # 3 left at the server, one other request still in flight: 2 may go now.
    limiter.answered(
        {"x-ratelimit-remaining-requests": "3", "x-ratelimit-reset-requests": "500ms"}, 10.0
    )
    assert limiter.in_flight == 1
    limiter.answered(None, 10.0)
    assert limiter.in_flight == 0
    assert [limiter.reserve(10.0).start for _ in range(3)] == [10.0, 10.0, 10.5]
    assert limiter.reserve(10.6).start == 10.6  # reset passed: the budget is unknown again
    limiter.answered(
        {"x-ratelimit-remaining-tokens": "100", "x-ratelimit-reset-tokens": "1s"}, 20.0
    )
    assert limiter.reserve(20.0, 80).start == 20.0
    assert limiter.reserve(20.0, 80).start == 21.0


def test_limits_are_checked() -> None:
    with pytest.raises(InvalidArgumentError, match="requests_per_minute"):
        RateLimiter(requests_per_minute=0)
    with pytest.raises(InvalidArgumentError, match="tokens_per_minute"):
        RateLimiter(tokens_per_minute=-5)


# ---------------------------------------------------------------- the line flow, by hand

ANSWER = json.dumps(
    {
        "id": "c",
        "object": "chat.completion",
        "created": 1,
        "model": "m",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }
).encode()
RATE_LIMITED = (
    b'{"error": {"message": "slow down", "type": "requests", "code": "rate_limit_exceeded"}}'
)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def make_flow(
    limiter: RateLimiter, clock: Clock, counters: Counters, *, retries: int = 2, waits: int = 8
) -> Any:
    config = ClientConfig.resolve(base_url="http://test.invalid/v1", max_retries=retries)
    request = CreateChatCompletionRequest(model="m", messages=[{"role": "user", "content": "x"}])
    http_request = build_request(config, request, stream=False)
    finish = parse_body(parse_answer, 1 << 20)

    def start() -> Any:
        call = Call(http_request=http_request, stream=False, config=config)
        return call._flow(finish, clock, lambda: 0.0, lambda: 0.0)

    return line_flow(
        start,
        limiter,
        tokens=10,
        clock=clock,
        wall_clock=lambda: 0.0,
        rand=lambda: 0.0,
        counters=counters,
        max_rate_limit_waits=waits,
    )


def test_a_429_pauses_then_resends_without_spending_the_requests_retries() -> None:
    clock, limiter, counters = Clock(), RateLimiter(), Counters()
    flow = make_flow(limiter, clock, counters, retries=0)
    assert isinstance(next(flow), Send)
    assert isinstance(flow.send(FakeResponse(429, headers={"retry-after-ms": "2000"})), ReadBody)
    assert flow.send(RATE_LIMITED) == Sleep(2.0)  # the whole run's pause
    assert limiter.paused_until == 2.0 and limiter.rate_limited == 1
    clock.now = 2.0
    command = flow.send(None)
    assert isinstance(command, Send) and command.attempt == 0  # a new call, not a retry
    assert isinstance(flow.send(FakeResponse(200)), ReadBody)
    with pytest.raises(StopIteration) as done:
        flow.send(ANSWER)
    assert done.value.value.data["choices"][0]["message"]["content"] == "ok"
    assert done.value.value.usage() == (1, 1, 2)
    assert counters.retries == 1


def test_after_its_429_waits_a_request_follows_the_clients_policy() -> None:
    clock, limiter, counters = Clock(), RateLimiter(), Counters()
    flow = make_flow(limiter, clock, counters, retries=0, waits=1)
    next(flow)
    flow.send(FakeResponse(429, headers={"retry-after": "0"}))
    flow.send(RATE_LIMITED)  # absorbed: sent again
    flow.send(FakeResponse(429, headers={"retry-after": "0"}))
    with pytest.raises(RateLimitError, match="slow down"):
        flow.send(RATE_LIMITED)  # the policy (no retries) gives up, with the body read once
    assert limiter.rate_limited == 2


def test_insufficient_quota_is_not_waited_for() -> None:
    clock, limiter, counters = Clock(), RateLimiter(), Counters()
    flow = make_flow(limiter, clock, counters)
    next(flow)
    flow.send(FakeResponse(429))
    with pytest.raises(InsufficientQuotaError):
        flow.send(
            b'{"error": {"message": "quota", "type": "insufficient_quota", '
            b'"code": "insufficient_quota"}}'
        )


def test_each_attempt_waits_for_its_turn() -> None:
    clock, counters = Clock(), Counters()
    limiter = RateLimiter(requests_per_minute=60)
    limiter.reserve(0.0)  # someone else has the first second
    flow = make_flow(limiter, clock, counters)
    assert next(flow) == Sleep(1.0)
    clock.now = 1.0
    assert isinstance(flow.send(None), Send)
    assert isinstance(flow.send(APIConnectionError("reset")), Sleep)  # the client's backoff
    clock.now = 1.5
    assert flow.send(None) == Sleep(0.5)  # and the limiter's turn, two seconds on
    clock.now = 2.0
    retry = flow.send(None)
    assert isinstance(retry, Send) and retry.attempt == 1
    assert counters.retries == 1 and limiter.in_flight == 1


# ---------------------------------------------------------------- progress text


def test_progress_shows_counts_rates_and_eta() -> None:
    meter = ProgressMeter(started=0.0, total=1000, done=100)
    meter.snapshot(0.0)
    for _ in range(300):
        meter.finished(tokens=50)
    meter.finished(failed=True)
    meter.in_flight = 64
    snapshot = meter.snapshot(30.0)
    assert snapshot.requests_per_minute == pytest.approx(602)
    assert snapshot.tokens_per_minute == pytest.approx(30_000)
    assert snapshot.eta == pytest.approx(599 * 60 / 602)
    text = progress_line(snapshot)
    assert text.startswith("batch: 401/1,000 (40.1%) done")
    for part in (
        "failed 1",
        "in flight 64",
        "602 req/min",
        "30.0k tok/min",
        "elapsed 0:30",
        "ETA 1:00",
    ):
        assert part in text
    assert format_duration(3723) == "1:02:03" and format_duration(None) == "?"


def test_rates_follow_the_last_minute() -> None:
    meter = ProgressMeter(started=0.0)
    for second in range(0, 181, 10):
        if second < 120:
            for _ in range(10):
                meter.finished()
        snapshot = meter.snapshot(float(second))
    assert snapshot.requests_per_minute < 15  # stalled for the last minute
    assert snapshot.eta is None and "ETA ?" in progress_line(snapshot)


@pytest.mark.parametrize(
    ("raw", "error", "words"),
    [
        (b"<html>502</html>", "APIResponseValidationError", "not valid JSON"),
        (b"[1, 2]", "APIResponseValidationError", "(list)"),
        (b'{"id": "x"}', "APIResponseValidationError", "no choices list"),
        (
            b'{"error": {"message": "overloaded", "type": "server_error"}}',
            "InternalServerError",
            "overloaded",
        ),
    ],
)
def test_a_2xx_answer_that_is_no_completion_raises_with_its_body(
    raw: bytes, error: str, words: str
) -> None:
    with pytest.raises(Exception) as caught:
        parse_answer(200, {"x-request-id": "req_7"}, raw)
    assert type(caught.value).__name__ == error and words in str(caught.value)
    assert caught.value.raw_body == raw
