"""`@workflow`: a typed DAG of task calls, compiled when the module is imported.

Compiling at decoration time means a wiring mistake surfaces on `import`, on the engineer's
machine. The resulting `WorkflowFunction` is both the spec (`.spec`, what `fleetflow run
--remote` registers) and a callable that runs the same graph in-process, so local and remote
runs cannot drift apart. It also owns the conversions the CLI and client need between Python
values, command-line strings and the JSON literals of the interface.

The task runtime imports a workflow's module only to find one task in it, so it imports it
under `compiler.define_on_first_use()`: its workflows compile only if something asks for them
(compiling them was a tenth of a no-op attempt's time in its process).
"""

from __future__ import annotations

import copy
import functools
import json
import math
import os
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Generic, ParamSpec, TypeVar, overload

from fleetflow import ir
from fleetflow.cache import LocalCache
from fleetflow.compiler import (
    CompiledWorkflow,
    active_compilation,
    compile_workflow,
    defining_on_first_use,
)
from fleetflow.errors import (
    LiteralValidationError,
    WorkflowCompileError,
    WorkflowInputError,
    WorkflowOutputError,
)
from fleetflow.files import Directory, File
from fleetflow.interface import (
    Signature,
    extract_signature,
    outputs_to_python,
    require_function,
)
from fleetflow.local import run_locally
from fleetflow.task import TaskFunction
from fleetflow.types import to_literal, to_python

P = ParamSpec("P")
R = TypeVar("R")

TRUE_TEXTS = frozenset({"true", "1", "yes"})
FALSE_TEXTS = frozenset({"false", "0", "no"})
NONE_TEXTS = frozenset({"null", "none"})


