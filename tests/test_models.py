"""The wire models: fields-set semantics, unknown fields and enum values, round trips."""

from __future__ import annotations

import copy
import pickle
from typing import Any

import attrs
import pytest

from chatlib.models import (
    Annotation,
    ChatCompletionAudio,
    ChatCompletionChoice,
    ChatCompletionChunkChoice,
    ChatCompletionMessageCustomToolCall,
    ChatCompletionMessageToolCall,
    ChatCompletionParams,
    ChatCompletionUsage,
    ChatMessage,
    ChatRole,
    ChoiceLogprobs,
    CreateChatCompletionChunk,
    CreateChatCompletionRequest,
    CreateChatCompletionResponse,
    FileContentPart,
    FileData,
    FinishReason,
    FunctionCall,
    ImageURL,
    ImageURLContentPart,
    InputAudio,
    InputAudioContentPart,
    RefusalContentPart,
    TextContentPart,
    TokenLogprob,
)

USER = {"role": "user", "content": "Hi"}

# ---------------------------------------------------------------- realistic fixtures

OPENAI_COMPLETION: dict[str, Any] = {
    "id": "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT",
    "object": "chat.completion",
    "created": 1741569952,
    "model": "gpt-4o-2024-08-06",
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": "Paris is the capital of France.",
                "refusal": None,
                "annotations": [
                    {
                        "type": "url_citation",
                        "url_citation": {
                            "start_index": 0,
                            "end_index": 5,
                            "title": "Paris - Wikipedia",
                            "url": "https://en.wikipedia.org/wiki/Paris",
                        },
                    }
                ],
            },
            "logprobs": {
                "content": [
                    {
                        "token": "Paris",
                        "logprob": -0.0009,
                        "bytes": [80, 97, 114, 105, 115],
                        "top_logprobs": [
                            {
                                "token": "Paris",
                                "logprob": -0.0009,
                                "bytes": [80, 97, 114, 105, 115],
                            },
                            {"token": "The", "logprob": -7.25, "bytes": [84, 104, 101]},
                        ],
                    }
                ],
                "refusal": None,
            },
            "finish_reason": "stop",
        },
        {
            "index": 1,
            "message": {
                "role": "assistant",
                "content": None,
                "refusal": None,
                "tool_calls": [
                    {
                        "id": "call_Dw2ryZ2NsB1Rr0LtVtXyUv1P",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                    }
                ],
                "annotations": [],
            },
            "logprobs": None,
            "finish_reason": "tool_calls",
        },
        {
            "index": 2,
            "message": {
                "role": "assistant",
                "content": None,
                "refusal": None,
                "audio": {
                    "id": "audio_67ce0d4ec1b88190b0e8a7a8cd6b8e3b",
                    "data": "UklGRiQAAABXQVZFZm10IBAAAAABAAEA",
                    "expires_at": 1741573552,
                    "transcript": "Bonjour!",
                },
            },
            "logprobs": None,
            "finish_reason": "stop",
        },
    ],
    "usage": {
        "prompt_tokens": 19,
        "completion_tokens": 10,
        "total_tokens": 29,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    },
    "service_tier": "default",
    "system_fingerprint": "fp_fc9f1d7035",
}

LLAMA_CPP_PYTHON_LOGPROBS: dict[str, Any] = {
    "id": "chatcmpl-7d0f2c1e-39b4-4a4d-9f3c-3b3f6a2f7a55",
    "object": "chat.completion",
    "created": 1741570000,
    "model": "tiny.gguf",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hello"},
            "logprobs": {
                "content": [
                    {
                        "token": "Hello",
                        "logprob": -0.3,
                        "bytes": None,
                        "top_logprobs": [{"token": "Hello", "logprob": -0.3, "bytes": None}],
                    }
                ],
                "refusal": None,
            },
            "finish_reason": "length",
        }
    ],
    "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6},
}

LLAMA_CPP_PYTHON_FORCED_TOOL: dict[str, Any] = {
    "id": "chatcmpl-c2b1",
    "object": "chat.completion",
    "created": 1741570001,
    "model": "tiny.gguf",
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": None,
                "function_call": {"name": "get_weather", "arguments": '{ "city": "Paris" }'},
                "tool_calls": [
                    {
                        "id": "call__0_get_weather_cmpl-c2b1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{ "city": "Paris" }'},
                    }
                ],
            },
            "logprobs": None,
            "finish_reason": "tool_calls",
        }
    ],
    "usage": {"prompt_tokens": 40, "completion_tokens": 9, "total_tokens": 49},
}

