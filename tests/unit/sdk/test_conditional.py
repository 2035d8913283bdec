"""`conditional(...)`: conditions on promises, the spec they compile to (guards, select
bindings, failures), local runs of each branch, and the checks a spec with conditions gets
when it is parsed (what the API refuses with a 422)."""

from __future__ import annotations

import enum
from typing import Any, NamedTuple

import pytest
from pydantic import ValidationError

from fleetflow import (
    ConditionalFailedError,
    WorkflowCompileError,
    conditional,
    ir,
    map_task,
    task,
    workflow,
)
from fleetflow.ir import WorkflowSpec


class Mode(enum.StrEnum):
    FAST = "fast"
    SLOW = "slow"


@task
def double(x: int) -> int:
    return 2 * x


@task
def negate(x: int) -> int:
    return -x


@task
def maybe(x: int) -> int | None:
    return x if x % 2 else None


class Pair(NamedTuple):
    a: int
    b: int


@task
def pair(x: int) -> Pair:
    return Pair(x, x)


@task
def label(v: int) -> str:
    return f"v={v}"


@task
def is_big(x: int) -> bool:
    return x > 100


@workflow
def sized(n: int, flag: bool = False) -> str:
    value = (
        conditional("size")
        .if_((n > 10) & flag.is_true())
        .then(double(x=double(x=n)))
        .elif_((n > 10) | (n == -1))
        .then(double(x=n))
        .elif_(n == 0)
        .fail("zero is refused")
        .else_()
        .then(negate(x=n))
    )
    return label(v=value)


@workflow
def nested(n: int, mode: Mode = Mode.FAST) -> int:
    return (
        conditional("outer")
        .if_(n >= 0)
        .then(
            conditional("inner")
            .if_(is_big(x=n).is_true())
            .then(double(x=n))
            .else_()
            .then(negate(x=n))
        )
        .elif_(mode == Mode.SLOW)
        .then(negate(x=double(x=n)))
        .else_()
        .then(double(x=n))
    )


def test_each_branch_runs_locally() -> None:
    assert sized(n=20, flag=True) == "v=80"
    assert sized(n=20) == "v=40"
    assert sized(n=-1) == "v=-2"
    assert sized(n=3) == "v=-3"


def test_a_fail_branch_ends_the_run_with_its_message() -> None:
    with pytest.raises(ConditionalFailedError) as info:
        sized(n=0)
    assert str(info.value) == "zero is refused"


def test_nested_conditionals_run_locally() -> None:
    assert nested(n=200) == 400
    assert nested(n=5) == -5
    assert nested(n=-3, mode=Mode.SLOW) == 6
    assert nested(n=-3) == -6


def test_guards_and_the_select_binding_in_the_spec() -> None:
    spec = sized.spec
    nodes = {node.id: node for node in spec.nodes}
    first = nodes["n0-double"].when
    # Case 1: its condition; case 2: not case 1's and its own; else: not any case's.
    assert isinstance(first, ir.AllOf) and len(first.conditions) == 2
    second = nodes["n2-double"].when
    assert isinstance(second, ir.AllOf)
    assert isinstance(second.conditions[0], ir.Not)
    assert isinstance(second.conditions[1], ir.AnyOf)
    assert nodes["n0-double"].when == nodes["n1-double"].when  # nested calls: same branch
    assert nodes["n4-label"].when is None
    select = nodes["n4-label"].inputs["v"]
    assert isinstance(select, ir.SelectBinding)
    assert [o.node_id for o in select.options] == ["n1-double", "n2-double", "n3-negate"]
    assert nodes["n4-label"].upstream == ["n1-double", "n2-double", "n3-negate"]
    (failure,) = spec.failures
    assert failure.message == "zero is refused"
    assert isinstance(failure.when, ir.AllOf) and len(failure.when.conditions) == 3
    # The spec round-trips through JSON, as it travels to the API.
    assert WorkflowSpec.model_validate_json(spec.model_dump_json()) == spec


def test_a_spec_without_conditionals_is_written_as_before() -> None:
    @workflow
    def plain(n: int) -> str:
        return label(v=double(x=n))

    dumped = plain.spec.model_dump(mode="json")
    assert "failures" not in dumped
    assert all("when" not in node for node in dumped["nodes"])


