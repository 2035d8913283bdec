"""Administration: tenants, their users, tokens, roles, quotas and cluster grants; the audit log.

Platform admins do everything here. A tenant admin manages the members of its own tenant
(users, service accounts, their tokens and tenant roles) and nothing else; for any other tenant
it gets the answer a tenant that does not exist gets. Every change is written to the audit log
in the same transaction as the change itself.
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from fastapi.exceptions import RequestValidationError
from sqlalchemy.orm import Session

from control_plane.api.auth import (
    AuthenticatedDep,
    AuthorizerDep,
    MembersRead,
    MembersWrite,
    PlatformRead,
    PlatformWrite,
    tenant_not_found,
)
from control_plane.api.deps import SessionDep
from control_plane.api.errors import ApiError
from control_plane.auth.rbac import EVERY_TENANT, Act, Authorizer, Obj
from control_plane.db.models import ApiToken, Principal, Tenant
from control_plane.db.repositories import audit, tenancy
from control_plane.db.repositories import principals as principals_repo
from control_plane.db.repositories.clusters import get_cluster_by_name
from control_plane.db.repositories.tenants import get_or_create_tenant, get_tenant_by_name
from control_plane.quota import limits_of
from control_plane.schemas.common import ErrorResponse
from control_plane.schemas.tenancy import (
    QuotaSet,
    RoleChange,
    TenantCreate,
    TokenCreate,
    UserCreate,
    unavailable_principal_name,
)
from fleetflow.api_models.tenancy import (
    AuditEntryPublic,
    AuditLog,
    ClusterGranted,
    QuotaPublic,
    Role,
    RoleChanged,
    RoleGrantPublic,
    TenantDetail,
    TenantList,
    TenantPublic,
    TokenCreated,
    TokenList,
    TokenPublic,
    TokenRevoked,
    UserCreated,
    UserList,
    UserPublic,
)

router = APIRouter(prefix="/admin", tags=["admin"])

# Answers that carry a token must not be kept by caches or proxies.
_NO_STORE = {"Cache-Control": "no-store"}
_404: dict[int | str, dict[str, Any]] = {404: {"model": ErrorResponse}}


def _tenant(session: Session, name: str) -> Tenant:
    tenant = get_tenant_by_name(session, name)
    if tenant is None:
        raise tenant_not_found(name)
    return tenant


def quota_public(session: Session, tenant: Tenant) -> QuotaPublic | None:
    quota = tenancy.get_quota(session, tenant)
    return None if quota is None else QuotaPublic(**dataclasses.asdict(limits_of(quota)))


def _user_public(
    session: Session, authorizer: Authorizer, principal: Principal, tenant: str
) -> UserPublic:
    roles = [
        RoleGrantPublic(role=role, tenant=dom)
        for role, dom in authorizer.roles(session, principal.id)
    ]
    return UserPublic(
        name=principal.name,
        kind=principal.kind,
        tenant=tenant,
        roles=roles,
        created_at=principal.created_at,
    )


def _token_created(row: ApiToken, token: str) -> TokenCreated:
    return TokenCreated(token=token, token_id=row.id, expires_at=row.expires_at)


def _expiry(days: int | None) -> timedelta | None:
    return timedelta(days=days) if days is not None else None


# Tenants ------------------------------------------------------------------------------------


@router.post("/tenants", status_code=201, responses={409: {"model": ErrorResponse}})
def create_tenant(body: TenantCreate, session: SessionDep, caller: PlatformWrite) -> TenantPublic:
    if get_tenant_by_name(session, body.name) is not None:
        raise ApiError(409, f"tenant {body.name!r} exists already")
    tenant = get_or_create_tenant(session, body.name)
    audit.record(session, caller.principal, "tenant.create", body.name)
    session.commit()
    return TenantPublic(name=tenant.name, created_at=tenant.created_at)


@router.get("/tenants")
def list_tenants(session: SessionDep, _caller: PlatformRead) -> TenantList:
    return TenantList(
        tenants=[
            TenantPublic(name=t.name, created_at=t.created_at)
            for t in tenancy.list_tenants(session)
        ]
    )


@router.get("/tenants/{tenant}", responses=_404)
def get_tenant(tenant: str, session: SessionDep, _caller: PlatformRead) -> TenantDetail:
    row = _tenant(session, tenant)
    return TenantDetail(
        name=row.name,
        created_at=row.created_at,
        quota=quota_public(session, row),
        clusters=tenancy.granted_clusters(session, row),
        users=len(principals_repo.principals_of_tenant(session, row)),
    )


# Quotas and cluster grants ------------------------------------------------------------------


@router.put("/tenants/{tenant}/quota", responses=_404)
def set_quota(
    tenant: str, body: QuotaSet, session: SessionDep, caller: PlatformWrite
) -> QuotaPublic:
    """Replace the tenant's quota. It applies at the next placement, without restart:
    raising it starts waiting tasks, lowering it stops new ones (running ones go on)."""
    row = _tenant(session, tenant)
    tenancy.set_quota(session, row, body.limits())
    audit.record(session, caller.principal, "quota.set", tenant, body.model_dump(mode="json"))
    session.commit()
    quota = quota_public(session, row)
    assert quota is not None
    return quota


@router.get("/tenants/{tenant}/quota", responses=_404)
def get_quota(tenant: str, session: SessionDep, _caller: PlatformRead) -> QuotaPublic:
    """The tenant's quota; every limit null (unlimited) when none was set."""
    return quota_public(session, _tenant(session, tenant)) or QuotaPublic()


