"""The sans-IO send/retry flow, stepped by hand: no I/O, a fake clock, fixed randomness."""

from __future__ import annotations

import email.utils
import json
from collections.abc import Callable, Generator
from typing import Any

import attrs
import pytest

from chatlib._call import Call, plan_call
from chatlib._config import ClientConfig, Timeout
from chatlib._flow import ReadBody, Send, Sleep, keep_open, parse_body, request_flow
from chatlib._parse import parse_completion
from chatlib._request import HttpRequest, build_request
from chatlib._retry import RetryPolicy
from chatlib.errors import (
    APIConnectionError,
    APIError,
    APIResponseValidationError,
    APIStatusError,
    APITimeoutError,
    BadRequestError,
    BodyTooLargeError,
    InsufficientQuotaError,
    InternalServerError,
    RateLimitError,
)
from chatlib.models import ChatMessage, CreateChatCompletionRequest, CreateChatCompletionResponse

USER = {"role": "user", "content": "Hi"}
RAND = 0.5
WALL = 1_750_000_000.0
COMPLETION = json.dumps(
    {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "m",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello"},
                "finish_reason": "stop",
            }
        ],
    }
).encode()


@attrs.define
class Resp:
    """What a transport hands back: status and headers now, the body on ReadBody."""

    status_code: int
    headers: dict[str, str] = attrs.field(factory=dict)
    body: bytes | APIError = b""


class FakeClock:
    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


def make_request(
    timeout: Timeout | None = None, *, stream: bool = False, key: str = "chatlib-key-1"
) -> HttpRequest:
    config = ClientConfig.resolve(base_url="http://127.0.0.1:9/v1")
    request = CreateChatCompletionRequest(model="m", messages=[USER])
    return build_request(
        config,
        request,
        stream=stream,
        timeout=timeout or Timeout(connect=10, read=600, total=None),
        idempotency_key=key,
    )


def make_flow(
    request: HttpRequest | None = None,
    *,
    policy: RetryPolicy | None = None,
    clock: FakeClock | None = None,
    parse: Callable[[int, Any, bytes], Any] | None = parse_completion,
    max_body_bytes: int = 1 << 20,
) -> Generator[Any, Any, Any]:
    return request_flow(
        request or make_request(),
        finish=keep_open(lambda response: response)
        if parse is None
        else parse_body(parse, max_body_bytes),
        policy=policy or RetryPolicy(),
        clock=clock or FakeClock(),
        wall_clock=lambda: WALL,
        rand=lambda: RAND,
    )


@attrs.define
class Run:
    commands: list[Any]
    result: Any = None
    error: BaseException | None = None

    def kinds(self) -> list[str]:
        return [type(c).__name__ for c in self.commands]

    @property
    def sends(self) -> list[Send]:
        return [c for c in self.commands if isinstance(c, Send)]

    @property
    def sleeps(self) -> list[float]:
        return [c.seconds for c in self.commands if isinstance(c, Sleep)]


def drive(
    flow: Generator[Any, Any, Any],
    outcomes: list[Resp | APIError],
    *,
    clock: FakeClock | None = None,
    send_takes: float = 0.0,
    oversleep: float = 0.0,
) -> Run:
    """Answer each command from ``outcomes`` (one per attempt) like a driver would."""
    run = Run(commands=[])
    pending = list(outcomes)
    answer: Any = None
    try:
        while True:
            command = flow.send(answer)
            run.commands.append(command)
            if isinstance(command, Send):
                if clock is not None:
                    clock.now += send_takes
                answer = pending.pop(0)
            elif isinstance(command, ReadBody):
                assert isinstance(command.response, Resp)
                answer = command.response.body
            else:
                assert isinstance(command, Sleep)
                if clock is not None:
                    clock.now += command.seconds + oversleep
                answer = None
    except StopIteration as stop:
        run.result = stop.value
    except APIError as exc:
        run.error = exc
    assert not pending, "the flow stopped before using every scripted outcome"
    return run


# ---------------------------------------------------------------- success and retries


