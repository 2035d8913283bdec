"""The activities behind conditionals, on SQLite and PostgreSQL: `decide_node` runs, skips
(recording the node SKIPPED, once however often it runs) or fails; a select binding resolves to
the branch that ran; and nothing guarded is ever started ahead of the workflow."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlparse

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from control_plane.db.models import Execution, TaskAttempt, utcnow
from control_plane.db.repositories.executions import create_execution
from control_plane.db.repositories.tenants import get_or_create_tenant
from control_plane.db.repositories.workflows import register_workflow_version
from control_plane.db.session import transaction
from control_plane.orchestration.activities import ExecutionActivities
from control_plane.orchestration.workflows import (
    Decision,
    FinishExecutionInput,
    NodeRef,
    StartAttemptsInput,
    UnitStart,
)
from fleetflow import conditional, task, workflow
from fleetflow.ir import WorkflowSpec
from fleetflow.states import NO_MAP_INDEX, AttemptState

BUNDLE = "c" * 64


@task
def measure(n: int) -> int:
    return n


@task
def big(x: int) -> int:
    return x * 100


@task
def small(x: int) -> int:
    return -x


@task
def describe(v: int) -> str:
    return f"value {v}"


@workflow
def branching(n: int) -> str:
    m = measure(n=n)
    v = (
        conditional("size")
        .if_(m > 10)
        .then(big(x=m))
        .elif_(m < 0)
        .fail("negative sizes are refused")
        .else_()
        .then(small(x=m))
    )
    return describe(v=v)


@workflow
def on_inputs(n: int) -> int:
    return conditional("sign").if_(n > 0).then(big(x=n)).else_().then(small(x=n))


MEASURE, BIG, SMALL, DESCRIBE = (node.id for node in branching.spec.nodes)
(FAILURE,) = (failure.id for failure in branching.spec.failures)


def new_execution(sessions: sessionmaker[Session], wf: object, inputs: dict[str, int]) -> str:
    spec = wf if isinstance(wf, WorkflowSpec) else wf.spec  # type: ignore[attr-defined]
    with transaction(sessions) as session:
        tenant = get_or_create_tenant(session, "research")
        version = register_workflow_version(session, tenant.id, spec, BUNDLE, None)
        return create_execution(session, tenant.id, version, inputs).id


def run_unit(
    activities: ExecutionActivities, sessions: sessionmaker[Session], execution_id: str, node: str
) -> str:
    """Start `node` and stand in for its agent: it succeeds with what its task returns."""
    (start,) = activities.start_attempts(
        StartAttemptsInput(execution_id, [UnitStart(node, NO_MAP_INDEX, 1)])
    ).starts
    with transaction(sessions) as session:
        attempt = session.get_one(TaskAttempt, start.attempt_id)
        inputs = json.loads(Path(urlparse(attempt.inputs_uri).path).read_text())
        fn = {MEASURE: measure, BIG: big, SMALL: small, DESCRIBE: describe}[node].fn
        path = Path(urlparse(attempt.outputs_uri).path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"o0": fn(**inputs)}))
        session.execute(
            update(TaskAttempt)
            .where(TaskAttempt.id == start.attempt_id)
            .values(status=AttemptState.SUCCEEDED.value, finished_at=utcnow())
        )
    return start.attempt_id


def statuses(sessions: sessionmaker[Session], execution_id: str) -> dict[str, str]:
    with sessions() as session:
        rows = session.execute(
            select(TaskAttempt.node_id, TaskAttempt.status).where(
                TaskAttempt.execution_id == execution_id
            )
        ).all()
    return {str(node): str(status) for node, status in rows}


def test_the_plan_decides_failures_first_and_guarded_nodes(
    activities: ExecutionActivities, session_factory: sessionmaker[Session]
) -> None:
    plan = activities.begin_execution(new_execution(session_factory, branching, {"n": 1}))
    assert [(n.node_id, n.guarded) for n in plan.nodes] == [
        (FAILURE, True),
        (MEASURE, False),
        (BIG, True),
        (SMALL, True),
        (DESCRIBE, False),
    ]


@pytest.mark.parametrize(
    ("n", "taken", "skipped", "output"), [(20, BIG, SMALL, 2000), (3, SMALL, BIG, -3)]
)
def test_a_branch_runs_the_other_is_skipped_and_the_select_follows(
    activities: ExecutionActivities,
    session_factory: sessionmaker[Session],
    n: int,
    taken: str,
    skipped: str,
    output: int,
) -> None:
    execution_id = new_execution(session_factory, branching, {"n": n})
    activities.begin_execution(execution_id)
    measured = run_unit(activities, session_factory, execution_id, MEASURE)
    # Nothing downstream is started ahead of the workflow: each is guarded or reads one.
    assert activities.start_successors(measured) == []
    assert activities.decide_node(NodeRef(execution_id, FAILURE)) == Decision()
    assert activities.decide_node(NodeRef(execution_id, taken)) == Decision(run=True)
    for _ in range(2):  # a retried activity records the skip once
        assert activities.decide_node(NodeRef(execution_id, skipped)) == Decision()
    assert statuses(session_factory, execution_id) == {
        MEASURE: "SUCCEEDED",
        skipped: "SKIPPED",
    }
    run_unit(activities, session_factory, execution_id, taken)
    run_unit(activities, session_factory, execution_id, DESCRIBE)
    activities.finish_execution(FinishExecutionInput(execution_id, "SUCCEEDED"))
    with session_factory() as session:
        execution = session.get_one(Execution, execution_id)
        assert execution.status == "SUCCEEDED"
        assert execution.outputs == {"o0": f"value {output}"}
        skipped_row = session.scalars(
            select(TaskAttempt).where(
                TaskAttempt.execution_id == execution_id, TaskAttempt.node_id == skipped
            )
        ).one()
    # Never signalled to the workflow (it decided it), never leased.
    assert skipped_row.signalled_at is not None and skipped_row.cluster_id is None


def test_a_fail_branch_taken_fails_with_its_message(
    activities: ExecutionActivities, session_factory: sessionmaker[Session]
) -> None:
    execution_id = new_execution(session_factory, branching, {"n": -4})
    activities.begin_execution(execution_id)
    run_unit(activities, session_factory, execution_id, MEASURE)
    decision = activities.decide_node(NodeRef(execution_id, FAILURE))
    assert decision == Decision(message="negative sizes are refused")


def test_guarded_roots_are_not_started_at_submission(
    activities: ExecutionActivities, session_factory: sessionmaker[Session]
) -> None:
    execution_id = new_execution(session_factory, on_inputs, {"n": 2})
    assert activities.start_roots(execution_id) == []
    assert statuses(session_factory, execution_id) == {}


def test_a_taken_branch_reading_a_skipped_node_fails_the_execution(
    activities: ExecutionActivities, session_factory: sessionmaker[Session]
) -> None:
    """Only a hand-written spec can: a compiled one keeps a branch's outputs in the branch."""
    execution_id = new_execution(session_factory, branching, {"n": 20})
    activities.begin_execution(execution_id)
    run_unit(activities, session_factory, execution_id, MEASURE)
    with transaction(session_factory) as session:  # as if SMALL had been skipped before
        session.add(
            TaskAttempt(
                id="at-forged",
                execution_id=execution_id,
                node_id=MEASURE,
                map_index=NO_MAP_INDEX,
                task_name="x",
                attempt_number=2,
                status=AttemptState.SKIPPED.value,
                inputs_uri="",
                outputs_uri="",
            )
        )
    decision = activities.decide_node(NodeRef(execution_id, BIG))
    assert decision == Decision(message=f"{BIG} consumes the output of skipped node {MEASURE}")


def test_a_condition_reading_a_skipped_node_fails_the_execution(
    activities: ExecutionActivities, session_factory: sessionmaker[Session]
) -> None:
    """Only a hand-written spec can: a compiled condition reads a branch's output only after
    that branch's own condition."""
    data = branching.spec.model_dump(mode="json")
    data["failures"][0]["when"] = {
        "kind": "compare",
        "op": "==",
        "left": {"kind": "node_output", "node_id": BIG, "output": "o0"},
        "right": {"kind": "literal", "value": 0},
    }
    execution_id = new_execution(session_factory, WorkflowSpec.model_validate(data), {"n": 3})
    activities.begin_execution(execution_id)
    run_unit(activities, session_factory, execution_id, MEASURE)
    assert activities.decide_node(NodeRef(execution_id, BIG)) == Decision()  # skipped
    decision = activities.decide_node(NodeRef(execution_id, FAILURE))
    assert decision.message.startswith(f"{FAILURE}: its condition reads a value that does not")
