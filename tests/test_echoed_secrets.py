"""Servers that repeat the credentials they were sent: chatlib redacts them from everything it
builds from the server's text, for both facades.

A loopback server echoes the request's headers and URL in its error bodies (401, 400, 500;
JSON, an HTML page, plain text; in a stream's error event; in an error sent with a 200), as
some gateways and proxies do. Whatever credential the client sent (a fixed key, a provider's
key, Azure's `api-key`, a credential-like default header, a credential in the query) must not
show in `str(exc)`, `repr(exc)`, `exc.message`, `exc.body`, the server's fields, a traceback,
a pickle or a log record; `exc.raw_body` keeps the exact bytes, its `repr` hides them.
"""

from __future__ import annotations

import html
import json
import logging
import pickle
import traceback
from typing import Any

import pytest
from aiohttp import web
from conftest import ClientDriver, FacadeDriver

from chatlib import AsyncAzureChat, AzureChat, Timeout
from chatlib.errors import APIError, APIStatusError
from chatlib.testing import LocalServer

FIXED_KEY = "sk-fixed-key-0123456789abcdef"
PROVIDED_KEY = "sk-provided-key-fedcba9876543210"
AZURE_KEY = "azure-key-00112233445566778899aabb"
HEADER_SECRET = "x-api-key-secret-5566778899"
QUERY_SECRET = "query-secret-aabbccddeeff"
SECRETS = (FIXED_KEY, PROVIDED_KEY, AZURE_KEY, HEADER_SECRET, QUERY_SECRET)
USER = {"role": "user", "content": "Hi"}
FAST = Timeout(connect=2, read=2, total=5)


def echo(request: web.Request) -> str:
    """The credentials first (what such a server says is the key it got), then the rest."""
    first = ("authorization", "api-key", "x-api-key")
    lines = [f"{name}: {value}" for name, value in request.headers.items() if name.lower() in first]
    lines.append(f"{request.method} {request.path_qs}")
    lines += [
        f"{name}: {value}" for name, value in request.headers.items() if name.lower() not in first
    ]
    return "\n".join(lines)


async def echoing(request: web.Request) -> web.StreamResponse:
    """`/{status}/{kind}/...`: an error whose body repeats the request."""
    _, status_text, kind, *_ = request.path.split("/")
    status = int(status_text)
    seen = echo(request)
    if kind == "json":
        body = {
            "error": {
                "message": f"Request rejected. We received:\n{seen}",
                "type": "gateway_error",
                "code": request.headers.get("api-key") or request.headers.get("authorization"),
                "param": None,
                "received_headers": dict(request.headers),
            }
        }
        return web.json_response(body, status=status)
    if kind == "html":
        page = f"<html><body><h1>Gateway error</h1><pre>{html.escape(seen)}</pre></body></html>"
        return web.Response(status=status, text=page, content_type="text/html")
    if kind == "text":
        return web.Response(status=status, text=f"denied: {seen}")
    if kind == "ok-error":  # an error object with status 200
        return web.json_response({"error": {"message": seen, "type": "server_error"}})
    # kind == "stream": a 200 stream whose error event repeats the request
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    chunk = {"choices": [{"index": 0, "delta": {"content": "Hel"}}]}
    await response.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
    error = {"error": {"message": seen, "type": "server_error"}}
    await response.write(b"event: error\ndata: " + json.dumps(error).encode() + b"\n\n")
    await response.write_eof()
    return response


def provider() -> str:
    return PROVIDED_KEY


def make_client(facade: FacadeDriver, origin: str, credentials: str) -> ClientDriver:
    if credentials == "fixed key, default header, query":
        return facade.client(
            base_url=f"{origin}/v1",
            api_key=FIXED_KEY,
            default_headers={"X-Api-Key": HEADER_SECRET},
            default_query={"key": QUERY_SECRET},
            timeout=FAST,
            max_retries=0,
        )
    if credentials == "key provider":
        return facade.client(base_url=f"{origin}/v1", api_key=provider, timeout=FAST, max_retries=0)
    cls = AsyncAzureChat if facade.is_async else AzureChat
    settings = {"azure_endpoint": origin, "api_version": "2024-10-21", "api_key": AZURE_KEY}

    async def make() -> Any:
        return cls(timeout=FAST, max_retries=0, **settings)

    raw = facade.run(make()) if facade.is_async else cls(timeout=FAST, max_retries=0, **settings)
    client = ClientDriver(facade, raw)
    facade._clients.append(client)
    return client


def texts_of(exc: BaseException) -> list[str | bytes]:
    """Everything an exception can be shown as, for it and every exception chained to it."""
    texts: list[str | bytes] = ["".join(traceback.format_exception(exc)), pickle.dumps(exc)]
    todo: list[BaseException | None] = [exc]
    seen: set[int] = set()
    while todo:
        current = todo.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        texts += [str(current), repr(current), repr(vars(current)), repr(current.args)]
        if isinstance(current, APIError):
            raw = current.raw_body
            texts += [current.message, json.dumps(current.body), repr(raw), str(raw), f"{raw}"]
        if isinstance(current, APIStatusError):
            texts += [repr(current.server_message), repr(current.code), repr(current.headers)]
        todo += [current.__cause__, current.__context__]
    return texts


