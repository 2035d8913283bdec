"""Every supported type: its IR type, its JSON literal, and back to an equal Python value."""

from __future__ import annotations

import datetime as dt
import enum
import json
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, Optional

import pytest
from pydantic import BaseModel, Field

from fleetflow import LiteralValidationError, UnsupportedTypeError
from fleetflow.ir import LiteralType, TypeKind
from fleetflow.types import (
    describe_python_type,
    literal_type_of,
    to_literal,
    to_python,
    validate_literal,
)


class Color(enum.StrEnum):
    RED = "red"
    GREEN = "green"


class Stage(enum.Enum):  # a plain Enum whose values are strings
    PREP = "prep"
    TRAIN = "train"


class Priority(enum.IntEnum):
    LOW = 1


@dataclass
class Point:
    x: float
    y: float


@dataclass
class Track:
    name: str
    points: list[Optional[Point]]  # noqa: UP045 - the spelling under test
    tags: dict[str, list[dt.datetime]] = field(default_factory=dict)


class Blob(BaseModel):
    data: bytes
    at: dt.datetime


class Experiment(BaseModel):
    name: str
    lr: float = Field(gt=0)
    color: Color
    window: dt.timedelta
    blobs: list[Blob]
    best: Point | None = None
    by_stage: dict[str, Stage] = {}


@dataclass
class Holder:  # a dataclass holding a pydantic model
    experiment: Experiment
    note: str | None


PLUS_0530 = dt.timezone(dt.timedelta(hours=5, minutes=30))
NAIVE = dt.datetime(2024, 5, 1, 12, 30, 45, 123456)
AWARE = dt.datetime(2024, 5, 1, 12, 30, tzinfo=PLUS_0530)
EXPERIMENT = Experiment(
    name="e1",
    lr=0.1,
    color=Color.GREEN,
    window=dt.timedelta(minutes=90),
    blobs=[Blob(data=b"\x00\xff", at=NAIVE), Blob(data=b"", at=AWARE)],
    best=Point(x=1.0, y=2.5),
    by_stage={"a": Stage.TRAIN},
)
EXPERIMENT_LITERAL = {
    "name": "e1",
    "lr": 0.1,
    "color": "green",
    "window": 5400,
    "blobs": [
        {"data": "AP8=", "at": "2024-05-01T12:30:45.123456"},
        {"data": "", "at": "2024-05-01T12:30:00+05:30"},
    ],
    "best": {"x": 1.0, "y": 2.5},
    "by_stage": {"a": "train"},
}

CASES: list[tuple[str, Any, Any, Any]] = [
    ("int", int, 3, 3),
    ("negative-int", int, -(2**70), -(2**70)),
    ("float", float, 2.5, 2.5),
    ("str", str, "héllo", "héllo"),
    ("bool", bool, False, False),
    ("bytes", bytes, b"\x00\x01binary\xff", "AAFiaW5hcnn/"),
    ("empty-bytes", bytes, b"", ""),
    ("naive-datetime", dt.datetime, NAIVE, "2024-05-01T12:30:45.123456"),
    ("aware-datetime", dt.datetime, AWARE, "2024-05-01T12:30:00+05:30"),
    (
        "utc-datetime",
        dt.datetime,
        dt.datetime(2024, 1, 1, tzinfo=dt.UTC),
        "2024-01-01T00:00:00+00:00",
    ),
    ("whole-timedelta", dt.timedelta, dt.timedelta(hours=1), 3600),
    ("fractional-timedelta", dt.timedelta, dt.timedelta(seconds=1, microseconds=500), 1.0005),
    ("negative-timedelta", dt.timedelta, dt.timedelta(microseconds=-1), -1e-06),
    ("days-timedelta", dt.timedelta, dt.timedelta(days=400, microseconds=7), 34560000.000007),
    ("str-enum", Color, Color.RED, "red"),
    ("str-valued-enum", Stage, Stage.TRAIN, "train"),
    ("optional-none", Optional[int], None, None),  # noqa: UP045
    ("optional-value", int | None, 4, 4),
    ("optional-datetime", dt.datetime | None, NAIVE, "2024-05-01T12:30:45.123456"),
    ("annotated", Annotated[int, "metadata"], 5, 5),
    ("set", set[int], {3, -1, 20}, [-1, 20, 3]),  # in the order of the items' JSON text
    ("frozenset", frozenset[str], frozenset({"b", "a"}), ["a", "b"]),
    ("empty-set", set[Color], set(), []),
    (
        "int-keyed-dict",
        dict[int, str],
        {2: "two", -10: "minus ten"},
        {"2": "two", "-10": "minus ten"},
    ),
    ("enum-keyed-dict", dict[Color, int], {Color.RED: 1}, {"red": 1}),
    ("literal-of-strings", Literal["train", "eval"], "eval", "eval"),
    (
        "list-of-optional-dataclass",
        list[Point | None],
        [Point(1.0, 2.0), None],
        [{"x": 1.0, "y": 2.0}, None],
    ),
    (
        "dict-of-list-of-datetime",
        dict[str, list[dt.datetime]],
        {"a": [NAIVE, AWARE], "b": []},
        {"a": ["2024-05-01T12:30:45.123456", "2024-05-01T12:30:00+05:30"], "b": []},
    ),
    (
        "nested-dataclass",
        Track,
        Track(name="t", points=[None, Point(0.0, -1.0)], tags={"seen": [NAIVE]}),
        {
            "name": "t",
            "points": [None, {"x": 0.0, "y": -1.0}],
            "tags": {"seen": ["2024-05-01T12:30:45.123456"]},
        },
    ),
    ("pydantic-model", Experiment, EXPERIMENT, EXPERIMENT_LITERAL),
    (
        "dataclass-with-model",
        Holder,
        Holder(experiment=EXPERIMENT, note=None),
        {"experiment": EXPERIMENT_LITERAL, "note": None},
    ),
    ("list-of-enums", list[Color], [Color.GREEN, Color.RED], ["green", "red"]),
    ("dict-of-bytes", dict[str, bytes | None], {"k": b"v", "n": None}, {"k": "dg==", "n": None}),
    ("list-of-lists-of-timedelta", list[list[dt.timedelta]], [[dt.timedelta(0)], []], [[0], []]),
]


