"""`stream.events()` against the official SDK's `client.chat.completions.stream()`, as an oracle.

Every stream case of the other test modules (the shapes real servers send, from test_chunks.py
and test_oracle.py) plus the ones events add (JSON content, strict tools, logprobs, refusals)
is served over loopback twice, byte for byte: once to `openai`'s stream helper, once to
chatlib's `stream.events()` (SyncChat and AsyncChat). The event sequences must be equal: the
types, their order, and every field the SDK has.

Where the SDK cannot read a stream (it raises, or yields nothing) or is wrong on purpose-worthy
points, the case says so: `oracle` is the stream the SDK is given instead (the same events, in
a form it digests), and `patch` turns its events into chatlib's, one documented difference
each. Everything else is compared as is.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import attrs
import pytest
from test_chunks import DONE, OPENAI_STREAM, SPLIT_STREAM, USAGE, chunk, frame

from chatlib import ChatCompletionAccumulator, SyncChat
from chatlib._events import EventOptions, StreamEvents
from chatlib.errors import APIError, APIStatusError, IncompleteStreamError
from chatlib.models import CreateChatCompletionChunk
from chatlib.testing import LocalServer, RawReply, Reply

openai = pytest.importorskip("openai")
pydantic = pytest.importorskip("pydantic")
from openai.lib._parsing._completions import type_to_response_format_param  # noqa: E402

SSE = "text/event-stream"
USER = [{"role": "user", "content": "What is the capital of France?"}]


class Coords(pydantic.BaseModel):
    lat: float
    lon: float


class City(pydantic.BaseModel):
    name: str
    population: int
    tags: list[str]
    coords: Coords
    capital: bool
    motto: str | None


CITY_FORMAT = type_to_response_format_param(City)
CITY_JSON = json.dumps(
    {
        "name": "Paris",
        "population": 2102650,
        "tags": ["capital", 'say "bonjour"', "\u00e9t\u00e9 \U0001f389"],
        "coords": {"lat": 48.8566, "lon": 2.3522},
        "capital": True,
        "motto": None,
    },
    ensure_ascii=False,
)
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
            "required": ["city", "days"],
            "additionalProperties": False,
        },
        "strict": True,
    },
}
LOOSE = {"type": "function", "function": {"name": "get_time"}}


def token(text: str, logprob: float = -0.5) -> dict[str, Any]:
    return {"token": text, "logprob": logprob, "bytes": None, "top_logprobs": []}


def with_logprobs(delta: dict[str, Any], **logprobs: Any) -> dict[str, Any]:
    payload = chunk(delta)
    payload["choices"][0]["logprobs"] = logprobs
    return payload


def tool_fragment(index: int, arguments: str, **head: Any) -> dict[str, Any]:
    function: dict[str, Any] = {"arguments": arguments}
    if "name" in head:
        function["name"] = head.pop("name")
    return {"index": index, **head, "function": function}


def split_frames(data: bytes) -> list[bytes]:
    """The SSE events of `data`, one piece each."""
    return [piece + b"\n\n" for piece in data.split(b"\n\n") if piece]


# ---------------------------------------------------------------- patches: where chatlib differs


def _events_of(events: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] == kind]


def names_set_not_concatenated(name: str, call_id: str) -> Callable[[list[Any]], list[Any]]:
    """llama.cpp repeats a tool call's `id` and `name` in every fragment: the SDK concatenates
    them (`get_weatherget_weather...`), chatlib sets them."""

    def patch(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for event in events:
            if "name" in event:
                event["name"] = name
            if event["type"] == "chunk":
                for choice in event["snapshot"]["choices"]:
                    choice["tool_calls"] = [
                        (call_id, name, args) for _, _, args in choice["tool_calls"]
                    ]
        return events

    return patch


def done_for_the_tool_started_in_the_finishing_chunk(events: list[dict[str, Any]]) -> list[Any]:
    """A tool call that starts in the chunk carrying `finish_reason` never gets its `.done`
    from the SDK (it only looks for one in later chunks of that choice); chatlib ends it.
    And the SDK parses nothing in a stream's first chunk (its snapshot is made from that
    chunk without the parsing step): chatlib parses it like any other."""
    (delta,) = _events_of(events, "tool_calls.function.arguments.delta")
    delta["parsed_arguments"] = json.loads(delta["arguments"])
    done = {k: delta[k] for k in ("name", "index", "arguments", "parsed_arguments")}
    return [*events, {"type": "tool_calls.function.arguments.done", **done}]


def logprobs_counted_once(events: list[dict[str, Any]]) -> list[Any]:
    """The SDK adds the first logprobs of a choice that appears after the stream's first
    chunk twice to its snapshots; chatlib once."""
    for event in events:
        if event["type"] == "logprobs.content.delta":
            event["snapshot"] = event["snapshot"][1:]
        if event["type"] == "logprobs.content.done":
            event["content"] = event["content"][1:]
    return events


def choices_swapped_back(events: list[dict[str, Any]]) -> list[Any]:
    """The SDK raises `IndexError` when a stream's first chunk is about choice 1 (llama-server
    runs choices in parallel); it was given the stream with indexes 0 and 1 swapped, so its
    snapshots are swapped back."""
    for event in events:
        if event["type"] == "chunk":
            snapshot = event["snapshot"]["choices"]
            for choice in snapshot:
                choice["index"] = 1 - choice["index"]
            snapshot.sort(key=lambda c: c["index"])
    return events


def _payloads(frames: list[bytes]) -> list[Any]:
    """The JSON objects of the `data:` lines of message events (not `event: ping`...)."""
    out = []
    for piece in frames:
        lines = piece.splitlines()
        if any(line.startswith(b"event:") for line in lines):
            continue
        out += [json.loads(line[6:]) for line in lines if line.startswith(b"data: {")]
    return out


def sdk_digestible(frames: list[bytes]) -> list[bytes]:
    """The SDK drops every chunk whose `object` is not `"chat.completion.chunk"` (chatlib
    drops only Azure's content-filter frames, whose `object` is `""`: the servers that leave
    the field out would get no events at all), and raises `TypeError`/`KeyError` when the
    stream's first chunk has `"choices": null` or no `choices` (vLLM's usage chunk). It gets
    those chunks with `object` and `"choices": []`."""
    out = []
    for piece in frames:
        if piece.startswith(b"data: {"):
            payload = json.loads(piece[len(b"data: ") :])
            payload.setdefault("object", "chat.completion.chunk")
            if payload.get("choices") is None:
                payload["choices"] = []
            piece = frame(payload)
        out.append(piece)
    return out


def chunks_as_sent(frames: list[bytes], events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`chunk` events hold the chunks as the server sent `frames` (for a case whose oracle
    was given other bytes)."""
    sent = iter(p for p in _payloads(frames) if p.get("object") != "")
    for event in events:
        if event["type"] == "chunk":
            event["chunk"] = next(sent)
    return events


