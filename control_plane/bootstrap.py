"""First-start state: the platform admin, the default tenant, and the local cluster (dev)."""

from __future__ import annotations

import logging
from pathlib import Path

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from control_plane.auth.rbac import EVERY_TENANT, Authorizer
from control_plane.db.repositories import audit, tenancy
from control_plane.db.repositories import clusters as clusters_repo
from control_plane.db.repositories import principals as principals_repo
from control_plane.db.repositories.tenants import get_or_create_tenant
from control_plane.db.session import transaction
from fleetflow.api_models.tenancy import Role

log = logging.getLogger(__name__)

BOOTSTRAP_ADMIN = "admin"


def bootstrap_local_cluster(
    sessions: sessionmaker[Session], *, tenant: str, cluster: str, labels: dict[str, str]
) -> str:
    """Ensure the tenant and the cluster exist, the tenant may use the cluster; return a fresh
    agent token for the cluster."""
    token = clusters_repo.new_agent_token()
    with transaction(sessions) as session:
        row = get_or_create_tenant(session, tenant)
        clusters_repo.ensure_cluster(session, cluster, token, labels)
        tenancy.grant_cluster(session, row, cluster)
    return token


def ensure_platform_admin(
    sessions: sessionmaker[Session],
    authorizer: Authorizer,
    *,
    tenant: str,
    token: str | None = None,
) -> str | None:
    """On first start (no user exists yet), create the platform admin `admin` in `tenant`,
    which may use every cluster. Returns its token (`token`, or a new one), or None when users
    exist already: the bootstrap happens once."""
    authorizer.seed_role_permissions()
    try:
        with transaction(sessions) as session:
            if principals_repo.any_principal(session):
                return None
            home = get_or_create_tenant(session, tenant)
            principal = principals_repo.create_principal(
                session, BOOTSTRAP_ADMIN, "user", home, created_by=None
            )
            _, token = principals_repo.issue_token(session, principal, expires_in=None, token=token)
            tenancy.grant_cluster(session, home, tenancy.EVERY_CLUSTER)
            audit.record(session, "system", "bootstrap", BOOTSTRAP_ADMIN, {"tenant": tenant})
            admin_id = principal.id
    except IntegrityError:  # another replica bootstrapped at the same moment
        return None
    authorizer.grant(admin_id, Role.PLATFORM_ADMIN, EVERY_TENANT)
    return token


def write_secret_file(path: Path, secret: str) -> None:
    """Write `secret` readable by this user only (created 0600, never world-readable)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    tmp.touch(mode=0o600)
    tmp.write_text(secret + "\n")
    tmp.replace(path)
