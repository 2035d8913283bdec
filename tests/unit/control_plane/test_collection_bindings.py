"""List and dict bindings (lists and dicts of promises in a workflow body) in the execution
activities: a node starts, ahead of the workflow too, only once every node inside its
collections succeeded; its inputs, a map node's length and the workflow's outputs are built
from the items' values. On SQLite and PostgreSQL."""

from __future__ import annotations

import functools
import json

from sqlalchemy.orm import Session, sessionmaker

from control_plane.db.models import Execution
from control_plane.orchestration.activities import ExecutionActivities
from control_plane.orchestration.workflows import (
    FinishExecutionInput,
    NodeRef,
    StartAttemptsInput,
    UnitStart,
)
from fleetflow import map_task, task, workflow
from fleetflow.storage import LocalBlobStore
from tests.unit.control_plane.test_execution_activities import attempts_of, succeed
from tests.unit.control_plane.test_successor_starts import _by_node, _execution, _start


@task
def number(v: int) -> int:
    return v


@task
def total(xs: list[int], named: dict[str, int]) -> int:
    return sum(xs) + sum(named.values())


@task
def scale(x: int, k: int) -> int:
    return x * k


@workflow
def gathered(n: int) -> list[int]:
    a, b = number(v=n), number(v=2)
    summed = total(xs=[a, b, n, 4], named={"a": a, "nested": 1})
    map_task(functools.partial(scale, k=b))(x=[a, summed, 5])
    return [summed, a, number(v=7)]


A, B, TOTAL, SCALE, SEVEN = (node.id for node in gathered.spec.nodes)


def test_a_node_waits_for_every_node_in_its_collections_then_gets_their_values(
    activities: ExecutionActivities, session_factory: sessionmaker[Session], blobs: LocalBlobStore
) -> None:
    assert gathered.spec.node(TOTAL).upstream == [A, B]
    assert gathered.spec.node(SCALE).upstream == [A, TOTAL, B]
    execution_id = _execution(session_factory, gathered.spec, {"n": 3})
    activities.begin_execution(execution_id)
    a = _start(activities, execution_id, A)
    succeed(session_factory, a, {"o0": 3})
    assert activities.start_successors(a) == []  # `total` needs `b` too
    b = _start(activities, execution_id, B)
    succeed(session_factory, b, {"o0": 2})

    (summed,) = activities.start_successors(b)  # the fast path follows the list's items

    attempt = _by_node(session_factory, execution_id)[TOTAL]
    assert attempt.id == summed
    assert json.loads(blobs.get(attempt.inputs_uri)) == {
        "xs": [3, 2, 3, 4],
        "named": {"a": 3, "nested": 1},
    }
    succeed(session_factory, summed, {"o0": 16})
    # A map node over a list of promises: one element per item, `k` passed whole.
    assert activities.expand_map(NodeRef(execution_id, SCALE)) == 3
    activities.start_attempts(StartAttemptsInput(execution_id, [UnitStart(SCALE, 1, 1)]))
    element = next(a for a in attempts_of(session_factory, execution_id) if a.node_id == SCALE)
    assert json.loads(blobs.get(element.inputs_uri)) == {"x": 16, "k": 2}


def test_the_outputs_are_built_from_a_returned_list_of_promises(
    activities: ExecutionActivities, session_factory: sessionmaker[Session]
) -> None:
    execution_id = _execution(session_factory, gathered.spec, {"n": 3})
    activities.begin_execution(execution_id)
    for node_id, value in ((A, 3), (B, 2), (TOTAL, 16), (SEVEN, 7)):
        succeed(session_factory, _start(activities, execution_id, node_id), {"o0": value})
    activities.finish_execution(FinishExecutionInput(execution_id, "SUCCEEDED"))
    with session_factory() as session:
        execution = session.get_one(Execution, execution_id)
        assert execution.status == "SUCCEEDED"
        assert execution.outputs == {"o0": [16, 3, 7]}