def digestible(frames: list[bytes], **kwargs: Any) -> Case:
    return Case(frames, oracle=sdk_digestible(frames), **kwargs)


# ---------------------------------------------------------------- the cases


@dataclass
class Case:
    """A stream, what chatlib's request adds, and what the oracle needs to be comparable.

    Attributes:
        body: What the server sends: SSE events (one piece each), or a scripted `Reply`.
        request: Keyword arguments both clients send.
        oracle: The events the SDK is given instead of `body`, when it cannot read `body`
            (its `chunk` events are then compared with the chunks of `body`).
        oracle_request: Keyword arguments for the SDK instead of `request` (a class as
            `response_format`, so that the SDK parses what chatlib parses for the dict).
        patch: The SDK's events made into chatlib's, where chatlib differs on purpose.
        error: What chatlib raises after the last event (the SDK raises `APIError` for an
            error event, and ends quietly where chatlib reports a stream cut short).
    """

    body: list[bytes] | Reply
    request: dict[str, Any] = field(default_factory=dict)
    oracle: list[bytes] | None = None
    oracle_request: dict[str, Any] | None = None
    patch: Callable[[list[Any]], list[Any]] | None = None
    error: type[APIError] | None = None


def _interleaved(first: int) -> list[bytes]:
    other = 1 - first
    return [
        frame(chunk({"role": "assistant", "content": "B1"}, index=first)),
        frame(chunk({"role": "assistant", "content": "A1"}, index=other)),
        frame(chunk({"content": "A2"}, index=other)),
        frame({**chunk(), "choices": [], "usage": {**USAGE, "completion_tokens": 1}}),
        frame(chunk({"content": "B2"}, index=first)),
        frame(chunk({}, index=first, finish="length")),
        frame(chunk({}, index=other, finish="stop")),
        frame({**chunk(), "choices": [], "usage": USAGE}),
        DONE,
    ]


LLAMA_CPP_TOOL = [
    frame(chunk({"role": "assistant"}), compact=False),
    *(
        frame(
            chunk(
                {
                    "tool_calls": [
                        tool_fragment(
                            0, piece, id="call__0_get_weather", type="function", name="get_weather"
                        )
                    ]
                }
            ),
            compact=False,
        )
        for piece in ['{ "city"', ': "Par', 'is", "days": 2 }']
    ),
    frame(chunk({}, finish="tool_calls"), compact=False),
    DONE,
]

AZURE_FIRST = {
    "choices": [],
    "created": 0,
    "id": "",
    "model": "",
    "object": "",
    "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": {}}],
}
AZURE_FILTER_TAIL = {
    "choices": [
        {
            "index": 0,
            "finish_reason": None,
            "content_filter_offsets": {"check_offset": 0, "start_offset": 0, "end_offset": 1},
            "content_filter_results": {},
        }
    ],
    "created": 0,
    "id": "",
    "model": "",
    "object": "",
}
PINGS = [
    b":\n\n",
    b": ping - 2025-03-10 01:02:03\n\n",
    b"event: ping\ndata: {}\n\n",
    b"event: ping\n\n",
    b": OPENROUTER PROCESSING\n\n",
    b"id: 7\nretry: 1000\n",
    b"event: ping\ndata: not json at all\n\n",
    b"data:\n\n",
    b"data: \n\n",
]


