"""A tenant's quota status and usage history, as the API and dashboards read them."""

from __future__ import annotations

from pydantic import BaseModel, Field

from fleetflow.api_models.common import UtcDatetime
from fleetflow.api_models.tenancy import QuotaPublic


class LoadPublic(BaseModel):
    gpu: int
    gpu_per_type: dict[str, int]
    cpu: float
    memory_bytes: int
    running_executions: int
    running_tasks: int


class QuotaStatus(BaseModel):
    tenant: str
    limits: QuotaPublic | None = Field(description="null: no quota, everything unlimited")
    usage: LoadPublic
    waiting_for_quota: int = Field(description="attempts waiting in PENDING for quota")


class AmountPublic(BaseModel):
    gpu_seconds: float
    cpu_seconds: float
    memory_gib_seconds: float


class BucketPublic(AmountPublic):
    start: UtcDatetime
    groups: dict[str, AmountPublic] = Field(default_factory=dict)


class UsageHistory(BaseModel):
    tenant: str
    bucket: str
    buckets: list[BucketPublic]


class WorkflowUsagePublic(BaseModel):
    workflow: str
    gpu_seconds: float
    cpu_seconds: float
    executions: int


class TopWorkflows(BaseModel):
    workflows: list[WorkflowUsagePublic]
