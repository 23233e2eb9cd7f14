"""Key providers: `api_key=callable`, called once per attempt, for both facades.

A rotated key is picked up on a retry; a provider that raises (or returns nothing usable)
gives a `CredentialError` naming it; a header the caller set wins; the credential never
follows a redirect to another origin; pickles keep a provider that pickles and say clearly
what to give again when it does not.
"""

from __future__ import annotations

import asyncio
import itertools
import pickle
import time
import traceback
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import web

from chatlib import AsyncChat, SyncChat, Timeout
from chatlib._auth import KeyProvider, LostProvider, ProvidedCredential
from chatlib._call import plan_call
from chatlib._flow import GetCredential, ReadBody, Send, Sleep, parse_body, request_flow
from chatlib._parse import parse_completion
from chatlib._retry import RetryPolicy
from chatlib.errors import (
    APITimeoutError,
    AuthenticationError,
    CredentialError,
    InvalidArgumentError,
    MissingAPIKeyError,
)
from chatlib.testing import ErrorReply, LocalServer
from chatlib.transports import FakeResponse

USER = {"role": "user", "content": "Hi"}
FAST = Timeout(connect=2, read=2, total=5)
RETRY_NOW = {"retry-after-ms": "1"}


class Rotating:
    """A key store whose key changes every time it is read (module level: it pickles)."""

    def __init__(self, prefix: str = "sk-rotated-") -> None:
        self.prefix = prefix
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        return f"{self.prefix}{self.calls:04d}-0123456789"


def module_level_key() -> str:
    return "sk-module-level-0123456789"


def sent_keys(server: LocalServer) -> list[str | None]:
    return [request.headers.get("authorization") for request in server.requests]


# ---------------------------------------------------------------- over loopback, both facades


def test_a_provider_is_called_once_per_attempt_and_a_rotated_key_is_used_on_retry(
    facade: Any, server: LocalServer
) -> None:
    rotating = Rotating()
    client = facade.client(base_url=server.base_url, api_key=rotating, timeout=FAST)
    server.enqueue(ErrorReply(503, headers=RETRY_NOW), ErrorReply(429, headers=RETRY_NOW))

    assert client.create(model="m", messages=[USER]).text == "Echo: Hi"

    assert rotating.calls == 3
    assert sent_keys(server) == [f"Bearer sk-rotated-{n:04d}-0123456789" for n in (1, 2, 3)]


def test_a_provider_serves_streams_too(facade: Any, server: LocalServer) -> None:
    rotating = Rotating()
    client = facade.client(base_url=server.base_url, api_key=rotating, timeout=FAST)

    chunks = client.stream_all(model="m", messages=[USER])

    assert "".join(chunk.text for chunk in chunks) == "Echo: Hi"
    assert sent_keys(server) == ["Bearer sk-rotated-0001-0123456789"]


def test_an_async_provider_is_awaited_by_async_chat(server: LocalServer) -> None:
    calls: list[int] = []

    async def read_key() -> str:
        await asyncio.sleep(0)
        calls.append(1)
        return "sk-from-an-async-vault-0001"

    async def main() -> str:
        async with AsyncChat(base_url=server.base_url, api_key=read_key, timeout=FAST) as chat:
            server.enqueue(ErrorReply(500, headers=RETRY_NOW))
            return (await chat.create(model="m", messages=[USER])).text

    assert asyncio.run(main()) == "Echo: Hi"
    assert len(calls) == 2
    assert sent_keys(server) == ["Bearer sk-from-an-async-vault-0001"] * 2


def test_an_async_provider_that_hangs_is_stopped_at_the_total_deadline(
    server: LocalServer,
) -> None:
    """A vault that never answers must not hang the call: `timeout.total` bounds the wait,
    the error names the provider, and nothing is sent."""
    before = len(server.requests)

    async def stuck_vault() -> str:
        await asyncio.sleep(30)
        return "sk-never"

    async def main() -> None:
        timeout = Timeout(connect=2, read=2, total=0.3)
        async with AsyncChat(base_url=server.base_url, api_key=stuck_vault) as chat:
            await chat.create(model="m", messages=[USER], timeout=timeout)

    started = time.monotonic()
    said = r"stuck_vault did not answer within the 0\.3 s left"
    with pytest.raises(CredentialError, match=said) as info:
        asyncio.run(main())
    assert time.monotonic() - started < 2
    assert "timeout.total" in str(info.value)
    assert len(server.requests) == before


