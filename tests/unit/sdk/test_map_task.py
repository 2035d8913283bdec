"""`map_task`: the mapping rule, the map node it compiles to, local runs (order, concurrency
bound, retries) and the compile errors, each located at the offending line."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import pytest

from fleetflow import (
    DefinitionError,
    InvalidOptionError,
    LiteralValidationError,
    MapInputError,
    WorkflowCompileError,
    map_task,
    task,
    workflow,
)
from fleetflow.ir import LiteralBinding, MapSpec

HERE = Path(__file__)
MODULE = __name__


def location_of(tag: str) -> str:
    lines = HERE.read_text().splitlines()
    matches = [i for i, line in enumerate(lines, start=1) if line.rstrip().endswith(f"# <- {tag}")]
    assert len(matches) == 1, f"tag {tag!r} must mark exactly one line, found {matches}"
    return f"{HERE}:{matches[0]}"


@dataclass
class Point:
    x: float
    y: float


class MinMax(NamedTuple):
    low: int
    high: int


@task
def numbers(n: int) -> list[int]:
    return list(range(n))


@task(retries=1)
def square(x: int, offset: int = 0) -> int:
    return x * x + offset


@task
def total(values: list[int]) -> int:
    return sum(values)


@task
def scale(point: Point, factor: float) -> Point:
    return Point(x=point.x * factor, y=point.y * factor)


@task
def add(a: int, b: int) -> int:
    return a + b


@task
def bounds(values: list[int]) -> MinMax:
    return MinMax(low=min(values), high=max(values))


@task
def words(n: int) -> list[str]:
    return [str(i) for i in range(n)]


@task
def spread(low: list[int], high: list[int]) -> list[int]:
    return [h - lo for lo, h in zip(low, high, strict=True)]


# The mapping rule and the map node -------------------------------------------------------------


@workflow
def squares(n: int = 5, offset: int = 0) -> int:
    return total(values=map_task(square, concurrency=2)(x=numbers(n=n), offset=offset))


def test_map_compiles_to_a_map_node_whose_output_is_a_list() -> None:
    first, mapped, summed = squares.spec.nodes
    assert mapped.map == MapSpec(over=["x"], concurrency=2)
    assert first.map is None and summed.map is None
    assert mapped.task == f"{MODULE}.square" and mapped.upstream == [first.id]
    assert summed.upstream == [mapped.id]
    assert squares(n=5, offset=1) == sum(x * x + 1 for x in range(5))


def test_a_list_constant_is_mapped_and_a_plain_constant_is_passed_whole() -> None:
    @workflow
    def constants(k: int = 10) -> list[int]:
        return map_task(add)(a=[1, 2, 3], b=k)

    (node,) = constants.spec.nodes
    assert node.map == MapSpec(over=["a"])
    assert node.inputs["a"] == LiteralBinding(value=[1, 2, 3])
    assert constants() == [11, 12, 13]
    assert constants(k=0) == [1, 2, 3]


def test_a_list_parameter_takes_a_list_whole_and_a_list_of_lists_mapped() -> None:
    @workflow
    def sums(chunks: list[list[int]]) -> list[int]:
        return map_task(total)(values=chunks)

    assert sums.spec.nodes[0].map == MapSpec(over=["values"])
    assert sums(chunks=[[1, 2], [], [3]]) == [3, 0, 3]

    @workflow
    def nested_constant() -> list[int]:
        # [[1, 2], [3]] is a list[list[int]]: mapped over `values: list[int]`.
        return map_task(total)(values=[[1, 2], [3]])

    assert nested_constant() == [3, 3]


def test_several_lists_are_mapped_together_element_by_element() -> None:
    @workflow
    def pairs(xs: list[int], ys: list[int]) -> list[int]:
        return map_task(add)(a=xs, b=ys)

    assert pairs.spec.nodes[0].map == MapSpec(over=["a", "b"])
    assert pairs(xs=[1, 2, 3], ys=[10, 20, 30]) == [11, 22, 33]
    with pytest.raises(MapInputError, match=r"'a' has 3, 'b' has 2") as info:
        pairs(xs=[1, 2, 3], ys=[10, 20])
    assert "map node 'n0-add'" in str(info.value)


def test_structs_cross_map_elements_as_literals() -> None:
    @workflow
    def scaled(points: list[Point], factor: float = 2.0) -> list[Point]:
        return map_task(scale)(point=points, factor=factor)

    given = [Point(1, 2), Point(3, 4)]
    result = scaled(points=given)
    assert result == [Point(2, 4), Point(6, 8)]
    assert all(type(p) is Point for p in result)


def test_named_tuple_outputs_become_one_list_per_field() -> None:
    @workflow
    def ranges(groups: list[list[int]]) -> list[int]:
        res = map_task(bounds)(values=groups)
        return spread(low=res.low, high=res.high)

    node = ranges.spec.nodes[0]
    assert node.map == MapSpec(over=["values"])
    assert ranges(groups=[[1, 5], [2, 2, 9]]) == [4, 7]


def test_an_empty_list_maps_to_empty_outputs() -> None:
    assert squares(n=0) == 0


# Local runs: order, concurrency, retries -------------------------------------------------------


class Gauge:
    """How many calls run at the same time, at most."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.active = 0
        self.peak = 0

    def __enter__(self) -> None:
        with self.lock:
            self.active += 1
            self.peak = max(self.peak, self.active)

    def __exit__(self, *_: object) -> None:
        with self.lock:
            self.active -= 1


