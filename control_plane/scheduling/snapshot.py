"""The read model placement works from: which attempts wait, which clusters are online and
what is free on them now, and what each task requests.

Read inside the scheduler's transaction (`scheduling/scheduler.py`) and by the preview route;
it writes nothing. What a task requests is cached per (workflow version, task): versions are
immutable, so what was read once stays true. The statements a pass runs are built once, with
what varies bound: a pass runs for nearly every finished attempt, and building and hashing a
statement cost about as much CPU as running it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, bindparam, func, select
from sqlalchemy.orm import Session

from control_plane.db.models import (
    Cluster,
    CohortMember,
    DynamicTask,
    Execution,
    TaskAttempt,
    WorkflowVersion,
    utcnow,
)
from control_plane.db.repositories.attempts import ACTIVE_STATES
from control_plane.db.repositories.clusters import online_clusters
from control_plane.placement.admission import Totals
from control_plane.placement.capacity import Usage, free_capacity
from control_plane.placement.gangs import group_resources
from control_plane.placement.policy import Candidate
from fleetflow import ir
from fleetflow.states import AttemptState
from fleetflow.timestamps import as_utc

A = AttemptState

PLACEMENT_BATCH = 500
"""How many PENDING attempts one placement pass considers at most, oldest first."""
TENANT_PAGE = 64
"""How many of one tenant's: its first by priority, then age, the order fair share offers a
tenant's attempts in (`placement/admission.fair_order`). A pass runs on every finished
attempt; reading a wide fan-out's whole backlog each time (500 rows to place one or two) was a
fifth of the control plane's CPU. A pass that assigns this many runs again at once
(`Scheduler.place`), so the page never holds back what capacity would let in."""

# Task resources by (workflow version id, task name). Workflow versions are immutable, so what
# was read once stays true; bounded, so a long-lived process does not grow without limit.
_TASK_RESOURCES: dict[tuple[str, str], ir.Resources] = {}
_TASK_RESOURCES_MAX = 4096
# Gangs (`@task(replicas=N)`) among them: (replicas, what one worker requests). A gang's entry
# in `_TASK_RESOURCES` is its whole group, which placement and quotas count.
_TASK_GANGS: dict[tuple[str, str], tuple[int, ir.Resources]] = {}


def _remember(key: tuple[str, str], task: dict[str, object]) -> None:
    resources = ir.Resources.model_validate(task.get("resources") or {})
    replicas = task.get("replicas")
    if isinstance(replicas, int) and replicas > 1:
        _TASK_GANGS[key] = (replicas, resources)
        resources = group_resources(resources, replicas)
    _TASK_RESOURCES[key] = resources


def task_gang(key: tuple[str, str]) -> tuple[int, ir.Resources] | None:
    """(replicas, per-worker resources) of a gang that `task_resources` read; None for a
    task of one worker."""
    return _TASK_GANGS.get(key)


def task_resources(
    session: Session, keys: Iterable[tuple[str, str]]
) -> dict[tuple[str, str], ir.Resources]:
    """`ir.Resources` of each (workflow version id, task name): what one attempt holds (a
    gang's whole group)."""
    wanted = set(keys)
    missing = {
        spec_id for spec_id, task_name in wanted if (spec_id, task_name) not in _TASK_RESOURCES
    }
    if missing:
        if len(_TASK_RESOURCES) > _TASK_RESOURCES_MAX:
            _TASK_RESOURCES.clear()
            _TASK_GANGS.clear()
        rows = session.execute(
            select(WorkflowVersion.id, WorkflowVersion.spec).where(WorkflowVersion.id.in_(missing))
        ).all()
        for spec_id, spec in rows:
            for task_name, task in (spec.get("tasks") or {}).items():
                _remember((spec_id, task_name), task)
        # Tasks of dynamic tasks' sub-DAGs, which their version's spec does not list.
        others = [key for key in wanted if key not in _TASK_RESOURCES]
        if others:
            for row in session.scalars(
                select(DynamicTask).where(
                    DynamicTask.workflow_spec_id.in_({spec_id for spec_id, _ in others}),
                    DynamicTask.task_name.in_({task_name for _, task_name in others}),
                )
            ):
                _remember((row.workflow_spec_id, row.task_name), row.spec)
    return {key: _TASK_RESOURCES.get(key, ir.Resources()) for key in wanted}


def _counted(cluster: Cluster) -> frozenset[str] | None:
    """The attempts the cluster's last heartbeat says its figures count; None when its agent
    does not say (an older agent)."""
    ids = (cluster.capacity or {}).get("counted_attempt_ids")
    return frozenset(str(i) for i in ids) if isinstance(ids, list) else None


def _usage(gpu: int | None, gpu_type: str | None, cpu: float | None, memory: int | None) -> Usage:
    return Usage(cpu=cpu or 0.0, memory_bytes=memory or 0, gpu=gpu or 0, gpu_type=gpu_type)


_FREED_COLUMNS = (
    TaskAttempt.cluster_id,
    TaskAttempt.id,
    TaskAttempt.leased_at,
    TaskAttempt.finished_at,
    TaskAttempt.gpu,
    TaskAttempt.gpu_type,
    TaskAttempt.cpu,
    TaskAttempt.memory_bytes,
)
_ENDED = [s.value for s in AttemptState if s.terminal]
_FINISHED_OF = select(*_FREED_COLUMNS).where(
    TaskAttempt.id.in_(bindparam("attempt_ids", expanding=True)), TaskAttempt.status.in_(_ENDED)
)
_FINISHED_ON = select(*_FREED_COLUMNS).where(
    TaskAttempt.cluster_id.in_(bindparam("cluster_ids", expanding=True)),
    TaskAttempt.status.in_(_ENDED),
    TaskAttempt.leased_at.is_not(None),
    TaskAttempt.finished_at > bindparam("since"),
)


def _freed_since_heartbeat(
    session: Session, clusters: dict[str, Cluster], *, grace: timedelta
) -> dict[str, list[Usage]]:
    """By cluster: attempts its last heartbeat counted in use that have finished since.

    Counted means listed by the heartbeat; for an agent that lists none, leased before the
    heartbeat was received.
    """
    listed = {c.id: ids for c in clusters.values() if (ids := _counted(c)) is not None}
    freed: dict[str, list[Usage]] = {}
    listed_ids = sorted(set().union(*listed.values())) if listed else []
    if listed_ids:
        rows = session.execute(_FINISHED_OF, {"attempt_ids": listed_ids}).all()
        for cluster_id, attempt_id, _, _, gpu, gpu_type, cpu, memory in rows:
            if cluster_id in listed and attempt_id in listed[cluster_id]:
                freed.setdefault(cluster_id, []).append(_usage(gpu, gpu_type, cpu, memory))
    unlisted = [cluster_id for cluster_id in clusters if cluster_id not in listed]
    if not unlisted:
        return freed
    rows = session.execute(_FINISHED_ON, {"cluster_ids": unlisted, "since": utcnow() - grace}).all()
    for cluster_id, _, leased_at, finished_at, gpu, gpu_type, cpu, memory in rows:
        cluster = clusters.get(cluster_id or "")
        heartbeat = cluster.last_heartbeat_at if cluster is not None else None
        if cluster is None or heartbeat is None or leased_at is None or finished_at is None:
            continue
        if as_utc(leased_at) <= as_utc(heartbeat) < as_utc(finished_at):
            freed.setdefault(cluster.id, []).append(_usage(gpu, gpu_type, cpu, memory))
    return freed


_ACTIVE_ON = (
    select(
        TaskAttempt.cluster_id,
        TaskAttempt.id,
        TaskAttempt.status,
        TaskAttempt.leased_at,
        TaskAttempt.task_name,
        TaskAttempt.gpu_type,
        Execution.workflow_spec_id,
    )
    .join(Execution, Execution.id == TaskAttempt.execution_id)
    .where(
        TaskAttempt.status.in_(ACTIVE_STATES),
        TaskAttempt.cluster_id.in_(bindparam("cluster_ids", expanding=True)),
    )
)


def placement_candidates(
    session: Session,
    *,
    heartbeat_grace: timedelta,
    include_offline: bool = False,
    now: datetime | None = None,
) -> list[tuple[Cluster, Candidate]]:
    """Clusters as placement sees them, by name: online or not, labels, free capacity now.

    Free capacity is the agent's last heartbeat less the attempts active there that the
    heartbeat does not count, plus those it counted that have finished since. The heartbeat
    lists the attempts it counts; for an agent that lists none, those still ASSIGNED and those
    leased after the heartbeat was received are taken as not counted.
    """
    online = online_clusters(session, grace=heartbeat_grace, now=now)
    online_ids = {c.id for c in online}
    clusters = (
        list(session.scalars(select(Cluster).order_by(Cluster.name))) if include_offline else online
    )
    if not clusters:
        return []
    by_id = {c.id: c for c in clusters}
    rows = session.execute(_ACTIVE_ON, {"cluster_ids": list(by_id)}).all()
    resources = task_resources(session, ((row.workflow_spec_id, row.task_name) for row in rows))
    active: dict[str, int] = {}
    unreflected: dict[str, list[Usage]] = {}
    counted = {c.id: _counted(c) for c in clusters}
    for row in rows:
        cluster = by_id[row.cluster_id]
        active[cluster.id] = active.get(cluster.id, 0) + 1
        heartbeat = cluster.last_heartbeat_at
        listed = counted[cluster.id]
        if (
            row.id not in listed
            if listed is not None
            else (
                row.status == A.ASSIGNED.value
                or row.leased_at is None
                or heartbeat is None
                or as_utc(row.leased_at) > as_utc(heartbeat)
            )
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
    in_cohort: bool  # its tenant is a member of a cohort


def has_waiting_attempts(connection: Connection) -> bool:
    """Whether any attempt is PENDING (one read of the status index)."""
    found = connection.execute(
        select(TaskAttempt.id).where(TaskAttempt.status == A.PENDING.value).limit(1)
    ).first()
    return found is not None


_RANKED = (
    select(
        TaskAttempt.id.label("attempt_id"),
        func.row_number()
        .over(
            partition_by=Execution.tenant_id,
            order_by=(Execution.priority.desc(), TaskAttempt.created_at, TaskAttempt.id),
        )
        .label("rank"),
    )
    .join(Execution, Execution.id == TaskAttempt.execution_id)
    .where(TaskAttempt.status == A.PENDING.value)
    .subquery()
)
_WAITING = (
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
        CohortMember.cohort_id,
    )
    .join(Execution, Execution.id == TaskAttempt.execution_id)
    .outerjoin(CohortMember, CohortMember.tenant_id == Execution.tenant_id)
    .where(
        TaskAttempt.status == A.PENDING.value,
        TaskAttempt.id.in_(
            select(_RANKED.c.attempt_id).where(_RANKED.c.rank <= bindparam("tenant_page"))
        ),
    )
    .order_by(TaskAttempt.created_at)
    .limit(bindparam("batch"))
    .with_for_update(skip_locked=True, of=TaskAttempt)
)


def waiting_attempts(session: Session) -> list[WaitingAttempt]:
    """The PENDING attempts a pass considers: each tenant's first `TENANT_PAGE` by priority,
    then age, and of those the oldest `PLACEMENT_BATCH`; locked `FOR UPDATE SKIP LOCKED` on
    PostgreSQL so that passes in several processes work on different ones. Whether each one's
    tenant is in a cohort comes with it: a pass where none is reads no cohorts."""
    rows = session.execute(_WAITING, {"tenant_page": TENANT_PAGE, "batch": PLACEMENT_BATCH}).all()
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
            cohort_id is not None,
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
            cohort_id,
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
