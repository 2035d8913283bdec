"""The REST API on a migrated database (SQLite and PostgreSQL) and a real local blob store."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from control_plane.api.app import create_app
from control_plane.blob_layout import bundle_key
from control_plane.db.models import Cluster, Execution, TaskAttempt
from control_plane.db.repositories import tenancy
from control_plane.db.repositories.executions import create_execution
from control_plane.db.repositories.tenants import get_or_create_tenant
from control_plane.db.repositories.workflows import register_workflow_version
from control_plane.db.session import make_engine, make_session_factory
from control_plane.orchestration.activities import ExecutionActivities
from control_plane.services.executions import RootsFirstLauncher
from control_plane.settings import ApiSettings, DatabaseSettings, Settings
from fleetflow.ir import WorkflowSpec
from fleetflow.storage import LocalBlobStore
from tests.integration.auth import admin_client

WORKFLOW = "examples.train.pipeline"


class FakeLauncher:
    """Stands in for the Temporal launcher: records which executions it was asked to start."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.cancelled: list[str] = []
        self.unavailable = False

    async def start_execution(self, execution_id: str) -> bool:
        if self.unavailable:
            raise ConnectionError("temporal is down")
        first = execution_id not in self.started
        self.started.append(execution_id)
        return first

    async def cancel_execution(self, execution_id: str) -> None:
        if self.unavailable:
            raise ConnectionError("temporal is down")
        self.cancelled.append(execution_id)


def make_bundle(content: str = "def prepare(n): ...\n") -> tuple[bytes, str]:
    """A real tar.gz code bundle and its sha256."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        data = content.encode()
        info = tarfile.TarInfo("examples/train.py")
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    body = buffer.getvalue()
    return body, hashlib.sha256(body).hexdigest()


def _app(
    session_factory: sessionmaker[Session],
    launcher: FakeLauncher,
    blob_store: LocalBlobStore,
    **kwargs: Any,
) -> FastAPI:
    settings = Settings(
        database=DatabaseSettings(url="sqlite://"), api=ApiSettings(default_tenant="acme")
    )
    return create_app(
        settings,
        session_factory=session_factory,
        launcher=launcher,
        blob_store=blob_store,
        **kwargs,
    )


@pytest.fixture
def client(
    session_factory: sessionmaker[Session], launcher: FakeLauncher, blob_store: LocalBlobStore
) -> Iterator[TestClient]:
    with admin_client(_app(session_factory, launcher, blob_store)) as test_client:
        yield test_client


def upload_bundle(client: TestClient, content: str = "def prepare(n): ...\n") -> str:
    body, digest = make_bundle(content)
    response = client.put(f"/api/v1/bundles/{digest}", content=body)
    assert response.status_code in (200, 201), response.text
    return digest


def register(
    client: TestClient, spec: WorkflowSpec, digest: str, version: str | None = None
) -> dict[str, Any]:
    response = client.post(
        "/api/v1/workflows",
        json={"spec": spec.model_dump(mode="json"), "bundle_digest": digest, "version": version},
    )
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


@pytest.fixture
def registered(client: TestClient, workflow_spec: WorkflowSpec) -> dict[str, Any]:
    return register(client, workflow_spec, upload_bundle(client))


def assert_error(response: Any, status: int, field: str | None = None) -> dict[str, Any]:
    """The response is an error in the API's one shape, naming `field` if given."""
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert isinstance(body["detail"], str) and body["detail"]
    assert set(body) <= {"detail", "errors"}
    if field is not None:
        assert field in [error["field"] for error in body["errors"]], body
    return body


# --- health -------------------------------------------------------------------------------


def test_health_and_readiness(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ok"}


def test_not_ready_without_database(tmp_path: Path, launcher: FakeLauncher) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'missing' / 'dir' / 'fleetflow.db'}")
    app = _app(make_session_factory(engine), launcher, LocalBlobStore(tmp_path / "blobs"))
    with TestClient(app) as client:
        assert client.get("/healthz").status_code == 200
        assert assert_error(client.get("/readyz"), 503)["detail"] == "database unreachable"
    engine.dispose()


