"""Reservations in a real placement pass, on SQLite and PostgreSQL: before the bound, small
tasks backfill around a large one that does not fit; past it, the large one holds its cluster
(small tasks may not take its GPUs, other GPU types stay usable) and says so in its pending
reason; once capacity frees it starts first."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy.orm import Session, sessionmaker

from control_plane.db.models import TaskAttempt, utcnow
from control_plane.db.session import make_engine, make_session_factory, transaction
from control_plane.scheduling.scheduler import place_pending_attempts
from fleetflow.ir import Resources, WorkflowSpec
from tests.unit.control_plane.test_admission import submit
from tests.unit.control_plane.test_cohort_scheduling import join
from tests.unit.control_plane.test_placement_repository import (
    GRACE,
    add_attempts,
    add_cluster,
    capacity,
    execution_of,
    heartbeat,
    placements,
)

LARGE = Resources(cpu=1, gpu=8, gpu_type="H100")
SMALL = Resources(cpu=1, gpu=1, gpu_type=["H100", "A100"])
BOUND = timedelta(seconds=300)


@pytest.fixture
def sessions(database_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(database_url)
    yield make_session_factory(engine)
    engine.dispose()


def place(sessions: sessionmaker[Session], *, waited: timedelta) -> int:
    """A pass run `waited` after now (so attempts created now have waited that long)."""
    with transaction(sessions) as session:
        return place_pending_attempts(
            session, heartbeat_grace=GRACE, reserve_after=BOUND, now=utcnow() + waited
        )


def reason(sessions: sessionmaker[Session], attempt_id: str) -> str | None:
    with sessions() as session:
        return session.get_one(TaskAttempt, attempt_id).pending_reason


def test_before_the_bound_small_tasks_backfill_around_a_large_one(
    sessions: sessionmaker[Session], workflow_spec: WorkflowSpec
) -> None:
    add_cluster(sessions, "gpu-a", capacity(cpu=64, gpus={"H100": (8, 6)}))
    (large,) = add_attempts(sessions, execution_of(sessions, workflow_spec, LARGE), 1)
    small = add_attempts(sessions, execution_of(sessions, workflow_spec, SMALL), 3)
    assert place(sessions, waited=timedelta(seconds=10)) == 2
    assert placements(sessions, [large, *small]) == [
        ("PENDING", None),
        ("gpu-a", "H100"),
        ("gpu-a", "H100"),
        ("PENDING", None),
    ]
    assert reason(sessions, large) == "no capacity: gpu-a: needs 8 H100, 2 free"


def test_past_the_bound_a_large_task_holds_its_cluster_and_starts_first(
    sessions: sessionmaker[Session], workflow_spec: WorkflowSpec
) -> None:
    cluster_id = add_cluster(
        sessions, "gpu-a", capacity(cpu=64, gpus={"H100": (8, 6), "A100": (1, 0)})
    )
    (large,) = add_attempts(sessions, execution_of(sessions, workflow_spec, LARGE), 1)
    small = add_attempts(sessions, execution_of(sessions, workflow_spec, SMALL), 3)
    # All have waited past the bound; the large one is the oldest: it holds gpu-a's H100s.
    # A small one may still take the A100 that the large one does not need.
    assert place(sessions, waited=BOUND + timedelta(seconds=1)) == 1
    assert placements(sessions, [large, *small]) == [
        ("PENDING", None),
        ("gpu-a", "A100"),
        ("PENDING", None),
        ("PENDING", None),
    ]
    assert reason(sessions, large) == "reserved on gpu-a: waiting for 8 H100, 2 free"
    assert reason(sessions, small[1]) == (
        "no capacity: gpu-a: needs 1 H100, 0 free; needs 1 A100, 0 free (held for an older task)"
    )
    # Four H100 free up: still not enough for it, and still nobody else's.
    heartbeat(sessions, cluster_id, capacity(cpu=64, gpus={"H100": (8, 2), "A100": (1, 1)}))
    assert place(sessions, waited=BOUND + timedelta(seconds=2)) == 0
    assert reason(sessions, large) == "reserved on gpu-a: waiting for 8 H100, 6 free"
    # All of them free: the large one starts, the small ones wait for it.
    heartbeat(sessions, cluster_id, capacity(cpu=64, gpus={"H100": (8, 0), "A100": (1, 1)}))
    assert place(sessions, waited=BOUND + timedelta(seconds=3)) == 1
    assert placements(sessions, [large, *small])[0] == ("gpu-a", "H100")
    assert [where for where, _ in placements(sessions, small[1:])] == ["PENDING", "PENDING"]


def test_with_no_bound_nothing_is_ever_held(
    sessions: sessionmaker[Session], workflow_spec: WorkflowSpec
) -> None:
    add_cluster(sessions, "gpu-a", capacity(cpu=64, gpus={"H100": (8, 6)}))
    (large,) = add_attempts(sessions, execution_of(sessions, workflow_spec, LARGE), 1)
    small = add_attempts(sessions, execution_of(sessions, workflow_spec, SMALL), 2)
    with transaction(sessions) as session:
        assert (
            place_pending_attempts(
                session, heartbeat_grace=GRACE, reserve_after=None, now=utcnow() + BOUND * 10
            )
            == 2
        )
    assert [where for where, _ in placements(sessions, [large, *small])] == [
        "PENDING",
        "gpu-a",
        "gpu-a",
    ]


def test_nothing_is_held_for_an_attempt_its_cohort_does_not_admit(
    sessions: sessionmaker[Session], workflow_spec: WorkflowSpec
) -> None:
    """a may hold 2 H100 of its own and borrow none: its 8-GPU task can never be admitted
    now, so even past the bound no cluster is held for it and b's small tasks still run."""
    add_cluster(sessions, "gpu-a", capacity(cpu=64, gpus={"H100": (8, 0)}))
    join(sessions, "lab", "a", 2, borrowing_limit=0)
    join(sessions, "lab", "b", 6)
    (large,) = add_attempts(sessions, submit(sessions, workflow_spec, "a", LARGE), 1)
    small = add_attempts(sessions, submit(sessions, workflow_spec, "b", SMALL), 2)
    assert place(sessions, waited=BOUND + timedelta(seconds=1)) == 2
    assert [where for where, _ in placements(sessions, [large, *small])] == [
        "PENDING",
        "gpu-a",
        "gpu-a",
    ]
    why = reason(sessions, large)
    assert why is not None and why.startswith("cohort lab") and "borrowing limit is 0" in why
