"""The richer types in workflows: Optional misuse is a compile error, valid wiring runs."""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydantic import BaseModel

from fleetflow import (
    LiteralValidationError,
    WorkflowCompileError,
    WorkflowInputError,
    task,
    workflow,
)

HERE = Path(__file__)
MODULE = __name__


def location_of(tag: str) -> str:
    lines = HERE.read_text().splitlines()
    matches = [i for i, line in enumerate(lines, start=1) if line.rstrip().endswith(f"# <- {tag}")]
    assert len(matches) == 1, f"tag {tag!r} must mark exactly one line, found {matches}"
    return f"{HERE}:{matches[0]}"


class Color(enum.StrEnum):
    RED = "red"
    GREEN = "green"


@dataclass
class Score:
    value: float


class Settings(BaseModel):
    color: Color
    start: dt.datetime
    every: dt.timedelta
    seed: bytes
    limit: int | None = None


@task
def maybe_score(threshold: float) -> Score | None:
    return Score(value=threshold) if threshold > 0 else None


@task
def maybe_int(n: int) -> int | None:
    return n if n > 0 else None


@task
def needs_score(score: Score) -> float:
    return score.value


@task
def needs_int(n: int) -> int:
    return n


@task
def takes_optional(n: float | None = None) -> str:
    return "none" if n is None else f"{n:.1f}"


@task
def or_default(score: Score | None, default: float) -> float:
    return default if score is None else score.value


@task
def describe(settings: Settings, tags: list[Color | None]) -> str:
    tags_text = ",".join("-" if t is None else t.value for t in tags)
    return (
        f"{settings.color.value} {settings.start.isoformat()} {settings.every.total_seconds()} "
        f"{settings.seed.hex()} {settings.limit} {tags_text}"
    )


def test_optional_output_into_a_required_parameter() -> None:
    with pytest.raises(WorkflowCompileError) as info:

        @workflow
        def unhandled(threshold: float) -> float:
            score = maybe_score(threshold=threshold)
            return needs_score(score=score)  # <- optional-into-required

    message = str(info.value)
    assert location_of("optional-into-required") in message
    assert f"task '{MODULE}.needs_score'" in message
    assert "parameter 'score'" in message
    assert "expects Score, got Optional[Score] (output of node 'n0-maybe_score'" in message
    assert "hint: the value may be None, which Score does not accept: handle None" in message
    error = info.value
    assert (error.parameter, error.expected, error.actual) == ("score", "Score", "Optional[Score]")
    assert error.hint is not None and "Optional[Score]" in error.hint


def test_optional_workflow_input_into_a_required_parameter() -> None:
    with pytest.raises(WorkflowCompileError) as info:

        @workflow
        def optional_input(n: int | None = None) -> int:
            return needs_int(n=n)  # <- optional-input

    message = str(info.value)
    assert location_of("optional-input") in message
    assert "parameter 'n'" in message and "expects int, got Optional[int] (workflow input 'n')" in (
        message
    )


def test_optional_output_returned_as_a_required_workflow_output() -> None:
    with pytest.raises(WorkflowCompileError) as info:

        @workflow
        def returns_optional(n: int) -> int:
            return maybe_int(n=n)

    message = str(info.value)
    assert "return value expects int, got Optional[int]" in message
    assert "hint: the value may be None" in message


def test_none_constant_into_a_required_parameter() -> None:
    with pytest.raises(WorkflowCompileError) as info:

        @workflow
        def none_constant() -> int:
            return needs_int(n=None)  # <- none-constant

    message = str(info.value)
    assert location_of("none-constant") in message
    assert "parameter 'n'" in message and "expects int, got constant NoneType None" in message