def test_a_200_is_read_and_parsed() -> None:
    run = drive(make_flow(), [Resp(200, {"x-request-id": "r1"}, COMPLETION)])
    assert run.kinds() == ["Send", "ReadBody"]
    assert isinstance(run.result, CreateChatCompletionResponse)
    assert run.result.text == "Hello"
    read = run.commands[1]
    assert read.limit == 1 << 20


def test_commands_can_be_stepped_by_hand() -> None:
    flow = make_flow()
    send = next(flow)
    assert isinstance(send, Send)
    assert send.attempt == 0
    response = Resp(503, {}, b"busy")
    read = flow.send(response)
    assert isinstance(read, ReadBody)
    assert read.response is response
    sleep = flow.send(b"busy")
    assert isinstance(sleep, Sleep)
    assert sleep.seconds == RetryPolicy().delay(0, {}, now=WALL, rand=RAND)
    second = flow.send(None)
    assert isinstance(second, Send)
    assert second.attempt == 1
    flow.send(Resp(200, {}, COMPLETION))
    with pytest.raises(StopIteration) as stop:
        flow.send(COMPLETION)
    assert stop.value.value.text == "Hello"


def test_503_503_200_sleeps_twice_with_the_policy_delays() -> None:
    policy = RetryPolicy()
    run = drive(
        make_flow(policy=policy),
        [Resp(503, {}, b"busy"), Resp(503, {}, b"busy"), Resp(200, {}, COMPLETION)],
    )
    assert run.kinds() == ["Send", "ReadBody", "Sleep"] * 2 + ["Send", "ReadBody"]
    assert run.sleeps == [
        policy.delay(0, {}, now=WALL, rand=RAND),
        policy.delay(1, {}, now=WALL, rand=RAND),
    ]
    assert run.sleeps == [0.5 * 0.875, 1.0 * 0.875]
    assert [s.attempt for s in run.sends] == [0, 1, 2]
    assert run.result.text == "Hello"


def test_retry_after_from_the_server_is_the_sleep() -> None:
    run = drive(
        make_flow(),
        [
            Resp(429, {"retry-after-ms": "1234"}, b""),
            Resp(503, {"Retry-After": email.utils.formatdate(WALL + 5, usegmt=True)}, b""),
            Resp(200, {}, COMPLETION),
        ],
    )
    assert run.sleeps == [pytest.approx(1.234), pytest.approx(5.0)]
    assert run.result is not None


def test_exhausted_retries_raise_the_last_error() -> None:
    run = drive(
        make_flow(policy=RetryPolicy(max_retries=2)),
        [
            Resp(503, {}, b"first"),
            Resp(502, {}, b"second"),
            Resp(500, {"x-request-id": "req_last"}, b"third"),
        ],
    )
    assert isinstance(run.error, InternalServerError)
    assert run.error.status_code == 500
    assert "third" in str(run.error)
    assert run.error.request_id == "req_last"
    assert len(run.sends) == 3
    assert len(run.sleeps) == 2


def test_max_retries_zero_never_sleeps() -> None:
    run = drive(make_flow(policy=RetryPolicy(max_retries=0)), [Resp(503, {}, b"")])
    assert isinstance(run.error, InternalServerError)
    assert run.kinds() == ["Send", "ReadBody"]


@pytest.mark.parametrize(
    ("outcome", "cls"),
    [
        (Resp(400, {}, b'{"error": {"message": "bad"}}'), BadRequestError),
        (Resp(401, {}, b'{"detail": "Invalid API key"}'), APIError),
        (Resp(404, {}, b""), APIError),
        (Resp(422, {}, b""), APIError),
        (
            Resp(429, {}, b'{"error": {"message": "q", "code": "insufficient_quota"}}'),
            InsufficientQuotaError,
        ),
        (Resp(503, {"x-should-retry": "false"}, b""), InternalServerError),
    ],
)
def test_non_retryable_failures_raise_at_once(outcome: Resp, cls: type[APIError]) -> None:
    run = drive(make_flow(), [outcome])
    assert isinstance(run.error, cls)
    assert run.kinds() == ["Send", "ReadBody"]
    assert run.error.raw_body == outcome.body


