"""First-start state for an embedded control plane: the default tenant and the local cluster."""

from __future__ import annotations

from sqlalchemy.orm import Session, sessionmaker

from control_plane.db.repositories import clusters as clusters_repo
from control_plane.db.repositories.tenants import get_or_create_tenant
from control_plane.db.session import transaction


def bootstrap_local_cluster(
    sessions: sessionmaker[Session], *, tenant: str, cluster: str, labels: dict[str, str]
) -> str:
    """Ensure the tenant and the cluster exist; return a fresh agent token for the cluster."""
    token = clusters_repo.new_agent_token()
    with transaction(sessions) as session:
        get_or_create_tenant(session, tenant)
        clusters_repo.ensure_cluster(session, cluster, token, labels)
    return token
