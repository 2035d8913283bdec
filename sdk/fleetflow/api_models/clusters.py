"""Clusters as admins and operators see them.

Agent tokens leave the control plane only in `ClusterCreated` and `ClusterTokenRotated`, each
returned once; `ClusterPublic` never carries a token or its hash.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, Field

from fleetflow.api_models.common import UtcDatetime


class ClusterStatus(StrEnum):
    """How a cluster's agent looks from the control plane, judged by its last heartbeat."""

    ONLINE = "online"
    DEGRADED = "degraded"
    OFFLINE = "offline"


class GpuCapacityPublic(BaseModel):
    gpu_type: str
    allocatable: int = 0
    in_use: int = 0


class CapacityPublic(BaseModel):
    """Capacity as the cluster's agent last heartbeated it."""

    cpu_allocatable: float = 0.0
    cpu_in_use: float = 0.0
    memory_bytes_allocatable: int = 0
    memory_bytes_in_use: int = 0
    gpus: list[GpuCapacityPublic] = Field(default_factory=list, description="per GPU type")


class ClusterPublic(BaseModel):
    name: str
    labels: dict[str, str]
    status: ClusterStatus = Field(
        description="online: last heartbeat within 1.5 heartbeat intervals; degraded: within "
        "the heartbeat grace (3 intervals), still receiving work; offline: older or never "
        "(nothing is placed there and its attempts are lost and run elsewhere)"
    )
    agent_version: str | None = Field(description="as the agent registered; null before that")
    last_heartbeat_at: UtcDatetime | None
    capacity: CapacityPublic | None = Field(description="null until the agent's first heartbeat")
    active_attempts: int = Field(description="attempts assigned to the cluster, leased or running")
    created_at: UtcDatetime


class ClusterCreated(BaseModel):
    """A new cluster and its agent token, which is shown this once and never again."""

    cluster: ClusterPublic
    agent_token: str = Field(description="give it to the agent as FLEETFLOW_AGENT_TOKEN")


class ClusterTokenRotated(BaseModel):
    """A cluster's new agent token, shown this once; the previous token no longer works."""

    cluster: ClusterPublic
    agent_token: str = Field(description="give it to the agent as FLEETFLOW_AGENT_TOKEN")