GAUGE = Gauge()
PAIRS = threading.Barrier(2, timeout=10)


@task
def paired(x: int) -> int:
    """Runs only when a second element runs alongside (the barrier waits for two)."""
    with GAUGE:
        PAIRS.wait()
        return x


def test_local_map_runs_at_most_concurrency_elements_at_once() -> None:
    @workflow
    def bounded(xs: list[int]) -> list[int]:
        return map_task(paired, concurrency=2)(x=xs)

    GAUGE.peak = 0
    # Every element waits for a partner, so two run at once; a third never joins them.
    assert bounded(xs=list(range(8))) == list(range(8))
    assert GAUGE.peak == 2


def test_local_map_keeps_element_order_whatever_the_finishing_order() -> None:
    release = [threading.Event() for _ in range(6)]

    @task
    def backwards(i: int) -> int:
        # Element i finishes only after element i + 1 did: the last finishes first.
        if i + 1 < len(release):
            assert release[i + 1].wait(timeout=10)
        release[i].set()
        return i * 10

    assert map_task(backwards, concurrency=6)(i=list(range(6))) == [0, 10, 20, 30, 40, 50]


CALLS: dict[str, int] = {}


@task(retries=2)
def flaky(x: int) -> int:
    CALLS["flaky"] = CALLS.get("flaky", 0) + 1
    if CALLS["flaky"] < 3:
        raise ConnectionError(f"attempt {CALLS['flaky']} failed")
    return x + 1


@task(retries=1)
def broken(x: int) -> int:
    CALLS["broken"] = CALLS.get("broken", 0) + 1
    raise ValueError(f"cannot handle {x}")


def test_local_runs_retry_a_failing_task_up_to_its_retries() -> None:
    @workflow
    def retried(x: int) -> int:
        return flaky(x=x)

    CALLS.clear()
    assert retried(x=1) == 2
    assert CALLS["flaky"] == 3


def test_a_task_failing_every_retry_raises_its_last_error() -> None:
    @workflow
    def doomed(x: int) -> int:
        return broken(x=x)

    CALLS.clear()
    with pytest.raises(ValueError, match="cannot handle 4") as info:
        doomed(x=4)
    assert CALLS["broken"] == 2
    notes = "\n".join(info.value.__notes__)
    assert f"task '{MODULE}.broken' failed all 2 attempts" in notes
    assert "in node 'n0-broken'" in notes


def test_a_failing_element_is_named_and_retried() -> None:
    CALLS.clear()
    with pytest.raises(ValueError, match="cannot handle") as info:
        map_task(broken, concurrency=1)(x=[7])
    assert CALLS["broken"] == 2
    assert "in element 0 of map_task" in "\n".join(info.value.__notes__)


# Outside a workflow --------------------------------------------------------------------------


def test_called_outside_a_workflow_it_runs_and_returns_the_list() -> None:
    assert map_task(square)(x=[1, 2, 3], offset=1) == [2, 5, 10]
    assert map_task(square, concurrency=1)(x=(1, 2)) == [1, 4]
    assert map_task(bounds)(values=[[3, 1], [2]]) == [MinMax(1, 3), MinMax(2, 2)]
    points = map_task(scale)(point=[Point(1, 1)], factor=3)
    assert points == [Point(3.0, 3.0)] and isinstance(points[0].x, float)


