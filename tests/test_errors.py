"""Mapping server answers to chatlib exceptions, and what those exceptions carry."""

from __future__ import annotations

import json
import pickle
from typing import Any

import pytest

from chatlib import errors
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
    error_from_response,
    error_from_stream_payload,
)


def openai_body(
    message: str, type_: str | None = None, code: Any = None, param: Any = None
) -> bytes:
    return json.dumps(
        {"error": {"message": message, "type": type_, "param": param, "code": code}}
    ).encode()


# ---------------------------------------------------------------- status -> class


@pytest.mark.parametrize(
    ("status", "body", "cls"),
    [
        (400, openai_body("bad", "invalid_request_error"), BadRequestError),
        (
            401,
            openai_body("Incorrect API key provided", "invalid_request_error"),
            AuthenticationError,
        ),
        (403, openai_body("Country not supported", "request_forbidden"), PermissionDeniedError),
        (
            404,
            openai_body("The model `gpt-9` does not exist", code="model_not_found"),
            NotFoundError,
        ),
        (408, b"", RequestTimeoutError),
        (409, openai_body("conflict"), ConflictError),
        (422, b'{"detail": [{"loc": ["body"], "msg": "x"}]}', UnprocessableEntityError),
        (429, openai_body("Rate limit reached", "requests", "rate_limit_exceeded"), RateLimitError),
        (
            429,
            openai_body(
                "You exceeded your current quota", "insufficient_quota", "insufficient_quota"
            ),
            InsufficientQuotaError,
        ),
        (500, openai_body("The server had an error", "server_error"), InternalServerError),
        (502, b"<html><title>502 Bad Gateway</title></html>", InternalServerError),
        (503, b"", InternalServerError),
        (504, b"upstream timed out", InternalServerError),
        (418, b"I'm a teapot", APIStatusError),
        (405, b'{"detail": "Method Not Allowed"}', APIStatusError),
    ],
)
def test_status_maps_to_class(status: int, body: bytes, cls: type[APIStatusError]) -> None:
    error = error_from_response(status, {}, body)
    assert type(error) is cls
    assert error.status_code == status
    assert error.raw_body == body
    assert str(error).startswith(str(status))


def test_insufficient_quota_is_also_a_rate_limit_error() -> None:
    error = error_from_response(
        429, {}, openai_body("quota", "insufficient_quota", "insufficient_quota")
    )
    assert isinstance(error, RateLimitError)
    assert error.code == "insufficient_quota"


def test_a_plain_429_is_not_insufficient_quota() -> None:
    error = error_from_response(429, {}, openai_body("slow down", code="rate_limit_exceeded"))
    assert not isinstance(error, InsufficientQuotaError)


# ---------------------------------------------------------------- fields of the error


def test_openai_error_fields() -> None:
    body = openai_body(
        "Invalid value for 'temperature'", "invalid_request_error", "invalid_value", "temperature"
    )
    error = error_from_response(400, {"x-request-id": "req_abc123", "x-other": "1"}, body)
    assert error.status_code == 400
    assert error.request_id == "req_abc123"
    assert error.type == "invalid_request_error"
    assert error.code == "invalid_value"
    assert error.param == "temperature"
    assert error.server_message == "Invalid value for 'temperature'"
    assert error.body == json.loads(body)["error"]  # as the official SDK: the error object
    assert error.raw_body == body
    assert error.headers["x-other"] == "1"
    text = str(error)
    assert "400" in text
    assert "Invalid value for 'temperature'" in text
    assert "req_abc123" in text
    assert error.message == text


@pytest.mark.parametrize("header", ["x-request-id", "X-Request-ID", "X-REQUEST-ID", "X-Request-Id"])
def test_request_id_header_in_any_case(header: str) -> None:
    error = error_from_response(500, {header: "req_9"}, b"")
    assert error.request_id == "req_9"
    assert "req_9" in str(error)


def test_no_request_id_header() -> None:
    error = error_from_response(500, {"content-type": "text/plain"}, b"oops")
    assert error.request_id is None
    assert "request_id" not in str(error)


# (status, raw body, server message expected in str(), type, code, param, parsed body)
BODIES: list[tuple[int, bytes, str, Any, Any, Any, Any]] = [
    (
        400,
        b'{"object":"error","message":"max_tokens is too large","type":"BadRequestError",'
        b'"param":null,"code":400}',
        "max_tokens is too large",
        "BadRequestError",
        400,
        None,
        {
            "object": "error",
            "message": "max_tokens is too large",
            "type": "BadRequestError",
            "param": None,
            "code": 400,
        },
    ),
    (401, b'{"detail": "Invalid API key"}', "Invalid API key", None, None, None, None),
    (
        422,
        b'{"detail": [{"loc": ["body", "messages"], "msg": "field required"}]}',
        "field required",
        None,
        None,
        None,
        None,
    ),
    (500, b'"Internal failure"', "Internal failure", None, None, None, "Internal failure"),
    (404, b'{"error": "model not found"}', "model not found", None, None, None, None),
    (500, b"Internal Server Error", "Internal Server Error", None, None, None, None),
    (
        400,
        b'{"error":{"code":400,"message":"the request exceeds the available context size",'
        b'"type":"exceed_context_size_error","n_prompt_tokens":5000,"n_ctx":4096}}',
        "exceeds the available context size",
        "exceed_context_size_error",
        400,
        None,
        None,
    ),
    (
        500,
        b'{"error": {"message": "Input validation error", "type": "internal_server_error", '
        b'"param": null, "code": null}}',
        "Input validation error",
        "internal_server_error",
        None,
        None,
        None,
    ),
]


