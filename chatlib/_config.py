"""Frozen client settings, from arguments and the environment.

The API key is held in a `Secret`, whose `repr` never shows it and which never
travels in a pickle; a key provider (`api_key=callable`) in a `KeyProvider`, which shows
only its function's name.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Mapping
from typing import Any, Union, cast

import attrs

if sys.version_info >= (3, 11):  # typing has them: typing_extensions is not loaded
    from typing import TypedDict, Unpack
else:  # pragma: no cover
    from typing_extensions import TypedDict, Unpack

from chatlib._auth import KeyFunction, KeyProvider, LostProvider, check_provider
from chatlib._checks import check_header_value, check_headers
from chatlib._headers import is_credential, is_secret_query, redact, redact_query, safe_url
from chatlib.errors import InvalidArgumentError, MissingAPIKeyError

__all__ = [
    "DEFAULT_BASE_URL",
    "SETTING_NAMES",
    "ClientConfig",
    "ClientSettings",
    "Secret",
    "Timeout",
    "TimeoutLike",
    "check_setting_names",
    "client_repr",
]

DEFAULT_BASE_URL = "https://api.openai.com/v1"
DEFAULT_MAX_BODY_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_LINE_BYTES = 16 * 1024 * 1024


class Secret:
    """A string that does not show itself: `repr`/`str` print `'****'`; pickles drop it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The secret value, for the one place that must send it."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('****')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __reduce__(self) -> Any:
        raise TypeError(
            "an API key is never pickled; chatlib clients drop it when pickled and read "
            "OPENAI_API_KEY again (or take api_key=...) on the other side"
        )


# Longer than any call can last; beyond ~9.2e9 s a socket timeout or a lock wait overflows.
_NO_LIMIT_ABOVE = 1e9


def _check_seconds(name: str, value: float | None) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise InvalidArgumentError(f"timeout.{name}", f"must be a positive number, got {value!r}")


@attrs.frozen
class Timeout:
    """Time limits of a call, in seconds.

    Attributes:
        connect: to open a connection.
        read: the longest silence allowed between two received bytes (also mid-stream).
        total: the whole call, retries and their waits included (for a stream: until it ends).

    `None` disables one limit; the defaults bound all three. A plain number `n` given
    where a timeout is expected means `Timeout(connect=n, read=n, total=n)`. Infinity, or
    any limit over a billion seconds (about 31 years), means no limit: it becomes `None`
    (sockets and timers refuse such values).
    """

    connect: float | None = 10.0
    read: float | None = 600.0
    total: float | None = 1800.0

    def __attrs_post_init__(self) -> None:
        for name in ("connect", "read", "total"):
            value = getattr(self, name)
            _check_seconds(name, value)
            if value is not None and value > _NO_LIMIT_ABOVE:
                object.__setattr__(self, name, None)

    @classmethod
    def of(cls, value: TimeoutLike) -> Timeout:
        """Coerce a number or a `Timeout` into a `Timeout`."""
        if isinstance(value, Timeout):
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InvalidArgumentError("timeout", f"must be a number or a Timeout, got {value!r}")
        _check_seconds("total", value)
        return cls(connect=value, read=value, total=value)


TimeoutLike = Union[float, Timeout]


def _byte_limit(name: str, value: int | None, default: int) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidArgumentError(name, f"must be a positive number of bytes, got {value!r}")
    return value


def _env(name: str) -> str | None:
    value = os.environ.get(name)
    return value if value else None


class ClientSettings(TypedDict, total=False):
    """The settings every client takes as keyword arguments, and `with_options` changes.

    A setting left out (or `None`) comes from the environment where one is named, else
    takes its default.

    Attributes:
        api_key: The bearer key; default `OPENAI_API_KEY`. Never shown, logged or pickled.
            Or a function returning the key, called before every attempt (so a rotated key
            is picked up on a retry); on the async clients it may be `async`.
        base_url: The API root, e.g. `"http://127.0.0.1:8080/v1"`; default
            `OPENAI_BASE_URL`, else OpenAI's. A query string (Azure's `?api-version=`) is
            kept after the path.
        organization: The `OpenAI-Organization` header; default `OPENAI_ORG_ID`. `""`
            sends none, whatever the environment says.
        project: The `OpenAI-Project` header; default `OPENAI_PROJECT_ID`. `""` sends
            none, whatever the environment says.
        default_headers: Headers sent with every request.
        default_query: Query parameters sent with every request.
        timeout: A `Timeout`, or a number of seconds for all three limits; default
            `Timeout(connect=10, read=600, total=1800)`.
        max_retries: Retries after the first attempt (default 2); see the retry policy.
        require_done: Raise `IncompleteStreamError` for a stream that ends without
            `data: [DONE]` (default `True`); `False` accepts such streams.
        max_body_bytes: The largest non-streamed body accepted (default 64 MiB).
        max_line_bytes: The largest line or event of a stream accepted (default 16 MiB).
    """

    api_key: str | KeyFunction | None
    base_url: str | None
    organization: str | None
    project: str | None
    default_headers: Mapping[str, str] | None
    default_query: Mapping[str, str] | None
    timeout: TimeoutLike | None
    max_retries: int | None
    require_done: bool | None
    max_body_bytes: int | None
    max_line_bytes: int | None


