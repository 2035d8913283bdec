"""The execution activities on SQLite and PostgreSQL, called as the worker calls them: what
`begin_execution` plans, what `start_attempts` creates (idempotently, in one transaction, with
one wake-up of the scheduler), and what they read to do it.

Agents are stood in for by writing a succeeded attempt's outputs and state directly.
"""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlparse

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker
from temporalio.exceptions import ApplicationError

from control_plane.db.models import Execution, TaskAttempt, utcnow
from control_plane.db.repositories import attempts as attempts_repo
from control_plane.db.repositories.executions import create_execution, move_execution
from control_plane.db.repositories.tenants import get_or_create_tenant
from control_plane.db.repositories.workflows import register_workflow_version
from control_plane.db.session import transaction
from control_plane.orchestration.activities import ExecutionActivities
from control_plane.orchestration.workflows import (
    EXECUTION_FINISHED,
    AttemptStart,
    ChunkRef,
    NodeRef,
    StartAttemptInput,
    StartAttemptsInput,
    UnitStart,
)
from fleetflow import map_task, task, workflow
from fleetflow.states import NO_MAP_INDEX, AttemptState, ExecutionState
from fleetflow.storage import LocalBlobStore
from tests.sql_statements import statements
from tests.unit.control_plane.conftest import Wakes

BUNDLE = "d" * 64


@task
def numbers(n: int) -> list[int]:
    return list(range(n))


@task(cache=True, cache_version="1")
def square(x: int, offset: int) -> int:
    return x * x + offset


@task
def total(values: list[int]) -> int:
    return sum(values)


@workflow
def squares(n: int, offset: int = 0) -> int:
    return total(values=map_task(square)(x=numbers(n=n), offset=offset))


SPEC = squares.spec
NUMBERS, SQUARE, TOTAL = (node.id for node in SPEC.nodes)


@pytest.fixture
def execution_id(session_factory: sessionmaker[Session]) -> str:
    with transaction(session_factory) as session:
        tenant = get_or_create_tenant(session, "research")
        version = register_workflow_version(session, tenant.id, SPEC, BUNDLE, None)
        return create_execution(session, tenant.id, version, {"n": 3, "offset": 10}).id


def succeed(sessions: sessionmaker[Session], attempt_id: str, outputs: dict[str, object]) -> None:
    """What the agent and the task runtime leave behind: outputs, and the attempt SUCCEEDED."""
    with transaction(sessions) as session:
        attempt = session.get_one(TaskAttempt, attempt_id)
        path = Path(urlparse(attempt.outputs_uri).path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(outputs))
        session.execute(
            update(TaskAttempt)
            .where(TaskAttempt.id == attempt_id)
            .values(status=AttemptState.SUCCEEDED.value, finished_at=utcnow())
        )


def attempts_of(sessions: sessionmaker[Session], execution_id: str) -> list[TaskAttempt]:
    with sessions() as session:
        return list(
            session.scalars(
                select(TaskAttempt)
                .where(TaskAttempt.execution_id == execution_id)
                .order_by(TaskAttempt.created_at)
            )
        )


def test_the_plan_says_which_nodes_have_work_to_complete(
    activities: ExecutionActivities, execution_id: str
) -> None:
    plan = activities.begin_execution(execution_id)
    completes = {node.node_id: node.completes for node in plan.nodes}
    # The map node collects its outputs (and its task is cached); the others have nothing.
    assert completes == {NUMBERS: False, SQUARE: True, TOTAL: False}


def test_units_start_together_once_however_often_the_activity_runs(
    activities: ExecutionActivities,
    session_factory: sessionmaker[Session],
    blobs: LocalBlobStore,
    wakes: Wakes,
    execution_id: str,
) -> None:
    activities.begin_execution(execution_id)
    (first,) = activities.start_attempts(
        StartAttemptsInput(execution_id, [UnitStart(NUMBERS, NO_MAP_INDEX, 1)])
    ).starts
    succeed(session_factory, first.attempt_id, {"o0": [4, 5, 6]})
    units = [UnitStart(SQUARE, i, 1) for i in (2, 0, 1)]
    wakes.count = 0

    started = activities.start_attempts(StartAttemptsInput(execution_id, units)).starts
    again = activities.start_attempts(StartAttemptsInput(execution_id, units)).starts

    assert again == started  # a retried activity finds what the first run created
    assert [(s.cached, s.finished) for s in started] == [(False, None)] * 3
    assert wakes.count == 2  # once per run, not once per unit
    rows = attempts_of(session_factory, execution_id)
    assert [(r.node_id, r.map_index, r.attempt_number) for r in rows] == [
        (NUMBERS, NO_MAP_INDEX, 1),
        *((SQUARE, u.map_index, 1) for u in units),  # created in the order asked
    ]
    by_id = {r.id: r for r in rows}
    for unit, start in zip(units, started, strict=True):
        attempt = by_id[start.attempt_id]
        assert (attempt.map_index, attempt.status) == (unit.map_index, "PENDING")
        inputs = json.loads(blobs.get(attempt.inputs_uri))
        assert inputs == {"x": [4, 5, 6][unit.map_index], "offset": 10}


def test_a_unit_already_finished_is_answered_with_its_end(
    activities: ExecutionActivities, session_factory: sessionmaker[Session], execution_id: str
) -> None:
    unit = UnitStart(NUMBERS, NO_MAP_INDEX, 1)
    (start,) = activities.start_attempts(StartAttemptsInput(execution_id, [unit])).starts
    succeed(session_factory, start.attempt_id, {"o0": [1]})
    (again,) = activities.start_attempts(StartAttemptsInput(execution_id, [unit])).starts
    assert again.attempt_id == start.attempt_id
    assert again.finished is not None and again.finished.status == "SUCCEEDED"


