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
import operator
import sys
from collections.abc import Callable, Iterator, Mapping
from typing import Any, ClassVar, TypeVar

import attrs

if sys.version_info >= (3, 11):  # typing has them: typing_extensions is not loaded
    from typing import dataclass_transform
else:  # pragma: no cover
    from typing_extensions import dataclass_transform

from chatlib._display import RichDisplay
from chatlib._headers import redact

__all__ = [
    "EMPTY_EXTRA",
    "LOCAL",
    "MODEL_TAIL",
    "Model",
    "OpenEnum",
    "is_local",
    "local_field",
    "model",
    "model_fields_shown",
]


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

    def __repr__(self) -> str:
        # Valid Python: `ChatRole.USER`, or `FinishReason('new_reason')` for a value the
        # class did not declare.
        name = type(self).__name__
        if self._name_ in type(self).__members__:
            return f"{name}.{self._name_}"
        return f"{name}({self._value_!r})"

    @classmethod
    def parse(cls, value: str) -> Any:
        """The member for `value`, created on the fly when it is not a known one."""
        found = cls._value2member_map_.get(value)
        return found if found is not None else cls(value)


MODEL_TAIL = frozenset({"extra", "_fields_set"})
"""The two fields `model` adds to every model: its unknown fields and its set-field names."""

LOCAL = "chatlib_local"
"""The attrs metadata key of a client-side field: never sent, never parsed, never compared."""


def local_field() -> Any:
    """A field chatlib fills in on the client (`message.parsed`, `function.parsed_arguments`,
    the response headers a completion keeps in `_headers`).

    It is not part of the wire data: `to_dict()`, `fields_set`, the repr, parsing and `==`
    ignore it, the constructor does not take it, and it starts as `None`; a copy and a
    pickle keep it.
    """
    return attrs.field(default=None, init=False, eq=False, metadata={LOCAL: True})


def is_local(field: attrs.Attribute[Any]) -> bool:
    """Whether `field` is client-side, not wire data: declared with `local_field()`."""
    return bool(field.metadata.get(LOCAL))


class Model(RichDisplay):
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
            name
            for name in self._fields_set
            if name in declared and name not in MODEL_TAIL and not is_local(declared[name])
        )

    def __repr__(self) -> str:
        shown = [f"{name}={value!r}" for name, value in model_fields_shown(self)]
        return f"{type(self).__name__}({', '.join(shown)})"

    def __eq__(self, other: object) -> bool:
        # attrs' own `eq=True`, written once here instead of compiled for every class: the
        # same class, and equal tuples of the compared fields (client-side ones excluded).
        if other.__class__ is not self.__class__:
            return NotImplemented
        compared = _compared(self.__class__)
        return compared(self) == compared(other)

    __hash__ = None  # type: ignore[assignment]

    _repr_pretty_ = RichDisplay._repr_pretty_  # beside `__repr__`, for IPython (see there)


def model_fields_shown(obj: Model) -> list[tuple[str, Any]]:
    """The (name, value) pairs a repr shows: fields set or not `None`, then `extra`.

    Header fields (`extra_headers`) show their credentials as `'<redacted>'`.
    """
    shown: list[tuple[str, Any]] = []
    for field in type(obj).__attrs_attrs__:
        name = field.name
        if name in MODEL_TAIL:
            continue
        if is_local(field):
            continue  # client-side (`parsed`): not a constructor argument, so not in a repr
        value = getattr(obj, name)
        if value is not None or name in obj._fields_set:
            if name == "extra_headers" and value:
                value = redact(value)
            shown.append((name, value))
    if obj.extra:
        shown.append(("extra", dict(obj.extra)))
    return shown


_COMPARED: dict[type, Callable[[Any], tuple[Any, ...]]] = {}


def _compared(cls: type[Model]) -> Callable[[Any], tuple[Any, ...]]:
    """The tuple of `cls`'s compared fields (`eq=True`) of an instance, read at once."""
    getter = _COMPARED.get(cls)
    if getter is None:
        names = [f.name for f in cls.__attrs_attrs__ if f.eq]
        many = operator.attrgetter(*names) if names else None
        if many is None:
            getter = _no_fields
        elif len(names) == 1:
            getter = lambda obj, one=many: (one(obj),)  # noqa: E731
        else:
            getter = many
        _COMPARED[cls] = getter
    return getter


def _no_fields(obj: Any) -> tuple[Any, ...]:
    return ()


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

    Do not declare `extra` and `_fields_set` (`MODEL_TAIL`): the decorator adds them itself,
    after the declared fields.
    """
    annotations = cls.__dict__.get("__annotations__", {})
    annotations["extra"] = "Mapping[str, Any]"
    annotations["_fields_set"] = "frozenset[str]"
    cls.extra = attrs.field(default=EMPTY_EXTRA, repr=False)  # type: ignore[attr-defined]
    cls._fields_set = attrs.field(  # type: ignore[attr-defined]
        default=frozenset(), init=False, eq=False, repr=False
    )
    # eq=False: `Model.__eq__` compares the same fields attrs' `eq=True` would, without a
    # method compiled per class (import time).
    built = attrs.define(cls, slots=True, kw_only=True, repr=False, eq=False, weakref_slot=False)
    _track_fields_set(built)
    return built
