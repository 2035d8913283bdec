"""Cohorts in `place_pending_attempts`, on SQLite and PostgreSQL: borrowing is recorded,
the cohort's policy admits, and a tenant reclaiming its nominal quota preempts borrowed work
in the same pass that places its attempt."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy.orm import Session, sessionmaker

from control_plane.db.models import TaskAttempt
from control_plane.db.repositories import cohorts as cohorts_repo
from control_plane.db.repositories.tenants import get_or_create_tenant
from control_plane.db.session import make_engine, make_session_factory, transaction
from control_plane.scheduling.scheduler import place_pending_attempts
from fleetflow.ir import Resources, WorkflowSpec
from fleetflow.states import AttemptState
from tests.unit.control_plane.test_admission import attempts, submit
from tests.unit.control_plane.test_placement_repository import (
    GRACE,
    add_attempts,
    add_cluster,
    capacity,
    statements,
)

A = AttemptState


@pytest.fixture
def sessions(database_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(database_url)
    yield make_session_factory(engine)
    engine.dispose()


def join(
    sessions: sessionmaker[Session],
    cohort: str,
    tenant: str,
    nominal: int,
    borrowing_limit: int | None = None,
    *,
    within_tenant: bool = False,
) -> None:
    with transaction(sessions) as session:
        row = cohorts_repo.get_cohort(session, cohort) or cohorts_repo.create_cohort(
            session, cohort
        )
        cohorts_repo.set_membership(
            session,
            row,
            get_or_create_tenant(session, tenant),
            {"H100": {"nominal": nominal, "borrowing_limit": borrowing_limit}},
            within_tenant,
        )


def place(sessions: sessionmaker[Session]) -> list[str]:
    preempted: list[str] = []
    with transaction(sessions) as session:
        place_pending_attempts(session, heartbeat_grace=GRACE, preempted=preempted)
    return preempted


def by_id(sessions: sessionmaker[Session]) -> dict[str, TaskAttempt]:
    return {a.id: a for a in attempts(sessions)}


def test_borrow_then_reclaim_by_preemption(
    sessions: sessionmaker[Session], workflow_spec: WorkflowSpec
) -> None:
    """a and b have 4 H100 nominal each on one 8-GPU cluster. a runs 8 two-GPU... a runs
    four 2-GPU attempts (4 borrowed); b submits two: the two most recently started borrowed
    attempts of a are preempted and b's are placed in the same pass."""
    add_cluster(sessions, "gpu-a", capacity(64, gpus={"H100": (8, 0)}))
    join(sessions, "lab", "a", 4)
    join(sessions, "lab", "b", 4)
    a = submit(sessions, workflow_spec, "a", Resources(gpu=2, gpu_type="H100"))
    a_ids = add_attempts(sessions, a, 4)
    assert place(sessions) == []
    rows = by_id(sessions)
    assert [rows[i].borrowed_gpus for i in a_ids] == [0, 0, 2, 2]
    assert all(rows[i].status == A.ASSIGNED.value for i in a_ids)

    b = submit(sessions, workflow_spec, "b", Resources(gpu=2, gpu_type="H100"))
    b_ids = add_attempts(sessions, b, 2)
    preempted = place(sessions)
    rows = by_id(sessions)
    assert sorted(preempted) == sorted(a_ids[2:])
    assert [rows[i].status for i in a_ids] == [A.ASSIGNED.value] * 2 + [A.PREEMPTED.value] * 2
    assert all(rows[i].error_message and "cohort lab" in rows[i].error_message for i in a_ids[2:])
    assert [rows[i].status for i in b_ids] == [A.ASSIGNED.value] * 2
    assert [rows[i].borrowed_gpus for i in b_ids] == [0, 0]
    with sessions() as session:
        assert cohorts_repo.preemptions_by_tenant(session) == {
            get_or_create_tenant(session, "a").id: 2
        }
    # Nothing more to take: a third attempt of b would borrow, so it waits.
    add_attempts(sessions, b, 1)
    assert place(sessions) == []


