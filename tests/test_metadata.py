"""Response metadata: `request_id`, `headers` and `rate_limits` on every completion returned
by `create()` (and the stored-completion calls), on streams and on `APIStatusError`, for both
facades; never part of the wire data (`to_dict()`, `==`), kept by pickles.
"""

from __future__ import annotations

import copy
import pickle
from typing import Any

import pytest

from chatlib import CreateChatCompletionResponse, Headers, RateLimits, Timeout
from chatlib._metadata import parse_duration
from chatlib.errors import RateLimitError
from chatlib.testing import ErrorReply, LocalServer, Reply

USER = {"role": "user", "content": "Hi"}
FAST = Timeout(connect=2, read=2, total=5)
LIMITS = {
    "x-ratelimit-limit-requests": "10000",
    "x-ratelimit-limit-tokens": "30000000",
    "x-ratelimit-remaining-requests": "9999",
    "X-RateLimit-Remaining-Tokens": "29999990",
    "x-ratelimit-reset-requests": "6ms",
    "x-ratelimit-reset-tokens": "1m30.5s",
}
EXPECTED = RateLimits(
    limit_requests=10000,
    limit_tokens=30000000,
    remaining_requests=9999,
    remaining_tokens=29999990,
    reset_requests=0.006,
    reset_tokens=90.5,
)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("6m0s", 360.0),
        ("1.5s", 1.5),
        ("250ms", 0.25),
        ("1h2m3s", 3723.0),
        ("2m59.56s", 179.56),  # Groq
        ("0s", 0.0),
        ("20", 20.0),  # plain seconds
        ("0.5", 0.5),
        ("1500us", 0.0015),
        ("1500\u00b5s", 0.0015),
        ("100ns", 1e-7),
        (" 7s ", 7.0),
        ("", None),
        ("soon", None),
        ("5 minutes", None),
        ("-1s", None),
        ("1d", None),
        (None, None),
    ],
)
def test_reset_durations_are_seconds(text: str | None, seconds: float | None) -> None:
    result = parse_duration(text)
    if seconds is None:
        assert result is None
    else:
        assert result == pytest.approx(seconds)


def test_rate_limits_read_the_headers_in_any_case() -> None:
    assert RateLimits.from_headers(LIMITS) == EXPECTED
    assert RateLimits.from_headers({}) == RateLimits()
    assert not RateLimits() and RateLimits(remaining_requests=0)  # `bool`: any figure sent
    partial = RateLimits.from_headers({"x-ratelimit-remaining-tokens": "12", "x-other": "1"})
    assert partial.remaining_tokens == 12 and partial.limit_requests is None
    odd = RateLimits.from_headers(
        {"x-ratelimit-limit-requests": "many", "x-ratelimit-limit-tokens": "1e3"}
    )
    assert odd.limit_requests is None and odd.limit_tokens == 1000


def test_rate_limits_are_read_from_every_kind_of_header_mapping() -> None:
    from multidict import CIMultiDict, CIMultiDictProxy  # what aiohttp hands over

    shouted = {name.upper(): value for name, value in LIMITS.items()}
    for headers in (CIMultiDictProxy(CIMultiDict(LIMITS)), Headers(LIMITS), shouted):
        assert RateLimits.from_headers(headers) == EXPECTED
    none = CIMultiDictProxy(CIMultiDict({"Content-Type": "application/json", "X-Other": "1"}))
    assert RateLimits.from_headers(none) == RateLimits()
    assert RateLimits.from_headers({"x-ratelimit-unknown": "1"}) == RateLimits()


def test_headers_are_read_only_and_case_insensitive() -> None:
    headers = Headers({"X-Request-Id": "req_1", "Content-Type": "application/json"})
    assert headers["x-request-id"] == headers["X-REQUEST-ID"] == "req_1"
    assert "CONTENT-TYPE" in headers and headers.get("missing") is None
    assert headers == {"x-request-id": "req_1", "content-type": "application/json"}
    with pytest.raises(TypeError):
        headers["x-new"] = "1"  # type: ignore[index]
    assert Headers([("Set-Cookie", "a=1"), ("set-cookie", "b=2")])["set-cookie"] == "a=1, b=2"
    assert "secret-cookie" not in repr(Headers({"Set-Cookie": "secret-cookie"}))
    assert pickle.loads(pickle.dumps(headers)) == headers


# ---------------------------------------------------------------- over loopback, both facades


def test_create_returns_a_completion_that_knows_its_response(
    facade: Any, server: LocalServer
) -> None:
    server.enqueue(Reply("Hello", headers={**LIMITS, "x-request-id": "req_abc123"}))
    client = facade.client(base_url=server.base_url, timeout=FAST)

    resp = client.create(model="m", messages=[USER])

    assert resp.request_id == "req_abc123"
    assert resp.headers["X-Request-ID"] == "req_abc123"
    assert resp.headers["content-type"].startswith("application/json")
    assert resp.rate_limits == EXPECTED
    assert "request_id" not in resp.to_dict() and "headers" not in resp.to_dict()
    assert "req_abc123" not in repr(resp)


def test_metadata_is_not_wire_data_but_pickles_and_copies(facade: Any, server: LocalServer) -> None:
    server.enqueue(Reply("Hello", headers=LIMITS))
    client = facade.client(base_url=server.base_url, timeout=FAST)
    resp = client.create(model="m", messages=[USER])

    plain = CreateChatCompletionResponse.from_dict(resp.to_dict())
    assert plain == resp  # equality compares the wire data only
    assert plain.request_id is None and plain.headers == {} and not plain.rate_limits
    clone = pickle.loads(pickle.dumps(resp))
    assert clone == resp and clone.request_id == resp.request_id
    assert clone.rate_limits == EXPECTED
    assert copy.copy(resp).request_id == resp.request_id
    assert resp.replace(model="other").rate_limits == EXPECTED


def test_a_stream_and_its_final_completion_know_their_response(
    facade: Any, server: LocalServer
) -> None:
    server.enqueue(Reply("Hello there", headers={**LIMITS, "x-request-id": "req_stream1"}))
    client = facade.client(base_url=server.base_url, timeout=FAST)

    stream = client.create(model="m", messages=[USER], stream=True)
    chunks = stream.collect()

    assert "".join(chunk.text for chunk in chunks) == "Hello there"
    assert stream.raw.request_id == "req_stream1"
    assert stream.raw.rate_limits == EXPECTED
    assert stream.raw.headers["x-ratelimit-reset-tokens"] == "1m30.5s"
    final = stream.accumulated
    assert final.request_id == "req_stream1" and final.rate_limits == EXPECTED


def test_an_error_carries_the_rate_limits(facade: Any, server: LocalServer) -> None:
    server.enqueue(
        ErrorReply(
            429,
            headers={**LIMITS, "x-ratelimit-remaining-requests": "0", "x-request-id": "req_429"},
        )
    )
    client = facade.client(base_url=server.base_url, timeout=FAST, max_retries=0)

    with pytest.raises(RateLimitError) as info:
        client.create(model="m", messages=[USER])

    error = info.value
    assert error.request_id == "req_429"
    assert error.rate_limits.remaining_requests == 0
    assert error.rate_limits.reset_tokens == 90.5


def test_no_headers_means_no_figures(facade: Any, server: LocalServer) -> None:
    client = facade.client(base_url=server.base_url, timeout=FAST)
    resp = client.create(model="m", messages=[USER])
    assert resp.request_id is not None and resp.request_id.startswith("req_")
    assert resp.rate_limits == RateLimits()