def test_the_flow_gives_the_provider_what_is_left_of_the_deadline() -> None:
    chat = SyncChat(base_url="http://test.invalid/v1", api_key=Rotating(), timeout=10)
    call = plan_call(chat.config, None, {"model": "m", "messages": [USER]}, stream=False)
    now = [100.0]
    flow = request_flow(
        call.http_request,
        finish=parse_body(parse_completion, 1 << 20),
        policy=RetryPolicy(max_retries=1),
        clock=lambda: now[0],
        wall_clock=lambda: 0.0,
        rand=lambda: 0.5,
        credential=call.credential,
        secrets=call.secrets,
    )
    asked = next(flow)
    assert isinstance(asked, GetCredential) and asked.seconds == 10
    now[0] = 111.0  # a blocking provider that returned after the deadline
    with pytest.raises(APITimeoutError, match="total deadline"):
        flow.send(asked.call())


def test_sync_chat_refuses_an_async_provider_before_any_request() -> None:
    async def read_key() -> str:
        return "sk-never"

    with pytest.raises(InvalidArgumentError, match="async function") as info:
        SyncChat(base_url="http://127.0.0.1:9/v1", api_key=read_key)
    assert info.value.field == "api_key"
    chat = SyncChat(base_url="http://127.0.0.1:9/v1")
    with pytest.raises(InvalidArgumentError, match="async function"):
        chat.with_options(api_key=read_key)


def test_a_sync_callable_returning_a_coroutine_is_a_credential_error_on_sync_chat(
    server: LocalServer,
) -> None:
    async def read_key() -> str:
        return "sk-never"

    def sneaky() -> Any:
        return read_key()  # not an `async def` itself: only its result tells

    chat = SyncChat(base_url=server.base_url, api_key=sneaky, timeout=FAST)
    with chat, pytest.raises(CredentialError, match="returned an awaitable"):
        chat.create(model="m", messages=[USER])
    assert server.requests == []


class VaultDown(RuntimeError):
    pass


def failing_vault() -> str:
    raise VaultDown("vault unreachable")


@pytest.mark.parametrize(
    ("provider", "expected"),
    [
        (failing_vault, r"api_key provider .*failing_vault raised VaultDown: vault unreachable"),
        (lambda: "", r"returned an empty string"),
        (lambda: None, r"returned NoneType"),
        (lambda: 42, r"returned int"),
        (lambda: "sk-with\nnewline-0000", r"line break"),
    ],
    ids=["raises", "empty", "none", "int", "newline"],
)
def test_a_failing_provider_is_a_credential_error_naming_it(
    facade: Any, server: LocalServer, provider: Any, expected: str
) -> None:
    client = facade.client(base_url=server.base_url, api_key=provider, timeout=FAST)

    with pytest.raises(CredentialError, match=expected) as info:
        client.create(model="m", messages=[USER])

    assert "api_key provider" in info.value.provider
    assert server.requests == []  # nothing was sent, and nothing is retried
    if provider is failing_vault:
        assert isinstance(info.value.__cause__, VaultDown)


def test_a_header_the_caller_sets_wins_over_the_provider(facade: Any, server: LocalServer) -> None:
    rotating = Rotating()
    client = facade.client(
        base_url=server.base_url,
        api_key=rotating,
        default_headers={"Authorization": "Bearer sk-explicit-0000000000"},
    )

    client.create(model="m", messages=[USER])

    assert rotating.calls == 0
    assert sent_keys(server) == ["Bearer sk-explicit-0000000000"]