LLAMA_SERVER_COMPLETION: dict[str, Any] = {
    "choices": [
        {
            "finish_reason": "stop",
            "index": 0,
            "message": {"role": "assistant", "content": "Hi"},
            "logprobs": {
                "content": [
                    {
                        "id": 13347,
                        "token": "Hi",
                        "bytes": [72, 105],
                        "logprob": -0.01,
                        "top_logprobs": [
                            {"id": 13347, "token": "Hi", "bytes": [72, 105], "logprob": -0.01}
                        ],
                    }
                ]
            },
        }
    ],
    "created": 1741570002,
    "model": "tiny",
    "system_fingerprint": "b5000-abcdef12",
    "object": "chat.completion",
    "usage": {
        "completion_tokens": 1,
        "prompt_tokens": 4,
        "total_tokens": 5,
        "prompt_tokens_details": {"cached_tokens": 0},
    },
    "id": "chatcmpl-Zq1",
    "timings": {"prompt_n": 4, "prompt_ms": 1.2, "predicted_n": 1, "predicted_ms": 0.4},
}

DEEPSEEK_COMPLETION: dict[str, Any] = {
    "id": "930c60df-bf64-41c9-a88e-3ec75f81e00e",
    "object": "chat.completion",
    "created": 1741570003,
    "model": "deepseek-reasoner",
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": "9.11 < 9.8",
                "reasoning_content": "Compare the tenths: 1 < 8.",
            },
            "logprobs": None,
            "finish_reason": "stop",
        }
    ],
    "usage": {
        "prompt_tokens": 15,
        "completion_tokens": 20,
        "total_tokens": 35,
        "prompt_cache_hit_tokens": 0,
        "prompt_cache_miss_tokens": 15,
        "completion_tokens_details": {"reasoning_tokens": 12},
    },
    "system_fingerprint": "fp_5417b77867_prod0225",
}

DEEPSEEK_CHUNK: dict[str, Any] = {
    "id": "930c60df",
    "object": "chat.completion.chunk",
    "created": 1741570003,
    "model": "deepseek-reasoner",
    "system_fingerprint": "fp_5417b77867_prod0225",
    "choices": [
        {
            "index": 0,
            "delta": {"content": None, "reasoning_content": "Compare"},
            "logprobs": None,
            "finish_reason": None,
        }
    ],
}

VLLM_USAGE_CHUNK: dict[str, Any] = {
    "id": "chatcmpl-8b7c",
    "object": "chat.completion.chunk",
    "created": 1741570004,
    "model": "Qwen/Qwen2.5-0.5B-Instruct",
    "choices": None,
    "usage": {
        "prompt_tokens": 10,
        "total_tokens": 30,
        "completion_tokens": 20,
        "prompt_tokens_details": None,
    },
}

GROQ_LAST_CHUNK: dict[str, Any] = {
    "id": "chatcmpl-3f1e",
    "object": "chat.completion.chunk",
    "created": 1741570005,
    "model": "llama-3.1-8b-instant",
    "system_fingerprint": "fp_9cb648b966",
    "choices": [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}],
    "x_groq": {
        "id": "req_01jnx",
        "usage": {
            "queue_time": 0.017,
            "prompt_tokens": 11,
            "prompt_time": 0.0008,
            "completion_tokens": 8,
            "completion_time": 0.0067,
            "total_tokens": 19,
            "total_time": 0.0075,
        },
    },
}

AZURE_FIRST_CHUNK: dict[str, Any] = {
    "choices": [],
    "created": 0,
    "id": "",
    "model": "",
    "object": "",
    "prompt_filter_results": [
        {
            "prompt_index": 0,
            "content_filter_results": {
                "hate": {"filtered": False, "severity": "safe"},
                "self_harm": {"filtered": False, "severity": "safe"},
                "sexual": {"filtered": False, "severity": "safe"},
                "violence": {"filtered": False, "severity": "safe"},
            },
        }
    ],
}

