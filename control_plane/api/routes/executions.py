"""Executions: create one (`services/executions.py` validates and stores it; this route
launches it), relaunch or recover one, read them back, cancel them."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Annotated, Any

from fastapi import APIRouter, Body, Header, Query, Response
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from control_plane.api.auth import ExecutionsRead, ExecutionsWrite
from control_plane.api.deps import BlobStoreDep, LauncherDep, Offset, SessionDep, SettingsDep
from control_plane.api.errors import ApiError
from control_plane.api.routes import outputs
from control_plane.db.models import Execution, Tenant, WorkflowVersion
from control_plane.db.repositories.attempts import cancel_unfinished
from control_plane.db.repositories.executions import (
    cluster_names,
    execution_progress,
    get_execution,
    list_executions,
    move_execution,
)
from control_plane.execution_ends import ENDS, MAX_WAIT_SECONDS
from control_plane.large_values import load_values
from control_plane.schemas.common import ErrorResponse, FieldError
from control_plane.schemas.executions import (
    AttemptPublic,
    ExecutionCreate,
    ExecutionPublic,
    ExecutionRelaunch,
)
from control_plane.services.executions import (
    IDEMPOTENCY_HEADER,
    Creation,
    ExecutionLauncher,
    create_execution,
    relaunch_execution,
)
from control_plane.services.notifications import check_targets
from control_plane.services.sub_dags import SubDagError, find_sub_dag, public_sub_dag
from control_plane.settings import Settings
from fleetflow.api_models.executions import ChildExecution, ExecutionProgress, SubDag
from fleetflow.states import NO_MAP_INDEX, AttemptState, ExecutionState
from fleetflow.storage import BlobStore
from fleetflow.timestamps import as_utc_bound

logger = logging.getLogger(__name__)
router = APIRouter(prefix="/executions", tags=["executions"])


def executions_public(
    session: Session, executions: Sequence[Execution], blobs: BlobStore
) -> list[ExecutionPublic]:
    names = cluster_names(session, (a.cluster_id for e in executions for a in e.attempts))
    children = _children(session, [execution.id for execution in executions])
    return [
        ExecutionPublic(
            id=execution.id,
            workflow=execution.workflow.name,
            version=execution.workflow.version,
            status=ExecutionState(execution.status),
            priority=execution.priority,
            inputs=load_values(execution.inputs, blobs) or {},
            outputs=load_values(execution.outputs, blobs),
            error=execution.error,
            created_at=execution.created_at,
            started_at=execution.started_at,
            finished_at=execution.finished_at,
            attempts=[
                AttemptPublic(
                    id=attempt.id,
                    node_id=attempt.node_id,
                    map_index=None if attempt.map_index == NO_MAP_INDEX else attempt.map_index,
                    cache_hit=attempt.cache_hit,
                    task_name=attempt.task_name,
                    attempt_number=attempt.attempt_number,
                    status=AttemptState(attempt.status),
                    cluster=names.get(attempt.cluster_id) if attempt.cluster_id else None,
                    error_message=attempt.error_message,
                    error_traceback=attempt.error_traceback,
                    pending_reason=attempt.pending_reason,
                    gpu_type=attempt.gpu_type,
                    borrowed_gpus=attempt.borrowed_gpus,
                    created_at=attempt.created_at,
                    started_at=attempt.started_at,
                    finished_at=attempt.finished_at,
                )
                for attempt in execution.attempts
            ],
            min_success_ratios=_min_success_ratios(execution.workflow.spec),
            parent_execution_id=execution.parent_execution_id,
            parent_node_id=execution.parent_node_id,
            relaunched_from=execution.relaunched_from,
            recovered_from=execution.recovered_from,
            launched_by=execution.launched_by,
            children=children.get(execution.id, []),
        )
        for execution in executions
    ]


def _children(session: Session, execution_ids: list[str]) -> dict[str, list[ChildExecution]]:
    """The child executions (of reference nodes) of each of `execution_ids`, oldest first."""
    if not execution_ids:
        return {}
    found: dict[str, list[ChildExecution]] = {}
    rows = session.execute(
        select(
            Execution.parent_execution_id,
            Execution.parent_node_id,
            Execution.id,
            Execution.status,
            WorkflowVersion.name,
            WorkflowVersion.version,
        )
        .join(WorkflowVersion, WorkflowVersion.id == Execution.workflow_spec_id)
        .where(Execution.parent_execution_id.in_(execution_ids))
        .order_by(Execution.created_at)
    )
    for parent, node, child, status, name, version in rows:
        found.setdefault(parent or "", []).append(
            ChildExecution(
                node_id=node or "",
                execution_id=child,
                workflow=name,
                version=version,
                status=ExecutionState(status),
            )
        )
    return found


def _min_success_ratios(spec: dict[str, Any]) -> dict[str, float]:
    """The map nodes of a stored spec that have a `min_success_ratio` (written only below 1),
    read from its JSON as is: the spec validated when it was registered."""
    ratios: dict[str, float] = {}
    for node in spec.get("nodes", []):
        ratio = (node.get("map") or {}).get("min_success_ratio")
        if isinstance(ratio, int | float):
            ratios[node["id"]] = float(ratio)
    return ratios


def _create(
    session: Session,
    tenant: Tenant,
    body: ExecutionCreate,
    blob_store: BlobStore,
    settings: Settings,
    idempotency_key: str | None,
    launched_by: str | None = None,
) -> tuple[ExecutionPublic, bool]:
    """The execution as the API shows it, and whether an earlier request created it."""
    ttl = timedelta(seconds=settings.api.idempotency_key_ttl_seconds)
    check_targets(body.notifications, settings.notify)
    creation = create_execution(
        session,
        tenant,
        body,
        blob_store,
        idempotency_key=idempotency_key,
        idempotency_key_ttl=ttl,
        launched_by=launched_by,
    )
    return _public(session, creation, blob_store)


def _public(
    session: Session, creation: Creation, blob_store: BlobStore
) -> tuple[ExecutionPublic, bool]:
    return executions_public(session, [creation.execution], blob_store)[0], creation.replayed


_IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")  # printable ASCII, no spaces


def _idempotency_key(value: str | None) -> str | None:
    if value is None:
        return None
    if not _IDEMPOTENCY_KEY.match(value):
        message = "must be 1-255 printable ASCII characters without spaces (e.g. a UUID)"
        raise ApiError(
            422,
            f"invalid {IDEMPOTENCY_HEADER} header: {message}",
            [FieldError(field=IDEMPOTENCY_HEADER, message=message)],
        )
    return value


_CREATED_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "model": ExecutionPublic,
        "description": f"the execution an earlier request with the same {IDEMPOTENCY_HEADER} "
        "created (header `Idempotent-Replayed: true`)",
    },
    404: {"model": ErrorResponse},
    422: {"model": ErrorResponse},
    503: {"model": ErrorResponse, "description": "created, but not started yet"},
}
_IDEMPOTENCY_KEY_HEADER = Header(
    alias=IDEMPOTENCY_HEADER,
    description="retry-safe creation: a request repeated with the same key (in the same "
    "tenant) gets the execution the first one created, never a second one",
)


@router.post("", status_code=201, responses=_CREATED_RESPONSES)
async def start_execution(
    body: ExecutionCreate,
    session: SessionDep,
    caller: ExecutionsWrite,
    launcher: LauncherDep,
    blob_store: BlobStoreDep,
    settings: SettingsDep,
    response: Response,
    idempotency_key: Annotated[str | None, _IDEMPOTENCY_KEY_HEADER] = None,
) -> ExecutionPublic:
    """Validate the inputs, persist a QUEUED execution, then hand it to the orchestrator."""
    key = _idempotency_key(idempotency_key)
    execution, replayed = await run_in_threadpool(
        _create, session, caller.tenant, body, blob_store, settings, key, caller.principal
    )
    return await _launched(execution, replayed, launcher, response)


async def _launched(
    execution: ExecutionPublic, replayed: bool, launcher: ExecutionLauncher, response: Response
) -> ExecutionPublic:
    """Start a created execution (201), or answer with the one an earlier request with the
    same idempotency key created (200), starting it if that request died before."""
    if replayed:
        response.status_code = 200
        response.headers["Idempotent-Replayed"] = "true"
        if execution.status is not ExecutionState.QUEUED:
            return execution
        # Its first request may have died before the start: starting again is a no-op
        # for an execution already started (the workflow id is the execution id).
    try:
        await launcher.start_execution(execution.id)
    except Exception:
        logger.exception("could not start execution %s", execution.id)
        raise ApiError(
            503,
            f"execution {execution.id} was created but could not be started: "
            "the orchestrator is unavailable",
        ) from None
    return execution


@router.post("/{execution_id}/relaunch", status_code=201, responses=_CREATED_RESPONSES)
async def relaunch_execution_route(
    execution_id: str,
    session: SessionDep,
    caller: ExecutionsWrite,
    launcher: LauncherDep,
    blob_store: BlobStoreDep,
    settings: SettingsDep,
    response: Response,
    body: Annotated[ExecutionRelaunch | None, Body()] = None,
    idempotency_key: Annotated[str | None, _IDEMPOTENCY_KEY_HEADER] = None,
) -> ExecutionPublic:
    """Start an execution again as a new one: the same inputs (and priority), of the same
    version of its workflow or (`"version": "latest"`) of the latest one. The new
    execution's `relaunched_from` names this one."""
    version = (body or ExecutionRelaunch()).version
    request = _Again(
        execution_id,
        recover=False,
        version=version,
        idempotency_key=idempotency_key,
        launched_by=caller.principal,
    )
    return await _again(request, session, caller.tenant, launcher, blob_store, settings, response)


