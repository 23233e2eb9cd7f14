"""Building HTTP requests: pure, no I/O.

`build_request` validates a `CreateChatCompletionRequest` and turns it into an `HttpRequest`
for a client's settings: the URL (the endpoint's path, a base URL's own query kept after it),
the headers (key, organization, project, idempotency key, defaults, per-call extras) and the
JSON body (the fields that were set, messages in their clean request form, `extra_body` on
top). `build_http_request` builds the other calls (stored completions) the same way.
"""

from __future__ import annotations

import json
import platform
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from chatlib import __version__
from chatlib._config import ClientConfig, Secret, Timeout
from chatlib._endpoint import OPENAI, Endpoint, join_url
from chatlib._headers import redact, safe_url
from chatlib._serde import make_unstructurer, unstructure
from chatlib._validate import validate_request
from chatlib.errors import InvalidArgumentError
from chatlib.models import ChatMessage, CreateChatCompletionRequest

__all__ = [
    "HttpRequest",
    "base_headers",
    "build_http_request",
    "build_request",
    "encoded_body",
    "request_body",
]

_USER_AGENT = f"chatlib/{__version__} python/{platform.python_version()}"
_ASSISTANT_RESPONSE_ONLY = ("annotations",)


@attrs.frozen(repr=False)
class HttpRequest:
    """One HTTP request, fully built. `repr` hides credentials."""

    method: str
    url: str
    headers: Mapping[str, str]
    body: bytes | None
    timeout: Timeout
    stream: bool = False

    def __repr__(self) -> str:
        return f"HttpRequest({self.method} {safe_url(self.url)}, headers={redact(self.headers)!r})"


def _message_to_wire(message: Any) -> Any:
    data: dict[str, Any]
    if message.__class__ is dict:  # the common case, without an abstract isinstance check
        data = unstructure(message)
    elif isinstance(message, ChatMessage):
        data = message.to_dict()
    elif isinstance(message, Mapping):
        data = unstructure(message)
    else:
        return message
    if data.get("role") == "assistant":
        # Messages copied from a response carry fields the request schema does not take, and
        # llama.cpp answers 500 to `"content": null` beside tool calls: send the clean form.
        for key in _ASSISTANT_RESPONSE_ONLY:
            data.pop(key, None)
        if data.get("refusal", "") is None:
            del data["refusal"]
        if data.get("content", "") is None and (
            data.get("tool_calls") or data.get("function_call")
        ):
            del data["content"]
        audio = data.get("audio")
        if isinstance(audio, Mapping) and "id" in audio:
            data["audio"] = {"id": audio["id"]}
    return data


def request_body(request: CreateChatCompletionRequest, *, stream: bool) -> dict[str, Any]:
    """The JSON body for `request`: the fields that were set, `extra_body` merged on top."""
    if request.__class__ is CreateChatCompletionRequest:
        body = _request_fields(request)  # messages and extra_* left unconverted: done below
    else:
        body = request.to_dict()
    for key in ("extra_body", "extra_headers", "extra_query"):
        body.pop(key, None)
    body["messages"] = [_message_to_wire(m) for m in request.messages]
    if stream:
        body["stream"] = True
    if request.extra_body:
        body.update(unstructure(dict(request.extra_body)))
    return body


# `request.to_dict()`, minus converting the fields `request_body` replaces or drops anyway.
_request_fields = make_unstructurer(
    CreateChatCompletionRequest,
    raw=frozenset({"messages", "extra_body", "extra_headers", "extra_query"}),
)
# What `json.dumps(body, separators=..., ...)` builds on every call, built once.
_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _c_encoder() -> Callable[[Any], str] | None:
    """The C encoder `_JSON.encode` makes anew for each call, made once: without its
    circular-reference markers (a container that holds itself raises `RecursionError`),
    and only where it gives the same text as `_JSON.encode` (CPython)."""
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return None
    try:
        iterencode = make(
            None,
            _JSON.default,
            json.encoder.encode_basestring,
            None,
            _JSON.key_separator,
            _JSON.item_separator,
            False,
            False,
            False,
        )

        def encode(value: Any) -> str:
            return "".join(iterencode(value, 0))

        probe = {"a": [1, 2.5, None, True, 'é\n"', {"b": -0.0}], "c": 10**20}
        if encode(probe) != _JSON.encode(probe):
            return None
    except Exception:  # any other interpreter's encoder: the standard one
        return None
    return encode


_encode_json: Callable[[Any], str] = _c_encoder() or _JSON.encode


def _unencodable_field(request: CreateChatCompletionRequest, body: Mapping[str, Any]) -> str:
    """The argument to blame for a body that `json.dumps` refused (an error path only)."""
    extra_keys = set(request.extra_body or ())
    for key, value in body.items():
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError):
            return "extra_body" if key in extra_keys else key
    return "request"


