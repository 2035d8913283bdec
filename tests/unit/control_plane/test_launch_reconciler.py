"""Executions whose launch was lost are started again; others are left alone."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from sqlalchemy import update

from control_plane.db.models import Execution, utcnow
from control_plane.db.repositories import tenancy
from control_plane.db.repositories.executions import create_execution
from control_plane.db.repositories.tenants import get_or_create_tenant
from control_plane.db.repositories.workflows import register_workflow_version
from control_plane.db.session import make_engine, make_session_factory, transaction
from control_plane.orchestration.states import ExecutionState
from control_plane.services.launch_reconciler import relaunch_queued_executions
from fleetflow.ir import WorkflowSpec


class RecordingLauncher:
    """Stand-in for the Temporal launcher: records what it was asked to start."""

    def __init__(self) -> None:
        self.started: list[str] = []

    async def start_execution(self, execution_id: str) -> bool:
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
    launcher = RecordingLauncher()
    loop_task = asyncio.create_task(
        relaunch_queued_executions(sessions, launcher, stop, interval=0.05)
    )
    try:
        async with asyncio.timeout(10):
            while not launcher.started:
                await asyncio.sleep(0.01)
    finally:
        stop.set()
        await loop_task
    assert set(launcher.started) == {lost.id}
    assert fresh.id not in launcher.started
