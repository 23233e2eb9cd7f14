"""The API key stays secret, and TLS is verified unless the caller says otherwise.

The key must not show in the repr/str of anything a user can print (clients, settings,
requests, streams, exceptions), in a log record, in a traceback or in a pickle. Every test
runs for both facades.
"""

from __future__ import annotations

import logging
import pickle
import shutil
import socket
import ssl
import subprocess
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import attrs
import pytest
import requests
from aiohttp import web

from chatlib import AsyncChat, SyncChat, Timeout
from chatlib._call import plan_call
from chatlib._config import DEFAULT_BASE_URL, Secret
from chatlib.errors import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    InternalServerError,
    InvalidArgumentError,
    MissingAPIKeyError,
)
from chatlib.testing import Disconnect, ErrorReply, LocalServer, Reply, Stall

KEY = "sk-chatlib-secret-0123456789abcdef"
PRIVATE = "my private words about the weather"
USER = {"role": "user", "content": PRIVATE}
FAST = Timeout(connect=2, read=0.5, total=3)


def assert_secret_absent(*texts: str | bytes) -> None:
    for text in texts:
        raw = text if isinstance(text, bytes) else text.encode("utf-8", "replace")
        assert KEY.encode() not in raw, text


# ---------------------------------------------------------------- what can be printed


def test_client_settings_and_request_do_not_show_the_key(facade: Any) -> None:
    client = facade.client(base_url="http://127.0.0.1:9/v1", api_key=KEY)
    config = client.raw.config
    call = plan_call(config, None, {"model": "m", "messages": [USER]}, stream=None)

    assert call.http_request.headers["Authorization"] == f"Bearer {KEY}"  # it is there...
    shown = [
        repr(client.raw),
        str(client.raw),
        repr(client.raw.with_options(max_retries=0)),
        repr(config),
        str(config),
        repr(attrs.asdict(config)),
        repr(config.api_key),
        str(config.api_key),
        f"{config.api_key}",
        repr(call.http_request),
        str(call.http_request),
        repr(call),
    ]
    assert_secret_absent(*shown)  # ...and shows nowhere
    assert "api_key=set" in repr(client.raw)
    assert "'Authorization': '<redacted>'" in repr(call.http_request)


def test_streams_do_not_show_the_key(facade: Any, server: LocalServer) -> None:
    client = facade.client(base_url=server.base_url, api_key=KEY, timeout=FAST)
    stream = client.create(model="m", messages=[USER], stream=True)
    try:
        first = stream.next()
        assert first is not None
        assert_secret_absent(repr(stream.raw), str(stream.raw), repr(stream.raw.headers))
    finally:
        stream.close()
    assert server.requests[-1].headers["authorization"] == f"Bearer {KEY}"


# ---------------------------------------------------------------- exceptions


def exception_texts(exc: BaseException) -> list[str | bytes]:
    """Everything an exception can be turned into: str, repr, attributes, the formatted
    traceback, its pickle; for it and every exception chained to it (shown or not)."""
    texts: list[str | bytes] = ["".join(traceback.format_exception(exc))]
    if isinstance(exc, APIError):
        texts.append(pickle.dumps(exc))
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        current = todo.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        texts += [str(current), repr(current), repr(vars(current))]
        todo += [current.__cause__, current.__context__]
    return texts


@pytest.fixture(scope="module")
def guarded_server() -> Iterator[LocalServer]:
    """A server that wants another key: it answers 401 like OpenAI (key partly shown)."""
    with LocalServer(api_key="sk-the-right-key-for-this-server") as server:
        yield server


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


def fail_401(facade: Any, server: LocalServer, guarded: LocalServer) -> None:
    client = facade.client(base_url=guarded.base_url, api_key=KEY, timeout=FAST)
    with pytest.raises(AuthenticationError) as info:
        client.create(model="m", messages=[USER])
    assert "Incorrect API key" in str(info.value)
    raise info.value


