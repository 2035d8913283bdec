"""Cohort requests into the API; what comes out is `fleetflow.api_models.cohorts`.

Request bodies forbid unknown fields. GPU type names are those tasks name in
`Resources(gpu_type=...)`: a letter or digit, then letters, digits, `-`, `_` or `.`, at most
64 characters (`H100`, `A100-80GB`, `nvidia.com-l4`).
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from control_plane.db.models import DEFAULT_PREEMPTION_GRACE_SECONDS
from control_plane.schemas.common import dns_label

MAX_COUNT = 1_000_000
_GPU_TYPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_STRICT = ConfigDict(extra="forbid")


def _gpu_type(name: str) -> str:
    if not _GPU_TYPE.fullmatch(name):
        raise ValueError(
            f"{name!r} is not a GPU type name: a letter or digit, then letters, digits, "
            "'-', '_' or '.', at most 64 characters (e.g. H100, A100-80GB)"
        )
    return name


GpuTypeName = Annotated[str, AfterValidator(_gpu_type)]


MAX_PREEMPTION_GRACE_SECONDS = 3600

PreemptionGrace = Annotated[
    int,
    Field(
        ge=0,
        le=MAX_PREEMPTION_GRACE_SECONDS,
        description="seconds a preempted attempt has between SIGTERM and the kill (a pod's "
        "termination grace period), to checkpoint and exit",
    ),
]


class CohortCreate(BaseModel):
    model_config = _STRICT
    name: Annotated[str, dns_label("cohort name", max_length=63, example="research")]
    preemption_grace_seconds: PreemptionGrace = DEFAULT_PREEMPTION_GRACE_SECONDS


class CohortUpdate(BaseModel):
    """What a PATCH changes; a field left out keeps its value."""

    model_config = _STRICT
    preemption_grace_seconds: PreemptionGrace | None = None


class ShareSet(BaseModel):
    model_config = _STRICT
    nominal: int = Field(ge=0, le=MAX_COUNT, description="GPUs of this type guaranteed")
    borrowing_limit: int | None = Field(
        default=None,
        ge=0,
        le=MAX_COUNT,
        description="most GPUs of this type held beyond nominal; null: unlimited",
    )


class MemberSet(BaseModel):
    """A tenant's membership; a PUT replaces it (and moves the tenant from another cohort)."""

    model_config = _STRICT
    shares: dict[GpuTypeName, ShareSet] = Field(
        max_length=64, description='by GPU type, e.g. {"H100": {"nominal": 8}}'
    )
    preempt_within_tenant: bool = False
