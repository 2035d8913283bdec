"""Signature -> typed interface, shared by `@task` and `@workflow`.

Both decorators need the same thing from a Python function: every parameter and the return
annotated with a type Fleetflow can carry, defaults that are valid literals of those types, and
the source location to blame when something is off. Doing it once here keeps the two decorators'
errors identical in shape.
"""

from __future__ import annotations

import ast
import inspect
import textwrap
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from fleetflow import ir
from fleetflow.errors import DefinitionError, LiteralValidationError, UnsupportedTypeError
from fleetflow.promise import caller_location
from fleetflow.types import (
    describe_python_type,
    is_named_tuple,
    literal_type_of,
    to_literal,
    to_python,
)

#: The name of the single output of a task or workflow that returns a value.
SINGLE_OUTPUT = "o0"

_SUPPORTED = (
    "int, float, str, bool, bytes, datetime, timedelta, Enum (str values), Optional[T], "
    "A | B, list[T], dict[str, T], File, Directory, numpy.ndarray, pandas.DataFrame, and "
    "dataclasses or pydantic models of those"
)


class ErrorFactory(Protocol):
    """Builds the decorator-specific error (task or workflow) with the subject already bound."""

    def __call__(
        self,
        detail: str,
        *,
        location: str,
        parameter: str | None = None,
        expected: str | None = None,
        actual: str | None = None,
        hint: str | None = None,
    ) -> DefinitionError: ...


@dataclass(frozen=True)
class Signature:
    """What a decorator learns from a function's signature.

    Attributes:
        input_types: parameter name -> Python annotation, in declaration order.
        defaults: parameter name -> Python default, for parameters that have one.
        output_type: the return annotation, or `None` when the function returns nothing.
        interface: the same as IR types, defaults as JSON literals; its outputs are one per
            field of a NamedTuple return type, else a single `SINGLE_OUTPUT`.
    """

    input_types: dict[str, Any]
    defaults: dict[str, Any]
    output_type: Any | None
    interface: ir.TypedInterface


_FunctionNode = ast.FunctionDef | ast.AsyncFunctionDef


def _parse_function_source(fn: Callable[..., Any]) -> tuple[_FunctionNode, int] | None:
    """The function's AST node and the line offset of its source, or None without source."""
    try:
        lines, start = inspect.getsourcelines(fn)
        tree = ast.parse(textwrap.dedent("".join(lines)))
    except (OSError, TypeError, SyntaxError):
        return None
    first = tree.body[0] if tree.body else None
    if isinstance(first, _FunctionNode):
        return first, start - 1
    return None


def _own_return_lines(node: ast.AST) -> list[int]:
    """Lines of `return` statements of this function, not of functions nested in it."""
    lines: list[int] = []
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda | ast.ClassDef):
            continue
        if isinstance(child, ast.Return):
            lines.append(child.lineno)
        lines.extend(_own_return_lines(child))
    return lines


def definition_location(fn: Callable[..., Any]) -> str:
    """`file:line` of the `def` statement itself, not of its first decorator."""
    code = fn.__code__
    parsed = _parse_function_source(fn)
    line = parsed[0].lineno + parsed[1] if parsed else code.co_firstlineno
    return f"{code.co_filename}:{line}"


def return_location(fn: Callable[..., Any]) -> str:
    """`file:line` of the function's last `return` (its def when it has none).

    Used for a workflow whose return value does not match its annotation: by the time that is
    checked the body has finished, so the line is found in the source instead of a frame.
    """
    parsed = _parse_function_source(fn)
    if parsed is None:
        return definition_location(fn)
    node, offset = parsed
    returns = _own_return_lines(node)
    line = max(returns) if returns else node.lineno
    return f"{fn.__code__.co_filename}:{line + offset}"


def require_function(fn: object, decorator: str) -> None:
    """Decorators take a `def` function; anything else is a usage mistake, said so clearly."""
    if inspect.isfunction(fn):
        return
    hint = "" if callable(fn) else f"; pass options as keywords, e.g. {decorator}(retries=2)"
    raise DefinitionError(
        f"{decorator} decorates a function defined with `def`, got {fn!r}{hint}",
        location=caller_location(),
    )


