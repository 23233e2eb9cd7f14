"""Which requests reach the script: the API-key check and the one route, and the OpenAI-shaped
refusal every other request gets. Pure decisions on a `RecordedRequest`, no I/O.
"""

from __future__ import annotations

import json
from typing import Any, Final, NamedTuple

from chatlib.testing.actions import RecordedRequest

_CHAT_PATH: Final = "/v1/chat/completions"

_NO_API_KEY: Final = (
    "You didn't provide an API key. You need to provide your API key in an "
    "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
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


def admit(record: RecordedRequest, api_key: str | None) -> dict[str, Any] | Refusal:
    """The JSON object of a chat-completions request, or why it gets no scripted action."""
    if api_key is not None:
        authorization = record.headers.get("authorization")
        if authorization != f"Bearer {api_key}":
            return _unauthorized(authorization)
    if record.method != "POST" or record.path != _CHAT_PATH:
        return Refusal(
            404,
            f"Invalid URL ({record.method} {record.path}): chatlib.testing.LocalServer "
            f"only serves POST {_CHAT_PATH}",
        )
    try:
        payload = json.loads(record.body)
    except ValueError:
        payload = None
    if not isinstance(payload, dict):
        return Refusal(400, _NOT_JSON)
    return payload


def _unauthorized(authorization: str | None) -> Refusal:
    """OpenAI's 401 for a missing or wrong key, the key shown masked."""
    if authorization is None:
        return Refusal(401, _NO_API_KEY)
    shown = authorization.removeprefix("Bearer ")
    if len(shown) > 8:
        shown = shown[:3] + "*" * 4 + shown[-4:]
    return Refusal(401, f"Incorrect API key provided: {shown}.", "invalid_api_key")
