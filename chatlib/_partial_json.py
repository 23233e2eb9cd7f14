"""JSON that is still arriving, parsed as far as it has fully arrived. Pure.

A streamed structured answer (`response_format` JSON, a tool call's `arguments`) is a prefix
of a JSON document until its last delta. `PartialJSON` is fed the pieces and gives, at any
point, the value made of what has fully arrived: object members whose value is complete,
array items that are complete, containers that are open (as far as they go), numbers and
`true`/`false`/`null` that end where the text ends. A string, key or number that is cut off
is left out. This is what the official SDK gets from `jiter.from_json(..., partial_mode=True)`
(the default partial mode, where cut-off strings are dropped), so a stream's `parsed` values
match its:

| text so far | value |
|---|---|
| `{"name": "Ad` | `{}` |
| `{"name": "Ada", "age": 3` | `{"name": "Ada", "age": 3}` |
| `{"tags": ["x", "y` | `{"tags": ["x"]}` |
| `{"a": {"b": tr` | `{"a": {}}` |

It scans each piece once, keeping where the complete part ends and which brackets would
close it, and parses that part with `json.loads`: linear Python work over the whole stream,
plus one C-speed parse per value asked for. Text that cannot be the start of a JSON document
(prose, a syntax error) has no value: `value()` gives `NOTHING`, for good.
"""

from __future__ import annotations

import json
import re
from typing import Any, Final

__all__ = ["NOTHING", "PartialJSON", "parse_partial_json"]


class _Nothing:
    __slots__ = ()

    def __repr__(self) -> str:
        return "NOTHING"


NOTHING: Final[Any] = _Nothing()
"""What `PartialJSON.value` gives while there is no value yet (or the text is not JSON)."""

_WHITESPACE = frozenset(" \t\n\r")
_TOKEN_END = frozenset(" \t\n\r,]}:")
_TOKEN_START = frozenset("-0123456789tfnNI")
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_NUMBER_PREFIX = re.compile(r"-?(?:(?:0|[1-9][0-9]*)(?:\.[0-9]*)?(?:[eE][+-]?[0-9]*)?)?")
_LITERALS = ("true", "false", "null", "NaN", "Infinity", "-Infinity")  # as json.loads reads them

# What a container expects next.
_KEY_OR_END = 0  # after `{`
_KEY = 1  # after `,` in an object
_COLON = 2  # after a key
_VALUE = 3  # after `:`, after `,` in an array, or at the top
_VALUE_OR_END = 4  # after `[`
_AFTER_VALUE = 5  # after a member or an item
_MAY_CLOSE = (_KEY_OR_END, _VALUE_OR_END, _AFTER_VALUE)  # where a container may end (inside one)


def _complete_token(token: str) -> bool:
    return token in _LITERALS or _NUMBER.fullmatch(token) is not None


def _token_prefix(token: str) -> bool:
    if any(literal.startswith(token) for literal in _LITERALS):
        return True
    return _NUMBER_PREFIX.fullmatch(token) is not None


