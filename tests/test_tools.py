"""`chatlib.function_tool` and what chatlib does with the arguments of a call to it; the tool
loop stepped by hand, with no network (the core flow both facades drive)."""

from __future__ import annotations

import dataclasses
import datetime
import enum
import functools
import json
from typing import Annotated, Any, Literal

import attrs
import pytest

from chatlib import FunctionTool, InvalidArgumentError, ToolLoopLimitError, function_tool
from chatlib._call import Call
from chatlib._config import ClientConfig
from chatlib._tool_loop import CallModel, Emit, RunTools, ToolRunDone, prepare_tool_run, tool_loop
from chatlib._tools import format_result
from chatlib._typed_json import Mismatch
from chatlib.models import CreateChatCompletionResponse
from tests.conftest import assert_strict_schema

# ---------------------------------------------------------------- tools


def get_weather(city: str, unit: Literal["c", "f"] = "c", days: int | None = None) -> dict:
    """The current weather in a city.

    Args:
        city: The city, e.g. "Paris".
        unit: Celsius or Fahrenheit.
        days: How many days ahead.
    """
    return {"city": city, "unit": unit, "days": days}


def numpy_style(city: str, unit: str = "c") -> str:
    """The weather.

    Parameters
    ----------
    city : str
        The city.
    unit : str
        The unit.
    """
    return city


def rest_style(city: Annotated[str, "The city (from Annotated)"], unit: str = "c") -> str:
    """The weather.

    :param city: ignored: Annotated wins
    :param unit: The unit.
    """
    return city


def untyped(city, unit="c"):  # type: ignore[no-untyped-def]
    return city


def star_args(*cities: str) -> None:
    pass


@attrs.define
class Move:
    """Move the robot.

    Attributes:
        steps: How far.
    """

    direction: Literal["left", "right"]
    steps: int = 1


@dataclasses.dataclass
class Point:
    x: float
    y: float


class Tone(enum.Enum):
    LOW = "low"
    HIGH = "high"


# ---------------------------------------------------------------- function_tool


def test_a_typed_function_becomes_a_strict_tool() -> None:
    tool = function_tool(get_weather)
    assert isinstance(tool, FunctionTool) and isinstance(tool, dict)
    assert tool == {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The current weather in a city.",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string", "description": 'The city, e.g. "Paris".'},
                    "unit": {
                        "anyOf": [{"type": "string", "enum": ["c", "f"]}, {"type": "null"}],
                        "description": "Celsius or Fahrenheit.",
                    },
                    "days": {
                        "anyOf": [{"type": "integer"}, {"type": "null"}],
                        "description": "How many days ahead.",
                    },
                },
                "required": ["city", "unit", "days"],
                "additionalProperties": False,
            },
            "strict": True,
        },
    }
    assert_strict_schema(tool["function"]["parameters"])
    assert json.loads(json.dumps(tool)) == tool  # plain JSON to everything else


def test_without_strict_defaults_are_not_required() -> None:
    function = function_tool(get_weather, strict=False)["function"]
    assert "strict" not in function
    assert function["parameters"]["required"] == ["city"]
    assert function["parameters"]["properties"]["unit"] == {
        "type": "string",
        "enum": ["c", "f"],
        "description": "Celsius or Fahrenheit.",
        "default": "c",
    }


@pytest.mark.parametrize("fn", [numpy_style, rest_style])
def test_descriptions_from_numpy_and_rest_docstrings_and_annotated(fn: Any) -> None:
    function = function_tool(fn)["function"]
    assert function["description"] == "The weather."
    properties = function["parameters"]["properties"]
    expected = "The city." if fn is numpy_style else "The city (from Annotated)"
    assert properties["city"]["description"] == expected
    assert properties["unit"]["description"] == "The unit."


def test_name_and_description_can_be_given() -> None:
    function = function_tool(get_weather, name="weather", description="Weather.")["function"]
    assert (function["name"], function["description"]) == ("weather", "Weather.")


def test_classes_become_tools() -> None:
    move = function_tool(Move)["function"]
    assert move["name"] == "Move"
    assert move["description"] == "Move the robot."
    assert move["parameters"]["properties"]["steps"]["description"] == "How far."
    assert function_tool(Point)["function"]["parameters"]["required"] == ["x", "y"]


def test_a_pydantic_model_tool_matches_the_official_sdk() -> None:
    pydantic = pytest.importorskip("pydantic")
    import openai

    class Lookup(pydantic.BaseModel):
        """Look a word up."""

        word: str
        language: Literal["en", "fr"] | None = None

    assert function_tool(Lookup) == openai.pydantic_function_tool(Lookup)


@pytest.mark.parametrize(
    ("fn", "kwargs", "field", "words"),
    [
        (untyped, {}, "untyped.city", "has no type annotation"),
        (star_args, {}, "star_args.cities", "*cities cannot be described"),
        (lambda x: x, {}, "name", "'<lambda>' is not a valid tool name"),
        (get_weather, {"name": "get weather"}, "name", "not a valid tool name"),
        (42, {}, "int", "is not a function"),
    ],
)
def test_what_cannot_be_a_tool_raises_naming_the_argument(
    fn: Any, kwargs: dict[str, Any], field: str, words: str
) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        function_tool(fn, **kwargs)
    assert info.value.field == field
    assert words in info.value.problem


