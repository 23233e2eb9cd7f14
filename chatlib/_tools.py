"""Tools from Python functions and classes: their `tools` entries, their arguments checked and
converted, their results as text. Pure: running a tool is the facades' job (`_tool_loop.py`).

`function_tool(fn)` reads a typed function (or an attrs class, dataclass, TypedDict or
pydantic-like class) and returns a `FunctionTool`: the dict sent in `tools`, which also
remembers the function, so chatlib can check the arguments the model sends, convert them to
the annotated types (`function.parsed_arguments`) and call it.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
import enum
import inspect
import json
import re
import typing
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs

from chatlib._docstrings import parse_docstring
from chatlib._model_base import Model
from chatlib._schema import (
    MISSING,
    ClassField,
    SchemaError,
    class_summary,
    describe_type,
    field_name,
    fields_schema,
    is_class_type,
    is_pydantic_like,
    require_object_root,
    schema_of,
    takes_none,
    unwrap,
)
from chatlib._typed_json import Mismatch, check, load_checked, structure
from chatlib.errors import InvalidArgumentError

__all__ = [
    "FunctionTool",
    "ToolSpec",
    "as_tools",
    "format_result",
    "function_tool",
]

_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@attrs.frozen
class _Param:
    name: str
    type: Any
    optional: bool
    positional_only: bool


@attrs.frozen(eq=False)
class ToolSpec:
    """What chatlib knows of one function tool: its name and parameters' schema, and, when it
    was made from Python, what to convert the arguments to and what to call.

    Attributes:
        name: The function name the model calls.
        parameters: The JSON schema of the arguments (as sent).
        strict: Whether the schema is a strict-mode one.
        target: The function or class it was made from; `None` for a tool given as a dict.
        params: The function's parameters (empty for a class or a dict tool).
    """

    name: str
    parameters: Mapping[str, Any]
    strict: bool
    target: Any = None
    params: tuple[_Param, ...] = ()

    @property
    def runnable(self) -> bool:
        """Whether the tool loop can call it: a function (not a class, not a dict)."""
        return self.target is not None and not isinstance(self.target, type)

    @property
    def is_async(self) -> bool:
        """Whether calling it returns a coroutine (an `async def` function)."""
        return self.runnable and _is_async(self.target)

    def parse_arguments(self, arguments: str) -> Any:
        """The arguments converted: an instance of a class tool, a dict of the function's
        arguments (with their annotated types) for a function, the JSON for a dict tool.
        Raises `Mismatch`."""
        data = load_checked(arguments if arguments.strip() else "{}", None)
        if not isinstance(data, dict):
            raise Mismatch((), f"expected a JSON object, got {type(data).__name__}")
        missing = {p.name for p in self.params if p.optional and p.name not in data}
        if self.strict and missing:
            # An argument with a default that the model left out (a server that does not
            # enforce strict mode) means the default, as null does.
            data = {**data, **dict.fromkeys(missing)}
        problem = check(self.parameters, data)
        if problem is not None:
            raise Mismatch(problem.path, problem.reason)
        if self.target is None:
            return data
        try:
            if isinstance(self.target, type):
                return structure(data, self.target, strict=self.strict)
            converted: dict[str, Any] = {}
            for param in self.params:
                value = data.get(param.name, _ABSENT)
                if (
                    value is _ABSENT
                    or param.name in missing
                    or (value is None and param.optional and not takes_none(param.type))
                ):
                    continue  # left out (or null in strict mode): the default applies
                converted[param.name] = structure(value, param.type, strict=self.strict)
            return converted
        except SchemaError as exc:
            raise Mismatch(exc.path, exc.reason) from None

    def call(self, parsed: Any) -> Any:
        """Call the function with arguments from `parse_arguments` (a coroutine if async)."""
        args: list[Any] = []
        kwargs: dict[str, Any] = {}
        for param in self.params:
            if param.name in parsed:
                if param.positional_only:
                    args.append(parsed[param.name])
                else:
                    kwargs[param.name] = parsed[param.name]
        return self.target(*args, **kwargs)


_ABSENT: Any = object()


class FunctionTool(dict):  # type: ignore[type-arg]
    """A `tools` entry made by `function_tool`: the dict the server receives
    (`{"type": "function", "function": {...}}`), which also remembers the function or class it
    describes (`spec`, never sent), so chatlib can parse and run the model's calls to it.

    It is a plain dict to everything else: compare it, print it, send it anywhere.
    """

    spec: ToolSpec

    def __init__(self, data: Mapping[str, Any], spec: ToolSpec) -> None:
        super().__init__(data)
        self.spec = spec

    def __reduce__(self) -> tuple[Any, ...]:
        return (dict, (dict(self),))  # a pickled copy is just the wire data


def _call_method(fn: Any) -> Any:
    """The `__call__` of a callable object (not of a function), else `None`."""
    if inspect.isfunction(fn) or inspect.ismethod(fn) or inspect.isbuiltin(fn):
        return None
    return inspect.getattr_static(type(fn), "__call__", None)


def _is_async(fn: Any) -> bool:
    if inspect.iscoroutinefunction(fn):
        return True
    return inspect.iscoroutinefunction(_call_method(fn))  # an object with `async def __call__`


def _hints(fn: Any) -> dict[str, Any]:
    target = fn
    while hasattr(target, "func") and not inspect.isfunction(target):  # functools.partial
        target = target.func
    target = _call_method(target) or target
    try:
        return typing.get_type_hints(target, include_extras=True)
    except Exception as exc:
        raise SchemaError(
            (), f"cannot read the annotations ({exc}); define the types it uses at module level"
        ) from None


def _function_fields(
    fn: Any, documented: Mapping[str, str]
) -> tuple[list[ClassField], list[_Param]]:
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError) as exc:
        raise SchemaError((), f"has no readable signature ({exc})") from None
    hints = _hints(fn)
    fields: list[ClassField] = []
    params: list[_Param] = []
    for param in signature.parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            star = "*" if param.kind is param.VAR_POSITIONAL else "**"
            raise SchemaError(
                (param.name,),
                f"{star}{param.name} cannot be described to the model: give the function "
                "named parameters",
            )
        annotation = hints.get(param.name, param.annotation)
        if annotation is inspect.Parameter.empty or isinstance(annotation, str):
            annotation = Any
        tp, description = unwrap(annotation)
        optional = param.default is not inspect.Parameter.empty
        default = param.default if optional else MISSING
        fields.append(
            ClassField(
                param.name,
                tp,
                description or documented.get(param.name),
                optional=optional,
                default=default,
            )
        )
        params.append(_Param(param.name, tp, optional, param.kind is param.POSITIONAL_ONLY))
    return fields, params


def _untyped(fields: list[ClassField]) -> str | None:
    for field in fields:
        if field.type is Any:
            return field.name
    return None


def function_tool(
    fn: Callable[..., Any] | type,
    *,
    name: str | None = None,
    description: str | None = None,
    strict: bool = True,
) -> FunctionTool:
    """The `tools` entry for a typed function, or for a class describing a tool's arguments.

    ```python
    def get_weather(city: str, unit: Literal["c", "f"] = "c") -> dict:
        \"\"\"The current weather in a city.

        Args:
            city: The city, e.g. "Paris".
            unit: Celsius or Fahrenheit.
        \"\"\"

    chat.create(model="gpt-4o-mini", messages=messages, tools=[function_tool(get_weather)])
    ```

    The name is the function's (or the class's); the description is the docstring's text
    before its sections, and each argument's comes from `Annotated[T, "description"]` or the
    docstring (Google `Args:`, NumPy `Parameters`, or reST `:param x:`). Argument types are
    read as `json_schema` reads them (`Literal` becomes an `enum`, classes become objects).

    `create`, `stream`, `parse` and `run_tools` also accept the function or class itself in
    `tools` and call this for you; call it yourself to choose the name, the description or
    `strict`.

    Args:
        fn: A function (sync or `async def`, with an annotation on every parameter), or an
            attrs class, dataclass, TypedDict or pydantic-like class.
        name: The tool's name (letters, digits, `_` and `-`, at most 64); defaults to
            `fn.__name__`.
        description: Replaces the docstring's text.
        strict: Make the parameters a strict-mode schema (`"strict": true`): every argument
            required, those with a default made nullable (`null` means "use the default").
            With `strict=False`, arguments with a default are simply not required.

    Returns:
        A `FunctionTool`: a dict ready for `tools`, which remembers `fn`.

    Raises:
        InvalidArgumentError: `fn` cannot be described (an argument without a type in strict
            mode, `*args`, a type strict mode cannot express...), naming the argument.
    """
    label = getattr(fn, "__name__", None) or type(fn).__name__
    tool_name = name if name is not None else label
    if not isinstance(tool_name, str) or not _NAME.match(tool_name):
        raise InvalidArgumentError(
            "name",
            f"{tool_name!r} is not a valid tool name (letters, digits, _ and -, at most 64 "
            "characters): pass name=",
        )
    try:
        if is_class_type(fn):
            parameters = schema_of(fn, strict=strict)
            require_object_root(parameters, fn)
            params: tuple[_Param, ...] = ()
            text = description if description is not None else _class_text(fn)  # type: ignore[arg-type]
        elif callable(fn) and not isinstance(fn, type):
            doc = parse_docstring(inspect.getdoc(fn))
            fields, param_list = _function_fields(fn, doc.params)
            untyped = _untyped(fields) if strict else None
            if untyped is not None:
                raise SchemaError(
                    (untyped,),
                    "has no type annotation; annotate it (strict mode needs a type for every "
                    "argument) or pass strict=False",
                )
            parameters = fields_schema(fields, strict=strict)
            params = tuple(param_list)
            text = description if description is not None else (doc.summary or None)
        else:
            raise SchemaError(
                (),
                f"{describe_type(fn)} is not a function, nor an attrs class, dataclass, "
                "TypedDict or pydantic-like class",
            )
    except SchemaError as exc:
        raise InvalidArgumentError(field_name(label, exc.path), exc.reason) from None
    function: dict[str, Any] = {"name": tool_name}
    if text:
        function["description"] = text
    function["parameters"] = copy.deepcopy(parameters)  # the spec keeps the cached one
    if strict:
        function["strict"] = True
    spec = ToolSpec(tool_name, parameters, strict, fn, params)
    return FunctionTool({"type": "function", "function": function}, spec)


def _class_text(cls: type) -> str | None:
    if is_pydantic_like(cls):
        doc = cls.__dict__.get("__doc__")
        return parse_docstring(doc).summary or None if isinstance(doc, str) else None
    return class_summary(cls)


def _dict_spec(tool: Mapping[str, Any]) -> ToolSpec | None:
    """The spec of a ready-made function tool dict, when its arguments can be parsed (it is
    strict, like the official SDK's rule): the arguments are then checked and given as JSON."""
    if tool.get("type") != "function":
        return None
    function = tool.get("function")
    if not isinstance(function, Mapping) or not isinstance(function.get("name"), str):
        return None
    parameters = function.get("parameters")
    if function.get("strict") is not True or not isinstance(parameters, Mapping):
        return None
    return ToolSpec(function["name"], parameters, True)


def as_tools(tools: Any, *, parse_dicts: bool = False) -> tuple[Any, dict[str, ToolSpec]]:
    """`tools` as sent (functions and classes made into `FunctionTool`s, the rest as given)
    and the specs of the tools chatlib can parse, by name: those made from Python, and with
    `parse_dicts` (`chat.parse`) the strict ones given as dicts. Leaves a value that is not a
    list to the request checks."""
    if not isinstance(tools, (list, tuple)):
        return tools, {}
    wire: list[Any] = []
    specs: dict[str, ToolSpec] = {}
    for i, tool in enumerate(tools):
        if isinstance(tool, FunctionTool):
            spec: ToolSpec | None = tool.spec
        elif isinstance(tool, (Mapping, Model)):
            data = tool.to_dict() if isinstance(tool, Model) else tool
            spec = _dict_spec(data) if parse_dicts else None
        elif callable(tool):
            try:
                tool = function_tool(tool)
            except InvalidArgumentError as exc:
                raise InvalidArgumentError(f"tools[{i}].{exc.field}", exc.problem) from None
            spec = tool.spec
        else:
            spec = None  # the request checks name what is wrong with it
        if spec is not None:
            if spec.name in specs:
                raise InvalidArgumentError(
                    f"tools[{i}]", f"two tools are named {spec.name!r}; give one another name="
                )
            specs[spec.name] = spec
        wire.append(tool)
    return wire, specs


# ---------------------------------------------------------------- results as text


def _json_default(value: Any) -> Any:
    if isinstance(value, Model):
        return value.to_dict()
    if attrs.has(type(value)):
        return attrs.asdict(value, recurse=False)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        return dump(mode="json")
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, (set, frozenset, tuple)) or (
        isinstance(value, Iterable) and not isinstance(value, (str, bytes, Mapping))
    ):
        return list(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def format_result(value: Any) -> str:
    """A tool's result as the text of its `tool` message: a string as it is, anything else
    as JSON (attrs classes, dataclasses, pydantic-like models, enums, dates included).
    Raises `TypeError` for a value with no JSON form."""
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, default=_json_default, ensure_ascii=False)
    except ValueError as exc:  # a cycle, NaN is fine (json writes it), a too deep value
        raise TypeError(str(exc)) from None
