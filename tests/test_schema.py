"""`chatlib.json_schema`: Python types to JSON schemas, strict ones for OpenAI's strict mode;
dict schemas made strict; JSON checked against schemas (with `jsonschema` as the oracle) and
built back into the types; docstrings read in three styles."""

from __future__ import annotations

import dataclasses
import datetime
import enum
import json
import re
import uuid
from typing import Annotated, Any, Generic, Literal, TypeVar, Union

import attrs
import jsonschema
import pytest
from typing_extensions import NotRequired, Required, TypedDict

from chatlib import InvalidArgumentError, json_schema
from chatlib._docstrings import parse_docstring
from chatlib._schema import SchemaError, strict_schema
from chatlib._typed_json import check, structure
from tests.conftest import assert_strict_schema

# ---------------------------------------------------------------- the types under test


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


@attrs.define
class Address:
    """A postal address.

    Attributes:
        city: The city.
    """

    city: str
    zip_code: Annotated[str, "The postal code"]
    lines: list[str] = attrs.Factory(list)


@attrs.define
class Person:
    name: str
    role: Literal["admin", "user"]
    address: Address | None
    tags: list[str]
    friends: list[Person] = attrs.Factory(list)
    color: Color = Color.RED


@dataclasses.dataclass
class Node:
    """A tree."""

    name: str
    children: list[Node]
    weight: float = 1.0


class Movie(TypedDict, total=False):
    title: Required[str]
    year: int
    rating: NotRequired[Annotated[float, "From 0 to 10"]]


class Strict(TypedDict):
    title: str
    subtitle: NotRequired[str]


@attrs.define
class Free:
    scores: dict[str, int]


@attrs.define
class Untyped:
    anything: Any


@attrs.define
class Pair:
    both: tuple[int, str]


@attrs.define
class Dates:
    when: datetime.datetime
    day: datetime.date
    id: uuid.UUID


T = TypeVar("T")


@attrs.define
class Page(Generic[T]):
    items: list[T]
    total: int


# ---------------------------------------------------------------- strict schemas


def test_the_strict_schema_of_a_nested_attrs_class_with_optional_literal_and_list_fields() -> None:
    schema = json_schema(Person)
    nullable_address = {"anyOf": [{"$ref": "#/$defs/Address"}, {"type": "null"}]}
    assert schema == {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "role": {"type": "string", "enum": ["admin", "user"]},
            "address": nullable_address,
            "tags": {"type": "array", "items": {"type": "string"}},
            # Fields with a default may be left out: strict mode needs them, nullable.
            "friends": {
                "anyOf": [{"type": "array", "items": {"$ref": "#"}}, {"type": "null"}],
            },
            "color": {
                "anyOf": [{"type": "string", "enum": ["red", "blue"]}, {"type": "null"}],
            },
        },
        "required": ["name", "role", "address", "tags", "friends", "color"],
        "additionalProperties": False,
        "$defs": {
            "Address": {
                "type": "object",
                "description": "A postal address.",
                "properties": {
                    "city": {"type": "string", "description": "The city."},
                    "zip_code": {"type": "string", "description": "The postal code"},
                    "lines": {
                        "anyOf": [{"type": "array", "items": {"type": "string"}}, {"type": "null"}]
                    },
                },
                "required": ["city", "zip_code", "lines"],
                "additionalProperties": False,
            }
        },
    }
    assert_strict_schema(schema)


@pytest.mark.parametrize("tp", [Person, Address, Node, Movie, Strict, Dates, Page[Address]])
def test_every_strict_schema_follows_the_strict_mode_rules(tp: Any) -> None:
    assert_strict_schema(json_schema(tp))


def test_a_recursive_dataclass_refers_to_the_root() -> None:
    assert json_schema(Node) == {
        "type": "object",
        "description": "A tree.",
        "properties": {
            "name": {"type": "string"},
            "children": {"type": "array", "items": {"$ref": "#"}},
            "weight": {"anyOf": [{"type": "number"}, {"type": "null"}]},
        },
        "required": ["name", "children", "weight"],
        "additionalProperties": False,
    }


def test_typed_dicts_required_and_not_required_keys() -> None:
    strict = json_schema(Movie)
    assert strict["required"] == ["title", "year", "rating"]
    assert strict["properties"]["year"] == {"anyOf": [{"type": "integer"}, {"type": "null"}]}
    assert strict["properties"]["rating"]["description"] == "From 0 to 10"
    loose = json_schema(Movie, strict=False)
    assert loose["required"] == ["title"]
    assert json_schema(Strict, strict=False)["required"] == ["title"]  # NotRequired, total=True


