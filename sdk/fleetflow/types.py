"""The type system: Python types <-> `LiteralType`, Python values <-> JSON literals.

One module, so the SDK, the task runtime and the control plane agree on every value:
- `literal_type_of(py_type)`: annotation -> IR type (raises `UnsupportedTypeError`);
- `to_literal(value, py_type)` / `to_python(literal, py_type)`: values on the engineer's side
  and in the task runtime, each family of Python types handled by one `TypeTransformer`;
- `validate_literal(literal, literal_type)`: checks and normalises a JSON value against an IR
  type where no Python type exists (the control plane validating execution inputs);
- `is_assignable(source, target)`: whether an output may be bound to a parameter (compiler).

| Python                              | kind      | JSON literal                                  |
|-------------------------------------|-----------|-----------------------------------------------|
| `int`, `float`, `str`, `bool`       | scalars   | number, number, string, true/false            |
| `bytes`                             | bytes     | base64 string                                 |
| `datetime`                          | datetime  | ISO 8601 string, with an offset only if aware |
| `timedelta`                         | duration  | seconds (an integer when whole)               |
| `Enum` with `str` values            | enum      | the member's value                            |
| `Literal["a", "b"]` (strings)       | enum      | the string                                    |
| `Optional[T]`, `T \\| None`          | optional  | null or a literal of T                        |
| `A \\| B`, `Union[A, B]`             | union     | `{"variant": "A", "value": <literal of A>}`   |
| `list[T]`                           | list      | array                                         |
| `dict[K, T]`, K `str`, `int`, enum  | dict      | object; an int key in decimal, an enum's value|
| `set[T]`, `frozenset[T]` (scalars)  | set       | array of distinct items, in their JSON order  |
| dataclass, pydantic model           | struct    | object with exactly the fields                |
| `File`, `Directory`                 | file/dir  | `{"uri", "name"}`, `{"uri"}`                  |
| `numpy.ndarray`, `pandas.DataFrame` | ndarray/  | a File's, naming its `.npy` / Parquet file    |
|                                     | dataframe | (`fleetflow.arrays`)                          |

`bool` is not an `int`, and an `int` widens only to `float`. `Annotated[T, ...]` is `T`
anywhere (its metadata is ignored).

A union's literal names its variant by the variant's `describe()` (`int`, `list[str]`,
`Cat`), so variants that read alike are refused (its IR type lists them in that name's
order); a plain literal of one variant is read as that variant where its JSON shape allows
only one (see `fleetflow.union_literals.union_value`).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime as dt
import enum
import functools
import json
import math
import re
import types
import typing
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlparse

import pydantic

from fleetflow import arrays, files, ir, union_literals
from fleetflow.errors import LiteralValidationError, UnsupportedTypeError
from fleetflow.ir import LiteralType, TypeKind

_NONE_TYPE = type(None)

# ------------------------------------------------------------------------------- helpers


def _qualified_name(tp: type) -> str:
    return f"{tp.__module__}.{tp.__qualname__}"


def _field_path(path: str, name: object) -> str:
    return f"{path}.{name}" if path else str(name)


def _item_path(path: str, index: int) -> str:
    return f"{path}[{index}]"


def _describe_value(value: Any) -> str:
    if value is None:
        return "null"
    text = repr(value)
    if len(text) > 80:
        text = text[:77] + "..."
    return f"{type(value).__name__} {text}"


def _mismatch(path: str, expected: str, value: Any) -> LiteralValidationError:
    return LiteralValidationError(path, f"expected {expected}, got {_describe_value(value)}")


def _strip_annotated(py_type: Any) -> Any:
    while typing.get_origin(py_type) is typing.Annotated:
        py_type = py_type.__origin__
    return py_type


def _is_union(py_type: Any) -> bool:
    return typing.get_origin(py_type) in (typing.Union, types.UnionType)


def _optional_item(py_type: Any) -> Any | None:
    """`T` for `Optional[T]` / `T | None`, `A | B` for `A | B | None`, else None."""
    if not _is_union(py_type):
        return None
    args = typing.get_args(py_type)
    others = tuple(a for a in args if a is not _NONE_TYPE)
    if len(others) == len(args):
        return None
    return others[0] if len(others) == 1 else typing.Union[others]  # noqa: UP007 - a tuple


def _union_variants(py_type: Any) -> tuple[Any, ...] | None:
    """The alternatives of `A | B` (no None among them), else None."""
    if not _is_union(py_type) or _optional_item(py_type) is not None:
        return None
    return typing.get_args(py_type)


def is_named_tuple(py_type: Any) -> typing.TypeGuard[type[tuple[Any, ...]]]:
    """Whether `py_type` is a `NamedTuple` class (a return type declaring several outputs)."""
    return isinstance(py_type, type) and issubclass(py_type, tuple) and hasattr(py_type, "_fields")


# --------------------------------------------------------------------------- transformers


Resolve = Callable[[Any], LiteralType]


class TypeTransformer(ABC):
    """Converts one family of Python types (all dataclasses, all enums...) to and from literals.

    `to_literal` checks the Python value it gets and `to_python` the literal it gets; both raise
    `LiteralValidationError` naming `path`. Containers convert their items through
    `to_literal`/`to_python` again, so transformers compose.
    """

    @abstractmethod
    def handles(self, py_type: Any) -> bool:
        """Whether this transformer converts values of `py_type`."""

    @abstractmethod
    def literal_type(self, py_type: Any, resolve: Resolve) -> LiteralType:
        """The IR type of `py_type`; `resolve` gives the IR type of a nested Python type."""

    @abstractmethod
    def to_literal(self, value: Any, py_type: Any, path: str) -> Any: ...

    @abstractmethod
    def to_python(self, literal: Any, py_type: Any, path: str) -> Any: ...


class _Scalar(TypeTransformer):
    """int, float, str, bool: the literal is the value itself (an int literal widens to float)."""

    def __init__(self, py_type: type, kind: TypeKind) -> None:
        self._py_type = py_type
        self._type = LiteralType(kind=kind)

    def handles(self, py_type: Any) -> bool:
        return py_type is self._py_type

    def literal_type(self, py_type: Any, resolve: Resolve) -> LiteralType:
        return self._type

    def to_literal(self, value: Any, py_type: Any, path: str) -> Any:
        return validate_literal(value, self._type, path)

    def to_python(self, literal: Any, py_type: Any, path: str) -> Any:
        return validate_literal(literal, self._type, path)


class _Bytes(TypeTransformer):
    _type = LiteralType(kind=TypeKind.BYTES)

    def handles(self, py_type: Any) -> bool:
        return py_type is bytes

    def literal_type(self, py_type: Any, resolve: Resolve) -> LiteralType:
        return self._type

    def to_literal(self, value: Any, py_type: Any, path: str) -> Any:
        if not isinstance(value, bytes | bytearray):
            raise _mismatch(path, "bytes", value)
        return base64.b64encode(value).decode("ascii")

    def to_python(self, literal: Any, py_type: Any, path: str) -> Any:
        return base64.b64decode(validate_literal(literal, self._type, path))


class _Datetime(TypeTransformer):
    _type = LiteralType(kind=TypeKind.DATETIME)

    def handles(self, py_type: Any) -> bool:
        return py_type is dt.datetime

    def literal_type(self, py_type: Any, resolve: Resolve) -> LiteralType:
        return self._type

    def to_literal(self, value: Any, py_type: Any, path: str) -> Any:
        if not isinstance(value, dt.datetime):
            raise _mismatch(path, "datetime", value)
        return value.isoformat()

    def to_python(self, literal: Any, py_type: Any, path: str) -> Any:
        return dt.datetime.fromisoformat(validate_literal(literal, self._type, path))


class _Duration(TypeTransformer):
    _type = LiteralType(kind=TypeKind.DURATION)
    _MICROSECOND = dt.timedelta(microseconds=1)

    def handles(self, py_type: Any) -> bool:
        return py_type is dt.timedelta

    def literal_type(self, py_type: Any, resolve: Resolve) -> LiteralType:
        return self._type

    def to_literal(self, value: Any, py_type: Any, path: str) -> Any:
        if not isinstance(value, dt.timedelta):
            raise _mismatch(path, "timedelta", value)
        # Whole seconds stay an exact int; otherwise a float, exact to the microsecond for
        # durations under about a century.
        micros = value // self._MICROSECOND
        return micros // 10**6 if micros % 10**6 == 0 else micros / 10**6

    def to_python(self, literal: Any, py_type: Any, path: str) -> Any:
        return dt.timedelta(seconds=validate_literal(literal, self._type, path))


class _Enum(TypeTransformer):
    """Enums whose values are all strings (`StrEnum` or `Enum` with str values)."""

    def handles(self, py_type: Any) -> bool:
        return isinstance(py_type, type) and issubclass(py_type, enum.Enum)

    def literal_type(self, py_type: Any, resolve: Resolve) -> LiteralType:
        members = list(py_type)
        if not members:
            raise UnsupportedTypeError(f"enum {py_type.__name__} has no members")
        others = [m for m in members if not isinstance(m.value, str)]
        if others:
            shown = ", ".join(f"{m.name}={m.value!r}" for m in others[:3])
            raise UnsupportedTypeError(
                f"enum {py_type.__name__} has non-string values ({shown}); only enums whose "
                "values are all str are supported (e.g. `class Color(StrEnum)`)"
            )
        return LiteralType(
            kind=TypeKind.ENUM,
            name=_qualified_name(py_type),
            values=[m.value for m in members],
        )

    def to_literal(self, value: Any, py_type: Any, path: str) -> Any:
        if not isinstance(value, py_type):
            raise _mismatch(path, f"a member of {py_type.__name__}", value)
        return value.value

    def to_python(self, literal: Any, py_type: Any, path: str) -> Any:
        return py_type(validate_literal(literal, literal_type_of(py_type), path))


class _Optional(TypeTransformer):
    def handles(self, py_type: Any) -> bool:
        return _optional_item(py_type) is not None

    def literal_type(self, py_type: Any, resolve: Resolve) -> LiteralType:
        return LiteralType(kind=TypeKind.OPTIONAL, item=resolve(_optional_item(py_type)))

    def to_literal(self, value: Any, py_type: Any, path: str) -> Any:
        return None if value is None else to_literal(value, _optional_item(py_type), path)

    def to_python(self, literal: Any, py_type: Any, path: str) -> Any:
        return None if literal is None else to_python(literal, _optional_item(py_type), path)


class _Union(TypeTransformer):
    """`A | B`: the literal records its variant, `{"variant": <its describe()>, "value": ...}`,
    so `int | float`, two dataclasses with the same fields... read back as what was written.

    A value is written as the first variant (in declaration order) it is exactly an instance
    of (`3` an `int`, not a `float`), else as the first that takes it (a path as a `File`).
    A plain literal of one variant is read too where its JSON shape names one variant
    (`union_literals.union_value`): a value of type `A` bound to an `A | B` parameter, a JSON input.
    """

    def handles(self, py_type: Any) -> bool:
        return _union_variants(py_type) is not None

    def literal_type(self, py_type: Any, resolve: Resolve) -> LiteralType:
        variants: list[LiteralType] = []
        for arg in _union_variants(py_type) or ():
            variant = resolve(arg)
            if variant.kind is TypeKind.OPTIONAL:
                raise UnsupportedTypeError(
                    f"{describe_python_type(py_type)}: a variant may not be Optional; write "
                    "Optional[A | B] (or A | B | None)"
                )
            if variant.kind is TypeKind.UNION:  # an Annotated union inside a union
                raise UnsupportedTypeError(
                    f"{describe_python_type(py_type)}: a union inside a union; write its "
                    "alternatives in one A | B | C"
                )
            same = [v for v in variants if v.describe() == variant.describe()]
            if same:
                raise UnsupportedTypeError(
                    f"{describe_python_type(py_type)} is ambiguous: two variants read "
                    f"{variant.describe()} (a value records its variant by that name); rename "
                    "one, or use a dataclass with one field per alternative"
                )
            variants.append(variant)
        # In the order of their names: `A | B` and `B | A` are one type (and Python says so).
        variants.sort(key=LiteralType.describe)
        return LiteralType(kind=TypeKind.UNION, variants=variants)

    def to_literal(self, value: Any, py_type: Any, path: str) -> Any:
        args = _union_variants(py_type) or ()
        exact = [a for a in args if _exactly(value, a)]
        first_error: LiteralValidationError | None = None
        for arg in exact or args:
            try:
                literal = to_literal(value, arg, path)
            except LiteralValidationError as exc:
                first_error = first_error or exc
                continue
            return {"variant": literal_type_of(arg).describe(), "value": literal}
        if exact and first_error is not None:  # e.g. a File that does not exist
            raise first_error
        raise _mismatch(path, describe_python_type(py_type), value)

    def to_python(self, literal: Any, py_type: Any, path: str) -> Any:
        try:
            variant, value = union_literals.union_value(literal_type_of(py_type), literal)
        except ValueError as exc:
            raise LiteralValidationError(path, str(exc)) from None
        tag = variant.describe()
        arg = next(
            a for a in _union_variants(py_type) or () if literal_type_of(a).describe() == tag
        )
        return to_python(value, arg, path)


def _exactly(value: Any, py_type: Any) -> bool:
    """Whether `value` is an instance of `py_type` as it is, without widening an int to a float
    or reading a path as a File (the variant a union value is written as)."""
    py_type = _strip_annotated(py_type)
    if py_type is bool:
        return isinstance(value, bool)
    if py_type is int:
        return isinstance(value, int) and not isinstance(value, bool | enum.Enum)
    if py_type is str:
        return isinstance(value, str) and not isinstance(value, enum.Enum)
    if py_type is bytes:
        return isinstance(value, bytes | bytearray)
    origin = typing.get_origin(py_type)
    args = typing.get_args(py_type)
    if _is_union(py_type):
        return any(_exactly(value, arg) for arg in args)
    if origin is list:
        return isinstance(value, list | tuple) and all(_exactly(v, args[0]) for v in value)
    if origin in (set, frozenset):
        return isinstance(value, origin) and all(_exactly(v, args[0]) for v in value)
    if origin is dict:
        return isinstance(value, dict) and all(_exactly(v, args[1]) for v in value.values())
    if origin is typing.Literal:
        return isinstance(value, str) and value in args
    return isinstance(py_type, type) and isinstance(value, py_type)


class _List(TypeTransformer):
    def handles(self, py_type: Any) -> bool:
        return typing.get_origin(py_type) is list

    def literal_type(self, py_type: Any, resolve: Resolve) -> LiteralType:
        args = typing.get_args(py_type)
        if len(args) != 1:
            raise UnsupportedTypeError("list needs one element type, e.g. list[int]")
        return LiteralType(kind=TypeKind.LIST, item=resolve(args[0]))

    def to_literal(self, value: Any, py_type: Any, path: str) -> Any:
        if not isinstance(value, list | tuple):
            raise _mismatch(path, describe_python_type(py_type), value)
        (item_type,) = typing.get_args(py_type)
        item = _transformer_for(item_type)
        item_type = _strip_annotated(item_type)
        return [item.to_literal(v, item_type, _item_path(path, i)) for i, v in enumerate(value)]

    def to_python(self, literal: Any, py_type: Any, path: str) -> Any:
        if not isinstance(literal, list):
            raise _mismatch(path, describe_python_type(py_type), literal)
        (item_type,) = typing.get_args(py_type)
        item = _transformer_for(item_type)
        item_type = _strip_annotated(item_type)
        return [item.to_python(v, item_type, _item_path(path, i)) for i, v in enumerate(literal)]


class _Dict(TypeTransformer):
    """`dict[K, V]` with str, int or (str-valued) enum keys; JSON keys are strings, so an int
    key travels in its decimal form and an enum key as its member's value."""

    def handles(self, py_type: Any) -> bool:
        return typing.get_origin(py_type) is dict

    def literal_type(self, py_type: Any, resolve: Resolve) -> LiteralType:
        args = typing.get_args(py_type)
        if len(args) != 2:
            raise UnsupportedTypeError("dict needs a key and a value type, e.g. dict[str, float]")
        key_type = _strip_annotated(args[0])
        if key_type is str:
            key = None
        elif key_type is int:
            key = LiteralType(kind=TypeKind.INTEGER)
        elif isinstance(key_type, type) and issubclass(key_type, enum.Enum):
            key = resolve(key_type)
        else:
            raise UnsupportedTypeError(
                f"dict keys must be str, int or an enum of str values, not "
                f"{describe_python_type(args[0])}; e.g. dict[str, float]"
            )
        return LiteralType(kind=TypeKind.DICT, item=resolve(args[1]), key=key)

    def to_literal(self, value: Any, py_type: Any, path: str) -> Any:
        if not isinstance(value, dict):
            raise _mismatch(path, describe_python_type(py_type), value)
        key_type, item_type = (_strip_annotated(a) for a in typing.get_args(py_type))
        out: dict[str, Any] = {}
        for key, item in value.items():
            text = _key_literal(key, key_type, path)
            out[text] = to_literal(item, item_type, _field_path(path, text))
        return out

    def to_python(self, literal: Any, py_type: Any, path: str) -> Any:
        if not isinstance(literal, dict):
            raise _mismatch(path, describe_python_type(py_type), literal)
        key_type, item_type = (_strip_annotated(a) for a in typing.get_args(py_type))
        key_literal_type = literal_type_of(py_type).key
        out: dict[Any, Any] = {}
        for text, item in literal.items():
            _validate_key(text, key_literal_type, path)
            key = int(text) if key_type is int else text if key_type is str else key_type(text)
            out[key] = to_python(item, item_type, _field_path(path, text))
        return out


