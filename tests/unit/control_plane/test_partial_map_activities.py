"""The activities for a map node with a `min_success_ratio`, on SQLite and PostgreSQL: the plan
carries the ratio, `complete_node` / `complete_chunk` collect null for each element that
failed (the next node reads them so), and a node failed for too many failed elements fails
the execution with an error that says how many, the ratio, and one element's error.

Agents are stood in for by writing an attempt's outputs and terminal state directly.
"""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlparse

import pytest
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from control_plane.db.models import Execution, TaskAttempt, utcnow
from control_plane.db.repositories.executions import create_execution
from control_plane.db.repositories.tenants import get_or_create_tenant
from control_plane.db.repositories.workflows import register_workflow_version
from control_plane.db.session import transaction
from control_plane.orchestration.activities import ExecutionActivities
from control_plane.orchestration.workflows import (
    ChunkRef,
    FinishExecutionInput,
    NodeRef,
    StartAttemptsInput,
    UnitStart,
)
from fleetflow import map_task, task, workflow
from fleetflow.states import NO_MAP_INDEX, AttemptState, too_many_failures
from fleetflow.storage import LocalBlobStore

BUNDLE = "e" * 64


@task
def numbers(n: int) -> list[int]:
    return list(range(n))


@task(retries=1)
def score(x: int) -> int:
    return x * 10


@task
def present(values: list[int | None]) -> int:
    return sum(v is not None for v in values)


@workflow
def scored(n: int) -> int:
    return present(values=map_task(score, min_success_ratio=0.6)(x=numbers(n=n)))


SPEC = scored.spec
NUMBERS, SCORE, PRESENT = (node.id for node in SPEC.nodes)


@pytest.fixture
def execution_id(session_factory: sessionmaker[Session]) -> str:
    with transaction(session_factory) as session:
        tenant = get_or_create_tenant(session, "research")
        version = register_workflow_version(session, tenant.id, SPEC, BUNDLE, None)
        return create_execution(session, tenant.id, version, {"n": 5}).id


def finish(
    sessions: sessionmaker[Session],
    attempt_id: str,
    outputs: dict[str, object] | None = None,
    error: str = "",
) -> None:
    """What the agent leaves behind: outputs and SUCCEEDED, or an error and FAILED."""
    with transaction(sessions) as session:
        attempt = session.get_one(TaskAttempt, attempt_id)
        if outputs is not None:
            path = Path(urlparse(attempt.outputs_uri).path)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(outputs))
        state = AttemptState.SUCCEEDED if outputs is not None else AttemptState.FAILED
        session.execute(
            update(TaskAttempt)
            .where(TaskAttempt.id == attempt_id)
            .values(status=state.value, finished_at=utcnow(), error_message=error or None)
        )


def start(activities: ExecutionActivities, execution_id: str, *units: UnitStart) -> list[str]:
    starts = activities.start_attempts(StartAttemptsInput(execution_id, list(units))).starts
    return [s.attempt_id for s in starts]


def run_numbers(activities: ExecutionActivities, sessions: sessionmaker[Session], ex: str) -> None:
    (first,) = start(activities, ex, UnitStart(NUMBERS, NO_MAP_INDEX, 1))
    finish(sessions, first, {"o0": [1, 2, 3, 4, 5]})


def node_outputs(
    activities: ExecutionActivities, sessions: sessionmaker[Session], execution_id: str
) -> dict[str, object]:
    with sessions() as session:
        execution = session.get_one(Execution, execution_id)
        return activities._node_outputs(session, execution, SPEC.node(SCORE))


def test_the_plan_carries_the_ratio_of_the_map_node(
    activities: ExecutionActivities, execution_id: str
) -> None:
    plan = activities.begin_execution(execution_id)
    ratios = {node.node_id: node.min_success_ratio for node in plan.nodes}
    assert ratios == {NUMBERS: 1.0, SCORE: 0.6, PRESENT: 1.0}


