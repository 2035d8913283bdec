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
worker that runs the workflow task, with no round trip through the Temporal server), the ready
units are started together by `start_attempts`, and `complete_node` runs only for the nodes
where it does something (a cached task, a map node).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, is_cancelled_exception

from fleetflow.states import NO_MAP_INDEX

WORKFLOW_NAME = "fleetflow.execution"


@dataclass
class ExecutionInput:
    execution_id: str


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


@dataclass
class ExecutionPlan:
    nodes: list[PlanNode] = field(default_factory=list)


@dataclass
class NodeRef:
    execution_id: str
    node_id: str


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

# Workflows begun before this patch keep the ordinary activities and the start per unit.
LOCAL_BATCHED = "local-activities-batched-starts"
# At most this many units per `start_attempts`: bounds one activity's transaction and payload.
START_BATCH = 100

Unit = tuple[str, int]  # (node id, map index)
# How often a unit is re-dispatched after its cluster lost it, before the execution fails.
MAX_SYSTEM_RETRIES = 5
_UNLIMITED = 1 << 30


class _NodeFailed(Exception):
    def __init__(self, finish: FinishExecutionInput) -> None:
        self.finish = finish


@workflow.defn(name=WORKFLOW_NAME)
class ExecutionWorkflow:
    def __init__(self) -> None:
        self._finished: dict[str, AttemptFinished] = {}
        self._local_batched = False

    @workflow.signal
    def attempt_finished(self, event: AttemptFinished) -> None:
        self._finished[event.attempt_id] = event

    async def _activity(self, name: str, arg: object, result_type: type | None = None) -> object:
        if self._local_batched:
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
        )

    @workflow.run
    async def run(self, args: ExecutionInput) -> str:
        execution_id = args.execution_id
        # Decided once, before the first command: false only when replaying a history begun
        # without the patch, which then keeps its own command sequence to the end.
        self._local_batched = workflow.patched(LOCAL_BATCHED)
        try:
            plan = await self._activity("begin_execution", execution_id, ExecutionPlan)
            assert isinstance(plan, ExecutionPlan)
            await self._walk(execution_id, plan)
        except asyncio.CancelledError:
            return await self._finish(FinishExecutionInput(execution_id, "CANCELLED"))
        except _NodeFailed as failed:
            return await self._finish(failed.finish)
        except Exception as err:
            # A local activity that the cancellation caught before it started ends with
            # temporalio's CancelledError, not asyncio's: the execution is cancelled all the
            # same (uncaught, it would end the workflow without `finish_execution`).
            if not (self._local_batched and is_cancelled_exception(err)):
                raise
            return await self._finish(FinishExecutionInput(execution_id, "CANCELLED"))
        return await self._finish(FinishExecutionInput(execution_id, "SUCCEEDED"))

    async def _walk(self, execution_id: str, plan: ExecutionPlan) -> None:
        nodes = {n.node_id: n for n in plan.nodes}
        done: set[str] = set()
        waiting: dict[str, list[Unit]] = {}  # started nodes -> units not yet launched
        unfinished: dict[str, int] = {}  # started nodes -> units not yet succeeded
        tries: dict[Unit, int] = {}  # attempts started: the next attempt's number
        failures: dict[Unit, int] = {}  # user retries used (FAILED, CANCELLED by the agent)
        losses: dict[Unit, int] = {}  # system retries used (LOST with a cluster)
        running: dict[Unit, str] = {}  # unit -> attempt id

        def launched(unit: Unit, start: AttemptStart) -> None:
            if start.cached:
                unfinished[unit[0]] -= 1
                return
            running[unit] = start.attempt_id
            if start.finished is not None:  # handled below like its signal
                self._finished[start.attempt_id] = start.finished

        while len(done) < len(nodes):
            # Expand newly ready nodes into units.
            for node in plan.nodes:
                if node.node_id in done or node.node_id in unfinished:
                    continue
                if all(u in done for u in node.upstream):
                    count = await self._expand(execution_id, node)
                    indexes = list(range(count)) if node.is_map else [NO_MAP_INDEX]
                    waiting[node.node_id] = [(node.node_id, i) for i in indexes]
                    unfinished[node.node_id] = len(indexes)
            # Launch units within each node's concurrency.
            if self._local_batched:
                await self._launch_together(execution_id, nodes, waiting, running, tries, launched)
            else:
                for node_id, queue in waiting.items():
                    limit = nodes[node_id].concurrency or _UNLIMITED
                    active = sum(1 for unit in running if unit[0] == node_id)
                    while queue and active < limit:
                        unit = queue.pop(0)
                        tries[unit] = tries.get(unit, 0) + 1
                        start = await self._activity(
                            "start_attempt",
                            StartAttemptInput(execution_id, unit[0], tries[unit], unit[1]),
                            AttemptStart,
                        )
                        assert isinstance(start, AttemptStart)
                        launched(unit, start)
                        if not start.cached:
                            active += 1
            # Complete nodes whose units all succeeded.
            for node_id in [n for n, left in unfinished.items() if left == 0]:
                if nodes[node_id].completes or not self._local_batched:
                    await self._activity("complete_node", NodeRef(execution_id, node_id))
                del unfinished[node_id]
                del waiting[node_id]
                done.add(node_id)
            if len(done) == len(nodes) or not running:
                continue
            await workflow.wait_condition(
                lambda: any(a in self._finished for a in running.values())
            )
            for unit, attempt_id in list(running.items()):
                event = self._finished.get(attempt_id)
                if event is None:
                    continue
                del running[unit]
                if event.status == "SUCCEEDED":
                    unfinished[unit[0]] -= 1
                    continue
                if event.status == "LOST":
                    # Not the task's fault: retried elsewhere without using its retries.
                    losses[unit] = losses.get(unit, 0) + 1
                    retry = losses[unit] <= MAX_SYSTEM_RETRIES
                else:
                    failures[unit] = failures.get(unit, 0) + 1
                    retry = failures[unit] <= nodes[unit[0]].retries
                if not retry:
                    raise _NodeFailed(FinishExecutionInput(execution_id, "FAILED", attempt_id))
                workflow.logger.info("retrying %s after %s", unit, event.status)
                waiting[unit[0]].insert(0, unit)

    async def _launch_together(
        self,
        execution_id: str,
        nodes: dict[str, PlanNode],
        waiting: dict[str, list[Unit]],
        running: dict[Unit, str],
        tries: dict[Unit, int],
        launched: Callable[[Unit, AttemptStart], None],
    ) -> None:
        """Start every unit that may start now, `START_BATCH` units per `start_attempts`.

        The units and their order are those the start per unit chose: each node's queue in
        order, up to the node's concurrency. A unit answered from the cache holds no slot, so
        the slots it leaves are filled by the next round."""
        while True:
            batch: list[Unit] = []
            for node_id, queue in waiting.items():
                limit = nodes[node_id].concurrency or _UNLIMITED
                free = limit - sum(1 for unit in running if unit[0] == node_id)
                if free > 0 and queue:
                    batch += queue[:free]
                    del queue[:free]
            if not batch:
                return
            for first in range(0, len(batch), START_BATCH):
                chunk = batch[first : first + START_BATCH]
                for unit in chunk:
                    tries[unit] = tries.get(unit, 0) + 1
                units = [UnitStart(unit[0], unit[1], tries[unit]) for unit in chunk]
                result = await self._activity(
                    "start_attempts", StartAttemptsInput(execution_id, units), AttemptStarts
                )
                assert isinstance(result, AttemptStarts) and len(result.starts) == len(chunk)
                for unit, start in zip(chunk, result.starts, strict=True):
                    launched(unit, start)

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

    async def _finish(self, finish: FinishExecutionInput) -> str:
        await self._activity("finish_execution", finish)
        return finish.status
