"""What ``SyncChat`` and ``AsyncChat`` share that is not I/O: settings, planning a call,
copies, pickling and ``repr``. Each facade adds its transport and its way of waiting."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any, ClassVar

from typing_extensions import Self

from chatlib._config import ClientConfig, TimeoutLike, client_repr
from chatlib._core import Call, plan_call
from chatlib.models import CreateChatCompletionRequest

__all__ = ["ClientBase"]


class ClientBase:
    """The transport-free half of a client."""

    _config: ClientConfig
    _transport_options: dict[str, Any]
    _custom_transport: bool
    _owns_transport: bool
    _transport: Any
    _default_transport: ClassVar[Any]  # builds the facade's own transport from the options

    @property
    def config(self) -> ClientConfig:
        """The resolved settings (the key shows as ``Secret('****')``)."""
        return self._config

    def _plan(
        self,
        request: CreateChatCompletionRequest | None,
        params: dict[str, Any],
        *,
        stream: bool | None,
        timeout: TimeoutLike | None,
        force_stream: bool = False,
    ) -> Call:
        """Everything a call needs before I/O, with one idempotency key for all attempts."""
        return plan_call(
            self._config,
            request,
            params,
            stream=stream,
            force_stream=force_stream,
            timeout=timeout,
            idempotency_key=f"chatlib-{uuid.uuid4()}",
        )

    def with_options(
        self,
        *,
        timeout: TimeoutLike | None = None,
        max_retries: int | None = None,
        api_key: str | None = None,
        base_url: str | None = None,
        organization: str | None = None,
        project: str | None = None,
        default_headers: Mapping[str, str] | None = None,
        default_query: Mapping[str, str] | None = None,
    ) -> Self:
        """A copy with other settings that shares this client's connection pool (closing
        it leaves the pool open). Headers and query parameters are merged into the current
        ones; ``None`` keeps a setting as it is."""
        clone = object.__new__(type(self))
        clone.__dict__.update(self.__dict__)
        clone._config = self._config.with_changes(
            timeout=timeout,
            max_retries=max_retries,
            api_key=api_key,
            base_url=base_url,
            organization=organization,
            project=project,
            default_headers=default_headers,
            default_query=default_query,
        )
        clone._owns_transport = False
        return clone

    def __copy__(self) -> Self:
        return self.with_options()

    def __deepcopy__(self, memo: dict[int, Any]) -> Self:
        return self.with_options()  # a connection pool is shared, never copied

    def __repr__(self) -> str:
        return client_repr(type(self).__name__, self._config)

    def __getstate__(self) -> dict[str, Any]:
        return {
            "config": self._config.pickle_state(custom_transport=self._custom_transport),
            "transport_options": self._transport_options,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._config = ClientConfig.from_pickle_state(state["config"])
        self._transport_options = dict(state["transport_options"])
        self._custom_transport = False
        self._transport = type(self)._default_transport(**self._transport_options)
        self._owns_transport = True
