"""Which requests reach the script or the store: the API-key check and the routes (OpenAI's
under `/v1`, Azure's under `/openai`), and the refusal every other request gets. Pure
decisions on a `RecordedRequest`, no I/O.
"""

from __future__ import annotations

import json
import re
from typing import Any, Final, NamedTuple, Union

from chatlib.testing.actions import RecordedRequest

_CHAT_PATH: Final = "/v1/chat/completions"
_AZURE_CHAT: Final = re.compile(r"/openai/deployments/([^/]+)/chat/completions")
_STORED: Final = re.compile(r"(?:/v1|/openai)/chat/completions(?:/([^/]+)(/messages)?)?")

_NO_API_KEY: Final = (
    "You didn't provide an API key. You need to provide your API key in an "
    "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
)
_AZURE_DENIED: Final = (
    "Access denied due to invalid subscription key or wrong API endpoint. Make sure to "
    "provide a valid key for an active subscription and use a correct regional API endpoint "
    "for your resource."
)
_NOT_JSON: Final = (
    "We could not parse the JSON body of your request. (HINT: This likely means "
    "you aren't using your HTTP library correctly. The OpenAI API expects a JSON "
    "payload, but what was sent was not valid JSON or not a JSON object.)"
)


class Refusal(NamedTuple):
    """Why a request gets an `invalid_request_error` instead of a scripted action."""

    status: int
    message: str
    code: str | None = None


class ChatRoute(NamedTuple):
    """A chat-completions request: its JSON object, and the deployment when it is Azure's."""

    payload: dict[str, Any]
    deployment: str | None = None


class StoredRoute(NamedTuple):
    """A stored-completions request: `list`, `retrieve`, `update`, `delete` or `messages`."""

    operation: str
    completion_id: str | None
    body: Any


Route = Union[ChatRoute, StoredRoute, Refusal]


def admit(record: RecordedRequest, api_key: str | None) -> Route:
    """Where a request goes: the script (a chat request), the store, or a refusal."""
    azure = record.path.startswith("/openai/")
    if api_key is not None:
        refusal = _check_key(record, api_key, azure=azure)
        if refusal is not None:
            return refusal
    if azure and not record.query.get("api-version"):
        return Refusal(404, "Resource not found (an api-version query parameter is required)")
    chat = _AZURE_CHAT.fullmatch(record.path) if azure else None
    if record.method == "POST" and (record.path == _CHAT_PATH or chat is not None):
        payload = _json_object(record.body)
        if payload is None:
            return Refusal(400, _NOT_JSON)
        return ChatRoute(payload, chat.group(1) if chat is not None else None)
    stored = _STORED.fullmatch(record.path)
    if stored is not None:
        completion_id, messages = stored.groups()
        operation = _stored_operation(record.method, completion_id, messages is not None)
        if operation is not None:
            body = _json_object(record.body) if operation == "update" else None
            if operation == "update" and body is None:
                return Refusal(400, _NOT_JSON)
            return StoredRoute(operation, completion_id, body)
    return Refusal(
        404,
        f"Invalid URL ({record.method} {record.path}): chatlib.testing.LocalServer serves "
        f"POST {_CHAT_PATH} and the stored-completion endpoints (also under /openai, "
        "Azure-style)",
    )


def _stored_operation(method: str, completion_id: str | None, messages: bool) -> str | None:
    if completion_id is None:
        return "list" if method == "GET" else None
    if messages:
        return "messages" if method == "GET" else None
    return {"GET": "retrieve", "POST": "update", "DELETE": "delete"}.get(method)


def _json_object(raw: bytes) -> dict[str, Any] | None:
    try:
        payload = json.loads(raw)
    except ValueError:
        return None
    return payload if isinstance(payload, dict) else None


def _check_key(record: RecordedRequest, api_key: str, *, azure: bool) -> Refusal | None:
    """OpenAI's 401 for a missing or wrong key (the key shown masked); under `/openai`, an
    `api-key` header is accepted too, and the refusal is worded like Azure's."""
    authorization = record.headers.get("authorization")
    if authorization == f"Bearer {api_key}":
        return None
    if azure:
        if record.headers.get("api-key") == api_key:
            return None
        return Refusal(401, _AZURE_DENIED, "401")
    if authorization is None:
        return Refusal(401, _NO_API_KEY)
    shown = authorization.removeprefix("Bearer ")
    if len(shown) > 8:
        shown = shown[:3] + "*" * 4 + shown[-4:]
    return Refusal(401, f"Incorrect API key provided: {shown}.", "invalid_api_key")
