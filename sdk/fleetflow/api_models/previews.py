"""Execution previews: where each task of a workflow would run now, and why not elsewhere."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field


class Strategy(StrEnum):
    """How placement chooses among the clusters a task fits on."""

    SPREAD = "spread"  # most free capacity, fewest active attempts
    BINPACK = "binpack"  # least free capacity that still fits, most active attempts


class ResourcesPublic(BaseModel):
    cpu: float = Field(description="cores")
    memory_bytes: int = Field(description="0: the executor's default")
    gpu: int
    gpu_types: list[str] = Field(description="acceptable GPU types, most preferred first")
    labels: dict[str, str] = Field(description="cluster labels required")


class EligibleCluster(BaseModel):
    cluster: str
    gpu_types: list[str] = Field(
        description="acceptable GPU types that fit there now (empty for tasks without GPUs, or "
        "when the cluster's agent reports no capacity)"
    )


class ExcludedCluster(BaseModel):
    cluster: str
    reason: str = Field(
        description="offline, missing label zone=eu, no GPU of type H100 (has A100), "
        "needs 8 H100, 3 free, needs 4 CPU, 1.5 free…"
    )


class TaskPreview(BaseModel):
    task: str
    nodes: list[str] = Field(description="the workflow's nodes that run this task")
    resources: ResourcesPublic
    replicas: int = Field(
        default=1,
        description="workers started together as one attempt (a gang), each requesting "
        "`resources`, all on one cluster",
    )
    cluster: str | None = Field(description="where an attempt would be placed now; null: it waits")
    gpu_type: str | None = Field(description="the GPU type it would run on there")
    waiting_reason: str | None = Field(description="why it would wait, when `cluster` is null")
    eligible: list[EligibleCluster]
    excluded: list[ExcludedCluster]
    quota: str = Field(
        description="what the tenant's quota says of one more attempt now: fits, waits (why) "
        "or refused (bigger than the whole quota)"
    )


class ExecutionPreview(BaseModel):
    workflow: str
    version: str
    inputs: dict[str, Any] = Field(description="the validated inputs, as creation would store them")
    strategy: Strategy
    tasks: list[TaskPreview]
