"""JSON checked against a schema, and JSON turned into Python types. Pure.

- `check(schema, value)`: the first place where JSON does not match a schema (its path and
  why), for the schemas chatlib builds and the keywords strict mode uses.
- `load_checked(text, schema)`: text decoded and checked, or `Mismatch`.
- `structure(value, tp)`: JSON that matched `tp`'s schema, as a `tp`: cattrs builds attrs
  classes and dataclasses; `null` for a field that may be left out means its default; the
  members of a union are told apart by their schemas; a pydantic-like class validates itself.
"""

from __future__ import annotations

import datetime
import json
import math
import operator
import re
import uuid
from collections.abc import Callable, Iterator, Mapping
from typing import Any, get_args, get_origin

import attrs
import cattrs
import cattrs.gen
import typing_extensions

from chatlib._schema import (
    Path,
    SchemaError,
    class_fields,
    describe_type,
    is_class_type,
    is_pydantic_like,
    path_text,
    resolve_ref,
    schema_of,
    substitute,
    takes_none,
    union_members,
    unwrap,
)

__all__ = ["Mismatch", "Problem", "check", "load_checked", "structure"]


@attrs.frozen
class Problem:
    """Where JSON does not match its schema, and how."""

    path: Path
    reason: str

    def __str__(self) -> str:
        where = path_text(self.path)
        return f"{where}: {self.reason}" if where else self.reason


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _has_type(value: Any, kind: str) -> bool:
    actual = _json_type(value)
    if kind == actual:
        return True
    if kind == "number":
        return actual == "integer"
    if kind == "integer":
        return actual == "number" and math.isfinite(value) and float(value).is_integer()
    return False


def _same(a: Any, b: Any) -> bool:
    """JSON equality (`true` is not `1`)."""
    kind_a, kind_b = _json_type(a), _json_type(b)
    if kind_a in ("integer", "number") and kind_b in ("integer", "number"):
        return bool(a == b)
    return kind_a == kind_b and bool(a == b)


def check(
    schema: Mapping[str, Any], value: Any, *, root: Mapping[str, Any] | None = None
) -> Problem | None:
    """The first place where `value` does not match `schema`, or `None` when it matches.

    Covers what chatlib's schemas and strict mode use: types, `enum`/`const`, objects
    (`properties`, `required`, `additionalProperties`), arrays (`items`, `prefixItems`,
    `minItems`/`maxItems`), `anyOf`/`oneOf`/`allOf`, local `$ref`, and the numeric and string
    limits. Other keywords are not checked.
    """
    return _check(schema, value, (), root if root is not None else schema, 0)


def _check(
    schema: Any, value: Any, path: Path, root: Mapping[str, Any], depth: int
) -> Problem | None:
    if not isinstance(schema, Mapping) or depth > 200:
        return None
    ref = schema.get("$ref")
    if isinstance(ref, str):
        try:
            target = resolve_ref(root, ref, path)
        except SchemaError:
            return None
        problem = _check(target, value, path, root, depth + 1)
        if problem is not None or len(schema) == 1:
            return problem
    for key in ("anyOf", "oneOf"):
        variants = schema.get(key)
        if isinstance(variants, list) and variants:
            problems = [_check(v, value, path, root, depth + 1) for v in variants]
            if all(p is not None for p in problems):
                return _best(problems, variants, value, path)  # type: ignore[arg-type]
    for sub in schema.get("allOf", ()):
        problem = _check(sub, value, path, root, depth + 1)
        if problem is not None:
            return problem
    kind = schema.get("type")
    if kind is not None:
        kinds = kind if isinstance(kind, list) else [kind]
        if not any(_has_type(value, k) for k in kinds):
            return Problem(path, f"expected {' or '.join(kinds)}, got {_describe(value)}")
    if "enum" in schema and not any(_same(value, e) for e in schema["enum"]):
        choices = ", ".join(repr(e) for e in schema["enum"][:10])
        return Problem(path, f"expected one of {choices}, got {_describe(value)}")
    if "const" in schema and not _same(value, schema["const"]):
        return Problem(path, f"expected {schema['const']!r}, got {_describe(value)}")
    if isinstance(value, dict):
        return _check_object(schema, value, path, root, depth)
    if isinstance(value, list):
        return _check_array(schema, value, path, root, depth)
    return _check_scalar(schema, value, path)


def _describe(value: Any) -> str:
    text = repr(value)
    return f"{_json_type(value)} {text if len(text) <= 40 else text[:37] + '...'}"


def _best(problems: list[Problem], variants: list[Any], value: Any, path: Path) -> Problem:
    """For a value no variant takes: the problem of the variant of its own type (the most
    telling one), else a list of what was expected."""
    actual = _json_type(value)
    for problem, variant in zip(problems, variants, strict=True):
        kind = variant.get("type") if isinstance(variant, Mapping) else None
        kinds = kind if isinstance(kind, list) else [kind]
        if (actual in kinds or "$ref" in variant) and problem.path != path:
            return problem
    for problem in problems:
        if problem.path != path:
            return problem
    return problems[0]