def _interleave_pings(frames: list[bytes]) -> list[bytes]:
    out: list[bytes] = []
    for ping, payload in zip(PINGS, frames, strict=False):
        out += [ping, payload]
    return out + frames[len(PINGS) :]


KEEPALIVE_FRAMES = [
    frame(chunk({"role": "assistant", "content": ""})),
    frame(chunk({"content": "a"})),
    frame(chunk({"content": "b"})),
    frame(chunk({}, finish="stop")),
    DONE,
]
CITY_CHAR_BY_CHAR = [
    frame(chunk({"role": "assistant", "content": ""})),
    *(frame(chunk({"content": ch})) for ch in CITY_JSON),
    frame(chunk({}, finish="stop")),
    DONE,
]
STRICT_ARGUMENTS = '{"city": "Paris", "days": 12}'
STRICT_TOOL_CHAR_BY_CHAR = [
    frame(chunk({"role": "assistant", "content": None})),
    frame(
        chunk(
            {"tool_calls": [tool_fragment(0, "", id="call_1", type="function", name="get_weather")]}
        )
    ),
    *(frame(chunk({"tool_calls": [tool_fragment(0, ch)]})) for ch in STRICT_ARGUMENTS),
    frame(
        chunk({"tool_calls": [tool_fragment(1, "", id="call_2", type="function", name="get_time")]})
    ),
    frame(chunk({"tool_calls": [tool_fragment(1, '{"tz": "CET"}')]})),
    frame(chunk({}, finish="tool_calls")),
    DONE,
]
OPENAI_TOOL_CALLS = [
    frame(chunk({"role": "assistant", "content": None})),
    frame(
        chunk(
            {"tool_calls": [tool_fragment(0, "", id="call_a", type="function", name="get_weather")]}
        )
    ),
    frame(chunk({"tool_calls": [tool_fragment(0, '{"city":')]})),
    frame(
        chunk(
            {"tool_calls": [tool_fragment(1, "{}", id="call_b", type="function", name="get_time")]}
        )
    ),
    frame(chunk({"tool_calls": [tool_fragment(0, '"Paris"}')]})),
    frame(chunk({}, finish="tool_calls")),
    DONE,
]
LOGPROBS = [
    frame(with_logprobs({"role": "assistant", "content": ""}, content=[], refusal=None)),
    frame(with_logprobs({"content": "He"}, content=[token("He")], refusal=None)),
    frame(with_logprobs({"content": "y"}, content=[token("y", -0.25)], refusal=None)),
    frame(chunk({}, finish="stop")),
    DONE,
]
REFUSAL_LOGPROBS = [
    frame(with_logprobs({"role": "assistant", "refusal": ""}, content=None, refusal=[])),
    frame(with_logprobs({"refusal": "I can't"}, content=None, refusal=[token("I can't")])),
    frame(with_logprobs({"refusal": " help."}, content=None, refusal=[token(" help.", -1.0)])),
    frame(chunk({}, finish="stop")),
    DONE,
]

