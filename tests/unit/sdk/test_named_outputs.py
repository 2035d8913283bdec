"""Several outputs through a `NamedTuple` return type: interface, wiring, local and runtime."""

from __future__ import annotations

import collections
import json
import subprocess
import sys
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from fleetflow import (
    LiteralValidationError,
    PromiseAttributeError,
    TaskDefinitionError,
    WorkflowCompileError,
    WorkflowOutputError,
    task,
    workflow,
)
from fleetflow.bundle import build_bundle
from fleetflow.interface import outputs_to_literals, outputs_to_python
from fleetflow.ir import NodeOutputBinding, TypeKind
from fleetflow.storage import LocalBlobStore, read_uri

HERE = Path(__file__)
MODULE = __name__
TYPED_BUNDLE = HERE.parent / "fixtures" / "typed_bundle"


def location_of(tag: str) -> str:
    lines = HERE.read_text().splitlines()
    matches = [i for i, line in enumerate(lines, start=1) if line.rstrip().endswith(f"# <- {tag}")]
    assert len(matches) == 1, f"tag {tag!r} must mark exactly one line, found {matches}"
    return f"{HERE}:{matches[0]}"


class Split(NamedTuple):
    train: list[float]
    test: list[float]


class Fit(NamedTuple):
    slope: float
    label: str


class Other(NamedTuple):
    first: list[float]
    second: list[float]


@task
def split(xs: list[float], every: int = 2) -> Split:
    return Split(
        train=[x for i, x in enumerate(xs) if i % every],
        test=[x for i, x in enumerate(xs) if not i % every],
    )


@task
def split_as_tuple(xs: list[float]) -> Split:
    return xs[1:], xs[:1]  # type: ignore[return-value]  # a plain tuple, by position


@task
def fit(train: list[float]) -> Fit:
    return Fit(slope=sum(train) / len(train), label=f"n={len(train)}")


@task
def total(values: list[float]) -> float:
    return sum(values)


@task
def shout(text: str) -> str:
    return text.upper()


@workflow
def unpacked(xs: list[float]) -> Fit:
    train, test = split(xs=xs)
    return fit(train=train)


@workflow
def by_attribute(xs: list[float]) -> float:
    parts = split(xs=xs)
    return total(values=parts.test)


@workflow
def both(xs: list[float]) -> Split:
    parts = split(xs=xs, every=3)
    return Split(train=parts.train, test=parts.test)


@workflow
def passthrough(xs: list[float]) -> Split:
    return split(xs=xs)


@workflow
def as_tuple(xs: list[float]) -> Fit:
    result = fit(train=xs)
    return result.slope, shout(text=result.label)  # type: ignore[return-value]


@workflow
def mixed(xs: list[float]) -> Fit:
    return Fit(slope=total(values=xs), label="constant")


@workflow
def positional(xs: list[float]) -> Split:
    return split_as_tuple(xs=xs)


# ----------------------------------------------------------------------------- interface


def test_interface_has_one_output_per_field_in_order() -> None:
    outputs = split.spec.interface.outputs
    assert [v.name for v in outputs] == ["train", "test"]
    assert [v.type.kind for v in outputs] == [TypeKind.LIST, TypeKind.LIST]
    assert [v.name for v in total.spec.interface.outputs] == ["o0"]

    spec = unpacked.spec
    assert [v.name for v in spec.interface.outputs] == ["slope", "label"]
    assert spec.nodes[1].inputs["train"] == NodeOutputBinding(node_id="n0-split", output="train")
    assert spec.outputs == {
        "slope": NodeOutputBinding(node_id="n1-fit", output="slope"),
        "label": NodeOutputBinding(node_id="n1-fit", output="label"),
    }
    assert by_attribute.spec.nodes[1].inputs["values"] == NodeOutputBinding(
        node_id="n0-split", output="test"
    )
    assert as_tuple.spec.outputs["label"] == NodeOutputBinding(node_id="n1-shout", output="o0")


def test_local_runs_return_the_named_tuple() -> None:
    xs = [1.0, 2.0, 3.0, 4.0]
    result = unpacked(xs=xs)
    assert result == Fit(slope=3.0, label="n=2") and type(result) is Fit
    assert by_attribute(xs=xs) == 4.0
    assert both(xs=[1.0, 2.0, 3.0, 4.0]) == Split(train=[2.0, 3.0], test=[1.0, 4.0])
    assert passthrough(xs=xs) == Split(train=[2.0, 4.0], test=[1.0, 3.0])
    assert as_tuple(xs=[1.0, 3.0]) == Fit(slope=2.0, label="N=2")
    assert mixed(xs=[1.0, 2]) == Fit(slope=3.0, label="constant")
    assert positional(xs=[1.0, 2.0]) == Split(train=[2.0], test=[1.0])