def test_untyped_arguments_are_any_without_strict() -> None:
    parameters = function_tool(untyped, strict=False)["function"]["parameters"]
    assert parameters["properties"] == {"city": {}, "unit": {"default": "c"}}


# ---------------------------------------------------------------- arguments


def test_arguments_are_checked_and_converted() -> None:
    spec = function_tool(get_weather).spec
    assert spec.parse_arguments('{"city": "Paris", "unit": "f", "days": 2}') == {
        "city": "Paris",
        "unit": "f",
        "days": 2,
    }
    # null, or left out, means "use the default": the argument is not passed at all
    assert spec.parse_arguments('{"city": "Paris", "unit": null, "days": null}') == {
        "city": "Paris",
        "days": None,
    }
    assert spec.parse_arguments('{"city": "Paris"}') == {"city": "Paris"}
    assert spec.call(spec.parse_arguments('{"city": "Rome"}')) == {
        "city": "Rome",
        "unit": "c",
        "days": None,
    }


@pytest.mark.parametrize(
    ("arguments", "path", "words"),
    [
        ("{not json", (), "not valid JSON"),
        ("[1]", (), "expected a JSON object"),
        ('{"unit": "c"}', ("city",), "is required"),
        ('{"city": 3}', ("city",), "expected string"),
        ('{"city": "x", "unit": "k"}', ("unit",), "expected one of 'c', 'f'"),
        ('{"city": "x", "mood": 1}', ("mood",), "is not a known field"),
    ],
)
def test_bad_arguments_say_where(arguments: str, path: tuple[Any, ...], words: str) -> None:
    with pytest.raises(Mismatch) as info:
        function_tool(get_weather).spec.parse_arguments(arguments)
    assert info.value.path == path
    assert words in info.value.reason


def test_class_tools_parse_into_instances() -> None:
    assert function_tool(Move).spec.parse_arguments('{"direction": "left", "steps": null}') == Move(
        "left"
    )


def test_class_and_nested_arguments_become_instances() -> None:
    def draw(points: list[Point], tone: Tone) -> int:
        return len(points)

    draw.__annotations__.update(points=list[Point], tone=Tone)  # a local function
    spec = function_tool(draw).spec
    parsed = spec.parse_arguments('{"points": [{"x": 1, "y": 2.5}], "tone": "low"}')
    assert parsed == {"points": [Point(1.0, 2.5)], "tone": Tone.LOW}


def test_partials_methods_and_callable_objects() -> None:
    class Greeter:
        def greet(self, name: str) -> str:
            return "hi " + name

        async def __call__(self, name: str) -> str:
            return name

    greeter = Greeter()
    assert function_tool(greeter.greet).spec.parse_arguments('{"name": "x"}') == {"name": "x"}
    assert function_tool(greeter, name="echo").spec.is_async
    partial = functools.partial(get_weather, unit="f")
    tool = function_tool(partial, name="weather_f")
    assert tool["function"]["parameters"]["required"] == ["city", "unit", "days"]


def test_results_become_text() -> None:
    assert format_result("as is") == "as is"
    assert format_result({"a": 1}) == '{"a": 1}'
    assert format_result(Move("left")) == '{"direction": "left", "steps": 1}'
    assert format_result([Point(1, 2), Tone.HIGH]) == '[{"x": 1, "y": 2}, "high"]'
    assert format_result(datetime.date(2024, 1, 2)) == '"2024-01-02"'
    assert format_result(None) == "null"
    with pytest.raises(TypeError):
        format_result(object())


# ---------------------------------------------------------------- the loop, stepped by hand


def _completion(
    *tool_calls: tuple[str, str], text: str | None = None
) -> CreateChatCompletionResponse:
    message: dict[str, Any] = {"role": "assistant", "content": text}
    if tool_calls:
        message["tool_calls"] = [
            {"id": f"call_{i}", "type": "function", "function": {"name": n, "arguments": a}}
            for i, (n, a) in enumerate(tool_calls)
        ]
    finish = "tool_calls" if tool_calls else "stop"
    return CreateChatCompletionResponse.from_dict(
        {"choices": [{"index": 0, "message": message, "finish_reason": finish}]}
    )


def _loop(tools: list[Any], max_rounds: int = 10) -> Any:
    config = ClientConfig.resolve(base_url="http://test.invalid/v1", api_key="k")
    setup = prepare_tool_run(
        {"model": "m", "messages": [{"role": "user", "content": "Hi"}]},
        tools,
        max_rounds=max_rounds,
        allow_async=True,
    )
    planned: list[list[Any]] = []

    def plan(messages: list[Any]) -> Call:
        from chatlib._call import plan_call

        planned.append(list(messages))
        return plan_call(
            config, None, {**setup.params, "messages": messages, "tools": setup.tools}, stream=False
        )

    return tool_loop(setup, plan), planned


