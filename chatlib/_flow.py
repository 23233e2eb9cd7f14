"""The send/retry flow of one call: a generator of I/O commands, driven by either facade.

In the style of httpx's `Auth.auth_flow`: `request_flow` yields commands (`Send`,
`ReadBody`, `Sleep`, and `GetCredential` for a key provider) and receives their outcomes;
`SyncChat` drives it with blocking I/O and `time.sleep`, `AsyncChat` with `await` and
`asyncio.sleep`. Nothing here does I/O, sleeps or reads a clock it was not handed, so a test
steps the flow by hand and reads the delays it asks for.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Generator, Mapping, Sequence
from typing import Any, Generic, TypeVar, Union
from urllib.parse import urljoin, urlsplit

import attrs

from chatlib import _log
from chatlib._auth import KeyProvider, ProvidedCredential, ProviderTimedOut
from chatlib._config import Timeout
from chatlib._headers import Secrets, header, is_credential, same_origin
from chatlib._request import HttpRequest
from chatlib._retry import RetryPolicy
from chatlib.errors import APIError, deadline_exceeded, error_from_response, redact_error

__all__ = [
    "Command",
    "Deliver",
    "Finish",
    "Flow",
    "GetCredential",
    "ItemFlow",
    "ReadBody",
    "Send",
    "Sleep",
    "follow_redirect",
    "keep_open",
    "parse_body",
    "request_flow",
]

_T = TypeVar("_T")

# Only the redirects that keep the method and body: a 301/302/303 would turn the POST into a
# GET that no chat endpoint answers, so it is raised instead, naming where it points.
REDIRECT_STATUSES = frozenset({307, 308})
MAX_REDIRECTS = 5
REDIRECT_BODY_LIMIT = 64 * 1024  # a redirect's body is read, so its connection is reused
ERROR_BODY_LIMIT = 1024 * 1024  # the most of an error body kept for the exception


# ---------------------------------------------------------------- commands


@attrs.define
class Send:
    """Send `request`; answer with the transport's response, or the `APIConnectionError` it
    raised."""

    request: HttpRequest
    attempt: int


@attrs.define
class ReadBody:
    """Read `response`'s whole body (at most `limit` bytes) and close it; answer with the
    bytes, or the `APIError` raised while reading."""

    response: Any
    limit: int


@attrs.define
class Sleep:
    """Wait `seconds`; answer with `None`."""

    seconds: float


@attrs.frozen
class GetCredential:
    """Call the key `provider` (`call` in a sync driver, `await acall()` in an async one);
    answer with what it returned, or the exception it raised.

    `seconds` is what is left of the call's total deadline (`None`: no deadline). An async
    driver stops waiting for an async provider then, and answers `timed_out()`; a blocking
    provider cannot be stopped, so a sync call fails when it returns too late.
    """

    provider: KeyProvider
    seconds: float | None = None

    def timed_out(self) -> ProviderTimedOut:
        """The answer for a provider that was still running when the deadline passed."""
        return ProviderTimedOut(self.seconds or 0.0)

    def call(self) -> object:
        """Call the provider: its result, or the exception it raised."""
        try:
            return self.provider()
        except Exception as exc:
            return exc

    async def acall(self) -> object:
        """Call the provider and await its result if it is awaitable."""
        try:
            value = self.provider()
            if inspect.isawaitable(value):
                value = await value
            return value
        except Exception as exc:
            return exc


Command = Union[Send, ReadBody, Sleep, GetCredential]
Flow = Generator[Command, Any, _T]
"""A flow that yields commands and finally returns a `_T`."""


@attrs.frozen
class Deliver(Generic[_T]):
    """Hand `items` to the user (a page of a list); answer with `None` once they are taken."""

    items: Sequence[_T]


ItemFlow = Generator[Union[Command, Deliver[_T]], Any, None]
"""A flow that yields commands and, now and then, items for the user (`Deliver`)."""

Finish = Callable[[Any], Flow[Union[_T, APIError]]]
"""What a call does with a 2xx response: read and parse it, or hand it over open. An
`APIError` it returns (a body cut short) is a failed attempt, retried like any other."""


def parse_body(parse: Callable[[int, Mapping[str, str], bytes], _T], limit: int) -> Finish[_T]:
    """Read the 2xx body (at most `limit` bytes), then return `parse(status, headers, body)`."""

    def finish(response: Any) -> Flow[_T | APIError]:
        body = yield ReadBody(response, limit)
        if isinstance(body, APIError):
            return body
        return parse(response.status_code, response.headers, body)

    return finish


def keep_open(open_stream: Callable[[Any], _T]) -> Finish[_T]:
    """Hand the 2xx response over unread (its body is a stream): `open_stream(response)`."""

    def finish(response: Any) -> Flow[_T | APIError]:
        return open_stream(response)
        yield  # a flow that asks for nothing more

    return finish


# ---------------------------------------------------------------- one attempt


@attrs.define
class _Done(Generic[_T]):
    value: _T
    status: int
    headers: Mapping[str, str]


@attrs.define
class _Failed:
    error: APIError
    status: int | None
    headers: Mapping[str, str]


@attrs.define
class _Redirected:
    location: str
    status: int
    headers: Mapping[str, str]


_Attempt = Union[_Done[_T], _Failed, _Redirected]


def _attempt(
    request: HttpRequest, attempt: int, finish: Finish[_T], *, may_redirect: bool
) -> Flow[_Attempt[_T]]:
    """Send `request` once and say how it went: a result, a failure, or a redirect."""
    outcome = yield Send(request, attempt)
    if isinstance(outcome, APIError):
        return _Failed(outcome, None, {})
    status: int = outcome.status_code
    headers: Mapping[str, str] = outcome.headers
    if may_redirect and status in REDIRECT_STATUSES:
        location = _redirect_target(request.url, header(headers, "location"))
        if location is not None:
            yield ReadBody(outcome, REDIRECT_BODY_LIMIT)
            return _Redirected(location, status, headers)
    if 200 <= status < 300:
        result = yield from finish(outcome)
        if isinstance(result, APIError):
            return _Failed(result, status, headers)
        return _Done(result, status, headers)
    body = yield ReadBody(outcome, ERROR_BODY_LIMIT)
    if isinstance(body, APIError):
        body = b""  # the status says enough; what arrived of the body is lost with it
    return _Failed(error_from_response(status, headers, body), status, headers)


def _redirect_target(url: str, location: str | None) -> str | None:
    """Where a redirect from `url` to `location` leads, or `None` when it cannot be
    followed (no `Location`, one that is not a URL, or not http/https): the 3xx is then
    raised as the server's answer, naming the `Location` it gave."""
    if location is None:
        return None
    try:
        target = urljoin(url, location)
        parts = urlsplit(target)
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    return target


