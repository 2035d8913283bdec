"""The console's DAG drawing (`control_plane.api.console.dag`): depth columns, sub-workflow
nodes, map nodes' done/total, node states from attempts."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from control_plane.api.console import dag
from fleetflow.api_models.executions import AttemptPublic, SubDag, SubDagNode
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
    counts = (("RUNNING", 1), ("SUCCEEDED", 2))
    assert states["m"] == dag.NodeState("RUNNING", done=2, total=3, counts=counts)
    assert states["later"] == dag.NodeState("WAITING")
    ended = dag.node_states(["later"], [], ExecutionState.FAILED)
    assert ended["later"] == dag.NodeState("NOT_RUN")
    spec = {"nodes": [_node("n0"), _node("m", "n0", mapped=True), _node("later", "m")]}
    svg = dag.render_svg(dag.layout(spec), states)
    assert re.search(r'data-node="m" data-state="RUNNING".*>2/3</text>', svg)
    # A bar per element state, as wide as its share (1 running, 2 succeeded of 3).
    bar = re.search(r'<g class=bar data-width="(\d+)">(.*?)</g>', svg)
    assert bar is not None
    widths = dict(re.findall(r'data-state="(\w+)" x="[\d.]+" y="39" width="([\d.]+)"', bar[2]))
    assert float(widths["SUCCEEDED"]) == round(2 * int(bar[1]) / 3, 1)
    assert float(widths["RUNNING"]) == round(int(bar[1]) / 3, 1)
    assert states["m"].as_json() == ["RUNNING", 2, 3, {"RUNNING": 1, "SUCCEEDED": 2}]


def test_the_nodes_of_a_dynamic_sub_dag_are_drawn_after_their_dynamic_node() -> None:
    spec = {"nodes": [_node("n0"), _node("n1-grow", "n0"), _node("n2", "n1-grow")]}
    attempts = [
        _attempt("n0", AttemptState.SUCCEEDED),
        _attempt("n1-grow", AttemptState.SUCCEEDED),
        _attempt("n1-grow/n0-step", AttemptState.SUCCEEDED),
        _attempt("n1-grow/n1-step", AttemptState.RUNNING),
        _attempt("n1-grow/n1-step/n0-deeper", AttemptState.PENDING),
    ]
    found = dag.dynamic_nodes(spec, attempts)
    assert list(found) == ["n1-grow/n0-step", "n1-grow/n1-step", "n1-grow/n1-step/n0-deeper"]
    placed = {n.id: n for n in dag.layout(spec, found).nodes}
    assert placed["n1-grow/n0-step"].upstream == ("n1-grow",)
    assert placed["n1-grow/n0-step"].column == placed["n1-grow"].column + 1
    assert placed["n1-grow/n1-step/n0-deeper"].upstream == ("n1-grow/n1-step",)
    assert placed["n1-grow/n1-step/n0-deeper"].column == placed["n1-grow"].column + 2
    assert placed["n1-grow/n0-step"].dynamic_child and not placed["n2"].dynamic_child
    states = dag.node_states(list(placed), attempts, ExecutionState.RUNNING)
    svg = dag.render_svg(dag.layout(spec, found), states)
    assert 'class="node group dynamic" data-node="n1-grow/n1-step" data-state="RUNNING"' in svg


def _sub(node_id: str, *nodes: tuple[str, list[str]], mapped: str = "") -> SubDag:
    return SubDag(
        execution_id="ex-1",
        node_id=node_id,
        nodes=[
            SubDagNode(id=i, task="m.t", upstream=u, is_map=i == mapped, dynamic=False)
            for i, u in nodes
        ],
    )


def test_a_built_sub_dag_expands_in_place_with_its_own_edges() -> None:
    """A diamond sub-DAG (with a nested one) sits after its dynamic node with its edges, and
    the node reading the dynamic node comes after the whole of it."""
    spec = {"nodes": [_node("n0"), _node("n1-grow", "n0"), _node("n2", "n1-grow")]}
    g = "n1-grow"
    subs = {
        g: _sub(
            g,
            (f"{g}/a", []),
            (f"{g}/b", [f"{g}/a"]),
            (f"{g}/c", [f"{g}/a"]),
            (f"{g}/d", [f"{g}/b", f"{g}/c"]),
            mapped=f"{g}/c",
        ),
        f"{g}/d": _sub(f"{g}/d", (f"{g}/d/x", []), (f"{g}/d/y", [f"{g}/d/x"])),
    }
    placed = {n.id: n for n in dag.layout(spec, {}, subs).nodes}
    column = {k: v.column for k, v in placed.items()}
    assert column == {
        "n0": 0,
        g: 1,
        f"{g}/a": 2,
        f"{g}/b": 3,
        f"{g}/c": 3,
        f"{g}/d": 4,
        f"{g}/d/x": 5,
        f"{g}/d/y": 6,
        "n2": 7,  # after the sub-DAG and the nested one
    }
    assert placed[f"{g}/a"].upstream == (g,)  # a root: an edge from its dynamic node
    assert placed[f"{g}/d"].upstream == (f"{g}/b", f"{g}/c")
    assert placed[f"{g}/d/x"].upstream == (f"{g}/d",)
    assert placed["n2"].upstream == (g,)  # the spec's edge, not the ordering
    assert placed[f"{g}/c"].is_map and placed[f"{g}/b"].dynamic_child
    assert placed[f"{g}/b"].row != placed[f"{g}/c"].row
    # Attempts of the sub-DAG's nodes add nothing it already has; unknown ones still show.
    attempts = [_attempt(f"{g}/b", AttemptState.RUNNING), _attempt(f"{g}/z", AttemptState.PENDING)]
    again = dag.layout(spec, dag.dynamic_nodes(spec, attempts), subs)
    assert [n.id for n in again.nodes].count(f"{g}/b") == 1
    assert {n.id: n.upstream for n in again.nodes}[f"{g}/z"] == (g,)
    svg = dag.render_svg(
        again, dag.node_states([n.id for n in again.nodes], attempts, ExecutionState.RUNNING)
    )
    edges = re.findall(r'<path class=edge d="M(\d+) (\d+) ', svg)
    # one per drawn upstream: n0->g, g->a, a->b, a->c, b->d, c->d, d->x, x->y, g->n2, g->z
    assert len(edges) == 10
    assert 'data-node="n1-grow/d/y" data-state="WAITING"' in svg


def test_a_500_node_graph_is_laid_out_without_recursion() -> None:
    chain = [_node("n0")] + [_node(f"n{i}", f"n{i - 1}") for i in range(1, 500)]
    placed = dag.layout({"nodes": chain})
    assert max(n.column for n in placed.nodes) == 499
    assert dag.render_svg(placed, {}).count("<g class=") == 500


def test_a_branch_not_taken_is_greyed_out_and_an_unrun_node_too() -> None:
    spec = {"nodes": [_node("n0"), _node("n1-then", "n0"), _node("n2-else", "n0")]}
    attempts = [
        _attempt("n0", AttemptState.SUCCEEDED),
        _attempt("n1-then", AttemptState.SUCCEEDED),
        _attempt("n2-else", AttemptState.SKIPPED),
    ]
    states = dag.node_states(["n0", "n1-then", "n2-else"], attempts, ExecutionState.SUCCEEDED)
    svg = dag.render_svg(dag.layout(spec), states)
    assert 'data-node="n2-else" data-state="SKIPPED"' in svg
    assert 'data-node="n1-then" data-state="SUCCEEDED"' in svg
    css = (Path(dag.__file__).parent / "static" / "console.css").read_text()
    assert "svg.dag g[data-state=SKIPPED] rect" in css  # drawn grey
