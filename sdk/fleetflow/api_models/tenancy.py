"""Tenants, principals, tokens, roles, quotas and the audit log as the API answers them.

Tokens leave the control plane only in `UserCreated` and `TokenCreated`, each returned once.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field

from fleetflow.api_models.common import UtcDatetime


# The roles the control plane grants; every one but platform-admin is granted in a tenant.
# (No docstring: it would become the enum's description in the OpenAPI document.)
class Role(StrEnum):
    PLATFORM_ADMIN = "platform-admin"
    TENANT_ADMIN = "tenant-admin"
    DEVELOPER = "developer"
    VIEWER = "viewer"


class TenantPublic(BaseModel):
    name: str
    created_at: UtcDatetime


class TenantList(BaseModel):
    tenants: list[TenantPublic]


class QuotaPublic(BaseModel):
    gpu: int | None = None
    gpu_per_type: dict[str, int] = Field(default_factory=dict)
    cpu: float | None = None
    memory_bytes: int | None = None
    max_running_executions: int | None = None
    max_running_tasks: int | None = None


class TenantDetail(TenantPublic):
    quota: QuotaPublic | None
    clusters: list[str]
    users: int


class RoleGrantPublic(BaseModel):
    role: str
    tenant: str  # "*": every tenant


class UserPublic(BaseModel):
    name: str
    kind: str
    tenant: str
    roles: list[RoleGrantPublic]
    created_at: UtcDatetime


class UserList(BaseModel):
    users: list[UserPublic]


class TokenCreated(BaseModel):
    token: str = Field(description="shown this once; the control plane keeps only its hash")
    token_id: str
    expires_at: UtcDatetime | None


class UserCreated(TokenCreated):
    user: UserPublic


class TokenPublic(BaseModel):
    id: str
    created_at: UtcDatetime
    expires_at: UtcDatetime | None
    revoked_at: UtcDatetime | None
    last_used_at: UtcDatetime | None


class TokenList(BaseModel):
    tokens: list[TokenPublic]


class TokenRevoked(BaseModel):
    id: str
    revoked_at: UtcDatetime


class RoleChanged(BaseModel):
    principal: str
    role: str
    tenant: str


class ClusterGranted(BaseModel):
    tenant: str
    cluster: str


class AuditEntryPublic(BaseModel):
    at: UtcDatetime
    actor: str
    action: str
    target: str
    details: dict[str, Any]


class AuditLog(BaseModel):
    entries: list[AuditEntryPublic]


class WhoAmI(BaseModel):
    principal: str
    kind: str
    tenant: str
    acting_tenant: str
    roles: list[RoleGrantPublic]
