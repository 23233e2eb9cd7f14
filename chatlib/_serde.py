"""JSON-shaped data <-> chatlib models.

Structuring (parsing server output, the hot path) uses a function compiled once per model
class (`structure_hook`): primitive fields are taken as they come (servers are loose with
types: `code` may be an int, `bytes` may be null), nested models, lists of models, open
enums and `type`-tagged unions are converted; unknown keys land in `extra`; which keys were
present is remembered.
Unstructuring emits the fields that were set plus `extra`, recursively. Client-side fields
(`local_field()`) are neither read from the JSON nor written to it.
"""

from __future__ import annotations

import enum
import sys
import types
from collections import abc
from collections.abc import Callable, Mapping
from typing import Any, TypeVar, Union, get_args, get_origin

import attrs

from chatlib._model_base import EMPTY_EXTRA, MODEL_TAIL, Model, OpenEnum, is_local

__all__ = ["structure", "structure_hook", "unstructure"]  # and `converter`, made on first use

_T = TypeVar("_T")


_PRIMITIVES = (str, int, float, bool, type(None))


class ModelShapeError(TypeError):
    """Data does not have the shape a model needs (caught and wrapped by the core)."""


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, Model) and attrs.has(tp)


def _union_members(tp: Any) -> tuple[Any, ...] | None:
    origin = get_origin(tp)
    if origin is Union or (sys.version_info >= (3, 10) and origin is types.UnionType):
        return get_args(tp)
    return None


def _tag_of(cls: type[Model]) -> str | None:
    for field in attrs.fields(cls):
        if field.name == "type" and isinstance(field.default, str):
            return field.default
    return None


def _plan(tp: Any) -> Callable[[Any], Any] | None:
    """How to convert a raw JSON value into `tp`; `None` means "take it as it is"."""
    members = _union_members(tp)
    if members is not None:
        real = [m for m in members if m is not type(None)]
        if len(real) == 1:
            return _plan(real[0])
        return _union_plan(real)
    if _is_model(tp):
        return _hook(tp)
    if isinstance(tp, type) and issubclass(tp, OpenEnum):
        return _enum_plan(tp)
    if get_origin(tp) in (list, abc.Sequence):
        (item,) = get_args(tp) or (Any,)
        item_plan = _plan(item)
        if item_plan is None:
            return None
        return _list_plan(item_plan)
    return None


def _hook(cls: type[Model]) -> Callable[[Any], Any]:
    return structure_hook(cls)


_HOOKS: dict[type, Callable[..., Any]] = {}


def structure_hook(cls: type[Any]) -> Callable[..., Any]:
    """The structuring function of model class `cls`, compiled on first use:
    `hook(data, None)` parses JSON-shaped `data` (or raises `ModelShapeError`)."""
    hook = _HOOKS.get(cls)
    if hook is None:
        hook = _HOOKS[cls] = _make_structure_fn(cls)
    return hook


def _enum_plan(cls: type[OpenEnum]) -> Callable[[Any], Any]:
    known = cls._value2member_map_
    parse = cls.parse

    def convert(value: Any) -> Any:
        if value.__class__ is not str:
            return value
        member = known.get(value)
        return member if member is not None else parse(value)

    return convert


