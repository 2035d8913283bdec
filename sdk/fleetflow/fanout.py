"""`map_task`: run one task once per element of a list, in parallel, outputs in order.

Inside a workflow, `map_task(t)(xs=..., other=...)` compiles to one map node
(`ir.Node.map`): the control plane expands it into one attempt per element when the lists are
known, runs them within `concurrency` (possibly on several clusters) and collects each output
into a list in element order. Outside a workflow it runs the elements here, in a thread pool,
with the same rules, retries and (opt-in) caching as a local workflow run.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Mapping
from typing import Any, Generic, TypeVar

from fleetflow.cache import LocalCache
from fleetflow.call_checks import CallForm, check_keyword_call
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
        bound: the arguments a `functools.partial` of the task binds, passed whole to every
            element.
        min_success_ratio: the fraction of elements that must succeed (1.0: all of them).
    """

    def __init__(
        self,
        task: TaskFunction[..., R],
        concurrency: int | None,
        bound: Mapping[str, Any] | None = None,
        min_success_ratio: float = 1.0,
    ) -> None:
        self.task = task
        self.concurrency = concurrency
        self.bound = dict(bound or {})
        self.min_success_ratio = min_success_ratio

    def __repr__(self) -> str:
        limit = f", concurrency={self.concurrency}" if self.concurrency else ""
        if self.min_success_ratio != 1.0:
            limit += f", min_success_ratio={self.min_success_ratio}"
        name = self.task.spec.name
        if self.bound:
            name = f"functools.partial({name}, {', '.join(f'{k}=...' for k in self.bound)})"
        return f"map_task({name}{limit})"

    def __call__(self, *args: Any, **kwargs: Any) -> list[R]:
        """Inside a workflow body: record a map node and return promises of its lists.
        Outside: run every element now and return their results in element order.

        In a workflow body the result is really a promise of `list[R]` (of
        `list[Optional[R]]` with a `min_success_ratio` below 1: a failed element is None);
        typing it as the list lets type checkers follow the wiring as for a plain task call.
        """
        compilation = active_compilation()
        if compilation is not None:
            return compilation.call_map(  # type: ignore[return-value]
                self.task,
                self.concurrency,
                args,
                kwargs,
                self.bound,
                min_success_ratio=self.min_success_ratio,
            )
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
            min_success_ratio=self.min_success_ratio,
        )
        results: list[Any] = [  # None for a failed element, with a min_success_ratio
            None
            if element is None
            else outputs_to_python(element, task.output_type, f"{name}[{index}].outputs")
            for index, element in enumerate(outputs)
        ]
        return results

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
        twice = [k for k in kwargs if k in self.bound]
        if twice:
            raise TypeError(
                f"{self!r} got argument '{twice[0]}', which functools.partial already binds"
            )
        literals: dict[str, Any] = {}
        over: list[str] = []
        for variable in parameters:
            name = variable.name
            py_type = task.input_types[name]
            if name in self.bound:  # passed whole, never mapped
                literals[name] = to_literal(self.bound[name], py_type, name)
                continue
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