CASES: dict[str, Case] = {
    # -- the shapes of test_chunks.py
    "openai with usage": Case(split_frames(OPENAI_STREAM)),
    "llama-cpp-python framing, finish length": Case(
        [
            b": ping - 2025-03-10 01:02:03.456789\r\n\r\n",
            frame(chunk({"role": "assistant"}), compact=False),
            frame(chunk({"content": "Hi"}), compact=False),
            frame(chunk({}, finish="length"), compact=False),
            DONE,
        ]
    ),
    "llama-server null content and timings": Case(
        [
            frame(chunk({"role": "assistant", "content": None})),
            frame(chunk({"content": "Yo"}, timings={"predicted_n": 1})),
            frame(chunk({}, finish="stop")),
            DONE,
        ]
    ),
    "CRLF framing, DONE without a blank line": Case(
        [
            frame(chunk({"content": "x"}), eol=b"\r\n"),
            frame(chunk({}, finish="stop")),
            b"data: [DONE]",
        ]
    ),
    "usage chunk with choices []": digestible(
        [frame({"id": "c", "choices": [], "usage": USAGE}), frame(chunk({"content": "a"})), DONE]
    ),
    "vLLM usage chunk with choices null": digestible(
        [frame({"id": "c", "choices": None, "usage": USAGE}), frame(chunk({"content": "a"})), DONE]
    ),
    "usage chunk without choices": digestible(
        [frame({"id": "c", "usage": USAGE}), frame(chunk({"content": "a"})), DONE]
    ),
    "Azure empty first chunk and filter tail": Case(
        [
            frame(AZURE_FIRST),
            frame(chunk({"content": "x"})),
            frame(AZURE_FILTER_TAIL),
            frame(chunk({}, finish="stop")),
            DONE,
        ]
    ),
    "keep-alives and vendor events": Case(
        _interleave_pings(KEEPALIVE_FRAMES),
        oracle=KEEPALIVE_FRAMES,  # the SDK raises JSONDecodeError on `event: ping` without data
    ),
    "unicode, tool call split, ping, usage": Case(split_frames(SPLIT_STREAM)),
    "tool calls interleaved by index (OpenAI style)": Case(OPENAI_TOOL_CALLS),
    "llama.cpp repeats tool call id and name": Case(
        LLAMA_CPP_TOOL, patch=names_set_not_concatenated("get_weather", "call__0_get_weather")
    ),
    "custom tool call": Case(
        [
            frame(
                chunk(
                    {
                        "tool_calls": [
                            {"index": 0, "id": "c1", "type": "custom", "custom": {"name": "sql"}}
                        ]
                    }
                )
            ),
            frame(chunk({"tool_calls": [{"index": 0, "custom": {"input": "SELECT 1"}}]})),
            frame(chunk({}, finish="tool_calls")),
            DONE,
        ]
    ),
    "Ollama repeats the role": Case(
        [
            *(frame(chunk({"role": "assistant", "content": w})) for w in ["The", " sky", " is"]),
            frame(chunk({"role": "assistant", "content": ""}, finish="stop")),
            DONE,
        ]
    ),
    "llama-server n=2, choice 1 first, usage per choice": Case(
        _interleaved(first=1),
        oracle=_interleaved(first=0),
        patch=choices_swapped_back,
    ),
    "Groq usage under x_groq": Case(
        [
            frame(chunk({"role": "assistant", "content": ""}, x_groq={"id": "req_01"})),
            frame(chunk({"content": "Hi"})),
            frame(chunk({}, finish="stop", x_groq={"id": "req_01", "usage": USAGE})),
            DONE,
        ]
    ),
    "reasoning_content beside content": Case(
        [
            frame(chunk({"role": "assistant", "content": None, "reasoning_content": ""})),
            frame(chunk({"content": None, "reasoning_content": "Compare "})),
            frame(chunk({"content": "9.8", "reasoning_content": None})),
            frame(chunk({"content": " is larger"}, finish="stop")),
            DONE,
        ]
    ),
    "content logprobs": Case(LOGPROBS, request={"logprobs": True}),
    "refusal logprobs": Case(REFUSAL_LOGPROBS, request={"logprobs": True}),
    "logprobs of a choice that starts after the first chunk": Case(
        [frame({**chunk(), "choices": [], "usage": None}), *LOGPROBS[1:]],
        request={"logprobs": True},
        patch=logprobs_counted_once,
    ),
    "audio output": Case(
        [
            frame(chunk({"role": "assistant", "audio": {"id": "audio_1", "transcript": "Hel"}})),
            frame(chunk({"audio": {"data": "UklG", "transcript": "lo"}})),
            frame(chunk({"audio": {"data": "RiQA", "expires_at": 1741570000}}, finish="stop")),
            DONE,
        ]
    ),
    "an empty refusal beside content": Case(
        [
            frame(chunk({"role": "assistant", "content": "", "refusal": ""})),
            frame(chunk({"content": "x"})),
            frame(chunk({}, finish="stop")),
            DONE,
        ]
    ),
    "a chunk without delta": Case(
        [
            frame(chunk({"content": "x"})),
            frame({**chunk(), "choices": [{"index": 0, "finish_reason": "stop"}]}),
            DONE,
        ],
        oracle=[frame(chunk({"content": "x"})), frame(chunk({}, finish="stop")), DONE],
    ),
    "a tool call fragment without type": Case(
        [
            frame(chunk({"tool_calls": [tool_fragment(0, "{}", id="c1", name="get_time")]})),
            frame(chunk({}, finish="tool_calls")),
            DONE,
        ],
        oracle=[
            frame(
                chunk(
                    {
                        "tool_calls": [
                            tool_fragment(0, "{}", id="c1", type="function", name="get_time")
                        ]
                    }
                )
            ),
            frame(chunk({}, finish="tool_calls")),
            DONE,
        ],
    ),
    "a tool call and finish_reason in one chunk": Case(
        [
            frame(
                chunk(
                    {
                        "role": "assistant",
                        "tool_calls": [
                            tool_fragment(
                                0, STRICT_ARGUMENTS, id="c1", type="function", name="get_weather"
                            )
                        ],
                    },
                    finish="tool_calls",
                )
            ),
            DONE,
        ],
        request={"tools": [WEATHER]},
        patch=done_for_the_tool_started_in_the_finishing_chunk,
    ),
    "chunks without an object field": digestible(
        [
            frame({"id": "c", "choices": [{"index": 0, "delta": {"content": "a"}}]}),
            frame({"id": "c", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}),
            DONE,
        ]
    ),
    # -- structured content and strict tools: `parsed` and `parsed_arguments`
    "JSON content char by char, json_schema format": Case(
        CITY_CHAR_BY_CHAR,
        request={"response_format": CITY_FORMAT},
        oracle_request={"response_format": City},
    ),
    "JSON content char by char, json_object format": Case(
        CITY_CHAR_BY_CHAR,
        request={"response_format": {"type": "json_object"}},
        oracle_request={"response_format": City},
    ),
    "JSON content, text format: nothing parsed": Case(
        CITY_CHAR_BY_CHAR, request={"response_format": {"type": "text"}}
    ),
    "strict tool arguments char by char": Case(
        STRICT_TOOL_CHAR_BY_CHAR, request={"tools": [WEATHER, LOOSE]}
    ),
    # -- errors and cut streams: the events before them, then the error
    "an error event mid-stream": Case(
        [
            frame(chunk({"role": "assistant", "content": ""})),
            frame(chunk({"content": "partial"})),
            b'data: {"error": {"message": "overloaded", "type": "server_error"}}\n\n',
        ],
        error=APIStatusError,
    ),
    "an `event: error` mid-stream": Case(
        [
            frame(chunk({"content": "partial"})),
            b'event: error\ndata: {"error": {"message": "overloaded", "type": "server_error"}}\n\n',
        ],
        error=APIStatusError,
    ),
    "a stream cut before [DONE]": Case(
        [frame(chunk({"role": "assistant"})), frame(chunk({"content": "cut"}))],
        error=IncompleteStreamError,  # the SDK ends quietly
    ),
    # -- LocalServer's scripted replies (test_oracle.py's merges)
    "n=2 with usage": Case(
        Reply("two words here"), {"n": 2, "stream_options": {"include_usage": True}}
    ),
    "a refusal": Case(Reply(refusal="I can't help with that")),
    "reasoning beside the answer": Case(Reply("42", reasoning_content="thinking it over")),
    "two tool calls": Case(
        Reply(
            tool_calls=[
                {"id": "c1", "name": "get_weather", "arguments": {"city": "Paris", "days": 1}},
                {"id": "c2", "name": "get_time", "arguments": {"b": [1, 2]}},
            ]
        ),
        {"tools": [WEATHER, LOOSE], "stream_options": {"include_usage": True}},
    ),
    "text, then tool calls": Case(
        Reply(
            "Let me check.",
            tool_calls=[
                {"id": "call_paris", "name": "get_weather", "arguments": {"city": "Paris"}},
                {"id": "call_lyon", "name": "get_weather", "arguments": {"city": "Lyon"}},
            ],
        ),
        {"tools": [LOOSE]},
    ),
    "JSON content word by word": Case(
        Reply(CITY_JSON), {"response_format": CITY_FORMAT}, oracle_request={"response_format": City}
    ),
}


