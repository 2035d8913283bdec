"""Lists and dicts built from promises in a workflow body, and `map_task` of a
`functools.partial`: what they compile to, how they run locally, and what registration-time
checks (`fleetflow.spec_checks`) say of a spec whose bindings were tampered with."""

from __future__ import annotations

import enum
import functools
import threading
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from fleetflow import File, ir, map_task, task, workflow
from fleetflow.errors import DefinitionError
from fleetflow.spec_checks import binding_problems


class Split(enum.StrEnum):
    TRAIN = "train"
    TEST = "test"


@task
def number(v: int) -> int:
    return v


@task
def halve(v: int) -> float:
    return v / 2


@task
def total(xs: list[float]) -> float:
    return sum(xs)


@task
def grid(rows: list[list[int]]) -> list[int]:
    return [sum(row) for row in rows]


@task
def describe(scores: dict[str, float], by_id: dict[int, int], by_split: dict[Split, int]) -> str:
    return (
        ",".join(f"{k}={v}" for k, v in sorted(scores.items()))
        + f"|{sorted(by_id.items())}|{sorted((k.value, v) for k, v in by_split.items())}"
    )


@task
def maybe_count(xs: list[int] | None = None) -> int:
    return -1 if xs is None else len(xs)


class Collected(NamedTuple):
    summed: float
    rows: list[int]
    described: str
    counted: int


@workflow
def collections(n: int = 3) -> Collected:
    a, b = number(v=n), number(v=10)
    summed = total(xs=[a, b, 0.5, halve(v=b)])  # promises, a constant, int widened to float
    rows = grid(rows=[[a, 1], [], [b, b], [2, 3]])
    described = describe(
        scores={"a": a, "half": halve(v=a), "c": 1.5},
        by_id={1: a, -2: b},
        by_split={Split.TRAIN: a, Split.TEST: 7},
    )
    return Collected(summed, rows, described, maybe_count(xs=[a, b]))


@workflow
def returns_a_list(n: int = 2) -> list[int]:
    return [number(v=n), 5, number(v=7)]


@workflow
def returns_a_dict(n: int = 2) -> dict[str, list[int]]:
    return {"one": [number(v=n)], "two": [number(v=3), n]}


def _node(spec: ir.WorkflowSpec, task_name: str) -> ir.Node:
    (node,) = (node for node in spec.nodes if node.task.endswith(f".{task_name}"))
    return node


def test_a_list_of_promises_compiles_to_a_list_binding_item_by_item() -> None:
    spec = collections.spec
    first, second = (n.id for n in spec.nodes[:2])
    node = _node(spec, "total")
    binding = node.inputs["xs"]
    assert isinstance(binding, ir.ListBinding)
    a, b, constant, halved = binding.items
    assert a == ir.NodeOutputBinding(node_id=first, output="o0")
    assert b == ir.NodeOutputBinding(node_id=second, output="o0")
    assert constant == ir.LiteralBinding(value=0.5)
    assert isinstance(halved, ir.NodeOutputBinding)
    assert node.upstream == [first, second, halved.node_id]


def test_nested_lists_and_dicts_keep_constant_parts_as_literals() -> None:
    spec = collections.spec
    rows = _node(spec, "grid").inputs["rows"]
    assert isinstance(rows, ir.ListBinding)
    assert [type(item).__name__ for item in rows.items] == [
        "ListBinding",
        "LiteralBinding",
        "ListBinding",
        "LiteralBinding",
    ]
    assert rows.items[3] == ir.LiteralBinding(value=[2, 3])
    node = _node(spec, "describe")
    by_id, by_split = node.inputs["by_id"], node.inputs["by_split"]
    assert isinstance(by_id, ir.DictBinding) and list(by_id.items) == ["1", "-2"]
    assert isinstance(by_split, ir.DictBinding) and list(by_split.items) == ["train", "test"]
    assert by_split.items["test"] == ir.LiteralBinding(value=7)


def test_a_container_without_promises_is_still_one_literal() -> None:
    @workflow
    def constant() -> float:
        return total(xs=[1.0, 2])

    assert _node(constant.spec, "total").inputs["xs"] == ir.LiteralBinding(value=[1.0, 2.0])


def test_the_spec_survives_json_and_has_no_binding_problems() -> None:
    for wf in (collections, returns_a_list, returns_a_dict):
        spec = wf.spec
        assert ir.WorkflowSpec.model_validate_json(spec.model_dump_json()) == spec
        assert binding_problems(spec) == []


