"""`ExecutionActivities.start_successors`: the nodes a success made ready are created at once,
ahead of the workflow, only where the workflow would start them with nothing to do first, and
the workflow's own `start_attempts` then finds them. On SQLite and PostgreSQL."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from control_plane.db.models import Execution, TaskAttempt
from control_plane.db.repositories.executions import create_execution, move_execution
from control_plane.db.repositories.tenants import get_or_create_tenant
from control_plane.db.repositories.workflows import register_workflow_version
from control_plane.db.session import transaction
from control_plane.orchestration.activities import ExecutionActivities
from control_plane.orchestration.workflows import StartAttemptsInput, UnitStart
from fleetflow import map_task, task, workflow
from fleetflow.ir import WorkflowSpec
from fleetflow.states import NO_MAP_INDEX, AttemptState, ExecutionState
from fleetflow.storage import LocalBlobStore
from tests.unit.control_plane.conftest import Wakes
from tests.unit.control_plane.test_execution_activities import (
    BUNDLE,
    attempts_of,
    succeed,
)


@task
def inc(x: int) -> int:
    return x + 1


@task
def add(a: int, b: int) -> int:
    return a + b


@task(cache=True, cache_version="1")
def remembered(x: int) -> int:
    return x


@task
def upto(n: int) -> list[int]:
    return list(range(n))


@workflow
def diamond(x: int) -> int:
    top = inc(x=x)
    return add(a=inc(x=top), b=inc(x=top))


@workflow
def guarded(x: int) -> list[int]:
    after_cache = inc(x=remembered(x=x))  # its upstream has `complete_node` to run
    return map_task(inc)(x=upto(n=after_cache))  # a map node: the workflow expands it


def _nodes(spec: WorkflowSpec) -> list[str]:
    return [node.id for node in spec.nodes]


TOP, LEFT, RIGHT, JOIN = _nodes(diamond.spec)


def _execution(sessions: sessionmaker[Session], spec: WorkflowSpec, inputs: dict) -> str:
    with transaction(sessions) as session:
        tenant = get_or_create_tenant(session, "research")
        version = register_workflow_version(session, tenant.id, spec, BUNDLE, None)
        return create_execution(session, tenant.id, version, inputs).id


def _start(activities: ExecutionActivities, execution_id: str, node_id: str) -> str:
    (start,) = activities.start_attempts(
        StartAttemptsInput(execution_id, [UnitStart(node_id, NO_MAP_INDEX, 1)])
    ).starts
    return start.attempt_id


def _by_node(sessions: sessionmaker[Session], execution_id: str) -> dict[str, TaskAttempt]:
    return {a.node_id: a for a in attempts_of(sessions, execution_id)}


def test_a_success_creates_the_nodes_it_made_ready_with_their_inputs_once(
    activities: ExecutionActivities,
    session_factory: sessionmaker[Session],
    blobs: LocalBlobStore,
    wakes: Wakes,
) -> None:
    execution_id = _execution(session_factory, diamond.spec, {"x": 1})
    activities.begin_execution(execution_id)
    top = _start(activities, execution_id, TOP)
    succeed(session_factory, top, {"o0": 2})
    wakes.count = 0

    created = activities.start_successors(top)

    attempts = _by_node(session_factory, execution_id)
    assert sorted(created) == sorted([attempts[LEFT].id, attempts[RIGHT].id])
    assert JOIN not in attempts  # it needs both
    for node_id in (LEFT, RIGHT):
        attempt = attempts[node_id]
        assert (attempt.status, attempt.attempt_number, attempt.workflow_id) == (
            "PENDING",
            1,
            None,
        )
        assert json.loads(blobs.get(attempt.inputs_uri)) == {"x": 2}
    assert wakes.count == 1  # the scheduler places them now
    assert activities.start_successors(top) == []  # a repeated report starts nothing more

    # The workflow catches up: its start finds the attempts created ahead of it.
    assert _start(activities, execution_id, LEFT) == attempts[LEFT].id
    assert len(attempts_of(session_factory, execution_id)) == 3


def looks_ahead(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """What each look for nodes to start ahead was about (a transaction each), as they come."""
    looked: list[str] = []
    start_ahead = ExecutionActivities._start_ahead  # noqa: SLF001 - counted, not changed

    def counted(self: ExecutionActivities, which: str, find: Any) -> list[str]:
        looked.append(which)
        return start_ahead(self, which, find)

    monkeypatch.setattr(ExecutionActivities, "_start_ahead", counted)
    return looked


def test_a_node_without_successors_costs_no_look_once_its_execution_was_read(
    activities: ExecutionActivities,
    session_factory: sessionmaker[Session],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A wide fan-out of independent nodes: each success would otherwise cost a transaction
    to find that its node starts nothing. The spec (immutable) says so once it was read."""
    looked = looks_ahead(monkeypatch)
    execution_id = _execution(session_factory, diamond.spec, {"x": 1})
    top = _start(activities, execution_id, TOP)
    succeed(session_factory, top, {"o0": 2})
    left, right = activities.start_successors(top, execution_id, TOP)  # read: the spec
    succeed(session_factory, left, {"o0": 3})
    assert activities.start_successors(left, execution_id, LEFT) == []  # has one: looked
    succeed(session_factory, right, {"o0": 4})
    (join,) = activities.start_successors(right, execution_id, RIGHT)
    succeed(session_factory, join, {"o0": 7})
    assert len(looked) == 3

    assert activities.start_successors(join, execution_id, JOIN) == []
    assert activities.start_successors(join) == []  # without its node: looked
    assert len(looked) == 4