def _key_literal(key: Any, key_type: Any, path: str) -> str:
    if key_type is str:
        if not isinstance(key, str):
            raise LiteralValidationError(path, f"dict keys must be strings, got {key!r}")
        return key if type(key) is str else str.__str__(key)
    if key_type is int:
        if isinstance(key, bool) or not isinstance(key, int):
            raise LiteralValidationError(path, f"dict keys must be ints, got {key!r}")
        return str(key)
    if not isinstance(key, key_type):
        raise LiteralValidationError(
            path, f"dict keys must be members of {key_type.__name__}, got {key!r}"
        )
    return str(key.value)


def _validate_key(text: Any, key_type: LiteralType | None, path: str) -> None:
    """A literal dict key: a string, and for an int key its canonical decimal form, for an
    enum key one of its values."""
    if not isinstance(text, str):
        raise LiteralValidationError(path, f"dict keys must be strings, got {text!r}")
    if key_type is None:
        return
    if key_type.kind is TypeKind.INTEGER:
        if not _INT_KEY.fullmatch(text):
            raise LiteralValidationError(
                path, f"dict key {text!r} is not an int in decimal form (e.g. '3', '-12')"
            )
        return
    values = key_type.values or []
    if text not in values:
        allowed = ", ".join(repr(v) for v in values)
        raise LiteralValidationError(
            path, f"dict key {text!r} is not a {key_type.describe()} (one of {allowed})"
        )


