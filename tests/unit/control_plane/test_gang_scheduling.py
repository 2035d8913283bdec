"""Gangs in a placement pass (`place_pending_attempts`), on SQLite and PostgreSQL: a gang is
one attempt holding its whole group on one cluster, its quota, capacity and reservation reasons
say it is a gang, a reservation for a gang past the bound holds its whole group, and its lease
tells the agent the replicas and what each worker requests."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.orm import Session, sessionmaker

from control_plane.agent_api.mapping import assignment_from_attempt
from control_plane.db.models import TaskAttempt, utcnow
from control_plane.db.repositories import tenancy
from control_plane.db.repositories.executions import create_execution
from control_plane.db.repositories.tenants import get_or_create_tenant
from control_plane.db.repositories.workflows import register_workflow_version
from control_plane.db.session import transaction
from control_plane.scheduling.scheduler import place_pending_attempts
from fleetflow.ir import Resources, WorkflowSpec
from tests.unit.control_plane.test_placement_repository import (
    BUNDLE,
    GRACE,
    PREPARE,
    add_attempts,
    add_cluster,
    capacity,
    execution_of,
    heartbeat,
    place,
    placements,
    sessions,
)

__all__ = ["sessions"]  # the fixture, shared

WORKER = Resources(cpu=1, gpu=4, gpu_type="H100")


def gang_spec(workflow_spec: WorkflowSpec) -> WorkflowSpec:
    """The shared spec, whose `prepare` task is a gang of 4 × 4 H100."""
    prepare = workflow_spec.tasks[PREPARE].model_copy(update={"resources": WORKER, "replicas": 4})
    return workflow_spec.model_copy(update={"tasks": {**workflow_spec.tasks, PREPARE: prepare}})


def gang_execution(sessions: sessionmaker[Session], workflow_spec: WorkflowSpec) -> str:
    spec = gang_spec(workflow_spec)
    with transaction(sessions) as session:
        tenant = get_or_create_tenant(session, "research")
        tenancy.grant_cluster(session, tenant, tenancy.EVERY_CLUSTER)
        workflow = register_workflow_version(session, tenant.id, spec, BUNDLE, None)
        return create_execution(session, tenant.id, workflow, {"n": 3}).id


def reason(sessions: sessionmaker[Session], attempt_id: str) -> str | None:
    with sessions() as session:
        return session.get_one(TaskAttempt, attempt_id).pending_reason


def test_a_gang_holds_its_whole_group_on_one_cluster(
    sessions: sessionmaker[Session], workflow_spec: WorkflowSpec
) -> None:
    execution = gang_execution(sessions, workflow_spec)
    add_cluster(sessions, "gpu-a", capacity(cpu=64, gpus={"H100": (12, 0)}))
    add_cluster(sessions, "gpu-b", capacity(cpu=64, gpus={"H100": (16, 0)}))
    first, second = add_attempts(sessions, execution, 2)
    assert place(sessions) == 1  # 28 H100 free in all, never split over two clusters
    assert placements(sessions, [first, second]) == [("gpu-b", "H100"), ("PENDING", None)]
    with sessions() as session:
        attempt = session.get_one(TaskAttempt, first)
        assert (attempt.gpu, attempt.cpu) == (16, 4)  # what quotas and usage count
        lease = assignment_from_attempt(
            attempt,
            gang_spec(workflow_spec),
            tenant="research",
            bundle_uri="file:///b.tar.gz",
            report_secret="s",
        )
    assert (lease.replicas, lease.resources.gpu, lease.resources.gpu_type) == (4, 4, "H100")
    assert reason(sessions, second) == (
        "no capacity: needs 4 × 4 H100 on one cluster; largest free: gpu-a with 3 × 4 H100"
    )


def test_a_gangs_quota_reason_says_it_is_a_gang(
    sessions: sessionmaker[Session], workflow_spec: WorkflowSpec
) -> None:
    execution = gang_execution(sessions, workflow_spec)
    with transaction(sessions) as session:
        tenancy.set_quota(session, get_or_create_tenant(session, "research"), {"gpu": 20})
    add_cluster(sessions, "gpu-b", capacity(cpu=64, gpus={"H100": (64, 0)}))
    first, second = add_attempts(sessions, execution, 2)
    assert place(sessions) == 1
    assert placements(sessions, [first])[0][0] == "gpu-b"
    assert reason(sessions, second) == "quota: needs 16 GPUs, 16/20 in use (a gang of 4 × 4 H100)"


def test_a_gang_past_the_bound_holds_its_whole_group_and_says_so(
    sessions: sessionmaker[Session], workflow_spec: WorkflowSpec
) -> None:
    """A gang of 4 × 4 H100 that has waited past the bound gets gpu-b held for its whole
    group (16 H100): one-GPU tasks may not take the 4 H100 free there, though any one of them
    would fit, so no part of the group's GPUs goes to others and it never starts partly; its
    pending reason says it is a gang; it starts whole once all 16 are free."""
    bound = timedelta(seconds=300)

    def place_after(waited: timedelta) -> int:
        with transaction(sessions) as session:
            return place_pending_attempts(
                session, heartbeat_grace=GRACE, reserve_after=bound, now=utcnow() + waited
            )

    cluster_id = add_cluster(sessions, "gpu-b", capacity(cpu=64, gpus={"H100": (16, 12)}))
    (gang,) = add_attempts(sessions, gang_execution(sessions, workflow_spec), 1)
    small = add_attempts(sessions, execution_of(sessions, workflow_spec, Resources(gpu=1)), 2)
    assert place_after(bound + timedelta(seconds=1)) == 0
    assert placements(sessions, [gang, *small]) == [("PENDING", None)] * 3
    assert reason(sessions, gang) == (
        "reserved on gpu-b: waiting for 16 H100, 4 free (a gang of 4 × 4 H100)"
    )
    assert reason(sessions, small[0]) == (
        "no capacity: gpu-b: needs 1 H100, 0 free (held for an older task)"
    )
    # 12 free: still short of the group by one worker's GPUs, and still nobody else's.
    heartbeat(sessions, cluster_id, capacity(cpu=64, gpus={"H100": (16, 4)}))
    assert place_after(bound + timedelta(seconds=2)) == 0
    assert reason(sessions, gang) == (
        "reserved on gpu-b: waiting for 16 H100, 12 free (a gang of 4 × 4 H100)"
    )
    heartbeat(sessions, cluster_id, capacity(cpu=64, gpus={"H100": (16, 0)}))
    assert place_after(bound + timedelta(seconds=3)) == 1
    assert placements(sessions, [gang, *small]) == [("gpu-b", "H100"), *[("PENDING", None)] * 2]
    with sessions() as session:
        assert session.get_one(TaskAttempt, gang).gpu == 16  # the whole group, at once
