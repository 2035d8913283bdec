"""Errors the SDK raises. Each subclasses the builtin a Python user would expect."""

from __future__ import annotations


class FleetflowError(Exception):
    """Base of every error Fleetflow raises on purpose."""


class UnsupportedTypeError(FleetflowError, TypeError):
    """A Python type that Fleetflow cannot carry between tasks."""


class LiteralValidationError(FleetflowError, ValueError):
    """A value does not match its declared type. `path` names where (`inputs.n`, `[2].lr`)."""

    def __init__(self, path: str, message: str) -> None:
        self.path = path
        self.reason = message
        super().__init__(f"{path}: {message}" if path else message)


class InvalidOptionError(FleetflowError, ValueError):
    """A `@task` option or a `Resources` field is out of range or of the wrong kind."""


class DefinitionError(FleetflowError, TypeError):
    """A task or workflow is written in a way Fleetflow cannot compile.

    Raised on the engineer's machine at import time, so the message carries everything needed
    to fix it without a debugger: who (`workflow`, `task`, `parameter`), where (`location`,
    `file:line`) and what (`expected` vs `actual` type).
    """

    def __init__(
        self,
        detail: str,
        *,
        location: str,
        workflow: str | None = None,
        task: str | None = None,
        parameter: str | None = None,
        expected: str | None = None,
        actual: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.detail = detail
        self.location = location
        self.workflow = workflow
        self.task = task
        self.parameter = parameter
        self.expected = expected
        self.actual = actual
        self.hint = hint
        if workflow is not None:
            subject = f"workflow '{workflow}'"
        elif task is not None:
            subject = f"task '{task}'"
        else:
            subject = "definition"
        message = f"{subject} at {location}: {detail}"
        if hint:
            message += f"\n  hint: {hint}"
        super().__init__(message)


class TaskDefinitionError(DefinitionError):
    """A `@task` signature Fleetflow cannot type: a missing or unsupported annotation, etc."""


class WorkflowCompileError(DefinitionError):
    """The body or signature of a `@workflow` does not type-check or cannot be compiled."""


class PromiseAttributeError(WorkflowCompileError, AttributeError):
    """Attribute access on a promise in a workflow body (`data.points`).

    Also an `AttributeError`, so `hasattr(promise, ...)` in generic tooling stays false
    instead of blowing up, while direct access still explains what went wrong.
    """


class WorkflowInputError(FleetflowError, ValueError):
    """Workflow inputs that are unknown, missing or unparseable (`input 'lr': expected float`)."""

    def __init__(self, message: str, *, input_name: str | None = None) -> None:
        self.input_name = input_name
        super().__init__(message)


class WorkflowOutputError(FleetflowError, ValueError):
    """Workflow outputs that do not match the workflow's declared return type."""


class MapInputError(FleetflowError, ValueError):
    """The inputs of a `map_task` cannot be split into elements (lists of different lengths,
    no list to map over when called outside a workflow)."""