AZURE_CONTENT_CHUNK: dict[str, Any] = {
    "choices": [
        {
            "content_filter_results": {
                "hate": {"filtered": False, "severity": "safe"},
                "violence": {"filtered": False, "severity": "safe"},
            },
            "delta": {"content": "Hello"},
            "finish_reason": None,
            "index": 0,
            "logprobs": None,
        }
    ],
    "created": 1741570006,
    "id": "chatcmpl-AzUre",
    "model": "gpt-4o-2024-08-06",
    "object": "chat.completion.chunk",
    "system_fingerprint": "fp_b705f0c291",
}

OPENAI_USAGE_CHUNK: dict[str, Any] = {
    "id": "chatcmpl-B9MC",
    "object": "chat.completion.chunk",
    "created": 1741569952,
    "model": "gpt-4o-mini",
    "service_tier": "default",
    "system_fingerprint": "fp_06737a9306",
    "choices": [],
    "usage": {
        "prompt_tokens": 8,
        "completion_tokens": 2,
        "total_tokens": 10,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
    },
    "obfuscation": "a1b2",
}

OPENAI_TOOL_CHUNK: dict[str, Any] = {
    "id": "chatcmpl-B9MD",
    "object": "chat.completion.chunk",
    "created": 1741569953,
    "model": "gpt-4o",
    "choices": [
        {
            "index": 0,
            "delta": {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "index": 0,
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": ""},
                    }
                ],
                "refusal": None,
            },
            "logprobs": None,
            "finish_reason": None,
        }
    ],
}

COMPLETION_FIXTURES = {
    "openai": OPENAI_COMPLETION,
    "llama_cpp_python_logprobs": LLAMA_CPP_PYTHON_LOGPROBS,
    "llama_cpp_python_forced_tool": LLAMA_CPP_PYTHON_FORCED_TOOL,
    "llama_server": LLAMA_SERVER_COMPLETION,
    "deepseek": DEEPSEEK_COMPLETION,
}
CHUNK_FIXTURES = {
    "deepseek": DEEPSEEK_CHUNK,
    "vllm_usage_choices_null": VLLM_USAGE_CHUNK,
    "groq_x_groq": GROQ_LAST_CHUNK,
    "azure_first": AZURE_FIRST_CHUNK,
    "azure_content": AZURE_CONTENT_CHUNK,
    "openai_usage": OPENAI_USAGE_CHUNK,
    "openai_tool": OPENAI_TOOL_CHUNK,
}


# ---------------------------------------------------------------- fields-set semantics


@pytest.mark.parametrize(
    ("kwargs", "expected_extra_keys"),
    [
        ({}, {}),
        ({"temperature": 0}, {"temperature": 0}),
        ({"temperature": 0.0}, {"temperature": 0.0}),
        ({"seed": 0}, {"seed": 0}),
        ({"logprobs": False}, {"logprobs": False}),
        ({"n": 1}, {"n": 1}),
        ({"stream": False}, {"stream": False}),
        ({"top_p": 0.0, "presence_penalty": 0}, {"top_p": 0.0, "presence_penalty": 0}),
        ({"stop": []}, {"stop": []}),
        ({"metadata": {}}, {"metadata": {}}),
        ({"user": ""}, {"user": ""}),
        ({"temperature": None}, {"temperature": None}),
        ({"max_tokens": None, "tools": None}, {"max_tokens": None, "tools": None}),
    ],
)
def test_request_to_dict_sends_exactly_the_fields_that_were_set(
    kwargs: dict[str, Any], expected_extra_keys: dict[str, Any]
) -> None:
    request = CreateChatCompletionRequest(model="gpt-4o", messages=[USER], **kwargs)
    assert request.to_dict() == {"model": "gpt-4o", "messages": [USER], **expected_extra_keys}
    assert request.fields_set == {"model", "messages", *kwargs}


def test_untouched_fields_are_never_sent_even_when_read() -> None:
    request = CreateChatCompletionRequest(model="m", messages=[USER])
    assert request.temperature is None
    assert request.tools is None
    assert set(request.to_dict()) == {"model", "messages"}


def test_a_field_assigned_after_construction_is_sent() -> None:
    request = CreateChatCompletionRequest(model="m", messages=[USER])
    request.temperature = 0.5
    assert request.to_dict()["temperature"] == 0.5


def test_nested_models_send_only_their_set_fields() -> None:
    message = ChatMessage(role="user", content="x", name=None)
    assert message.to_dict() == {"role": "user", "content": "x", "name": None}
    part = ImageURLContentPart(image_url=ImageURL(url="https://x/y.png"))
    assert part.to_dict() == {"type": "image_url", "image_url": {"url": "https://x/y.png"}}