def test_cached_units_come_from_the_cache_and_wake_no_one(
    activities: ExecutionActivities,
    session_factory: sessionmaker[Session],
    wakes: Wakes,
    execution_id: str,
) -> None:
    (first,) = activities.start_attempts(
        StartAttemptsInput(execution_id, [UnitStart(NUMBERS, NO_MAP_INDEX, 1)])
    ).starts
    succeed(session_factory, first.attempt_id, {"o0": [7, 7]})
    one, two = activities.start_attempts(
        StartAttemptsInput(execution_id, [UnitStart(SQUARE, 0, 1), UnitStart(SQUARE, 1, 1)])
    ).starts
    succeed(session_factory, one.attempt_id, {"o0": 59})
    activities.complete_node(NodeRef(execution_id, SQUARE))  # remembers 7 -> 59
    wakes.count = 0
    # The second element has the same inputs: its next attempt is a cache hit.
    (hit,) = activities.start_attempts(
        StartAttemptsInput(execution_id, [UnitStart(SQUARE, 1, 2)])
    ).starts
    assert hit.cached and wakes.count == 0


def test_the_start_per_unit_of_earlier_executions_is_the_same_start(
    activities: ExecutionActivities, execution_id: str
) -> None:
    legacy = activities.start_attempt(StartAttemptInput(execution_id, NUMBERS, 1))
    (batched,) = activities.start_attempts(
        StartAttemptsInput(execution_id, [UnitStart(NUMBERS, NO_MAP_INDEX, 1)])
    ).starts
    assert isinstance(legacy, AttemptStart) and batched == legacy


def test_activities_read_neither_attempts_nor_a_spec_they_already_parsed(
    activities: ExecutionActivities,
    session_factory: sessionmaker[Session],
    execution_id: str,
) -> None:
    for number in (1, 2, 3):  # attempts the execution already has
        activities.start_attempts(
            StartAttemptsInput(execution_id, [UnitStart(NUMBERS, NO_MAP_INDEX, number)])
        )
    with statements(session_factory) as first:
        activities.begin_execution(execution_id)
    with statements(session_factory) as second:
        activities.begin_execution(execution_id)
    assert not [s for s in first + second if "task_attempts" in s]
    assert len([s for s in first if "workflow_specs" in s]) <= 1
    assert not [s for s in second if "workflow_specs" in s]


def test_a_large_map_is_collected_chunk_by_chunk_and_each_chunk_hears_of_its_own(
    activities: ExecutionActivities,
    session_factory: sessionmaker[Session],
    blobs: LocalBlobStore,
    execution_id: str,
) -> None:
    (first,) = activities.start_attempts(
        StartAttemptsInput(execution_id, [UnitStart(NUMBERS, NO_MAP_INDEX, 1)])
    ).starts
    succeed(session_factory, first.attempt_id, {"o0": [1, 2, 3, 4, 5]})
    chunks = [(0, 0, 3), (1, 3, 2)]  # elements [0, 3) and [3, 5)
    for chunk, begin, count in chunks:
        chunk_workflow = f"{execution_id}/{SQUARE}/chunk-{chunk}"
        units = [UnitStart(SQUARE, i, 1) for i in range(begin, begin + count)]
        starts = activities.start_attempts(
            StartAttemptsInput(execution_id, units, chunk_workflow)
        ).starts
        for unit, start in zip(units, starts, strict=True):
            succeed(session_factory, start.attempt_id, {"o0": unit.map_index * 100})
        activities.complete_chunk(ChunkRef(execution_id, SQUARE, chunk, begin, count))
    activities.complete_node(NodeRef(execution_id, SQUARE, chunks=len(chunks)))

    # The node's outputs are the chunks' parts in element order, as an unchunked node's.
    node_outputs = activities._node_outputs  # what the next node's inputs resolve from
    with session_factory() as session:
        execution = session.get_one(Execution, execution_id)
        node = SPEC.node(SQUARE)
        assert node_outputs(session, execution, node) == {"o0": [0, 100, 200, 300, 400]}
    # Each finished attempt is signalled to the chunk that created it; others to the execution.
    with session_factory() as session:
        targets = {
            (a.node_id, a.map_index): a.workflow_id or execution_id
            for a in attempts_of(session_factory, execution_id)
        }
        pending = {f.attempt_id: f.workflow_id for f in attempts_repo.unsignalled_finished(session)}
    assert targets[(NUMBERS, NO_MAP_INDEX)] == execution_id
    assert targets[(SQUARE, 1)] == f"{execution_id}/{SQUARE}/chunk-0"
    assert targets[(SQUARE, 4)] == f"{execution_id}/{SQUARE}/chunk-1"
    assert sorted(set(pending.values())) == sorted(
        {execution_id, f"{execution_id}/{SQUARE}/chunk-0", f"{execution_id}/{SQUARE}/chunk-1"}
    )


def test_no_attempt_starts_for_an_execution_that_finished_meanwhile(
    activities: ExecutionActivities, session_factory: sessionmaker[Session], execution_id: str
) -> None:
    # A cancel that lands while `start_attempts` runs: whichever commits first, no attempt
    # is left PENDING for a finished execution.
    activities.begin_execution(execution_id)
    with transaction(session_factory) as session:
        move_execution(session, session.get_one(Execution, execution_id), ExecutionState.CANCELLED)
    with pytest.raises(ApplicationError) as refused:
        activities.start_attempts(
            StartAttemptsInput(execution_id, [UnitStart(NUMBERS, NO_MAP_INDEX, 1)])
        )
    assert refused.value.type == EXECUTION_FINISHED and refused.value.non_retryable
    assert "already CANCELLED" in str(refused.value)
    assert attempts_of(session_factory, execution_id) == []
