"""Azure OpenAI: `AzureChat` and `AsyncAzureChat` over real loopback HTTP, for both facades.

`LocalServer` speaks Azure's dialect under `/openai` (deployment paths, `api-version`, an
`api-key` header, content-filter fields). The official SDK's `AzureOpenAI` serves as an
oracle for the URL and headers.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import pickle
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import ClientDriver, FacadeDriver

from chatlib import AsyncAzureChat, AzureChat, Timeout
from chatlib._auth import KeyProvider
from chatlib.azure import AZURE_SETTING_NAMES
from chatlib.errors import APIError, CredentialError, InvalidArgumentError
from chatlib.testing import ErrorReply, LocalServer

KEY = "azure-key-0123456789abcdef0123456789"
VERSION = "2024-10-21"
USER = {"role": "user", "content": "Hi"}
FAST = Timeout(connect=2, read=2, total=5)
RETRY_NOW = {"retry-after-ms": "1"}
AZURE_VARIABLES = (
    "AZURE_OPENAI_ENDPOINT",
    "AZURE_OPENAI_API_KEY",
    "AZURE_OPENAI_AD_TOKEN",
    "OPENAI_API_VERSION",
)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (*AZURE_VARIABLES, "OPENAI_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def azure_server() -> Iterator[LocalServer]:
    """A server that wants the key (as `api-key`, or as a bearer token)."""
    with LocalServer(api_key=KEY, write_size=7) as server:
        yield server


@pytest.fixture
def azure(azure_server: LocalServer) -> Iterator[LocalServer]:
    azure_server.clear()
    yield azure_server
    azure_server.clear()


def azure_client(facade: FacadeDriver, **kwargs: Any) -> ClientDriver:
    """An `AzureChat` or `AsyncAzureChat`, closed at teardown."""
    kwargs.setdefault("timeout", FAST)
    if facade.is_async:

        async def make() -> Any:
            return AsyncAzureChat(**kwargs)

        raw = facade.run(make())
    else:
        raw = AzureChat(**kwargs)
    client = ClientDriver(facade, raw)
    facade._clients.append(client)
    return client


def last(server: LocalServer) -> Any:
    return server.requests[-1]


# ---------------------------------------------------------------- where requests go, and how


def test_a_key_goes_in_the_api_key_header_to_the_deployment_path(
    facade: FacadeDriver, azure: LocalServer
) -> None:
    client = azure_client(facade, azure_endpoint=azure.url, api_version=VERSION, api_key=KEY)

    resp = client.create(model="gpt-4o", messages=[USER])

    assert resp.text == "Echo: Hi"
    sent = last(azure)
    assert (sent.method, sent.path) == ("POST", "/openai/deployments/gpt-4o/chat/completions")
    assert sent.query == {"api-version": VERSION}
    assert sent.headers["api-key"] == KEY
    assert "authorization" not in sent.headers
    assert sent.json()["model"] == "gpt-4o"


def test_one_client_serves_several_deployments(facade: FacadeDriver, azure: LocalServer) -> None:
    client = azure_client(facade, azure_endpoint=azure.url, api_version=VERSION, api_key=KEY)

    client.create(model="gpt-4o", messages=[USER])
    client.stream_all(model="gpt-4o-mini", messages=[USER])
    client.create(model="my deployment", messages=[USER])

    assert [request.path for request in azure.requests] == [  # as the server decoded them
        "/openai/deployments/gpt-4o/chat/completions",
        "/openai/deployments/gpt-4o-mini/chat/completions",
        "/openai/deployments/my deployment/chat/completions",
    ]
    assert all(request.query == {"api-version": VERSION} for request in azure.requests)
    call = client.raw._plan(None, {"model": "a/b c", "messages": [USER]}, stream=None, timeout=None)
    assert "/openai/deployments/a%2Fb%20c/chat/completions?" in call.http_request.url


def test_a_fixed_deployment_takes_every_call(facade: FacadeDriver, azure: LocalServer) -> None:
    client = azure_client(
        facade,
        azure_endpoint=azure.url + "/",
        azure_deployment="prod-gpt-4o",
        api_version=VERSION,
        api_key=KEY,
    )

    client.create(model="gpt-4o", messages=[USER])
    client.create(model="anything", messages=[USER])

    assert client.raw.deployment == "prod-gpt-4o"
    assert {request.path for request in azure.requests} == {
        "/openai/deployments/prod-gpt-4o/chat/completions"
    }


def test_an_endpoint_given_with_openai_or_a_path_is_not_doubled(
    facade: FacadeDriver, azure: LocalServer
) -> None:
    for endpoint in (azure.url + "/openai", azure.url + "/openai/"):
        client = azure_client(facade, azure_endpoint=endpoint, api_version=VERSION, api_key=KEY)
        client.create(model="gpt-4o", messages=[USER])
        assert last(azure).path == "/openai/deployments/gpt-4o/chat/completions"
    client = azure_client(
        facade, azure_endpoint=azure.url + "/proxy/", api_version=VERSION, api_key=KEY
    )
    call = client.raw._plan(None, {"model": "m", "messages": [USER]}, stream=None, timeout=None)
    assert call.http_request.url == (
        f"{azure.url}/proxy/openai/deployments/m/chat/completions?api-version={VERSION}"
    )


def test_a_deployment_that_is_a_path_step_is_refused_before_any_request(
    facade: FacadeDriver, azure: LocalServer
) -> None:
    # quoting keeps dots, and the HTTP libraries resolve `..`: the call would go elsewhere
    for name in ("..", "."):
        with pytest.raises(InvalidArgumentError) as info:
            azure_client(
                facade,
                azure_endpoint=azure.url,
                azure_deployment=name,
                api_version=VERSION,
                api_key=KEY,
            )
        assert info.value.field == "azure_deployment"
        client = azure_client(facade, azure_endpoint=azure.url, api_version=VERSION, api_key=KEY)
        with pytest.raises(InvalidArgumentError) as info:
            client.create(model=name, messages=[USER])
        assert info.value.field == "model"
        with pytest.raises(InvalidArgumentError):
            client.raw.with_options(azure_deployment=name)
    assert azure.requests == []


@pytest.mark.parametrize("cls", [AzureChat, AsyncAzureChat])
def test_an_endpoint_with_a_query_is_refused(cls: type[Any]) -> None:
    for endpoint in ("https://res.openai.azure.com?x=1", "https://res.openai.azure.com/#f"):
        with pytest.raises(InvalidArgumentError, match="without a query") as info:
            cls(azure_endpoint=endpoint, api_version=VERSION, api_key=KEY)
        assert info.value.field == "azure_endpoint"
    target = "https://res.openai.azure.com/openai/deployments/gpt-4o/chat/completions"
    with pytest.raises(InvalidArgumentError, match="azure_deployment=") as info:
        cls(azure_endpoint=target, api_version=VERSION, api_key=KEY)  # the portal's target URI
    assert info.value.field == "azure_endpoint"


@pytest.mark.parametrize("cls", [AzureChat, AsyncAzureChat])
def test_a_bad_credential_is_refused_without_being_repeated(cls: type[Any]) -> None:
    where = {"azure_endpoint": "https://res.openai.azure.com", "api_version": VERSION}
    for credential in ({"azure_ad_token": b"entra-SECRET-bytes"}, {"azure_ad_token": [KEY]}):
        with pytest.raises(InvalidArgumentError) as info:
            cls(**where, **credential)
        assert info.value.field == "azure_ad_token"
        assert "SECRET" not in str(info.value) and KEY not in str(info.value)
    for empty in ("", "  "):  # it would send no credential at all
        with pytest.raises(InvalidArgumentError, match="non-empty") as info:
            cls(**where, api_key=empty)
        assert info.value.field == "api_key"


@pytest.mark.parametrize("cls", [AzureChat, AsyncAzureChat])
def test_an_endpoint_without_a_host_names_azure_endpoint(cls: type[Any]) -> None:
    for endpoint in ("https://", "https:///openai"):
        with pytest.raises(InvalidArgumentError, match="host") as info:
            cls(azure_endpoint=endpoint, api_version=VERSION, api_key=KEY)
        assert info.value.field == "azure_endpoint"


def test_a_gateway_subscription_key_in_the_query_is_redacted_when_echoed(
    facade: FacadeDriver, azure: LocalServer
) -> None:
    secret = "apim-subscription-0123456789"  # Azure API Management's query-string key
    client = azure_client(
        facade,
        azure_endpoint=azure.url,
        api_version=VERSION,
        api_key=KEY,
        default_query={"subscription-key": secret},
        max_retries=0,
    )
    azure.enqueue(lambda request: ErrorReply(400, f"bad request {request.query}"))
    with pytest.raises(APIError) as info:
        client.create(model="m", messages=[USER])
    assert last(azure).query["subscription-key"] == secret  # sent, as asked
    assert "<redacted>" in str(info.value)
    for text in (str(info.value), repr(info.value), repr(client.raw), str(info.value.body)):
        assert secret not in text and KEY not in text


def test_an_api_version_cannot_inject_query_parameters() -> None:
    chat = AzureChat(
        azure_endpoint="https://res.openai.azure.com", api_version="v1&api-key=x#f", api_key=KEY
    )
    call = chat._plan(None, {"model": "m", "messages": [USER]}, stream=None, timeout=None)
    assert call.http_request.url.endswith("/chat/completions?api-version=v1%26api-key%3Dx%23f")


def test_the_environment_configures_the_whole_client(
    facade: FacadeDriver, azure: LocalServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AZURE_OPENAI_ENDPOINT", azure.url)
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", KEY)
    monkeypatch.setenv("OPENAI_API_VERSION", VERSION)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai-key-must-not-go-to-azure")

    client = azure_client(facade)
    client.create(model="gpt-4o", messages=[USER])

    sent = last(azure)
    assert sent.headers["api-key"] == KEY
    assert "sk-openai" not in repr(sent.headers)
    assert sent.query == {"api-version": VERSION}


def test_a_static_entra_token_is_a_bearer_token(facade: FacadeDriver, azure: LocalServer) -> None:
    client = azure_client(facade, azure_endpoint=azure.url, api_version=VERSION, azure_ad_token=KEY)

    client.create(model="gpt-4o", messages=[USER])

    assert last(azure).headers["authorization"] == f"Bearer {KEY}"
    assert "api-key" not in last(azure).headers
    assert "entra-token" in repr(client.raw) and KEY not in repr(client.raw)


def test_the_token_provider_is_called_per_attempt(facade: FacadeDriver, azure: LocalServer) -> None:
    calls: list[int] = []

    def get_token() -> str:
        calls.append(1)
        return KEY

    client = azure_client(
        facade, azure_endpoint=azure.url, api_version=VERSION, azure_ad_token_provider=get_token
    )
    azure.enqueue(ErrorReply(503, headers=RETRY_NOW))

    assert client.create(model="gpt-4o", messages=[USER]).text == "Echo: Hi"
    client.stream_all(model="gpt-4o", messages=[USER])

    assert len(calls) == 3  # two attempts, then one stream
    assert [request.headers["authorization"] for request in azure.requests] == [f"Bearer {KEY}"] * 3


def test_each_retry_sends_the_fresh_token(facade: FacadeDriver, server: LocalServer) -> None:
    counter = iter(range(100))

    def get_token() -> str:
        return f"entra-token-{next(counter):03d}"

    client = azure_client(
        facade,
        azure_endpoint=server.url,  # no key check: every token is accepted
        api_version=VERSION,
        azure_ad_token_provider=get_token,
    )
    server.enqueue(ErrorReply(503, headers=RETRY_NOW), ErrorReply(429, headers=RETRY_NOW))

    client.create(model="gpt-4o", messages=[USER])

    assert [request.headers["authorization"] for request in server.requests] == [
        "Bearer entra-token-000",
        "Bearer entra-token-001",
        "Bearer entra-token-002",
    ]


def test_async_azure_chat_awaits_an_async_token_provider(azure: LocalServer) -> None:
    calls: list[int] = []

    async def get_token() -> str:
        await asyncio.sleep(0)
        calls.append(1)
        return KEY

    async def main() -> str:
        async with AsyncAzureChat(
            azure_endpoint=azure.url, api_version=VERSION, azure_ad_token_provider=get_token
        ) as chat:
            azure.enqueue(ErrorReply(502, headers=RETRY_NOW))
            return (await chat.create(model="gpt-4o", messages=[USER])).text

    assert asyncio.run(main()) == "Echo: Hi"
    assert len(calls) == 2


def test_a_failing_token_provider_is_a_credential_error_naming_it(
    facade: FacadeDriver, azure: LocalServer
) -> None:
    def get_token() -> str:
        raise TimeoutError("the identity endpoint did not answer")

    client = azure_client(
        facade, azure_endpoint=azure.url, api_version=VERSION, azure_ad_token_provider=get_token
    )
    with pytest.raises(CredentialError, match=r"azure_ad_token_provider provider .*get_token"):
        client.create(model="gpt-4o", messages=[USER])
    assert azure.requests == []


def test_a_key_provider_rotates_the_api_key_header(
    facade: FacadeDriver, server: LocalServer
) -> None:
    keys = iter(["azure-key-one-000000", "azure-key-two-000000"])
    client = azure_client(
        facade, azure_endpoint=server.url, api_version=VERSION, api_key=lambda: next(keys)
    )
    server.enqueue(ErrorReply(503, headers=RETRY_NOW))

    client.create(model="gpt-4o", messages=[USER])

    assert [r.headers["api-key"] for r in server.requests] == [
        "azure-key-one-000000",
        "azure-key-two-000000",
    ]


def test_content_filter_results_are_reachable(facade: FacadeDriver, azure: LocalServer) -> None:
    client = azure_client(facade, azure_endpoint=azure.url, api_version=VERSION, api_key=KEY)

    resp = client.create(model="gpt-4o", messages=[USER])
    chunks = client.stream_all(model="gpt-4o", messages=[USER])

    [prompt_filter] = resp.extra["prompt_filter_results"]
    assert prompt_filter["content_filter_results"]["hate"] == {
        "filtered": False,
        "severity": "safe",
    }
    assert resp.choices[0].extra["content_filter_results"]["violence"]["filtered"] is False
    first = chunks[0]  # Azure's first chunk: no choices, the prompt's filter results
    assert first.choices == [] and first.text == ""
    assert first.extra["prompt_filter_results"][0]["prompt_index"] == 0
    assert "content_filter_results" in chunks[1].choices[0].extra
    assert "".join(chunk.text for chunk in chunks) == "Echo: Hi"


def test_stored_completions_go_to_the_resource_not_the_deployment(
    facade: FacadeDriver, azure: LocalServer
) -> None:
    client = azure_client(
        facade,
        azure_endpoint=azure.url,
        azure_deployment="prod",
        api_version=VERSION,
        api_key=KEY,
    )
    made = client.create(model="gpt-4o", messages=[USER], store=True)

    got = facade.call(lambda: client.raw.stored.retrieve(made.id))

    assert got.id == made.id
    sent = last(azure)
    assert (sent.method, sent.path) == ("GET", f"/openai/chat/completions/{made.id}")
    assert sent.query == {"api-version": VERSION}
    assert sent.headers["api-key"] == KEY


# ---------------------------------------------------------------- what is required, and said


@pytest.mark.parametrize("cls", [AzureChat, AsyncAzureChat])
@pytest.mark.parametrize(
    ("missing", "variable"),
    [
        ("azure_endpoint", "AZURE_OPENAI_ENDPOINT"),
        ("api_version", "OPENAI_API_VERSION"),
        ("api_key", "AZURE_OPENAI_API_KEY"),
    ],
)
def test_a_missing_setting_names_the_argument_and_its_variable(
    cls: type[Any], missing: str, variable: str
) -> None:
    settings = {"azure_endpoint": "https://res.openai.azure.com", "api_version": VERSION}
    settings["api_key"] = KEY
    del settings[missing]

    with pytest.raises(InvalidArgumentError) as info:
        cls(**settings)

    assert info.value.field == missing
    assert variable in str(info.value)
    assert KEY not in str(info.value)


@pytest.mark.parametrize("cls", [AzureChat, AsyncAzureChat])
def test_credentials_are_mutually_exclusive(cls: type[Any]) -> None:
    with pytest.raises(InvalidArgumentError, match="only one of") as info:
        cls(
            azure_endpoint="https://res.openai.azure.com",
            api_version=VERSION,
            api_key=KEY,
            azure_ad_token="token-0123456789",
        )
    assert info.value.field == "azure_ad_token"
    with pytest.raises(InvalidArgumentError, match="not both"):
        cls(
            azure_endpoint="https://res.openai.azure.com",
            base_url="https://gw.example.com/openai",
            api_version=VERSION,
            api_key=KEY,
        )


def test_an_environment_token_wins_over_an_environment_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", KEY)
    monkeypatch.setenv("AZURE_OPENAI_AD_TOKEN", "entra-from-env-0123456")
    chat = AzureChat(azure_endpoint="https://res.openai.azure.com", api_version=VERSION)
    call = chat._plan(None, {"model": "m", "messages": [USER]}, stream=None, timeout=None)
    assert call.http_request.headers["Authorization"] == "Bearer entra-from-env-0123456"
    assert "api-key" not in call.http_request.headers


def test_sync_azure_chat_refuses_an_async_token_provider() -> None:
    async def get_token() -> str:
        return "never"

    with pytest.raises(InvalidArgumentError, match="async function") as info:
        AzureChat(
            azure_endpoint="https://res.openai.azure.com",
            api_version=VERSION,
            azure_ad_token_provider=get_token,
        )
    assert info.value.field == "azure_ad_token_provider"


def test_a_gateway_base_url_replaces_the_endpoint() -> None:
    chat = AzureChat(base_url="https://gw.example.com/openai", api_version=VERSION, api_key=KEY)
    call = chat._plan(None, {"model": "gpt-4o", "messages": [USER]}, stream=None, timeout=None)
    assert call.http_request.url == (
        f"https://gw.example.com/openai/deployments/gpt-4o/chat/completions?api-version={VERSION}"
    )


# ---------------------------------------------------------------- copies, pickles, reprs


def test_with_options_switches_deployment_version_and_credential(
    facade: FacadeDriver, azure: LocalServer
) -> None:
    client = azure_client(facade, azure_endpoint=azure.url, api_version=VERSION, api_key=KEY)

    other = client.with_options(azure_deployment="dep-2", api_version="2025-01-01-preview")
    other.create(model="gpt-4o", messages=[USER])
    entra = client.with_options(azure_ad_token_provider=lambda: KEY)
    entra.create(model="gpt-4o", messages=[USER])

    first, second = azure.requests
    assert first.path == "/openai/deployments/dep-2/chat/completions"
    assert first.query == {"api-version": "2025-01-01-preview"}
    assert first.headers["api-key"] == KEY
    assert second.headers["authorization"] == f"Bearer {KEY}" and "api-key" not in second.headers
    assert client.raw.deployment is None  # the original is left as it was


@pytest.mark.parametrize("cls", [AzureChat, AsyncAzureChat])
def test_a_pickle_drops_the_key_and_reads_azures_variable_back(
    cls: type[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    chat = cls(
        azure_endpoint="https://res.openai.azure.com",
        azure_deployment="dep",
        api_version=VERSION,
        api_key=KEY,
    )
    data = pickle.dumps(chat)
    assert KEY.encode() not in data

    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai-must-not-be-used")
    with pytest.raises(Exception, match="AZURE_OPENAI_API_KEY"):
        pickle.loads(data)
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", "azure-key-from-env-000")
    clone = pickle.loads(data)
    call = clone._plan(None, {"model": "m", "messages": [USER]}, stream=None, timeout=None)
    assert call.http_request.headers["api-key"] == "azure-key-from-env-000"
    assert call.http_request.url.startswith("https://res.openai.azure.com/openai/deployments/dep/")
    assert clone.deployment == "dep"


def test_reprs_say_how_the_client_authenticates_never_with_what() -> None:
    chat = AzureChat(
        azure_endpoint="https://res.openai.azure.com", api_version=VERSION, api_key=KEY
    )
    text = repr(chat)
    assert "auth=api-key" in text and KEY not in text and VERSION in text
    assert KEY not in repr(chat.config)
    provided = AzureChat(
        azure_endpoint="https://res.openai.azure.com",
        api_version=VERSION,
        azure_ad_token_provider=lambda: KEY,
    )
    assert isinstance(provided.config.api_key, KeyProvider)
    assert "azure_ad_token_provider" in repr(provided)


# ---------------------------------------------------------------- the official SDK, side by side


def key_from_vault() -> str:
    return KEY


@pytest.mark.parametrize("deployment", [None, "prod-gpt-4o"])
@pytest.mark.parametrize("credential", ["api_key", "azure_ad_token", "azure_ad_token_provider"])
def test_the_same_request_as_the_official_azure_client(
    azure: LocalServer, deployment: str | None, credential: str
) -> None:
    openai = pytest.importorskip("openai")
    value = key_from_vault if credential == "azure_ad_token_provider" else KEY
    settings = {
        "azure_endpoint": azure.url,
        "azure_deployment": deployment,
        "api_version": VERSION,
        credential: value,
        "max_retries": 0,
    }
    official = openai.AzureOpenAI(**settings)
    ours = AzureChat(**settings)
    with official, ours:
        official.chat.completions.create(model="gpt-4o", messages=[USER])  # type: ignore[list-item]
        ours.create(model="gpt-4o", messages=[USER])

    theirs, mine = azure.requests
    assert (mine.method, mine.path, mine.query) == (theirs.method, theirs.path, theirs.query)
    for name in ("api-key", "authorization"):
        assert mine.headers.get(name) == theirs.headers.get(name), name
    assert mine.json() == theirs.json()


# ---------------------------------------------------------------- signatures, docs, imports


@pytest.mark.parametrize("cls", [AzureChat, AsyncAzureChat])
def test_constructors_and_with_options_show_every_azure_setting(cls: type[Any]) -> None:
    parameters = inspect.signature(cls).parameters
    assert list(parameters) == [
        "session",
        "transport",
        "pool_maxsize",
        "verify",
        *AZURE_SETTING_NAMES,
    ]
    assert list(inspect.signature(cls.with_options).parameters) == ["self", *AZURE_SETTING_NAMES]
    doc = inspect.cleandoc(cls.__doc__ or "")  # Python 3.13 dedents docstrings itself
    for name in AZURE_SETTING_NAMES:
        assert doc.count(f"\n    {name}: ") == 1, name
    assert "AZURE_OPENAI_API_KEY" in doc and "**settings" not in doc


def test_each_azure_client_loads_only_its_own_http_library() -> None:
    script = (
        "import json, sys, chatlib\n"
        "seen = lambda: ['aiohttp' in sys.modules, 'requests' in sys.modules]\n"
        "steps = [seen()]\n"
        "from chatlib.azure import AzureChat\n"
        "steps.append(seen())\n"
        "chatlib.AsyncAzureChat\n"
        "steps.append(seen())\n"
        "print(json.dumps(steps))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert json.loads(done.stdout) == [[False, False], [False, True], [True, True]]