def test_parsed_model_remembers_explicit_nulls_and_absent_fields() -> None:
    message = ChatMessage.from_dict({"role": "assistant", "content": None})
    assert message.fields_set == {"role", "content"}
    assert message.to_dict() == {"role": "assistant", "content": None}


def test_fields_set_of_a_parsed_model_lists_only_declared_fields() -> None:
    chunk = CreateChatCompletionChunk.from_dict(GROQ_LAST_CHUNK)
    assert "x_groq" not in chunk.fields_set


# ---------------------------------------------------------------- replace()


def test_replace_marks_changed_fields_as_set_and_leaves_original_alone() -> None:
    request = CreateChatCompletionRequest(model="m", messages=[USER], temperature=0.7)
    changed = request.replace(seed=0, temperature=None, max_tokens=None)
    assert changed.to_dict() == {
        "model": "m",
        "messages": [USER],
        "seed": 0,
        "temperature": None,
        "max_tokens": None,
    }
    assert changed.fields_set == {"model", "messages", "temperature", "seed", "max_tokens"}
    assert request.to_dict() == {"model": "m", "messages": [USER], "temperature": 0.7}
    assert changed is not request


def test_replace_on_a_parsed_model_keeps_its_extra_and_set_fields() -> None:
    chunk = CreateChatCompletionChunk.from_dict(GROQ_LAST_CHUNK)
    changed = chunk.replace(model="other")
    expected = dict(GROQ_LAST_CHUNK, model="other")
    assert changed.to_dict() == expected
    assert chunk.to_dict() == GROQ_LAST_CHUNK


# ---------------------------------------------------------------- unknown fields at every level


@pytest.mark.parametrize(
    ("cls", "data", "where", "key"),
    [
        (CreateChatCompletionChunk, GROQ_LAST_CHUNK, lambda m: m, "x_groq"),
        (CreateChatCompletionChunk, AZURE_FIRST_CHUNK, lambda m: m, "prompt_filter_results"),
        (
            CreateChatCompletionChunk,
            AZURE_CONTENT_CHUNK,
            lambda m: m.choices[0],
            "content_filter_results",
        ),
        (
            CreateChatCompletionChunk,
            DEEPSEEK_CHUNK,
            lambda m: m.choices[0].delta,
            "reasoning_content",
        ),
        (
            CreateChatCompletionResponse,
            DEEPSEEK_COMPLETION,
            lambda m: m.choices[0].message,
            "reasoning_content",
        ),
        (
            CreateChatCompletionResponse,
            DEEPSEEK_COMPLETION,
            lambda m: m.usage,
            "prompt_cache_hit_tokens",
        ),
        (CreateChatCompletionResponse, LLAMA_SERVER_COMPLETION, lambda m: m, "timings"),
        (
            CreateChatCompletionResponse,
            LLAMA_SERVER_COMPLETION,
            lambda m: m.choices[0].logprobs.content[0],
            "id",
        ),
        (
            CreateChatCompletionResponse,
            LLAMA_SERVER_COMPLETION,
            lambda m: m.choices[0].logprobs.content[0].top_logprobs[0],
            "id",
        ),
    ],
    ids=[
        "groq-chunk",
        "azure-prompt-filter",
        "azure-choice-filter",
        "deepseek-delta",
        "deepseek-message",
        "deepseek-usage",
        "llama-server-timings",
        "llama-server-token-id",
        "llama-server-top-token-id",
    ],
)
def test_unknown_fields_are_kept_in_extra(cls: Any, data: Any, where: Any, key: str) -> None:
    parsed = cls.from_dict(data)
    holder = where(parsed)
    assert key in holder.extra
    # The value is the server's own, unchanged.
    raw_holder = where(_RawView(data))
    assert holder.extra[key] == raw_holder[key]
    assert parsed.to_dict() == data


class _RawView:
    """Walk a raw dict with the attribute paths used for models (test helper)."""

    def __init__(self, data: Any) -> None:
        self._data = data

    def __getattr__(self, name: str) -> Any:
        return _RawView(self._data[name])

    def __getitem__(self, key: Any) -> Any:
        value = self._data[key]
        return _RawView(value) if isinstance(key, int) else value


