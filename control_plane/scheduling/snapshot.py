"""The read model placement works from: which attempts wait, which clusters are online and
what is free on them now, and what each task requests.

Read inside the scheduler's transaction (`scheduling/scheduler.py`) and by the preview route;
it writes nothing. What a task requests is cached per (workflow version, task): versions are
immutable, so what was read once stays true.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, select
from sqlalchemy.orm import Session

from control_plane.db.models import (
    Cluster,
    DynamicTask,
    Execution,
    TaskAttempt,
    WorkflowVersion,
    utcnow,
)
from control_plane.db.repositories.attempts import ACTIVE_STATES
from control_plane.db.repositories.clusters import online_clusters
from control_plane.lifecycle.clusters import as_utc
from control_plane.placement.admission import Totals
from control_plane.placement.capacity import Usage, free_capacity
from control_plane.placement.policy import Candidate
from fleetflow import ir
from fleetflow.states import AttemptState

A = AttemptState

# How many PENDING attempts one placement pass considers, oldest first.
PLACEMENT_BATCH = 500

# Task resources by (workflow version id, task name). Workflow versions are immutable, so what
# was read once stays true; bounded, so a long-lived process does not grow without limit.
_TASK_RESOURCES: dict[tuple[str, str], ir.Resources] = {}
_TASK_RESOURCES_MAX = 4096


def task_resources(
    session: Session, keys: Iterable[tuple[str, str]]
) -> dict[tuple[str, str], ir.Resources]:
    """`ir.Resources` of each (workflow version id, task name)."""
    wanted = set(keys)
    missing = {
        spec_id for spec_id, task_name in wanted if (spec_id, task_name) not in _TASK_RESOURCES
    }
    if missing:
        if len(_TASK_RESOURCES) > _TASK_RESOURCES_MAX:
            _TASK_RESOURCES.clear()
        rows = session.execute(
            select(WorkflowVersion.id, WorkflowVersion.spec).where(WorkflowVersion.id.in_(missing))
        ).all()
        for spec_id, spec in rows:
            for task_name, task in (spec.get("tasks") or {}).items():
                resources = ir.Resources.model_validate(task.get("resources") or {})
                _TASK_RESOURCES[(spec_id, task_name)] = resources
        # Tasks of dynamic tasks' sub-DAGs, which their version's spec does not list.
        others = [key for key in wanted if key not in _TASK_RESOURCES]
        if others:
            for row in session.scalars(
                select(DynamicTask).where(
                    DynamicTask.workflow_spec_id.in_({spec_id for spec_id, _ in others}),
                    DynamicTask.task_name.in_({task_name for _, task_name in others}),
                )
            ):
                resources = ir.Resources.model_validate(row.spec.get("resources") or {})
                _TASK_RESOURCES[(row.workflow_spec_id, row.task_name)] = resources
    return {key: _TASK_RESOURCES.get(key, ir.Resources()) for key in wanted}


def _freed_since_heartbeat(
    session: Session, clusters: dict[str, Cluster], *, grace: timedelta
) -> dict[str, list[Usage]]:
    """By cluster: attempts its last heartbeat counted in use (leased before it) that have
    finished since."""
    rows = session.execute(
        select(
            TaskAttempt.cluster_id,
            TaskAttempt.leased_at,
            TaskAttempt.finished_at,
            TaskAttempt.gpu,
            TaskAttempt.gpu_type,
            TaskAttempt.cpu,
            TaskAttempt.memory_bytes,
        ).where(
            TaskAttempt.cluster_id.in_(list(clusters)),
            TaskAttempt.status.in_([s.value for s in AttemptState if s.terminal]),
            TaskAttempt.leased_at.is_not(None),
            TaskAttempt.finished_at > utcnow() - grace,
        )
    ).all()
    freed: dict[str, list[Usage]] = {}
    for cluster_id, leased_at, finished_at, gpu, gpu_type, cpu, memory in rows:
        cluster = clusters.get(cluster_id or "")
        heartbeat = cluster.last_heartbeat_at if cluster is not None else None
        if cluster is None or heartbeat is None or leased_at is None or finished_at is None:
            continue
        if as_utc(leased_at) <= as_utc(heartbeat) < as_utc(finished_at):
            usage = Usage(cpu=cpu or 0.0, memory_bytes=memory or 0, gpu=gpu or 0, gpu_type=gpu_type)
            freed.setdefault(cluster.id, []).append(usage)
    return freed


def placement_candidates(
    session: Session,
    *,
    heartbeat_grace: timedelta,
    include_offline: bool = False,
    now: datetime | None = None,
) -> list[tuple[Cluster, Candidate]]:
    """Clusters as placement sees them, by name: online or not, labels, free capacity now.

    Free capacity is the agent's last heartbeat less the attempts active there that the
    heartbeat cannot include yet (those still ASSIGNED, and those leased after it), plus
    those it counted that have finished since.
    """
    online = online_clusters(session, grace=heartbeat_grace, now=now)
    online_ids = {c.id for c in online}
    clusters = (
        list(session.scalars(select(Cluster).order_by(Cluster.name))) if include_offline else online
    )
    if not clusters:
        return []
    by_id = {c.id: c for c in clusters}
    rows = session.execute(
        select(
            TaskAttempt.cluster_id,
            TaskAttempt.status,
            TaskAttempt.leased_at,
            TaskAttempt.task_name,
            TaskAttempt.gpu_type,
            Execution.workflow_spec_id,
        )
        .join(Execution, Execution.id == TaskAttempt.execution_id)
        .where(TaskAttempt.status.in_(ACTIVE_STATES), TaskAttempt.cluster_id.in_(list(by_id)))
    ).all()
    resources = task_resources(session, ((row.workflow_spec_id, row.task_name) for row in rows))
    active: dict[str, int] = {}
    unreflected: dict[str, list[Usage]] = {}
    for row in rows:
        cluster = by_id[row.cluster_id]
        active[cluster.id] = active.get(cluster.id, 0) + 1
        heartbeat = cluster.last_heartbeat_at
        if (
            row.status == A.ASSIGNED.value
            or row.leased_at is None
            or heartbeat is None
            or as_utc(row.leased_at) > as_utc(heartbeat)
        ):
            usage = Usage.of(resources[(row.workflow_spec_id, row.task_name)], row.gpu_type)
            unreflected.setdefault(cluster.id, []).append(usage)
    freed = _freed_since_heartbeat(session, by_id, grace=heartbeat_grace)
    return [
        (
            cluster,
            Candidate(
                name=cluster.name,
                labels={str(k): str(v) for k, v in (cluster.labels or {}).items()},
                online=cluster.id in online_ids,
                free=free_capacity(
                    cluster.capacity or {},
                    unreflected.get(cluster.id, ()),
                    freed.get(cluster.id, ()),
                ),
                active_attempts=active.get(cluster.id, 0),
            ),
        )
        for cluster in clusters
    ]


@dataclass(frozen=True)
class WaitingAttempt:
    """A PENDING attempt with what fair share and quotas need of its execution: plain columns,
    not the ORM row (a pass reads hundreds and places a few)."""

    attempt_id: str
    execution_id: str
    task_name: str
    pending_reason: str | None
    tenant_id: str
    priority: int
    created_at: datetime
    spec_id: str
    admitted: bool


def has_waiting_attempts(connection: Connection) -> bool:
    """Whether any attempt is PENDING (one read of the status index)."""
    found = connection.execute(
        select(TaskAttempt.id).where(TaskAttempt.status == A.PENDING.value).limit(1)
    ).first()
    return found is not None


def waiting_attempts(session: Session) -> list[WaitingAttempt]:
    """The oldest PENDING attempts (at most `PLACEMENT_BATCH`), locked `FOR UPDATE SKIP LOCKED`
    on PostgreSQL so that passes in several processes work on different ones."""
    rows = session.execute(
        select(
            TaskAttempt.id,
            TaskAttempt.execution_id,
            TaskAttempt.task_name,
            TaskAttempt.pending_reason,
            TaskAttempt.created_at,
            Execution.tenant_id,
            Execution.priority,
            Execution.workflow_spec_id,
            Execution.admitted_at,
        )
        .join(Execution, Execution.id == TaskAttempt.execution_id)
        .where(TaskAttempt.status == A.PENDING.value)
        .order_by(TaskAttempt.created_at)
        .limit(PLACEMENT_BATCH)
        .with_for_update(skip_locked=True, of=TaskAttempt)
    ).all()
    return [
        WaitingAttempt(
            str(attempt_id),
            str(execution_id),
            str(task_name),
            pending_reason,
            str(tenant_id),
            int(priority or 0),
            as_utc(created_at),
            str(spec_id),
            admitted_at is not None,
        )
        for (
            attempt_id,
            execution_id,
            task_name,
            pending_reason,
            created_at,
            tenant_id,
            priority,
            spec_id,
            admitted_at,
        ) in rows
    ]


def cluster_totals(clusters: Iterable[Cluster]) -> Totals:
    """What `clusters` report in total, the denominator of fair share."""
    gpu, cpu, memory = 0, 0.0, 0
    for cluster in clusters:
        reported = cluster.capacity or {}
        cpu += float(reported.get("cpu_allocatable") or 0)
        memory += int(reported.get("memory_bytes_allocatable") or 0)
        gpu += sum(int(g.get("allocatable") or 0) for g in reported.get("gpus") or ())
    return Totals(gpu=gpu, cpu=cpu, memory_bytes=memory)