# ---------------------------------------------------------------- one view of both SDKs' events


def _token_view(item: Any) -> tuple[Any, ...]:
    return (
        item.token,
        item.logprob,
        item.bytes,
        tuple((t.token, t.logprob, t.bytes) for t in item.top_logprobs or ()),
    )


def _tool_view(call: Any) -> tuple[Any, ...]:
    if isinstance(call, dict):  # chatlib's custom tool calls
        return (call["id"], call["custom"]["name"], call["custom"]["input"] or None)
    function = getattr(call, "function", None)
    if function is None:
        custom = getattr(call, "custom", None) or {}
        get = custom.get if isinstance(custom, dict) else lambda k: getattr(custom, k, None)
        return (call.id, get("name"), get("input") or None)
    return (call.id, function.name, function.arguments)


def _snapshot_view(snapshot: Any) -> dict[str, Any]:
    """What a user reads from a snapshot's choices. The header and `usage` are left out: the
    SDK's keep the first chunk's `id`/`model` (empty after a usage chunk without them) and the
    last chunk's `usage` (`None` after a chunk without one); chatlib keeps the ones that came.
    An empty refusal counts as none (chatlib's merge has always dropped it)."""
    return {
        "choices": [
            {
                "index": choice.index,
                "finish_reason": choice.finish_reason,
                "content": choice.message.content,
                "refusal": choice.message.refusal or None,
                "tool_calls": [_tool_view(c) for c in choice.message.tool_calls or ()],
            }
            for choice in snapshot.choices
        ],
    }


def _value_view(name: str, value: Any, *, scrub_ids: bool) -> Any:
    if name == "chunk":
        data = value.to_dict()
        if scrub_ids:  # LocalServer makes a new id and timestamp for each reply
            data.pop("id", None)
            data.pop("created", None)
        return data
    if name == "snapshot" and not isinstance(value, (str, list)):
        return _snapshot_view(value)
    if isinstance(value, list):
        return [_token_view(item) for item in value]
    if isinstance(value, pydantic.BaseModel):
        return value.model_dump()
    return copy.deepcopy(value)


def sdk_view(event: Any, *, scrub_ids: bool) -> dict[str, Any]:
    view = {"type": event.type}
    for name in type(event).model_fields:
        if name != "type":
            view[name] = _value_view(name, getattr(event, name), scrub_ids=scrub_ids)
    return view


