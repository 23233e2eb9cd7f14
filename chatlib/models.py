"""The Chat Completions wire schema as attrs models, with the names of chat-gpt-lib-rs.

Every model:

- is a slotted attrs class built with keyword arguments
  (`ChatMessage(role="user", content="Hi")`);
- remembers which fields were set, so `to_dict()` sends only those (`temperature=0` is sent,
  an untouched `temperature` is not) and a parsed response serialises back to the server's JSON;
- keeps the fields a server sent that it does not declare in `.extra`
  (`chunk.choices[0].delta.extra["reasoning_content"]` for DeepSeek or vLLM reasoning models);
- accepts enum values it does not know (a new `finish_reason` or role parses and comes back
  as the same string).

No I/O and no wire rules live here: see `chatlib._serde`, `chatlib._request` and `chatlib._parse`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, Union

if sys.version_info >= (3, 11):  # typing has them: typing_extensions is not loaded
    from typing import Required, TypedDict
else:  # pragma: no cover
    from typing_extensions import Required, TypedDict

from chatlib._headers import EMPTY_HEADERS, Headers, request_id_of
from chatlib._metadata import RateLimits
from chatlib._model_base import EMPTY_EXTRA, Model, OpenEnum, local_field, model

__all__ = [
    "Annotation",
    "ChatCompletionAudio",
    "ChatCompletionChoice",
    "ChatCompletionChunkChoice",
    "ChatCompletionDeleted",
    "ChatCompletionDelta",
    "ChatCompletionList",
    "ChatCompletionMessageList",
    "ChatCompletionMessageCustomToolCall",
    "ChatCompletionMessageToolCall",
    "ChatCompletionParams",
    "ChatCompletionStoreMessage",
    "ChatCompletionTool",
    "ChatCompletionUsage",
    "ChatMessage",
    "ChatRole",
    "ChoiceDeltaFunctionCall",
    "ChoiceDeltaToolCall",
    "ChoiceLogprobs",
    "CompletionTokensDetails",
    "ContentPart",
    "CreateChatCompletionChunk",
    "CreateChatCompletionRequest",
    "CreateChatCompletionResponse",
    "CustomTool",
    "CustomToolCall",
    "CustomToolDefinition",
    "FileContentPart",
    "FileData",
    "FinishReason",
    "FunctionCall",
    "FunctionDefinition",
    "ImageURL",
    "ImageURLContentPart",
    "InputAudio",
    "InputAudioContentPart",
    "JSONSchemaFormat",
    "Message",
    "NamedToolChoice",
    "PromptTokensDetails",
    "RefusalContentPart",
    "ResponseFormat",
    "StreamOptions",
    "TextContentPart",
    "TokenLogprob",
    "ToolCall",
    "ToolChoiceFunction",
    "TopLogprob",
    "URLCitation",
]

_ = EMPTY_EXTRA, Mapping  # used in string annotations added by @model


class ChatRole(OpenEnum):
    """The author of a message. Unknown roles from a server parse as new members."""

    DEVELOPER = "developer"
    SYSTEM = "system"
    USER = "user"
    ASSISTANT = "assistant"
    TOOL = "tool"
    FUNCTION = "function"


class FinishReason(OpenEnum):
    """Why the model stopped. Unknown reasons from a server parse as new members."""

    STOP = "stop"
    LENGTH = "length"
    TOOL_CALLS = "tool_calls"
    CONTENT_FILTER = "content_filter"
    FUNCTION_CALL = "function_call"


# ---------------------------------------------------------------- content parts


@model
class TextContentPart(Model):
    """`{"type": "text", "text": ...}`."""

    type: str = "text"
    text: str
    prompt_cache_breakpoint: dict[str, Any] | None = None


@model
class ImageURL(Model):
    """An image by URL or `data:` URL; `detail`: `auto`, `low`, `high`, `original`."""

    url: str
    detail: str | None = None


@model
class ImageURLContentPart(Model):
    """`{"type": "image_url", "image_url": {...}}`."""

    type: str = "image_url"
    image_url: ImageURL
    prompt_cache_breakpoint: dict[str, Any] | None = None


@model
class InputAudio(Model):
    """Base64 audio; `format` is `wav` or `mp3`."""

    data: str
    format: str


@model
class InputAudioContentPart(Model):
    """`{"type": "input_audio", "input_audio": {...}}`."""

    type: str = "input_audio"
    input_audio: InputAudio
    prompt_cache_breakpoint: dict[str, Any] | None = None


@model
class FileData(Model):
    """A file given inline (`file_data`, base64) or by `file_id`."""

    file_data: str | None = None
    file_id: str | None = None
    filename: str | None = None


@model
class FileContentPart(Model):
    """`{"type": "file", "file": {...}}`."""

    type: str = "file"
    file: FileData
    prompt_cache_breakpoint: dict[str, Any] | None = None


@model
class RefusalContentPart(Model):
    """`{"type": "refusal", "refusal": ...}` (assistant messages only)."""

    type: str = "refusal"
    refusal: str


#: A content part: a model, or a plain dict (an unknown part type stays a dict).
ContentPart = Union[
    TextContentPart,
    ImageURLContentPart,
    InputAudioContentPart,
    FileContentPart,
    RefusalContentPart,
    dict[str, Any],
]

# ---------------------------------------------------------------- tool calls


@model
class FunctionCall(Model):
    """A function the model called: its `name` and its `arguments` as a JSON string.

    Attributes:
        parsed_arguments: Filled in by chatlib, never sent: the arguments converted to the
            Python types of the tool (an instance of a class tool, a dict of the function's
            arguments for a function tool) when the tool was given as a function or a class
            to `parse`, `create`, `stream` or `run_tools`; else `None`.
    """

    name: str
    arguments: str
    parsed_arguments: Any = local_field()


@model
class ChatCompletionMessageToolCall(Model):
    """A function tool call in an assistant message."""

    type: str = "function"
    id: str
    function: FunctionCall


@model
class CustomToolCall(Model):
    """The name and free-form input of a custom tool call."""

    name: str
    input: str


@model
class ChatCompletionMessageCustomToolCall(Model):
    """A custom tool call in an assistant message."""

    type: str = "custom"
    id: str
    custom: CustomToolCall


#: A tool call: function, custom, or an unknown kind kept as a dict.
ToolCall = Union[ChatCompletionMessageToolCall, ChatCompletionMessageCustomToolCall, dict[str, Any]]

# ---------------------------------------------------------------- message


@model
class ChatCompletionAudio(Model):
    """Audio the model produced (response), or a reference to it by `id` (request)."""

    id: str | None = None
    data: str | None = None
    expires_at: int | None = None
    transcript: str | None = None


@model
class URLCitation(Model):
    """Where a web search result is cited in the message text."""

    start_index: int
    end_index: int
    title: str
    url: str


@model
class Annotation(Model):
    """An annotation on an assistant message (`type` is `url_citation`)."""

    type: str
    url_citation: URLCitation | None = None


@model
class ChatMessage(Model):
    """A message of any role: what you send in `messages` and what the model answers.

    Build one directly, or with the role helpers:

    ```python
    ChatMessage(role=ChatRole.USER, content="Hi")
    ChatMessage.system("You are terse.")
    ChatMessage.tool('{"temp": 21}', tool_call_id="call_1")
    ```

    `content` is a string or a list of content parts (models or dicts).

    Attributes:
        parsed: Filled in by chatlib, never sent: the answer parsed into the
            `response_format` type you asked for (`chat.parse(..., response_format=T)`);
            else `None`.
    """

    role: ChatRole | str
    content: str | list[ContentPart] | None = None
    name: str | None = None
    refusal: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None
    function_call: FunctionCall | None = None
    audio: ChatCompletionAudio | None = None
    annotations: list[Annotation] | None = None
    parsed: Any = local_field()

    @classmethod
    def developer(cls, content: str | list[ContentPart], *, name: str | None = None) -> ChatMessage:
        """A developer message (instructions for reasoning models)."""
        return _with_name(cls(role=ChatRole.DEVELOPER, content=content), name)

    @classmethod
    def system(cls, content: str | list[ContentPart], *, name: str | None = None) -> ChatMessage:
        """A system message."""
        return _with_name(cls(role=ChatRole.SYSTEM, content=content), name)

    @classmethod
    def user(cls, content: str | list[ContentPart], *, name: str | None = None) -> ChatMessage:
        """A user message: text, or parts (text, image_url, input_audio, file)."""
        return _with_name(cls(role=ChatRole.USER, content=content), name)

    @classmethod
    def assistant(
        cls,
        content: str | list[ContentPart] | None = None,
        *,
        tool_calls: list[ToolCall] | None = None,
        name: str | None = None,
    ) -> ChatMessage:
        """An assistant message for the history (with `tool_calls` it may have no content)."""
        msg = cls(role=ChatRole.ASSISTANT, content=content)
        msg.tool_calls = tool_calls
        return _with_name(msg, name)

    @classmethod
    def tool(cls, content: str | list[ContentPart], *, tool_call_id: str) -> ChatMessage:
        """The result of a tool call, answering the call with id `tool_call_id`."""
        return cls(role=ChatRole.TOOL, content=content, tool_call_id=tool_call_id)

    @classmethod
    def function(cls, content: str | None, *, name: str) -> ChatMessage:
        """The result of a (deprecated) function call."""
        return cls(role=ChatRole.FUNCTION, content=content, name=name)

    @property
    def text(self) -> str:
        """The text: `content` if a string, the joined text parts if a list, else `""`."""
        content = self.content
        if isinstance(content, str):
            return content
        if not content:
            return ""
        pieces = []
        for part in content:
            if isinstance(part, TextContentPart):
                pieces.append(part.text)
            elif isinstance(part, dict) and part.get("type") == "text":
                pieces.append(str(part.get("text", "")))
        return "".join(pieces)


def _with_name(msg: ChatMessage, name: str | None) -> ChatMessage:
    if name is not None:
        msg.name = name
    return msg


#: What `messages` accepts: models, or dicts shaped like the wire format.
Message = Union[ChatMessage, Mapping[str, Any]]

# ---------------------------------------------------------------- request parts


@model
class FunctionDefinition(Model):
    """A function the model may call: JSON Schema `parameters`, optional `strict`."""

    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


@model
class ChatCompletionTool(Model):
    """`{"type": "function", "function": {...}}`."""

    type: str = "function"
    function: FunctionDefinition


@model
class CustomToolDefinition(Model):
    """A custom tool: free-form text input, optionally constrained by a `format` (grammar)."""

    name: str
    description: str | None = None
    format: dict[str, Any] | None = None


@model
class CustomTool(Model):
    """`{"type": "custom", "custom": {...}}`."""

    type: str = "custom"
    custom: CustomToolDefinition


@model
class ToolChoiceFunction(Model):
    """Names the function a `NamedToolChoice` forces."""

    name: str


@model
class NamedToolChoice(Model):
    """Force one function: `NamedToolChoice(function=ToolChoiceFunction(name="f"))`."""

    type: str = "function"
    function: ToolChoiceFunction


@model
class JSONSchemaFormat(Model):
    """Structured output: a named JSON Schema the answer must follow."""

    name: str
    description: str | None = None
    schema: dict[str, Any] | None = None
    strict: bool | None = None


@model
class ResponseFormat(Model):
    """`{"type": "text" | "json_object" | "json_schema", "json_schema": {...}}`."""

    type: str
    json_schema: JSONSchemaFormat | None = None


@model
class StreamOptions(Model):
    """Streaming options; `include_usage=True` adds a final usage-only chunk."""

    include_usage: bool | None = None
    include_obfuscation: bool | None = None


@model
class CreateChatCompletionRequest(Model):
    """The body of `POST /chat/completions`: every parameter of the wire schema.

    Only the fields you set are sent (falsy ones included: `temperature=0`, `seed=0`).
    `extra_body` keys are merged into the top level of the JSON body (vendor parameters such
    as vLLM's `top_k`); `extra_headers` and `extra_query` are added to the HTTP request.
    """

    model: str
    messages: list[Message]
    audio: dict[str, Any] | None = None
    frequency_penalty: float | None = None
    function_call: str | dict[str, Any] | None = None
    functions: list[FunctionDefinition | dict[str, Any]] | None = None
    logit_bias: dict[str, int] | None = None
    logprobs: bool | None = None
    max_completion_tokens: int | None = None
    max_tokens: int | None = None
    metadata: dict[str, str] | None = None
    modalities: list[str] | None = None
    moderation: dict[str, Any] | None = None
    n: int | None = None
    parallel_tool_calls: bool | None = None
    prediction: dict[str, Any] | None = None
    presence_penalty: float | None = None
    prompt_cache_key: str | None = None
    prompt_cache_options: dict[str, Any] | None = None
    prompt_cache_retention: str | None = None
    reasoning_effort: str | None = None
    response_format: ResponseFormat | dict[str, Any] | None = None
    safety_identifier: str | None = None
    seed: int | None = None
    service_tier: str | None = None
    stop: str | list[str] | None = None
    store: bool | None = None
    stream: bool | None = None
    stream_options: StreamOptions | dict[str, Any] | None = None
    temperature: float | None = None
    tool_choice: str | NamedToolChoice | dict[str, Any] | None = None
    tools: list[ChatCompletionTool | CustomTool | dict[str, Any]] | None = None
    top_logprobs: int | None = None
    top_p: float | None = None
    user: str | None = None
    verbosity: str | None = None
    web_search_options: dict[str, Any] | None = None
    extra_body: dict[str, Any] | None = None
    extra_headers: dict[str, str] | None = None
    extra_query: dict[str, str] | None = None

    def to_body(self) -> dict[str, Any]:
        """The exact JSON body chatlib sends for this request, as data.

        Unlike `to_dict()` (this model's fields, `extra_body`, `extra_headers` and
        `extra_query` included), this is what goes on the wire: the fields that were set,
        messages in their clean request form, `extra_body` merged into the top level, and
        nothing of `extra_headers`/`extra_query` (they are HTTP headers and query
        parameters, not body). It is the `body` of a line of a Batch API file.

        Raises:
            InvalidArgumentError: the request would be refused before sending; names the
                field.
        """
        import json

        from chatlib._request import encoded_body

        body: dict[str, Any] = json.loads(encoded_body(self, stream=self.stream is True))
        return body


# Functional form on purpose: the values are evaluated at runtime even under
# `from __future__ import annotations`, so `Required` shows in `__required_keys__`.
ChatCompletionParams = TypedDict(  # noqa: UP013
    "ChatCompletionParams",
    {
        "model": Required[str],
        "messages": Required[Sequence[Message]],
        "audio": dict[str, Any] | None,
        "frequency_penalty": float | None,
        "function_call": str | dict[str, Any] | None,
        "functions": list[FunctionDefinition | dict[str, Any]] | None,
        "logit_bias": dict[str, int] | None,
        "logprobs": bool | None,
        "max_completion_tokens": int | None,
        "max_tokens": int | None,
        "metadata": dict[str, str] | None,
        "modalities": list[Literal["text", "audio"] | str] | None,
        "moderation": dict[str, Any] | None,
        "n": int | None,
        "parallel_tool_calls": bool | None,
        "prediction": dict[str, Any] | None,
        "presence_penalty": float | None,
        "prompt_cache_key": str | None,
        "prompt_cache_options": dict[str, Any] | None,
        "prompt_cache_retention": Literal["in_memory", "24h"] | str | None,
        "reasoning_effort": Literal["none", "minimal", "low", "medium", "high", "xhigh", "max"]
        | str
        | None,
        # A class (attrs, dataclass, TypedDict, pydantic-like) too: its strict JSON schema is
        # sent and the answer parsed into it (`message.parsed`).
        "response_format": ResponseFormat | Mapping[str, Any] | type[Any] | None,
        "safety_identifier": str | None,
        "seed": int | None,
        "service_tier": Literal["auto", "default", "flex", "scale", "priority", "fast"]
        | str
        | None,
        "stop": str | list[str] | None,
        "store": bool | None,
        "stream_options": StreamOptions | dict[str, Any] | None,
        "temperature": float | None,
        "tool_choice": Literal["none", "auto", "required"]
        | NamedToolChoice
        | dict[str, Any]
        | None,
        # Typed functions and classes too (made into tools by `function_tool`).
        "tools": Sequence[
            ChatCompletionTool | CustomTool | Mapping[str, Any] | Callable[..., Any] | type[Any]
        ]
        | None,
        "top_logprobs": int | None,
        "top_p": float | None,
        "user": str | None,
        "verbosity": Literal["low", "medium", "high"] | str | None,
        "web_search_options": dict[str, Any] | None,
        "extra_body": dict[str, Any] | None,
        "extra_headers": dict[str, str] | None,
        "extra_query": dict[str, str] | None,
    },
    total=False,
)
ChatCompletionParams.__doc__ = """The keyword arguments of `create()`/`stream()`/`parse()`: the
fields of `CreateChatCompletionRequest` (`stream` is its own argument); `response_format` may
also be a class and `tools` may hold typed functions and classes."""


# ---------------------------------------------------------------- response


@model
class TopLogprob(Model):
    """One of the most likely tokens at a position."""

    token: str
    logprob: float
    bytes: list[int] | None = None


@model
class TokenLogprob(Model):
    """A generated token with its log probability and the top alternatives."""

    token: str
    logprob: float
    bytes: list[int] | None = None
    top_logprobs: list[TopLogprob] | None = None


@model
class ChoiceLogprobs(Model):
    """Log probabilities of a choice's content and refusal tokens."""

    content: list[TokenLogprob] | None = None
    refusal: list[TokenLogprob] | None = None


@model
class PromptTokensDetails(Model):
    """Breakdown of prompt tokens."""

    cached_tokens: int | None = None
    audio_tokens: int | None = None
    image_tokens: int | None = None
    text_tokens: int | None = None
    cache_write_tokens: int | None = None


@model
class CompletionTokensDetails(Model):
    """Breakdown of completion tokens."""

    reasoning_tokens: int | None = None
    audio_tokens: int | None = None
    accepted_prediction_tokens: int | None = None
    rejected_prediction_tokens: int | None = None
    text_tokens: int | None = None


@model
class ChatCompletionUsage(Model):
    """Token counts of a completion."""

    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None
    prompt_tokens_details: PromptTokensDetails | None = None
    completion_tokens_details: CompletionTokensDetails | None = None


@model
class ChatCompletionChoice(Model):
    """One answer in a `CreateChatCompletionResponse`."""

    index: int = 0
    message: ChatMessage | None = None
    finish_reason: FinishReason | None = None
    logprobs: ChoiceLogprobs | None = None


@model
class CreateChatCompletionResponse(Model):
    """A complete (non-streamed) chat completion.

    Besides its JSON fields, a completion returned by `create()` (or read back with
    `chat.stored`) knows the HTTP response it came in: `request_id`, `headers` and
    `rate_limits`. They are not wire data: `to_dict()` and `==` ignore them; a pickle keeps them.
    """

    id: str | None = None
    object: str | None = None
    created: int | None = None
    model: str | None = None
    choices: list[ChatCompletionChoice]
    usage: ChatCompletionUsage | None = None
    system_fingerprint: str | None = None
    service_tier: str | None = None
    metadata: dict[str, str] | None = None
    moderation: dict[str, Any] | None = None
    _headers: Headers | None = local_field()

    @property
    def text(self) -> str:
        """The text of the first choice, or `""` when there is none."""
        if not self.choices or self.choices[0].message is None:
            return ""
        return self.choices[0].message.text

    @property
    def parsed(self) -> Any:
        """The parsed answer of the first choice (`choices[0].message.parsed`), or `None`."""
        if not self.choices or self.choices[0].message is None:
            return None
        return self.choices[0].message.parsed

    @property
    def headers(self) -> Headers:
        """The HTTP response headers, read-only and case-insensitive (empty for a completion
        that did not come from a response: built by hand, merged from a stream's chunks
        before it started, or an item of a list)."""
        headers = self._headers
        return EMPTY_HEADERS if headers is None else headers

    @property
    def request_id(self) -> str | None:
        """The server's `x-request-id` for the response this completion came in."""
        headers = self._headers
        return None if headers is None else request_id_of(headers)

    @property
    def rate_limits(self) -> RateLimits:
        """The `x-ratelimit-*` figures of the response this completion came in."""
        headers = self._headers
        return RateLimits() if headers is None else RateLimits.from_headers(headers)


# ---------------------------------------------------------------- streaming


@model
class ChoiceDeltaFunctionCall(Model):
    """A fragment of a function call: `arguments` arrive in pieces to be concatenated."""

    name: str | None = None
    arguments: str | None = None


@model
class ChoiceDeltaToolCall(Model):
    """A fragment of a tool call, addressed by `index`."""

    index: int = 0
    id: str | None = None
    type: str | None = None
    function: ChoiceDeltaFunctionCall | None = None
    custom: dict[str, Any] | None = None


@model
class ChatCompletionDelta(Model):
    """What one chunk adds to a choice: a piece of content, a role, tool call fragments."""

    role: ChatRole | None = None
    content: str | None = None
    refusal: str | None = None
    tool_calls: list[ChoiceDeltaToolCall] | None = None
    function_call: ChoiceDeltaFunctionCall | None = None
    audio: ChatCompletionAudio | None = None


@model
class ChatCompletionChunkChoice(Model):
    """One choice within a streamed chunk."""

    index: int = 0
    delta: ChatCompletionDelta | None = None
    finish_reason: FinishReason | None = None
    logprobs: ChoiceLogprobs | None = None


@model
class CreateChatCompletionChunk(Model):
    """One streamed chunk. `choices` may be empty (usage-only last chunk, Azure's first chunk)."""

    id: str | None = None
    object: str | None = None
    created: int | None = None
    model: str | None = None
    choices: list[ChatCompletionChunkChoice]
    usage: ChatCompletionUsage | None = None
    system_fingerprint: str | None = None
    service_tier: str | None = None
    obfuscation: str | None = None
    moderation: dict[str, Any] | None = None

    @property
    def text(self) -> str:
        """The content this chunk adds to the first choice, or `""` (safe on any chunk)."""
        for choice in self.choices:
            if choice.index == 0:
                delta = choice.delta
                return (delta.content or "") if delta is not None else ""
        return ""


# ---------------------------------------------------------------- stored completions


@model
class ChatCompletionStoreMessage(ChatMessage):
    """A message of a stored completion (`chat.stored.messages(...)`): a `ChatMessage` with
    its `id` and, when it was sent as parts, its `content_parts`."""

    id: str
    content_parts: list[ContentPart] | None = None


@model
class ChatCompletionList(Model):
    """One page of stored completions (`GET /chat/completions`); `chat.stored.list(...)`
    reads the pages for you."""

    object: str = "list"
    data: list[CreateChatCompletionResponse]
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool = False


@model
class ChatCompletionMessageList(Model):
    """One page of the messages of a stored completion
    (`GET /chat/completions/{id}/messages`); `chat.stored.messages(...)` reads the pages."""

    object: str = "list"
    data: list[ChatCompletionStoreMessage]
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool = False


@model
class ChatCompletionDeleted(Model):
    """The confirmation of `chat.stored.delete(id)`."""

    object: str = "chat.completion.deleted"
    id: str
    deleted: bool
