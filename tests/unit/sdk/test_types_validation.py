"""`validate_literal` (JSON from API clients, no Python types) and `is_assignable` (wiring)."""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass
from typing import Any

import pytest

from fleetflow import File, LiteralValidationError
from fleetflow.ir import LiteralType, TypeKind
from fleetflow.types import assignability_hint, is_assignable, literal_type_of, validate_literal


class Color(enum.StrEnum):
    RED = "red"
    GREEN = "green"


class Shade(enum.StrEnum):  # same values, different enum
    RED = "red"
    GREEN = "green"


@dataclass
class Point:
    x: float
    y: float


@dataclass
class Other:
    x: float
    y: float


@dataclass
class Sample:
    at: dt.datetime
    took: dt.timedelta
    raw: bytes
    color: Color
    points: list[Point | None]
    labels: dict[str, int] | None
    doc: File


SAMPLE = literal_type_of(Sample)
GOOD = {
    "at": "2024-05-01T12:00:00",
    "took": 1.5,
    "raw": "aGk=",
    "color": "red",
    "points": [{"x": 1, "y": 2.0}, None],
    "labels": None,
    "doc": {"uri": "file:///data/doc.txt", "name": "doc.txt"},
}


def test_a_good_literal_is_accepted_and_normalised() -> None:
    checked = validate_literal(GOOD, SAMPLE, "inputs.sample")
    assert checked == {**GOOD, "points": [{"x": 1.0, "y": 2.0}, None]}
    assert type(checked["points"][0]["x"]) is float


def _with(**changes: Any) -> dict[str, Any]:
    return {**GOOD, **changes}


@pytest.mark.parametrize(
    ("literal", "path", "reason"),
    [
        ([], "inputs.s", "expected Sample, got list []"),
        (_with(extra=1), "inputs.s", "unknown field(s) extra for Sample"),
        ({k: v for k, v in GOOD.items() if k != "raw"}, "inputs.s", "missing field(s) raw"),
        (_with(at="2024-13-45"), "inputs.s.at", "expected datetime (an ISO 8601 string)"),
        (_with(at=1714564800), "inputs.s.at", "expected datetime (an ISO 8601 string), got int"),
        (_with(took="90s"), "inputs.s.took", "expected timedelta (seconds, a number), got str"),
        (_with(took=True), "inputs.s.took", "expected timedelta (seconds, a number), got bool"),
        (_with(took=float("nan")), "inputs.s.took", "expected timedelta (seconds, a number)"),
        (_with(took=1e20), "inputs.s.took", "duration 1e+20s is out of range"),
        (_with(raw="not base64!"), "inputs.s.raw", "expected bytes (a base64 string)"),
        (_with(raw=[104, 105]), "inputs.s.raw", "expected bytes (a base64 string), got list"),
        (_with(color="blue"), "inputs.s.color", "expected Color (one of 'red', 'green')"),
        (_with(color="RED"), "inputs.s.color", "got str 'RED'"),
        (_with(points={"x": 1}), "inputs.s.points", "expected list[Optional[Point]], got dict"),
        (_with(points=[None, {"x": 1}]), "inputs.s.points[1]", "missing field(s) y for Point"),
        (_with(points=[{"x": "1", "y": 2}]), "inputs.s.points[0].x", "expected float, got str"),
        (_with(points=[{"x": True, "y": 2}]), "inputs.s.points[0].x", "expected float, got bool"),
        (_with(labels={"a": 1.5}), "inputs.s.labels.a", "expected int, got float 1.5"),
        (_with(labels=[]), "inputs.s.labels", "expected dict[str, int], got list"),
        (_with(doc="file:///data/doc.txt"), "inputs.s.doc", "expected File, got str"),
        (_with(doc={"uri": "doc.txt", "name": "doc.txt"}), "inputs.s.doc.uri", "a blob URI"),
        (
            _with(doc={"uri": "file:///d", "name": "a/b"}),
            "inputs.s.doc.name",
            "without directories",
        ),
    ],
)
def test_wrong_shapes_are_rejected_naming_the_path(literal: Any, path: str, reason: str) -> None:
    with pytest.raises(LiteralValidationError) as info:
        validate_literal(literal, SAMPLE, "inputs.s")
    assert info.value.path == path, info.value
    assert reason in info.value.reason, info.value
    assert str(info.value) == f"{path}: {info.value.reason}"


