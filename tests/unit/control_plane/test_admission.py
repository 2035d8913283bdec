"""Quotas, cluster grants and fair share in `place_pending_attempts`, on SQLite and PostgreSQL,
plus the pure admission rules they rest on."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from control_plane.db.models import Execution, TaskAttempt, Tenant
from control_plane.db.repositories import attempts as attempts_repo
from control_plane.db.repositories import tenancy
from control_plane.db.repositories.executions import create_execution
from control_plane.db.repositories.tenants import get_or_create_tenant
from control_plane.db.repositories.workflows import register_workflow_version
from control_plane.db.session import make_engine, make_session_factory, transaction
from control_plane.placement import Usage
from control_plane.placement.admission import (
    Limits,
    Load,
    exceeds_whole_quota,
    fair_order,
    quota_problem,
)
from control_plane.quota import tenant_loads
from fleetflow.ir import Resources, WorkflowSpec
from fleetflow.states import AttemptState, ExecutionState
from tests.unit.control_plane.test_placement_repository import (
    BUNDLE,
    PREPARE,
    add_attempts,
    add_cluster,
    capacity,
    place,
)

A = AttemptState


@pytest.fixture
def sessions(database_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(database_url)
    yield make_session_factory(engine)
    engine.dispose()


def submit(
    sessions: sessionmaker[Session],
    workflow_spec: WorkflowSpec,
    tenant: str,
    resources: Resources,
    *,
    priority: int = 0,
    clusters: tuple[str, ...] = (tenancy.EVERY_CLUSTER,),
) -> str:
    """An execution of `tenant` whose `prepare` task requests `resources`."""
    prepare = workflow_spec.tasks[PREPARE].model_copy(update={"resources": resources})
    spec = workflow_spec.model_copy(update={"tasks": {**workflow_spec.tasks, PREPARE: prepare}})
    with transaction(sessions) as session:
        row = get_or_create_tenant(session, tenant)
        for cluster in clusters:
            tenancy.grant_cluster(session, row, cluster)
        workflow = register_workflow_version(session, row.id, spec, BUNDLE, None)
        return create_execution(session, row.id, workflow, {"n": 3}, priority=priority).id


def set_quota(sessions: sessionmaker[Session], tenant: str, **limits: Any) -> None:
    with transaction(sessions) as session:
        row = get_or_create_tenant(session, tenant)
        tenancy.set_quota(session, row, limits)


def attempts(sessions: sessionmaker[Session]) -> list[TaskAttempt]:
    with sessions() as session:
        return list(session.scalars(select(TaskAttempt).order_by(TaskAttempt.created_at)))


def active(sessions: sessionmaker[Session]) -> list[TaskAttempt]:
    return [a for a in attempts(sessions) if a.status == A.ASSIGNED.value]


def finish(sessions: sessionmaker[Session], attempt_id: str) -> None:
    with transaction(sessions) as session:
        attempt = session.get_one(TaskAttempt, attempt_id)
        assert attempts_repo.move_attempt(session, attempt, A.LEASED)
        assert attempts_repo.move_attempt(session, attempt, A.SUCCEEDED)


def test_a_gpu_quota_bounds_what_runs_at_once_and_a_raise_applies_at_once(
    sessions: sessionmaker[Session], workflow_spec: WorkflowSpec
) -> None:
    """Quota 2 GPUs, five one-GPU tasks on a cluster with 8 free: never more than 2 placed;
    each finish lets the next start; raising the quota to 4 lets 4 run; all five finish."""
    cluster = add_cluster(sessions, "gpus", capacity(64, gpus={"A100": (8, 0)}))
    execution = submit(sessions, workflow_spec, "vision", Resources(gpu=1))
    add_attempts(sessions, execution, 5)
    set_quota(sessions, "vision", gpu=2)
    place(sessions, cluster)
    assert len(active(sessions)) == 2
    waiting = [a for a in attempts(sessions) if a.status == A.PENDING.value]
    assert {a.pending_reason for a in waiting} == {"quota: needs 1 GPU, 2/2 in use"}
    finish(sessions, active(sessions)[0].id)
    place(sessions, cluster)
    assert len(active(sessions)) == 2
    set_quota(sessions, "vision", gpu=4)
    place(sessions, cluster)
    running = active(sessions)
    assert len(running) == 4  # the four left all run at once
    assert all(a.pending_reason is None and a.gpu == 1 for a in running)
    for attempt in running:
        finish(sessions, attempt.id)
    assert [a.status for a in attempts(sessions)] == [A.SUCCEEDED.value] * 5


def test_per_type_quota_falls_back_to_the_next_acceptable_type(
    sessions: sessionmaker[Session], workflow_spec: WorkflowSpec
) -> None:
    cluster = add_cluster(sessions, "mixed", capacity(64, gpus={"H100": (8, 0), "A100": (8, 0)}))
    execution = submit(sessions, workflow_spec, "nlp", Resources(gpu=2, gpu_type=["H100", "A100"]))
    add_attempts(sessions, execution, 3)
    set_quota(sessions, "nlp", gpu_per_type={"H100": 2, "A100": 2})
    place(sessions, cluster)
    placed = sorted(a.gpu_type or "" for a in active(sessions))
    assert placed == ["A100", "H100"]
    (waiting,) = [a for a in attempts(sessions) if a.status == A.PENDING.value]
    assert waiting.pending_reason == "quota: needs 2 H100, 2/2 in use"


def test_running_execution_and_task_limits(
    sessions: sessionmaker[Session], workflow_spec: WorkflowSpec
) -> None:
    cluster = add_cluster(sessions, "cpus", capacity(64))
    first = submit(sessions, workflow_spec, "etl", Resources(cpu=1))
    second = submit(sessions, workflow_spec, "etl", Resources(cpu=1))
    add_attempts(sessions, first, 2)
    add_attempts(sessions, second, 2)
    set_quota(sessions, "etl", max_running_executions=1, max_running_tasks=3)
    place(sessions, cluster)
    assert {a.execution_id for a in active(sessions)} == {first}
    with sessions() as session:
        admitted = session.scalar(select(Execution.admitted_at).where(Execution.id == first))
        assert admitted is not None
    reasons = {a.pending_reason for a in attempts(sessions) if a.status == A.PENDING.value}
    assert reasons == {"quota: 1/1 running executions"}
    with transaction(sessions) as session:  # the first execution ends: its slot frees
        session.execute(
            update(Execution)
            .where(Execution.id == first)
            .values(status=ExecutionState.SUCCEEDED.value)
        )
    for attempt in active(sessions):
        finish(sessions, attempt.id)
    place(sessions, cluster)
    assert {a.execution_id for a in active(sessions)} == {second}


def test_clusters_not_granted_are_never_used(
    sessions: sessionmaker[Session], workflow_spec: WorkflowSpec
) -> None:
    add_cluster(sessions, "theirs", capacity(64))
    mine = add_cluster(sessions, "mine", capacity(1))
    execution = submit(sessions, workflow_spec, "ml", Resources(cpu=1), clusters=("mine",))
    add_attempts(sessions, execution, 2)
    place(sessions)
    (placed,) = active(sessions)
    assert placed.cluster_id == mine
    (waiting,) = [a for a in attempts(sessions) if a.status == A.PENDING.value]
    assert waiting.pending_reason is not None and "mine: needs 1 CPU" in waiting.pending_reason
    assert "theirs" not in waiting.pending_reason
    ungranted = submit(sessions, workflow_spec, "nobody", Resources(cpu=1), clusters=())
    add_attempts(sessions, ungranted, 1)
    place(sessions)
    with sessions() as session:
        row = session.scalars(
            select(TaskAttempt).where(TaskAttempt.execution_id == ungranted)
        ).one()
    assert row.status == A.PENDING.value
    assert row.pending_reason is not None and row.pending_reason.startswith(
        "no cluster is granted to the tenant"
    )


def test_fair_share_interleaves_tenants_on_a_contended_cluster(
    sessions: sessionmaker[Session], workflow_spec: WorkflowSpec
) -> None:
    """Tenant `big` queued 6 GPU tasks before `small` queued 2; with 4 GPUs free, `small`
    still gets 2 of them: the smaller dominant share goes first."""
    cluster = add_cluster(sessions, "shared", capacity(64, gpus={"A100": (4, 0)}))
    big = submit(sessions, workflow_spec, "big", Resources(gpu=1))
    add_attempts(sessions, big, 6)
    small = submit(sessions, workflow_spec, "small", Resources(gpu=1))
    add_attempts(sessions, small, 2)
    place(sessions, cluster)
    by_execution = [a.execution_id for a in active(sessions)]
    assert sorted(by_execution) == sorted([big, big, small, small])


@dataclass(frozen=True)
class Item:
    tenant_id: str
    priority: int
    created_at: datetime
    name: str


def test_fair_order_prefers_the_smaller_share_then_priority_then_age() -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    items = [
        Item("a", 0, t0, "a-old"),
        Item("a", 5, t0 + timedelta(seconds=3), "a-urgent"),
        Item("b", 0, t0 + timedelta(seconds=1), "b-1"),
        Item("b", 0, t0 + timedelta(seconds=2), "b-2"),
    ]
    shares = {"a": 0.0, "b": 0.0}
    order = []
    for item in fair_order(items, lambda t: shares[t]):
        order.append(item.name)
        shares[item.tenant_id] += 0.25
    # Equal shares: the tenant whose next item is oldest. a's urgent item jumps a's own queue
    # (it is a's next), not b's; tenants alternate as their shares grow.
    assert order == ["b-1", "a-urgent", "a-old", "b-2"]


def test_quota_rules() -> None:
    limits = Limits(gpu=4, cpu=8, memory_bytes=16 * 2**30, max_running_tasks=10)
    load = Load(gpu=3, cpu=7.5, memory_bytes=15 * 2**30, running_tasks=2)
    assert quota_problem(limits, load, Usage(gpu=1), new_execution=False) is None
    assert quota_problem(limits, load, Usage(gpu=2), new_execution=False) == (
        "quota: needs 2 GPUs, 3/4 in use"
    )
    assert quota_problem(limits, load, Usage(cpu=1), new_execution=False) == (
        "quota: needs 1 CPU, 7.5/8 in use"
    )
    assert quota_problem(limits, load, Usage(memory_bytes=2 * 2**30), new_execution=False) == (
        "quota: needs 2Gi memory, 15Gi/16Gi in use"
    )
    never = exceeds_whole_quota(
        Limits(gpu_per_type={"H100": 4, "A100": 2}), "train", Resources(gpu=8, gpu_type="H100")
    )
    assert never == (
        "task train can never run within its tenant's quota: it needs 8 of H100, the quota "
        "allows 4 H100"
    )
    assert exceeds_whole_quota(Limits(gpu_per_type={"H100": 1}), "t", Resources(gpu=8)) is None
    unlimited = Limits()
    assert exceeds_whole_quota(unlimited, "t", Resources(gpu=64, cpu=512)) is None


def test_tenants_load_counts_only_active_attempts(
    sessions: sessionmaker[Session], workflow_spec: WorkflowSpec
) -> None:
    cluster = add_cluster(sessions, "gpus", capacity(64, gpus={"A100": (8, 0)}))
    execution = submit(sessions, workflow_spec, "vision", Resources(gpu=2, cpu=1))
    ids = add_attempts(sessions, execution, 2)
    place(sessions, cluster)
    finish(sessions, ids[0])
    with sessions() as session:
        tenant = session.scalars(select(Tenant).where(Tenant.name == "vision")).one()
        load = tenant_loads(session, [tenant.id])[tenant.id]
    assert (load.gpu, load.gpu_per_type, load.cpu, load.running_tasks) == (2, {"A100": 2}, 1, 1)
    assert load.running_executions == 1


def test_within_a_tenant_higher_priority_starts_first(
    sessions: sessionmaker[Session], workflow_spec: WorkflowSpec
) -> None:
    cluster = add_cluster(sessions, "one-slot", capacity(1))
    early = submit(sessions, workflow_spec, "team", Resources(cpu=1))
    add_attempts(sessions, early, 1)
    urgent = submit(sessions, workflow_spec, "team", Resources(cpu=1), priority=10)
    add_attempts(sessions, urgent, 1)
    place(sessions, cluster)
    assert [a.execution_id for a in active(sessions)] == [urgent]
