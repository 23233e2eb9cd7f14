"""Azure OpenAI: `AzureChat` and `AsyncAzureChat`, the two clients with Azure's settings.

They are `SyncChat` and `AsyncChat` (same methods, streams, stored completions, errors)
whose requests go to `{azure_endpoint}/openai/deployments/{deployment}/chat/completions
?api-version=...`, with the key in an `api-key` header or a Microsoft Entra ID token as
`Authorization: Bearer`. With no `azure_deployment`, each call's `model` names the
deployment, so one client serves every deployment of a resource.

The settings are resolved here (arguments, then `AZURE_OPENAI_ENDPOINT`,
`OPENAI_API_VERSION`, `AZURE_OPENAI_API_KEY`, `AZURE_OPENAI_AD_TOKEN`); where the requests go
and how the credential is sent is the core's `Endpoint`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urlsplit

import attrs

if sys.version_info >= (3, 11):  # typing has them: typing_extensions is not loaded
    from typing import Self, Unpack
else:  # pragma: no cover
    from typing_extensions import Self, Unpack

from chatlib._auth import KeyFunction, KeyProvider
from chatlib._checks import check_header_value
from chatlib._client import ClientBase
from chatlib._config import SETTING_NAMES, ClientConfig, ClientSettings, Secret
from chatlib._endpoint import Endpoint
from chatlib._headers import safe_url
from chatlib._params import spell_out_settings
from chatlib.errors import InvalidArgumentError

if TYPE_CHECKING:
    from chatlib._azure_async import AsyncAzureChat
    from chatlib._azure_sync import AzureChat

__all__ = ["AsyncAzureChat", "AzureChat", "AzureClient", "AzureSettings"]

_CREDENTIALS = ("api_key", "azure_ad_token", "azure_ad_token_provider")
# How each credential is sent, and where a fixed one is read again after unpickling.
_KEY = Endpoint(credential_header="api-key", bearer=False, key_env="AZURE_OPENAI_API_KEY")
_TOKEN = Endpoint(key_env="AZURE_OPENAI_AD_TOKEN")


class AzureSettings(ClientSettings, total=False):
    """The settings of the Azure clients: Azure's own, then those of every client
    (`ClientSettings`). A setting left out (or `None`) comes from its environment variable.

    Attributes:
        azure_endpoint: The resource's endpoint, e.g. `"https://my-resource.openai.azure.com"`;
            default `AZURE_OPENAI_ENDPOINT`. Required (or a `base_url` ending in `/openai`).
        azure_deployment: The deployment every call goes to. Left out, each call's `model`
            names the deployment (`/openai/deployments/{model}/chat/completions`), so one
            client serves every deployment.
        api_version: The `api-version` query parameter of every request, e.g.
            `"2024-10-21"`; default `OPENAI_API_VERSION`. Required.
        api_key: The resource's key, sent as the `api-key` header; default
            `AZURE_OPENAI_API_KEY`. Or a function returning it, called before every attempt.
            Never shown, logged or pickled.
        azure_ad_token: A Microsoft Entra ID token, sent as `Authorization: Bearer`; default
            `AZURE_OPENAI_AD_TOKEN` (which wins over `AZURE_OPENAI_API_KEY`).
        azure_ad_token_provider: A function returning an Entra ID token, called before every
            attempt, so the token is refreshed on retries (on `AsyncAzureChat` it may be
            `async`). Give one of `api_key`, `azure_ad_token` and `azure_ad_token_provider`.
        base_url: Instead of `azure_endpoint`: the full API root, e.g. an API gateway's
            `"https://gateway.example.com/openai"`; the deployment path follows it.
    """

    azure_endpoint: str | None
    azure_deployment: str | None
    api_version: str | None
    azure_ad_token: str | None
    azure_ad_token_provider: KeyFunction | None


AZURE_SETTING_NAMES: tuple[str, ...] = (
    "azure_endpoint",
    "azure_deployment",
    "api_version",
    *_CREDENTIALS,
    *SETTING_NAMES[1:],
)
"""The settings of the Azure clients, in the order their constructors list them."""
assert set(AZURE_SETTING_NAMES) == set(AzureSettings.__annotations__)


def _env(name: str) -> str | None:
    return os.environ.get(name) or None


def _text(field: str, value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidArgumentError(field, f"must be a non-empty string, got {value!r}")
    return value.strip()


def _secret(field: str, value: object) -> str:
    """`_text` for a credential: the message names its type, never the value."""
    if not isinstance(value, str) or not value.strip():
        shown = "an empty string" if isinstance(value, str) else type(value).__name__
        raise InvalidArgumentError(field, f"must be a non-empty string, got {shown}")
    return value.strip()


def _endpoint_url(field: str, value: object) -> str:
    url = _text(field, value)
    if not url.startswith(("http://", "https://")):
        raise InvalidArgumentError(field, f"must start with https://, got {safe_url(url)!r}")
    if not urlsplit(url).hostname:
        raise InvalidArgumentError(field, f"must name a host, got {safe_url(url)!r}")
    if "?" in url or "#" in url:
        # the paths are appended to it: a query would swallow them
        raise InvalidArgumentError(
            field, f"must be the resource's URL, without a query or fragment, got {safe_url(url)!r}"
        )
    url = url.rstrip("/")
    path = urlsplit(url).path.lower()
    if "/deployments/" in path or path.endswith("/chat/completions"):
        # the portal's "target URI", pasted whole: the paths would be appended to it
        raise InvalidArgumentError(
            field,
            "must be the resource's URL (https://<resource>.openai.azure.com), not a "
            f"deployment's; give the deployment as azure_deployment=..., got {safe_url(url)!r}",
        )
    # an endpoint copied with its `/openai` (as a gateway URL often is) is not doubled
    return url if url.lower().endswith("/openai") else url + "/openai"


def _deployment(field: str, value: object) -> str:
    name = _text(field, value)
    if name in (".", ".."):
        # quoting leaves dots alone and the HTTP libraries resolve the step: `..` would send
        # the call to `/openai/chat/completions`
        raise InvalidArgumentError(field, f"cannot be {name!r} (a path step)")
    return name


def _credential(values: dict[str, Any], endpoint: Endpoint, *, from_environment: bool) -> Endpoint:
    """Move the one credential given (else, at construction, the environment's) into
    `values["api_key"]`; the endpoint that sends it."""
    key, token, provider = (values.pop(name, None) for name in _CREDENTIALS)
    given = [
        name
        for name, value in zip(_CREDENTIALS, (key, token, provider), strict=True)
        if value is not None
    ]
    if len(given) > 1:
        raise InvalidArgumentError(
            given[1], f"give only one of {', '.join(_CREDENTIALS)} (got {' and '.join(given)})"
        )
    if not given and from_environment:
        token = _env(_TOKEN.key_env)
        key = None if token is not None else _env(_KEY.key_env)
    if key is not None:
        # an empty key would send no credential at all (Azure always wants one)
        values["api_key"] = _secret("api_key", key) if isinstance(key, str) else key
        return _sent_as(endpoint, _KEY, "api_key")
    if token is not None:
        values["api_key"] = check_header_value("azure_ad_token", _secret("azure_ad_token", token))
        return _sent_as(endpoint, _TOKEN, "azure_ad_token")
    if provider is not None:
        if not callable(provider):
            raise InvalidArgumentError(
                "azure_ad_token_provider",
                f"must be a function returning a token, got {type(provider).__name__}",
            )
        values["api_key"] = KeyProvider(provider, "azure_ad_token_provider")
        return _sent_as(endpoint, _TOKEN, "azure_ad_token_provider")
    if from_environment:
        raise InvalidArgumentError(
            "api_key",
            "Azure OpenAI needs a credential: api_key=... (or AZURE_OPENAI_API_KEY), "
            "azure_ad_token=... (or AZURE_OPENAI_AD_TOKEN) or azure_ad_token_provider=...",
        )
    return endpoint


def _sent_as(endpoint: Endpoint, how: Endpoint, setting: str) -> Endpoint:
    """`endpoint`, sending its credential (given as `setting`) the way `how` does."""
    return attrs.evolve(
        endpoint,
        credential_header=how.credential_header,
        bearer=how.bearer,
        key_env=how.key_env,
        key_setting=setting,
    )


def _with_version(values: dict[str, Any], version: object) -> None:
    query = dict(values.get("default_query") or {})
    query["api-version"] = check_header_value("api_version", _text("api_version", version))
    values["default_query"] = query


def resolve_azure(settings: Mapping[str, Any]) -> tuple[ClientSettings, Endpoint]:
    """The `ClientSettings` and the `Endpoint` of a new Azure client.

    Raises:
        InvalidArgumentError: a missing endpoint, API version or credential, or two
            credentials, naming the argument (and its environment variable).
    """
    values = dict(settings)
    endpoint_url, base_url = values.pop("azure_endpoint", None), values.get("base_url")
    deployment = values.pop("azure_deployment", None)
    version = values.pop("api_version", None) or _env("OPENAI_API_VERSION")
    endpoint = _credential(values, Endpoint(azure=True), from_environment=True)
    if version is None:
        raise InvalidArgumentError(
            "api_version",
            "is required: pass api_version=... (e.g. '2024-10-21') or set OPENAI_API_VERSION",
        )
    _with_version(values, version)
    if base_url is not None and endpoint_url is not None:
        raise InvalidArgumentError("base_url", "give azure_endpoint or base_url, not both")
    if base_url is None:
        endpoint_url = endpoint_url or _env("AZURE_OPENAI_ENDPOINT")
        if endpoint_url is None:
            raise InvalidArgumentError(
                "azure_endpoint",
                "is required: pass azure_endpoint='https://<resource>.openai.azure.com' "
                "or set AZURE_OPENAI_ENDPOINT",
            )
        values["base_url"] = _endpoint_url("azure_endpoint", endpoint_url)
    if deployment is not None:
        endpoint = attrs.evolve(endpoint, deployment=_deployment("azure_deployment", deployment))
    return _client_settings(values), endpoint


def _client_settings(values: dict[str, Any]) -> ClientSettings:
    settings: ClientSettings = {}
    settings.update(values)  # type: ignore[typeddict-item]
    return settings


def azure_changes(
    endpoint: Endpoint, changes: Mapping[str, Any]
) -> tuple[ClientSettings, Endpoint]:
    """What `with_options(**changes)` changes on an Azure client: the `ClientSettings`
    changes, and its new `Endpoint` (a new credential may change how it is sent)."""
    values = {name: value for name, value in changes.items() if value is not None}
    endpoint_url = values.pop("azure_endpoint", None)
    if endpoint_url is not None:
        if "base_url" in values:
            raise InvalidArgumentError("base_url", "give azure_endpoint or base_url, not both")
        values["base_url"] = _endpoint_url("azure_endpoint", endpoint_url)
    deployment = values.pop("azure_deployment", None)
    if deployment is not None:
        endpoint = attrs.evolve(endpoint, deployment=_deployment("azure_deployment", deployment))
    version = values.pop("api_version", None)
    if version is not None:
        _with_version(values, version)
    endpoint = _credential(values, endpoint, from_environment=False)
    return _client_settings(values), endpoint


def azure_repr(name: str, config: ClientConfig, endpoint: Endpoint) -> str:
    """How an Azure client shows itself: where it points and how it authenticates."""
    key = config.api_key
    if key is None:
        auth = "none"
    elif isinstance(key, Secret):
        auth = "api-key" if endpoint.credential_header == "api-key" else "entra-token"
    else:
        auth = repr(key)
    return (
        f"{name}(base_url={safe_url(config.base_url)!r}, "
        f"deployment={endpoint.deployment!r}, "
        f"api_version={config.default_query.get('api-version')!r}, auth={auth}, "
        f"max_retries={config.max_retries}, timeout={config.timeout!r})"
    )


class AzureClient(ClientBase[Any]):
    """What `AzureChat` and `AsyncAzureChat` add to their facade: Azure's settings, the
    deployment, `with_options` taking Azure's settings, and a `repr` that says how it
    authenticates."""

    _settings_type: ClassVar[Any] = AzureSettings
    _setting_names: ClassVar[tuple[str, ...]] = AZURE_SETTING_NAMES

    def _setup(self, settings: Any, **transport: Any) -> None:
        """The constructor body of both Azure clients: Azure's settings resolved, then the
        facade's own."""
        client_settings, self._endpoint = resolve_azure(settings)
        super()._setup(client_settings, **transport)

    @property
    def deployment(self) -> str | None:
        """The deployment every call goes to, or `None`: each call's `model` names it."""
        return self._endpoint.deployment

    def with_options(self, **changes: Unpack[AzureSettings]) -> Self:
        """A copy with other settings (`AzureSettings`: a deployment, an API version, another
        credential...) that shares this client's connection pool; `None` keeps a setting."""
        settings, endpoint = azure_changes(self._endpoint, changes)
        clone = super().with_options(**settings)
        clone._endpoint = endpoint
        return clone

    def __repr__(self) -> str:
        return azure_repr(type(self).__name__, self._config, self._endpoint)


spell_out_settings(AzureClient.with_options, AZURE_SETTING_NAMES, AzureSettings)


def __getattr__(name: str) -> Any:
    # Each client loads its own HTTP library only: `AzureChat` never imports aiohttp.
    if name == "AzureChat":
        from chatlib._azure_sync import AzureChat

        return AzureChat
    if name == "AsyncAzureChat":
        from chatlib._azure_async import AsyncAzureChat

        return AsyncAzureChat
    raise AttributeError(f"module 'chatlib.azure' has no attribute {name!r}")
