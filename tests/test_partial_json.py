"""The partial JSON parser behind `parsed` in stream events, against jiter's partial mode.

The official SDK parses a streamed structured answer with `jiter.from_json(text,
partial_mode=True)`; chatlib's `PartialJSON` must give the same value for every prefix of
every JSON document (jiter raises where the prefix has no value yet: chatlib gives nothing),
however the text is split into pieces.
"""

from __future__ import annotations

import itertools
import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chatlib._partial_json import NOTHING, PartialJSON, parse_partial_json

jiter = pytest.importorskip("jiter")


def jiter_value(text: str) -> Any:
    try:
        return jiter.from_json(text.encode(), partial_mode=True)
    except ValueError:
        return NOTHING


def ours(text: str) -> Any:
    parser = PartialJSON()
    parser.feed(text)
    return parser.value()


def same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a is b if NOTHING in (a, b) else a == b and type(a) is type(b)


def check_every_prefix(text: str) -> None:
    for end in range(len(text) + 1):
        prefix = text[:end]
        assert same(ours(prefix), jiter_value(prefix)), prefix


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=12,
)
layouts = st.sampled_from(
    [
        {},
        {"separators": (",", ":")},
        {"indent": 2},
        {"ensure_ascii": False},
        {"indent": "\t", "ensure_ascii": False},
    ]
)


@settings(max_examples=150, deadline=None)
@given(value=json_values, layout=layouts)
def test_every_prefix_of_any_document_gives_what_jiter_gives(value: Any, layout: Any) -> None:
    check_every_prefix(json.dumps(value, **layout))


@settings(max_examples=100, deadline=None)
@given(value=json_values, cuts=st.lists(st.integers(0, 400), max_size=12))
def test_the_value_does_not_depend_on_how_the_text_is_split(value: Any, cuts: list[int]) -> None:
    text = json.dumps(value, ensure_ascii=False)
    bounds = sorted({0, len(text), *(c for c in cuts if c < len(text))})
    parser = PartialJSON()
    for start, end in itertools.pairwise(bounds):
        parser.feed(text[start:end])
        assert same(parser.value(), jiter_value(text[:end]))
    assert parser.value() == value or (isinstance(value, float) and math.isnan(value))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"name": "Ad', {}),
        ('{"name": "Ada", "age": 3', {"name": "Ada", "age": 3}),
        ('{"tags": ["x", "y', {"tags": ["x"]}),
        ('{"a": {"b": tr', {"a": {}}),
        ('{"a": [{"b"', {"a": [{}]}),
        ('{"a": 1.', {}),
        ('{"a": 1e', {}),
        ('{"a": -', {}),
        ('{"a": 12', {"a": 12}),
        ('{"a": true', {"a": True}),
        ('{"a": "x\\n\\u00e9\\"', {}),
        ('{"a": "x\\n\\u00e9\\""', {"a": 'x\n\u00e9"'}),
        ('{"a": 1} trailing text', {"a": 1}),
        ("[1, [2, [3", [1, [2, [3]]]),
        ("  \n {", {}),
        ('"done"', "done"),
        ("42", 42),
    ],
)
def test_known_prefixes(text: str, expected: Any) -> None:
    assert parse_partial_json(text) == expected
    assert same(ours(text), jiter_value(text))


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        '"open string',
        "tru",
        "Sure! Here is the JSON:",
        '{"a" 1',
        "{,",
        '{"a": 1,}',
        "[1,]",
    ],
)
def test_text_that_has_no_value_gives_nothing(text: str) -> None:
    assert ours(text) is NOTHING
    assert parse_partial_json(text) is None


def test_once_broken_it_stays_broken_and_the_same_value_is_reused() -> None:
    parser = PartialJSON()
    parser.feed('{"a": [1, 2,')
    first = parser.value()
    assert first == {"a": [1, 2]}
    parser.feed('  "tw')
    assert parser.value() is first  # nothing more has completed: not parsed again
    parser.feed('o"]}')
    assert parser.value() == {"a": [1, 2, "two"]}
    broken = PartialJSON()
    broken.feed('{"a": 1, x')
    assert broken.value() is NOTHING
    broken.feed('"b": 2}')
    assert broken.value() is NOTHING


def test_a_long_document_fed_in_small_pieces_is_scanned_once() -> None:
    document = json.dumps({"items": [{"id": i, "name": f"item {i}"} for i in range(3000)]})
    parser = PartialJSON()
    for start in range(0, len(document), 7):
        parser.feed(document[start : start + 7])
    assert parser.value() == json.loads(document)
