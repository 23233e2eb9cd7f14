"""The function names of chat-gpt-lib-rs: `create_chat_completion(client, request)`.

With a `SyncChat` they return the result; with an
`AsyncChat`, `create_chat_completion` returns an awaitable and
`create_chat_completion_stream` an async iterator (also an async context manager).
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, overload

from chatlib.models import CreateChatCompletionRequest, CreateChatCompletionResponse

if TYPE_CHECKING:
    from chatlib._async import AsyncChat, AsyncChatStream
    from chatlib._sync import ChatStream, SyncChat

__all__ = ["create_chat_completion", "create_chat_completion_stream"]


@overload
def create_chat_completion(
    client: SyncChat, request: CreateChatCompletionRequest
) -> CreateChatCompletionResponse: ...


@overload
def create_chat_completion(
    client: AsyncChat, request: CreateChatCompletionRequest
) -> Coroutine[Any, Any, CreateChatCompletionResponse]: ...


def create_chat_completion(
    client: SyncChat | AsyncChat, request: CreateChatCompletionRequest
) -> CreateChatCompletionResponse | Coroutine[Any, Any, CreateChatCompletionResponse]:
    """Create a (non-streamed) chat completion for `request` with `client`."""
    return client.create(request.replace(stream=False) if request.stream else request)


@overload
def create_chat_completion_stream(
    client: SyncChat, request: CreateChatCompletionRequest
) -> ChatStream: ...


@overload
def create_chat_completion_stream(
    client: AsyncChat, request: CreateChatCompletionRequest
) -> AsyncChatStream: ...


def create_chat_completion_stream(
    client: SyncChat | AsyncChat, request: CreateChatCompletionRequest
) -> ChatStream | AsyncChatStream:
    """Stream a chat completion for `request` (`stream` is set for you)."""
    return client.stream(request)
