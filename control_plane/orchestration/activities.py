"""Temporal activities: every piece of I/O an execution needs (database, blob store).

Each activity is idempotent, because Temporal may run it more than once: attempts are keyed by
(execution, node, map index, attempt number), blobs are written whole under deterministic keys,
cache entries are insert-if-absent, and state moves go through the transition policy, which
refuses repeats.

They run on the hot path of every step, so they read what they need and no more: the execution
row without its attempts, and the workflow's spec parsed once per version (`ParsedSpecs`).
"""

from __future__ import annotations

import io
import json
import logging
import tarfile
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

from pydantic import ValidationError
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, lazyload, sessionmaker
from temporalio import activity
from temporalio.exceptions import ApplicationError

from control_plane.blob_layout import (
    attempt_prefix,
    bundle_key,
    chunk_prefix,
    execution_prefix,
    inputs_key,
    legacy_execution_prefix,
    node_prefix,
    outputs_key,
)
from control_plane.db.models import Execution, TaskAttempt, Tenant, WorkflowVersion, new_id
from control_plane.db.repositories import attempts as attempts_repo
from control_plane.db.repositories import dynamic_tasks, task_cache, tenancy
from control_plane.db.repositories import executions as executions_repo
from control_plane.db.repositories.executions import move_execution
from control_plane.db.repositories.workflows import get_workflow_version
from control_plane.db.session import transaction
from control_plane.large_values import load_values, store_values
from control_plane.orchestration.workflows import (
    EXECUTION_FINISHED,
    AttemptFinished,
    AttemptStart,
    AttemptStarts,
    ChildStart,
    ChunkRef,
    Decision,
    DynamicPlan,
    ExecutionPlan,
    FindFinished,
    FinishExecutionInput,
    FoundFinished,
    NodeRef,
    PlanNode,
    StartAttemptInput,
    StartAttemptsInput,
    UnitStart,
)
from control_plane.parsed_specs import InvalidStoredSpecError, ParsedSpecs, describe_errors
from control_plane.placement.gangs import exceeds_whole_quota_of
from control_plane.quota import limits_of
from fleetflow.ir import (
    DYNAMIC_SPEC_OUTPUT,
    Binding,
    Failure,
    InputBinding,
    LeafBinding,
    LiteralBinding,
    Node,
    NodeOutputBinding,
    SelectBinding,
    TaskSpec,
    WorkflowSpec,
    check_dynamic_spec,
    prefix_spec,
    resolve_binding,
)
from fleetflow.logs import log_context
from fleetflow.spec_checks import binding_problems
from fleetflow.spec_conditions import evaluate
from fleetflow.states import NO_MAP_INDEX, AttemptState, ExecutionState
from fleetflow.storage import BlobNotFoundError, BlobStore

log = logging.getLogger(__name__)

_SUCCESSOR_SPECS = 64
"""The specs whose successor maps `start_successors` keeps at once."""
_SUCCESSOR_EXECUTIONS = 1024
"""The executions whose workflow version `start_successors` remembers at once."""
_SUB_SPECS = 256
"""The dynamic nodes' sub-DAGs kept parsed at once."""
_BUNDLES = 16
"""The code bundles whose module lists are kept at once."""


@dataclass(frozen=True)
class _Candidates:
    """Nodes `ExecutionActivities._start_ahead` may start, of one execution."""

    execution: Execution
    spec: WorkflowSpec
    nodes: list[str]
    when: str  # for the log: "after <node>", "at submission"