@pytest.mark.parametrize(
    ("py_type", "value", "literal"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_round_trip(py_type: Any, value: Any, literal: Any) -> None:
    produced = to_literal(value, py_type)
    assert produced == literal
    assert type(produced) is type(literal)
    # What crosses the wire is JSON.
    wire = json.loads(json.dumps(produced))
    back = to_python(wire, py_type)
    assert back == value
    assert type(back) is type(value)
    # The control plane, which has no Python types, accepts and keeps the same literal.
    assert validate_literal(wire, literal_type_of(py_type), "inputs.x") == literal


def test_datetimes_keep_naive_and_aware_apart() -> None:
    naive = to_python(to_literal(NAIVE, dt.datetime), dt.datetime)
    aware = to_python(to_literal(AWARE, dt.datetime), dt.datetime)
    assert naive.tzinfo is None
    assert aware.utcoffset() == dt.timedelta(hours=5, minutes=30)
    assert (naive.isoformat(), aware.isoformat()) == (NAIVE.isoformat(), AWARE.isoformat())
    # "Z" is accepted from API clients and normalised to Python's form.
    assert validate_literal("2024-01-01T00:00:00Z", literal_type_of(dt.datetime)) == (
        "2024-01-01T00:00:00+00:00"
    )


def test_int_widens_to_float_but_bool_is_not_a_number() -> None:
    assert to_literal(2, float) == 2.0 and type(to_literal(2, float)) is float
    assert to_python(2, float) == 2.0 and type(to_python(2, float)) is float
    for value, py_type in [(True, int), (True, float), (1, bool), (1.5, int), ("1", int)]:
        with pytest.raises(LiteralValidationError):
            to_literal(value, py_type)
        with pytest.raises(LiteralValidationError):
            to_python(value, py_type)


def test_literal_types() -> None:
    assert literal_type_of(bytes) == LiteralType(kind=TypeKind.BYTES)
    assert literal_type_of(dt.datetime) == LiteralType(kind=TypeKind.DATETIME)
    assert literal_type_of(dt.timedelta) == LiteralType(kind=TypeKind.DURATION)
    assert literal_type_of(Color) == LiteralType(
        kind=TypeKind.ENUM, name=f"{__name__}.Color", values=["red", "green"]
    )
    optional = LiteralType(kind=TypeKind.OPTIONAL, item=LiteralType(kind=TypeKind.INTEGER))
    assert literal_type_of(Optional[int]) == optional  # noqa: UP045
    assert literal_type_of(int | None) == optional
    assert literal_type_of(None | int) == optional

    experiment = literal_type_of(Experiment)
    assert experiment.kind is TypeKind.STRUCT and experiment.name == f"{__name__}.Experiment"
    assert experiment.fields is not None
    assert list(experiment.fields) == [
        "name", "lr", "color", "window", "blobs", "best", "by_stage"
    ]  # fmt: skip
    assert experiment.fields["blobs"].describe() == "list[Blob]"
    assert experiment.fields["best"].describe() == "Optional[Point]"
    assert experiment.fields["by_stage"].describe() == "dict[str, Stage]"
    assert literal_type_of(Track).fields["tags"].describe() == "dict[str, list[datetime]]"  # type: ignore[index]


def test_describe_python_type() -> None:
    assert describe_python_type(Optional[list[Point]]) == "Optional[list[Point]]"  # noqa: UP045
    assert describe_python_type(dict[str, dt.datetime | None]) == "dict[str, Optional[datetime]]"
    assert describe_python_type(int | str) == "int | str"
    assert describe_python_type(tuple[int, ...]) == "tuple[int, ...]"
    assert describe_python_type(Experiment) == "Experiment"


def test_values_of_the_wrong_type_are_rejected_with_their_path() -> None:
    cases: list[tuple[Any, Any, str, str]] = [
        (b"x", str, "", "expected str, got bytes b'x'"),
        ("eA==", bytes, "", "expected bytes, got str 'eA=='"),
        (dt.date(2024, 1, 1), dt.datetime, "", "expected datetime, got date"),
        (3600, dt.timedelta, "", "expected timedelta, got int 3600"),
        ("red", Color, "", "expected a member of Color, got str 'red'"),
        (Stage.PREP, Color, "", "expected a member of Color, got Stage"),
        (None, int, "", "expected int, got null"),
        ([Point(1, 2), 3], list[Point | None], "[1]", "expected Point, got int 3"),
        ({1: "a"}, dict[str, str], "", "dict keys must be strings, got 1"),
        ({"a": [NAIVE, "x"]}, dict[str, list[dt.datetime]], "a[1]", "expected datetime"),
        (
            Holder(experiment=EXPERIMENT.model_copy(update={"window": 5}), note=None),
            Holder,
            "experiment.window",
            "expected timedelta, got int 5",
        ),
    ]
    for value, py_type, path, message in cases:
        with pytest.raises(LiteralValidationError) as info:
            to_literal(value, py_type)
        assert (info.value.path, message in info.value.reason) == (path, True), info.value


def test_literals_of_the_wrong_shape_are_rejected_with_their_path() -> None:
    literal = json.loads(json.dumps(EXPERIMENT_LITERAL))
    literal["blobs"][1]["at"] = "yesterday"
    with pytest.raises(LiteralValidationError) as info:
        to_python(literal, Experiment, "inputs.exp")
    assert info.value.path == "inputs.exp.blobs[1].at"
    assert "expected datetime (an ISO 8601 string), got str 'yesterday'" in info.value.reason

    literal = json.loads(json.dumps(EXPERIMENT_LITERAL))
    literal["color"] = "blue"
    with pytest.raises(LiteralValidationError, match=r"^color: expected Color \(one of 'red'"):
        to_python(literal, Experiment)

    literal = json.loads(json.dumps(EXPERIMENT_LITERAL))
    del literal["best"]
    with pytest.raises(LiteralValidationError, match="missing field\\(s\\) best for Experiment"):
        to_python(literal, Experiment)


def test_pydantic_validation_runs_when_a_model_is_built() -> None:
    literal = json.loads(json.dumps(EXPERIMENT_LITERAL))
    literal["lr"] = -1.0
    with pytest.raises(LiteralValidationError) as info:
        to_python(literal, Experiment, "inputs.exp")
    assert info.value.path == "inputs.exp.lr"
    assert "invalid Experiment: Input should be greater than 0" in info.value.reason


class Aliased(BaseModel):
    learning_rate: float = Field(alias="lr")


def test_pydantic_fields_travel_by_name_even_with_an_alias() -> None:
    model = Aliased(lr=0.5)
    assert to_literal(model, Aliased) == {"learning_rate": 0.5}
    assert to_python({"learning_rate": 0.5}, Aliased) == model


@dataclass
class Recursive:
    children: list[Recursive]


class Loose(BaseModel):
    value: Any


@pytest.mark.parametrize(
    ("py_type", "message"),
    [
        (
            Priority,
            "enum Priority has non-string values (LOW=1); only enums whose values are all str",
        ),
        (
            int | Annotated[int, "m"],
            "int | Annotated[int, 'm'] is ambiguous: two variants read int",
        ),
        (Point | list[Point | dt.date], "date is not supported; use datetime"),
        (Optional[int] | Annotated[str | None, "m"], "a variant may not be Optional"),  # noqa: UP045
        (Recursive, "recursive type Recursive is not supported"),
        (Loose, "field 'value' of Loose: Any says nothing about how to carry the value"),
        (dt.date, "date is not supported; use datetime"),
        (
            tuple[int, int],
            "tuple[int, int] is not supported; to return several values, return a NamedTuple",
        ),
        (set[list[str]], "set items must be scalars"),
        (set, "bare set has no element type"),
        (dict[float, str], "dict keys must be str, int or an enum of str values"),
        (Literal[1, 2], "a Literal of strings is (e.g. Literal['train', 'eval'])"),
        (list, "bare list has no element type"),
    ],
)
def test_unsupported_types_say_what_to_use(py_type: Any, message: str) -> None:
    with pytest.raises(UnsupportedTypeError) as info:
        literal_type_of(py_type)
    assert message in str(info.value)
    assert isinstance(info.value, TypeError)