def fail_500(facade: Any, server: LocalServer, guarded: LocalServer) -> None:
    server.enqueue(ErrorReply(500, headers={"retry-after-ms": "1"}), ErrorReply(500))
    client = facade.client(base_url=server.base_url, api_key=KEY, timeout=FAST, max_retries=1)
    client.create(model="m", messages=[USER])


def fail_connection(facade: Any, server: LocalServer, guarded: LocalServer) -> None:
    client = facade.client(base_url=closed_port_url(), api_key=KEY, timeout=FAST, max_retries=0)
    client.create(model="m", messages=[USER])


def fail_timeout(facade: Any, server: LocalServer, guarded: LocalServer) -> None:
    server.enqueue(Stall(2))
    timeout = Timeout(connect=2, read=0.3, total=3)
    client = facade.client(base_url=server.base_url, api_key=KEY, timeout=timeout, max_retries=0)
    client.create(model="m", messages=[USER])


def fail_mid_stream(facade: Any, server: LocalServer, guarded: LocalServer) -> None:
    server.enqueue(Disconnect("mid_stream"))
    client = facade.client(base_url=server.base_url, api_key=KEY, timeout=FAST, max_retries=0)
    client.stream_all(model="m", messages=[USER])


@pytest.mark.parametrize(
    ("scenario", "expected"),
    [
        (fail_401, AuthenticationError),
        (fail_500, InternalServerError),
        (fail_connection, APIConnectionError),
        (fail_timeout, APITimeoutError),
        (fail_mid_stream, APIError),
    ],
    ids=["401", "500", "connection", "timeout", "mid-stream"],
)
def test_exceptions_do_not_carry_the_key(
    facade: Any, server: LocalServer, guarded_server: LocalServer, scenario: Any, expected: Any
) -> None:
    with pytest.raises(expected) as info:
        scenario(facade, server, guarded_server)

    assert_secret_absent(*exception_texts(info.value))
    if scenario is not fail_connection:  # the key did go where it belongs
        used = guarded_server if scenario is fail_401 else server
        assert used.requests[-1].headers["authorization"] == f"Bearer {KEY}"


# ---------------------------------------------------------------- logging


