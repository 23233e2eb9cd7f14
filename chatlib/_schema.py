"""JSON schemas from Python types, and schemas made fit for OpenAI's strict mode. Pure.

- `json_schema(tp, strict=...)`: the schema of a type (str, int, float, bool, None, lists,
  tuples, sets, `dict[str, T]`, unions, `Literal`, `Enum`, `Annotated[T, "description"]`,
  attrs classes, dataclasses, `TypedDict`, and pydantic-like classes read through their own
  `model_json_schema`, never importing pydantic). With `strict=True` the schema is one OpenAI's
  strict mode takes (Structured Outputs, strict function calling): every object closed
  (`additionalProperties: false`) with every property required, a field that may be left out
  (a default, `NotRequired`) made nullable, no keyword strict mode refuses. A type that strict
  mode cannot express raises `SchemaError` naming the field and the reason.
- `strict_schema(schema)`: the same rules applied to a schema given as a dict (a pydantic
  model's, or one written by hand).

Checking JSON against these schemas and building the types back from it is `_typed_json`'s
job; both read the types the same way (`unwrap`, `class_fields`).
"""

from __future__ import annotations

import collections.abc
import copy
import dataclasses
import datetime
import enum
import re
import sys
import types
import typing
import uuid
from collections.abc import Iterator, Mapping
from typing import Any, Literal, Union, get_args, get_origin

import attrs
import typing_extensions

from chatlib._docstrings import parse_docstring
from chatlib._model_base import Model
from chatlib.errors import InvalidArgumentError

__all__ = [
    "MISSING",
    "ClassField",
    "Path",
    "SchemaError",
    "admits_null",
    "class_fields",
    "class_summary",
    "describe_type",
    "field_name",
    "fields_schema",
    "is_class_type",
    "is_pydantic_like",
    "json_schema",
    "path_text",
    "require_object_root",
    "resolve_ref",
    "schema_of",
    "strict_schema",
    "substitute",
    "takes_none",
    "union_members",
    "unwrap",
]

Path = tuple[Union[str, int], ...]


class SchemaError(Exception):
    """A type (or schema) that cannot be expressed: `path` leads to the field, `reason` says
    why. The public functions turn it into an `InvalidArgumentError` naming that field."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path_text(path) or '(root)'}: {reason}")
        self.path = path
        self.reason = reason


def path_text(path: Path) -> str:
    """`("address", "lines", 0)` as `address.lines[0]`."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


def describe_type(tp: Any) -> str:
    """A short name for a type, for messages and schema names."""
    name = getattr(tp, "__name__", None)
    return name if isinstance(name, str) and get_origin(tp) is None else repr(tp)


# ---------------------------------------------------------------- reading the types

_QUALIFIERS = tuple(
    {
        q
        for module in (typing, typing_extensions)
        for q in (
            getattr(module, "Required", None),
            getattr(module, "NotRequired", None),
            getattr(module, "ReadOnly", None),
        )
        if q is not None
    }
)
_ANNOTATED = {typing.Annotated, typing_extensions.Annotated}
_LITERALS = {Literal, typing_extensions.Literal}
_SEQUENCES = {
    list,
    collections.abc.Sequence,
    collections.abc.MutableSequence,
    collections.abc.Iterable,
    collections.abc.Collection,
}
_SETS = {set, frozenset, collections.abc.Set, collections.abc.MutableSet}
_MAPPINGS = {dict, collections.abc.Mapping, collections.abc.MutableMapping}
_FORMATS: dict[type, str] = {
    datetime.datetime: "date-time",
    datetime.date: "date",
    datetime.time: "time",
    uuid.UUID: "uuid",
}


def unwrap(tp: Any) -> tuple[Any, str | None]:
    """`tp` without `Annotated`, `Required`/`NotRequired`, `NewType` and type aliases, and
    the description an `Annotated` carried (a string, or an object with one)."""
    description: str | None = None
    while True:
        origin = get_origin(tp)
        if origin in _ANNOTATED:
            for meta in tp.__metadata__:
                text = _description_of(meta)
                if text is not None:
                    description = text
            tp = tp.__origin__
        elif origin is not None and origin in _QUALIFIERS:
            tp = get_args(tp)[0]
        elif hasattr(tp, "__supertype__"):  # NewType
            tp = tp.__supertype__
        elif type(tp).__name__ == "TypeAliasType" and hasattr(tp, "__value__"):
            tp = tp.__value__
        else:
            return tp, description