def extract_signature(fn: Callable[..., Any], fail: ErrorFactory, *, decorator: str) -> Signature:
    """Read and check the annotations and defaults of `fn`.

    Raises:
        DefinitionError: (built by `fail`) naming the parameter, its type and the def's location.
    """

    def error(detail: str, **details: Any) -> DefinitionError:
        # Located lazily: reading the source is only worth it when there is an error.
        return fail(detail, location=definition_location(fn), **details)

    # The runtime imports `<module>.<function>` and calls it synchronously for one result.
    if fn.__name__ == "<lambda>":
        raise error(f"{decorator} needs a named function (`def`), not a lambda")
    if inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn):
        raise error(f"async functions are not supported by {decorator} yet")
    if inspect.isgeneratorfunction(fn):
        raise error(f"generator functions are not supported by {decorator}; return a list")
    try:
        hints = typing.get_type_hints(fn)
    except Exception as exc:  # NameError for a forward reference that does not resolve, etc.
        raise error(f"cannot resolve its type annotations: {exc}") from exc

    input_types: dict[str, Any] = {}
    defaults: dict[str, Any] = {}
    variables: list[ir.Variable] = []
    for param in inspect.signature(fn).parameters.values():
        name = param.name
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            star = "*" if param.kind is param.VAR_POSITIONAL else "**"
            raise error(
                f"parameter '{star}{name}' is not supported: declare each input as a named, "
                "annotated parameter",
                parameter=name,
            )
        if param.kind is param.POSITIONAL_ONLY:
            raise error(
                f"parameter '{name}' is positional-only; inputs are passed by name",
                parameter=name,
            )
        if name not in hints:
            raise error(
                f"parameter '{name}' has no type annotation; annotate it, e.g. `{name}: int`",
                parameter=name,
                expected="an annotation",
                actual="none",
            )
        py_type = hints[name]
        literal_type = _literal_type(py_type, error, f"parameter '{name}'", name)
        variable = ir.Variable(name=name, type=literal_type)
        if param.default is not param.empty:
            try:
                default_literal = to_literal(param.default, py_type)
            except LiteralValidationError as exc:
                raise error(
                    f"default {param.default!r} of parameter '{name}' is not a valid "
                    f"{describe_python_type(py_type)}: {exc}",
                    parameter=name,
                    expected=describe_python_type(py_type),
                    actual=type(param.default).__name__,
                ) from exc
            defaults[name] = param.default
            variable = ir.Variable(
                name=name, type=literal_type, default=default_literal, has_default=True
            )
        input_types[name] = py_type
        variables.append(variable)

    if "return" not in hints:
        raise error(
            "the return value has no type annotation; annotate it (`-> None` if it returns "
            "nothing)",
            expected="an annotation",
            actual="none",
        )
    output_type = tuple_outputs(hints["return"], fn)
    if output_type is type(None):
        output_type = None
    outputs: list[ir.Variable] = []
    if output_type is not None and is_named_tuple(output_type):
        try:
            fields = named_tuple_fields(output_type)
        except UnsupportedTypeError as exc:
            raise error(f"the return type {exc}") from exc
        for field_name, field_type in fields.items():
            what = f"output '{field_name}' of the return type {output_type.__name__}"
            literal_type = _literal_type(field_type, error, what, None)
            outputs.append(ir.Variable(name=field_name, type=literal_type))
    elif output_type is not None:
        literal_type = _literal_type(output_type, error, "the return type", None)
        outputs.append(ir.Variable(name=SINGLE_OUTPUT, type=literal_type))
    return Signature(
        input_types=input_types,
        defaults=defaults,
        output_type=output_type,
        interface=ir.TypedInterface(inputs=variables, outputs=outputs),
    )


def _literal_type(
    py_type: Any, error: Callable[..., DefinitionError], what: str, parameter: str | None
) -> ir.LiteralType:
    try:
        return literal_type_of(py_type)
    except (UnsupportedTypeError, NameError) as exc:  # NameError: a dataclass's forward ref
        raise error(
            f"{what} has unsupported type {describe_python_type(py_type)}: {exc}; supported are "
            f"{_SUPPORTED}",
            parameter=parameter,
            expected=_SUPPORTED,
            actual=describe_python_type(py_type),
        ) from exc


