"""Task attempts: creation, placement, leasing and agent status reports.

Every state change is a compare-and-set `UPDATE … WHERE status = <seen>` after the transition
policy allowed it, so concurrent leases, duplicated or late reports cannot both win.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from control_plane.db.models import NO_MAP_INDEX, Cluster, TaskAttempt, new_id, utcnow
from control_plane.db.repositories._insert import insert_ignoring_conflicts
from control_plane.db.repositories.clusters import online_clusters
from control_plane.orchestration.states import AttemptState
from control_plane.orchestration.transitions import (
    IllegalTransitionError,
    attempt_values,
    check_attempt_transition,
)

A = AttemptState
ACTIVE_STATES = (A.ASSIGNED.value, A.LEASED.value, A.RUNNING.value)


def create_attempt(
    session: Session,
    *,
    execution_id: str,
    node_id: str,
    task_name: str,
    attempt_number: int,
    inputs_uri: str,
    outputs_uri: str,
    map_index: int = NO_MAP_INDEX,
    cache_hit: bool = False,
) -> TaskAttempt:
    """Create the attempt, or return the one that already exists (activities retry).

    A cache hit is born SUCCEEDED with the cached outputs: creation, not a state move.
    """
    insert_ignoring_conflicts(
        session,
        TaskAttempt,
        {
            "id": new_id("at"),
            "execution_id": execution_id,
            "node_id": node_id,
            "map_index": map_index,
            "task_name": task_name,
            "attempt_number": attempt_number,
            "status": (A.SUCCEEDED if cache_hit else A.PENDING).value,
            "cache_hit": cache_hit,
            "inputs_uri": inputs_uri,
            "outputs_uri": outputs_uri,
            "created_at": utcnow(),
            "finished_at": utcnow() if cache_hit else None,
        },
    )
    attempt = find_attempt(session, execution_id, node_id, attempt_number, map_index)
    assert attempt is not None
    return attempt


def find_attempt(
    session: Session,
    execution_id: str,
    node_id: str,
    attempt_number: int,
    map_index: int = NO_MAP_INDEX,
) -> TaskAttempt | None:
    return session.scalar(
        select(TaskAttempt).where(
            TaskAttempt.execution_id == execution_id,
            TaskAttempt.node_id == node_id,
            TaskAttempt.map_index == map_index,
            TaskAttempt.attempt_number == attempt_number,
        )
    )


def latest_succeeded_attempt(
    session: Session, execution_id: str, node_id: str, map_index: int = NO_MAP_INDEX
) -> TaskAttempt:
    attempt = session.scalar(
        select(TaskAttempt)
        .where(
            TaskAttempt.execution_id == execution_id,
            TaskAttempt.node_id == node_id,
            TaskAttempt.map_index == map_index,
            TaskAttempt.status == A.SUCCEEDED.value,
        )
        .order_by(TaskAttempt.attempt_number.desc())
    )
    if attempt is None:
        raise LookupError(f"node {node_id} of {execution_id} has no succeeded attempt")
    return attempt


def move_attempt(
    session: Session, attempt: TaskAttempt, target: AttemptState, **extra: object
) -> bool:
    """Compare-and-set the attempt's state; False when someone else moved it first."""
    check_attempt_transition(attempt.status, target)
    result = session.execute(
        update(TaskAttempt)
        .where(TaskAttempt.id == attempt.id, TaskAttempt.status == attempt.status)
        .values(**attempt_values(target, utcnow()), **extra)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        return False
    session.refresh(attempt)
    return True


def place_pending_attempts(
    session: Session, *, heartbeat_grace: timedelta, only_cluster: Cluster | None = None
) -> int:
    """Assign PENDING attempts to online clusters, spreading by active attempts.

    The walking skeleton's placement: every online cluster is eligible; the one with the
    fewest active attempts wins, ties broken by name. Quotas, GPU types and labels come with
    the placement issue. Returns how many attempts were assigned.
    """
    clusters = online_clusters(session, grace=heartbeat_grace)
    if only_cluster is not None:
        clusters = [c for c in clusters if c.id == only_cluster.id]
    if not clusters:
        return 0
    rows = session.execute(
        select(TaskAttempt.cluster_id, func.count())
        .where(TaskAttempt.status.in_(ACTIVE_STATES))
        .group_by(TaskAttempt.cluster_id)
    ).all()
    load: dict[str | None, int] = {row[0]: row[1] for row in rows}
    pending = session.scalars(
        select(TaskAttempt)
        .where(TaskAttempt.status == A.PENDING.value)
        .order_by(TaskAttempt.created_at)
        .limit(100)
    ).all()
    assigned = 0
    for attempt in pending:
        target = min(clusters, key=lambda c: (load.get(c.id, 0), c.name))
        if move_attempt(session, attempt, A.ASSIGNED, cluster_id=target.id):
            load[target.id] = load.get(target.id, 0) + 1
            assigned += 1
    return assigned


def lease_attempts(session: Session, cluster: Cluster, max_attempts: int) -> list[TaskAttempt]:
    """Hand this cluster's ASSIGNED attempts to its agent, bumping each fencing token."""
    candidates = session.scalars(
        select(TaskAttempt)
        .where(TaskAttempt.cluster_id == cluster.id, TaskAttempt.status == A.ASSIGNED.value)
        .order_by(TaskAttempt.created_at)
        .limit(max_attempts)
    ).all()
    leased = []
    for attempt in candidates:
        if move_attempt(session, attempt, A.LEASED, fencing_token=attempt.fencing_token + 1):
            leased.append(attempt)
    return leased


@dataclass(frozen=True)
class ReportOutcome:
    accepted: bool
    reason: str = ""
    attempt: TaskAttempt | None = None
    # True when this report moved the attempt into a terminal state.
    finished: bool = False


def apply_report(
    session: Session,
    cluster: Cluster,
    *,
    attempt_id: str,
    fencing_token: int,
    state: AttemptState,
    sequence: int,
    message: str | None,
    traceback: str | None,
) -> ReportOutcome:
    """Apply one agent report; idempotent, ordered by `sequence`, fenced by `fencing_token`."""
    attempt = session.get(TaskAttempt, attempt_id)
    if attempt is None or attempt.cluster_id != cluster.id:
        # The same answer whether the attempt is another cluster's or does not exist.
        return ReportOutcome(False, "unknown attempt")
    if fencing_token != attempt.fencing_token:
        return ReportOutcome(False, "stale fencing token: the attempt was leased again")
    if sequence <= attempt.last_report_sequence:
        return ReportOutcome(True, "duplicate report ignored", attempt)
    if attempt.status == state.value:
        attempt.last_report_sequence = sequence
        return ReportOutcome(True, "no change", attempt)
    extra: dict[str, object] = {"last_report_sequence": sequence}
    if state in (A.FAILED, A.CANCELLED):
        extra.update(error_message=message or None, error_traceback=traceback or None)
    try:
        moved = move_attempt(session, attempt, state, **extra)
    except IllegalTransitionError as exc:
        return ReportOutcome(False, str(exc), attempt)
    if not moved:
        return ReportOutcome(False, "attempt changed concurrently; report again", attempt)
    return ReportOutcome(True, "", attempt, finished=state.terminal)
