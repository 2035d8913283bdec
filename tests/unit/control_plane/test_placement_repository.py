"""`place_pending_attempts` with capacity-aware placement, on SQLite and PostgreSQL: GPU types
and their preference, labels, free capacity less what was handed out since the last heartbeat,
spread and binpack, the chosen GPU type in the assignment, and `FOR UPDATE SKIP LOCKED`.

As in test_attempts_repository.py, every step runs in its own transaction and results are read
back from a fresh session.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker

from control_plane.agent_api.mapping import assignment_from_attempt
from control_plane.db.migrate import upgrade_database
from control_plane.db.models import Cluster, TaskAttempt, utcnow
from control_plane.db.repositories import attempts as attempts_repo
from control_plane.db.repositories import clusters as clusters_repo
from control_plane.db.repositories import tenancy
from control_plane.db.repositories.executions import create_execution
from control_plane.db.repositories.tenants import get_or_create_tenant
from control_plane.db.repositories.workflows import register_workflow_version
from control_plane.db.session import make_engine, make_session_factory, transaction
from control_plane.placement import Strategy
from control_plane.scheduling.scheduler import place_pending_attempts
from control_plane.scheduling.snapshot import TENANT_PAGE, placement_candidates, waiting_attempts
from fleetflow.ir import Resources, WorkflowSpec
from fleetflow.states import AttemptState
from tests.sql_statements import statements

A = AttemptState
GRACE = timedelta(seconds=30)
BUNDLE = "c" * 64
PREPARE = "examples.train.prepare"
GI = 2**30


@pytest.fixture
def sessions(database_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(database_url)
    yield make_session_factory(engine)
    engine.dispose()


def execution_of(
    sessions: sessionmaker[Session], workflow_spec: WorkflowSpec, resources: Resources
) -> str:
    """An execution of the shared spec whose `prepare` task requests `resources`."""
    prepare = workflow_spec.tasks[PREPARE].model_copy(update={"resources": resources})
    spec = workflow_spec.model_copy(update={"tasks": {**workflow_spec.tasks, PREPARE: prepare}})
    with transaction(sessions) as session:
        tenant = get_or_create_tenant(session, "research")
        tenancy.grant_cluster(session, tenant, tenancy.EVERY_CLUSTER)
        workflow = register_workflow_version(session, tenant.id, spec, BUNDLE, None)
        return create_execution(session, tenant.id, workflow, {"n": 3}).id


def capacity(
    cpu: float = 0,
    cpu_in_use: float = 0,
    memory: int = 0,
    gpus: dict[str, tuple[int, int]] | None = None,
) -> dict[str, Any]:
    """What an agent heartbeats; gpus: type -> (allocatable, in use)."""
    return {
        "cpu_allocatable": cpu,
        "cpu_in_use": cpu_in_use,
        "memory_bytes_allocatable": memory,
        "memory_bytes_in_use": 0,
        "gpus": [
            {"gpu_type": t, "allocatable": a, "in_use": u} for t, (a, u) in (gpus or {}).items()
        ],
    }


def add_cluster(
    sessions: sessionmaker[Session],
    name: str,
    report: dict[str, Any],
    labels: dict[str, str] | None = None,
) -> str:
    """A cluster whose agent heartbeated `report` just now."""
    with transaction(sessions) as session:
        cluster = clusters_repo.ensure_cluster(session, name, f"token-{name}", labels or {})
        clusters_repo.record_heartbeat(session, cluster, capacity=report)
        return cluster.id


def heartbeat(sessions: sessionmaker[Session], cluster_id: str, report: dict[str, Any]) -> None:
    with transaction(sessions) as session:
        cluster = session.get_one(Cluster, cluster_id)
        clusters_repo.record_heartbeat(session, cluster, capacity=report)
        # Strictly after every lease so far, whatever the clock's resolution.
        cluster.last_heartbeat_at = utcnow() + timedelta(milliseconds=1)


def add_attempts(sessions: sessionmaker[Session], execution_id: str, count: int) -> list[str]:
    with transaction(sessions) as session:
        return [
            attempts_repo.create_attempt(
                session,
                execution_id=execution_id,
                node_id="n0",
                task_name=PREPARE,
                attempt_number=number,
                inputs_uri=f"file:///blobs/{execution_id}/{number}/inputs.json",
                outputs_uri=f"file:///blobs/{execution_id}/{number}/outputs.json",
            ).id
            for number in range(1, count + 1)
        ]


def place(
    sessions: sessionmaker[Session],
    only_cluster_id: str | None = None,
    strategy: Strategy = Strategy.SPREAD,
) -> int:
    with transaction(sessions) as session:
        only = session.get_one(Cluster, only_cluster_id) if only_cluster_id else None
        return place_pending_attempts(
            session, heartbeat_grace=GRACE, only_cluster=only, strategy=strategy
        )


def lease(sessions: sessionmaker[Session], cluster_id: str) -> list[str]:
    with transaction(sessions) as session:
        return [
            lease.attempt.id for lease in attempts_repo.lease_attempts(session, cluster_id, 100)
        ]


def placements(sessions: sessionmaker[Session], ids: list[str]) -> list[tuple[str, str | None]]:
    """(cluster name or PENDING, GPU type) of each attempt, in order."""
    with sessions() as session:
        names = {c.id: c.name for c in session.scalars(select(Cluster))}
        result = []
        for attempt_id in ids:
            attempt = session.get_one(TaskAttempt, attempt_id)
            where = names[attempt.cluster_id] if attempt.cluster_id else attempt.status
            result.append((where, attempt.gpu_type))
        return result


def test_a_gpu_task_waits_until_a_cluster_with_its_gpus_is_online(
    sessions: sessionmaker[Session], workflow_spec: WorkflowSpec
) -> None:
    execution = execution_of(sessions, workflow_spec, Resources(cpu=1, gpu=1, gpu_type="A100"))
    # A local-process agent: CPU and memory, no GPUs.
    add_cluster(sessions, "local", capacity(cpu=64, memory=64 * GI))
    (attempt,) = add_attempts(sessions, execution, 1)
    assert place(sessions) == 0
    assert placements(sessions, [attempt]) == [("PENDING", None)]
    add_cluster(sessions, "gpus", capacity(cpu=64, gpus={"A100": (4, 0)}))
    assert place(sessions) == 1
    assert placements(sessions, [attempt]) == [("gpus", "A100")]


def test_cpu_tasks_still_spread_over_local_agents(
    sessions: sessionmaker[Session], workflow_spec: WorkflowSpec
) -> None:
    execution = execution_of(sessions, workflow_spec, Resources(cpu=1))
    for name in ("beta", "alpha"):
        add_cluster(sessions, name, capacity(cpu=8, memory=16 * GI))
    ids = add_attempts(sessions, execution, 4)
    assert place(sessions) == 4
    assert placements(sessions, ids) == [
        ("alpha", None),
        ("beta", None),
        ("alpha", None),
        ("beta", None),
    ]


def test_preferred_gpu_type_first_then_the_next_when_it_is_used_up(
    sessions: sessionmaker[Session], workflow_spec: WorkflowSpec
) -> None:
    resources = Resources(cpu=1, gpu=2, gpu_type=["H100", "A100"])
    execution = execution_of(sessions, workflow_spec, resources)
    add_cluster(sessions, "a100s", capacity(cpu=64, gpus={"A100": (8, 0)}))
    add_cluster(sessions, "h100s", capacity(cpu=64, gpus={"H100": (8, 4)}))
    ids = add_attempts(sessions, execution, 7)
    # 4 H100 free: two attempts; then 8 A100: four more; the seventh fits nowhere.
    assert place(sessions) == 6
    assert placements(sessions, ids) == [
        ("h100s", "H100"),
        ("h100s", "H100"),
        ("a100s", "A100"),
        ("a100s", "A100"),
        ("a100s", "A100"),
        ("a100s", "A100"),
        ("PENDING", None),
    ]


def test_the_chosen_gpu_type_is_sent_with_the_assignment(
    sessions: sessionmaker[Session], workflow_spec: WorkflowSpec
) -> None:
    resources = Resources(cpu=2, memory_bytes=GI, gpu=1, gpu_type=["H100", "A100"])
    execution = execution_of(sessions, workflow_spec, resources)
    cluster_id = add_cluster(sessions, "a100s", capacity(cpu=64, gpus={"A100": (1, 0)}))
    (attempt_id,) = add_attempts(sessions, execution, 1)
    assert place(sessions) == 1
    assert lease(sessions, cluster_id) == [attempt_id]
    with sessions() as session:
        attempt = session.get_one(TaskAttempt, attempt_id)
        spec = WorkflowSpec.model_validate(attempt.execution.workflow.spec)
        assignment = assignment_from_attempt(
            attempt, spec, tenant="research", bundle_uri="b", report_secret="ffl_s"
        )
    assert (assignment.resources.gpu, assignment.resources.gpu_type) == (1, "A100")
    assert (assignment.resources.cpu, assignment.resources.memory_bytes) == (2, GI)


def test_required_labels(sessions: sessionmaker[Session], workflow_spec: WorkflowSpec) -> None:
    execution = execution_of(sessions, workflow_spec, Resources(labels={"zone": "eu"}))
    add_cluster(sessions, "aaa-us", capacity(cpu=64), {"zone": "us"})
    add_cluster(sessions, "zzz-eu", capacity(cpu=2), {"zone": "eu", "tier": "gold"})
    ids = add_attempts(sessions, execution, 3)
    assert place(sessions) == 2  # zzz-eu has 2 CPU; aaa-us never gets one
    assert placements(sessions, ids) == [("zzz-eu", None), ("zzz-eu", None), ("PENDING", None)]


def test_capacity_counts_work_handed_out_since_the_last_heartbeat(
    sessions: sessionmaker[Session], workflow_spec: WorkflowSpec
) -> None:
    execution = execution_of(sessions, workflow_spec, Resources(cpu=1))
    cluster_id = add_cluster(sessions, "small", capacity(cpu=4, cpu_in_use=1))
    ids = add_attempts(sessions, execution, 5)
    # 3 CPU free: three attempts, in one pass (each counts against the next).
    assert place(sessions) == 3
    assert [where for where, _ in placements(sessions, ids)].count("small") == 3
    # Another pass before any heartbeat: the ASSIGNED ones still count.
    assert place(sessions) == 0
    # Leased, then a heartbeat that includes them: 4 in use of 4.
    assert len(lease(sessions, cluster_id)) == 3
    heartbeat(sessions, cluster_id, capacity(cpu=4, cpu_in_use=4))
    assert place(sessions) == 0
    # Two finish and the next heartbeat says so: two more are placed.
    heartbeat(sessions, cluster_id, capacity(cpu=4, cpu_in_use=2))
    assert place(sessions) == 2
    assert [where for where, _ in placements(sessions, ids)] == ["small"] * 5


def test_capacity_freed_by_a_finish_counts_before_the_next_heartbeat(
    sessions: sessionmaker[Session], workflow_spec: WorkflowSpec
) -> None:
    execution = execution_of(sessions, workflow_spec, Resources(cpu=2))
    cluster_id = add_cluster(sessions, "small", capacity(cpu=4))
    first, second, third = add_attempts(sessions, execution, 3)
    assert place(sessions) == 2
    assert len(lease(sessions, cluster_id)) == 2
    heartbeat(sessions, cluster_id, capacity(cpu=4, cpu_in_use=4))
    assert place(sessions) == 0
    with transaction(sessions) as session:  # the agent reports: first finished
        attempt = session.get_one(TaskAttempt, first)
        assert attempts_repo.move_attempt(session, attempt, A.SUCCEEDED)
    # The heartbeat still says 4 in use; the finish after it frees 2 at once.
    assert place(sessions) == 1
    assert placements(sessions, [third])[0][0] == "small"
    # Never more than the cluster has: a second finish frees 2 more, not beyond 4.
    with transaction(sessions) as session:
        attempt = session.get_one(TaskAttempt, second)
        assert attempts_repo.move_attempt(session, attempt, A.SUCCEEDED)
    with sessions() as session:
        (candidate,) = [c for _, c in placement_candidates(session, heartbeat_grace=GRACE)]
    assert candidate.free.cpu == 2  # 4, less the third attempt, assigned after the heartbeat


def test_a_heartbeat_that_lists_what_it_counts_overrides_the_times(
    sessions: sessionmaker[Session], workflow_spec: WorkflowSpec
) -> None:
    """The race of timing: an attempt leased while the agent's heartbeat was on its way is
    older than the heartbeat's receipt, yet the agent's figures do not count it. A heartbeat
    that lists the attempts it counts leaves no guess: the unlisted one still holds its CPU,
    and a listed one that has ended since is free."""
    execution = execution_of(sessions, workflow_spec, Resources(cpu=2))
    cluster_id = add_cluster(sessions, "small", capacity(cpu=4))
    first, second, third = add_attempts(sessions, execution, 3)
    assert place(sessions) == 2
    assert sorted(lease(sessions, cluster_id)) == sorted([first, second])
    # Received after both leases, but measured when the agent held only `first`.
    heartbeat(
        sessions, cluster_id, {**capacity(cpu=4, cpu_in_use=2), "counted_attempt_ids": [first]}
    )
    with sessions() as session:
        (candidate,) = [c for _, c in placement_candidates(session, heartbeat_grace=GRACE)]
    assert candidate.free.cpu == 0  # by the times alone it would read 2: an overcommit
    assert place(sessions) == 0
    with transaction(sessions) as session:  # `first` ends: listed, so its 2 CPU are free
        attempt = session.get_one(TaskAttempt, first)
        assert attempts_repo.move_attempt(session, attempt, A.SUCCEEDED)
    assert place(sessions) == 1
    assert placements(sessions, [third])[0][0] == "small"
    with sessions() as session:
        (candidate,) = [c for _, c in placement_candidates(session, heartbeat_grace=GRACE)]
    assert candidate.free.cpu == 0


def test_a_pass_reads_each_tenants_first_page_not_its_whole_backlog(
    sessions: sessionmaker[Session], workflow_spec: WorkflowSpec
) -> None:
    """A tenant's backlog costs a pass its first `TENANT_PAGE` attempts, by priority then age
    (the order fair share offers them in); another tenant's, newer, are read all the same."""

    def execution(tenant_name: str, priority: int) -> str:
        with transaction(sessions) as session:
            tenant = get_or_create_tenant(session, tenant_name)
            workflow = register_workflow_version(session, tenant.id, workflow_spec, BUNDLE, None)
            return create_execution(session, tenant.id, workflow, {"n": 3}, priority=priority).id

    backlog = add_attempts(sessions, execution("research", 0), TENANT_PAGE + 10)
    urgent = add_attempts(sessions, execution("research", 5), 3)  # newer, but first
    other = add_attempts(sessions, execution("vision", 0), 2)

    with sessions() as session:
        read = [w.attempt_id for w in waiting_attempts(session)]

    assert sorted(read) == sorted(urgent + backlog[: TENANT_PAGE - 3] + other)