def test_a_model_without_unknown_fields_has_an_empty_extra() -> None:
    message = ChatMessage.from_dict({"role": "assistant", "content": "x"})
    assert dict(message.extra) == {}
    assert ChatMessage.user("x").extra == {}


def test_extra_given_to_the_constructor_is_sent_at_top_level() -> None:
    message = ChatMessage(role="assistant", content="x", extra={"reasoning_content": "r"})
    assert message.to_dict() == {"role": "assistant", "content": "x", "reasoning_content": "r"}


# ---------------------------------------------------------------- open enums


@pytest.mark.parametrize(
    "reason", ["stop", "length", "tool_calls", "content_filter", "eos", "end_turn"]
)
def test_finish_reason_parses_known_and_unknown_values_as_the_same_string(reason: str) -> None:
    data = {"choices": [{"index": 0, "delta": {}, "finish_reason": reason}]}
    chunk = CreateChatCompletionChunk.from_dict(data)
    value = chunk.choices[0].finish_reason
    assert isinstance(value, FinishReason)
    assert value == reason
    assert str(value) == reason
    assert value in {reason}  # hashes like the plain string, so set/dict lookups work
    assert chunk.to_dict() == data


def test_known_finish_reason_is_the_enum_member() -> None:
    chunk = CreateChatCompletionChunk.from_dict(
        {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
    )
    assert chunk.choices[0].finish_reason is FinishReason.STOP


@pytest.mark.parametrize("role", ["assistant", "model", "critic"])
def test_role_parses_known_and_unknown_values_as_the_same_string(role: str) -> None:
    data = {"role": role, "content": "x"}
    message = ChatMessage.from_dict(data)
    assert message.role == role
    assert isinstance(message.role, ChatRole)
    assert message.to_dict() == data
    delta_chunk = {"choices": [{"index": 0, "delta": {"role": role}}]}
    assert CreateChatCompletionChunk.from_dict(delta_chunk).to_dict() == delta_chunk


# ---------------------------------------------------------------- choices [] / null / missing


@pytest.mark.parametrize("cls", [CreateChatCompletionChunk, CreateChatCompletionResponse])
@pytest.mark.parametrize(
    "data",
    [
        {"id": "c", "choices": []},
        {"id": "c", "choices": None},
        {"id": "c"},
    ],
    ids=["empty", "null", "missing"],
)
def test_choices_empty_null_or_missing_parse_as_empty_and_round_trip(
    cls: Any, data: dict[str, Any]
) -> None:
    parsed = cls.from_dict(data)
    assert parsed.choices == []
    assert parsed.text == ""
    assert parsed.to_dict() == data


# ---------------------------------------------------------------- round trips


@pytest.mark.parametrize("name", sorted(COMPLETION_FIXTURES))
def test_completion_round_trip(name: str) -> None:
    data = COMPLETION_FIXTURES[name]
    snapshot = copy.deepcopy(data)
    parsed = CreateChatCompletionResponse.from_dict(data)
    assert parsed.to_dict() == snapshot
    assert data == snapshot  # parsing does not modify the input


@pytest.mark.parametrize("name", sorted(CHUNK_FIXTURES))
def test_chunk_round_trip(name: str) -> None:
    data = CHUNK_FIXTURES[name]
    parsed = CreateChatCompletionChunk.from_dict(data)
    assert parsed.to_dict() == data


def test_openai_completion_parses_into_typed_models() -> None:
    parsed = CreateChatCompletionResponse.from_dict(OPENAI_COMPLETION)
    first, second, third = parsed.choices
    assert isinstance(first, ChatCompletionChoice)
    assert first.finish_reason is FinishReason.STOP
    assert first.message is not None
    assert first.message.role is ChatRole.ASSISTANT
    assert first.message.text == "Paris is the capital of France."
    assert isinstance(first.message.annotations[0], Annotation)
    assert first.message.annotations[0].url_citation.end_index == 5
    assert isinstance(first.logprobs, ChoiceLogprobs)
    token = first.logprobs.content[0]
    assert isinstance(token, TokenLogprob)
    assert token.bytes == [80, 97, 114, 105, 115]
    assert token.top_logprobs[1].token == "The"
    call = second.message.tool_calls[0]
    assert isinstance(call, ChatCompletionMessageToolCall)
    assert call.function.name == "get_weather"
    assert second.message.content is None
    assert second.message.text == ""
    assert isinstance(third.message.audio, ChatCompletionAudio)
    assert third.message.audio.transcript == "Bonjour!"
    assert isinstance(parsed.usage, ChatCompletionUsage)
    assert parsed.usage.completion_tokens_details.rejected_prediction_tokens == 0
    assert parsed.usage.prompt_tokens_details.cached_tokens == 0
    assert parsed.text == "Paris is the capital of France."


def test_llama_cpp_null_token_bytes_parse() -> None:
    parsed = CreateChatCompletionResponse.from_dict(LLAMA_CPP_PYTHON_LOGPROBS)
    logprobs = parsed.choices[0].logprobs
    assert logprobs.content[0].bytes is None
    assert logprobs.content[0].top_logprobs[0].bytes is None
    assert logprobs.refusal is None
    assert "refusal" in logprobs.fields_set


def test_vllm_usage_chunk_with_null_choices() -> None:
    chunk = CreateChatCompletionChunk.from_dict(VLLM_USAGE_CHUNK)
    assert chunk.choices == []
    assert chunk.text == ""
    assert chunk.usage.total_tokens == 30
    assert chunk.usage.prompt_tokens_details is None


# ---------------------------------------------------------------- content parts


ALL_PARTS: list[dict[str, Any]] = [
    {"type": "text", "text": "Describe these."},
    {"type": "image_url", "image_url": {"url": "https://example.com/cat.png", "detail": "low"}},
    {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
    {"type": "file", "file": {"file_data": "JVBERi0=", "filename": "a.pdf"}},
    {"type": "refusal", "refusal": "I can't."},
    {"type": "video_url", "video_url": {"url": "https://example.com/v.mp4"}},
]


def test_content_parts_parse_into_their_models_and_unknown_parts_stay_dicts() -> None:
    data = {"role": "user", "content": ALL_PARTS}
    message = ChatMessage.from_dict(data)
    kinds = [type(p) for p in message.content]
    assert kinds == [
        TextContentPart,
        ImageURLContentPart,
        InputAudioContentPart,
        FileContentPart,
        RefusalContentPart,
        dict,
    ]
    text, image, audio, file, refusal, unknown = message.content
    assert text.text == "Describe these."
    assert image.image_url.detail == "low"
    assert audio.input_audio.format == "wav"
    assert file.file.filename == "a.pdf"
    assert refusal.refusal == "I can't."
    assert unknown == ALL_PARTS[5]
    assert message.to_dict() == data


@pytest.mark.parametrize(
    ("part", "expected"),
    [
        (TextContentPart(text="hi"), {"type": "text", "text": "hi"}),
        (
            TextContentPart(text="hi", prompt_cache_breakpoint={"mode": "explicit"}),
            {"type": "text", "text": "hi", "prompt_cache_breakpoint": {"mode": "explicit"}},
        ),
        (
            ImageURLContentPart(
                image_url=ImageURL(url="data:image/png;base64,iVBO", detail="high")
            ),
            {
                "type": "image_url",
                "image_url": {"url": "data:image/png;base64,iVBO", "detail": "high"},
            },
        ),
        (
            InputAudioContentPart(input_audio=InputAudio(data="AAAA", format="mp3")),
            {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "mp3"}},
        ),
        (
            FileContentPart(file=FileData(file_id="file-123")),
            {"type": "file", "file": {"file_id": "file-123"}},
        ),
        (RefusalContentPart(refusal="no"), {"type": "refusal", "refusal": "no"}),
    ],
)
def test_built_content_parts_serialise_to_the_wire_shape(part: Any, expected: Any) -> None:
    assert part.to_dict() == expected
    assert type(part).from_dict(expected) == part


# ---------------------------------------------------------------- tool calls


def test_tool_calls_function_custom_and_unknown_kinds() -> None:
    calls = [
        {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}},
        {"id": "call_2", "type": "custom", "custom": {"name": "sql", "input": "SELECT 1"}},
        {"id": "call_3", "type": "mcp", "mcp": {"server": "s", "name": "n"}},
    ]
    data = {"role": "assistant", "content": None, "tool_calls": calls}
    message = ChatMessage.from_dict(data)
    function, custom, unknown = message.tool_calls
    assert isinstance(function, ChatCompletionMessageToolCall)
    assert function.function == FunctionCall(name="f", arguments="{}")
    assert isinstance(custom, ChatCompletionMessageCustomToolCall)
    assert custom.custom.input == "SELECT 1"
    assert unknown == calls[2]
    assert message.to_dict() == data