@pytest.mark.parametrize("failure", [APIConnectionError("refused"), APITimeoutError("connect")])
def test_connection_failures_are_retried(failure: APIError) -> None:
    run = drive(make_flow(), [failure, Resp(200, {}, COMPLETION)])
    assert run.kinds() == ["Send", "Sleep", "Send", "ReadBody"]
    assert run.sleeps == [RetryPolicy().delay(0, {}, now=WALL, rand=RAND)]
    assert run.result.text == "Hello"


def test_connection_failures_exhausting_retries_raise_the_connection_error() -> None:
    last = APITimeoutError("read timed out")
    run = drive(make_flow(), [APIConnectionError("a"), APIConnectionError("b"), last])
    assert run.error is last


def test_every_attempt_sends_the_same_request() -> None:
    run = drive(
        make_flow(make_request(key="chatlib-fixed")),
        [APIConnectionError(), Resp(503, {}, b""), Resp(200, {}, COMPLETION)],
    )
    sent = [s.request for s in run.sends]
    assert len(sent) == 3
    assert {r.headers["Idempotency-Key"] for r in sent} == {"chatlib-fixed"}
    assert len({r.body for r in sent}) == 1
    assert len({r.url for r in sent}) == 1
    assert all(r.headers == sent[0].headers for r in sent)


def test_read_failure_of_a_200_body_is_retried() -> None:
    run = drive(
        make_flow(),
        [Resp(200, {}, APIConnectionError("reset mid-body")), Resp(200, {}, COMPLETION)],
    )
    assert run.kinds() == ["Send", "ReadBody", "Sleep", "Send", "ReadBody"]
    assert run.result.text == "Hello"


def test_read_failure_of_an_error_body_still_reports_the_status() -> None:
    run = drive(
        make_flow(policy=RetryPolicy(max_retries=0)),
        [Resp(503, {"x-request-id": "r"}, APIConnectionError("reset"))],
    )
    assert isinstance(run.error, InternalServerError)
    assert run.error.request_id == "r"
    assert run.error.raw_body == b""


def test_body_too_large_is_not_retried() -> None:
    too_big = BodyTooLargeError("too big")
    run = drive(make_flow(max_body_bytes=10), [Resp(200, {}, too_big)])
    assert run.error is too_big
    assert run.commands[1].limit == 10


def test_an_invalid_200_body_raises_without_retry() -> None:
    run = drive(make_flow(), [Resp(200, {"x-request-id": "rq"}, b"<html>oops</html>")])
    assert isinstance(run.error, APIResponseValidationError)
    assert run.error.raw_body == b"<html>oops</html>"
    assert run.error.request_id == "rq"
    assert len(run.sends) == 1


# ---------------------------------------------------------------- time limits


def test_per_attempt_timeout_shrinks_to_the_remaining_deadline() -> None:
    clock = FakeClock(100.0)
    request = make_request(Timeout(connect=10, read=600, total=30))
    run = drive(
        make_flow(request, clock=clock),
        [Resp(503, {"retry-after": "1"}, b""), Resp(200, {}, COMPLETION)],
        clock=clock,
        send_takes=25.0,
    )
    first, second = (s.request.timeout for s in run.sends)
    assert first == Timeout(connect=10, read=30, total=30)
    assert (second.connect, second.read, second.total) == pytest.approx((4.0, 4.0, 4.0))
    assert run.sleeps == [1.0]
    assert run.result is not None


def test_no_total_deadline_leaves_timeouts_alone() -> None:
    timeout = Timeout(connect=3, read=7, total=None)
    run = drive(
        make_flow(make_request(timeout)),
        [Resp(503, {}, b""), Resp(200, {}, COMPLETION)],
    )
    assert [s.request.timeout for s in run.sends] == [timeout, timeout]


def test_a_sleep_past_the_deadline_raises_instead_of_sleeping() -> None:
    clock = FakeClock(0.0)
    run = drive(
        make_flow(make_request(Timeout(total=10)), clock=clock),
        [Resp(503, {"retry-after": "2"}, b"busy")],
        clock=clock,
        send_takes=9.0,
    )
    assert isinstance(run.error, InternalServerError)
    assert run.sleeps == []
    assert "busy" in str(run.error)


