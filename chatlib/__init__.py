"""chatlib: a fast, leak-proof sync + async client for OpenAI-compatible Chat Completions.

``import chatlib`` is cheap: the clients and their HTTP libraries load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "APIConnectionError",
    "APIError",
    "APIResponseValidationError",
    "APIStatusError",
    "APIStreamError",
    "APITimeoutError",
    "AsyncChat",
    "AsyncChatStream",
    "AuthenticationError",
    "BadRequestError",
    "BodyTooLargeError",
    "ChatCompletionChoice",
    "ChatCompletionChunkChoice",
    "ChatCompletionDelta",
    "ChatCompletionUsage",
    "ChatLibError",
    "ChatMessage",
    "ChatRole",
    "ChatStream",
    "ConflictError",
    "CreateChatCompletionChunk",
    "CreateChatCompletionRequest",
    "CreateChatCompletionResponse",
    "FinishReason",
    "IncompleteStreamError",
    "InsufficientQuotaError",
    "InternalServerError",
    "InvalidArgumentError",
    "MissingAPIKeyError",
    "NotFoundError",
    "PermissionDeniedError",
    "RateLimitError",
    "RequestTimeoutError",
    "SyncChat",
    "Timeout",
    "UnprocessableEntityError",
    "__version__",
    "create_chat_completion",
    "create_chat_completion_stream",
]

_LAZY = {
    "AsyncChat": "chatlib._async",
    "AsyncChatStream": "chatlib._async",
    "SyncChat": "chatlib._sync",
    "ChatStream": "chatlib._sync",
    "Timeout": "chatlib._config",
    "create_chat_completion": "chatlib._functions",
    "create_chat_completion_stream": "chatlib._functions",
    "ChatCompletionChoice": "chatlib.models",
    "ChatCompletionChunkChoice": "chatlib.models",
    "ChatCompletionDelta": "chatlib.models",
    "ChatCompletionUsage": "chatlib.models",
    "ChatMessage": "chatlib.models",
    "ChatRole": "chatlib.models",
    "CreateChatCompletionChunk": "chatlib.models",
    "CreateChatCompletionRequest": "chatlib.models",
    "CreateChatCompletionResponse": "chatlib.models",
    "FinishReason": "chatlib.models",
    # The error classes, also at the top level as the official SDK has them (openai.RateLimitError).
    "APIConnectionError": "chatlib.errors",
    "APIError": "chatlib.errors",
    "APIResponseValidationError": "chatlib.errors",
    "APIStatusError": "chatlib.errors",
    "APIStreamError": "chatlib.errors",
    "APITimeoutError": "chatlib.errors",
    "AuthenticationError": "chatlib.errors",
    "BadRequestError": "chatlib.errors",
    "BodyTooLargeError": "chatlib.errors",
    "ChatLibError": "chatlib.errors",
    "ConflictError": "chatlib.errors",
    "IncompleteStreamError": "chatlib.errors",
    "InsufficientQuotaError": "chatlib.errors",
    "InternalServerError": "chatlib.errors",
    "InvalidArgumentError": "chatlib.errors",
    "MissingAPIKeyError": "chatlib.errors",
    "NotFoundError": "chatlib.errors",
    "PermissionDeniedError": "chatlib.errors",
    "RateLimitError": "chatlib.errors",
    "RequestTimeoutError": "chatlib.errors",
    "UnprocessableEntityError": "chatlib.errors",
}

if TYPE_CHECKING:
    from chatlib._async import AsyncChat, AsyncChatStream
    from chatlib._config import Timeout
    from chatlib._functions import create_chat_completion, create_chat_completion_stream
    from chatlib._sync import ChatStream, SyncChat
    from chatlib.errors import (
        APIConnectionError,
        APIError,
        APIResponseValidationError,
        APIStatusError,
        APIStreamError,
        APITimeoutError,
        AuthenticationError,
        BadRequestError,
        BodyTooLargeError,
        ChatLibError,
        ConflictError,
        IncompleteStreamError,
        InsufficientQuotaError,
        InternalServerError,
        InvalidArgumentError,
        MissingAPIKeyError,
        NotFoundError,
        PermissionDeniedError,
        RateLimitError,
        RequestTimeoutError,
        UnprocessableEntityError,
    )
    from chatlib.models import (
        ChatCompletionChoice,
        ChatCompletionChunkChoice,
        ChatCompletionDelta,
        ChatCompletionUsage,
        ChatMessage,
        ChatRole,
        CreateChatCompletionChunk,
        CreateChatCompletionRequest,
        CreateChatCompletionResponse,
        FinishReason,
    )


def __getattr__(name: str) -> Any:
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'chatlib' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
