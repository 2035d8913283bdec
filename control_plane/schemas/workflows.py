"""Workflow registration in, workflow versions out."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from control_plane.schemas.common import UtcDatetime
from fleetflow.ir import TypedInterface, WorkflowSpec

SHA256_HEX = r"^[0-9a-f]{64}$"
VERSION_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
MAX_NAME_LENGTH = 256  # workflow_specs.name


class WorkflowRegister(BaseModel):
    model_config = ConfigDict(extra="forbid")

    spec: WorkflowSpec
    bundle_digest: str = Field(pattern=SHA256_HEX, description="sha256 of the uploaded bundle")
    version: str | None = Field(
        default=None,
        max_length=128,
        pattern=VERSION_PATTERN,
        description="defaults to a hash of the spec and the bundle",
    )

    @field_validator("spec")
    @classmethod
    def _name_fits(cls, spec: WorkflowSpec) -> WorkflowSpec:
        if len(spec.name) > MAX_NAME_LENGTH:
            raise ValueError(f"workflow name longer than {MAX_NAME_LENGTH} characters")
        return spec


class WorkflowPublic(BaseModel):
    id: str
    name: str
    version: str
    bundle_digest: str
    created_at: UtcDatetime
    interface: TypedInterface


class WorkflowDetail(WorkflowPublic):
    """One workflow version with its whole compiled spec: tasks (resources, retries, cache)
    and nodes."""

    spec: WorkflowSpec
