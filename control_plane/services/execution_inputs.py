"""Execution inputs checked against a workflow's typed interface, before anything runs.

Engineers get every problem at once (unknown, missing and mistyped inputs), each named by its
path (`inputs.n`, `inputs.points[2].x`), instead of a failed task minutes later.
"""

from __future__ import annotations

import copy
from typing import Any

from control_plane.schemas.common import FieldError
from fleetflow.errors import LiteralValidationError
from fleetflow.files import blob_literals
from fleetflow.ir import TypedInterface
from fleetflow.types import validate_literal


class InputValidationError(ValueError):
    """The inputs do not match the interface; `errors` lists each problem by field."""

    def __init__(self, errors: list[FieldError]) -> None:
        self.errors = errors
        super().__init__("; ".join(f"{e.field}: {e.message}" for e in errors))


def validate_execution_inputs(
    interface: TypedInterface,
    inputs: dict[str, Any],
    *,
    blob_prefixes: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Return the inputs normalised and completed with defaults.

    `File`/`Directory` values must name blobs under one of `blob_prefixes` (the store's
    uploads and execution outputs), never an arbitrary URI an agent would then read.

    Raises:
        InputValidationError: an input is unknown, missing, of the wrong type, or names a blob
            outside the allowed prefixes.
    """
    errors: list[FieldError] = []
    declared = [variable.name for variable in interface.inputs]
    for name in sorted(set(inputs) - set(declared)):
        takes = ", ".join(declared) if declared else "no inputs"
        errors.append(
            FieldError(
                field=f"inputs.{name}", message=f"unknown input (the workflow takes {takes})"
            )
        )
    resolved: dict[str, Any] = {}
    for variable in interface.inputs:
        path = f"inputs.{variable.name}"
        if variable.name in inputs:
            try:
                resolved[variable.name] = validate_literal(
                    inputs[variable.name], variable.type, path
                )
            except LiteralValidationError as exc:
                errors.append(FieldError(field=exc.path or path, message=exc.reason))
        elif variable.has_default:
            resolved[variable.name] = copy.deepcopy(variable.default)
        else:
            errors.append(
                FieldError(
                    field=path,
                    message=f"missing required input of type {variable.type.describe()}",
                )
            )
    for variable in interface.inputs:
        if variable.name not in resolved:
            continue
        for path, _kind, blob in blob_literals(
            resolved[variable.name], variable.type, f"inputs.{variable.name}"
        ):
            uri = str(blob["uri"])
            if not uri.startswith(blob_prefixes):
                errors.append(
                    FieldError(
                        field=path,
                        message=f"{uri!r} is not a blob of this control plane: upload the file "
                        "(the CLI and Client do) and pass the URI they return",
                    )
                )
    if errors:
        raise InputValidationError(errors)
    return resolved
