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

from control_plane.orchestration.payloads import DATA_CONVERTER
from control_plane.orchestration.workflows import (
    EXECUTION_FINISHED,
    LOCAL_BATCHED,
    MAX_SYSTEM_RETRIES,
    QUIET_FINISHES,
    START_BATCH,
    AttemptFinished,
    AttemptStart,
    AttemptStarts,
    ChildStart,
    ChunkRef,
    Decision,
    DynamicPlan,
    DynamicWorkflow,
    ExecutionInput,
    ExecutionPlan,
    ExecutionWorkflow,
    FindFinished,
    FinishExecutionInput,
    FoundFinished,
    MapChunkWorkflow,
    NodeRef,
    PlanNode,
    StartAttemptInput,
    StartAttemptsInput,
)
from fleetflow.states import too_many_failures
from tests.integration.stack import TemporalServer
from tests.polling import wait_until_async

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

HISTORIES = Path(__file__).parent / "histories"
# Histories recorded now are written as `<name><RECORDED_SUFFIX>.json`, beside the older ones.
RECORDED_SUFFIX = "-quiet-finishes"
# The patches each kind of recorded history took, by the suffix of its name ("" before any).
PATCHES_BY_SUFFIX = {
    RECORDED_SUFFIX: [LOCAL_BATCHED, QUIET_FINISHES],
    "-local-batched": [LOCAL_BATCHED],
    "": [],
}


