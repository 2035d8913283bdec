"""Principals and tokens for tests that call the REST API in-process."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from control_plane.auth.rbac import EVERY_TENANT, Authorizer
from control_plane.bootstrap import ensure_platform_admin
from control_plane.db.repositories import principals as principals_repo
from control_plane.db.repositories import tenancy
from control_plane.db.repositories.tenants import get_or_create_tenant
from control_plane.db.session import transaction
from fleetflow.api_models.tenancy import Role


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def principal_token(
    sessions: sessionmaker[Session],
    authorizer: Authorizer,
    name: str,
    *,
    tenant: str,
    role: Role,
    clusters: tuple[str, ...] = (),
) -> str:
    """Create `name` in `tenant` (created if missing) holding `role` there (platform-admin: in
    every tenant), grant the tenant `clusters`; its token."""
    authorizer.seed_role_permissions()
    with transaction(sessions) as session:
        home = get_or_create_tenant(session, tenant)
        principal = principals_repo.create_principal(session, name, "user", home, created_by=None)
        _, token = principals_repo.issue_token(session, principal, expires_in=None)
        for cluster in clusters:
            tenancy.grant_cluster(session, home, cluster)
        principal_id = principal.id
    authorizer.grant(principal_id, role, EVERY_TENANT if role is Role.PLATFORM_ADMIN else tenant)
    return token


def admin_token(app: FastAPI) -> str:
    """A platform admin whose home is the app's default tenant, which may use every cluster."""
    sessions: sessionmaker[Session] = app.state.session_factory
    authorizer: Authorizer = app.state.authorizer
    tenant = app.state.settings.api.default_tenant
    token = ensure_platform_admin(sessions, authorizer, tenant=tenant)
    if token is None:  # the app's database has its admin already: make another one
        count = len(tenancy.list_tenants(sessions()))
        token = principal_token(
            sessions,
            authorizer,
            f"admin-{count}-{id(app)}",
            tenant=tenant,
            role=Role.PLATFORM_ADMIN,
            clusters=(tenancy.EVERY_CLUSTER,),
        )
    return token


def admin_client(app: FastAPI, **kwargs: Any) -> TestClient:
    """A TestClient authenticated as a platform admin of the app's default tenant."""
    headers = {**bearer(admin_token(app)), **kwargs.pop("headers", {})}
    return TestClient(app, headers=headers, **kwargs)
