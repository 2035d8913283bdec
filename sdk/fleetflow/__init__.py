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

The names below are imported on first use (PEP 562), so `import fleetflow` (and the CLI,
which lives in this package) costs no pydantic, no type system and no HTTP client until a
workflow is defined or a client made.
"""

import importlib
import sys
from types import ModuleType
from typing import TYPE_CHECKING, Any

from fleetflow.errors import (
    ConditionalFailedError,
    DefinitionError,
    DynamicWorkflowError,
    FleetflowError,
    InvalidOptionError,
    LiteralValidationError,
    MapElementsFailedError,
    MapInputError,
    PromiseAttributeError,
    ReferenceWorkflowError,
    TaskDefinitionError,
    TaskOutputError,
    UnsupportedTypeError,
    WorkflowCompileError,
    WorkflowInputError,
    WorkflowOutputError,
)

if TYPE_CHECKING:
    from fleetflow.client import Client
    from fleetflow.conditional import conditional
    from fleetflow.context import TaskContext, current_context
    from fleetflow.dynamic import DynamicFunction, dynamic
    from fleetflow.fanout import MapTask, map_task
    from fleetflow.files import Directory, File
    from fleetflow.reference import ReferenceWorkflow, reference_workflow
    from fleetflow.resources import Resources
    from fleetflow.task import TaskFunction, task
    from fleetflow.workflow import WorkflowFunction, workflow

# Public name -> the module that defines it.
LAZY_EXPORTS = {
    "Client": "fleetflow.client",
    "conditional": "fleetflow.conditional",
    "current_context": "fleetflow.context",
    "TaskContext": "fleetflow.context",
    "Directory": "fleetflow.files",
    "DynamicFunction": "fleetflow.dynamic",
    "dynamic": "fleetflow.dynamic",
    "File": "fleetflow.files",
    "MapTask": "fleetflow.fanout",
    "map_task": "fleetflow.fanout",
    "ReferenceWorkflow": "fleetflow.reference",
    "reference_workflow": "fleetflow.reference",
    "Resources": "fleetflow.resources",
    "TaskFunction": "fleetflow.task",
    "task": "fleetflow.task",
    "WorkflowFunction": "fleetflow.workflow",
    "workflow": "fleetflow.workflow",
}


def __getattr__(name: str) -> Any:
    module_name = LAZY_EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module 'fleetflow' has no attribute {name!r}")
    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value  # later look-ups are plain attribute reads
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(LAZY_EXPORTS))


class _Package(ModuleType):
    """`fleetflow`, whose decorators `task` and `workflow` share their names with the
    submodules `fleetflow.task` and `fleetflow.workflow`.

    Importing a submodule binds it on its package, which would shadow the lazily exported
    decorator of the same name (`from fleetflow import task` giving the module). Such a binding
    is dropped here, so the name keeps resolving to the decorator through `__getattr__`.
    Nothing here may use a module-level name that a submodule shares (`types`): importing the
    submodule rebinds it, and every later submodule import would then fail to bind silently.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if (
            isinstance(value, ModuleType)
            and LAZY_EXPORTS.get(name) == value.__name__
            and name in vars(value)
        ):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package

__all__ = [
    "Client",
    "ConditionalFailedError",
    "DefinitionError",
    "Directory",
    "DynamicFunction",
    "DynamicWorkflowError",
    "File",
    "FleetflowError",
    "InvalidOptionError",
    "LiteralValidationError",
    "MapElementsFailedError",
    "MapInputError",
    "MapTask",
    "PromiseAttributeError",
    "ReferenceWorkflow",
    "ReferenceWorkflowError",
    "Resources",
    "TaskContext",
    "TaskDefinitionError",
    "TaskFunction",
    "TaskOutputError",
    "UnsupportedTypeError",
    "WorkflowCompileError",
    "WorkflowFunction",
    "WorkflowInputError",
    "WorkflowOutputError",
    "conditional",
    "current_context",
    "dynamic",
    "map_task",
    "reference_workflow",
    "task",
    "workflow",
]