def test_pending_reasons_are_written_once_per_reason_and_only_when_they_change(
    sessions: sessionmaker[Session], workflow_spec: WorkflowSpec
) -> None:
    """A pass explains its waiting attempts in one UPDATE per reason, not one per attempt, and
    writes nothing where an attempt shows its reason already."""
    too_big = execution_of(sessions, workflow_spec, Resources(cpu=2))
    needs_gpu = execution_of(sessions, workflow_spec, Resources(cpu=1, gpu=1, gpu_type="A100"))
    add_cluster(sessions, "small", capacity(cpu=1))
    ids = add_attempts(sessions, too_big, 3) + add_attempts(sessions, needs_gpu, 3)

    with statements(sessions) as seen:
        assert place(sessions) == 0
    explained = [s for s in seen if s.startswith("UPDATE task_attempts SET pending_reason")]
    assert len(explained) == 2
    with sessions() as session:
        reasons = [session.get_one(TaskAttempt, i).pending_reason or "" for i in ids]
    assert len(set(reasons[:3])) == len(set(reasons[3:])) == 1
    assert reasons[0] != reasons[3]
    assert all(reason.startswith("no capacity: small: ") for reason in reasons)

    with statements(sessions) as seen:
        assert place(sessions) == 0
    assert not [s for s in seen if s.startswith("UPDATE")]


