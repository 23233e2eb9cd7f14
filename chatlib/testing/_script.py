"""A script of actions written as JSON, for `chatlib serve --script FILE` and any language.

A script is a JSON list; each entry is one action, consumed by one request:

- a string: `Reply` with that content;
- an object whose `"type"` names the action (`"reply"`, the default, `"error"`, `"raw"`,
  `"disconnect"`, `"stall"`, `"trickle"`, `"in_stream_error"`) and whose other keys are that
  action's fields, e.g. `{"type": "error", "status": 429, "headers": {"retry-after": "0"}}`.
  Byte fields (`body`, `after`) take strings (sent as UTF-8; `body` may also be a list of
  strings, one per piece).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Final

from chatlib.testing.actions import (
    Action,
    Disconnect,
    ErrorReply,
    InStreamError,
    RawReply,
    Reply,
    Stall,
    Trickle,
)

__all__ = ["script_from_json"]

_TYPES: Final[dict[str, type[Any]]] = {
    "reply": Reply,
    "error": ErrorReply,
    "raw": RawReply,
    "disconnect": Disconnect,
    "stall": Stall,
    "trickle": Trickle,
    "in_stream_error": InStreamError,
}
_BYTE_FIELDS: Final = ("body", "after")


def _encoded(value: Any) -> Any:
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, list) and all(isinstance(piece, str) for piece in value):
        return [piece.encode("utf-8") for piece in value]
    return value


def _action(entry: Any) -> Action:
    if isinstance(entry, str):
        return Reply(entry)
    if not isinstance(entry, dict):
        raise ValueError(f"expected a string or an object, got {type(entry).__name__}")
    fields = dict(entry)
    kind = fields.pop("type", "reply")
    cls = _TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise ValueError(f"unknown type {kind!r}; one of: {', '.join(_TYPES)}")
    known = [field.name for field in dataclasses.fields(cls)]
    unknown = sorted(set(fields) - set(known))
    if unknown:
        raise ValueError(f"{kind} has no field {unknown[0]!r}; its fields: {', '.join(known)}")
    for name in _BYTE_FIELDS:
        if name in fields:
            fields[name] = _encoded(fields[name])
    try:
        action: Action = cls(**fields)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{kind}: {exc}") from None
    return action


def script_from_json(data: Any) -> list[Action]:
    """The actions a JSON script (already parsed) stands for, in order.

    Raises:
        ValueError: The script is not a list, or an entry is not an action; the message
            names the entry (from 0) and what is wrong with it.
    """
    if not isinstance(data, list):
        raise ValueError(f"a script is a JSON list of actions, not {type(data).__name__}")
    actions = []
    for index, entry in enumerate(data):
        try:
            actions.append(_action(entry))
        except ValueError as exc:
            raise ValueError(f"script entry {index}: {exc}") from None
    return actions
