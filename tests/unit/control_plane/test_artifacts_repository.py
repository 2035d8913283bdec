"""The artifacts repository on SQLite and PostgreSQL: recording is idempotent, lineage walks
are bounded by depth and by a limit, never loop (even on a cycle planted by hand), and stay in
their tenant."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from control_plane.db.models import Artifact, ArtifactInput
from control_plane.db.repositories import artifacts as repo
from control_plane.db.repositories.tenants import get_or_create_tenant
from control_plane.db.session import make_engine, make_session_factory
from control_plane.services.lineage import blobs_in
from fleetflow import ir


@pytest.fixture
def session(database_url: str) -> Iterator[Session]:
    engine = make_engine(database_url)
    with make_session_factory(engine)() as session:
        yield session
    engine.dispose()


def _new(uri: str, node: str, *inputs: str, element: int | None = None) -> repo.NewArtifact:
    return repo.NewArtifact(
        uri=uri,
        kind="file",
        execution_id="ex-1",
        node_id=node,
        output_name="o0",
        attempt_id=f"at-{node}",
        element_index=element,
        task_name=f"flows.{node}",
        task_digest="d" * 64,
        inputs=tuple((f"x{i}", uri) for i, uri in enumerate(inputs)),
    )


def _chain(session: Session, tenant_id: str) -> None:
    """input -> a -> b -> c, and a -> side."""
    repo.record(
        session,
        tenant_id,
        [
            repo.NewArtifact(
                uri="file:///s/in",
                kind="file",
                execution_id="ex-1",
                node_id="inputs",
                output_name="data",
            )
        ],
    )
    repo.record(session, tenant_id, [_new("file:///s/a", "a", "file:///s/in")])
    repo.record(session, tenant_id, [_new("file:///s/b", "b", "file:///s/a")])
    repo.record(session, tenant_id, [_new("file:///s/c", "c", "file:///s/b", "file:///s/gone")])
    repo.record(session, tenant_id, [_new("file:///s/side", "side", "file:///s/a")])
    session.commit()


def _uris(graph: repo.Graph) -> set[str]:
    return {artifact.uri for artifact in graph.artifacts.values()}


def test_recording_twice_writes_nothing_twice_and_the_first_producer_stays(
    session: Session,
) -> None:
    tenant = get_or_create_tenant(session, "t")
    session.commit()
    new = _new("file:///s/a", "a", "file:///s/in", "file:///s/a")  # itself: never an edge
    repo.record(session, tenant.id, [new, new])
    repo.record(session, tenant.id, [new])
    repo.record(session, tenant.id, [_new("file:///s/a", "later", "file:///s/other")])
    session.commit()
    assert session.scalar(select(func.count()).select_from(Artifact)) == 1
    found = repo.by_uri(session, tenant.id, "file:///s/a")
    assert found is not None and found.node_id == "a"
    assert found.id == repo.artifact_id(tenant.id, "file:///s/a")
    edges = session.scalars(select(ArtifactInput)).all()
    assert [(e.artifact_id, e.input_name, e.input_uri) for e in edges] == [
        (found.id, "x0", "file:///s/in")
    ]


def test_too_long_uris_and_names_are_left_out_or_cut_never_a_failed_write(
    session: Session,
) -> None:
    tenant = get_or_create_tenant(session, "t")
    session.commit()
    long_uri = "file:///s/" + "x" * repo.MAX_URI
    repo.record(session, tenant.id, [_new(long_uri, "a")])
    named = repo.NewArtifact(
        uri="file:///s/ok",
        kind="file",
        execution_id="ex-1",
        node_id="a",
        output_name="o" * 2000,
        inputs=(("i" * 2000, "file:///s/in"), ("x", long_uri)),
    )
    repo.record(session, tenant.id, [named])
    session.commit()
    # NUL and lone surrogates (a task may write any JSON string) never reach the database.
    repo.record(session, tenant.id, [_new("file:///s/nul\x00", "b"), _new("file:///s/\ud800", "c")])
    odd = repo.NewArtifact(
        uri="file:///s/odd",
        kind="file",
        execution_id="ex-1",
        node_id="d",
        output_name="o\x00[\ud800]",
        inputs=(("i\x00", "file:///s/in"),),
    )
    repo.record(session, tenant.id, [odd])
    session.commit()
    found = repo.by_uri(session, tenant.id, "file:///s/odd")
    assert found is not None and found.output_name == "o?[?]"
    assert session.scalar(select(func.count()).select_from(Artifact)) == 2
    kept = repo.by_uri(session, tenant.id, "file:///s/ok")
    assert kept is not None and len(kept.output_name) == repo.MAX_NAME
    names = sorted(e.input_name for e in session.scalars(select(ArtifactInput)))
    assert names == sorted(["i" * repo.MAX_NAME, "i?"])


def test_upstream_and_downstream_follow_the_chain_within_depth(session: Session) -> None:
    tenant = get_or_create_tenant(session, "t")
    session.commit()
    _chain(session, tenant.id)
    c = repo.by_uri(session, tenant.id, "file:///s/c")
    assert c is not None
    up = repo.lineage(session, tenant.id, c, direction="upstream", depth=5)
    assert _uris(up) == {"file:///s/c", "file:///s/b", "file:///s/a", "file:///s/in"}
    assert not up.truncated
    # A blob with no artifact recorded is an edge with no upstream artifact.
    assert any(e.upstream is None and e.upstream_uri == "file:///s/gone" for e in up.edges)
    one = repo.lineage(session, tenant.id, c, direction="upstream", depth=1)
    assert _uris(one) == {"file:///s/c", "file:///s/b"}
    start = repo.by_uri(session, tenant.id, "file:///s/in")
    assert start is not None
    down = repo.lineage(session, tenant.id, start, direction="downstream", depth=10)
    assert _uris(down) == {
        "file:///s/in",
        "file:///s/a",
        "file:///s/b",
        "file:///s/c",
        "file:///s/side",
    }
    # Every edge of the answer joins two artifacts of the answer.
    assert all(e.upstream in down.artifacts and e.downstream in down.artifacts for e in down.edges)


def test_a_limit_truncates_the_walk_and_says_so(session: Session) -> None:
    tenant = get_or_create_tenant(session, "t")
    session.commit()
    repo.record(session, tenant.id, [_new("file:///s/root", "root")])
    repo.record(
        session,
        tenant.id,
        [_new(f"file:///s/out{i}", "fan", "file:///s/root", element=i) for i in range(12)],
    )
    session.commit()
    root = repo.by_uri(session, tenant.id, "file:///s/root")
    assert root is not None
    graph = repo.lineage(session, tenant.id, root, direction="downstream", depth=3, limit=5)
    assert graph.truncated
    assert len(graph.artifacts) <= 6  # the start and at most `limit` more
    assert all(e.downstream in graph.artifacts for e in graph.edges)
    full = repo.lineage(session, tenant.id, root, direction="downstream", depth=3, limit=50)
    assert not full.truncated and len(full.artifacts) == 13
    with pytest.raises(ValueError, match="depth"):
        repo.lineage(session, tenant.id, root, depth=-1)


def test_a_cycle_planted_by_hand_is_walked_once(session: Session) -> None:
    tenant = get_or_create_tenant(session, "t")
    session.commit()
    repo.record(session, tenant.id, [_new("file:///s/p", "p", "file:///s/q")])
    repo.record(session, tenant.id, [_new("file:///s/q", "q", "file:///s/p")])
    session.commit()
    p = repo.by_uri(session, tenant.id, "file:///s/p")
    assert p is not None
    for direction in ("upstream", "downstream", "both"):
        graph = repo.lineage(session, tenant.id, p, direction=direction, depth=20)  # type: ignore[arg-type]
        assert _uris(graph) == {"file:///s/p", "file:///s/q"}
        assert len(graph.edges) == 2


def test_lineage_stays_in_its_tenant(session: Session) -> None:
    mine = get_or_create_tenant(session, "mine")
    theirs = get_or_create_tenant(session, "theirs")
    session.commit()
    _chain(session, mine.id)
    # The other tenant records the same URIs (it cannot read them, but it may name them).
    repo.record(session, theirs.id, [_new("file:///s/x", "x", "file:///s/c")])
    repo.record(session, theirs.id, [_new("file:///s/b", "b2", "file:///s/secret")])
    session.commit()
    c = repo.by_uri(session, mine.id, "file:///s/c")
    assert c is not None
    graph = repo.lineage(session, mine.id, c, direction="both", depth=10)
    assert {a.tenant_id for a in graph.artifacts.values()} == {mine.id}
    assert "file:///s/x" not in _uris(graph)
    assert all(e.upstream_uri != "file:///s/secret" for e in graph.edges)
    assert repo.get(session, theirs.id, c.id) is None
    assert repo.by_uri(session, theirs.id, "file:///s/c") is None


def test_blobs_are_found_at_any_depth_of_a_value_with_their_kinds() -> None:
    file_type = ir.LiteralType(kind=ir.TypeKind.FILE)
    struct = ir.LiteralType(
        kind=ir.TypeKind.STRUCT,
        name="m.Result",
        fields={
            "model": file_type,
            "table": ir.LiteralType(kind=ir.TypeKind.DATAFRAME),
            "shards": ir.LiteralType(
                kind=ir.TypeKind.LIST, item=ir.LiteralType(kind=ir.TypeKind.DIRECTORY)
            ),
            "n": ir.LiteralType(kind=ir.TypeKind.INTEGER),
        },
    )
    value = {
        "model": {"uri": "file:///m", "name": "m"},
        "table": {"uri": "file:///t.parquet", "name": "t.parquet"},
        "shards": [{"uri": "file:///d0"}, {"uri": "file:///d1"}],
        "n": 3,
    }
    assert list(blobs_in(value, struct, "o0")) == [
        ("o0.model", "file", "file:///m"),
        ("o0.table", "dataframe", "file:///t.parquet"),
        ("o0.shards[0]", "directory", "file:///d0"),
        ("o0.shards[1]", "directory", "file:///d1"),
    ]
    # What does not have its type's shape holds no blobs.
    assert list(blobs_in({"model": "nope", "shards": "x"}, struct, "o0")) == []