# ------------------------------------------------------------------------------ outputs
# A return type declares the outputs: none for `None`, one per field for a NamedTuple (named
# by the field), else a single output named `SINGLE_OUTPUT`.


def tuple_outputs(return_type: Any, fn: Callable[..., Any]) -> Any:
    """`-> tuple[A, B]` declares one output per element, named `o0`, `o1`, ... (as in Flyte):
    the return type becomes a NamedTuple of those fields, so a call's outputs are read as
    `.o0` or unpacked (`a, b = split(...)`). Any other return type is returned as it is."""
    args = typing.get_args(return_type)
    if typing.get_origin(return_type) is not tuple or not args or Ellipsis in args:
        return return_type
    if args == ((),):  # tuple[()]: nothing to return
        return return_type
    outputs = typing.NamedTuple(  # type: ignore[misc]
        f"{fn.__name__}_outputs", [(f"o{i}", arg) for i, arg in enumerate(args)]
    )
    outputs.__module__ = fn.__module__
    outputs.__qualname__ = f"{fn.__qualname__}.outputs"
    return outputs


def named_tuple_fields(named_tuple: type) -> dict[str, Any]:
    """Field name -> annotation of a NamedTuple return type, in field order.

    Raises:
        UnsupportedTypeError: a field without an annotation (`collections.namedtuple`), or
            no fields at all.
    """
    fields: tuple[str, ...] = getattr(named_tuple, "_fields", ())
    hints = typing.get_type_hints(named_tuple)
    missing = [name for name in fields if name not in hints]
    if missing or not fields:
        detail = f"field(s) {', '.join(missing)} without a type" if missing else "no fields"
        raise UnsupportedTypeError(
            f"{named_tuple.__name__} has {detail}; declare the outputs as a "
            "`typing.NamedTuple` subclass with annotated fields"
        )
    return {name: hints[name] for name in fields}


def output_types(output_type: Any | None) -> dict[str, Any]:
    """Output name -> Python type, in interface order, for a return type."""
    if output_type is None:
        return {}
    if is_named_tuple(output_type):
        return named_tuple_fields(output_type)
    return {SINGLE_OUTPUT: output_type}


def outputs_to_literals(
    value: Any, output_type: Any | None, path: str = "outputs"
) -> dict[str, Any]:
    """What a task or workflow returned -> its outputs as JSON literals, by output name.

    A NamedTuple return type takes an instance of it or a plain tuple of as many values.

    Raises:
        LiteralValidationError: a value of the wrong type, its path naming the output.
    """
    types = output_types(output_type)
    if output_type is None or not is_named_tuple(output_type):
        return {name: to_literal(value, t, f"{path}.{name}") for name, t in types.items()}
    if not isinstance(value, tuple) or len(value) != len(types):
        raise LiteralValidationError(
            path,
            f"expected {output_type.__name__} ({len(types)} outputs: {', '.join(types)}), got "
            + (f"a tuple of {len(value)}" if isinstance(value, tuple) else type(value).__name__),
        )
    return {
        name: to_literal(item, t, f"{path}.{name}")
        for (name, t), item in zip(types.items(), value, strict=True)
    }


def outputs_to_python(
    literals: Mapping[str, Any], output_type: Any | None, path: str = "outputs"
) -> Any:
    """Outputs as JSON literals, by name -> the Python value of the return type.

    Raises:
        LiteralValidationError: an output is missing or does not match its type.
    """
    types = output_types(output_type)
    missing = [name for name in types if name not in literals]
    if missing:
        raise LiteralValidationError(path, f"missing output(s) {', '.join(missing)}")
    values = {name: to_python(literals[name], t, f"{path}.{name}") for name, t in types.items()}
    if output_type is None:
        return None
    if is_named_tuple(output_type):
        return output_type(**values)
    return values[SINGLE_OUTPUT]
