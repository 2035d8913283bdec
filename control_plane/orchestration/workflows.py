"""The Temporal workflow that drives one execution through its DAG.

Deterministic by construction: it only schedules activities (which own all I/O) and waits for
`attempt_finished` signals sent by the agent gRPC service when an agent reports a terminal
state. Outputs travel by URI in the database and blob store, never through workflow history.
Changes here must keep replaying the recorded histories in tests/ (determinism).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

WORKFLOW_NAME = "fleetflow.execution"


@dataclass
class ExecutionInput:
    execution_id: str


@dataclass
class PlanNode:
    node_id: str
    upstream: list[str]
    retries: int


@dataclass
class ExecutionPlan:
    nodes: list[PlanNode] = field(default_factory=list)


@dataclass
class StartAttemptInput:
    execution_id: str
    node_id: str
    attempt_number: int


@dataclass
class AttemptFinished:
    attempt_id: str
    status: str  # a terminal AttemptState
    message: str = ""


@dataclass
class FinishExecutionInput:
    execution_id: str
    status: str  # SUCCEEDED | FAILED
    failed_attempt_id: str = ""


ACTIVITY_TIMEOUT = timedelta(seconds=60)
ACTIVITY_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30)
)


@workflow.defn(name=WORKFLOW_NAME)
class ExecutionWorkflow:
    def __init__(self) -> None:
        self._finished: dict[str, AttemptFinished] = {}

    @workflow.signal
    def attempt_finished(self, event: AttemptFinished) -> None:
        self._finished[event.attempt_id] = event

    @workflow.run
    async def run(self, args: ExecutionInput) -> str:
        plan: ExecutionPlan = await workflow.execute_activity(
            "begin_execution",
            args.execution_id,
            result_type=ExecutionPlan,
            start_to_close_timeout=ACTIVITY_TIMEOUT,
            retry_policy=ACTIVITY_RETRY,
        )
        nodes = {n.node_id: n for n in plan.nodes}
        done: set[str] = set()
        attempt_numbers: dict[str, int] = {}
        running: dict[str, str] = {}  # node id -> attempt id

        while len(done) < len(nodes):
            for node in plan.nodes:
                ready = all(u in done for u in node.upstream)
                if ready and node.node_id not in done and node.node_id not in running:
                    number = attempt_numbers.get(node.node_id, 0) + 1
                    attempt_numbers[node.node_id] = number
                    running[node.node_id] = await workflow.execute_activity(
                        "start_attempt",
                        StartAttemptInput(args.execution_id, node.node_id, number),
                        result_type=str,
                        start_to_close_timeout=ACTIVITY_TIMEOUT,
                        retry_policy=ACTIVITY_RETRY,
                    )
            await workflow.wait_condition(
                lambda: any(a in self._finished for a in running.values())
            )
            for node_id, attempt_id in list(running.items()):
                event = self._finished.get(attempt_id)
                if event is None:
                    continue
                del running[node_id]
                if event.status == "SUCCEEDED":
                    done.add(node_id)
                elif attempt_numbers[node_id] <= nodes[node_id].retries:
                    workflow.logger.info("retrying node %s after %s", node_id, event.status)
                else:
                    return await self._finish(
                        FinishExecutionInput(args.execution_id, "FAILED", attempt_id)
                    )
        return await self._finish(FinishExecutionInput(args.execution_id, "SUCCEEDED"))

    async def _finish(self, finish: FinishExecutionInput) -> str:
        await workflow.execute_activity(
            "finish_execution",
            finish,
            start_to_close_timeout=ACTIVITY_TIMEOUT,
            retry_policy=ACTIVITY_RETRY,
        )
        return finish.status
