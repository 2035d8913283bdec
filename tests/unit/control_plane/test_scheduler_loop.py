"""The scheduler's loop on SQLite and PostgreSQL: a tick with nothing waiting runs no placement
pass, a tick still finds attempts another process created without waking this one, and the
capacity freed within a window shares one pass."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from control_plane.db.models import TaskAttempt
from control_plane.db.repositories import attempts as attempts_repo
from control_plane.db.repositories import clusters as clusters_repo
from control_plane.db.repositories import tenancy
from control_plane.db.repositories.executions import create_execution
from control_plane.db.repositories.tenants import get_or_create_tenant
from control_plane.db.repositories.workflows import register_workflow_version
from control_plane.db.session import transaction
from control_plane.scheduling import scheduler as scheduler_module
from control_plane.scheduling import snapshot as snapshot_module
from control_plane.scheduling.scheduler import Scheduler
from fleetflow.ir import WorkflowSpec
from fleetflow.states import AttemptState
from tests.polling import wait_until_async


class CountingScheduler(Scheduler):
    """Counts the passes it runs and the ticks that looked for waiting attempts."""

    passes = 0
    looks = 0

    async def place(self) -> int:
        self.passes += 1
        return await super().place()

    def _anything_waiting(self) -> bool:
        self.looks += 1
        return super()._anything_waiting()


def create_pending_attempt(
    sessions: sessionmaker[Session], spec: WorkflowSpec, count: int = 1
) -> None:
    with transaction(sessions) as session:
        tenant = get_or_create_tenant(session, "research")
        version = register_workflow_version(session, tenant.id, spec, "e" * 64, None)
        execution = create_execution(session, tenant.id, version, {"n": 3})
        for number in range(1, count + 1):
            attempts_repo.create_attempt(
                session,
                execution_id=execution.id,
                node_id="n0",
                task_name=spec.nodes[0].task,
                attempt_number=number,
                inputs_uri=f"file:///blobs/{number}/in.json",
                outputs_uri=f"file:///blobs/{number}/out.json",
            )


async def test_idle_ticks_run_no_pass_until_an_attempt_waits(
    session_factory: sessionmaker[Session],
    workflow_spec: WorkflowSpec,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(scheduler_module, "TICK_SECONDS", 0.01)
    scheduler = CountingScheduler(session_factory, heartbeat_grace=timedelta(seconds=30))
    async with scheduler.running():
        await wait_until_async(lambda: scheduler.looks >= 5, timeout=10, message="idle ticks")
        assert scheduler.passes == 1  # the first, at start-up; none on the idle ticks
        # Created as another process would: no wake-up reaches this scheduler.
        create_pending_attempt(session_factory, workflow_spec)
        await wait_until_async(lambda: scheduler.passes >= 2, timeout=10, message="a pass")


async def test_a_wake_up_runs_a_pass_without_looking_first(
    session_factory: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(scheduler_module, "TICK_SECONDS", 3600.0)
    scheduler = CountingScheduler(session_factory, heartbeat_grace=timedelta(seconds=30))
    async with scheduler.running():
        await wait_until_async(lambda: scheduler.passes == 1, timeout=10, message="first pass")
        scheduler.wake()
        await wait_until_async(lambda: scheduler.passes == 2, timeout=10, message="woken pass")
    assert scheduler.looks == 0


async def test_capacity_freed_within_the_window_shares_one_pass(
    session_factory: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each attempt that ends frees capacity: a busy cluster's frees share a pass instead of
    running one each."""
    monkeypatch.setattr(scheduler_module, "TICK_SECONDS", 3600.0)
    monkeypatch.setattr(scheduler_module, "FREED_WINDOW_SECONDS", 0.5)
    scheduler = CountingScheduler(session_factory, heartbeat_grace=timedelta(seconds=30))
    async with scheduler.running():
        await wait_until_async(lambda: scheduler.passes == 1, timeout=10, message="first pass")
        for _ in range(5):
            scheduler.wake_soon()
            await asyncio.sleep(0)
        await asyncio.sleep(0.01)
        assert scheduler.passes == 1  # the window is still open
        await wait_until_async(lambda: scheduler.passes == 2, timeout=10, message="freed pass")
        await asyncio.sleep(0.7)  # past another window: the five frees had one pass
        assert scheduler.passes == 2
        scheduler.wake_soon()  # a new window
        await wait_until_async(lambda: scheduler.passes == 3, timeout=10, message="next window")
    assert scheduler.looks == 0


async def test_a_pass_for_a_ready_attempt_covers_the_capacity_freed_before_it(
    session_factory: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An attempt that becomes ready is placed at once, and that pass sees the capacity freed
    before it: the window's own pass is not run as well."""
    monkeypatch.setattr(scheduler_module, "TICK_SECONDS", 3600.0)
    monkeypatch.setattr(scheduler_module, "FREED_WINDOW_SECONDS", 0.3)
    scheduler = CountingScheduler(session_factory, heartbeat_grace=timedelta(seconds=30))
    async with scheduler.running():
        await wait_until_async(lambda: scheduler.passes == 1, timeout=10, message="first pass")
        scheduler.wake_soon()
        scheduler.wake()
        await wait_until_async(lambda: scheduler.passes == 2, timeout=10, message="woken pass")
        await asyncio.sleep(0.6)  # past the window
        assert scheduler.passes == 2


async def test_a_pass_that_fills_a_tenants_page_runs_again_at_once(
    session_factory: sessionmaker[Session],
    workflow_spec: WorkflowSpec,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A pass reads each tenant's first `TENANT_PAGE` attempts; one that assigned that many
    runs again without waiting for a wake-up or a tick, until the capacity is used."""
    monkeypatch.setattr(scheduler_module, "TICK_SECONDS", 3600.0)
    monkeypatch.setattr(scheduler_module, "TENANT_PAGE", 2)
    monkeypatch.setattr(snapshot_module, "TENANT_PAGE", 2)
    with transaction(session_factory) as session:
        tenant = get_or_create_tenant(session, "research")
        tenancy.grant_cluster(session, tenant, tenancy.EVERY_CLUSTER)
        cluster = clusters_repo.ensure_cluster(session, "roomy", "token-roomy", {})
        roomy = {"cpu_allocatable": 64, "memory_bytes_allocatable": 1 << 40, "gpus": []}
        clusters_repo.record_heartbeat(session, cluster, capacity=roomy)
    create_pending_attempt(session_factory, workflow_spec, count=5)

    scheduler = CountingScheduler(session_factory, heartbeat_grace=timedelta(seconds=30))
    async with scheduler.running():
        await wait_until_async(lambda: scheduler.passes >= 3, timeout=10, message="3 passes")
        await asyncio.sleep(0.2)  # no fourth: the third assigned less than a page

    with session_factory() as session:
        statuses = session.scalars(select(TaskAttempt.status)).all()
    assert statuses == [AttemptState.ASSIGNED.value] * 5
    assert scheduler.passes == 3 and scheduler.looks == 0