def chatlib_records(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    """The chatlib logger's records, each as its attributes plus ``message``."""
    return [
        {**vars(record), "message": record.getMessage()}
        for record in caplog.records
        if record.name == "chatlib"
    ]


def test_debug_log_tells_each_attempt_without_the_key_or_the_body(
    facade: Any, server: LocalServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, the transports' own included
    server.enqueue(
        ErrorReply(503, headers={"retry-after-ms": "1"}),  # a retry, then success
        Reply("fine"),
        ErrorReply(400, message="bad model"),  # a failure
    )
    client = facade.client(base_url=server.base_url, api_key=KEY, timeout=FAST, max_retries=2)
    url = f"{server.base_url}/chat/completions"

    assert client.create(model="m", messages=[USER]).text == "fine"
    with pytest.raises(BadRequestError):
        client.create(model="m", messages=[USER])
    client.stream_all(model="m", messages=[USER])

    for record in caplog.records:
        assert_secret_absent(record.getMessage(), repr(vars(record)))
        assert PRIVATE not in record.getMessage()
    records = chatlib_records(caplog)
    for record in records:  # retries at INFO, the rest at DEBUG
        expected = logging.INFO if record["chatlib_event"] == "retry" else logging.DEBUG
        assert record["levelno"] == expected, record["message"]
    events = [(r["chatlib_event"], r["attempt"], r.get("http_status")) for r in records]
    assert events == [
        ("send", 0, None),
        ("outcome", 0, 503),
        ("retry", 0, None),
        ("send", 1, None),
        ("outcome", 1, 200),
        ("send", 0, None),
        ("outcome", 0, 400),
        ("send", 0, None),
        ("outcome", 0, 200),
    ]
    sends = [r["message"] for r in records if r["chatlib_event"] == "send"]
    for message in sends:
        assert f"POST {url}" in message
        assert "'Authorization': '<redacted>'" in message
        assert "body=" in message and "bytes" in message
    outcomes = [r for r in records if r["chatlib_event"] == "outcome"]
    assert "503 InternalServerError" in outcomes[0]["message"]
    assert "400 BadRequestError" in outcomes[2]["message"]
    for record in outcomes:
        assert record["http_url"] == url
        assert record["elapsed_ms"] >= 0
        assert record["request_id"].startswith("req_")
    [retry] = [r for r in records if r["chatlib_event"] == "retry"]
    assert retry["delay"] == pytest.approx(0.001)
    assert "503 InternalServerError" in retry["reason"]


def test_debug_log_names_a_connection_error(facade: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="chatlib")
    client = facade.client(base_url=closed_port_url(), api_key=KEY, timeout=FAST, max_retries=0)

    with pytest.raises(APIConnectionError):
        client.create(model="m", messages=[USER])

    outcome = chatlib_records(caplog)[-1]
    assert outcome["chatlib_event"] == "outcome"
    assert outcome["error"] == "APIConnectionError"
    assert outcome["http_status"] is None
    assert_secret_absent(outcome["message"])


@pytest.mark.parametrize("level", [logging.INFO, logging.WARNING])
def test_nothing_is_logged_nor_formatted_below_the_logger_level(
    facade: Any,
    server: LocalServer,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: Any,
    level: int,
) -> None:
    caplog.set_level(level, logger="chatlib")

    def must_not_run(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("logging work done for a level that is off")

    for name in ("log_send", "log_outcome") + (("log_retry",) if level > logging.INFO else ()):
        monkeypatch.setattr(f"chatlib._log.{name}", must_not_run)
    server.enqueue(ErrorReply(503, headers={"retry-after-ms": "1"}))
    client = facade.client(base_url=server.base_url, api_key=KEY, timeout=FAST)

    client.create(model="m", messages=[USER])

    events = [record["chatlib_event"] for record in chatlib_records(caplog)]
    assert events == (["retry"] if level == logging.INFO else [])


def test_the_chatlib_logger_prints_nothing_by_default() -> None:
    from chatlib._log import logger

    assert logger.name == "chatlib"
    assert all(isinstance(handler, logging.NullHandler) for handler in logger.handlers)
    assert logger.propagate


# ---------------------------------------------------------------- pickles


def test_a_pickled_client_does_not_carry_the_key(facade: Any, server: LocalServer) -> None:
    client = facade.client(base_url=server.base_url, api_key=KEY, timeout=FAST)
    client.create(model="m", messages=[USER])  # connections and sessions exist now

    data = pickle.dumps(client.raw)

    assert_secret_absent(data)


@pytest.mark.parametrize("cls", [SyncChat, AsyncChat])
def test_unpickling_without_the_key_in_the_environment_says_how_to_give_it(
    cls: type[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    data = pickle.dumps(cls(api_key=KEY))  # OpenAI's own URL: a key is required

    with pytest.raises(MissingAPIKeyError, match="OPENAI_API_KEY") as info:
        pickle.loads(data)
    assert "api_key=" in str(info.value)

    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-the-environment")
    clone = pickle.loads(data)
    assert clone.config.base_url == DEFAULT_BASE_URL
    assert clone.config.api_key == Secret("sk-from-the-environment")


def test_a_secret_refuses_to_be_pickled() -> None:
    with pytest.raises(TypeError, match="OPENAI_API_KEY"):
        pickle.dumps(Secret(KEY))


# ---------------------------------------------------------------- TLS


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key (made with the openssl CLI)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command is needed to make a test certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    command = [openssl, "req", "-x509", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1"]
    command += ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]
    command += ["-keyout", str(key), "-out", str(cert), "-addext", "subjectAltName=IP:127.0.0.1"]
    subprocess.run(
        command,
        check=True,
        capture_output=True,
    )
    return cert, key


@pytest.fixture
def tls_server(app_server: Any, tls_files: tuple[Path, Path], monkeypatch: Any) -> Any:
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE", "SSL_CERT_DIR"):
        monkeypatch.delenv(name, raising=False)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*tls_files)

    async def answer(request: web.Request) -> web.Response:
        return web.json_response(
            {
                "id": "c",
                "object": "chat.completion",
                "created": 1,
                "model": "m",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "over TLS"},
                        "finish_reason": "stop",
                    }
                ],
            }
        )

    return app_server(answer, ssl_context=context)


def test_tls_is_verified_by_default(facade: Any, tls_server: Any) -> None:
    client = facade.client(base_url=f"{tls_server.origin}/v1", timeout=FAST, max_retries=0)

    with pytest.raises(APIConnectionError, match=r"(?i)certificate verify failed") as info:
        client.create(model="m", messages=[USER])

    assert tls_server.seen == []  # no request went out on the unverified connection
    assert_secret_absent(*exception_texts(info.value))


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
def test_verification_can_be_turned_off(facade: Any, tls_server: Any) -> None:
    client = facade.client(
        base_url=f"{tls_server.origin}/v1", timeout=FAST, max_retries=0, verify=False
    )

    assert client.create(model="m", messages=[USER]).text == "over TLS"


def test_a_ca_bundle_can_be_given(
    facade: Any, tls_server: Any, tls_files: tuple[Path, Path]
) -> None:
    client = facade.client(
        base_url=f"{tls_server.origin}/v1", timeout=FAST, max_retries=0, verify=str(tls_files[0])
    )

    assert client.create(model="m", messages=[USER]).text == "over TLS"
    assert tls_server.seen[0]["headers"]["authorization"] == "Bearer sk-test-key"


@pytest.mark.parametrize("variable", ["REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"])
def test_both_clients_trust_the_ca_bundle_the_environment_names(
    facade: Any,
    tls_server: Any,
    tls_files: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
    variable: str,
) -> None:
    monkeypatch.setenv(variable, str(tls_files[0]))
    client = facade.client(base_url=f"{tls_server.origin}/v1", timeout=FAST, max_retries=0)

    assert client.create(model="m", messages=[USER]).text == "over TLS"


@pytest.mark.parametrize("verify", ["default", False, "bundle"])
def test_the_verify_setting_reaches_the_transport(
    facade: Any,
    server: LocalServer,
    tls_files: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
    verify: Any,
) -> None:
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)
    bundle = str(tls_files[0])
    seen: list[Any] = []
    if facade.is_async:
        original_connector = aiohttp.TCPConnector.__init__

        def spy_connector(self: Any, *args: Any, **kwargs: Any) -> None:
            seen.append(kwargs.get("ssl", True))
            original_connector(self, *args, **kwargs)

        monkeypatch.setattr(aiohttp.TCPConnector, "__init__", spy_connector)
    else:
        original_request = requests.Session.request

        def spy_request(self: Any, *args: Any, **kwargs: Any) -> Any:
            seen.append(kwargs.get("verify"))
            return original_request(self, *args, **kwargs)

        monkeypatch.setattr(requests.Session, "request", spy_request)
    options = {} if verify == "default" else {"verify": bundle if verify == "bundle" else False}
    client = facade.client(base_url=server.base_url, timeout=FAST, **options)

    client.create(model="m", messages=[USER])

    [passed] = seen
    if verify == "default":
        assert passed is True
    elif verify is False:
        assert passed is False
    elif facade.is_async:
        assert isinstance(passed, ssl.SSLContext)
        assert passed.verify_mode == ssl.CERT_REQUIRED
        assert passed.check_hostname
        assert passed.cert_store_stats()["x509_ca"] == 1  # exactly the bundle's certificate
    else:
        assert passed == bundle