def test_non_strict_schemas_show_defaults_and_require_only_what_has_none() -> None:
    schema = json_schema(Person, strict=False)
    assert schema["required"] == ["name", "role", "address", "tags"]
    assert schema["properties"]["color"] == {
        "type": "string",
        "enum": ["red", "blue"],
        "default": "red",
    }
    assert schema["properties"]["friends"]["default"] == []
    assert "additionalProperties" not in schema


def test_formats_generics_and_annotated_descriptions() -> None:
    dates = json_schema(Dates)["properties"]
    assert dates["when"] == {"type": "string", "format": "date-time"}
    assert dates["day"] == {"type": "string", "format": "date"}
    assert dates["id"] == {"type": "string", "format": "uuid"}
    page = json_schema(Page[int])
    assert page["properties"]["items"] == {"type": "array", "items": {"type": "integer"}}
    assert json_schema(Annotated[int, "a count"], strict=False) == {
        "type": "integer",
        "description": "a count",
    }


def test_unions_and_literals_outside_strict_mode() -> None:
    assert json_schema(Union[int, str, None], strict=False) == {
        "anyOf": [{"type": "integer"}, {"type": "string"}, {"type": "null"}]
    }
    assert json_schema(Literal[1, "a", None], strict=False) == {
        "anyOf": [{"type": ["integer", "string"], "enum": [1, "a"]}, {"type": "null"}]
    }
    assert json_schema(dict[str, list[int]], strict=False) == {
        "type": "object",
        "additionalProperties": {"type": "array", "items": {"type": "integer"}},
    }
    assert json_schema(set[str], strict=False) == {
        "type": "array",
        "items": {"type": "string"},
        "uniqueItems": True,
    }


@pytest.mark.parametrize(
    ("tp", "field", "words"),
    [
        (Free, "Free.scores", "a dict with free keys"),
        (Untyped, "Untyped.anything", "has no type (Any)"),
        (Pair, "Pair.both", "a tuple of fixed length"),
        (list[int], "list[int]", "an object at the root"),
        (bytes, "bytes", "has no JSON schema"),
    ],
)
def test_what_strict_mode_cannot_express_raises_naming_the_field(
    tp: Any, field: str, words: str
) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        json_schema(tp)
    assert info.value.field == field
    assert words in info.value.problem


def test_the_schema_is_a_fresh_copy() -> None:
    first = json_schema(Person)
    first["properties"].clear()
    assert json_schema(Person)["properties"]


# ---------------------------------------------------------------- pydantic, by duck typing


def test_pydantic_models_match_the_official_sdk_strict_schema() -> None:
    pydantic = pytest.importorskip("pydantic")
    from openai.lib._pydantic import to_strict_json_schema

    class Tag(pydantic.BaseModel):
        label: str = pydantic.Field(description="A label")

    class Tree(pydantic.BaseModel):
        """A tree node."""

        name: str
        children: list[Tree] = []  # noqa: RUF012 (a pydantic field)

    class Item(pydantic.BaseModel):
        name: str
        price: float | None = None
        kind: Literal["a", "b"]
        color: Color
        tag: Tag
        maybe_tag: Tag | None = None
        described_tag: Tag = pydantic.Field(description="described")
        tree: Tree
        count: int = 3

    Tree.model_rebuild()

    def without_defaults(node: Any) -> Any:
        # The official SDK keeps non-null defaults; strict mode refuses `default`, so chatlib
        # leaves every one out.
        if isinstance(node, dict):
            return {k: without_defaults(v) for k, v in node.items() if k != "default"}
        if isinstance(node, list):
            return [without_defaults(v) for v in node]
        return node

    for model in (Tag, Tree, Item):
        ours = json_schema(model)
        assert ours == without_defaults(to_strict_json_schema(model)), model.__name__
        assert_strict_schema(ours)


def test_a_pydantic_model_inside_an_attrs_class() -> None:
    pydantic = pytest.importorskip("pydantic")

    class Inner(pydantic.BaseModel):
        value: int

    @attrs.define
    class Outer:
        inner: Inner

    Outer.__annotations__["inner"] = Inner  # a local class: give attrs the real type
    schema = json_schema(Outer)
    assert schema["properties"]["inner"] == {"$ref": "#/$defs/Inner"}
    assert schema["$defs"]["Inner"]["additionalProperties"] is False
    assert_strict_schema(schema)


# ---------------------------------------------------------------- dict schemas made strict