class WorkflowFunction(Generic[P, R]):
    """A function decorated with `@workflow`, compiled into `spec`.

    Attributes:
        fn: the original function (its body is only ever run to compile it).
        input_types: input name -> Python type, in declaration order.
        output_type: the declared return type, or `None` when the workflow returns nothing.
        defaults: input name -> Python default value.
        spec: the compiled `ir.WorkflowSpec`.
        tasks: task name (as in `spec.tasks`) -> the `TaskFunction` its nodes run.

    Calling it (`pipeline(n=3)`) runs the workflow locally and returns the real result;
    cacheable tasks use the local cache named by `FLEETFLOW_LOCAL_CACHE_DIR`, if set.
    """

    def __init__(self, fn: Callable[P, R]) -> None:
        require_function(fn, "@workflow")
        self._qualified_name = f"{fn.__module__}.{fn.__name__}"
        self.fn: Callable[P, R] = fn
        functools.update_wrapper(self, fn)
        if not defining_on_first_use():
            self._compilation  # noqa: B018 - compiled now: a wiring mistake fails the import

    @functools.cached_property
    def _signature(self) -> Signature:
        return extract_signature(
            self.fn,
            functools.partial(WorkflowCompileError, workflow=self._qualified_name),
            decorator="@workflow",
        )

    @functools.cached_property
    def _compilation(self) -> CompiledWorkflow:
        fn = self.fn
        return compile_workflow(
            fn,
            self._signature,
            name=self._qualified_name,
            module=fn.__module__,
            function=fn.__name__,
        )

    @property
    def input_types(self) -> dict[str, Any]:
        return self._signature.input_types

    @property
    def output_type(self) -> Any | None:
        return self._signature.output_type

    @property
    def defaults(self) -> dict[str, Any]:
        return self._signature.defaults

    @property
    def spec(self) -> ir.WorkflowSpec:
        return self._compilation.spec

    @property
    def tasks(self) -> dict[str, TaskFunction[..., Any]]:
        return self._compilation.tasks

    @property
    def name(self) -> str:
        return self.spec.name

    def __repr__(self) -> str:
        return f"<workflow {self.spec.name}>"

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run the workflow locally, in this process, and return its result.

        Raises:
            WorkflowInputError: unknown or missing inputs.
            LiteralValidationError: an input (`inputs.n`) or a task's result does not match
                its declared type.
            Exception: whatever a task raises, with a note naming the node.
        """
        compilation = active_compilation()
        if compilation is not None:  # a sub-workflow: inlined into the calling workflow
            return typing.cast(R, compilation.call_workflow(self, args, kwargs))
        values = self._name_positional(args, kwargs)
        outputs = self.run_local(values, cache=LocalCache.from_env())
        result: R = self.outputs_to_python(outputs)
        return result

    def run_local(
        self, values: Mapping[str, Any], *, cache: LocalCache | None = None
    ) -> dict[str, Any]:
        """Run the workflow in this process on Python input values; its outputs as JSON
        literals by output name (what a remote execution reports as `outputs`).

        Args:
            values: input name -> Python value; inputs left out take their defaults.
            cache: where cacheable tasks keep their outputs; None runs every task.

        Raises:
            as calling the workflow does.
        """
        return run_locally(self.spec, self.tasks, self.inputs_to_literals(values), cache=cache)

    def _name_positional(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> dict[str, Any]:
        names = list(self.input_types)
        if len(args) > len(names):
            raise WorkflowInputError(
                f"workflow '{self.spec.name}' takes {len(names)} input(s), "
                f"got {len(args)} positional argument(s)"
            )
        values = dict(zip(names, args, strict=False))
        for name, value in kwargs.items():
            if name in values:
                raise WorkflowInputError(f"input '{name}' given twice", input_name=name)
            values[name] = value
        return values

    def _check_names(self, names: list[str]) -> None:
        for name in names:
            if name not in self.input_types:
                known = ", ".join(self.input_types) or "none"
                raise WorkflowInputError(
                    f"workflow '{self.spec.name}' has no input '{name}'; its inputs are: {known}",
                    input_name=name,
                )

    def inputs_to_literals(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """Python input values -> JSON literals of the interface, defaults filled in.

        Raises:
            WorkflowInputError: an unknown input, or a required one missing.
            LiteralValidationError: a value of the wrong type, its path naming `inputs.<name>`.
        """
        self._check_names(list(values))
        literals: dict[str, Any] = {}
        for variable in self.spec.interface.inputs:
            name = variable.name
            if name in values:
                literals[name] = to_literal(values[name], self.input_types[name], f"inputs.{name}")
            elif variable.has_default:
                literals[name] = copy.deepcopy(variable.default)
            else:
                raise WorkflowInputError(
                    f"workflow '{self.spec.name}' is missing required input '{name}' "
                    f"({variable.type.describe()})",
                    input_name=name,
                )
        return literals

    def parse_cli_inputs(self, raw: Mapping[str, str]) -> dict[str, Any]:
        """Strings from `--name value` flags -> Python values of the inputs' types.

        int, float and str are read as such; bool accepts true/false/1/0/yes/no; a File or
        Directory is a local path; an enum, datetime (ISO 8601) or bytes (base64) is its
        literal text; a timedelta is seconds; an Optional is `null`/`none` or its type; lists,
        dicts, dataclasses and models are JSON. `-` in a name reads as `_`. Inputs not given
        are left out (the workflow's defaults apply later). Raises `WorkflowInputError`, e.g.
        "input 'lr': expected float, got 'abc'".
        """
        parsed: dict[str, Any] = {}
        for given, text in raw.items():
            name = given if given in self.input_types else given.replace("-", "_")
            self._check_names([name])
            parsed[name] = self._parse_cli_value(name, text)
        return parsed

    def _parse_cli_value(self, name: str, text: str) -> Any:
        variable = self.spec.interface.input(name)
        assert variable is not None
        return self._parse_cli_text(name, text, self.input_types[name], variable.type)

    def _parse_cli_text(
        self, name: str, text: str, py_type: Any, literal_type: ir.LiteralType
    ) -> Any:
        kind = literal_type.kind
        expected = literal_type.describe()

        def fail(detail: str = "") -> WorkflowInputError:
            return WorkflowInputError(
                f"input '{name}': expected {expected}, got {text!r}{detail}", input_name=name
            )

        if kind is ir.TypeKind.OPTIONAL:
            if text.strip().lower() in NONE_TEXTS:
                return None
            assert literal_type.item is not None
            others = tuple(t for t in typing.get_args(py_type) if t is not type(None))
            inner = others[0] if len(others) == 1 else typing.Union[others]  # noqa: UP007
            return self._parse_cli_text(name, text, inner, literal_type.item)
        if kind is ir.TypeKind.FILE:
            return File(text)  # a local path; it must exist when converted to a literal
        if kind is ir.TypeKind.DIRECTORY:
            return Directory(text)
        if kind in (ir.TypeKind.NDARRAY, ir.TypeKind.DATAFRAME):  # a local .npy / Parquet file
            local = Path(os.path.abspath(text))
            try:
                return to_python({"uri": local.as_uri(), "name": local.name}, py_type)
            except LiteralValidationError as exc:
                raise fail(f" ({exc.reason})") from None
        if kind is ir.TypeKind.STRING:
            return text
        if kind in (ir.TypeKind.ENUM, ir.TypeKind.DATETIME, ir.TypeKind.BYTES):
            try:  # their literal is the text itself: `--color red`, `--at 2024-05-01T12:00`
                return to_python(text.strip(), py_type, f"inputs.{name}")
            except LiteralValidationError as exc:
                raise fail(f" ({exc.reason})") from None
        if kind is ir.TypeKind.BOOLEAN:
            lowered = text.strip().lower()
            if lowered in TRUE_TEXTS:
                return True
            if lowered in FALSE_TEXTS:
                return False
            raise fail(" (use true/false, 1/0 or yes/no)")
        if kind is ir.TypeKind.INTEGER:
            try:
                return int(text.strip(), 10)
            except ValueError:
                raise fail() from None
        if kind in (ir.TypeKind.FLOAT, ir.TypeKind.DURATION):
            try:
                number = float(text)
            except ValueError:
                raise fail(" (seconds)" if kind is ir.TypeKind.DURATION else "") from None
            if not math.isfinite(number):
                raise fail(" (must be finite)")
            if kind is ir.TypeKind.FLOAT:
                return number
            try:
                return to_python(number, py_type, f"inputs.{name}")
            except LiteralValidationError as exc:
                raise fail(f" ({exc.reason})") from None
        try:
            literal = json.loads(text)
        except json.JSONDecodeError as exc:
            if kind is not ir.TypeKind.UNION:
                raise fail(f" (not valid JSON: {exc.msg})") from None
            literal = text  # a union's bare word: its text variant's value (`--label three`)
        try:
            return to_python(literal, py_type, f"inputs.{name}")
        except LiteralValidationError as exc:
            raise fail(f" ({exc})") from None

    def outputs_to_python(self, outputs: Mapping[str, Any]) -> Any:
        """JSON outputs by name (`{"o0": ...}`, or one per field of a NamedTuple return type)
        -> the Python value of the return type (None if none, the NamedTuple if declared).

        Raises:
            WorkflowOutputError: an output is absent.
            LiteralValidationError: an output does not match its type.
        """
        for variable in self.spec.interface.outputs:
            if variable.name not in outputs:
                raise WorkflowOutputError(
                    f"workflow '{self.spec.name}' outputs have no '{variable.name}' "
                    f"(got: {', '.join(outputs) or 'none'})"
                )
        return outputs_to_python(outputs, self.output_type)


@overload
def workflow(fn: Callable[P, R], /) -> WorkflowFunction[P, R]: ...


@overload
def workflow() -> Callable[[Callable[P, R]], WorkflowFunction[P, R]]: ...


def workflow(
    fn: Callable[P, R] | None = None, /
) -> WorkflowFunction[P, R] | Callable[[Callable[P, R]], WorkflowFunction[P, R]]:
    """Declare and compile a workflow: `@workflow` (or `@workflow()`).

    The body runs once, now, with promises for its inputs: call tasks with keyword arguments,
    pass their results on, return the result. Python control flow on task results is not
    possible in the body (it would need their values); it raises a `WorkflowCompileError`.
    Branch with `conditional(...)` instead (`fleetflow.conditional`).

    Raises:
        WorkflowCompileError: the message names the workflow, the line in the body, the task,
            the parameter, and the expected and actual types.
    """
    if fn is None:
        return WorkflowFunction
    return WorkflowFunction(fn)
