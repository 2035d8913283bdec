"""Sub-workflows: a `@workflow` called in a workflow body is inlined into the caller's spec
(node ids prefixed by the call's id, inputs replaced by the call's bindings, guards conjoined
with the branch the call is made in) and runs locally like the workflow it was written as."""

from __future__ import annotations

from typing import NamedTuple

import pytest

from fleetflow import (
    ConditionalFailedError,
    WorkflowCompileError,
    conditional,
    ir,
    map_task,
    task,
    workflow,
)
from fleetflow.inlining import MAX_NESTING
from fleetflow.spec_checks import binding_problems


@task
def inc(x: int) -> int:
    return x + 1


@task
def scale(x: int, factor: float) -> float:
    return x * factor


@task
def square(x: int) -> int:
    return x * x


@task
def total(xs: list[int]) -> int:
    return sum(xs)


@task
def describe(values: dict[str, int], label: str) -> str:
    return f"{label}:" + ",".join(f"{k}={v}" for k, v in sorted(values.items()))


class Fitted(NamedTuple):
    score: float
    steps: int


@task
def fit(x: int, factor: float) -> Fitted:
    return Fitted(score=x * factor, steps=x)


@workflow
def train(x: int, factor: float = 0.5, mode: str = "fast") -> float:
    prepared = inc(x=x)
    return (
        conditional("mode")
        .if_(mode == "fast")
        .then(scale(x=prepared, factor=factor))
        .else_()
        .then(scale(x=prepared, factor=1.0))
    )


@workflow
def sum_of_squares(xs: list[int]) -> int:
    return total(xs=map_task(square)(x=xs))


@workflow
def guarded(x: int) -> int:
    checked = inc(x=x)
    return conditional("limit").if_(checked > 100).fail("too big").else_().then(square(x=checked))


@workflow
def fitted(x: int) -> Fitted:
    return fit(x=inc(x=x), factor=2.0)


def _check_spec(spec: ir.WorkflowSpec) -> None:
    """What the platform checks of a spec it registers, and a JSON round trip."""
    assert binding_problems(spec) == []
    assert ir.WorkflowSpec.model_validate_json(spec.model_dump_json()) == spec


def test_nodes_are_inlined_under_the_call_id() -> None:
    @workflow
    def pipeline(n: int) -> float:
        first = inc(x=n)
        return train(x=first, factor=2.0)

    spec = pipeline.spec
    assert [node.id for node in spec.nodes] == [
        "n0-inc",
        "n1-train/n0-inc",
        "n1-train/n1-scale",
        "n1-train/n2-scale",
    ]
    inlined = spec.node("n1-train/n0-inc")
    assert inlined.inputs == {"x": ir.NodeOutputBinding(node_id="n0-inc", output="o0")}
    # `factor` bound to the call's constant; `mode` not passed: its default.
    assert spec.node("n1-train/n1-scale").inputs["factor"] == ir.LiteralBinding(value=2.0)
    when = spec.node("n1-train/n1-scale").when
    assert when == ir.Comparison(
        op="==", left=ir.LiteralBinding(value="fast"), right=ir.LiteralBinding(value="fast")
    )
    assert spec.outputs["o0"] == ir.SelectBinding(
        options=[
            ir.NodeOutputBinding(node_id="n1-train/n1-scale", output="o0"),
            ir.NodeOutputBinding(node_id="n1-train/n2-scale", output="o0"),
        ]
    )
    assert set(spec.tasks) == {inc.spec.name, scale.spec.name}
    assert set(pipeline.tasks) == set(spec.tasks)
    _check_spec(spec)
    assert pipeline(n=3) == 10.0  # inc(3) = 4, inc(4) = 5, * 2.0


def test_a_local_run_equals_the_sub_workflow_run_on_its_own() -> None:
    @workflow
    def twice(n: int, mode: str) -> list[float]:
        return [train(x=n, mode=mode), train(x=n, factor=3.0)]

    assert twice(n=3, mode="fast") == [train(x=3, mode="fast"), train(x=3, factor=3.0)]
    assert twice(n=3, mode="slow") == [4.0, 12.0]
    ids = [node.id for node in twice.spec.nodes]
    assert ids[:3] == ["n0-train/n0-inc", "n0-train/n1-scale", "n0-train/n2-scale"]
    assert ids[3:] == ["n3-train/n0-inc", "n3-train/n1-scale", "n3-train/n2-scale"]
    # Compared with the caller's input, the sub-workflow's condition reads it.
    assert twice.spec.node("n0-train/n1-scale").when == ir.Comparison(
        op="==", left=ir.InputBinding(input="mode"), right=ir.LiteralBinding(value="fast")
    )
    _check_spec(twice.spec)


