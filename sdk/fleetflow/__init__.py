"""Fleetflow: typed ML workflows, run locally or on many clusters.

The public SDK surface; everything else lives in modules named for what they do.

    from fleetflow import Resources, map_task, task, workflow

    @task(resources=Resources(cpu=2, memory="4Gi"))
    def double(x: int) -> int:
        return 2 * x

    @task
    def total(values: list[int]) -> int:
        return sum(values)

    @workflow
    def pipeline(xs: list[int]) -> int:
        return total(values=map_task(double, concurrency=4)(x=xs))

    pipeline(xs=[1, 2, 3])  # runs locally: 12
"""

from typing import TYPE_CHECKING, Any

from fleetflow.errors import (
    DefinitionError,
    FleetflowError,
    InvalidOptionError,
    LiteralValidationError,
    MapInputError,
    PromiseAttributeError,
    TaskDefinitionError,
    UnsupportedTypeError,
    WorkflowCompileError,
    WorkflowInputError,
    WorkflowOutputError,
)
from fleetflow.fanout import MapTask, map_task
from fleetflow.files import Directory, File
from fleetflow.resources import Resources
from fleetflow.task import TaskFunction, task
from fleetflow.workflow import WorkflowFunction, workflow

if TYPE_CHECKING:
    from fleetflow.client import Client


def __getattr__(name: str) -> Any:
    # The client (and httpx) is imported on first use: task processes never need it.
    if name == "Client":
        from fleetflow.client import Client

        return Client
    raise AttributeError(f"module 'fleetflow' has no attribute {name!r}")


__all__ = [
    "Client",
    "DefinitionError",
    "Directory",
    "File",
    "FleetflowError",
    "InvalidOptionError",
    "LiteralValidationError",
    "MapInputError",
    "MapTask",
    "PromiseAttributeError",
    "Resources",
    "TaskDefinitionError",
    "TaskFunction",
    "UnsupportedTypeError",
    "WorkflowCompileError",
    "WorkflowFunction",
    "WorkflowInputError",
    "WorkflowOutputError",
    "map_task",
    "task",
    "workflow",
]
