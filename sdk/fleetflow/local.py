"""Run a compiled workflow in this process: no server, same semantics as a remote run.

Values cross every node boundary as JSON literals, exactly as they would through the blob store:
inputs are converted with `to_python` before a task runs and its result with `to_literal` after.
So a local run catches the value that would not serialise remotely (a task annotated `-> float`
returning a string, a dataclass with the wrong fields), and no task can mutate an object another
task sees.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from fleetflow import ir
from fleetflow.interface import outputs_to_literals
from fleetflow.types import to_python

if TYPE_CHECKING:
    from fleetflow.task import TaskFunction


def topological_order(nodes: list[ir.Node]) -> list[ir.Node]:
    """Nodes so that each comes after every node it consumes; ties keep the spec's order.

    Raises:
        ValueError: a binding names an unknown node, or the nodes form a cycle.
    """
    by_id = {node.id: node for node in nodes}
    for node in nodes:
        for upstream in node.upstream:
            if upstream not in by_id:
                raise ValueError(f"node '{node.id}' consumes unknown node '{upstream}'")
    done: set[str] = set()
    ordered: list[ir.Node] = []
    pending = list(nodes)
    while pending:
        ready = [n for n in pending if all(u in done for u in n.upstream)]
        if not ready:
            raise ValueError(f"nodes form a cycle: {', '.join(n.id for n in pending)}")
        for node in ready:
            done.add(node.id)
            ordered.append(node)
        pending = [n for n in pending if n.id not in done]
    return ordered


def run_locally(
    spec: ir.WorkflowSpec,
    tasks: Mapping[str, TaskFunction[..., Any]],
    inputs: Mapping[str, Any],
) -> dict[str, Any]:
    """Execute `spec` with JSON-literal `inputs` and return its JSON-literal outputs.

    An exception raised by a task propagates unchanged, with a note naming the node.
    """
    results: dict[str, dict[str, Any]] = {}

    def resolve(binding: ir.Binding) -> Any:
        if isinstance(binding, ir.InputBinding):
            return inputs[binding.input]
        if isinstance(binding, ir.NodeOutputBinding):
            return results[binding.node_id][binding.output]
        return binding.value

    for node in topological_order(spec.nodes):
        task = tasks[node.task]
        where = f"in node '{node.id}' (task '{node.task}') of workflow '{spec.name}', run locally"
        try:
            kwargs = {
                name: to_python(resolve(binding), task.input_types[name], f"{node.id}.{name}")
                for name, binding in node.inputs.items()
            }
            value = task.fn(**kwargs)
            outputs = outputs_to_literals(value, task.output_type, f"{node.id}.outputs")
        except Exception as exc:
            exc.add_note(where)
            raise
        results[node.id] = outputs
    return {name: resolve(binding) for name, binding in spec.outputs.items()}