@router.post("/tenants/{tenant}/clusters/{cluster}", responses=_404)
def grant_cluster(
    tenant: str, cluster: str, session: SessionDep, caller: PlatformWrite
) -> ClusterGranted:
    """Let the tenant place work on the cluster ("*": on every cluster, present and future)."""
    row = _tenant(session, tenant)
    if cluster != tenancy.EVERY_CLUSTER and get_cluster_by_name(session, cluster) is None:
        raise ApiError(404, f"cluster {cluster} not found")
    if tenancy.grant_cluster(session, row, cluster):
        audit.record(session, caller.principal, "cluster.grant", tenant, {"cluster": cluster})
    session.commit()
    return ClusterGranted(tenant=tenant, cluster=cluster)


@router.delete("/tenants/{tenant}/clusters/{cluster}", responses=_404)
def revoke_cluster(
    tenant: str, cluster: str, session: SessionDep, caller: PlatformWrite
) -> ClusterGranted:
    """Stop placing the tenant's new work on the cluster (what runs there finishes)."""
    row = _tenant(session, tenant)
    if not tenancy.revoke_cluster(session, row, cluster):
        raise ApiError(404, f"tenant {tenant!r} has no grant for cluster {cluster}")
    audit.record(session, caller.principal, "cluster.revoke", tenant, {"cluster": cluster})
    session.commit()
    return ClusterGranted(tenant=tenant, cluster=cluster)


# Users, service accounts and their tokens ---------------------------------------------------


