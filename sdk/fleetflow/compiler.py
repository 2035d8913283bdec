"""Workflow body -> `ir.WorkflowSpec`, type-checking every edge on the engineer's machine.

`@workflow` calls the body once with promises for its inputs while a `WorkflowCompilation` is
active; each task call inside records a node and returns a promise of the task's output. Every
binding is checked against the callee's interface with `is_assignable` (promises) or
`to_literal` (constants), so a wiring mistake is a `WorkflowCompileError` at import time that
names the line, not a failed pod an hour into a run.
"""

from __future__ import annotations

import functools
import re
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fleetflow import ir
from fleetflow.call_checks import CallForm, check_keyword_call, missing_parameter
from fleetflow.errors import DefinitionError, LiteralValidationError, WorkflowCompileError
from fleetflow.inlining import MAX_INLINED_NODES, InliningError, inline
from fleetflow.interface import SINGLE_OUTPUT, Signature, output_types, return_location
from fleetflow.promise import Condition, Promise, PromiseTuple, caller_location, contains_promise
from fleetflow.types import (
    assignability_hint,
    describe_python_type,
    is_assignable,
    is_named_tuple,
    to_literal,
)

if TYPE_CHECKING:
    from fleetflow.conditional import Conditional
    from fleetflow.task import TaskFunction
    from fleetflow.workflow import WorkflowFunction

_ACTIVE: ContextVar[WorkflowCompilation | None] = ContextVar(
    "fleetflow_active_compilation", default=None
)


_ON_FIRST_USE: ContextVar[bool] = ContextVar("fleetflow_define_on_first_use", default=False)


@contextmanager
def define_on_first_use() -> Iterator[None]:
    """Tasks and workflows decorated within are checked and compiled when first used, not
    when decorated: for the task runtime, which imports a module to run one task (they were
    all checked where the workflow was registered). A mistake then surfaces on first use."""
    token = _ON_FIRST_USE.set(True)
    try:
        yield
    finally:
        _ON_FIRST_USE.reset(token)


def defining_on_first_use() -> bool:
    """Whether a decorator runs inside `define_on_first_use`."""
    return _ON_FIRST_USE.get()


def active_compilation() -> WorkflowCompilation | None:
    """The compilation whose workflow body is running right now, if any."""
    return _ACTIVE.get()


@contextmanager
def activated(compilation: WorkflowCompilation) -> Iterator[None]:
    """`compilation` is the active one (its body runs) inside the block."""
    token = _ACTIVE.set(compilation)
    try:
        yield
    finally:
        _ACTIVE.reset(token)


def _describe_constant(value: Any) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}"


def _type_of(value: Any) -> str:
    return value._type.describe() if isinstance(value, Promise) else type(value).__name__


@dataclass(frozen=True)
class _Slot:
    """What a value is bound to: a task's parameter or a workflow's output."""

    variable: ir.Variable  # its name and literal type
    py_type: Any  # its Python type, to convert a constant with
    subject: str  # how messages name it: "parameter 'x' of task 'm.t'"
    fail: Callable[..., WorkflowCompileError]  # builds the error about a value bound to it
    scope: tuple[int, ...] = ()  # the conditionals' branches the binding is made in


@dataclass(frozen=True)
class CompiledWorkflow:
    """The spec and the task functions its nodes run (keyed like `spec.tasks`)."""

    spec: ir.WorkflowSpec
    tasks: dict[str, TaskFunction[..., Any]]