def test_wrong_enum_and_optional_element_types() -> None:
    with pytest.raises(WorkflowCompileError, match="expects list\\[Optional\\[Color\\]\\], got"):

        @workflow
        def wrong_list(settings: Settings, names: list[str]) -> str:
            return describe(settings=settings, tags=names)

    with pytest.raises(WorkflowCompileError, match="parameter 'tags'.*got constant list"):

        @workflow
        def string_for_enum(settings: Settings) -> str:
            return describe(settings=settings, tags=["red"])


@workflow
def handled(threshold: float, fallback: float = 0.5) -> float:
    return or_default(score=maybe_score(threshold=threshold), default=fallback)


@workflow
def widened(n: int) -> str:
    return takes_optional(n=needs_int(n=n))


@workflow
def defaulted() -> str:
    return takes_optional()


@workflow
def configured(settings: Settings, tags: list[Color | None]) -> str:
    return describe(settings=settings, tags=tags)


def test_valid_optional_wiring_runs_locally() -> None:
    assert handled(threshold=2.0) == 2.0
    assert handled(threshold=-1.0) == 0.5
    assert widened(n=3) == "3.0"
    assert defaulted() == "none"


SETTINGS = Settings(
    color=Color.GREEN,
    start=dt.datetime(2024, 5, 1, 8, 0, tzinfo=dt.UTC),
    every=dt.timedelta(minutes=5),
    seed=b"\x01\x02",
)


def test_rich_values_run_locally_and_come_from_the_cli() -> None:
    expected = "green 2024-05-01T08:00:00+00:00 300.0 0102 None red,-"
    assert configured(settings=SETTINGS, tags=[Color.RED, None]) == expected

    parsed = configured.parse_cli_inputs(
        {
            "settings": '{"color": "green", "start": "2024-05-01T08:00:00Z", "every": 300, '
            '"seed": "AQI=", "limit": null}',
            "tags": '["red", null]',
        }
    )
    assert parsed == {"settings": SETTINGS, "tags": [Color.RED, None]}
    assert configured(**parsed) == expected

    with pytest.raises(WorkflowInputError, match="input 'tags': expected list\\[Optional\\[Color"):
        configured.parse_cli_inputs({"tags": '["blue"]'})
    with pytest.raises(LiteralValidationError, match=r"^inputs\.tags\[0\]: expected a member"):
        configured(settings=SETTINGS, tags=["red"])  # type: ignore[list-item]


@task
def scalar_echo(
    color: Color, at: dt.datetime, every: dt.timedelta, raw: bytes, limit: int | None
) -> str:
    return f"{color.value} {at.isoformat()} {every.total_seconds()} {raw!r} {limit}"


@workflow
def scalars(
    color: Color, at: dt.datetime, every: dt.timedelta, raw: bytes, limit: int | None = 3
) -> str:
    return scalar_echo(color=color, at=at, every=every, raw=raw, limit=limit)


def test_cli_text_for_enum_datetime_duration_bytes_and_optional() -> None:
    parsed = scalars.parse_cli_inputs(
        {"color": "red", "at": "2024-05-01T08:00", "every": "90", "raw": "aGk=", "limit": "none"}
    )
    assert parsed == {
        "color": Color.RED,
        "at": dt.datetime(2024, 5, 1, 8, 0),
        "every": dt.timedelta(seconds=90),
        "raw": b"hi",
        "limit": None,
    }
    assert scalars(**parsed) == "red 2024-05-01T08:00:00 90.0 b'hi' None"
    assert scalars.parse_cli_inputs({"limit": "7"}) == {"limit": 7}
    for raw, message in [
        ({"color": "blue"}, "input 'color': expected Color, got 'blue'"),
        ({"at": "noon"}, "input 'at': expected datetime, got 'noon'"),
        ({"every": "1h"}, "input 'every': expected timedelta, got '1h' (seconds)"),
        ({"limit": "x"}, "input 'limit': expected int, got 'x'"),
    ]:
        with pytest.raises(WorkflowInputError) as info:
            scalars.parse_cli_inputs(raw)
        assert str(info.value).startswith(message), info.value