def _list_plan(item_plan: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def convert(value: Any) -> Any:
        if value.__class__ is not list:
            raise ModelShapeError(f"expected a list, got {type(value).__name__}")
        if None in value:
            raise ModelShapeError("expected an object in the list, got null")
        return [item_plan(x) for x in value]

    return convert


def _union_plan(members: list[Any]) -> Callable[[Any], Any] | None:
    """A union of `type`-tagged models (with str/dict/list passthrough members)."""
    tagged: dict[str, Callable[[Any], Any]] = {}
    list_plan: Callable[[Any], Any] | None = None
    enum_plan: Callable[[Any], Any] | None = None
    for member in members:
        if isinstance(member, type) and issubclass(member, OpenEnum):
            enum_plan = _enum_plan(member)
        elif _is_model(member):
            tag = _tag_of(member)
            if tag is not None:
                tagged[tag] = _hook(member)
        elif get_origin(member) in (list, abc.Sequence):
            list_plan = _plan(member)
    if enum_plan is not None:
        return enum_plan  # `ChatRole | str`: every string becomes a (possibly new) member
    if not tagged and list_plan is None:
        return None

    def convert(value: Any) -> Any:
        if value.__class__ is dict:
            hook = tagged.get(value.get("type"))  # type: ignore[arg-type]
            return hook(value) if hook is not None else value
        if value.__class__ is list and list_plan is not None:
            return list_plan(value)
        return value

    return convert


def _field_types(cls: type[Model], fields: list[attrs.Attribute[Any]]) -> dict[str, Any]:
    # Evaluate in the module namespace only: the class namespace holds slot descriptors named
    # `type` or `bytes` that would shadow the builtins in the annotations.
    namespace = vars(sys.modules[cls.__module__])
    return {f.name: eval(f.type, namespace) if isinstance(f.type, str) else f.type for f in fields}


# The most key sets remembered per class (each shared by every object parsed with those keys).
_MAX_SHAPES = 64


def _make_structure_fn(cls: type[Model]) -> Callable[..., Any]:
    fields = [f for f in attrs.fields(cls) if f.name not in MODEL_TAIL and not is_local(f)]
    local = [f.name for f in attrs.fields(cls) if is_local(f)]
    hints = _field_types(cls, fields)
    null_lists: list[str] = []
    known = frozenset(f.name for f in fields)
    env: dict[str, Any] = {
        "_cls": cls,
        "_new": object.__new__,
        "_known": known,
        "_EMPTY": EMPTY_EXTRA,
        "_frozenset": frozenset,
        "_dict": dict,
        "_err": ModelShapeError,
    }
    lines = [
        "def structure(d, _t=None):",
        "    if d.__class__ is not _dict:",
        f"        raise _err('{cls.__name__} expects a JSON object, got ' + type(d).__name__)",
        "    o = _new(_cls)",
    ]
    for field in fields:
        name = field.name
        plan = _plan(hints[name])
        required_list = field.default is attrs.NOTHING and get_origin(hints[name]) is list
        default_expr = "[]" if required_list else "None"
        if required_list:
            null_lists.append(name)
        if field.default is not attrs.NOTHING and field.default is not None:
            env[f"_default_{name}"] = field.default
            default_expr = f"_default_{name}"
        if plan is None:
            lines.append(f"    v = d.get({name!r})")
            if default_expr != "None":
                lines.append(f"    o.{name} = {default_expr} if v is None else v")
            else:
                lines.append(f"    o.{name} = v")
        else:
            env[f"_p_{name}"] = plan
            lines.append(f"    v = d.get({name!r})")
            lines.append(f"    o.{name} = {default_expr} if v is None else _p_{name}(v)")
    lines += [f"    o.{name} = None" for name in local]  # client-side: never in the JSON
    shapes: dict[tuple[str, ...], tuple[frozenset[str], bool]] = {}

    def shape(keys: tuple[str, ...]) -> tuple[frozenset[str], bool]:
        present = frozenset(keys)
        found = (present, present <= known)
        if len(shapes) < _MAX_SHAPES:
            shapes[keys] = found
        return found

    env["_shapes"] = shapes
    env["_shape"] = shape
    env["_tuple"] = tuple
    lines += [
        # Objects with the same keys share one frozenset of them (the fields set): servers
        # send the same few shapes again and again, and a frozenset is 200-700 bytes.
        "    k = _tuple(d)",
        "    s = _shapes.get(k)",
        "    if s is None:",
        "        s = _shape(k)",
        "    o._fields_set = s[0]",
        "    o.extra = _EMPTY if s[1] else {k: v for k, v in d.items() if k not in _known}",
    ]
    for name in null_lists:
        # A required list the server sent as null (vLLM's `"choices": null`) reads as []
        # but must serialise back as null: remember it with a marker in the set-field names.
        lines += [
            f"    if {name!r} in d and d[{name!r}] is None:",
            f"        o._fields_set = o._fields_set | {{{_null_marker(name)!r}}}",
        ]
    lines.append("    return o")
    exec(compile("\n".join(lines), f"<chatlib structure {cls.__name__}>", "exec"), env)
    fn: Callable[..., Any] = env["structure"]
    return fn  # cattrs calls hooks with (value, type); plans call it with the value alone


def _null_marker(name: str) -> str:
    return "\0null:" + name


_LEAVES = frozenset(_PRIMITIVES)  # exact classes that unstructure to themselves
_UNSTRUCTURERS: dict[type, Callable[[Any], dict[str, Any]]] = {}


def _unstructure_value(value: Any) -> Any:
    cls = value.__class__
    if cls in _LEAVES:
        return value
    # Exact-type fast paths (plain dict messages, lists of them): no abstract isinstance checks.
    if cls is dict:
        return {k: v if v.__class__ in _LEAVES else _unstructure_value(v) for k, v in value.items()}
    if cls is list:
        return [v if v.__class__ in _LEAVES else _unstructure_value(v) for v in value]
    fn = _UNSTRUCTURERS.get(cls)
    if fn is not None:
        return fn(value)
    if isinstance(value, Model):
        return _unstructure_model(value)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (list, tuple)):
        return [_unstructure_value(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _unstructure_value(v) for k, v in value.items()}
    return value


def make_unstructurer(
    cls: type[Model], *, raw: frozenset[str] = frozenset()
) -> Callable[[Any], dict[str, Any]]:
    """Compile `cls`'s unstructure function: one attribute read per field, no `getattr` loop.

    A field is emitted when it is not `None`, or when it was set (`None` then). A list
    left empty that was never set stays out; one the server sent as null goes back as null.
    Unknown fields in `extra` follow. The fields named in `raw` are emitted as they are,
    for a caller that converts them itself.
    """
    env: dict[str, Any] = {"_leaves": _LEAVES, "_uv": _unstructure_value, "_EMPTY": EMPTY_EXTRA}
    lines = ["def unstructure(o, _t=None):", "    fs = o._fields_set", "    out = {}"]
    for field in cls.__attrs_attrs__:
        name = field.name
        if name in MODEL_TAIL or is_local(field):
            continue
        key = repr(name)
        emit = "v" if name in raw else "_uv(v)"
        lines += [
            f"    v = o.{name}",
            "    if v is None:",
            f"        if {key} in fs:",
            f"            out[{key}] = None",
            "    elif v.__class__ in _leaves:",
            f"        out[{key}] = v",
            "    elif v == []:",  # a required list: out if never set, null if sent as null
            f"        if {key} in fs:",
            f"            out[{key}] = None if {_null_marker(name)!r} in fs else {emit}",
            "    else:",
            f"        out[{key}] = {emit}",
        ]
    lines += [
        "    e = o.extra",
        "    if e is not _EMPTY:",
        "        for k, v in e.items():",
        "            out[k] = _uv(v)",
        "    return out",
    ]
    exec(compile("\n".join(lines), f"<chatlib unstructure {cls.__name__}>", "exec"), env)
    fn: Callable[[Any], dict[str, Any]] = env["unstructure"]
    return fn


def _unstructure_model(obj: Model) -> dict[str, Any]:
    cls = type(obj)
    fn = _UNSTRUCTURERS.get(cls)
    if fn is None:
        fn = _UNSTRUCTURERS[cls] = make_unstructurer(cls)
    return fn(obj)


_CONVERTER: list[Any] = []


def _converter() -> Any:
    """A cattrs converter that knows the models (their compiled hooks), made on first use:
    for types that are not models (`list[ChatMessage]`...). cattrs is not loaded before."""
    if not _CONVERTER:
        import cattrs

        made = cattrs.Converter()
        made.register_structure_hook_factory(_is_model, structure_hook)
        made.register_unstructure_hook_factory(_is_model, lambda cls: _unstructure_model)
        _CONVERTER.append(made)
    return _CONVERTER[0]


def __getattr__(name: str) -> Any:
    if name == "converter":  # the cattrs converter, made (and cattrs loaded) when asked for
        return _converter()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def structure(data: Any, cls: type[_T]) -> _T:
    """Parse JSON-shaped `data` into `cls`; raises `ModelShapeError` on a wrong shape."""
    if _is_model(cls):
        model: _T = structure_hook(cls)(data, None)
        return model
    result: _T = _converter().structure(data, cls)
    return result


def unstructure(obj: Any) -> Any:
    """Turn a model (or any JSON-shaped value holding models) into plain JSON data."""
    return _unstructure_value(obj)