def _description_of(meta: Any) -> str | None:
    if isinstance(meta, str):
        return meta
    for attribute in ("description", "documentation"):  # pydantic's Field, PEP 727's Doc
        text = getattr(meta, attribute, None)
        if isinstance(text, str):
            return text
    return None


def union_members(tp: Any) -> tuple[Any, ...] | None:
    origin = get_origin(tp)
    if origin is Union or (sys.version_info >= (3, 10) and origin is types.UnionType):
        return get_args(tp)
    return None


def is_pydantic_like(tp: Any) -> bool:
    """A class that gives its own JSON schema (`model_json_schema`), like a pydantic model."""
    return isinstance(tp, type) and callable(getattr(tp, "model_json_schema", None))


def is_class_type(tp: Any) -> bool:
    """A class whose fields chatlib reads: attrs, dataclass, TypedDict (or pydantic-like)."""
    if not isinstance(tp, type) or issubclass(tp, Model):
        return False
    return (
        attrs.has(tp)
        or dataclasses.is_dataclass(tp)
        or typing_extensions.is_typeddict(tp)
        or is_pydantic_like(tp)
    )


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()
"""A field's default when it has none (or one known only by calling a factory on `self`)."""


@attrs.frozen
class ClassField:
    """One field of a class, as its schema and its parsing see it."""

    name: str  # the JSON key
    type: Any  # unwrapped
    description: str | None
    optional: bool  # may be left out: it has a default, or is NotRequired
    default: Any = MISSING


def class_summary(cls: type) -> str | None:
    """The class's own docstring, without its sections (the generated dataclass one skipped)."""
    doc = cls.__dict__.get("__doc__")
    if not isinstance(doc, str) or (
        dataclasses.is_dataclass(cls) and doc.startswith(cls.__name__ + "(")
    ):
        return None
    return parse_docstring(doc).summary or None


def class_fields(cls: type, path: Path = ()) -> list[ClassField]:
    """The fields of an attrs class, a dataclass or a TypedDict, in declaration order."""
    try:
        hints = typing.get_type_hints(cls, include_extras=True)
    except Exception as exc:  # NameError for a forward reference that does not resolve
        raise SchemaError(
            path,
            f"cannot read the annotations of {cls.__name__} ({exc}); define the classes it "
            "uses at module level",
        ) from None
    documented = parse_docstring(cls.__dict__.get("__doc__")).params
    fields: list[ClassField] = []
    if attrs.has(cls) or dataclasses.is_dataclass(cls):
        for name, metadata, optional, default in _init_fields(cls):
            tp, description = unwrap(hints.get(name, Any))
            description = description or metadata.get("description")
            fields.append(
                ClassField(
                    name,
                    tp,
                    description or documented.get(name),
                    optional=optional,
                    default=default,
                )
            )
    else:  # a TypedDict
        required = getattr(cls, "__required_keys__", frozenset(hints))
        for name, hint in hints.items():
            tp, description = unwrap(hint)
            fields.append(
                ClassField(
                    name,
                    tp,
                    description or documented.get(name),
                    optional=not _is_required(hint, name in required),
                )
            )
    return fields


def _init_fields(cls: type) -> Iterator[tuple[str, Mapping[str, Any], bool, Any]]:
    """(name, metadata, optional, default) of each constructor field of an attrs class or a
    dataclass: a field is optional when it has a default or a factory (called here for the
    default it gives; `MISSING` for none, and for an attrs factory that takes `self`)."""
    if attrs.has(cls):
        for field in attrs.fields(cls):
            if field.init:
                default: Any = field.default
                optional = default is not attrs.NOTHING
                if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
                    default = default.factory() if not default.takes_self else MISSING
                yield field.name, field.metadata, optional, default if optional else MISSING
        return
    for dfield in dataclasses.fields(cls):
        if dfield.init:
            has_default = dfield.default is not dataclasses.MISSING
            has_factory = dfield.default_factory is not dataclasses.MISSING
            if has_default:
                value = dfield.default
            elif has_factory:
                value = dfield.default_factory()  # type: ignore[operator]
            else:
                value = MISSING
            yield dfield.name, dfield.metadata, has_default or has_factory, value