_INT_KEY = re.compile(r"-?(0|[1-9][0-9]*)")


class _Set(TypeTransformer):
    """`set[T]` and `frozenset[T]` of hashable scalars: a JSON list of distinct items, in the
    order of their JSON text, so one set has one literal (task cache keys stay stable)."""

    _HASHABLE = frozenset(
        {
            TypeKind.INTEGER,
            TypeKind.FLOAT,
            TypeKind.STRING,
            TypeKind.BOOLEAN,
            TypeKind.BYTES,
            TypeKind.DATETIME,
            TypeKind.DURATION,
            TypeKind.ENUM,
        }
    )

    def handles(self, py_type: Any) -> bool:
        return typing.get_origin(py_type) in (set, frozenset)

    def literal_type(self, py_type: Any, resolve: Resolve) -> LiteralType:
        args = typing.get_args(py_type)
        if len(args) != 1:
            raise UnsupportedTypeError("set needs one element type, e.g. set[str]")
        item = resolve(args[0])
        if item.kind not in self._HASHABLE:
            raise UnsupportedTypeError(
                f"{describe_python_type(py_type)} is not supported: set items must be scalars "
                "(int, float, str, bool, bytes, datetime, timedelta or an enum); use list[T]"
            )
        return LiteralType(kind=TypeKind.SET, item=item)

    def to_literal(self, value: Any, py_type: Any, path: str) -> Any:
        if not isinstance(value, set | frozenset):
            raise _mismatch(path, describe_python_type(py_type), value)
        (item_type,) = typing.get_args(py_type)
        items = [to_literal(v, item_type, _item_path(path, i)) for i, v in enumerate(value)]
        return _canonical_set(items)

    def to_python(self, literal: Any, py_type: Any, path: str) -> Any:
        items = validate_literal(literal, literal_type_of(py_type), path)
        (item_type,) = typing.get_args(py_type)
        values = [to_python(v, item_type, _item_path(path, i)) for i, v in enumerate(items)]
        return typing.get_origin(py_type)(values)


