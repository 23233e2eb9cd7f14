"""Redirects and credentials, against two real loopback servers on different ports.

What chatlib does (its core follows redirects, the transports don't; verified here for both):
across origins (scheme, host or port differ) every header that may carry a credential
(``Authorization``, ``api-key``, cookies, ...) is dropped, so the key never reaches the other
server; within the same origin they are kept, so a server that moves its endpoint keeps
working. 307 and 308 re-send the POST with its body, at most 5 times; 301, 302 and 303 are
not followed (they would turn the POST into a GET) but raised, naming the new location.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from aiohttp import web

from chatlib import Timeout
from chatlib.errors import APIStatusError

KEY = "sk-redirect-secret-0123456789"
USER = {"role": "user", "content": "Hi"}
TIMEOUT = Timeout(connect=2, read=2, total=5)


def completion(text: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-redirect",
        "object": "chat.completion",
        "created": 1,
        "model": "m",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "stop",
            }
        ],
    }


async def answer_from_target(request: web.Request) -> web.Response:
    return web.json_response(completion(f"target saw {request.method}"))


def redirecting_to(location: str, status: int) -> Any:
    async def handler(request: web.Request) -> web.Response:
        if request.path.startswith("/moved/"):
            return web.json_response(completion(f"moved saw {request.method}"))
        return web.Response(status=status, headers={"Location": location})

    return handler


def no_key_in(headers: dict[str, str]) -> bool:
    return all(KEY not in value for value in headers.values())


@pytest.mark.parametrize("status", [307, 308])
def test_authorization_is_not_sent_to_another_origin(
    facade: Any, app_server: Any, status: int
) -> None:
    target = app_server(answer_from_target)
    origin = app_server(redirecting_to(f"{target.origin}/v1/chat/completions", status))
    assert origin.origin != target.origin  # same host, another port: another origin
    client = facade.client(base_url=f"{origin.origin}/v1", api_key=KEY, timeout=TIMEOUT)

    result = client.create(model="m", messages=[USER])

    assert origin.seen[0]["headers"]["authorization"] == f"Bearer {KEY}"
    assert len(target.seen) == 1
    received = target.seen[0]
    assert "authorization" not in received["headers"]
    assert no_key_in(received["headers"])
    assert received["method"] == "POST"  # re-sent as it was
    assert received["body"] == origin.seen[0]["body"]
    assert result.text == "target saw POST"


@pytest.mark.parametrize("status", [301, 302, 303])
def test_a_redirect_that_would_turn_the_post_into_a_get_is_raised(
    facade: Any, app_server: Any, status: int
) -> None:
    target = app_server(answer_from_target)
    origin = app_server(redirecting_to(f"{target.origin}/v1/chat/completions", status))
    client = facade.client(base_url=f"{origin.origin}/v1", api_key=KEY, timeout=TIMEOUT)

    with pytest.raises(APIStatusError) as info:
        client.create(model="m", messages=[USER])

    assert info.value.status_code == status
    assert f"{target.origin}/v1/chat/completions" in str(info.value)
    assert target.seen == []  # not followed: the key never left the first server


def test_a_stream_is_not_sent_with_authorization_to_another_origin(
    facade: Any, app_server: Any
) -> None:
    async def stream_from_target(request: web.Request) -> web.Response:
        frame = completion("streamed")
        frame["object"] = "chat.completion.chunk"
        frame["choices"][0]["delta"] = frame["choices"][0].pop("message")
        body = f"data: {json.dumps(frame)}\n\ndata: [DONE]\n\n"
        return web.Response(body=body.encode(), content_type="text/event-stream")

    target = app_server(stream_from_target)
    origin = app_server(redirecting_to(f"{target.origin}/v1/chat/completions", 307))
    client = facade.client(base_url=f"{origin.origin}/v1", api_key=KEY, timeout=TIMEOUT)

    chunks = client.stream_all(model="m", messages=[USER])

    assert [chunk.text for chunk in chunks] == ["streamed"]
    assert "authorization" not in target.seen[0]["headers"]
    assert no_key_in(target.seen[0]["headers"])


@pytest.mark.parametrize("status", [307, 308])
def test_a_same_origin_redirect_keeps_authorization_and_works(
    facade: Any, app_server: Any, status: int
) -> None:
    server = app_server(redirecting_to("/moved/chat/completions", status))
    client = facade.client(base_url=f"{server.origin}/v1", api_key=KEY, timeout=TIMEOUT)

    result = client.create(model="m", messages=[USER])

    assert [seen["path"] for seen in server.seen] == [
        "/v1/chat/completions",
        "/moved/chat/completions",
    ]
    moved = server.seen[1]
    assert moved["headers"]["authorization"] == f"Bearer {KEY}"
    assert moved["method"] == "POST"
    assert result.text == "moved saw POST"


def test_an_api_key_header_is_not_sent_to_another_origin(
    facade: Any, app_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    target = app_server(answer_from_target)
    origin = app_server(redirecting_to(f"{target.origin}/v1/chat/completions", 307))
    client = facade.client(
        base_url=f"{origin.origin}/v1",
        api_key=None,
        default_headers={"api-key": KEY},
        timeout=TIMEOUT,
    )

    client.create(model="m", messages=[USER])

    assert origin.seen[0]["headers"]["api-key"] == KEY
    assert "api-key" not in target.seen[0]["headers"]