SETTING_NAMES: tuple[str, ...] = tuple(ClientSettings.__annotations__)
"""The settings, in the order constructors list them."""


def check_setting_names(names: Iterable[str], where: str) -> None:
    """Raise `TypeError` for a keyword that is not a setting, suggesting the closest one."""
    for name in names:
        if name not in ClientSettings.__annotations__:
            import difflib  # an error path only

            close = difflib.get_close_matches(name, SETTING_NAMES, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise TypeError(f"{where} got an unexpected keyword argument {name!r}{hint}")


@attrs.frozen
class ClientConfig:
    """Everything a client needs to build requests: resolved once, never mutated.

    Its fields are the `ClientSettings`, resolved (the key shows as `Secret('****')`, a key
    provider as `KeyProvider(<function name>)`).
    """

    base_url: str
    api_key: Secret | KeyProvider | None = attrs.field(default=None, repr=False)
    organization: str | None = None
    project: str | None = None
    default_headers: Mapping[str, str] = attrs.field(
        factory=dict, repr=lambda headers: repr(redact(headers))
    )
    default_query: Mapping[str, str] = attrs.field(
        factory=dict, repr=lambda query: repr(redact_query(query))
    )
    timeout: Timeout = attrs.field(factory=Timeout)
    max_retries: int = 2
    require_done: bool = True
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES

    @classmethod
    def resolve(cls, **settings: Unpack[ClientSettings]) -> ClientConfig:
        """Combine arguments with `OPENAI_API_KEY`, `OPENAI_BASE_URL`, `OPENAI_ORG_ID` and
        `OPENAI_PROJECT_ID`; arguments win.

        Raises:
            MissingAPIKeyError: no key anywhere while the base URL is OpenAI's own.
            InvalidArgumentError: a malformed argument, named.
            TypeError: a keyword that is not a setting.
        """
        check_setting_names(settings, "ClientConfig.resolve()")
        url = settings.get("base_url") or _env("OPENAI_BASE_URL") or DEFAULT_BASE_URL
        if not isinstance(url, str):
            raise InvalidArgumentError("base_url", f"must be a string, got {type(url).__name__}")
        if not url.startswith(("http://", "https://")):
            raise InvalidArgumentError(
                "base_url", f"must start with http:// or https://, got {safe_url(url)!r}"
            )
        key: Any = settings.get("api_key")
        if key is None:
            key = _env("OPENAI_API_KEY")
        if callable(key):
            key = check_provider("api_key", key, allow_async=True)
        elif key is not None:
            if not isinstance(key, str):
                raise InvalidArgumentError(
                    "api_key", f"must be a string or a function, got {type(key).__name__}"
                )
            # A key read from a file keeps its newline; spaces around a key are never part of it.
            key = check_header_value("api_key", key.strip())
        if key and "@" in url.split("/", 3)[2]:
            raise InvalidArgumentError(
                "base_url",
                "carries credentials (user:password@) while an API key is set: both would be "
                "the Authorization header; give one of them",
            )
        organization, project = settings.get("organization"), settings.get("project")
        for name, value in (("organization", organization), ("project", project)):
            if value is not None:
                check_header_value(name, value)
        default_headers = settings.get("default_headers")
        if default_headers is not None:
            check_headers("default_headers", default_headers)
        default_query = settings.get("default_query")
        if default_query is not None and not isinstance(default_query, Mapping):
            raise InvalidArgumentError(
                "default_query", f"must be a mapping, got {type(default_query).__name__}"
            )
        if not key and url.rstrip("/") == DEFAULT_BASE_URL:
            raise MissingAPIKeyError(
                "No API key: pass api_key=... or set the OPENAI_API_KEY environment variable. "
                "(A server of your own needs none: pass base_url=..., or set OPENAI_BASE_URL.)"
            )
        retries = settings.get("max_retries")
        retries = 2 if retries is None else retries
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise InvalidArgumentError("max_retries", f"must be an int >= 0, got {retries!r}")
        timeout = settings.get("timeout")
        require_done = settings.get("require_done")
        return cls(
            base_url=url.rstrip("/"),
            api_key=key if isinstance(key, KeyProvider) else Secret(key) if key else None,
            # As for the key, only `None` reads the environment: `""` turns the header off.
            organization=_env("OPENAI_ORG_ID") if organization is None else organization,
            project=_env("OPENAI_PROJECT_ID") if project is None else project,
            default_headers=dict(default_headers or {}),
            default_query=dict(default_query or {}),
            timeout=Timeout() if timeout is None else Timeout.of(timeout),
            max_retries=retries,
            require_done=True if require_done is None else bool(require_done),
            max_body_bytes=_byte_limit(
                "max_body_bytes", settings.get("max_body_bytes"), DEFAULT_MAX_BODY_BYTES
            ),
            max_line_bytes=_byte_limit(
                "max_line_bytes", settings.get("max_line_bytes"), DEFAULT_MAX_LINE_BYTES
            ),
        )

    def settings(self) -> ClientSettings:
        """These settings in the form `resolve` takes (the key revealed: keep it private)."""
        values: dict[str, Any] = attrs.asdict(self, recurse=False)
        key = self.api_key
        values["api_key"] = key.reveal() if isinstance(key, Secret) else key
        return cast(ClientSettings, values)

    def with_changes(self, **changes: Unpack[ClientSettings]) -> ClientConfig:
        """A copy with some settings changed (`None` keeps the current one), checked as
        the constructor checks them; `default_headers`/`default_query` are merged in."""
        check_setting_names(changes, "with_options()")
        merged: dict[str, Any] = dict(self.settings())
        for name, value in changes.items():
            if value is None:
                continue
            if name in ("default_headers", "default_query"):
                value = {**merged[name], **value}  # type: ignore[dict-item]
            merged[name] = value
        return ClientConfig.resolve(**merged)

    def pickle_state(self) -> dict[str, Any]:
        """What a pickled client carries: every setting but a fixed API key (a key provider
        travels if it pickles, see `KeyProvider`) and the credential-like default headers
        and query parameters (their names travel, so unpickling can say what is missing)."""
        state = attrs.asdict(self, recurse=False)
        key = self.api_key
        state["api_key"] = key if isinstance(key, KeyProvider) else None
        state["had_api_key"] = isinstance(key, Secret)
        headers = {k: v for k, v in self.default_headers.items() if not is_credential(k)}
        query = {k: v for k, v in self.default_query.items() if not is_secret_query(k)}
        dropped = [f"default_headers[{k!r}]" for k in self.default_headers if k not in headers]
        dropped += [f"default_query[{k!r}]" for k in self.default_query if k not in query]
        if dropped:
            state.update(default_headers=headers, default_query=query, dropped_secrets=dropped)
        return state

    @classmethod
    def from_pickle_state(
        cls, state: dict[str, Any], *, key_env: str = "OPENAI_API_KEY", key_setting: str = "api_key"
    ) -> ClientConfig:
        """Rebuild settings on the far side of a pickle; a fixed key is read from the
        environment variable `key_env` (else the error names `key_setting`)."""
        state = dict(state)
        had_key = state.pop("had_api_key")
        state.pop("custom_transport", None)  # written by chatlib 0.1.0
        dropped = state.pop("dropped_secrets", None)
        if dropped:
            raise MissingAPIKeyError(
                f"This client was pickled with credentials in {', '.join(dropped)}, which "
                "never travel in a pickle: build the client in this process with them"
            )
        provider = state.get("api_key")
        if isinstance(provider, LostProvider):
            raise provider.error()
        if had_key:
            key = _env(key_env)
            if key is None:
                raise MissingAPIKeyError(
                    "This client was pickled: its API key did not travel with it (keys are "
                    f"never pickled). Set {key_env} in this process, or build the client here "
                    f"with {key_setting}=..."
                )
            state["api_key"] = Secret(key)
        return cls(**state)


def client_repr(name: str, config: ClientConfig) -> str:
    """How a client shows itself: where it points and how, never its key."""
    key = config.api_key
    shown = "none" if key is None else "set" if isinstance(key, Secret) else repr(key)
    return (
        f"{name}(base_url={safe_url(config.base_url)!r}, api_key={shown}, "
        f"max_retries={config.max_retries}, timeout={config.timeout!r})"
    )