def test_the_workflow_catching_up_neither_rewrites_inputs_nor_wakes_for_placed_attempts(
    activities: ExecutionActivities,
    session_factory: sessionmaker[Session],
    blobs: LocalBlobStore,
    wakes: Wakes,
) -> None:
    """A chain's step: the report created the next attempt and the scheduler placed it before
    the workflow's `start_attempts` ran. That finds it as it is: no second write of its inputs
    (nor reading them from upstream again), no wake-up for a pass with nothing to place. One
    still waiting (PENDING) is woken for, as a retried activity may need."""
    execution_id = _execution(session_factory, diamond.spec, {"x": 1})
    activities.begin_execution(execution_id)
    top = _start(activities, execution_id, TOP)
    succeed(session_factory, top, {"o0": 2})
    activities.start_successors(top)
    attempts = _by_node(session_factory, execution_id)
    with transaction(session_factory) as session:  # placed, as the scheduler would have
        session.execute(
            update(TaskAttempt)
            .where(TaskAttempt.id == attempts[LEFT].id)
            .values(status=AttemptState.ASSIGNED.value)
        )
    inputs = Path(urlparse(attempts[LEFT].inputs_uri).path)
    inputs.unlink()  # a write would bring it back
    wakes.count = 0

    assert _start(activities, execution_id, LEFT) == attempts[LEFT].id
    assert not inputs.exists()
    assert wakes.count == 0

    assert _start(activities, execution_id, RIGHT) == attempts[RIGHT].id  # still PENDING
    assert wakes.count == 1


def test_a_node_starts_once_its_last_upstream_succeeded(
    activities: ExecutionActivities, session_factory: sessionmaker[Session], blobs: LocalBlobStore
) -> None:
    execution_id = _execution(session_factory, diamond.spec, {"x": 1})
    top = _start(activities, execution_id, TOP)
    succeed(session_factory, top, {"o0": 2})
    left, right = activities.start_successors(top)
    succeed(session_factory, left, {"o0": 3})
    assert activities.start_successors(left) == []  # the other side still runs
    succeed(session_factory, right, {"o0": 4})

    (join,) = activities.start_successors(right)

    attempt = _by_node(session_factory, execution_id)[JOIN]
    assert attempt.id == join
    assert json.loads(blobs.get(attempt.inputs_uri)) in ({"a": 3, "b": 4}, {"a": 4, "b": 3})