def test_nested_guards_conjoin_the_outer_branch() -> None:
    nodes = {node.id: node for node in nested.spec.nodes}
    outer = ir.Comparison(
        op=">=", left=ir.InputBinding(input="n"), right=ir.LiteralBinding(value=0)
    )
    assert nodes["n0-is_big"].when == outer
    inner = nodes["n1-double"].when
    assert isinstance(inner, ir.AllOf) and inner.conditions[0] == outer
    # The inner condition reads is_big's output: it is upstream of the guarded node.
    assert nodes["n1-double"].upstream == ["n0-is_big"]


def test_branches_of_a_type_and_its_optional_give_the_optional() -> None:
    @workflow
    def optional(n: int) -> int | None:
        return conditional("o").if_(n > 0).then(maybe(x=n)).else_().then(double(x=n))

    assert optional.spec.interface.outputs[0].type.kind is ir.TypeKind.OPTIONAL
    assert optional(n=3) == 3
    assert optional(n=2) is None
    assert optional(n=-2) == -4


def test_a_branch_returning_nothing_gives_nothing() -> None:
    ran: list[str] = []

    @task
    def record(what: str) -> None:
        ran.append(what)

    @workflow
    def effects(n: int) -> None:
        conditional("e").if_(n > 0).then(record(what="pos")).else_().then(record(what="neg"))

    effects(n=1)
    effects(n=-1)
    assert ran == ["pos", "neg"]


def test_a_branch_may_be_a_map_node() -> None:
    @workflow
    def fan(xs: list[int], twice: bool) -> list[int]:
        return (
            conditional("fan")
            .if_(twice.is_true())
            .then(map_task(double)(x=xs))
            .else_()
            .then(map_task(negate)(x=xs))
        )

    assert fan(xs=[1, 2], twice=True) == [2, 4]
    assert fan(xs=[1, 2], twice=False) == [-1, -2]
    assert all(node.map is not None and node.when is not None for node in fan.spec.nodes)


def test_a_branch_of_several_outputs_is_not_supported_yet() -> None:
    def several(n: int) -> int:
        return conditional("p").if_(n > 0).then(pair(x=n)).else_().then(double(x=n))

    assert "several outputs is not supported yet" in compile_error(several)


def test_comparing_promises_and_enums() -> None:
    @workflow
    def both(a: int, b: float, mode: Mode) -> int:
        return (
            conditional("cmp")
            .if_((a < b) & (mode != "slow"))
            .then(double(x=a))
            .else_()
            .then(negate(x=a))
        )

    assert both(a=1, b=2.5, mode=Mode.FAST) == 2
    assert both(a=1, b=2.5, mode=Mode.SLOW) == -1
    assert both(a=3, b=2.5, mode=Mode.FAST) == -3


def compile_error(body: Any) -> str:
    with pytest.raises(WorkflowCompileError) as info:
        workflow(body)
    return str(info.value)


def test_python_control_flow_on_conditions_stays_an_error() -> None:
    def in_a_list(n: int) -> None:
        _ = n in [1, 2]

    assert "no truth value" in compile_error(in_a_list)

    def in_a_set(n: int) -> None:
        _ = n in {1, 2}

    assert "cannot be hashed" in compile_error(in_a_set)

    def chained(n: int) -> None:
        _ = 1 < n < 3

    assert "no truth value" in compile_error(chained)


def test_precedence_mistake_points_to_parentheses() -> None:
    def unparenthesised(n: int) -> None:
        _ = n > 1 & n < 5  # parses as n > (1 & n) < 5

    assert "(x > 1) & (y < 2)" in compile_error(unparenthesised)


def test_comparisons_that_do_not_type_check() -> None:
    def enum_value(mode: Mode) -> None:
        _ = mode == "medium"

    assert "Mode has no value 'medium'" in compile_error(enum_value)

    def ordering_bools(flag: bool) -> None:
        _ = flag < True

    assert "does not order bool" in compile_error(ordering_bools)

    def none_with_int(n: int) -> None:
        _ = n == None  # noqa: E711

    assert "only an Optional can be compared with None" in compile_error(none_with_int)