def test_strict_schema_closes_objects_and_rewrites_what_strict_mode_refuses() -> None:
    schema = {
        "type": "object",
        "title": "Shape",
        "properties": {
            "name": {"type": "string", "minLength": 1, "default": "x"},
            "kind": {"oneOf": [{"const": "a"}, {"const": "b"}]},
            "size": {"allOf": [{"$ref": "#/$defs/Size"}]},
            "other": {"$ref": "#/$defs/Size", "description": "Another size"},
            "when": {"type": "string", "format": "uri"},
        },
        "required": ["name"],
        "$defs": {"Size": {"type": "object", "properties": {"w": {"type": "integer"}}}},
    }
    strict = strict_schema(schema)
    assert strict["properties"]["name"] == {"type": "string"}
    assert strict["properties"]["kind"] == {"anyOf": [{"const": "a"}, {"const": "b"}]}
    assert strict["properties"]["size"] == {"$ref": "#/$defs/Size"}
    assert strict["properties"]["other"] == {
        "type": "object",
        "properties": {"w": {"type": "integer"}},
        "description": "Another size",
        "required": ["w"],
        "additionalProperties": False,
    }
    assert strict["properties"]["when"] == {"type": "string"}
    assert_strict_schema(strict)
    assert schema["required"] == ["name"]  # the given schema is left as it was


@pytest.mark.parametrize(
    ("schema", "words"),
    [
        ({"type": "object", "additionalProperties": {"type": "integer"}}, "free keys"),
        ({"type": "object"}, "without properties"),
        ({"type": "array", "items": {"type": "string"}}, 'object ("type": "object") at the'),
        ({"type": "object", "properties": {"a": {"not": {"type": "null"}}}}, "'not'"),
        ({"type": "object", "properties": {"a": {"allOf": [{}, {}]}}}, "'allOf' with several"),
    ],
)
def test_strict_schema_refuses_what_it_cannot_express(schema: Any, words: str) -> None:
    with pytest.raises(SchemaError, match=re.escape(words)):
        strict_schema(schema)


# ---------------------------------------------------------------- checking JSON, against jsonschema


SAMPLES: list[Any] = [
    {"name": "Ada", "role": "admin", "address": None, "tags": [], "friends": [], "color": "red"},
    {"name": "Ada", "role": "admin", "address": None, "tags": [], "friends": None, "color": None},
    {
        "name": "Ada",
        "role": "user",
        "address": {"city": "London", "zip_code": "N1", "lines": ["1 St"]},
        "tags": ["a"],
        "friends": [
            {"name": "B", "role": "user", "address": None, "tags": [], "friends": [], "color": None}
        ],
        "color": "blue",
    },
    {"name": "Ada", "role": "root", "address": None, "tags": [], "friends": [], "color": "red"},
    {"name": 1, "role": "admin", "address": None, "tags": [], "friends": [], "color": "red"},
    {"name": "Ada", "role": "admin", "address": None, "tags": [3], "friends": [], "color": "red"},
    {
        "name": "Ada",
        "role": "admin",
        "address": None,
        "tags": [],
        "friends": [],
        "color": "red",
        "x": 1,
    },
    {"name": "Ada", "role": "admin", "tags": [], "friends": [], "color": "red"},
    {
        "name": "Ada",
        "role": "admin",
        "address": {"city": "L"},
        "tags": [],
        "friends": [],
        "color": None,
    },
    {
        "name": "Ada",
        "role": "admin",
        "address": None,
        "tags": [],
        "friends": [
            {"name": "B", "role": "x", "address": None, "tags": [], "friends": [], "color": None}
        ],
        "color": None,
    },
    {"name": "Ada", "role": "admin", "address": None, "tags": [], "friends": [], "color": "green"},
    {"name": "Ada", "role": "admin", "address": None, "tags": True, "friends": [], "color": "red"},
    [],
    None,
]


@pytest.mark.parametrize("strict", [True, False])
@pytest.mark.parametrize("sample", range(len(SAMPLES)))
def test_check_agrees_with_jsonschema(sample: int, strict: bool) -> None:
    schema = json_schema(Person, strict=strict)
    value = SAMPLES[sample]
    expected = jsonschema.Draft202012Validator(schema).is_valid(value)
    assert (check(schema, value) is None) == expected


@pytest.mark.parametrize(
    ("value", "path", "words"),
    [
        (SAMPLES[3], ("role",), "expected one of 'admin', 'user', got string 'root'"),
        (SAMPLES[4], ("name",), "expected string, got integer 1"),
        (SAMPLES[5], ("tags", 0), "expected string"),
        (SAMPLES[6], ("x",), "is not a known field"),
        (SAMPLES[7], ("address",), "is required but missing"),
        (SAMPLES[8], ("address", "zip_code"), "is required but missing"),
        (SAMPLES[9], ("friends", 0, "role"), "expected one of"),
    ],
)
def test_check_names_the_first_field_that_fails(
    value: Any, path: tuple[Any, ...], words: str
) -> None:
    problem = check(json_schema(Person), value)
    assert problem is not None
    assert problem.path == path
    assert words in problem.reason


