"""Property tests of the type system (hypothesis): every supported type round-trips through
its JSON literal, and the workflow compiler accepts a binding exactly when its types are
assignable, so it never accepts a mis-typed one."""

from __future__ import annotations

import datetime as dt
import enum
import json
import math
from dataclasses import dataclass
from typing import Any, Literal, Optional, Union

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fleetflow import task, workflow
from fleetflow.errors import FleetflowError, UnsupportedTypeError
from fleetflow.types import is_assignable, literal_type_of, to_literal, to_python, validate_literal
from tests.hardening.world import examples


class Color(enum.StrEnum):
    RED = "red"
    GREEN = "green"


@dataclass
class Point:
    x: float
    label: str


# A type and a strategy for its values, built recursively.
TypeAndValues = tuple[Any, st.SearchStrategy[Any]]

finite_floats = st.floats(allow_nan=False, allow_infinity=False)
aware_datetimes = st.datetimes(
    min_value=dt.datetime(1, 1, 2), max_value=dt.datetime(9999, 12, 30), timezones=st.just(dt.UTC)
)
# Durations are exact to the microsecond for about a century (see fleetflow/types.py).
CENTURY = dt.timedelta(days=30_000)
SCALARS: list[TypeAndValues] = [
    (int, st.integers(min_value=-(2**63), max_value=2**63 - 1)),
    (float, finite_floats),
    (str, st.text()),
    (bool, st.booleans()),
    (bytes, st.binary(max_size=64)),
    (dt.datetime, aware_datetimes | st.datetimes(min_value=dt.datetime(1, 1, 2))),
    (
        dt.timedelta,
        st.timedeltas(min_value=-dt.timedelta(days=30_000), max_value=dt.timedelta(days=30_000)),
    ),
    (Color, st.sampled_from(Color)),
    (Point, st.builds(Point, x=finite_floats, label=st.text(max_size=8))),
]


def _optional(inner: TypeAndValues) -> TypeAndValues:
    return Optional[inner[0]], st.none() | inner[1]  # noqa: UP045


def _list(inner: TypeAndValues) -> TypeAndValues:
    return list[inner[0]], st.lists(inner[1], max_size=4)  # type: ignore[valid-type]


def _dict(inner: TypeAndValues) -> TypeAndValues:
    return dict[str, inner[0]], st.dictionaries(st.text(max_size=6), inner[1], max_size=4)  # type: ignore[valid-type]


# Keys beside str: JSON keys are strings, so these travel as an int's decimal form and an
# enum member's value.
KEYS: list[TypeAndValues] = [
    (int, st.integers(min_value=-(2**63), max_value=2**63 - 1)),
    (Color, st.sampled_from(Color)),
]


def _keyed_dict(keys: TypeAndValues, inner: TypeAndValues) -> TypeAndValues:
    return dict[keys[0], inner[0]], st.dictionaries(keys[1], inner[1], max_size=4)  # type: ignore[valid-type]


# Set items are the hashable scalars (not a dataclass, a list or a dict).
SET_ITEMS = [pair for pair in SCALARS if pair[0] is not Point]


def _set(item: TypeAndValues, kind: Any) -> TypeAndValues:
    return kind[item[0]], st.frozensets(item[1], max_size=4).map(kind)


def _supported(py_type: Any) -> bool:
    """Whether the type system takes `py_type` (a union of two variants that read alike, such as
    `set[int] | frozenset[int]`, is refused)."""
    try:
        literal_type_of(py_type)
    except UnsupportedTypeError:
        return False
    return True


def _union(first: TypeAndValues, second: TypeAndValues) -> TypeAndValues:
    # Union[] flattens nested unions and Optionals and drops duplicates, as `A | B` does.
    return Union[first[0], second[0]], first[1] | second[1]  # noqa: UP007


types_and_values: st.SearchStrategy[TypeAndValues] = st.recursive(
    st.sampled_from(SCALARS)
    | st.builds(_set, st.sampled_from(SET_ITEMS), st.sampled_from([set, frozenset]))
    | st.just((Literal["train", "eval"], st.sampled_from(["train", "eval"]))),
    lambda inner: st.one_of(
        inner.map(_optional),
        inner.map(_list),
        inner.map(_dict),
        st.builds(_keyed_dict, st.sampled_from(KEYS), inner),
        st.builds(_union, inner, inner).filter(lambda pair: _supported(pair[0])),
    ),
    max_leaves=4,
)


@st.composite
def typed_values(draw: st.DrawFn) -> tuple[Any, Any]:
    py_type, values = draw(types_and_values)
    return py_type, draw(values)


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    return bool(a == b) and type(a) is type(b)


