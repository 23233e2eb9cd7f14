"""RetryPolicy as a table: which failures are retried, and how long to wait first."""

from __future__ import annotations

import email.utils
from typing import Any

import pytest

from chatlib._retry import RetryPolicy
from chatlib.errors import (
    APIConnectionError,
    APIError,
    APIResponseValidationError,
    APITimeoutError,
    BodyTooLargeError,
    IncompleteStreamError,
    error_from_response,
)

POLICY = RetryPolicy()
NOW = 1_750_000_000.0
QUOTA = (
    b'{"error": {"message": "quota", "type": "insufficient_quota", "code": "insufficient_quota"}}'
)


def status(code: int, body: bytes = b"") -> APIError:
    return error_from_response(code, {}, body)


# ---------------------------------------------------------------- is_retryable


@pytest.mark.parametrize(
    ("error", "headers", "expected"),
    [
        (status(408), {}, True),
        (status(409), {}, True),
        (status(429), {}, True),
        (status(500), {}, True),
        (status(502), {}, True),
        (status(503), {}, True),
        (status(504), {}, True),
        (status(529), {}, True),
        (status(400), {}, False),
        (status(401), {}, False),
        (status(403), {}, False),
        (status(404), {}, False),
        (status(422), {}, False),
        (status(418), {}, False),
        (APIConnectionError(), {}, True),
        (APITimeoutError(), {}, True),
        (status(429, QUOTA), {}, False),
        # x-should-retry overrides the status rule, in either direction
        (status(400), {"x-should-retry": "true"}, True),
        (status(404), {"X-Should-Retry": "true"}, True),
        (status(503), {"x-should-retry": "false"}, False),
        (status(429), {"X-SHOULD-RETRY": "false"}, False),
        (APIConnectionError(), {"x-should-retry": "false"}, False),
        (status(503), {"x-should-retry": "maybe"}, True),
        (status(400), {"x-should-retry": "maybe"}, False),
        # ... but never makes an unfixable failure retryable
        (status(429, QUOTA), {"x-should-retry": "true"}, False),
        (BodyTooLargeError("too big"), {"x-should-retry": "true"}, False),
        (BodyTooLargeError("too big"), {}, False),
        (APIResponseValidationError("bad json"), {}, False),
        (IncompleteStreamError("cut"), {}, False),
    ],
)
def test_is_retryable(error: APIError, headers: dict[str, str], expected: bool) -> None:
    assert POLICY.is_retryable(error, headers) is expected


# ---------------------------------------------------------------- delay: server-given waits


def http_date(offset: float) -> str:
    return email.utils.formatdate(NOW + offset, usegmt=True)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after-ms": "1500"}, 1.5),
        ({"Retry-After-Ms": "250"}, 0.25),
        ({"retry-after-ms": "0"}, 0.0),
        ({"retry-after-ms": "60000"}, 60.0),
        ({"retry-after": "3"}, 3.0),
        ({"Retry-After": "2.5"}, 2.5),
        ({"retry-after": "0"}, 0.0),
        ({"retry-after": "60"}, 60.0),
        ({"retry-after": http_date(7)}, 7.0),
        ({"Retry-After": http_date(30)}, 30.0),
        # retry-after-ms wins over Retry-After
        ({"retry-after-ms": "100", "retry-after": "9"}, 0.1),
        # an unusable retry-after-ms falls back to Retry-After
        ({"retry-after-ms": "junk", "retry-after": "4"}, 4.0),
        ({"retry-after-ms": "-5", "retry-after": "4"}, 4.0),
        ({"retry-after-ms": "600000", "retry-after": "4"}, 4.0),
    ],
)
def test_server_delay_is_honoured(headers: dict[str, str], expected: float) -> None:
    for retry in (0, 3):
        for rand in (0.0, 0.99):
            assert POLICY.delay(retry, headers, now=NOW, rand=rand) == pytest.approx(expected)


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"retry-after": "61"},
        {"retry-after": "3600"},
        {"retry-after": "-1"},
        {"retry-after": "soon"},
        {"retry-after": ""},
        {"retry-after": "nan"},
        {"retry-after": "inf"},
        {"retry-after": http_date(-30)},
        {"retry-after": http_date(3600)},
        {"retry-after": "Mon, 99 Foo 2020 99:99:99 GMT"},
        {"retry-after-ms": "abc"},
        {"retry-after-ms": "-1"},
        {"retry-after-ms": "nan"},
        {"retry-after-ms": "61000"},
        {"x-ratelimit-reset-requests": "1s"},
    ],
)
def test_unusable_server_delay_falls_back_to_backoff(headers: dict[str, str]) -> None:
    assert POLICY.delay(0, headers, now=NOW, rand=0.0) == POLICY.initial_delay
    assert POLICY.delay(2, headers, now=NOW, rand=0.0) == POLICY.initial_delay * 4