def test_a_pending_reason_is_written_only_while_the_attempt_waits(
    sessions: sessionmaker[Session], workflow_spec: WorkflowSpec
) -> None:
    """An attempt moved on since the pass read it (by another replica) keeps what it has."""
    execution = execution_of(sessions, workflow_spec, Resources(cpu=1))
    add_cluster(sessions, "small", capacity(cpu=1))
    placed, waiting = add_attempts(sessions, execution, 2)
    assert place(sessions) == 1
    with transaction(sessions) as session:
        attempts_repo.set_pending_reason(session, [placed, waiting], "quota: needs 1 CPU")
    with sessions() as session:
        assert session.get_one(TaskAttempt, placed).pending_reason is None
        assert session.get_one(TaskAttempt, waiting).pending_reason == "quota: needs 1 CPU"


@pytest.mark.parametrize(
    ("strategy", "expected"), [(Strategy.SPREAD, "roomy"), (Strategy.BINPACK, "snug")]
)
def test_strategy(
    sessions: sessionmaker[Session],
    workflow_spec: WorkflowSpec,
    strategy: Strategy,
    expected: str,
) -> None:
    execution = execution_of(sessions, workflow_spec, Resources(cpu=2))
    add_cluster(sessions, "roomy", capacity(cpu=32))
    add_cluster(sessions, "snug", capacity(cpu=3))
    (attempt,) = add_attempts(sessions, execution, 1)
    assert place(sessions, strategy=strategy) == 1
    assert placements(sessions, [attempt]) == [(expected, None)]