def test_deadline_passed_while_sleeping_raises_timeout() -> None:
    clock = FakeClock(0.0)
    run = drive(
        make_flow(make_request(Timeout(total=10)), clock=clock),
        [Resp(503, {"retry-after": "1"}, b"")],
        clock=clock,
        oversleep=20.0,
    )
    assert isinstance(run.error, APITimeoutError)
    assert len(run.sends) == 1


# ---------------------------------------------------------------- streams


def test_stream_flow_returns_the_open_response_without_reading_it() -> None:
    response = Resp(200, {"content-type": "text/event-stream"}, b"data: never read\n\n")
    run = drive(make_flow(make_request(stream=True), parse=None), [response])
    assert run.kinds() == ["Send"]
    assert run.result is response


def test_stream_flow_retries_an_error_status_then_returns_the_stream() -> None:
    ok = Resp(200, {}, b"")
    run = drive(
        make_flow(make_request(stream=True), parse=None),
        [Resp(429, {"retry-after": "3"}, b'{"error": {"message": "slow"}}'), ok],
    )
    assert run.kinds() == ["Send", "ReadBody", "Sleep", "Send"]
    assert run.sleeps == [3.0]
    assert run.result is ok


def test_stream_flow_error_status_raises_with_the_body() -> None:
    run = drive(
        make_flow(make_request(stream=True), parse=None, policy=RetryPolicy(max_retries=0)),
        [Resp(429, {}, b'{"error": {"message": "slow down"}}')],
    )
    assert isinstance(run.error, RateLimitError)
    assert "slow down" in str(run.error)


# ---------------------------------------------------------------- parse_completion


def test_parse_completion_keeps_the_raw_body_of_bad_json() -> None:
    with pytest.raises(APIResponseValidationError) as info:
        parse_completion(200, {"X-Request-Id": "r"}, b'{"id": ')
    assert info.value.raw_body == b'{"id": '
    assert info.value.status_code == 200
    assert info.value.request_id == "r"


@pytest.mark.parametrize("raw", [b"[]", b'"text"', b"null", b"3"])
def test_parse_completion_rejects_non_objects(raw: bytes) -> None:
    with pytest.raises(APIResponseValidationError) as info:
        parse_completion(200, {}, raw)
    assert info.value.raw_body == raw


@pytest.mark.parametrize(
    "raw", [b'{"choices": "x"}', b'{"choices": [{"message": "x"}]}', b'{"usage": 3}']
)
def test_parse_completion_rejects_wrong_shapes(raw: bytes) -> None:
    with pytest.raises(APIResponseValidationError) as info:
        parse_completion(200, {}, raw)
    assert info.value.raw_body == raw


def test_parse_completion_reports_an_error_object_sent_with_200() -> None:
    raw = b'{"error": {"message": "context too long", "type": "invalid_request_error"}}'
    with pytest.raises(BadRequestError) as info:
        parse_completion(200, {}, raw)
    assert "context too long" in str(info.value)


def test_parse_completion_null_choice_is_rejected_or_dropped() -> None:
    try:
        response = parse_completion(200, {}, b'{"choices": [null]}')
    except APIResponseValidationError as exc:
        assert exc.raw_body == b'{"choices": [null]}'
        return
    assert response.text == ""  # dropping the null item would be fine too


# ---------------------------------------------------------------- plan_call


CONFIG = ClientConfig.resolve(base_url="http://127.0.0.1:9/v1")


def body(call: Call) -> dict[str, Any]:
    assert call.http_request.body is not None
    data: dict[str, Any] = json.loads(call.http_request.body)
    return data


@pytest.mark.parametrize(
    ("stream", "force", "streaming", "stream_in_body"),
    [
        (None, False, False, None),
        (True, False, True, True),
        (False, False, False, False),
        (None, True, True, True),
    ],
)
def test_plan_call_with_keywords(
    stream: bool | None, force: bool, streaming: bool, stream_in_body: bool | None
) -> None:
    call = plan_call(
        CONFIG, None, {"model": "m", "messages": [USER]}, stream=stream, force_stream=force
    )
    assert call.stream is streaming
    assert call.http_request.stream is streaming
    assert body(call).get("stream") == stream_in_body
    assert ("stream" in body(call)) is (stream_in_body is not None)
    expected_accept = "text/event-stream" if streaming else "application/json"
    assert call.http_request.headers["Accept"] == expected_accept