def map_task(
    task: TaskFunction[..., R] | functools.partial[R],
    concurrency: int | None = None,
    min_success_ratio: float = 1.0,
) -> MapTask[R]:
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

    `map_task(functools.partial(task, k=value))` binds `k` for every element: `value` (a
    constant or a promise) is passed whole, never mapped, and type-checked as in a plain call.
    A partial binds parameters by keyword only, and must leave at least one to map over.

    `map_task(task, min_success_ratio=0.8)` tolerates failures: the node succeeds when at
    least that fraction of its elements succeed (after their retries), and a failed element's
    value is None, so each output is a `list[Optional[O]]` (passing it where a `list[O]` is
    expected does not compile). Too many failures fail the node with an error that says how
    many elements failed of how many, and shows one failed element's error. The default, 1.0,
    fails the node on any element's failure.

    Args:
        task: a `@task`, or a `functools.partial` of one with keyword arguments.
        concurrency: at most this many elements at once; `None` for no bound beyond the
            platform's (locally: a thread pool of a few per CPU).
        min_success_ratio: the fraction of elements, in (0, 1], that must succeed.

    Raises:
        DefinitionError: `task` is not a `@task` or a keyword-only `functools.partial` of one
            that leaves a parameter to map over, or `min_success_ratio` is not a number in
            (0, 1] (a `WorkflowCompileError` in a workflow body, naming the line).
        InvalidOptionError: `concurrency` is not a positive int.
    """
    bound: dict[str, Any] = {}
    if isinstance(task, functools.partial):
        task, bound = _unwrap_partial(task)
    if not isinstance(task, TaskFunction):
        if hasattr(task, "spec") and hasattr(task, "tasks"):  # a @workflow
            raise _refused(
                f"map_task takes a @task, got a workflow ({task!r}); mapping a sub-workflow is "
                "not supported",
                expected="a @task",
                actual="a workflow",
                hint="map_task its tasks one after the other (each map's list output feeds "
                "the next)",
            )
        detail = f"map_task takes a @task, got {task!r}"
        hint = "decorate the function with @task" if callable(task) else None
        raise _refused(detail, expected="a @task", actual=type(task).__name__, hint=hint)
    if concurrency is not None and (
        isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1
    ):
        raise InvalidOptionError(
            f"map_task({task.spec.name}): concurrency must be a positive int or None, "
            f"got {concurrency!r}"
        )
    _check_ratio(task, min_success_ratio)
    return MapTask(task, concurrency, bound, float(min_success_ratio))


def _check_ratio(task: TaskFunction[..., Any], ratio: Any) -> None:
    """Refuse a `min_success_ratio` that is not a number in (0, 1]."""
    if isinstance(ratio, bool) or not isinstance(ratio, int | float):
        actual = type(ratio).__name__
        shown = f"{actual} {ratio!r}"
    elif not 0 < ratio <= 1:  # NaN fails this too
        actual = shown = repr(ratio)
    else:
        return
    raise _refused(
        f"map_task of task '{task.spec.name}': min_success_ratio must be a number in (0, 1] "
        f"(the fraction of elements that must succeed), got {shown}",
        task=task.spec.name,
        expected="a number in (0, 1]",
        actual=actual,
        hint="min_success_ratio=0.8: the node succeeds when at least 80% of its elements do; "
        "1.0 (the default): only when all of them do",
    )


def _refused(detail: str, **details: Any) -> DefinitionError:
    """What `map_task` raises for `detail`: a `WorkflowCompileError` naming the workflow and
    the line in a workflow body, else a `DefinitionError` naming the line."""
    compilation = active_compilation()
    if compilation is not None:
        return WorkflowCompileError(
            detail, location=caller_location(), workflow=compilation.workflow_name, **details
        )
    return DefinitionError(detail, location=caller_location(), **details)


def _unwrap_partial(partial: functools.partial[R]) -> tuple[Any, dict[str, Any]]:
    """(the task, the arguments it binds) of `map_task(functools.partial(task, k=v))`.

    Raises:
        DefinitionError: a partial of something other than a task, one with positional
            arguments, one that binds a parameter the task lacks or every parameter.
    """
    func, bound = partial.func, dict(partial.keywords)
    if not isinstance(func, TaskFunction):
        hint = "decorate the function with @task" if callable(func) else None
        raise _refused(
            f"map_task takes a @task or a functools.partial of one, got a functools.partial "
            f"of {func!r}",
            expected="a @task",
            actual=type(func).__name__,
            hint=hint,
        )
    name = func.spec.name
    names = [v.name for v in func.spec.interface.inputs]
    form = CallForm(
        positional=f"functools.partial of task '{name}' binds",
        keywords_why="map_task needs keyword arguments, to know which parameters it binds",
        hint_call=lambda example: f"functools.partial({func.fn.__name__}, {example})",
        unknown=lambda key: (
            f"functools.partial binds '{key}', but task '{name}' has no such parameter"
        ),
    )
    check_keyword_call(form, names, partial.args, bound, functools.partial(_refused, task=name))
    if names and set(names) <= set(bound):
        raise _refused(
            f"functools.partial binds every parameter of task '{name}' "
            f"({', '.join(names)}), so map_task has nothing left to map over",
            task=name,
            expected="a list argument",
            actual="no list argument",
            hint=f"leave the parameter to map over out of the partial and pass its list in the "
            f"call; to run the task once, call it: {func.fn.__name__}(...)",
        )
    return func, bound