def test_nested_sub_workflows_prefix_ids_at_each_level() -> None:
    @workflow
    def middle(x: int) -> int:
        return sum_of_squares(xs=[inc(x=x), x])

    @workflow
    def top(x: int) -> int:
        return middle(x=middle(x=x))

    ids = [node.id for node in top.spec.nodes]
    assert ids == [
        "n0-middle/n0-inc",
        "n0-middle/n1-sum_of_squares/n0-square",
        "n0-middle/n1-sum_of_squares/n1-total",
        "n3-middle/n0-inc",
        "n3-middle/n1-sum_of_squares/n0-square",
        "n3-middle/n1-sum_of_squares/n1-total",
    ]
    mapped = top.spec.node("n0-middle/n1-sum_of_squares/n0-square")
    assert mapped.map is not None and mapped.map.over == ["x"]
    assert mapped.inputs["x"] == ir.ListBinding(
        items=[
            ir.NodeOutputBinding(node_id="n0-middle/n0-inc", output="o0"),
            ir.InputBinding(input="x"),
        ]
    )
    _check_spec(top.spec)
    first = (2 + 1) ** 2 + 2**2  # 13
    assert top(x=2) == (first + 1) ** 2 + first**2


def test_a_sub_workflow_in_a_branch_gets_the_branch_guard() -> None:
    @workflow
    def choose(n: int) -> int:
        return (
            conditional("size")
            .if_(n > 10)
            .then(guarded(x=n))
            .else_()
            .then(sum_of_squares(xs=[n, 1]))
        )

    spec = choose.spec
    big = ir.Comparison(op=">", left=ir.InputBinding(input="n"), right=ir.LiteralBinding(value=10))
    assert spec.node("n0-guarded/n0-inc").when == big
    # The sub-workflow's own guard conjoined after the branch's, flattened.
    assert spec.node("n0-guarded/n1-square").when == ir.AllOf(
        conditions=[
            big,
            ir.Not(
                condition=ir.Comparison(
                    op=">",
                    left=ir.NodeOutputBinding(node_id="n0-guarded/n0-inc", output="o0"),
                    right=ir.LiteralBinding(value=100),
                )
            ),
        ]
    )
    assert [f.id for f in spec.failures] == ["n0-guarded/f0-limit"]
    assert spec.failures[0].when == ir.AllOf(
        conditions=[
            big,
            ir.Comparison(
                op=">",
                left=ir.NodeOutputBinding(node_id="n0-guarded/n0-inc", output="o0"),
                right=ir.LiteralBinding(value=100),
            ),
        ]
    )
    assert spec.node("n2-sum_of_squares/n0-square").when == ir.Not(condition=big)
    assert spec.outputs["o0"] == ir.SelectBinding(
        options=[
            ir.NodeOutputBinding(node_id="n0-guarded/n1-square", output="o0"),
            ir.NodeOutputBinding(node_id="n2-sum_of_squares/n1-total", output="o0"),
        ]
    )
    _check_spec(spec)
    assert choose(n=3) == 10
    assert choose(n=20) == 21**2
    with pytest.raises(ConditionalFailedError, match="too big"):
        choose(n=200)


def test_named_outputs_and_dicts_of_sub_workflow_outputs() -> None:
    @workflow
    def report(n: int) -> str:
        result = fitted(x=n)
        return describe(values={"steps": result.steps, "n": n}, label="run")

    @workflow
    def both(n: int) -> Fitted:
        return fitted(x=n)

    assert report(n=2) == "run:n=2,steps=3"
    assert both(n=2) == Fitted(score=6.0, steps=3)
    _check_spec(report.spec)


def test_a_sub_workflow_that_passes_values_through() -> None:
    @workflow
    def echo(x: int, xs: list[int]) -> list[int]:
        return xs

    @workflow
    def uses(n: int) -> int:
        return total(xs=echo(x=n, xs=[n, inc(x=n), 5]))

    assert uses.spec.node("n1-total").inputs["xs"] == ir.ListBinding(
        items=[
            ir.InputBinding(input="n"),
            ir.NodeOutputBinding(node_id="n0-inc", output="o0"),
            ir.LiteralBinding(value=5),
        ]
    )
    assert uses(n=1) == 1 + 2 + 5
    _check_spec(uses.spec)

    @workflow
    def seven() -> int:
        return 7

    @workflow
    def mapped(n: int) -> int:
        # A list built in the sub-workflow's call, mapped over; a constant output compared.
        squares = map_task(square)(x=echo(x=n, xs=[n, inc(x=n)]))
        limit = seven()
        return conditional("c").if_(limit > n).then(total(xs=squares)).else_().then(inc(x=limit))

    assert mapped.spec.node("n1-square").map == ir.MapSpec(over=["x"])
    assert mapped.spec.node("n3-inc").when == ir.Not(
        condition=ir.Comparison(
            op=">", left=ir.LiteralBinding(value=7), right=ir.InputBinding(input="n")
        )
    )
    assert mapped(n=2) == 4 + 9 and mapped(n=8) == 8
    _check_spec(mapped.spec)

    with pytest.raises(WorkflowCompileError, match="takes what a task called inside it returns"):

        @workflow
        def branch(n: int) -> list[int]:
            return (
                conditional("c").if_(n > 1).then(echo(x=n, xs=[1])).else_().then(echo(x=n, xs=[2]))
            )