def test_then_takes_a_task_called_inside_it() -> None:
    def an_input(n: int) -> int:
        return conditional("c").if_(n > 0).then(n).else_().then(double(x=n))

    assert "takes what a task called inside it returns" in compile_error(an_input)

    def earlier(n: int) -> int:
        before = double(x=n)
        return conditional("c").if_(n > 0).then(before).else_().then(double(x=n))

    assert "takes what a task called inside it returns" in compile_error(earlier)


def test_a_task_in_a_condition_runs_whichever_case_is_taken() -> None:
    @workflow
    def decided_by_a_task(n: int) -> int:
        return (
            conditional("c")
            .if_(n < 0)
            .then(negate(x=n))
            .elif_(is_big(x=n).is_true())
            .then(double(x=n))
            .else_()
            .then(negate(x=double(x=n)))
        )

    nodes = {node.id: node for node in decided_by_a_task.spec.nodes}
    assert nodes["n1-is_big"].when is None
    assert decided_by_a_task(n=-1) == 1
    assert decided_by_a_task(n=101) == 202
    assert decided_by_a_task(n=5) == -10


def test_a_conditional_never_finished_is_refused() -> None:
    def unfinished(n: int) -> int:
        conditional("c").if_(n > 0).then(double(x=n))
        return double(x=n)

    message = compile_error(unfinished)
    assert "conditional 'c'" in message and "is not finished" in message


def test_conditional_outside_a_workflow_is_refused() -> None:
    with pytest.raises(WorkflowCompileError, match="only used in the body of a @workflow"):
        conditional("nowhere")


# ------------------------------------------------------------- checks of a parsed spec


def hostile(change: Any) -> str:
    data = sized.spec.model_dump(mode="json")
    change(data)
    with pytest.raises(ValidationError) as info:
        WorkflowSpec.model_validate(data)
    return str(info.value)


def test_a_spec_with_ill_typed_conditions_is_refused() -> None:
    def str_literal(data: dict[str, Any]) -> None:
        data["failures"][0]["when"]["conditions"][2]["right"] = {"kind": "literal", "value": "x"}

    assert "cannot compare int with str" in hostile(str_literal)

    def unknown_input(data: dict[str, Any]) -> None:
        data["failures"][0]["when"]["conditions"][2]["left"] = {"kind": "input", "input": "zz"}

    assert "no input 'zz'" in hostile(unknown_input)

    def unguarded_consumer(data: dict[str, Any]) -> None:
        data["nodes"][4]["inputs"]["v"] = {
            "kind": "node_output",
            "node_id": "n1-double",
            "output": "o0",
        }

    assert "outside that branch" in hostile(unguarded_consumer)

    def select_of_plain(data: dict[str, Any]) -> None:
        data["nodes"][0].pop("when")
        data["nodes"][1].pop("when")

    assert "not guarded" in hostile(select_of_plain)

    def duplicate_id(data: dict[str, Any]) -> None:
        data["failures"][0]["id"] = "n0-double"

    assert "unique" in hostile(duplicate_id)

    def literal_list(data: dict[str, Any]) -> None:
        data["failures"][0]["when"]["conditions"][2]["right"] = {"kind": "literal", "value": [1]}

    assert "must be a number, a string, a bool or null" in hostile(literal_list)

    def waits_on_itself(data: dict[str, Any]) -> None:
        data["nodes"][0]["when"]["conditions"][0]["left"] = {
            "kind": "node_output",
            "node_id": "n0-double",
            "output": "o0",
        }

    assert "nodes wait on each other" in hostile(waits_on_itself)


def test_a_select_binding_without_guarded_nodes_is_refused() -> None:
    @workflow
    def plain(n: int) -> str:
        return label(v=double(x=n))

    data = plain.spec.model_dump(mode="json")
    data["nodes"][1]["inputs"]["v"] = {
        "kind": "select",
        "options": [{"kind": "node_output", "node_id": "n0-double", "output": "o0"}],
    }
    with pytest.raises(ValidationError, match="select binding"):
        WorkflowSpec.model_validate(data)