def our_view(event: Any, *, scrub_ids: bool) -> dict[str, Any]:
    view = {"type": event.type}
    for attribute in attrs.fields(type(event)):
        if attribute.name not in ("type", "choice_index"):
            value = getattr(event, attribute.name)
            view[attribute.name] = _value_view(attribute.name, value, scrub_ids=scrub_ids)
    return view


# ---------------------------------------------------------------- running both


def _action(body: list[bytes] | Reply) -> RawReply | Reply:
    return body if isinstance(body, Reply) else RawReply(body=body, content_type=SSE)


_SDK_RESULTS: dict[str, tuple[list[dict[str, Any]], str | None]] = {}


def sdk_events(
    server: LocalServer, name: str, case: Case
) -> tuple[list[dict[str, Any]], str | None]:
    """The SDK's events for `case` (views taken as each event is yielded: the SDK mutates
    its snapshots afterwards), and the name of the error it raised; once per case."""
    if name not in _SDK_RESULTS:
        server.enqueue(_action(case.oracle if case.oracle is not None else case.body))
        request = case.oracle_request if case.oracle_request is not None else case.request
        client = openai.OpenAI(base_url=server.base_url, api_key="sk-oracle", max_retries=0)
        events: list[dict[str, Any]] = []
        error = None
        scrub = isinstance(case.body, Reply)
        try:
            with client, client.chat.completions.stream(model="m", messages=USER, **request) as s:
                for event in s:
                    events.append(sdk_view(event, scrub_ids=scrub))
        except openai.APIError as exc:
            error = type(exc).__name__
        _SDK_RESULTS[name] = events, error
    events, error = _SDK_RESULTS[name]
    return copy.deepcopy(events), error


def our_events(facade: Any, server: LocalServer, case: Case) -> tuple[list[Any], APIError | None]:
    """chatlib's events for `case` and the error raised after them, through `facade`."""
    server.enqueue(_action(case.body))
    client = facade.client(base_url=server.base_url).raw
    events: list[Any] = []
    if facade.is_async:

        async def collect() -> None:
            async with client.stream(model="m", messages=USER, **case.request) as stream:
                async for event in stream.events():
                    events.append(event)

        run: Callable[[], Any] = lambda: facade.run(collect())  # noqa: E731
    else:

        def run() -> None:
            with client.stream(model="m", messages=USER, **case.request) as stream:
                events.extend(stream.events())

    try:
        run()
    except APIError as exc:
        return events, exc
    return events, None


@pytest.mark.parametrize("name", list(CASES))
def test_events_equal_the_official_sdks(facade: Any, server: LocalServer, name: str) -> None:
    case = CASES[name]
    theirs, their_error = sdk_events(server, name, case)
    if case.oracle is not None:
        assert not isinstance(case.body, Reply)
        theirs = chunks_as_sent(case.body, theirs)
    if case.patch is not None:
        theirs = case.patch(theirs)
    mine, my_error = our_events(facade, server, case)
    scrub = isinstance(case.body, Reply)
    assert [our_view(e, scrub_ids=scrub) for e in mine] == theirs
    if case.error is None:
        assert my_error is None and their_error is None
    else:
        assert isinstance(my_error, case.error)
        assert their_error == ("APIError" if issubclass(case.error, APIStatusError) else None)
        last_snapshot = [e.snapshot for e in mine if e.type == "chunk"][-1]
        assert my_error.partial is not None  # what arrived before the failure
        assert my_error.partial.to_dict() == last_snapshot.to_dict()
    # A per-choice event names the choice of the chunk it comes from.
    choices: list[int] = []
    for event in mine:
        if event.type == "chunk":
            choices = [c.index for c in event.chunk.choices]
        else:
            assert event.choice_index in choices


# ---------------------------------------------------------------- the machine on its own


def test_every_event_type_is_spelled_as_in_the_sdk() -> None:
    from openai.lib.streaming.chat import _events as sdk

    import chatlib

    theirs = {
        cls.__name__: cls.model_fields["type"].annotation.__args__[0]
        for cls in sdk.ChatCompletionStreamEvent.__args__  # type: ignore[attr-defined]
    }
    theirs = {name.split("[")[0]: kind for name, kind in theirs.items()}
    mine = {
        cls.__name__: attrs.fields(cls).type.default
        for cls in chatlib.ChatCompletionStreamEvent.__args__  # type: ignore[attr-defined]
    }
    assert mine == theirs
    for cls in chatlib.ChatCompletionStreamEvent.__args__:  # type: ignore[attr-defined]
        sdk_fields = set(getattr(sdk, cls.__name__).model_fields)
        assert sdk_fields <= {a.name for a in attrs.fields(cls)}, cls.__name__