class FakeActivities:
    """Scripted stand-ins for the activities and the agents.

    A unit is "node" or, for a map element, "node[i]". `outcomes[(unit, try)]` is the terminal
    state reported for that try (default SUCCEEDED); `map_sizes[node]` is a map node's element
    count (negative: the inputs do not line up); units in `cached` answer from the cache; units
    in `hold` are never reported, so the execution waits on them. Units in `quiet` end
    without a signal, as the finish notifier holds plain successes: once nothing is active,
    the workflow is told (`attempts_finished_quietly`) and reads them (`find_finished`).
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
        quiet: set[str] | None = None,
    ) -> None:
        self.client = client
        self.plan = plan
        self.outcomes = outcomes or {}
        self.map_sizes = map_sizes or {}
        self.cached = cached or set()
        self.hold = hold or set()
        self.quiet = quiet or set()
        self.held: dict[str, str] = {}  # attempt id -> how it ended, unsignalled
        self.holding: list[str] = []  # the executions that asked `hold_finishes`
        self.looks = 0  # `attempts_finished_quietly` signals sent
        self.found: list[list[str]] = []  # each `find_finished` call's attempts
        self.started: list[tuple[str, int]] = []
        self.batches: list[int] = []  # units per `start_attempts`
        self.completed: list[str] = []
        self.chunks_completed: list[ChunkRef] = []
        self.chunks_per_node: dict[str, int] = {}  # complete_node's `chunks`
        self.signalled_to: dict[str, str] = {}  # unit -> the workflow told of its end
        self.refuse_starts = False  # `start_attempts` as for an execution that finished
        self.finished: list[FinishExecutionInput] = []
        self.active: set[str] = set()
        self.max_active: dict[str, int] = {}
        self.execution_id = f"ex-{uuid.uuid4().hex[:12]}"
        # A guarded node's decision (run when absent), and the nodes asked about, in order.
        self.decisions: dict[str, Decision] = {}
        self.decided: list[str] = []
        # A dynamic node's sub-DAG, and the dynamic nodes expanded, in order.
        self.dynamic_plans: dict[str, DynamicPlan] = {}
        self.expanded: list[str] = []
        # A reference node's child execution's plan, by node; the child executions started.
        self.child_plans: dict[str, ExecutionPlan] = {}
        self.children: dict[str, str] = {}  # child execution id -> its reference node

    @activity.defn(name="begin_execution")
    async def begin_execution(self, execution_id: str) -> ExecutionPlan:
        if execution_id in self.children:
            return self.child_plans[self.children[execution_id]]
        return self.plan

    @activity.defn(name="begin_quiet_execution")
    async def begin_quiet_execution(self, execution_id: str) -> ExecutionPlan:
        await self.hold_finishes(execution_id)
        return await self.begin_execution(execution_id)

    @activity.defn(name="start_child_execution")
    async def start_child_execution(self, ref: NodeRef) -> ChildStart:
        child_id = f"{ref.execution_id}-{ref.node_id}"
        self.children[child_id] = ref.node_id
        return ChildStart(child_id)

    @activity.defn(name="complete_reference")
    async def complete_reference(self, ref: NodeRef) -> str:
        child_id = f"{ref.execution_id}-{ref.node_id}"
        (ended,) = [f for f in self.finished if f.execution_id == child_id]
        return "" if ended.status == "SUCCEEDED" else f"{ref.node_id}: child {ended.status}"

    @activity.defn(name="expand_map")
    async def expand_map(self, ref: NodeRef) -> int:
        size = self.map_sizes[ref.node_id]
        if size < 0:
            raise ApplicationError("mapped inputs must have the same length", non_retryable=True)
        return size

    @activity.defn(name="start_attempt")
    async def start_attempt(self, args: StartAttemptInput, workflow_id: str = "") -> AttemptStart:
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
            self.signalled_to[unit] = workflow_id or args.execution_id
            handle = self.client.get_workflow_handle(workflow_id or args.execution_id)
            # Like an agent report: arrives after the activity has returned.
            asyncio.get_running_loop().call_later(
                0.05, self._report, handle, unit, attempt_id, status
            )
        return AttemptStart(attempt_id)

    def _report(self, handle: WorkflowHandle, unit: str, attempt_id: str, status: str) -> None:
        self.active.discard(unit)
        if unit in self.quiet and status == "SUCCEEDED":
            self.held[attempt_id] = status
            if not self.active:  # the last to end tells the workflow
                self.looks += 1
                asyncio.ensure_future(handle.signal(ExecutionWorkflow.attempts_finished_quietly))
            return
        asyncio.ensure_future(
            handle.signal(ExecutionWorkflow.attempt_finished, AttemptFinished(attempt_id, status))
        )

    @activity.defn(name="hold_finishes")
    async def hold_finishes(self, execution_id: str) -> None:
        if execution_id not in self.holding:  # may run again, as `finish_execution`
            self.holding.append(execution_id)

    @activity.defn(name="find_finished")
    async def find_finished(self, args: FindFinished) -> FoundFinished:
        self.found.append(args.attempt_ids)
        return FoundFinished(
            [AttemptFinished(a, self.held[a]) for a in args.attempt_ids if a in self.held]
        )

    @activity.defn(name="start_attempts")
    async def start_attempts(self, args: StartAttemptsInput) -> AttemptStarts:
        if self.refuse_starts:
            raise ApplicationError("already CANCELLED", type=EXECUTION_FINISHED, non_retryable=True)
        self.batches.append(len(args.units))
        starts = [
            await self.start_attempt(
                StartAttemptInput(
                    args.execution_id, unit.node_id, unit.attempt_number, unit.map_index
                ),
                args.workflow_id,
            )
            for unit in args.units
        ]
        return AttemptStarts(starts)

    @activity.defn(name="decide_node")
    async def decide_node(self, ref: NodeRef) -> Decision:
        self.decided.append(ref.node_id)
        return self.decisions.get(ref.node_id, Decision(run=True))

    @activity.defn(name="expand_dynamic")
    async def expand_dynamic(self, ref: NodeRef) -> DynamicPlan:
        if ref.node_id not in self.expanded:
            self.expanded.append(ref.node_id)
        return self.dynamic_plans[ref.node_id]

    @activity.defn(name="complete_node")
    async def complete_node(self, ref: NodeRef) -> None:
        self.completed.append(ref.node_id)
        self.chunks_per_node[ref.node_id] = ref.chunks

    @activity.defn(name="complete_chunk")
    async def complete_chunk(self, ref: ChunkRef) -> None:
        if ref not in self.chunks_completed:  # may run again, as `finish_execution`
            self.chunks_completed.append(ref)

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
            self.begin_quiet_execution,
            self.expand_map,
            self.start_attempts,
            self.start_attempt,
            self.complete_node,
            self.hold_finishes,
            self.find_finished,
            self.complete_chunk,
            self.decide_node,
            self.expand_dynamic,
            self.start_child_execution,
            self.complete_reference,
            self.finish_execution,
        ]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def env(temporal_server: TemporalServer) -> AsyncIterator[WorkflowEnvironment]:
    # A plain client: the test server only skips time for clients that ask it to, and an
    # execution waiting for agents must not have its clock jumped.
    yield WorkflowEnvironment(
        await Client.connect(temporal_server.address, data_converter=DATA_CONVERTER)
    )


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

# As `begin_execution` plans `m = measure(); conditional().if_(m > 10).then(big(m))
# .elif_(m < 0).fail(...).else_().then(small(m))` feeding `out`: the `.fail` first.
BRANCHES = ExecutionPlan(
    nodes=[
        PlanNode("f0-size", ["m"], 0, completes=False, guarded=True),
        PlanNode("m", [], 0, completes=False),
        PlanNode("big", ["m"], 0, completes=False, guarded=True),
        PlanNode("small", ["m"], 0, completes=False, guarded=True),
        PlanNode("out", ["big", "small"], 0, completes=False),
    ]
)


# As `begin_execution` plans `pick(fan(xs))` for a dynamic task `fan` whose body calls a task
# per element (its sub-DAG planned by `expand_dynamic`), one of them a dynamic task too.
DYNAMIC = ExecutionPlan(
    nodes=[
        PlanNode("prep", [], 0, completes=False),
        PlanNode("fan", ["prep"], 0, dynamic=True),
        PlanNode("pick", ["fan"], 0, completes=False),
    ]
)
FAN_SUB_DAG = DynamicPlan(
    ExecutionPlan(
        nodes=[
            PlanNode("fan/n0-square", [], 1, completes=False),
            PlanNode("fan/n1-inner", [], 0, dynamic=True),
            PlanNode("fan/n2-add", ["fan/n0-square", "fan/n1-inner"], 0, completes=False),
        ]
    )
)
INNER_SUB_DAG = DynamicPlan(
    ExecutionPlan(nodes=[PlanNode("fan/n1-inner/n0-square", [], 0, completes=False)])
)

# As `begin_execution` plans `pick(train_v1(prep()))` for a `@reference_workflow` stub
# `train_v1`, and the referenced workflow's own plan, run as a child execution.
REFERENCE = ExecutionPlan(
    nodes=[
        PlanNode("prep", [], 0, completes=False),
        PlanNode("ref", ["prep"], 0, completes=False, reference=True),
        PlanNode("pick", ["ref"], 0, completes=False),
    ]
)
REFERENCED = ExecutionPlan(
    nodes=[PlanNode("fit", [], 0, completes=False), PlanNode("score", ["fit"], 0, completes=False)]
)

WORKFLOWS = [ExecutionWorkflow, MapChunkWorkflow, DynamicWorkflow]


async def run_plan(env: WorkflowEnvironment, fakes: FakeActivities, record: str = "") -> str:
    # A fresh id per run: a late signal scripted by an earlier test cannot reach this one.
    execution = fakes.execution_id
    queue = f"q-{execution}"
    async with Worker(env.client, task_queue=queue, workflows=WORKFLOWS, activities=fakes.all()):
        # As in production, the workflow id is the execution id.
        handle = await env.client.start_workflow(
            ExecutionWorkflow.run, ExecutionInput(execution), id=execution, task_queue=queue
        )
        result = await asyncio.wait_for(handle.result(), timeout=60)
        history = await handle.fetch_history()  # the first run's, when it continued as new
    await Replayer(workflows=WORKFLOWS, data_converter=DATA_CONVERTER).replay_workflow(history)
    assert _patches_taken(history) == PATCHES_BY_SUFFIX[RECORDED_SUFFIX]
    if record and os.environ.get("FLEETFLOW_RECORD_HISTORIES"):
        HISTORIES.mkdir(exist_ok=True)
        (HISTORIES / f"{record}{RECORDED_SUFFIX}.json").write_text(history.to_json())
    return result


def _patches_taken(history: WorkflowHistory) -> list[str] | None:
    """The patches the run recorded, in order; None if it ran ordinary activities along with
    them (only runs begun before any patch may)."""
    patches = [
        json.loads(payload.data)["id"]
        for event in history.events
        if event.marker_recorded_event_attributes.marker_name == "core_patch"
        for payload in event.marker_recorded_event_attributes.details["patch-data"].payloads
    ]
    kinds = {event.event_type for event in history.events}
    if patches and EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED in kinds:
        return None
    return patches


async def test_nodes_run_after_their_upstream(env: WorkflowEnvironment) -> None:
    fakes = FakeActivities(env.client, DIAMOND)
    assert await run_plan(env, fakes, "diamond_succeeds") == "SUCCEEDED"
    # Each unit's first start: a local activity may run again when a workflow task is
    # retried (on a loaded machine, Temporal's deadlock detector can fail one).
    order = list(dict.fromkeys(unit for unit, _ in fakes.started))
    assert order == ["a", *order[1:3], "d"] and set(order[1:3]) == {"b", "c"}
    assert fakes.completed.index("a") < fakes.started.index(("b", 1))
    assert fakes.finished == [FinishExecutionInput(fakes.execution_id, "SUCCEEDED")]


async def test_held_finishes_are_read_once_the_workflow_is_told(
    env: WorkflowEnvironment,
) -> None:
    """A fan-out of plain nodes, then one consuming them all: the four succeed without a
    signal each; told once nothing is active, the workflow reads them in one activity and
    goes on. A failure is still signalled, and retried, meanwhile."""
    plan = ExecutionPlan(
        nodes=[
            *(PlanNode(f"n{i}", [], 1, completes=False) for i in range(4)),
            PlanNode("join", [f"n{i}" for i in range(4)], 0, completes=False),
        ]
    )
    fakes = FakeActivities(
        env.client,
        plan,
        {("n3", 1): "FAILED"},
        quiet={"n0", "n1", "n2", "n3", "join"},
    )
    assert await run_plan(env, fakes, "quiet_fan_out") == "SUCCEEDED"
    assert fakes.holding == [fakes.execution_id]
    assert ("n3", 2) in fakes.started and ("join", 1) in fakes.started
    assert fakes.looks == 2  # once the fan-out ended, once `join` did
    assert sorted(fakes.found[0]) == ["n0#1", "n1#1", "n2#1", "n3#2"]
    assert fakes.found[1:] == [["join#1"]]


async def test_a_skipped_branch_counts_as_done_and_never_starts(
    env: WorkflowEnvironment,
) -> None:
    fakes = FakeActivities(env.client, BRANCHES)
    fakes.decisions = {"f0-size": Decision(), "small": Decision()}  # `big` runs
    assert await run_plan(env, fakes, "conditional_branch") == "SUCCEEDED"
    assert [unit for unit, _ in fakes.started] == ["m", "big", "out"]
    # Only guarded nodes are asked about, once each, the `.fail` first.
    assert fakes.decided == ["f0-size", "big", "small"]
    assert fakes.finished == [FinishExecutionInput(fakes.execution_id, "SUCCEEDED")]


async def test_a_fail_branch_taken_fails_the_execution_with_its_message(
    env: WorkflowEnvironment,
) -> None:
    fakes = FakeActivities(env.client, BRANCHES)
    fakes.decisions = {"f0-size": Decision(message="negative sizes are refused")}
    assert await run_plan(env, fakes, "conditional_fail") == "FAILED"
    assert [unit for unit, _ in fakes.started] == ["m"]
    assert fakes.finished == [
        FinishExecutionInput(fakes.execution_id, "FAILED", message="negative sizes are refused")
    ]


async def test_a_reference_node_runs_a_child_execution(env: WorkflowEnvironment) -> None:
    fakes = FakeActivities(env.client, REFERENCE)
    fakes.child_plans = {"ref": REFERENCED}
    assert await run_plan(env, fakes, "reference_nodes") == "SUCCEEDED"
    child = f"{fakes.execution_id}-ref"
    # No attempt of its own: the child's nodes run, signalling the child's workflow.
    assert [unit for unit, _ in fakes.started] == ["prep", "fit", "score", "pick"]
    assert fakes.signalled_to["fit"] == child
    assert fakes.finished == [
        FinishExecutionInput(child, "SUCCEEDED"),
        FinishExecutionInput(fakes.execution_id, "SUCCEEDED"),
    ]


async def test_a_failed_child_execution_fails_its_node(env: WorkflowEnvironment) -> None:
    fakes = FakeActivities(env.client, REFERENCE, {("score", 1): "FAILED"})
    fakes.child_plans = {"ref": REFERENCED}
    assert await run_plan(env, fakes) == "FAILED"
    assert [unit for unit, _ in fakes.started] == ["prep", "fit", "score"]
    assert fakes.finished[-1] == FinishExecutionInput(
        fakes.execution_id, "FAILED", message="ref: child FAILED"
    )


async def test_a_dynamic_node_runs_its_sub_dag_in_its_place(env: WorkflowEnvironment) -> None:
    fakes = FakeActivities(env.client, DYNAMIC, {("fan/n0-square", 1): "FAILED"})
    fakes.dynamic_plans = {"fan": FAN_SUB_DAG, "fan/n1-inner": INNER_SUB_DAG}
    assert await run_plan(env, fakes, "dynamic_nodes") == "SUCCEEDED"
    order = [unit for unit, _ in fakes.started]
    # The node's own attempt builds the sub-DAG; its nodes run (retried within their
    # retries), a nested one's too; `pick` waits for all of them.
    assert order[:2] == ["prep", "fan"] and order[-1] == "pick"
    assert ("fan/n0-square", 2) in fakes.started
    assert order.index("fan/n1-inner/n0-square") < order.index("fan/n2-add")
    assert fakes.expanded == ["fan", "fan/n1-inner"]
    # The sub-DAG's attempts signal its own workflow; the node completes after it.
    assert fakes.signalled_to["fan/n2-add"] == f"{fakes.execution_id}/fan/dynamic"
    assert fakes.signalled_to["fan"] == fakes.execution_id
    assert fakes.completed == ["fan/n1-inner", "fan"]
    assert fakes.finished == [FinishExecutionInput(fakes.execution_id, "SUCCEEDED")]


async def test_a_refused_or_failed_sub_dag_fails_the_execution(env: WorkflowEnvironment) -> None:
    fakes = FakeActivities(env.client, DYNAMIC)
    fakes.dynamic_plans = {"fan": DynamicPlan(message="fan: the sub-DAG is refused: too big")}
    assert await run_plan(env, fakes) == "FAILED"
    assert [unit for unit, _ in fakes.started] == ["prep", "fan"]
    assert fakes.finished == [
        FinishExecutionInput(
            fakes.execution_id, "FAILED", message="fan: the sub-DAG is refused: too big"
        )
    ]
    failing = FakeActivities(env.client, DYNAMIC, {("fan/n2-add", 1): "FAILED"})
    failing.dynamic_plans = {"fan": FAN_SUB_DAG, "fan/n1-inner": INNER_SUB_DAG}
    assert await run_plan(env, failing) == "FAILED"
    assert failing.finished == [
        FinishExecutionInput(failing.execution_id, "FAILED", "fan/n2-add#1")
    ]
    assert "pick" not in [unit for unit, _ in failing.started]


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
        env.client, task_queue="q-cancel", workflows=WORKFLOWS, activities=fakes.all()
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


async def test_preempted_attempts_run_again_without_using_any_retries(
    env: WorkflowEnvironment,
) -> None:
    # "c" has no retries; preempted more often than the system retries allow losses, it
    # still runs again each time and succeeds.
    outcomes = {("c", n): "PREEMPTED" for n in range(1, MAX_SYSTEM_RETRIES + 3)}
    fakes = FakeActivities(env.client, DIAMOND, outcomes)
    assert await run_plan(env, fakes) == "SUCCEEDED"
    assert [n for u, n in fakes.started if u == "c"] == list(range(1, MAX_SYSTEM_RETRIES + 4))


# As `begin_execution` plans it, with chunks of 3 elements (1,000 by default).
CHUNKED = ExecutionPlan(
    nodes=[
        PlanNode("prep", [], 0, completes=False),
        PlanNode("train", ["prep"], 1, is_map=True),
        PlanNode("pick", ["train"], 0, completes=False),
    ],
    map_chunk=3,
)


async def _runs(client: Client, workflow_id: str) -> int:
    """How many runs the workflow had: each continued-as-new run names the one before."""
    runs, run_id = 0, ""
    while True:
        history = await client.get_workflow_handle(
            workflow_id, run_id=run_id or None
        ).fetch_history()
        runs += 1
        started = history.events[0].workflow_execution_started_event_attributes
        if not started.continued_execution_run_id:
            return runs
        run_id = started.continued_execution_run_id


def _signals(history: WorkflowHistory) -> int:
    return sum(
        1
        for event in history.events
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED
    )


async def test_a_large_map_runs_as_chunk_workflows(env: WorkflowEnvironment) -> None:
    fakes = FakeActivities(
        env.client, CHUNKED, {("train[4]", 1): "FAILED"}, map_sizes={"train": 10}
    )
    assert await run_plan(env, fakes, "map_chunks") == "SUCCEEDED"
    execution = fakes.execution_id
    # Every element ran, its retry too, each told to the chunk that started it.
    assert sorted(fakes.started) == sorted(
        [("prep", 1), ("pick", 1), ("train[4]", 2)] + [(f"train[{i}]", 1) for i in range(10)]
    )
    assert fakes.signalled_to["train[4]"] == f"{execution}/train/chunk-1"
    assert fakes.signalled_to["train[9]"] == f"{execution}/train/chunk-3"
    assert fakes.signalled_to["prep"] == execution
    assert sorted((c.chunk, c.first, c.count) for c in fakes.chunks_completed) == [
        (0, 0, 3),
        (1, 3, 3),
        (2, 6, 3),
        (3, 9, 1),
    ]
    assert fakes.completed == ["train"] and fakes.chunks_per_node["train"] == 4
    # The parent heard of its own two attempts only; each chunk of its own elements.
    parent = await env.client.get_workflow_handle(execution).fetch_history()
    assert _signals(parent) == 2
    chunk = await env.client.get_workflow_handle(f"{execution}/train/chunk-1").fetch_history()
    assert _signals(chunk) == 4  # three elements and the retry
    await Replayer(workflows=WORKFLOWS, data_converter=DATA_CONVERTER).replay_workflow(chunk)


async def test_chunks_share_the_map_nodes_concurrency(env: WorkflowEnvironment) -> None:
    plan = ExecutionPlan(nodes=[PlanNode("train", [], 0, is_map=True, concurrency=4)], map_chunk=3)
    fakes = FakeActivities(env.client, plan, map_sizes={"train": 12})
    assert await run_plan(env, fakes) == "SUCCEEDED"
    assert len({u for u, _ in fakes.started}) == 12
    # Two chunks at once (4 units need two of 3), each with 2 of the node's 4.
    assert fakes.max_active["train"] == 4


async def test_a_chunk_out_of_retries_fails_the_execution(env: WorkflowEnvironment) -> None:
    outcomes = {("train[7]", 1): "FAILED", ("train[7]", 2): "FAILED"}
    fakes = FakeActivities(env.client, CHUNKED, outcomes, map_sizes={"train": 10})
    assert await run_plan(env, fakes) == "FAILED"
    assert fakes.finished[0].failed_attempt_id == "train[7]#2"
    assert ("pick", 1) not in fakes.started


async def test_a_long_workflow_continues_as_new_without_starting_anything_twice(
    env: WorkflowEnvironment,
) -> None:
    # A chain of 30 with a retry in the middle, in a history capped at 60 events: it has to
    # continue as new several times, with attempts in flight each time.
    chain = ExecutionPlan(
        nodes=[PlanNode(f"n{i}", [f"n{i - 1}"] if i else [], 1) for i in range(30)],
        continue_after_events=60,
    )
    fakes = FakeActivities(env.client, chain, {("n15", 1): "FAILED"})
    assert await run_plan(env, fakes, "chain_continued") == "SUCCEEDED"
    tries = {(unit, number) for unit, number in fakes.started}
    assert tries == {(f"n{i}", 1) for i in range(30)} | {("n15", 2)}
    assert await _runs(env.client, fakes.execution_id) > 2
    assert fakes.finished == [FinishExecutionInput(fakes.execution_id, "SUCCEEDED")]


# A map node with `min_success_ratio=0.8`: of 10 elements, 2 may fail for good.
PARTIAL = ExecutionPlan(
    nodes=[
        PlanNode("prep", [], 0, completes=False),
        PlanNode("train", ["prep"], 1, is_map=True, concurrency=3, min_success_ratio=0.8),
        PlanNode("pick", ["train"], 0, completes=False),
    ]
)


def _failing(*elements: int, tries: int = 2) -> dict[tuple[str, int], str]:
    return {(f"train[{i}]", n): "FAILED" for i in elements for n in range(1, tries + 1)}


async def test_a_partial_map_succeeds_with_failed_elements(env: WorkflowEnvironment) -> None:
    fakes = FakeActivities(env.client, PARTIAL, _failing(2, 7), map_sizes={"train": 10})
    assert await run_plan(env, fakes, "partial_map") == "SUCCEEDED"
    # The failed elements used their retry, the node completed, its successor ran.
    assert ("train[2]", 2) in fakes.started and ("train[7]", 2) in fakes.started
    assert fakes.completed == ["train"] and ("pick", 1) in fakes.started
    assert fakes.max_active["train"] <= 3


async def test_a_partial_map_fails_once_too_many_elements_failed(
    env: WorkflowEnvironment,
) -> None:
    fakes = FakeActivities(env.client, PARTIAL, _failing(1, 4, 8), map_sizes={"train": 10})
    assert await run_plan(env, fakes) == "FAILED"
    (finish,) = fakes.finished
    assert finish.failed_attempt_id == "train[1]#2"
    assert finish.message == (
        "train: 3 of 10 elements failed; min_success_ratio 0.8 needs 8 to succeed"
    )
    assert finish.message == too_many_failures("train", 3, 10, 0.8)
    assert ("pick", 1) not in fakes.started and fakes.completed == []


async def test_failed_elements_of_chunks_add_up_over_the_node(env: WorkflowEnvironment) -> None:
    chunked = ExecutionPlan(
        nodes=[PlanNode("train", [], 0, is_map=True, min_success_ratio=0.8)], map_chunk=3
    )
    # One failure in each of two chunks: 2 of 10, as many as 0.8 allows.
    fakes = FakeActivities(env.client, chunked, _failing(1, 7, tries=1), map_sizes={"train": 10})
    assert await run_plan(env, fakes, "partial_map_chunks") == "SUCCEEDED"
    assert len(fakes.chunks_completed) == 4 and fakes.chunks_per_node["train"] == 4
    # One more, in a third chunk, is one too many, though no chunk has more than one.
    fakes = FakeActivities(env.client, chunked, _failing(1, 5, 7, tries=1), map_sizes={"train": 10})
    assert await run_plan(env, fakes) == "FAILED"
    (finish,) = fakes.finished
    assert finish.message == too_many_failures("train", 3, 10, 0.8)
    assert finish.failed_attempt_id in {"train[1]#1", "train[5]#1", "train[7]#1"}


async def test_a_chunk_stops_once_its_own_failures_are_too_many(env: WorkflowEnvironment) -> None:
    chunked = ExecutionPlan(
        nodes=[PlanNode("train", [], 0, is_map=True, concurrency=1, min_success_ratio=0.9)],
        map_chunk=5,
    )
    fakes = FakeActivities(env.client, chunked, _failing(0, 1, tries=1), map_sizes={"train": 10})
    assert await run_plan(env, fakes) == "FAILED"
    assert fakes.finished[0].message.startswith("train: 2 of 10 elements failed")
    # One element at a time: chunk 0 stopped after its second failure.
    assert ("train[4]", 1) not in fakes.started


async def test_a_partial_map_continues_as_new_with_its_failed_elements(
    env: WorkflowEnvironment,
) -> None:
    plan = ExecutionPlan(
        nodes=[
            PlanNode("train", [], 0, is_map=True, concurrency=1, min_success_ratio=0.5),
            PlanNode("pick", ["train"], 0, completes=False),
        ],
        continue_after_events=40,
    )
    fakes = FakeActivities(env.client, plan, _failing(0, 2, 4, tries=1), map_sizes={"train": 8})
    assert await run_plan(env, fakes) == "SUCCEEDED"
    assert await _runs(env.client, fakes.execution_id) > 1
    # The failed elements were carried over as failed: never tried again (an attempt in
    # flight is asked for again, under its number, by the next run).
    assert set(fakes.started) == {(f"train[{i}]", 1) for i in range(8)} | {("pick", 1)}


async def test_a_start_refused_because_the_execution_finished_ends_it_cancelled(
    env: WorkflowEnvironment,
) -> None:
    fakes = FakeActivities(env.client, DIAMOND)
    fakes.refuse_starts = True
    assert await run_plan(env, fakes) == "CANCELLED"
    assert fakes.finished == [FinishExecutionInput(fakes.execution_id, "CANCELLED")]


@pytest.mark.parametrize("path", sorted(HISTORIES.glob("*.json")), ids=lambda p: p.stem)
async def test_recorded_histories_still_replay(path: Path) -> None:
    history = WorkflowHistory.from_json(f"wf-{path.stem}", path.read_text())
    await Replayer(workflows=WORKFLOWS, data_converter=DATA_CONVERTER).replay_workflow(history)
    # Each on the path it was recorded on: before the patches, ordinary activities only.
    suffix = next(end for end in PATCHES_BY_SUFFIX if path.stem.endswith(end))
    assert _patches_taken(history) == PATCHES_BY_SUFFIX[suffix]


async def test_recorded_histories_exist() -> None:
    recorded = [p.stem for p in HISTORIES.glob("*.json")]
    before = [name for name in recorded if not name.endswith(("-local-batched", RECORDED_SUFFIX))]
    batched = [name for name in recorded if name.endswith("-local-batched")]
    quiet = [name for name in recorded if name.endswith(RECORDED_SUFFIX)]
    assert len(before) >= 6 and len(batched) >= 8 and len(quiet) >= 8, (
        "record with FLEETFLOW_RECORD_HISTORIES=1"
    )
