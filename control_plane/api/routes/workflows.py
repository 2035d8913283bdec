"""Workflow registration and lookup: the tenant's workflows, each workflow's versions, one
version with its spec. Everything is scoped to the caller's tenant: another tenant's workflow
answers exactly as one that does not exist."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from control_plane.api.auth import Caller, WorkflowsRead, WorkflowsWrite
from control_plane.api.deps import BlobStoreDep, Offset, SessionDep, SettingsDep
from control_plane.api.errors import ApiError
from control_plane.auth.rbac import Act, Obj
from control_plane.db.models import WorkflowVersion
from control_plane.db.repositories.workflows import (
    WorkflowVersionConflictError,
    get_workflow_version,
    list_workflow_versions,
    register_workflow_version,
)
from control_plane.schemas.common import ErrorResponse, FieldError
from control_plane.schemas.workflows import WorkflowDetail, WorkflowPublic, WorkflowRegister
from control_plane.services.bundles import bundle_exists
from fleetflow.ir import LiteralType, TypedInterface, Variable, WorkflowSpec
from fleetflow.spec_checks import binding_problems

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


def workflow_detail(row: WorkflowVersion) -> WorkflowDetail:
    return WorkflowDetail(
        **workflow_public(row).model_dump(), spec=WorkflowSpec.model_validate(row.spec)
    )


def _latest_versions(
    session: Session, tenant_id: str, *, limit: int, offset: int
) -> list[WorkflowVersion]:
    """The newest version of each of the tenant's workflows, by name."""
    newest = (
        select(WorkflowVersion.name, func.max(WorkflowVersion.created_at).label("created_at"))
        .where(WorkflowVersion.tenant_id == tenant_id)
        .group_by(WorkflowVersion.name)
        .order_by(WorkflowVersion.name)
        .limit(limit)
        .offset(offset)
        .subquery()
    )
    rows = session.scalars(
        select(WorkflowVersion)
        .join(
            newest,
            (WorkflowVersion.name == newest.c.name)
            & (WorkflowVersion.created_at == newest.c.created_at),
        )
        .where(WorkflowVersion.tenant_id == tenant_id)
        .order_by(WorkflowVersion.name, WorkflowVersion.id.desc())
    )
    latest: dict[str, WorkflowVersion] = {}
    for row in rows:  # two versions registered in the same instant: one of them
        latest.setdefault(row.name, row)
    return list(latest.values())


def _not_registered(name: str) -> ApiError:
    return ApiError(404, f"workflow {name} is not registered (fleetflow workflows list)")


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


def check_spec_bindings(body: WorkflowRegister) -> None:
    """422 for a spec whose bindings name an input, node or output it lacks, or whose list
    and dict bindings do not fit the types they are bound to, naming the first 20 problems."""
    problems = binding_problems(body.spec)
    if problems:
        first = problems[0]
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise ApiError(
            422,
            f"invalid workflow spec: spec.{first.field}: {first.message}{more}",
            [FieldError(field=f"spec.{p.field}", message=p.message) for p in problems[:20]],
        )


def _variables(variables: list[Variable]) -> dict[str, LiteralType]:
    return {v.name: v.type for v in variables}


def _interface_mismatch(stub: TypedInterface, registered: TypedInterface) -> str | None:
    """How a reference stub's interface differs from the registered version's; None: alike."""
    for what, mine, theirs in (
        ("input", _variables(stub.inputs), _variables(registered.inputs)),
        ("output", _variables(stub.outputs), _variables(registered.outputs)),
    ):
        if list(mine) != list(theirs):
            return (
                f"its {what}s are ({', '.join(theirs) or 'none'}), the stub declares "
                f"({', '.join(mine) or 'none'})"
            )
        for name, type_ in mine.items():
            if type_ != theirs[name]:
                return (
                    f"{what} '{name}' is {theirs[name].describe()} there, "
                    f"{type_.describe()} in the stub"
                )
    return None


