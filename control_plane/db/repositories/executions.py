"""Executions: creating and reading them, and state moves the transition policy allows."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from control_plane.db.models import (
    Cluster,
    Execution,
    IdempotencyKey,
    TaskAttempt,
    WorkflowVersion,
    new_id,
    utcnow,
)
from control_plane.db.repositories._insert import insert_ignoring_conflicts
from control_plane.db.repositories.notifications import queue_deliveries
from control_plane.execution_ends import record_end
from control_plane.lifecycle.transitions import (
    check_execution_transition,
    execution_values,
)
from control_plane.metrics import count_execution_finished
from fleetflow.states import ExecutionState


def create_execution(
    session: Session,
    tenant_id: str,
    workflow_version: WorkflowVersion,
    inputs: dict[str, Any],
    *,
    execution_id: str | None = None,
    priority: int = 0,
    relaunched_from: str | None = None,
    recovered_from: str | None = None,
    notifications: list[Any] | None = None,
    launched_by: str | None = None,
) -> Execution:
    """Persist a QUEUED execution of `workflow_version` with already validated `inputs`
    (as they are to be stored: see control_plane/large_values.py), maybe started again from
    another (`relaunched_from`, `recovered_from`), with its `notifications` rules (JSON)."""
    if workflow_version.tenant_id != tenant_id:
        raise ValueError(
            f"workflow version {workflow_version.id} does not belong to tenant {tenant_id}"
        )
    execution = Execution(
        id=execution_id or new_id("ex"),
        tenant_id=tenant_id,
        workflow_spec_id=workflow_version.id,
        workflow=workflow_version,
        status=ExecutionState.QUEUED.value,
        inputs=inputs,
        priority=priority,
        relaunched_from=relaunched_from,
        recovered_from=recovered_from,
        notifications=notifications or None,
        launched_by=launched_by,
        created_at=utcnow(),
    )
    session.add(execution)
    session.flush()
    return execution


def get_idempotency_key(
    session: Session, tenant_id: str, key: str, *, not_before: datetime | None = None
) -> IdempotencyKey | None:
    """The tenant's record of an `Idempotency-Key`, if the key was used (at or after
    `not_before`: an older record has expired and no longer dedupes)."""
    query = select(IdempotencyKey).where(
        IdempotencyKey.tenant_id == tenant_id, IdempotencyKey.key == key
    )
    if not_before is not None:
        query = query.where(IdempotencyKey.created_at >= not_before)
    # Fresh from the database: a row purged and claimed again must not read as the old one.
    return session.scalar(query.execution_options(populate_existing=True))


def purge_idempotency_keys(session: Session, *, older_than: datetime) -> int:
    """Delete every tenant's keys recorded before `older_than` (expired); how many went."""
    result = session.execute(
        delete(IdempotencyKey).where(IdempotencyKey.created_at < older_than),
        execution_options={"synchronize_session": False},
    )
    return int(getattr(result, "rowcount", 0) or 0)


def claim_idempotency_key(
    session: Session,
    tenant_id: str,
    key: str,
    request_hash: str,
    execution_id: str,
    *,
    not_before: datetime,
) -> IdempotencyKey:
    """Record that `key` created `execution_id` (flushed already), unless a concurrent request
    recorded it first: returns the row that holds the key, whichever execution it names. A
    caller whose execution is not the one named rolls back and answers with the winner's.

    Keys recorded before `not_before` have expired: they are purged first (all tenants'; the
    table holds one window of keys), so an expired key can be claimed again."""
    purge_idempotency_keys(session, older_than=not_before)
    insert_ignoring_conflicts(
        session,
        IdempotencyKey,
        {
            "tenant_id": tenant_id,
            "key": key,
            "request_hash": request_hash,
            "execution_id": execution_id,
            "created_at": utcnow(),
        },
    )
    row = get_idempotency_key(session, tenant_id, key)
    assert row is not None
    return row


