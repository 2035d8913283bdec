"""Tenants, principals, tokens, roles and quotas into the API; what comes out is
`fleetflow.api_models.tenancy`, shared with the client.

Request bodies forbid unknown fields: a stray `tenant_id` is an error, never silently ignored.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from control_plane.schemas.common import dns_label
from fleetflow.api_models.tenancy import (
    Role,
)
from fleetflow.resources import parse_memory

_PRINCIPAL = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.@]*[A-Za-z0-9])?")
MAX_NAME = 63
MAX_PRINCIPAL = 128
MAX_TOKEN_DAYS = 3650
MAX_COUNT = 1_000_000  # GPUs, cores, running tasks or executions a quota can name
MAX_MEMORY = 2**60
GpuType = Annotated[str, Field(min_length=1, max_length=64)]


# Names a principal may not take: the roles' (the policy keeps subjects and roles apart
# anyway, control_plane/auth/rbac.py) and the audit log's own actor.
RESERVED_PRINCIPAL_NAMES = frozenset({*(role.value for role in Role), "system"})


def unavailable_principal_name(name: str) -> str:
    """Said alike of a reserved name and of one another principal holds, so that the answer
    does not tell whether a user of another tenant has it."""
    return f"{name!r} is not available as a user name: pick another"


def _principal_name(name: str) -> str:
    if len(name) > MAX_PRINCIPAL or not _PRINCIPAL.fullmatch(name):
        raise ValueError(
            f"{name!r} is not a valid user name: 1-{MAX_PRINCIPAL} letters, digits, '-', '_', "
            "'.' or '@', starting and ending with a letter or digit (e.g. ada@example.com)"
        )
    if name.lower() in RESERVED_PRINCIPAL_NAMES:
        raise ValueError(unavailable_principal_name(name))
    return name


TenantName = Annotated[str, dns_label("tenant name", max_length=MAX_NAME, example="vision-team")]
PrincipalName = Annotated[str, AfterValidator(_principal_name)]
_STRICT = ConfigDict(extra="forbid")


class TenantCreate(BaseModel):
    model_config = _STRICT
    name: TenantName


class QuotaSet(BaseModel):
    """A tenant's limits; an omitted or null limit is unlimited. A PUT replaces them all."""

    model_config = _STRICT
    gpu: int | None = Field(
        default=None, ge=0, le=MAX_COUNT, description="GPUs in use at once, any type"
    )
    gpu_per_type: dict[GpuType, Annotated[int, Field(ge=0, le=MAX_COUNT)]] = Field(
        default_factory=dict,
        max_length=64,
        description='GPUs in use at once by type, e.g. {"H100": 4}',
    )
    cpu: float | None = Field(
        default=None, ge=0, le=MAX_COUNT, description="CPU cores in use at once"
    )
    memory: int | str | None = Field(default=None, description='bytes, or a quantity like "64Gi"')
    max_running_executions: int | None = Field(default=None, ge=0, le=MAX_COUNT)
    max_running_tasks: int | None = Field(default=None, ge=0, le=MAX_COUNT)

    @field_validator("memory")
    @classmethod
    def _memory(cls, value: int | str | None) -> int | None:
        if value is None:
            return None
        memory = parse_memory(value)  # its errors are ValueErrors
        if memory > MAX_MEMORY:
            raise ValueError(f"memory {value!r} is more than {MAX_MEMORY} bytes (1 EiB)")
        return memory

    def limits(self) -> dict[str, Any]:
        """As `TenantQuota` columns."""
        return {
            "gpu": self.gpu,
            "gpu_per_type": dict(self.gpu_per_type),
            "cpu": self.cpu,
            "memory_bytes": self.memory,
            "max_running_executions": self.max_running_executions,
            "max_running_tasks": self.max_running_tasks,
        }


class UserCreate(BaseModel):
    model_config = _STRICT
    name: PrincipalName
    role: Role
    kind: Literal["user", "service"] = "user"
    expires_in_days: int | None = Field(
        default=90, ge=1, le=MAX_TOKEN_DAYS, description="null: the token never expires"
    )


class TokenCreate(BaseModel):
    model_config = _STRICT
    expires_in_days: int | None = Field(default=90, ge=1, le=MAX_TOKEN_DAYS)


class RoleChange(BaseModel):
    model_config = _STRICT
    principal: PrincipalName
    role: Role
    tenant: TenantName | None = Field(
        default=None, description="null only with platform-admin, which holds in every tenant"
    )
