"""Run a compiled workflow in this process: no server, same semantics as a remote run.

Values cross every node boundary as JSON literals, exactly as they would through the blob store:
inputs are converted with `to_python` before a task runs and its result with `to_literal` after.
So a local run catches the value that would not serialise remotely (a task annotated `-> float`
returning a string, a dataclass with the wrong fields), and no task can mutate an object another
task sees.

As on the control plane, a failed task is retried up to its `retries`, a map node runs its task
once per element (in a thread pool bounded by the node's concurrency) and collects the outputs
as lists in element order, and a cacheable task answers from the cache when one is given (local
caching is opt-in: see `fleetflow.cache`).
"""

from __future__ import annotations

import contextvars
import logging
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from typing import TYPE_CHECKING, Any

from fleetflow import ir
from fleetflow.errors import MapInputError
from fleetflow.interface import outputs_to_literals
from fleetflow.types import to_python

if TYPE_CHECKING:
    from fleetflow.cache import LocalCache
    from fleetflow.task import TaskFunction

logger = logging.getLogger("fleetflow.local")

#: Threads a map node uses locally when it sets no concurrency (as many as elements, capped).
DEFAULT_MAP_CONCURRENCY = min(32, (os.cpu_count() or 1) + 4)


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
    *,
    cache: LocalCache | None = None,
) -> dict[str, Any]:
    """Execute `spec` with JSON-literal `inputs` and return its JSON-literal outputs.

    An exception raised by a task (after its retries) propagates unchanged, with a note naming
    the node (and the element, in a map node).
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
        where = f"node '{node.id}' (task '{node.task}') of workflow '{spec.name}', run locally"
        literals = {name: resolve(binding) for name, binding in node.inputs.items()}
        if node.map is None:
            try:
                results[node.id] = run_task_unit(task, literals, node.id, cache=cache)
            except Exception as exc:
                exc.add_note(f"in {where}")
                raise
            continue
        units = map_units(literals, node.map.over, f"map {where}")
        element_outputs = run_map_units(
            task, units, node.map.concurrency, node.id, where=f"map {where}", cache=cache
        )
        results[node.id] = collect_map_outputs(task, element_outputs)
    return {name: resolve(binding) for name, binding in spec.outputs.items()}


def run_task_unit(
    task: TaskFunction[..., Any],
    literals: Mapping[str, Any],
    path: str,
    *,
    cache: LocalCache | None = None,
) -> dict[str, Any]:
    """Run one call of `task` on input literals: from the cache if it can, else with retries.

    Returns its outputs as literals by name; raises what the last attempt raised.
    """
    spec = task.spec
    if cache is not None and spec.cache:
        cached = cache.get(spec, literals)
        if cached is not None:
            return cached
    attempts = 1 + spec.retries
    for attempt in range(1, attempts + 1):
        try:
            kwargs = {
                name: to_python(literal, task.input_types[name], f"{path}.{name}")
                for name, literal in literals.items()
            }
            value = task.fn(**kwargs)
            outputs = outputs_to_literals(value, task.output_type, f"{path}.outputs")
        except Exception as exc:
            if attempt == attempts:
                if attempts > 1:
                    exc.add_note(f"task '{spec.name}' failed all {attempts} attempts")
                raise
            logger.warning(
                "task %s failed (attempt %d of %d), retrying: %s: %s",
                spec.name,
                attempt,
                attempts,
                type(exc).__name__,
                exc,
            )
            continue
        if cache is not None and spec.cache:
            outputs = cache.put(spec, literals, outputs)
        return outputs
    raise AssertionError("unreachable")  # pragma: no cover


def map_units(literals: Mapping[str, Any], over: Sequence[str], where: str) -> list[dict[str, Any]]:
    """The inputs of each element of a map node: one item of every mapped list, the other
    inputs whole.

    Raises:
        MapInputError: the mapped lists differ in length.
    """
    lengths = {name: len(literals[name]) for name in over}
    if len(set(lengths.values())) > 1:
        sizes = ", ".join(f"'{name}' has {n}" for name, n in lengths.items())
        raise MapInputError(f"{where}: mapped inputs must have the same length: {sizes}")
    count = next(iter(lengths.values()), 0)
    return [
        {**literals, **{name: literals[name][index] for name in over}} for index in range(count)
    ]


def run_map_units(
    task: TaskFunction[..., Any],
    units: Sequence[Mapping[str, Any]],
    concurrency: int | None,
    node_id: str,
    *,
    where: str,
    cache: LocalCache | None = None,
) -> list[dict[str, Any]]:
    """Run every element, at most `concurrency` at a time; their outputs in element order.

    The first element to fail stops the elements not started yet; its exception is raised with
    a note naming the element.
    """
    if not units:
        return []
    workers = min(concurrency or DEFAULT_MAP_CONCURRENCY, len(units))

    def run_element(index: int, literals: Mapping[str, Any]) -> dict[str, Any]:
        return run_task_unit(task, literals, f"{node_id}[{index}]", cache=cache)

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fleetflow-map") as pool:
        # Each element runs in a copy of this context, as a task on a cluster runs on its own.
        futures: list[Future[dict[str, Any]]] = [
            pool.submit(contextvars.copy_context().run, run_element, index, literals)
            for index, literals in enumerate(units)
        ]
        wait(futures, return_when=FIRST_EXCEPTION)
        failed = next(
            (
                (index, future)
                for index, future in enumerate(futures)
                if future.done() and not future.cancelled() and future.exception() is not None
            ),
            None,
        )
        if failed is not None:
            for future in futures:
                future.cancel()
            index, future = failed
            error = future.exception()
            assert error is not None
            error.add_note(f"in element {index} of {where}")
            raise error
        return [future.result() for future in futures]


def collect_map_outputs(
    task: TaskFunction[..., Any], element_outputs: Sequence[Mapping[str, Any]]
) -> dict[str, list[Any]]:
    """A map node's outputs: for each task output, the list of the elements' values."""
    return {
        variable.name: [outputs[variable.name] for outputs in element_outputs]
        for variable in task.spec.interface.outputs
    }
