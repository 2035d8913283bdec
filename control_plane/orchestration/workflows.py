"""The Temporal workflow that drives one execution through its DAG.

Deterministic by construction: it only schedules activities (which own all I/O) and waits for
`attempt_finished` signals sent by the agent gRPC service when an agent reports a terminal
state. Outputs travel by URI in the database and blob store, never through workflow history.

A node runs as one *unit*, or, for a map node, one unit per element (`map_index`); each
unit is tried up to `1 + retries` times; an attempt LOST with its cluster is re-dispatched
as a system retry that does not count against `retries`. A unit whose task is cached
completes without an attempt being dispatched. Cancelling the workflow cancels the execution
and its active attempts.

Changes here must keep replaying the recorded histories in tests/ (determinism). An execution
begun before `LOCAL_BATCHED` replays, and goes on with, the command sequence it began with: an
ordinary activity per step, one `start_attempt` per unit and `complete_node` for every node.
Since then, the activities are local activities (short database and blob-store work, run by the
worker that runs the workflow task, with no round trip through the Temporal server; ordinary
ones where the workers keep no workflow cache: `ExecutionInput.local_activities`), the ready
units are started together by `start_attempts`, and `complete_node` runs only for the nodes
where it does something (a cached task, a map node).

Since `QUIET_FINISHES`, the execution's workflow asks (`begin_quiet_execution`, or
`hold_finishes` after continuing as new) to hear of plain
successes only when it needs to: the finish notifier holds those whose successors were started
ahead while the execution has other attempts active, and the last one's signal is followed by
`attempts_finished_quietly`; the workflow then reads which of its running attempts finished
(`find_finished`). Histories begun before it replay, and go on, hearing of every finish.

Temporal caps a workflow's history (51,200 events), so an execution's history must stay bounded
by design, whatever its size:
- a map node of more than `ExecutionPlan.map_chunk` elements runs as child workflows
  (`MapChunkWorkflow`, id `<execution>/<node>/chunk-<k>`) of at most that many units each; a
  chunk creates its attempts, receives their signals (`TaskAttempt.workflow_id`) and collects
  their outputs (`complete_chunk`), and the parent holds only one child per chunk;
- a workflow whose history passed `ExecutionPlan.continue_after_events` continues as new with
  what it has done (`Resume`) once no chunk is running. Attempt creation is idempotent, so the
  new run asks again for the attempts in flight and is told of those already finished.
Plans recorded before either existed carry 0 for both, and their executions go on as they began.

A map node with a `min_success_ratio` below 1 (`PlanNode.min_success_ratio`, 1.0 in plans
recorded before) does not fail when an element fails for good: the element counts against the
ratio (its outputs are null), and the node fails once more elements failed than the ratio
allows, counted over the whole node (a chunk reports its failed elements in its `ChunkResult`,
and stops early once they alone are too many). Nodes without it run exactly as before.

A dynamic node (`PlanNode.dynamic`, a `@dynamic` task) runs as one unit whose attempt writes
the sub-DAG its body built; once it succeeded, a child workflow (`DynamicWorkflow`, id
`<execution>/<node>/dynamic`) has the sub-DAG checked and stored (`expand_dynamic`) and walks
it as this workflow walks the execution's DAG, its nodes named `<node>/<sub-node>`; then
`complete_node` gathers the sub-DAG's outputs as the node's. Only specs with a dynamic task
have dynamic nodes, so only they issue these commands. A sub-DAG is bounded
(`fleetflow.ir.MAX_DYNAMIC_NODES`), so its workflow never continues as new; its parent does
not while it runs.

A reference node (`PlanNode.reference`, a `@reference_workflow` stub) runs no attempt: once it
is ready, `start_child_execution` creates (or finds) the child execution of the referenced
workflow version, in the same tenant, and that execution's own workflow (`ExecutionWorkflow`,
id: the child execution's id) runs as a child workflow; when it closes, `complete_reference`
takes the child's outputs as the node's, or says why the node fails. Closing the parent asks
the child to cancel (`ParentClosePolicy.REQUEST_CANCEL`), so the child records its
cancellation. Only specs with a reference have reference nodes, so only they issue these
commands; the parent does not continue as new while a child runs.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    ChildWorkflowError,
    is_cancelled_exception,
)
from temporalio.workflow import ActivityCancellationType, ParentClosePolicy

from fleetflow.states import NO_MAP_INDEX, map_failures_allowed, too_many_failures

WORKFLOW_NAME = "fleetflow.execution"
MAP_CHUNK_WORKFLOW_NAME = "fleetflow.map_chunk"
DYNAMIC_WORKFLOW_NAME = "fleetflow.dynamic"


@dataclass
class PlanNode:
    node_id: str
    upstream: list[str]
    retries: int
    is_map: bool = False
    concurrency: int | None = None
    # Whether `complete_node` has work once the node's units succeeded: remembering a cached
    # task's outputs, collecting a map node's. True when absent (plans recorded before).
    completes: bool = True
    # In a branch of a conditional (or a branch's `.fail`): `decide_node` says, once its
    # upstream nodes are done, whether it runs, is skipped or fails the execution. Only
    # specs with conditionals have such nodes, so only they issue `decide_node`.
    guarded: bool = False
    # A map node succeeds when at least this fraction of its elements do; an element that
    # failed for good then counts against it instead of failing the node. 1.0 when absent
    # (plans recorded before): any failure fails the node.
    min_success_ratio: float = 1.0
    # A dynamic task's node: once its unit succeeded, its sub-DAG runs as a child workflow.
    # False when absent (plans recorded before dynamic tasks).
    dynamic: bool = False
    # A reference to a registered workflow: runs as a child execution, with no attempt of
    # its own. False when absent (plans recorded before references).
    reference: bool = False


@dataclass
class ExecutionPlan:
    nodes: list[PlanNode] = field(default_factory=list)
    # A map node of more elements than this runs as chunk child workflows of at most this
    # many units each. 0 (plans recorded before): never.
    map_chunk: int = 0
    # Continue as new past this many history events (or when Temporal suggests it), once no
    # chunk runs. 0 (plans recorded before): never.
    continue_after_events: int = 0


@dataclass
class UnitTries:
    """A unit's tries so far, carried across continue-as-new."""

    node_id: str
    map_index: int
    tries: int  # attempts started; the one in flight, if any, is number `tries`
    failures: int = 0  # user retries used
    losses: int = 0  # system retries used
    running: bool = False  # its attempt number `tries` was in flight
    succeeded: bool = False
    # The last attempt of an element that failed for good in a node with a
    # `min_success_ratio` (its failure counted against the ratio); "" for any other unit.
    failed_attempt_id: str = ""