def _same(a: Any, b: Any) -> bool:
    """Equal, and of the same types all the way down (a union must not turn 3 into 3.0)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, set | frozenset):  # the items are scalars: equal sets of equal types
        return {(type(x), x) for x in a} == {(type(x), x) for x in b}
    return bool(a == b)


@settings(max_examples=examples(200), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(typed=typed_values())
def test_every_supported_type_round_trips_through_json(typed: tuple[Any, Any]) -> None:
    py_type, value = typed
    literal_type = literal_type_of(py_type)
    literal = to_literal(value, py_type)
    over_the_wire = json.loads(json.dumps(literal, allow_nan=False))
    # What the control plane checks: it keeps the literal as it is.
    assert validate_literal(over_the_wire, literal_type) == over_the_wire or _has_float(literal)
    back = to_python(over_the_wire, py_type)
    assert _same(back, value), (py_type, value, literal, back)
    # The literal type itself is JSON and survives a round trip.
    assert type(literal_type).model_validate_json(literal_type.model_dump_json()) == literal_type


def _has_float(literal: Any) -> bool:
    """Whether a literal holds a float (one that is whole reads back from JSON as written, but
    `validate_literal` of a float type returns every number as a float)."""
    if isinstance(literal, list):
        return any(_has_float(v) for v in literal)
    if isinstance(literal, dict):
        return any(_has_float(v) for v in literal.values())
    return isinstance(literal, float)


@settings(max_examples=examples(200), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(source=typed_values(), other=types_and_values, position=st.booleans())
def test_a_value_bound_to_a_union_that_takes_its_type_reads_back_as_itself(
    source: tuple[Any, Any], other: TypeAndValues, position: bool
) -> None:
    """The plain literal an `A` output delivers to an `A | B` parameter (no variant recorded)
    is read as the value it was, whenever the compiler accepts the binding."""
    py_type, value = source
    target = Union[py_type, other[0]] if position else Union[other[0], py_type]  # noqa: UP007
    if not _supported(target) or not is_assignable(
        literal_type_of(py_type), literal_type_of(target)
    ):
        return
    literal = json.loads(json.dumps(to_literal(value, py_type), allow_nan=False))
    validate_literal(literal, literal_type_of(target))
    back = to_python(literal, target)
    assert back == value, (py_type, target, value, literal, back)


_names = iter(range(10**9))


def _compiles(source: Any, target: Any) -> bool:
    """Compile a workflow binding a task's `source` output to a task's `target` input."""
    n = next(_names)

    def produce() -> Any: ...

    def consume(x: Any) -> None: ...

    def wf() -> None:
        consume_task(x=produce_task())

    produce.__annotations__ = {"return": source}
    consume.__annotations__ = {"x": target, "return": None}
    wf.__annotations__ = {"return": None}
    for fn, name in ((produce, "produce"), (consume, "consume"), (wf, "wf")):
        fn.__name__ = fn.__qualname__ = f"{name}_{n}"
    produce_task = task(produce)
    consume_task = task(consume)
    try:
        workflow(wf)
    except FleetflowError:
        return False
    return True


@settings(max_examples=examples(100), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(source=types_and_values, target=types_and_values)
def test_the_compiler_accepts_a_binding_exactly_when_its_types_are_assignable(
    source: TypeAndValues, target: TypeAndValues
) -> None:
    assignable = is_assignable(literal_type_of(source[0]), literal_type_of(target[0]))
    assert _compiles(source[0], target[0]) is assignable, (source[0], target[0])


@pytest.mark.parametrize(
    ("source", "target"),
    [
        (float, int),
        (Optional[int], int),  # noqa: UP045
        (list[int], int),
        (dict[str, int], list[int]),
        (str, Color),
        (dict[int, str], dict[str, str]),  # the keys differ
        (set[int], list[int]),
        (Literal["a", "b"], str),
        (Literal["a", "b"], Literal["a", "b", "c"]),
        (int, float),  # allowed: widening
        (int, int | str),  # allowed: read as the int variant
        (int | str, str | int | float),  # allowed: every variant is one of the target's
        (Point, Point | Color),  # allowed
        (int | str, int),
        (str, str | Color),  # a plain str could be read as a Color
        (Optional[int], int | str),  # noqa: UP045
    ],
)
def test_known_bindings(source: Any, target: Any) -> None:
    allowed = [
        (int, float),
        (int, int | str),
        (int | str, str | int | float),
        (Point, Point | Color),
    ]
    assert _compiles(source, target) is ((source, target) in allowed)