def _is_required(hint: Any, declared: bool) -> bool:
    """Whether a TypedDict key is required, read from its resolved hint: with string
    annotations (`from __future__ import annotations`) `__required_keys__` cannot know."""
    while True:
        origin = get_origin(hint)
        name = getattr(origin, "_name", None) or getattr(origin, "__name__", None)
        if name == "Required":
            return True
        if name == "NotRequired":
            return False
        if origin in _ANNOTATED or name == "ReadOnly":
            hint = get_args(hint)[0]
            continue
        return declared


# ---------------------------------------------------------------- types to schemas


class _Builder:
    """Builds one schema: classes go to `$defs` (the root class stays at the root, `#`)."""

    def __init__(self, *, strict: bool) -> None:
        self.strict = strict
        self.defs: dict[str, dict[str, Any]] = {}
        self.names: dict[Any, str] = {}
        self.root: Any = None

    def build(self, tp: Any) -> dict[str, Any]:
        bare, description = unwrap(tp)
        if is_pydantic_like(bare):
            schema = self._pydantic_root(bare)
        elif is_class_type(get_origin(bare) or bare):
            self.root = bare
            schema = self._object(bare, ())
        else:
            schema = self.node(tp, ())
        if description and "description" not in schema:
            schema["description"] = description
        if self.defs:
            schema["$defs"] = self.defs
        return schema

    def node(self, tp: Any, path: Path) -> dict[str, Any]:
        bare, description = unwrap(tp)
        schema = self._bare(bare, path)
        if description:
            schema = self._describe(schema, description)
        return schema

    def _describe(self, schema: dict[str, Any], description: str) -> dict[str, Any]:
        ref = schema.get("$ref")
        if ref is None:
            return {**schema, "description": description}
        # A `$ref` takes no sibling keywords in strict mode: inline the class (unless it is
        # being built: a recursive reference keeps its `$ref` and loses the description).
        name = ref.rpartition("/")[2]
        if ref != "#" and name in self.defs and self.defs[name]:
            return {**self.defs[name], "description": description}
        return schema

    def _bare(self, tp: Any, path: Path) -> dict[str, Any]:
        if tp is Any or tp is object:
            if self.strict:
                raise SchemaError(path, "has no type (Any) and strict mode needs one")
            return {}
        if tp is None or tp is type(None):
            return {"type": "null"}
        members = union_members(tp)
        if members is not None:
            return self._union(members, path)
        origin = get_origin(tp)
        if origin in _LITERALS:
            return self._literal(tp, path)
        if origin is not None:
            return self._generic(tp, origin, path)
        if not isinstance(tp, type):
            raise SchemaError(path, f"{tp!r} is not a type chatlib can describe")
        if issubclass(tp, enum.Enum):
            return _enum_schema([member.value for member in tp], path)
        for known, fmt in _FORMATS.items():
            if issubclass(tp, known):
                return {"type": "string", "format": fmt}
        if issubclass(tp, bool):
            return {"type": "boolean"}
        if issubclass(tp, int):
            return {"type": "integer"}
        if issubclass(tp, float):
            return {"type": "number"}
        if issubclass(tp, str):
            return {"type": "string"}
        if is_pydantic_like(tp):
            return self._pydantic_ref(tp, path)
        if is_class_type(tp):
            return self._class_ref(tp, path)
        if tp in _SEQUENCES or tp in _SETS or tp is tuple:
            return self._array(Any, path, unique=tp in _SETS)
        if tp in _MAPPINGS:
            return self._mapping(Any, path)
        raise SchemaError(
            path,
            f"{describe_type(tp)} has no JSON schema (use str, int, float, bool, lists, "
            "dicts, Literal, Enum, or an attrs class, dataclass or TypedDict)",
        )

    def _generic(self, tp: Any, origin: Any, path: Path) -> dict[str, Any]:
        args = get_args(tp)
        if origin in _SEQUENCES or origin in _SETS:
            return self._array(args[0] if args else Any, path, unique=origin in _SETS)
        if origin is tuple:
            if len(args) == 2 and args[1] is Ellipsis:
                return self._array(args[0], path, unique=False)
            if self.strict:
                raise SchemaError(
                    path,
                    "a tuple of fixed length cannot be expressed in strict mode; "
                    "use a list or a class",
                )
            items = [self.node(arg, (*path, i)) for i, arg in enumerate(args)]
            return {
                "type": "array",
                "prefixItems": items,
                "minItems": len(items),
                "maxItems": len(items),
            }
        if origin in _MAPPINGS:
            key = unwrap(args[0])[0] if args else str
            if key is not str and not (isinstance(key, type) and issubclass(key, str)):
                raise SchemaError(path, "JSON object keys are strings: use dict[str, ...]")
            return self._mapping(args[1] if len(args) > 1 else Any, path)
        if isinstance(origin, type) and is_class_type(origin):
            return self._class_ref(tp, path)  # a generic attrs class or dataclass, e.g. Page[int]
        raise SchemaError(path, f"{tp!r} has no JSON schema")

    def _array(self, item: Any, path: Path, *, unique: bool) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": "array", "items": self.node(item, (*path, 0))}
        if unique and not self.strict:
            schema["uniqueItems"] = True
        return schema

    def _mapping(self, value: Any, path: Path) -> dict[str, Any]:
        if self.strict:
            raise SchemaError(
                path,
                "a dict with free keys cannot be expressed in strict mode (every object must "
                "list its properties, with additionalProperties: false); use a class with "
                "named fields, or strict=False",
            )
        schema: dict[str, Any] = {"type": "object"}
        if value is not Any:
            schema["additionalProperties"] = self.node(value, path)
        return schema

    def _union(self, members: tuple[Any, ...], path: Path) -> dict[str, Any]:
        variants: list[dict[str, Any]] = []
        nullable = False
        for member in members:
            if member is None or member is type(None):
                nullable = True
                continue
            schema = self.node(member, path)
            if schema not in variants:
                variants.append(schema)
        if nullable:
            variants.append({"type": "null"})
        return variants[0] if len(variants) == 1 else {"anyOf": variants}

    def _literal(self, tp: Any, path: Path) -> dict[str, Any]:
        values: list[Any] = []

        def collect(literal: Any) -> None:
            for value in get_args(literal):
                if get_origin(value) in _LITERALS:
                    collect(value)
                elif isinstance(value, enum.Enum):
                    values.append(value.value)
                else:
                    values.append(value)

        collect(tp)
        nullable = None in values
        values = [value for value in values if value is not None]
        if not values:
            return {"type": "null"}
        schema = _enum_schema(values, path)
        return {"anyOf": [schema, {"type": "null"}]} if nullable else schema

    def _object(self, cls: Any, path: Path) -> dict[str, Any]:
        origin = get_origin(cls) or cls
        fields = [
            attrs.evolve(field, type=substitute(field.type, cls))
            for field in class_fields(origin, path)
        ]
        return self.fields_object(fields, path, class_summary(origin))

    def fields_object(
        self, fields: list[ClassField], path: Path, summary: str | None
    ) -> dict[str, Any]:
        """The object schema of named fields (a class's, or a function's parameters)."""
        properties: dict[str, Any] = {}
        required: list[str] = []
        for field in fields:
            schema = self.node(field.type, (*path, field.name))
            if field.description:
                schema = self._describe(schema, field.description)
            if self.strict:
                if field.optional and not admits_null(schema):
                    schema = _nullable(schema)
                required.append(field.name)
            else:
                if not field.optional:
                    required.append(field.name)
                elif field.default is not MISSING:
                    default = _json_value(field.default)
                    if default is not _UNSET:
                        schema = {**schema, "default": default}
            properties[field.name] = schema
        result: dict[str, Any] = {"type": "object"}
        if summary:
            result["description"] = summary
        result["properties"] = properties
        result["required"] = required
        if self.strict:
            result["additionalProperties"] = False
        return result

    def _def_name(self, tp: Any) -> str:
        base = re.sub(r"[^A-Za-z0-9_.-]", "_", describe_type(tp))[:60] or "Model"
        name, n = base, 1
        while name in self.defs:
            n += 1
            name = f"{base}_{n}"
        return name

    def _class_ref(self, cls: Any, path: Path) -> dict[str, Any]:
        if self.root is not None and cls == self.root:
            return {"$ref": "#"}
        name = self.names.get(cls)
        if name is None:
            name = self.names[cls] = self._def_name(cls)
            self.defs[name] = {}  # reserved while it is built: a recursive field finds it
            self.defs[name] = self._object(cls, path)
        return {"$ref": f"#/$defs/{name}"}

    def _pydantic_schema(self, cls: type, path: Path) -> dict[str, Any]:
        try:
            schema = cls.model_json_schema()  # type: ignore[attr-defined]
        except Exception as exc:
            raise SchemaError(path, f"{cls.__name__}.model_json_schema() failed: {exc}") from None
        if not isinstance(schema, dict):
            raise SchemaError(path, f"{cls.__name__}.model_json_schema() did not return a dict")
        schema = copy.deepcopy(schema)
        return strict_schema(schema, path=path, root=False) if self.strict else schema

    def _pydantic_root(self, cls: type) -> dict[str, Any]:
        schema = self._pydantic_schema(cls, ())
        self.defs.update(schema.pop("$defs", {}))
        return schema

    def _pydantic_ref(self, cls: type, path: Path) -> dict[str, Any]:
        name = self.names.get(cls)
        if name is not None:
            return {"$ref": f"#/$defs/{name}"}
        schema = self._pydantic_schema(cls, path)
        for def_name, definition in schema.pop("$defs", {}).items():
            if def_name in self.defs and self.defs[def_name] != definition:
                raise SchemaError(path, f"two different classes are named {def_name}")
            self.defs[def_name] = definition
        ref = schema.get("$ref")
        if isinstance(ref, str) and len(schema) == 1:
            return schema
        name = self.names[cls] = self._def_name(cls)
        self.defs[name] = schema
        return {"$ref": f"#/$defs/{name}"}