@dataclass
class Resume:
    """What a run that continued as new had done: the plan, the nodes completed, and the
    tries of the units of the nodes still open."""

    plan: ExecutionPlan
    done: list[str]
    units: list[UnitTries]


@dataclass
class ExecutionInput:
    execution_id: str
    resume: Resume | None = None
    # Short activities run as local activities. False where the workers keep no workflow
    # cache (FLEETFLOW_TEMPORAL_MAX_CACHED_WORKFLOWS=0): there, a workflow task holding a
    # local activity leaves every other workflow's task waiting for the workflow task timeout
    # (10 s each). Carried to child workflows; recorded in history, so a replay agrees.
    local_activities: bool = True


@dataclass
class NodeRef:
    execution_id: str
    node_id: str
    # How many chunk workflows ran the map node (each collected its part); 0: none.
    chunks: int = 0


@dataclass
class Decision:
    """What `decide_node` found for a guarded node: run it, skip it (recorded SKIPPED), or,
    with a `message`, fail the execution with it (a `.fail` branch taken, or a condition that
    cannot be evaluated)."""

    run: bool = False
    message: str = ""


@dataclass
class DynamicInput:
    execution_id: str
    node_id: str  # the dynamic node whose sub-DAG the workflow runs
    local_activities: bool = True  # as ExecutionInput's


@dataclass
class DynamicPlan:
    """What `expand_dynamic` found: the sub-DAG's plan, or why it is refused."""

    plan: ExecutionPlan | None = None
    message: str = ""


@dataclass
class ChildStart:
    """What `start_child_execution` did: the child execution's id, or why none runs."""

    execution_id: str = ""
    message: str = ""


@dataclass
class MapChunkInput:
    execution_id: str
    node: PlanNode  # its `concurrency` is this chunk's share of the node's
    chunk: int
    first: int  # the map indexes [first, first + count)
    count: int
    # With a `min_success_ratio`: how many of the node's elements may fail; the chunk stops
    # when more of its own did. Unused otherwise (any failure fails the chunk).
    failures_allowed: int = 0
    local_activities: bool = True  # as ExecutionInput's


@dataclass
class ChunkRef:
    execution_id: str
    node_id: str
    chunk: int
    first: int
    count: int


@dataclass
class ChunkResult:
    """Empty when every unit of the chunk succeeded; else why the node failed. With a
    `min_success_ratio`, `failed` elements of the chunk failed for good (their outputs are
    null), `failed_example` is one of their last attempts: the node sums them over chunks."""

    failed_attempt_id: str = ""
    message: str = ""
    failed: int = 0
    failed_example: str = ""


@dataclass
class StartAttemptInput:
    execution_id: str
    node_id: str
    attempt_number: int
    map_index: int = NO_MAP_INDEX


@dataclass
class UnitStart:
    node_id: str
    map_index: int
    attempt_number: int


