"""Reading a tenant's quota row and its current load, as `placement.admission` judges them."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import bindparam, func, select
from sqlalchemy.orm import Session

from control_plane.db.models import Execution, TaskAttempt, TenantQuota
from control_plane.db.repositories.attempts import ACTIVE_STATES
from control_plane.placement.admission import Limits, Load
from control_plane.placement.capacity import Usage
from fleetflow.states import ExecutionState


def limits_of(quota: TenantQuota | None) -> Limits:
    """A quota row as admission reads it (no row: unlimited)."""
    if quota is None:
        return Limits()
    return Limits(
        gpu=quota.gpu,
        gpu_per_type={str(k): int(v) for k, v in (quota.gpu_per_type or {}).items()},
        cpu=quota.cpu,
        memory_bytes=quota.memory_bytes,
        max_running_executions=quota.max_running_executions,
        max_running_tasks=quota.max_running_tasks,
    )


# Built once, for every tenant or for some (the scheduler reads them on every pass).
_ATTEMPTS = (
    select(
        Execution.tenant_id,
        TaskAttempt.gpu,
        TaskAttempt.gpu_type,
        TaskAttempt.cpu,
        TaskAttempt.memory_bytes,
    )
    .join(Execution, Execution.id == TaskAttempt.execution_id)
    .where(TaskAttempt.status.in_(ACTIVE_STATES))
)
_EXECUTIONS = (
    select(Execution.tenant_id, func.count())
    .where(
        Execution.admitted_at.is_not(None),
        Execution.status.in_([s.value for s in ExecutionState if not s.terminal]),
    )
    .group_by(Execution.tenant_id)
)
_OF_TENANTS = Execution.tenant_id.in_(bindparam("tenant_ids", expanding=True))
_ATTEMPTS_OF = _ATTEMPTS.where(_OF_TENANTS)
_EXECUTIONS_OF = _EXECUTIONS.where(_OF_TENANTS)


def tenant_loads(session: Session, tenant_ids: Iterable[str] | None = None) -> dict[str, Load]:
    """What each tenant's active attempts hold now, and how many executions it runs."""
    if tenant_ids is None:
        attempts, executions, ids = _ATTEMPTS, _EXECUTIONS, None
    else:
        attempts, executions = _ATTEMPTS_OF, _EXECUTIONS_OF
        ids = {"tenant_ids": list(set(tenant_ids))}
    loads: dict[str, Load] = {}
    for tenant_id, gpu, gpu_type, cpu, memory in session.execute(attempts, ids):
        usage = Usage(cpu=cpu or 0.0, memory_bytes=memory or 0, gpu=gpu or 0, gpu_type=gpu_type)
        loads.setdefault(tenant_id, Load()).add(usage)
    for tenant_id, count in session.execute(executions, ids):
        loads.setdefault(tenant_id, Load()).running_executions = int(count)
    return loads


def current_load(session: Session, tenant_id: str) -> Load:
    """What one tenant holds now."""
    return tenant_loads(session, [tenant_id]).get(tenant_id, Load())
