"""Executions: create one (validated, persisted, then launched), read them back."""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Response
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from control_plane.api.auth import ExecutionsRead, ExecutionsWrite
from control_plane.api.deps import BlobStoreDep, LauncherDep, Offset, SessionDep, SettingsDep
from control_plane.api.errors import ApiError
from control_plane.api.inputs import InputValidationError, validate_execution_inputs
from control_plane.api.routes import outputs
from control_plane.blob_layout import execution_prefix, tenant_prefix
from control_plane.db.models import (
    Execution,
    Tenant,
    WorkflowVersion,
    new_id,
    utcnow,
)
from control_plane.db.repositories import tenancy
from control_plane.db.repositories.executions import (
    claim_idempotency_key,
    cluster_names,
    create_execution,
    get_execution,
    get_idempotency_key,
    list_executions,
    move_execution,
)
from control_plane.db.repositories.workflows import get_workflow_version
from control_plane.large_values import load_values, store_values
from control_plane.placement.admission import exceeds_whole_quota
from control_plane.quota import limits_of
from control_plane.schemas.common import ErrorResponse, FieldError
from control_plane.schemas.executions import AttemptPublic, ExecutionCreate, ExecutionPublic
from control_plane.services.tenant_blobs import Refused, TenantBlobs
from fleetflow.files import blob_literals
from fleetflow.ir import TypedInterface, WorkflowSpec
from fleetflow.states import NO_MAP_INDEX, AttemptState, ExecutionState
from fleetflow.storage import BlobStore

logger = logging.getLogger(__name__)
router = APIRouter(prefix="/executions", tags=["executions"])


def executions_public(
    session: Session, executions: Sequence[Execution], blobs: BlobStore
) -> list[ExecutionPublic]:
    names = cluster_names(session, (a.cluster_id for e in executions for a in e.attempts))
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
                    created_at=attempt.created_at,
                    started_at=attempt.started_at,
                    finished_at=attempt.finished_at,
                )
                for attempt in execution.attempts
            ],
        )
        for execution in executions
    ]


def validate_execution_request(
    session: Session, tenant: Tenant, body: ExecutionCreate, blob_store: BlobStore
) -> tuple[WorkflowVersion, dict[str, Any]]:
    """The workflow version an execution request names and its validated inputs (404 for an
    unknown workflow, 422 naming each wrong input); creation and its preview share it."""
    workflow = get_workflow_version(session, tenant.id, body.workflow, body.version)
    if workflow is None:
        which = f"version {body.version} of workflow" if body.version else "workflow"
        raise ApiError(
            404,
            f"{which} {body.workflow} is not registered: register it first (fleetflow register)",
        )
    interface = TypedInterface.model_validate(workflow.spec["interface"])
    try:
        inputs = validate_execution_inputs(
            interface,
            body.inputs,
            blob_prefixes=(
                blob_store.uri(f"{tenant_prefix(tenant.name)}/uploads") + "/",
                blob_store.uri(f"{tenant_prefix(tenant.name)}/executions") + "/",
                blob_store.uri("executions") + "/",  # executions created before that layout
            ),
        )
        check_input_blobs(session, tenant, interface, inputs, blob_store)
    except InputValidationError as exc:
        raise ApiError(
            422,
            f"invalid inputs for workflow {workflow.name} version {workflow.version}: {exc}",
            exc.errors,
        ) from None
    return workflow, inputs


def check_input_blobs(
    session: Session,
    tenant: Tenant,
    interface: TypedInterface,
    inputs: dict[str, Any],
    blob_store: BlobStore,
) -> None:
    """Every File and Directory input names a blob the tenant may read: its uploads, or the
    outputs of its own executions (not another tenant's, nor a path that climbs out with `..`,
    which a task would otherwise read on the tenant's behalf).

    Raises:
        InputValidationError: naming each input that does not; every refusal reads alike, so
            it does not tell whether another tenant's execution exists.
    """
    readable = TenantBlobs(session, tenant, blob_store)
    errors: list[FieldError] = []
    for variable in interface.inputs:
        name = variable.name
        for path, _kind, blob in blob_literals(inputs.get(name), variable.type, f"inputs.{name}"):
            uri = str(blob["uri"])
            try:
                readable.check(uri)
            except Refused:
                # Worded as `validate_execution_inputs` words a URI of no blob store.
                message = (
                    f"{uri!r} is not a blob of this control plane: upload the file (the CLI "
                    "and Client do) and pass the URI they return"
                )
                errors.append(FieldError(field=path, message=message))
    if errors:
        raise InputValidationError(errors)


def check_whole_quota(session: Session, tenant: Tenant, workflow: WorkflowVersion) -> None:
    """422 when a task of the workflow could never start within the tenant's quota."""
    limits = limits_of(tenancy.get_quota(session, tenant))
    for name, task in sorted(WorkflowSpec.model_validate(workflow.spec).tasks.items()):
        problem = exceeds_whole_quota(limits, name, task.resources)
        if problem is not None:
            raise ApiError(
                422, f"{problem}. Ask a platform admin to raise the quota, or request less."
            )