@pytest.mark.parametrize(
    ("kind", "good", "bad"),
    [
        (TypeKind.INTEGER, [0, -(2**64)], [True, 1.0, "1", None]),
        (TypeKind.FLOAT, [0, 1.5], [False, "1.5", None]),
        (TypeKind.STRING, ["", "x"], [1, None, b"x"]),
        (TypeKind.BOOLEAN, [True, False], [0, 1, "true", None]),
        (TypeKind.BYTES, ["", "AA=="], ["AA=", "?", 0, None]),
        (TypeKind.DATETIME, ["2024-01-01", "2024-01-01T00:00:00+01:00"], ["", "noon", 0, None]),
        (TypeKind.DURATION, [0, -1, 1.25], [None, "1", True, float("inf")]),
    ],
)
def test_scalar_kinds_are_strict(kind: TypeKind, good: list[Any], bad: list[Any]) -> None:
    literal_type = LiteralType(kind=kind)
    for value in good:
        validate_literal(value, literal_type, "v")
    for value in bad:
        with pytest.raises(LiteralValidationError) as info:
            validate_literal(value, literal_type, "v")
        assert info.value.path == "v"


def test_optional_accepts_null_and_checks_the_rest() -> None:
    optional = literal_type_of(list[int] | None)
    assert validate_literal(None, optional) is None
    assert validate_literal([1], optional) == [1]
    with pytest.raises(LiteralValidationError, match=r"^o\[0\]: expected int, got null"):
        validate_literal([None], optional, "o")


def test_enum_without_values_rejects_everything() -> None:
    empty = LiteralType(kind=TypeKind.ENUM, name="m.Empty", values=[])
    with pytest.raises(LiteralValidationError, match="expected Empty"):
        validate_literal("a", empty)


def lt(py_type: Any) -> LiteralType:
    return literal_type_of(py_type)


ASSIGNABLE: list[tuple[Any, Any, bool]] = [
    (int, int, True),
    (int, float, True),
    (float, int, False),
    (bool, int, False),
    (int, bool, False),
    (int, str, False),
    (list[int], list[float], True),
    (list[float], list[int], False),
    (list[int], list[str], False),
    (dict[str, int], dict[str, float], True),
    (list[int], dict[str, int], False),
    # Optional: a T may go where None is also accepted, never the other way round.
    (int, int | None, True),
    (int, float | None, True),
    (int | None, int | None, True),
    (int | None, float | None, True),
    (int | None, int, False),
    (float | None, int | None, False),
    (list[int], list[int | None], True),
    (list[int | None], list[int], False),
    (Point, Point | None, True),
    (Point | None, Point, False),
    # Structs and enums match by name.
    (Point, Point, True),
    (Point, Other, False),
    (Color, Color, True),
    (Color, Shade, False),
    (Color, str, False),
    (bytes, str, False),
    (dt.datetime, str, False),
    (dt.timedelta, float, False),
    (File, File, True),
    (File, str, False),
]


@pytest.mark.parametrize(
    ("source", "target", "expected"),
    ASSIGNABLE,
    ids=[f"{s}->{t}" for s, t, _ in ASSIGNABLE],
)
def test_is_assignable(source: Any, target: Any, expected: bool) -> None:
    assert is_assignable(lt(source), lt(target)) is expected


def test_struct_with_the_same_name_but_other_fields_is_not_assignable() -> None:
    old = LiteralType(
        kind=TypeKind.STRUCT, name=lt(Point).name, fields={"x": LiteralType(kind=TypeKind.FLOAT)}
    )
    assert not is_assignable(old, lt(Point))
    assert "two different definitions of" in (assignability_hint(old, lt(Point)) or "")


def test_hints_explain_a_none_to_handle() -> None:
    hint = assignability_hint(lt(int | None), lt(int))
    assert hint is not None
    assert "may be None, which int does not accept" in hint
    assert "declare the receiving type Optional[int]" in hint
    nested = assignability_hint(lt(list[Point | None]), lt(list[Point]))
    assert nested is not None and nested.startswith("in the list items: the value may be None")
    assert assignability_hint(lt(int), lt(str)) is None
    assert assignability_hint(lt(str | None), lt(int)) is None