def test_an_agent_asking_for_work_takes_only_what_it_should_run(
    sessions: sessionmaker[Session], workflow_spec: WorkflowSpec
) -> None:
    resources = Resources(cpu=1, gpu=1, gpu_type=["H100", "A100"])
    execution = execution_of(sessions, workflow_spec, resources)
    a100s = add_cluster(sessions, "a100s", capacity(cpu=64, gpus={"A100": (8, 0)}))
    h100s = add_cluster(sessions, "h100s", capacity(cpu=64, gpus={"H100": (1, 0)}))
    first, second = add_attempts(sessions, execution, 2)
    # H100 fits on h100s now: a100s does not take the first with a less preferred type.
    assert place(sessions, only_cluster_id=a100s) == 0
    assert place(sessions, only_cluster_id=h100s) == 1
    # h100s is full now, so A100 is the best that fits: a100s takes the second.
    assert place(sessions, only_cluster_id=h100s) == 0
    assert place(sessions, only_cluster_id=a100s) == 1
    assert placements(sessions, [first, second]) == [("h100s", "H100"), ("a100s", "A100")]


def test_placement_candidates_for_a_preview(
    sessions: sessionmaker[Session], workflow_spec: WorkflowSpec
) -> None:
    execution = execution_of(sessions, workflow_spec, Resources(cpu=1, gpu=2, gpu_type="A100"))
    add_cluster(sessions, "gpus", capacity(cpu=8, gpus={"A100": (4, 0)}), {"zone": "eu"})
    with transaction(sessions) as session:
        stale = clusters_repo.ensure_cluster(session, "stale", "token-stale", {})
        clusters_repo.record_heartbeat(session, stale, capacity=capacity(cpu=8))
        stale.last_heartbeat_at = utcnow() - timedelta(minutes=5)
        clusters_repo.ensure_cluster(session, "never", "token-never", {})
    add_attempts(sessions, execution, 1)
    assert place(sessions) == 1
    with sessions() as session:
        online = placement_candidates(session, heartbeat_grace=GRACE)
        everything = placement_candidates(session, heartbeat_grace=GRACE, include_offline=True)
    assert [c.name for _, c in online] == ["gpus"]
    by_name = {c.name: c for _, c in everything}
    assert sorted(by_name) == ["gpus", "never", "stale"]
    assert [by_name[n].online for n in ("gpus", "never", "stale")] == [True, False, False]
    gpus = by_name["gpus"]
    assert (gpus.labels, gpus.active_attempts) == ({"zone": "eu"}, 1)
    # The ASSIGNED attempt is not in the heartbeat yet: it counts.
    assert (gpus.free.cpu, gpus.free.gpus) == (7, {"A100": 2})
    assert by_name["never"].free.unknown


