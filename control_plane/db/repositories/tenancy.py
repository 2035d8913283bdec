"""What a tenant may use: its quota and the clusters granted to it."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from control_plane.db.models import ClusterGrant, Tenant, TenantQuota, utcnow
from control_plane.db.repositories._insert import insert_ignoring_conflicts

EVERY_CLUSTER = "*"


def list_tenants(session: Session) -> list[Tenant]:
    return list(session.scalars(select(Tenant).order_by(Tenant.name)))


def get_quota(session: Session, tenant: Tenant) -> TenantQuota | None:
    return session.get(TenantQuota, tenant.id)


def quotas_by_tenant_id(session: Session) -> dict[str, TenantQuota]:
    return {q.tenant_id: q for q in session.scalars(select(TenantQuota))}


def set_quota(session: Session, tenant: Tenant, limits: dict[str, Any]) -> TenantQuota:
    """Replace the tenant's quota with `limits` (TenantQuota columns; None = unlimited)."""
    quota = session.get(TenantQuota, tenant.id)
    if quota is None:
        quota = TenantQuota(tenant_id=tenant.id)
        session.add(quota)
    for key, value in limits.items():
        setattr(quota, key, value)
    quota.updated_at = utcnow()
    session.flush()
    return quota


def granted_clusters(session: Session, tenant: Tenant) -> list[str]:
    """Cluster names granted to the tenant ("*" for every cluster), sorted."""
    return sorted(
        session.scalars(select(ClusterGrant.cluster).where(ClusterGrant.tenant_id == tenant.id))
    )


# Built once: every placement pass reads it.
_GRANTS = select(ClusterGrant.tenant_id, ClusterGrant.cluster)


def grants_by_tenant_id(session: Session) -> dict[str, set[str]]:
    grants: dict[str, set[str]] = {}
    for tenant_id, cluster in session.execute(_GRANTS):
        grants.setdefault(tenant_id, set()).add(cluster)
    return grants


def may_use(grants: set[str], cluster: str) -> bool:
    return EVERY_CLUSTER in grants or cluster in grants


def grant_cluster(session: Session, tenant: Tenant, cluster: str) -> bool:
    """True when the grant is new."""
    before = cluster in granted_clusters(session, tenant)
    insert_ignoring_conflicts(
        session, ClusterGrant, {"tenant_id": tenant.id, "cluster": cluster, "created_at": utcnow()}
    )
    return not before


def revoke_cluster(session: Session, tenant: Tenant, cluster: str) -> bool:
    """True when there was such a grant."""
    result = session.execute(
        delete(ClusterGrant).where(
            ClusterGrant.tenant_id == tenant.id, ClusterGrant.cluster == cluster
        )
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]
