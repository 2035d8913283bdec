"""An execution's DAG as inline SVG: nodes laid out left to right in columns by depth (the
longest path from a root), each coloured by the state its attempts say.

Sub-workflow nodes (ids `call/inner`, `fleetflow.inlining.SEPARATOR`) sit next to each other in
their column, show their call's prefix above their own id and carry a `group` class. A map node
shows how many of its elements succeeded out of those started. A dynamic node's built sub-DAG
(`services/sub_dags.py`) expands in place after it, with its own edges.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from html import escape
from typing import Any

from fleetflow.api_models.executions import AttemptPublic, SubDag
from fleetflow.inlining import SEPARATOR
from fleetflow.states import AttemptState, ExecutionState

NODE_WIDTH = 190
NODE_HEIGHT = 46
COLUMN = 240
ROW = 62
MARGIN = 16
_LABEL_CHARS = 24

_ACTIVE = {AttemptState.PENDING, AttemptState.ASSIGNED, AttemptState.LEASED}
# A map node's bar: one segment per element state, in this order, left to right.
BAR_ORDER = [s.value for s in AttemptState]
BAR_WIDTH = NODE_WIDTH - 16


@dataclass(frozen=True)
class PlacedNode:
    id: str
    task: str
    is_map: bool
    column: int
    row: int
    upstream: tuple[str, ...]
    dynamic_child: bool = False  # a node of a dynamic sub-DAG, known from its attempts

    @property
    def x(self) -> int:
        return MARGIN + self.column * COLUMN

    @property
    def y(self) -> int:
        return MARGIN + self.row * ROW


@dataclass(frozen=True)
class Layout:
    nodes: list[PlacedNode]
    width: int
    height: int


@dataclass(frozen=True)
class NodeState:
    """What a node shows: a state (an attempt state, `WAITING` before any attempt, `NOT_RUN`
    when the execution ended without one) and, for a map node, done/total elements."""

    state: str
    done: int | None = None
    total: int | None = None
    counts: tuple[tuple[str, int], ...] = ()  # a map node's elements per state

    def as_json(self) -> list[Any]:
        return [self.state, self.done, self.total, dict(self.counts)]


def _upstream_of(node: dict[str, Any]) -> list[str]:
    """The ids of the nodes a stored spec node reads, through `fleetflow.ir.Node.upstream`."""
    from fleetflow.ir import Node

    return Node.model_validate(node).upstream


def dynamic_nodes(spec: dict[str, Any], attempts: Sequence[AttemptPublic]) -> dict[str, str]:
    """The nodes of dynamic sub-DAGs that have attempts (`<dynamic node>/<its id>`, not in the
    spec), each with its task's name, in the order their attempts were made."""
    known = {n.get("id") for n in spec.get("nodes", []) if isinstance(n, dict)}
    found: dict[str, str] = {}
    for attempt in attempts:
        if attempt.node_id not in known and attempt.node_id not in found:
            found[attempt.node_id] = attempt.task_name
    return found


