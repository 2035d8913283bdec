"""Fleetflow: typed ML workflows, run locally or on many clusters.

The public SDK surface; everything else lives in modules named for what they do.

    from fleetflow import Resources, task, workflow

    @task(resources=Resources(cpu=2, memory="4Gi"))
    def double(x: int) -> int:
        return 2 * x

    @workflow
    def pipeline(x: int = 1) -> int:
        return double(x=double(x=x))

    pipeline(x=3)  # runs locally: 12
"""

from fleetflow.errors import (
    DefinitionError,
    FleetflowError,
    InvalidOptionError,
    LiteralValidationError,
    PromiseAttributeError,
    TaskDefinitionError,
    UnsupportedTypeError,
    WorkflowCompileError,
    WorkflowInputError,
    WorkflowOutputError,
)
from fleetflow.files import Directory, File
from fleetflow.resources import Resources
from fleetflow.task import TaskFunction, task
from fleetflow.workflow import WorkflowFunction, workflow

__all__ = [
    "DefinitionError",
    "Directory",
    "File",
    "FleetflowError",
    "InvalidOptionError",
    "LiteralValidationError",
    "PromiseAttributeError",
    "Resources",
    "TaskDefinitionError",
    "TaskFunction",
    "UnsupportedTypeError",
    "WorkflowCompileError",
    "WorkflowFunction",
    "WorkflowInputError",
    "WorkflowOutputError",
    "task",
    "workflow",
]