@dataclass
class StartAttemptsInput:
    execution_id: str
    units: list[UnitStart]
    # The workflow to signal when they finish, when not the execution's: a map chunk.
    workflow_id: str = ""


@dataclass
class AttemptFinished:
    attempt_id: str
    status: str  # a terminal AttemptState
    message: str = ""


@dataclass
class AttemptStart:
    attempt_id: str
    cached: bool = False
    # Set when the attempt had already finished before this workflow asked for it: a workflow
    # started again after the orchestrator lost the first one (launch_reconciler.py) replays
    # the attempts the database holds instead of running them again.
    finished: AttemptFinished | None = None


@dataclass
class AttemptStarts:
    starts: list[AttemptStart]  # one per unit of the `StartAttemptsInput`, in its order


@dataclass
class FindFinished:
    execution_id: str
    attempt_ids: list[str]


@dataclass
class FoundFinished:
    finished: list[AttemptFinished]  # those of the `FindFinished` that had finished


@dataclass
class FinishExecutionInput:
    execution_id: str
    status: str  # SUCCEEDED | FAILED | CANCELLED
    failed_attempt_id: str = ""
    message: str = ""


# The activities are short database and blob-store operations. The timeout is also how long an
# activity lost with a killed worker waits before it runs again elsewhere: keep it short (they
# are idempotent, so a slow one timing out and running again is safe).
ACTIVITY_TIMEOUT = timedelta(seconds=15)
ACTIVITY_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30)
)

# The error type of `start_attempts` when the execution finished meanwhile (a cancel landed).
EXECUTION_FINISHED = "ExecutionFinished"

# Workflows begun before this patch keep the ordinary activities and the start per unit.
LOCAL_BATCHED = "local-activities-batched-starts"
# Workflows begun before this patch hear of every finish by its signal (`hold_finishes`).
QUIET_FINISHES = "quiet-finishes"
# At most this many units per `start_attempts`: bounds one activity's transaction and payload.
START_BATCH = 100

Unit = tuple[str, int]  # (node id, map index)
# How often a unit is re-dispatched after its cluster lost it, before the execution fails.
MAX_SYSTEM_RETRIES = 5
_UNLIMITED = 1 << 30


def _finished(err: BaseException) -> bool:
    """Whether `err` is `start_attempts` refusing an execution that has finished (as raised
    by the local activity, or wrapped in an activity's error)."""
    cause = err.cause if isinstance(err, ActivityError) else err
    return isinstance(cause, ApplicationError) and cause.type == EXECUTION_FINISHED


def chunk_workflow_id(execution_id: str, node_id: str, chunk: int) -> str:
    return f"{execution_id}/{node_id}/chunk-{chunk}"


def dynamic_workflow_id(execution_id: str, node_id: str) -> str:
    return f"{execution_id}/{node_id}/dynamic"


class _NodeFailed(Exception):
    def __init__(self, finish: FinishExecutionInput) -> None:
        self.finish = finish


class _Orchestrator:
    """What both workflows share: the attempts' signals and how activities are run."""

    def __init__(self) -> None:
        self._finished: dict[str, AttemptFinished] = {}
        # Told that attempts finished without a signal each (`attempts_finished_quietly`).
        self._look = False
        # Batched starts and `complete_node` only where needed (`LOCAL_BATCHED`), and
        # local activities (`ExecutionInput.local_activities`).
        self._batched = False
        self._local = False
        # Reference nodes' runs (each waits on a child execution's workflow), to cancel them
        # when the execution ends otherwise than by succeeding.
        self._references: list[asyncio.Task[int]] = []

    def _record(self, event: AttemptFinished) -> None:
        self._finished[event.attempt_id] = event

    async def _read_held(self, execution_id: str, running: list[str]) -> None:
        """Once told (`_look`): which of the `running` attempts finished without a signal."""
        self._look = False
        unknown = [attempt_id for attempt_id in running if attempt_id not in self._finished]
        if not unknown:
            return
        found = await self._activity(
            "find_finished", FindFinished(execution_id, unknown), FoundFinished
        )
        assert isinstance(found, FoundFinished)
        for event in found.finished:
            self._record(event)

    async def _activity(self, name: str, arg: object, result_type: type | None = None) -> object:
        if self._local:
            return await workflow.execute_local_activity(
                name,
                arg,
                result_type=result_type,
                start_to_close_timeout=ACTIVITY_TIMEOUT,
                retry_policy=ACTIVITY_RETRY,
            )
        return await workflow.execute_activity(
            name,
            arg,
            result_type=result_type,
            start_to_close_timeout=ACTIVITY_TIMEOUT,
            retry_policy=ACTIVITY_RETRY,
            # Our activities are short and never heartbeat, so a cancel request could not
            # reach them anyway: a cancelled workflow stops waiting without sending one. On the
            # Temporal test server, a request that crosses the activity's completion left the
            # workflow waiting forever (5 of 40 cancels timed to cross it). Histories begun before
            # `LOCAL_BATCHED` keep the requests they recorded.
            cancellation_type=(
                ActivityCancellationType.ABANDON
                if self._batched
                else ActivityCancellationType.TRY_CANCEL
            ),
        )


