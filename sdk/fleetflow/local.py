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

Every attempt runs with its `fleetflow.current_context()` (`fleetflow.context`): the run's
`local-…` execution id, the node's id as compiled, the attempt's number, the element's index in
a map node, a fresh working directory, and the unit's checkpoint, kept in a temporary directory
of the run (removed when the run ends) for the unit's next attempt.

Progress (a node started, finished and how long it took, a map's elements done out of how many)
is logged at INFO on the `fleetflow.local` logger, which `fleetflow run` shows on stderr. While
map elements run, what each element prints is prefixed with it (`[n1-train[3]] epoch 1`), a
whole line at a time, so elements running at once stay readable.
"""

from __future__ import annotations

import contextvars
import logging
import os
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO, TypeVar

from fleetflow import ir, spec_conditions
from fleetflow.context import Checkpoint, attempt_context
from fleetflow.errors import ConditionalFailedError, MapElementsFailedError, MapInputError
from fleetflow.secrets import local_values as local_secret_values
from fleetflow.states import map_failures_allowed, partial_success, too_many_failures
from fleetflow.task import result_to_literals
from fleetflow.types import to_python

if TYPE_CHECKING:
    from fleetflow.cache import LocalCache
    from fleetflow.task import TaskFunction

logger = logging.getLogger("fleetflow.local")

#: Threads a map node uses locally when it sets no concurrency (as many as elements, capped).
DEFAULT_MAP_CONCURRENCY = min(32, (os.cpu_count() or 1) + 4)


@dataclass(frozen=True)
class LocalExecution:
    """One local run: its execution id and where its units keep their checkpoints."""

    id: str
    checkpoints: Path

    @classmethod
    @contextmanager
    def started(cls) -> Iterator[LocalExecution]:
        """A new local execution for the block; its checkpoints are removed when it ends."""
        with tempfile.TemporaryDirectory(
            prefix="fleetflow-local-run-", ignore_cleanup_errors=True
        ) as directory:
            yield cls(id=f"local-{uuid.uuid4().hex[:12]}", checkpoints=Path(directory))

    def checkpoint(self, node_id: str, map_index: int | None) -> Checkpoint:
        """The checkpoint of one unit: a node, or one element of a map node."""
        return Checkpoint(self.checkpoints / _unit_path(node_id, map_index))


def _unit_path(node_id: str, map_index: int | None) -> str:
    return node_id if map_index is None else f"{node_id}/{map_index}"


Step = TypeVar("Step", ir.Node, ir.Node | ir.Failure)


def topological_order(nodes: list[Step]) -> list[Step]:
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
    ordered: list[Step] = []
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

    Raises:
        MissingSecretError: a task names a secret whose `FLEETFLOW_SECRET_<NAME>` variable is
            not set (checked before anything runs).
    """
    for task_spec in spec.tasks.values():
        local_secret_values(task_spec.secrets)
    with LocalExecution.started() as execution:
        return _run_nodes(spec, tasks, inputs, cache, execution)


def _run_nodes(
    spec: ir.WorkflowSpec,
    tasks: Mapping[str, TaskFunction[..., Any]],
    inputs: Mapping[str, Any],
    cache: LocalCache | None,
    execution: LocalExecution,
) -> dict[str, Any]:
    for called in spec.nodes:  # refused before anything runs: a reference runs on the platform
        if tasks[called.task].spec.reference is not None:
            from fleetflow.reference import not_local

            where = f"node '{called.id}' of workflow '{spec.name}', run locally"
            raise not_local(tasks[called.task].spec, where)
    results: dict[str, dict[str, Any]] = {}
    run_started = time.monotonic()

    def leaf(binding: ir.LeafBinding) -> Any:
        if isinstance(binding, ir.InputBinding):
            return inputs[binding.input]
        if isinstance(binding, ir.NodeOutputBinding):
            if binding.node_id not in results:
                raise ValueError(f"node '{binding.node_id}' was skipped: it has no outputs")
            return results[binding.node_id][binding.output]
        if isinstance(binding, ir.SelectBinding):  # the branch that ran; None if none did
            ran = (b for b in binding.options if b.node_id in results)
            return next((resolve(b) for b in ran), None)
        return binding.value

    def resolve(binding: ir.Binding) -> Any:
        return ir.resolve_binding(binding, leaf)

    steps: list[ir.Node | ir.Failure] = [*spec.failures, *spec.nodes]  # as on the platform
    for node in topological_order(steps):
        if isinstance(node, ir.Failure):
            if spec_conditions.evaluate(node.when, resolve):
                logger.info("workflow %s failed: %s", spec.name, node.message)
                error = ConditionalFailedError(node.message)
                error.add_note(f"a `.fail` branch of workflow '{spec.name}' ran ({node.id})")
                raise error
            continue
        if node.when is not None and not spec_conditions.evaluate(node.when, resolve):
            logger.info("%s skipped (its branch was not taken)", node.id)
            continue
        task = tasks[node.task]
        where = f"node '{node.id}' (task '{node.task}') of workflow '{spec.name}', run locally"
        literals = {name: resolve(binding) for name, binding in node.inputs.items()}
        if node.map is None and task.spec.dynamic:
            results[node.id] = _run_dynamic(task, literals, node.id, where, cache, execution)
            continue
        if node.map is None:
            logger.info("%s started (task %s)", node.id, node.task)
            started = time.monotonic()
            try:
                results[node.id] = run_task_unit(
                    task, literals, node.id, cache=cache, execution=execution, node_id=node.id
                )
            except Exception as exc:
                logger.info("%s failed after %s (%s)", node.id, _since(started), type(exc).__name__)
                exc.add_note(f"in {where}")
                raise
            logger.info("%s succeeded in %s", node.id, _since(started))
            continue
        units = map_units(literals, node.map.over, f"map {where}")
        element_outputs = run_map_units(
            task,
            units,
            node.map.concurrency,
            node.id,
            where=f"map {where}",
            cache=cache,
            execution=execution,
            min_success_ratio=node.map.min_success_ratio,
        )
        results[node.id] = collect_map_outputs(task, element_outputs)
    logger.info("workflow %s succeeded in %s", spec.name, _since(run_started))
    return {name: resolve(binding) for name, binding in spec.outputs.items()}


def _run_dynamic(
    task: TaskFunction[..., Any],
    literals: Mapping[str, Any],
    node_id: str,
    where: str,
    cache: LocalCache | None,
    execution: LocalExecution,
) -> dict[str, Any]:
    """Run a dynamic task's node: build its sub-DAG with the input values (in the node's
    attempt context), then run the sub-DAG, its nodes named `<node_id>/...` as on the
    platform; its outputs are the node's."""
    logger.info("%s started (dynamic task %s)", node_id, task.spec.name)
    started = time.monotonic()
    try:
        attempts = 1 + task.spec.retries  # building is retried, as its attempt on a cluster
        for attempt in range(1, attempts + 1):
            try:
                with attempt_context(
                    execution_id=execution.id,
                    node_id=node_id,
                    attempt_number=attempt,
                    map_index=None,
                    attempt_id=f"{execution.id}/{node_id}/{attempt}",
                    task_name=task.spec.name,
                    local=True,
                    checkpoint=execution.checkpoint(node_id, None),
                ):
                    compiled = task.build(literals, node_id)  # type: ignore[attr-defined]
                break
            except Exception as exc:
                if attempt == attempts:
                    raise
                logger.warning(
                    "dynamic task %s failed (attempt %d of %d), retrying: %s: %s",
                    task.spec.name,
                    attempt,
                    attempts,
                    type(exc).__name__,
                    exc,
                )
        sub = ir.prefix_spec(compiled.spec, node_id)
        logger.info("%s: built a sub-DAG of %d node(s)", node_id, len(sub.nodes))
        outputs = _run_nodes(sub, compiled.tasks, {}, cache, execution)
    except Exception as exc:
        logger.info("%s failed after %s (%s)", node_id, _since(started), type(exc).__name__)
        exc.add_note(f"in {where}")
        raise
    logger.info("%s succeeded in %s", node_id, _since(started))
    return outputs


def run_task_unit(
    task: TaskFunction[..., Any],
    literals: Mapping[str, Any],
    path: str,
    *,
    cache: LocalCache | None = None,
    execution: LocalExecution,
    node_id: str,
    map_index: int | None = None,
) -> dict[str, Any]:
    """Run one call of `task` on input literals: from the cache if it can, else with retries,
    each attempt with its `current_context()` (node `node_id`, element `map_index`).

    Returns its outputs as literals by name; raises what the last attempt raised.
    """
    spec = task.spec
    if cache is not None and spec.cache:
        cached = cache.get(spec, literals)
        if cached is not None:
            logger.info("%s: outputs from the local cache", path)
            return cached
    attempts = 1 + spec.retries
    for attempt in range(1, attempts + 1):
        try:
            with attempt_context(
                execution_id=execution.id,
                node_id=node_id,
                attempt_number=attempt,
                map_index=map_index,
                attempt_id=f"{execution.id}/{_unit_path(node_id, map_index)}/{attempt}",
                task_name=spec.name,
                local=True,
                checkpoint=execution.checkpoint(node_id, map_index),
            ):
                kwargs = {
                    name: to_python(literal, task.input_types[name], f"{path}.{name}")
                    for name, literal in literals.items()
                }
                value = task.fn(**kwargs)
                outputs = result_to_literals(task, value, f"{path}.outputs")
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
    execution: LocalExecution | None = None,
    min_success_ratio: float = 1.0,
) -> list[dict[str, Any] | None]:
    """Run every element, at most `concurrency` at a time; their outputs in element order.

    With `min_success_ratio` 1.0, the first element to fail stops the elements not started
    yet; its exception is raised with a note naming the element. Below 1.0, an element that
    fails (after its retries) has None for outputs, and the elements stop with a
    `MapElementsFailedError` (caused by the first failure's exception) once more failed than
    the ratio allows. What an element prints is prefixed with `[<node_id>[<index>]]`. The
    elements are units of `execution` (of a local execution of their own when None: a map task
    called outside a workflow).
    """
    if not units:
        logger.info("%s: no elements to run", node_id)
        return []
    total = len(units)
    workers = min(concurrency or DEFAULT_MAP_CONCURRENCY, total)
    logger.info(
        "%s started: %d element(s), up to %d at a time (task %s)",
        node_id,
        total,
        workers,
        task.spec.name,
    )
    started = time.monotonic()
    done = failures = 0
    done_lock = threading.Lock()
    allowed = map_failures_allowed(total, min_success_ratio)
    # Set by the failure that exceeds `allowed`: the elements not started then never start,
    # however late the loop below hears of it.
    given_up = threading.Event()
    run = execution  # its own, made below, when None

    def run_element(index: int, literals: Mapping[str, Any]) -> dict[str, Any]:
        nonlocal done, failures
        if given_up.is_set():
            raise _NotStarted
        label = f"{node_id}[{index}]"
        _element_label.set(label)  # in this element's copy of the context, see `submit` below
        element_started = time.monotonic()
        try:
            assert run is not None
            outputs = run_task_unit(
                task,
                literals,
                label,
                cache=cache,
                execution=run,
                node_id=node_id,
                map_index=index,
            )
        except Exception as exc:
            logger.info(
                "%s failed after %s (%s)", label, _since(element_started), type(exc).__name__
            )
            with done_lock:
                failures += 1
                if failures > allowed:
                    given_up.set()
            raise
        finally:
            _element_output.finish(label)
        with done_lock:
            done += 1
            logger.info(
                "%s succeeded in %s (%d/%d done)", label, _since(element_started), done, total
            )
        return outputs

    with ExitStack() as stack:
        if execution is None:
            run = stack.enter_context(LocalExecution.started())
        stack.enter_context(_element_output.labelled())
        pool = stack.enter_context(
            ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fleetflow-map")
        )
        # Each element runs in a copy of this context, as a task on a cluster runs on its own.
        futures: list[Future[dict[str, Any]]] = [
            pool.submit(contextvars.copy_context().run, run_element, index, literals)
            for index, literals in enumerate(units)
        ]
        pending: set[Future[dict[str, Any]]] = set(futures)
        failed: list[int] = []
        while pending:
            _, pending = wait(pending, return_when=FIRST_EXCEPTION)
            failed = [
                index
                for index, future in enumerate(futures)
                if future.done()
                and not future.cancelled()
                and future.exception() is not None
                and not isinstance(future.exception(), _NotStarted)
            ]
            if len(failed) > allowed:
                break
        if len(failed) > allowed:
            for future in futures:
                future.cancel()
            index = failed[0]
            error = futures[index].exception()
            assert error is not None
            logger.info("%s failed after %s (%d/%d done)", node_id, _since(started), done, total)
            error.add_note(f"in element {index} of {where}")
            if min_success_ratio == 1.0:
                raise error
            raise MapElementsFailedError(
                too_many_failures(node_id, len(failed), total, min_success_ratio)
                + f"; element {index} failed: {type(error).__name__}: {error}"
            ) from error
    if failed:
        logger.info(
            "%s succeeded in %s: %s",
            node_id,
            _since(started),
            partial_success(node_id, total - len(failed), total, min_success_ratio),
        )
        return [None if index in failed else f.result() for index, f in enumerate(futures)]
    logger.info("%s succeeded in %s (%d elements)", node_id, _since(started), total)
    return [future.result() for future in futures]