def _holds_surrogate(value: Any) -> bool:
    try:
        _encode_json(value).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _utf8(payload: str, blame: Callable[[], str]) -> bytes:
    """`payload` as UTF-8; a lone surrogate (text decoded with `surrogateescape`, half of a
    UTF-16 pair) cannot be, and is the fault of the argument `blame()` names."""
    try:
        return payload.encode("utf-8")
    except UnicodeEncodeError as exc:
        char = exc.object[exc.start]
        raise InvalidArgumentError(
            blame(),
            f"cannot be sent: it holds {char!r}, a lone surrogate, which is not text"
            " (bytes decoded with errors='surrogateescape', or half of a UTF-16 pair)",
        ) from None


def _surrogate_field(request: CreateChatCompletionRequest, body: Mapping[str, Any]) -> str:
    """The argument holding a lone surrogate (an error path only): `messages[i].key` for a
    message's field."""
    extra_keys = set(request.extra_body or ())
    for key, value in body.items():
        if not _holds_surrogate(value):
            continue
        if key == "messages" and isinstance(value, list):
            for index, message in enumerate(value):
                if isinstance(message, Mapping):
                    for name, part in message.items():
                        if _holds_surrogate(part):
                            return f"messages[{index}].{name}"
        return "extra_body" if key in extra_keys else key
    return "request"


def _surrogate_key(body: Any) -> str:
    """The top-level key of a JSON body that holds a lone surrogate (an error path only)."""
    if isinstance(body, Mapping):
        for key, value in body.items():
            if _holds_surrogate(value):
                return str(key)
    return "body"


def base_headers(config: ClientConfig, endpoint: Endpoint, *, accept: str) -> dict[str, str]:
    """The headers every request of a client carries before its defaults: what it accepts,
    the user agent, a fixed credential (a provider's is added per attempt), organization
    and project."""
    headers: dict[str, str] = {"Accept": accept, "User-Agent": _USER_AGENT}
    key = config.api_key
    if isinstance(key, Secret):
        name, value = endpoint.credential(key.reveal())
        headers[name] = value
    if config.organization:
        headers["OpenAI-Organization"] = config.organization
    if config.project:
        headers["OpenAI-Project"] = config.project
    return headers


def build_http_request(
    config: ClientConfig,
    endpoint: Endpoint,
    method: str,
    path: str,
    *,
    query: Mapping[str, str] | None = None,
    body: Any = None,
    timeout: Timeout | None = None,
) -> HttpRequest:
    """A JSON request to `path` under the base URL (the stored-completion calls)."""
    headers = base_headers(config, endpoint, accept="application/json")
    payload = None
    if body is not None:
        headers = {"Content-Type": "application/json", **headers}
        payload = _utf8(_encode_json(body), lambda: _surrogate_key(body))
    headers.update(config.default_headers)
    return HttpRequest(
        method=method,
        url=join_url(config.base_url, path, {**config.default_query, **(query or {})}),
        headers=headers,
        body=payload,
        timeout=timeout or config.timeout,
    )


def encoded_body(request: CreateChatCompletionRequest, *, stream: bool) -> str:
    """Validate `request` and encode its JSON body (`request_body`) as `build_request` sends it.

    Raises:
        InvalidArgumentError: the request cannot be right, or cannot be sent as JSON; names
            the field.
    """
    validate_request(request)
    try:
        body = request_body(request, stream=stream)
    except RecursionError:
        raise InvalidArgumentError(
            "messages", "nested too deeply to send (does a message contain itself?)"
        ) from None
    try:
        payload: str = _encode_json(body)
    except (TypeError, ValueError) as exc:
        field = _unencodable_field(request, body)
        raise InvalidArgumentError(field, f"cannot be sent as JSON: {exc}") from None
    except RecursionError:
        field = _unencodable_field(request, body)
        raise InvalidArgumentError(
            field, "cannot be sent as JSON: nested too deeply (does it contain itself?)"
        ) from None
    return payload


def build_request(
    config: ClientConfig,
    request: CreateChatCompletionRequest,
    *,
    stream: bool,
    timeout: Timeout | None = None,
    idempotency_key: str | None = None,
    endpoint: Endpoint = OPENAI,
) -> HttpRequest:
    """Validate `request` and turn it into an `HttpRequest` for `config`'s server."""
    payload = _utf8(
        encoded_body(request, stream=stream),
        lambda: _surrogate_field(request, request_body(request, stream=stream)),
    )
    headers: dict[str, str] = {
        "Content-Type": "application/json",
        **base_headers(
            config, endpoint, accept="text/event-stream" if stream else "application/json"
        ),
    }
    if idempotency_key:
        headers["Idempotency-Key"] = idempotency_key
    headers.update(config.default_headers)
    if request.extra_headers:
        headers.update(request.extra_headers)
    query = {**config.default_query, **(request.extra_query or {})}
    path = endpoint.chat_path(config.base_url, request.model)
    return HttpRequest(
        method="POST",
        url=join_url(config.base_url, path, query),
        headers=headers,
        body=payload,
        timeout=timeout or config.timeout,
        stream=stream,
    )
