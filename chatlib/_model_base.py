"""What every chatlib model shares: attrs slots, "fields that were set", unknown fields, open enums.

A model remembers which fields were *set*: given to its constructor, or present in the JSON
it was parsed from. `to_dict()` emits exactly those (plus any field later assigned a
non-`None` value, plus the unknown fields kept in `extra`), so a request sends only what
the caller set and a parsed response serialises back to the server's own JSON.
"""

from __future__ import annotations

import copy
import enum
import functools
from collections.abc import Callable, Iterator, Mapping
from typing import Any, ClassVar, TypeVar

import attrs
from typing_extensions import dataclass_transform

__all__ = ["EMPTY_EXTRA", "Model", "OpenEnum", "model"]


class _EmptyExtra(Mapping[str, Any]):
    """The shared, immutable `extra` of a model that has no unknown fields."""

    __slots__ = ()

    def __getitem__(self, key: str) -> Any:
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0

    # Fast paths: Mapping's defaults go through a raised KeyError, on every chunk.
    def get(self, key: str, default: Any = None) -> Any:
        return default

    def __contains__(self, key: object) -> bool:
        return False

    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return "{}"

    def __reduce__(self) -> str:
        return "EMPTY_EXTRA"


EMPTY_EXTRA: Mapping[str, Any] = _EmptyExtra()
_T = TypeVar("_T")
_M = TypeVar("_M", bound="Model")


class OpenEnum(str, enum.Enum):
    """A string enum that accepts values it does not know.

    `FinishReason("new_reason")` returns a member whose value is `"new_reason"`, so a
    server that invents a value never breaks parsing, and the value comes back unchanged.
    Members compare equal to their string values.
    """

    @classmethod
    def _missing_(cls, value: object) -> Any:
        if not isinstance(value, str):
            return None
        member = str.__new__(cls, value)
        member._name_ = value.upper()
        member._value_ = value
        cls._value2member_map_[value] = member
        return member

    def __str__(self) -> str:
        return str(self.value)

    @classmethod
    def parse(cls, value: str) -> Any:
        """The member for `value`, created on the fly when it is not a known one."""
        found = cls._value2member_map_.get(value)
        return found if found is not None else cls(value)


def _hidden(name: str) -> bool:
    """Fields that are not wire data: `extra`, `_fields_set`, and any other private slot
    (such as the response headers a completion keeps beside its JSON)."""
    return name == "extra" or name[0] == "_"


class Model:
    """Base class of all wire models.

    `extra` holds the fields a server sent that this class does not declare (vendor
    additions such as `reasoning_content` or `x_groq`).
    """

    __slots__ = ()
    __attrs_attrs__: ClassVar[tuple[attrs.Attribute[Any], ...]]
    _fields_set: frozenset[str]
    extra: Mapping[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """This model as JSON-ready data: the fields that were set, plus `extra`."""
        from chatlib._serde import unstructure

        result: dict[str, Any] = unstructure(self)
        return result

    @classmethod
    def from_dict(cls: type[_T], data: Mapping[str, Any]) -> _T:
        """Parse JSON-shaped data (unknown fields kept, unknown enum values accepted)."""
        from chatlib._serde import structure

        return structure(data, cls)

    def replace(self: _M, **changes: Any) -> _M:
        """A shallow copy with `changes` applied; the changed fields count as set."""
        clone = copy.copy(self)
        for name, value in changes.items():
            setattr(clone, name, value)
        clone._fields_set = self._fields_set | frozenset(changes)
        return clone

    @property
    def fields_set(self) -> frozenset[str]:
        """Names of the declared fields that were given or parsed (`None` included)."""
        # The parser records the raw key set (cheap on the hot path); filter it on request.
        declared = attrs.fields_dict(type(self))
        return frozenset(
            name for name in self._fields_set if name in declared and not _hidden(name)
        )

    def __repr__(self) -> str:
        shown = []
        for field in type(self).__attrs_attrs__:
            name = field.name
            if _hidden(name):
                continue
            value = getattr(self, name)
            if value is not None or name in self._fields_set:
                shown.append(f"{name}={value!r}")
        if self.extra:
            shown.append(f"extra={dict(self.extra)!r}")
        return f"{type(self).__name__}({', '.join(shown)})"


def _track_fields_set(cls: type[Any]) -> None:
    init: Callable[..., None] = cls.__init__

    @functools.wraps(init)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        kwargs.pop("extra", None)
        self._fields_set = frozenset(kwargs)

    cls.__init__ = __init__


@dataclass_transform(field_specifiers=(attrs.field,), kw_only_default=True)
def model(cls: type[_T]) -> type[_T]:
    """Make `cls` a slotted, keyword-only attrs model with set-field tracking.

    Declare `extra` and `_fields_set` last, via `MODEL_TAIL`-style fields:
    the decorator adds them itself.
    """
    annotations = cls.__dict__.get("__annotations__", {})
    annotations["extra"] = "Mapping[str, Any]"
    annotations["_fields_set"] = "frozenset[str]"
    cls.extra = attrs.field(default=EMPTY_EXTRA, repr=False)  # type: ignore[attr-defined]
    cls._fields_set = attrs.field(  # type: ignore[attr-defined]
        default=frozenset(), init=False, eq=False, repr=False
    )
    built = attrs.define(cls, slots=True, kw_only=True, repr=False, eq=True, weakref_slot=False)
    _track_fields_set(built)
    return built