class WorkflowCompilation:
    """Records the nodes of one workflow body while it runs with promises."""

    def __init__(self, workflow_name: str, *, max_nodes: int | None = None) -> None:
        self.workflow_name = workflow_name
        self.max_nodes = max_nodes  # a dynamic task's sub-DAG is bounded
        self.nodes: list[ir.Node] = []
        self.tasks: dict[str, TaskFunction[..., Any]] = {}
        self.failures: list[ir.Failure] = []
        self.conditionals: list[Conditional] = []  # being written, innermost last
        self.branches: list[str] = []  # branch id -> how messages name the branch

    # ------------------------------------------------------------------ conditionals

    def start_conditional(self, conditional: Conditional) -> None:
        self.conditionals.append(conditional)

    def finish_conditional(self, conditional: Conditional) -> None:
        assert self.conditionals and self.conditionals[-1] is conditional
        self.conditionals.pop()

    def innermost_conditional(self) -> Conditional | None:
        return self.conditionals[-1] if self.conditionals else None

    def new_branch_id(self, describe: str) -> int:
        self.branches.append(describe)
        return len(self.branches) - 1

    def current_branch(self) -> tuple[tuple[int, ...], ir.Condition | None]:
        """The branch being written (its scope and guard); nothing outside conditionals.

        Between the cases of a conditional (a task called in the condition of its `.if_` or
        `.elif_`), that of the branch the conditional is written in: such a task runs
        whichever case is taken.
        """
        top = self.innermost_conditional()
        if top is None:
            return (), None
        case = top._state.open
        if case is None:
            return top._scope, top._guard
        return case.scope, case.guard

    def _outside(self, promise: Promise, scope: tuple[int, ...]) -> str | None:
        """How messages name the branch `promise` was made in, when not usable in `scope`."""
        made = promise._scope
        if scope[: len(made)] == made:
            return None
        return self.branches[made[-1]]

    def check_scope(self, promise: Promise, scope: tuple[int, ...], what: str) -> None:
        outside = self._outside(promise, scope)
        if outside is not None:
            raise WorkflowCompileError(
                f"{what} uses the {promise._origin}, which exists only in {outside}, outside "
                "that branch",
                location=caller_location(),
                workflow=self.workflow_name,
                hint="use a branch's result through the conditional's value "
                "(`x = conditional(...)...else_().then(...)`)",
            )

    def made_in(self, promise: Promise, scope: tuple[int, ...]) -> bool:
        """Whether `promise` is the output of a task (or conditional) of branch `scope`."""
        return (
            promise._owner is self
            and promise._scope == scope
            and isinstance(promise._binding, ir.NodeOutputBinding | ir.SelectBinding)
        )

    def add_failure(self, guard: ir.Condition, message: str, name: str) -> None:
        label = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)
        self.failures.append(
            ir.Failure(id=f"f{len(self.failures)}-{label}"[:128], when=guard, message=message)
        )

    def check_finished(self) -> None:
        if self.conditionals:
            first = self.conditionals[0]
            raise WorkflowCompileError(
                f"{first.describe} is not finished",
                location=first._location,
                workflow=self.workflow_name,
                hint='end it with `.else_().then(...)` or `.else_().fail("...")`',
            )

    def input_promise(self, variable: ir.Variable) -> Promise:
        return Promise(
            ir.InputBinding(input=variable.name),
            variable.type,
            origin=f"workflow input '{variable.name}'",
            workflow=self.workflow_name,
            owner=self,
        )

    def call_task(
        self, task: TaskFunction[..., Any], args: tuple[Any, ...], kwargs: Mapping[str, Any]
    ) -> Promise | PromiseTuple | None:
        """Record a call of `task` as a node; the promise(s) of its output (None without)."""
        return self._record_call(task, args, kwargs, caller_location(), mapped=False)

    def call_map(
        self,
        task: TaskFunction[..., Any],
        concurrency: int | None,
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
        bound: Mapping[str, Any] | None = None,
        *,
        min_success_ratio: float = 1.0,
    ) -> Promise | PromiseTuple | None:
        """Record a `map_task(task)(...)` call as a map node; promises of its list outputs
        (of `Optional` items with a `min_success_ratio` below 1: a failed element is None).

        A parameter of type T bound to a `list[T]` (promise or constant) is mapped over; any
        other argument is passed whole and must be a T, as in a plain task call. `bound` are
        the arguments of a `map_task(functools.partial(task, ...))`: always passed whole. At
        least one argument must be mapped.
        """
        return self._record_call(
            task,
            args,
            kwargs,
            caller_location(),
            mapped=True,
            concurrency=concurrency,
            bound=bound or {},
            min_success_ratio=min_success_ratio,
        )

    def _record_call(
        self,
        task: TaskFunction[..., Any],
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
        location: str,
        *,
        mapped: bool,
        concurrency: int | None = None,
        bound: Mapping[str, Any] | None = None,
        min_success_ratio: float = 1.0,
    ) -> Promise | PromiseTuple | None:
        bound = bound or {}
        task_name = task.spec.name
        fail: Callable[..., WorkflowCompileError] = functools.partial(
            WorkflowCompileError,
            workflow=self.workflow_name,
            location=location,
            task=task_name,
        )
        callee = f"map_task of task '{task_name}'" if mapped else f"task '{task_name}'"
        parameters = task.spec.interface.inputs
        names = [v.name for v in parameters]
        call = f"map_task({task.fn.__name__})" if mapped else task.fn.__name__
        form = CallForm.in_body(
            callee,
            "tasks",
            call,
            f"task '{task_name}'",
            lambda key: self._describe_argument(kwargs[key]),
        )
        check_keyword_call(form, names, args, kwargs, fail)
        twice = [k for k in kwargs if k in bound]
        if twice:
            raise fail(
                f"parameter '{twice[0]}' of task '{task_name}' is bound twice: by "
                f"functools.partial and in the call of {callee}",
                parameter=twice[0],
                hint=f"drop `{twice[0]}=...` from the partial or from the call",
            )
        existing = self.tasks.get(task_name)
        if existing is not None and existing is not task and existing.spec != task.spec:
            raise fail(
                f"two different tasks are named '{task_name}' in this workflow; task names "
                "(<module>.<function>) must be unique"
            )

        if mapped and task.spec.dynamic:
            raise fail(
                f"map_task of dynamic task '{task_name}' is not supported",
                hint="loop over the list inside the dynamic task's body instead",
            )
        if mapped and task.spec.reference is not None:
            raise fail(
                f"map_task of task '{task_name}' (a reference workflow) is not supported",
                hint="map a task over the list inside the referenced workflow instead",
            )
        if self.max_nodes is not None and len(self.nodes) >= self.max_nodes:
            raise fail(
                f"dynamic task '{self.workflow_name}' builds more than {self.max_nodes} nodes "
                "(the limit of a sub-DAG)",
                hint="map one task over a list with map_task: a map node is one node",
            )
        scope, guard = self.current_branch()
        node_id = f"n{len(self.nodes)}-{task.fn.__name__}"
        bindings: dict[str, ir.Binding] = {}
        over: list[str] = []
        for variable in parameters:
            name = variable.name
            if name in bound:
                bindings[name] = self._bind(bound[name], _partial_slot(variable, task, fail))
            elif name in kwargs:
                slot = _Slot(
                    variable,
                    task.input_types[name],
                    f"parameter '{name}' of task '{task_name}'",
                    functools.partial(fail, parameter=name),
                    scope,
                )
                if mapped:
                    binding, is_mapped = self._bind_mapped(kwargs[name], slot)
                    if is_mapped:
                        over.append(name)
                else:
                    binding = self._bind(kwargs[name], slot)
                bindings[name] = binding
            elif variable.has_default:
                bindings[name] = ir.LiteralBinding(value=variable.default)
            else:
                raise missing_parameter(callee, variable, fail)
        map_spec = None
        if mapped:
            if not over:
                shown = ", ".join(f"{v.name}: {v.type.describe()}" for v in parameters) or "none"
                raise fail(
                    f"{callee} has no argument to map over: bind a list[T] to a parameter of "
                    f"type T to run the task once per element (its parameters: {shown})",
                    expected="a list argument",
                    actual="no list argument",
                    hint=f"to run the task once, call it directly: {task.fn.__name__}(...)",
                )
            map_spec = ir.MapSpec(
                over=over, concurrency=concurrency, min_success_ratio=min_success_ratio
            )
        self.tasks.setdefault(task_name, task)
        self.nodes.append(
            ir.Node(id=node_id, task=task_name, inputs=bindings, map=map_spec, when=guard)
        )
        return self._output_promises(node_id, task, map_spec=map_spec, scope=scope)

    def call_workflow(
        self, callee: WorkflowFunction[..., Any], args: tuple[Any, ...], kwargs: Mapping[str, Any]
    ) -> Promise | PromiseTuple | None:
        """Inline a call of the workflow `callee` (a sub-workflow): its nodes join this
        workflow's under the call's id (`n2-train/n0-prep`), its inputs bound to the arguments
        as a task's parameters are; the promise(s) of its outputs (None without)."""
        location = caller_location()
        name = callee.spec.name
        fail: Callable[..., WorkflowCompileError] = functools.partial(
            WorkflowCompileError, workflow=self.workflow_name, location=location
        )
        callee_text = f"sub-workflow '{name}'"
        parameters = callee.spec.interface.inputs
        names = [v.name for v in parameters]
        form = CallForm.in_body(
            callee_text,
            "workflows",
            callee.fn.__name__,
            callee_text,
            lambda key: self._describe_argument(kwargs[key]),
        )
        check_keyword_call(form, names, args, kwargs, fail)
        for task_name, task in callee.tasks.items():
            existing = self.tasks.get(task_name)
            if existing is not None and existing is not task and existing.spec != task.spec:
                raise fail(
                    f"two different tasks are named '{task_name}' in this workflow (one of them "
                    f"in {callee_text}); task names (<module>.<function>) must be unique",
                    task=task_name,
                )
        scope, guard = self.current_branch()
        arguments: dict[str, ir.Binding] = {}
        for variable in parameters:
            input_name = variable.name
            if input_name in kwargs:
                slot = _Slot(
                    variable,
                    callee.input_types[input_name],
                    f"parameter '{input_name}' of {callee_text}",
                    functools.partial(fail, parameter=input_name),
                    scope,
                )
                arguments[input_name] = self._bind(kwargs[input_name], slot)
            elif variable.has_default:
                arguments[input_name] = ir.LiteralBinding(value=variable.default)
            else:
                raise missing_parameter(callee_text, variable, fail)
        total = len(self.nodes) + len(callee.spec.nodes)
        if total > MAX_INLINED_NODES:
            raise fail(
                f"{callee_text} adds {len(callee.spec.nodes)} nodes: {total} in all, more than "
                f"the {MAX_INLINED_NODES} a workflow may have",
                hint="use map_task to run a task over many values in one node",
            )
        call_id = f"n{len(self.nodes)}-{callee.fn.__name__}"
        # Two calls at one position: the first added no node (only `.fail` branches, or none).
        taken = {f.id.split("/", 1)[0] for f in self.failures}
        again = 1
        while call_id in taken:
            again += 1
            call_id = f"n{len(self.nodes)}-{callee.fn.__name__}-{again}"
        try:
            inlined = inline(callee.spec, call_id, arguments, guard)
        except InliningError as exc:
            raise fail(f"cannot inline {callee_text}: {exc}") from None
        for task_name, task in callee.tasks.items():
            self.tasks.setdefault(task_name, task)
        self.nodes += inlined.nodes
        self.failures += inlined.failures
        where = f"sub-workflow call '{call_id}', workflow '{name}'"
        promises = {
            v.name: Promise(
                inlined.outputs[v.name],
                v.type,
                origin=f"output of {where}"
                if v.name == SINGLE_OUTPUT
                else f"output '{v.name}' of {where}",
                workflow=self.workflow_name,
                owner=self,
                scope=scope,
            )
            for v in callee.spec.interface.outputs
        }
        if is_named_tuple(callee.output_type):
            return PromiseTuple(callee.output_type, promises, origin=where)
        return promises.get(SINGLE_OUTPUT)

    def _bind_mapped(self, value: Any, slot: _Slot) -> tuple[ir.Binding, bool]:
        """Bind an argument of a map call: (binding, whether it is mapped over).

        A promise of `list[T]` for a parameter of type T is mapped; a constant is passed whole
        when it is a valid T, and mapped when it is a valid `list[T]`.
        """
        expected = slot.variable.type.describe()
        either = f"{expected}, or list[{expected}] to map over"
        if isinstance(value, Promise) and value._owner is self:
            self._check_binding_scope(value, slot)
            if is_assignable(value._type, slot.variable.type):
                return value._binding, False
            source = value._type
            if source.kind is ir.TypeKind.LIST and source.item is not None:
                if is_assignable(source.item, slot.variable.type):
                    return value._binding, True
            actual = source.describe()
            hint = None
            if source.kind is ir.TypeKind.LIST and source.item is not None:
                hint = assignability_hint(source.item, slot.variable.type)
            raise slot.fail(
                f"{slot.subject} expects {either}, got {actual} ({value._origin})",
                expected=either,
                actual=actual,
                hint=hint,
            )
        if isinstance(value, Promise | PromiseTuple):
            return self._bind(value, slot), False
        if contains_promise(value):
            return self._bind_mapped_collection(value, slot)
        try:
            return ir.LiteralBinding(value=to_literal(value, slot.py_type)), False
        except LiteralValidationError:
            pass
        if isinstance(value, list | tuple):
            item_type: Any = slot.py_type
            return _bind_constant(value, list[item_type], slot, shown=either, expected=either), True
        raise slot.fail(
            f"{slot.subject} expects {either}, got constant {_describe_constant(value)}",
            expected=either,
            actual=type(value).__name__,
        )

    def _bind_mapped_collection(self, value: Any, slot: _Slot) -> tuple[ir.Binding, bool]:
        """A list or dict of promises in a map call: passed whole when it is a valid T (the
        parameter's type), else mapped over when it is a list of T's."""
        target = slot.variable.type
        if target.kind is ir.TypeKind.OPTIONAL and target.item is not None:
            target = target.item
        fits_whole = (target.kind is ir.TypeKind.LIST and isinstance(value, list | tuple)) or (
            target.kind is ir.TypeKind.DICT and isinstance(value, dict)
        )
        if fits_whole or not isinstance(value, list | tuple):
            try:
                return self._bind(value, slot), False
            except WorkflowCompileError:
                if not isinstance(value, list | tuple):
                    raise
        expected = slot.variable.type.describe()
        either = f"{expected}, or list[{expected}] to map over"
        item_type: Any = slot.py_type
        listed = _Slot(
            ir.Variable(name=slot.variable.name, type=_list_of(slot.variable.type)),
            list[item_type],
            slot.subject,
            slot.fail,
        )
        try:
            return self._bind(value, listed), True
        except WorkflowCompileError as exc:
            if fits_whole:
                raise
            raise slot.fail(
                exc.detail.replace(f"expects list[{expected}]", f"expects {either}", 1),
                expected=either if exc.expected == f"list[{expected}]" else exc.expected,
                actual=exc.actual,
                hint=exc.hint,
            ) from None

    def _output_promises(
        self,
        node_id: str,
        task: TaskFunction[..., Any],
        *,
        map_spec: ir.MapSpec | None = None,
        scope: tuple[int, ...] = (),
    ) -> Promise | PromiseTuple | None:
        """A promise of the task's output, one per output for a NamedTuple return type; for a
        map node, each output is the list of the elements' values (`Optional` ones when
        elements may fail: `MapSpec.output_type`)."""
        outputs = task.spec.interface.outputs
        kind = "map node" if map_spec is not None else "node"
        where = f"{kind} '{node_id}', task '{task.spec.name}'"
        if map_spec is not None and map_spec.min_success_ratio != 1.0:
            where += f", min_success_ratio={map_spec.min_success_ratio}: a failed element is None"
        promises = {
            v.name: Promise(
                ir.NodeOutputBinding(node_id=node_id, output=v.name),
                map_spec.output_type(v.type) if map_spec is not None else v.type,
                origin=f"output of {where}"
                if v.name == SINGLE_OUTPUT
                else f"output '{v.name}' of {where}",
                workflow=self.workflow_name,
                owner=self,
                scope=scope,
            )
            for v in outputs
        }
        if is_named_tuple(task.output_type):
            return PromiseTuple(task.output_type, promises, origin=where)
        return promises.get(SINGLE_OUTPUT)

    def output_bindings(
        self, result: Any, signature: Signature, fn: Callable[..., Any]
    ) -> dict[str, ir.Binding]:
        """Check what the body `fn` returned against its declared return type; bind outputs."""

        def fail(detail: str, **details: Any) -> WorkflowCompileError:
            # The body has finished, so the line is found in its source, and only on error.
            return WorkflowCompileError(
                detail, workflow=self.workflow_name, location=return_location(fn), **details
            )

        outputs = signature.interface.outputs
        output_type = signature.output_type
        if not outputs:
            if result is not None:
                raise fail(
                    f"declares `-> None` but returns {self._describe_argument(result)}",
                    expected="None",
                    actual=_type_of(result),
                )
            return {}
        declared = describe_python_type(output_type)
        if result is None:
            raise fail(
                f"declares `-> {declared}` but returns nothing (None)",
                expected=declared,
                actual="None",
            )
        if not is_named_tuple(output_type):
            output = outputs[0]
            binding = self._bind(result, _Slot(output, output_type, "return value", fail))
            return {output.name: binding}
        values = self._named_results(result, output_type, fail)
        types = output_types(output_type)
        return {
            v.name: self._bind(
                values[v.name],
                _Slot(v, types[v.name], f"output '{v.name}' of the return value", fail),
            )
            for v in outputs
        }

    def _named_results(
        self, result: Any, output_type: type, fail: Callable[..., WorkflowCompileError]
    ) -> dict[str, Any]:
        """The values a workflow returns for its NamedTuple outputs, by output name.

        Accepted: an instance of the declared NamedTuple (of promises or constants), the
        outputs of a task call with the same output names, or a plain tuple, by position.
        """
        names = list(output_types(output_type))
        declared = f"{output_type.__name__}({', '.join(names)})"
        if isinstance(result, PromiseTuple):
            given = dict(result._promises)
        elif isinstance(result, tuple) and is_named_tuple(type(result)):
            fields: tuple[str, ...] = typing.cast(Any, result)._fields
            given = dict(zip(fields, result, strict=True))
        elif isinstance(result, tuple):
            if len(result) != len(names):
                raise fail(
                    f"declares `-> {declared}` with {len(names)} outputs but returns a tuple of "
                    f"{len(result)}",
                    expected=declared,
                    actual=f"tuple of {len(result)}",
                )
            return dict(zip(names, result, strict=True))
        else:
            raise fail(
                f"declares `-> {declared}` but returns a single value, "
                f"{self._describe_argument(result)}",
                expected=declared,
                actual=_type_of(result),
                hint=f"return {output_type.__name__}({', '.join(f'{n}=...' for n in names)})",
            )
        if list(given) != names:
            kind = result._tuple_type if isinstance(result, PromiseTuple) else type(result)
            actual = f"{kind.__name__}({', '.join(given)})"
            raise fail(
                f"declares `-> {declared}` but returns {actual}; outputs are matched by name",
                expected=declared,
                actual=actual,
                hint=f"return {output_type.__name__}(" + ", ".join(f"{n}=..." for n in names) + ")",
            )
        return given

    def _describe_argument(self, value: Any) -> str:
        if isinstance(value, Promise):
            return f"{value._type.describe()} ({value._origin})"
        return _describe_constant(value)

    def _check_binding_scope(self, value: Promise, slot: _Slot) -> None:
        outside = self._outside(value, slot.scope)
        if outside is not None:
            raise slot.fail(
                f"{slot.subject} got the {value._origin}, which exists only in {outside}, "
                "outside that branch",
                hint="use a branch's result through the conditional's value "
                "(`x = conditional(...)...else_().then(...)`)",
            )

    def _bind(self, value: Any, slot: _Slot) -> ir.Binding:
        expected = slot.variable.type.describe()
        if isinstance(value, Condition):
            raise slot.fail(
                f"{slot.subject} got a condition on promises ({value!r}); a condition is not "
                "a value, it chooses a branch of a `conditional(...)`",
                expected=expected,
                actual="condition",
                hint='branch with `conditional("name").if_(condition).then(...)`, or compute '
                "the bool in a task",
            )
        if isinstance(value, PromiseTuple):
            raise slot.fail(
                f"{slot.subject} expects {expected}, got all the outputs of {value._origin} "
                f"({value._tuple_type.__name__}: {', '.join(value._promises)})",
                expected=expected,
                actual=value._tuple_type.__name__,
                hint="pass one output, e.g. `res."
                + next(iter(value._promises))
                + "`, or unpack them: `a, b = task(...)`",
            )
        if isinstance(value, Promise):
            if value._owner is not self:
                raise slot.fail(
                    f"{slot.subject} got a promise from workflow '{value._workflow}' "
                    f"({value._origin}); promises cannot cross workflows",
                    expected=expected,
                    actual=value._type.describe(),
                )
            self._check_binding_scope(value, slot)
            if not is_assignable(value._type, slot.variable.type):
                actual = value._type.describe()
                raise slot.fail(
                    f"{slot.subject} expects {expected}, got {actual} ({value._origin})",
                    expected=expected,
                    actual=actual,
                    hint=assignability_hint(value._type, slot.variable.type),
                )
            return value._binding
        if contains_promise(value):
            return self._bind_collection(value, slot.py_type, slot.variable.type, slot, "")
        shown = describe_python_type(slot.py_type)
        return _bind_constant(value, slot.py_type, slot, shown=shown, expected=expected)

    def _bind_collection(
        self, value: Any, py_type: Any, literal_type: ir.LiteralType, slot: _Slot, path: str
    ) -> ir.Binding:
        """A list or dict written in the body with promises inside, bound item by item to a
        value of `py_type` (`literal_type`): the item at `path` (`[1]`, `['a'][0]`; empty for
        the whole value) of the value bound to `slot`. Each promise and constant among the
        items is checked against the item type it is bound to."""
        expected = literal_type.describe()
        subject = slot.subject
        if path:
            subject = f"{slot.subject} expects {slot.variable.type.describe()}; its item {path}"
        if isinstance(value, Promise | PromiseTuple):
            variable = ir.Variable(name=slot.variable.name, type=literal_type)
            return self._bind(value, _Slot(variable, py_type, subject, slot.fail))
        if not contains_promise(value):
            try:
                return ir.LiteralBinding(value=to_literal(value, py_type))
            except LiteralValidationError as exc:
                inner = f" (at {exc.path}: {exc.reason})" if exc.path else ""
                raise slot.fail(
                    f"{subject} expects {expected}, got constant "
                    f"{_describe_constant(value)}{inner}",
                    expected=expected,
                    actual=type(value).__name__,
                ) from exc
        target, args = literal_type, typing.get_args(_strip_optional(py_type))
        if target.kind is ir.TypeKind.OPTIONAL and target.item is not None:
            target = target.item
        if target.kind is ir.TypeKind.LIST and isinstance(value, list | tuple) and args:
            assert target.item is not None
            return ir.ListBinding(
                items=[
                    self._bind_collection(item, args[0], target.item, slot, f"{path}[{index}]")
                    for index, item in enumerate(value)
                ]
            )
        if target.kind is ir.TypeKind.DICT and isinstance(value, dict) and len(args) == 2:
            assert target.item is not None
            items: dict[str, ir.Binding] = {}
            for key, item in value.items():
                try:
                    text = str(to_literal(key, args[0]))
                except LiteralValidationError as exc:
                    raise slot.fail(
                        f"{subject} expects {expected}, got the key {_describe_constant(key)} "
                        f"({exc.reason})",
                        expected=expected,
                        actual=type(key).__name__,
                    ) from exc
                items[text] = self._bind_collection(
                    item, args[1], target.item, slot, f"{path}[{key!r}]"
                )
            return ir.DictBinding(items=items)
        kind = type(value).__name__
        hint = None
        if not isinstance(value, list | tuple | dict):
            hint = (
                "only lists and dicts of task outputs can be built in a workflow body; "
                f"build the {kind} inside a task that takes the values"
            )
        elif target.kind is ir.TypeKind.SET:
            hint = (
                "a set cannot be built from task outputs in the body (its items must be "
                f"distinct): take a list[{target.item.describe() if target.item else '...'}] "
                "and build the set inside the task"
            )
        elif not path and isinstance(value, list | tuple) and target.kind is not ir.TypeKind.LIST:
            hint = "to run a task once per element of a list, use `map_task(task)(param=...)`"
        raise slot.fail(
            f"{subject} expects {expected}, got a {kind} with a promise inside",
            expected=expected,
            actual=kind,
            hint=hint,
        )