def layout(
    spec: dict[str, Any],
    dynamic: dict[str, str] | None = None,
    sub_dags: Mapping[str, SubDag] | None = None,
) -> Layout:
    """Place the nodes of a stored spec (validated when it was registered) in depth columns;
    within a column, sub-workflow nodes of one call together, else in spec order.

    `sub_dags` (built ones, by dynamic node) expand in place with their own edges: a
    sub-DAG's roots follow its dynamic node (an edge from it), and the nodes reading the
    dynamic node come after the whole sub-DAG (their edge still leaves the dynamic node).
    `dynamic` (see `dynamic_nodes`) adds the nodes of dynamic sub-DAGs not known otherwise:
    each after the node (a spec node or another dynamic one) whose id prefixes its own."""
    raw = [n for n in spec.get("nodes", []) if isinstance(n, dict) and "id" in n]
    ids = {n["id"] for n in raw}
    upstream = {n["id"]: [u for u in _upstream_of(n) if u in ids] for n in raw}
    after: dict[str, list[str]] = {}  # undrawn: a node placed after these too
    pending = dict(sub_dags or {})
    while pending:  # a nested sub-DAG once its dynamic node is placed
        ready_subs = [d for d in pending if d in ids]
        if not ready_subs:
            break
        for dynamic_id in ready_subs:
            sub = pending.pop(dynamic_id)
            inner = {n.id for n in sub.nodes} - ids
            readers = [n for n, ups in upstream.items() if dynamic_id in ups]
            for node in sub.nodes:
                if node.id not in inner:
                    continue
                raw.append(
                    {"id": node.id, "task": node.task, "dynamic_child": True}
                    | ({"map": {}} if node.is_map else {})
                )
                ids.add(node.id)
                ups = [u for u in node.upstream if u in inner]
                upstream[node.id] = ups or [dynamic_id]
            for reader in readers:
                after.setdefault(reader, []).extend(inner)
            for waiting in after.values():  # a nested sub-DAG: after it too
                if dynamic_id in waiting:
                    waiting.extend(inner)
    for node_id, task in (dynamic or {}).items():
        if node_id in ids:
            continue
        parent = _dynamic_parent(node_id, ids)
        raw.append({"id": node_id, "task": task, "dynamic_child": True})
        ids.add(node_id)
        upstream[node_id] = [parent] if parent else []
    depth: dict[str, int] = {}
    ordering = {n: set(u) | set(after.get(n, ())) for n, u in upstream.items()}
    remaining = {n: len(u) for n, u in ordering.items()}
    consumers: dict[str, list[str]] = {n: [] for n in upstream}
    for node, producers in ordering.items():
        for up in producers:
            consumers[up].append(node)
    ready = [n["id"] for n in raw if remaining[n["id"]] == 0]
    for node in ready:
        depth.setdefault(node, 0)
    while ready:  # Kahn's order: depth is one more than the deepest producer
        node = ready.pop()
        for consumer in consumers[node]:
            depth[consumer] = max(depth.get(consumer, 0), depth[node] + 1)
            remaining[consumer] -= 1
            if remaining[consumer] == 0:
                ready.append(consumer)
    order = {n["id"]: i for i, n in enumerate(raw)}
    columns: dict[int, list[str]] = {}
    for node_id in sorted(ids, key=lambda n: (_group(n), order[n])):
        columns.setdefault(depth.get(node_id, 0), []).append(node_id)
    rows = {node_id: row for column in columns.values() for row, node_id in enumerate(column)}
    placed = [
        PlacedNode(
            id=n["id"],
            task=str(n.get("task", "")),
            is_map=n.get("map") is not None,
            column=depth.get(n["id"], 0),
            row=rows[n["id"]],
            upstream=tuple(dict.fromkeys(upstream[n["id"]])),
            dynamic_child=bool(n.get("dynamic_child")),
        )
        for n in raw
    ]
    width = MARGIN * 2 + max((len(columns) - 1) * COLUMN + NODE_WIDTH, NODE_WIDTH)
    tallest = max((len(c) for c in columns.values()), default=1)
    height = MARGIN * 2 + (tallest - 1) * ROW + NODE_HEIGHT
    return Layout(placed, width, height)


def _dynamic_parent(node_id: str, ids: set[str]) -> str | None:
    """The longest id among `ids` that prefixes `node_id` (`a/b/c`: `a/b`, else `a`)."""
    prefix = node_id
    while SEPARATOR in prefix:
        prefix = prefix.rpartition(SEPARATOR)[0]
        if prefix in ids:
            return prefix
    return None


def _group(node_id: str) -> str:
    return node_id.rpartition(SEPARATOR)[0]


def node_states(
    node_ids: Iterable[str], attempts: Sequence[AttemptPublic], execution: ExecutionState
) -> dict[str, NodeState]:
    """Each node's state from its attempts (the newest attempt of each map element)."""
    latest: dict[str, dict[int | None, AttemptPublic]] = {}
    for attempt in attempts:
        elements = latest.setdefault(attempt.node_id, {})
        known = elements.get(attempt.map_index)
        if known is None or attempt.attempt_number >= known.attempt_number:
            elements[attempt.map_index] = attempt
    states: dict[str, NodeState] = {}
    for node_id in node_ids:
        elements = latest.get(node_id, {})
        if not elements:
            states[node_id] = NodeState("NOT_RUN" if execution.terminal else "WAITING")
            continue
        shown = [a.status for a in elements.values()]
        indexed = [i for i in elements if i is not None]
        if not indexed:
            states[node_id] = NodeState(shown[0].value)
            continue
        counts: dict[str, int] = {}
        for element in shown:
            counts[element.value] = counts.get(element.value, 0) + 1
        states[node_id] = NodeState(
            _combined(shown),
            done=counts.get(AttemptState.SUCCEEDED.value, 0),
            total=len(indexed),
            counts=tuple(sorted(counts.items(), key=lambda c: BAR_ORDER.index(c[0]))),
        )
    return states