def test_borrowing_limit_and_unused_nominal_bound_admission(
    sessions: sessionmaker[Session], workflow_spec: WorkflowSpec
) -> None:
    add_cluster(sessions, "gpu-a", capacity(64, gpus={"H100": (16, 0)}))
    join(sessions, "lab", "a", 2, borrowing_limit=2)
    join(sessions, "lab", "b", 6)
    a = submit(sessions, workflow_spec, "a", Resources(gpu=2, gpu_type="H100"))
    ids = add_attempts(sessions, a, 3)
    place(sessions)
    rows = by_id(sessions)
    assert [rows[i].status for i in ids] == [A.ASSIGNED.value] * 2 + [A.PENDING.value]
    reason = rows[ids[2]].pending_reason
    assert reason is not None and "borrowing limit is 2" in reason


def test_no_preemption_without_a_cohort_or_within_nominal_work(
    sessions: sessionmaker[Session], workflow_spec: WorkflowSpec
) -> None:
    add_cluster(sessions, "gpu-a", capacity(64, gpus={"H100": (4, 0)}))
    join(sessions, "lab", "a", 4)
    join(sessions, "lab", "b", 4)
    a = submit(sessions, workflow_spec, "a", Resources(gpu=4, gpu_type="H100"))
    add_attempts(sessions, a, 1)
    place(sessions)
    # b is within nominal but a holds only its own nominal: nothing may be taken
    b = submit(sessions, workflow_spec, "b", Resources(gpu=4, gpu_type="H100"))
    (b_id,) = add_attempts(sessions, b, 1)
    assert place(sessions) == []
    assert by_id(sessions)[b_id].status == A.PENDING.value
    # a tenant outside the cohort never preempts either
    outside = submit(sessions, workflow_spec, "z", Resources(gpu=4, gpu_type="H100"), priority=9)
    add_attempts(sessions, outside, 1)
    assert place(sessions) == []


@pytest.mark.parametrize("allowed", [True, False])
def test_within_tenant_priority_preemption_follows_the_policy(
    sessions: sessionmaker[Session], workflow_spec: WorkflowSpec, allowed: bool
) -> None:
    add_cluster(sessions, "gpu-a", capacity(64, gpus={"H100": (4, 0)}))
    join(sessions, "lab", "a", 4, within_tenant=allowed)
    low = submit(sessions, workflow_spec, "a", Resources(gpu=4, gpu_type="H100"), priority=1)
    (low_id,) = add_attempts(sessions, low, 1)
    place(sessions)
    high = submit(sessions, workflow_spec, "a", Resources(gpu=4, gpu_type="H100"), priority=5)
    (high_id,) = add_attempts(sessions, high, 1)
    preempted = place(sessions)
    rows = by_id(sessions)
    if allowed:
        assert preempted == [low_id]
        assert rows[low_id].status == A.PREEMPTED.value
        assert rows[high_id].status == A.ASSIGNED.value
    else:
        assert preempted == []
        assert rows[low_id].status == A.ASSIGNED.value
        assert rows[high_id].status == A.PENDING.value