def _check_object(
    schema: Mapping[str, Any], value: dict[str, Any], path: Path, root: Mapping[str, Any], d: int
) -> Problem | None:
    properties = schema.get("properties")
    properties = properties if isinstance(properties, Mapping) else {}
    for name in schema.get("required", ()):
        if name not in value:
            return Problem((*path, name), "is required but missing")
    extra = schema.get("additionalProperties", True)
    for name, item in value.items():
        if name in properties:
            problem = _check(properties[name], item, (*path, name), root, d + 1)
        elif extra is False:
            return Problem((*path, name), "is not a known field")
        else:
            problem = _check(extra, item, (*path, name), root, d + 1)
        if problem is not None:
            return problem
    return None


def _check_array(
    schema: Mapping[str, Any], value: list[Any], path: Path, root: Mapping[str, Any], d: int
) -> Problem | None:
    low, high = schema.get("minItems"), schema.get("maxItems")
    if isinstance(low, int) and len(value) < low:
        return Problem(path, f"expected at least {low} items, got {len(value)}")
    if isinstance(high, int) and len(value) > high:
        return Problem(path, f"expected at most {high} items, got {len(value)}")
    prefix = schema.get("prefixItems")
    prefix = prefix if isinstance(prefix, list) else []
    items = schema.get("items")
    for i, item in enumerate(value):
        sub = prefix[i] if i < len(prefix) else items
        problem = _check(sub, item, (*path, i), root, d + 1)
        if problem is not None:
            return problem
    return None


def _check_scalar(schema: Mapping[str, Any], value: Any, path: Path) -> Problem | None:
    if isinstance(value, str):
        pattern = schema.get("pattern")
        if isinstance(pattern, str):
            try:
                if re.search(pattern, value) is None:
                    return Problem(path, f"does not match the pattern {pattern!r}")
            except re.error:
                pass
        low, high = schema.get("minLength"), schema.get("maxLength")
        if isinstance(low, int) and len(value) < low:
            return Problem(path, f"expected at least {low} characters")
        if isinstance(high, int) and len(value) > high:
            return Problem(path, f"expected at most {high} characters")
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        for key, fails, words in (
            ("minimum", operator.lt, ">="),
            ("maximum", operator.gt, "<="),
            ("exclusiveMinimum", operator.le, ">"),
            ("exclusiveMaximum", operator.ge, "<"),
        ):
            bound: Any = schema.get(key)
            is_bound = isinstance(bound, (int, float)) and not isinstance(bound, bool)
            if is_bound and fails(value, bound):
                return Problem(path, f"expected a number {words} {bound}, got {value}")
    return None


# ---------------------------------------------------------------- JSON to Python


class Mismatch(Exception):
    """JSON text that cannot be used: not JSON (`not_json`), or not matching its schema or
    type at `path`."""

    def __init__(self, path: Path, reason: str, *, not_json: bool = False) -> None:
        super().__init__(f"{path_text(path)}: {reason}" if path else reason)
        self.path = path
        self.reason = reason
        self.not_json = not_json


def load_checked(text: str, schema: Mapping[str, Any] | None) -> Any:
    """`text` decoded as JSON and checked against `schema`; raises `Mismatch`."""
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise Mismatch((), f"not valid JSON ({exc})", not_json=True) from None
    if schema is not None:
        problem = check(schema, data)
        if problem is not None:
            raise Mismatch(problem.path, problem.reason)
    return data


def _member_schema(member: Any, strict: bool) -> dict[str, Any]:
    if strict:
        try:
            return schema_of(member, strict=True)
        except SchemaError:
            pass
    return schema_of(member, strict=False)


def _make_converter(*, strict: bool) -> cattrs.Converter:
    converter = cattrs.Converter()

    def is_union(tp: Any) -> bool:
        return union_members(tp) is not None

    def union_hook(tp: Any) -> Callable[[Any, Any], Any]:
        members = [m for m in get_args(tp) if m is not type(None)]
        nullable = len(members) < len(get_args(tp))

        def structure_union(value: Any, _: Any) -> Any:
            if value is None and nullable:
                return None
            for member in members:  # the first member whose schema the value matches
                if check(_member_schema(member, strict), value) is None:
                    return converter.structure(value, member)
            raise ValueError(f"{_describe(value)} matches none of {describe_type(tp)}")

        return structure_union

    def is_fielded(tp: Any) -> bool:
        origin = get_origin(tp) or tp
        return is_class_type(origin) and not is_pydantic_like(origin)

    def class_hook(tp: Any) -> Callable[[Any, Any], Any]:
        origin = get_origin(tp) or tp
        fields = class_fields(origin)
        # A field that may be left out was made nullable in strict mode: null means "left out".
        droppable = frozenset(
            field.name
            for field in fields
            if field.optional and not takes_none(substitute(field.type, tp))
        )
        if typing_extensions.is_typeddict(origin):
            # A dict again, each known key converted (cattrs reads `__required_keys__`, which
            # string annotations leave wrong before Python 3.12).
            types_ = {field.name: substitute(field.type, tp) for field in fields}

            def build(value: dict[str, Any], _: Any) -> Any:
                return {
                    key: converter.structure(item, types_[key]) if key in types_ else item
                    for key, item in value.items()
                }

            base: Callable[[Any, Any], Any] = build
        else:
            base = cattrs.gen.make_dict_structure_fn(tp, converter)

        def structure_class(value: Any, cls: Any) -> Any:
            if not isinstance(value, dict):
                raise ValueError(f"expected an object, got {_describe(value)}")
            if droppable:
                value = {k: v for k, v in value.items() if not (v is None and k in droppable)}
            return base(value, cls)

        return structure_class

    converter.register_structure_hook_factory(is_union, union_hook)
    converter.register_structure_hook_factory(is_fielded, class_hook)
    converter.register_structure_hook_func(
        is_pydantic_like,
        lambda value, cls: cls.model_validate(value),
    )
    converter.register_structure_hook(
        datetime.datetime, lambda v, _: datetime.datetime.fromisoformat(_iso(v))
    )
    converter.register_structure_hook(datetime.date, lambda v, _: datetime.date.fromisoformat(v))
    converter.register_structure_hook(
        datetime.time, lambda v, _: datetime.time.fromisoformat(_iso(v))
    )
    converter.register_structure_hook(uuid.UUID, lambda v, _: uuid.UUID(v))
    converter.register_structure_hook_func(lambda tp: tp is Any, lambda v, _: v)
    return converter