def test_the_machine_works_on_chunks_obtained_elsewhere() -> None:
    events = StreamEvents(EventOptions(json_content=True))
    pieces = ['{"a": [1, ', '2], "b": "x', 'y"}']
    seen = []
    for piece in pieces:
        chunk_ = CreateChatCompletionChunk.from_dict(chunk({"content": piece}))
        seen += events.on_chunk(chunk_)
    seen += events.on_chunk(CreateChatCompletionChunk.from_dict(chunk({}, finish="stop")))
    parsed = [e.parsed for e in seen if e.type == "content.delta"]
    assert parsed == [{"a": [1]}, {"a": [1, 2]}, {"a": [1, 2], "b": "xy"}]
    (done,) = [e for e in seen if e.type == "content.done"]
    assert done.parsed == {"a": [1, 2], "b": "xy"}
    assert [e.snapshot.text for e in seen if e.type == "chunk"][-1] == '{"a": [1, 2], "b": "xy"}'


def test_parse_hooks_turn_json_into_typed_objects() -> None:
    @attrs.define
    class Point:
        x: int
        y: int | None = None

    options = EventOptions(
        json_content=True,
        parse_partial=lambda value: Point(**value) if "x" in value else None,
        parse_content=lambda text: Point(**json.loads(text)),
        strict_tools=frozenset({"move"}),
        parse_arguments=lambda name, arguments: (name, Point(**json.loads(arguments))),
    )
    events = StreamEvents(options)
    out = []
    for delta in [{"content": '{"x": 1'}, {"content": ', "y": 2}'}]:
        out += events.on_chunk(CreateChatCompletionChunk.from_dict(chunk(delta)))
    call = tool_fragment(0, '{"x": 3}', id="c", type="function", name="move")
    out += events.on_chunk(CreateChatCompletionChunk.from_dict(chunk({"tool_calls": [call]})))
    out += events.on_chunk(CreateChatCompletionChunk.from_dict(chunk({}, finish="tool_calls")))
    assert [e.parsed for e in out if e.type == "content.delta"] == [Point(1), Point(1, 2)]
    assert [e.parsed for e in out if e.type == "content.done"] == [Point(1, 2)]
    (done,) = [e for e in out if e.type == "tool_calls.function.arguments.done"]
    assert done.parsed_arguments == ("move", Point(3))


def test_content_that_is_not_json_has_no_parsed_value() -> None:
    events = StreamEvents(EventOptions(json_content=True, strict_tools=frozenset({"f"})))
    out = []
    for delta in [{"content": "Sure! "}, {"content": '{"a": 1}'}]:
        out += events.on_chunk(CreateChatCompletionChunk.from_dict(chunk(delta)))
    call = tool_fragment(0, '{"a": ', id="c", type="function", name="f")
    out += events.on_chunk(CreateChatCompletionChunk.from_dict(chunk({"tool_calls": [call]})))
    out += events.on_chunk(CreateChatCompletionChunk.from_dict(chunk({}, finish="length")))
    assert [e.parsed for e in out if e.type in ("content.delta", "content.done")] == [None] * 3
    (done,) = [e for e in out if e.type == "tool_calls.function.arguments.done"]
    assert (done.arguments, done.parsed_arguments) == ('{"a": ', None)


def test_options_follow_the_request() -> None:
    from chatlib.models import CreateChatCompletionRequest

    def options(**params: Any) -> EventOptions:
        return EventOptions.for_request(
            CreateChatCompletionRequest(model="m", messages=[], **params)
        )

    assert options().json_content is False
    assert options(response_format={"type": "json_object"}).json_content is True
    assert options(response_format=CITY_FORMAT).json_content is True
    assert options(response_format={"type": "text"}).json_content is False
    assert options(tools=[WEATHER, LOOSE]).strict_tools == {"get_weather"}
    request = CreateChatCompletionRequest.from_dict(
        {"model": "m", "messages": [], "tools": [WEATHER], "response_format": CITY_FORMAT}
    )
    from_models = EventOptions.for_request(request)
    assert from_models.json_content and from_models.strict_tools == {"get_weather"}


# ---------------------------------------------------------------- the stream methods


def test_until_done_returns_the_stream_and_events_can_follow_chunks_read_through_them(
    facade: Any, server: LocalServer
) -> None:
    server.enqueue(Reply("one two three"))
    client = facade.client(base_url=server.base_url).raw
    if facade.is_async:

        async def go() -> Any:
            stream = client.stream(model="m", messages=USER)
            events = stream.events()
            first = await anext(events)
            second = await anext(events)
            chunk_after = await anext(stream)  # read directly: its events wait for events()
            rest = [e async for e in stream.events()]
            done = await stream.until_done()
            return stream, [first, second], chunk_after, rest, done

        stream, head, chunk_after, rest, done = facade.run(go())
    else:
        stream = client.stream(model="m", messages=USER)
        events = stream.events()
        head = [next(events), next(events)]
        chunk_after = next(stream)
        rest = list(stream.events())
        done = stream.until_done()
    assert done is stream
    assert [e.type for e in head] == ["chunk", "content.delta"]
    assert rest[0].type == "chunk" and rest[0].chunk is chunk_after
    kinds = [e.type for e in head + rest]
    assert kinds.count("content.done") == 1
    assert [e.content for e in rest if e.type == "content.done"] == ["one two three"]
    assert stream.accumulated.text == "one two three"