def get_execution(session: Session, tenant_id: str, execution_id: str) -> Execution | None:
    """The execution, with its workflow version and attempts, if it belongs to the tenant."""
    return session.scalar(
        select(Execution).where(Execution.id == execution_id, Execution.tenant_id == tenant_id)
    )


def execution_progress(
    session: Session, tenant_id: str, execution_id: str
) -> tuple[str, datetime | None, dict[str, int]] | None:
    """(status, finished_at, attempts per state) of the tenant's execution, None if it is
    not the tenant's: two indexed reads, no attempt row loaded."""
    row = session.execute(
        select(Execution.status, Execution.finished_at).where(
            Execution.id == execution_id, Execution.tenant_id == tenant_id
        )
    ).first()
    if row is None:
        return None
    counts = session.execute(
        select(TaskAttempt.status, func.count())
        .where(TaskAttempt.execution_id == execution_id)
        .group_by(TaskAttempt.status)
    ).all()
    return str(row.status), row.finished_at, {str(state): int(n) for state, n in counts}


def list_executions(
    session: Session,
    tenant_id: str,
    *,
    limit: int = 50,
    offset: int = 0,
    status: ExecutionState | None = None,
    workflow: str | None = None,
    id_contains: str | None = None,
    launched_by: str | None = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
) -> list[Execution]:
    """The tenant's executions, newest first; only those of `workflow` (a name), those whose
    id contains `id_contains`, those `launched_by` (a principal's name) launched and those
    created in [`created_after`, `created_before`), when given."""
    query = select(Execution).where(Execution.tenant_id == tenant_id)
    if launched_by is not None:
        query = query.where(Execution.launched_by == launched_by)
    if created_after is not None:
        query = query.where(Execution.created_at >= created_after)
    if created_before is not None:
        query = query.where(Execution.created_at < created_before)
    if status is not None:
        query = query.where(Execution.status == status.value)
    if workflow is not None:
        query = query.where(
            Execution.workflow_spec_id.in_(
                select(WorkflowVersion.id).where(
                    WorkflowVersion.tenant_id == tenant_id, WorkflowVersion.name == workflow
                )
            )
        )
    if id_contains:
        query = query.where(Execution.id.contains(id_contains, autoescape=True))
    query = query.order_by(Execution.created_at.desc(), Execution.id.desc())
    return list(session.scalars(query.limit(limit).offset(offset)))


def cluster_names(session: Session, cluster_ids: Iterable[str | None]) -> dict[str, str]:
    """Names of the given clusters by id (attempts reference clusters by id only)."""
    ids = {cluster_id for cluster_id in cluster_ids if cluster_id is not None}
    if not ids:
        return {}
    rows = session.execute(select(Cluster.id, Cluster.name).where(Cluster.id.in_(ids)))
    return dict(rows.all())  # not dict(rows): a Result has keys() and would pass for a mapping


def admit_execution(session: Session, execution_id: str) -> None:
    """Stamp the moment the execution's first attempt was admitted (it counts as running
    against its tenant's quota from then on); later calls change nothing."""
    session.execute(
        update(Execution)
        .where(Execution.id == execution_id, Execution.admitted_at.is_(None))
        .values(admitted_at=utcnow())
        .execution_options(synchronize_session=False)
    )


def move_execution(
    session: Session, execution: Execution, target: ExecutionState, **extra: Any
) -> bool:
    """Compare-and-set an execution's state through the transition policy; False when the
    policy refuses the move or someone else moved it first. A move to a terminal state queues
    the execution's notifications in the same transaction."""
    if check_execution_transition(execution.status, target) is not None:
        return False
    result = session.execute(
        update(Execution)
        .where(Execution.id == execution.id, Execution.status == execution.status)
        .values(**execution_values(target, utcnow()), **extra)
        .execution_options(synchronize_session=False)
    )
    session.refresh(execution)
    moved = bool(result.rowcount)  # type: ignore[attr-defined]
    if moved and target.terminal:
        count_execution_finished(session, target)
        record_end(session, execution.id)
        queue_deliveries(session, execution, target)
    return moved
