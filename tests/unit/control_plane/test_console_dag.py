"""The console's DAG drawing (`control_plane.api.console.dag`): depth columns, sub-workflow
nodes, map nodes' done/total, node states from attempts."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from control_plane.api.console import dag
from fleetflow.api_models.executions import AttemptPublic
from fleetflow.states import AttemptState, ExecutionState


def _node(node_id: str, *upstream: str, mapped: bool = False) -> dict[str, Any]:
    inputs = {
        f"x{i}": {"kind": "node_output", "node_id": up, "output": "o0"}
        for i, up in enumerate(upstream)
    }
    node: dict[str, Any] = {"id": node_id, "task": "m.t", "inputs": inputs}
    if mapped:
        node["map"] = {"over": ["x0"]}
    return node


def _attempt(node: str, state: AttemptState, number: int = 1, index: int | None = None) -> Any:
    now = datetime.now(UTC)
    return AttemptPublic(
        id=f"at-{node}-{index}-{number}",
        node_id=node,
        map_index=index,
        task_name="m.t",
        attempt_number=number,
        status=state,
        cache_hit=False,
        cluster=None,
        error_message=None,
        error_traceback=None,
        created_at=now,
        started_at=None,
        finished_at=None,
    )


def test_nodes_sit_in_columns_by_their_longest_path_from_a_root() -> None:
    spec = {
        "nodes": [
            _node("n3", "n2", "n0"),  # listed first, drawn last
            _node("n0"),
            _node("n1", "n0"),
            _node("n2", "n1"),
            _node("n4"),
        ]
    }
    placed = {n.id: n for n in dag.layout(spec).nodes}
    assert {k: v.column for k, v in placed.items()} == {"n0": 0, "n1": 1, "n2": 2, "n3": 3, "n4": 0}
    assert placed["n0"].row != placed["n4"].row
    assert placed["n3"].upstream == ("n2", "n0")


def test_sub_workflow_nodes_are_grouped_and_labelled_by_their_call() -> None:
    spec = {
        "nodes": [
            _node("n0"),
            _node("n1-train/n0-prep", "n0"),
            _node("n2", "n0"),
            _node("n1-train/n1-fit", "n0"),
        ]
    }
    placed = dag.layout(spec)
    rows = {n.id: n.row for n in placed.nodes if n.column == 1}
    assert abs(rows["n1-train/n0-prep"] - rows["n1-train/n1-fit"]) == 1  # side by side
    svg = dag.render_svg(placed, {})
    assert '<g class="node group" data-node="n1-train/n1-fit" data-state="WAITING"' in svg
    assert ">n1-train/</text>" in svg and ">n1-fit</text>" in svg
    assert svg.count("<path class=edge") == 3


def test_node_states_come_from_the_newest_attempt_of_each_element() -> None:
    attempts = [
        _attempt("n0", AttemptState.FAILED, 1),
        _attempt("n0", AttemptState.SUCCEEDED, 2),
        _attempt("m", AttemptState.SUCCEEDED, 1, 0),
        _attempt("m", AttemptState.FAILED, 1, 1),
        _attempt("m", AttemptState.RUNNING, 2, 1),
        _attempt("m", AttemptState.SUCCEEDED, 1, 2),
    ]
    states = dag.node_states(["n0", "m", "later"], attempts, ExecutionState.RUNNING)
    assert states["n0"] == dag.NodeState("SUCCEEDED")
    assert states["m"] == dag.NodeState("RUNNING", done=2, total=3)
    assert states["later"] == dag.NodeState("WAITING")
    ended = dag.node_states(["later"], [], ExecutionState.FAILED)
    assert ended["later"] == dag.NodeState("NOT_RUN")
    spec = {"nodes": [_node("n0"), _node("m", "n0", mapped=True), _node("later", "m")]}
    svg = dag.render_svg(dag.layout(spec), states)
    assert re.search(r'data-node="m" data-state="RUNNING".*>2/3</text>', svg)


def test_a_500_node_graph_is_laid_out_without_recursion() -> None:
    chain = [_node("n0")] + [_node(f"n{i}", f"n{i - 1}") for i in range(1, 500)]
    placed = dag.layout({"nodes": chain})
    assert max(n.column for n in placed.nodes) == 499
    assert dag.render_svg(placed, {}).count("<g class=") == 500