def check_spec_references(session: Session, caller: Caller, spec: WorkflowSpec) -> None:
    """422 for a reference (`@reference_workflow`) to a workflow version the caller's tenant
    has not registered, or whose interface is not the stub's; 403 when the caller may not
    read workflows and launch executions there (the reference is read now, and launched with
    every execution of the spec). Looked up in the caller's tenant only: another tenant's
    workflow of that name answers as one that does not exist."""
    references = [task for task in spec.tasks.values() if task.reference is not None]
    for obj, act in ((Obj.WORKFLOWS, Act.READ), (Obj.EXECUTIONS, Act.WRITE)):
        if references and not caller.may(session, obj, act):
            raise ApiError(
                403,
                f"{caller.principal} may not {act.value} {obj.value} in tenant "
                f"{caller.tenant.name!r}: a workflow that references another needs both",
            )
    for task in references:
        ref = task.reference
        assert ref is not None
        field = f"spec.tasks.{task.name}.reference"
        row = get_workflow_version(session, caller.tenant.id, ref.name, ref.version)
        if row is None:
            message = (
                f"reference '{task.function}' names workflow {ref.name} version {ref.version}, "
                "which is not registered in this tenant: register it first (fleetflow register)"
            )
            raise ApiError(422, message, [FieldError(field=field, message=message)])
        registered = TypedInterface.model_validate(row.spec["interface"])
        problem = _interface_mismatch(task.interface, registered)
        if problem is not None:
            message = (
                f"reference '{task.function}' does not match workflow {ref.name} version "
                f"{ref.version}: {problem}"
            )
            raise ApiError(422, message, [FieldError(field=field, message=message)])


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
    check_spec_bindings(body)
    check_spec_references(session, caller, body.spec)
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
    latest_only: Annotated[
        bool, Query(description="only the newest version of each workflow")
    ] = False,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Offset = 0,
) -> list[WorkflowPublic]:
    """Registered workflow versions, by name, newest version first."""
    if latest_only and name is None:
        rows = _latest_versions(session, caller.tenant.id, limit=limit, offset=offset)
    else:
        rows = list_workflow_versions(
            session, caller.tenant.id, name=name, limit=1 if latest_only else limit, offset=offset
        )
    return [workflow_public(row) for row in rows]


@router.get("/{name}", responses={404: {"model": ErrorResponse}})
def get_workflow_detail(
    name: str,
    session: SessionDep,
    caller: WorkflowsRead,
    version: Annotated[
        str | None, Query(max_length=128, description="this version; default: the newest")
    ] = None,
) -> WorkflowDetail:
    """One version of workflow `name` (the newest unless `version`), with its whole spec."""
    row = get_workflow_version(session, caller.tenant.id, name, version)
    if row is None:
        if version is not None:
            raise ApiError(404, f"workflow {name} version {version} is not registered")
        raise _not_registered(name)
    return workflow_detail(row)


@router.get("/{name}/versions", responses={404: {"model": ErrorResponse}})
def list_versions_of_workflow(
    name: str,
    session: SessionDep,
    caller: WorkflowsRead,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Offset = 0,
) -> list[WorkflowPublic]:
    """The versions of workflow `name`, newest first (404 when it has none)."""
    rows = list_workflow_versions(session, caller.tenant.id, name=name, limit=limit, offset=offset)
    if not rows and get_workflow_version(session, caller.tenant.id, name, None) is None:
        raise _not_registered(name)
    return [workflow_public(row) for row in rows]


@router.get("/{name}/versions/{version}", responses={404: {"model": ErrorResponse}})
def get_workflow(
    name: str, version: str, session: SessionDep, caller: WorkflowsRead
) -> WorkflowPublic:
    row = get_workflow_version(session, caller.tenant.id, name, version)
    if row is None:
        raise ApiError(404, f"workflow {name} version {version} is not registered")
    return workflow_public(row)