def _combined(states: list[AttemptState]) -> str:
    """A map node's state from its elements' states."""
    if AttemptState.RUNNING in states:
        return AttemptState.RUNNING.value
    if any(s in _ACTIVE for s in states):
        return AttemptState.PENDING.value
    for final in (
        AttemptState.FAILED,
        AttemptState.LOST,
        AttemptState.PREEMPTED,
        AttemptState.CANCELLED,
    ):
        if final in states:
            return final.value
    if all(s is AttemptState.SKIPPED for s in states):
        return AttemptState.SKIPPED.value
    return AttemptState.SUCCEEDED.value


def _short(text: str) -> str:
    return text if len(text) <= _LABEL_CHARS else "…" + text[-(_LABEL_CHARS - 1) :]


def render_svg(placed: Layout, states: dict[str, NodeState]) -> str:
    """The DAG as an `<svg>`: one `<g class=node data-node=ID data-state=STATE>` per node."""
    by_id = {n.id: n for n in placed.nodes}
    edges = []
    for node in placed.nodes:
        for up in node.upstream:
            source = by_id[up]
            x1, y1 = source.x + NODE_WIDTH, source.y + NODE_HEIGHT // 2
            x2, y2 = node.x, node.y + NODE_HEIGHT // 2
            bend = (x2 - x1) / 2
            edges.append(
                f'<path class=edge d="M{x1} {y1} C{x1 + bend:.0f} {y1} {x2 - bend:.0f} {y2} '
                f'{x2} {y2}"/>'
            )
    shapes = []
    for node in placed.nodes:
        state = states.get(node.id, NodeState("WAITING"))
        prefix, _, own = node.id.rpartition(SEPARATOR)
        classes = "node group" if prefix else "node"
        if node.dynamic_child:
            classes += " dynamic"
        count = (
            f"{state.done}/{state.total}"
            if state.total is not None
            else "map"
            if node.is_map
            else ""
        )
        task = node.task.rpartition(".")[2]
        above = f"{prefix}{SEPARATOR}" if prefix else task
        bar = _element_bar(state) if node.is_map else ""
        shapes.append(
            f'<g class="{classes}" data-node="{escape(node.id)}" data-state="{state.state}" '
            f'transform="translate({node.x} {node.y})"><title>{escape(node.id)} '
            f"({escape(node.task)})</title>"
            f'<rect width="{NODE_WIDTH}" height="{NODE_HEIGHT}" rx="6"/>'
            f'<text class=sub x="8" y="16">{escape(_short(above))}</text>'
            f'<text class=name x="8" y="34">{escape(_short(own))}</text>'
            f'<text class=count x="{NODE_WIDTH - 8}" y="34" text-anchor="end">{count}</text>'
            f"{bar}</g>"
        )
    return (
        f'<svg class=dag xmlns="http://www.w3.org/2000/svg" width="{placed.width}" '
        f'height="{placed.height}" viewBox="0 0 {placed.width} {placed.height}" role=img '
        f'aria-label="workflow graph">{"".join(edges)}{"".join(shapes)}</svg>'
    )


def _element_bar(state: NodeState) -> str:
    """A map node's elements as one bar: a segment per element state, as wide as its share
    (the page's script redraws the segments from the snapshot's counts)."""
    total = sum(n for _, n in state.counts)
    x = 8.0
    segments = []
    for name, n in state.counts:
        width = BAR_WIDTH * n / total if total else 0.0
        segments.append(
            f'<rect class=seg data-state="{name}" x="{x:.1f}" y="39" width="{width:.1f}" '
            f'height="4"><title>{n} {name.lower()}</title></rect>'
        )
        x += width
    return f'<g class=bar data-width="{BAR_WIDTH}">{"".join(segments)}</g>'
