"""Execution creation in; executions, attempts and outputs out are
`fleetflow.api_models.executions`, shared with the client."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from fleetflow.api_models.executions import (
    AttemptPublic,
    ExecutionInput,
    ExecutionOutput,
    ExecutionPublic,
    OutputBlob,
)
from fleetflow.api_models.notifications import MAX_RULES, NotificationRule

__all__ = [
    "AttemptPublic",
    "ExecutionCreate",
    "ExecutionRelaunch",
    "ExecutionInput",
    "ExecutionOutput",
    "ExecutionPublic",
    "OutputBlob",
]


class ExecutionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    workflow: str = Field(
        min_length=1, max_length=256, description="workflow name, `<module>.<function>`"
    )
    version: str | None = Field(
        default=None, max_length=128, description="defaults to the latest version"
    )
    inputs: dict[str, Any] = Field(default_factory=dict, description="JSON literals by name")
    priority: int = Field(
        default=0,
        ge=-1000,
        le=1000,
        description="among the tenant's waiting tasks, higher starts first (fair share "
        "between tenants comes before it)",
    )
    notifications: list[NotificationRule] = Field(
        default_factory=list,
        max_length=MAX_RULES,
        description="webhooks to call when the execution reaches a terminal state",
    )


class ExecutionRelaunch(BaseModel):
    """`POST /executions/{id}/relaunch`: which version of the workflow runs again."""

    model_config = ConfigDict(extra="forbid")

    version: Literal["same", "latest"] = Field(
        default="same",
        description="`same`: the version the execution ran; `latest`: the workflow's most "
        "recently registered version (the same inputs must suit it)",
    )
