"""Authentication and authorisation of REST calls.

Every route declares what it needs with one of the dependencies made here:

- `require(obj, act)`: a tenant-scoped call. The acting tenant is the principal's home tenant,
  or the one named by the `X-Fleetflow-Tenant` header. A tenant the principal holds no role in
  answers exactly like a tenant that does not exist (404), so nobody learns which tenants exist.
- `require_path_tenant(obj, act)`: the same, for routes whose path names the tenant.
- `require_platform(act)`: platform administration (the platform-admin role).

A missing, unknown, expired or revoked token is a 401 on every route. Agent tokens are not
API tokens: they live in another table and never authenticate here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from control_plane.api.deps import SessionDep
from control_plane.api.errors import ApiError
from control_plane.api.limits import RequestGuard
from control_plane.auth.rbac import EVERY_TENANT, Act, Authorizer, Obj
from control_plane.db.models import Tenant
from control_plane.db.repositories import principals as principals_repo
from control_plane.db.repositories.tenants import get_tenant_by_name

TENANT_HEADER = "X-Fleetflow-Tenant"
_bearer = HTTPBearer(auto_error=False, description="an API token (`fleetflow login`)")


@dataclass(frozen=True)
class Caller:
    """Who is calling, and in which tenant they act."""

    principal: str
    principal_id: str
    home_tenant: str
    tenant: Tenant  # the acting tenant (for platform calls: the home tenant's row)
    authorizer: Authorizer

    def may(self, session: Session, obj: Obj, act: Act, tenant: str | None = None) -> bool:
        return self.authorizer.allowed(
            session, self.principal_id, tenant or self.tenant.name, obj, act
        )

    def is_platform_admin(self, session: Session) -> bool:
        return self.authorizer.allowed(
            session, self.principal_id, EVERY_TENANT, Obj.PLATFORM, Act.WRITE
        )


def get_authorizer(request: Request) -> Authorizer:
    authorizer: Authorizer = request.app.state.authorizer
    return authorizer


AuthorizerDep = Annotated[Authorizer, Depends(get_authorizer)]


def unauthenticated(detail: str) -> ApiError:
    return ApiError(401, detail, headers={"WWW-Authenticate": "Bearer"})


def get_request_guard(request: Request) -> RequestGuard:
    guard: RequestGuard = request.app.state.request_guard
    return guard


def client_address(request: Request) -> str:
    """The peer's address (behind a reverse proxy: run uvicorn with `--proxy-headers` and
    `--forwarded-allow-ips` so this is the client's, not the proxy's)."""
    return request.client.host if request.client else "unknown"


def authenticate_token(
    session: Session, guard: RequestGuard, address: str, token: str
) -> principals_repo.Authenticated | None:
    """The principal of `token`, or None (counted against `address`); 429 while the address
    is locked out or the caller's tenant is over its rate limit."""
    key = guard.key_of(token)
    if key is not None:  # a throttled caller is refused before any token lookup
        guard.admit(address, key)  # the lockout and the rate: one store call
    else:
        guard.check_address(address)
    found = principals_repo.authenticate(session, token)
    if found is None:
        guard.record_failure(address)
        return None
    if key is None:
        guard.remember(token, found.home_tenant)
        guard.charge(found.home_tenant)
    return found


