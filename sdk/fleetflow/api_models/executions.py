"""Executions, their task attempts, outputs and logs as the API answers them."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from fleetflow.api_models.common import UtcDatetime
from fleetflow.states import AttemptState, ExecutionState


class AttemptPublic(BaseModel):
    id: str
    node_id: str
    map_index: int | None = Field(description="element of a map node; null for other nodes")
    task_name: str
    attempt_number: int
    status: AttemptState
    cache_hit: bool = Field(description="answered from the task cache; nothing was dispatched")
    cluster: str | None
    error_message: str | None
    error_traceback: str | None
    pending_reason: str | None = Field(
        default=None,
        description="why the attempt has not started yet, e.g. no node with the GPUs free",
    )
    gpu_type: str | None = Field(
        default=None, description="the GPU type it was placed on; null without GPUs"
    )
    borrowed_gpus: int = Field(
        default=0,
        description="GPUs it holds beyond its tenant's nominal quota in its cohort: borrowed "
        "work, which may be preempted (0: none)",
    )
    created_at: UtcDatetime
    started_at: UtcDatetime | None
    finished_at: UtcDatetime | None


class ExecutionProgress(BaseModel):
    """An execution's state and how many of its attempts are in each state, without the
    attempts themselves: what `wait` polls (a map's attempts can be tens of thousands)."""

    id: str
    status: ExecutionState
    finished_at: UtcDatetime | None
    attempts: dict[AttemptState, int] = Field(
        description="how many attempts are in each state; states with none are left out"
    )


class ChildExecution(BaseModel):
    """An execution that a reference node of this one runs (`@reference_workflow`)."""

    node_id: str = Field(description="the reference node that runs it")
    execution_id: str
    workflow: str
    version: str
    status: ExecutionState


class ExecutionPublic(BaseModel):
    id: str
    workflow: str
    version: str
    status: ExecutionState
    priority: int = 0
    inputs: dict[str, Any]
    outputs: dict[str, Any] | None
    error: dict[str, Any] | None
    created_at: UtcDatetime
    started_at: UtcDatetime | None
    finished_at: UtcDatetime | None
    attempts: list[AttemptPublic]
    min_success_ratios: dict[str, float] = Field(
        default_factory=dict,
        description="the map nodes that succeed with failed elements (`map_task(..., "
        "min_success_ratio=r)`): node id -> the fraction of elements that must succeed",
    )
    parent_execution_id: str | None = Field(
        default=None, description="a child execution: the execution whose node runs it"
    )
    parent_node_id: str | None = Field(default=None, description="that node (a reference)")
    relaunched_from: str | None = Field(
        default=None, description="started again, on the same inputs, from this execution"
    )
    recovered_from: str | None = Field(
        default=None,
        description="recovered from this failed execution: its nodes that succeeded were "
        "not run again (their attempts show as cache hits, with the source's outputs)",
    )
    launched_by: str | None = Field(
        default=None,
        description="the principal whose API call launched (or relaunched) it; null for one a "
        "schedule or a parent execution started",
    )
    children: list[ChildExecution] = Field(
        default_factory=list,
        description="the child executions its reference nodes run (registered workflows)",
    )


class OutputBlob(BaseModel):
    """One `File` or `Directory` inside an output's value, and where its files land when the
    output is downloaded into a directory of its own."""

    kind: Literal["file", "directory"]
    at: str = Field(description="where in the value: `model`, `models[2]`, `report.text`")
    uri: str = Field(description="the blob the value names (a file, or a directory's prefix)")
    path: str = Field(
        description="where it lands, relative to the output's directory (`.`: that directory)"
    )
    files: list[str] = Field(
        description="its files, relative to the output's directory; each is downloadable at "
        "`GET /api/v1/executions/{id}/outputs/{name}/files/{file}`"
    )


class ExecutionOutput(BaseModel):
    """One output of a succeeded execution: its type, its value, and the files it carries."""

    execution_id: str
    name: str
    type: str = Field(description="the output's declared type, e.g. `list[File]`")
    value: Any = Field(description="its JSON literal, as the execution's `outputs` has it")
    blobs: list[OutputBlob]


class ExecutionInput(ExecutionOutput):
    """One input of an execution: its declared type, its value, and the files it carries (each
    downloadable at `GET /api/v1/executions/{id}/inputs/{name}/files/{file}`)."""


class AttemptLog(BaseModel):
    attempt_id: str
    node_id: str
    map_index: int | None
    attempt_number: int
    status: str
    cluster: str | None
    log: str | None = Field(description="its output so far (the last MiB); null: none stored")


class ExecutionLogs(BaseModel):
    execution_id: str
    attempts: list[AttemptLog]


class SubDagNode(BaseModel):
    id: str = Field(description="its id in the execution: `<dynamic node>/<its id>`")
    task: str
    upstream: list[str] = Field(
        description="the ids of the sub-DAG's nodes it reads (edges come in from them); "
        "empty for a node that reads only the dynamic node's inputs"
    )
    is_map: bool = Field(description="a map node: one attempt per element")
    dynamic: bool = Field(description="its task is dynamic: it builds a sub-DAG of its own")


class SubDag(BaseModel):
    """The sub-DAG a dynamic node built, as the control plane checked and ran it."""

    execution_id: str
    node_id: str = Field(description="the dynamic node")
    nodes: list[SubDagNode]
