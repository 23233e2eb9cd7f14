"""The official ``openai`` package as an oracle, over a wide matrix: what a user porting code
from it would notice. test_oracle.py holds the first cases; this module widens each area.

- Requests: the JSON body, the query string and the headers that matter, for the arguments of
  the whole request schema (content parts, roles, tools, every optional parameter, `None`s,
  `extra_*`), with `organization`/`project` given as arguments or read from the environment.
- Retries: which statuses, headers and transport failures each client retries, counted on the
  server; a stream is never retried once its headers are in.
- Errors: the exception class (by name), `status_code`, `request_id`, `code`, `param`,
  `type`, `body`, and the server's message, for every body shape a server sends.
- Responses: `to_dict()` and attribute access for unusual but valid answers.

chatlib runs through the `facade` fixture (SyncChat and AsyncChat); the oracle is
``openai.OpenAI``. The deliberate differences are listed in docs/guide.md ("Differences worth
knowing") and asserted here as differences, so a change on either side shows.
"""

from __future__ import annotations

import copy
import email.utils
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from test_oracle import _without_null_content_beside_tool_calls

from chatlib import errors
from chatlib.testing import Disconnect, ErrorReply, InStreamError, LocalServer, RawReply

openai = pytest.importorskip("openai")

USER = {"role": "user", "content": "Hi"}
CALL = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}


def _request(**kwargs: Any) -> dict[str, Any]:
    return {"model": "m", "messages": [USER], **kwargs}


NULLABLE = (
    "n",
    "seed",
    "metadata",
    "store",
    "user",
    "tools",
    "tool_choice",
    "response_format",
    "logit_bias",
    "audio",
    "modalities",
    "prediction",
    "reasoning_effort",
    "verbosity",
    "web_search_options",
    "service_tier",
    "parallel_tool_calls",
    "max_tokens",
    "top_logprobs",
    "stop",
)
REQUESTS: dict[str, dict[str, Any]] = {
    "image_url parts with detail": _request(
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Compare"},
                    {
                        "type": "image_url",
                        "image_url": {"url": "https://x/a.png", "detail": "high"},
                    },
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}},
                ],
            }
        ]
    ),
    "input_audio part": _request(
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}
                ],
            }
        ]
    ),
    "file parts": _request(
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "file", "file": {"file_id": "file-1"}},
                    {
                        "type": "file",
                        "file": {
                            "file_data": "data:application/pdf;base64,AA",
                            "filename": "a.pdf",
                        },
                    },
                ],
            }
        ]
    ),
    "names and the developer role": _request(
        messages=[
            {"role": "developer", "content": [{"type": "text", "text": "Be brief."}], "name": "d"},
            {"role": "system", "content": "s", "name": "sys"},
            {"role": "user", "content": "u", "name": "bob"},
        ]
    ),
    "assistant and tool messages": _request(
        messages=[
            USER,
            {"role": "assistant", "content": None, "name": "a", "tool_calls": [CALL]},
            {"role": "tool", "tool_call_id": "call_1", "content": [{"type": "text", "text": "r"}]},
            {"role": "assistant", "content": "x", "refusal": None},
            {"role": "assistant", "content": [{"type": "refusal", "refusal": "no"}]},
            {"role": "assistant", "audio": {"id": "audio_1"}},
            {"role": "function", "name": "f", "content": "legacy"},
        ]
    ),
    "unicode": _request(
        messages=[{"role": "user", "content": "h\u00e9 \u2028 \U0001f389 </script>"}]
    ),
    "response_format json_schema": _request(
        response_format={
            "type": "json_schema",
            "json_schema": {
                "name": "a",
                "description": "d",
                "schema": {"type": "object", "properties": {}, "additionalProperties": False},
                "strict": True,
            },
        }
    ),
    "response_format json_object": _request(response_format={"type": "json_object"}),
    "tools strict and loose": _request(
        tools=[
            {"type": "function", "function": {"name": "f", "strict": False}},
            {"type": "function", "function": {"name": "g", "parameters": {}, "description": ""}},
            {"type": "custom", "custom": {"name": "c", "format": {"type": "text"}}},
        ]
    ),
    "tool_choice none": _request(tool_choice="none"),
    "tool_choice required": _request(tool_choice="required"),
    "tool_choice allowed_tools": _request(
        tool_choice={
            "type": "allowed_tools",
            "allowed_tools": {
                "mode": "auto",
                "tools": [{"type": "function", "function": {"name": "f"}}],
            },
        }
    ),
    "tool_choice custom": _request(tool_choice={"type": "custom", "custom": {"name": "c"}}),
    "legacy functions": _request(
        functions=[{"name": "f", "parameters": {}}], function_call={"name": "f"}
    ),
    "logit_bias with int keys": _request(logit_bias={50256: -100, 11: 5}),
    "stop as a string": _request(stop="END"),
    "n seed metadata store user": _request(
        n=2,
        seed=7,
        metadata={"a": "b"},
        store=True,
        user="u",
        parallel_tool_calls=True,
        safety_identifier="s",
        prompt_cache_key="p",
    ),
    "audio and modalities": _request(
        audio={"voice": "alloy", "format": "wav"}, modalities=["text", "audio"]
    ),
    "prediction": _request(
        prediction={"type": "content", "content": [{"type": "text", "text": "a"}]}
    ),
    "reasoning_effort and verbosity": _request(reasoning_effort="minimal", verbosity="low"),
    "web_search_options": _request(
        web_search_options={
            "search_context_size": "low",
            "user_location": {"type": "approximate", "approximate": {"city": "Paris"}},
        }
    ),
    "service_tier": _request(service_tier="flex"),
    "limits and sampling": _request(
        max_tokens=5, max_completion_tokens=6, temperature=2, top_p=0, frequency_penalty=0.1 + 0.2
    ),
    "None for optional parameters": _request(**dict.fromkeys(NULLABLE)),
    "extra_headers extra_query extra_body": _request(
        extra_headers={"X-Trace": "1", "OpenAI-Organization": "org-call"},
        extra_query={"q": "1", "n": 2},
        extra_body={"temperature": 0.5, "nested": {"a": [1]}},
    ),
    "extra_body overrides a parameter": _request(
        temperature=1,
        extra_body={"temperature": 0.5, "messages": [{"role": "user", "content": "o"}]},
    ),
}
STREAM_OPTIONS = {"include_usage": False, "include_obfuscation": False}


