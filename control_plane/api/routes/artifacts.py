"""Artifacts and their lineage: `GET /api/v1/artifacts/{id}`, `GET /api/v1/artifacts?uri=…`,
`GET /api/v1/artifacts/{id}/lineage` and `GET /api/v1/executions/{id}/artifacts`, read with
the rights of reading executions, in the caller's tenant only (another tenant's artifact is a
404, by id, by URI and through lineage alike). `services/lineage.py` says what is recorded."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from control_plane.api.auth import ExecutionsRead
from control_plane.api.deps import SessionDep
from control_plane.api.errors import ApiError
from control_plane.db.models import Artifact, Execution, WorkflowVersion
from control_plane.db.repositories import artifacts as artifacts_repo
from control_plane.db.repositories.executions import get_execution
from control_plane.schemas.common import ErrorResponse
from fleetflow.api_models.artifacts import (
    MAX_LINEAGE_ARTIFACTS,
    MAX_LINEAGE_DEPTH,
    ArtifactLineage,
    ArtifactPublic,
    LineageEdge,
)

router = APIRouter(prefix="/artifacts", tags=["artifacts"])
executions_router = APIRouter(prefix="/executions", tags=["artifacts"])

_NOT_FOUND: dict[int | str, dict[str, object]] = {404: {"model": ErrorResponse}}


def _public(session: Session, artifacts: Sequence[Artifact]) -> list[ArtifactPublic]:
    """The artifacts as the API answers them, with their executions' workflows (one query)."""
    executions = sorted({artifact.execution_id for artifact in artifacts})
    workflows: dict[str, tuple[str, str]] = {}
    for start in range(0, len(executions), 500):
        rows = session.execute(
            select(Execution.id, WorkflowVersion.name, WorkflowVersion.version)
            .join(WorkflowVersion, WorkflowVersion.id == Execution.workflow_spec_id)
            .where(Execution.id.in_(executions[start : start + 500]))
        )
        workflows.update({row[0]: (row[1], row[2]) for row in rows})
    return [
        ArtifactPublic(
            id=a.id,
            uri=a.uri,
            kind=a.kind,
            execution_id=a.execution_id,
            workflow=workflows.get(a.execution_id, (None, None))[0],
            workflow_version=workflows.get(a.execution_id, (None, None))[1],
            node_id=a.node_id,
            attempt_id=a.attempt_id,
            element_index=a.element_index,
            task_name=a.task_name,
            task_digest=a.task_digest,
            output_name=a.output_name,
            created_at=a.created_at,
        )
        for a in artifacts
    ]


def _artifact(session: Session, tenant_id: str, artifact_id: str) -> Artifact:
    found = artifacts_repo.get(session, tenant_id, artifact_id)
    if found is None:
        raise ApiError(404, f"artifact {artifact_id} not found")
    return found


@router.get("", responses=_NOT_FOUND)
async def find_artifact(
    session: SessionDep,
    caller: ExecutionsRead,
    uri: Annotated[str, Query(min_length=1, max_length=1024, description="the blob's URI")],
) -> ArtifactPublic:
    """The artifact of the blob at `uri`: what produced it."""

    def find() -> ArtifactPublic:
        found = artifacts_repo.by_uri(session, caller.tenant.id, uri)
        if found is None:
            raise ApiError(404, f"no artifact is recorded for {uri}")
        return _public(session, [found])[0]

    return await run_in_threadpool(find)


@router.get("/{artifact_id}", responses=_NOT_FOUND)
async def get_artifact(
    artifact_id: str, session: SessionDep, caller: ExecutionsRead
) -> ArtifactPublic:
    """One artifact: its blob and what produced it."""

    def get() -> ArtifactPublic:
        return _public(session, [_artifact(session, caller.tenant.id, artifact_id)])[0]

    return await run_in_threadpool(get)


@router.get("/{artifact_id}/lineage", responses=_NOT_FOUND)
async def artifact_lineage(
    artifact_id: str,
    session: SessionDep,
    caller: ExecutionsRead,
    direction: Literal["upstream", "downstream", "both"] = "both",
    depth: Annotated[
        int, Query(ge=1, le=MAX_LINEAGE_DEPTH, description="how many levels to walk")
    ] = 5,
    limit: Annotated[
        int,
        Query(ge=1, le=MAX_LINEAGE_ARTIFACTS, description="the most artifacts to answer"),
    ] = 200,
) -> ArtifactLineage:
    """What the artifact was computed from (upstream), what was computed from it
    (downstream), or both, `depth` levels deep and at most `limit` artifacts: a graph of
    artifacts and edges. `truncated` (with a message) when the limit cut it short."""

    def walk() -> ArtifactLineage:
        tenant_id = caller.tenant.id
        start = _artifact(session, tenant_id, artifact_id)
        graph = artifacts_repo.lineage(
            session, tenant_id, start, direction=direction, depth=depth, limit=limit
        )
        ordered = [start, *(a for a in graph.artifacts.values() if a.id != start.id)]
        message = None
        if graph.truncated:
            message = (
                f"lineage of {artifact_id} truncated at {limit} artifacts: ask for fewer "
                f"levels (depth) or one direction, or raise limit (at most "
                f"{MAX_LINEAGE_ARTIFACTS})"
            )
        return ArtifactLineage(
            artifact_id=start.id,
            direction=direction,
            depth=depth,
            artifacts=_public(session, ordered),
            edges=[
                LineageEdge(
                    upstream_id=edge.upstream,
                    upstream_uri=edge.upstream_uri,
                    downstream_id=edge.downstream,
                    input_name=edge.input_name,
                )
                for edge in graph.edges
            ],
            truncated=graph.truncated,
            message=message,
        )

    return await run_in_threadpool(walk)


@executions_router.get("/{execution_id}/artifacts", responses=_NOT_FOUND)
async def execution_artifacts(
    execution_id: str, session: SessionDep, caller: ExecutionsRead
) -> list[ArtifactPublic]:
    """The artifacts an execution produced: its input blobs (node `inputs`) and the blobs
    its task attempts wrote."""

    def list_them() -> list[ArtifactPublic]:
        if get_execution(session, caller.tenant.id, execution_id) is None:
            raise ApiError(404, f"execution {execution_id} not found")
        return _public(
            session, artifacts_repo.of_execution(session, caller.tenant.id, execution_id)
        )

    return await run_in_threadpool(list_them)