class _Units:
    """The units a workflow runs: launched within their node's concurrency, retried within
    their budgets, followed until every unit of a node succeeded or one failed for good."""

    def __init__(
        self,
        owner: _Orchestrator,
        execution_id: str,
        nodes: dict[str, PlanNode],
        workflow_id: str = "",
    ) -> None:
        self._owner = owner
        self._execution_id = execution_id
        self._nodes = nodes
        self._workflow_id = workflow_id  # "" for the execution's own workflow
        self.waiting: dict[str, list[Unit]] = {}  # started nodes -> units not yet launched
        self.unfinished: dict[str, int] = {}  # started nodes -> units not yet succeeded
        self.tries: dict[Unit, int] = {}  # attempts started: the next attempt's number
        self.failures: dict[Unit, int] = {}  # user retries used (FAILED, CANCELLED by the agent)
        self.losses: dict[Unit, int] = {}  # system retries used (LOST with a cluster)
        self.running: dict[Unit, str] = {}  # unit -> attempt id
        # Units running per node: counted as they start and end, since summing `running` for
        # each node on every event was quadratic in a wide fan (a fifth of the control plane's
        # CPU at 1,500 tasks).
        self.active: Counter[str] = Counter()
        self.succeeded: set[Unit] = set()  # of the nodes not yet complete
        self.relaunch: list[Unit] = []  # in flight when the run continued as new
        # Nodes with a `min_success_ratio`: how many elements may fail, and those that did
        # (unit -> its last attempt), kept after the node completes.
        self.failures_allowed: dict[str, int] = {}
        self.gave_up: dict[str, dict[Unit, str]] = {}

    def add(self, node_id: str, indexes: list[int], failures_allowed: int | None = None) -> None:
        """Units to run; `failures_allowed` (default: from the node's `min_success_ratio`
        and `indexes`) of them may fail for good in a node with a ratio."""
        self.waiting[node_id] = [(node_id, i) for i in indexes]
        self.unfinished[node_id] = len(indexes)
        ratio = self._nodes[node_id].min_success_ratio
        if ratio < 1.0:
            if failures_allowed is None:
                failures_allowed = map_failures_allowed(len(indexes), ratio)
            self.failures_allowed[node_id] = failures_allowed
            self.gave_up[node_id] = {}

    def resume(self, node_id: str, indexes: list[int], carried: list[UnitTries]) -> None:
        """`add`, with the tries a previous run made: its succeeded units stay done, its
        in-flight attempts are asked for again (not started anew)."""
        self.add(node_id, indexes)
        for tried in carried:
            unit = (tried.node_id, tried.map_index)
            self.tries[unit] = tried.tries
            self.failures[unit] = tried.failures
            self.losses[unit] = tried.losses
            if tried.succeeded or tried.running or tried.failed_attempt_id:
                self.waiting[node_id].remove(unit)
            if tried.succeeded:
                self.succeeded.add(unit)
                self.unfinished[node_id] -= 1
            elif tried.failed_attempt_id:
                self.gave_up[node_id][unit] = tried.failed_attempt_id
                self.unfinished[node_id] -= 1
            elif tried.running:
                self.relaunch.append(unit)

    def carried(self) -> list[UnitTries]:
        units = sorted(set(self.tries) | self.succeeded)
        return [
            UnitTries(
                unit[0],
                unit[1],
                self.tries.get(unit, 0),
                self.failures.get(unit, 0),
                self.losses.get(unit, 0),
                running=unit in self.running,
                succeeded=unit in self.succeeded,
                failed_attempt_id=self.gave_up.get(unit[0], {}).get(unit, ""),
            )
            for unit in units
            if unit[0] in self.unfinished
        ]

    def _launched(self, unit: Unit, start: AttemptStart) -> None:
        if start.cached:
            self.unfinished[unit[0]] -= 1
            self.succeeded.add(unit)
            return
        self.running[unit] = start.attempt_id
        self.active[unit[0]] += 1
        if start.finished is not None:  # handled by `collect` like its signal
            self._owner._record(start.finished)

    async def launch(self) -> None:
        """Start every unit that may start now."""
        if self._owner._batched:
            await self._launch_together()
            return
        for node_id, queue in self.waiting.items():
            limit = self._nodes[node_id].concurrency or _UNLIMITED
            active = self.active[node_id]
            while queue and active < limit:
                unit = queue.pop(0)
                self.tries[unit] = self.tries.get(unit, 0) + 1
                start = await self._owner._activity(
                    "start_attempt",
                    StartAttemptInput(self._execution_id, unit[0], self.tries[unit], unit[1]),
                    AttemptStart,
                )
                assert isinstance(start, AttemptStart)
                self._launched(unit, start)
                if not start.cached:
                    active += 1

    async def _launch_together(self) -> None:
        """Start every unit that may start now, `START_BATCH` units per `start_attempts`.

        The units and their order are those the start per unit chose: each node's queue in
        order, up to the node's concurrency. A unit answered from the cache holds no slot, so
        the slots it leaves are filled by the next round. Units whose attempt was in flight
        when the run continued as new come first, under the attempt number they had."""
        again, self.relaunch = self.relaunch, []
        while True:
            batch: list[Unit] = []
            for node_id, queue in self.waiting.items():
                limit = self._nodes[node_id].concurrency or _UNLIMITED
                free = limit - self.active[node_id]
                if free > 0 and queue:
                    batch += queue[:free]
                    del queue[:free]
            if not batch and not again:
                return
            for unit in batch:
                self.tries[unit] = self.tries.get(unit, 0) + 1
            batch = again + batch
            again = []
            for first in range(0, len(batch), START_BATCH):
                chunk = batch[first : first + START_BATCH]
                units = [UnitStart(unit[0], unit[1], self.tries[unit]) for unit in chunk]
                result = await self._owner._activity(
                    "start_attempts",
                    StartAttemptsInput(self._execution_id, units, self._workflow_id),
                    AttemptStarts,
                )
                assert isinstance(result, AttemptStarts) and len(result.starts) == len(chunk)
                for unit, start in zip(chunk, result.starts, strict=True):
                    self._launched(unit, start)

    def complete(self) -> list[str]:
        """The nodes whose units all succeeded, forgotten here from now on."""
        nodes = [n for n, left in self.unfinished.items() if left == 0]
        for node_id in nodes:
            del self.unfinished[node_id]
            del self.waiting[node_id]
        self.succeeded = {unit for unit in self.succeeded if unit[0] in self.unfinished}
        return nodes

    def any_finished(self) -> bool:
        return any(a in self._owner._finished for a in self.running.values())

    def collect(self) -> None:
        """Take in the finished attempts: a success counts, a failure or a loss queues the
        unit again within its budget, else the node fails (`_NodeFailed`)."""
        for unit, attempt_id in list(self.running.items()):
            event = self._owner._finished.get(attempt_id)
            if event is None:
                continue
            del self.running[unit]
            self.active[unit[0]] -= 1
            if event.status == "SUCCEEDED":
                self.unfinished[unit[0]] -= 1
                self.succeeded.add(unit)
                continue
            if event.status == "PREEMPTED":
                # Its GPUs were taken back for a tenant's nominal quota (or higher-priority
                # work): neither the task's fault nor the cluster's; it waits to run again
                # without using any retries (system or the task's).
                retry = True
            elif event.status == "LOST":
                # Not the task's fault: retried elsewhere without using its retries.
                self.losses[unit] = self.losses.get(unit, 0) + 1
                retry = self.losses[unit] <= MAX_SYSTEM_RETRIES
            else:
                self.failures[unit] = self.failures.get(unit, 0) + 1
                retry = self.failures[unit] <= self._nodes[unit[0]].retries
            if not retry and unit[0] in self.gave_up:
                self._give_up(unit, attempt_id)
                continue
            if not retry:
                raise _NodeFailed(FinishExecutionInput(self._execution_id, "FAILED", attempt_id))
            workflow.logger.info("retrying %s after %s", unit, event.status)
            self.waiting[unit[0]].insert(0, unit)

    def _give_up(self, unit: Unit, attempt_id: str) -> None:
        """An element of a node with a `min_success_ratio` failed for good: it counts against
        the ratio, and fails the node (`_NodeFailed`) once more failed than it allows."""
        node_id = unit[0]
        failed = self.gave_up[node_id]
        failed[unit] = attempt_id
        self.unfinished[node_id] -= 1
        if len(failed) <= self.failures_allowed[node_id]:
            workflow.logger.info("%s failed for good: %d failed so far", unit, len(failed))
            return
        node = self._nodes[node_id]
        elements = self.unfinished[node_id] + len(failed)
        elements += sum(1 for done in self.succeeded if done[0] == node_id)
        raise _NodeFailed(
            FinishExecutionInput(
                self._execution_id,
                "FAILED",
                next(iter(failed.values())),
                too_many_failures(node_id, len(failed), elements, node.min_success_ratio),
            )
        )


