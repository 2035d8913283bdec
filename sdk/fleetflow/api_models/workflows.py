"""Registered workflow versions as the API answers them."""

from __future__ import annotations

from pydantic import BaseModel

from fleetflow.api_models.common import UtcDatetime
from fleetflow.ir import TypedInterface, WorkflowSpec


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
