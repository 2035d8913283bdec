"""Accounting: GPU-, CPU- and memory-seconds per tenant, from attempts' start and end times.

An attempt accrues from `started_at` (RUNNING) to `finished_at`, or to now while it runs, for
the GPUs, CPU and memory it was placed with. History is computed from the attempts themselves
rather than from a separate ledger, so it can never disagree with them; the window a query may
span is bounded (`MAX_BUCKETS`) to keep that cheap.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from control_plane.db.models import Cluster, Execution, TaskAttempt, WorkflowVersion, utcnow
from fleetflow.timestamps import as_utc

MAX_BUCKETS = 2000
GIB = 2**30


class Bucket(StrEnum):
    MINUTE = "minute"
    HOUR = "hour"
    DAY = "day"

    @property
    def width(self) -> timedelta:
        return {"minute": timedelta(minutes=1), "hour": timedelta(hours=1)}.get(
            self.value, timedelta(days=1)
        )

    def floor(self, at: datetime) -> datetime:
        at = at.replace(second=0, microsecond=0)
        if self is Bucket.MINUTE:
            return at
        at = at.replace(minute=0)
        return at if self is Bucket.HOUR else at.replace(hour=0)


class GroupBy(StrEnum):
    CLUSTER = "cluster"
    GPU_TYPE = "gpu_type"
    WORKFLOW = "workflow"


@dataclass
class Amount:
    gpu_seconds: float = 0.0
    cpu_seconds: float = 0.0
    memory_gib_seconds: float = 0.0

    def add(self, seconds: float, gpu: int, cpu: float, memory_bytes: int) -> None:
        self.gpu_seconds += seconds * gpu
        self.cpu_seconds += seconds * cpu
        self.memory_gib_seconds += seconds * memory_bytes / GIB


@dataclass
class BucketUsage:
    start: datetime
    total: Amount = field(default_factory=Amount)
    groups: dict[str, Amount] = field(default_factory=dict)


@dataclass(frozen=True)
class _Run:
    start: datetime
    end: datetime
    gpu: int
    cpu: float
    memory_bytes: int
    cluster: str
    gpu_type: str
    workflow: str
    execution_id: str


def _runs(session: Session, tenant_id: str, since: datetime, until: datetime) -> list[_Run]:
    now = utcnow()
    rows = session.execute(
        select(
            TaskAttempt.started_at,
            TaskAttempt.finished_at,
            TaskAttempt.gpu,
            TaskAttempt.cpu,
            TaskAttempt.memory_bytes,
            TaskAttempt.gpu_type,
            Cluster.name,
            WorkflowVersion.name,
            Execution.id,
        )
        .join(Execution, Execution.id == TaskAttempt.execution_id)
        .join(WorkflowVersion, WorkflowVersion.id == Execution.workflow_spec_id)
        .outerjoin(Cluster, Cluster.id == TaskAttempt.cluster_id)
        .where(
            Execution.tenant_id == tenant_id,
            TaskAttempt.started_at.is_not(None),
            TaskAttempt.started_at < until,
            or_(TaskAttempt.finished_at.is_(None), TaskAttempt.finished_at > since),
        )
    ).all()
    runs = []
    for started, finished, gpu, cpu, memory, gpu_type, cluster, workflow, execution_id in rows:
        if started is None:
            continue
        start = max(as_utc(started), since)
        end = min(as_utc(finished) if finished is not None else now, until)
        if end > start:
            runs.append(
                _Run(
                    start,
                    end,
                    int(gpu or 0),
                    float(cpu or 0),
                    int(memory or 0),
                    cluster or "",
                    gpu_type or "",
                    workflow,
                    execution_id,
                )
            )
    return runs


def history(
    session: Session,
    tenant_id: str,
    *,
    since: datetime,
    until: datetime,
    bucket: Bucket,
    group_by: GroupBy | None = None,
) -> list[BucketUsage]:
    """Usage per time bucket in [since, until), oldest first; every bucket present."""
    first = bucket.floor(since)
    count = int((until - first) / bucket.width) + 1
    if count > MAX_BUCKETS:
        raise ValueError(
            f"{count} {bucket.value} buckets is too many (at most {MAX_BUCKETS}): "
            "shorten the window or use a wider bucket"
        )
    buckets = [BucketUsage(first + i * bucket.width) for i in range(count)]
    buckets = [b for b in buckets if b.start < until]
    for run in _runs(session, tenant_id, since, until):
        index = int((bucket.floor(run.start) - first) / bucket.width)
        at = run.start
        while at < run.end and index < len(buckets):
            slot = buckets[index]
            end = min(run.end, slot.start + bucket.width)
            seconds = (end - at).total_seconds()
            slot.total.add(seconds, run.gpu, run.cpu, run.memory_bytes)
            if group_by is not None:
                key = getattr(run, group_by.value) or "-"
                slot.groups.setdefault(key, Amount()).add(
                    seconds, run.gpu, run.cpu, run.memory_bytes
                )
            at = end
            index += 1
    return buckets


@dataclass(frozen=True)
class WorkflowUsage:
    workflow: str
    gpu_seconds: float
    cpu_seconds: float
    executions: int


def top_workflows(
    session: Session, tenant_id: str, *, since: datetime, limit: int
) -> list[WorkflowUsage]:
    """The tenant's workflows by GPU time since `since` (then CPU time), largest first."""
    amounts: dict[str, Amount] = defaultdict(Amount)
    executions: dict[str, set[str]] = defaultdict(set)
    for run in _runs(session, tenant_id, since, utcnow()):
        amounts[run.workflow].add(
            (run.end - run.start).total_seconds(), run.gpu, run.cpu, run.memory_bytes
        )
        executions[run.workflow].add(run.execution_id)
    ranked = sorted(amounts.items(), key=lambda kv: (-kv[1].gpu_seconds, -kv[1].cpu_seconds, kv[0]))
    return [
        WorkflowUsage(name, a.gpu_seconds, a.cpu_seconds, len(executions[name]))
        for name, a in ranked[:limit]
    ]


def waiting_for_quota(session: Session, tenant_id: str) -> int:
    return int(
        session.scalar(
            select(func.count())
            .select_from(TaskAttempt)
            .join(Execution, Execution.id == TaskAttempt.execution_id)
            .where(
                and_(
                    Execution.tenant_id == tenant_id,
                    TaskAttempt.status == "PENDING",
                    TaskAttempt.pending_reason.like("quota:%"),
                )
            )
        )
        or 0
    )
