"""What `SyncChat` and `AsyncChat` share that is not I/O: settings, the constructor body,
planning a call and a tool run, copies, pickling and `repr`. Each facade adds its transport
and its way of waiting."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

if sys.version_info >= (3, 11):  # typing has them: typing_extensions is not loaded
    from typing import Self, Unpack
else:  # pragma: no cover
    from typing_extensions import Self, Unpack

from chatlib import _log
from chatlib._auth import KeyProvider, check_provider
from chatlib._call import Call, plan_call
from chatlib._config import (
    SETTING_NAMES,
    ClientConfig,
    ClientSettings,
    TimeoutLike,
    client_repr,
)
from chatlib._endpoint import OPENAI, Endpoint
from chatlib._params import document_settings, spell_out_settings
from chatlib.models import CreateChatCompletionRequest

if TYPE_CHECKING:
    from chatlib._tool_loop import ToolLoop

__all__ = ["ClientBase"]

_Transport = TypeVar("_Transport")


class ClientBase(Generic[_Transport]):
    """The transport-free half of a client; `_Transport` is the facade's transport protocol."""

    _config: ClientConfig
    _transport: _Transport
    _owns_transport: bool
    _transport_options: dict[str, Any]
    # Where requests go and how the key is sent: OpenAI's way unless a subclass (Azure) says.
    _endpoint: Endpoint = OPENAI
    # Builds the facade's own transport: (session, *, pool_maxsize, verify) -> transport.
    _default_transport: ClassVar[Callable[..., Any]]
    # Whether the facade awaits what the user's functions return: async key providers and
    # async tools are allowed.
    _awaits: ClassVar[bool] = False
    # The settings the constructor takes (Azure's clients take more), in their order.
    _settings_type: ClassVar[Any] = ClientSettings
    _setting_names: ClassVar[tuple[str, ...]] = SETTING_NAMES

    def _setup(
        self,
        settings: ClientSettings,
        *,
        transport: _Transport | None,
        session: object,
        pool_maxsize: int,
        verify: bool | str,
    ) -> None:
        """The constructor body of both facades."""
        _log.configure_from_environment()
        self._config = self._checked(ClientConfig.resolve(**settings))
        self._transport_options = {"pool_maxsize": pool_maxsize, "verify": verify}
        self._owns_transport = transport is None
        self._transport = (
            transport
            if transport is not None
            else type(self)._default_transport(session, **self._transport_options)
        )

    def _checked(self, config: ClientConfig) -> ClientConfig:
        """`config`, once its key provider (if any) is one this facade can call."""
        key = config.api_key
        if isinstance(key, KeyProvider):
            check_provider(key.setting, key, allow_async=self._awaits)
        return config

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "__init__" in cls.__dict__:
            spell_out_settings(cls.__init__, cls._setting_names, cls._settings_type)
            cls.__doc__ = document_settings(
                cls.__doc__, cls._setting_names, (cls._settings_type, ClientSettings)
            )

    @property
    def config(self) -> ClientConfig:
        """The resolved settings (the key shows as `Secret('****')`)."""
        return self._config

    @property
    def transport(self) -> _Transport:
        """The transport this client sends through."""
        return self._transport

    def _plan(
        self,
        request: CreateChatCompletionRequest | None,
        params: dict[str, Any],
        *,
        stream: bool | None,
        timeout: TimeoutLike | None,
        force_stream: bool = False,
        parse: bool = False,
    ) -> Call:
        """Everything a call needs before I/O, with one idempotency key for all attempts."""
        return plan_call(
            self._config,
            request,
            params,
            stream=stream,
            force_stream=force_stream,
            timeout=timeout,
            idempotency_key="chatlib-" + os.urandom(16).hex(),  # 128 random bits
            parse=parse,
            endpoint=self._endpoint,
        )

    def _tool_loop(
        self,
        params: dict[str, Any],
        tools: Any,
        max_rounds: Any,
        timeout: TimeoutLike | None,
        *,
        stream: bool,
    ) -> ToolLoop:
        """The core tool loop for `run_tools`/`run_tools_stream`, its arguments checked and
        its first call planned now, so that bad arguments raise before anything is sent."""
        from chatlib._tool_loop import prepare_tool_run, tool_loop  # tools load on first use

        setup = prepare_tool_run(params, tools, max_rounds=max_rounds, allow_async=self._awaits)

        def plan(messages: list[Any]) -> Call:
            round_params = {**setup.params, "messages": messages, "tools": setup.tools}
            return self._plan(None, round_params, stream=None, timeout=timeout, force_stream=stream)

        return tool_loop(setup, plan, first=plan(setup.messages))

    def with_options(self, **changes: Unpack[ClientSettings]) -> Self:
        """A copy with other settings that shares this client's connection pool (closing
        it leaves the pool open).

        Takes any of the client's settings (`ClientSettings`); `None` keeps a setting as it
        is, and `default_headers`/`default_query` are merged into the current ones.
        """
        clone = object.__new__(type(self))
        clone.__dict__.update(self.__dict__)
        clone._config = self._checked(self._config.with_changes(**changes))
        clone._owns_transport = False
        return clone

    def __copy__(self) -> Self:
        return self.with_options()

    def __deepcopy__(self, memo: dict[int, Any]) -> Self:
        return self.with_options()  # a connection pool is shared, never copied

    def __repr__(self) -> str:
        return client_repr(type(self).__name__, self._config)

    def __getstate__(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "config": self._config.pickle_state(),
            "transport_options": self._transport_options,
        }
        if self._endpoint != OPENAI:
            state["endpoint"] = self._endpoint
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        endpoint = state.get("endpoint", OPENAI)
        if endpoint != OPENAI:
            self._endpoint = endpoint
        self._config = ClientConfig.from_pickle_state(
            state["config"], key_env=endpoint.key_env, key_setting=endpoint.key_setting
        )
        self._transport_options = dict(state["transport_options"])
        self._transport = type(self)._default_transport(None, **self._transport_options)
        self._owns_transport = True


spell_out_settings(ClientBase.with_options)