class _NotStarted(Exception):
    """An element that did not start: the map's failures were already more than it allows."""


def collect_map_outputs(
    task: TaskFunction[..., Any], element_outputs: Sequence[Mapping[str, Any] | None]
) -> dict[str, list[Any]]:
    """A map node's outputs: for each task output, the list of the elements' values (None for
    an element that failed, in a node with a `min_success_ratio`)."""
    return {
        variable.name: [
            None if outputs is None else outputs[variable.name] for outputs in element_outputs
        ]
        for variable in task.spec.interface.outputs
    }


def _since(started: float) -> str:
    """The time since `started` (a `time.monotonic()`), as people read it: 0.25s, 12.3s, 2m05s."""
    seconds = time.monotonic() - started
    if seconds < 10:
        return f"{seconds:.2f}s"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, seconds = divmod(round(seconds), 60)
    return f"{minutes}m{seconds:02d}s"


# ------------------------------------------------------------------- map elements' output

#: The element whose thread is writing, set in each element's own context.
_element_label: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "fleetflow_map_element", default=None
)
#: One lock for every stand-in: a line is written whole, whichever stream it goes to.
_write_lock = threading.Lock()


class _LabelledOutput:
    """Stands in for `sys.stdout` or `sys.stderr` while map elements run.

    Text an element writes is held until its line is complete, then written as one
    `[<label>] <line>`; text written outside any element passes through untouched.
    """

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self._partial: dict[str, str] = {}

    def write(self, text: str) -> int:
        label = _element_label.get()
        with _write_lock:
            if label is None:
                self.stream.write(text)
                return len(text)
            *lines, rest = (self._partial.pop(label, "") + text).split("\n")
            if rest:
                self._partial[label] = rest
            if lines:
                self.stream.write("".join(f"[{label}] {line}\n" for line in lines))
        return len(text)

    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write(line)

    def finish(self, label: str | None = None) -> None:
        """End the unfinished line of `label` (of every element when None) with a newline."""
        with _write_lock:
            labels = [label] if label is not None else list(self._partial)
            for name in labels:
                rest = self._partial.pop(name, None)
                if rest:
                    self.stream.write(f"[{name}] {rest}\n")

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:
        return self.stream.isatty()

    def fileno(self) -> int:
        return self.stream.fileno()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


class _ElementOutput:
    """Installs the `_LabelledOutput` stand-ins while at least one map runs in this process,
    and puts the streams they replaced back when the last one ends."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._maps = 0
        self._replaced: list[tuple[str, TextIO, _LabelledOutput]] = []

    @contextmanager
    def labelled(self) -> Iterator[None]:
        with self._lock:
            if self._maps == 0:
                for name in ("stdout", "stderr"):
                    current = getattr(sys, name)
                    if current is None or isinstance(current, _LabelledOutput):
                        continue
                    stand_in = _LabelledOutput(current)
                    setattr(sys, name, stand_in)
                    self._replaced.append((name, current, stand_in))
            self._maps += 1
        try:
            yield
        finally:
            with self._lock:
                self._maps -= 1
                if self._maps == 0:
                    for name, original, stand_in in self._replaced:
                        stand_in.finish()
                        if getattr(sys, name) is stand_in:  # unless someone replaced it since
                            setattr(sys, name, original)
                    self._replaced.clear()

    def finish(self, label: str) -> None:
        """End `label`'s unfinished lines: the element is done."""
        for _, _, stand_in in list(self._replaced):
            stand_in.finish(label)


_element_output = _ElementOutput()
