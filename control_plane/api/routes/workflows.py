"""Workflow registration and lookup."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from control_plane.api.auth import WorkflowsRead, WorkflowsWrite
from control_plane.api.deps import BlobStoreDep, Offset, SessionDep, SettingsDep
from control_plane.api.errors import ApiError
from control_plane.api.routes.bundles import bundle_exists
from control_plane.db.models import WorkflowVersion
from control_plane.db.repositories.workflows import (
    WorkflowVersionConflictError,
    get_workflow_version,
    list_workflow_versions,
    register_workflow_version,
)
from control_plane.schemas.common import ErrorResponse, FieldError
from control_plane.schemas.workflows import WorkflowPublic, WorkflowRegister
from fleetflow.ir import TypedInterface

router = APIRouter(prefix="/workflows", tags=["workflows"])


def workflow_public(row: WorkflowVersion) -> WorkflowPublic:
    return WorkflowPublic(
        id=row.id,
        name=row.name,
        version=row.version,
        bundle_digest=row.bundle_digest,
        created_at=row.created_at,
        interface=TypedInterface.model_validate(row.spec["interface"]),
    )


def check_spec_size(body: WorkflowRegister, max_nodes: int) -> None:
    """422 for a spec with more nodes or tasks than the platform accepts (its byte size is
    bounded by the request body limit)."""
    for what, count in (("nodes", len(body.spec.nodes)), ("tasks", len(body.spec.tasks))):
        if count > max_nodes:
            message = f"the workflow has {count} {what}; the limit is {max_nodes}"
            raise ApiError(
                422,
                f"workflow spec too large: {message}",
                [FieldError(field=f"spec.{what}", message=message)],
            )


@router.post(
    "",
    status_code=201,
    responses={409: {"model": ErrorResponse}, 422: {"model": ErrorResponse}},
)
def register_workflow(
    body: WorkflowRegister,
    session: SessionDep,
    caller: WorkflowsWrite,
    blob_store: BlobStoreDep,
    settings: SettingsDep,
) -> WorkflowPublic:
    """Register a compiled spec with its uploaded code bundle; re-registering is a no-op."""
    check_spec_size(body, settings.api.max_workflow_nodes)
    digest = body.bundle_digest
    if not bundle_exists(blob_store, caller.tenant.name, digest):
        message = f"code bundle {digest} has not been uploaded: PUT it to /api/v1/bundles/{digest}"
        raise ApiError(422, message, [FieldError(field="bundle_digest", message=message)])
    try:
        row = register_workflow_version(session, caller.tenant.id, body.spec, digest, body.version)
    except WorkflowVersionConflictError as exc:
        raise ApiError(409, str(exc), [FieldError(field="version", message=str(exc))]) from None
    session.commit()
    return workflow_public(row)


@router.get("")
def list_workflows(
    session: SessionDep,
    caller: WorkflowsRead,
    name: str | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Offset = 0,
) -> list[WorkflowPublic]:
    """Registered workflow versions, by name, newest version first."""
    rows = list_workflow_versions(session, caller.tenant.id, name=name, limit=limit, offset=offset)
    return [workflow_public(row) for row in rows]


@router.get("/{name}/versions/{version}", responses={404: {"model": ErrorResponse}})
def get_workflow(
    name: str, version: str, session: SessionDep, caller: WorkflowsRead
) -> WorkflowPublic:
    row = get_workflow_version(session, caller.tenant.id, name, version)
    if row is None:
        raise ApiError(404, f"workflow {name} version {version} is not registered")
    return workflow_public(row)