def test_with_options_keeps_the_provider_and_can_replace_it(
    facade: Any, server: LocalServer
) -> None:
    rotating = Rotating()
    client = facade.client(base_url=server.base_url, api_key=rotating)
    client.with_options(max_retries=0).create(model="m", messages=[USER])
    client.with_options(api_key="sk-fixed-again-000000").create(model="m", messages=[USER])

    assert sent_keys(server) == [
        "Bearer sk-rotated-0001-0123456789",
        "Bearer sk-fixed-again-000000",
    ]


def test_a_provider_key_that_the_server_refuses_is_not_retried(facade: Any) -> None:
    rotating = Rotating()
    with LocalServer(api_key="sk-the-only-right-key") as guarded:
        client = facade.client(base_url=guarded.base_url, api_key=rotating, timeout=FAST)
        with pytest.raises(AuthenticationError):
            client.create(model="m", messages=[USER])
    assert rotating.calls == 1


def test_the_provided_key_does_not_follow_a_redirect_to_another_origin(
    facade: Any, app_server: Any
) -> None:
    async def target(request: web.Request) -> web.Response:
        return web.json_response(
            {"choices": [{"index": 0, "message": {"role": "assistant", "content": "there"}}]}
        )

    moved = app_server(target)

    async def origin(request: web.Request) -> web.Response:
        if request.path == "/v1/moved/chat/completions":
            raise web.HTTPTemporaryRedirect(f"{moved.origin}/v1/chat/completions")
        raise web.HTTPTemporaryRedirect("/v1/moved/chat/completions")

    first = app_server(origin)
    rotating = Rotating()
    client = facade.client(base_url=f"{first.origin}/v1", api_key=rotating, timeout=FAST)

    assert client.create(model="m", messages=[USER]).text == "there"

    assert rotating.calls == 1  # one attempt, two redirects: one call
    keys = [seen["headers"].get("authorization") for seen in first.seen]
    assert keys == ["Bearer sk-rotated-0001-0123456789"] * 2  # same origin: kept
    assert "authorization" not in moved.seen[0]["headers"]  # another origin: dropped


# ---------------------------------------------------------------- what shows and what travels


def test_reprs_name_the_provider_and_nothing_it_holds(facade: Any) -> None:
    import functools

    def read(secret: str) -> str:
        return secret

    provider = functools.partial(read, "sk-held-in-a-partial-0000")
    client = facade.client(base_url="http://127.0.0.1:9/v1", api_key=provider)
    shown = [repr(client.raw), repr(client.raw.config), repr(client.raw.config.api_key)]
    call = plan_call(client.raw.config, None, {"model": "m", "messages": [USER]}, stream=None)
    shown.append(repr(call))

    assert all("sk-held-in-a-partial" not in text for text in shown)
    assert "test_credentials" in repr(client.raw) and "read" in repr(client.raw)
    assert "Authorization" not in call.http_request.headers  # fetched per attempt, not now


@pytest.mark.parametrize("cls", [SyncChat, AsyncChat])
def test_a_pickled_client_keeps_a_provider_that_pickles(cls: type[Any]) -> None:
    chat = cls(base_url="http://127.0.0.1:9/v1", api_key=module_level_key)

    clone = pickle.loads(pickle.dumps(chat))

    assert isinstance(clone.config.api_key, KeyProvider)
    assert clone.config.api_key.function is module_level_key