def _canonical_set(items: list[Any]) -> list[Any]:
    """Distinct items, ordered by their JSON text."""
    by_text = {json.dumps(item, sort_keys=True): item for item in items}
    return [by_text[text] for text in sorted(by_text)]


class _LiteralStrings(TypeTransformer):
    """`Literal["a", "b"]`: one of the given strings (an enum without a class)."""

    def handles(self, py_type: Any) -> bool:
        return typing.get_origin(py_type) is typing.Literal

    def literal_type(self, py_type: Any, resolve: Resolve) -> LiteralType:
        values = typing.get_args(py_type)
        if not all(type(v) is str for v in values):
            raise UnsupportedTypeError(
                f"{describe_python_type(py_type)} is not supported: a Literal of strings is "
                "(e.g. Literal['train', 'eval']); for other values use an Enum"
            )
        return LiteralType(
            kind=TypeKind.ENUM, name=describe_python_type(py_type), values=list(values)
        )

    def to_literal(self, value: Any, py_type: Any, path: str) -> Any:
        return validate_literal(value, literal_type_of(py_type), path)

    def to_python(self, literal: Any, py_type: Any, path: str) -> Any:
        return validate_literal(literal, literal_type_of(py_type), path)


def _check_struct_keys(value: Any, expected: str, names: Iterable[str], path: str) -> None:
    if not isinstance(value, dict):
        raise _mismatch(path, expected, value)
    fields = set(names)
    unknown = sorted(str(k) for k in set(value) - fields)
    if unknown:
        raise LiteralValidationError(path, f"unknown field(s) {', '.join(unknown)} for {expected}")
    missing = sorted(fields - set(value))
    if missing:
        raise LiteralValidationError(path, f"missing field(s) {', '.join(missing)} for {expected}")