@workflow.defn(name=MAP_CHUNK_WORKFLOW_NAME)
class MapChunkWorkflow(_Orchestrator):
    """Runs the elements [first, first + count) of one map node, as the execution's workflow
    runs a node, and collects their outputs into the chunk's part of the node's outputs."""

    @workflow.signal
    def attempt_finished(self, event: AttemptFinished) -> None:
        self._record(event)

    @workflow.run
    async def run(self, args: MapChunkInput) -> ChunkResult:
        self._batched = True  # chunks were introduced after `LOCAL_BATCHED`
        self._local = args.local_activities
        node = args.node
        units = _Units(self, args.execution_id, {node.node_id: node}, workflow.info().workflow_id)
        indexes = list(range(args.first, args.first + args.count))
        units.add(node.node_id, indexes, args.failures_allowed)
        try:
            while True:
                await units.launch()
                if units.complete():
                    break
                if units.running:
                    await workflow.wait_condition(units.any_finished)
                    units.collect()
        except _NodeFailed as failed:
            if node.node_id in units.gave_up:  # more failed than the node allows: say so
                return self._failed_elements(units.gave_up[node.node_id])
            return ChunkResult(failed.finish.failed_attempt_id, failed.finish.message)
        ref = ChunkRef(args.execution_id, node.node_id, args.chunk, args.first, args.count)
        await self._activity("complete_chunk", ref)
        if units.gave_up.get(node.node_id):
            return self._failed_elements(units.gave_up[node.node_id])
        return ChunkResult()

    @staticmethod
    def _failed_elements(failed: dict[Unit, str]) -> ChunkResult:
        return ChunkResult(failed=len(failed), failed_example=next(iter(failed.values())))


