"""Execution inputs checked against a workflow's typed interface, before anything runs.

Engineers get every problem at once (unknown, missing and mistyped inputs), each named by its
path (`inputs.n`, `inputs.points[2].x`), instead of a failed task minutes later.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

from control_plane.schemas.common import FieldError
from fleetflow.errors import LiteralValidationError
from fleetflow.ir import LiteralType, TypedInterface, TypeKind
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
        for path, uri in blob_uris(
            resolved[variable.name], variable.type, f"inputs.{variable.name}"
        ):
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


def blob_uris(literal: Any, literal_type: LiteralType, path: str) -> Iterator[tuple[str, str]]:
    """Every (path, URI) of a File or Directory inside a validated literal."""
    kind = literal_type.kind
    if literal is None:
        return
    if kind in (TypeKind.FILE, TypeKind.DIRECTORY):
        yield path, str(literal["uri"])
    elif kind is TypeKind.OPTIONAL and literal_type.item is not None:
        yield from blob_uris(literal, literal_type.item, path)
    elif kind is TypeKind.LIST and literal_type.item is not None:
        for i, item in enumerate(literal):
            yield from blob_uris(item, literal_type.item, f"{path}[{i}]")
    elif kind is TypeKind.DICT and literal_type.item is not None:
        for key, item in literal.items():
            yield from blob_uris(item, literal_type.item, f"{path}.{key}")
    elif kind is TypeKind.STRUCT:
        for name, field_type in (literal_type.fields or {}).items():
            yield from blob_uris(literal.get(name), field_type, f"{path}.{name}")