@router.post(
    "/{execution_id}/recover",
    status_code=201,
    responses={**_CREATED_RESPONSES, 409: {"model": ErrorResponse}},
)
async def recover_execution_route(
    execution_id: str,
    session: SessionDep,
    caller: ExecutionsWrite,
    launcher: LauncherDep,
    blob_store: BlobStoreDep,
    settings: SettingsDep,
    response: Response,
    idempotency_key: Annotated[str | None, _IDEMPOTENCY_KEY_HEADER] = None,
) -> ExecutionPublic:
    """Re-run a FAILED or CANCELLED execution from where it stopped, as a new execution of
    the same version and inputs: every node (and map element) that succeeded in it is not run
    again, its outputs are reused (its attempt shows as a cache hit); the rest runs. 409 for
    an execution in any other state. The new execution's `recovered_from` names this one."""
    request = _Again(
        execution_id,
        recover=True,
        version="same",
        idempotency_key=idempotency_key,
        launched_by=caller.principal,
    )
    return await _again(request, session, caller.tenant, launcher, blob_store, settings, response)


@dataclass(frozen=True)
class _Again:
    """A relaunch or recovery request."""

    execution_id: str
    recover: bool
    version: str
    idempotency_key: str | None
    launched_by: str | None = None


async def _again(
    request: _Again,
    session: Session,
    tenant: Tenant,
    launcher: ExecutionLauncher,
    blob_store: BlobStore,
    settings: Settings,
    response: Response,
) -> ExecutionPublic:
    key = _idempotency_key(request.idempotency_key)
    ttl = timedelta(seconds=settings.api.idempotency_key_ttl_seconds)

    def create() -> tuple[ExecutionPublic, bool]:
        creation = relaunch_execution(
            session,
            tenant,
            request.execution_id,
            blob_store,
            recover=request.recover,
            version=request.version,
            idempotency_key=key,
            idempotency_key_ttl=ttl,
            launched_by=request.launched_by,
        )
        return _public(session, creation, blob_store)

    execution, replayed = await run_in_threadpool(create)
    return await _launched(execution, replayed, launcher, response)


