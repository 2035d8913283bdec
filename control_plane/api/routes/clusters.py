"""Clusters: admins create them and rotate their agent tokens; anyone reads their state.

The writing routes live under `/api/v1/admin/clusters` (platform admins); the reading ones under
`/api/v1/clusters` show a tenant the clusters granted to it, and answer for any other cluster
as for one that does not exist.

A cluster's status comes from its agent's last heartbeat
(`lifecycle.clusters.cluster_status`): online within 1.5 heartbeat intervals, degraded within
the heartbeat grace (3 intervals), offline beyond it or before the first heartbeat. The REST
API judges with its own `FLEETFLOW_GRPC_HEARTBEAT_INTERVAL_SECONDS`, which must match the agent
service's.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from fastapi import APIRouter, Response
from pydantic import ValidationError
from sqlalchemy.orm import Session

from control_plane.api.auth import Caller, ClustersRead, PlatformWrite
from control_plane.api.deps import SessionDep, SettingsDep
from control_plane.api.errors import ApiError
from control_plane.db.models import Cluster, utcnow
from control_plane.db.repositories import audit, tenancy
from control_plane.db.repositories import clusters as clusters_repo
from control_plane.lifecycle.clusters import cluster_status
from control_plane.schemas.clusters import (
    ClusterCreate,
)
from control_plane.schemas.common import ErrorResponse, FieldError
from control_plane.settings import Settings
from fleetflow.api_models.clusters import (
    CapacityPublic,
    ClusterCreated,
    ClusterPublic,
    ClusterTokenRotated,
)

router = APIRouter(prefix="/clusters", tags=["clusters"])
admin_router = APIRouter(prefix="/admin/clusters", tags=["admin"])

# Answers that carry a token must not be kept by caches or proxies.
_NO_STORE = {"Cache-Control": "no-store"}


def _capacity(raw: dict[str, object]) -> CapacityPublic | None:
    if not raw:
        return None
    try:
        return CapacityPublic.model_validate(raw)
    except ValidationError:  # heartbeated in a shape this version does not read
        return None


def clusters_public(
    session: Session, clusters: Sequence[Cluster], settings: Settings
) -> list[ClusterPublic]:
    active = clusters_repo.active_attempt_counts(session, (c.id for c in clusters))
    interval = timedelta(seconds=settings.grpc.heartbeat_interval_seconds)
    now = utcnow()
    return [
        ClusterPublic(
            name=cluster.name,
            labels={str(k): str(v) for k, v in cluster.labels.items()},
            status=cluster_status(
                cluster.last_heartbeat_at,
                heartbeat_interval=interval,
                grace=settings.grpc.heartbeat_grace,
                now=now,
            ),
            agent_version=cluster.agent_version,
            last_heartbeat_at=cluster.last_heartbeat_at,
            capacity=_capacity(cluster.capacity),
            active_attempts=active.get(cluster.id, 0),
            created_at=cluster.created_at,
        )
        for cluster in clusters
    ]


def _cluster_not_found(name: str) -> ApiError:
    return ApiError(404, f"cluster {name} not found")


def _get_cluster(session: Session, name: str) -> Cluster:
    cluster = clusters_repo.get_cluster_by_name(session, name)
    if cluster is None:
        raise _cluster_not_found(name)
    return cluster


@admin_router.post(
    "",
    status_code=201,
    responses={409: {"model": ErrorResponse}, 422: {"model": ErrorResponse}},
)
def create_cluster(
    body: ClusterCreate,
    session: SessionDep,
    settings: SettingsDep,
    response: Response,
    caller: PlatformWrite,
) -> ClusterCreated:
    """Create a cluster and its agent token. The token is in this answer only: the control
    plane keeps its hash, so it cannot show it again (rotate it if it is lost)."""
    try:
        cluster, token = clusters_repo.create_cluster(session, body.name, body.labels)
    except clusters_repo.ClusterExistsError as exc:
        message = f"{exc}: pick another name, or rotate its token"
        raise ApiError(409, message, [FieldError(field="name", message=str(exc))]) from None
    audit.record(session, caller.principal, "cluster.create", body.name, {"labels": body.labels})
    session.commit()
    response.headers.update(_NO_STORE)
    return ClusterCreated(
        cluster=clusters_public(session, [cluster], settings)[0], agent_token=token
    )


@admin_router.post("/{name}/rotate-token", responses={404: {"model": ErrorResponse}})
def rotate_cluster_token(
    name: str,
    session: SessionDep,
    settings: SettingsDep,
    response: Response,
    caller: PlatformWrite,
) -> ClusterTokenRotated:
    """Replace the cluster's agent token. The old token is refused from the next agent call
    on (a long poll already waiting finishes); the new one is in this answer only."""
    cluster = _get_cluster(session, name)
    token = clusters_repo.rotate_agent_token(session, cluster)
    audit.record(session, caller.principal, "cluster.rotate-token", name)
    session.commit()
    response.headers.update(_NO_STORE)
    return ClusterTokenRotated(
        cluster=clusters_public(session, [cluster], settings)[0], agent_token=token
    )


def _visible(session: Session, caller: Caller) -> list[Cluster]:
    grants = set(tenancy.granted_clusters(session, caller.tenant))
    return [c for c in clusters_repo.list_clusters(session) if tenancy.may_use(grants, c.name)]


@router.get("")
def list_clusters(
    session: SessionDep, settings: SettingsDep, caller: ClustersRead
) -> list[ClusterPublic]:
    """The clusters granted to the tenant, by name, with status, capacity, active attempts."""
    return clusters_public(session, _visible(session, caller), settings)


@router.get("/{name}", responses={404: {"model": ErrorResponse}})
def get_cluster(
    name: str, session: SessionDep, settings: SettingsDep, caller: ClustersRead
) -> ClusterPublic:
    for cluster in _visible(session, caller):
        if cluster.name == name:
            return clusters_public(session, [cluster], settings)[0]
    raise _cluster_not_found(name)
