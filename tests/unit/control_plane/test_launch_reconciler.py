"""Executions whose launch (or workflow) was lost are started again; others are left alone."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy import update

from control_plane.db.models import Execution, utcnow
from control_plane.db.repositories import tenancy
from control_plane.db.repositories.executions import create_execution
from control_plane.db.repositories.tenants import get_or_create_tenant
from control_plane.db.repositories.workflows import register_workflow_version
from control_plane.db.session import make_engine, make_session_factory, transaction
from control_plane.services.executions import RootsFirstLauncher
from control_plane.services.launch_reconciler import relaunch_queued_executions
from fleetflow.ir import WorkflowSpec
from fleetflow.states import ExecutionState
from tests.polling import wait_until_async


class RecordingLauncher:
    """Stand-in for the Temporal launcher: records what it started; the ids in `workflows`
    have a workflow already (starting them again does nothing, as with Temporal)."""

    def __init__(self, workflows: set[str] | None = None) -> None:
        self.workflows = set(workflows or ())
        self.asked: list[str] = []
        self.started: list[str] = []

    async def start_execution(self, execution_id: str) -> bool:
        self.asked.append(execution_id)
        if execution_id in self.workflows:
            return False
        self.workflows.add(execution_id)
        self.started.append(execution_id)
        return True


async def test_only_old_queued_executions_are_relaunched(
    database_url: str, workflow_spec: WorkflowSpec
) -> None:
    sessions = make_session_factory(make_engine(database_url))
    with transaction(sessions) as session:
        tenant = get_or_create_tenant(session, "default")
        tenancy.grant_cluster(session, tenant, tenancy.EVERY_CLUSTER)
        version = register_workflow_version(session, tenant.id, workflow_spec, "a" * 64, None)
        lost, fresh, running = (
            create_execution(session, tenant.id, version, {"n": 1, "lr": 0.1}) for _ in range(3)
        )
        old = utcnow() - timedelta(minutes=5)
        session.execute(
            update(Execution).where(Execution.id.in_([lost.id, running.id])).values(created_at=old)
        )
        session.execute(
            update(Execution)
            .where(Execution.id == running.id)
            .values(status=ExecutionState.RUNNING.value)
        )
    stop = asyncio.Event()
    launcher = RecordingLauncher(workflows={running.id})
    loop_task = asyncio.create_task(
        relaunch_queued_executions(sessions, launcher, stop, interval=0.05)
    )
    try:
        await wait_until_async(
            lambda: launcher.started, timeout=10, interval=0.01, message="a relaunch"
        )
    finally:
        stop.set()
        await loop_task
    assert set(launcher.started) == {lost.id}
    assert fresh.id not in launcher.started


async def test_running_executions_without_a_workflow_are_resumed_once_at_start(
    database_url: str, workflow_spec: WorkflowSpec
) -> None:
    """The orchestrator lost its workflows (the embedded Temporal server restarted): each
    RUNNING execution's workflow is started again once; one that still runs is left alone."""
    sessions = make_session_factory(make_engine(database_url))
    with transaction(sessions) as session:
        tenant = get_or_create_tenant(session, "default")
        version = register_workflow_version(session, tenant.id, workflow_spec, "a" * 64, None)
        orphan, alive = (
            create_execution(session, tenant.id, version, {"n": 1, "lr": 0.1}) for _ in range(2)
        )
        session.execute(
            update(Execution)
            .where(Execution.id.in_([orphan.id, alive.id]))
            .values(status=ExecutionState.RUNNING.value)
        )
    stop = asyncio.Event()
    launcher = RecordingLauncher(workflows={alive.id})
    loop_task = asyncio.create_task(
        relaunch_queued_executions(sessions, launcher, stop, interval=0.05)
    )
    try:
        await wait_until_async(
            lambda: len(launcher.asked) >= 2, timeout=10, interval=0.01, message="two asked"
        )
        await asyncio.sleep(0.2)  # a few more rounds: RUNNING ones are not asked again
    finally:
        stop.set()
        await loop_task
    assert launcher.started == [orphan.id]
    assert sorted(launcher.asked) == sorted([orphan.id, alive.id])


def test_the_roots_first_launcher_starts_the_first_tasks_beside_the_workflow() -> None:
    """`RootsFirstLauncher` (as `control_plane/server.py` wraps the Temporal launcher): the
    first tasks are started whether or not the orchestrator takes the start."""

    class Down:
        async def start_execution(self, execution_id: str) -> bool:
            raise ConnectionError("temporal is down")

        async def cancel_execution(self, execution_id: str) -> None:
            raise AssertionError("not asked")

    started: list[str] = []
    launcher = RootsFirstLauncher(Down(), started.append)
    with pytest.raises(ConnectionError):
        asyncio.run(launcher.start_execution("ex-1"))
    assert started == ["ex-1"]