def substitute(tp: Any, owner: Any) -> Any:
    """Type variables replaced by their arguments in a field of a parametrised generic class
    (`T` and `list[T]` in `Page[int]`)."""
    origin = get_origin(owner)
    if origin is None:
        return tp
    mapping = dict(zip(getattr(origin, "__parameters__", ()), get_args(owner), strict=False))
    if isinstance(tp, typing.TypeVar):
        return mapping.get(tp, tp)
    free = getattr(tp, "__parameters__", ())
    if free and all(p in mapping for p in free):
        return tp[tuple(mapping[p] for p in free)]
    return tp


def takes_none(tp: Any) -> bool:
    """Whether a value of type `tp` may be `None` (`Optional`, `X | None`, `Any`...)."""
    tp, _ = unwrap(tp)
    if tp is Any or tp is None or tp is type(None):
        return True
    members = union_members(tp)
    if members is not None:
        return any(takes_none(m) for m in members)
    if get_origin(tp) in _LITERALS:
        return any(
            v is None or (get_origin(v) in _LITERALS and takes_none(v)) for v in get_args(tp)
        )
    return False


def require_object_root(schema: Mapping[str, Any], tp: Any) -> None:
    """Strict mode takes only an object at the root: raise `SchemaError` for anything else."""
    if schema.get("type") != "object":
        raise SchemaError(
            (),
            "strict mode needs an object at the root: wrap it in a class (or use strict=False)",
        )