def test_collections_of_promises_run_locally() -> None:
    summed, rows, described, counted = collections(n=3)
    assert summed == 3 + 10 + 0.5 + 5.0
    assert rows == [4, 0, 20, 5]
    assert described == "a=3.0,c=1.5,half=1.5|[(-2, 10), (1, 3)]|[('test', 7), ('train', 3)]"
    assert counted == 2


def test_a_workflow_returns_a_list_or_a_dict_of_promises() -> None:
    assert returns_a_list(n=4) == [4, 5, 7]
    assert returns_a_dict(n=4) == {"one": [4], "two": [3, 4]}
    (output,) = returns_a_dict.spec.outputs.values()
    assert isinstance(output, ir.DictBinding)


@task
def write(name: str, text: str) -> File:
    path = Path(name)
    path.write_text(text)
    return File(path)


@task
def concatenate(files: list[File]) -> str:
    return "".join(f.path.read_text() for f in files)


@workflow
def joined() -> str:
    return concatenate(files=[write(name="a.txt", text="one "), write(name="b.txt", text="two")])


def test_files_inside_a_list_of_promises(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert joined() == "one two"


# ------------------------------------------------------------------------------- map_task


@task
def scale(x: int, k: int, bias: float = 0.0) -> float:
    return x * k + bias


@task
def pair(xs: list[int], y: int) -> int:
    return sum(xs) * y


@workflow
def partial_map(n: int = 3) -> tuple[list[float], list[float], list[int]]:
    k = number(v=10)
    by_k = map_task(functools.partial(scale, k=k), concurrency=2)(x=[number(v=n), 2, 3])
    constant = map_task(functools.partial(scale, k=2, bias=0.5))(x=[1, 2])
    # A list of promises that fits the parameter (list[int]) is passed whole, not mapped.
    whole = map_task(pair)(xs=[k, n], y=[1, 2])
    return by_k, constant, whole


def test_a_partial_binds_its_arguments_whole_and_maps_the_rest() -> None:
    spec = partial_map.spec
    k_node = spec.nodes[0].id
    by_k, constant, whole = (n for n in spec.nodes if n.map is not None)
    assert by_k.map == ir.MapSpec(over=["x"], concurrency=2)
    assert by_k.inputs["k"] == ir.NodeOutputBinding(node_id=k_node, output="o0")
    assert isinstance(by_k.inputs["x"], ir.ListBinding)  # mapped over, item by item
    assert constant.map == ir.MapSpec(over=["x"])
    assert constant.inputs["bias"] == ir.LiteralBinding(value=0.5)
    assert whole.map == ir.MapSpec(over=["y"])
    assert isinstance(whole.inputs["xs"], ir.ListBinding)
    assert partial_map(n=1) == ([10.0, 20.0, 30.0], [2.5, 4.5], [11, 22])


def test_a_partial_map_outside_a_workflow() -> None:
    mapped = map_task(functools.partial(scale, k=3, bias=1.0), concurrency=1)
    assert mapped(x=[1, 2]) == [4.0, 7.0]
    assert repr(mapped) == (
        f"map_task(functools.partial({scale.spec.name}, k=..., bias=...), concurrency=1)"
    )
    with pytest.raises(TypeError, match="'k', which functools.partial already binds"):
        mapped(x=[1], k=2)
    with pytest.raises(DefinitionError, match="functools.partial binds every parameter"):
        map_task(functools.partial(scale, x=1, k=2, bias=0.0))
    with pytest.raises(DefinitionError, match="binds 1 positional argument"):
        map_task(functools.partial(scale, 1))


def test_a_partial_map_keeps_its_concurrency_locally() -> None:
    running, peak = 0, 0
    lock = threading.Lock()
    release = threading.Barrier(2, timeout=10)

    @task
    def slow(x: int, tag: str) -> int:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        try:
            release.wait()  # two at a time meet here; a third would find the barrier broken
        finally:
            with lock:
                running -= 1
        return x

    @workflow
    def bounded() -> list[int]:
        return map_task(functools.partial(slow, tag="t"), concurrency=2)(x=[1, 2, 3, 4])

    assert bounded() == [1, 2, 3, 4]
    assert peak == 2


# ------------------------------------------------------------------- registration checks


def _tampered(wf: Any, edit: Any) -> list[tuple[str, str]]:
    data = wf.spec.model_dump(mode="json")
    edit(data)
    spec = ir.WorkflowSpec.model_validate(data)
    return [(p.field, p.message) for p in binding_problems(spec)]


def test_a_tampered_list_binding_is_found_by_its_item() -> None:
    def edit(data: dict[str, Any]) -> None:
        node = next(n for n in data["nodes"] if n["task"].endswith(".total"))
        items = node["inputs"]["xs"]["items"]
        items[0] = {"kind": "node_output", "node_id": "n9-nowhere", "output": "o0"}
        items[2] = {"kind": "literal", "value": "half"}
        items[3] = {"kind": "input", "input": "missing"}

    index = next(i for i, n in enumerate(collections.spec.nodes) if n.task.endswith(".total"))
    field = f"nodes[{index}].inputs.xs.items"
    assert _tampered(collections, edit) == [
        (f"{field}[0]", "the spec has no node 'n9-nowhere'"),
        (f"{field}[2]", "expected float, got str 'half'"),
        (f"{field}[3]", "the workflow has no input 'missing'"),
    ]


def test_a_tampered_dict_binding_is_found_by_its_key_and_type() -> None:
    index = next(i for i, n in enumerate(collections.spec.nodes) if n.task.endswith(".describe"))

    def edit(data: dict[str, Any]) -> None:
        inputs = data["nodes"][index]["inputs"]
        inputs["by_id"]["items"]["one"] = inputs["by_id"]["items"].pop("1")
        inputs["scores"]["items"]["a"] = {"kind": "list", "items": []}
        first = data["nodes"][0]["id"]
        inputs["by_split"]["items"]["train"] = {
            "kind": "node_output",
            "node_id": first,
            "output": "o7",
        }

    problems = dict(_tampered(collections, edit))
    field = f"nodes[{index}].inputs"
    assert problems[f"{field}.scores.items.a"] == "expected float, got a list binding"
    assert "'one' is not an int" in problems[f"{field}.by_id.items"]
    assert problems[f"{field}.by_split.items.train"].endswith("has no output 'o7'")


def test_a_collection_bound_where_its_kind_or_item_type_does_not_fit() -> None:
    halved = next(n.id for n in collections.spec.nodes if n.task.endswith(".halve"))

    def edit(data: dict[str, Any]) -> None:
        node = next(n for n in data["nodes"] if n["task"].endswith(".grid"))
        wrong = {"kind": "node_output", "node_id": halved, "output": "o0"}
        node["inputs"]["rows"]["items"][0] = {"kind": "list", "items": [wrong]}
        data["outputs"]["rows"] = {"kind": "dict", "items": {}}

    index = next(i for i, n in enumerate(collections.spec.nodes) if n.task.endswith(".grid"))
    assert _tampered(collections, edit) == [
        (
            f"nodes[{index}].inputs.rows.items[0].items[0]",
            f"expected int, got float (output 'o0' of node '{halved}')",
        ),
        ("outputs.rows", "expected list[int], got a dict binding"),
    ]


def test_a_mapped_collection_is_checked_as_a_list_of_the_parameter_type() -> None:
    index = next(i for i, n in enumerate(partial_map.spec.nodes) if n.map and "x" in n.map.over)

    def edit(data: dict[str, Any]) -> None:
        data["nodes"][index]["inputs"]["x"]["items"][1] = {"kind": "literal", "value": [2]}

    assert _tampered(partial_map, edit) == [
        (f"nodes[{index}].inputs.x.items[1]", "expected int, got list [2]")
    ]


def test_nodes_that_consume_each_other_through_a_list_are_a_cycle() -> None:
    total_index = next(i for i, n in enumerate(collections.spec.nodes) if n.task.endswith(".total"))
    total_id = collections.spec.nodes[total_index].id
    halve_index = next(i for i, n in enumerate(collections.spec.nodes) if n.task.endswith(".halve"))

    def edit(data: dict[str, Any]) -> None:
        into_total = {"kind": "node_output", "node_id": total_id, "output": "o0"}
        data["nodes"][halve_index]["inputs"]["v"] = into_total  # a float into an int: not checked

    halve_id = collections.spec.nodes[halve_index].id
    assert _tampered(collections, edit) == [
        (
            "nodes",
            f"the nodes consume each other in a cycle: {halve_id} -> {total_id} -> {halve_id}",
        )
    ]


def test_a_set_cannot_be_built_from_promises() -> None:
    @task
    def distinct(tags: set[str]) -> int:
        return len(tags)

    with pytest.raises(
        DefinitionError, match=r"expects set\[str\], got a list with a promise"
    ) as info:

        @workflow
        def tags() -> int:
            return distinct(tags=[halve_text(), "b"])

    assert "take a list[str] and build the set inside the task" in str(info.value)


@task
def halve_text() -> str:
    return "a"