def test_outputs_convert_by_name_both_ways() -> None:
    literals = {"train": [1.0], "test": [2.0]}
    assert outputs_to_literals(Split([1.0], [2.0]), Split) == literals
    assert outputs_to_literals(([1], [2]), Split) == literals
    assert outputs_to_literals(5, int) == {"o0": 5}
    assert outputs_to_literals(None, None) == {}
    assert passthrough.outputs_to_python(literals) == Split(train=[1.0], test=[2.0])
    assert outputs_to_python({"o0": 5}, int) == 5

    with pytest.raises(LiteralValidationError, match=r"^outputs: expected Split \(2 outputs"):
        outputs_to_literals(([1.0],), Split)
    with pytest.raises(LiteralValidationError, match=r"^outputs\.test: expected list\[float\]"):
        outputs_to_literals(Split([1.0], "x"), Split)  # type: ignore[arg-type]
    with pytest.raises(WorkflowOutputError, match="outputs have no 'test' \\(got: train\\)"):
        passthrough.outputs_to_python({"train": [1.0]})


def test_a_task_returning_the_wrong_shape_fails_locally() -> None:
    @task
    def broken(xs: list[float]) -> Split:
        return [xs]  # type: ignore[return-value]

    @workflow
    def uses_broken(xs: list[float]) -> Split:
        return broken(xs=xs)

    wrong = r"task broken \(.*\) returned list \[\[1\.0\]\], expected Split"
    with pytest.raises(LiteralValidationError, match=wrong + r" \(2 outputs: train, test\)"):
        uses_broken(xs=[1.0])


# ------------------------------------------------------------------------ compile errors


def test_named_output_of_the_wrong_type_into_a_parameter() -> None:
    with pytest.raises(WorkflowCompileError) as info:

        @workflow
        def wrong_field(xs: list[float]) -> str:
            result = fit(train=xs)
            return shout(text=result.slope)  # <- wrong-field

    message = str(info.value)
    assert location_of("wrong-field") in message
    assert "parameter 'text' of task" in message
    assert "expects str, got float (output 'slope' of node 'n0-fit'" in message
    error = info.value
    assert (error.parameter, error.expected, error.actual) == ("text", "str", "float")


def test_unknown_output_name() -> None:
    with pytest.raises(PromiseAttributeError) as info:

        @workflow
        def typo(xs: list[float]) -> float:
            parts = split(xs=xs)
            return total(values=parts.validation)  # <- typo

    message = str(info.value)
    assert location_of("typo") in message
    assert "Split has no output 'validation'" in message
    assert "its outputs are: train, test" in message


def test_all_outputs_passed_as_one_argument() -> None:
    with pytest.raises(WorkflowCompileError) as info:

        @workflow
        def whole(xs: list[float]) -> float:
            return total(values=split(xs=xs))  # <- whole

    message = str(info.value)
    assert location_of("whole") in message
    assert "parameter 'values' of task" in message
    assert "expects list[float], got all the outputs of node 'n0-split'" in message
    assert "pass one output, e.g. `res.train`" in message


def test_unpacking_the_wrong_number_of_outputs() -> None:
    with pytest.raises(ValueError, match=r"not enough values to unpack \(expected 3, got 2\)"):

        @workflow
        def three(xs: list[float]) -> float:
            a, b, c = split(xs=xs)
            return total(values=a)