class _Walker(_Orchestrator):
    """Walks a DAG: what the execution's workflow and a dynamic node's share."""

    async def _walk(
        self,
        execution_id: str,
        plan: ExecutionPlan,
        resume: Resume | None = None,
        workflow_id: str = "",
    ) -> None:
        nodes = {n.node_id: n for n in plan.nodes}
        done: set[str] = set(resume.done) if resume else set()
        carried: dict[str, list[UnitTries]] = {}
        for tried in resume.units if resume else []:
            carried.setdefault(tried.node_id, []).append(tried)
        units = _Units(self, execution_id, nodes, workflow_id)
        # Map nodes run by chunk workflows, dynamic nodes' sub-DAGs run by child workflows.
        chunked: dict[str, asyncio.Task[int]] = {}
        expanded: set[str] = set()  # dynamic nodes whose sub-DAG was started

        while len(done) < len(nodes):
            # Expand newly ready nodes into units, or chunks.
            for node in plan.nodes:
                if node.node_id in done or node.node_id in units.unfinished:
                    continue
                if node.node_id in chunked:
                    continue
                if all(u in done for u in node.upstream):
                    if node.guarded and not await self._decide(execution_id, node):
                        done.add(node.node_id)  # skipped: done, with no outputs
                        continue
                    if node.reference:  # runs as a child execution, without units
                        chunked[node.node_id] = asyncio.create_task(
                            self._run_reference(execution_id, node)
                        )
                        self._references.append(chunked[node.node_id])
                        continue
                    count = await self._expand(execution_id, node)
                    if node.is_map and plan.map_chunk and count > plan.map_chunk:
                        chunked[node.node_id] = asyncio.create_task(
                            self._run_chunks(execution_id, node, count, plan.map_chunk)
                        )
                        continue
                    indexes = list(range(count)) if node.is_map else [NO_MAP_INDEX]
                    if node.node_id in carried:
                        units.resume(node.node_id, indexes, carried.pop(node.node_id))
                    else:
                        units.add(node.node_id, indexes)
            await units.launch()
            # Complete nodes whose units all succeeded.
            complete = units.complete()
            complete += [node_id for node_id, task in chunked.items() if task.done()]
            for node_id in complete:
                if nodes[node_id].dynamic and node_id not in expanded:
                    # Its attempt built the sub-DAG: run it, the node completes after.
                    expanded.add(node_id)
                    chunked[node_id] = asyncio.create_task(
                        self._run_dynamic(execution_id, nodes[node_id])
                    )
                    continue
                chunks = chunked.pop(node_id).result() if node_id in chunked else 0
                if nodes[node_id].completes or not self._batched:
                    await self._activity("complete_node", NodeRef(execution_id, node_id, chunks))
                done.add(node_id)
            if len(done) == len(nodes):
                continue
            if plan.continue_after_events and not chunked and self._history_is_long(plan):
                workflow.continue_as_new(
                    ExecutionInput(
                        execution_id,
                        Resume(plan, sorted(done), units.carried()),
                        local_activities=self._local,
                    )
                )
            if not units.running and not chunked:
                continue
            await workflow.wait_condition(
                lambda: (
                    units.any_finished()
                    or self._look
                    or any(task.done() for task in chunked.values())
                )
            )
            if self._look:
                await self._read_held(execution_id, list(units.running.values()))
            units.collect()

    async def _run_dynamic(self, execution_id: str, node: PlanNode) -> int:
        """Run a dynamic node's sub-DAG as a child workflow; 0 (no chunks) once it
        succeeded, else `_NodeFailed`."""
        try:
            result = await workflow.execute_child_workflow(
                DynamicWorkflow.run,
                DynamicInput(execution_id, node.node_id, local_activities=self._local),
                id=dynamic_workflow_id(execution_id, node.node_id),
            )
        except ChildWorkflowError as err:
            raise _NodeFailed(
                FinishExecutionInput(
                    execution_id, "FAILED", message=f"{node.node_id}: {err.cause or err}"
                )
            ) from None
        if result.failed_attempt_id or result.message:
            raise _NodeFailed(
                FinishExecutionInput(
                    execution_id, "FAILED", result.failed_attempt_id, result.message
                )
            )
        return 0

    async def _run_reference(self, execution_id: str, node: PlanNode) -> int:
        """Run a reference node's child execution as a child workflow and take its outputs
        as the node's; 0 (no chunks) once it succeeded, else `_NodeFailed`."""
        ref = NodeRef(execution_id, node.node_id)
        start = await self._activity("start_child_execution", ref, ChildStart)
        assert isinstance(start, ChildStart)
        message = start.message
        if start.execution_id:
            try:
                await workflow.execute_child_workflow(
                    ExecutionWorkflow.run,
                    ExecutionInput(start.execution_id, local_activities=self._local),
                    id=start.execution_id,
                    parent_close_policy=ParentClosePolicy.REQUEST_CANCEL,
                )
            except ChildWorkflowError as err:
                message = f"{node.node_id}: child execution {start.execution_id}: "
                message += str(err.cause or err)
            else:
                completed = await self._activity("complete_reference", ref, str)
                assert isinstance(completed, str)
                message = completed
        if message:
            raise _NodeFailed(FinishExecutionInput(execution_id, "FAILED", message=message))
        return 0

    async def _cancel_references(self) -> None:
        """Cancel the child executions still running, and wait until they closed (each
        records its cancellation). Nothing to do, and no command, without references."""
        running = [task for task in self._references if not task.done()]
        for task in running:
            task.cancel()
        if running:
            await asyncio.gather(*running, return_exceptions=True)

    @staticmethod
    def _history_is_long(plan: ExecutionPlan) -> bool:
        info = workflow.info()
        return (
            info.is_continue_as_new_suggested()
            or info.get_current_history_length() > plan.continue_after_events
        )

    async def _run_chunks(self, execution_id: str, node: PlanNode, count: int, size: int) -> int:
        """Run a map node as child workflows of at most `size` units each; returns how many.

        With a `concurrency`, only as many chunks run at once as that many units need, each
        with an equal share of it. The first chunk that fails fails the node; the others end
        with the execution (children are terminated when their parent closes). With a
        `min_success_ratio`, the chunks' failed elements add up: the node fails once more of
        its elements failed than the ratio allows."""
        ratio = node.min_success_ratio
        allowed = map_failures_allowed(count, ratio) if ratio < 1.0 else 0
        failed, example = 0, ""
        spans = [
            (k, first, min(size, count - first)) for k, first in enumerate(range(0, count, size))
        ]
        at_once = len(spans)
        share = node.concurrency
        if node.concurrency:
            at_once = min(len(spans), -(-node.concurrency // size))
            share = node.concurrency // at_once
        queue = list(spans)
        active: dict[int, asyncio.Task[ChunkResult]] = {}
        while queue or active:
            while queue and len(active) < at_once:
                chunk, first, units = queue.pop(0)
                active[chunk] = asyncio.create_task(
                    workflow.execute_child_workflow(
                        MapChunkWorkflow.run,
                        MapChunkInput(
                            execution_id,
                            replace(node, concurrency=share),
                            chunk,
                            first,
                            units,
                            failures_allowed=allowed,
                            local_activities=self._local,
                        ),
                        id=chunk_workflow_id(execution_id, node.node_id, chunk),
                    )
                )
            await workflow.wait_condition(lambda: any(t.done() for t in active.values()))
            for chunk in [k for k, task in active.items() if task.done()]:
                try:
                    result = active.pop(chunk).result()
                except ChildWorkflowError as err:
                    raise _NodeFailed(
                        FinishExecutionInput(
                            execution_id,
                            "FAILED",
                            message=f"{node.node_id}: chunk {chunk}: {err.cause or err}",
                        )
                    ) from None
                if result.failed_attempt_id or result.message:
                    raise _NodeFailed(
                        FinishExecutionInput(
                            execution_id, "FAILED", result.failed_attempt_id, result.message
                        )
                    )
                failed += result.failed
                example = example or result.failed_example
                if failed > allowed:
                    raise _NodeFailed(
                        FinishExecutionInput(
                            execution_id,
                            "FAILED",
                            example,
                            too_many_failures(node.node_id, failed, count, ratio),
                        )
                    )
        return len(spans)

    async def _decide(self, execution_id: str, node: PlanNode) -> bool:
        """Whether a guarded node runs; False: it was skipped. Raises `_NodeFailed` when the
        execution fails instead."""
        decision = await self._activity(
            "decide_node", NodeRef(execution_id, node.node_id), Decision
        )
        assert isinstance(decision, Decision)
        if decision.message:
            raise _NodeFailed(
                FinishExecutionInput(execution_id, "FAILED", message=decision.message)
            )
        return decision.run

    async def _expand(self, execution_id: str, node: PlanNode) -> int:
        """How many units a node has: 1, or a map node's element count."""
        if not node.is_map:
            return 1
        try:
            count = await self._activity("expand_map", NodeRef(execution_id, node.node_id), int)
        except (ActivityError, ApplicationError) as err:
            # An activity's error comes wrapped in an ActivityError; a local activity's as
            # it was raised.
            cause = err.cause if isinstance(err, ActivityError) else err
            message = cause.message if isinstance(cause, ApplicationError) else str(err)
            raise _NodeFailed(
                FinishExecutionInput(execution_id, "FAILED", message=f"{node.node_id}: {message}")
            ) from None
        assert isinstance(count, int)
        return count


@workflow.defn(name=WORKFLOW_NAME)
class ExecutionWorkflow(_Walker):
    @workflow.signal
    def attempt_finished(self, event: AttemptFinished) -> None:
        self._record(event)

    @workflow.signal
    def attempts_finished_quietly(self) -> None:
        """Attempts of the execution finished without a signal each (`hold_finishes`)."""
        self._look = True

    @workflow.run
    async def run(self, args: ExecutionInput) -> str:
        execution_id = args.execution_id
        # Decided once, before the first command: false only when replaying a history begun
        # without the patch, which then keeps its own command sequence to the end.
        self._batched = workflow.patched(LOCAL_BATCHED)
        self._local = self._batched and args.local_activities
        quiet = self._batched and workflow.patched(QUIET_FINISHES)
        try:
            if args.resume is None:
                begin = "begin_quiet_execution" if quiet else "begin_execution"
                plan = await self._activity(begin, execution_id, ExecutionPlan)
                assert isinstance(plan, ExecutionPlan)
                await self._walk(execution_id, plan)
            else:
                if quiet:
                    await self._activity("hold_finishes", execution_id)
                await self._walk(execution_id, args.resume.plan, args.resume)
        except asyncio.CancelledError:
            await self._cancel_references()
            return await self._finish(FinishExecutionInput(execution_id, "CANCELLED"))
        except _NodeFailed as failed:
            await self._cancel_references()
            return await self._finish(failed.finish)
        except Exception as err:
            # A local activity that the cancellation caught before it started ends with
            # temporalio's CancelledError, not asyncio's: the execution is cancelled all the
            # same (uncaught, it would end the workflow without `finish_execution`). So does
            # a start refused because the execution finished meanwhile; `finish_execution`
            # then only cancels what is still active.
            if not (self._batched and (is_cancelled_exception(err) or _finished(err))):
                raise
            await self._cancel_references()
            return await self._finish(FinishExecutionInput(execution_id, "CANCELLED"))
        return await self._finish(FinishExecutionInput(execution_id, "SUCCEEDED"))

    async def _finish(self, finish: FinishExecutionInput) -> str:
        await self._activity("finish_execution", finish)
        return finish.status


@workflow.defn(name=DYNAMIC_WORKFLOW_NAME)
class DynamicWorkflow(_Walker):
    """Runs the sub-DAG of one dynamic node of an execution, its attempts signalling it
    (`TaskAttempt.workflow_id`): asks `expand_dynamic` for the checked sub-DAG, walks it as
    the execution's workflow walks the DAG, and says how it ended (empty: succeeded)."""

    @workflow.signal
    def attempt_finished(self, event: AttemptFinished) -> None:
        self._record(event)

    @workflow.run
    async def run(self, args: DynamicInput) -> ChunkResult:
        self._batched = True  # dynamic nodes came after `LOCAL_BATCHED`
        self._local = args.local_activities
        found = await self._activity(
            "expand_dynamic", NodeRef(args.execution_id, args.node_id), DynamicPlan
        )
        assert isinstance(found, DynamicPlan)
        if found.plan is None:
            return ChunkResult(message=found.message or f"{args.node_id}: no sub-DAG")
        try:
            await self._walk(args.execution_id, found.plan, workflow_id=workflow.info().workflow_id)
        except _NodeFailed as failed:
            return ChunkResult(failed.finish.failed_attempt_id, failed.finish.message)
        return ChunkResult()
