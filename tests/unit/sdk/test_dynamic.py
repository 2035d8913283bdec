"""`@dynamic`: the sub-DAG compiled when the task runs, run locally in the task's place,
type-checked then (errors name the body's line), bounded in nodes and nesting."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from fleetflow import (
    DynamicWorkflowError,
    InvalidOptionError,
    WorkflowCompileError,
    conditional,
    current_context,
    dynamic,
    ir,
    map_task,
    task,
    workflow,
)

SEEN: list[str] = []


@task
def square(x: int) -> int:
    SEEN.append(current_context().node_id)
    return x * x


@task
def add(a: int, b: int) -> int:
    return a + b


@task
def numbers(n: int) -> list[int]:
    return list(range(1, n + 1))


@dynamic
def sum_squares(xs: list[int]) -> int:
    result = 0
    for x in xs:
        result = add(a=result, b=square(x=x))
    return result


@dynamic(retries=2)
def nested(n: int) -> int:
    return add(a=sum_squares(xs=list(range(n))), b=add(a=0, b=0))


@workflow
def pipeline(n: int) -> int:
    return add(a=sum_squares(xs=numbers(n=n)), b=nested(n=n))


def test_the_node_is_a_dynamic_task_of_the_workflow() -> None:
    node = pipeline.spec.node("n1-sum_squares")
    task_spec = pipeline.spec.tasks[node.task]
    assert task_spec.dynamic and not pipeline.spec.tasks["test_dynamic.add"].dynamic
    assert sum_squares.dynamic and not add.dynamic  # as the runtime asks, with no spec
    assert pipeline.spec.tasks["test_dynamic.nested"].retries == 2
    # Specs without dynamic tasks keep their digests: the flag is written only when set.
    assert "dynamic" not in pipeline.spec.tasks["test_dynamic.add"].model_dump(mode="json")


def test_a_local_run_builds_and_runs_the_sub_dags() -> None:
    SEEN.clear()
    assert pipeline(n=3) == (1 + 4 + 9) + (0 + 1 + 4)
    # Each task of a sub-DAG runs as a node named under its dynamic node, nested ones too.
    assert set(SEEN) == {
        "n1-sum_squares/n0-square",
        "n1-sum_squares/n2-square",
        "n1-sum_squares/n4-square",
        "n2-nested/n0-sum_squares/n0-square",
        "n2-nested/n0-sum_squares/n2-square",
        "n2-nested/n0-sum_squares/n4-square",
    }
    assert pipeline(n=0) == 0  # an empty sub-DAG: the body returned a constant


def test_called_outside_a_workflow_the_body_runs_as_python() -> None:
    assert too_many(n=3) == 3


def test_build_compiles_the_sub_dag_with_the_values() -> None:
    compiled = sum_squares.build({"xs": [5, 6]}, "n1-sum_squares")
    spec = compiled.spec
    assert [node.id for node in spec.nodes] == ["n0-square", "n1-add", "n2-square", "n3-add"]
    assert spec.node("n0-square").inputs["x"] == ir.LiteralBinding(value=5)
    assert spec.outputs["o0"] == ir.NodeOutputBinding(node_id="n3-add", output="o0")
    assert not spec.interface.inputs
    prefixed = ir.prefix_spec(spec, "n1-sum_squares")
    assert prefixed.node("n1-sum_squares/n3-add").inputs["a"] == ir.NodeOutputBinding(
        node_id="n1-sum_squares/n1-add", output="o0"
    )
    assert prefixed.outputs["o0"] == ir.NodeOutputBinding(
        node_id="n1-sum_squares/n3-add", output="o0"
    )


@dynamic
def mistyped(n: int) -> int:
    return add(a=str(n), b=n)  # type: ignore[arg-type]


@workflow
def mistyped_flow(n: int) -> int:
    return mistyped(n=n)


def test_a_wiring_mistake_in_the_body_names_its_line() -> None:
    line = next(
        number
        for number, text in enumerate(Path(__file__).read_text().splitlines(), 1)
        if "return add(a=str(n), b=n)" in text
    )
    with pytest.raises(WorkflowCompileError) as caught:
        mistyped_flow(n=2)
    message = str(caught.value)
    assert "parameter 'a' of task 'test_dynamic.add' expects int, got constant str '2'" in message
    assert f"test_dynamic.py:{line}" in message
    assert "test_dynamic.mistyped" in message


@dynamic
def too_many(n: int) -> int:
    result = 0
    for _ in range(n):
        result = add(a=result, b=1)
    return result


def test_a_sub_dag_is_bounded_in_nodes() -> None:
    assert too_many.build({"n": ir.MAX_DYNAMIC_NODES}).spec.nodes[-1].id == "n999-add"
    with pytest.raises(WorkflowCompileError) as caught:
        too_many.build({"n": ir.MAX_DYNAMIC_NODES + 1})
    assert "dynamic task 'test_dynamic.too_many' builds more than 1000 nodes" in str(caught.value)
    assert "map_task" in str(caught.value)


@dynamic
def deeper(level: int) -> int:
    if level == 0:
        return add(a=0, b=1)
    return deeper(level=level - 1)


@workflow
def deep(level: int) -> int:
    return deeper(level=level)


def test_nesting_is_bounded() -> None:
    assert deep(level=ir.MAX_DYNAMIC_DEPTH - 1) == 1
    with pytest.raises(DynamicWorkflowError) as caught:
        deep(level=ir.MAX_DYNAMIC_DEPTH)
    assert (
        "dynamic task 'test_dynamic.deeper' (node 'n0-deeper/n0-deeper/n0-deeper/n0-deeper/"
        "n0-deeper'): dynamic tasks are nested 5 deep; at most 4 levels are allowed"
    ) in str(caught.value)


def test_options_are_those_of_a_task_but_cache() -> None:
    with pytest.raises(InvalidOptionError, match="cannot be cached"):
        dynamic(cache=True, cache_version="1")
    with pytest.raises(InvalidOptionError, match="retries"):
        dynamic(retries=-1)


def test_map_task_of_a_dynamic_task_is_refused() -> None:
    with pytest.raises(WorkflowCompileError, match="map_task of dynamic task"):

        @workflow
        def fan(xs: list[int]) -> list[int]:
            return map_task(nested)(n=xs)

    # Nor does a spec written by hand validate (the control plane refuses it when registered).
    data = pipeline.spec.model_dump(mode="json")
    data["nodes"][1]["map"] = {"over": ["xs"]}
    with pytest.raises(ValueError, match="map node 'n1-sum_squares' runs dynamic task"):
        ir.WorkflowSpec.model_validate(data)


def _spec(**changes: object) -> ir.WorkflowSpec:
    data = sum_squares.build({"xs": [1]}).spec.model_dump(mode="json")
    data.update(changes)
    return ir.WorkflowSpec.model_validate(data)


def test_check_dynamic_spec_refuses_what_the_compiler_never_builds() -> None:
    ir.check_dynamic_spec(_spec(), "n0-x", "t")
    node = sum_squares.build({"xs": [1]}).spec.model_dump(mode="json")["nodes"][0]
    reads_input = {**node, "inputs": {"x": {"kind": "input", "input": "x"}}}
    cases = {
        "reads input 'x'": _spec(nodes=[reads_input]),
        "invalid node id '../up'": _spec(nodes=[{**node, "id": "../up"}]),
        "the limit is 1000": _spec(
            nodes=[{**node, "id": f"n{i}-square"} for i in range(1001)], outputs={}
        ),
    }
    for says, spec in cases.items():
        with pytest.raises(ValueError, match=says.replace("(", r"\(").replace(".", r"\.")):
            ir.check_dynamic_spec(spec, "n0-x", "t")
    with pytest.raises(ValueError, match="longer than 128"):
        ir.check_dynamic_spec(_spec(), "/".join(["n0-" + "x" * 40] * 3), "t")


def test_prefixing_leaves_constants_alone() -> None:
    data = _spec().model_dump(mode="json")
    constant = {"kind": "node_output", "node_id": "n0-square", "output": "o0"}
    data["nodes"][0]["inputs"]["x"] = {"kind": "literal", "value": constant}
    prefixed = ir.prefix_spec(ir.WorkflowSpec.model_validate(data), "p")
    assert prefixed.node("p/n0-square").inputs["x"] == ir.LiteralBinding(value=constant)


def test_the_decorated_function_keeps_its_signature() -> None:
    assert list(inspect.signature(sum_squares).parameters) == ["xs"]


BUILDS: list[int] = []


@dynamic(retries=1)
def flaky(n: int) -> int:
    BUILDS.append(current_context().attempt_number)
    if len(BUILDS) == 1:
        raise RuntimeError("the first build fails")
    sign = add(a=n, b=0)
    return conditional("sign").if_(sign > 0).then(square(x=sign)).else_().then(add(a=sign, b=-1))


@workflow
def flaky_flow(n: int) -> int:
    return flaky(n=n)


def test_building_is_retried_and_conditionals_work_in_the_body() -> None:
    BUILDS.clear()
    assert flaky_flow(n=3) == 9
    assert BUILDS == [1, 2]
    assert flaky_flow(n=-2) == -3