def test_the_loop_as_a_generator_of_commands() -> None:
    def boom(x: int) -> int:
        raise ValueError(f"bad x {x}")

    loop, planned = _loop([get_weather, boom])
    command = next(loop)
    assert isinstance(command, CallModel) and command.round == 1
    json.loads(command.call.http_request.body)  # a real request, ready to send
    first = _completion(
        ("get_weather", '{"city": "Paris", "unit": "c", "days": null}'),
        ("boom", '{"x": 2}'),
        ("nope", "{}"),
        ("get_weather", "{oops"),
    )
    assert isinstance(loop.send(first), Emit)  # the round's completion, as an event
    command = loop.send(None)
    assert isinstance(command, RunTools)
    assert [i.name for i in command.invocations] == ["get_weather", "boom", "nope", "get_weather"]
    assert first.choices[0].message.tool_calls[0].function.parsed_arguments == {
        "city": "Paris",
        "unit": "c",
        "days": None,
    }
    results = [invocation.run() for invocation in command.invocations]
    assert results[0].content == '{"city": "Paris", "unit": "c", "days": null}'
    assert results[1].content == "Error: boom raised ValueError: bad x 2"
    assert isinstance(results[1].error, ValueError)
    assert results[2].content.startswith("Error: there is no tool named 'nope'")
    assert "get_weather, boom" in results[2].content
    assert results[3].content.startswith("Error: the arguments of get_weather are not valid JSON")
    command = loop.send(results)
    assert isinstance(command, CallModel) and command.round == 2
    sent = json.loads(command.call.http_request.body)["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "tool", "tool", "tool", "tool"]
    assert [m.get("tool_call_id") for m in sent[2:]] == ["call_0", "call_1", "call_2", "call_3"]
    loop.send(_completion(text="Sunny."))
    done = loop.send(None)
    assert isinstance(done, Emit) and isinstance(done.event, ToolRunDone)
    with pytest.raises(StopIteration) as stop:
        loop.send(None)
    result = stop.value.value
    assert result.text == "Sunny."
    assert len(result.completions) == 2 and len(result.tool_results) == 4
    assert [m.role if hasattr(m, "role") else m["role"] for m in result.messages][-1] == "assistant"
    assert len(planned) == 2


def test_the_loop_stops_at_max_rounds_after_running_the_last_tools() -> None:
    loop, _ = _loop([get_weather], max_rounds=2)
    next(loop)
    for round_number in (1, 2):
        loop.send(_completion(("get_weather", '{"city": "Paris"}')))
        command = loop.send(None)
        assert isinstance(command, RunTools)
        if round_number == 1:
            assert isinstance(loop.send([i.run() for i in command.invocations]), CallModel)
    with pytest.raises(ToolLoopLimitError) as info:
        loop.send([i.run() for i in command.invocations])
    assert info.value.max_rounds == 2
    assert len(info.value.completions) == 2
    assert [getattr(m, "role", None) or m["role"] for m in info.value.messages] == [
        "user",
        "assistant",
        "tool",
        "assistant",
        "tool",
    ]


def test_calls_to_tools_without_a_function_end_the_loop_for_the_caller() -> None:
    lookup = {
        "type": "function",
        "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}},
    }
    loop, _ = _loop([get_weather, Move, lookup])
    next(loop)
    loop.send(
        _completion(
            ("get_weather", '{"city": "Paris"}'),
            ("Move", '{"direction": "left", "steps": 2}'),
            ("lookup", "{}"),
        )
    )
    command = loop.send(None)
    assert [i.name for i in command.invocations] == ["get_weather"]
    done = loop.send([i.run() for i in command.invocations])
    result = done.event.result
    assert [c.function.name for c in result.pending_tool_calls] == ["Move", "lookup"]
    assert result.pending_tool_calls[0].function.parsed_arguments == Move("left", 2)
    assert [getattr(m, "role", None) or m["role"] for m in result.messages][-1] == "tool"


@pytest.mark.parametrize(
    ("params", "tools", "max_rounds", "field"),
    [
        ({}, [get_weather], 10, "messages"),
        ({"messages": []}, [], 10, "tools"),
        ({"messages": []}, [get_weather], 0, "max_rounds"),
        ({"messages": [], "n": 2}, [get_weather], 10, "n"),
        ({"messages": [], "stream": True}, [get_weather], 10, "stream"),
        ({"messages": []}, [untyped], 10, "tools[0].untyped.city"),
    ],
)
def test_tool_run_arguments_are_checked(
    params: dict[str, Any], tools: list[Any], max_rounds: int, field: str
) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        prepare_tool_run(params, tools, max_rounds=max_rounds, allow_async=True)
    assert info.value.field == field


def test_async_tools_need_the_async_client() -> None:
    async def fetch(url: str) -> str:
        return url

    with pytest.raises(InvalidArgumentError, match=r"tools\[0\]: fetch is an async function"):
        prepare_tool_run({"messages": []}, [fetch], max_rounds=3, allow_async=False)