# ---------------------------------------------------------------- secrets in URLs

URL_SECRET = "s3cret-in-the-url"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_password_in_the_base_url_is_redacted_in_reprs_and_debug_logs(
    facade: Any, server: LocalServer, caplog: pytest.LogCaptureFixture
) -> None:
    base_url = server.base_url.replace("http://", f"http://user:{URL_SECRET}@")
    client = facade.client(base_url=base_url, api_key=None)  # URL credentials instead of a key
    with caplog.at_level(logging.DEBUG, logger="chatlib"):
        client.create(model="m", messages=[USER])
    call = plan_call(client.raw.config, None, {"model": "m", "messages": [USER]}, stream=False)
    shown = [repr(client.raw), repr(call.http_request), *(r.getMessage() for r in caplog.records)]
    assert caplog.records
    assert all(URL_SECRET not in text for text in shown)
    assert "<redacted>@" in repr(call.http_request)


@pytest.mark.parametrize(
    "name",
    ["key", "api-key", "api_key", "apikey", "token", "access_token", "API-Key", "subscription-key"],
)
def test_credential_query_values_are_redacted_in_logs(
    name: str, server: LocalServer, caplog: pytest.LogCaptureFixture
) -> None:
    chat = SyncChat(base_url=server.base_url, default_query={name: URL_SECRET})
    with chat, caplog.at_level(logging.DEBUG, logger="chatlib"):
        chat.create(model="m", messages=[USER])
    assert server.requests[-1].query[name] == URL_SECRET  # sent, as asked
    messages = [record.getMessage() for record in caplog.records]
    assert any(f"{name}=<redacted>" in text for text in messages)
    assert all(URL_SECRET not in text for text in messages)