@pytest.mark.parametrize("cls", [SyncChat, AsyncChat])
def test_unpickling_a_client_whose_provider_did_not_pickle_says_what_to_give(
    cls: type[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-the-environment")
    data = pickle.dumps(cls(base_url="http://127.0.0.1:9/v1", api_key=lambda: "sk-lambda"))

    with pytest.raises(MissingAPIKeyError) as info:
        pickle.loads(data)  # the environment's key is no substitute for the user's provider

    message = str(info.value)
    assert "api_key=" in message and "<lambda>" in message and "module level" in message
    assert b"sk-lambda" not in data


def test_lost_providers_and_key_providers_compare_by_what_they_hold() -> None:
    assert KeyProvider(module_level_key) == KeyProvider(module_level_key)
    assert KeyProvider(module_level_key) != KeyProvider(module_level_key, "other")
    assert hash(KeyProvider(module_level_key)) == hash(KeyProvider(module_level_key))
    lost = pickle.loads(pickle.dumps(KeyProvider(lambda: "x")))
    assert isinstance(lost, LostProvider)
    assert lost.setting == "api_key" and lost.function.endswith("<lambda>")


def test_a_credential_error_pickles_and_names_its_provider() -> None:
    error = CredentialError("api_key provider vault.read", "raised KeyError: 'k'")
    clone = pickle.loads(pickle.dumps(error))
    assert str(clone) == str(error) == "the api_key provider vault.read raised KeyError: 'k'"
    assert clone.provider == "api_key provider vault.read"
    assert "CredentialError" in "".join(traceback.format_exception(clone))


# ---------------------------------------------------------------- the flow, stepped by hand


def test_the_flow_asks_for_the_credential_before_each_attempt() -> None:
    chat = SyncChat(base_url="http://test.invalid/v1", api_key=Rotating())
    call = plan_call(chat.config, None, {"model": "m", "messages": [USER]}, stream=False)
    assert call.credential == ProvidedCredential(chat.config.api_key, "Authorization", True)
    ticks = itertools.count()
    flow = request_flow(
        call.http_request,
        finish=parse_body(parse_completion, 1 << 20),
        policy=RetryPolicy(max_retries=1),
        clock=lambda: float(next(ticks)),
        wall_clock=lambda: 0.0,
        rand=lambda: 0.5,
        credential=call.credential,
        secrets=call.secrets,
    )
    asked = next(flow)
    assert isinstance(asked, GetCredential)
    send = flow.send(asked.call())
    assert isinstance(send, Send) and send.attempt == 0
    assert send.request.headers["Authorization"] == "Bearer sk-rotated-0001-0123456789"
    assert isinstance(flow.send(FakeResponse(503)), ReadBody)
    assert isinstance(flow.send(b"{}"), Sleep)
    asked = flow.send(None)
    assert isinstance(asked, GetCredential)  # the retry asks again
    send = flow.send("sk-second-0000000000")
    assert send.attempt == 1
    assert send.request.headers["Authorization"] == "Bearer sk-second-0000000000"
    flow.close()


@pytest.fixture
def no_env_key(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    yield


def test_a_provider_counts_as_a_key_for_openai_itself(no_env_key: None) -> None:
    chat = SyncChat(api_key=module_level_key)  # OpenAI's own URL: a provider is enough
    assert isinstance(chat.config.api_key, KeyProvider)
    with pytest.raises(InvalidArgumentError, match="string or a function") as info:
        SyncChat(api_key=12345)  # type: ignore[arg-type]
    assert info.value.field == "api_key"


# ---------------------------------------------------------------- credentials in default headers


HEADER_KEY = "azure-style-key-in-a-header-0123"


def test_a_credential_in_default_headers_is_as_secret_as_the_key(
    facade: Any, server: LocalServer, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    client = facade.client(
        base_url=server.base_url,
        api_key=None,
        default_headers={"api-key": HEADER_KEY, "X-Trace": "visible"},
        default_query={"api-key": HEADER_KEY + "-q", "api-version": "2024-10-21"},
        timeout=FAST,
    )
    with caplog.at_level(logging.DEBUG, logger="chatlib"):
        client.create(model="m", messages=[USER])

    assert server.requests[-1].headers["api-key"] == HEADER_KEY  # sent where it belongs
    config = client.raw.config
    shown = [repr(client.raw), repr(config), str(config), *(r.getMessage() for r in caplog.records)]
    assert all(HEADER_KEY not in text for text in shown)
    assert "'X-Trace': 'visible'" in repr(config) and "'api-version': '2024-10-21'" in repr(config)
    data = pickle.dumps(client.raw)
    assert HEADER_KEY.encode() not in data
    with pytest.raises(MissingAPIKeyError) as info:
        pickle.loads(data)
    assert "default_headers['api-key']" in str(info.value)
    assert "default_query['api-key']" in str(info.value)