def test_events_after_chunks_were_read_is_refused(facade: Any, server: LocalServer) -> None:
    server.enqueue(Reply("one two"))
    client = facade.client(base_url=server.base_url)
    stream = client.stream(model="m", messages=USER)
    assert stream.next() is not None
    with pytest.raises(RuntimeError, match="before any chunk"):
        if facade.is_async:
            facade.run(anext(stream.raw.events()))
        else:
            next(stream.raw.events())
    stream.close()


def test_until_done_consumes_the_rest(facade: Any, server: LocalServer) -> None:
    server.enqueue(Reply("a b c"))
    client = facade.client(base_url=server.base_url).raw
    if facade.is_async:

        async def go() -> Any:
            async with client.stream(model="m", messages=USER) as stream:
                return await stream.until_done()

        stream = facade.run(go())
    else:
        with client.stream(model="m", messages=USER) as stream:
            assert stream.until_done() is stream
    assert stream.accumulated.text == "a b c"
    assert "finished" in repr(stream) or "closed" in repr(stream)


def test_a_stream_made_by_create_has_events_too(server: LocalServer) -> None:
    server.enqueue(Reply("hi there"))
    with SyncChat(base_url=server.base_url, api_key="k") as chat:
        stream = chat.create(model="m", messages=USER, stream=True)
        kinds = [e.type for e in stream.events()]
    assert kinds[-2:] == ["chunk", "content.done"]


def test_accumulator_is_public_and_takes_chunks_of_any_origin(server: LocalServer) -> None:
    frames = split_frames(OPENAI_STREAM)
    server.enqueue(RawReply(body=frames, content_type=SSE))
    client = openai.OpenAI(base_url=server.base_url, api_key="k", max_retries=0)
    with client:
        theirs = list(client.chat.completions.create(model="m", messages=USER, stream=True))
    from_sdk, from_dicts, from_models = (ChatCompletionAccumulator() for _ in range(3))
    for their_chunk in theirs:
        from_sdk.add(their_chunk)
        from_dicts.add(their_chunk.to_dict())
        from_models.add(CreateChatCompletionChunk.from_dict(their_chunk.to_dict()))
    assert from_sdk.result().to_dict() == from_dicts.result().to_dict()
    assert from_dicts.result().to_dict() == from_models.result().to_dict()
    assert from_sdk.result().text == "Hello"
    assert from_sdk.result().usage is not None


# ---------------------------------------------------------------- typed structured outputs


@attrs.define
class CityFacts:
    name: str
    population: int


def typed_events(facade: Any, server: LocalServer, **params: Any) -> list[Any]:
    client = facade.client(base_url=server.base_url).raw
    if facade.is_async:

        async def collect() -> list[Any]:
            async with client.stream(model="m", messages=USER, **params) as stream:
                return [event async for event in stream.events()]

        return facade.run(collect())  # type: ignore[no-any-return]
    with client.stream(model="m", messages=USER, **params) as stream:
        return list(stream.events())


def test_a_class_response_format_gives_a_typed_object_at_content_done(
    facade: Any, server: LocalServer
) -> None:
    server.enqueue(Reply.json({"name": "Paris", "population": 2102650}))
    events = typed_events(facade, server, response_format=CityFacts)
    partials = [e.parsed for e in events if e.type == "content.delta"]
    assert partials[-1] == {"name": "Paris", "population": 2102650}  # JSON as it arrives
    assert {"name": "Paris"} in partials  # the fields whose JSON had fully arrived
    (done,) = [e for e in events if e.type == "content.done"]
    assert done.parsed == CityFacts("Paris", 2102650)


def test_a_typed_tool_gives_typed_arguments_at_done(facade: Any, server: LocalServer) -> None:
    def lookup(city: str, days: int) -> str:
        """Look the weather up."""
        return "sunny"

    server.enqueue(Reply(tool_calls=[{"name": "lookup", "arguments": {"city": "Oslo", "days": 2}}]))
    events = typed_events(facade, server, tools=[lookup])
    (done,) = [e for e in events if e.type == "tool_calls.function.arguments.done"]
    assert done.parsed_arguments == {"city": "Oslo", "days": 2}
    assert [e.parsed_arguments for e in events if e.type.endswith("arguments.delta")][-1] == {
        "city": "Oslo",
        "days": 2,
    }


def test_an_answer_that_does_not_match_the_class_raises_from_the_events(
    facade: Any, server: LocalServer
) -> None:
    from chatlib import OutputValidationError

    server.enqueue(Reply.json({"name": "Paris", "population": "many"}))
    with pytest.raises(OutputValidationError) as info:
        typed_events(facade, server, response_format=CityFacts)
    assert info.value.field == "population"
    assert info.value.completion.text == '{"name": "Paris", "population": "many"}'
