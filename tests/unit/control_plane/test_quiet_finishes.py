"""`ExecutionActivities.quiet_finishes`, the finish notifier's policy: a plain success is held
(told without a signal) while its execution has attempts active, and the finish of its last
active attempt is signalled with the news (`look`). Never for a failure, a node the workflow
has work after, or an execution whose workflow did not ask (`hold_finishes`)."""

from __future__ import annotations

from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from control_plane.db.models import TaskAttempt
from control_plane.db.repositories import attempts as attempts_repo
from control_plane.db.session import transaction
from control_plane.orchestration.activities import ExecutionActivities
from control_plane.orchestration.workflows import FindFinished
from fleetflow.states import AttemptState
from tests.unit.control_plane.test_execution_activities import succeed
from tests.unit.control_plane.test_successor_starts import (
    JOIN,
    LEFT,
    RIGHT,
    TOP,
    _by_node,
    _execution,
    _nodes,
    _start,
    diamond,
    guarded,
)


def _decided(
    activities: ExecutionActivities, sessions: sessionmaker[Session]
) -> dict[str, tuple[bool, bool]]:
    """Attempt id -> (held, look), for every finish the outbox holds."""
    with sessions() as session:
        pending = attempts_repo.unsignalled_finished(session)
        return {i.attempt_id: (i.held, i.look) for i in activities.quiet_finishes(session, pending)}


def _signalled(sessions: sessionmaker[Session], *attempt_ids: str) -> None:
    with transaction(sessions) as session:
        attempts_repo.mark_signalled(session, list(attempt_ids))


def _top_succeeded(
    activities: ExecutionActivities, sessions: sessionmaker[Session]
) -> tuple[str, str]:
    """A diamond whose workflow reads held finishes, its top node succeeded and the two it
    made ready started ahead (waiting to be placed: active); (execution, top's attempt)."""
    execution_id = _execution(sessions, diamond.spec, {"x": 1})
    activities.begin_quiet_execution(execution_id)
    top = _start(activities, execution_id, TOP)
    succeed(sessions, top, {"o0": 2})
    activities.start_successors(top)
    return execution_id, top


def test_plain_successes_are_held_until_the_last_active_attempt_ends(
    activities: ExecutionActivities, session_factory: sessionmaker[Session]
) -> None:
    execution_id, top = _top_succeeded(activities, session_factory)
    assert _decided(activities, session_factory) == {top: (True, False)}
    _signalled(session_factory, top)  # as the notifier records a held finish

    attempts = _by_node(session_factory, execution_id)
    succeed(session_factory, attempts[LEFT].id, {"o0": 3})
    assert _decided(activities, session_factory) == {attempts[LEFT].id: (True, False)}
    _signalled(session_factory, attempts[LEFT].id)
    succeed(session_factory, attempts[RIGHT].id, {"o0": 3})
    activities.start_successors(attempts[RIGHT].id)  # join is ready now
    assert _decided(activities, session_factory) == {attempts[RIGHT].id: (True, False)}
    _signalled(session_factory, attempts[RIGHT].id)

    join = _by_node(session_factory, execution_id)[JOIN].id
    succeed(session_factory, join, {"o0": 6})
    # Nothing active any more: signalled, with the news of the three held before it.
    assert _decided(activities, session_factory) == {join: (False, True)}
    found = activities.find_finished(FindFinished(execution_id, [top, join, "at-elsewhere"]))
    assert sorted((f.attempt_id, f.status) for f in found.finished) == sorted(
        [(top, "SUCCEEDED"), (join, "SUCCEEDED")]
    )


def test_nothing_is_held_for_a_workflow_that_did_not_ask(
    activities: ExecutionActivities, session_factory: sessionmaker[Session]
) -> None:
    execution_id = _execution(session_factory, diamond.spec, {"x": 1})
    activities.begin_execution(execution_id)  # a workflow begun before `hold_finishes`
    top = _start(activities, execution_id, TOP)
    succeed(session_factory, top, {"o0": 2})
    activities.start_successors(top)
    assert _decided(activities, session_factory) == {top: (False, False)}


def test_a_failure_is_signalled_while_others_run(
    activities: ExecutionActivities, session_factory: sessionmaker[Session]
) -> None:
    execution_id, top = _top_succeeded(activities, session_factory)
    _signalled(session_factory, top)
    left = _by_node(session_factory, execution_id)[LEFT].id
    with transaction(session_factory) as session:
        session.execute(
            update(TaskAttempt)
            .where(TaskAttempt.id == left)
            .values(status=AttemptState.FAILED.value, finished_at=TaskAttempt.created_at)
        )
    assert _decided(activities, session_factory) == {left: (False, False)}  # right still waits


def test_a_node_the_workflow_has_work_after_is_never_held(
    activities: ExecutionActivities, session_factory: sessionmaker[Session]
) -> None:
    """`remembered` is cached (`complete_node` remembers its outputs), and `upto` feeds a map
    node (the workflow expands it): their successes are signalled, whatever else is active."""
    cached, after_cache, _, _ = _nodes(guarded.spec)
    execution_id = _execution(session_factory, guarded.spec, {"x": 1})
    activities.begin_execution(execution_id)
    activities.hold_finishes(execution_id)
    first = _start(activities, execution_id, cached)
    succeed(session_factory, first, {"o0": 1})
    _start(activities, execution_id, after_cache)  # active when the outbox is read
    assert _decided(activities, session_factory) == {first: (False, False)}
    quiet = activities._quiet_nodes("guarded", guarded.spec)  # noqa: SLF001
    assert quiet == {after_cache}  # feeds `upto`, which starts ahead; `upto` feeds a map


def test_attempts_of_a_chunk_or_a_sub_dag_keep_nothing_held(
    activities: ExecutionActivities, session_factory: sessionmaker[Session]
) -> None:
    """Their last finish signals their own workflow, never the execution's: active meanwhile,
    they leave a success signalled, with the news, as if nothing were."""
    execution_id, top = _top_succeeded(activities, session_factory)
    with transaction(session_factory) as session:  # left and right now a chunk's, as it were
        session.execute(
            update(TaskAttempt)
            .where(TaskAttempt.execution_id == execution_id, TaskAttempt.id != top)
            .values(workflow_id=f"{execution_id}/n/chunk-0")
        )
    assert _decided(activities, session_factory) == {top: (False, True)}