@pytest.mark.parametrize(("status", "raw", "message", "type_", "code", "param", "parsed"), BODIES)
def test_error_body_shapes(
    status: int, raw: bytes, message: str, type_: Any, code: Any, param: Any, parsed: Any
) -> None:
    error = error_from_response(status, {}, raw)
    assert message in str(error)
    assert message in (error.server_message or "")
    assert error.type == type_
    assert error.code == (str(code) if isinstance(code, int) else code)
    assert error.param == param
    assert error.raw_body == raw
    if parsed is not None:
        assert error.body == (parsed.get("error", parsed) if isinstance(parsed, dict) else parsed)


def test_llama_server_integer_code_reads_as_text_like_the_official_sdk() -> None:
    error = error_from_response(
        400, {}, b'{"error":{"code":400,"message":"bad","type":"invalid_request_error"}}'
    )
    assert error.code == "400"
    assert error.body == {"code": 400, "message": "bad", "type": "invalid_request_error"}
    assert type(error) is BadRequestError


def test_plain_text_body() -> None:
    error = error_from_response(500, {}, b"Internal Server Error\n")
    assert error.body == "Internal Server Error\n"
    assert str(error) == "500 Internal Server Error: Internal Server Error"


def test_html_page_title_is_used() -> None:
    page = (
        b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
        b"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx/1.25.3</center>\r\n"
        b"</body>\r\n</html>\r\n"
    )
    error = error_from_response(502, {}, page)
    assert error.server_message == "502 Bad Gateway"
    assert "<" not in str(error)
    assert error.raw_body == page
    assert isinstance(error.body, str) and "nginx" in error.body


def test_html_page_without_title_has_its_tags_stripped() -> None:
    page = b"<html><body><h1>Service   Unavailable</h1>\n<p>Try <b>later</b>.</p></body></html>"
    error = error_from_response(503, {}, page)
    assert error.server_message == "Service Unavailable Try later ."
    assert "<" not in str(error) and "\n" not in str(error)


def test_long_html_page_is_truncated_in_the_message_but_kept_whole() -> None:
    page = b"<html><body><p>" + b"lorem ipsum " * 2000 + b"</p></body></html>"
    error = error_from_response(503, {}, page)
    assert len(str(error)) < 400
    assert error.server_message is not None and error.server_message.endswith("...")
    assert error.raw_body == page


@pytest.mark.parametrize(
    "text",
    [
        "max_tokens must be <= 4096 and > 0",
        "expected a List<Message> but got Map<String, Object>",
    ],
)
def test_plain_text_with_angle_brackets_is_kept(text: str) -> None:
    error = error_from_response(400, {"content-type": "text/plain"}, text.encode())
    assert error.server_message == text


def test_empty_body() -> None:
    error = error_from_response(503, {}, b"")
    assert str(error) == "503 Service Unavailable"
    assert error.server_message is None
    assert error.body == ""
    assert error.raw_body == b""


def test_invalid_utf8_body() -> None:
    raw = b"\xff\xfe\xfa broken \xc3"
    error = error_from_response(500, {}, raw)
    assert error.raw_body == raw
    assert "broken" in str(error)
    assert isinstance(error.body, str)


@pytest.mark.parametrize("raw", [b"null", b"[1, 2]", b"{}", b"42", b'{"error": {"message": null}}'])
def test_json_bodies_without_a_message_still_make_an_error(raw: bytes) -> None:
    error = error_from_response(500, {}, raw)
    assert type(error) is InternalServerError
    assert str(error).startswith("500 Internal Server Error")
    assert error.raw_body == raw


# ---------------------------------------------------------------- in-stream errors