def test_out_of_range_http_date_falls_back_to_backoff() -> None:
    headers = {"retry-after": "Mon, 01 Jan 99999 00:00:00 GMT"}
    assert POLICY.delay(0, headers, now=NOW, rand=0.0) == POLICY.initial_delay


def test_max_retry_after_is_configurable() -> None:
    patient = RetryPolicy(max_retry_after=600)
    assert patient.delay(0, {"retry-after": "300"}, now=NOW, rand=0) == 300
    assert POLICY.delay(0, {"retry-after": "300"}, now=NOW, rand=0) == POLICY.initial_delay


# ---------------------------------------------------------------- delay: backoff and jitter


@pytest.mark.parametrize(
    ("retry", "expected"),
    [(0, 0.5), (1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (5, 8.0), (10, 8.0), (60, 8.0)],
)
def test_backoff_doubles_up_to_the_cap(retry: int, expected: float) -> None:
    assert POLICY.delay(retry, {}, now=NOW, rand=0.0) == expected


@pytest.mark.parametrize("retry", [0, 1, 2, 3, 4, 8])
def test_jitter_bounds(retry: int) -> None:
    base = min(0.5 * 2**retry, 8.0)
    assert POLICY.delay(retry, {}, now=NOW, rand=0.0) == base
    almost_one = POLICY.delay(retry, {}, now=NOW, rand=0.999999)
    assert almost_one == pytest.approx(base * 0.75, rel=1e-5)
    assert almost_one > base * 0.75
    samples = [POLICY.delay(retry, {}, now=NOW, rand=r / 10) for r in range(10)]
    assert samples == sorted(samples, reverse=True)
    assert all(base * 0.75 < s <= base for s in samples)


@pytest.mark.parametrize(
    ("policy", "retry", "rand", "expected"),
    [
        (RetryPolicy(initial_delay=1.0, max_delay=10.0, jitter=0.0), 3, 0.9, 8.0),
        (RetryPolicy(initial_delay=1.0, max_delay=10.0, jitter=0.0), 4, 0.9, 10.0),
        (RetryPolicy(initial_delay=0.1, max_delay=1.0, jitter=0.5), 0, 0.5, 0.075),
        (RetryPolicy(initial_delay=2.0, max_delay=3.0, jitter=1.0), 5, 0.5, 1.5),
    ],
)
def test_custom_backoff_parameters(
    policy: RetryPolicy, retry: int, rand: float, expected: Any
) -> None:
    assert policy.delay(retry, {}, now=NOW, rand=rand) == pytest.approx(expected)


def test_policy_is_an_immutable_value() -> None:
    policy = RetryPolicy(max_retries=5)
    with pytest.raises(AttributeError):
        policy.max_retries = 1  # type: ignore[misc]
    assert policy == RetryPolicy(max_retries=5)
    assert RetryPolicy().max_retries == 2


def test_each_call_runs_the_policy_of_its_clients_max_retries() -> None:
    from chatlib._retry import retry_policy

    for count in (0, 1, 2, 10, 11, 50):
        assert retry_policy(count) == RetryPolicy(max_retries=count)
    assert retry_policy(3) is retry_policy(3)  # shared: nothing to build per call