class _Struct(TypeTransformer):
    """Shared by dataclasses and pydantic models: named, typed fields, converted one by one."""

    @abstractmethod
    def fields(self, py_type: Any) -> dict[str, Any]:
        """Field name -> annotation, in declaration order."""

    @abstractmethod
    def build(self, py_type: Any, values: dict[str, Any], path: str) -> Any:
        """An instance of `py_type` from converted field values."""

    def literal_type(self, py_type: Any, resolve: Resolve) -> LiteralType:
        field_types: dict[str, LiteralType] = {}
        for name, annotation in self.fields(py_type).items():
            try:
                field_types[name] = resolve(annotation)
            except UnsupportedTypeError as exc:
                raise UnsupportedTypeError(f"field '{name}' of {py_type.__name__}: {exc}") from exc
        return LiteralType(kind=TypeKind.STRUCT, name=_qualified_name(py_type), fields=field_types)

    def to_literal(self, value: Any, py_type: Any, path: str) -> Any:
        if not isinstance(value, py_type):
            raise _mismatch(path, py_type.__name__, value)
        return {
            name: to_literal(getattr(value, name), annotation, _field_path(path, name))
            for name, annotation in self.fields(py_type).items()
        }

    def to_python(self, literal: Any, py_type: Any, path: str) -> Any:
        fields = self.fields(py_type)
        _check_struct_keys(literal, py_type.__name__, fields, path)
        values = {
            name: to_python(literal[name], annotation, _field_path(path, name))
            for name, annotation in fields.items()
        }
        return self.build(py_type, values, path)


@functools.cache
def _dataclass_fields(py_type: type) -> dict[str, Any]:
    hints = typing.get_type_hints(py_type)
    return {f.name: hints[f.name] for f in dataclasses.fields(py_type)}


class _Dataclass(_Struct):
    def handles(self, py_type: Any) -> bool:
        return isinstance(py_type, type) and dataclasses.is_dataclass(py_type)

    def fields(self, py_type: Any) -> dict[str, Any]:
        return _dataclass_fields(py_type)

    def build(self, py_type: Any, values: dict[str, Any], path: str) -> Any:
        init = {f.name for f in dataclasses.fields(py_type) if f.init}
        instance = py_type(**{k: v for k, v in values.items() if k in init})
        for name, value in values.items():
            if name not in init:
                object.__setattr__(instance, name, value)
        return instance


@functools.cache
def _model_fields(py_type: type[pydantic.BaseModel]) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for name, info in py_type.model_fields.items():
        if isinstance(info.annotation, str | typing.ForwardRef):
            raise UnsupportedTypeError(
                f"field '{name}' of {py_type.__name__} is not resolved yet "
                f"({info.annotation!r}); call {py_type.__name__}.model_rebuild()"
            )
        fields[name] = info.annotation
    return fields


def _validation_key(name: str, info: Any) -> str:
    alias = info.validation_alias if isinstance(info.validation_alias, str) else info.alias
    return alias or name


class _PydanticModel(_Struct):
    """Pydantic models: fields as declared (by name, not alias); built with validation."""

    def handles(self, py_type: Any) -> bool:
        return isinstance(py_type, type) and issubclass(py_type, pydantic.BaseModel)

    def fields(self, py_type: Any) -> dict[str, Any]:
        return _model_fields(py_type)

    def build(self, py_type: Any, values: dict[str, Any], path: str) -> Any:
        # Keyed as validation expects them: by alias where a field has one.
        infos = py_type.model_fields
        data = {_validation_key(name, infos[name]): value for name, value in values.items()}
        try:
            return py_type.model_validate(data)
        except pydantic.ValidationError as exc:
            error = exc.errors()[0]
            where = ".".join(str(part) for part in error["loc"])
            raise LiteralValidationError(
                _field_path(path, where) if where else path,
                f"invalid {py_type.__name__}: {error['msg']}",
            ) from None