@pytest.fixture
def official(server: LocalServer) -> Iterator[Any]:
    with openai.OpenAI(base_url=server.base_url, api_key="sk-oracle", max_retries=0) as client:
        yield client


def _sent(server: LocalServer, call: Any) -> Any:
    """The request `call` made (its error, if any, swallowed: the request is what counts)."""
    before = len(server.requests)
    try:
        call()
    except Exception:
        pass
    assert len(server.requests) == before + 1
    return server.requests[-1]


@pytest.mark.parametrize("kwargs", list(REQUESTS.values()), ids=list(REQUESTS))
@pytest.mark.parametrize("stream", [False, True], ids=["create", "stream"])
def test_the_request_matches_the_official_sdks(
    facade: Any, server: LocalServer, official: Any, kwargs: dict[str, Any], stream: bool
) -> None:
    ours = facade.client(base_url=server.base_url, api_key="sk-oracle", max_retries=0)
    kwargs = copy.deepcopy(kwargs)
    if stream:
        kwargs["stream_options"] = STREAM_OPTIONS
        theirs = _sent(
            server, lambda: list(official.chat.completions.create(**kwargs, stream=True))
        )
        mine = _sent(server, lambda: ours.stream_all(**kwargs))
    else:
        theirs = _sent(server, lambda: official.chat.completions.create(**kwargs))
        mine = _sent(server, lambda: ours.create(**kwargs))
    assert mine.json() == _without_null_content_beside_tool_calls(theirs.json())
    assert (mine.method, mine.path, mine.query) == (theirs.method, theirs.path, theirs.query)
    for name in ("authorization", "content-type", "openai-organization", "x-trace"):
        assert mine.headers.get(name) == theirs.headers.get(name), name
    # A documented difference: chatlib asks a stream for what it wants (the SDK always sends
    # `Accept: application/json`, even for a stream).
    assert theirs.headers["accept"] == "application/json"
    assert mine.headers["accept"] == ("text/event-stream" if stream else "application/json")