def test_a_task_naming_no_gpu_type_preempts_when_its_cohort_refuses_the_free_type(
    sessions: sessionmaker[Session], workflow_spec: WorkflowSpec
) -> None:
    """Only 2 A100 are free, which b may not borrow (its A100 limit is 0); a borrows 4 of b's
    H100. b's task names no GPU type: placement picks the free A100, the cohort refuses them,
    and b takes its nominal H100 back by preemption instead of waiting."""
    add_cluster(sessions, "gpu-a", capacity(64, gpus={"H100": (8, 0), "A100": (2, 0)}))
    with transaction(sessions) as session:
        lab = cohorts_repo.create_cohort(session, "lab")
        for tenant, shares in (
            ("a", {"H100": {"nominal": 4, "borrowing_limit": None}}),
            (
                "b",
                {
                    "H100": {"nominal": 4, "borrowing_limit": None},
                    "A100": {"nominal": 0, "borrowing_limit": 0},
                },
            ),
        ):
            cohorts_repo.set_membership(
                session, lab, get_or_create_tenant(session, tenant), shares, False
            )
    a = submit(sessions, workflow_spec, "a", Resources(gpu=2, gpu_type="H100"))
    a_ids = add_attempts(sessions, a, 4)
    assert place(sessions) == []
    assert [by_id(sessions)[i].borrowed_gpus for i in a_ids] == [0, 0, 2, 2]

    b = submit(sessions, workflow_spec, "b", Resources(gpu=2))
    (b_id,) = add_attempts(sessions, b, 1)
    preempted = place(sessions)
    rows = by_id(sessions)
    assert len(preempted) == 1 and preempted[0] in a_ids[2:]
    assert rows[preempted[0]].status == A.PREEMPTED.value
    assert (rows[b_id].status, rows[b_id].gpu_type, rows[b_id].borrowed_gpus) == (
        A.ASSIGNED.value,
        "H100",
        0,
    )


def test_every_waiting_attempt_of_a_task_says_why_now_not_a_reason_of_an_earlier_pass(
    sessions: sessionmaker[Session], workflow_spec: WorkflowSpec
) -> None:
    """Seen on the dev stack: after its cohort was deleted, the first of two waiting attempts of
    a task said "no capacity" and the second still named the deleted cohort, because a pass
    skips a task's attempts once one of them fits nowhere."""
    add_cluster(sessions, "gpu-a", capacity(64, gpus={"H100": (2, 0)}))
    join(sessions, "lab", "a", 0, borrowing_limit=0)
    join(sessions, "lab", "b", 2)
    b = submit(sessions, workflow_spec, "b", Resources(gpu=2, gpu_type="H100"))
    add_attempts(sessions, b, 1)
    place(sessions)  # b holds the cluster
    a = submit(sessions, workflow_spec, "a", Resources(gpu=1, gpu_type="H100"))
    ids = add_attempts(sessions, a, 2)
    place(sessions)
    rows = by_id(sessions)
    assert all("cohort lab" in (rows[i].pending_reason or "") for i in ids)
    with transaction(sessions) as session:
        row = cohorts_repo.get_cohort(session, "lab")
        assert row is not None
        cohorts_repo.delete_cohort(session, row)
    place(sessions)
    rows = by_id(sessions)
    reasons = [rows[i].pending_reason or "" for i in ids]
    assert all(r.startswith("no capacity") and "cohort" not in r for r in reasons), reasons


def test_a_pass_reads_the_cohorts_only_when_a_waiting_tenant_is_in_one(
    sessions: sessionmaker[Session], workflow_spec: WorkflowSpec
) -> None:
    """Only the cohorts of the tenants waiting matter to a pass: a backlog of tenants in none
    costs no cohort reads; a member waiting is admitted through its cohort's policy."""
    add_cluster(sessions, "gpu-a", capacity(64, gpus={"H100": (8, 0)}))
    join(sessions, "lab", "a", 4, borrowing_limit=0)
    solo = submit(sessions, workflow_spec, "solo", Resources(gpu=6, gpu_type="H100"))
    (solo_id,) = add_attempts(sessions, solo, 1)
    with statements(sessions) as seen:
        place(sessions)
    assert not [s for s in seen if "FROM cohort_members" in s]
    assert by_id(sessions)[solo_id].status == A.ASSIGNED.value

    add_cluster(sessions, "gpu-b", capacity(64, gpus={"H100": (8, 0)}))
    a = submit(sessions, workflow_spec, "a", Resources(gpu=6, gpu_type="H100"))
    (a_id,) = add_attempts(sessions, a, 1)
    with statements(sessions) as seen:
        place(sessions)
    assert [s for s in seen if "FROM cohort_members" in s]
    waiting = by_id(sessions)[a_id]
    assert waiting.status == A.PENDING.value
    assert waiting.pending_reason is not None and "borrowing limit is 0" in waiting.pending_reason