@router.get("")
def list_executions_route(
    session: SessionDep,
    caller: ExecutionsRead,
    blob_store: BlobStoreDep,
    status: ExecutionState | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Offset = 0,
    launched_by: Annotated[
        str | None, Query(max_length=128, description="only those this principal launched")
    ] = None,
    created_after: Annotated[
        datetime | None, Query(description="only those created at or after this time")
    ] = None,
    created_before: Annotated[
        datetime | None, Query(description="only those created before this time")
    ] = None,
) -> list[ExecutionPublic]:
    """The tenant's executions, newest first, maybe only those of one status, launched by one
    principal, or created in [`created_after`, `created_before`) (a time without a zone is
    UTC)."""
    rows = list_executions(
        session,
        caller.tenant.id,
        limit=limit,
        offset=offset,
        status=status,
        launched_by=launched_by,
        created_after=None if created_after is None else as_utc_bound(created_after),
        created_before=None if created_before is None else as_utc_bound(created_before),
    )
    return executions_public(session, rows, blob_store)


@router.get("/{execution_id}", responses={404: {"model": ErrorResponse}})
def get_execution_route(
    execution_id: str, session: SessionDep, caller: ExecutionsRead, blob_store: BlobStoreDep
) -> ExecutionPublic:
    execution = get_execution(session, caller.tenant.id, execution_id)
    if execution is None:
        raise ApiError(404, f"execution {execution_id} not found")
    return executions_public(session, [execution], blob_store)[0]


