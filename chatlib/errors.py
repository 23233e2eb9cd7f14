"""Every failure chatlib raises, and the pure mapping from a server's answer to one.

All exceptions derive from `ChatLibError`. No `requests`, `aiohttp` or
`json` exception reaches the user: transports and parsers translate them here.
The API key is never stored on an exception, so it cannot leak through `str()`,
`repr()`, a traceback or a pickle.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from chatlib._display import RichDisplay
from chatlib._headers import Secrets, header, request_id_of, safe_url
from chatlib._metadata import RateLimits

if TYPE_CHECKING:
    from chatlib.models import CreateChatCompletionResponse

__all__ = [
    "APIConnectionError",
    "APIError",
    "APIResponseValidationError",
    "APIStatusError",
    "APIStreamError",
    "APITimeoutError",
    "AuthenticationError",
    "BadRequestError",
    "BodyTooLargeError",
    "ChatLibError",
    "ClientClosedError",
    "ConflictError",
    "ContentFilterFinishReasonError",
    "CredentialError",
    "IncompleteStreamError",
    "InsufficientQuotaError",
    "InternalServerError",
    "InvalidArgumentError",
    "LengthFinishReasonError",
    "MissingAPIKeyError",
    "NotFoundError",
    "OutputValidationError",
    "PermissionDeniedError",
    "RateLimitError",
    "RefusalError",
    "RequestTimeoutError",
    "StructuredOutputError",
    "ToolCallError",
    "ToolLoopLimitError",
    "UnprocessableEntityError",
]

_SNIPPET_CHARS = 300


class ChatLibError(RichDisplay, Exception):
    """Base class of every exception chatlib raises."""


class InvalidArgumentError(ChatLibError, ValueError):
    """An argument was rejected before any request was sent; `field` names it."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.field, self.problem))


class MissingAPIKeyError(ChatLibError, ValueError):
    """No API key was given for a server that needs one."""


class CredentialError(ChatLibError):
    """A credential provider failed: it raised, or returned something that is not a usable
    credential (an `api_key=` callable, an `azure_ad_token_provider`). Not retried.

    Attributes:
        provider: Which provider: the setting and the function's name, e.g.
            `"api_key provider vault.read_key"`. Its own exception, if it raised one, is
            chained as `__cause__`.
    """

    def __init__(self, provider: str, problem: str) -> None:
        super().__init__(f"the {provider} {problem}")
        self.provider = provider
        self.problem = problem

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.provider, self.problem))


class _Reported(ChatLibError):
    """An error whose `str` is its `message`, pickled from its `__dict__`: keyword-only
    constructors do not pickle by default, and errors cross process boundaries
    (multiprocessing, Ray)."""

    def __init__(self, message: str) -> None:
        message = _printable(message)
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.__dict__.copy()))


def _rebuild(cls: type[Exception], state: dict[str, Any]) -> Exception:
    exc = cls.__new__(cls)
    Exception.__init__(exc, state.get("message", ""))
    exc.__dict__.update(state)
    return exc