def test_nothing_starts_for_a_node_the_workflow_has_work_before(
    activities: ExecutionActivities, session_factory: sessionmaker[Session]
) -> None:
    """After a cached node (`complete_node` remembers it) and before a map node (the workflow
    expands it, maybe into chunk workflows), only the workflow starts the next node."""
    remember, after_cache, upto_node, _mapped = _nodes(guarded.spec)
    execution_id = _execution(session_factory, guarded.spec, {"x": 2})
    first = _start(activities, execution_id, remember)
    succeed(session_factory, first, {"o0": 2})
    assert activities.start_successors(first) == []
    second = _start(activities, execution_id, after_cache)
    succeed(session_factory, second, {"o0": 3})
    third = _start(activities, execution_id, upto_node)
    succeed(session_factory, third, {"o0": [0, 1, 2]})
    assert activities.start_successors(third) == []
    assert len(attempts_of(session_factory, execution_id)) == 3


@pytest.mark.parametrize("ending", ["CANCELLED", "FAILED"])
def test_nothing_starts_for_an_execution_that_ended_or_an_attempt_that_did_not_succeed(
    activities: ExecutionActivities, session_factory: sessionmaker[Session], ending: str
) -> None:
    execution_id = _execution(session_factory, diamond.spec, {"x": 1})
    activities.begin_execution(execution_id)
    top = _start(activities, execution_id, TOP)
    with transaction(session_factory) as session:  # the attempt failed: no success to follow
        session.execute(update(TaskAttempt).where(TaskAttempt.id == top).values(status=ending))
    assert activities.start_successors(top) == []
    succeed(session_factory, top, {"o0": 2})
    with transaction(session_factory) as session:  # a cancel or a failure elsewhere landed
        move_execution(session, session.get_one(Execution, execution_id), ExecutionState(ending))
    assert activities.start_successors(top) == []
    assert activities.start_successors("at-" + "0" * 32) == []  # no such attempt
    assert len(attempts_of(session_factory, execution_id)) == 1


def test_a_failure_is_logged_and_leaves_the_start_to_the_workflow(
    activities: ExecutionActivities,
    session_factory: sessionmaker[Session],
    caplog: pytest.LogCaptureFixture,
) -> None:
    execution_id = _execution(session_factory, diamond.spec, {"x": 1})
    top = _start(activities, execution_id, TOP)
    succeed(session_factory, top, {"o0": 2})
    Path(urlparse(_by_node(session_factory, execution_id)[TOP].outputs_uri).path).unlink()

    with caplog.at_level(logging.WARNING):
        assert activities.start_successors(top) == []

    assert "ahead of the workflow; it starts them" in caplog.text
    assert [a.node_id for a in attempts_of(session_factory, execution_id)] == [TOP]
    assert AttemptState.SUCCEEDED.value == _by_node(session_factory, execution_id)[TOP].status


def test_a_new_execution_starts_the_nodes_that_need_only_its_inputs(
    activities: ExecutionActivities,
    session_factory: sessionmaker[Session],
    blobs: LocalBlobStore,
    wakes: Wakes,
) -> None:
    execution_id = _execution(session_factory, diamond.spec, {"x": 5})

    (top,) = activities.start_roots(execution_id)  # still QUEUED: its workflow is starting

    attempt = _by_node(session_factory, execution_id)[TOP]
    assert (attempt.id, attempt.status, attempt.attempt_number) == (top, "PENDING", 1)
    assert json.loads(blobs.get(attempt.inputs_uri)) == {"x": 5}
    assert wakes.count == 1
    assert activities.start_roots(execution_id) == []  # a second start of it: nothing more
    assert _start(activities, execution_id, TOP) == top  # the workflow's start finds it

    # A map node is expanded by the workflow; a finished execution starts nothing.
    mapped = _execution(session_factory, guarded.spec, {"x": 1})
    assert [len(activities.start_roots(mapped))] == [1]  # `remembered`, not the map
    cancelled = _execution(session_factory, diamond.spec, {"x": 1})
    with transaction(session_factory) as session:
        move_execution(session, session.get_one(Execution, cancelled), ExecutionState.CANCELLED)
    assert activities.start_roots(cancelled) == []