@router.get("/{execution_id}/progress", responses={404: {"model": ErrorResponse}})
async def get_execution_progress_route(
    execution_id: str,
    session: SessionDep,
    caller: ExecutionsRead,
    wait_seconds: Annotated[
        float,
        Query(
            ge=0,
            le=MAX_WAIT_SECONDS,
            description="if the execution is not final yet, answer when it is or after this "
            "many seconds, whichever comes first (a long poll; 0: at once)",
        ),
    ] = 0,
) -> ExecutionProgress:
    """The execution's state and its attempts counted by state, without the attempts: cheap
    to poll while waiting, whatever the size of the execution. With `wait_seconds`, what a
    client waiting for the result asks: no answer until the execution ends (or the time is
    up), and no database connection held meanwhile."""
    tenant_id = caller.tenant.id

    def read() -> tuple[str, datetime | None, dict[str, int]] | None:
        try:
            return execution_progress(session, tenant_id, execution_id)
        finally:
            session.close()  # its connection back in the pool while the request waits

    found = await ENDS.read_until_ended(
        tenant_id,
        execution_id,
        partial(run_in_threadpool, read),
        lambda found: found is None or ExecutionState(found[0]).terminal,
        wait_seconds,
    )
    if found is None:
        raise ApiError(404, f"execution {execution_id} not found")
    status, finished_at, counts = found
    return ExecutionProgress(
        id=execution_id,
        status=ExecutionState(status),
        finished_at=finished_at,
        attempts={AttemptState(state): n for state, n in counts.items()},
    )


@router.get(
    "/{execution_id}/nodes/{node_id:path}/sub-dag",
    responses={404: {"model": ErrorResponse}, 409: {"model": ErrorResponse}},
)
def get_sub_dag_route(
    execution_id: str,
    node_id: str,
    session: SessionDep,
    caller: ExecutionsRead,
    blob_store: BlobStoreDep,
) -> SubDag:
    """The sub-DAG a dynamic node built (nested dynamic nodes too: `a/b`): its nodes and the
    edges between them. 404: no such execution or node, or no sub-DAG built yet; 409: the
    node is not dynamic."""
    execution = get_execution(session, caller.tenant.id, execution_id)
    if execution is None:
        raise ApiError(404, f"execution {execution_id} not found")
    try:
        sub = find_sub_dag(session, execution, blob_store, node_id)
    except SubDagError as exc:
        raise ApiError(exc.status, exc.message) from None
    return public_sub_dag(execution.id, node_id, sub)


@router.post(
    "/{execution_id}/cancel",
    responses={404: {"model": ErrorResponse}, 503: {"model": ErrorResponse}},
)
async def cancel_execution_route(
    execution_id: str,
    session: SessionDep,
    caller: ExecutionsWrite,
    launcher: LauncherDep,
    blob_store: BlobStoreDep,
) -> ExecutionPublic:
    """Cancel an execution: its running attempts are stopped on every cluster.

    Idempotent: cancelling a finished execution changes nothing and returns it as it is.
    """
    execution = await run_in_threadpool(get_execution, session, caller.tenant.id, execution_id)
    if execution is None:
        raise ApiError(404, f"execution {execution_id} not found")
    if not ExecutionState(execution.status).terminal:
        try:
            await launcher.cancel_execution(execution_id)
        except Exception:
            logger.exception("could not cancel execution %s", execution_id)
            raise ApiError(
                503, f"execution {execution_id} could not be cancelled: orchestrator unavailable"
            ) from None
        # Not started in the orchestrator yet: nothing will run it, so cancel it here.
        await run_in_threadpool(_cancel_if_queued, session, execution)
    session.expire_all()
    refreshed = await run_in_threadpool(get_execution, session, caller.tenant.id, execution_id)
    assert refreshed is not None
    return executions_public(session, [refreshed], blob_store)[0]


def _cancel_if_queued(session: Session, execution: Execution) -> None:
    if execution.status == ExecutionState.QUEUED:
        move_execution(session, execution, ExecutionState.CANCELLED)
        # Its first tasks may have started before its workflow (`start_roots`).
        cancel_unfinished(session, execution.id)
        session.commit()


# An execution's outputs and their files (`routes/outputs.py`), below `/executions` too.
router.include_router(outputs.router)