IDENTITIES: dict[str, tuple[dict[str, str], dict[str, str]]] = {
    "environment": ({"OPENAI_ORG_ID": "org-env", "OPENAI_PROJECT_ID": "proj-env"}, {}),
    "arguments": ({}, {"organization": "org-arg", "project": "proj-arg"}),
    "arguments win": (
        {"OPENAI_ORG_ID": "org-env", "OPENAI_PROJECT_ID": "proj-env"},
        {"organization": "org-arg"},
    ),
    "empty arguments turn the environment off": (
        {"OPENAI_ORG_ID": "org-env", "OPENAI_PROJECT_ID": "proj-env"},
        {"organization": "", "project": ""},
    ),
    "neither": ({}, {}),
}


@pytest.mark.parametrize(("env", "kwargs"), list(IDENTITIES.values()), ids=list(IDENTITIES))
def test_organization_and_project_headers_match_the_official_sdks(
    facade: Any,
    server: LocalServer,
    monkeypatch: pytest.MonkeyPatch,
    env: dict[str, str],
    kwargs: dict[str, str],
) -> None:
    monkeypatch.delenv("OPENAI_ORG_ID", raising=False)
    monkeypatch.delenv("OPENAI_PROJECT_ID", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with openai.OpenAI(base_url=server.base_url, api_key="k", max_retries=0, **kwargs) as sdk:
        theirs = _sent(server, lambda: sdk.chat.completions.create(**_request()))
    ours = facade.client(base_url=server.base_url, api_key="k", max_retries=0, **kwargs)
    mine = _sent(server, lambda: ours.create(**_request()))
    for name in ("openai-organization", "openai-project"):
        # The SDK sends an empty header for `""`; chatlib sends none: the same to a server.
        assert mine.headers.get(name) == (theirs.headers.get(name) or None), name


# ------------------------------------------------------------------------------------ retries

FAST = {"retry-after-ms": "5"}
RETRIES: dict[str, list[Any]] = {
    **{str(status): [ErrorReply(status, headers=FAST)] * 3 for status in (400, 401, 403, 404)},
    **{str(status): [ErrorReply(status, headers=FAST)] * 3 for status in (408, 409, 422, 429)},
    **{str(status): [ErrorReply(status, headers=FAST)] * 3 for status in (500, 502, 503, 504)},
    "599 as an html page": [
        RawReply(599, body=b"<html>down</html>", content_type="text/html", headers=FAST)
    ]
    * 3,
    "x-should-retry true on a 400": [ErrorReply(400, headers={**FAST, "x-should-retry": "true"})]
    * 3,
    "x-should-retry false on a 503": [ErrorReply(503, headers={**FAST, "x-should-retry": "false"})]
    * 3,
    "x-should-retry TRUE is not true": [ErrorReply(400, headers={**FAST, "x-should-retry": "TRUE"})]
    * 3,
    "then a success": [ErrorReply(503, headers=FAST), ErrorReply(429, headers=FAST)],
}


def _attempts(server: LocalServer, actions: list[Any], call: Any) -> tuple[int, str]:
    """How many requests `call` made against `actions`, and how it ended."""
    server.clear()
    server.enqueue(*actions)
    try:
        call()
        outcome = "ok"
    except Exception as exc:
        outcome = type(exc).__name__
    return len(server.requests), outcome


def _timed_retry(
    facade: Any, server: LocalServer, actions: list[Any]
) -> tuple[tuple[int, str], float, tuple[int, str], float]:
    """Each client (`max_retries=1`) against `actions`: chatlib's attempts and seconds, then
    the SDK's."""
    ours = facade.client(base_url=server.base_url, max_retries=1)
    with openai.OpenAI(base_url=server.base_url, api_key="k", max_retries=1) as sdk:
        start = time.monotonic()
        theirs = _attempts(server, actions, lambda: sdk.chat.completions.create(**_request()))
        their_wait = time.monotonic() - start
    start = time.monotonic()
    mine = _attempts(server, actions, lambda: ours.create(**_request()))
    return mine, time.monotonic() - start, theirs, their_wait


def _same_kind(mine: str, theirs: str) -> bool:
    # chatlib's own subclasses (documented): a 408 is a RequestTimeoutError, the SDK's a bare
    # APIStatusError.
    return mine == theirs or (mine, theirs) == ("RequestTimeoutError", "APIStatusError")


@pytest.mark.parametrize("actions", list(RETRIES.values()), ids=list(RETRIES))
@pytest.mark.parametrize("max_retries", [0, 2])
def test_the_same_failures_are_retried_as_many_times(
    facade: Any, server: LocalServer, actions: list[Any], max_retries: int
) -> None:
    ours = facade.client(base_url=server.base_url, max_retries=max_retries)
    with openai.OpenAI(base_url=server.base_url, api_key="k", max_retries=max_retries) as sdk:
        theirs = _attempts(server, actions, lambda: sdk.chat.completions.create(**_request()))
    mine = _attempts(server, actions, lambda: ours.create(**_request()))
    assert mine[0] == theirs[0]
    assert _same_kind(mine[1], theirs[1]), (mine, theirs)


def test_insufficient_quota_is_the_documented_exception(facade: Any, server: LocalServer) -> None:
    """The SDK retries a 429 `insufficient_quota` like any 429; chatlib raises at once (paying,
    not waiting, fixes it), an `InsufficientQuotaError` that is still a `RateLimitError`."""
    reply = ErrorReply(429, code="insufficient_quota", type="insufficient_quota", headers=FAST)
    ours = facade.client(base_url=server.base_url, max_retries=2)
    with openai.OpenAI(base_url=server.base_url, api_key="k", max_retries=2) as sdk:
        theirs = _attempts(server, [reply] * 3, lambda: sdk.chat.completions.create(**_request()))
    mine = _attempts(server, [reply] * 3, lambda: ours.create(**_request()))
    assert theirs == (3, "RateLimitError")
    assert mine == (1, "InsufficientQuotaError")
    assert issubclass(errors.InsufficientQuotaError, errors.RateLimitError)


def _http_date(seconds_ahead: float) -> str:
    return email.utils.formatdate(time.time() + seconds_ahead, usegmt=True)


WAITS: dict[str, tuple[dict[str, str], float]] = {
    "retry-after-ms": ({"retry-after-ms": "300"}, 0.3),
    "Retry-After seconds": ({"retry-after": "0.3"}, 0.3),
    "retry-after-ms before Retry-After": ({"retry-after-ms": "300", "retry-after": "30"}, 0.3),
}


@pytest.mark.parametrize(("headers", "wait"), list(WAITS.values()), ids=list(WAITS))
def test_a_server_given_delay_is_waited_like_the_official_sdk(
    facade: Any, server: LocalServer, headers: dict[str, str], wait: float
) -> None:
    actions = [ErrorReply(503, headers=headers)]
    mine, my_wait, theirs, their_wait = _timed_retry(facade, server, actions)
    assert mine == theirs == (2, "ok")
    assert their_wait >= wait
    assert wait <= my_wait < 5  # the given delay, not the 0.5 s backoff nor the 30 s


def test_a_retry_after_of_zero_retries_at_once_where_the_sdk_backs_off(
    facade: Any, server: LocalServer
) -> None:
    """A documented difference: the SDK takes only a delay above 0 from the server, so
    `Retry-After: 0` gets its 0.5 s backoff; chatlib retries at once, as asked."""
    actions = [ErrorReply(503, headers={"retry-after": "0"})]
    mine, my_wait, theirs, their_wait = _timed_retry(facade, server, actions)
    assert mine == theirs == (2, "ok")
    assert their_wait >= 0.375  # the first backoff, jittered
    assert my_wait < their_wait


def test_an_http_date_retry_after_is_honoured_like_the_official_sdk(
    facade: Any, server: LocalServer
) -> None:
    # An HTTP date has a resolution of one second: it asks for a wait between 0 and 2 s.
    actions = [ErrorReply(503, headers={"retry-after": _http_date(1)})]
    ours = facade.client(base_url=server.base_url, max_retries=1)
    with openai.OpenAI(base_url=server.base_url, api_key="k", max_retries=1) as sdk:
        theirs = _attempts(server, actions, lambda: sdk.chat.completions.create(**_request()))
    start = time.monotonic()
    actions = [ErrorReply(503, headers={"retry-after": _http_date(1)})]
    mine = _attempts(server, actions, lambda: ours.create(**_request()))
    assert mine == theirs == (2, "ok")
    assert time.monotonic() - start < 5


STREAM_FAILURES: dict[str, tuple[list[Any], int]] = {
    # (actions, requests): before the headers a stream is retried; after, never.
    "reset before the headers": ([Disconnect("before_headers")], 2),
    "a 503 before the headers": ([ErrorReply(503, headers=FAST)], 2),
    "cut after the first chunks": ([Disconnect("mid_stream")] * 3, 1),
    "an error event after the first chunk": (
        [InStreamError({"message": "boom", "type": "server_error"})] * 3,
        1,
    ),
}


@pytest.mark.parametrize(
    ("actions", "requests"), list(STREAM_FAILURES.values()), ids=list(STREAM_FAILURES)
)
def test_a_stream_is_retried_only_before_its_headers_like_the_official_sdk(
    facade: Any, server: LocalServer, actions: list[Any], requests: int
) -> None:
    ours = facade.client(base_url=server.base_url, max_retries=2)
    with openai.OpenAI(base_url=server.base_url, api_key="k", max_retries=2) as sdk:
        theirs = _attempts(
            server, actions, lambda: list(sdk.chat.completions.create(**_request(), stream=True))
        )
    mine = _attempts(server, actions, lambda: ours.stream_all(**_request()))
    assert mine[0] == theirs[0] == requests
    if requests == 2:
        assert mine[1] == theirs[1] == "ok"
    else:
        # Both raise an APIError: the SDK its base class for an error event, chatlib the
        # class of the status the event names (documented).
        assert issubclass(getattr(openai, theirs[1]), openai.APIError)
        assert issubclass(getattr(errors, mine[1]), errors.APIError)


# ------------------------------------------------------------------------------------- errors

RID = {"x-request-id": "req_matrix"}


def _raw(status: int, body: Any, content_type: str = "application/json") -> RawReply:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return RawReply(status, body=data, content_type=content_type, headers=RID)


ERROR_BODIES: dict[str, RawReply] = {
    "openai error object": _raw(
        400,
        {
            "error": {
                "message": "bad",
                "type": "invalid_request_error",
                "param": "messages",
                "code": "c",
            }
        },
    ),
    "error object with extra and nulls": _raw(
        400, {"error": {"message": "bad", "type": "t", "param": None, "code": None, "extra": 1}}
    ),
    "error object with an int code": _raw(400, {"error": {"message": "bad", "code": 400}}),
    "error object without a message": _raw(400, {"error": {"type": "t"}}),
    "error as a string": _raw(400, {"error": "just a string"}),
    "detail string": _raw(422, {"detail": "Not Found"}),
    "detail list": _raw(422, {"detail": [{"loc": ["body", "model"], "msg": "field required"}]}),
    "vllm top-level error": _raw(
        400, {"object": "error", "message": "m bad", "type": "BadRequestError", "code": 400}
    ),
    "top-level message": _raw(500, {"message": "top msg"}),
    "a json list": _raw(400, [{"error": {"message": "gemini style", "code": 400}}]),
    "json null": _raw(400, b"null"),
    "plain text": _raw(502, b"Bad Gateway", "text/plain"),
    "html page": _raw(503, b"<html><body>down</body></html>", "text/html"),
    "empty 500": _raw(500, b""),
    "empty 404": _raw(404, b""),
    "not utf-8": _raw(400, b"\xff\xfe bad \x80", "text/plain"),
    "a 405 error object": _raw(405, {"error": {"message": "nope"}}),
    "a 401 error object": _raw(401, {"error": {"message": "key", "code": "invalid_api_key"}}),
    "a 403 text": _raw(403, b"forbidden", "text/plain"),
    "a 408 error object": _raw(408, {"error": {"message": "slow"}}),
    "a 418 text": _raw(418, b"teapot", "text/plain"),
}


@pytest.mark.parametrize("reply", list(ERROR_BODIES.values()), ids=list(ERROR_BODIES))
@pytest.mark.parametrize("stream", [False, True], ids=["create", "stream"])
def test_an_error_carries_what_the_official_sdks_carries(
    facade: Any, server: LocalServer, official: Any, reply: RawReply, stream: bool
) -> None:
    ours = facade.client(base_url=server.base_url, max_retries=0)
    server.enqueue(reply, reply)
    with pytest.raises(openai.APIStatusError) as caught_theirs:
        if stream:
            list(official.chat.completions.create(**_request(), stream=True))
        else:
            official.chat.completions.create(**_request())
    with pytest.raises(errors.APIStatusError) as caught_mine:
        ours.stream_all(**_request()) if stream else ours.create(**_request())
    theirs, mine = caught_theirs.value, caught_mine.value
    assert _same_kind(type(mine).__name__, type(theirs).__name__)
    assert mine.status_code == theirs.status_code
    assert mine.request_id == theirs.request_id == "req_matrix"
    assert (mine.code, mine.param, mine.type) == (theirs.code, theirs.param, theirs.type)
    assert mine.body == theirs.body
    # chatlib's message is worded its own way (status phrase, type, code, request id) but
    # holds what the SDK's says: the status and the server's message.
    shown = str(mine)
    assert str(theirs.status_code) in shown
    _, _, server_text = theirs.message.partition(" - ")
    assert server_text in shown


# ---------------------------------------------------------------------------------- responses

BASE = {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "m"}
ANSWER = {"role": "assistant", "content": "hi"}


def _completion(*choices: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {**BASE, "choices": list(choices), **fields}


def _choice(message: dict[str, Any] = ANSWER, **fields: Any) -> dict[str, Any]:
    return {"index": 0, "message": message, "finish_reason": "stop", **fields}


RESPONSES: dict[str, dict[str, Any]] = {
    "no choices": _completion(),
    "nulls where the schema allows them": _completion(
        _choice(
            {
                "role": "assistant",
                "content": None,
                "refusal": None,
                "tool_calls": None,
                "function_call": None,
                "audio": None,
                "annotations": None,
            },
            finish_reason=None,
            logprobs=None,
        ),
        usage=None,
        system_fingerprint=None,
        service_tier=None,
    ),
    "fields the schema does not have": _completion(
        _choice({**ANSWER, "reasoning_content": "r", "provider": {"a": [1]}}, stop_reason=7),
        x_groq={"id": "g"},
        prompt_filter_results=[{"prompt_index": 0}],
    ),
    "usage details with nulls and extras": _completion(
        usage={
            "prompt_tokens": 1,
            "completion_tokens": 2,
            "total_tokens": 3,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": None},
            "completion_tokens_details": {"reasoning_tokens": 5, "audio_tokens": 0},
            "queue_time": 0.1,
        }
    ),
    "unknown finish_reason and role": _completion(
        _choice({"role": "model", "content": "x"}, finish_reason="eos")
    ),
    "logprobs with null bytes": _completion(
        _choice(
            logprobs={
                "content": [
                    {
                        "token": "hi",
                        "logprob": -0.1,
                        "bytes": [104, 105],
                        "top_logprobs": [{"token": "hi", "logprob": -0.1, "bytes": None}],
                    }
                ],
                "refusal": None,
            }
        )
    ),
    "annotations and audio": _completion(
        _choice(
            {
                "role": "assistant",
                "content": None,
                "annotations": [
                    {
                        "type": "url_citation",
                        "url_citation": {
                            "start_index": 0,
                            "end_index": 1,
                            "url": "u",
                            "title": "t",
                        },
                    }
                ],
                "audio": {"id": "a", "data": "AA", "expires_at": 1, "transcript": "t"},
            }
        )
    ),
    "function and custom tool calls": _completion(
        _choice(
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {**CALL, "index": 0},
                    {"id": "c2", "type": "custom", "custom": {"name": "g", "input": "raw"}},
                ],
            },
            finish_reason="tool_calls",
        )
    ),
}


