"""Artifacts and their lineage: recording the blobs an attempt produced with the blobs it read,
and walking that graph upstream or downstream, bounded.

Recording is two bulk `INSERT … ON CONFLICT DO NOTHING`, no read: an artifact's id is derived
from (tenant, uri), and an edge names its input by URI, resolved to that input's artifact only
when the graph is read. The artifacts' insert returns the ids it inserted, and only those get
edges: recording twice writes nothing twice, and a blob keeps its first producer's inputs.

A walk reads one level at a time (two queries per level), stops at `depth` levels and at
`limit` artifacts, and never visits an artifact twice: the graph has no cycle by construction
(an attempt's inputs existed before it ran), but a walk does not rely on it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from control_plane.db.models import Artifact, ArtifactInput, utcnow
from control_plane.db.repositories._insert import insert_ignoring_conflicts

Direction = Literal["upstream", "downstream", "both"]

_CHUNK = 500  # URIs or ids per `IN (…)`: well below every backend's parameter limit
MAX_URI = 1024
"""The longest blob URI recorded (the columns' length); a longer one is left out, never a
failed write: lineage must not fail the report it is recorded with."""
MAX_NAME = 512


def _storable(text: str) -> str:
    """`text` as every backend stores it: UTF-8 (a lone surrogate becomes `?`) without NUL,
    which PostgreSQL refuses. Names and URIs come from task outputs: the task's word."""
    return text.encode("utf-8", "replace").decode("utf-8").replace("\x00", "?")


def artifact_id(tenant_id: str, uri: str) -> str:
    """The id of the tenant's artifact of blob `uri`: the same every time it is recorded."""
    digest = hashlib.sha256(f"{tenant_id}\0{uri}".encode()).hexdigest()
    return f"art-{digest[:32]}"


@dataclass(frozen=True)
class NewArtifact:
    """One blob to record, with its producer and the blobs it was computed from."""

    uri: str
    kind: str
    execution_id: str
    node_id: str
    output_name: str
    attempt_id: str | None = None
    element_index: int | None = None
    task_name: str | None = None
    task_digest: str | None = None
    inputs: tuple[tuple[str, str], ...] = ()  # (input name, input blob uri)


def record(session: Session, tenant_id: str, artifacts: Sequence[NewArtifact]) -> None:
    """Record `artifacts` and their input edges: one insert for the artifacts and one for the
    edges, each row unless it exists (the first producer recorded stays the producer)."""
    if not artifacts:
        return
    now = utcnow()
    rows: dict[str, dict[str, Any]] = {}
    edges: dict[tuple[str, str, str], dict[str, Any]] = {}
    for new in artifacts:
        if len(new.uri) > MAX_URI or _storable(new.uri) != new.uri:
            continue  # a URI no blob of ours has
        identifier = artifact_id(tenant_id, new.uri)
        if identifier in rows:  # the same blob twice: the first is kept
            continue
        rows[identifier] = {
            "id": identifier,
            "tenant_id": tenant_id,
            "uri": new.uri,
            "kind": new.kind,
            "execution_id": new.execution_id,
            "node_id": new.node_id,
            "attempt_id": new.attempt_id,
            "element_index": new.element_index,
            "task_name": new.task_name,
            "task_digest": new.task_digest,
            "output_name": _storable(new.output_name)[:MAX_NAME],
            "created_at": now,
        }
        for name, uri in new.inputs:
            if uri != new.uri and len(uri) <= MAX_URI and _storable(uri) == uri:
                stored_name = _storable(name)[:MAX_NAME]  # (a blob is never its own input)
                edges[(identifier, stored_name, uri)] = {
                    "artifact_id": identifier,
                    "input_name": stored_name,
                    "input_uri": uri,
                    "tenant_id": tenant_id,
                }
    if not rows:
        return
    inserted = _insert_returning_ids(session, list(rows.values()))
    # Only the artifacts this call recorded get edges: a blob already recorded keeps its
    # producer's inputs, and a repeat (its artifacts all there) writes nothing at all.
    insert_ignoring_conflicts(
        session, ArtifactInput, [edge for key, edge in edges.items() if key[0] in inserted]
    )


def _insert_returning_ids(session: Session, rows: list[dict[str, Any]]) -> set[str]:
    """Insert the artifact rows that do not exist yet (one statement); the ids inserted."""
    dialect = session.get_bind().dialect.name
    statement: postgresql.Insert | sqlite.Insert
    if dialect == "postgresql":
        statement = postgresql.insert(Artifact).on_conflict_do_nothing()
    elif dialect == "sqlite":
        statement = sqlite.insert(Artifact).on_conflict_do_nothing()
    else:
        raise ValueError(f"unsupported database backend {dialect!r}: use SQLite or PostgreSQL")
    return set(session.scalars(statement.returning(Artifact.id), rows))


def get(session: Session, tenant_id: str, identifier: str) -> Artifact | None:
    """The tenant's artifact with this id; None for another tenant's, as for none."""
    return session.scalar(
        select(Artifact).where(Artifact.id == identifier, Artifact.tenant_id == tenant_id)
    )


def by_uri(session: Session, tenant_id: str, uri: str) -> Artifact | None:
    return session.scalar(
        select(Artifact).where(Artifact.tenant_id == tenant_id, Artifact.uri == uri)
    )


def of_execution(session: Session, tenant_id: str, execution_id: str) -> list[Artifact]:
    """The artifacts an execution produced (its inputs' first), in the order recorded."""
    return list(
        session.scalars(
            select(Artifact)
            .where(Artifact.tenant_id == tenant_id, Artifact.execution_id == execution_id)
            .order_by(Artifact.created_at, Artifact.node_id, Artifact.output_name)
        )
    )


def _chunks(items: Sequence[str]) -> Iterable[list[str]]:
    for start in range(0, len(items), _CHUNK):
        yield list(items[start : start + _CHUNK])


@dataclass(frozen=True)
class Edge:
    """`downstream` was computed from the blob `upstream_uri`, its input `input_name`;
    `upstream`, that blob's artifact (None when the blob has none recorded: written before
    lineage was, or by no task)."""

    upstream_uri: str
    upstream: str | None
    downstream: str
    input_name: str


@dataclass
class Graph:
    """What a walk found: artifacts by id (the start among them), the edges between them and
    to blobs without an artifact, and whether a bound stopped it early (`truncated`)."""

    start: Artifact
    artifacts: dict[str, Artifact] = field(default_factory=dict)
    edges: list[Edge] = field(default_factory=list)
    truncated: bool = False
    depth_reached: int = 0


def _upstream_level(
    session: Session, tenant_id: str, frontier: Sequence[Artifact]
) -> tuple[list[Edge], list[Artifact]]:
    """The edges into `frontier` and the artifacts at their other end."""
    ids = [artifact.id for artifact in frontier]
    inputs: list[ArtifactInput] = []
    for chunk in _chunks(ids):
        inputs.extend(
            session.scalars(select(ArtifactInput).where(ArtifactInput.artifact_id.in_(chunk)))
        )
    uris = sorted({edge.input_uri for edge in inputs})
    found: dict[str, Artifact] = {}
    for chunk in _chunks(uris):
        for artifact in session.scalars(
            select(Artifact).where(Artifact.tenant_id == tenant_id, Artifact.uri.in_(chunk))
        ):
            found[artifact.uri] = artifact
    edges = [
        Edge(
            upstream_uri=edge.input_uri,
            upstream=found[edge.input_uri].id if edge.input_uri in found else None,
            downstream=edge.artifact_id,
            input_name=edge.input_name,
        )
        for edge in inputs
    ]
    return edges, list(found.values())


def _downstream_level(
    session: Session, tenant_id: str, frontier: Sequence[Artifact]
) -> tuple[list[Edge], list[Artifact]]:
    """The edges out of `frontier` and the artifacts at their other end."""
    by_uri = {artifact.uri: artifact for artifact in frontier}
    inputs: list[ArtifactInput] = []
    for chunk in _chunks(sorted(by_uri)):
        inputs.extend(
            session.scalars(
                select(ArtifactInput).where(
                    ArtifactInput.tenant_id == tenant_id, ArtifactInput.input_uri.in_(chunk)
                )
            )
        )
    ids = sorted({edge.artifact_id for edge in inputs})
    found: list[Artifact] = []
    for chunk in _chunks(ids):
        found.extend(
            session.scalars(
                select(Artifact).where(Artifact.tenant_id == tenant_id, Artifact.id.in_(chunk))
            )
        )
    edges = [
        Edge(
            upstream_uri=edge.input_uri,
            upstream=by_uri[edge.input_uri].id,
            downstream=edge.artifact_id,
            input_name=edge.input_name,
        )
        for edge in inputs
    ]
    return edges, found


def lineage(
    session: Session,
    tenant_id: str,
    start: Artifact,
    *,
    direction: Direction = "both",
    depth: int = 5,
    limit: int = 500,
) -> Graph:
    """The artifacts `depth` levels upstream (what `start` was computed from, and so on)
    and/or downstream (what was computed from it) of `start`, at most `limit` of them besides
    it; `truncated` when `limit` stopped the walk with artifacts left unvisited. Only the
    tenant's artifacts: edges are followed within `tenant_id` alone."""
    if depth < 0 or limit < 1:
        raise ValueError("depth must be >= 0 and limit >= 1")
    graph = Graph(start=start, artifacts={start.id: start})
    directions: list[Literal["upstream", "downstream"]] = (
        ["upstream", "downstream"] if direction == "both" else [direction]
    )
    seen_edges: set[tuple[str, str, str]] = set()
    for way in directions:
        frontier: list[Artifact] = [start]
        visited = {start.id}
        level = 0
        while frontier and level < depth and not graph.truncated:
            level += 1
            step = _upstream_level if way == "upstream" else _downstream_level
            edges, found = step(session, tenant_id, frontier)
            for edge in edges:
                key = (edge.upstream_uri, edge.downstream, edge.input_name)
                if key not in seen_edges:
                    seen_edges.add(key)
                    graph.edges.append(edge)
            frontier = []
            for artifact in sorted(found, key=lambda a: a.id):
                if artifact.id in visited:  # never again: no walk loops, even on a cycle
                    continue
                if len(graph.artifacts) > limit and artifact.id not in graph.artifacts:
                    graph.truncated = True
                    break
                visited.add(artifact.id)
                graph.artifacts[artifact.id] = artifact
                frontier.append(artifact)
            graph.depth_reached = max(graph.depth_reached, level if frontier else level - 1)
    # Edges whose far end was cut off by the limit would name an artifact not in the answer.
    graph.edges = [
        edge
        for edge in graph.edges
        if edge.downstream in graph.artifacts
        and (edge.upstream is None or edge.upstream in graph.artifacts)
    ]
    return graph
