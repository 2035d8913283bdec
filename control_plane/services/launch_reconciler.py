"""Starts executions whose launch was lost.

The API commits an execution before starting its Temporal workflow; if Temporal was down at
that moment (the client got a 503) or the process died in between, the execution would stay
QUEUED forever. This loop re-launches such executions; starting is idempotent because the
workflow id is the execution id.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from control_plane.api.deps import ExecutionLauncher
from control_plane.db.models import Execution, utcnow
from control_plane.orchestration.states import ExecutionState

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
                .order_by(Execution.created_at)
                .limit(limit)
            )
        )


async def relaunch_queued_executions(
    sessions: sessionmaker[Session],
    launcher: ExecutionLauncher,
    stop: asyncio.Event,
    *,
    interval: float = 15,
    older_than: timedelta = timedelta(seconds=10),
) -> None:
    """Every `interval` seconds until `stop`, (re)start executions QUEUED for `older_than`."""
    while not stop.is_set():
        try:
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