@router.post("/tenants/{tenant}/users", status_code=201, responses={409: {"model": ErrorResponse}})
def create_user(
    body: UserCreate, session: SessionDep, caller: MembersWrite, response: Response
) -> UserCreated:
    """Create a user or service account in the tenant with one role there, and its first
    token (in this answer only)."""
    if body.role is Role.PLATFORM_ADMIN:
        raise ApiError(
            422,
            "platform-admin is not a tenant role: create the user with a tenant role, then "
            "grant platform-admin with `fleetflow admin roles grant NAME platform-admin`",
        )
    if principals_repo.get_principal(session, body.name) is not None:
        # Answered exactly as a reserved name is, by the same handler: a 409 would tell a
        # tenant admin that some other tenant has a user of that name.
        message = f"Value error, {unavailable_principal_name(body.name)}"
        raise RequestValidationError(
            [{"type": "value_error", "loc": ("body", "name"), "msg": message, "input": body.name}]
        )
    principal = principals_repo.create_principal(
        session, body.name, body.kind, caller.tenant, created_by=caller.principal
    )
    row, token = principals_repo.issue_token(
        session, principal, expires_in=_expiry(body.expires_in_days)
    )
    audit.record(
        session,
        caller.principal,
        "user.create",
        body.name,
        {"tenant": caller.tenant.name, "role": body.role.value, "kind": body.kind},
    )
    session.commit()
    caller.authorizer.grant(principal.id, body.role, caller.tenant.name)
    response.headers.update(_NO_STORE)
    return UserCreated(
        user=_user_public(session, caller.authorizer, principal, caller.tenant.name),
        **_token_created(row, token).model_dump(),
    )


@router.get("/tenants/{tenant}/users")
def list_users(session: SessionDep, caller: MembersRead) -> UserList:
    """The tenant's own users and service accounts, and those of other tenants holding a role
    in it."""
    members = caller.authorizer.principals_with_roles(session, caller.tenant.name)
    own = {p.id: p for p in principals_repo.principals_of_tenant(session, caller.tenant)}
    found = [own.get(pid) or session.get(Principal, pid) for pid in set(own) | set(members)]
    users = []
    # A grant left behind for a principal that no longer exists lists nobody.
    for principal in sorted((p for p in found if p is not None), key=lambda p: p.name):
        home = session.get(Tenant, principal.tenant_id)
        users.append(
            _user_public(session, caller.authorizer, principal, home.name if home else "?")
        )
    return UserList(users=users)


def _member(session: Session, caller_tenant: Tenant, name: str) -> Principal:
    """A principal whose home is the tenant; 404 otherwise (whether or not it exists)."""
    principal = principals_repo.get_principal(session, name)
    if principal is None or principal.tenant_id != caller_tenant.id:
        raise ApiError(404, f"user {name!r} not found in tenant {caller_tenant.name!r}")
    return principal


@router.post("/tenants/{tenant}/users/{name}/tokens", status_code=201, responses=_404)
def create_token(
    name: str, body: TokenCreate, session: SessionDep, caller: MembersWrite, response: Response
) -> TokenCreated:
    """Another token for a member (rotation: create the new one, then revoke the old)."""
    principal = _member(session, caller.tenant, name)
    row, token = principals_repo.issue_token(
        session, principal, expires_in=_expiry(body.expires_in_days)
    )
    audit.record(session, caller.principal, "token.create", name, {"token_id": row.id})
    session.commit()
    response.headers.update(_NO_STORE)
    return _token_created(row, token)


@router.get("/tenants/{tenant}/users/{name}/tokens", responses=_404)
def list_tokens(name: str, session: SessionDep, caller: MembersRead) -> TokenList:
    principal = _member(session, caller.tenant, name)
    return TokenList(
        tokens=[
            TokenPublic(
                id=t.id,
                created_at=t.created_at,
                expires_at=t.expires_at,
                revoked_at=t.revoked_at,
                last_used_at=t.last_used_at,
            )
            for t in principals_repo.tokens_of(session, principal)
        ]
    )


@router.post("/tokens/{token_id}/revoke", responses=_404)
def revoke_token(
    token_id: str, session: SessionDep, who: AuthenticatedDep, authorizer: AuthorizerDep
) -> TokenRevoked:
    """Revoke a token: refused from its next call on. Its owner, an admin of the owner's
    tenant and platform admins may; anyone else gets 404, as for a token that does not exist."""
    row = principals_repo.get_token(session, token_id)
    owner = session.get(Principal, row.principal_id) if row is not None else None
    home = session.get(Tenant, owner.tenant_id) if owner is not None else None
    if (
        row is None
        or owner is None
        or home is None
        or not (
            owner.id == who.principal.id
            or authorizer.allowed(session, who.principal.id, home.name, Obj.MEMBERS, Act.WRITE)
        )
    ):
        raise ApiError(404, f"token {token_id} not found")
    principals_repo.revoke_token(session, row)
    audit.record(session, who.principal.name, "token.revoke", owner.name, {"token_id": row.id})
    session.commit()
    assert row.revoked_at is not None
    return TokenRevoked(id=row.id, revoked_at=row.revoked_at)


