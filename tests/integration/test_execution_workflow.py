"""ExecutionWorkflow against the real Temporal test server, with activities faked in tests/.

The fakes stand in for the database and the agents: `start_attempt` decides each attempt's
outcome from a script and signals it back the way the agent gRPC service does. Finished runs'
histories are replayed, and the histories committed under histories/ must keep replaying, so a
change that breaks determinism fails here. Those without a suffix were recorded before the patch
`LOCAL_BATCHED` (ordinary activities, a start per unit): they replay that command sequence.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from temporalio import activity
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHandle, WorkflowHistory
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer, Worker

from control_plane.orchestration.workflows import (
    LOCAL_BATCHED,
    MAX_SYSTEM_RETRIES,
    START_BATCH,
    AttemptFinished,
    AttemptStart,
    AttemptStarts,
    ExecutionInput,
    ExecutionPlan,
    ExecutionWorkflow,
    FinishExecutionInput,
    NodeRef,
    PlanNode,
    StartAttemptInput,
    StartAttemptsInput,
)
from tests.integration.stack import TemporalServer
from tests.polling import wait_until_async

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

HISTORIES = Path(__file__).parent / "histories"
# Histories recorded now are written as `<name><RECORDED_SUFFIX>.json`, beside the older ones.
RECORDED_SUFFIX = "-local-batched"


class FakeActivities:
    """Scripted stand-ins for the activities and the agents.

    A unit is "node" or, for a map element, "node[i]". `outcomes[(unit, try)]` is the terminal
    state reported for that try (default SUCCEEDED); `map_sizes[node]` is a map node's element
    count (negative: the inputs do not line up); units in `cached` answer from the cache; units
    in `hold` are never reported, so the execution waits on them.
    """

    def __init__(
        self,
        client: Client,
        plan: ExecutionPlan,
        outcomes: dict[tuple[str, int], str] | None = None,
        *,
        map_sizes: dict[str, int] | None = None,
        cached: set[str] | None = None,
        hold: set[str] | None = None,
    ) -> None:
        self.client = client
        self.plan = plan
        self.outcomes = outcomes or {}
        self.map_sizes = map_sizes or {}
        self.cached = cached or set()
        self.hold = hold or set()
        self.started: list[tuple[str, int]] = []
        self.batches: list[int] = []  # units per `start_attempts`
        self.completed: list[str] = []
        self.finished: list[FinishExecutionInput] = []
        self.active: set[str] = set()
        self.max_active: dict[str, int] = {}
        self.execution_id = f"ex-{uuid.uuid4().hex[:12]}"

    @activity.defn(name="begin_execution")
    async def begin_execution(self, execution_id: str) -> ExecutionPlan:
        return self.plan

    @activity.defn(name="expand_map")
    async def expand_map(self, ref: NodeRef) -> int:
        size = self.map_sizes[ref.node_id]
        if size < 0:
            raise ApplicationError("mapped inputs must have the same length", non_retryable=True)
        return size

    @activity.defn(name="start_attempt")
    async def start_attempt(self, args: StartAttemptInput) -> AttemptStart:
        unit = args.node_id if args.map_index < 0 else f"{args.node_id}[{args.map_index}]"
        self.started.append((unit, args.attempt_number))
        attempt_id = f"{unit}#{args.attempt_number}"
        if unit in self.cached:
            return AttemptStart(attempt_id, cached=True)
        self.active.add(unit)
        same_node = sum(1 for u in self.active if u.split("[")[0] == args.node_id)
        self.max_active[args.node_id] = max(self.max_active.get(args.node_id, 0), same_node)
        if unit not in self.hold:
            status = self.outcomes.get((unit, args.attempt_number), "SUCCEEDED")
            handle = self.client.get_workflow_handle(args.execution_id)
            # Like an agent report: arrives after the activity has returned.
            asyncio.get_running_loop().call_later(
                0.05, self._report, handle, unit, attempt_id, status
            )
        return AttemptStart(attempt_id)

    def _report(self, handle: WorkflowHandle, unit: str, attempt_id: str, status: str) -> None:
        self.active.discard(unit)
        asyncio.ensure_future(
            handle.signal(ExecutionWorkflow.attempt_finished, AttemptFinished(attempt_id, status))
        )

    @activity.defn(name="start_attempts")
    async def start_attempts(self, args: StartAttemptsInput) -> AttemptStarts:
        self.batches.append(len(args.units))
        starts = [
            await self.start_attempt(
                StartAttemptInput(
                    args.execution_id, unit.node_id, unit.attempt_number, unit.map_index
                )
            )
            for unit in args.units
        ]
        return AttemptStarts(starts)

    @activity.defn(name="complete_node")
    async def complete_node(self, ref: NodeRef) -> None:
        self.completed.append(ref.node_id)

    @activity.defn(name="finish_execution")
    async def finish_execution(self, args: FinishExecutionInput) -> None:
        # Run again when a signal comes in while the workflow completes: the server refuses
        # that workflow task, and its local activities run again in the next one. The real
        # activity is idempotent; the fake records each distinct call once.
        if args not in self.finished:
            self.finished.append(args)

    def all(self) -> list:
        return [
            self.begin_execution,
            self.expand_map,
            self.start_attempts,
            self.start_attempt,
            self.complete_node,
            self.finish_execution,
        ]


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
# As `begin_execution` plans it: only the map node has work for `complete_node`.
FAN_OUT = ExecutionPlan(
    nodes=[
        PlanNode("prep", [], 0, completes=False),
        PlanNode("train", ["prep"], 1, is_map=True, concurrency=2),
        PlanNode("pick", ["train"], 0, completes=False),
    ]
)


async def run_plan(env: WorkflowEnvironment, fakes: FakeActivities, record: str = "") -> str:
    # A fresh id per run: a late signal scripted by an earlier test cannot reach this one.
    execution = fakes.execution_id
    queue = f"q-{execution}"
    async with Worker(
        env.client, task_queue=queue, workflows=[ExecutionWorkflow], activities=fakes.all()
    ):
        # As in production, the workflow id is the execution id.
        handle = await env.client.start_workflow(
            ExecutionWorkflow.run, ExecutionInput(execution), id=execution, task_queue=queue
        )
        result = await asyncio.wait_for(handle.result(), timeout=60)
        history = await handle.fetch_history()
    await Replayer(workflows=[ExecutionWorkflow]).replay_workflow(history)
    assert _took_the_patched_path(history)
    if record and os.environ.get("FLEETFLOW_RECORD_HISTORIES"):
        HISTORIES.mkdir(exist_ok=True)
        (HISTORIES / f"{record}{RECORDED_SUFFIX}.json").write_text(history.to_json())
    return result


def _took_the_patched_path(history: WorkflowHistory) -> bool:
    """Whether the run recorded `LOCAL_BATCHED` and ran its activities as local ones only."""
    patches = [
        json.loads(payload.data)["id"]
        for event in history.events
        if event.marker_recorded_event_attributes.marker_name == "core_patch"
        for payload in event.marker_recorded_event_attributes.details["patch-data"].payloads
    ]
    kinds = {event.event_type for event in history.events}
    return patches == [LOCAL_BATCHED] and EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED not in kinds


async def test_nodes_run_after_their_upstream(env: WorkflowEnvironment) -> None:
    fakes = FakeActivities(env.client, DIAMOND)
    assert await run_plan(env, fakes, "diamond_succeeds") == "SUCCEEDED"
    order = [unit for unit, _ in fakes.started]
    assert order[0] == "a" and order[-1] == "d" and set(order[1:3]) == {"b", "c"}
    assert fakes.completed.index("a") < fakes.started.index(("b", 1))
    assert fakes.finished == [FinishExecutionInput(fakes.execution_id, "SUCCEEDED")]


async def test_failed_attempt_is_retried_within_the_task_retries(env: WorkflowEnvironment) -> None:
    fakes = FakeActivities(env.client, DIAMOND, {("b", 1): "FAILED"})
    assert await run_plan(env, fakes, "diamond_retry") == "SUCCEEDED"
    assert fakes.started.count(("b", 1)) == 1 and ("b", 2) in fakes.started


async def test_failure_beyond_retries_fails_the_execution(env: WorkflowEnvironment) -> None:
    fakes = FakeActivities(env.client, DIAMOND, {("c", 1): "FAILED"})
    assert await run_plan(env, fakes, "diamond_fails") == "FAILED"
    assert ("d", 1) not in [(u, n) for u, n in fakes.started]
    assert fakes.finished == [FinishExecutionInput(fakes.execution_id, "FAILED", "c#1")]


async def test_map_node_fans_out_within_its_concurrency(env: WorkflowEnvironment) -> None:
    fakes = FakeActivities(env.client, FAN_OUT, {("train[3]", 1): "FAILED"}, map_sizes={"train": 5})
    assert await run_plan(env, fakes, "map_fan_out") == "SUCCEEDED"
    trains = sorted(u for u, _ in fakes.started if u.startswith("train"))
    assert trains == [f"train[{i}]" for i in (0, 1, 2, 3, 3, 4)]
    assert ("train[3]", 2) in fakes.started
    assert fakes.max_active["train"] <= 2
    # Only the map node had its outputs collected: the others had nothing to complete.
    assert fakes.completed == ["train"]


async def test_empty_map_completes_without_attempts(env: WorkflowEnvironment) -> None:
    fakes = FakeActivities(env.client, FAN_OUT, map_sizes={"train": 0})
    assert await run_plan(env, fakes) == "SUCCEEDED"
    assert [u for u, _ in fakes.started] == ["prep", "pick"]


async def test_mismatched_map_inputs_fail_with_the_reason(env: WorkflowEnvironment) -> None:
    fakes = FakeActivities(env.client, FAN_OUT, map_sizes={"train": -1})
    assert await run_plan(env, fakes) == "FAILED"
    (finish,) = fakes.finished
    assert finish.status == "FAILED" and "same length" in finish.message
    assert finish.message.startswith("train:")


async def test_cached_units_are_not_dispatched(env: WorkflowEnvironment) -> None:
    cached_prep = ExecutionPlan(nodes=[PlanNode("prep", [], 0, completes=True), *FAN_OUT.nodes[1:]])
    fakes = FakeActivities(
        env.client, cached_prep, map_sizes={"train": 3}, cached={"prep", "train[0]", "train[2]"}
    )
    assert await run_plan(env, fakes, "map_cached") == "SUCCEEDED"
    assert fakes.active == set()
    assert fakes.completed == ["prep", "train"]
    # train[0] and train[2] answered from the cache left their slots to train[1] at once.
    assert fakes.batches == [1, 2, 1, 1]


async def test_ready_units_start_together(env: WorkflowEnvironment) -> None:
    fakes = FakeActivities(env.client, DIAMOND)
    assert await run_plan(env, fakes) == "SUCCEEDED"
    assert fakes.batches == [1, 2, 1]  # a; b and c at once; d


async def test_a_wide_map_starts_in_batches(env: WorkflowEnvironment) -> None:
    wide = ExecutionPlan(nodes=[PlanNode("train", [], 0, is_map=True)])
    fakes = FakeActivities(env.client, wide, map_sizes={"train": START_BATCH + 3})
    assert await run_plan(env, fakes) == "SUCCEEDED"
    assert fakes.batches == [START_BATCH, 3]
    assert sorted(u for u, _ in fakes.started) == sorted(
        f"train[{i}]" for i in range(START_BATCH + 3)
    )


async def test_cancelling_the_workflow_cancels_the_execution(env: WorkflowEnvironment) -> None:
    fakes = FakeActivities(env.client, DIAMOND, hold={"b"})
    execution = fakes.execution_id
    async with Worker(
        env.client, task_queue="q-cancel", workflows=[ExecutionWorkflow], activities=fakes.all()
    ):
        handle = await env.client.start_workflow(
            ExecutionWorkflow.run, ExecutionInput(execution), id=execution, task_queue="q-cancel"
        )
        await wait_until_async(lambda: "b" in fakes.active, timeout=30, message="b to run")
        await handle.cancel()
        assert await asyncio.wait_for(handle.result(), timeout=30) == "CANCELLED"
    assert fakes.finished == [FinishExecutionInput(fakes.execution_id, "CANCELLED")]
    assert ("d", 1) not in fakes.started


async def test_lost_attempts_are_system_retries(env: WorkflowEnvironment) -> None:
    # "c" has no retries; losing it twice with its cluster does not use any.
    fakes = FakeActivities(env.client, DIAMOND, {("c", 1): "LOST", ("c", 2): "LOST"})
    assert await run_plan(env, fakes, "lost_redispatch") == "SUCCEEDED"
    assert [n for u, n in fakes.started if u == "c"] == [1, 2, 3]


async def test_endless_losses_fail_the_execution(env: WorkflowEnvironment) -> None:
    outcomes = {("c", n): "LOST" for n in range(1, MAX_SYSTEM_RETRIES + 2)}
    fakes = FakeActivities(env.client, DIAMOND, outcomes)
    assert await run_plan(env, fakes) == "FAILED"
    assert fakes.finished[0].failed_attempt_id == f"c#{MAX_SYSTEM_RETRIES + 1}"


@pytest.mark.parametrize("path", sorted(HISTORIES.glob("*.json")), ids=lambda p: p.stem)
async def test_recorded_histories_still_replay(path: Path) -> None:
    history = WorkflowHistory.from_json(f"wf-{path.stem}", path.read_text())
    await Replayer(workflows=[ExecutionWorkflow]).replay_workflow(history)
    # Each on the path it was recorded on: before the patch, ordinary activities only.
    assert _took_the_patched_path(history) == path.stem.endswith(RECORDED_SUFFIX)


async def test_recorded_histories_exist() -> None:
    recorded = [p.stem for p in HISTORIES.glob("*.json")]
    before = [name for name in recorded if not name.endswith(RECORDED_SUFFIX)]
    assert len(before) >= 6 and len(recorded) - len(before) >= 6, (
        "record with FLEETFLOW_RECORD_HISTORIES=1"
    )