def _partial_slot(
    variable: ir.Variable, task: TaskFunction[..., Any], fail: Callable[..., WorkflowCompileError]
) -> _Slot:
    """The slot of a parameter that `map_task(functools.partial(task, name=value))` binds:
    passed whole to every element, so a list for one element is an error that says how to
    map over it instead."""
    name = variable.name

    def fail_bound(detail: str, **details: Any) -> WorkflowCompileError:
        actual = str(details.get("actual") or "")
        one_element = variable.type.kind is not ir.TypeKind.LIST
        if one_element and ("map_task" in str(details.get("hint")) or actual.startswith("list")):
            details["hint"] = (
                "arguments bound by functools.partial are passed whole to every element; "
                f"to map over a list, pass it in the call: map_task(...)({name}=the_list)"
            )
        return fail(detail, parameter=name, **details)

    subject = f"parameter '{name}' of task '{task.spec.name}' (bound by functools.partial)"
    return _Slot(variable, task.input_types[name], subject, fail_bound)


def _list_of(item: ir.LiteralType) -> ir.LiteralType:
    return ir.LiteralType(kind=ir.TypeKind.LIST, item=item)


def _strip_optional(py_type: Any) -> Any:
    """`T` for `Optional[T]` / `T | None` (and `Annotated` forms), else `py_type` itself."""
    while typing.get_origin(py_type) is typing.Annotated:
        py_type = typing.get_args(py_type)[0]
    if typing.get_origin(py_type) in (typing.Union, types.UnionType):
        others = [a for a in typing.get_args(py_type) if a is not type(None)]
        if len(others) == 1:
            return _strip_optional(others[0])
    return py_type