def _printable(text: str) -> str:
    """`text` with its lone surrogates made readable, so it can be printed, logged and encoded.

    A server's bytes can reach a message undecodable: aiohttp keeps a header's invalid UTF-8
    as surrogate escapes (a byte 0xFF in `x-request-id` becomes U+DCFF), and a JSON error
    may spell a lone surrogate (U+D800). Either made `print(error)`, or logging it to a UTF-8
    file, fail with `UnicodeEncodeError`. Escaped bytes are decoded as UTF-8 (`U+FFFD` where
    they are not UTF-8); any other lone surrogate becomes `?`.
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        escapes = all("\udc80" <= char <= "\udcff" for char in text if "\ud800" <= char <= "\udfff")
        return text.encode("utf-8", "surrogateescape" if escapes else "replace").decode(
            "utf-8", "replace"
        )
    return text


class APIError(_Reported):
    """A request was made and did not produce a usable completion.

    Attributes:
        message: a human-readable explanation (the server's own words where it gave any).
        body: as in the official SDK: the `error` member of an `{"error": ...}` body,
            else the parsed JSON body, or the body as text when it is not JSON.
        raw_body: the exact bytes the server sent (empty when nothing arrived).
        partial: for a stream that failed midway (a dropped connection, a timeout, an error
            event, a missing `[DONE]`, a malformed frame): the completion merged from every
            chunk that arrived before the failure; `None` when none had, and for calls that
            do not stream.

    A credential the client sent that the server's text repeats (a proxy echoing the
    request headers, say) is replaced by `<redacted>` in `message`, `str(exc)`, `body` and
    the server's fields; `raw_body` stays byte-exact, but its `repr` and its pickle are
    redacted too.
    """

    partial: CreateChatCompletionResponse | None = None

    def __init__(
        self,
        message: str,
        *,
        body: object = None,
        raw_body: bytes = b"",
        request_method: str | None = None,
        request_url: str | None = None,
    ) -> None:
        super().__init__(message)
        self.body = body
        self.raw_body = raw_body
        self.request_method = request_method
        self.request_url = request_url


class RawBody(bytes):
    """The exact bytes a server sent, whose `repr` (and pickle) hide the credentials the
    client sent that they repeat."""

    _shown: bytes

    def __new__(cls, raw: bytes, secrets: Secrets) -> RawBody:
        body = super().__new__(cls, raw)
        body._shown = secrets.data(raw)
        return body

    def __repr__(self) -> str:
        return repr(self._shown)

    __str__ = __repr__  # `bytes.__str__` would show the bytes themselves

    def __reduce__(self) -> tuple[Any, ...]:
        return (bytes, (self._shown,))


def redact_error(exc: ChatLibError, secrets: Secrets) -> None:
    """Replace, in place, every credential of `secrets` that `exc` repeats from the
    server's text: its message, args, body, server fields and headers (see `APIError`)."""
    if not secrets or not isinstance(exc, APIError):
        return
    exc.message = secrets.text(exc.message)
    exc.args = tuple(secrets.value(arg) for arg in exc.args)
    exc.body = secrets.value(exc.body)
    raw = exc.raw_body
    if raw and secrets.data(raw) != raw:
        exc.raw_body = RawBody(raw, secrets)
    if isinstance(exc, APIStatusError):
        exc.server_message = secrets.value(exc.server_message)
        exc.headers = {name: secrets.text(value) for name, value in exc.headers.items()}
        for name in ("type", "code", "param"):
            setattr(exc, name, secrets.value(getattr(exc, name)))


class APIResponseValidationError(APIError):
    """The server answered with something that is not a valid completion (bad JSON, wrong shape).

    `raw_body` holds what was received, so nothing is lost.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        raw_body: bytes = b"",
        body: object = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message, body=body, raw_body=raw_body)
        self.status_code = status_code
        self.request_id = request_id


class BodyTooLargeError(APIResponseValidationError):
    """A response body, SSE line or event grew past the configured limit."""


class IncompleteStreamError(APIError):
    """A stream ended before the server sent `data: [DONE]`: the answer may be cut off."""


class APIConnectionError(APIError):
    """The server could not be reached, or the connection broke before the answer was complete."""

    def __init__(self, message: str = "Connection error.", **kwargs: Any) -> None:
        super().__init__(message, **kwargs)


class APITimeoutError(APIConnectionError):
    """A connect, read or total deadline passed."""

    def __init__(self, message: str = "Request timed out.", **kwargs: Any) -> None:
        super().__init__(message, **kwargs)


class ClientClosedError(APIConnectionError, RuntimeError):
    """The client was closed (`close()`/`aclose()`, or the end of its `with` block), and
    its connection pool with it: a call made afterwards (nothing is sent; make a new client),
    or one in flight when the client was closed (a create waiting for its answer, a stream
    being read, in another thread or task). Not retried."""

    def __init__(self, message: str = "The client is closed.", **kwargs: Any) -> None:
        super().__init__(message, **kwargs)


def deadline_exceeded(request_url: str | None = None) -> APITimeoutError:
    """The error of a call that ran past `timeout.total`, wherever that was noticed."""
    return APITimeoutError(
        "Request timed out: the call outlived its total deadline (timeout.total)",
        request_url=None if request_url is None else safe_url(request_url),
    )


class APIStatusError(APIError):
    """The server answered with an error: an HTTP status >= 400, or an error event mid-stream.

    Attributes:
        status_code: the HTTP status (for an in-stream error: the status the error names, else 200).
        headers: the response headers, names lower-cased.
        request_id: the `x-request-id` header, when the server sent one.
        type, code, param: the server's error fields, when it sent them.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        headers: Mapping[str, str] | None = None,
        body: object = None,
        raw_body: bytes = b"",
        error_type: str | None = None,
        code: str | int | None = None,
        param: str | None = None,
        request_id: str | None = None,
        server_message: str | None = None,
    ) -> None:
        super().__init__(message, body=body, raw_body=raw_body)
        self.status_code = status_code
        # Lower-cased names: the same lookups work whichever transport delivered them.
        self.headers: dict[str, str] = {k.lower(): v for k, v in (headers or {}).items()}
        self.type = error_type
        self.code = code
        self.param = param
        self.request_id = request_id
        self.server_message = server_message

    @property
    def rate_limits(self) -> RateLimits:
        """The `x-ratelimit-*` figures of the error response (all `None` when absent)."""
        return RateLimits.from_headers(self.headers)


