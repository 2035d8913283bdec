"""`client.admin`: tenants, their users, tokens, roles, quotas and cluster grants, and the
audit log. The control plane decides who may do what (platform and tenant admins)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from fleetflow.api_models import cohorts as cohorts_api
from fleetflow.api_models import tenancy as api
from fleetflow.client.transport import Transport, path_part

PrincipalKind = Literal["user", "service"]
# The roles the control plane grants; every one but platform-admin is granted in a tenant.
ROLES = tuple(role.value for role in api.Role)


_COHORTS = "/api/v1/admin/cohorts"


def _tenant_path(tenant: str) -> str:
    return f"/api/v1/admin/tenants/{path_part(tenant)}"


def _tokens_path(tenant: str, user: str) -> str:
    return f"{_tenant_path(tenant)}/users/{path_part(user)}/tokens"


def _cluster_grant_path(tenant: str, cluster: str) -> str:
    return f"{_tenant_path(tenant)}/clusters/{path_part(cluster)}"


def _expiry(expires_in_days: int | None, never_expires: bool) -> dict[str, int | None]:
    """A new token's lifetime as the API takes it: a number of days, null for never, left
    out for the control plane's default."""
    if never_expires:
        if expires_in_days is not None:
            raise ValueError("a token either expires in some days or never, not both")
        return {"expires_in_days": None}
    return {} if expires_in_days is None else {"expires_in_days": expires_in_days}


