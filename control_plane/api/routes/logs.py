"""`GET /api/v1/executions/{id}/logs`: what each task attempt printed.

Agents copy an attempt's output (its last MiB) beside its inputs in the blob store while it
runs and when it ends (`fleetflow.storage.attempt_log_uri`); the control plane never dials an
agent, so this is how logs of a pod in a remote cluster reach the user.

Following an execution's logs (`fleetflow executions logs ID --follow`, `Client.follow_logs`)
is polling this route: the client asks only for the attempts still producing output
(`attempt_id=…`, repeatable) and prints what was added since its previous read.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from starlette.concurrency import run_in_threadpool

from control_plane.api.auth import ExecutionsRead
from control_plane.api.deps import BlobStoreDep, SessionDep
from control_plane.api.errors import ApiError
from control_plane.db.models import TaskAttempt
from control_plane.db.repositories.executions import cluster_names, get_execution
from control_plane.schemas.common import ErrorResponse
from fleetflow.api_models.executions import AttemptLog, ExecutionLogs
from fleetflow.states import NO_MAP_INDEX, AttemptState
from fleetflow.storage import BlobNotFoundError, BlobStore, attempt_log_uri

router = APIRouter(prefix="/executions", tags=["executions"])
MAX_ATTEMPT_IDS = 100  # per request: a follower asks for more in several


def _read_log(blobs: BlobStore, attempt: TaskAttempt) -> str | None:
    if attempt.cache_hit or attempt.status == AttemptState.SKIPPED:
        return None  # nothing ran
    try:
        return blobs.get(attempt_log_uri(attempt.inputs_uri)).decode("utf-8", errors="replace")
    except BlobNotFoundError:
        return None


@router.get("/{execution_id}/logs", responses={404: {"model": ErrorResponse}})
async def execution_logs(
    execution_id: str,
    session: SessionDep,
    caller: ExecutionsRead,
    blob_store: BlobStoreDep,
    node: Annotated[str | None, Query(description="only this node's attempts")] = None,
    attempt: Annotated[int | None, Query(ge=1, description="only this attempt number")] = None,
    attempt_id: Annotated[
        list[str] | None,
        Query(max_length=MAX_ATTEMPT_IDS, description="only these attempts (repeatable)"),
    ] = None,
) -> ExecutionLogs:
    """Each attempt's output, in the order the attempts were created."""
    execution = await run_in_threadpool(get_execution, session, caller.tenant.id, execution_id)
    if execution is None:
        raise ApiError(404, f"execution {execution_id} not found")
    wanted = set(attempt_id) if attempt_id is not None else None
    chosen = [
        a
        for a in execution.attempts
        if (node is None or a.node_id == node)
        and (attempt is None or a.attempt_number == attempt)
        and (wanted is None or a.id in wanted)
    ]
    if node is not None and not chosen:
        nodes = sorted({a.node_id for a in execution.attempts})
        raise ApiError(
            404, f"execution {execution_id} has no attempt of node {node!r} (nodes: {nodes})"
        )
    names = cluster_names(session, (a.cluster_id for a in chosen))
    logs = [await run_in_threadpool(_read_log, blob_store, a) for a in chosen]
    return ExecutionLogs(
        execution_id=execution_id,
        attempts=[
            AttemptLog(
                attempt_id=a.id,
                node_id=a.node_id,
                map_index=None if a.map_index == NO_MAP_INDEX else a.map_index,
                attempt_number=a.attempt_number,
                status=a.status,
                cluster=names.get(a.cluster_id) if a.cluster_id else None,
                log=log,
            )
            for a, log in zip(chosen, logs, strict=True)
        ],
    )