@pytest.mark.parametrize(
    ("request_stream", "stream", "force", "streaming"),
    [
        (None, None, False, False),
        (True, None, False, True),
        (False, None, False, False),
        (None, True, False, True),
        (True, False, False, False),
        (False, None, True, True),
        (None, None, True, True),
    ],
)
def test_plan_call_with_a_request_object(
    request_stream: bool | None, stream: bool | None, force: bool, streaming: bool
) -> None:
    fields: dict[str, Any] = {} if request_stream is None else {"stream": request_stream}
    request = CreateChatCompletionRequest(model="m", messages=[USER], **fields)
    before = request.to_dict()
    call = plan_call(CONFIG, request, {}, stream=stream, force_stream=force)
    assert call.stream is streaming
    assert (body(call).get("stream") is True) is streaming
    assert request.to_dict() == before  # the caller's request is not modified


def test_plan_call_builds_the_same_body_from_keywords_and_from_a_request() -> None:
    params = {
        "model": "m",
        "messages": (ChatMessage.user("Hi"),),
        "temperature": 0,
        "extra_body": {"top_k": 5},
    }
    from_kwargs = plan_call(CONFIG, None, dict(params), stream=None)
    request = CreateChatCompletionRequest(**{**params, "messages": list(params["messages"])})
    from_object = plan_call(CONFIG, request, {}, stream=None)
    assert body(from_kwargs) == body(from_object)
    assert body(from_kwargs) == {
        "model": "m",
        "messages": [USER],
        "temperature": 0,
        "top_k": 5,
    }


def test_plan_call_timeout_and_idempotency_key() -> None:
    call = plan_call(
        CONFIG,
        None,
        {"model": "m", "messages": [USER]},
        stream=None,
        timeout=5,
        idempotency_key="chatlib-k",
    )
    assert call.http_request.timeout == Timeout(connect=5, read=5, total=5)
    assert call.http_request.headers["Idempotency-Key"] == "chatlib-k"
    default = plan_call(CONFIG, None, {"model": "m", "messages": [USER]}, stream=None)
    assert default.http_request.timeout == CONFIG.timeout


def test_call_flow_uses_the_configured_retry_budget() -> None:
    config = ClientConfig.resolve(base_url="http://127.0.0.1:9/v1", max_retries=0)
    call = plan_call(config, None, {"model": "m", "messages": [USER]}, stream=None)
    flow = call.completion_flow(clock=FakeClock(), wall_clock=lambda: WALL, rand=lambda: RAND)
    run = drive(flow, [Resp(503, {}, b"")])
    assert isinstance(run.error, InternalServerError)
    assert run.sleeps == []


def test_call_flow_of_a_stream_does_not_read_the_body() -> None:
    call = plan_call(CONFIG, None, {"model": "m", "messages": [USER]}, stream=True)
    flow = call.stream_flow(
        lambda response: response, clock=FakeClock(), wall_clock=lambda: WALL, rand=lambda: RAND
    )
    response = Resp(200, {}, b"")
    run = drive(flow, [response])
    assert run.result is response
    assert run.kinds() == ["Send"]


# ---------------------------------------------------------------- the drivers keep the contract


BIG_ERROR_PAGE = b"<html><title>503 Service Unavailable</title>" + b"x" * (2 << 20) + b"</html>"


def test_sync_driver_reports_the_status_of_a_huge_error_page() -> None:
    from chatlib._sync import SyncChat
    from chatlib._transports.fake import FakeResponse, FakeTransport

    transport = FakeTransport(FakeResponse(503, {}, [BIG_ERROR_PAGE]))
    with (
        SyncChat(base_url="http://127.0.0.1:9/v1", transport=transport, max_retries=0) as chat,
        pytest.raises(InternalServerError) as info,
    ):
        chat.create(model="m", messages=[USER])
    assert info.value.status_code == 503