class Admin:
    """Administration of tenants and who may act in them."""

    def __init__(self, transport: Transport):
        self._transport = transport

    # Tenants --------------------------------------------------------------------------------

    def create_tenant(self, name: str) -> api.TenantPublic:
        """Create a tenant (platform admins)."""
        return self._transport.call(
            "POST", "/api/v1/admin/tenants", api.TenantPublic, json={"name": name}
        )

    def list_tenants(self) -> list[api.TenantPublic]:
        """Every tenant."""
        return self._transport.call("GET", "/api/v1/admin/tenants", api.TenantList).tenants

    def get_tenant(self, name: str) -> api.TenantDetail:
        """One tenant: its quota (None: unlimited), the clusters it may run on and how many
        users it has."""
        return self._transport.call("GET", _tenant_path(name), api.TenantDetail)

    # Users, tokens and roles ----------------------------------------------------------------

    def create_user(
        self,
        tenant: str,
        name: str,
        role: str,
        *,
        kind: PrincipalKind = "user",
        expires_in_days: int | None = None,
        never_expires: bool = False,
    ) -> api.UserCreated:
        """Create a user or service account in `tenant` with one role there, and its first
        token.

        Args:
            tenant: the user's home tenant.
            name: the user's name.
            role: one of `ROLES`.
            kind: `user` for a person, `service` for a program (CI, a scheduler).
            expires_in_days: the token's lifetime; None: the control plane's default.
            never_expires: a token that does not expire (not with `expires_in_days`).

        Returns:
            The user, and its `token`, `token_id`, `expires_at`: the token is in this answer
            only, the control plane keeps its hash.
        """
        body = {"name": name, "role": role, "kind": kind, **_expiry(expires_in_days, never_expires)}
        return self._transport.call(
            "POST", f"{_tenant_path(tenant)}/users", api.UserCreated, json=body
        )

    def list_users(self, tenant: str) -> list[api.UserPublic]:
        """The users and service accounts of `tenant`, with their roles."""
        return self._transport.call("GET", f"{_tenant_path(tenant)}/users", api.UserList).users

    def create_token(
        self,
        tenant: str,
        user: str,
        *,
        expires_in_days: int | None = None,
        never_expires: bool = False,
    ) -> api.TokenCreated:
        """Give a user another token (its others keep working until revoked); its lifetime as
        for `create_user`. The token is in this answer only."""
        body = _expiry(expires_in_days, never_expires)
        return self._transport.call("POST", _tokens_path(tenant, user), api.TokenCreated, json=body)

    def list_tokens(self, tenant: str, user: str) -> list[api.TokenPublic]:
        """A user's tokens, without their secrets."""
        return self._transport.call("GET", _tokens_path(tenant, user), api.TokenList).tokens

    def revoke_token(self, token_id: str) -> api.TokenRevoked:
        """Revoke a token at once; requests carrying it get a 401."""
        path = f"/api/v1/admin/tokens/{path_part(token_id)}/revoke"
        return self._transport.call("POST", path, api.TokenRevoked)

    def grant_role(self, principal: str, role: str, tenant: str | None = None) -> api.RoleChanged:
        """Grant `role` (one of `ROLES`) in `tenant` to a user or service account; `tenant` is
        None only for `platform-admin`."""
        return self._change_role("grant", principal, role, tenant)

    def revoke_role(self, principal: str, role: str, tenant: str | None = None) -> api.RoleChanged:
        """Take back a role `grant_role` gave."""
        return self._change_role("revoke", principal, role, tenant)

    def _change_role(
        self, change: str, principal: str, role: str, tenant: str | None
    ) -> api.RoleChanged:
        body = {"principal": principal, "role": role, "tenant": tenant}
        return self._transport.call(
            "POST", f"/api/v1/admin/roles/{change}", api.RoleChanged, json=body
        )

    # Quotas and cluster grants --------------------------------------------------------------

    def set_quota(
        self,
        tenant: str,
        *,
        gpu: int | None = None,
        gpu_per_type: Mapping[str, int] | None = None,
        cpu: float | None = None,
        memory: str | int | None = None,
        max_running_executions: int | None = None,
        max_running_tasks: int | None = None,
    ) -> api.QuotaPublic:
        """Replace a tenant's quota: every limit left out (None) is unlimited.

        Args:
            tenant: the tenant.
            gpu: GPUs its running tasks may hold together, of any type.
            gpu_per_type: the same per GPU type, e.g. `{"H100": 8}`.
            cpu: CPU cores.
            memory: bytes, or a quantity such as `"64Gi"`.
            max_running_executions: executions running at once.
            max_running_tasks: task attempts running at once.

        Returns:
            The quota as stored, memory as `memory_bytes`.
        """
        body = {
            "gpu": gpu,
            "gpu_per_type": dict(gpu_per_type or {}),
            "cpu": cpu,
            "memory": memory,
            "max_running_executions": max_running_executions,
            "max_running_tasks": max_running_tasks,
        }
        return self._transport.call(
            "PUT", f"{_tenant_path(tenant)}/quota", api.QuotaPublic, json=body
        )

    def get_quota(self, tenant: str) -> api.QuotaPublic | None:
        """A tenant's quota as `set_quota` stored it; None (or None limits): unlimited."""
        return self._transport.call(
            "GET",
            f"{_tenant_path(tenant)}/quota",
            api.QuotaPublic | None,  # type: ignore[arg-type]
        )

    def grant_cluster(self, tenant: str, cluster: str) -> api.ClusterGranted:
        """Let `tenant`'s tasks be placed on `cluster` (`*`: on every cluster)."""
        return self._transport.call(
            "POST", _cluster_grant_path(tenant, cluster), api.ClusterGranted
        )

    def revoke_cluster_grant(self, tenant: str, cluster: str) -> api.ClusterGranted:
        """Take back a `grant_cluster`: `tenant`'s tasks are no longer placed on `cluster`."""
        return self._transport.call(
            "DELETE", _cluster_grant_path(tenant, cluster), api.ClusterGranted
        )

    # Cohorts --------------------------------------------------------------------------------

    def create_cohort(
        self, name: str, *, preemption_grace_seconds: int | None = None
    ) -> cohorts_api.CohortPublic:
        """Create a cohort: tenants that lend each other idle GPU quota (platform admins).
        `preemption_grace_seconds`: how long a preempted attempt has between SIGTERM and the
        kill (0 to 3600; the server's default, 30, when None)."""
        body: dict[str, object] = {"name": name}
        if preemption_grace_seconds is not None:
            body["preemption_grace_seconds"] = preemption_grace_seconds
        return self._transport.call("POST", _COHORTS, cohorts_api.CohortPublic, json=body)

    def update_cohort(
        self, name: str, *, preemption_grace_seconds: int | None = None
    ) -> cohorts_api.CohortPublic:
        """Change a cohort's settings (those given; None keeps one)."""
        body = (
            {}
            if preemption_grace_seconds is None
            else {"preemption_grace_seconds": preemption_grace_seconds}
        )
        return self._transport.call(
            "PATCH", f"{_COHORTS}/{path_part(name)}", cohorts_api.CohortPublic, json=body
        )

    def list_cohorts(self) -> list[cohorts_api.CohortPublic]:
        """Every cohort with its members."""
        return self._transport.call("GET", _COHORTS, cohorts_api.CohortList).cohorts

    def get_cohort(self, name: str) -> cohorts_api.CohortPublic:
        return self._transport.call(
            "GET", f"{_COHORTS}/{path_part(name)}", cohorts_api.CohortPublic
        )

    def delete_cohort(self, name: str) -> cohorts_api.CohortDeleted:
        """Delete a cohort and its memberships (running work goes on)."""
        return self._transport.call(
            "DELETE", f"{_COHORTS}/{path_part(name)}", cohorts_api.CohortDeleted
        )

    def set_cohort_member(
        self,
        cohort: str,
        tenant: str,
        shares: Mapping[str, tuple[int, int | None]],
        *,
        preempt_within_tenant: bool = False,
    ) -> cohorts_api.CohortMemberPublic:
        """Make `tenant` a member of `cohort`; `shares`: GPU type -> (nominal, borrowing
        limit or None for unlimited). Replaces its membership, here or in another cohort."""
        body = {
            "shares": {
                gpu_type: {"nominal": nominal, "borrowing_limit": limit}
                for gpu_type, (nominal, limit) in shares.items()
            },
            "preempt_within_tenant": preempt_within_tenant,
        }
        return self._transport.call(
            "PUT",
            f"{_COHORTS}/{path_part(cohort)}/members/{path_part(tenant)}",
            cohorts_api.CohortMemberPublic,
            json=body,
        )

    def remove_cohort_member(self, cohort: str, tenant: str) -> cohorts_api.CohortMemberRemoved:
        return self._transport.call(
            "DELETE",
            f"{_COHORTS}/{path_part(cohort)}/members/{path_part(tenant)}",
            cohorts_api.CohortMemberRemoved,
        )

    def audit_log(self, limit: int = 50) -> list[api.AuditEntryPublic]:
        """The latest administrative actions, newest first."""
        params = {"limit": limit}
        return self._transport.call(
            "GET", "/api/v1/admin/audit", api.AuditLog, params=params
        ).entries
