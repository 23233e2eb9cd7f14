"""One call, planned before any I/O: its HTTP request, whether it streams, and its flows.

`plan_call` gathers what `create`/`stream`/`parse` were given (a request object or keyword
arguments, messages of any accepted kind), validates it and builds the request;
`plan_request` wraps a request built elsewhere (the stored-completion calls). The `Call`
either returns gives the flow each facade drives, and the state of the stream it opens.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

import attrs

from chatlib._auth import ProvidedCredential
from chatlib._config import ClientConfig, Timeout, TimeoutLike
from chatlib._endpoint import OPENAI, Endpoint
from chatlib._flow import Finish, Flow, keep_open, parse_body, request_flow
from chatlib._headers import Headers, Secrets, request_id_of
from chatlib._parse import ChunkParser, parse_completion
from chatlib._request import HttpRequest, build_request
from chatlib._retry import retry_policy
from chatlib._stream import StreamState
from chatlib._validate import check_param_names
from chatlib.errors import InvalidArgumentError
from chatlib.models import ChatMessage, CreateChatCompletionRequest, CreateChatCompletionResponse

if TYPE_CHECKING:  # typed answers load on first use: a plain create() never needs them
    from chatlib._structured import OutputPlan

__all__ = ["Call", "plan_call", "plan_request"]

_T = TypeVar("_T")


@attrs.define
class Call:
    """A call ready to run: its request, whether it streams, and the settings it runs under.

    One per call: its flow fixes the total deadline, which the stream it opens then keeps to.
    What the events of the stream it opens parse (`stream.events()`) follows `request` (kept
    for streamed calls only) and `outputs`. `credential` is the key provider it calls before
    each attempt (if any); `secrets` gathers every credential it sent, to be redacted from
    the errors it raises.
    """

    http_request: HttpRequest
    stream: bool
    config: ClientConfig
    deadline: float | None = None
    request: CreateChatCompletionRequest | None = None
    outputs: OutputPlan | None = None  # how to parse a typed answer (`parse`, typed tools)
    credential: ProvidedCredential | None = None
    secrets: Secrets = attrs.field(factory=Secrets)

    def completion_flow(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        rand: Callable[[], float] = random.random,
    ) -> Flow[CreateChatCompletionResponse]:
        """The flow of a non-streamed call: it returns the parsed completion (with `parsed`
        and `parsed_arguments` filled when the call asked for types). Tests pass their own
        clocks and randomness."""
        flow = self.json_flow(parse_completion, clock=clock, wall_clock=wall_clock, rand=rand)
        return flow if self.outputs is None else _then_apply(flow, self.outputs)

    def json_flow(
        self,
        parse: Callable[[int, Mapping[str, str], bytes], _T],
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        rand: Callable[[], float] = random.random,
    ) -> Flow[_T]:
        """The flow of a call whose 2xx body is read whole: it returns `parse(status,
        headers, body)`."""
        finish = parse_body(parse, self.config.max_body_bytes)
        return self._flow(finish, clock, wall_clock, rand)

    def stream_flow(
        self,
        open_stream: Callable[[Any], _T],
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        rand: Callable[[], float] = random.random,
    ) -> Flow[_T]:
        """The flow of a streamed call: it returns `open_stream(response)` for the response
        whose body is the stream, still unread."""
        return self._flow(keep_open(open_stream), clock, wall_clock, rand)

    def _flow(
        self,
        finish: Finish[_T],
        clock: Callable[[], float],
        wall_clock: Callable[[], float],
        rand: Callable[[], float],
    ) -> Flow[_T]:
        total = self.http_request.timeout.total
        self.deadline = None if total is None else clock() + total
        return request_flow(
            self.http_request,
            finish=finish,
            policy=retry_policy(self.config.max_retries),
            clock=clock,
            wall_clock=wall_clock,
            rand=rand,
            deadline=self.deadline,
            credential=self.credential,
            secrets=self.secrets,
        )

    def stream_state(
        self, response_headers: Mapping[str, str], clock: Callable[[], float]
    ) -> StreamState:
        """The state of the stream this call opened."""
        headers = Headers.of_response(response_headers)
        parser = ChunkParser(
            request_id=request_id_of(headers),
            max_line_bytes=self.config.max_line_bytes,
            require_done=self.config.require_done,
        )
        return StreamState(
            parser,
            deadline=self.deadline,
            clock=clock,
            response_headers=headers,
            secrets=self.secrets,
            request=self.request,
            outputs=self.outputs,
        )


def _then_apply(
    flow: Flow[CreateChatCompletionResponse], outputs: OutputPlan
) -> Flow[CreateChatCompletionResponse]:
    completion = yield from flow
    return outputs.apply(completion)


def plan_request(config: ClientConfig, endpoint: Endpoint, http_request: HttpRequest) -> Call:
    """A call that sends `http_request` (built for `config` and `endpoint`) and is read whole."""
    credential = ProvidedCredential.of(config.api_key, endpoint, http_request.headers)
    return Call(http_request=http_request, stream=False, config=config, credential=credential)


def _foreign_message(message: Any) -> Any:
    """A message object from another library as a dict: the official SDK's pydantic models
    (`resp.choices[0].message` of `openai`) and anything else with `model_dump`."""
    dump = getattr(message, "model_dump", None)
    if callable(dump) and not isinstance(message, (ChatMessage, Mapping)):
        try:
            return dump(exclude_unset=True, mode="json")
        except TypeError:
            return dump()
    return message


def plan_call(
    config: ClientConfig,
    request: CreateChatCompletionRequest | None,
    params: dict[str, Any],
    *,
    stream: bool | None,
    force_stream: bool = False,
    timeout: TimeoutLike | None = None,
    idempotency_key: str | None = None,
    parse: bool = False,
    endpoint: Endpoint = OPENAI,
) -> Call:
    """Everything `create`/`stream`/`parse` do before I/O: gather arguments, turn typed
    `response_format` and `tools` into what is sent (`prepare_outputs`), validate, build.
    `parse=True` (`chat.parse`) also parses dict response formats and strict dict tools."""
    outputs: OutputPlan | None = None
    if request is not None:
        if params:
            raise InvalidArgumentError(
                "request", "pass a CreateChatCompletionRequest or keyword arguments, not both"
            )
        if not isinstance(request, CreateChatCompletionRequest):
            raise InvalidArgumentError(
                "request", f"must be a CreateChatCompletionRequest, got {type(request).__name__}"
            )
        if stream is not None and not force_stream:
            request = request.replace(stream=stream)
        if parse or request.response_format is not None or request.tools is not None:
            from chatlib._structured import prepare_outputs

            response_format, tools, outputs = prepare_outputs(
                request.response_format, request.tools, parse=parse
            )
            if outputs is not None:
                changes = {"response_format": response_format, "tools": tools}
                request = request.replace(
                    **{k: v for k, v in changes.items() if k in request.fields_set}
                )
    else:
        check_param_names(list(params))
        for required in ("model", "messages"):
            if required not in params:
                raise InvalidArgumentError(required, "is required")
        messages = params["messages"]
        if messages.__class__ is not list and (
            isinstance(messages, Iterable) and not isinstance(messages, (str, bytes, Mapping))
        ):
            messages = params["messages"] = list(messages)  # a tuple, a generator...
        if messages.__class__ is list and not all(
            m.__class__ is dict or isinstance(m, (ChatMessage, Mapping)) for m in messages
        ):
            params["messages"] = [_foreign_message(m) for m in messages]
        if stream is not None and not force_stream:
            params["stream"] = stream
        if parse or "response_format" in params or "tools" in params:
            from chatlib._structured import prepare_outputs

            response_format, tools, outputs = prepare_outputs(
                params.get("response_format"), params.get("tools"), parse=parse
            )
            if outputs is not None:
                for key, value in (("response_format", response_format), ("tools", tools)):
                    if key in params:
                        params[key] = value
        request = CreateChatCompletionRequest(**params)
    streaming = force_stream or request.stream is True
    http_request = build_request(
        config,
        request,
        stream=streaming,
        timeout=None if timeout is None else Timeout.of(timeout),
        idempotency_key=idempotency_key,
        endpoint=endpoint,
    )
    credential = ProvidedCredential.of(config.api_key, endpoint, http_request.headers)
    return Call(
        http_request=http_request,
        stream=streaming,
        config=config,
        request=request if streaming else None,
        outputs=outputs,
        credential=credential,
    )