async def test_async_driver_reports_the_status_of_a_huge_error_page() -> None:
    from chatlib._async import AsyncChat
    from chatlib._transports.fake import FakeResponse, FakeTransport

    transport = FakeTransport(FakeResponse(503, {}, [BIG_ERROR_PAGE]))
    async with AsyncChat(
        base_url="http://127.0.0.1:9/v1", transport=transport.as_async(), max_retries=0
    ) as chat:
        with pytest.raises(InternalServerError) as info:
            await chat.create(model="m", messages=[USER])
    assert info.value.status_code == 503


# ---------------------------------------------------------------- redirects


def test_a_same_origin_redirect_is_followed_with_the_key_and_is_not_a_retry() -> None:
    keyed = make_request()
    keyed = attrs.evolve(keyed, headers={**keyed.headers, "Authorization": "Bearer sk-1"})
    run = drive(
        make_flow(keyed),
        [Resp(307, {"Location": "/v2/chat/completions"}), Resp(200, body=COMPLETION)],
    )
    assert run.result.text == "Hello"
    first, second = run.sends
    assert second.request.url == "http://127.0.0.1:9/v2/chat/completions"
    assert second.request.method == "POST" and second.request.body == first.request.body
    assert second.request.headers["Authorization"] == first.request.headers["Authorization"]
    assert second.attempt == first.attempt == 0
    assert run.sleeps == []


@pytest.mark.parametrize(
    "location", ["http://127.0.0.1:10/v1/chat/completions", "https://127.0.0.1:9/x", "//evil/x"]
)
def test_a_redirect_to_another_origin_drops_every_credential_header(location: str) -> None:
    request = attrs.evolve(
        make_request(),
        headers={
            **make_request().headers,
            "api-key": "azure-secret",
            "X-Api-Token": "t",
            "Cookie": "s=1",
        },
    )
    run = drive(make_flow(request), [Resp(308, {"location": location}), Resp(200, body=COMPLETION)])
    sent = run.sends[1].request
    assert {name.lower() for name in sent.headers} == {
        "content-type",
        "accept",
        "user-agent",
        "idempotency-key",
    }
    assert sent.method == "POST" and sent.body == request.body


@pytest.mark.parametrize("status", [301, 302, 303])
def test_a_redirect_that_would_drop_the_body_is_raised_naming_the_location(status: int) -> None:
    run = drive(make_flow(), [Resp(status, {"Location": "https://new.example/v1/chat"})])
    assert len(run.sends) == 1
    assert isinstance(run.error, APIStatusError)
    assert run.error.status_code == status
    assert "https://new.example/v1/chat" in str(run.error)
    assert run.sleeps == []  # not retried either


def test_a_redirect_loop_stops_after_five_hops_with_the_redirect_status() -> None:
    hops = [Resp(308 if i % 2 else 307, {"Location": f"/hop{i}"}) for i in range(6)]
    run = drive(make_flow(policy=RetryPolicy(max_retries=0)), hops)
    assert len(run.sends) == 6
    assert isinstance(run.error, APIStatusError)
    assert run.error.status_code == 308


def test_a_stream_keeps_the_deadline_its_call_started_with() -> None:
    """Time spent on retries before the stream opened counts against ``timeout.total``, even
    with a transport that does not enforce it itself."""
    clock = FakeClock()
    call = plan_call(
        CONFIG,
        None,
        {"model": "m", "messages": [USER]},
        stream=True,
        timeout=Timeout(connect=1, read=5, total=10),
    )
    run = drive(
        call.stream_flow(
            lambda response: response, clock=clock, wall_clock=lambda: WALL, rand=lambda: RAND
        ),
        [Resp(503, {"retry-after": "6"}), Resp(200, {"content-type": "text/event-stream"})],
        clock=clock,
    )
    assert run.sleeps == [6.0]
    state = call.stream_state({}, clock)
    state.on_bytes(b'data: {"choices": []}\n\n')  # 6 s in: fine
    clock.now += 4.5  # 10.5 s after the call began, 4.5 s after the stream opened
    with pytest.raises(APITimeoutError):
        state.on_bytes(b'data: {"choices": []}\n\n')
