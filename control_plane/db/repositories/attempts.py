"""Task attempts: creation, placement, leasing and agent status reports.

Every state change is a compare-and-set `UPDATE … WHERE status = <seen>` after the transition
policy allowed it, so concurrent leases, duplicated or late reports cannot both win.

A lease hands its agent a fresh report secret and keeps only its SHA-256 on the attempt; a
status report is applied only with that secret, so holding the cluster's token is not enough
to decide an attempt's result: one must hold its lease.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import NamedTuple

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from control_plane.db.models import (
    Cluster,
    Execution,
    TaskAttempt,
    TenantQuota,
    WorkflowVersion,
    new_id,
    utcnow,
)
from control_plane.db.repositories import tenancy
from control_plane.db.repositories._insert import insert_ignoring_conflicts
from control_plane.db.repositories.clusters import as_utc, online_clusters
from control_plane.lifecycle.transitions import (
    IllegalTransitionError,
    attempt_values,
    check_attempt_transition,
)
from control_plane.placement import (
    NO_FIT,
    Candidate,
    Decision,
    Strategy,
    Usage,
    free_capacity,
    place,
)
from control_plane.placement.admission import (
    Limits,
    Load,
    Totals,
    allowed_gpu_types,
    dominant_share,
    fair_order,
    gpu_type_problem,
    quota_problem,
)
from control_plane.tokens import hash_token, matches_hash, new_lease_secret
from fleetflow import ir
from fleetflow.states import NO_MAP_INDEX, AttemptState, ExecutionState

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


# How many PENDING attempts one placement pass considers, oldest first.
PLACEMENT_BATCH = 500

# Task resources by (workflow version id, task name). Workflow versions are immutable, so what
# was read once stays true; bounded, so a long-lived process does not grow without limit.
_TASK_RESOURCES: dict[tuple[str, str], ir.Resources] = {}
_TASK_RESOURCES_MAX = 4096


def _task_resources(
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
    return {key: _TASK_RESOURCES.get(key, ir.Resources()) for key in wanted}


def _workflow_version_ids(session: Session, execution_ids: Iterable[str]) -> dict[str, str]:
    ids = set(execution_ids)
    if not ids:
        return {}
    rows = session.execute(
        select(Execution.id, Execution.workflow_spec_id).where(Execution.id.in_(ids))
    ).all()
    return {str(row.id): str(row.workflow_spec_id) for row in rows}


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
    resources = _task_resources(session, ((row.workflow_spec_id, row.task_name) for row in rows))
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
class _Waiting:
    """A PENDING attempt with what fair share and quotas need of its execution."""

    attempt: TaskAttempt
    tenant_id: str
    priority: int
    created_at: datetime
    spec_id: str
    admitted: bool


def _waiting(session: Session) -> list[_Waiting]:
    rows = session.execute(
        select(
            TaskAttempt,
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
        _Waiting(
            attempt,
            str(tenant_id),
            int(priority or 0),
            as_utc(attempt.created_at),
            str(spec_id),
            admitted_at is not None,
        )
        for attempt, tenant_id, priority, spec_id, admitted_at in rows
    ]


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


def tenant_loads(session: Session, tenant_ids: Iterable[str] | None = None) -> dict[str, Load]:
    """What each tenant's active attempts hold now, and how many executions it runs."""
    ids = None if tenant_ids is None else list(set(tenant_ids))
    attempts = (
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
    executions = (
        select(Execution.tenant_id, func.count())
        .where(
            Execution.admitted_at.is_not(None),
            Execution.status.in_([s.value for s in ExecutionState if not s.terminal]),
        )
        .group_by(Execution.tenant_id)
    )
    if ids is not None:
        attempts = attempts.where(Execution.tenant_id.in_(ids))
        executions = executions.where(Execution.tenant_id.in_(ids))
    loads: dict[str, Load] = {}
    for tenant_id, gpu, gpu_type, cpu, memory in session.execute(attempts):
        usage = Usage(cpu=cpu or 0.0, memory_bytes=memory or 0, gpu=gpu or 0, gpu_type=gpu_type)
        loads.setdefault(tenant_id, Load()).add(usage)
    for tenant_id, count in session.execute(executions):
        loads.setdefault(tenant_id, Load()).running_executions = int(count)
    return loads


def _totals(clusters: Iterable[Cluster]) -> Totals:
    gpu, cpu, memory = 0, 0.0, 0
    for cluster in clusters:
        reported = cluster.capacity or {}
        cpu += float(reported.get("cpu_allocatable") or 0)
        memory += int(reported.get("memory_bytes_allocatable") or 0)
        gpu += sum(int(g.get("allocatable") or 0) for g in reported.get("gpus") or ())
    return Totals(gpu=gpu, cpu=cpu, memory_bytes=memory)


_MAX_REASON = 500


def _no_fit_reason(decision: Decision, granted: int) -> str:
    if not granted:
        return "no cluster is granted to the tenant (fleetflow admin clusters grant TENANT NAME)"
    why = "; ".join(f"{name}: {reason}" for name, reason in decision.excluded.items())
    reason = f"no capacity: {why or 'no cluster is online'}"
    return reason if len(reason) <= _MAX_REASON else reason[: _MAX_REASON - 1] + "…"


def place_pending_attempts(
    session: Session,
    *,
    heartbeat_grace: timedelta,
    only_cluster: Cluster | None = None,
    strategy: Strategy = Strategy.SPREAD,
) -> int:
    """Assign PENDING attempts to online clusters they fit on, within their tenants' quotas.

    Waiting attempts are offered in fair-share order (`placement/admission.py`: the tenant with
    the smallest dominant share first, then by execution priority and age). Each must fit its
    tenant's quota, then `control_plane.placement` chooses among the clusters granted to the
    tenant: the task's required labels, acceptable GPU types (the first that fits somewhere now
    and that the tenant's per-type quota allows), free GPUs, CPU and memory filter the
    clusters, and `strategy` scores the rest (ties: fewest active attempts for spread, then the
    cluster's name). An attempt that cannot start stays PENDING with its `pending_reason`
    (`quota: …`, `no capacity: …`) until a later pass places it. The chosen GPU type and the
    resources held are recorded on the attempt.

    With `only_cluster` (an agent asking for work), attempts are assigned to that cluster
    only, and only those it fits with the most preferred GPU type that fits anywhere.

    On PostgreSQL the PENDING rows are read `FOR UPDATE SKIP LOCKED`, so control-plane
    replicas placing at once work on different attempts, and the quota rows of their tenants
    are locked before their load is read, so two replicas cannot both spend the last unit of
    a quota; the compare-and-set in `move_attempt` remains the guarantee against double
    assignment. Returns how many attempts were assigned.
    """
    waiting = _waiting(session)
    if not waiting:
        return 0
    placed = placement_candidates(session, heartbeat_grace=heartbeat_grace)
    if only_cluster is not None and only_cluster.id not in {c.id for c, _ in placed}:
        return 0  # offline: it gets nothing
    tenant_ids = sorted({w.tenant_id for w in waiting})
    quotas = {
        q.tenant_id: q
        for q in session.scalars(
            select(TenantQuota)
            .where(TenantQuota.tenant_id.in_(tenant_ids))
            .order_by(TenantQuota.tenant_id)
            .with_for_update()
        )
    }
    limits = {tenant_id: limits_of(quotas.get(tenant_id)) for tenant_id in tenant_ids}
    loads = tenant_loads(session)
    grants = tenancy.grants_by_tenant_id(session)
    totals = _totals(cluster for cluster, _ in placed)
    cluster_ids = {candidate.name: cluster.id for cluster, candidate in placed}
    candidates = {candidate.name: candidate for _, candidate in placed}
    resources = _task_resources(session, ((w.spec_id, w.attempt.task_name) for w in waiting))
    admitted: set[str] = set()
    fits_nowhere: set[tuple[str, str]] = set()  # capacity only shrinks during one pass
    assigned = 0

    def share(tenant_id: str) -> float:
        return dominant_share(loads.get(tenant_id, Load()), totals)

    for item in fair_order(waiting, share):
        attempt = item.attempt
        key = (item.spec_id, attempt.task_name)
        if key in fits_nowhere:
            continue
        load = loads.setdefault(item.tenant_id, Load())
        quota = limits[item.tenant_id]
        wanted = resources[key]
        new_execution = not item.admitted and attempt.execution_id not in admitted
        reason = quota_problem(quota, load, Usage.of(wanted, None), new_execution=new_execution)
        types = allowed_gpu_types(wanted, quota, load)
        if reason is None and types == []:
            reason = gpu_type_problem(quota, load, wanted.gpu, wanted.gpu_types[0])
        if reason is not None:
            _set_pending_reason(attempt, reason)
            continue
        if types is not None and types != wanted.gpu_types:
            wanted = wanted.model_copy(update={"gpu_type": types})
        granted = grants.get(item.tenant_id, set())
        decision = place(
            wanted,
            [c for c in candidates.values() if tenancy.may_use(granted, c.name)],
            strategy,
            restrict_to=only_cluster.name if only_cluster is not None else None,
        )
        if decision.cluster is None:
            if decision.reason == NO_FIT:
                fits_nowhere.add(key)
                _set_pending_reason(attempt, _no_fit_reason(decision, len(granted)))
            continue
        if decision.gpu_type and types is None:
            reason = gpu_type_problem(quota, load, wanted.gpu, decision.gpu_type)
            if reason is not None:
                _set_pending_reason(attempt, reason)
                continue
        if move_attempt(
            session,
            attempt,
            A.ASSIGNED,
            cluster_id=cluster_ids[decision.cluster],
            gpu_type=decision.gpu_type,
            gpu=wanted.gpu,
            cpu=wanted.cpu,
            memory_bytes=wanted.memory_bytes,
            pending_reason=None,
        ):
            usage = Usage.of(wanted, decision.gpu_type)
            candidates[decision.cluster] = candidates[decision.cluster].after(usage)
            load.add(usage, new_execution=new_execution)
            if new_execution:
                _admit(session, attempt.execution_id)
                admitted.add(attempt.execution_id)
            assigned += 1
    return assigned


def _set_pending_reason(attempt: TaskAttempt, reason: str) -> None:
    if attempt.pending_reason != reason:  # written only when it changes
        attempt.pending_reason = reason


def _admit(session: Session, execution_id: str) -> None:
    session.execute(
        update(Execution)
        .where(Execution.id == execution_id, Execution.admitted_at.is_(None))
        .values(admitted_at=utcnow())
        .execution_options(synchronize_session=False)
    )


class Lease(NamedTuple):
    """One attempt leased to an agent, with the report secret of this lease.

    The secret exists in clear only here and in the agent's answer: the attempt row keeps its
    SHA-256. Never log it.
    """

    attempt: TaskAttempt
    report_secret: str


def lease_attempts(session: Session, cluster: Cluster, max_attempts: int) -> list[Lease]:
    """Hand this cluster's ASSIGNED attempts to its agent, bumping each fencing token and
    giving each lease a new report secret (stored as its hash)."""
    candidates = session.scalars(
        select(TaskAttempt)
        .where(TaskAttempt.cluster_id == cluster.id, TaskAttempt.status == A.ASSIGNED.value)
        .order_by(TaskAttempt.created_at)
        .limit(max_attempts)
    ).all()
    leased = []
    for attempt in candidates:
        secret = new_lease_secret()
        if move_attempt(
            session,
            attempt,
            A.LEASED,
            fencing_token=attempt.fencing_token + 1,
            report_secret_sha256=hash_token(secret),
        ):
            leased.append(Lease(attempt, secret))
    return leased


@dataclass(frozen=True)
class ReportOutcome:
    accepted: bool
    reason: str = ""
    attempt: TaskAttempt | None = None
    # True when this report moved the attempt into a terminal state.
    finished: bool = False
    # True when the attempt's lease predates report secrets and the report was taken on the
    # cluster token and fencing token alone.
    without_secret: bool = False


class ReportNotAuthorizedError(Exception):
    """A report about an attempt without the report secret of the lease that holds it.

    The message names the attempt, never the secret that was sent.
    """

    def __init__(self, attempt_id: str, why: str) -> None:
        super().__init__(f"report for attempt {attempt_id} refused: {why}")
        self.attempt_id = attempt_id


def apply_report(
    session: Session,
    cluster: Cluster,
    *,
    attempt_id: str,
    fencing_token: int,
    report_secret: str,
    state: AttemptState,
    sequence: int,
    message: str | None,
    traceback: str | None,
) -> ReportOutcome:
    """Apply one agent report; idempotent, ordered by `sequence`, fenced by `fencing_token`,
    authorised by the lease's `report_secret`.

    The checks, in order: the attempt must be this cluster's (else "unknown attempt", the same
    answer as for one that does not exist); the fencing token the current lease's (else
    rejected as stale, whatever the secret: a report of an earlier lease changes nothing
    either way); the attempt must have been leased at all; then the report must carry the
    current lease's secret, compared by its SHA-256 in constant time.

    An attempt leased before the control plane issued secrets has no hash (NULL) but a
    fencing token: its reports are taken on the older checks alone, so upgrading with
    attempts in flight loses none of their results (the outcome says `without_secret`).

    Raises:
        ReportNotAuthorizedError: The attempt was never leased, or the secret is missing or
            not this lease's. Nothing was written.
    """
    attempt = session.get(TaskAttempt, attempt_id)
    if attempt is None or attempt.cluster_id != cluster.id:
        # The same answer whether the attempt is another cluster's or does not exist.
        return ReportOutcome(False, "unknown attempt")
    if fencing_token != attempt.fencing_token:
        return ReportOutcome(False, "stale fencing token: the attempt was leased again")
    if attempt.fencing_token == 0:
        raise ReportNotAuthorizedError(attempt_id, "it was never leased")
    stored = attempt.report_secret_sha256
    if stored is not None:
        if not report_secret:
            raise ReportNotAuthorizedError(
                attempt_id,
                "it carries no report secret; only the agent holding the attempt's lease may "
                "report it",
            )
        if not matches_hash(report_secret, stored):
            raise ReportNotAuthorizedError(
                attempt_id, "its report secret is not that of the attempt's lease"
            )
    outcome = _apply_authorised_report(
        session, attempt, state=state, sequence=sequence, message=message, traceback=traceback
    )
    return replace(outcome, without_secret=True) if stored is None else outcome


def _apply_authorised_report(
    session: Session,
    attempt: TaskAttempt,
    *,
    state: AttemptState,
    sequence: int,
    message: str | None,
    traceback: str | None,
) -> ReportOutcome:
    if sequence <= attempt.last_report_sequence:
        return ReportOutcome(True, "duplicate report ignored", attempt)
    if attempt.status == state.value:
        attempt.last_report_sequence = sequence
        return ReportOutcome(True, "no change", attempt)
    extra: dict[str, object] = {"last_report_sequence": sequence}
    if state in (A.FAILED, A.CANCELLED, A.LOST):
        extra.update(error_message=message or None, error_traceback=traceback or None)
    try:
        moved = move_attempt(session, attempt, state, **extra)
    except IllegalTransitionError as exc:
        return ReportOutcome(False, str(exc), attempt)
    if not moved:
        return ReportOutcome(False, "attempt changed concurrently; report again", attempt)
    return ReportOutcome(True, "", attempt, finished=state.terminal)


LEASE_HELD_STATES = (A.LEASED.value, A.RUNNING.value)


def mark_lost(session: Session, attempts: list[TaskAttempt], reason: str) -> list[str]:
    """Move active attempts to LOST (their cluster lost them); returns the ids moved."""
    lost = []
    for attempt in attempts:
        if attempt.status in ACTIVE_STATES and move_attempt(
            session, attempt, A.LOST, error_message=reason
        ):
            lost.append(attempt.id)
    return lost


def held_attempts(session: Session, cluster_id: str) -> list[TaskAttempt]:
    """Attempts this cluster's agent has leased and not finished."""
    return list(
        session.scalars(
            select(TaskAttempt).where(
                TaskAttempt.cluster_id == cluster_id,
                TaskAttempt.status.in_(LEASE_HELD_STATES),
            )
        )
    )


def reconcile_running(
    session: Session,
    cluster: Cluster,
    running: dict[str, int | None],
    *,
    leased_before: datetime,
) -> tuple[list[str], list[str]]:
    """Compare what the agent runs (`attempt id -> fencing token`, None when not reported)
    with what it should.

    Returns (lost, stop): attempts it holds but does not run, leased before `leased_before`
    (so a lease still in flight to the agent is not mistaken for a lost one), become LOST; the
    ones it runs that are no longer its to run (finished, cancelled, re-leased, another
    cluster's) must be stopped.
    """
    missing = [
        a
        for a in held_attempts(session, cluster.id)
        if a.id not in running and a.leased_at is not None and as_utc(a.leased_at) < leased_before
    ]
    lost = mark_lost(session, missing, f"cluster {cluster.name}'s agent no longer runs it")
    stop = []
    for attempt_id, token in running.items():
        attempt = session.get(TaskAttempt, attempt_id)
        if (
            attempt is None
            or attempt.cluster_id != cluster.id
            or attempt.status not in LEASE_HELD_STATES
            or (token is not None and attempt.fencing_token != token)
        ):
            stop.append(attempt_id)
    return lost, stop


def lose_attempts_of_silent_clusters(session: Session, *, grace: timedelta) -> list[str]:
    """Attempts on clusters whose agent has not heartbeated within `grace` become LOST."""
    cutoff = utcnow() - grace
    rows = session.execute(
        select(TaskAttempt, Cluster.last_heartbeat_at)
        .join(Cluster, Cluster.id == TaskAttempt.cluster_id)
        .where(TaskAttempt.status.in_(ACTIVE_STATES))
    ).all()
    silent = [
        attempt for attempt, heartbeat in rows if heartbeat is None or as_utc(heartbeat) < cutoff
    ]
    return mark_lost(session, silent, f"no heartbeat from its cluster for {grace.seconds}s")


@dataclass(frozen=True)
class FinishedAttempt:
    attempt_id: str
    execution_id: str
    status: str
    message: str


def unsignalled_finished(session: Session, limit: int = 200) -> list[FinishedAttempt]:
    """Terminal attempts whose workflow has not been told yet (the outbox)."""
    rows = session.scalars(
        select(TaskAttempt)
        .where(
            TaskAttempt.signalled_at.is_(None),
            TaskAttempt.cache_hit.is_(False),
            TaskAttempt.status.in_([s.value for s in AttemptState if s.terminal]),
        )
        .order_by(TaskAttempt.finished_at)
        .limit(limit)
    ).all()
    return [FinishedAttempt(a.id, a.execution_id, a.status, a.error_message or "") for a in rows]


def mark_signalled(session: Session, attempt_ids: list[str]) -> None:
    session.execute(
        update(TaskAttempt)
        .where(TaskAttempt.id.in_(attempt_ids))
        .values(signalled_at=utcnow())
        .execution_options(synchronize_session=False)
    )
