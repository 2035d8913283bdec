"""`map_task`: run one task once per element of a list, in parallel, outputs in order.

Inside a workflow, `map_task(t)(xs=..., other=...)` compiles to one map node
(`ir.Node.map`): the control plane expands it into one attempt per element when the lists are
known, runs them within `concurrency` (possibly on several clusters) and collects each output
into a list in element order. Outside a workflow it runs the elements here, in a thread pool,
with the same rules, retries and (opt-in) caching as a local workflow run.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any, Generic, TypeVar

from fleetflow.cache import LocalCache
from fleetflow.compiler import active_compilation
from fleetflow.errors import (
    DefinitionError,
    InvalidOptionError,
    LiteralValidationError,
    MapInputError,
    WorkflowCompileError,
)
from fleetflow.interface import outputs_to_python
from fleetflow.local import map_units, run_map_units
from fleetflow.promise import caller_location
from fleetflow.task import TaskFunction
from fleetflow.types import describe_python_type, to_literal

R = TypeVar("R")


class MapTask(Generic[R]):
    """A task to run once per element; made by `map_task`, called with keyword arguments.

    Attributes:
        task: the task each element runs.
        concurrency: at most this many elements run at once (None: no bound of its own).
    """

    def __init__(self, task: TaskFunction[..., R], concurrency: int | None) -> None:
        self.task = task
        self.concurrency = concurrency

    def __repr__(self) -> str:
        bound = f", concurrency={self.concurrency}" if self.concurrency else ""
        return f"map_task({self.task.spec.name}{bound})"

    def __call__(self, *args: Any, **kwargs: Any) -> list[R]:
        """Inside a workflow body: record a map node and return promises of its lists.
        Outside: run every element now and return their results in element order.

        In a workflow body the result is really a promise of `list[R]`; typing it as the list
        lets type checkers follow the wiring as for a plain task call.
        """
        compilation = active_compilation()
        if compilation is not None:
            return compilation.call_map(self.task, self.concurrency, args, kwargs)  # type: ignore[return-value]
        return self._run_here(args, kwargs)

    def _run_here(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> list[R]:
        task = self.task
        name = task.spec.name
        if args:
            raise TypeError(
                f"{self!r} takes keyword arguments, got {len(args)} positional argument(s)"
            )
        literals, over = self._split_arguments(kwargs)
        if not over:
            shown = ", ".join(f"{v.name}: {v.type.describe()}" for v in task.spec.interface.inputs)
            raise MapInputError(
                f"{self!r} has no argument to map over: pass a list of a parameter's type "
                f"(its parameters: {shown or 'none'})"
            )
        where = f"{self!r}, run locally"
        units = map_units(literals, over, where)
        outputs = run_map_units(
            task,
            units,
            self.concurrency,
            task.fn.__name__,
            where=where,
            cache=LocalCache.from_env(),
        )
        return [
            outputs_to_python(element, task.output_type, f"{name}[{index}].outputs")
            for index, element in enumerate(outputs)
        ]

    def _split_arguments(self, kwargs: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
        """Python arguments -> (input literals, names mapped over), by the map rule."""
        task = self.task
        parameters = task.spec.interface.inputs
        names = [v.name for v in parameters]
        unknown = [k for k in kwargs if k not in names]
        if unknown:
            raise TypeError(
                f"{self!r} got an unexpected argument '{unknown[0]}'; the task's parameters "
                f"are: {', '.join(names) or 'none'}"
            )
        literals: dict[str, Any] = {}
        over: list[str] = []
        for variable in parameters:
            name = variable.name
            py_type = task.input_types[name]
            if name not in kwargs:
                if not variable.has_default:
                    raise TypeError(f"{self!r} is missing required argument '{name}'")
                literals[name] = copy.deepcopy(variable.default)
                continue
            value = kwargs[name]
            try:
                literals[name] = to_literal(value, py_type, name)
                continue
            except LiteralValidationError:
                if not isinstance(value, list | tuple):
                    raise
            try:
                literals[name] = to_literal(value, list[py_type], name)  # type: ignore[valid-type]
            except LiteralValidationError as exc:
                expected = describe_python_type(py_type)
                raise LiteralValidationError(
                    exc.path, f"expected {expected}, or list[{expected}] to map over: {exc.reason}"
                ) from None
            over.append(name)
        return literals, over


def map_task(task: TaskFunction[..., R], concurrency: int | None = None) -> MapTask[R]:
    """Run `task` once per element of a list: `map_task(square, concurrency=4)(x=xs, k=3)`.

    Call the result with keyword arguments, like the task. An argument is *mapped* when the
    task's parameter has type `T` and the value bound to it (a promise or a constant) is a
    `list[T]`: element `i` of the run gets item `i` of every mapped list. Any other argument is
    passed whole to every element and must then be a `T`, exactly as in a plain task call (a
    constant that is itself a valid `T` is passed whole). At least one argument must be
    mapped, and mapped lists must have the same length when the workflow runs.

    Each output `O` of the task becomes a `list[O]`, in element order, so the result can be
    passed to a task that takes `list[O]`:
    `total(values=map_task(square)(x=numbers(n=n), offset=offset))`. A `NamedTuple` return
    type gives one list per field.

    Inside a workflow this compiles to one map node; on the platform each element is its own
    attempt (with the task's retries, cache and resources), at most `concurrency` at a time,
    possibly on several clusters. Outside a workflow the elements run now, in this process, in
    up to `concurrency` threads, and the results come back as a list.

    Args:
        task: a `@task`.
        concurrency: at most this many elements at once; `None` for no bound beyond the
            platform's (locally: a thread pool of a few per CPU).

    Raises:
        DefinitionError: `task` is not a `@task` (a `WorkflowCompileError` in a workflow body,
            naming the line).
        InvalidOptionError: `concurrency` is not a positive int.
    """
    if not isinstance(task, TaskFunction):
        compilation = active_compilation()
        what = (
            "a workflow; nested workflows are not supported yet"
            if hasattr(task, "spec") and hasattr(task, "tasks")
            else repr(task)
        )
        detail = f"map_task takes a @task, got {what}"
        hint = "decorate the function with @task" if callable(task) else None
        if compilation is not None:
            raise WorkflowCompileError(
                detail,
                location=caller_location(),
                workflow=compilation.workflow_name,
                expected="a @task",
                actual=type(task).__name__,
                hint=hint,
            )
        raise DefinitionError(detail, location=caller_location(), expected="a @task", hint=hint)
    if concurrency is not None and (
        isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1
    ):
        raise InvalidOptionError(
            f"map_task({task.spec.name}): concurrency must be a positive int or None, "
            f"got {concurrency!r}"
        )
    return MapTask(task, concurrency)