class ExecutionActivities:
    """Activities bound to the control plane's database and blob store."""

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        blob_store: BlobStore,
        *,
        on_attempt_ready: Callable[[], None] = lambda: None,
        on_capacity_freed: Callable[[], None] = lambda: None,
        map_chunk: int = 1000,
        continue_after_events: int = 10_000,
    ) -> None:
        """`on_attempt_ready` wakes the scheduler (`Scheduler.wake`): an attempt was created
        PENDING; `on_capacity_freed` too (`Scheduler.wake_soon`): attempts were cancelled. Both
        are called after the transaction committed, from the activity's thread.
        `map_chunk` and `continue_after_events` go into every new plan (`ExecutionPlan`)."""
        self._map_chunk = map_chunk
        self._continue_after_events = continue_after_events
        self._sessions = session_factory
        self._blobs = blob_store
        self._on_attempt_ready = on_attempt_ready
        self._on_capacity_freed = on_capacity_freed
        self._specs = ParsedSpecs()
        # Per spec: `_plain_successors`, and the nodes whose success its workflow need not
        # hear of at once (`_quiet_nodes`).
        self._successors: dict[str, dict[str, list[str]]] = {}
        self._quiet: dict[str, frozenset[str]] = {}
        # Execution -> its workflow version (immutable), as `start_successors` last read it.
        self._spec_ids: OrderedDict[str, str] = OrderedDict()
        # (execution, dynamic node) -> its sub-DAG as stored; (tenant, digest) -> modules.
        self._sub_specs: OrderedDict[tuple[str, str], WorkflowSpec] = OrderedDict()
        self._bundle_modules: OrderedDict[tuple[str, str], frozenset[str]] = OrderedDict()
        self._lock = threading.Lock()

    def all(self) -> list[Callable[..., Any]]:
        return [
            self.begin_execution,
            self.begin_quiet_execution,
            self.expand_map,
            self.expand_dynamic,
            self.start_attempts,
            self.start_attempt,
            self.complete_node,
            self.hold_finishes,
            self.find_finished,
            self.complete_chunk,
            self.decide_node,
            self.start_child_execution,
            self.complete_reference,
            self.finish_execution,
        ]

    def _execution(self, session: Session, execution_id: str, *, lock: bool = False) -> Execution:
        # The row alone: its attempts (eager for the API) and its workflow version (whose
        # spec comes parsed from `ParsedSpecs`) are read only if something asks for them.
        execution = session.get(
            Execution,
            execution_id,
            options=[lazyload(Execution.attempts), lazyload(Execution.workflow)],
            with_for_update=lock,
        )
        if execution is None:
            raise LookupError(f"execution {execution_id} does not exist")
        return execution

    def _spec(self, session: Session, execution: Execution) -> WorkflowSpec:
        return self._specs.get(session, execution.workflow_spec_id)

    def _load(
        self, session: Session, execution_id: str, *, lock: bool = False
    ) -> tuple[Execution, WorkflowSpec]:
        execution = self._execution(session, execution_id, lock=lock)
        return execution, self._spec(session, execution)

    def _load_node(
        self, session: Session, execution_id: str, node_id: str, *, lock: bool = False
    ) -> tuple[Execution, WorkflowSpec]:
        """The execution and the spec node `node_id` is in: the workflow's, or the sub-DAG
        of the dynamic node its id is prefixed with."""
        execution = self._execution(session, execution_id, lock=lock)
        return execution, self._spec_for(session, execution, node_id)

    def _spec_for(self, session: Session, execution: Execution, node_id: str) -> WorkflowSpec:
        """The spec that holds `node_id`. A `/` in an id is no proof of a sub-DAG: an inlined
        sub-workflow's nodes (`n1-train/n0-fit`) are the workflow's own. So the id is looked
        up in the workflow's spec, then in the sub-DAG of the dynamic node it is named under
        (`<dynamic node>/...`), and so on down nested dynamic nodes."""
        spec = self._spec(session, execution)
        steps: list[Node | Failure] = [*spec.nodes, *spec.failures]
        while not any(step.id == node_id for step in steps):
            parents = [
                node.id
                for node in spec.nodes
                if spec.tasks[node.task].dynamic and node_id.startswith(f"{node.id}/")
            ]
            if not parents:
                raise KeyError(node_id)
            spec = self._sub_spec(session, execution, max(parents, key=len))
            steps = [*spec.nodes, *spec.failures]
        return spec

    def _sub_spec_key(self, session: Session, execution: Execution, node_id: str) -> str:
        return f"{node_prefix(self._prefix(session, execution), node_id)}/dynamic/spec.json"

    def _sub_spec(self, session: Session, execution: Execution, node_id: str) -> WorkflowSpec:
        """The sub-DAG of the dynamic node `node_id`, as `expand_dynamic` checked and stored
        it (its nodes named `<node_id>/...`)."""
        key = (execution.id, node_id)
        with self._lock:
            spec = self._sub_specs.get(key)
        if spec is not None:
            return spec
        uri = self._blobs.uri(self._sub_spec_key(session, execution, node_id))
        spec = WorkflowSpec.model_validate(self._read_json(uri))
        with self._lock:
            self._sub_specs[key] = spec
            while len(self._sub_specs) > _SUB_SPECS:
                self._sub_specs.popitem(last=False)
        return spec

    @contextmanager
    def _failing_on_invalid_spec(self, execution_id: str) -> Iterator[None]:
        """An invalid stored spec fails the execution, with the reason, and the activity
        without retries; retrying would only keep the execution RUNNING forever."""
        try:
            yield
        except InvalidStoredSpecError as exc:
            message = str(exc)
            with log_context(execution_id=execution_id), transaction(self._sessions) as session:
                execution = self._execution(session, execution_id)
                error = {"node_id": None, "attempt_id": None, "message": message, "traceback": None}
                move_execution(session, execution, ExecutionState.FAILED, error=error)
                attempts_repo.cancel_unfinished(session, execution.id)
                log.error("execution %s failed: %s", execution_id, message)
            self._on_capacity_freed()
            raise ApplicationError(
                message, type="InvalidWorkflowSpec", non_retryable=True
            ) from None

    @contextmanager
    def _unfinished(
        self, execution_id: str, node_id: str | None, refusal: str
    ) -> Iterator[tuple[Session, Execution, WorkflowSpec]]:
        """A transaction on the execution, its row locked, with the spec that holds `node_id`
        (the workflow's without one): what an activity that starts or decides work runs in.
        An execution that has finished (a cancel can land meanwhile) gets nothing more: the
        activity fails without retries, saying `refusal`. `finish_execution` updates the same
        row, so one of the two sees the other's work."""
        with (
            self._failing_on_invalid_spec(execution_id),
            log_context(execution_id=execution_id, node_id=node_id),
            transaction(self._sessions) as session,
        ):
            if node_id is None:
                execution, spec = self._load(session, execution_id, lock=True)
            else:
                execution, spec = self._load_node(session, execution_id, node_id, lock=True)
            if ExecutionState(execution.status).terminal:
                raise ApplicationError(
                    f"execution {execution.id} is already {execution.status}: {refusal}",
                    type=EXECUTION_FINISHED,
                    non_retryable=True,
                )
            yield session, execution, spec

    def _read_json(self, uri: str) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self._blobs.get(uri))
        return data

    @staticmethod
    def _prefix(session: Session, execution: Execution) -> str:
        """The execution's place in the blob store, in its tenant's space."""
        return execution_prefix(session.get_one(Tenant, execution.tenant_id).name, execution.id)

    def _node_outputs(
        self, session: Session, execution: Execution, node: Node, spec: WorkflowSpec | None = None
    ) -> dict[str, Any]:
        """A node's outputs: its succeeded attempt's, a map node's collected lists, or a
        dynamic node's sub-DAG's outputs (both collected by `complete_node`), or a reference
        node's child execution's (by `complete_reference`); `spec`, the node's, says whether
        its task is dynamic or a reference."""
        task = spec.tasks[node.task] if spec is not None else None
        collected_here = task is not None and (task.dynamic or task.reference is not None)
        if node.map is not None or collected_here:
            collected = outputs_key(node_prefix(self._prefix(session, execution), node.id))
            try:
                return self._read_json(self._blobs.uri(collected))
            except BlobNotFoundError:  # collected before executions moved into tenants' space
                legacy = node_prefix(legacy_execution_prefix(execution.id), node.id)
                return self._read_json(self._blobs.uri(outputs_key(legacy)))
        attempt = attempts_repo.latest_succeeded_attempt(session, execution.id, node.id)
        return self._read_json(attempt.outputs_uri)

    def _resolver(
        self, session: Session, execution: Execution, spec: WorkflowSpec
    ) -> Callable[[Binding], Any]:
        """Resolves bindings of one execution, reading its inputs and each upstream node's
        outputs at most once."""
        execution_inputs: dict[str, Any] | None = None
        outputs: dict[str, dict[str, Any]] = {}

        def leaf(binding: LeafBinding) -> Any:
            nonlocal execution_inputs
            if isinstance(binding, InputBinding):
                if execution_inputs is None:
                    execution_inputs = load_values(execution.inputs, self._blobs)
                    assert execution_inputs is not None
                return execution_inputs[binding.input]
            if isinstance(binding, LiteralBinding):
                return binding.value
            if isinstance(binding, SelectBinding):  # the branch that ran; None if none did
                skipped = attempts_repo.skipped_nodes(
                    session, execution.id, [option.node_id for option in binding.options]
                )
                ran = (o for o in binding.options if o.node_id not in skipped)
                return next((resolve(option) for option in ran), None)
            assert isinstance(binding, NodeOutputBinding)
            if binding.node_id not in outputs:
                node = spec.node(binding.node_id)
                outputs[binding.node_id] = self._node_outputs(session, execution, node, spec)
            return outputs[binding.node_id][binding.output]

        def resolve(binding: Binding) -> Any:  # a list or dict binding from its items' values
            return resolve_binding(binding, leaf)

        return resolve

    def _node_inputs(
        self, session: Session, execution: Execution, spec: WorkflowSpec, node: Node
    ) -> dict[str, Any]:
        resolve = self._resolver(session, execution, spec)
        return {name: resolve(binding) for name, binding in node.inputs.items()}

    @activity.defn(name="begin_execution")
    def begin_execution(self, execution_id: str) -> ExecutionPlan:
        """Mark the execution RUNNING and return the DAG the workflow walks."""
        return self._begin(execution_id, quiet=False)

    @activity.defn(name="begin_quiet_execution")
    def begin_quiet_execution(self, execution_id: str) -> ExecutionPlan:
        """`begin_execution` and `hold_finishes` in one transaction: what workflows begun
        since `workflows.QUIET_FINISHES` call first."""
        return self._begin(execution_id, quiet=True)

    def _begin(self, execution_id: str, *, quiet: bool) -> ExecutionPlan:
        with (
            self._failing_on_invalid_spec(execution_id),
            log_context(execution_id=execution_id),
            transaction(self._sessions) as session,
        ):
            execution, spec = self._load(session, execution_id)
            if quiet:
                execution.quiet_finishes = True
            if move_execution(session, execution, ExecutionState.RUNNING):
                log.info("execution %s running", execution_id)
        return ExecutionPlan(
            nodes=self._plan_nodes(spec),
            map_chunk=self._map_chunk,
            continue_after_events=self._continue_after_events,
        )

    @staticmethod
    def _plan_nodes(spec: WorkflowSpec) -> list[PlanNode]:
        # A conditional's `.fail` branches first: each is decided no later than the nodes of
        # the other branches (its condition reads what theirs read), so before anything
        # downstream of the conditional starts.
        return [
            PlanNode(failure.id, failure.upstream, 0, completes=False, guarded=True)
            for failure in spec.failures
        ] + [
            PlanNode(
                node.id,
                node.upstream,
                spec.tasks[node.task].retries,
                is_map=node.map is not None,
                concurrency=node.map.concurrency if node.map else None,
                # What `complete_node` does; without any it has nothing to do.
                completes=spec.tasks[node.task].cache
                or node.map is not None
                or spec.tasks[node.task].dynamic,
                guarded=node.when is not None,
                min_success_ratio=node.map.min_success_ratio if node.map else 1.0,
                dynamic=spec.tasks[node.task].dynamic and node.map is None,
                reference=spec.tasks[node.task].reference is not None,
            )
            for node in spec.nodes
        ]

    @activity.defn(name="expand_dynamic")
    def expand_dynamic(self, ref: NodeRef) -> DynamicPlan:
        """Once a dynamic node's attempt succeeded: check the sub-DAG it wrote, store it
        with its nodes named `<node>/...`, and return its plan; or say why it is refused
        (the execution then fails with that message)."""
        with (
            self._failing_on_invalid_spec(ref.execution_id),
            log_context(execution_id=ref.execution_id, node_id=ref.node_id),
            transaction(self._sessions) as session,
        ):
            execution, spec = self._load_node(session, ref.execution_id, ref.node_id)
            node = spec.node(ref.node_id)
            task = spec.tasks[node.task]
            attempt = attempts_repo.latest_succeeded_attempt(session, execution.id, node.id)
            try:
                sub = self._checked_sub_spec(session, execution, node.id, task, attempt)
                # Placement and leasing find the tasks the workflow's spec lacks there.
                root = self._spec(session, execution)
                for sub_task in sub.tasks.values():
                    if sub_task.name in root.tasks and root.tasks[sub_task.name] != sub_task:
                        raise ValueError(
                            f"task '{sub_task.name}' differs from the workflow's task of that name"
                        )
                dynamic_tasks.record(
                    session,
                    execution.workflow_spec_id,
                    [t for t in sub.tasks.values() if t.name not in root.tasks],
                )
            except ValueError as exc:
                message = f"{node.id}: the sub-DAG of dynamic task '{task.name}' is refused: {exc}"
                log.warning("execution %s: %s", execution.id, message)
                return DynamicPlan(message=message)
            self._blobs.put(
                self._sub_spec_key(session, execution, node.id),
                sub.model_dump_json().encode(),
            )
            log.info("node %s: runs a sub-DAG of %d node(s)", node.id, len(sub.nodes))
        # Bounded by `MAX_DYNAMIC_NODES`: its workflow's history stays short.
        plan = ExecutionPlan(self._plan_nodes(sub), map_chunk=self._map_chunk)
        return DynamicPlan(plan=plan)

    def _checked_sub_spec(
        self,
        session: Session,
        execution: Execution,
        node_id: str,
        task: TaskSpec,
        attempt: TaskAttempt,
    ) -> WorkflowSpec:
        """The sub-DAG the dynamic task's attempt wrote, checked as a registered spec is and
        more, its nodes renamed `<node_id>/...`. ValueError: why it is refused."""
        try:
            document = self._read_json(attempt.outputs_uri)
        except (BlobNotFoundError, ValueError):
            raise ValueError("its attempt wrote no readable outputs document") from None
        raw = document.get(DYNAMIC_SPEC_OUTPUT) if isinstance(document, dict) else None
        if not isinstance(raw, dict):
            raise ValueError("its attempt wrote no sub-DAG")
        try:
            sub = WorkflowSpec.model_validate(raw)
        except ValidationError as exc:
            raise ValueError(f"invalid sub-DAG: {describe_errors(exc)}") from None
        check_dynamic_spec(sub, node_id, task.name)
        if sub.interface.outputs != task.interface.outputs:
            raise ValueError("its sub-DAG's outputs are not those the task declares")
        problems = binding_problems(sub)
        if problems:
            raise ValueError(f"invalid sub-DAG: {problems[0].field}: {problems[0].message}")
        modules = self._modules_of(session, execution)
        for sub_task in sub.tasks.values():
            if sub_task.module not in modules:
                raise ValueError(
                    f"task '{sub_task.name}' is not in the execution's code bundle (no module "
                    f"'{sub_task.module}')"
                )
        return prefix_spec(sub, node_id)

    def _modules_of(self, session: Session, execution: Execution) -> frozenset[str]:
        """The Python modules in the execution's code bundle (`a.b` for `a/b.py` and
        `a/b/__init__.py`)."""
        version = session.get_one(WorkflowVersion, execution.workflow_spec_id)
        tenant = session.get_one(Tenant, execution.tenant_id).name
        key = (tenant, version.bundle_digest)
        with self._lock:
            found = self._bundle_modules.get(key)
        if found is not None:
            return found
        data = self._blobs.get(self._blobs.uri(bundle_key(tenant, version.bundle_digest)))
        modules: set[str] = set()
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
            for name in archive.getnames():
                path = name.removeprefix("./")
                if path.endswith(".py"):
                    module = path[: -len(".py")].replace("/", ".")
                    modules.add(module.removesuffix(".__init__"))
        found = frozenset(modules)
        with self._lock:
            self._bundle_modules[key] = found
            while len(self._bundle_modules) > _BUNDLES:
                self._bundle_modules.popitem(last=False)
        return found

    @activity.defn(name="start_child_execution")
    def start_child_execution(self, ref: NodeRef) -> ChildStart:
        """For a reference node whose inputs are ready: create the child execution of the
        referenced workflow version, QUEUED, in the execution's tenant, with the node's input
        values; or find the one an earlier try created. Its workflow is the caller's to start.
        Says why none runs when the version is no longer registered in the tenant or a task
        of it exceeds the tenant's quota as a whole."""
        with self._unfinished(ref.execution_id, ref.node_id, "no child execution is started") as (
            session,
            execution,
            spec,
        ):
            existing = session.scalar(
                select(Execution.id).where(
                    Execution.parent_execution_id == execution.id,
                    Execution.parent_node_id == ref.node_id,
                )
            )
            if existing is not None:
                return ChildStart(existing)
            node = spec.node(ref.node_id)
            reference = spec.tasks[node.task].reference
            assert reference is not None
            tenant = session.get_one(Tenant, execution.tenant_id)
            which = f"workflow {reference.name} version {reference.version}"
            # The caller's tenant only, as at registration: never another tenant's workflow.
            version = get_workflow_version(session, tenant.id, reference.name, reference.version)
            if version is None:
                return ChildStart(message=f"{node.id}: {which} is not registered in the tenant")
            limits = limits_of(tenancy.get_quota(session, tenant))  # as the API checks a launch
            for name, task in sorted(self._specs.get(session, version.id).tasks.items()):
                problem = exceeds_whole_quota_of(limits, name, task)
                if problem is not None:
                    return ChildStart(message=f"{node.id}: {which}: {problem}")
            inputs = self._node_inputs(session, execution, spec, node)
            child_id = new_id("ex")
            stored = store_values(
                inputs, self._blobs, inputs_key(execution_prefix(tenant.name, child_id))
            )
            child = executions_repo.create_execution(
                session,
                tenant.id,
                version,
                stored,
                execution_id=child_id,
                priority=execution.priority,
            )
            child.parent_execution_id = execution.id
            child.parent_node_id = node.id
            # Part of its parent's run: admitted with it, as running executions go (waiting for
            # a place of its own under `max_running_executions` would wait on its parent).
            child.admitted_at = execution.admitted_at
            log.info("node %s: runs %s as child execution %s", node.id, which, child_id)
            return ChildStart(child_id)

    @activity.defn(name="complete_reference")
    def complete_reference(self, ref: NodeRef) -> str:
        """Once a reference node's child execution closed: its outputs become the node's
        (""), or why the node fails (the child's error)."""
        with (
            self._failing_on_invalid_spec(ref.execution_id),
            log_context(execution_id=ref.execution_id, node_id=ref.node_id),
            transaction(self._sessions) as session,
        ):
            execution = self._execution(session, ref.execution_id)
            child = session.scalar(
                select(Execution)
                .options(lazyload(Execution.attempts))
                .where(
                    Execution.parent_execution_id == execution.id,
                    Execution.parent_node_id == ref.node_id,
                )
            )
            if child is None:
                return f"{ref.node_id}: its child execution is missing"
            what = f"{ref.node_id}: child execution {child.id} ({child.workflow.name} version "
            what += f"{child.workflow.version})"
            if child.status != ExecutionState.SUCCEEDED.value:
                error = (child.error or {}).get("message") or ""
                failed_node = (child.error or {}).get("node_id")
                where = f" at node {failed_node}" if failed_node else ""
                return f"{what} {child.status}{where}" + (f": {error}" if error else "")
            outputs = load_values(child.outputs, self._blobs) or {}
            node_key = node_prefix(self._prefix(session, execution), ref.node_id)
            self._blobs.put(outputs_key(node_key), json.dumps(outputs).encode())
            return ""

    @activity.defn(name="expand_map")
    def expand_map(self, ref: NodeRef) -> int:
        """How many elements a map node runs: the common length of its mapped inputs."""
        with (
            self._failing_on_invalid_spec(ref.execution_id),
            transaction(self._sessions) as session,
        ):
            execution, spec = self._load_node(session, ref.execution_id, ref.node_id)
            node = spec.node(ref.node_id)
            assert node.map is not None
            inputs = self._node_inputs(session, execution, spec, node)
        lengths = {name: len(inputs[name]) for name in node.map.over}
        if len(set(lengths.values())) > 1:
            sizes = ", ".join(f"{name} has {n}" for name, n in lengths.items())
            raise ApplicationError(
                f"mapped inputs must have the same length: {sizes}",
                type="MapInputLengthMismatch",
                non_retryable=True,
            )
        return next(iter(lengths.values()), 0)

    @activity.defn(name="decide_node")
    def decide_node(self, ref: NodeRef) -> Decision:
        """For a guarded node whose upstream nodes are done: evaluate its condition on the
        execution's inputs and stored outputs. False: record the node SKIPPED (an attempt
        born SKIPPED, which `executions get`, the API and select bindings see). True: it runs
        (it must not consume a skipped node's output). For a `.fail` branch, true fails the
        execution with its message. A condition that cannot be evaluated fails it too."""
        with self._unfinished(ref.execution_id, ref.node_id, "nothing is decided") as (
            session,
            execution,
            spec,
        ):
            step = self._step(spec, ref.node_id)
            assert step.when is not None
            resolve = self._resolver(session, execution, spec)
            try:
                holds = evaluate(step.when, resolve)
            except (LookupError, FileNotFoundError):  # an operand's node did not run
                return Decision(
                    message=f"{ref.node_id}: its condition reads a value that does not exist "
                    "(the output of a node that was skipped)"
                )
            except (TypeError, ValueError) as exc:
                return Decision(
                    message=f"{ref.node_id}: its condition cannot be evaluated: "
                    f"{type(exc).__name__}: {exc}"
                )
            if isinstance(step, Failure):
                if holds:
                    log.info("execution %s: %s: fails with its message", execution.id, step.id)
                    return Decision(message=step.message)
                return Decision()
            if holds:
                consumed = [
                    b.node_id for b in step.inputs.values() if isinstance(b, NodeOutputBinding)
                ]
                skipped = attempts_repo.skipped_nodes(session, execution.id, consumed)
                if skipped:
                    return Decision(
                        message=f"{ref.node_id} consumes the output of skipped node "
                        f"{sorted(skipped)[0]}"
                    )
                log.info("node %s: its branch is taken", ref.node_id)
                return Decision(run=True)
            attempts_repo.create_attempts(
                session,
                execution.id,
                [
                    attempts_repo.NewAttempt(
                        node_id=step.id,
                        map_index=NO_MAP_INDEX,
                        task_name=step.task,
                        attempt_number=1,
                        inputs_uri="",
                        outputs_uri="",
                        skipped=True,
                    )
                ],
            )
            log.info("node %s: skipped, its branch is not taken", ref.node_id)
            return Decision()

    @staticmethod
    def _step(spec: WorkflowSpec, step_id: str) -> Node | Failure:
        for failure in spec.failures:
            if failure.id == step_id:
                return failure
        return spec.node(step_id)

    @activity.defn(name="start_attempts")
    def start_attempts(self, args: StartAttemptsInput) -> AttemptStarts:
        """For each unit, in one transaction: write its inputs, then answer from the task
        cache or create its attempt (PENDING); then wake the scheduler once, which places
        the new attempts for agents to lease. Answers in the order of `args.units`.

        Creates nothing for an execution that has finished: a cancel can land while this
        runs (a local activity is not interrupted), and `finish_execution` cancels only the
        attempts it sees. The execution's row is locked, and `finish_execution` updates it,
        so one of the two sees the other's work."""
        with self._unfinished(args.execution_id, None, "no attempt is started") as (
            session,
            execution,
            spec,
        ):
            attempts = self._create_units(session, execution, spec, args.units, args.workflow_id)
            starts = [
                self._started(unit, attempt)
                for unit, attempt in zip(args.units, attempts, strict=True)
            ]
        # Only for attempts still waiting: those a report already created and the scheduler
        # placed (`start_successors`, the usual case for a chain's next step) need no pass.
        if any(attempt.status == AttemptState.PENDING.value for attempt in attempts):
            self._on_attempt_ready()
        return AttemptStarts(starts)

    def _create_units(
        self,
        session: Session,
        execution: Execution,
        spec: WorkflowSpec,
        units: list[UnitStart],
        workflow_id: str,
    ) -> list[TaskAttempt]:
        """Each unit's inputs written, then its attempt answered from the task cache or
        created PENDING, unless it exists; the rows in the order of `units`. In a recovery
        (`Execution.recovered_from`), a unit that succeeded in the source execution is
        answered like a cache hit, with the outputs it had there.

        A unit whose attempt exists (created ahead of the workflow by `start_successors` or
        `start_roots`, or by an earlier try of this activity) is answered with it as it is
        now: its inputs are neither read from its upstream outputs nor written again."""
        keys = [(unit.node_id, unit.map_index, unit.attempt_number) for unit in units]
        existing = attempts_repo.existing_attempts(session, execution.id, keys)
        units = [unit for unit, key in zip(units, keys, strict=True) if key not in existing]
        created = self._create_missing(session, execution, spec, units, workflow_id)
        found = {**existing, **{(a.node_id, a.map_index, a.attempt_number): a for a in created}}
        return [found[key] for key in keys]

    def _create_missing(
        self,
        session: Session,
        execution: Execution,
        spec: WorkflowSpec,
        units: list[UnitStart],
        workflow_id: str,
    ) -> list[TaskAttempt]:
        if not units:
            return []
        prefix = self._prefix(session, execution)
        node_inputs: dict[str, dict[str, Any]] = {}
        node_specs: dict[str, WorkflowSpec] = {}  # a sub-DAG's for its nodes
        for unit in units:  # each node's inputs once, however many of its units
            if unit.node_id not in node_inputs:
                node_spec = spec
                if not any(node.id == unit.node_id for node in spec.nodes):
                    node_spec = self._spec_for(session, execution, unit.node_id)
                node = node_spec.node(unit.node_id)
                node_specs[node.id] = node_spec
                node_inputs[node.id] = self._node_inputs(session, execution, node_spec, node)
        recovered: dict[tuple[str, int], str] = {}
        if execution.recovered_from:  # the units that succeeded there are not run again
            recovered = attempts_repo.succeeded_outputs(
                session, execution.recovered_from, node_inputs
            )
        new: list[attempts_repo.NewAttempt] = []
        for unit in units:
            node = node_specs[unit.node_id].node(unit.node_id)
            task = node_specs[node.id].tasks[node.task]
            inputs = node_inputs[node.id]
            if node.map is not None:
                element = {name: inputs[name][unit.map_index] for name in node.map.over}
                inputs = {**inputs, **element}
            unit_prefix = attempt_prefix(
                prefix,
                node.id,
                unit.map_index if node.map is not None else None,
                unit.attempt_number,
            )
            inputs_uri = self._blobs.put(inputs_key(unit_prefix), json.dumps(inputs).encode())
            cached = recovered.get((node.id, unit.map_index))
            if cached is not None and not self._blobs.exists(cached):
                cached = None
            if cached is None and task.cache:
                entry = task_cache.find_cached(
                    session, task_cache.cache_key(execution.tenant_id, task, inputs)
                )
                if entry is not None and self._blobs.exists(entry.outputs_uri):
                    cached = entry.outputs_uri
            new.append(
                attempts_repo.NewAttempt(
                    node_id=node.id,
                    map_index=unit.map_index,
                    task_name=node.task,
                    attempt_number=unit.attempt_number,
                    inputs_uri=inputs_uri,
                    outputs_uri=cached or self._blobs.uri(outputs_key(unit_prefix)),
                    cache_hit=cached is not None,
                    workflow_id=workflow_id or None,
                )
            )
        return attempts_repo.create_attempts(session, execution.id, new)

    @staticmethod
    def _started(unit: UnitStart, attempt: TaskAttempt) -> AttemptStart:
        result = AttemptStart(attempt.id, cached=attempt.cache_hit)
        if not attempt.cache_hit and AttemptState(attempt.status).terminal:
            result.finished = AttemptFinished(
                attempt.id, attempt.status, attempt.error_message or ""
            )
        with log_context(node_id=unit.node_id, attempt_id=attempt.id):
            log.info(  # a retried activity finds the attempt as it is now: says its state
                "attempt %s of node %s: %s%s",
                attempt.id,
                unit.node_id,
                attempt.status,
                " (from the task cache)" if attempt.cache_hit else "",
            )
        return result

    @activity.defn(name="start_attempt")
    def start_attempt(self, args: StartAttemptInput) -> AttemptStart:
        """`start_attempts` of one unit: what executions begun before it was introduced
        (`workflows.LOCAL_BATCHED`) still call, one unit at a time."""
        unit = UnitStart(args.node_id, args.map_index, args.attempt_number)
        (start,) = self.start_attempts(StartAttemptsInput(args.execution_id, [unit])).starts
        return start

    def start_successors(
        self, attempt_id: str, execution_id: str = "", node_id: str = ""
    ) -> list[str]:
        """After `attempt_id` SUCCEEDED: create the first attempts of the nodes it made
        ready, ahead of the workflow, so that a chain's next task is placed while the signal
        is still on its way; the workflow's `start_attempts` then finds them (creation is
        idempotent). Called by the agent service once the report is committed, with the
        attempt's execution and node: a node with no such successor (a fan-out's thousands of
        independent nodes) then costs no transaction, after its execution's first.

        Only where the workflow would start a node with nothing to do first: the node is no
        map, no upstream node is a map or cached (none has `complete_node` to run), every
        upstream node succeeded, and the node has no attempt yet. Never for a finished
        execution: its row is locked, as `start_attempts` locks it. Best effort: a failure is
        logged, and the workflow starts the nodes as it always does. Returns the ids of the
        attempts created."""
        if execution_id and node_id and self._known_to_start_nothing(execution_id, node_id):
            return []
        return self._start_ahead(
            f"after attempt {attempt_id}", lambda session: self._successors_of(session, attempt_id)
        )

    def _known_to_start_nothing(self, execution_id: str, node_id: str) -> bool:
        """Whether the execution's spec, read before, gives `node_id` no successor that
        `start_successors` may start."""
        with self._lock:
            spec_id = self._spec_ids.get(execution_id)
        successors = self._successors.get(spec_id) if spec_id is not None else None
        return successors is not None and node_id not in successors

    def start_roots(self, execution_id: str) -> list[str]:
        """When an execution is created: the same for the nodes that need only its inputs
        (no map, no upstream node), so that its first tasks are placed while its workflow is
        being started, not after that start, its first workflow task and `start_attempts`.
        Called by the API after the execution is committed, beside the workflow's start."""
        return self._start_ahead(
            f"of execution {execution_id}", lambda session: self._roots_of(session, execution_id)
        )

    def _start_ahead(self, which: str, find: Callable[[Session], _Candidates | None]) -> list[str]:
        try:
            with transaction(self._sessions) as session:
                found = find(session)
                created = self._create_ready(session, found) if found else []
        except Exception:
            log.warning(
                "could not start the nodes %s ahead of the workflow; it starts them",
                which,
                exc_info=True,
            )
            return []
        if any(not attempt.cache_hit for attempt in created):
            self._on_attempt_ready()
        return [attempt.id for attempt in created]

    def _successors_of(self, session: Session, attempt_id: str) -> _Candidates | None:
        finished = session.get(TaskAttempt, attempt_id)
        if finished is None or not attempts_repo.starts_successors_ahead(finished):
            return None
        execution = self._execution(session, finished.execution_id)
        spec = self._spec(session, execution)
        nodes = self._plain_successors(execution.workflow_spec_id, spec).get(finished.node_id)
        with self._lock:
            self._spec_ids[execution.id] = execution.workflow_spec_id
            if len(self._spec_ids) > _SUCCESSOR_EXECUTIONS:
                self._spec_ids.popitem(last=False)
        return _Candidates(execution, spec, nodes, f"after {finished.node_id}") if nodes else None

    def _roots_of(self, session: Session, execution_id: str) -> _Candidates | None:
        execution = self._execution(session, execution_id)
        spec = self._spec(session, execution)
        nodes = [
            node.id
            for node in spec.nodes
            if node.map is None
            and not node.upstream
            and node.when is None
            and spec.tasks[node.task].reference is None  # a child execution, not an attempt
        ]
        return _Candidates(execution, spec, nodes, "at submission") if nodes else None

    def _create_ready(self, session: Session, found: _Candidates) -> list[TaskAttempt]:
        """The first attempts of `found.nodes` whose upstream nodes all succeeded and that
        have none yet, unless the execution finished (its row locked first)."""
        execution, spec = found.execution, found.spec
        session.refresh(execution, with_for_update=True)
        if ExecutionState(execution.status).terminal:
            return []
        upstream = {node_id: spec.node(node_id).upstream for node_id in found.nodes}
        involved = set(found.nodes).union(*upstream.values())
        started: set[str] = set()
        succeeded: set[str] = set()
        for node_id, status in session.execute(
            select(TaskAttempt.node_id, TaskAttempt.status).where(
                TaskAttempt.execution_id == execution.id, TaskAttempt.node_id.in_(involved)
            )
        ):
            started.add(node_id)
            if status == AttemptState.SUCCEEDED.value:
                succeeded.add(node_id)
        ready = [
            node_id
            for node_id in found.nodes
            if node_id not in started and succeeded.issuperset(upstream[node_id])
        ]
        if not ready:
            return []
        units = [UnitStart(node_id, NO_MAP_INDEX, 1) for node_id in ready]
        created = self._create_units(session, execution, spec, units, "")
        for attempt in created:
            with log_context(
                execution_id=execution.id, node_id=attempt.node_id, attempt_id=attempt.id
            ):
                log.info(
                    "attempt %s of node %s: %s, started %s ahead of the workflow",
                    attempt.id,
                    attempt.node_id,
                    attempt.status,
                    found.when,
                )
        return created

    def _plain_successors(self, spec_id: str, spec: WorkflowSpec) -> dict[str, list[str]]:
        """Node -> the nodes `start_successors` may start once it succeeded, per spec."""
        found = self._successors.get(spec_id)
        if found is None:
            plain = _plain_nodes(spec)
            found = {}
            for node in spec.nodes:
                if (
                    node.map is None
                    and node.when is None
                    and spec.tasks[node.task].reference is None
                    and node.upstream
                    and plain.issuperset(node.upstream)
                ):
                    for upstream in node.upstream:
                        found.setdefault(upstream, []).append(node.id)
            if len(self._successors) >= _SUCCESSOR_SPECS:
                self._successors.clear()  # bounded like `ParsedSpecs`: recomputing is cheap
                self._quiet.clear()
            self._successors[spec_id] = found
        return found

    def _quiet_nodes(self, spec_id: str, spec: WorkflowSpec) -> frozenset[str]:
        """The nodes whose success the workflow need not hear of at once, per spec: plain
        ones (no `complete_node` to run) whose every successor `start_successors` starts
        (none guarded, none a map, a reference or downstream of one that is not plain)."""
        quiet = self._quiet.get(spec_id)
        if quiet is None:
            starts = self._plain_successors(spec_id, spec)
            below: dict[str, set[str]] = {}
            edges = [(n.id, n.upstream) for n in spec.nodes]
            for node_id, upstream_ids in edges + [(f.id, f.upstream) for f in spec.failures]:
                for upstream in upstream_ids:
                    below.setdefault(upstream, set()).add(node_id)
            quiet = frozenset(
                node_id
                for node_id in _plain_nodes(spec)
                if below.get(node_id, set()) <= set(starts.get(node_id, ()))
            )
            self._quiet[spec_id] = quiet
        return quiet

    @activity.defn(name="hold_finishes")
    def hold_finishes(self, execution_id: str) -> None:
        """The workflow reads held finishes when told (`quiet_finishes`): from now on, its
        plain successes need no signal each. Called by a run that continued as new from one
        begun since `workflows.QUIET_FINISHES` (a first run calls `begin_quiet_execution`),
        in case the run before it was begun before; idempotent."""
        with transaction(self._sessions) as session:
            session.execute(
                update(Execution)
                .where(Execution.id == execution_id)
                .values(quiet_finishes=True)
                .execution_options(synchronize_session=False)
            )

    @activity.defn(name="find_finished")
    def find_finished(self, args: FindFinished) -> FoundFinished:
        """Which of `args.attempt_ids` (the execution's) have finished, and how."""
        with self._sessions() as session:
            rows = session.execute(
                select(TaskAttempt.id, TaskAttempt.status, TaskAttempt.error_message).where(
                    TaskAttempt.execution_id == args.execution_id,
                    TaskAttempt.id.in_(args.attempt_ids),
                    TaskAttempt.finished_at.is_not(None),
                )
            ).all()
        return FoundFinished([AttemptFinished(r.id, r.status, r.error_message or "") for r in rows])

    def quiet_finishes(
        self, session: Session, pending: list[attempts_repo.FinishedAttempt]
    ) -> list[attempts_repo.FinishedAttempt]:
        """`FinishNotifier`'s policy: of the finishes waiting for a signal, those their
        workflow may hear of later are `held`; a finish of an execution that holds some is
        signalled with a `look` when nothing of that execution is active any more.

        Held: a success that may start what follows it ahead (`starts_successors_ahead`) of
        a quiet node (`_quiet_nodes`), in an execution whose workflow reads held finishes
        (`hold_finishes`) and that has other attempts of that workflow waiting or running
        (not a map chunk's nor a dynamic node's: they signal their own). Those end in turn,
        and the last one's round finds none active: its finish is signalled with the look.
        (Successors started ahead are active before the round of the success that started
        them runs, `AgentService._after_finish`.) A workflow that holds nothing then only
        reads the attempts it already knows of."""
        executions = {i.execution_id for i in pending if i.workflow_id == i.execution_id}
        quiet = dict(
            session.execute(
                select(Execution.id, Execution.workflow_spec_id).where(
                    Execution.id.in_(executions), Execution.quiet_finishes.is_(True)
                )
            ).all()
        )
        if not quiet:
            return pending
        active = dict(
            session.execute(
                select(TaskAttempt.execution_id, func.count())
                .where(
                    TaskAttempt.execution_id.in_(quiet),
                    # Those that signal the execution's workflow: a map chunk's or a dynamic
                    # node's last attempt tells its own workflow, never this one.
                    TaskAttempt.workflow_id.is_(None),
                    TaskAttempt.status.in_(
                        [AttemptState.PENDING.value, *attempts_repo.ACTIVE_STATES]
                    ),
                )
                .group_by(TaskAttempt.execution_id)
            ).all()
        )
        nodes = {
            execution_id: self._quiet_nodes(spec_id, self._specs.get(session, spec_id))
            for execution_id, spec_id in quiet.items()
            if active.get(execution_id, 0)
        }

        def decided(item: attempts_repo.FinishedAttempt) -> attempts_repo.FinishedAttempt:
            if item.execution_id not in quiet or item.workflow_id != item.execution_id:
                return item  # a chunk's or a dynamic node's workflow hears of every one
            if item.execution_id not in nodes:
                return replace(item, look=True)  # nothing active: the last to end
            if (
                item.ahead
                and item.status == AttemptState.SUCCEEDED.value
                and item.node_id in nodes[item.execution_id]
            ):
                return replace(item, held=True)
            return item

        return [decided(item) for item in pending]

    @activity.defn(name="complete_node")
    def complete_node(self, ref: NodeRef) -> None:
        """Remember cacheable outputs, and collect a map node's element outputs into lists
        (from its chunks' parts, when chunk workflows ran it). In a node with a
        `min_success_ratio`, an element that failed is null in them."""
        with (
            self._failing_on_invalid_spec(ref.execution_id),
            transaction(self._sessions) as session,
        ):
            execution, spec = self._load_node(session, ref.execution_id, ref.node_id)
            node = spec.node(ref.node_id)
            task = spec.tasks[node.task]
            node_key = node_prefix(self._prefix(session, execution), node.id)
            if task.dynamic:  # its sub-DAG ran: its outputs are the node's
                sub = self._sub_spec(session, execution, node.id)
                resolve = self._resolver(session, execution, sub)
                outputs = {name: resolve(binding) for name, binding in sub.outputs.items()}
                self._blobs.put(outputs_key(node_key), json.dumps(outputs).encode())
                return
            if ref.chunks:
                parts = [
                    self._read_json(self._blobs.uri(outputs_key(chunk_prefix(node_key, k))))
                    for k in range(ref.chunks)
                ]
                collected = {
                    out.name: [value for part in parts for value in part[out.name]]
                    for out in task.interface.outputs
                }
                self._blobs.put(outputs_key(node_key), json.dumps(collected).encode())
                return
            succeeded = self._succeeded_units(session, execution.id, node.id)
            self._remember_cached(session, execution, spec, node, succeeded)
            if node.map is not None:
                indexes = None
                if node.map.min_success_ratio < 1.0:  # every element has an attempt by now
                    indexes = range(self._map_elements(session, execution.id, node.id))
                self._blobs.put(outputs_key(node_key), self._collected(task, succeeded, indexes))

    @activity.defn(name="complete_chunk")
    def complete_chunk(self, ref: ChunkRef) -> None:
        """`complete_node` for one chunk of a map node: remember its cacheable outputs and
        collect its elements' outputs into the chunk's part (null for a failed element, with
        a `min_success_ratio`)."""
        with (
            self._failing_on_invalid_spec(ref.execution_id),
            transaction(self._sessions) as session,
        ):
            execution, spec = self._load_node(session, ref.execution_id, ref.node_id)
            node = spec.node(ref.node_id)
            indexes = range(ref.first, ref.first + ref.count)
            succeeded = self._succeeded_units(session, execution.id, node.id, indexes)
            self._remember_cached(session, execution, spec, node, succeeded)
            node_key = node_prefix(self._prefix(session, execution), node.id)
            partial = node.map is not None and node.map.min_success_ratio < 1.0
            self._blobs.put(
                outputs_key(chunk_prefix(node_key, ref.chunk)),
                self._collected(spec.tasks[node.task], succeeded, indexes if partial else None),
            )

    def _remember_cached(
        self,
        session: Session,
        execution: Execution,
        spec: WorkflowSpec,
        node: Node,
        succeeded: list[TaskAttempt],
    ) -> None:
        task = spec.tasks[node.task]
        if not task.cache:
            return
        for attempt in succeeded:
            if not attempt.cache_hit:
                key = task_cache.cache_key(
                    execution.tenant_id, task, self._read_json(attempt.inputs_uri)
                )
                task_cache.remember(
                    session, key, task, outputs_uri=attempt.outputs_uri, attempt_id=attempt.id
                )

    def _collected(
        self, task: TaskSpec, succeeded: list[TaskAttempt], indexes: range | None = None
    ) -> bytes:
        """The outputs of a map node's elements as one list per output, in element order;
        with `indexes` (a node with a `min_success_ratio`), one item per index, null for an
        element without a succeeded attempt (it failed). The element outputs are read a few
        at a time: a chunk has up to a thousand."""
        with ThreadPoolExecutor(max_workers=8) as pool:
            element_outputs = list(pool.map(self._read_json, [a.outputs_uri for a in succeeded]))
        if indexes is not None:
            by_index = dict(zip((a.map_index for a in succeeded), element_outputs, strict=True))
            collected = {
                out.name: [by_index[i][out.name] if i in by_index else None for i in indexes]
                for out in task.interface.outputs
            }
        else:
            collected = {
                out.name: [outputs[out.name] for outputs in element_outputs]
                for out in task.interface.outputs
            }
        return json.dumps(collected).encode()

    @staticmethod
    def _map_elements(session: Session, execution_id: str, node_id: str) -> int:
        """How many elements a map node has, from its attempts (each element has one once it
        started)."""
        highest = session.scalar(
            select(func.max(TaskAttempt.map_index)).where(
                TaskAttempt.execution_id == execution_id, TaskAttempt.node_id == node_id
            )
        )
        return 0 if highest is None else highest + 1

    @staticmethod
    def _succeeded_units(
        session: Session, execution_id: str, node_id: str, indexes: range | None = None
    ) -> list[TaskAttempt]:
        """The latest succeeded attempt of each unit of a node (or of its map `indexes`), in
        map-index order."""
        query = select(TaskAttempt).where(
            TaskAttempt.execution_id == execution_id,
            TaskAttempt.node_id == node_id,
            TaskAttempt.status == AttemptState.SUCCEEDED.value,
        )
        if indexes is not None:
            query = query.where(TaskAttempt.map_index.between(indexes.start, indexes.stop - 1))
        attempts = session.scalars(
            query.order_by(TaskAttempt.map_index, TaskAttempt.attempt_number)
        ).all()
        latest: dict[int, TaskAttempt] = {}
        for attempt in attempts:
            latest[attempt.map_index] = attempt
        return [latest[i] for i in sorted(latest)]

    @activity.defn(name="finish_execution")
    def finish_execution(self, args: FinishExecutionInput) -> None:
        """Record outputs, the failure or the cancellation; cancel attempts still active."""
        with (
            self._failing_on_invalid_spec(args.execution_id),
            log_context(execution_id=args.execution_id),
            transaction(self._sessions) as session,
        ):
            execution = self._execution(session, args.execution_id)
            if args.status == ExecutionState.SUCCEEDED:
                # Only outputs need the spec: a failure or a cancellation is recorded even
                # when the stored spec no longer validates.
                spec = self._spec(session, execution)
                resolve = self._resolver(session, execution, spec)
                outputs = {name: resolve(binding) for name, binding in spec.outputs.items()}
                kept = store_values(
                    outputs, self._blobs, outputs_key(self._prefix(session, execution))
                )
                move_execution(session, execution, ExecutionState.SUCCEEDED, outputs=kept)
            elif args.status == ExecutionState.CANCELLED:
                move_execution(session, execution, ExecutionState.CANCELLED)
            else:
                move_execution(
                    session, execution, ExecutionState.FAILED, error=self._error(session, args)
                )
            attempts_repo.cancel_unfinished(session, execution.id)
            # A child execution created but whose workflow never started (the parent was
            # cancelled in between) would wait forever: nothing else starts a child.
            for child in session.scalars(
                select(Execution)
                .options(lazyload(Execution.attempts), lazyload(Execution.workflow))
                .where(
                    Execution.parent_execution_id == execution.id,
                    Execution.status == ExecutionState.QUEUED.value,
                )
            ):
                move_execution(session, child, ExecutionState.CANCELLED)
            log.info("execution %s finished: %s", execution.id, execution.status)
        # Its attempts' capacity and its place in the tenant's running executions are free.
        self._on_capacity_freed()

    @staticmethod
    def _error(session: Session, args: FinishExecutionInput) -> dict[str, Any]:
        failed = (
            session.get(TaskAttempt, args.failed_attempt_id) if args.failed_attempt_id else None
        )
        if failed is None:
            return {"node_id": None, "attempt_id": None, "message": args.message, "traceback": None}
        node = failed.node_id
        if failed.map_index != NO_MAP_INDEX:
            node = f"{node}[{failed.map_index}]"
        message = failed.error_message or args.message or "task failed"
        if args.message and failed.error_message:  # a map node with too many failed elements
            message = f"{args.message}; element {failed.map_index} failed: {message}"
        return {
            "node_id": node,
            "attempt_id": failed.id,
            "message": message,
            "traceback": failed.error_traceback,
        }


def _plain_nodes(spec: WorkflowSpec) -> set[str]:
    """The nodes with nothing for the workflow to do between their success and their
    successors' start. Never a guarded node (`decide_node` decides whether it runs); a node
    consuming one is no plain successor either (it may be skipped: the workflow resolves a
    select binding)."""
    return {
        node.id
        for node in spec.nodes
        if node.map is None
        and not spec.tasks[node.task].cache
        and not spec.tasks[node.task].dynamic  # its outputs come after its sub-DAG
        and spec.tasks[node.task].reference is None  # after its child execution
        and node.when is None
    }