def _iso(text: str) -> str:
    """Python 3.10's `fromisoformat` does not take a trailing `Z`."""
    return text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text


_CONVERTERS = {True: _make_converter(strict=True), False: _make_converter(strict=False)}


def structure(value: Any, tp: Any, *, strict: bool) -> Any:
    """`value` (JSON that matched `tp`'s schema) as a `tp`; raises `SchemaError` when a class
    refuses it (an attrs validator, a pydantic-like class's own checks). `strict` says which
    schema the value matched, which tells apart the members of a union."""
    bare, _ = unwrap(tp)
    try:
        return _CONVERTERS[strict].structure(value, bare)
    except Exception as exc:  # cattrs wraps what the classes raised; name the first place
        raise SchemaError(*_first_failure(exc)) from None


def _first_failure(exc: BaseException) -> tuple[Path, str]:
    """The path and the message of the first failure inside a cattrs or pydantic error."""
    errors = getattr(exc, "errors", None)
    if callable(errors) and not isinstance(exc, cattrs.BaseValidationError):
        try:
            first = errors()[0]
            return tuple(first.get("loc", ())), str(first.get("msg", exc))
        except Exception:
            pass
    if isinstance(exc, cattrs.BaseValidationError):
        for leaf, path in _leaves(exc, ()):
            return _validated_attribute(leaf, path)
    return _validated_attribute(exc, ())


def _validated_attribute(exc: BaseException, path: Path) -> tuple[Path, str]:
    """Where an attrs validator failed: its attribute added to `path`, and its message.

    attrs calls each validator as `validator(instance, attribute, value)` from the class's
    `__init__`, after cattrs has converted every field, so cattrs cannot say which field it
    was; the attribute is in the exception's arguments (attrs' own validators put it there)
    or among the arguments of a frame the exception went through (any validator)."""
    attribute = next((a for a in exc.args if isinstance(a, attrs.Attribute)), None)
    traceback = exc.__traceback__
    while attribute is None and traceback is not None:
        code = traceback.tb_frame.f_code
        arguments = code.co_varnames[: code.co_argcount]
        values = traceback.tb_frame.f_locals
        attribute = next(
            (values[a] for a in arguments if isinstance(values.get(a), attrs.Attribute)),
            None,
        )
        traceback = traceback.tb_next
    if attribute is None:
        return path, f"{type(exc).__name__}: {exc}"
    first = exc.args[0] if exc.args and isinstance(exc.args[0], str) else str(exc)
    return (*path, attribute.name), f"{type(exc).__name__}: {first}"


def _leaves(exc: BaseException, path: Path) -> Iterator[tuple[BaseException, Path]]:
    if isinstance(exc, cattrs.BaseValidationError):
        with_notes: list[tuple[Any, Any]] = []
        if isinstance(exc, (cattrs.ClassValidationError, cattrs.IterableValidationError)):
            with_notes = list(exc.group_exceptions()[0])  # (error, where: a field or index)
        for inner, note in with_notes:
            step = getattr(note, "name", getattr(note, "index", None))
            yield from _leaves(inner, path if step is None else (*path, step))
        for inner in exc.exceptions:
            if all(inner is not w for w, _ in with_notes):
                yield from _leaves(inner, path)
    else:
        yield from _nested_leaves(exc, path)


def _nested_leaves(exc: BaseException, path: Path) -> Iterator[tuple[BaseException, Path]]:
    errors = getattr(exc, "errors", None)
    if callable(errors):  # a pydantic-like error inside a field
        try:
            first = errors()[0]
            yield exc, (*path, *first.get("loc", ()))
            return
        except Exception:
            pass
    yield exc, path
