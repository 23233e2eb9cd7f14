"""The default transports through their real HTTP libraries, with the wire mocked at the
library's edge: ``responses`` for SyncChat (requests), ``aioresponses`` for AsyncChat (aiohttp).

Whatever the HTTP library raises must reach the user as a chatlib error.
"""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
import requests
import responses
from aioresponses import aioresponses
from conftest import sse_chunk

from chatlib import AsyncChat, SyncChat
from chatlib.errors import (
    APIConnectionError,
    APITimeoutError,
    IncompleteStreamError,
    InternalServerError,
    NotFoundError,
)

BASE_URL = "https://chat.example.test/v1"
CHAT_URL = f"{BASE_URL}/chat/completions"
MODEL = "gpt-4o-mini"
USER = [{"role": "user", "content": "Hi"}]

COMPLETION = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1,
    "model": MODEL,
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hello!"},
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
}


def _chunk(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
    return sse_chunk(delta, finish_reason, model=MODEL, chunk_id="chatcmpl-2")


STREAM_EVENTS = [
    _chunk({"role": "assistant", "content": ""}),
    _chunk({"content": "Hel"}),
    _chunk({"content": "lo "}),
    _chunk({"content": "there"}),
    _chunk({}, "stop"),
]
STREAM_BODY = b"".join(STREAM_EVENTS) + b"data: [DONE]\n\n"
NO_WAIT = {"retry-after-ms": "0"}


# ---------------------------------------------------------------- SyncChat through `responses`


@pytest.fixture
def mocked_requests() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=True) as mock:
        yield mock


@pytest.fixture
def sync_chat() -> Iterator[SyncChat]:
    with SyncChat(base_url=BASE_URL, api_key="sk-mock", max_retries=0) as chat:
        yield chat


def sent_bodies(mock: responses.RequestsMock) -> list[dict[str, Any]]:
    return [json.loads(call.request.body) for call in mock.calls]


def test_sync_create_through_requests(
    mocked_requests: responses.RequestsMock, sync_chat: SyncChat, chat_request_validator: Any
) -> None:
    mocked_requests.post(CHAT_URL, json=COMPLETION, headers={"x-request-id": "req_1"})
    response = sync_chat.create(model=MODEL, messages=USER, temperature=0)
    assert response.text == "Hello!"
    assert response.usage is not None and response.usage.total_tokens == 2
    (call,) = mocked_requests.calls
    assert call.request.headers["Authorization"] == "Bearer sk-mock"
    assert call.request.headers["Content-Type"] == "application/json"
    assert sent_bodies(mocked_requests) == [{"model": MODEL, "messages": USER, "temperature": 0}]
    chat_request_validator.validate(sent_bodies(mocked_requests)[0])


def test_sync_stream_through_requests(
    mocked_requests: responses.RequestsMock, sync_chat: SyncChat, chat_request_validator: Any
) -> None:
    mocked_requests.post(CHAT_URL, body=STREAM_BODY, content_type="text/event-stream")
    with sync_chat.stream(model=MODEL, messages=USER) as stream:
        pieces = list(stream.text_stream)
    assert pieces == ["Hel", "lo ", "there"]
    assert stream.accumulated.text == "Hello there"
    assert stream.accumulated.choices[0].finish_reason == "stop"
    (body,) = sent_bodies(mocked_requests)
    assert body["stream"] is True
    chat_request_validator.validate(body)


def test_sync_stream_cut_before_done_raises_incomplete_stream(
    mocked_requests: responses.RequestsMock, sync_chat: SyncChat
) -> None:
    mocked_requests.post(
        CHAT_URL, body=b"".join(STREAM_EVENTS[:3]), content_type="text/event-stream"
    )
    stream = sync_chat.stream(model=MODEL, messages=USER)
    with pytest.raises(IncompleteStreamError):
        list(stream)
    assert stream.accumulated.text == "Hello "


def test_sync_500_then_200_is_retried_with_the_same_idempotency_key(
    mocked_requests: responses.RequestsMock, sync_chat: SyncChat
) -> None:
    mocked_requests.post(
        CHAT_URL, status=500, json={"error": {"message": "hiccup"}}, headers=NO_WAIT
    )
    mocked_requests.post(CHAT_URL, json=COMPLETION)
    response = sync_chat.with_options(max_retries=1).create(model=MODEL, messages=USER)
    assert response.text == "Hello!"
    first, second = (call.request for call in mocked_requests.calls)
    assert first.headers["Idempotency-Key"] == second.headers["Idempotency-Key"]
    assert first.body == second.body