def authenticate(
    request: Request,
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> principals_repo.Authenticated:
    if credentials is None:
        raise unauthenticated(
            "no API token: send `Authorization: Bearer <token>` "
            "(the CLI does after `fleetflow login URL --token …`)"
        )
    guard = get_request_guard(request)
    found = authenticate_token(session, guard, client_address(request), credentials.credentials)
    if found is None:
        raise unauthenticated("the API token is invalid, expired or revoked")
    session.commit()  # last_used_at
    return found


AuthenticatedDep = Annotated[principals_repo.Authenticated, Depends(authenticate)]


def tenant_not_found(name: str) -> ApiError:
    return ApiError(404, f"tenant {name!r} not found")


def caller_in(
    session: Session, who: principals_repo.Authenticated, authorizer: Authorizer, tenant_name: str
) -> Caller:
    """The caller acting in `tenant_name`; 404 unless the tenant exists and the principal holds
    a role there (the two cases answer alike)."""
    name = who.principal.name
    tenant = get_tenant_by_name(session, tenant_name)
    if tenant is None or not authorizer.has_any_role_in(session, who.principal.id, tenant_name):
        if tenant is not None and tenant_name == who.home_tenant:
            raise ApiError(403, f"{name} holds no role in its tenant {tenant_name!r}")
        raise tenant_not_found(tenant_name)
    return Caller(name, who.principal.id, who.home_tenant, tenant, authorizer)


def _check(session: Session, caller: Caller, obj: Obj, act: Act) -> Caller:
    if not caller.may(session, obj, act):
        roles = [
            r
            for r, t in caller.authorizer.roles(session, caller.principal_id)
            if t in (caller.tenant.name, EVERY_TENANT)
        ]
        raise ApiError(
            403,
            f"{caller.principal} may not {act.value} {obj.value} in tenant "
            f"{caller.tenant.name!r} (roles there: {', '.join(roles) or 'none'})",
        )
    return caller


def require(obj: Obj, act: Act) -> Callable[..., Caller]:
    """A dependency: the caller, acting in its home tenant or the `X-Fleetflow-Tenant` one."""

    def dependency(
        session: SessionDep,
        who: AuthenticatedDep,
        authorizer: AuthorizerDep,
        tenant: Annotated[
            str | None,
            Header(alias=TENANT_HEADER, description="act in this tenant (default: your own)"),
        ] = None,
    ) -> Caller:
        caller = caller_in(session, who, authorizer, tenant or who.home_tenant)
        return _check(session, caller, obj, act)

    return dependency


def require_path_tenant(obj: Obj, act: Act) -> Callable[..., Caller]:
    """A dependency for routes under `/…/tenants/{tenant}/…`: the caller, acting there."""

    def dependency(
        session: SessionDep, who: AuthenticatedDep, authorizer: AuthorizerDep, tenant: str
    ) -> Caller:
        caller = caller_in(session, who, authorizer, tenant)
        return _check(session, caller, obj, act)

    return dependency


def require_platform(act: Act) -> Callable[..., Caller]:
    """A dependency for platform administration: the platform-admin role."""

    def dependency(session: SessionDep, who: AuthenticatedDep, authorizer: AuthorizerDep) -> Caller:
        name = who.principal.name
        if not authorizer.allowed(session, who.principal.id, EVERY_TENANT, Obj.PLATFORM, act):
            raise ApiError(403, f"{name} may not do this: it needs the platform-admin role")
        home = get_tenant_by_name(session, who.home_tenant)
        assert home is not None
        return Caller(name, who.principal.id, who.home_tenant, home, authorizer)

    return dependency


# What routes declare, by permission.
WorkflowsRead = Annotated[Caller, Depends(require(Obj.WORKFLOWS, Act.READ))]
WorkflowsWrite = Annotated[Caller, Depends(require(Obj.WORKFLOWS, Act.WRITE))]
ExecutionsRead = Annotated[Caller, Depends(require(Obj.EXECUTIONS, Act.READ))]
ExecutionsWrite = Annotated[Caller, Depends(require(Obj.EXECUTIONS, Act.WRITE))]
NotificationsRead = Annotated[Caller, Depends(require(Obj.NOTIFICATIONS, Act.READ))]
NotificationsWrite = Annotated[Caller, Depends(require(Obj.NOTIFICATIONS, Act.WRITE))]
ClustersRead = Annotated[Caller, Depends(require(Obj.CLUSTERS, Act.READ))]
QuotaRead = Annotated[Caller, Depends(require(Obj.QUOTA, Act.READ))]
UsageRead = Annotated[Caller, Depends(require(Obj.USAGE, Act.READ))]
SecretsRead = Annotated[Caller, Depends(require(Obj.SECRETS, Act.READ))]
SecretsWrite = Annotated[Caller, Depends(require(Obj.SECRETS, Act.WRITE))]
MembersRead = Annotated[Caller, Depends(require_path_tenant(Obj.MEMBERS, Act.READ))]
MembersWrite = Annotated[Caller, Depends(require_path_tenant(Obj.MEMBERS, Act.WRITE))]
PlatformRead = Annotated[Caller, Depends(require_platform(Act.READ))]
PlatformWrite = Annotated[Caller, Depends(require_platform(Act.WRITE))]