# ---------------------------------------------------------------- ChatMessage helpers


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (ChatMessage.system("Be terse."), {"role": "system", "content": "Be terse."}),
        (
            ChatMessage.system("Be terse.", name="boss"),
            {"role": "system", "content": "Be terse.", "name": "boss"},
        ),
        (ChatMessage.developer("Think."), {"role": "developer", "content": "Think."}),
        (ChatMessage.user("Hi"), {"role": "user", "content": "Hi"}),
        (
            ChatMessage.user([TextContentPart(text="Hi")], name="ann"),
            {"role": "user", "content": [{"type": "text", "text": "Hi"}], "name": "ann"},
        ),
        (ChatMessage.assistant("Hello"), {"role": "assistant", "content": "Hello"}),
        (
            ChatMessage.assistant(
                tool_calls=[
                    ChatCompletionMessageToolCall(
                        id="call_1", function=FunctionCall(name="f", arguments="{}")
                    )
                ]
            ),
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "type": "function",
                        "id": "call_1",
                        "function": {"name": "f", "arguments": "{}"},
                    }
                ],
            },
        ),
        (
            ChatMessage.tool('{"temp": 21}', tool_call_id="call_1"),
            {"role": "tool", "content": '{"temp": 21}', "tool_call_id": "call_1"},
        ),
        (
            ChatMessage.function(None, name="get_weather"),
            {"role": "function", "content": None, "name": "get_weather"},
        ),
        (
            ChatMessage.function("21C", name="get_weather"),
            {"role": "function", "content": "21C", "name": "get_weather"},
        ),
    ],
)
def test_role_helpers_build_the_wire_message(message: ChatMessage, expected: Any) -> None:
    assert message.to_dict() == expected
    assert message.role == expected["role"]


