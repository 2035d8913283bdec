"""The type system: Python types <-> `LiteralType`, Python values <-> JSON literals.

Three directions, one module, so the SDK, the task runtime and the control plane agree:
- `literal_type_of(py_type)`: annotation -> IR type (raises `UnsupportedTypeError`);
- `to_literal(value, py_type)` / `to_python(literal, py_type)`: values on the engineer's side
  and in the task runtime;
- `validate_literal(literal, literal_type)`: checks and normalises a JSON value against an IR
  type where no Python type exists (the control plane validating execution inputs).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any

from fleetflow.errors import LiteralValidationError, UnsupportedTypeError
from fleetflow.ir import LiteralType, TypeKind

_SIMPLE: dict[type, TypeKind] = {
    bool: TypeKind.BOOLEAN,
    int: TypeKind.INTEGER,
    float: TypeKind.FLOAT,
    str: TypeKind.STRING,
}


def _qualified_name(tp: type) -> str:
    return f"{tp.__module__}.{tp.__qualname__}"


def _resolved_fields(tp: type) -> dict[str, Any]:
    hints = typing.get_type_hints(tp)
    return {f.name: hints[f.name] for f in dataclasses.fields(tp)}


def literal_type_of(py_type: Any) -> LiteralType:
    """Map a Python annotation to its IR type."""
    if py_type in _SIMPLE:
        return LiteralType(kind=_SIMPLE[py_type])
    origin = typing.get_origin(py_type)
    args = typing.get_args(py_type)
    if origin is list:
        if len(args) != 1:
            raise UnsupportedTypeError("list needs an element type, e.g. list[int]")
        return LiteralType(kind=TypeKind.LIST, item=literal_type_of(args[0]))
    if origin is dict:
        if len(args) != 2 or args[0] is not str:
            raise UnsupportedTypeError(
                "dict needs string keys and a value type, e.g. dict[str, float]"
            )
        return LiteralType(kind=TypeKind.DICT, item=literal_type_of(args[1]))
    if py_type is list or py_type is dict:
        raise UnsupportedTypeError(
            f"bare {py_type.__name__} has no element type; write {py_type.__name__}[...]"
        )
    if isinstance(py_type, type) and dataclasses.is_dataclass(py_type):
        return LiteralType(
            kind=TypeKind.STRUCT,
            name=_qualified_name(py_type),
            fields={name: literal_type_of(t) for name, t in _resolved_fields(py_type).items()},
        )
    if isinstance(origin, type) and origin is types.UnionType or origin is typing.Union:
        raise UnsupportedTypeError(f"union types are not supported yet: {py_type!r}")
    raise UnsupportedTypeError(f"type {getattr(py_type, '__name__', py_type)!r} is not supported")


def describe_python_type(py_type: Any) -> str:
    """The annotation as a user wrote it (`list[int]`, `Metrics`)."""
    if isinstance(py_type, type) and not typing.get_args(py_type):
        return py_type.__name__
    return repr(py_type).replace("typing.", "")


def is_assignable(source: LiteralType, target: LiteralType) -> bool:
    """Whether a value of type `source` may be bound to a parameter of type `target`.

    Exact structural match, except that an int may flow into a float. Structs match by name
    and fields, so two dataclasses with the same fields but different names do not mix.
    """
    if source.kind is TypeKind.INTEGER and target.kind is TypeKind.FLOAT:
        return True
    if source.kind is not target.kind:
        return False
    if source.kind in (TypeKind.LIST, TypeKind.DICT):
        assert source.item is not None and target.item is not None
        return is_assignable(source.item, target.item)
    if source.kind is TypeKind.STRUCT:
        return source.name == target.name and source.fields == target.fields
    return True


def validate_literal(value: Any, literal_type: LiteralType, path: str = "") -> Any:
    """Check a JSON value against an IR type and return it normalised (ints widened to float).

    Raises `LiteralValidationError` naming the path of the first offending value.
    """
    kind = literal_type.kind
    expected = literal_type.describe()

    def fail(detail: str | None = None) -> LiteralValidationError:
        got = type(value).__name__ if value is not None else "null"
        return LiteralValidationError(path, detail or f"expected {expected}, got {got} {value!r}")

    if kind is TypeKind.BOOLEAN:
        if not isinstance(value, bool):
            raise fail()
        return value
    if kind is TypeKind.INTEGER:
        if isinstance(value, bool) or not isinstance(value, int):
            raise fail()
        return value
    if kind is TypeKind.FLOAT:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise fail()
        return float(value)
    if kind is TypeKind.STRING:
        if not isinstance(value, str):
            raise fail()
        return value
    assert literal_type.item is not None or kind is TypeKind.STRUCT
    if kind is TypeKind.LIST:
        if not isinstance(value, list):
            raise fail()
        assert literal_type.item is not None
        return [validate_literal(v, literal_type.item, f"{path}[{i}]") for i, v in enumerate(value)]
    if kind is TypeKind.DICT:
        if not isinstance(value, dict):
            raise fail()
        assert literal_type.item is not None
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise LiteralValidationError(path, f"dict keys must be strings, got {key!r}")
            out[key] = validate_literal(item, literal_type.item, f"{path}.{key}" if path else key)
        return out
    # STRUCT
    if not isinstance(value, dict):
        raise fail()
    fields = literal_type.fields or {}
    unknown = sorted(set(value) - set(fields))
    if unknown:
        raise fail(f"unknown field(s) {', '.join(unknown)} for {expected}")
    missing = sorted(set(fields) - set(value))
    if missing:
        raise fail(f"missing field(s) {', '.join(missing)} for {expected}")
    return {
        name: validate_literal(value[name], ft, f"{path}.{name}" if path else name)
        for name, ft in fields.items()
    }


def to_literal(value: Any, py_type: Any, path: str = "") -> Any:
    """Convert a Python value of `py_type` to its JSON literal, checking it on the way."""
    if isinstance(py_type, type) and dataclasses.is_dataclass(py_type):
        if not isinstance(value, py_type):
            got = type(value).__name__
            raise LiteralValidationError(path, f"expected {py_type.__name__}, got {got} {value!r}")
        return {
            name: to_literal(getattr(value, name), t, f"{path}.{name}" if path else name)
            for name, t in _resolved_fields(py_type).items()
        }
    origin = typing.get_origin(py_type)
    args = typing.get_args(py_type)
    if origin is list and isinstance(value, list | tuple):
        return [to_literal(v, args[0], f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict and isinstance(value, dict):
        return {
            k: to_literal(v, args[1], f"{path}.{k}" if path else str(k)) for k, v in value.items()
        }
    return validate_literal(value, literal_type_of(py_type), path)


def to_python(literal: Any, py_type: Any, path: str = "") -> Any:
    """Convert a JSON literal back to a Python value of `py_type`, checking it on the way."""
    if isinstance(py_type, type) and dataclasses.is_dataclass(py_type):
        checked = validate_literal(literal, literal_type_of(py_type), path)
        return py_type(
            **{
                name: to_python(checked[name], t, f"{path}.{name}" if path else name)
                for name, t in _resolved_fields(py_type).items()
            }
        )
    origin = typing.get_origin(py_type)
    args = typing.get_args(py_type)
    if origin is list:
        if not isinstance(literal, list):
            validate_literal(literal, literal_type_of(py_type), path)
        return [to_python(v, args[0], f"{path}[{i}]") for i, v in enumerate(literal)]
    if origin is dict:
        if not isinstance(literal, dict):
            validate_literal(literal, literal_type_of(py_type), path)
        return {k: to_python(v, args[1], f"{path}.{k}" if path else k) for k, v in literal.items()}
    return validate_literal(literal, literal_type_of(py_type), path)