@pytest.mark.parametrize(
    ("payload", "cls", "status"),
    [
        (
            {"error": {"code": 500, "message": "x", "type": "server_error"}},
            InternalServerError,
            500,
        ),
        (
            {"error": {"code": 400, "message": "x", "type": "invalid_request_error"}},
            BadRequestError,
            400,
        ),
        ({"error": {"code": 503, "message": "x"}}, InternalServerError, 503),
        ({"error": {"message": "x", "type": "invalid_request_error"}}, BadRequestError, 400),
        ({"error": {"message": "x", "type": "exceed_context_size_error"}}, BadRequestError, 400),
        ({"error": {"message": "x", "type": "authentication_error"}}, AuthenticationError, 401),
        ({"error": {"message": "x", "type": "rate_limit_error"}}, RateLimitError, 429),
        ({"error": {"message": "x", "type": "server_error"}}, InternalServerError, 500),
        ({"error": {"message": "x", "type": "unavailable_error"}}, InternalServerError, 503),
        ({"error": {"message": "x", "code": "rate_limit_exceeded"}}, RateLimitError, 429),
        (
            {"error": {"message": "x", "type": "insufficient_quota", "code": "insufficient_quota"}},
            InsufficientQuotaError,
            429,
        ),
        ({"error": {"message": "x"}, "status_code": 502}, InternalServerError, 502),
        (
            {"object": "error", "message": "x", "type": "BadRequestError", "code": 400},
            BadRequestError,
            400,
        ),
        ({"error": {"message": "x", "type": "something_new"}}, APIStreamError, 200),
        ({"error": {"message": "x", "code": 7}}, APIStreamError, 200),
        ({"error": "x"}, APIStreamError, 200),
        ("x", APIStreamError, 200),
    ],
)
def test_stream_payload_mapping(payload: Any, cls: type[APIStatusError], status: int) -> None:
    raw = json.dumps(payload).encode() if not isinstance(payload, str) else payload.encode()
    error = error_from_stream_payload(payload, raw, request_id="req_s")
    assert type(error) is cls
    assert error.status_code == status
    assert error.raw_body == raw
    inner = payload.get("error", payload) if isinstance(payload, dict) else payload
    assert error.body == inner
    assert error.request_id == "req_s"
    assert error.server_message == "x"
    assert str(error).startswith("in-stream error: ")
    assert "x" in str(error)


def test_stream_error_without_a_message_uses_the_raw_frame() -> None:
    raw = b'{"error": {"type": "something_new"}}'
    error = error_from_stream_payload(json.loads(raw), raw)
    assert type(error) is APIStreamError
    assert "something_new" in str(error)


# ---------------------------------------------------------------- the exception tree


def _all_exception_classes() -> list[type[BaseException]]:
    found = []
    for name in errors.__all__:
        obj = getattr(errors, name)
        if isinstance(obj, type) and issubclass(obj, BaseException):
            found.append(obj)
    return found


def test_every_chatlib_exception_derives_from_chatlib_error() -> None:
    classes = _all_exception_classes()
    assert len(classes) >= 20
    for cls in classes:
        assert issubclass(cls, ChatLibError), cls


@pytest.mark.parametrize(
    ("cls", "parents"),
    [
        (InvalidArgumentError, (ValueError,)),
        (MissingAPIKeyError, (ValueError,)),
        (APITimeoutError, (APIConnectionError, APIError)),
        (InsufficientQuotaError, (RateLimitError, APIStatusError)),
        (APIStreamError, (APIStatusError,)),
        (BodyTooLargeError, (APIResponseValidationError,)),
        (IncompleteStreamError, (APIError,)),
    ],
)
def test_exception_hierarchy(cls: type[BaseException], parents: tuple[type, ...]) -> None:
    for parent in parents:
        assert issubclass(cls, parent)


PICKLED: list[BaseException] = [
    error_from_response(
        429,
        {"x-request-id": "req_1"},
        openai_body("quota", "insufficient_quota", "insufficient_quota"),
    ),
    error_from_response(400, {}, openai_body("bad", "invalid_request_error", param="messages")),
    error_from_response(502, {}, b"<html><title>Bad Gateway</title></html>"),
    error_from_response(418, {}, b"teapot"),
    error_from_stream_payload({"error": {"message": "mid"}}, b'{"error": {"message": "mid"}}'),
    APIConnectionError(),
    APIConnectionError("refused", request_method="POST", request_url="http://h/v1"),
    APITimeoutError(),
    IncompleteStreamError("cut off"),
    APIResponseValidationError("bad json", status_code=200, raw_body=b"{", request_id="r"),
    BodyTooLargeError("too big", raw_body=b"x"),
    InvalidArgumentError("temperature", "must be between 0 and 2"),
    MissingAPIKeyError("no key"),
]


@pytest.mark.parametrize("error", PICKLED, ids=lambda e: type(e).__name__)
def test_exceptions_pickle(error: BaseException) -> None:
    clone = pickle.loads(pickle.dumps(error))
    assert type(clone) is type(error)
    assert str(clone) == str(error)
    assert clone.args == error.args
    for attr in ("message", "status_code", "request_id", "body", "raw_body", "code", "type"):
        if hasattr(error, attr):
            assert getattr(clone, attr) == getattr(error, attr), attr
    if isinstance(error, InvalidArgumentError):
        assert isinstance(clone, InvalidArgumentError)
        assert clone.field == error.field


def test_exceptions_can_be_raised_and_caught_after_pickling() -> None:
    error = pickle.loads(pickle.dumps(error_from_response(503, {}, b"")))
    with pytest.raises(InternalServerError) as info:
        raise error
    assert info.value.status_code == 503