IDEMPOTENCY_HEADER = "Idempotency-Key"
_IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")  # printable ASCII, no spaces


def request_hash(body: ExecutionCreate) -> str:
    """sha256 of the request as the API understands it: key order, spacing and defaults
    spelled out or left out make no difference."""
    canonical = json.dumps(body.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _replay(
    session: Session, tenant: Tenant, key: str, fingerprint: str, not_before: datetime
) -> Execution | None:
    """The execution an earlier request with `key` (at or after `not_before`: younger keys
    only) created; 422 if that request differed."""
    used = get_idempotency_key(session, tenant.id, key, not_before=not_before)
    if used is None:
        return None
    if used.request_hash != fingerprint:
        message = (
            f"{IDEMPOTENCY_HEADER} {key!r} was used for a different request (execution "
            f"{used.execution_id}): use a new key for a new execution"
        )
        raise ApiError(422, message, [FieldError(field=IDEMPOTENCY_HEADER, message=message)])
    execution = get_execution(session, tenant.id, used.execution_id)
    assert execution is not None
    return execution


def _persist_execution(
    session: Session,
    tenant: Tenant,
    body: ExecutionCreate,
    blob_store: BlobStore,
    idempotency_key: str | None,
    idempotency_key_ttl: timedelta = timedelta(hours=24),
) -> tuple[ExecutionPublic, bool]:
    """The execution, and whether this request created it (False: an idempotent replay)."""
    tenant_id = tenant.id
    fingerprint = request_hash(body)
    keys_not_before = utcnow() - idempotency_key_ttl  # older keys have expired
    if idempotency_key is not None:
        earlier = _replay(session, tenant, idempotency_key, fingerprint, keys_not_before)
        if earlier is not None:
            return executions_public(session, [earlier], blob_store)[0], False
    workflow, inputs = validate_execution_request(session, tenant, body, blob_store)
    check_whole_quota(session, tenant, workflow)
    execution_id = new_id("ex")
    stored = store_values(
        inputs, blob_store, f"{execution_prefix(tenant.name, execution_id)}/inputs.json"
    )
    execution = create_execution(
        session, tenant_id, workflow, stored, execution_id=execution_id, priority=body.priority
    )
    if idempotency_key is not None:
        holder = claim_idempotency_key(
            session,
            tenant_id,
            idempotency_key,
            fingerprint,
            execution_id,
            not_before=keys_not_before,
        )
        if holder.execution_id != execution_id:  # a concurrent request with the key won
            session.rollback()
            earlier = _replay(session, tenant, idempotency_key, fingerprint, keys_not_before)
            assert earlier is not None
            return executions_public(session, [earlier], blob_store)[0], False
    session.commit()
    return executions_public(session, [execution], blob_store)[0], True


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


@router.post(
    "",
    status_code=201,
    responses={
        200: {
            "model": ExecutionPublic,
            "description": f"the execution an earlier request with the same {IDEMPOTENCY_HEADER} "
            "created (header `Idempotent-Replayed: true`)",
        },
        404: {"model": ErrorResponse},
        422: {"model": ErrorResponse},
        503: {"model": ErrorResponse, "description": "created, but not started yet"},
    },
)
async def start_execution(
    body: ExecutionCreate,
    session: SessionDep,
    caller: ExecutionsWrite,
    launcher: LauncherDep,
    blob_store: BlobStoreDep,
    settings: SettingsDep,
    response: Response,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias=IDEMPOTENCY_HEADER,
            description="retry-safe creation: a request repeated with the same key (in the "
            "same tenant) gets the execution the first one created, never a second one",
        ),
    ] = None,
) -> ExecutionPublic:
    """Validate the inputs, persist a QUEUED execution, then hand it to the orchestrator."""
    key = _idempotency_key(idempotency_key)
    execution, created = await run_in_threadpool(
        _persist_execution,
        session,
        caller.tenant,
        body,
        blob_store,
        key,
        timedelta(seconds=settings.api.idempotency_key_ttl_seconds),
    )
    if not created:
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


@router.get("")
def list_executions_route(
    session: SessionDep,
    caller: ExecutionsRead,
    blob_store: BlobStoreDep,
    status: ExecutionState | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Offset = 0,
) -> list[ExecutionPublic]:
    """The tenant's executions, newest first."""
    rows = list_executions(session, caller.tenant.id, limit=limit, offset=offset, status=status)
    return executions_public(session, rows, blob_store)


@router.get("/{execution_id}", responses={404: {"model": ErrorResponse}})
def get_execution_route(
    execution_id: str, session: SessionDep, caller: ExecutionsRead, blob_store: BlobStoreDep
) -> ExecutionPublic:
    execution = get_execution(session, caller.tenant.id, execution_id)
    if execution is None:
        raise ApiError(404, f"execution {execution_id} not found")
    return executions_public(session, [execution], blob_store)[0]


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
        session.commit()


# An execution's outputs and their files (`routes/outputs.py`), below `/executions` too.
router.include_router(outputs.router)
