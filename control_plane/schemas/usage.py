"""A tenant's quota status and usage history, as the API and dashboards read them."""

from fleetflow.api_models.usage import (
    AmountPublic,
    BucketPublic,
    LoadPublic,
    QuotaStatus,
    TopWorkflows,
    UsageHistory,
    WorkflowUsagePublic,
)

__all__ = [
    "AmountPublic",
    "BucketPublic",
    "LoadPublic",
    "QuotaStatus",
    "TopWorkflows",
    "UsageHistory",
    "WorkflowUsagePublic",
]
