"""The bytes of the server's replies, built from plain dicts: the JSON completion, the SSE
events of a streamed one, error bodies. Pure functions, no I/O.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from chatlib.testing.actions import Reply

JSON_CONTENT_TYPE: Final = "application/json"
SSE_CONTENT_TYPE: Final = "text/event-stream; charset=utf-8"

_FINGERPRINT: Final = "fp_chatlib_local"
_MAX_CHOICES: Final = 128
_ARGUMENT_FRAGMENT: Final = 8  # characters of tool-call arguments per streamed delta
_SSE_DONE: Final = b"data: [DONE]\n\n"
_WORD_BOUNDARY: Final = re.compile(r"(?<=\s)(?=\S)")


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


def sse(obj: Any) -> bytes:
    return b"data: " + dumps(obj) + b"\n\n"


def new_id(prefix: str, nbytes: int = 12) -> str:
    return prefix + secrets.token_hex(nbytes)


def error_body(
    message: str, type_: str | None, code: str | int | None = None, param: str | None = None
) -> bytes:
    """An OpenAI-shaped `{"error": {...}}` body."""
    return dumps({"error": {"message": message, "type": type_, "param": param, "code": code}})


def error_event(error: dict[str, Any], *, as_event: bool) -> bytes:
    """The SSE event of an `InStreamError`."""
    if not (len(error) == 1 and isinstance(error.get("error"), dict)):
        error = {"error": error}
    event = sse(error)
    return b"event: error\n" + event if as_event else event


def _split_words(text: str) -> list[str]:
    """Split so that `"".join(pieces) == text`, one word (and its trailing spaces) a piece."""
    return [piece for piece in _WORD_BOUNDARY.split(text) if piece]


def _count_words(text: str | None) -> int:
    return len(text.split()) if text else 0


def _message_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [
            part["text"]
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        ]
        return " ".join(texts)
    return ""


@dataclass
class Call:
    """What a chat-completions request asked for, and the ids of its answer."""

    model: str
    stream: bool
    n: int
    include_usage: bool
    echo: str
    prompt_tokens: int
    completion_id: str
    created: int
    azure: bool = False

    @classmethod
    def from_payload(
        cls, payload: dict[str, Any], default_model: str, *, azure: bool = False
    ) -> Call:
        model = payload.get("model")
        n = payload.get("n")
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            n = 1
        options = payload.get("stream_options")
        messages = payload.get("messages")
        if not isinstance(messages, list):
            messages = []
        echo = ""
        prompt_words = 0
        for message in messages:
            if not isinstance(message, dict):
                continue
            text = _message_text(message.get("content"))
            prompt_words += _count_words(text)
            if message.get("role") == "user":
                echo = text
        return cls(
            model=model if isinstance(model, str) else default_model,
            stream=payload.get("stream") is True,
            n=min(n, _MAX_CHOICES),
            include_usage=isinstance(options, dict) and options.get("include_usage") is True,
            echo=echo,
            prompt_tokens=prompt_words,
            completion_id=new_id("chatcmpl-"),
            created=int(time.time()),
            azure=azure,
        )


def _normalize_tool_calls(tool_calls: Sequence[Mapping[str, Any]] | None) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = []
    for call in tool_calls or ():
        function = call.get("function")
        if not isinstance(function, Mapping):
            function = call
        arguments = function.get("arguments", "")
        if not isinstance(arguments, str):
            arguments = json.dumps(arguments)
        result.append(
            {
                "id": call.get("id") or new_id("call_"),
                "type": call.get("type", "function"),
                "function": {"name": function.get("name", ""), "arguments": arguments},
            }
        )
    return result


@dataclass
class _Resolved:
    """A `Reply` with its defaults filled in for one request."""

    content: str | None
    finish_reason: str
    tool_calls: list[dict[str, Any]]
    usage: dict[str, Any]


def _resolve(call: Call, reply: Reply) -> _Resolved:
    content = reply.content
    if content is None and not reply.tool_calls and reply.refusal is None:
        content = "Echo: " + call.echo
    tool_calls = _normalize_tool_calls(reply.tool_calls)
    finish_reason = reply.finish_reason
    if finish_reason is None:
        finish_reason = "tool_calls" if tool_calls else "stop"
    if reply.usage is not None:
        usage = dict(reply.usage)
    else:
        usage = _counted_usage(call, reply, content, tool_calls)
    return _Resolved(content, finish_reason, tool_calls, usage)


def _counted_usage(
    call: Call, reply: Reply, content: str | None, tool_calls: list[dict[str, Any]]
) -> dict[str, Any]:
    """A `usage` object that counts one token a word."""
    reasoning = _count_words(reply.reasoning_content)
    per_choice = (
        _count_words(content)
        + _count_words(reply.refusal)
        + reasoning
        + sum(_count_words(tc["function"]["arguments"]) for tc in tool_calls)
    )
    completion = per_choice * call.n
    return {
        "prompt_tokens": call.prompt_tokens,
        "completion_tokens": completion,
        "total_tokens": call.prompt_tokens + completion,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": reasoning * call.n,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


# What Azure OpenAI adds to its answers: the content filters' verdicts, all safe here.
_SAFE: Final = {"filtered": False, "severity": "safe"}
_CONTENT_FILTERS: Final = {name: _SAFE for name in ("hate", "self_harm", "sexual", "violence")}
_PROMPT_FILTERS: Final = [{"prompt_index": 0, "content_filter_results": _CONTENT_FILTERS}]


def completion_body(call: Call, reply: Reply) -> bytes:
    """The `application/json` ChatCompletion of a non-streamed reply."""
    return dumps(completion_dict(call, reply))


def completion_dict(call: Call, reply: Reply) -> dict[str, Any]:
    """The ChatCompletion of a reply, as a dict (what `store: true` keeps)."""
    resolved = _resolve(call, reply)
    message: dict[str, Any] = {
        "role": "assistant",
        "content": resolved.content,
        "refusal": reply.refusal,
        "annotations": [],
    }
    if reply.reasoning_content is not None:
        message["reasoning_content"] = reply.reasoning_content
    if resolved.tool_calls:
        message["tool_calls"] = resolved.tool_calls
    completion: dict[str, Any] = {
        "id": call.completion_id,
        "object": "chat.completion",
        "created": call.created,
        "model": call.model,
        "choices": [
            {
                "index": index,
                "message": dict(message),
                "logprobs": None,
                "finish_reason": resolved.finish_reason,
            }
            for index in range(call.n)
        ],
        "usage": resolved.usage,
        "service_tier": "default",
        "system_fingerprint": _FINGERPRINT,
    }
    if call.azure:
        completion["prompt_filter_results"] = _PROMPT_FILTERS
        for choice in completion["choices"]:
            choice["content_filter_results"] = _CONTENT_FILTERS
    return completion


def _choice_deltas(resolved: _Resolved, reply: Reply) -> list[dict[str, Any]]:
    """The deltas of one streamed choice, without the final finish_reason chunk."""
    content = resolved.content
    deltas: list[dict[str, Any]] = [
        {"role": "assistant", "content": "" if content is not None else None}
    ]
    deltas.extend({"reasoning_content": p} for p in _split_words(reply.reasoning_content or ""))
    deltas.extend({"content": p} for p in _split_words(content or ""))
    deltas.extend({"refusal": p} for p in _split_words(reply.refusal or ""))
    for index, tool_call in enumerate(resolved.tool_calls):
        function = tool_call["function"]
        deltas.append(
            {
                "tool_calls": [
                    {
                        "index": index,
                        "id": tool_call["id"],
                        "type": tool_call["type"],
                        "function": {"name": function["name"], "arguments": ""},
                    }
                ]
            }
        )
        arguments: str = function["arguments"]
        for start in range(0, len(arguments), _ARGUMENT_FRAGMENT):
            fragment = arguments[start : start + _ARGUMENT_FRAGMENT]
            deltas.append({"tool_calls": [{"index": index, "function": {"arguments": fragment}}]})
    return deltas


def stream_events(call: Call, reply: Reply, *, complete: bool = True) -> list[bytes]:
    """The SSE events of a streamed reply; `complete=False` stops before the final chunk."""
    resolved = _resolve(call, reply)
    extra = reply.extra_chunk_fields or {}

    def chunk(choices: list[dict[str, Any]]) -> dict[str, Any]:
        obj: dict[str, Any] = {
            "id": call.completion_id,
            "object": "chat.completion.chunk",
            "created": call.created,
            "model": call.model,
            "system_fingerprint": _FINGERPRINT,
            "choices": choices,
        }
        if call.include_usage:
            obj["usage"] = None
        obj.update(extra)
        return obj

    per_choice = _choice_deltas(resolved, reply)
    events: list[bytes] = []
    if call.azure:  # Azure's first chunk: no choices, empty ids, the prompt's filter results
        first = {"choices": [], "created": 0, "id": "", "model": "", "object": ""}
        events.append(sse({**first, "prompt_filter_results": _PROMPT_FILTERS}))
    choices: list[list[tuple[dict[str, Any], str | None]]] = [
        [(delta, None) for delta in per_choice] + [({}, resolved.finish_reason)]
        for _ in range(call.n)
    ]
    for step in range(len(choices[0])):
        # Interleave the choices; every other step in reverse index order, like servers that
        # run choices in parallel (index 1 may come before index 0).
        order: Iterator[int] = reversed(range(call.n)) if step % 2 else iter(range(call.n))
        for index in order:
            delta, finish_reason = choices[index][step]
            if finish_reason is not None and not complete:
                return events
            choice: dict[str, Any] = {"index": index, "delta": delta, "logprobs": None}
            choice["finish_reason"] = finish_reason
            if call.azure:
                choice["content_filter_results"] = {} if finish_reason else _CONTENT_FILTERS
            events.append(sse(chunk([choice])))
    if call.include_usage:
        usage_chunk = chunk([])
        usage_chunk["usage"] = resolved.usage
        events.append(sse(usage_chunk))
    events.append(_SSE_DONE)
    return events