def test_a_connection_error_does_not_echo_url_secrets(facade: Any) -> None:
    port = _free_port()  # nothing listens there
    client = facade.client(
        base_url=f"http://user:pw-{URL_SECRET}@127.0.0.1:{port}/v1",
        api_key=None,
        default_query={"api-key": URL_SECRET},
        max_retries=0,
        timeout=FAST,
    )
    with pytest.raises(APIConnectionError) as info:
        client.create(model="m", messages=[USER])
    error = info.value
    for text in (str(error), repr(error), str(error.request_url), traceback.format_exc()):
        assert URL_SECRET not in text


def test_url_credentials_and_an_api_key_together_are_refused_without_echoing() -> None:
    with pytest.raises(InvalidArgumentError) as info:
        SyncChat(base_url=f"http://user:{URL_SECRET}@127.0.0.1:9/v1", api_key=KEY)
    assert info.value.field == "base_url"
    assert URL_SECRET not in str(info.value) and KEY not in str(info.value)


# ---------------------------------------------------------------- exception chains


def _chain(exc: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


@pytest.mark.parametrize("fault", ["refused", "dropped before headers", "dropped mid-stream"])
def test_a_connection_error_chains_no_http_library_exception(
    facade: Any, server: LocalServer, fault: str
) -> None:
    """The HTTP library's own exception holds the prepared request, Authorization header
    included; pickling an error with its chain (tblib, which Dask installs process-wide,
    does) would carry it. So the chatlib error is not chained to it, not even silently."""
    url = closed_port_url() if fault == "refused" else server.base_url
    if fault == "dropped before headers":
        server.enqueue(Disconnect())
    elif fault == "dropped mid-stream":
        server.enqueue(Disconnect("mid_stream"))
    client = facade.client(base_url=url, api_key=KEY, timeout=FAST, max_retries=0)
    with pytest.raises(APIConnectionError) as info:
        if fault == "dropped mid-stream":
            client.stream(model="m", messages=[USER]).collect()
        else:
            client.create(model="m", messages=[USER])
    chain = _chain(info.value)
    assert all(isinstance(error, APIError) for error in chain), [type(e) for e in chain]
    for error in chain:  # what a chain-pickler carries of each: its type, args and state
        assert_secret_absent(pickle.dumps((type(error), error.args, vars(error))))
