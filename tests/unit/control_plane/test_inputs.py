"""Execution inputs are checked against the workflow interface before anything is persisted."""

from __future__ import annotations

import pytest

from control_plane.services.execution_inputs import InputValidationError, validate_execution_inputs
from fleetflow.ir import LiteralType, TypedInterface, TypeKind, Variable

INT = LiteralType(kind=TypeKind.INTEGER)
FLOAT = LiteralType(kind=TypeKind.FLOAT)
POINT = LiteralType(kind=TypeKind.STRUCT, name="geo.Point", fields={"x": FLOAT, "y": FLOAT})

INTERFACE = TypedInterface(
    inputs=[
        Variable(name="n", type=INT),
        Variable(name="lr", type=FLOAT, default=0.1, has_default=True),
        Variable(
            name="points",
            type=LiteralType(kind=TypeKind.LIST, item=POINT),
            default=[],
            has_default=True,
        ),
    ]
)


def _errors(inputs: dict[str, object]) -> dict[str, str]:
    with pytest.raises(InputValidationError) as info:
        validate_execution_inputs(INTERFACE, inputs)
    return {error.field: error.message for error in info.value.errors}


def test_fills_defaults_and_normalises_values() -> None:
    assert validate_execution_inputs(INTERFACE, {"n": 3}) == {"n": 3, "lr": 0.1, "points": []}
    resolved = validate_execution_inputs(INTERFACE, {"n": 3, "lr": 1, "points": [{"x": 1, "y": 2}]})
    assert resolved["lr"] == 1.0 and isinstance(resolved["lr"], float)
    assert resolved["points"] == [{"x": 1.0, "y": 2.0}]


def test_defaults_are_copied_not_shared() -> None:
    first = validate_execution_inputs(INTERFACE, {"n": 1})
    first["points"].append({"x": 0.0, "y": 0.0})
    assert validate_execution_inputs(INTERFACE, {"n": 1})["points"] == []


def test_wrong_type_names_the_field() -> None:
    with pytest.raises(InputValidationError) as info:
        validate_execution_inputs(INTERFACE, {"n": "abc"})
    assert str(info.value) == "inputs.n: expected int, got str 'abc'"


def test_bool_is_not_an_int() -> None:
    assert _errors({"n": True}) == {"inputs.n": "expected int, got bool True"}


def test_nested_errors_name_the_path() -> None:
    errors = _errors({"n": 1, "points": [{"x": 1, "y": 2}, {"x": "far", "y": 0}]})
    assert list(errors) == ["inputs.points[1].x"]


def test_unknown_missing_and_mistyped_inputs_are_reported_together() -> None:
    errors = _errors({"lr": "fast", "bogus": 1})
    assert set(errors) == {"inputs.bogus", "inputs.n", "inputs.lr"}
    assert "unknown input" in errors["inputs.bogus"]
    assert errors["inputs.n"] == "missing required input of type int"


def test_workflow_without_inputs() -> None:
    with pytest.raises(InputValidationError, match="takes no inputs"):
        validate_execution_inputs(TypedInterface(), {"x": 1})