DECLARED = {
    "completion": {*BASE, "choices", "usage", "system_fingerprint", "service_tier"},
    "choice": {"index", "message", "finish_reason", "logprobs"},
    "message": {
        "role",
        "content",
        "refusal",
        "tool_calls",
        "audio",
        "annotations",
        "function_call",
    },
}


def _view(value: Any) -> Any:
    """Models of either SDK as plain data, for attribute-by-attribute comparison."""
    if isinstance(value, list):
        return [_view(item) for item in value]
    if hasattr(value, "to_dict"):
        return value.to_dict()
    return getattr(value, "value", value)  # an enum member, as its string


@pytest.mark.parametrize("body", list(RESPONSES.values()), ids=list(RESPONSES))
def test_an_unusual_answer_reads_as_in_the_official_sdk(
    facade: Any, server: LocalServer, official: Any, body: dict[str, Any]
) -> None:
    raw = RawReply(body=json.dumps(body).encode())
    server.enqueue(raw, raw)
    theirs = official.chat.completions.create(**_request())
    mine = facade.client(base_url=server.base_url).create(**_request())
    assert mine.to_dict() == theirs.to_dict() == body
    for name in ("id", "object", "created", "model", "usage", "system_fingerprint", "service_tier"):
        assert _view(getattr(mine, name)) == _view(getattr(theirs, name)), name
    assert len(mine.choices) == len(theirs.choices)
    for my_choice, their_choice in zip(mine.choices, theirs.choices, strict=True):
        assert my_choice.index == their_choice.index
        assert _view(my_choice.finish_reason) == their_choice.finish_reason
        assert _view(my_choice.logprobs) == _view(their_choice.logprobs)
        for name in ("role", "content", "refusal", "tool_calls", "audio", "annotations"):
            mine_value = _view(getattr(my_choice.message, name))
            assert mine_value == _view(getattr(their_choice.message, name)), name
    # Fields the schema does not declare: attributes in the SDK (pydantic's extra="allow"),
    # `.extra` in chatlib (documented), at every level.
    for key in body.keys() - DECLARED["completion"]:
        assert mine.extra[key] == getattr(theirs, key) == body[key]
        with pytest.raises(AttributeError):
            getattr(mine, key)
    pairs = zip(mine.choices, theirs.choices, body["choices"], strict=True)
    for my_choice, their_choice, sent in pairs:
        for key in sent.keys() - DECLARED["choice"]:
            assert my_choice.extra[key] == getattr(their_choice, key) == sent[key]
        for key in sent["message"].keys() - DECLARED["message"]:
            assert my_choice.message.extra[key] == getattr(their_choice.message, key)


def test_a_choice_without_an_index_reads_as_index_0(
    facade: Any, server: LocalServer, official: Any
) -> None:
    """The documented difference: the SDK reads a missing `index` as `None` (its own type says
    `int`); chatlib as 0, its default, which `to_dict()` then shows."""
    body = {"choices": [{"message": {"content": "x"}}]}
    raw = RawReply(body=json.dumps(body).encode())
    server.enqueue(raw, raw)
    theirs = official.chat.completions.create(**_request())
    mine = facade.client(base_url=server.base_url).create(**_request())
    assert theirs.choices[0].index is None
    assert mine.choices[0].index == 0
    assert theirs.to_dict() == body
    assert mine.to_dict() == {"choices": [{"index": 0, "message": {"content": "x"}}]}
    assert mine.choices[0].message.content == theirs.choices[0].message.content == "x"