def test_outside_a_workflow_the_arguments_are_checked() -> None:
    with pytest.raises(MapInputError, match="no argument to map over"):
        map_task(square)(x=1, offset=2)
    with pytest.raises(MapInputError, match="'a' has 2, 'b' has 1"):
        map_task(add)(a=[1, 2], b=[1])
    with pytest.raises(LiteralValidationError, match=r"x\[1\]: expected int, or list\[int\]"):
        map_task(square)(x=[1, "two"])
    with pytest.raises(TypeError, match="keyword arguments"):
        map_task(square)([1, 2])
    with pytest.raises(TypeError, match="unexpected argument 'y'"):
        map_task(square)(x=[1], y=2)
    with pytest.raises(TypeError, match="missing required argument 'b'"):
        map_task(add)(a=[1])


# Compile errors --------------------------------------------------------------------------------


def plain_function(x: int) -> int:
    return x


def compile_error(build: object) -> WorkflowCompileError:
    assert callable(build)
    with pytest.raises(WorkflowCompileError) as info:
        build()
    return info.value


def test_mapping_a_function_that_is_not_a_task() -> None:
    def build() -> None:
        @workflow
        def not_a_task(xs: list[int]) -> list[int]:
            return map_task(plain_function)(x=xs)  # type: ignore[arg-type]  # <- not-a-task

    error = compile_error(build)
    message = str(error)
    assert location_of("not-a-task") in message
    assert f"workflow '{MODULE}.not_a_task'" in message
    assert "map_task takes a @task, got <function plain_function" in message
    assert "decorate the function with @task" in message

    with pytest.raises(DefinitionError, match="map_task takes a @task, got a workflow"):
        map_task(squares)  # type: ignore[arg-type]


def test_mapping_with_positional_arguments() -> None:
    def build() -> None:
        @workflow
        def positional(xs: list[int]) -> list[int]:
            return map_task(square)(xs)  # <- positional

    message = str(compile_error(build))
    assert location_of("positional") in message
    assert f"map_task of task '{MODULE}.square' was called with 1 positional argument(s)" in (
        message
    )
    assert "write map_task(square)(x=...)" in message


def test_mapping_with_no_list_argument() -> None:
    def build() -> None:
        @workflow
        def nothing_to_map(x: int) -> list[int]:
            return map_task(square)(x=x, offset=1)  # <- no-list

    error = compile_error(build)
    message = str(error)
    assert location_of("no-list") in message
    assert "has no argument to map over" in message
    assert "its parameters: x: int, offset: int" in message
    assert "call it directly: square(...)" in message


def test_mapping_a_list_of_the_wrong_element_type() -> None:
    def build() -> None:
        @workflow
        def wrong_items(n: int) -> list[int]:
            return map_task(square)(x=words(n=n))  # <- wrong-items

    error = compile_error(build)
    message = str(error)
    assert location_of("wrong-items") in message
    assert error.parameter == "x" and error.task == f"{MODULE}.square"
    assert "parameter 'x' of task" in message
    assert "expects int, or list[int] to map over, got list[str]" in message
    assert "output of node 'n0-words'" in message


def test_mapping_a_constant_list_of_the_wrong_element_type() -> None:
    def build() -> None:
        @workflow
        def wrong_constant() -> list[int]:
            return map_task(square)(x=["a", "b"])  # <- wrong-constant

    message = str(compile_error(build))
    assert location_of("wrong-constant") in message
    assert "expects int, or list[int] to map over, got constant list ['a', 'b']" in message


def test_a_whole_argument_still_has_to_match_exactly() -> None:
    def build() -> None:
        @workflow
        def wrong_whole(xs: list[int], label: str) -> list[int]:
            return map_task(square)(x=xs, offset=label)  # <- wrong-whole

    message = str(compile_error(build))
    assert location_of("wrong-whole") in message
    assert "parameter 'offset'" in message and "got str (workflow input 'label')" in message


def test_map_outputs_are_lists_for_the_type_checker() -> None:
    def build() -> None:
        @workflow
        def list_into_int(n: int) -> int:
            return square(x=map_task(square)(x=numbers(n=n)))  # <- list-into-int

    message = str(compile_error(build))
    assert location_of("list-into-int") in message
    assert "expects int, got list[int] (output of map node 'n1-square'" in message


def test_concurrency_must_be_a_positive_int() -> None:
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(InvalidOptionError, match="concurrency must be a positive int"):
            map_task(square, concurrency=bad)  # type: ignore[arg-type]


def test_promise_misuse_hints_now_point_at_map_task() -> None:
    def build() -> None:
        @workflow
        def loop(n: int) -> int:
            for value in numbers(n=n):
                return square(x=value)
            return 0

    message = str(compile_error(build))
    assert "map_task(task)(param=the_list)" in message