# ---------------------------------------------------------------- .text


@pytest.mark.parametrize(
    ("content", "text"),
    [
        ("plain", "plain"),
        ("", ""),
        (None, ""),
        ([], ""),
        ([TextContentPart(text="a"), TextContentPart(text="b")], "ab"),
        (
            [
                {"type": "text", "text": "a"},
                ImageURLContentPart(image_url=ImageURL(url="https://x")),
                {"type": "image_url", "image_url": {"url": "https://x"}},
                TextContentPart(text="b"),
            ],
            "ab",
        ),
    ],
)
def test_message_text(content: Any, text: str) -> None:
    assert ChatMessage(role="assistant", content=content).text == text


def test_response_text_is_the_first_choice_text() -> None:
    response = CreateChatCompletionResponse.from_dict(
        {
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": "first"}},
                {"index": 1, "message": {"role": "assistant", "content": "second"}},
            ]
        }
    )
    assert response.text == "first"
    no_message = CreateChatCompletionResponse.from_dict({"choices": [{"index": 0}]})
    assert no_message.text == ""


@pytest.mark.parametrize(
    ("data", "text"),
    [
        ({"choices": [{"index": 0, "delta": {"content": "He"}}]}, "He"),
        ({"choices": [{"index": 0, "delta": {"role": "assistant"}}]}, ""),
        ({"choices": [{"index": 0, "delta": {"content": None}}]}, ""),
        ({"choices": [{"index": 0}]}, ""),
        ({"choices": [{"index": 1, "delta": {"content": "other choice"}}]}, ""),
        (
            {
                "choices": [
                    {"index": 1, "delta": {"content": "B"}},
                    {"index": 0, "delta": {"content": "A"}},
                ]
            },
            "A",
        ),
        (AZURE_FIRST_CHUNK, ""),
        (VLLM_USAGE_CHUNK, ""),
        (OPENAI_USAGE_CHUNK, ""),
        ({}, ""),
    ],
)
def test_chunk_text_is_safe_on_any_chunk(data: Any, text: str) -> None:
    assert CreateChatCompletionChunk.from_dict(data).text == text


# ---------------------------------------------------------------- pickle


