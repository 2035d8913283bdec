"""`client.usage`: the acting tenant's quota against its load now, and what its tasks
consumed over time."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from fleetflow.api_models.cohorts import CohortUsage
from fleetflow.api_models.usage import QuotaStatus, TopWorkflows, UsageHistory, WorkflowUsagePublic
from fleetflow.client.transport import Transport

UsageBucket = Literal["minute", "hour", "day"]
UsageGroupBy = Literal["cluster", "gpu_type", "workflow"]


def _query_time(value: datetime | str) -> str:
    """A query's ISO 8601 time; a naive datetime is taken as UTC."""
    if isinstance(value, str):
        return value
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()


class Usage:
    """Quota and accounting of the tenant the client acts in."""

    def __init__(self, transport: Transport):
        self._transport = transport

    def quota_status(self) -> QuotaStatus:
        """The acting tenant's quota (None: unlimited) against what it uses now, and how many
        task attempts the quota holds back."""
        return self._transport.call("GET", "/api/v1/quota", QuotaStatus)

    def cohort(self) -> CohortUsage:
        """The acting tenant's place in its cohort: borrowed vs nominal GPUs per type, and how
        many of its attempts were preempted (`cohort` None: in no cohort)."""
        return self._transport.call("GET", "/api/v1/cohort", CohortUsage)

    def history(
        self,
        since: datetime | str | None = None,
        until: datetime | str | None = None,
        bucket: UsageBucket = "hour",
        group_by: UsageGroupBy | None = None,
    ) -> UsageHistory:
        """What the acting tenant's tasks consumed, per time bucket.

        Args:
            since: start of the window (a datetime, naive meaning UTC, or ISO 8601 text);
                default: the control plane's.
            until: end of the window; default: now.
            bucket: `minute`, `hour` or `day`.
            group_by: also split each bucket by `cluster`, `gpu_type` or `workflow`.
        """
        params: dict[str, Any] = {"bucket": bucket}
        if since is not None:
            params["since"] = _query_time(since)
        if until is not None:
            params["until"] = _query_time(until)
        if group_by is not None:
            params["group_by"] = group_by
        return self._transport.call("GET", "/api/v1/usage", UsageHistory, params=params)

    def top_workflows(
        self, since: datetime | str | None = None, limit: int = 10
    ) -> list[WorkflowUsagePublic]:
        """The acting tenant's workflows that used the most GPU time since `since`."""
        params: dict[str, Any] = {"limit": limit}
        if since is not None:
            params["since"] = _query_time(since)
        path = "/api/v1/usage/top-workflows"
        return self._transport.call("GET", path, TopWorkflows, params=params).workflows