def test_failed_elements_are_null_in_the_collected_outputs(
    activities: ExecutionActivities,
    session_factory: sessionmaker[Session],
    blobs: LocalBlobStore,
    execution_id: str,
) -> None:
    activities.begin_execution(execution_id)
    run_numbers(activities, session_factory, execution_id)
    ids = start(activities, execution_id, *(UnitStart(SCORE, i, 1) for i in range(5)))
    for index, attempt_id in enumerate(ids):
        if index in (1, 3):
            finish(session_factory, attempt_id, error=f"ValueError: element {index}")
        else:
            finish(session_factory, attempt_id, {"o0": index * 10})
    # Element 3 succeeded on its retry; element 1 failed both tries.
    (retry_1,) = start(activities, execution_id, UnitStart(SCORE, 1, 2))
    (retry_3,) = start(activities, execution_id, UnitStart(SCORE, 3, 2))
    finish(session_factory, retry_1, error="ValueError: element 1 again")
    finish(session_factory, retry_3, {"o0": 30})
    activities.complete_node(NodeRef(execution_id, SCORE))
    assert node_outputs(activities, session_factory, execution_id) == {"o0": [0, None, 20, 30, 40]}
    # The next node gets them as its input, nulls included.
    (consumer,) = start(activities, execution_id, UnitStart(PRESENT, NO_MAP_INDEX, 1))
    with session_factory() as session:
        inputs_uri = session.get_one(TaskAttempt, consumer).inputs_uri
    assert json.loads(blobs.get(inputs_uri)) == {"values": [0, None, 20, 30, 40]}


def test_chunks_collect_nulls_in_their_parts_and_the_node_joins_them(
    activities: ExecutionActivities, session_factory: sessionmaker[Session], execution_id: str
) -> None:
    activities.begin_execution(execution_id)
    run_numbers(activities, session_factory, execution_id)
    for chunk, begin, count in [(0, 0, 3), (1, 3, 2)]:  # a failure in each chunk
        units = [UnitStart(SCORE, i, 1) for i in range(begin, begin + count)]
        starts = activities.start_attempts(
            StartAttemptsInput(execution_id, units, f"{execution_id}/{SCORE}/chunk-{chunk}")
        ).starts
        for unit, started in zip(units, starts, strict=True):
            if unit.map_index in (0, 4):
                finish(session_factory, started.attempt_id, error="RuntimeError: no")
            else:
                finish(session_factory, started.attempt_id, {"o0": unit.map_index * 10})
        activities.complete_chunk(ChunkRef(execution_id, SCORE, chunk, begin, count))
    activities.complete_node(NodeRef(execution_id, SCORE, chunks=2))
    assert node_outputs(activities, session_factory, execution_id) == {
        "o0": [None, 10, 20, 30, None]
    }


def test_too_many_failures_fail_the_execution_naming_one_element(
    activities: ExecutionActivities, session_factory: sessionmaker[Session], execution_id: str
) -> None:
    activities.begin_execution(execution_id)
    run_numbers(activities, session_factory, execution_id)
    ids = start(activities, execution_id, *(UnitStart(SCORE, i, 1) for i in range(5)))
    finish(session_factory, ids[2], error="ValueError: cannot score 3")
    message = too_many_failures(SCORE, 3, 5, 0.6)
    activities.finish_execution(FinishExecutionInput(execution_id, "FAILED", ids[2], message))
    with session_factory() as session:
        execution = session.get_one(Execution, execution_id)
        assert execution.status == "FAILED"
        error = execution.error
    assert error["node_id"] == f"{SCORE}[2]" and error["attempt_id"] == ids[2]
    assert error["message"] == (
        f"{SCORE}: 3 of 5 elements failed; min_success_ratio 0.6 needs 3 to succeed; "
        "element 2 failed: ValueError: cannot score 3"
    )
