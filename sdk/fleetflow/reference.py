"""`@reference_workflow`: call a workflow already registered on the platform, by name and
version, from a workflow body.

The decorated function is a typed stub (`def train(x: int, lr: float) -> Model: ...`): its
signature is the interface the caller expects of the registered version; its body never runs.
Called in a workflow body it records a node like a task call, type-checked the same way; the
node's task (`ir.TaskSpec.reference`) names the registered workflow. At registration the
control plane looks the name and version up in the caller's tenant only and refuses a stub
whose interface differs from the registered version's; when the node runs, that version runs
as a child execution of the caller's, with its own code bundle, and its outputs are the node's.

A reference runs only on the platform: a local run of a workflow that calls one fails with a
`ReferenceWorkflowError` saying so (run it with `fleetflow run --remote`, or call the real
workflow's function in code when it is at hand).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from fleetflow import ir
from fleetflow.compiler import active_compilation
from fleetflow.errors import InvalidOptionError, ReferenceWorkflowError
from fleetflow.task import TaskFunction

P = ParamSpec("P")
R = TypeVar("R")


def _check_text(what: str, value: object, limit: int) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidOptionError(f"reference_workflow: {what} must be a non-empty string")
    if len(value) > limit or value != value.strip():
        raise InvalidOptionError(
            f"reference_workflow: {what} {value!r} must be at most {limit} characters, "
            "without surrounding spaces"
        )
    return value


class ReferenceWorkflow(TaskFunction[P, R]):
    """A typed stub decorated with `@reference_workflow(name=..., version=...)`."""

    def __init__(self, fn: Callable[P, R], *, name: str, version: str) -> None:
        reference = ir.WorkflowReference(
            name=_check_text("name", name, 256), version=_check_text("version", version, 128)
        )
        super().__init__(fn)
        self.spec = self.spec.model_copy(update={"reference": reference})
        self.reference = reference

    def __repr__(self) -> str:
        return f"<reference workflow {self.reference.name} version {self.reference.version}>"

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """In a workflow body: record a node. Elsewhere: refused, it runs on the platform."""
        if active_compilation() is not None:
            return super().__call__(*args, **kwargs)
        raise not_local(self.spec)


def not_local(spec: ir.TaskSpec, where: str = "") -> ReferenceWorkflowError:
    """The error of running a reference (task `spec`) outside the platform."""
    assert spec.reference is not None
    ref = spec.reference
    return ReferenceWorkflowError(
        f"'{spec.function}' references workflow {ref.name} version {ref.version}, registered "
        "on the platform: it runs only there, as a child execution"
        + (f" ({where})" if where else "")
        + ". Run the calling workflow on the platform (fleetflow run --remote), or call the "
        "workflow's own function when its code is at hand"
    )


def reference_workflow(*, name: str, version: str) -> Callable[[Callable[P, R]], Any]:
    """Declare a typed stub of a registered workflow: `@reference_workflow(name=..., version=...)`.

    `name` is the registered workflow's name (`<module>.<function>`, as `fleetflow workflows
    list` shows it) and `version` one of its versions, in your tenant. The stub's parameters
    and return annotation must be that version's inputs and outputs.

    Raises:
        InvalidOptionError: `name` or `version` is empty or too long.
        TaskDefinitionError: a parameter or the return is unannotated or unsupported.
    """
    _check_text("name", name, 256)
    _check_text("version", version, 128)

    def decorate(fn: Callable[P, R]) -> ReferenceWorkflow[P, R]:
        return ReferenceWorkflow(fn, name=name, version=version)

    return decorate
