"""The Temporal workflow that drives one execution through its DAG.

Deterministic by construction: it only schedules activities (which own all I/O) and waits for
`attempt_finished` signals sent by the agent gRPC service when an agent reports a terminal
state. Outputs travel by URI in the database and blob store, never through workflow history.

A node runs as one *unit*, or, for a map node, one unit per element (`map_index`); each
unit is tried up to `1 + retries` times; an attempt LOST with its cluster is re-dispatched
as a system retry that does not count against `retries`. A unit whose task is cached
completes without an attempt being dispatched. Cancelling the workflow cancels the execution
and its active attempts.
Changes here must keep replaying the recorded histories in tests/ (determinism).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

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

    @workflow.signal
    def attempt_finished(self, event: AttemptFinished) -> None:
        self._finished[event.attempt_id] = event

    async def _activity(self, name: str, arg: object, result_type: type | None = None) -> object:
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
        try:
            plan = await self._activity("begin_execution", execution_id, ExecutionPlan)
            assert isinstance(plan, ExecutionPlan)
            await self._walk(execution_id, plan)
        except asyncio.CancelledError:
            return await self._finish(FinishExecutionInput(execution_id, "CANCELLED"))
        except _NodeFailed as failed:
            return await self._finish(failed.finish)
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
                    if start.cached:
                        unfinished[node_id] -= 1
                    else:
                        running[unit] = start.attempt_id
                        active += 1
                        if start.finished is not None:  # handled below like its signal
                            self._finished[start.attempt_id] = start.finished
            # Complete nodes whose units all succeeded.
            for node_id in [n for n, left in unfinished.items() if left == 0]:
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

    async def _expand(self, execution_id: str, node: PlanNode) -> int:
        """How many units a node has: 1, or a map node's element count."""
        if not node.is_map:
            return 1
        try:
            count = await self._activity("expand_map", NodeRef(execution_id, node.node_id), int)
        except ActivityError as err:
            cause = err.cause
            message = cause.message if isinstance(cause, ApplicationError) else str(err)
            raise _NodeFailed(
                FinishExecutionInput(execution_id, "FAILED", message=f"{node.node_id}: {message}")
            ) from None
        assert isinstance(count, int)
        return count

    async def _finish(self, finish: FinishExecutionInput) -> str:
        await self._activity("finish_execution", finish)
        return finish.status