@pytest.fixture
def postgres_sessions(
    postgres_database_factory: Callable[[], str],
) -> Iterator[sessionmaker[Session]]:
    """PostgreSQL only: SQLite has no row locks (one writer at a time)."""
    url = postgres_database_factory()
    upgrade_database(url)
    engine = make_engine(url)
    yield make_session_factory(engine)
    engine.dispose()


@pytest.mark.postgres
def test_replicas_skip_rows_another_one_is_placing(
    postgres_sessions: sessionmaker[Session], workflow_spec: WorkflowSpec
) -> None:
    """While one replica holds PENDING rows (FOR UPDATE), another places the rest at once
    instead of waiting for them."""
    sessions = postgres_sessions
    execution = execution_of(sessions, workflow_spec, Resources(cpu=1))
    add_cluster(sessions, "alpha", capacity(cpu=64))
    held, free = add_attempts(sessions, execution, 2)
    with transaction(sessions) as first_replica:
        first_replica.execute(
            select(TaskAttempt).where(TaskAttempt.id == held).with_for_update()
        ).all()
        with transaction(sessions) as second_replica:
            # Waiting on the held row would fail here instead of hanging the test.
            second_replica.execute(text("SET LOCAL lock_timeout = '2s'"))
            assert place_pending_attempts(second_replica, heartbeat_grace=GRACE) == 1
    assert placements(sessions, [held, free]) == [("PENDING", None), ("alpha", None)]
    assert place(sessions) == 1
    assert placements(sessions, [held, free]) == [("alpha", None), ("alpha", None)]