# ---------------------------------------------------------------- the whole call


def request_flow(
    request: HttpRequest,
    *,
    finish: Finish[_T],
    policy: RetryPolicy,
    clock: Callable[[], float],
    wall_clock: Callable[[], float],
    rand: Callable[[], float],
    deadline: float | None = None,
    credential: ProvidedCredential | None = None,
    secrets: Secrets | None = None,
) -> Flow[_T]:
    """Send `request` until it succeeds or fails for good, retrying per `policy`.

    Returns what `finish` makes of the first 2xx response. 307/308 redirects are followed
    (up to `MAX_REDIRECTS`, not counted as retries); every attempt gets what is left of the
    total deadline. `clock` is monotonic seconds (the deadline), `wall_clock` Unix time
    (HTTP-date `Retry-After`), `rand` in [0, 1) (jitter).

    With a `credential`, its provider is called once per attempt (`GetCredential`) and its
    header added while the request stays on its first origin. Every credential sent is added
    to `secrets`, and an error raised here has them redacted from the server's text.
    """
    if secrets is None:
        secrets = Secrets()
    secrets.add_request(request.headers, request.url)
    try:
        if deadline is None and request.timeout.total is not None:
            deadline = clock() + request.timeout.total
        log = _log.CallLog(clock)
        attempt = redirects = 0
        first_url = request.url
        provided: tuple[str, str] | None = None
        while True:
            if credential is not None and provided is None:
                left = None if deadline is None else deadline - clock()
                if left is not None and left <= 0:
                    raise deadline_exceeded()
                provided = credential.header((yield GetCredential(credential.provider, left)))
                secrets.add(provided[1])
            timeout = _attempt_timeout(request.timeout, deadline, clock())
            sent = _with_timeout(request, timeout)
            if provided is not None and same_origin(request.url, first_url):
                sent = attrs.evolve(sent, headers={**sent.headers, provided[0]: provided[1]})
            log.send(sent, attempt)
            may_redirect = redirects < MAX_REDIRECTS
            outcome = yield from _attempt(sent, attempt, finish, may_redirect=may_redirect)
            error = outcome.error if isinstance(outcome, _Failed) else None
            log.outcome(request, attempt, outcome.status, outcome.headers, error)
            if isinstance(outcome, _Done):
                return outcome.value
            if isinstance(outcome, _Redirected):
                request = follow_redirect(request, outcome.location)
                redirects += 1
                continue  # a redirect is not a retry: same attempt, same budget, same credential
            delay = _retry_delay(policy, attempt, outcome, deadline, clock, wall_clock, rand)
            if delay is None:
                raise outcome.error
            log.retry(request, attempt, delay, outcome.error)
            yield Sleep(delay)
            attempt += 1
            provided = None  # the next attempt asks the provider again
    except APIError as exc:
        redact_error(exc, secrets)
        raise