@pytest.mark.parametrize(
    ("cls", "data"),
    [(CreateChatCompletionResponse, d) for d in COMPLETION_FIXTURES.values()]
    + [(CreateChatCompletionChunk, d) for d in CHUNK_FIXTURES.values()]
    + [(CreateChatCompletionChunk, {"choices": [{"index": 0, "finish_reason": "eos_new"}]})],
)
def test_parsed_models_pickle(cls: Any, data: Any) -> None:
    parsed = cls.from_dict(data)
    clone = pickle.loads(pickle.dumps(parsed))
    assert clone == parsed
    assert clone.to_dict() == data
    assert clone.fields_set == parsed.fields_set


def test_built_request_pickles_with_its_set_fields() -> None:
    request = CreateChatCompletionRequest(
        model="m", messages=[ChatMessage.user("hi")], temperature=0, seed=None
    )
    clone = pickle.loads(pickle.dumps(request))
    assert clone.to_dict() == {
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}],
        "temperature": 0,
        "seed": None,
    }


# ---------------------------------------------------------------- the keyword signature


def _request_init_fields() -> set[str]:
    return {f.name for f in attrs.fields(CreateChatCompletionRequest) if f.init}


def test_params_typeddict_keys_match_the_request_fields() -> None:
    keys = set(ChatCompletionParams.__required_keys__) | set(ChatCompletionParams.__optional_keys__)
    assert keys == _request_init_fields() - {"stream", "extra"}


def test_params_typeddict_marks_model_and_messages_required() -> None:
    assert ChatCompletionParams.__required_keys__ == {"model", "messages"}


def test_request_requires_model_and_messages() -> None:
    required = {
        f.name
        for f in attrs.fields(CreateChatCompletionRequest)
        if f.init and f.default is attrs.NOTHING
    }
    assert required == {"model", "messages"}


def test_chunk_choice_model_is_what_chunks_hold() -> None:
    chunk = CreateChatCompletionChunk.from_dict(AZURE_CONTENT_CHUNK)
    assert isinstance(chunk.choices[0], ChatCompletionChunkChoice)
    assert chunk.choices[0].delta.content == "Hello"
    assert chunk.text == "Hello"


# ---------------------------------------------------------------- client-side fields


def _model_classes() -> list[type[Any]]:
    import chatlib.models
    from chatlib._model_base import Model

    return [
        cls
        for cls in vars(chatlib.models).values()
        if isinstance(cls, type) and issubclass(cls, Model) and attrs.has(cls)
    ]


def test_the_client_side_fields_are_exactly_those_declared_local() -> None:
    from chatlib._model_base import MODEL_TAIL, is_local

    local = {
        (cls.__name__, field.name)
        for cls in _model_classes()
        for field in attrs.fields(cls)
        if is_local(field)
    }
    assert local == {
        ("ChatMessage", "parsed"),
        ("ChatCompletionStoreMessage", "parsed"),
        ("FunctionCall", "parsed_arguments"),
        ("CreateChatCompletionResponse", "_headers"),
    }
    private = {
        (cls.__name__, field.name)
        for cls in _model_classes()
        for field in attrs.fields(cls)
        if field.name.startswith("_") and field.name not in MODEL_TAIL
    }
    assert private <= local  # a private slot is client-side only through local_field()


@pytest.mark.parametrize(
    ("cls", "data", "name"),
    [
        (ChatMessage, {"role": "assistant", "content": "{}"}, "parsed"),
        (FunctionCall, {"name": "f", "arguments": "{}"}, "parsed_arguments"),
        (CreateChatCompletionResponse, {"id": "c", "choices": []}, "_headers"),
    ],
)
def test_a_client_side_field_is_skipped_alike_everywhere(
    cls: Any, data: dict[str, Any], name: str
) -> None:
    parsed = cls.from_dict(data)
    assert getattr(parsed, name) is None  # structuring never fills it from the JSON
    with pytest.raises(TypeError):
        cls(**data, **{name.lstrip("_"): "x"})  # nor does the constructor take it
    filled = parsed.replace()
    object.__setattr__(filled, name, {"client": "side"})
    assert filled.to_dict() == data
    assert filled.fields_set == parsed.fields_set
    assert filled == parsed
    assert name.lstrip("_") + "=" not in repr(filled)
    assert pickle.loads(pickle.dumps(filled)).__getattribute__(name) == {"client": "side"}
    assert copy.copy(filled).__getattribute__(name) == {"client": "side"}
    assert cls.from_dict({**data, name: "sent"}).extra == {name: "sent"}