@pytest.mark.parametrize(
    ("body", "parts"),
    [
        ("single", ["declares `-> Split(train, test)` but returns a single value, list[float]"]),
        ("short", ["declares `-> Split(train, test)` with 2 outputs but returns a tuple of 1"]),
        ("renamed", ["returns Other(first, second); outputs are matched by name"]),
        ("swapped", ["output 'label' of the return value expects str, got float"]),
    ],
)
def test_workflow_return_that_does_not_match_its_named_tuple(body: str, parts: list[str]) -> None:
    with pytest.raises(WorkflowCompileError) as info:
        if body == "single":

            @workflow
            def single(xs: list[float]) -> Split:
                return xs  # type: ignore[return-value]

        elif body == "short":

            @workflow
            def short(xs: list[float]) -> Split:
                parts = split(xs=xs)
                return (parts.train,)  # type: ignore[return-value]

        elif body == "renamed":

            @workflow
            def renamed(xs: list[float]) -> Split:
                parts = split(xs=xs)
                return Other(first=parts.train, second=parts.test)  # type: ignore[return-value]

        else:

            @workflow
            def swapped(xs: list[float]) -> Fit:
                result = fit(train=xs)
                return Fit(slope=result.slope, label=result.slope)

    message = str(info.value)
    assert f"workflow '{MODULE}." in message
    for part in parts:
        assert part in message, message


Untyped = collections.namedtuple("Untyped", ["a", "b"])  # no annotations: not an interface


class HasTuple(NamedTuple):
    pair: tuple[int, int]


def test_named_tuples_are_checked_at_decoration() -> None:
    with pytest.raises(TaskDefinitionError, match="field\\(s\\) a, b without a type"):

        @task
        def untyped() -> Untyped:  # type: ignore[valid-type]
            return Untyped(1, 2)

    with pytest.raises(TaskDefinitionError) as info:

        @task
        def bad_field() -> HasTuple:
            return HasTuple((1, 2))

    assert "output 'pair' of the return type HasTuple has unsupported type tuple[int, int]" in str(
        info.value
    )

    with pytest.raises(TaskDefinitionError, match="NamedTuple Split is only supported as a return"):

        @task
        def takes_split(parts: Split) -> int:
            return len(parts)


# -------------------------------------------------------------------------- tuple outputs
# `-> tuple[A, B]` declares outputs o0, o1, ... (as in Flyte): a NamedTuple made for it.


@task
def stats(xs: list[float]) -> tuple[float, int]:
    return sum(xs) / len(xs), len(xs)


@task
def describe(mean: float, count: int) -> str:
    return f"{count} values, mean {mean}"


@workflow
def described(xs: list[float]) -> str:
    mean, count = stats(xs=xs)
    return describe(mean=mean, count=count)


@workflow
def stats_of(xs: list[float]) -> tuple[float, int]:
    result = stats(xs=xs)
    return result.o0, result.o1


def test_a_tuple_return_type_declares_outputs_o0_o1() -> None:
    assert [(v.name, v.type.kind) for v in stats.spec.interface.outputs] == [
        ("o0", TypeKind.FLOAT),
        ("o1", TypeKind.INTEGER),
    ]
    node_inputs = described.spec.nodes[1].inputs
    assert node_inputs["count"] == NodeOutputBinding(node_id="n0-stats", output="o1")
    assert [v.name for v in stats_of.spec.interface.outputs] == ["o0", "o1"]

    assert described(xs=[1.0, 3.0]) == "2 values, mean 2.0"
    assert stats_of(xs=[1.0, 3.0]) == (2.0, 2)
    assert outputs_to_literals((2.0, 2), stats.output_type) == {"o0": 2.0, "o1": 2}


# ------------------------------------------------------------------------------ runtime


@pytest.mark.parametrize(
    ("function", "expected"),
    [
        ("split", {"evens": [2, 4], "odds": [1, 3, 5]}),  # a NamedTuple: by field, in order
        ("min_max", {"o0": 1, "o1": 5}),  # a tuple return type: o0, o1
    ],
)
def test_runtime_writes_every_output_by_name(
    tmp_path: Path, function: str, expected: dict[str, Any]
) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    digest, data = build_bundle(TYPED_BUNDLE)
    bundle_uri = store.put(f"bundles/{digest}.tar.gz", data)
    inputs_uri = store.put("e/n0/inputs.json", json.dumps({"xs": [1, 2, 3, 4, 5]}).encode())
    outputs_uri = store.uri("e/n0/outputs.json")
    proc = subprocess.run(
        [sys.executable, "-m", "fleetflow.runtime"]
        + ["--bundle-uri", bundle_uri, "--inputs-uri", inputs_uri, "--outputs-uri", outputs_uri]
        + ["--module", "typed_tasks", "--function", function]
        + ["--result-file", str(tmp_path / "result.json"), "--workdir", str(tmp_path / "code")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    outputs: dict[str, Any] = json.loads(read_uri(outputs_uri))
    assert list(outputs) == list(expected)
    assert outputs == expected