def _retry_delay(
    policy: RetryPolicy,
    attempt: int,
    failure: _Failed,
    deadline: float | None,
    clock: Callable[[], float],
    wall_clock: Callable[[], float],
    rand: Callable[[], float],
) -> float | None:
    """The wait before the next attempt, or `None` when the failure is final: not
    retryable, out of retries, or the wait would reach the total deadline."""
    if attempt >= policy.max_retries or not policy.is_retryable(failure.error, failure.headers):
        return None
    delay = policy.delay(attempt, failure.headers, now=wall_clock(), rand=rand())
    if deadline is not None and clock() + delay >= deadline:
        return None
    return delay


# ---------------------------------------------------------------- per-attempt requests


# The per-attempt copies below skip attrs' generic paths; only while the classes hold just
# the fields they are written for (anything else falls back to the checked constructors).
_PLAIN_TIMEOUT = tuple(attrs.fields_dict(Timeout)) == ("connect", "read", "total")
_PLAIN_HTTP_REQUEST = tuple(attrs.fields_dict(HttpRequest)) == (
    "method",
    "url",
    "headers",
    "body",
    "timeout",
    "stream",
)


def _attempt_timeout(base: Timeout, deadline: float | None, now: float) -> Timeout:
    """`base`, capped by what is left until `deadline`."""
    if deadline is None:
        return base
    remaining = deadline - now
    if remaining <= 0:
        raise deadline_exceeded()
    connect = remaining if base.connect is None else min(base.connect, remaining)
    read = remaining if base.read is None else min(base.read, remaining)
    if _PLAIN_TIMEOUT and remaining.__class__ is float and remaining > 0:
        # Capped by a positive float, `base`'s already checked limits stay valid: build the
        # Timeout without checking them again.
        timeout: Timeout = object.__new__(Timeout)
        object.__setattr__(timeout, "connect", connect)
        object.__setattr__(timeout, "read", read)
        object.__setattr__(timeout, "total", remaining)
        return timeout
    return Timeout(connect=connect, read=read, total=remaining)


def _with_timeout(request: HttpRequest, timeout: Timeout) -> HttpRequest:
    """`request` with `timeout`: itself when that is its own, else a copy."""
    if timeout is request.timeout:
        return request
    if _PLAIN_HTTP_REQUEST and request.__class__ is HttpRequest:
        return HttpRequest(
            request.method, request.url, request.headers, request.body, timeout, request.stream
        )
    return attrs.evolve(request, timeout=timeout)


def follow_redirect(request: HttpRequest, location: str) -> HttpRequest:
    """The request to send after a 307/308 redirect to `location`: the same request.

    Unlike `requests` and `aiohttp`, every header that may carry a credential
    (`Authorization`, `api-key`, `x-api-key`, cookies, any `*token*`/`*secret*` header) is
    dropped when the new URL is on another origin (scheme, host or port), not just
    `Authorization`.
    """
    url = urljoin(request.url, location)
    headers = dict(request.headers)
    if not same_origin(url, request.url):
        headers = {name: value for name, value in headers.items() if not is_credential(name)}
    return attrs.evolve(request, url=url, headers=headers)