_JSON_TYPES: dict[type, str] = {str: "string", bool: "boolean", int: "integer", float: "number"}


def _enum_schema(values: list[Any], path: Path) -> dict[str, Any]:
    kinds: list[str] = []
    for value in values:
        kind = _JSON_TYPES.get(type(value))
        if kind is None:
            raise SchemaError(path, f"{value!r} is not a JSON value an enum can hold")
        if kind not in kinds:
            kinds.append(kind)
    return {"type": kinds[0] if len(kinds) == 1 else kinds, "enum": values}


_UNSET: Any = object()


def _json_value(value: Any) -> Any:
    """`value` as JSON data, for a `default`; `_UNSET` when it has no JSON form."""
    if value is None or type(value) in _JSON_TYPES:
        return value
    if isinstance(value, enum.Enum):
        return _json_value(value.value)
    if isinstance(value, (list, tuple, set, frozenset)):
        items = [_json_value(v) for v in value]
        return _UNSET if _UNSET in items else items
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        converted = {k: _json_value(v) for k, v in value.items()}
        return _UNSET if _UNSET in converted.values() else converted
    return _UNSET


def admits_null(schema: Mapping[str, Any]) -> bool:
    """Whether `schema` takes `null` as it is (without following `$ref`)."""
    kind = schema.get("type")
    if kind == "null" or (isinstance(kind, list) and "null" in kind):
        return True
    if None in schema.get("enum", ()):
        return True
    return any(admits_null(s) for s in schema.get("anyOf", ()) if isinstance(s, Mapping))


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema` or null; a description stays on the outside."""
    inner = dict(schema)
    description = inner.pop("description", None)
    if "anyOf" in inner and len(inner) == 1:
        result: dict[str, Any] = {"anyOf": [*inner["anyOf"], {"type": "null"}]}
    else:
        result = {"anyOf": [inner, {"type": "null"}]}
    if description is not None:
        result["description"] = description
    return result


def fields_schema(fields: list[ClassField], *, strict: bool) -> dict[str, Any]:
    """The object schema of named fields: a function's parameters. Raises `SchemaError`."""
    builder = _Builder(strict=strict)
    schema = builder.fields_object(fields, (), None)
    if builder.defs:
        schema["$defs"] = builder.defs
    return schema


_SCHEMAS: dict[tuple[Any, bool], dict[str, Any]] = {}


def schema_of(tp: Any, *, strict: bool) -> dict[str, Any]:
    """The schema of `tp` (cached: treat it as read-only); raises `SchemaError`."""
    try:
        return _SCHEMAS[tp, strict]
    except KeyError:
        pass
    except TypeError:  # an unhashable annotation
        return _Builder(strict=strict).build(tp)
    schema = _SCHEMAS[tp, strict] = _Builder(strict=strict).build(tp)
    return schema


def field_name(prefix: str, path: Path) -> str:
    """The name an `InvalidArgumentError` gives a field: `Person.address.zip`."""
    rest = path_text(path)
    if not rest:
        return prefix
    return f"{prefix}{rest}" if rest.startswith("[") else f"{prefix}.{rest}"


def json_schema(tp: Any, *, strict: bool = True) -> dict[str, Any]:
    """The JSON schema of a Python type, ready for `response_format` or a tool's `parameters`.

    Takes str, int, float, bool, None, `list`/`tuple`/`set`, `dict[str, T]`, `Optional`/unions
    (`X | None`), `Literal`, `Enum`, `datetime`/`date`/`time`/`UUID` (as formatted strings),
    `Annotated[T, "description"]`, attrs classes, dataclasses, `TypedDict` (with `Required` /
    `NotRequired`), nested and recursive classes (in `$defs`, referenced by `$ref`; the root
    class is `#`), and pydantic-like classes (anything with `model_json_schema()`; pydantic is
    never imported). Class and field descriptions come from `Annotated`, attrs/dataclass field
    `metadata={"description": ...}` or the class docstring's `Attributes:` section.

    With `strict=True` (the default) the schema is what OpenAI's strict mode accepts: an
    object at the root; every object with `additionalProperties: false` and all its
    properties in `required`; a field that may be left out (it has a default, or is
    `NotRequired`) made nullable, `null` then meaning "use the default"; no keyword strict
    mode refuses (`default`, `minLength`, `uniqueItems`...). With `strict=False` it is plain
    JSON Schema: fields with defaults are not required and their `default` is shown.

    Args:
        tp: The type.
        strict: Produce a schema for OpenAI's strict mode.

    Returns:
        A new dict (yours to change).

    Raises:
        InvalidArgumentError: The type, or one of its fields, cannot be expressed (in strict
            mode: a `dict[str, T]` with free keys, `Any`, a fixed-length tuple...); `field`
            names it (`Person.address.zip`) and the message says why.
    """
    try:
        schema = schema_of(tp, strict=strict)
        if strict:
            require_object_root(schema, tp)
    except SchemaError as exc:
        raise InvalidArgumentError(field_name(describe_type(tp), exc.path), exc.reason) from None
    return copy.deepcopy(schema)


# ---------------------------------------------------------------- dict schemas made strict

# What strict mode takes; any other keyword is left out (a validation hint strict mode does
# not support: `default`, `minLength`, `uniqueItems`, `examples`, `discriminator`...).
_STRICT_KEYWORDS = frozenset(
    {
        "type",
        "properties",
        "required",
        "additionalProperties",
        "items",
        "anyOf",
        "enum",
        "const",
        "$ref",
        "$defs",
        "definitions",
        "description",
        "title",
        "pattern",
        "format",
        "multipleOf",
        "maximum",
        "exclusiveMaximum",
        "minimum",
        "exclusiveMinimum",
        "minItems",
        "maxItems",
    }
)
_STRICT_FORMATS = frozenset(
    {"date-time", "time", "date", "duration", "email", "hostname", "ipv4", "ipv6", "uuid"}
)
# Keywords that change which documents match in a way strict mode cannot say.
_INEXPRESSIBLE = {
    "not": "'not' is not supported in strict mode",
    "if": "'if'/'then'/'else' are not supported in strict mode",
    "then": "'if'/'then'/'else' are not supported in strict mode",
    "else": "'if'/'then'/'else' are not supported in strict mode",
    "dependentSchemas": "'dependentSchemas' is not supported in strict mode",
    "dependentRequired": "'dependentRequired' is not supported in strict mode",
    "patternProperties": "an object with free keys (patternProperties) cannot be strict",
    "prefixItems": "a tuple of fixed length (prefixItems) cannot be strict; use a list",
}


def strict_schema(
    schema: Mapping[str, Any], *, path: Path = (), root: bool = True
) -> dict[str, Any]:
    """A copy of `schema` that strict mode takes, or `SchemaError` saying why there is none.

    Every object gets `additionalProperties: false` and all its properties in `required`;
    `oneOf` becomes `anyOf`, a one-item `allOf` is merged, a `$ref` with sibling keywords is
    inlined, and keywords strict mode does not take are left out. `root=True` also requires
    an object at the root.
    """
    if not isinstance(schema, Mapping):
        raise SchemaError(path, "a JSON schema must be an object")
    whole = copy.deepcopy(dict(schema))
    result = _strict(whole, path, whole, set())
    if root and result.get("type") != "object":
        raise SchemaError(path, 'strict mode needs an object ("type": "object") at the root')
    return result


def _strict(node: Any, path: Path, whole: dict[str, Any], seen: set[str]) -> dict[str, Any]:
    if not isinstance(node, dict):
        raise SchemaError(path, f"expected a schema object, got {type(node).__name__}")
    for key, reason in _INEXPRESSIBLE.items():
        if key in node:
            raise SchemaError(path, reason)
    ref = node.get("$ref")
    if isinstance(ref, str) and len(node) > 1 and ref not in seen:
        merged = {**resolve_ref(whole, ref, path), **{k: v for k, v in node.items() if k != "$ref"}}
        return _strict(merged, path, whole, seen | {ref})
    if "allOf" in node:
        parts = node.pop("allOf")
        if not isinstance(parts, list) or len(parts) != 1:
            raise SchemaError(path, "'allOf' with several schemas is not supported in strict mode")
        node = {**parts[0], **node}
        return _strict(node, path, whole, seen)
    if "oneOf" in node:
        node["anyOf"] = node.pop("oneOf")
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key not in _STRICT_KEYWORDS:
            continue
        if key == "format" and value not in _STRICT_FORMATS:
            continue
        out[key] = value
    for defs_key in ("$defs", "definitions"):
        if isinstance(out.get(defs_key), dict):
            out[defs_key] = {
                name: _strict(sub, (*path, defs_key, name), whole, seen)
                for name, sub in out[defs_key].items()
            }
    kind = out.get("type")
    is_object = kind == "object" or (isinstance(kind, list) and "object" in kind)
    if "properties" in out or is_object:
        extra = out.get("additionalProperties", False)
        if extra is not False:
            raise SchemaError(
                path,
                "an object with free keys (additionalProperties) cannot be expressed in strict "
                "mode; list its properties",
            )
        properties = out.get("properties", {})
        if not isinstance(properties, dict):
            raise SchemaError(path, "'properties' must be an object")
        if not properties and "properties" not in out:
            raise SchemaError(path, "an object without properties cannot be strict")
        out["properties"] = {
            name: _strict(sub, (*path, name), whole, seen) for name, sub in properties.items()
        }
        out["required"] = list(properties)
        out["additionalProperties"] = False
    if "items" in out:
        if not isinstance(out["items"], dict):
            raise SchemaError(path, "'items' must be one schema in strict mode")
        out["items"] = _strict(out["items"], (*path, 0), whole, seen)
    if "anyOf" in out:
        variants = out["anyOf"]
        if not isinstance(variants, list) or not variants:
            raise SchemaError(path, "'anyOf' must be a non-empty list")
        out["anyOf"] = [_strict(sub, path, whole, seen) for sub in variants]
    return out


def resolve_ref(whole: Mapping[str, Any], ref: str, path: Path) -> dict[str, Any]:
    if ref == "#":
        return dict(whole)
    if not ref.startswith("#/"):
        raise SchemaError(path, f"only local references are supported, not {ref!r}")
    node: Any = whole
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, Mapping) or part not in node:
            raise SchemaError(path, f"the reference {ref!r} leads nowhere")
        node = node[part]
    if not isinstance(node, Mapping):
        raise SchemaError(path, f"the reference {ref!r} does not lead to a schema")
    return dict(node)
