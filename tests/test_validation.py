"""Bad arguments are rejected before any request is sent, with the field named."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from chatlib._call import plan_call
from chatlib._config import ClientConfig
from chatlib._request import build_request
from chatlib._transports.fake import FakeTransport
from chatlib.errors import ChatLibError, InvalidArgumentError
from chatlib.models import ChatMessage, ChatRole, CreateChatCompletionRequest
from chatlib.testing import LocalServer

CONFIG = ClientConfig.resolve(base_url="http://127.0.0.1:9/v1")
USER = {"role": "user", "content": "Hi"}


def plan(**params: Any) -> Any:
    return plan_call(CONFIG, None, params, stream=None)


# (params, the field the error must name, a piece of the message)
BAD_CALLS: list[tuple[dict[str, Any], str, str]] = [
    ({"messages": [USER]}, "model", "required"),
    ({"model": "m"}, "messages", "required"),
    ({"model": "", "messages": [USER]}, "model", "non-empty"),
    ({"model": None, "messages": [USER]}, "model", "non-empty"),
    ({"model": 4, "messages": [USER]}, "model", "non-empty"),
    ({"model": "m", "messages": []}, "messages", "at least one"),
    ({"model": "m", "messages": ()}, "messages", "at least one"),
    ({"model": "m", "messages": "Hi"}, "messages", "list"),
    ({"model": "m", "messages": b"Hi"}, "messages", "list"),
    ({"model": "m", "messages": USER}, "messages", "list"),
    ({"model": "m", "messages": None}, "messages", "list"),
    ({"model": "m", "messages": 42}, "messages", "list"),
    ({"model": "m", "messages": [{"content": "Hi"}]}, "messages[0].role", "required"),
    ({"model": "m", "messages": [USER, {"role": None, "content": "x"}]}, "messages[1].role", ""),
    ({"model": "m", "messages": [{"role": "", "content": "x"}]}, "messages[0].role", ""),
    (
        {"model": "m", "messages": [{"role": "tool", "content": "21"}]},
        "messages[0].tool_call_id",
        "",
    ),
    (
        {"model": "m", "messages": [{"role": "tool", "content": "21", "tool_call_id": ""}]},
        "messages[0].tool_call_id",
        "",
    ),
    (
        {"model": "m", "messages": [USER, {"role": "function", "content": "21"}]},
        "messages[1].name",
        "function",
    ),
    ({"model": "m", "messages": [{"role": "user"}]}, "messages[0].content", "user"),
    ({"model": "m", "messages": [{"role": "user", "content": None}]}, "messages[0].content", ""),
    ({"model": "m", "messages": [{"role": "system"}]}, "messages[0].content", "system"),
    ({"model": "m", "messages": [{"role": "developer"}]}, "messages[0].content", ""),
    ({"model": "m", "messages": [ChatMessage(role="user")]}, "messages[0].content", ""),
    ({"model": "m", "messages": [ChatMessage(role=ChatRole.USER)]}, "messages[0].content", ""),
    ({"model": "m", "messages": [{"role": "user", "content": 5}]}, "messages[0].content", "string"),
    (
        {"model": "m", "messages": [{"role": "user", "content": [{"text": "no type"}]}]},
        "messages[0].content[0].type",
        "type",
    ),
    ({"model": "m", "messages": ["Hi"]}, "messages[0]", "ChatMessage or a dict"),
    ({"model": "m", "messages": [USER, 42]}, "messages[1]", "int"),
    ({"model": "m", "messages": [USER, None]}, "messages[1]", "NoneType"),
    ({"model": "m", "messages": [USER], "temperature": "hot"}, "temperature", "number"),
    ({"model": "m", "messages": [USER], "temperature": 2.5}, "temperature", "between 0 and 2"),
    ({"model": "m", "messages": [USER], "temperature": -0.1}, "temperature", "between"),
    ({"model": "m", "messages": [USER], "temperature": math.nan}, "temperature", "finite"),
    ({"model": "m", "messages": [USER], "temperature": math.inf}, "temperature", "finite"),
    ({"model": "m", "messages": [USER], "temperature": True}, "temperature", "number"),
    ({"model": "m", "messages": [USER], "top_p": -0.1}, "top_p", "between 0 and 1"),
    ({"model": "m", "messages": [USER], "top_p": 1.01}, "top_p", "between"),
    ({"model": "m", "messages": [USER], "presence_penalty": 2.5}, "presence_penalty", "between"),
    ({"model": "m", "messages": [USER], "frequency_penalty": -3}, "frequency_penalty", "between"),
    ({"model": "m", "messages": [USER], "n": 1.5}, "n", "integer"),
    ({"model": "m", "messages": [USER], "n": 0}, "n", "between 1 and 128"),
    ({"model": "m", "messages": [USER], "n": True}, "n", "integer"),
    ({"model": "m", "messages": [USER], "max_tokens": "100"}, "max_tokens", "integer"),
    ({"model": "m", "messages": [USER], "n": 129}, "n", "between 1 and 128"),
    ({"model": "m", "messages": [USER], "seed": 1.0}, "seed", "integer"),
    ({"model": "m", "messages": [USER], "top_logprobs": 21}, "top_logprobs", "between 0 and 20"),
    ({"model": "m", "messages": [USER], "top_logprobs": -1}, "top_logprobs", "between"),
    ({"model": "m", "messages": [USER], "logprobs": "yes"}, "logprobs", "True or False"),
    ({"model": "m", "messages": [USER], "logprobs": 1}, "logprobs", "True or False"),
    ({"model": "m", "messages": [USER], "store": "false"}, "store", "True or False"),
    ({"model": "m", "messages": [USER], "parallel_tool_calls": 0}, "parallel_tool_calls", ""),
    ({"model": "m", "messages": [USER], "user": 123}, "user", "string"),
    ({"model": "m", "messages": [USER], "reasoning_effort": 3}, "reasoning_effort", "string"),
    ({"model": "m", "messages": [USER], "metadata": [("a", "b")]}, "metadata", "dict"),
    ({"model": "m", "messages": [USER], "extra_body": "top_k=5"}, "extra_body", "dict"),
    ({"model": "m", "messages": [USER], "extra_headers": ["X-A"]}, "extra_headers", "dict"),
    ({"model": "m", "messages": [USER], "logit_bias": 5}, "logit_bias", "dict"),
    ({"model": "m", "messages": [USER], "stop": 5}, "stop", "string"),
    ({"model": "m", "messages": [USER], "stop": ["a", 1]}, "stop", "list of strings"),
    ({"model": "m", "messages": [USER], "tools": {"type": "function"}}, "tools", "list"),
    ({"model": "m", "messages": [USER], "tools": [{"function": {"name": "f"}}]}, "tools[0]", ""),
    (
        {"model": "m", "messages": [USER], "tools": [{"type": "function"}]},
        "tools[0].function.name",
        "",
    ),
    (
        {"model": "m", "messages": [USER], "tools": [{"type": "function", "function": {}}]},
        "tools[0].function.name",
        "required",
    ),
]


@pytest.mark.parametrize(
    ("params", "field", "hint"),
    BAD_CALLS,
    ids=[f"{i}-{case[1]}" for i, case in enumerate(BAD_CALLS)],
)
def test_bad_arguments_raise_invalid_argument_naming_the_field(
    params: dict[str, Any], field: str, hint: str
) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        plan(**params)
    error = info.value
    assert error.field == field
    assert str(error).startswith(f"{field}: ")
    assert hint in error.problem
    assert isinstance(error, ValueError)
    assert isinstance(error, ChatLibError)


@pytest.mark.parametrize(
    ("params", "field", "hint"),
    [case for case in BAD_CALLS if "model" in case[0] and "messages" in case[0]],
)
def test_build_request_rejects_the_same_request_objects(
    params: dict[str, Any], field: str, hint: str
) -> None:
    request = CreateChatCompletionRequest(**params)
    with pytest.raises(InvalidArgumentError) as info:
        build_request(CONFIG, request, stream=False)
    assert info.value.field == field
    with pytest.raises(InvalidArgumentError) as info:
        plan_call(CONFIG, request, {}, stream=None)
    assert info.value.field == field


@pytest.mark.parametrize(
    ("wrong", "right"),
    [
        ("temprature", "temperature"),
        ("max_token", "max_tokens"),
        ("toolchoice", "tool_choice"),
        ("response_fromat", "response_format"),
        ("extra_bdy", "extra_body"),
        ("Temperature", "temperature"),
    ],
)
def test_misspelled_keyword_suggests_the_right_one(wrong: str, right: str) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        plan(model="m", messages=[USER], **{wrong: 1})
    assert info.value.field == wrong
    assert f"did you mean {right!r}?" in str(info.value)
    assert "extra_body" in str(info.value)


def test_unknown_keyword_with_no_close_match_points_to_extra_body() -> None:
    with pytest.raises(InvalidArgumentError) as info:
        plan(model="m", messages=[USER], zzzzzz=1)
    assert "did you mean" not in str(info.value)
    assert "extra_body" in str(info.value)


def test_nan_in_extra_body_is_rejected_before_sending() -> None:
    with pytest.raises(InvalidArgumentError) as info:
        plan(model="m", messages=[USER], extra_body={"top_k": math.nan})
    assert "JSON" in str(info.value)


def test_unserialisable_value_is_rejected_before_sending() -> None:
    with pytest.raises(InvalidArgumentError):
        plan(model="m", messages=[USER], metadata={"when": object()})


def test_nan_in_extra_body_names_extra_body() -> None:
    with pytest.raises(InvalidArgumentError) as info:
        plan(model="m", messages=[USER], extra_body={"top_k": math.nan})
    assert info.value.field == "extra_body"


@pytest.mark.parametrize(
    ("params", "field"),
    [
        (
            {"messages": [USER, {"role": "user", "content": "caf\udcc3\udca9"}]},
            "messages[1].content",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "text", "text": "\ud83d"}]}]},
            "messages[0].content",
        ),
        ({"messages": [USER], "user": "\udcff"}, "user"),
        ({"messages": [USER], "extra_body": {"note": "\ud800"}}, "extra_body"),
    ],
    ids=["surrogate-escaped-bytes", "half-a-pair", "user", "extra-body"],
)
def test_a_lone_surrogate_is_rejected_before_sending_naming_the_field(
    params: dict[str, Any], field: str, facade: Any, server: LocalServer
) -> None:
    # Text decoded with errors="surrogateescape" (argv or stdin in a non-UTF-8 locale), or
    # half of a UTF-16 pair: it cannot be encoded as UTF-8, so it cannot be sent.
    client = facade.client(base_url=server.base_url)
    for call in (client.create, client.stream_all):
        with pytest.raises(InvalidArgumentError) as info:
            call(model="m", **params)
        assert info.value.field == field
        assert "lone surrogate" in str(info.value)
    assert server.requests == []


def test_extra_is_not_a_keyword_argument() -> None:
    with pytest.raises(InvalidArgumentError) as info:
        plan(model="m", messages=[USER], extra={"top_k": 5})
    assert "extra_body" in str(info.value)


def test_request_object_and_keywords_together_are_rejected() -> None:
    request = CreateChatCompletionRequest(model="m", messages=[USER])
    with pytest.raises(InvalidArgumentError) as info:
        plan_call(CONFIG, request, {"temperature": 0.2}, stream=None)
    assert info.value.field == "request"
    assert "not both" in str(info.value)


def test_something_else_passed_as_the_request_is_rejected() -> None:
    with pytest.raises(InvalidArgumentError) as info:
        plan_call(CONFIG, {"model": "m", "messages": [USER]}, {}, stream=None)  # type: ignore[arg-type]
    assert info.value.field == "request"
    assert "dict" in str(info.value)


@pytest.mark.parametrize(
    "messages",
    [
        [USER],
        (USER,),
        [ChatMessage.user("Hi")],
        [ChatMessage.system("s"), USER, {"role": "assistant", "tool_calls": []}],
        [{"role": "assistant"}],
        [{"role": "assistant", "content": None}],
        [{"role": "function", "content": None, "name": "f"}],
        [{"role": "tool", "content": "x", "tool_call_id": "c"}],
        [{"role": "critic", "content": "a role this library does not know"}],
    ],
)
def test_valid_requests_are_accepted(messages: Any) -> None:
    call = plan(model="m", messages=messages, temperature=0, top_p=1, n=1, seed=-1)
    assert call.http_request.body is not None


@pytest.mark.parametrize(
    "params",
    [
        {"model": "m", "messages": []},
        {"model": "m", "messages": [USER], "temperature": 9},
        {"model": "m", "messages": [USER], "temperatur": 0.5},
        {"model": "m", "messages": [{"role": "tool", "content": "x"}]},
    ],
)
def test_no_request_reaches_the_transport(params: dict[str, Any]) -> None:
    from chatlib._sync import SyncChat

    transport = FakeTransport()
    chat = SyncChat(base_url="http://127.0.0.1:9/v1", transport=transport)
    with pytest.raises(InvalidArgumentError):
        chat.create(**params)
    with pytest.raises(InvalidArgumentError):
        chat.stream(**params)
    assert transport.requests == []


def test_any_iterable_of_messages_and_a_tuple_of_stops_are_accepted() -> None:
    call = plan(model="m", messages=(m for m in [USER]), stop=("\n\n", "END"))
    body = json.loads(call.http_request.body or b"")
    assert body["messages"] == [USER]
    assert body["stop"] == ["\n\n", "END"]


@pytest.mark.parametrize("value", [0, -1])
def test_max_tokens_has_no_minimum_as_in_the_schema(value: int) -> None:
    # llama-cpp-python reads max_tokens <= 0 as "no limit"; the schema sets no minimum.
    call = plan(model="m", messages=[USER], max_tokens=value, max_completion_tokens=value)
    body = json.loads(call.http_request.body or b"")
    assert (body["max_tokens"], body["max_completion_tokens"]) == (value, value)


# ---------------------------------------------------------------- what may go in a header

SECRET = "sk-header-secret-42"


def test_a_key_read_with_its_trailing_newline_is_stripped() -> None:
    config = ClientConfig.resolve(api_key=f"  {SECRET}\n", base_url="http://127.0.0.1:9/v1")
    assert config.api_key is not None and config.api_key.reveal() == SECRET


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"api_key": "sk-a\nInjected: 1"}, "api_key"),
        ({"api_key": "sk-pasted…"}, "api_key"),
        ({"organization": "org\r\n"}, "organization"),
        ({"default_headers": {"X-N": 1}}, "default_headers['X-N']"),
        ({"default_headers": {"X-A": "a\r\nInjected: 1"}}, "default_headers['X-A']"),
        ({"default_headers": {"Bad Name": "v"}}, "default_headers"),
    ],
)
def test_header_values_that_cannot_be_sent_fail_at_construction_without_echoing(
    kwargs: dict[str, Any], field: str
) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        ClientConfig.resolve(base_url="http://127.0.0.1:9/v1", **kwargs)
    assert info.value.field == field
    for value in kwargs.values():
        shown = value if isinstance(value, str) else str(next(iter(value.values())))
        if len(shown) > 3:
            assert shown not in str(info.value)


@pytest.mark.parametrize(
    ("headers", "field"),
    [
        ({"X-N": 1}, "extra_headers['X-N']"),
        ({"X-A": f"{SECRET}\n"}, "extra_headers['X-A']"),
        ({"X-A": "café ☕"}, "extra_headers['X-A']"),
    ],
)
def test_bad_extra_headers_fail_before_sending_naming_the_header(
    headers: dict[str, Any], field: str
) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        plan(model="m", messages=[USER], extra_headers=headers)
    assert info.value.field == field
    assert SECRET not in str(info.value)


def test_latin_1_header_values_are_fine() -> None:
    call = plan(model="m", messages=[USER], extra_headers={"X-Name": "café\tau lait"})
    assert call.http_request.headers["X-Name"] == "café\tau lait"
