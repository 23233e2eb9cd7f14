"""The stored completions of a `LocalServer`: what `store: true` keeps, and the answers of the
stored-completion endpoints (list, retrieve, update, delete, messages), as OpenAI gives them.
Pure: a status and a JSON object for each request, no I/O.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

_DEFAULT_LIMIT: Final = 20
_MAX_LIMIT: Final = 100


@dataclass
class _Stored:
    completion: dict[str, Any]
    messages: list[dict[str, Any]]
    metadata: dict[str, str] = field(default_factory=dict)

    def view(self) -> dict[str, Any]:
        return {**self.completion, "metadata": dict(self.metadata)}


@dataclass(frozen=True)
class Answer:
    """What an endpoint answers: a status and a JSON object (an OpenAI error when >= 400)."""

    status: int
    body: dict[str, Any]


def _error(status: int, message: str, param: str | None = None) -> Answer:
    error = {"message": message, "type": "invalid_request_error", "param": param, "code": None}
    return Answer(status, {"error": error})


def _stored_message(completion_id: str, index: int, message: Mapping[str, Any]) -> dict[str, Any]:
    content = message.get("content")
    parts = None
    if isinstance(content, list):
        parts = content
        content = "".join(
            part.get("text", "") for part in content if isinstance(part, dict)
        )  # OpenAI shows the text parts joined, and the parts themselves beside
    stored = {
        "id": f"{completion_id}-{index}",
        "role": message.get("role"),
        "content": content,
        "refusal": None,
        "name": message.get("name"),
        "content_parts": parts,
    }
    for key in ("tool_calls", "tool_call_id"):
        if key in message:
            stored[key] = message[key]
    return stored


class CompletionStore:
    """The completions made with `store: true`, oldest first. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: dict[str, _Stored] = {}

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def clear(self) -> None:
        """Forget every stored completion."""
        with self._lock:
            self._items.clear()

    def add(self, completion: dict[str, Any], request: Mapping[str, Any]) -> None:
        """Keep `completion`, made for the chat request `request` (its messages and metadata)."""
        completion_id = str(completion["id"])
        messages = request.get("messages")
        metadata = request.get("metadata")
        stored = _Stored(
            completion=completion,
            messages=[
                _stored_message(completion_id, index, message)
                for index, message in enumerate(messages if isinstance(messages, list) else [])
                if isinstance(message, Mapping)
            ],
            metadata=dict(metadata) if isinstance(metadata, Mapping) else {},
        )
        with self._lock:
            self._items[completion_id] = stored

    def answer(
        self,
        operation: str,
        completion_id: str | None,
        query: Mapping[str, str],
        body: Any,
    ) -> Answer:
        """The answer to one stored-completion request."""
        with self._lock:
            if operation == "list":
                return self._list(query)
            assert completion_id is not None
            stored = self._items.get(completion_id)
            if stored is None:
                return _error(404, f"No chat completion found with id '{completion_id}'.")
            if operation == "retrieve":
                return Answer(200, stored.view())
            if operation == "update":
                return self._update(stored, body)
            if operation == "delete":
                del self._items[completion_id]
                body = {"object": "chat.completion.deleted", "id": completion_id, "deleted": True}
                return Answer(200, body)
            return self._page(stored.messages, query)

    def _list(self, query: Mapping[str, str]) -> Answer:
        wanted = {key[9:-1]: value for key, value in query.items() if key.startswith("metadata[")}
        model = query.get("model")
        items = [
            stored.view()
            for stored in self._items.values()
            if (model is None or stored.completion.get("model") == model)
            and all(stored.metadata.get(key) == value for key, value in wanted.items())
        ]
        return self._page(items, query)

    def _update(self, stored: _Stored, body: Any) -> Answer:
        if not isinstance(body, dict) or "metadata" not in body:
            return _error(400, "Missing required parameter: 'metadata'.", "metadata")
        metadata = body["metadata"]
        if metadata is None:
            metadata = {}
        if not isinstance(metadata, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
        ):
            return _error(400, "metadata must be an object of strings.", "metadata")
        stored.metadata = dict(metadata)
        return Answer(200, stored.view())

    def _page(self, items: list[dict[str, Any]], query: Mapping[str, str]) -> Answer:
        order = query.get("order", "asc")
        if order not in ("asc", "desc"):
            return _error(400, f"Invalid value for 'order': {order!r}.", "order")
        try:
            limit = int(query.get("limit", _DEFAULT_LIMIT))
        except ValueError:
            limit = 0
        if not 1 <= limit <= _MAX_LIMIT:
            return _error(400, f"'limit' must be between 1 and {_MAX_LIMIT}.", "limit")
        if order == "desc":
            items = items[::-1]
        after = query.get("after")
        if after is not None:
            ids = [item["id"] for item in items]
            if after not in ids:
                return _error(404, f"No object found with id '{after}' (after).", "after")
            items = items[ids.index(after) + 1 :]
        page = items[:limit]
        return Answer(
            200,
            {
                "object": "list",
                "data": page,
                "first_id": page[0]["id"] if page else None,
                "last_id": page[-1]["id"] if page else None,
                "has_more": len(items) > limit,
            },
        )