def test_a_sub_workflow_output_in_a_branch_stays_in_it() -> None:
    with pytest.raises(WorkflowCompileError, match="exists only in the if_ branch"):

        @workflow
        def leaky(n: int) -> int:
            inside = None

            def keep(value: int) -> int:
                nonlocal inside
                inside = value
                return value

            conditional("c").if_(n > 1).then(keep(sum_of_squares(xs=[n]))).else_().then(inc(x=n))
            return inc(x=inside)


def test_a_conditional_output_compared_inside_the_sub_workflow_is_refused() -> None:
    @workflow
    def branches_on(x: int) -> int:
        return conditional("c").if_(x > 1).then(inc(x=x)).else_().then(square(x=x))

    with pytest.raises(WorkflowCompileError) as info:

        @workflow
        def passes_select(n: int) -> int:
            chosen = conditional("d").if_(n > 1).then(inc(x=n)).else_().then(square(x=n))
            return branches_on(x=chosen)

    message = str(info.value)
    assert "cannot inline sub-workflow" in message and "branches on its input 'x'" in message
    assert "output of a conditional" in message and "test_subworkflows.py:" in message


def test_two_different_tasks_with_one_name_are_refused() -> None:
    @task
    def other() -> int:
        return 1

    @workflow
    def inner() -> int:
        return other()

    def make() -> object:
        @task
        def other() -> str:  # same name, another spec
            return "x"

        return other

    clash = make()

    with pytest.raises(WorkflowCompileError, match="two different tasks are named"):

        @workflow
        def outer() -> int:
            clash()  # type: ignore[operator]
            return inner()


def test_nesting_is_bounded() -> None:
    level = workflow(lambda_level(inc))
    for _ in range(MAX_NESTING):
        level = workflow(lambda_level(level))
    assert [node.id for node in level.spec.nodes] == ["n0-wrap/" * MAX_NESTING + "n0-inc"]
    assert level(x=1) == 2
    with pytest.raises(WorkflowCompileError, match=f"at most {MAX_NESTING} levels"):
        workflow(lambda_level(level))


def lambda_level(callee: object) -> object:
    def wrap(x: int) -> int:
        return callee(x=x)  # type: ignore[operator]

    return wrap


def test_outside_a_workflow_a_workflow_call_is_a_local_run() -> None:
    assert train(x=1) == 1.0
    assert sum_of_squares(xs=[1, 2]) == 5


def _spec_guarded_by(when: ir.Condition) -> ir.WorkflowSpec:
    spec = train.spec.model_dump(mode="json")
    spec["nodes"][1]["when"] = when.model_dump(mode="json")
    return ir.WorkflowSpec.model_validate(spec)


def test_a_comparison_of_two_constants_is_a_valid_spec_when_typed() -> None:
    """What a sub-workflow branching on an input its call binds to a constant compiles to;
    the platform still refuses one that cannot be evaluated."""

    def compare(op: str, left: object, right: object) -> ir.Condition:
        return ir.Comparison(
            op=op,  # type: ignore[arg-type]
            left=ir.LiteralBinding(value=left),
            right=ir.LiteralBinding(value=right),
        )

    for valid in (compare("==", "a", "b"), compare("<", 1, 2.5), compare("!=", None, 3)):
        assert _spec_guarded_by(valid).nodes[1].when == valid
    for invalid, reason in (
        (compare("<", "a", 1), "cannot compare str with int"),
        (compare(">", None, 1), "only == or != compare a constant with null"),
        (compare("==", [1], [1]), "a constant in a condition must be"),
    ):
        with pytest.raises(ValueError, match=reason):
            _spec_guarded_by(invalid)


def test_a_sub_workflow_of_fail_branches_alone_can_be_called_twice() -> None:
    @workflow
    def check(x: int) -> None:
        conditional("sign").if_(x < 0).fail("negative").else_().fail("never zero or more")

    @workflow
    def twice(a: int, b: int) -> int:
        check(x=a)
        check(x=b)
        return inc(x=a)

    assert [f.id for f in twice.spec.failures] == [
        "n0-check/f0-sign",
        "n0-check/f1-sign",
        "n0-check-2/f0-sign",
        "n0-check-2/f1-sign",
    ]
    _check_spec(twice.spec)
    with pytest.raises(ConditionalFailedError, match="negative"):
        twice(a=-1, b=1)
