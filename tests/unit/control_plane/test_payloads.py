"""The workflows' payload converter decodes as Temporal's own does, resolving hints once."""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

import pytest
from temporalio.converter import DataConverter

from control_plane.orchestration import workflows
from control_plane.orchestration.payloads import DATA_CONVERTER, DataclassValues
from control_plane.orchestration.workflows import (
    AttemptFinished,
    AttemptStart,
    AttemptStarts,
    ChunkResult,
    ExecutionPlan,
    MapChunkInput,
    PlanNode,
    StartAttemptsInput,
    UnitStart,
    UnitTries,
)

OURS = DATA_CONVERTER.payload_converter
TEMPORALS = DataConverter.default.payload_converter

SAMPLES: list[object] = [
    AttemptStarts(
        [
            AttemptStart("a1"),
            AttemptStart("a2", cached=True),
            AttemptStart("a3", finished=AttemptFinished("a3", "FAILED", "boom")),
        ]
    ),
    StartAttemptsInput("e1", [UnitStart("n", 3, 2), UnitStart("m", -1, 1)], "chunk-1"),
    MapChunkInput("e1", PlanNode("n", ["up"], 2, is_map=True, concurrency=4), 0, 0, 100, 5),
    ExecutionPlan([PlanNode("a", [], 0), PlanNode("b", ["a"], 1, min_success_ratio=0.5)], 10),
    UnitTries("n", 7, 2, failures=1, running=True),
    ChunkResult(),
    AttemptFinished("a1", "SUCCEEDED"),
]


@pytest.mark.parametrize("value", SAMPLES, ids=lambda v: type(v).__name__)
def test_it_decodes_what_temporals_converter_decodes(value: object) -> None:
    payloads = TEMPORALS.to_payloads([value])
    # The same JSON on the wire: histories recorded before replay under it.
    assert OURS.to_payloads([value]) == payloads
    ours = OURS.from_payloads(payloads, [type(value)])[0]
    assert ours == TEMPORALS.from_payloads(payloads, [type(value)])[0] == value


def test_every_workflow_dataclass_round_trips_with_plain_values() -> None:
    classes = [
        c
        for c in vars(workflows).values()
        if isinstance(c, type)
        and dataclasses.is_dataclass(c)
        and c.__module__ == workflows.__name__
    ]
    assert len(classes) > 15
    for cls in classes:
        value = _made_up(cls)
        payloads = TEMPORALS.to_payloads([value])
        assert OURS.from_payloads(payloads, [cls])[0] == value, cls.__name__


def _made_up(cls: type) -> Any:
    """An instance of `cls` with every field set to something other than its default."""
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for field in dataclasses.fields(cls):
        values[field.name] = _value_of(hints[field.name], field.name)
    return cls(**values)


def _value_of(hint: Any, name: str) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is str:
        return f"{name}-x"
    if hint is int:
        return 7
    if hint is float:
        return 0.25
    if hint is bool:
        return True
    if origin is list:
        return [_value_of(args[0], name)]
    if origin is dict:
        return {_value_of(args[0], name): _value_of(args[1], name)}
    if type(None) in args:
        return _value_of(next(a for a in args if a is not type(None)), name)
    if dataclasses.is_dataclass(hint):
        return _made_up(typing.cast(type, hint))
    raise AssertionError(f"no sample value for {hint!r}")


def test_unknown_keys_are_ignored_and_missing_defaults_apply() -> None:
    decoded = DataclassValues().to_typed_value(
        AttemptFinished, {"attempt_id": "a", "status": "LOST", "from_the_future": 1}
    )
    assert decoded == AttemptFinished("a", "LOST", "")


def test_bad_values_are_refused_as_temporals_are() -> None:
    converter = DataclassValues()
    with pytest.raises(TypeError, match="attempt_number"):
        converter.to_typed_value(UnitStart, {"node_id": "n", "map_index": 0, "attempt_number": "1"})
    with pytest.raises(TypeError):  # a required field missing
        converter.to_typed_value(AttemptFinished, {"attempt_id": "a"})
    # Not a dataclass, or not an object: Temporal's conversion decides (and refuses).
    assert converter.to_typed_value(str, {"a": 1}) is DataclassValues.Unhandled
    assert converter.to_typed_value(AttemptFinished, ["a"]) is DataclassValues.Unhandled
    with pytest.raises(TypeError):
        OURS.from_payloads(TEMPORALS.to_payloads([["a"]]), [AttemptFinished])


@dataclasses.dataclass
class _SetAfter:
    name: str
    seen: int = dataclasses.field(init=False, default=0)


def test_a_dataclass_with_a_field_set_after_construction_is_left_to_temporal() -> None:
    assert DataclassValues().to_typed_value(_SetAfter, {"name": "a"}) is DataclassValues.Unhandled
    payloads = TEMPORALS.to_payloads([_SetAfter("a")])
    assert OURS.from_payloads(payloads, [_SetAfter])[0] == _SetAfter("a")


def test_each_class_hints_are_resolved_once(monkeypatch: pytest.MonkeyPatch) -> None:
    resolved: list[object] = []
    real = typing.get_type_hints

    def counting(obj: Any, *args: Any, **kwargs: Any) -> Any:
        resolved.append(obj)
        return real(obj, *args, **kwargs)

    monkeypatch.setattr(typing, "get_type_hints", counting)
    converter = DataclassValues()
    for i in range(50):
        raw = {"starts": [{"attempt_id": f"a{i}", "cached": False, "finished": None}]}
        assert converter.to_typed_value(AttemptStarts, raw) == AttemptStarts(
            [AttemptStart(f"a{i}")]
        )
    assert sorted(c.__name__ for c in resolved) == ["AttemptStart", "AttemptStarts"]  # type: ignore[attr-defined]