class BadRequestError(APIStatusError):
    """HTTP 400."""


class AuthenticationError(APIStatusError):
    """HTTP 401."""


class PermissionDeniedError(APIStatusError):
    """HTTP 403."""


class NotFoundError(APIStatusError):
    """HTTP 404."""


class RequestTimeoutError(APIStatusError):
    """HTTP 408: the server gave up waiting for the request."""


class ConflictError(APIStatusError):
    """HTTP 409."""


class UnprocessableEntityError(APIStatusError):
    """HTTP 422."""


class RateLimitError(APIStatusError):
    """HTTP 429."""


class InsufficientQuotaError(RateLimitError):
    """HTTP 429 with code `insufficient_quota`: retrying will not help, billing will."""


class InternalServerError(APIStatusError):
    """HTTP 5xx."""


class APIStreamError(APIStatusError):
    """An error event arrived in the middle of a stream and names no HTTP status."""


_BY_STATUS: dict[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    408: RequestTimeoutError,
    409: ConflictError,
    422: UnprocessableEntityError,
    429: RateLimitError,
}

# Error `type` strings (OpenAI's and llama.cpp's) mapped to the status they stand for,
# used for in-stream errors, which arrive on a 200 response.
_STATUS_BY_TYPE: dict[str, int] = {
    "invalid_request_error": 400,
    "exceed_context_size_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "rate_limit_error": 429,
    "rate_limit_exceeded": 429,
    "insufficient_quota": 429,
    "server_error": 500,
    "api_error": 500,
    "unavailable_error": 503,
}

_REASONS: dict[int, str] = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    409: "Conflict",
    413: "Payload Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Entity",
    429: "Too Many Requests",
    500: "Internal Server Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


def _class_for(status: int, code: object) -> type[APIStatusError]:
    if status == 429 and code == "insufficient_quota":
        return InsufficientQuotaError
    if status in _BY_STATUS:
        return _BY_STATUS[status]
    if status >= 500:
        return InternalServerError
    return APIStatusError


