"""ExecutionWorkflow against the real Temporal test server, with activities faked in tests/.

The fakes stand in for the database and the agents: `start_attempt` decides each attempt's
outcome from a script and signals it back the way the agent gRPC service does. Finished runs'
histories are replayed, and the histories committed under histories/ must keep replaying, so a
change that breaks determinism fails here.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from temporalio import activity
from temporalio.client import Client, WorkflowHistory
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer, Worker

from control_plane.orchestration.workflows import (
    AttemptFinished,
    ExecutionInput,
    ExecutionPlan,
    ExecutionWorkflow,
    FinishExecutionInput,
    PlanNode,
    StartAttemptInput,
)
from tests.integration.stack import TemporalServer

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

HISTORIES = Path(__file__).parent / "histories"


class FakeActivities:
    """Plans a DAG and finishes attempts per `outcomes[(node, attempt_number)]`."""

    def __init__(self, client: Client, plan: ExecutionPlan, outcomes: dict[tuple[str, int], str]):
        self.client = client
        self.plan = plan
        self.outcomes = outcomes
        self.started: list[tuple[str, int]] = []
        self.finished: list[FinishExecutionInput] = []

    @activity.defn(name="begin_execution")
    async def begin_execution(self, execution_id: str) -> ExecutionPlan:
        return self.plan

    @activity.defn(name="start_attempt")
    async def start_attempt(self, args: StartAttemptInput) -> str:
        self.started.append((args.node_id, args.attempt_number))
        attempt_id = f"{args.node_id}#{args.attempt_number}"
        status = self.outcomes.get((args.node_id, args.attempt_number), "SUCCEEDED")
        handle = self.client.get_workflow_handle(args.execution_id)
        # Like an agent report: arrives after the activity has returned.
        asyncio.get_running_loop().call_later(
            0.05,
            lambda: asyncio.ensure_future(
                handle.signal(
                    ExecutionWorkflow.attempt_finished, AttemptFinished(attempt_id, status)
                )
            ),
        )
        return attempt_id

    @activity.defn(name="finish_execution")
    async def finish_execution(self, args: FinishExecutionInput) -> None:
        self.finished.append(args)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def env(temporal_server: TemporalServer) -> AsyncIterator[WorkflowEnvironment]:
    # A plain client: the test server only skips time for clients that ask it to, and an
    # execution waiting for agents must not have its clock jumped.
    yield WorkflowEnvironment(await Client.connect(temporal_server.address))


DIAMOND = ExecutionPlan(
    nodes=[
        PlanNode("a", [], 0),
        PlanNode("b", ["a"], 1),
        PlanNode("c", ["a"], 0),
        PlanNode("d", ["b", "c"], 0),
    ]
)


EXECUTION = "ex-workflow-test"


async def _terminate_previous(client: Client) -> None:
    """Each test reuses the execution id, so the recorded histories are identical run to run."""
    try:
        await client.get_workflow_handle(EXECUTION).terminate()
    except RPCError:
        pass


async def run_plan(
    env: WorkflowEnvironment, plan: ExecutionPlan, outcomes: dict[tuple[str, int], str]
) -> tuple[str, FakeActivities, WorkflowHistory]:
    fakes = FakeActivities(env.client, plan, outcomes)
    await _terminate_previous(env.client)
    queue = f"q-{uuid.uuid4()}"
    async with Worker(
        env.client,
        task_queue=queue,
        workflows=[ExecutionWorkflow],
        activities=[fakes.begin_execution, fakes.start_attempt, fakes.finish_execution],
    ):
        # As in production, the workflow id is the execution id.
        handle = await env.client.start_workflow(
            ExecutionWorkflow.run, ExecutionInput(EXECUTION), id=EXECUTION, task_queue=queue
        )
        result = await asyncio.wait_for(handle.result(), timeout=60)
        history = await handle.fetch_history()
    return result, fakes, history


async def test_nodes_run_after_their_upstream(env: WorkflowEnvironment) -> None:
    result, fakes, history = await run_plan(env, DIAMOND, {})
    assert result == "SUCCEEDED"
    order = [node for node, _ in fakes.started]
    assert order[0] == "a" and order[-1] == "d" and set(order[1:3]) == {"b", "c"}
    assert fakes.finished == [FinishExecutionInput(EXECUTION, "SUCCEEDED")]
    await Replayer(workflows=[ExecutionWorkflow]).replay_workflow(history)
    if os.environ.get("FLEETFLOW_RECORD_HISTORIES"):
        HISTORIES.mkdir(exist_ok=True)
        (HISTORIES / "diamond_succeeds.json").write_text(history.to_json())


async def test_failed_attempt_is_retried_within_the_task_retries(env: WorkflowEnvironment) -> None:
    result, fakes, history = await run_plan(env, DIAMOND, {("b", 1): "FAILED"})
    assert result == "SUCCEEDED"
    assert fakes.started.count(("b", 1)) == 1 and ("b", 2) in fakes.started
    if os.environ.get("FLEETFLOW_RECORD_HISTORIES"):
        (HISTORIES / "diamond_retry.json").write_text(history.to_json())


async def test_failure_beyond_retries_fails_the_execution(env: WorkflowEnvironment) -> None:
    result, fakes, history = await run_plan(env, DIAMOND, {("c", 1): "FAILED"})
    assert result == "FAILED"
    assert ("d", 1) not in fakes.started
    assert fakes.finished == [FinishExecutionInput(EXECUTION, "FAILED", "c#1")]
    if os.environ.get("FLEETFLOW_RECORD_HISTORIES"):
        (HISTORIES / "diamond_fails.json").write_text(history.to_json())


@pytest.mark.parametrize("path", sorted(HISTORIES.glob("*.json")), ids=lambda p: p.stem)
async def test_recorded_histories_still_replay(path: Path) -> None:
    history = WorkflowHistory.from_json(f"wf-{path.stem}", path.read_text())
    await Replayer(workflows=[ExecutionWorkflow]).replay_workflow(history)


async def test_recorded_histories_exist() -> None:
    assert len(list(HISTORIES.glob("*.json"))) >= 3, "record with FLEETFLOW_RECORD_HISTORIES=1"