# Roles --------------------------------------------------------------------------------------


def _role_change(
    body: RoleChange, session: Session, who: principals_repo.Authenticated, authorizer: Authorizer
) -> tuple[Principal, str]:
    """Check that the caller may make this change; the principal and the domain it is in."""
    actor, actor_id = who.principal.name, who.principal.id
    is_platform_admin = authorizer.allowed(session, actor_id, EVERY_TENANT, Obj.PLATFORM, Act.WRITE)
    if body.role is Role.PLATFORM_ADMIN:
        if body.tenant is not None:
            raise ApiError(422, "platform-admin holds in every tenant: leave the tenant out")
        if not is_platform_admin:
            raise ApiError(403, f"{actor} may not grant platform-admin: only platform admins may")
        domain = EVERY_TENANT
    else:
        if body.tenant is None:
            raise ApiError(422, f"role {body.role.value} needs a tenant")
        tenant = get_tenant_by_name(session, body.tenant)
        if tenant is None or not authorizer.allowed(
            session, actor_id, body.tenant, Obj.MEMBERS, Act.WRITE
        ):
            raise tenant_not_found(body.tenant)
        domain = body.tenant
    principal = principals_repo.get_principal(session, body.principal)
    if principal is not None and not is_platform_admin and domain != EVERY_TENANT:
        # Tenant admins manage their own tenant's people; other tenants' names stay unknown.
        tenant = get_tenant_by_name(session, domain)
        if tenant is None or principal.tenant_id != tenant.id:
            principal = None
    if principal is None:
        raise ApiError(404, f"user {body.principal!r} not found")
    return principal, domain


def _role_changed(
    session: Session, actor: str, action: str, principal: Principal, body: RoleChange, domain: str
) -> RoleChanged:
    audit.record(
        session, actor, action, principal.name, {"role": body.role.value, "tenant": domain}
    )
    session.commit()
    return RoleChanged(principal=principal.name, role=body.role.value, tenant=domain)


@router.post("/roles/grant", responses=_404)
def grant_role(
    body: RoleChange, session: SessionDep, who: AuthenticatedDep, authorizer: AuthorizerDep
) -> RoleChanged:
    """Grant a role (idempotent: granting a held role changes nothing and is not audited)."""
    principal, domain = _role_change(body, session, who, authorizer)
    if not authorizer.grant(principal.id, body.role, domain):
        return RoleChanged(principal=principal.name, role=body.role.value, tenant=domain)
    return _role_changed(session, who.principal.name, "role.grant", principal, body, domain)


@router.post("/roles/revoke", responses=_404)
def revoke_role(
    body: RoleChange, session: SessionDep, who: AuthenticatedDep, authorizer: AuthorizerDep
) -> RoleChanged:
    """Revoke a role: the principal loses it from its next call on."""
    principal, domain = _role_change(body, session, who, authorizer)
    if not authorizer.revoke(principal.id, body.role, domain):
        raise ApiError(404, f"{principal.name} does not hold {body.role.value} in {domain}")
    return _role_changed(session, who.principal.name, "role.revoke", principal, body, domain)


# Audit --------------------------------------------------------------------------------------


@router.get("/audit")
def audit_log(
    session: SessionDep,
    _caller: PlatformRead,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> AuditLog:
    """Admin and policy changes, newest first."""
    return AuditLog(
        entries=[
            AuditEntryPublic(
                at=e.at, actor=e.actor, action=e.action, target=e.target, details=e.details
            )
            for e in audit.entries(session, limit=limit)
        ]
    )
