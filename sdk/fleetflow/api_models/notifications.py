"""Notifications of executions' terminal states as the API takes and answers them: the rules a
launch plan or an execution carries (which states, which webhook, which body shape), the log of
their deliveries, and the tenant's signing key.

A rule is checked here for what its JSON alone can say (states, URL scheme, size); whether its
host is an address the platform may call is the control plane's check, at creation and again
at each delivery (`control_plane/services/notifications.py`).
"""

from __future__ import annotations

import ipaddress
from enum import StrEnum
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

from fleetflow.api_models.common import UtcDatetime

MAX_RULES = 10
"""Most notification rules one launch plan or execution may carry."""


class NotifyOn(StrEnum):
    """An execution's terminal state a rule fires on (an execution fires each rule at most
    once, when it reaches one of them)."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class DeliveryStatus(StrEnum):
    PENDING = "pending"  # not delivered yet: due at `next_attempt_at`
    DELIVERED = "delivered"  # the receiver answered 2xx
    FAILED = "failed"  # given up: every attempt failed, or the URL was refused


class Webhook(BaseModel):
    """Where a rule posts: an http(s) URL, without credentials in it."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(min_length=1, max_length=2048, description="http:// or https:// URL")

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        try:
            parts = urlsplit(value)
            port = parts.port
        except ValueError as exc:
            raise ValueError(f"not a valid URL: {exc}") from None
        if parts.scheme not in ("http", "https"):
            raise ValueError(f"the scheme must be http or https, not {parts.scheme or 'none'!r}")
        if not parts.hostname:
            raise ValueError("the URL names no host")
        if parts.username is not None or parts.password is not None:
            raise ValueError("credentials in the URL are refused: put a token in its path")
        if port == 0:
            raise ValueError("port 0 is not a port to send to")
        return value


class NotificationRule(BaseModel):
    """On which terminal states to post where, in which shape: `json` (Fleetflow's event,
    signed) or `slack` (a Slack-compatible `{"text", "blocks"}` body, signed too)."""

    model_config = ConfigDict(extra="forbid")

    on: list[NotifyOn] = Field(min_length=1, description="succeeded, failed, cancelled")
    webhook: Webhook
    format: Literal["json", "slack"] = "json"

    @field_validator("on")
    @classmethod
    def _no_repeats(cls, value: list[NotifyOn]) -> list[NotifyOn]:
        if len(set(value)) != len(value):
            raise ValueError("a state is named twice")
        return value


Rules = list[NotificationRule]


def redacted_url(url: str) -> str:
    """`url` with its path and query cut (they often hold the receiver's secret, as a Slack
    incoming webhook's does): what answers to readers show."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        if ipaddress.ip_address(host).version == 6:
            host = f"[{host}]"
    except ValueError:
        pass
    port = f":{parts.port}" if parts.port else ""
    tail = "/…" if parts.path not in ("", "/") or parts.query else ""
    return f"{parts.scheme}://{host}{port}{tail}"


class NotificationRulePublic(BaseModel):
    """A rule as answers show it: the URL redacted (`redacted_url`)."""

    on: list[NotifyOn]
    url: str
    format: Literal["json", "slack"]

    @classmethod
    def of(cls, rule: NotificationRule) -> NotificationRulePublic:
        return cls(on=rule.on, url=redacted_url(rule.webhook.url), format=rule.format)


class NotificationDelivery(BaseModel):
    """One notification of one execution: a rule fired on a terminal state, and how its
    delivery went."""

    id: str
    execution_id: str
    rule_index: int = Field(description="which of the execution's rules fired (from 0)")
    state: NotifyOn
    url: str = Field(description="redacted: scheme, host and port")
    format: Literal["json", "slack"]
    status: DeliveryStatus
    attempts: int
    next_attempt_at: UtcDatetime | None = Field(description="while pending: when it is tried")
    last_status_code: int | None
    last_error: str | None
    delivered_at: UtcDatetime | None
    created_at: UtcDatetime


class SigningKey(BaseModel):
    """The tenant's webhook signing key: shown to its admins only."""

    key: str
    created_at: UtcDatetime
