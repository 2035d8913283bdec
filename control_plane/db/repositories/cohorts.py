"""Cohorts and their members (nominal GPU quota and borrowing limits per GPU type, the
within-tenant preemption policy); the active GPU attempts of a cohort's members; preemption
(an attempt's move to PREEMPTED)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from control_plane.db.models import (
    Cluster,
    Cohort,
    CohortMember,
    Execution,
    TaskAttempt,
    Tenant,
    new_id,
    utcnow,
)
from control_plane.db.repositories.attempts import ACTIVE_STATES, move_attempt
from fleetflow.states import AttemptState

A = AttemptState


def get_cohort(session: Session, name: str) -> Cohort | None:
    return session.scalars(select(Cohort).where(Cohort.name == name)).first()


def list_cohorts(session: Session) -> list[Cohort]:
    return list(session.scalars(select(Cohort).order_by(Cohort.name)))


def create_cohort(
    session: Session, name: str, *, preemption_grace_seconds: int | None = None
) -> Cohort:
    cohort = Cohort(id=new_id("co"), name=name)
    if preemption_grace_seconds is not None:
        cohort.preemption_grace_seconds = preemption_grace_seconds
    session.add(cohort)
    session.flush()
    return cohort


def delete_cohort(session: Session, cohort: Cohort) -> None:
    """The cohort and its memberships (its tenants keep their quotas; their running work
    goes on, no longer borrowed or preemptible)."""
    session.execute(delete(CohortMember).where(CohortMember.cohort_id == cohort.id))
    session.delete(cohort)
    session.flush()


@dataclass(frozen=True)
class Member:
    tenant_id: str
    tenant: str  # name
    cohort_id: str
    shares: dict[str, Any]  # {gpu_type: {"nominal": n, "borrowing_limit": m or None}}
    preempt_within_tenant: bool


def members(session: Session, cohort_ids: Iterable[str] | None = None) -> list[Member]:
    """Members of the given cohorts (all cohorts when None), by tenant name."""
    query = select(CohortMember, Tenant.name).join(Tenant, Tenant.id == CohortMember.tenant_id)
    if cohort_ids is not None:
        query = query.where(CohortMember.cohort_id.in_(list(cohort_ids)))
    return [
        Member(m.tenant_id, name, m.cohort_id, dict(m.shares or {}), m.preempt_within_tenant)
        for m, name in session.execute(query.order_by(Tenant.name))
    ]


def membership(session: Session, tenant: Tenant) -> CohortMember | None:
    return session.get(CohortMember, tenant.id)


def set_membership(
    session: Session,
    cohort: Cohort,
    tenant: Tenant,
    shares: dict[str, Any],
    preempt_within_tenant: bool,
) -> CohortMember:
    """Make `tenant` a member of `cohort` (leaving any other) with these shares and policy."""
    row = session.get(CohortMember, tenant.id)
    if row is None:
        row = CohortMember(tenant_id=tenant.id)
        session.add(row)
    row.cohort_id = cohort.id
    row.shares = shares
    row.preempt_within_tenant = preempt_within_tenant
    row.updated_at = utcnow()
    session.flush()
    return row


def remove_membership(session: Session, tenant: Tenant) -> bool:
    row = session.get(CohortMember, tenant.id)
    if row is None:
        return False
    session.delete(row)
    session.flush()
    return True


@dataclass(frozen=True)
class ActiveGpuAttempt:
    attempt_id: str
    tenant_id: str
    cluster: str
    gpu_type: str
    gpu: int
    priority: int
    started_at: datetime  # when it started running; else leased; else created
    borrowed_gpus: int
    cpu: float
    memory_bytes: int


def active_gpu_attempts(session: Session, tenant_ids: Iterable[str]) -> list[ActiveGpuAttempt]:
    """The active attempts of these tenants that hold GPUs of a known type."""
    rows = session.execute(
        select(
            TaskAttempt.id,
            Execution.tenant_id,
            Cluster.name,
            TaskAttempt.gpu_type,
            TaskAttempt.gpu,
            Execution.priority,
            func.coalesce(TaskAttempt.started_at, TaskAttempt.leased_at, TaskAttempt.created_at),
            TaskAttempt.borrowed_gpus,
            TaskAttempt.cpu,
            TaskAttempt.memory_bytes,
        )
        .join(Execution, Execution.id == TaskAttempt.execution_id)
        .join(Cluster, Cluster.id == TaskAttempt.cluster_id)
        .where(
            TaskAttempt.status.in_(ACTIVE_STATES),
            Execution.tenant_id.in_(list(tenant_ids)),
            TaskAttempt.gpu > 0,
            TaskAttempt.gpu_type.is_not(None),
        )
        .order_by(TaskAttempt.id)
    ).all()
    return [
        ActiveGpuAttempt(
            attempt_id=r[0],
            tenant_id=r[1],
            cluster=r[2],
            gpu_type=str(r[3]),
            gpu=r[4],
            priority=r[5],
            started_at=r[6],
            borrowed_gpus=r[7],
            cpu=r[8],
            memory_bytes=r[9],
        )
        for r in rows
    ]


def preempt(session: Session, attempt_ids: Iterable[str], reason: str) -> list[str]:
    """Move these active attempts to PREEMPTED (their agents are told to stop them at their
    next heartbeat, as for a cancel); the ids moved."""
    moved = []
    for attempt_id in attempt_ids:
        attempt = session.get(TaskAttempt, attempt_id)
        if attempt is not None and move_attempt(
            session, attempt, A.PREEMPTED, error_message=reason
        ):
            moved.append(attempt_id)
    return moved


def preemptions_by_tenant(
    session: Session, tenant_ids: Iterable[str] | None = None
) -> dict[str, int]:
    """How many attempts of each tenant were preempted (ever)."""
    query = (
        select(Execution.tenant_id, func.count())
        .select_from(TaskAttempt)
        .join(Execution, Execution.id == TaskAttempt.execution_id)
        .where(TaskAttempt.status == A.PREEMPTED.value)
        .group_by(Execution.tenant_id)
    )
    if tenant_ids is not None:
        query = query.where(Execution.tenant_id.in_(list(tenant_ids)))
    return {str(tenant_id): int(count) for tenant_id, count in session.execute(query)}