def test_sync_error_status_through_requests(
    mocked_requests: responses.RequestsMock, sync_chat: SyncChat
) -> None:
    mocked_requests.post(
        CHAT_URL,
        status=404,
        json={"error": {"message": "The model `nope` does not exist", "code": "model_not_found"}},
        headers={"x-request-id": "req_404"},
    )
    with pytest.raises(NotFoundError) as caught:
        sync_chat.create(model="nope", messages=USER)
    assert caught.value.request_id == "req_404"
    assert caught.value.code == "model_not_found"
    assert "does not exist" in str(caught.value)


@pytest.mark.parametrize(
    ("failure", "expected"),
    [
        (requests.exceptions.ConnectionError("Connection refused"), APIConnectionError),
        (requests.exceptions.ChunkedEncodingError("broken"), APIConnectionError),
        (requests.exceptions.ReadTimeout("read timed out"), APITimeoutError),
        (requests.exceptions.ConnectTimeout("connect timed out"), APITimeoutError),
    ],
    ids=["connection-error", "chunked-encoding-error", "read-timeout", "connect-timeout"],
)
def test_sync_transport_failures_become_chatlib_errors(
    mocked_requests: responses.RequestsMock,
    sync_chat: SyncChat,
    failure: Exception,
    expected: type[APIConnectionError],
) -> None:
    mocked_requests.post(CHAT_URL, body=failure)
    with pytest.raises(APIConnectionError) as caught:
        sync_chat.create(model=MODEL, messages=USER)
    assert type(caught.value) is expected
    assert not isinstance(caught.value, requests.RequestException)
    assert caught.value.request_url == CHAT_URL
    assert caught.value.__context__ is None and caught.value.__cause__ is None  # not even hidden


def test_sync_connection_failure_of_a_stream(
    mocked_requests: responses.RequestsMock, sync_chat: SyncChat
) -> None:
    mocked_requests.post(CHAT_URL, body=requests.exceptions.ConnectionError("reset"))
    with pytest.raises(APIConnectionError) as caught:
        sync_chat.stream(model=MODEL, messages=USER)
    assert not isinstance(caught.value, requests.RequestException)


# ---------------------------------------------------------------- AsyncChat through `aioresponses`

# aioresponses 0.7.9 builds ClientResponse without the ``stream_writer`` argument that
# aiohttp 3.14 made required (pnuckowski/aioresponses#289); supply a stand-in.
_NEEDS_STREAM_WRITER = "stream_writer" in inspect.signature(aiohttp.ClientResponse).parameters


class _MockedResponse(aiohttp.ClientResponse):
    def __init__(self, method: str, url: Any, **kwargs: Any) -> None:
        if _NEEDS_STREAM_WRITER:
            kwargs.setdefault("stream_writer", SimpleNamespace(output_size=0))
        super().__init__(method, url, **kwargs)


@pytest.fixture
def mocked_aiohttp() -> Iterator[aioresponses]:
    with aioresponses() as mock:
        yield mock


def reply(mock: aioresponses, **kwargs: Any) -> None:
    """Script the next answer to ``POST /chat/completions``."""
    if "exception" not in kwargs:
        kwargs["response_class"] = _MockedResponse
    mock.post(CHAT_URL, **kwargs)


def async_calls(mock: aioresponses) -> list[Any]:
    return [call for calls in mock.requests.values() for call in calls]


async def test_async_create_through_aiohttp(
    mocked_aiohttp: aioresponses, chat_request_validator: Any
) -> None:
    reply(mocked_aiohttp, payload=COMPLETION, headers={"x-request-id": "req_1"})
    async with AsyncChat(base_url=BASE_URL, api_key="sk-mock", max_retries=0) as chat:
        response = await chat.create(model=MODEL, messages=USER, seed=0)
    assert response.text == "Hello!"
    (call,) = async_calls(mocked_aiohttp)
    assert call.kwargs["headers"]["Authorization"] == "Bearer sk-mock"
    body = json.loads(call.kwargs["data"])
    assert body == {"model": MODEL, "messages": USER, "seed": 0}
    chat_request_validator.validate(body)


