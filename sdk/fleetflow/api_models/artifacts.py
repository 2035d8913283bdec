"""Artifacts (the blobs tasks produced, and executions were given) and their lineage, as the
API answers them."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from fleetflow.api_models.common import UtcDatetime

MAX_LINEAGE_DEPTH = 20
"""The most levels a lineage request walks."""
MAX_LINEAGE_ARTIFACTS = 1000
"""The most artifacts a lineage answer holds (besides the one asked about)."""


class ArtifactPublic(BaseModel):
    """A blob and what produced it."""

    id: str
    uri: str
    kind: str = Field(description="file, directory, array or dataframe")
    execution_id: str
    workflow: str | None = Field(default=None, description="the execution's workflow")
    workflow_version: str | None = None
    node_id: str = Field(description='the node that produced it; "inputs": an execution input')
    attempt_id: str | None = Field(description="the attempt that wrote it; null for an input")
    element_index: int | None = Field(description="element of a map node; null for others")
    task_name: str | None
    task_digest: str | None = Field(
        description="sha256 of the task's spec and code bundle: the task's version"
    )
    output_name: str = Field(description="where in the outputs (or inputs) it sits")
    created_at: UtcDatetime


class LineageEdge(BaseModel):
    """`downstream` was computed from the blob `upstream_uri` (its input `input_name`)."""

    upstream_id: str | None = Field(
        description="the blob's artifact; null when none is recorded for it"
    )
    upstream_uri: str
    downstream_id: str
    input_name: str


class ArtifactLineage(BaseModel):
    """The artifacts upstream and/or downstream of `artifact_id`, and the edges between them."""

    artifact_id: str
    direction: Literal["upstream", "downstream", "both"]
    depth: int
    artifacts: list[ArtifactPublic] = Field(description="the one asked about first")
    edges: list[LineageEdge]
    truncated: bool = Field(description="a limit stopped the walk: more artifacts exist")
    message: str | None = Field(default=None, description="why it was truncated")
