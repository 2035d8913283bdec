"""Execution previews out: where each task of a workflow would run now, and why not elsewhere."""

from fleetflow.api_models.previews import (
    EligibleCluster,
    ExcludedCluster,
    ExecutionPreview,
    ResourcesPublic,
    TaskPreview,
)

__all__ = [
    "EligibleCluster",
    "ExcludedCluster",
    "ExecutionPreview",
    "ResourcesPublic",
    "TaskPreview",
]
