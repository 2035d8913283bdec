"""Launch plans as the API takes and answers them, shared by the control plane and the client.

A launch plan names a registered workflow version with fixed inputs (a launch cannot change
them), default inputs (a launch may), labels, a priority and an optional schedule: a cron
expression in a time zone, or a fixed interval, run as a durable Temporal Schedule while the plan
is active.
"""

from __future__ import annotations

import re
import zoneinfo
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from fleetflow.api_models.common import UtcDatetime
from fleetflow.api_models.notifications import MAX_RULES, NotificationRule, NotificationRulePublic

KICKOFF_INPUT = "kickoff_time"
"""A workflow input of this name and type `datetime` gets each scheduled launch's time."""

_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"


class OverlapPolicy(StrEnum):
    """What a schedule does when a launch is due while its previous execution still runs."""

    SKIP = "skip"  # do not launch
    BUFFER_ONE = "buffer_one"  # launch once the previous one finishes (one waits, at most)
    BUFFER_ALL = "buffer_all"  # launch each, one after another
    ALLOW_ALL = "allow_all"  # launch now, beside the previous one
    CANCEL_OTHER = "cancel_other"  # cancel the previous execution, then launch


class ScheduleSpec(BaseModel):
    """When a plan launches: `cron` (in `timezone`) or `interval_seconds`, exactly one."""

    model_config = ConfigDict(extra="forbid")

    cron: str | None = Field(
        default=None, max_length=256, description='5-field cron, e.g. "0 3 * * *"'
    )
    timezone: str = Field(default="UTC", max_length=64, description="IANA name of cron's zone")
    interval_seconds: int | None = Field(default=None, ge=1, le=366 * 24 * 3600)
    overlap: OverlapPolicy = OverlapPolicy.SKIP
    catchup_window_seconds: int = Field(
        default=600,
        ge=10,
        le=30 * 24 * 3600,
        description="after downtime, launches missed within this window are still made",
    )

    @field_validator("cron")
    @classmethod
    def _cron_fields(cls, value: str | None) -> str | None:
        if value is not None and len(value.split()) != 5:
            raise ValueError(
                "a cron expression has 5 fields: minute hour day-of-month month day-of-week "
                '(e.g. "0 3 * * *")'
            )
        return value

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            message = f"unknown time zone {value!r} (an IANA name, e.g. Europe/Paris)"
            raise ValueError(message) from None
        return value

    @model_validator(mode="after")
    def _one_kind(self) -> ScheduleSpec:
        if (self.cron is None) == (self.interval_seconds is None):
            raise ValueError("give exactly one of cron and interval_seconds")
        return self


class LaunchPlanCreate(BaseModel):
    """A new launch plan; a plan of the same name is replaced unless it is active."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=_NAME, description="unique in the tenant")
    workflow: str = Field(min_length=1, max_length=256)
    version: str | None = Field(default=None, max_length=128, description="default: latest")
    fixed_inputs: dict[str, Any] = Field(default_factory=dict)
    default_inputs: dict[str, Any] = Field(default_factory=dict)
    schedule: ScheduleSpec | None = None
    labels: dict[str, str] = Field(default_factory=dict, max_length=64)
    priority: int = Field(default=0, ge=-1000, le=1000)
    notifications: list[NotificationRule] = Field(
        default_factory=list,
        max_length=MAX_RULES,
        description="webhooks every execution it launches calls on a terminal state",
    )

    @field_validator("labels")
    @classmethod
    def _label_sizes(cls, value: dict[str, str]) -> dict[str, str]:
        for key, text in value.items():
            if not re.match(r"^[A-Za-z0-9_.\-/]{1,63}$", key) or len(text) > 256:
                raise ValueError(f"label {key!r}: keys are 1-63 of [A-Za-z0-9_.-/], values ≤256")
        return value


class LaunchPlanPublic(BaseModel):
    id: str
    name: str
    workflow: str
    version: str
    fixed_inputs: dict[str, Any]
    default_inputs: dict[str, Any]
    schedule: ScheduleSpec | None
    labels: dict[str, str]
    priority: int
    active: bool
    paused: bool
    created_at: UtcDatetime
    notifications: list[NotificationRulePublic] = Field(
        default_factory=list, description="URLs redacted to scheme, host and port"
    )


class LaunchPlanLaunch(BaseModel):
    """A launch by hand: inputs beside the plan's (its defaults may be overridden, its fixed
    inputs not)."""

    model_config = ConfigDict(extra="forbid")

    inputs: dict[str, Any] = Field(default_factory=dict)


class Backfill(BaseModel):
    """Launch every time the schedule names in [start, end), now."""

    model_config = ConfigDict(extra="forbid")

    start: UtcDatetime
    end: UtcDatetime
    overlap: OverlapPolicy = OverlapPolicy.ALLOW_ALL

    @model_validator(mode="after")
    def _ordered(self) -> Backfill:
        if self.end <= self.start:
            raise ValueError("end must be after start")
        return self