class _Blob(TypeTransformer):
    """`File`, `Directory`: the literal names a blob (`{"uri", ...}`); `fleetflow.files`
    converts both ways (`convert_out`: value -> literal, `convert_in`: literal -> value)."""

    def __init__(
        self,
        py_type: type,
        kind: TypeKind,
        convert_out: Callable[[Any, str], Any],
        convert_in: Callable[[Any, str], Any],
    ) -> None:
        self._py_type = py_type
        self._type = LiteralType(kind=kind)
        self._convert_out = convert_out
        self._convert_in = convert_in

    def handles(self, py_type: Any) -> bool:
        return py_type is self._py_type

    def literal_type(self, py_type: Any, resolve: Resolve) -> LiteralType:
        return self._type

    def to_literal(self, value: Any, py_type: Any, path: str) -> Any:
        return self._convert_out(value, path)

    def to_python(self, literal: Any, py_type: Any, path: str) -> Any:
        return self._convert_in(validate_literal(literal, self._type, path), path)


class _Stored(TypeTransformer):
    """`numpy.ndarray`, `pandas.DataFrame`: stored as one file (`.npy`, Parquet) whose literal is
    a File's; `fleetflow.arrays` writes and reads it, importing the library only then."""

    def __init__(self, form: arrays.StoredFormat) -> None:
        self._form = form
        self._type = LiteralType(kind=form.kind)

    def handles(self, py_type: Any) -> bool:
        return self._form.handles(py_type)

    def literal_type(self, py_type: Any, resolve: Resolve) -> LiteralType:
        self._form.check_installed()
        return self._type

    def to_literal(self, value: Any, py_type: Any, path: str) -> Any:
        return arrays.to_literal(self._form, value, path)

    def to_python(self, literal: Any, py_type: Any, path: str) -> Any:
        return arrays.to_python(self._form, validate_literal(literal, self._type, path), path)


_TRANSFORMERS: list[TypeTransformer] = [
    _Scalar(bool, TypeKind.BOOLEAN),
    _Scalar(int, TypeKind.INTEGER),
    _Scalar(float, TypeKind.FLOAT),
    _Scalar(str, TypeKind.STRING),
    _Bytes(),
    _Datetime(),
    _Duration(),
    _Blob(files.File, TypeKind.FILE, files.file_to_literal, files.file_to_python),
    _Blob(
        files.Directory, TypeKind.DIRECTORY, files.directory_to_literal, files.directory_to_python
    ),
    *(_Stored(form) for form in arrays.FORMATS),
    _Optional(),
    _Union(),
    _List(),
    _Set(),
    _Dict(),
    _LiteralStrings(),
    _Enum(),
    _Dataclass(),
    _PydanticModel(),
]
_BY_TYPE: dict[Any, TypeTransformer] = {}


def _unsupported(py_type: Any) -> UnsupportedTypeError:
    origin = typing.get_origin(py_type)
    name = describe_python_type(py_type)
    if is_named_tuple(py_type):
        return UnsupportedTypeError(
            f"NamedTuple {name} is only supported as a return type (one output per field); "
            "use a dataclass for a structured value"
        )
    if py_type is tuple or origin is tuple:
        return UnsupportedTypeError(
            f"{name} is not supported; to return several values, return a NamedTuple (one "
            "output per field); for a sequence use list[T], for a record a dataclass"
        )
    if py_type in (list, dict, set, frozenset):
        return UnsupportedTypeError(f"bare {name} has no element type; write {name}[...]")
    if py_type is dt.date:
        return UnsupportedTypeError("date is not supported; use datetime")
    if py_type is typing.Any or py_type is object or isinstance(py_type, typing.TypeVar):
        # A value crosses a task boundary as JSON: its type says how to write and read it.
        return UnsupportedTypeError(
            f"{name} says nothing about how to carry the value between tasks; declare the "
            "concrete type (int, list[str], a dataclass...)"
        )
    return UnsupportedTypeError(f"type {name!r} is not supported")


def _transformer_for(py_type: Any) -> TypeTransformer:
    try:
        return _BY_TYPE[py_type]
    except (KeyError, TypeError):  # not seen yet, or unhashable
        pass
    for transformer in _TRANSFORMERS:
        if transformer.handles(py_type):
            try:
                _BY_TYPE[py_type] = transformer
            except TypeError:
                pass
            return transformer
    stripped = _strip_annotated(py_type)
    if stripped is not py_type:
        return _transformer_for(stripped)
    raise _unsupported(py_type)


# ------------------------------------------------------------------------ public functions


def _resolve(py_type: Any, enclosing: tuple[Any, ...]) -> LiteralType:
    py_type = _strip_annotated(py_type)
    if any(py_type is outer for outer in enclosing):
        raise UnsupportedTypeError(
            f"recursive type {describe_python_type(py_type)} is not supported"
        )
    transformer = _transformer_for(py_type)
    nested = (*enclosing, py_type)
    return transformer.literal_type(py_type, lambda inner: _resolve(inner, nested))


@functools.cache
def _cached_literal_type(py_type: Any) -> LiteralType:
    return _resolve(py_type, ())


def literal_type_of(py_type: Any) -> LiteralType:
    """Map a Python annotation to its IR type.

    Raises:
        UnsupportedTypeError: the type (or a type nested in it) cannot be carried; the message
            says which and what to use instead.
    """
    try:
        hash(py_type)
    except TypeError:
        return _resolve(py_type, ())
    return _cached_literal_type(py_type)


