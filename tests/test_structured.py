"""Structured outputs over real loopback HTTP, for both clients: `parse` (and a class given to
`create`/`stream`) sends the strict schema and parses the answer; each failure has its own
error carrying the response. The official SDK's `parse()` is the oracle where both apply."""

from __future__ import annotations

import dataclasses
import json
import pickle
from typing import Any, Literal

import attrs
import pytest
from typing_extensions import NotRequired, TypedDict

from chatlib import (
    ContentFilterFinishReasonError,
    InvalidArgumentError,
    LengthFinishReasonError,
    OutputValidationError,
    RefusalError,
    StructuredOutputError,
    json_schema,
)
from chatlib.testing import LocalServer, Reply
from tests.conftest import FacadeDriver, assert_strict_schema

MESSAGES = [{"role": "user", "content": "Who wrote the first program?"}]


@attrs.define
class Address:
    city: str
    zip_code: str


@attrs.define
class Person:
    name: str
    born: int
    kind: Literal["human", "robot"]
    address: Address | None
    languages: list[str]


@dataclasses.dataclass
class Book:
    title: str
    year: int = 0


class Movie(TypedDict):
    title: str
    rating: NotRequired[float]


ADA = {
    "name": "Ada Lovelace",
    "born": 1815,
    "kind": "human",
    "address": {"city": "London", "zip_code": "W1"},
    "languages": ["en", "fr"],
}


def _sent_format(server: LocalServer) -> Any:
    return server.requests[-1].json()["response_format"]


def test_parse_sends_the_strict_schema_and_returns_the_instance(
    facade: FacadeDriver, server: LocalServer, chat_request_validator: Any
) -> None:
    chat = facade.client(base_url=server.base_url)
    server.enqueue(Reply.json(ADA))
    resp = chat.parse(model="m", messages=MESSAGES, response_format=Person)
    person = resp.choices[0].message.parsed
    assert person == Person("Ada Lovelace", 1815, "human", Address("London", "W1"), ["en", "fr"])
    assert resp.parsed is person
    assert json.loads(resp.choices[0].message.content) == ADA  # the raw text is kept
    body = server.requests[-1].json()
    chat_request_validator.validate(body)
    sent = body["response_format"]
    assert sent["type"] == "json_schema"
    assert sent["json_schema"]["name"] == "Person"
    assert sent["json_schema"]["strict"] is True
    schema = sent["json_schema"]["schema"]
    assert schema == json_schema(Person)
    assert_strict_schema(schema)
    assert schema["properties"]["kind"] == {"type": "string", "enum": ["human", "robot"]}
    assert schema["properties"]["address"] == {
        "anyOf": [{"$ref": "#/$defs/Address"}, {"type": "null"}]
    }
    assert schema["properties"]["languages"] == {"type": "array", "items": {"type": "string"}}
    assert schema["$defs"]["Address"]["required"] == ["city", "zip_code"]
    # `parsed` is the client's: never in the wire data, never in equality
    assert "parsed" not in json.dumps(resp.to_dict())
    clone = type(resp).from_dict(resp.to_dict())
    assert clone == resp and clone.parsed is None


@pytest.mark.parametrize(
    ("response_format", "content", "expected"),
    [
        (Book, {"title": "Notes", "year": None}, Book("Notes", 0)),
        (Movie, {"title": "Up", "rating": None}, {"title": "Up"}),
        (
            {"type": "object", "properties": {"n": {"type": "integer"}}},
            {"n": 3},
            {"n": 3},
        ),
    ],
    ids=["dataclass", "typeddict", "schema-dict"],
)
def test_parse_other_kinds_of_types(
    facade: FacadeDriver, server: LocalServer, response_format: Any, content: Any, expected: Any
) -> None:
    chat = facade.client(base_url=server.base_url)
    server.enqueue(Reply.json(content))
    assert chat.parse(model="m", messages=MESSAGES, response_format=response_format).parsed == (
        expected
    )
    assert_strict_schema(_sent_format(server)["json_schema"]["schema"])


