"""Credentials: a fixed key, or a provider called before every attempt. Pure.

A provider (`api_key=callable`, Azure's `azure_ad_token_provider`) is held in a
`KeyProvider`, which shows only the function's name and travels in a pickle when the
function does. The flow asks the facade to call it (`GetCredential`, in `_flow.py`) once per
attempt, and `ProvidedCredential.header` turns what it returned into the request header, or
into a `CredentialError` naming the provider.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Union

import attrs

from chatlib._checks import check_header_value
from chatlib._endpoint import Endpoint
from chatlib.errors import CredentialError, InvalidArgumentError, MissingAPIKeyError

__all__ = [
    "KeyFunction",
    "KeyProvider",
    "LostProvider",
    "ProvidedCredential",
    "function_name",
]

KeyFunction = Callable[[], Union[str, Awaitable[str]]]
"""What a credential provider is: a callable with no arguments returning the credential (or,
on the async clients, an awaitable of it)."""


def function_name(function: object) -> str:
    """`module.qualname` of a function (a callable object: its class), never its arguments
    or closure, which may hold secrets."""
    target = function
    if not hasattr(target, "__qualname__"):
        target = type(function)
    inner = getattr(function, "func", None)  # functools.partial: name the wrapped function
    if inner is not None and callable(inner) and not hasattr(function, "__qualname__"):
        target = inner
    qualname = getattr(target, "__qualname__", type(function).__name__)
    module = getattr(target, "__module__", None)
    return f"{module}.{qualname}" if module and module != "builtins" else str(qualname)


def _is_async(function: object) -> bool:
    call = getattr(function, "__call__", None)  # noqa: B004 - a callable object's method
    return inspect.iscoroutinefunction(function) or inspect.iscoroutinefunction(call)


class KeyProvider:
    """A callable that returns a credential, called once per attempt.

    Args:
        function: The callable (no arguments).
        setting: The argument it was given as (`"api_key"`, `"azure_ad_token_provider"`),
            for error messages.

    Its `repr` names the function only. A pickle carries the function when the standard
    `pickle` can (a module-level function), or when `cloudpickle` is loaded (Ray, Dask) and
    can; otherwise it carries a `LostProvider` that says, on the far side, what to give again.
    """

    __slots__ = ("function", "setting")

    def __init__(self, function: KeyFunction, setting: str = "api_key") -> None:
        self.function = function
        self.setting = setting

    @property
    def name(self) -> str:
        """`"<setting> provider <module.function>"`, the way errors name it."""
        return f"{self.setting} provider {function_name(self.function)}"

    @property
    def is_async(self) -> bool:
        """Whether calling it gives a coroutine (an `async def` function or `__call__`)."""
        return _is_async(self.function)

    def __call__(self) -> Any:
        return self.function()

    def __repr__(self) -> str:
        return f"KeyProvider({function_name(self.function)}, setting={self.setting!r})"

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, KeyProvider)
            and other.function == self.function
            and other.setting == self.setting
        )

    def __hash__(self) -> int:
        try:
            return hash((self.setting, self.function))
        except TypeError:  # an unhashable callable object
            return hash((self.setting, id(self.function)))

    def __reduce__(self) -> tuple[Any, ...]:
        import pickle  # only when a client is pickled

        try:
            pickle.dumps(self.function)
        except Exception:
            pass
        else:
            return (KeyProvider, (self.function, self.setting))
        cloudpickle = sys.modules.get("cloudpickle")
        if cloudpickle is not None:
            try:
                blob = cloudpickle.dumps(self.function)
            except Exception:
                pass
            else:
                return (_from_cloudpickle, (blob, self.setting))
        return (LostProvider, (function_name(self.function), self.setting))


def _from_cloudpickle(blob: bytes, setting: str) -> KeyProvider:
    import pickle

    return KeyProvider(pickle.loads(blob), setting)


@attrs.frozen
class LostProvider:
    """What a pickle carries instead of a provider that could not be pickled (a lambda, a
    local function): unpickling the client raises `MissingAPIKeyError` saying what to give."""

    function: str
    setting: str

    def error(self) -> MissingAPIKeyError:
        """The error that explains what must be given again."""
        return MissingAPIKeyError(
            f"This client was pickled with {self.setting}={self.function}, which cannot be "
            "pickled (lambdas and local functions cannot): build the client in this process "
            f"with {self.setting}=..., or give a function defined at module level"
        )


def check_provider(setting: str, value: object, *, allow_async: bool) -> KeyProvider:
    """`value` (a callable given as `setting`) as a `KeyProvider`; refuses an `async`
    function on a client that cannot await it."""
    provider = value if isinstance(value, KeyProvider) else KeyProvider(value, setting)  # type: ignore[arg-type]
    if provider.is_async and not allow_async:
        raise InvalidArgumentError(
            setting,
            f"{function_name(provider.function)} is an async function: the sync clients call "
            "providers without awaiting; give a plain function, or use the async client",
        )
    return provider


class ProviderTimedOut(Exception):
    """A key provider still running when the call's total deadline passed (an async
    driver stopped waiting for it)."""

    def __init__(self, seconds: float) -> None:
        super().__init__(seconds)
        self.seconds = seconds


@attrs.frozen
class ProvidedCredential:
    """How a call sends what its provider returns: the header, with or without `Bearer`."""

    provider: KeyProvider
    header_name: str
    bearer: bool

    def header(self, value: object) -> tuple[str, str]:
        """The `(name, value)` header for what the provider returned (its exception, if it
        raised); `CredentialError` when that is not a usable credential."""
        name = self.provider.name
        if isinstance(value, ProviderTimedOut):
            raise CredentialError(
                name,
                f"did not answer within the {value.seconds:.3g} s left of the call's total "
                "deadline (timeout.total)",
            )
        if isinstance(value, BaseException):
            detail = f"{type(value).__name__}: {value}" if str(value) else type(value).__name__
            raise CredentialError(name, f"raised {detail}") from value
        if inspect.isawaitable(value):
            close = getattr(value, "close", None)
            if close is not None:
                close()  # a coroutine never awaited would warn
            raise CredentialError(
                name, "returned an awaitable: async providers need the async client"
            )
        if not isinstance(value, str) or not value.strip():
            shown = "an empty string" if isinstance(value, str) else type(value).__name__
            raise CredentialError(name, f"returned {shown}, not a non-empty string")
        try:
            token = check_header_value(self.provider.setting, value.strip())
        except InvalidArgumentError as exc:
            raise CredentialError(name, f"returned a value that {exc.problem}") from None
        return self.header_name, f"Bearer {token}" if self.bearer else token

    @classmethod
    def of(
        cls, key: object, endpoint: Endpoint, headers: Mapping[str, str]
    ) -> ProvidedCredential | None:
        """The credential a call fetches per attempt, sent as `endpoint` sends one: `None`
        for a fixed key (already in `headers`), no key, or a header the caller set itself
        (it wins)."""
        if not isinstance(key, KeyProvider):
            return None
        lowered = endpoint.credential_header.lower()
        if any(name.lower() == lowered for name in headers):
            return None
        return cls(key, endpoint.credential_header, endpoint.bearer)
