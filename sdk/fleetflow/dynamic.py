"""`@dynamic`: a task whose body builds a sub-DAG when it runs, with its inputs' real values.

A dynamic task is declared like a task (typed inputs and outputs, the same options but
`cache`) and called like one in a workflow body, where it compiles to a node whose task is
marked `dynamic`. When the node runs, the body runs with real input values while a
`WorkflowCompilation` is active: it may loop over a list it was given, branch on a number,
and the tasks (and `map_task`s, conditionals, other dynamic tasks) it calls are recorded as the
nodes of a sub-DAG, type-checked as in a workflow body (an error names the body's line). What
it returns is bound to the node's outputs.

The sub-DAG (an `ir.WorkflowSpec` without inputs: the values are constants in it) then runs in
the node's place, its nodes named `<node id>/<sub-node id>`: in a local run by the local runner
(`fleetflow.local`), on the platform by the execution's workflow (the attempt writes the
sub-DAG as its outputs document, `ir.DYNAMIC_SPEC_OUTPUT`; the control plane checks it and runs
it as a child workflow of the execution). Its nodes are dispatched like any other: placement,
quotas, retries, caching. Bounds: `ir.MAX_DYNAMIC_NODES` nodes per sub-DAG, dynamic tasks
nested `ir.MAX_DYNAMIC_DEPTH` deep.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any, ParamSpec, TypeVar, Unpack, overload

from fleetflow import ir
from fleetflow.compiler import CompiledWorkflow, WorkflowCompilation, activated
from fleetflow.errors import DefinitionError, DynamicWorkflowError, InvalidOptionError
from fleetflow.interface import extract_signature
from fleetflow.task import TaskFunction, TaskOptions
from fleetflow.task import _check_options as check_options
from fleetflow.types import to_python

P = ParamSpec("P")
R = TypeVar("R")


class DynamicFunction(TaskFunction[P, R]):
    """A function decorated with `@dynamic`: a `TaskFunction` whose spec is `dynamic`.

    Called outside a workflow, its body runs as plain Python (the tasks it calls run then);
    in a workflow body, it records a node; when that node runs, `build` compiles its sub-DAG.
    """

    dynamic = True

    def __init__(self, fn: Callable[P, R], **options: Unpack[TaskOptions]) -> None:
        name = f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__name__', '?')}"
        if options.get("cache"):
            raise InvalidOptionError(
                f"dynamic task '{name}': cache is not supported (the tasks of its sub-DAG "
                "cache on their own)"
            )
        if options.get("replicas", 1) != 1:
            raise InvalidOptionError(
                f"dynamic task '{name}': replicas is not supported (it builds a sub-DAG once; "
                "give replicas to the tasks of its sub-DAG)"
            )
        super().__init__(fn, **options)
        self.spec = self.spec.model_copy(update={"dynamic": True})
        self._signature = extract_signature(
            fn, functools.partial(DefinitionError, task=self.spec.name), decorator="@dynamic"
        )

    def __repr__(self) -> str:
        return f"<dynamic task {self.spec.name}>"

    def build(self, literals: Mapping[str, Any], node_id: str = "") -> CompiledWorkflow:
        """Run the body on input literals and compile the sub-DAG it builds, as node
        `node_id` (which says how deep it is nested) would run it.

        Raises:
            WorkflowCompileError: a wiring mistake in the body, naming its line.
            DynamicWorkflowError: the sub-DAG is beyond a bound.
            LiteralValidationError: an input does not match its type.
        """
        kwargs = {
            name: to_python(literal, self.input_types[name], f"inputs.{name}")
            for name, literal in literals.items()
        }
        return self.build_python(kwargs, node_id)

    def build_python(self, kwargs: Mapping[str, Any], node_id: str = "") -> CompiledWorkflow:
        """`build`, on Python input values."""
        name = self.spec.name
        depth = ir.dynamic_depth(node_id) if node_id else 1
        if depth > ir.MAX_DYNAMIC_DEPTH:
            raise DynamicWorkflowError(
                f"dynamic task '{name}' (node '{node_id}'): dynamic tasks are nested {depth} "
                f"deep; at most {ir.MAX_DYNAMIC_DEPTH} levels are allowed"
            )
        compilation = WorkflowCompilation(name, max_nodes=ir.MAX_DYNAMIC_NODES)
        with activated(compilation):
            try:
                result = self.fn(**kwargs)  # type: ignore[call-arg]
            except DefinitionError:
                raise
            except Exception as exc:
                exc.add_note(
                    f"while building the sub-DAG of dynamic task '{name}': its body runs "
                    "when the task runs, with its input values"
                )
                raise
        compilation.check_finished()
        outputs = compilation.output_bindings(result, self._signature, self.fn)
        spec = ir.WorkflowSpec(
            name=name,
            module=self.spec.module,
            function=self.spec.function,
            interface=ir.TypedInterface(outputs=self.spec.interface.outputs),
            tasks={task_name: task.spec for task_name, task in compilation.tasks.items()},
            nodes=compilation.nodes,
            outputs=outputs,
            failures=compilation.failures,
        )
        try:
            ir.check_dynamic_spec(spec, node_id or "dynamic", name)
        except ValueError as exc:
            raise DynamicWorkflowError(str(exc)) from None
        return CompiledWorkflow(spec=spec, tasks=dict(compilation.tasks))


@overload
def dynamic(fn: Callable[P, R], /) -> DynamicFunction[P, R]: ...


@overload
def dynamic(
    **options: Unpack[TaskOptions],
) -> Callable[[Callable[P, R]], DynamicFunction[P, R]]: ...


def dynamic(
    fn: Callable[P, R] | None = None, /, **options: Unpack[TaskOptions]
) -> DynamicFunction[P, R] | Callable[[Callable[P, R]], DynamicFunction[P, R]]:
    """Declare a dynamic task: `@dynamic` or `@dynamic(resources=..., retries=..., ...)`.

    Its body runs when the task runs, with real input values, and calls tasks as a workflow
    body does: the nodes it records form a sub-DAG that runs in the task's place, whose
    outputs are what the body returns. The options are `@task`'s (`resources` is what the
    body itself requests), except `cache`.

    Raises:
        InvalidOptionError: an option is out of range, or `cache=True`.
        TaskDefinitionError: a parameter or the return is unannotated or unsupported.
    """
    if fn is None:
        if options.get("cache"):
            raise InvalidOptionError("dynamic tasks cannot be cached (cache=True)")
        if options.get("replicas", 1) != 1:
            raise InvalidOptionError("dynamic tasks cannot have replicas (give them to its tasks)")
        check_options(options)  # now, so `@dynamic(retries=-1)` fails before it decorates

        def decorate(function: Callable[P, R]) -> DynamicFunction[P, R]:
            return DynamicFunction(function, **options)

        return decorate
    return DynamicFunction(fn, **options)
