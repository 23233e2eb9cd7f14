"""Request bodies built by the core validate against the official OpenAPI schema."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from conftest import request_validator
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chatlib._config import ClientConfig
from chatlib._request import HttpRequest, build_request
from chatlib.models import (
    ChatCompletionMessageCustomToolCall,
    ChatCompletionMessageToolCall,
    ChatCompletionTool,
    ChatMessage,
    CreateChatCompletionRequest,
    CreateChatCompletionResponse,
    CustomTool,
    CustomToolCall,
    CustomToolDefinition,
    FileContentPart,
    FileData,
    FunctionCall,
    FunctionDefinition,
    ImageURL,
    ImageURLContentPart,
    InputAudio,
    InputAudioContentPart,
    JSONSchemaFormat,
    NamedToolChoice,
    RefusalContentPart,
    ResponseFormat,
    StreamOptions,
    TextContentPart,
    ToolChoiceFunction,
)

BASE_URL = "http://127.0.0.1:9/v1"


VALIDATOR = request_validator()


def config(**kwargs: Any) -> ClientConfig:
    return ClientConfig.resolve(base_url=kwargs.pop("base_url", BASE_URL), **kwargs)


def body_of(request: HttpRequest) -> dict[str, Any]:
    assert request.body is not None
    data: dict[str, Any] = json.loads(request.body)
    return data


def assert_valid(body: dict[str, Any]) -> None:
    errors = sorted(VALIDATOR.iter_errors(body), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors[:5])


def build(streaming: bool = False, **params: Any) -> HttpRequest:
    params.setdefault("model", "gpt-4o")
    params.setdefault("messages", [{"role": "user", "content": "Hi"}])
    return build_request(config(), CreateChatCompletionRequest(**params), stream=streaming)


def test_the_validator_rejects_invalid_bodies() -> None:
    """Guard: the schema machinery really validates (so the tests below can fail)."""
    bad = [
        {"model": "m"},
        {"model": "m", "messages": []},
        {"model": "m", "messages": [{"role": "user"}]},
        {"model": "m", "messages": [{"role": "tool", "content": "x"}]},
        {"model": "m", "messages": [{"role": "user", "content": "x"}], "temperature": 3},
        {"model": "m", "messages": [{"role": "user", "content": "x"}], "n": "2"},
        {"model": "m", "messages": [{"role": "user", "content": [{"type": "refusal"}]}]},
    ]
    for body in bad:
        assert not VALIDATOR.is_valid(body), body
    assert VALIDATOR.is_valid(
        {"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": None}
    )


# ---------------------------------------------------------------- messages

TOOL_CALL = ChatCompletionMessageToolCall(
    id="call_1", function=FunctionCall(name="get_weather", arguments='{"city":"Paris"}')
)
CUSTOM_CALL = ChatCompletionMessageCustomToolCall(
    id="call_2", custom=CustomToolCall(name="sql", input="SELECT 1")
)

MESSAGES: dict[str, Any] = {
    "system-str": ChatMessage.system("Be terse."),
    "system-parts": ChatMessage.system([TextContentPart(text="Be terse.")], name="ops"),
    "developer": ChatMessage.developer("Think step by step."),
    "developer-parts": {"role": "developer", "content": [{"type": "text", "text": "x"}]},
    "user-str": ChatMessage.user("Hi", name="ann"),
    "user-text-part": ChatMessage.user([TextContentPart(text="Hi")]),
    "user-image": ChatMessage.user(
        [ImageURLContentPart(image_url=ImageURL(url="https://example.com/a.png", detail="low"))]
    ),
    "user-image-data-url": ChatMessage.user(
        [ImageURLContentPart(image_url=ImageURL(url="data:image/png;base64,iVBORw0KGgo="))]
    ),
    "user-audio": ChatMessage.user(
        [InputAudioContentPart(input_audio=InputAudio(data="UklGRg==", format="wav"))]
    ),
    "user-file-data": ChatMessage.user(
        [FileContentPart(file=FileData(file_data="JVBERi0=", filename="a.pdf"))]
    ),
    "user-file-id": ChatMessage.user([FileContentPart(file=FileData(file_id="file-abc"))]),
    "user-cache-breakpoint": ChatMessage.user(
        [TextContentPart(text="long prefix", prompt_cache_breakpoint={"mode": "explicit"})]
    ),
    "user-dict-parts": {
        "role": "user",
        "content": [
            {"type": "text", "text": "What is this?"},
            {"type": "image_url", "image_url": {"url": "https://example.com/b.jpg"}},
        ],
    },
    "assistant-str": ChatMessage.assistant("Hello!"),
    "assistant-parts": ChatMessage.assistant([TextContentPart(text="Hello!")]),
    "assistant-refusal-part": ChatMessage.assistant([RefusalContentPart(refusal="No.")]),
    "assistant-tool-calls": ChatMessage.assistant(tool_calls=[TOOL_CALL]),
    "assistant-custom-tool-call": ChatMessage.assistant(tool_calls=[CUSTOM_CALL]),
    "assistant-function-call": ChatMessage(
        role="assistant", function_call=FunctionCall(name="f", arguments="{}")
    ),
    "assistant-audio-ref": {"role": "assistant", "audio": {"id": "audio_abc"}},
    "tool-str": ChatMessage.tool('{"temp": 21}', tool_call_id="call_1"),
    "tool-parts": ChatMessage.tool([TextContentPart(text="21")], tool_call_id="call_1"),
    "function": ChatMessage.function("21C", name="get_weather"),
    "function-null": ChatMessage.function(None, name="get_weather"),
}


@pytest.mark.parametrize("name", sorted(MESSAGES))
def test_every_message_kind_validates(name: str) -> None:
    message = MESSAGES[name]
    body = body_of(build(messages=[ChatMessage.user("first"), message]))
    assert_valid(body)
    expected = message.to_dict() if isinstance(message, ChatMessage) else message
    if expected.get("content", "") is None and expected.get("role") == "assistant":
        expected = {k: v for k, v in expected.items() if k != "content"}
    assert body["messages"][1] == expected


def test_assistant_message_copied_from_a_response_is_sent_clean() -> None:
    response = CreateChatCompletionResponse.from_dict(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 1,
            "model": "gpt-4o",
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "tool_calls",
                    "message": {
                        "role": "assistant",
                        "content": None,
                        "refusal": None,
                        "annotations": [
                            {
                                "type": "url_citation",
                                "url_citation": {
                                    "start_index": 0,
                                    "end_index": 1,
                                    "title": "t",
                                    "url": "https://x",
                                },
                            }
                        ],
                        "tool_calls": [
                            {
                                "id": "call_1",
                                "type": "function",
                                "function": {"name": "get_weather", "arguments": "{}"},
                            }
                        ],
                        "audio": {
                            "id": "audio_1",
                            "data": "AAAA",
                            "expires_at": 2,
                            "transcript": "t",
                        },
                    },
                }
            ],
        }
    )
    reply = response.choices[0].message
    assert reply is not None
    messages = [ChatMessage.user("weather?"), reply, ChatMessage.tool("21", tool_call_id="call_1")]
    body = body_of(build(messages=messages))
    assert_valid(body)
    assert body["messages"][1] == {
        "role": "assistant",
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": "{}"},
            }
        ],
        "audio": {"id": "audio_1"},
    }
    # The parsed response itself is untouched.
    assert reply.content is None
    assert reply.annotations is not None
    # A dict copy of the same message (e.g. from response.to_dict()) is cleaned the same way.
    as_dict = response.to_dict()["choices"][0]["message"]
    body = body_of(build(messages=[ChatMessage.user("weather?"), as_dict]))
    assert_valid(body)
    assert "content" not in body["messages"][1]
    assert "refusal" not in body["messages"][1]
    assert "annotations" not in body["messages"][1]


def test_assistant_null_content_without_tool_calls_is_kept() -> None:
    body = body_of(build(messages=[ChatMessage.user("x"), ChatMessage.assistant()]))
    assert_valid(body)
    assert body["messages"][1] == {"role": "assistant", "content": None}


# ---------------------------------------------------------------- parameters


PARAMS: dict[str, dict[str, Any]] = {
    "sampling": {
        "temperature": 0,
        "top_p": 1,
        "n": 2,
        "seed": 0,
        "presence_penalty": -2,
        "frequency_penalty": 2.0,
    },
    "tokens": {"max_completion_tokens": 256, "max_tokens": 100},
    "logprobs": {"logprobs": True, "top_logprobs": 20},
    "logit_bias": {"logit_bias": {"50256": -100, "1234": 5}},
    "stop-str": {"stop": "\n"},
    "stop-list": {"stop": ["END", "###"]},
    "tools-function": {
        "tools": [
            ChatCompletionTool(
                function=FunctionDefinition(
                    name="get_weather",
                    description="Weather for a city",
                    parameters={
                        "type": "object",
                        "properties": {"city": {"type": "string"}},
                        "required": ["city"],
                    },
                    strict=True,
                )
            )
        ],
        "tool_choice": "auto",
        "parallel_tool_calls": False,
    },
    "tools-custom": {
        "tools": [
            CustomTool(custom=CustomToolDefinition(name="sql", description="Run SQL")),
            CustomTool(
                custom=CustomToolDefinition(
                    name="calc",
                    format={
                        "type": "grammar",
                        "grammar": {"definition": "start: NUMBER", "syntax": "lark"},
                    },
                )
            ),
            {"type": "custom", "custom": {"name": "free", "format": {"type": "text"}}},
        ]
    },
    "tools-dict": {
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
        "tool_choice": "required",
    },
    "tool-choice-none": {"tool_choice": "none"},
    "tool-choice-named": {
        "tools": [ChatCompletionTool(function=FunctionDefinition(name="f"))],
        "tool_choice": NamedToolChoice(function=ToolChoiceFunction(name="f")),
    },
    "tool-choice-named-dict": {"tool_choice": {"type": "function", "function": {"name": "f"}}},
    "tool-choice-custom": {"tool_choice": {"type": "custom", "custom": {"name": "sql"}}},
    "tool-choice-allowed-tools": {
        "tool_choice": {
            "type": "allowed_tools",
            "allowed_tools": {
                "mode": "required",
                "tools": [{"type": "function", "function": {"name": "f"}}],
            },
        }
    },
    "response-format-text": {"response_format": ResponseFormat(type="text")},
    "response-format-json-object": {"response_format": {"type": "json_object"}},
    "response-format-json-schema": {
        "response_format": ResponseFormat(
            type="json_schema",
            json_schema=JSONSchemaFormat(
                name="answer",
                description="The answer",
                schema={
                    "type": "object",
                    "properties": {"value": {"type": "integer"}},
                    "required": ["value"],
                    "additionalProperties": False,
                },
                strict=True,
            ),
        )
    },
    "stream-options-model": {"stream_options": StreamOptions(include_usage=True)},
    "stream-options-dict": {
        "stream_options": {"include_usage": True, "include_obfuscation": False}
    },
    "audio": {"modalities": ["text", "audio"], "audio": {"voice": "alloy", "format": "wav"}},
    "audio-custom-voice": {
        "modalities": ["audio"],
        "audio": {"voice": {"id": "v1"}, "format": "mp3"},
    },
    "prediction-str": {"prediction": {"type": "content", "content": "old text"}},
    "prediction-parts": {
        "prediction": {"type": "content", "content": [{"type": "text", "text": "old"}]}
    },
    "web-search": {
        "web_search_options": {
            "search_context_size": "low",
            "user_location": {
                "type": "approximate",
                "approximate": {"city": "Paris", "country": "FR", "timezone": "Europe/Paris"},
            },
        }
    },
    "metadata-store": {"metadata": {"team": "ml", "run": "42"}, "store": True},
    "identity": {"user": "u-1", "safety_identifier": "hash123", "prompt_cache_key": "k"},
    "prompt-cache": {
        "prompt_cache_retention": "24h",
        "prompt_cache_options": {"mode": "explicit", "ttl": "30m"},
    },
    "reasoning": {"reasoning_effort": "minimal", "verbosity": "low", "service_tier": "flex"},
    "moderation": {
        "moderation": {"model": "omni-moderation-latest", "policy": {"input": {"mode": "block"}}}
    },
    "functions-legacy": {
        "functions": [
            FunctionDefinition(name="f", parameters={"type": "object", "properties": {}}),
            {"name": "g"},
        ],
        "function_call": {"name": "f"},
    },
    "function-call-auto": {"function_call": "auto"},
    "explicit-nulls": {"max_tokens": None, "temperature": None, "stop": None, "seed": None},
}


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_request_parameters_validate_and_are_sent_as_given(name: str) -> None:
    params = PARAMS[name]
    request = CreateChatCompletionRequest(
        model="gpt-4o", messages=[{"role": "user", "content": "Hi"}], **params
    )
    body = body_of(build_request(config(), request, stream=False))
    assert_valid(body)
    expected = request.to_dict()
    assert body == expected
    for key in params:
        assert key in body


def test_a_kitchen_sink_request_validates() -> None:
    merged: dict[str, Any] = {}
    for name, params in PARAMS.items():
        if name.startswith(("tool-choice", "function-call", "explicit", "stop-str")):
            continue
        merged.update(params)
    body = body_of(build(messages=list(MESSAGES.values()), **merged))
    assert_valid(body)
    assert len(body["messages"]) == len(MESSAGES)


# ---------------------------------------------------------------- stream flag


def test_stream_true_adds_stream_and_event_stream_accept() -> None:
    request = build(streaming=True, stream_options=StreamOptions(include_usage=True))
    body = body_of(request)
    assert_valid(body)
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert request.stream is True
    assert request.headers["Accept"] == "text/event-stream"


def test_stream_true_overrides_a_request_that_said_false() -> None:
    body = body_of(build(streaming=True, stream=False))
    assert_valid(body)
    assert body["stream"] is True


def test_non_stream_request_does_not_mention_stream() -> None:
    request = build()
    assert "stream" not in body_of(request)
    assert request.stream is False
    assert request.headers["Accept"] == "application/json"


# ---------------------------------------------------------------- extra_* and headers


def test_extra_body_merges_at_top_level_and_overrides() -> None:
    request = build(
        temperature=0.5,
        extra_body={"top_k": 40, "temperature": 0.1, "chat_template_kwargs": {"thinking": False}},
    )
    body = body_of(request)
    assert body["top_k"] == 40
    assert body["temperature"] == 0.1
    assert body["chat_template_kwargs"] == {"thinking": False}
    assert "extra_body" not in body
    assert "extra_headers" not in body
    assert "extra_query" not in body


def test_extra_headers_become_headers_and_extra_query_the_url_query() -> None:
    request = build_request(
        config(default_headers={"X-Team": "a"}, default_query={"api-version": "2024-10-21"}),
        CreateChatCompletionRequest(
            model="m",
            messages=[{"role": "user", "content": "x"}],
            extra_headers={"X-Trace": "t-1", "X-Team": "b"},
            extra_query={"debug": "1 2"},
        ),
        stream=False,
    )
    assert request.headers["X-Trace"] == "t-1"
    assert request.headers["X-Team"] == "b"  # per-request wins over the client default
    parts = urlsplit(request.url)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == f"{BASE_URL}/chat/completions"
    assert dict(parse_qsl(parts.query)) == {"api-version": "2024-10-21", "debug": "1 2"}
    body = body_of(request)
    assert "extra_headers" not in body and "extra_query" not in body
    assert request.method == "POST"


def test_url_without_query_is_plain() -> None:
    assert build().url == f"{BASE_URL}/chat/completions"


def test_base_url_with_a_query_keeps_the_path_before_the_query() -> None:
    request = build_request(
        config(base_url="http://127.0.0.1:9/openai/deployments/d?api-version=1"),
        CreateChatCompletionRequest(model="m", messages=[{"role": "user", "content": "x"}]),
        stream=False,
    )
    parts = urlsplit(request.url)
    assert parts.path == "/openai/deployments/d/chat/completions"
    assert dict(parse_qsl(parts.query)) == {"api-version": "1"}


def test_authorization_only_when_a_key_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    request_model = CreateChatCompletionRequest(
        model="m", messages=[{"role": "user", "content": "x"}]
    )
    without = build_request(config(), request_model, stream=False)
    assert not any(k.lower() == "authorization" for k in without.headers)
    with_key = build_request(config(api_key="sk-test-123"), request_model, stream=False)
    assert with_key.headers["Authorization"] == "Bearer sk-test-123"
    assert "sk-test-123" not in repr(with_key)
    assert with_key.headers["Content-Type"] == "application/json"
    assert with_key.headers["User-Agent"].startswith("chatlib/")


def test_idempotency_key_and_org_headers() -> None:
    request = build_request(
        config(organization="org-1", project="proj-1"),
        CreateChatCompletionRequest(model="m", messages=[{"role": "user", "content": "x"}]),
        stream=False,
        idempotency_key="chatlib-abc",
    )
    assert request.headers["Idempotency-Key"] == "chatlib-abc"
    assert request.headers["OpenAI-Organization"] == "org-1"
    assert request.headers["OpenAI-Project"] == "proj-1"


def test_body_is_compact_utf8_json() -> None:
    request = build(messages=[{"role": "user", "content": "héllo ✓"}])
    assert request.body is not None
    assert "héllo ✓".encode() in request.body
    assert b", " not in request.body and b": " not in request.body


# ---------------------------------------------------------------- hypothesis: any valid request

_text = st.text(max_size=12)
_name = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,15}", fullmatch=True)
_finite = {"allow_nan": False, "allow_infinity": False}

_text_part = st.builds(lambda t: {"type": "text", "text": t}, _text)
_text_content = st.one_of(_text, st.lists(_text_part, min_size=1, max_size=3))
_user_part = st.one_of(
    _text_part,
    st.builds(
        lambda u, d: {"type": "image_url", "image_url": {"url": u, **d}},
        st.sampled_from(["https://example.com/a.png", "data:image/png;base64,iVBO"]),
        st.one_of(
            st.just({}), st.sampled_from(["auto", "low", "high"]).map(lambda x: {"detail": x})
        ),
    ),
    st.builds(
        lambda f: {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": f}},
        st.sampled_from(["wav", "mp3"]),
    ),
    st.builds(lambda i: {"type": "file", "file": {"file_id": i}}, _name),
)
_tool_call = st.builds(
    lambda i, n, a: {"id": i, "type": "function", "function": {"name": n, "arguments": a}},
    _name,
    _name,
    _text,
)

_messages = st.lists(
    st.one_of(
        st.builds(lambda c: {"role": "system", "content": c}, _text_content),
        st.builds(lambda c: {"role": "developer", "content": c}, _text_content),
        st.builds(
            lambda c: {"role": "user", "content": c},
            st.one_of(_text, st.lists(_user_part, min_size=1, max_size=3)),
        ),
        st.builds(ChatMessage.user, _text),
        st.builds(lambda c, n: ChatMessage.system(c, name=n), _text, _name),
        st.builds(lambda c: {"role": "assistant", "content": c}, _text),
        st.builds(
            lambda calls: {"role": "assistant", "tool_calls": calls},
            st.lists(_tool_call, min_size=1, max_size=2),
        ),
        st.builds(
            lambda c, i: {"role": "tool", "content": c, "tool_call_id": i}, _text_content, _name
        ),
        st.builds(lambda c, i: ChatMessage.tool(c, tool_call_id=i), _text, _name),
    ),
    min_size=1,
    max_size=4,
)

_function_tool = st.builds(
    lambda n, d: {"type": "function", "function": {"name": n, **d}},
    _name,
    st.fixed_dictionaries(
        {},
        optional={
            "description": _text,
            "parameters": st.just({"type": "object", "properties": {"x": {"type": "string"}}}),
            "strict": st.booleans(),
        },
    ),
)
_model_tool = st.builds(
    lambda n, desc: ChatCompletionTool(function=FunctionDefinition(name=n, description=desc)),
    _name,
    _text,
)
_custom_tool = st.builds(lambda n: CustomTool(custom=CustomToolDefinition(name=n)), _name)

_optional_params = {
    "temperature": st.floats(0, 2, **_finite),
    "top_p": st.floats(0, 1, **_finite),
    "presence_penalty": st.floats(-2, 2, **_finite),
    "frequency_penalty": st.floats(-2, 2, **_finite),
    "n": st.integers(1, 128),
    "seed": st.integers(-(2**63), 2**63 - 1),
    "max_completion_tokens": st.integers(1, 10**6),
    "max_tokens": st.integers(1, 10**6),
    "logprobs": st.booleans(),
    "top_logprobs": st.integers(0, 20),
    "stop": st.one_of(_text, st.lists(_text, min_size=1, max_size=4)),
    "logit_bias": st.dictionaries(
        st.integers(0, 100_000).map(str), st.integers(-100, 100), max_size=3
    ),
    "metadata": st.dictionaries(_name, _text, max_size=3),
    "user": _text,
    "store": st.booleans(),
    "parallel_tool_calls": st.booleans(),
    "reasoning_effort": st.sampled_from(["none", "minimal", "low", "medium", "high"]),
    "service_tier": st.sampled_from(["auto", "default", "flex", "priority"]),
    "verbosity": st.sampled_from(["low", "medium", "high"]),
    "tools": st.lists(st.one_of(_function_tool, _model_tool, _custom_tool), min_size=1, max_size=3),
    "tool_choice": st.one_of(
        st.sampled_from(["none", "auto", "required"]),
        st.builds(lambda n: NamedToolChoice(function=ToolChoiceFunction(name=n)), _name),
        st.builds(lambda n: {"type": "function", "function": {"name": n}}, _name),
    ),
    "response_format": st.one_of(
        st.sampled_from([{"type": "text"}, {"type": "json_object"}]),
        st.builds(
            lambda n, s: {"type": "json_schema", "json_schema": {"name": n, "strict": s}},
            _name,
            st.booleans(),
        ),
    ),
    "stream_options": st.one_of(
        st.builds(StreamOptions, include_usage=st.booleans()),
        st.fixed_dictionaries({"include_usage": st.booleans()}),
    ),
    "modalities": st.lists(st.sampled_from(["text", "audio"]), max_size=2, unique=True),
}

_requests = st.builds(
    lambda model, messages, params: CreateChatCompletionRequest(
        model=model, messages=messages, **params
    ),
    st.text(min_size=1, max_size=20),
    _messages,
    st.fixed_dictionaries({}, optional=_optional_params),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(request=_requests, stream=st.booleans())
def test_any_valid_request_builds_a_schema_valid_body_that_round_trips(
    request: CreateChatCompletionRequest, stream: bool
) -> None:
    http_request = build_request(config(), request, stream=stream)
    body = body_of(http_request)
    assert_valid(body)
    parsed = CreateChatCompletionRequest.from_dict(body)
    assert parsed.to_dict() == body
    expected = request.to_dict()
    if stream:
        expected["stream"] = True
    assert body == expected