def test_openapi_is_published(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/api/v1/executions", "/api/v1/workflows", "/api/v1/bundles/{digest}"} <= set(paths)


# --- bundles ------------------------------------------------------------------------------


def test_bundle_upload_is_idempotent_and_checkable(
    client: TestClient, blob_store: LocalBlobStore
) -> None:
    body, digest = make_bundle()
    url = f"/api/v1/bundles/{digest}"
    assert client.head(url).status_code == 404
    created = client.put(url, content=body)
    assert created.status_code == 201
    assert created.json() == {"digest": digest, "size_bytes": len(body)}
    assert client.head(url).status_code == 200
    assert client.put(url, content=body).status_code == 200
    assert blob_store.get(blob_store.uri(bundle_key("acme", digest))) == body


def test_bundle_digest_mismatch_is_rejected(client: TestClient) -> None:
    body, _ = make_bundle()
    _, other_digest = make_bundle("something else")
    response = client.put(f"/api/v1/bundles/{other_digest}", content=body)
    assert "digest mismatch" in assert_error(response, 422, "digest")["detail"]
    assert client.head(f"/api/v1/bundles/{other_digest}").status_code == 404


def test_bundle_must_be_gzip(client: TestClient) -> None:
    body = b"plain text"
    response = client.put(f"/api/v1/bundles/{hashlib.sha256(body).hexdigest()}", content=body)
    assert "gzip" in assert_error(response, 422)["detail"]


def test_bundle_digest_must_be_sha256_hex(client: TestClient) -> None:
    assert_error(client.put("/api/v1/bundles/not-a-digest", content=b"x"), 422)
    assert_error(client.put(f"/api/v1/bundles/{'A' * 64}", content=b"x"), 422, "path.digest")


def test_bundle_size_limit(
    session_factory: sessionmaker[Session], launcher: FakeLauncher, blob_store: LocalBlobStore
) -> None:
    body, digest = make_bundle("x" * 10_000)
    app = _app(session_factory, launcher, blob_store, max_bundle_bytes=len(body) - 1)
    with admin_client(app) as client:
        assert_error(client.put(f"/api/v1/bundles/{digest}", content=body), 413)

        def chunked() -> Iterator[bytes]:  # no Content-Length: the limit applies while reading
            yield body[:100]
            yield body[100:]

        assert_error(client.put(f"/api/v1/bundles/{digest}", content=chunked()), 413)
    assert not blob_store.exists(blob_store.uri(bundle_key("acme", digest)))


# --- workflows ----------------------------------------------------------------------------


def test_register_get_and_list_workflows(client: TestClient, workflow_spec: WorkflowSpec) -> None:
    digest = upload_bundle(client)
    created = register(client, workflow_spec, digest)
    assert created["name"] == WORKFLOW
    assert created["bundle_digest"] == digest
    assert len(created["version"]) == 12
    assert created["interface"] == workflow_spec.interface.model_dump(mode="json")
    assert created["created_at"].endswith(("Z", "+00:00"))

    fetched = client.get(f"/api/v1/workflows/{WORKFLOW}/versions/{created['version']}")
    assert fetched.status_code == 200
    assert fetched.json() == created
    assert client.get("/api/v1/workflows").json() == [created]
    assert client.get("/api/v1/workflows", params={"name": "nope"}).json() == []


def test_registration_is_idempotent(client: TestClient, workflow_spec: WorkflowSpec) -> None:
    digest = upload_bundle(client)
    first = register(client, workflow_spec, digest)
    assert register(client, workflow_spec, digest) == first
    assert register(client, workflow_spec, digest, version=first["version"]) == first
    assert len(client.get("/api/v1/workflows").json()) == 1


def test_version_is_immutable(client: TestClient, workflow_spec: WorkflowSpec) -> None:
    register(client, workflow_spec, upload_bundle(client), version="v1")
    response = client.post(
        "/api/v1/workflows",
        json={
            "spec": workflow_spec.model_dump(mode="json"),
            "bundle_digest": upload_bundle(client, "changed code"),
            "version": "v1",
        },
    )
    assert "immutable" in assert_error(response, 409, "version")["detail"]


def test_register_needs_uploaded_bundle(client: TestClient, workflow_spec: WorkflowSpec) -> None:
    response = client.post(
        "/api/v1/workflows",
        json={"spec": workflow_spec.model_dump(mode="json"), "bundle_digest": "c" * 64},
    )
    assert "has not been uploaded" in assert_error(response, 422, "bundle_digest")["detail"]
    assert client.get("/api/v1/workflows").json() == []


def test_register_rejects_unknown_fields(client: TestClient, workflow_spec: WorkflowSpec) -> None:
    spec = workflow_spec.model_dump(mode="json")
    digest = upload_bundle(client)
    body = {"spec": spec, "bundle_digest": digest, "tenant_id": "someone-else"}
    assert_error(client.post("/api/v1/workflows", json=body), 422, "tenant_id")
    nested = {"spec": {**spec, "owner": "x"}, "bundle_digest": digest}
    assert_error(client.post("/api/v1/workflows", json=nested), 422, "spec.owner")


def test_unknown_workflow_version_is_404(client: TestClient) -> None:
    response = client.get(f"/api/v1/workflows/{WORKFLOW}/versions/v9")
    assert "not registered" in assert_error(response, 404)["detail"]


# --- executions ---------------------------------------------------------------------------


def test_create_get_and_list_executions(
    client: TestClient, launcher: FakeLauncher, registered: dict[str, Any]
) -> None:
    response = client.post("/api/v1/executions", json={"workflow": WORKFLOW, "inputs": {"n": 3}})
    assert response.status_code == 201, response.text
    execution = response.json()
    assert execution["id"].startswith("ex-")
    assert execution["status"] == "QUEUED"
    assert execution["workflow"] == WORKFLOW
    assert execution["version"] == registered["version"]
    assert execution["inputs"] == {"n": 3, "lr": 0.1}
    assert execution["outputs"] is None and execution["error"] is None
    assert execution["attempts"] == []
    assert launcher.started == [execution["id"]]

    assert client.get(f"/api/v1/executions/{execution['id']}").json() == execution
    second = client.post(
        "/api/v1/executions",
        json={"workflow": WORKFLOW, "version": registered["version"], "inputs": {"n": 1, "lr": 2}},
    ).json()
    assert second["inputs"] == {"n": 1, "lr": 2.0}

    listed = client.get("/api/v1/executions").json()
    assert {e["id"] for e in listed} == {execution["id"], second["id"]}
    assert len(client.get("/api/v1/executions", params={"limit": 1}).json()) == 1
    assert len(client.get("/api/v1/executions", params={"offset": 2}).json()) == 0
    queued = client.get("/api/v1/executions", params={"status": "QUEUED"}).json()
    assert len(queued) == 2
    assert client.get("/api/v1/executions", params={"status": "RUNNING"}).json() == []


def test_list_parameters_are_validated(client: TestClient) -> None:
    assert_error(client.get("/api/v1/executions", params={"status": "DONE"}), 422, "query.status")
    assert_error(client.get("/api/v1/executions", params={"limit": 0}), 422, "query.limit")
    assert_error(client.get("/api/v1/executions", params={"limit": 201}), 422, "query.limit")
    assert_error(client.get("/api/v1/executions", params={"offset": -1}), 422, "query.offset")


def test_wrong_input_type_names_the_field(
    client: TestClient, launcher: FakeLauncher, registered: dict[str, Any]
) -> None:
    response = client.post(
        "/api/v1/executions", json={"workflow": WORKFLOW, "inputs": {"n": "abc"}}
    )
    body = assert_error(response, 422, "inputs.n")
    assert "inputs.n: expected int, got str 'abc'" in body["detail"]
    assert body["errors"] == [{"field": "inputs.n", "message": "expected int, got str 'abc'"}]
    assert launcher.started == []
    assert client.get("/api/v1/executions").json() == []


def test_unknown_and_missing_inputs(client: TestClient, registered: dict[str, Any]) -> None:
    unknown = client.post(
        "/api/v1/executions", json={"workflow": WORKFLOW, "inputs": {"n": 1, "epochs": 3}}
    )
    assert "unknown input" in assert_error(unknown, 422, "inputs.epochs")["detail"]
    missing = client.post("/api/v1/executions", json={"workflow": WORKFLOW, "inputs": {}})
    assert "missing required input" in assert_error(missing, 422, "inputs.n")["detail"]


def test_execution_body_rejects_unknown_fields(
    client: TestClient, launcher: FakeLauncher, registered: dict[str, Any]
) -> None:
    body = {"workflow": WORKFLOW, "inputs": {"n": 1}, "status": "SUCCEEDED"}
    error = assert_error(client.post("/api/v1/executions", json=body), 422, "status")
    assert "status: Extra inputs are not permitted" in error["detail"]
    assert launcher.started == []


def test_malformed_json_is_a_422(client: TestClient) -> None:
    response = client.post(
        "/api/v1/executions", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert_error(response, 422, "body")


def test_unknown_workflow_is_404(client: TestClient, registered: dict[str, Any]) -> None:
    response = client.post("/api/v1/executions", json={"workflow": "no.such.flow", "inputs": {}})
    assert "workflow no.such.flow is not registered" in assert_error(response, 404)["detail"]
    response = client.post(
        "/api/v1/executions", json={"workflow": WORKFLOW, "version": "v9", "inputs": {"n": 1}}
    )
    assert f"version v9 of workflow {WORKFLOW}" in assert_error(response, 404)["detail"]


def test_unknown_execution_is_404(client: TestClient) -> None:
    assert "not found" in assert_error(client.get("/api/v1/executions/ex-nope"), 404)["detail"]


def test_launcher_failure_keeps_the_execution_queued(
    client: TestClient, launcher: FakeLauncher, registered: dict[str, Any]
) -> None:
    launcher.unavailable = True
    response = client.post("/api/v1/executions", json={"workflow": WORKFLOW, "inputs": {"n": 1}})
    body = assert_error(response, 503)
    [execution] = client.get("/api/v1/executions").json()
    assert execution["id"] in body["detail"]
    assert execution["status"] == "QUEUED"


def test_first_tasks_start_beside_the_workflow_and_a_cancel_before_it_stops_them(
    session_factory: sessionmaker[Session],
    launcher: FakeLauncher,
    blob_store: LocalBlobStore,
    workflow_spec: WorkflowSpec,
) -> None:
    """As `control_plane/server.py` composes it: the nodes that need only the inputs are
    created as the execution is, even while the orchestrator is down (503); cancelling the
    still QUEUED execution cancels them too."""
    activities = ExecutionActivities(session_factory, blob_store)
    app = _app(session_factory, RootsFirstLauncher(launcher, activities.start_roots), blob_store)
    with admin_client(app) as client:
        register(client, workflow_spec, upload_bundle(client))
        launcher.unavailable = True
        response = client.post(
            "/api/v1/executions", json={"workflow": WORKFLOW, "inputs": {"n": 4}}
        )
        assert_error(response, 503)
        [execution] = client.get("/api/v1/executions").json()
        assert execution["status"] == "QUEUED"
        [attempt] = execution["attempts"]
        assert (attempt["node_id"], attempt["status"]) == ("n0", "PENDING")
        with session_factory() as session:
            inputs_uri = session.get_one(TaskAttempt, attempt["id"]).inputs_uri
        assert json.loads(blob_store.get(inputs_uri)) == {"n": 4}

        launcher.unavailable = False
        cancelled = client.post(f"/api/v1/executions/{execution['id']}/cancel").json()

    assert cancelled["status"] == "CANCELLED"
    assert [a["status"] for a in cancelled["attempts"]] == ["CANCELLED"]


def test_execution_shows_its_attempts(
    client: TestClient, session_factory: sessionmaker[Session], registered: dict[str, Any]
) -> None:
    created = client.post(
        "/api/v1/executions", json={"workflow": WORKFLOW, "inputs": {"n": 1}}
    ).json()
    with session_factory() as session:
        # Test data only: product code moves attempts through the transition policy.
        session.add(Cluster(id="cl-1", name="gpu-west", token_hash="h" * 64))
        session.flush()
        session.add_all(
            [
                TaskAttempt(
                    id="at-1",
                    execution_id=created["id"],
                    node_id="n0",
                    task_name="examples.train.prepare",
                    attempt_number=1,
                    status="FAILED",
                    cluster_id="cl-1",
                    inputs_uri="file:///in",
                    outputs_uri="file:///out",
                    error_message="boom",
                    error_traceback="Traceback ...",
                ),
                TaskAttempt(
                    id="at-2",
                    execution_id=created["id"],
                    node_id="n0",
                    task_name="examples.train.prepare",
                    attempt_number=2,
                    status="PENDING",
                    inputs_uri="file:///in",
                    outputs_uri="file:///out",
                ),
            ]
        )
        session.commit()
    attempts = client.get(f"/api/v1/executions/{created['id']}").json()["attempts"]
    assert [(a["id"], a["status"], a["cluster"]) for a in attempts] == [
        ("at-1", "FAILED", "gpu-west"),
        ("at-2", "PENDING", None),
    ]
    assert attempts[0]["error_message"] == "boom"
    assert attempts[0]["error_traceback"] == "Traceback ..."
    assert client.get("/api/v1/executions").json()[0]["attempts"] == attempts
    # What `wait` polls: the same attempts, counted by state.
    progress = client.get(f"/api/v1/executions/{created['id']}/progress").json()
    assert progress == {
        "id": created["id"],
        "status": "QUEUED",
        "finished_at": None,
        "attempts": {"FAILED": 1, "PENDING": 1},
    }


def foreign_execution(sessions: sessionmaker[Session], spec: WorkflowSpec) -> str:
    """The id of an execution of another tenant's ("someone-else"), committed."""
    with sessions() as session:
        other = get_or_create_tenant(session, "someone-else")
        tenancy.grant_cluster(session, other, tenancy.EVERY_CLUSTER)
        workflow = register_workflow_version(session, other.id, spec, "d" * 64, None)
        execution_id = create_execution(session, other.id, workflow, {"n": 1}).id
        session.commit()
        assert session.scalar(select(Execution.id).where(Execution.id == execution_id))
    return execution_id


def test_other_tenants_executions_are_invisible(
    client: TestClient, session_factory: sessionmaker[Session], workflow_spec: WorkflowSpec
) -> None:
    foreign_id = foreign_execution(session_factory, workflow_spec)
    assert_error(client.get(f"/api/v1/executions/{foreign_id}"), 404)
    assert_error(client.get(f"/api/v1/executions/{foreign_id}/progress"), 404)
    assert client.get("/api/v1/executions").json() == []
    assert client.get("/api/v1/workflows").json() == []
    response = client.post("/api/v1/executions", json={"workflow": WORKFLOW, "inputs": {"n": 1}})
    assert_error(response, 404)


# --- error shape --------------------------------------------------------------------------


def test_unknown_route_uses_the_error_shape(client: TestClient) -> None:
    assert client.get("/api/v1/nothing-here").json() == {"detail": "Not Found"}


def test_unexpected_errors_are_logged_not_leaked(
    session_factory: sessionmaker[Session],
    launcher: FakeLauncher,
    blob_store: LocalBlobStore,
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = _app(session_factory, launcher, blob_store)

    def explode() -> None:
        raise RuntimeError("secret connection string postgres://u:pw@db")

    app.add_api_route("/explode", explode)
    with admin_client(app, raise_server_exceptions=False) as client:
        with caplog.at_level(logging.ERROR, logger="control_plane.api.errors"):
            response = client.get("/explode")
    assert response.status_code == 500
    assert response.json() == {"detail": "internal error"}
    assert "secret connection string" in caplog.text


def test_overlong_names_are_rejected_before_the_database(
    client: TestClient, workflow_spec: WorkflowSpec
) -> None:
    spec = workflow_spec.model_copy(update={"name": "x" * 257}).model_dump(mode="json")
    response = client.post(
        "/api/v1/workflows", json={"spec": spec, "bundle_digest": upload_bundle(client)}
    )
    assert_error(response, 422, "spec")
    response = client.post("/api/v1/executions", json={"workflow": "x" * 257, "inputs": {}})
    assert_error(response, 422, "workflow")