def test_parse_a_whole_json_schema_format_or_json_mode(
    facade: FacadeDriver, server: LocalServer
) -> None:
    chat = facade.client(base_url=server.base_url)
    given = {
        "type": "json_schema",
        "json_schema": {
            "name": "n",
            "strict": True,
            "schema": {
                "type": "object",
                "properties": {"n": {"type": "integer"}},
                "required": ["n"],
                "additionalProperties": False,
            },
        },
    }
    server.enqueue(Reply.json({"n": 1}), Reply('{"n": "one"}'), Reply.json([1, 2]))
    assert chat.parse(model="m", messages=MESSAGES, response_format=given).parsed == {"n": 1}
    assert _sent_format(server) == given  # sent exactly as given
    with pytest.raises(OutputValidationError) as info:
        chat.parse(model="m", messages=MESSAGES, response_format=given)
    assert info.value.field == "n"
    json_mode = {"type": "json_object"}
    assert chat.parse(model="m", messages=MESSAGES, response_format=json_mode).parsed == [1, 2]


def test_create_and_stream_take_a_class_too(facade: FacadeDriver, server: LocalServer) -> None:
    chat = facade.client(base_url=server.base_url)
    server.enqueue(Reply.json(ADA), Reply.json(ADA))
    created = chat.create(model="m", messages=MESSAGES, response_format=Person)
    assert created.parsed.address == Address("London", "W1")
    final = chat.final_completion(model="m", messages=MESSAGES, response_format=Person)
    assert final.parsed == created.parsed
    assert server.requests[-1].json()["stream"] is True
    assert _sent_format(server) == server.requests[0].json()["response_format"]


def test_a_stream_stopped_at_the_token_limit_raises_at_the_end(
    facade: FacadeDriver, server: LocalServer
) -> None:
    chat = facade.client(base_url=server.base_url)
    server.enqueue(Reply('{"name": "Ada', finish_reason="length"))
    with pytest.raises(LengthFinishReasonError) as info:
        chat.final_completion(model="m", messages=MESSAGES, response_format=Person)
    assert info.value.completion.choices[0].message.content == '{"name": "Ada'


@pytest.mark.parametrize(
    ("reply", "error", "words"),
    [
        (
            Reply('{"name": "Ada', finish_reason="length"),
            LengthFinishReasonError,
            "cut off at the token limit",
        ),
        (Reply("", finish_reason="content_filter"), ContentFilterFinishReasonError, "filter"),
        (Reply(refusal="I can't help with that."), RefusalError, "I can't help with that."),
        (Reply("Ada Lovelace, 1815"), OutputValidationError, "not valid JSON"),
    ],
    ids=["length", "content_filter", "refusal", "not-json"],
)
def test_each_failure_has_its_own_error_carrying_the_response(
    facade: FacadeDriver, server: LocalServer, reply: Reply, error: type, words: str
) -> None:
    chat = facade.client(base_url=server.base_url)
    server.enqueue(reply)
    with pytest.raises(error) as info:
        chat.parse(model="m", messages=MESSAGES, response_format=Person)
    exc = info.value
    assert isinstance(exc, StructuredOutputError)
    assert words in str(exc)
    assert exc.completion.choices[0].finish_reason == (reply.finish_reason or "stop")
    if isinstance(exc, RefusalError):
        assert exc.refusal == "I can't help with that."
    clone = pickle.loads(pickle.dumps(exc))
    assert type(clone) is type(exc) and str(clone) == str(exc)


def test_an_answer_that_does_not_match_names_the_first_field(
    facade: FacadeDriver, server: LocalServer
) -> None:
    chat = facade.client(base_url=server.base_url)
    wrong = {**ADA, "address": {"city": "London", "zip_code": 1}}
    server.enqueue(Reply.json(wrong))
    with pytest.raises(OutputValidationError) as info:
        chat.parse(model="m", messages=MESSAGES, response_format=Person)
    assert info.value.field == "address.zip_code"
    assert "expected string, got integer 1" in info.value.problem
    assert "address.zip_code" in str(info.value)
    assert json.loads(info.value.content) == wrong
    assert info.value.tool_call_id is None


@attrs.define
class Team:
    members: list[Address] = attrs.field(validator=attrs.validators.min_len(1))
    size: int = attrs.field(validator=attrs.validators.gt(0), default=1)


