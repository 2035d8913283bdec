"""Workflow registration in; versions out are `fleetflow.api_models.workflows`."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from fleetflow.api_models.workflows import WorkflowDetail, WorkflowPublic
from fleetflow.ir import WorkflowSpec

__all__ = ["WorkflowDetail", "WorkflowPublic", "WorkflowRegister"]

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
