"""Cohorts (tenants lending each other idle GPU quota) as the API answers them, and a tenant's
view of its own place in its cohort (`GET /cohort`)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from fleetflow.api_models.common import UtcDatetime


class SharePublic(BaseModel):
    nominal: int = Field(description="GPUs of this type the tenant is guaranteed")
    borrowing_limit: int | None = Field(
        description="most GPUs of this type it may hold beyond its nominal; null: unlimited"
    )


class CohortMemberPublic(BaseModel):
    tenant: str
    shares: dict[str, SharePublic] = Field(description="by GPU type")
    preempt_within_tenant: bool = Field(
        description="its higher-priority work may preempt its own lower-priority work"
    )


class CohortPublic(BaseModel):
    name: str
    created_at: UtcDatetime
    preemption_grace_seconds: int = Field(
        default=30, description="seconds a preempted attempt has between SIGTERM and the kill"
    )
    members: list[CohortMemberPublic]


class CohortList(BaseModel):
    cohorts: list[CohortPublic]


class CohortDeleted(BaseModel):
    name: str


class CohortMemberRemoved(BaseModel):
    cohort: str
    tenant: str


class GpuTypeUse(BaseModel):
    """One GPU type of the tenant's cohort as the tenant sees it."""

    nominal: int = Field(description="the tenant's nominal quota")
    borrowing_limit: int | None
    in_use: int = Field(description="GPUs the tenant's active attempts hold")
    borrowed: int = Field(description="of those, beyond its nominal quota")
    cohort_nominal: int = Field(description="the nominal quotas of all members together")
    cohort_in_use: int = Field(description="what all members' active attempts hold")


class CohortUsage(BaseModel):
    """The acting tenant's place in its cohort: borrowed vs nominal use per GPU type, and how
    many of its attempts were preempted. Other members are not named."""

    tenant: str
    cohort: str | None = Field(description="null: the tenant is in no cohort")
    gpu_types: dict[str, GpuTypeUse] = Field(default_factory=dict)
    preempt_within_tenant: bool = False
    preemption_grace_seconds: int | None = Field(
        default=None,
        description="seconds a preempted attempt of the tenant has between SIGTERM and the "
        "kill; null: in no cohort",
    )
    preempted: int = Field(default=0, description="attempts of the tenant preempted (ever)")
