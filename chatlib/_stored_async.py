"""`chat.stored` on `AsyncChat`: the stored-completion calls, driven with asyncio I/O.

Every rule (arguments, requests, pagination) is `chatlib._stored`'s; this class only runs
its flows. `_stored_sync.py` is this file without `await`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING

from chatlib._async import iterate_flow, run_flow
from chatlib._config import TimeoutLike
from chatlib._stored import StoredPlan
from chatlib.models import (
    ChatCompletionDeleted,
    ChatCompletionStoreMessage,
    CreateChatCompletionResponse,
)

if TYPE_CHECKING:
    from chatlib._async import AsyncChat

__all__ = ["AsyncStoredCompletions"]


class AsyncStoredCompletions:
    """The completions a server stored (those created with `store=True`): `chat.stored`.

    `list` and `messages` return async iterators (not awaited: `async for c in
    chat.stored.list()`) that fetch the pages as you go (`after` the last
    id of the previous page, while the server says `has_more`). Every call has the retries,
    timeouts and errors of `create`; `timeout=` overrides the client's for one call (for a
    list: for each page).
    """

    def __init__(self, chat: AsyncChat) -> None:
        self._chat = chat

    def _plan(self) -> StoredPlan:
        return StoredPlan(self._chat._config, self._chat._endpoint)

    def list(
        self,
        *,
        model: str | None = None,
        metadata: Mapping[str, str] | None = None,
        order: str = "asc",
        limit: int | None = None,
        timeout: TimeoutLike | None = None,
    ) -> AsyncIterator[CreateChatCompletionResponse]:
        """Every stored completion, page after page (nothing is sent until you iterate).

        Args:
            model: Only the completions made with this model.
            metadata: Only the completions whose metadata has all these pairs.
            order: `"asc"` (oldest first, the default) or `"desc"`.
            limit: Completions per page (the server's default is 20).
            timeout: For each page's request.
        """
        flow = self._plan().list(
            model=model, metadata=metadata, order=order, limit=limit, timeout=timeout
        )
        return iterate_flow(flow, self._chat._transport)

    async def retrieve(
        self, completion_id: str, *, timeout: TimeoutLike | None = None
    ) -> CreateChatCompletionResponse:
        """The stored completion `completion_id` (with its `metadata`)."""
        flow = self._plan().retrieve(completion_id, timeout=timeout)
        return await run_flow(flow, self._chat._transport)

    async def update(
        self,
        completion_id: str,
        *,
        metadata: Mapping[str, str] | None,
        timeout: TimeoutLike | None = None,
    ) -> CreateChatCompletionResponse:
        """Replace the metadata of a stored completion (`None` clears it); returns it."""
        flow = self._plan().update(completion_id, metadata, timeout=timeout)
        return await run_flow(flow, self._chat._transport)

    async def delete(
        self, completion_id: str, *, timeout: TimeoutLike | None = None
    ) -> ChatCompletionDeleted:
        """Delete a stored completion; returns the server's confirmation."""
        flow = self._plan().delete(completion_id, timeout=timeout)
        return await run_flow(flow, self._chat._transport)

    def messages(
        self,
        completion_id: str,
        *,
        order: str = "asc",
        limit: int | None = None,
        timeout: TimeoutLike | None = None,
    ) -> AsyncIterator[ChatCompletionStoreMessage]:
        """The messages that were sent to make a stored completion, page after page."""
        flow = self._plan().messages(completion_id, order=order, limit=limit, timeout=timeout)
        return iterate_flow(flow, self._chat._transport)
