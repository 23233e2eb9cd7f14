"""The tool loop over real loopback HTTP, for both clients: `run_tools` and
`run_tools_stream` against a `LocalServer` playing a model that uses tools."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from typing import Any, Literal

import attrs
import pytest

from chatlib import (
    AsyncChat,
    BadRequestError,
    InternalServerError,
    InvalidArgumentError,
    SyncChat,
    ToolLoopLimitError,
    ToolRunDone,
    ToolRunResult,
)
from chatlib.testing import ErrorReply, LocalServer, RecordedRequest, Reply
from tests.conftest import FacadeDriver

MESSAGES = [{"role": "user", "content": "Weather in Paris and Rome, and 2+3?"}]


def get_weather(city: str, unit: Literal["c", "f"] = "c") -> dict[str, Any]:
    """The current weather in a city."""
    if city == "Atlantis":
        raise LookupError(f"no weather station in {city}")
    return {"city": city, "temperature": 21, "unit": unit}


def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def _roles(messages: list[Any]) -> list[str]:
    return [str(m["role"] if isinstance(m, dict) else m.role) for m in messages]


def test_a_two_round_loop_with_two_parallel_calls(
    facade: FacadeDriver, server: LocalServer, chat_request_validator: Any
) -> None:
    chat = facade.client(base_url=server.base_url)
    server.enqueue(
        Reply(
            tool_calls=[
                {"id": "call_p", "name": "get_weather", "arguments": {"city": "Paris"}},
                {"id": "call_r", "name": "get_weather", "arguments": {"city": "Rome", "unit": "f"}},
            ]
        ),
        Reply("Paris 21 °C, Rome 21 °F."),
    )
    result = chat.run_tools(model="m", messages=MESSAGES, tools=[get_weather, add])
    assert isinstance(result, ToolRunResult)
    assert result.completion.choices[0].message.content == "Paris 21 °C, Rome 21 °F."
    assert result.text == "Paris 21 °C, Rome 21 °F."
    assert len(result.completions) == 2
    assert [r.output for r in result.tool_results] == [
        {"city": "Paris", "temperature": 21, "unit": "c"},
        {"city": "Rome", "temperature": 21, "unit": "f"},
    ]
    assert _roles(result.messages) == ["user", "assistant", "tool", "tool", "assistant"]
    first, second = (r.json() for r in server.requests)
    for body in (first, second):
        chat_request_validator.validate(body)
    assert [t["function"]["name"] for t in first["tools"]] == ["get_weather", "add"]
    sent = second["messages"]
    assert _roles(sent) == ["user", "assistant", "tool", "tool"]
    assert [m["tool_call_id"] for m in sent[2:]] == ["call_p", "call_r"]
    assert json.loads(sent[2]["content"]) == {"city": "Paris", "temperature": 21, "unit": "c"}
    assert [c["id"] for c in sent[1]["tool_calls"]] == ["call_p", "call_r"]
    assert MESSAGES == [{"role": "user", "content": "Weather in Paris and Rome, and 2+3?"}]


def test_a_raising_tool_and_invalid_arguments_go_back_to_the_model(
    facade: FacadeDriver, server: LocalServer
) -> None:
    chat = facade.client(base_url=server.base_url)
    server.enqueue(
        Reply(
            tool_calls=[
                {"name": "get_weather", "arguments": {"city": "Atlantis"}},
                {"name": "add", "arguments": '{"a": 2, "b": '},
                {"name": "add", "arguments": {"a": "two", "b": 3}},
                {"name": "divide", "arguments": {}},
            ]
        ),
        Reply("Sorry, I could not find out."),
    )
    result = chat.run_tools(model="m", messages=MESSAGES, tools=[get_weather, add])
    contents = [m["content"] for m in server.requests[-1].json()["messages"][2:]]
    assert contents[0] == "Error: get_weather raised LookupError: no weather station in Atlantis"
    assert contents[1].startswith("Error: the arguments of add are not valid JSON")
    assert contents[2].startswith("Error: the arguments of add do not match its parameters: a:")
    assert contents[3].startswith("Error: there is no tool named 'divide'")
    assert all("Traceback" not in c for c in contents)
    errors = [r.error for r in result.tool_results]
    assert isinstance(errors[0], LookupError) and errors[0].__traceback__ is not None
    assert all(type(e).__name__ == "ToolCallError" for e in errors[1:])
    assert result.text == "Sorry, I could not find out."


def test_max_rounds_raises_with_a_conversation_that_can_go_on(
    facade: FacadeDriver, server: LocalServer
) -> None:
    chat = facade.client(base_url=server.base_url)
    call = Reply(tool_calls=[{"name": "add", "arguments": {"a": 1, "b": 1}}])
    server.enqueue(call, call, call)
    with pytest.raises(ToolLoopLimitError) as info:
        chat.run_tools(model="m", messages=MESSAGES, tools=[add], max_rounds=3)
    exc = info.value
    assert exc.max_rounds == 3 and len(exc.completions) == 3 and len(server.requests) == 3
    assert _roles(exc.messages) == ["user", *["assistant", "tool"] * 3]
    assert exc.completion is exc.completions[-1]
    server.enqueue(Reply("2, three times."))
    result = chat.run_tools(model="m", messages=exc.messages, tools=[add], max_rounds=3)
    assert result.text == "2, three times."
    assert len(server.requests[-1].json()["messages"]) == 7


@pytest.mark.parametrize("streamed", [False, True], ids=["run_tools", "run_tools_stream"])
def test_a_failed_model_call_keeps_the_tools_already_run(
    facade: FacadeDriver, server: LocalServer, streamed: bool
) -> None:
    """Round 2's call fails: the error carries the conversation with round 1's tool answers
    (the tools ran, maybe at a cost), and passing it back goes on from there."""
    chat = facade.client(base_url=server.base_url, max_retries=0)
    server.enqueue(
        Reply(tool_calls=[{"id": "call_1", "name": "add", "arguments": {"a": 2, "b": 3}}]),
        ErrorReply(400, message="context length exceeded"),
    )
    run = chat.run_tools_events if streamed else chat.run_tools
    with pytest.raises(BadRequestError) as info:
        run(model="m", messages=MESSAGES, tools=[add])
    exc = info.value
    assert "context length exceeded" in str(exc)
    assert _roles(exc.messages) == ["user", "assistant", "tool"]
    assert exc.messages[2].tool_call_id == "call_1" and exc.messages[2].content == "5"
    assert [r.output for r in exc.tool_results] == [5]
    assert len(exc.completions) == 1
    server.enqueue(Reply("It is 5."))
    result = chat.run_tools(model="m", messages=exc.messages, tools=[add])
    assert result.text == "It is 5." and result.tool_results == []
    assert _roles(server.requests[-1].json()["messages"]) == ["user", "assistant", "tool"]


def test_async_tools_are_awaited_and_run_at_once(server: LocalServer) -> None:
    started: list[float] = []

    async def slow_add(a: int, b: int) -> int:
        started.append(time.monotonic())
        await asyncio.sleep(0.3)
        return a + b

    loop_threads: list[int] = []
    tool_threads: list[int] = []

    def blocking_add(a: int, b: int) -> int:
        tool_threads.append(threading.get_ident())
        time.sleep(0.3)
        return a + b

    async def main() -> tuple[ToolRunResult, float]:
        loop_threads.append(threading.get_ident())
        calls = [
            {"name": "slow_add", "arguments": {"a": 1, "b": 2}},
            {"name": "slow_add", "arguments": {"a": 3, "b": 4}},
            {"name": "blocking_add", "arguments": {"a": 5, "b": 6}},
        ]
        server.enqueue(Reply(tool_calls=calls), Reply("3, 7 and 11."))
        async with AsyncChat(base_url=server.base_url, api_key="k") as chat:
            begin = time.monotonic()
            result = await chat.run_tools(
                model="m", messages=MESSAGES, tools=[slow_add, blocking_add]
            )
            return result, time.monotonic() - begin

    result, elapsed = asyncio.run(main())
    assert [r.content for r in result.tool_results] == ["3", "7", "11"]
    assert elapsed < 0.85, elapsed  # three 0.3 s tools, run at once (sequentially: 0.9 s+)
    assert abs(started[0] - started[1]) < 0.2
    assert tool_threads and tool_threads[0] != loop_threads[0]  # a sync tool: a worker thread


def test_async_results_are_streamed_as_they_arrive(server: LocalServer) -> None:
    async def wait(seconds: float) -> float:
        await asyncio.sleep(seconds)
        return seconds

    async def main() -> list[Any]:
        calls = [{"name": "wait", "arguments": {"seconds": s}} for s in (0.4, 0.05)]
        server.enqueue(Reply(tool_calls=calls), Reply("Waited."))
        async with AsyncChat(base_url=server.base_url, api_key="k") as chat:
            stream = chat.run_tools_stream(model="m", messages=MESSAGES, tools=[wait])
            return [event async for event in stream]

    events = asyncio.run(main())
    arrived = [e.output for e in events if e.type == "tool_result"]
    assert arrived == [0.05, 0.4]  # the quick one first
    assert [r.output for r in events[-1].result.tool_results] == [0.4, 0.05]  # call order
    sent = server.requests[-1].json()["messages"]
    assert [m["content"] for m in sent[-2:]] == ["0.4", "0.05"]


def test_sync_chat_runs_the_calls_in_order(server: LocalServer) -> None:
    order: list[str] = []

    def record(name: str) -> str:
        order.append(name)
        return name

    server.enqueue(
        Reply(tool_calls=[{"name": "record", "arguments": {"name": n}} for n in "abc"]),
        Reply("done"),
    )
    with SyncChat(base_url=server.base_url, api_key="k") as chat:
        chat.run_tools(model="m", messages=MESSAGES, tools=[record])
    assert order == ["a", "b", "c"]


def test_an_async_tool_is_refused_by_sync_chat_before_any_request(server: LocalServer) -> None:
    async def fetch(url: str) -> str:
        return url

    with SyncChat(base_url=server.base_url, api_key="k") as chat:
        with pytest.raises(InvalidArgumentError, match=r"AsyncChat\.run_tools"):
            chat.run_tools(model="m", messages=MESSAGES, tools=[fetch])
        with pytest.raises(InvalidArgumentError) as info:
            chat.run_tools(model="m", messages=MESSAGES, tools=[add], temperatur=1)
        assert info.value.field == "temperatur"
    assert server.requests == []


def test_the_stream_yields_chunks_completions_and_tool_results(
    facade: FacadeDriver, server: LocalServer
) -> None:
    chat = facade.client(base_url=server.base_url)
    server.enqueue(
        Reply(tool_calls=[{"name": "add", "arguments": {"a": 2, "b": 3}}]),
        Reply("It is 5."),
    )
    events = chat.run_tools_events(model="m", messages=MESSAGES, tools=[add])
    kinds = [event.type for event in events]
    assert kinds[-1] == "done"
    first_completion = kinds.index("completion")
    assert set(kinds[:first_completion]) == {"chunk"}
    assert kinds[first_completion + 1] == "tool_result"
    assert kinds.count("completion") == 2
    assert events[first_completion + 1].content == "5"
    text = "".join(e.chunk.text for e in events if e.type == "chunk" and e.round == 2)
    assert text == "It is 5."
    done = events[-1]
    assert isinstance(done, ToolRunDone) and done.result.text == "It is 5."
    tool_call = done.result.completions[0].choices[0].message.tool_calls[0]
    assert tool_call.function.parsed_arguments == {"a": 2, "b": 3}
    assert all(r.json()["stream"] is True for r in server.requests)


def test_a_typed_final_answer(facade: FacadeDriver, server: LocalServer) -> None:
    @attrs.define
    class Sum:
        total: int
        explanation: str

    chat = facade.client(base_url=server.base_url)
    server.enqueue(
        Reply(tool_calls=[{"name": "add", "arguments": {"a": 2, "b": 3}}]),
        Reply.json({"total": 5, "explanation": "2 + 3"}),
    )
    result = chat.run_tools(model="m", messages=MESSAGES, tools=[add], response_format=Sum)
    assert result.parsed == Sum(5, "2 + 3")
    assert all("response_format" in r.json() for r in server.requests)


def test_calls_to_tools_with_no_function_are_left_to_the_caller(
    facade: FacadeDriver, server: LocalServer
) -> None:
    @attrs.define
    class Handoff:
        """Hand the conversation to a human."""

        reason: str

    chat = facade.client(base_url=server.base_url)
    server.enqueue(
        Reply(
            tool_calls=[
                {"name": "add", "arguments": {"a": 1, "b": 2}},
                {"name": "Handoff", "arguments": {"reason": "angry user"}},
            ]
        )
    )
    result = chat.run_tools(model="m", messages=MESSAGES, tools=[add, Handoff])
    (pending,) = result.pending_tool_calls
    assert pending.function.parsed_arguments == Handoff("angry user")
    assert _roles(result.messages) == ["user", "assistant", "tool"]
    assert len(server.requests) == 1


# ---------------------------------------------------------------- LocalServer plays the model


def test_a_responder_model_reads_the_conversation(
    facade: FacadeDriver, server: LocalServer
) -> None:
    def model(request: RecordedRequest) -> Reply:
        messages = request.json()["messages"]
        if messages[-1]["role"] == "tool":
            weather = json.loads(messages[-1]["content"])
            return Reply(f"{weather['city']}: {weather['temperature']} degrees.")
        city = messages[-1]["content"].split()[-1]
        return Reply(tool_calls=[{"name": "get_weather", "arguments": {"city": city}}])

    chat = facade.client(base_url=server.base_url)
    server.enqueue(model, model)
    messages = [{"role": "user", "content": "Weather in Oslo"}]
    result = chat.run_tools(model="m", messages=messages, tools=[get_weather])
    assert result.text == "Oslo: 21 degrees."


def test_a_responder_that_fails_is_a_500_naming_it(
    facade: FacadeDriver, server: LocalServer
) -> None:
    chat = facade.client(base_url=server.base_url, max_retries=0)
    server.enqueue(lambda request: "not an action")
    with pytest.raises(InternalServerError, match="not an action"):
        chat.create(model="m", messages=MESSAGES)
    with pytest.raises(TypeError):
        server.enqueue(42)  # type: ignore[arg-type]


def test_several_streamed_tool_calls_and_reply_json(
    facade: FacadeDriver, server: LocalServer
) -> None:
    chat = facade.client(base_url=server.base_url)
    calls = [
        {"name": "get_weather", "arguments": {"city": "Paris, France", "unit": "c"}},
        {"name": "add", "arguments": {"a": 10, "b": 32}},
    ]
    server.enqueue(Reply(tool_calls=calls), Reply.json({"ok": True}, finish_reason="length"))
    final = chat.final_completion(model="m", messages=MESSAGES)
    got = [
        (c.function.name, json.loads(c.function.arguments))
        for c in final.choices[0].message.tool_calls
    ]
    assert got == [(c["name"], c["arguments"]) for c in calls]
    resp = chat.create(model="m", messages=MESSAGES)
    assert json.loads(resp.text) == {"ok": True}
    assert resp.choices[0].finish_reason == "length"
