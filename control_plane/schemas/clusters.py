"""Cluster creation in; clusters as admins and operators see them out.

Agent tokens leave the control plane only in `ClusterCreated` and `ClusterTokenRotated`, each
returned once; `ClusterPublic` never carries a token or its hash.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from control_plane.lifecycle.clusters import ClusterStatus
from control_plane.schemas.common import UtcDatetime, dns_label

MAX_CLUSTER_NAME_LENGTH = 63
MAX_LABELS = 64
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
# A label's name part, and any non-empty value: Kubernetes' label syntax.
_LABEL_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")
_MAX_LABEL_PART = 63
_MAX_LABEL_PREFIX = 253


def _label_key_problem(key: str) -> str | None:
    prefix, _, name = key.rpartition("/")
    if "/" in key and (
        not prefix or len(prefix) > _MAX_LABEL_PREFIX or not _DNS_SUBDOMAIN.fullmatch(prefix)
    ):
        return f"label key {key!r}: the prefix before '/' must be a DNS subdomain (example.com)"
    if len(name) > _MAX_LABEL_PART or not _LABEL_NAME.fullmatch(name):
        return (
            f"label key {key!r}: the name must be 1-{_MAX_LABEL_PART} letters, digits, '-', '_' "
            "or '.', starting and ending with a letter or digit (e.g. gpu, example.com/zone)"
        )
    return None


def _labels(labels: dict[str, str]) -> dict[str, str]:
    if len(labels) > MAX_LABELS:
        raise ValueError(f"at most {MAX_LABELS} labels")
    problems = [p for p in (_label_key_problem(key) for key in sorted(labels)) if p]
    for key in sorted(labels):
        value = labels[key]
        if value and (len(value) > _MAX_LABEL_PART or not _LABEL_NAME.fullmatch(value)):
            problems.append(
                f"label {key}: value {value!r} must be empty or 1-{_MAX_LABEL_PART} letters, "
                "digits, '-', '_' or '.', starting and ending with a letter or digit"
            )
    if problems:
        raise ValueError("; ".join(problems))
    return labels


ClusterName = Annotated[
    str, dns_label("cluster name", max_length=MAX_CLUSTER_NAME_LENGTH, example="gpu-east-1")
]
ClusterLabels = Annotated[dict[str, str], AfterValidator(_labels)]


class ClusterCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: ClusterName = Field(description="a DNS label: lowercase letters, digits and '-'")
    labels: ClusterLabels = Field(
        default_factory=dict,
        description='what placement can match (Kubernetes label syntax), e.g. {"zone": "eu"}',
    )


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