def assert_no_secret(texts: list[str | bytes]) -> None:
    for text in texts:
        raw = text if isinstance(text, bytes) else text.encode("utf-8", "replace")
        for secret in SECRETS:
            assert secret.encode() not in raw, (secret, text)


CREDENTIALS = ["fixed key, default header, query", "key provider", "azure api-key"]


@pytest.mark.parametrize("credentials", CREDENTIALS)
@pytest.mark.parametrize("status", [401, 400, 500])
@pytest.mark.parametrize("kind", ["json", "html", "text"])
def test_an_echoed_credential_is_redacted_from_the_error(
    facade: FacadeDriver,
    app_server: Any,
    caplog: pytest.LogCaptureFixture,
    credentials: str,
    status: int,
    kind: str,
) -> None:
    server = app_server(echoing)
    client = make_client(facade, f"{server.origin}/{status}/{kind}", credentials)

    with caplog.at_level(logging.DEBUG, logger="chatlib"), pytest.raises(APIStatusError) as info:
        client.create(model="m", messages=[USER])

    error = info.value
    assert error.status_code == status
    sent = server.seen[0]["headers"]
    sent_secrets = [s for s in SECRETS if any(s in value for value in sent.values())]
    assert sent_secrets  # the credential did go out, and the server did repeat it...
    assert any(secret.encode() in error.raw_body for secret in sent_secrets)  # byte-exact
    assert_no_secret(texts_of(error))  # ...and chatlib shows it nowhere
    assert "<redacted>" in error.message
    assert_no_secret([record.getMessage() for record in caplog.records])
    assert_no_secret([repr(vars(record)) for record in caplog.records])
    assert "<redacted>" in repr(error.raw_body)


@pytest.mark.parametrize("credentials", CREDENTIALS)
@pytest.mark.parametrize("kind", ["stream", "ok-error"])
def test_an_echoed_credential_is_redacted_from_errors_sent_with_200(
    facade: FacadeDriver, app_server: Any, credentials: str, kind: str
) -> None:
    server = app_server(echoing)
    client = make_client(facade, f"{server.origin}/200/{kind}", credentials)

    with pytest.raises(APIStatusError) as info:
        if kind == "stream":
            client.stream_all(model="m", messages=[USER])
        else:
            client.create(model="m", messages=[USER])

    assert "<redacted>" in info.value.message
    assert_no_secret(texts_of(info.value))


def test_raw_body_is_byte_exact_but_shows_and_pickles_redacted(
    facade: FacadeDriver, app_server: Any
) -> None:
    server = app_server(echoing)
    client = make_client(facade, f"{server.origin}/401/json", "fixed key, default header, query")

    with pytest.raises(APIStatusError) as info:
        client.create(model="m", messages=[USER])

    raw = info.value.raw_body
    assert json.loads(raw)["error"]["received_headers"]["Authorization"] == f"Bearer {FIXED_KEY}"
    assert raw == bytes(raw) and FIXED_KEY.encode() in bytes(raw)
    assert FIXED_KEY not in repr(raw)
    clone = pickle.loads(pickle.dumps(info.value))
    assert FIXED_KEY.encode() not in clone.raw_body
    assert clone.message == info.value.message
    assert info.value.body["received_headers"]["Authorization"] == "<redacted>"
    assert info.value.body["received_headers"]["X-Api-Key"] == "<redacted>"
    assert info.value.code == "<redacted>"


def test_the_start_of_a_secret_cut_short_by_a_snippet_is_redacted_too() -> None:
    from chatlib._headers import Secrets
    from chatlib.errors import error_from_response, redact_error

    page = (
        b"<html><body><p>" + b"x" * 270 + b" Bearer " + FIXED_KEY.encode() + b"</p></body></html>"
    )
    error = error_from_response(502, {}, page)
    assert FIXED_KEY[:10] in error.message and error.message.endswith("...")  # cut inside the key
    redact_error(error, Secrets([f"Bearer {FIXED_KEY}"]))
    assert FIXED_KEY[:8] not in error.message and error.message.endswith("<redacted>...")


def test_a_server_that_does_not_echo_is_left_alone(facade: FacadeDriver) -> None:
    with LocalServer(api_key="sk-the-right-key-0000000") as guarded:
        client = facade.client(base_url=guarded.base_url, api_key=FIXED_KEY, timeout=FAST)
        with pytest.raises(APIStatusError) as info:
            client.create(model="m", messages=[USER])
    assert "<redacted>" not in str(info.value)
    assert "Incorrect API key provided: sk-****cdef." in str(info.value)  # OpenAI's own mask