_TITLE = re.compile(rb"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)
_HTML = re.compile(rb"<\s*(?:!doctype|html|head|body|div|p|h[1-6]|center|pre|span)\b", re.I)
_TAGS = re.compile(r"<[^>]+>")
_SPACE = re.compile(r"\s+")


def text_snippet(raw: bytes, limit: int = _SNIPPET_CHARS) -> str:
    """A short, single-line, readable rendering of a body that is not JSON (HTML pages included)."""
    title = _TITLE.search(raw)
    text = raw.decode("utf-8", "replace")
    if title is not None:
        text = title.group(1).decode("utf-8", "replace")
    elif _HTML.search(raw) is not None:
        text = _TAGS.sub(" ", text)
    text = _SPACE.sub(" ", text).strip()
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return text


def _decode_json(raw: bytes) -> tuple[bool, object]:
    try:
        return True, json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return False, None


def _error_body(parsed: object) -> object:
    """What `.body` holds, as the official SDK has it: the `error` member of
    `{"error": ...}`, else the whole decoded body."""
    if isinstance(parsed, dict) and "error" in parsed:
        return parsed["error"]
    return parsed


def _code_text(code: object) -> str | None:
    """llama.cpp and vLLM send numeric codes; like the official SDK, `.code` is text."""
    if isinstance(code, str):
        return code
    if isinstance(code, int) and not isinstance(code, bool):
        return str(code)
    return None


def _error_fields(parsed: object) -> tuple[str | None, str | None, Any, str | None]:
    """Pull (message, type, code, param) out of the error shapes servers use."""
    if isinstance(parsed, str):
        return parsed, None, None, None
    if not isinstance(parsed, dict):
        return None, None, None, None
    err: object = parsed.get("error", parsed)
    if isinstance(err, str):  # {"error": "model not found"} (Ollama and friends)
        return err, None, None, None
    if not isinstance(err, dict):
        return None, None, None, None
    message = err.get("message")
    if message is None and "detail" in err:  # FastAPI: {"detail": "..."} or a list of problems
        detail = err["detail"]
        message = detail if isinstance(detail, str) else json.dumps(detail)
    if message is not None and not isinstance(message, str):
        message = json.dumps(message)
    err_type = err.get("type")
    code = err.get("code")
    param = err.get("param")
    return (
        message,
        err_type if isinstance(err_type, str) else None,
        _code_text(code),
        param if isinstance(param, str) else None,
    )


def _compose(
    status: int,
    server_message: str | None,
    err_type: str | None,
    code: object,
    request_id: str | None,
) -> str:
    reason = _REASONS.get(status, "")
    head = f"{status} {reason}".rstrip() if status else ""
    # A proxy's page titled "502 Bad Gateway" adds nothing to the status line itself.
    said = server_message if server_message and server_message != head else None
    text = (f"{head}: {said}" if head else said) if said else (head or "error")
    details = [f"{k}={v}" for k, v in (("type", err_type), ("code", code)) if v is not None]
    if request_id:
        details.append(f"request_id={request_id}")
    return f"{text} ({', '.join(details)})" if details else text


def error_from_response(status: int, headers: Mapping[str, str], raw_body: bytes) -> APIStatusError:
    """Map an HTTP error answer to the matching `APIStatusError` subclass.

    Pure: no I/O. Handles OpenAI's `{"error": {...}}`, vLLM's top-level error object,
    FastAPI's `{"detail": ...}`, a bare JSON string, plain text and HTML pages.
    """
    is_json, parsed = _decode_json(raw_body)
    server_message, err_type, code, param = _error_fields(parsed) if is_json else (None,) * 4
    if server_message is None:
        snippet = text_snippet(raw_body)
        server_message = snippet or None
    request_id = request_id_of(headers)
    location = header(headers, "location") if 300 <= status < 400 else None
    if location:
        where = f"the server redirected to {location}; use that URL as base_url"
        server_message = f"{where} ({server_message})" if server_message else where
    return _status_error(
        _class_for(status, code),
        _compose(status, server_message, err_type, code, request_id),
        status_code=status,
        headers=headers,
        body=_error_body(parsed) if is_json else raw_body.decode("utf-8", "replace"),
        raw_body=raw_body,
        fields=(server_message, err_type, code, param),
        request_id=request_id,
    )


def error_from_stream_payload(
    payload: object,
    raw_frame: bytes,
    *,
    request_id: str | None = None,
    where: str = "in-stream error",
) -> APIStatusError:
    """Map an error sent with a 200: inside a stream (`event: error` or `{"error": ...}`)
    or, with `where="error body with status 200"`, as a whole non-streamed body."""
    server_message, err_type, code, param = _error_fields(payload)
    if server_message is None:
        server_message = text_snippet(raw_frame) or "the server reported an error mid-stream"
    status = 0
    if (
        code is not None
        and len(code) == 3
        and code.isascii()
        and code.isdigit()
        and code >= "400"
        and code <= "599"
    ):
        status = int(code)
    elif isinstance(payload, dict) and isinstance(payload.get("status_code"), int):
        status = payload["status_code"]
    elif err_type in _STATUS_BY_TYPE:
        status = _STATUS_BY_TYPE[err_type]
    elif isinstance(code, str) and code in _STATUS_BY_TYPE:
        status = _STATUS_BY_TYPE[code]
    cls = _class_for(status, code) if status else APIStreamError
    if cls is APIStatusError:
        cls = APIStreamError
    return _status_error(
        cls,
        f"{where}: " + _compose(status, server_message, err_type, code, request_id),
        status_code=status or 200,
        headers=None,
        body=_error_body(payload),
        raw_body=raw_frame,
        fields=(server_message, err_type, code, param),
        request_id=request_id,
    )


def _status_error(
    cls: type[APIStatusError],
    message: str,
    *,
    status_code: int,
    headers: Mapping[str, str] | None,
    body: object,
    raw_body: bytes,
    fields: tuple[str | None, str | None, str | None, str | None],
    request_id: str | None,
) -> APIStatusError:
    server_message, err_type, code, param = fields
    return cls(
        message,
        status_code=status_code,
        headers=headers,
        body=body,
        raw_body=raw_body,
        error_type=err_type,
        code=code,
        param=param,
        request_id=request_id,
        server_message=server_message,
    )


# ---------------------------------------------------------------- typed answers and tool loops


class StructuredOutputError(_Reported):
    """The answer arrived but cannot become the typed result you asked for (`parse`, or a
    `response_format` class or typed tools given to `create`/`stream`).

    Attributes:
        completion: The whole response, as received (nothing is lost).
        choice_index: The choice at fault.
    """

    def __init__(self, message: str, *, completion: Any, choice_index: int = 0) -> None:
        super().__init__(message)
        self.completion = completion
        self.choice_index = choice_index


class LengthFinishReasonError(StructuredOutputError):
    """The answer was cut off at the token limit (`finish_reason == "length"`), so it cannot
    be parsed; raise `max_completion_tokens` or ask for less."""


class ContentFilterFinishReasonError(StructuredOutputError):
    """The server's content filter stopped the answer (`finish_reason == "content_filter"`)."""


class RefusalError(StructuredOutputError):
    """The model refused to answer in the requested format.

    Attributes:
        refusal: The model's refusal text.
    """

    def __init__(
        self, message: str, *, completion: Any, refusal: str, choice_index: int = 0
    ) -> None:
        super().__init__(message, completion=completion, choice_index=choice_index)
        self.refusal = refusal


class OutputValidationError(StructuredOutputError):
    """The answer (or a tool call's arguments) is not valid JSON, or does not match the type.

    Attributes:
        field: Where the first mismatch is (`"address.zip"`, `"tags[2]"`); `""` for the whole
            answer (not JSON, not an object...).
        problem: What is wrong there.
        content: The text that failed: the message content, or the tool call's arguments.
        tool_call_id: The tool call whose arguments failed; `None` for the message content.
    """

    def __init__(
        self,
        message: str,
        *,
        completion: Any,
        field: str,
        problem: str,
        content: str | None,
        tool_call_id: str | None = None,
        choice_index: int = 0,
    ) -> None:
        super().__init__(message, completion=completion, choice_index=choice_index)
        self.field = field
        self.problem = problem
        self.content = content
        self.tool_call_id = tool_call_id


class ToolCallError(_Reported):
    """A tool call the tool loop could not run: no tool by that name, or arguments that are
    not JSON or do not match the tool's parameters. Never raised: it is the `error` of the
    `ToolResult`, and the model is told what went wrong.

    Attributes:
        name: The tool the model called.
        tool_call_id: The id of the call.
    """

    def __init__(self, message: str, *, name: str, tool_call_id: str) -> None:
        super().__init__(message)
        self.name = name
        self.tool_call_id = tool_call_id


class ToolLoopLimitError(_Reported):
    """`run_tools` reached `max_rounds` and the model still asked for tools.

    The tools of the last round were run, so `messages` is a conversation you can resume
    (`run_tools(messages=exc.messages, ...)`).

    Attributes:
        max_rounds: The limit that was reached.
        messages: The whole conversation so far.
        completions: The completion of every round, in order.
        tool_results: Every tool call that was run (or answered with an error), in order.
    """

    def __init__(
        self,
        message: str,
        *,
        max_rounds: int,
        messages: list[Any],
        completions: list[Any],
        tool_results: list[Any],
    ) -> None:
        super().__init__(message)
        self.max_rounds = max_rounds
        self.messages = messages
        self.completions = completions
        self.tool_results = tool_results

    @property
    def completion(self) -> Any:
        """The last round's completion (the one that still asked for tools)."""
        return self.completions[-1] if self.completions else None