def to_literal(value: Any, py_type: Any, path: str = "") -> Any:
    """Convert a Python value of `py_type` to its JSON literal, checking it on the way.

    Raises:
        LiteralValidationError: the value is not a `py_type`; `path` names where.
        UnsupportedTypeError: `py_type` is not supported.
    """
    return _transformer_for(py_type).to_literal(value, _strip_annotated(py_type), path)


def to_python(literal: Any, py_type: Any, path: str = "") -> Any:
    """Convert a JSON literal back to a Python value of `py_type`, checking it on the way.

    Raises:
        LiteralValidationError: the literal does not match `py_type`; `path` names where.
        UnsupportedTypeError: `py_type` is not supported.
    """
    return _transformer_for(py_type).to_python(literal, _strip_annotated(py_type), path)


def describe_python_type(py_type: Any) -> str:
    """The annotation as a user would read it (`list[int]`, `Optional[Metrics]`)."""
    if py_type is None or py_type is _NONE_TYPE:
        return "None"
    item = _optional_item(py_type)
    if item is not None:
        return f"Optional[{describe_python_type(item)}]"
    origin = typing.get_origin(py_type)
    args = typing.get_args(py_type)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(describe_python_type(a) for a in args)
    if isinstance(origin, type) and args:
        inner = ", ".join("..." if a is Ellipsis else describe_python_type(a) for a in args)
        return f"{origin.__name__}[{inner}]"
    if isinstance(py_type, type):
        return py_type.__name__
    return repr(py_type).replace("typing.", "")


def is_assignable(source: LiteralType, target: LiteralType) -> bool:
    """Whether a value of type `source` may be bound to a parameter of type `target`.

    Exact structural match, except that an int may flow into a float and a `T` into an
    `Optional[T]` (never the other way round). Structs match by name and fields, enums by name
    and values, so two dataclasses with the same fields but different names do not mix.
    """
    if target.kind is TypeKind.OPTIONAL:
        assert target.item is not None
        if source.kind is TypeKind.OPTIONAL:
            assert source.item is not None
            return is_assignable(source.item, target.item)
        return is_assignable(source, target.item)
    if target.kind is TypeKind.UNION:
        if source.kind is TypeKind.UNION:  # every variant of the source is one of the target
            return all(
                (variant := target.variant(v.describe())) is not None and is_assignable(v, variant)
                for v in source.variants or []
            )
        return _plain_variant(source, target) is not None
    if source.kind is TypeKind.INTEGER and target.kind is TypeKind.FLOAT:
        return True
    if source.kind is not target.kind:
        return False
    if source.kind is TypeKind.DICT and source.key != target.key:
        return False
    if source.kind in (TypeKind.LIST, TypeKind.DICT, TypeKind.SET):
        assert source.item is not None and target.item is not None
        return is_assignable(source.item, target.item)
    if source.kind is TypeKind.STRUCT:
        return source.name == target.name and source.fields == target.fields
    if source.kind is TypeKind.ENUM:
        return source.name == target.name and source.values == target.values
    return True


def _plain_variant(source: LiteralType, union: LiteralType) -> LiteralType | None:
    """The variant of `union` a plain literal of `source` is read as
    (`union_literals.union_value`), when every value of `source` is read as that one variant
    and it takes them."""
    shapes = union_literals.produced_shapes(source)
    chosen = {
        id(v): v for v in (union_literals.variant_for_shape(union, shape) for shape in shapes)
    }
    if len(chosen) != 1 or None in chosen.values():
        return None
    (variant,) = chosen.values()
    assert variant is not None
    return variant if is_assignable(source, variant) else None


def assignability_hint(source: LiteralType, target: LiteralType) -> str | None:
    """Advice for a `source` that is not assignable to `target`, when there is more to say
    than the two types (a None to handle, two definitions of one struct)."""
    if source.kind is TypeKind.OPTIONAL and target.kind is not TypeKind.OPTIONAL:
        assert source.item is not None
        if is_assignable(source.item, target):
            return (
                f"the value may be None, which {target.describe()} does not accept: handle "
                f"None in a task that returns {target.describe()} (e.g. with a default), or "
                f"declare the receiving type Optional[{target.describe()}]"
            )
    if target.kind is TypeKind.UNION and source.kind is not TypeKind.UNION:
        variants = target.variants or []
        if any(is_assignable(source, variant) for variant in variants):
            return (
                f"a {source.describe()} value does not say which variant of "
                f"{target.describe()} it is (it could be read as another); declare the "
                f"producing task's return type {target.describe()}, so that its value records "
                "its variant"
            )
    if source.kind is TypeKind.UNION and target.kind is not TypeKind.UNION:
        return (
            f"the value may be any of {source.describe()}; handle each variant in a task that "
            f"returns {target.describe()}, or declare the receiving type {source.describe()}"
        )
    if source.kind is TypeKind.LIST and target.kind is not TypeKind.LIST:
        assert source.item is not None
        if is_assignable(source.item, target):
            return (
                f"to run the task once per element of the {source.describe()}, use "
                "`map_task(task)(param=the_list)`"
            )
    if source.kind is target.kind and source.item is not None and target.item is not None:
        inner = assignability_hint(source.item, target.item)
        if inner is not None:
            return f"in the {source.kind.value} items: {inner}"
    if source.kind is target.kind and source.name == target.name and source.name is not None:
        return (
            f"two different definitions of {source.name} are in play (different fields or "
            "values); import the type from one module"
        )
    return None


