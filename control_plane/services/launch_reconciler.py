"""Starts executions whose launch, or whose workflow, was lost.

The API commits an execution before starting its Temporal workflow; if Temporal was down at
that moment (the client got a 503) or the process died in between, the execution would stay
QUEUED forever. This loop re-launches such executions; starting is idempotent because the
workflow id is the execution id.

An orchestrator that lost its state (the embedded Temporal test server keeps workflows in
memory: `fleetflow dev up` killed with -9 and started again) leaves executions RUNNING with no
workflow. At start, every RUNNING execution's workflow is started again, which does nothing
where one still runs (the id is taken); a new one replays the attempts the database holds
(`start_attempt` answers a finished attempt with its result) instead of running them again.

A child execution (a reference node's, `Execution.parent_execution_id`) is its parent's
workflow's to start, as a child workflow: neither loop starts one.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from control_plane.db.models import Execution, utcnow
from control_plane.services.executions import ExecutionLauncher
from fleetflow.states import ExecutionState

log = logging.getLogger(__name__)


def queued_execution_ids(
    sessions: sessionmaker[Session], *, older_than: timedelta, limit: int = 100
) -> list[str]:
    cutoff = utcnow() - older_than
    with sessions() as session:
        return list(
            session.scalars(
                select(Execution.id)
                .where(Execution.status == ExecutionState.QUEUED.value)
                .where(Execution.created_at < cutoff)
                .where(Execution.parent_execution_id.is_(None))  # its parent's workflow starts it
                .order_by(Execution.created_at)
                .limit(limit)
            )
        )


def running_execution_ids(sessions: sessionmaker[Session]) -> list[str]:
    with sessions() as session:
        return list(
            session.scalars(
                select(Execution.id)
                .where(Execution.status == ExecutionState.RUNNING.value)
                .where(Execution.parent_execution_id.is_(None))  # its parent's workflow runs it
                .order_by(Execution.created_at)
            )
        )


async def resume_orphaned_executions(
    sessions: sessionmaker[Session],
    launcher: ExecutionLauncher,
    *,
    cause: str = "the orchestrator lost it",
) -> int:
    """Start the workflow of every RUNNING execution that has none; how many were started.
    `cause` says in the log why they had none."""
    resumed = 0
    for execution_id in await asyncio.to_thread(running_execution_ids, sessions):
        if await launcher.start_execution(execution_id):
            log.warning(
                "execution %s was RUNNING without a workflow (%s); "
                "resumed it from the attempts on record",
                execution_id,
                cause,
            )
            resumed += 1
    return resumed


async def relaunch_queued_executions(
    sessions: sessionmaker[Session],
    launcher: ExecutionLauncher,
    stop: asyncio.Event,
    *,
    interval: float = 15,
    older_than: timedelta = timedelta(seconds=10),
) -> None:
    """Resume RUNNING executions whose workflow is gone (once, at start), then every
    `interval` seconds until `stop`, (re)start executions QUEUED for `older_than`."""
    orphans_checked = False
    while not stop.is_set():
        try:
            if not orphans_checked:
                await resume_orphaned_executions(sessions, launcher)
                orphans_checked = True
            for execution_id in await asyncio.to_thread(
                queued_execution_ids, sessions, older_than=older_than
            ):
                if await launcher.start_execution(execution_id):
                    log.info("started execution %s whose launch had been lost", execution_id)
        except Exception:  # Temporal or the database is away: try again next round
            log.warning("could not re-launch queued executions; retrying", exc_info=True)
        try:
            await asyncio.wait_for(stop.wait(), timeout=interval)
        except TimeoutError:
            pass