def test_numbers_bools_and_integers_are_told_apart() -> None:
    assert check({"type": "integer"}, True) is not None
    assert check({"type": "integer"}, 2.0) is None
    assert check({"type": "number"}, 2) is None
    assert check({"enum": [1]}, True) is not None
    assert check({"type": "integer", "minimum": 3}, 2) is not None


# ---------------------------------------------------------------- JSON back to the types


def test_structure_builds_nested_classes_and_null_means_the_default() -> None:
    person = structure(SAMPLES[2], Person, strict=True)
    assert person == Person(
        name="Ada",
        role="user",
        address=Address(city="London", zip_code="N1", lines=["1 St"]),
        tags=["a"],
        friends=[Person(name="B", role="user", address=None, tags=[])],
        color=Color.BLUE,
    )
    defaulted = structure(SAMPLES[1], Person, strict=True)
    assert defaulted.friends == [] and defaulted.color is Color.RED


def test_structure_typed_dicts_dataclasses_dates_and_generics() -> None:
    assert structure({"title": "Up", "year": None, "rating": 8.5}, Movie, strict=True) == {
        "title": "Up",
        "rating": 8.5,
    }
    assert structure({"name": "r", "children": [], "weight": None}, Node, strict=True) == Node(
        "r", []
    )
    dates = structure(
        {"when": "2024-05-01T10:00:00Z", "day": "2024-05-01", "id": str(uuid.UUID(int=1))},
        Dates,
        strict=True,
    )
    assert dates.when == datetime.datetime(2024, 5, 1, 10, tzinfo=datetime.timezone.utc)
    assert dates.id == uuid.UUID(int=1)
    page = structure(
        {"items": [{"city": "a", "zip_code": "1", "lines": None}], "total": 1},
        Page[Address],
        strict=True,
    )
    assert page.items == [Address("a", "1")]


def test_a_union_member_is_chosen_by_its_schema() -> None:
    assert structure("5", Union[int, str], strict=False) == "5"
    assert structure(5, Union[str, int], strict=False) == 5
    address = {"city": "a", "zip_code": "1", "lines": []}
    assert structure(address, Union[Node, Address], strict=True) == Address("a", "1", [])


def _even(instance: Any, attribute: Any, value: int) -> None:
    if value % 2:
        raise ValueError("must be even")


@attrs.define
class Positive:
    n: int = attrs.field(validator=attrs.validators.gt(0))


@attrs.define
class Even:
    label: str
    n: int = attrs.field(validator=[attrs.validators.instance_of(int), _even])


@attrs.define
class Checked:
    items: list[Positive]
    evens: list[Even]


def test_an_attrs_validator_failure_names_its_field() -> None:
    with pytest.raises(SchemaError) as info:
        structure({"n": -1}, Positive, strict=True)
    assert info.value.path == ("n",)
    assert info.value.reason == "ValueError: 'n' must be > 0: -1"
    with pytest.raises(SchemaError) as info:
        structure({"items": [{"n": 1}, {"n": 0}], "evens": []}, Checked, strict=True)
    assert info.value.path == ("items", 1, "n")
    with pytest.raises(SchemaError) as info:  # a validator of one's own: found in its frame
        structure({"items": [], "evens": [{"label": "a", "n": 3}]}, Checked, strict=True)
    assert (info.value.path, info.value.reason) == (("evens", 0, "n"), "ValueError: must be even")


# ---------------------------------------------------------------- docstrings


GOOGLE = """Get the weather.

    More about it.

    Args:
        city (str): The city,
            e.g. Paris.
        unit: Celsius or Fahrenheit.

    Returns:
        The weather.
    """

NUMPY = """Get the weather.

    More about it.

    Parameters
    ----------
    city : str
        The city,
        e.g. Paris.
    unit : {"c", "f"}, optional
        Celsius or Fahrenheit.

    Returns
    -------
    dict
    """

REST = """Get the weather.

    More about it.

    :param city: The city,
        e.g. Paris.
    :param str unit: Celsius or Fahrenheit.
    :returns: the weather
    """


@pytest.mark.parametrize("doc", [GOOGLE, NUMPY, REST], ids=["google", "numpy", "rest"])
def test_docstrings_in_three_styles(doc: str) -> None:
    parsed = parse_docstring(doc)
    assert parsed.summary == "Get the weather.\n\nMore about it."
    assert parsed.params == {"city": "The city, e.g. Paris.", "unit": "Celsius or Fahrenheit."}


def test_a_json_schema_round_trips_through_json() -> None:
    assert json.loads(json.dumps(json_schema(Person))) == json_schema(Person)