def _validate_struct(value: Any, literal_type: LiteralType, path: str) -> dict[str, Any]:
    fields = literal_type.fields or {}
    _check_struct_keys(value, literal_type.describe(), fields, path)
    return {
        name: validate_literal(value[name], ft, _field_path(path, name))
        for name, ft in fields.items()
    }


def _validate_blob(value: Any, literal_type: LiteralType, path: str) -> dict[str, str]:
    is_file = literal_type.kind in ir.FILE_KINDS
    keys = ("uri", "name") if is_file else ("uri",)
    _check_struct_keys(value, literal_type.describe(), keys, path)
    uri = value["uri"]
    if not isinstance(uri, str) or not urlparse(uri).scheme or "\0" in uri:
        raise _mismatch(_field_path(path, "uri"), "a blob URI (scheme://...)", uri)
    if not is_file:
        return {"uri": uri}
    name = value["name"]
    if not isinstance(name, str) or name in ("", ".", "..") or any(c in name for c in "/\\\0"):
        raise _mismatch(_field_path(path, "name"), "a file name without directories", name)
    return {"uri": uri, "name": name}


def validate_literal(value: Any, literal_type: LiteralType, path: str = "") -> Any:
    """Check a JSON value against an IR type and return it normalised.

    Normalised means: ints widened to float where a float is expected, datetimes in Python's
    ISO 8601 form (`...+00:00` for `Z`). Raises `LiteralValidationError` naming the path of the
    first offending value (`inputs.points[2].x`).
    """
    kind = literal_type.kind
    match kind:
        case TypeKind.BOOLEAN:
            if not isinstance(value, bool):
                raise _mismatch(path, "bool", value)
            return value
        case TypeKind.INTEGER:
            if isinstance(value, bool) or not isinstance(value, int):
                raise _mismatch(path, "int", value)
            return value
        case TypeKind.FLOAT:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise _mismatch(path, "float", value)
            return float(value)
        case TypeKind.STRING:
            if not isinstance(value, str):
                raise _mismatch(path, "str", value)
            return value if type(value) is str else str.__str__(value)  # a str subclass
        case TypeKind.BYTES:
            try:
                if not isinstance(value, str):
                    raise ValueError
                base64.b64decode(value, validate=True)
            except (ValueError, binascii.Error):
                raise _mismatch(path, "bytes (a base64 string)", value) from None
            return value
        case TypeKind.DATETIME:
            try:
                if not isinstance(value, str):
                    raise ValueError
                return dt.datetime.fromisoformat(value).isoformat()
            except ValueError:
                raise _mismatch(path, "datetime (an ISO 8601 string)", value) from None
        case TypeKind.DURATION:
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
            ):
                raise _mismatch(path, "timedelta (seconds, a number)", value)
            try:
                dt.timedelta(seconds=value)
            except OverflowError:
                raise LiteralValidationError(path, f"duration {value!r}s is out of range") from None
            return value
        case TypeKind.ENUM:
            values = literal_type.values or []
            if not isinstance(value, str) or value not in values:
                allowed = ", ".join(repr(v) for v in values)
                raise _mismatch(path, f"{literal_type.describe()} (one of {allowed})", value)
            return value
        case TypeKind.OPTIONAL:
            assert literal_type.item is not None
            return None if value is None else validate_literal(value, literal_type.item, path)
        case TypeKind.LIST:
            assert literal_type.item is not None
            if not isinstance(value, list):
                raise _mismatch(path, literal_type.describe(), value)
            item = literal_type.item
            return [validate_literal(v, item, _item_path(path, i)) for i, v in enumerate(value)]
        case TypeKind.DICT:
            assert literal_type.item is not None
            if not isinstance(value, dict):
                raise _mismatch(path, literal_type.describe(), value)
            out = {}
            for key, v in value.items():
                _validate_key(key, literal_type.key, path)
                out[key] = validate_literal(v, literal_type.item, _field_path(path, key))
            return out
        case TypeKind.SET:
            assert literal_type.item is not None
            if not isinstance(value, list):
                raise _mismatch(path, f"{literal_type.describe()} (a list)", value)
            item = literal_type.item
            items = [validate_literal(v, item, _item_path(path, i)) for i, v in enumerate(value)]
            seen: set[str] = set()
            for i, v in enumerate(items):
                text = json.dumps(v, sort_keys=True)
                if text in seen:
                    raise LiteralValidationError(
                        _item_path(path, i), f"{v!r} is in the set more than once"
                    )
                seen.add(text)
            return _canonical_set(items)
        case TypeKind.STRUCT:
            return _validate_struct(value, literal_type, path)
        case TypeKind.FILE | TypeKind.DIRECTORY | TypeKind.NDARRAY | TypeKind.DATAFRAME:
            return _validate_blob(value, literal_type, path)
        case TypeKind.UNION:  # normalised to the tagged form
            try:
                variant, inner = union_literals.union_value(literal_type, value)
            except ValueError as exc:
                raise LiteralValidationError(path, str(exc)) from None
            return {"variant": variant.describe(), "value": validate_literal(inner, variant, path)}
    raise AssertionError(f"unhandled type kind {kind}")  # pragma: no cover