def test_an_attrs_validator_that_refuses_the_answer_names_its_field(
    facade: FacadeDriver, server: LocalServer
) -> None:
    chat = facade.client(base_url=server.base_url)
    server.enqueue(Reply.json({"members": [{"city": "Paris", "zip_code": "75"}], "size": 0}))
    with pytest.raises(OutputValidationError) as info:
        chat.parse(model="m", messages=MESSAGES, response_format=Team)
    assert info.value.field == "size"
    assert info.value.problem == "ValueError: 'size' must be > 0: 0"


def test_a_class_strict_mode_cannot_express_fails_before_any_request(
    facade: FacadeDriver, server: LocalServer
) -> None:
    @attrs.define
    class Scores:
        by_name: dict[str, int]

    chat = facade.client(base_url=server.base_url)
    with pytest.raises(InvalidArgumentError) as info:
        chat.parse(model="m", messages=MESSAGES, response_format=Scores)
    assert info.value.field == "response_format.by_name"
    with pytest.raises(InvalidArgumentError):
        chat.create(model="m", messages=MESSAGES, response_format=Scores)
    assert server.requests == []


def test_tool_calls_get_parsed_arguments(facade: FacadeDriver, server: LocalServer) -> None:
    def get_weather(city: str, unit: Literal["c", "f"] = "c") -> str:
        return city

    chat = facade.client(base_url=server.base_url)
    calls = [
        {"name": "get_weather", "arguments": {"city": "Paris", "unit": None}},
        {"name": "Address", "arguments": {"city": "Rome", "zip_code": "00100"}},
    ]
    server.enqueue(Reply(tool_calls=calls), Reply(tool_calls=calls))
    tools = [get_weather, Address]
    resp = chat.parse(model="m", messages=MESSAGES, tools=tools)
    weather, address = resp.choices[0].message.tool_calls
    assert weather.function.parsed_arguments == {"city": "Paris"}
    assert address.function.parsed_arguments == Address("Rome", "00100")
    assert "parsed_arguments" not in json.dumps(resp.to_dict())
    final = chat.final_completion(model="m", messages=MESSAGES, tools=tools)
    assert final.choices[0].message.tool_calls[1].function.parsed_arguments == Address(
        "Rome", "00100"
    )
    sent_tools = server.requests[-1].json()["tools"]
    assert [t["function"]["name"] for t in sent_tools] == ["get_weather", "Address"]
    server.enqueue(Reply(tool_calls=[{"name": "get_weather", "arguments": {"town": "x"}}]))
    with pytest.raises(OutputValidationError) as info:
        chat.create(model="m", messages=MESSAGES, tools=tools)
    assert info.value.tool_call_id is not None
    assert info.value.field == "city"


def test_every_choice_is_parsed(facade: FacadeDriver, server: LocalServer) -> None:
    chat = facade.client(base_url=server.base_url)
    server.enqueue(Reply.json({"title": "Notes", "year": 1843}))
    resp = chat.parse(model="m", messages=MESSAGES, response_format=Book, n=2)
    assert [c.message.parsed for c in resp.choices] == [Book("Notes", 1843)] * 2


# ---------------------------------------------------------------- the official SDK as the oracle


def test_same_request_and_result_as_the_official_parse(server: LocalServer) -> None:
    pydantic = pytest.importorskip("pydantic")
    import openai

    from chatlib import SyncChat

    class City(pydantic.BaseModel):
        name: str
        country: str
        population: int | None = None

    content = {"name": "Paris", "country": "FR", "population": 2100000}
    server.enqueue(Reply.json(content), Reply.json(content))
    official = openai.OpenAI(base_url=server.base_url, api_key="sk-test", max_retries=0)
    theirs = official.chat.completions.parse(model="m", messages=MESSAGES, response_format=City)
    with SyncChat(base_url=server.base_url, api_key="sk-test") as chat:
        ours = chat.parse(model="m", messages=MESSAGES, response_format=City)
    official.close()
    first, second = (r.json()["response_format"] for r in server.requests)
    assert first == second
    assert ours.parsed == theirs.choices[0].message.parsed

    server.enqueue(Reply('{"name": "Pa', finish_reason="length"))
    with pytest.raises(openai.LengthFinishReasonError):
        official = openai.OpenAI(base_url=server.base_url, api_key="sk-test", max_retries=0)
        try:
            official.chat.completions.parse(model="m", messages=MESSAGES, response_format=City)
        finally:
            official.close()