def _bind_constant(
    value: Any, py_type: Any, slot: _Slot, *, shown: str, expected: str
) -> ir.LiteralBinding:
    """`value`, a constant, bound as a literal of `py_type`; else the error that `slot`
    expects `shown` (its `expected` field: `expected`), naming where the constant is off."""
    try:
        return ir.LiteralBinding(value=to_literal(value, py_type))
    except LiteralValidationError as exc:
        where = f" (at {exc.path}: {exc.reason})" if exc.path else ""
        raise slot.fail(
            f"{slot.subject} expects {shown}, got constant {_describe_constant(value)}{where}",
            expected=expected,
            actual=type(value).__name__,
        ) from exc


def compile_workflow(
    fn: Callable[..., Any], signature: Signature, *, name: str, module: str, function: str
) -> CompiledWorkflow:
    """Run the workflow body with promises and build its spec.

    Raises:
        WorkflowCompileError: a wiring mistake, naming the line in the body.
    """
    compilation = WorkflowCompilation(name)
    inputs = {v.name: compilation.input_promise(v) for v in signature.interface.inputs}
    with activated(compilation):
        try:
            result = fn(**inputs)
        except DefinitionError:
            raise
        except Exception as exc:
            exc.add_note(
                f"while compiling workflow '{name}': its body runs once at import time, "
                "with promises in place of input values"
            )
            raise
    compilation.check_finished()
    outputs = compilation.output_bindings(result, signature, fn)
    spec = ir.WorkflowSpec(
        name=name,
        module=module,
        function=function,
        interface=signature.interface,
        tasks={task_name: task.spec for task_name, task in compilation.tasks.items()},
        nodes=compilation.nodes,
        outputs=outputs,
        failures=compilation.failures,
    )
    return CompiledWorkflow(spec=spec, tasks=dict(compilation.tasks))