class PartialJSON:
    """Feed the text of a JSON document as it arrives; `value()` is what has fully arrived."""

    __slots__ = (
        "_broken",
        "_closers",
        "_cut",
        "_escape",
        "_expect",
        "_finished",
        "_in_key",
        "_in_string",
        "_last",
        "_last_value",
        "_pos",
        "_stack",
        "_text",
        "_token_start",
    )

    def __init__(self) -> None:
        self._text = ""
        self._pos = 0  # how far the text has been scanned
        self._stack: list[str] = []  # the open containers, as their closing brackets
        self._expect = _VALUE
        self._in_string = False
        self._in_key = False
        self._escape = False
        self._token_start = -1  # where a number or literal being read starts
        self._cut = -1  # the end of the complete part, -1 while there is none
        self._closers = ""  # the brackets that close the complete part
        self._finished = False  # the top-level value is complete: the rest is ignored
        self._broken = False
        self._last: tuple[int, str, int] | None = None
        self._last_value: Any = NOTHING

    @property
    def text(self) -> str:
        """Everything fed so far."""
        return self._text

    def feed(self, piece: str) -> None:
        """Add the next piece of the document."""
        if not piece:
            return
        self._text += piece
        if not (self._broken or self._finished):
            self._scan()

    def value(self) -> Any:
        """The value made of what has fully arrived, or `NOTHING` (nothing yet, or not JSON).

        The same object is returned again while no more of the document has completed.
        """
        if self._broken:
            return NOTHING
        text = self._text
        cut, closers = self._cut, self._closers
        token = self._token_start
        if token >= 0:  # a number or literal runs to the end of the text so far
            if _complete_token(text[token:]):
                cut, closers = len(text), "".join(reversed(self._stack))
            elif not _token_prefix(text[token:]):
                self._broken = True
                return NOTHING
        if cut < 0:
            return NOTHING
        key = (cut, closers, len(text) if token >= 0 else -1)
        if key == self._last:
            return self._last_value
        try:
            value = json.loads(text[:cut] + closers)
        except (ValueError, RecursionError):
            self._broken = True  # what has arrived already breaks the JSON rules
            return NOTHING
        self._last, self._last_value = key, value
        return value

    # ------------------------------------------------------------ the scanner

    def _complete(self, end: int) -> None:
        """A value ended at `end` (exclusive): the complete part reaches there."""
        if not self._stack:
            self._finished = True
            self._cut, self._closers = end, ""
            return
        self._expect = _AFTER_VALUE
        self._cut, self._closers = end, "".join(reversed(self._stack))

    def _scan(self) -> None:
        text = self._text
        i, n = self._pos, len(text)
        stack = self._stack
        while i < n:
            ch = text[i]
            if self._in_string:
                if self._escape:
                    self._escape = False
                elif ch == "\\":
                    self._escape = True
                elif ch == '"':
                    self._in_string = False
                    if self._in_key:
                        self._in_key = False
                        self._expect = _COLON
                    else:
                        self._complete(i + 1)
                        if self._finished:
                            break
                i += 1
                continue
            if self._token_start >= 0:
                if ch not in _TOKEN_END and ch not in '"[{':
                    i += 1
                    continue
                token = text[self._token_start : i]
                self._token_start = -1
                if not _complete_token(token):
                    self._broken = True
                    break
                self._complete(i)
                if self._finished:
                    break
                continue  # the delimiter is read next
            if ch in _WHITESPACE:
                i += 1
                continue
            expect = self._expect
            if expect in _MAY_CLOSE and ch == stack[-1]:  # `]` or `}`: the container ends
                stack.pop()
                self._complete(i + 1)
                if self._finished:
                    break
            elif expect in (_VALUE, _VALUE_OR_END):
                if ch == '"':
                    self._in_string = True
                elif ch in "{[":
                    stack.append("}" if ch == "{" else "]")
                    self._expect = _KEY_OR_END if ch == "{" else _VALUE_OR_END
                    self._cut, self._closers = i + 1, "".join(reversed(stack))
                elif ch in _TOKEN_START:
                    self._token_start = i
                else:
                    self._broken = True
                    break
            elif expect in (_KEY_OR_END, _KEY):
                if ch == '"':
                    self._in_string = self._in_key = True
                else:
                    self._broken = True
                    break
            elif expect == _COLON:
                if ch != ":":
                    self._broken = True
                    break
                self._expect = _VALUE
            elif ch == ",":  # _AFTER_VALUE
                self._expect = _KEY if stack[-1] == "}" else _VALUE
            else:
                self._broken = True
                break
            i += 1
        self._pos = i


def parse_partial_json(text: str) -> Any:
    """The value of the JSON prefix `text` (see `PartialJSON`), or `None` when it has none."""
    parser = PartialJSON()
    parser.feed(text)
    value = parser.value()
    return None if value is NOTHING else value
