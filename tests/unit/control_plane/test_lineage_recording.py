"""What a succeeded attempt records as its artifacts (`AttemptLineage.record`), on SQLite and
PostgreSQL with a local blob store: the blobs it wrote, with its input blobs as their inputs;
never a blob it passed through or one named to climb out of its prefix; nothing twice; nothing
read at all for a task whose outputs cannot hold blobs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from control_plane.db.models import Artifact, ArtifactInput, TaskAttempt
from control_plane.db.repositories import artifacts as artifacts_repo
from control_plane.db.repositories import attempts as attempts_repo
from control_plane.db.repositories import executions as executions_repo
from control_plane.db.repositories.tenants import get_or_create_tenant
from control_plane.db.repositories.workflows import register_workflow_version
from control_plane.services.lineage import AttemptLineage
from fleetflow import ir
from fleetflow.storage import LocalBlobStore

FILE = ir.LiteralType(kind=ir.TypeKind.FILE)
INT = ir.LiteralType(kind=ir.TypeKind.INTEGER)


def _task(
    name: str, inputs: dict[str, ir.LiteralType], outputs: dict[str, ir.LiteralType]
) -> ir.TaskSpec:
    return ir.TaskSpec(
        name=name,
        module="m",
        function=name.rsplit(".", 1)[-1],
        interface=ir.TypedInterface(
            inputs=[ir.Variable(name=n, type=t) for n, t in inputs.items()],
            outputs=[ir.Variable(name=n, type=t) for n, t in outputs.items()],
        ),
    )


COPY = _task("m.copy", {"src": FILE, "n": INT}, {"o0": FILE, "o1": FILE, "o2": FILE, "o3": INT})
COUNT = _task("m.count", {"n": INT}, {"o0": INT})


def _attempt(
    session: Session, blobs: LocalBlobStore, spec: ir.WorkflowSpec, task: str, map_index: int
) -> TaskAttempt:
    tenant = get_or_create_tenant(session, "acme")
    version = register_workflow_version(session, tenant.id, spec, "b" * 64, "v1")
    execution = executions_repo.create_execution(session, tenant.id, version, {"n": 1})
    prefix = f"tenants/acme/executions/{execution.id}/n0-copy/{map_index}/1"
    (attempt,) = attempts_repo.create_attempts(
        session,
        execution.id,
        [
            attempts_repo.NewAttempt(
                node_id="n0-copy",
                map_index=map_index,
                task_name=task,
                attempt_number=1,
                inputs_uri=blobs.uri(f"{prefix}/inputs.json"),
                outputs_uri=blobs.uri(f"{prefix}/outputs.json"),
            )
        ],
    )
    session.commit()
    return attempt


@pytest.fixture
def spec(workflow_spec: ir.WorkflowSpec) -> ir.WorkflowSpec:
    return workflow_spec.model_copy(
        update={"tasks": {**workflow_spec.tasks, COPY.name: COPY, COUNT.name: COUNT}}
    )


def test_records_what_the_attempt_wrote_with_its_inputs_once(
    session_factory: sessionmaker[Session], tmp_path: Path, spec: ir.WorkflowSpec
) -> None:
    blobs = LocalBlobStore(tmp_path / "blobs")
    lineage = AttemptLineage(blobs)
    with session_factory() as session:
        attempt = _attempt(session, blobs, spec, COPY.name, 4)
        own = attempt.outputs_uri.rpartition("/")[0]
        upload = blobs.uri("tenants/acme/uploads/files/abc/raw.txt")
        blobs.put(
            attempt.inputs_uri.split(blobs.root_uri + "/", 1)[1],
            json.dumps({"src": {"uri": upload, "name": "raw.txt"}, "n": 2}).encode(),
        )
        outputs = {
            "o0": {"uri": f"{own}/files/x/model.bin", "name": "model.bin"},
            "o1": {"uri": upload, "name": "raw.txt"},  # its input, passed through
            "o2": {"uri": f"{own}/../../../../../other/secret", "name": "secret"},
            "o3": 7,
        }
        blobs.put(
            attempt.outputs_uri.split(blobs.root_uri + "/", 1)[1], json.dumps(outputs).encode()
        )
        assert lineage.record(session, attempt) == 1
        session.commit()
        assert lineage.record(session, attempt) == 1  # a repeat finds it, writes nothing
        session.commit()
        (artifact,) = session.scalars(select(Artifact)).all()
        assert (artifact.uri, artifact.kind, artifact.output_name) == (
            f"{own}/files/x/model.bin",
            "file",
            "o0",
        )
        assert artifact.attempt_id == attempt.id and artifact.element_index == 4
        assert artifact.task_name == COPY.name and artifact.task_digest
        assert artifact.id == artifacts_repo.artifact_id(artifact.tenant_id, artifact.uri)
        edges = session.scalars(select(ArtifactInput)).all()
        assert [(e.input_name, e.input_uri) for e in edges] == [("src", upload)]


def test_reads_nothing_for_a_task_without_blob_outputs_and_survives_a_missing_document(
    session_factory: sessionmaker[Session], tmp_path: Path, spec: ir.WorkflowSpec
) -> None:
    blobs = LocalBlobStore(tmp_path / "blobs")
    lineage = AttemptLineage(blobs)
    with session_factory() as session:
        counted = _attempt(session, blobs, spec, COUNT.name, -1)
        # No outputs document exists: a read would fail; none is made.
        assert lineage.record(session, counted) == 0
        copied = _attempt(session, blobs, spec, COPY.name, -1)
        assert lineage.record(session, copied) == 0  # logged, never raised
        assert session.scalar(select(func.count()).select_from(Artifact)) == 0