async def test_async_stream_through_aiohttp(
    mocked_aiohttp: aioresponses, chat_request_validator: Any
) -> None:
    reply(mocked_aiohttp, body=STREAM_BODY, content_type="text/event-stream")
    chat = AsyncChat(base_url=BASE_URL, api_key="sk-mock", max_retries=0)
    async with chat, chat.stream(model=MODEL, messages=USER) as stream:
        pieces = [text async for text in stream.text_stream]
    assert pieces == ["Hel", "lo ", "there"]
    assert stream.accumulated.text == "Hello there"
    (call,) = async_calls(mocked_aiohttp)
    body = json.loads(call.kwargs["data"])
    assert body["stream"] is True
    chat_request_validator.validate(body)


async def test_async_stream_cut_before_done_raises_incomplete_stream(
    mocked_aiohttp: aioresponses,
) -> None:
    reply(mocked_aiohttp, body=b"".join(STREAM_EVENTS[:3]), content_type="text/event-stream")
    async with AsyncChat(base_url=BASE_URL, api_key="sk-mock", max_retries=0) as chat:
        stream = chat.stream(model=MODEL, messages=USER)
        with pytest.raises(IncompleteStreamError):
            async for _ in stream:
                pass
    assert stream.accumulated.text == "Hello "


async def test_async_500_then_200_is_retried_with_the_same_idempotency_key(
    mocked_aiohttp: aioresponses,
) -> None:
    reply(mocked_aiohttp, status=500, payload={"error": {"message": "hiccup"}}, headers=NO_WAIT)
    reply(mocked_aiohttp, payload=COMPLETION)
    async with AsyncChat(base_url=BASE_URL, api_key="sk-mock", max_retries=1) as chat:
        response = await chat.create(model=MODEL, messages=USER)
    assert response.text == "Hello!"
    first, second = async_calls(mocked_aiohttp)
    assert first.kwargs["headers"]["Idempotency-Key"] == second.kwargs["headers"]["Idempotency-Key"]
    assert first.kwargs["data"] == second.kwargs["data"]


async def test_async_500_retries_exhausted(mocked_aiohttp: aioresponses) -> None:
    for _ in range(2):
        reply(mocked_aiohttp, status=503, body="<h1>Service Unavailable</h1>", headers=NO_WAIT)
    async with AsyncChat(base_url=BASE_URL, api_key="sk-mock", max_retries=1) as chat:
        with pytest.raises(InternalServerError) as caught:
            await chat.create(model=MODEL, messages=USER)
    assert caught.value.status_code == 503
    assert "Service Unavailable" in str(caught.value)
    assert "<h1>" not in str(caught.value)
    assert len(async_calls(mocked_aiohttp)) == 2


@pytest.mark.parametrize(
    ("failure", "expected"),
    [
        (aiohttp.ClientConnectionError("Connection refused"), APIConnectionError),
        (aiohttp.ServerDisconnectedError(), APIConnectionError),
        (asyncio.TimeoutError(), APITimeoutError),
        (aiohttp.ServerTimeoutError("read timed out"), APITimeoutError),
    ],
    ids=["connection-error", "server-disconnected", "asyncio-timeout", "server-timeout"],
)
async def test_async_transport_failures_become_chatlib_errors(
    mocked_aiohttp: aioresponses, failure: Exception, expected: type[APIConnectionError]
) -> None:
    reply(mocked_aiohttp, exception=failure)
    async with AsyncChat(base_url=BASE_URL, api_key="sk-mock", max_retries=0) as chat:
        with pytest.raises(APIConnectionError) as caught:
            await chat.create(model=MODEL, messages=USER)
    assert type(caught.value) is expected
    assert not isinstance(caught.value, aiohttp.ClientError)
    assert caught.value.request_url == CHAT_URL
    assert caught.value.__context__ is None and caught.value.__cause__ is None  # not even hidden


async def test_async_connection_failure_of_a_stream(mocked_aiohttp: aioresponses) -> None:
    reply(mocked_aiohttp, exception=aiohttp.ClientConnectionError("reset"))
    async with AsyncChat(base_url=BASE_URL, api_key="sk-mock", max_retries=0) as chat:
        with pytest.raises(APIConnectionError) as caught:
            async with chat.stream(model=MODEL, messages=USER):
                pass
    assert not isinstance(caught.value, aiohttp.ClientError)
