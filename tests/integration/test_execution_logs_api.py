"""`GET /api/v1/executions/{id}/logs?attempt_id=…`, what a log follower polls: only the attempts
asked for, a bounded number per request, and never another tenant's."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from control_plane.api.routes.logs import MAX_ATTEMPT_IDS
from control_plane.db.models import TaskAttempt
from control_plane.db.session import transaction
from fleetflow.api_models.tenancy import Role
from fleetflow.ir import WorkflowSpec
from fleetflow.storage import LocalBlobStore, attempt_log_uri
from tests.integration.auth import bearer, principal_token
from tests.integration.test_api import FakeLauncher, _app, make_bundle


def test_a_follower_reads_only_the_attempts_it_asks_for(
    session_factory: sessionmaker[Session],
    launcher: FakeLauncher,
    blob_store: LocalBlobStore,
    workflow_spec: WorkflowSpec,
) -> None:
    app = _app(session_factory, launcher, blob_store)
    authorizer = app.state.authorizer
    alpha = principal_token(session_factory, authorizer, "a", tenant="alpha", role=Role.DEVELOPER)
    beta = principal_token(session_factory, authorizer, "b", tenant="beta", role=Role.TENANT_ADMIN)
    with TestClient(app, headers=bearer(alpha)) as api:
        body, digest = make_bundle()
        api.put(f"/api/v1/bundles/{digest}", content=body)
        spec = workflow_spec.model_dump(mode="json")
        api.post("/api/v1/workflows", json={"spec": spec, "bundle_digest": digest})
        created = api.post(
            "/api/v1/executions", json={"workflow": workflow_spec.name, "inputs": {"n": 2}}
        )
        execution_id = created.json()["id"]
    with transaction(session_factory) as session:
        # Test data only: product code creates attempts through the orchestrator.
        for i in range(3):
            inputs_uri = blob_store.put(f"executions/{execution_id}/n1/{i}/1/inputs.json", b"{}")
            blob_store.put(
                attempt_log_uri(inputs_uri).removeprefix(blob_store.root_uri + "/"),
                f"element {i}\n".encode(),
            )
            session.add(
                TaskAttempt(
                    id=f"at-{i}",
                    execution_id=execution_id,
                    node_id="n1",
                    map_index=i,
                    task_name="examples.train.fit",
                    attempt_number=1,
                    status="RUNNING",
                    inputs_uri=inputs_uri,
                    outputs_uri=inputs_uri.replace("inputs", "outputs"),
                )
            )
    path = f"/api/v1/executions/{execution_id}/logs"
    with TestClient(app, headers=bearer(alpha)) as api:
        every = api.get(path).json()["attempts"]
        assert [(a["attempt_id"], a["log"]) for a in every] == [
            (f"at-{i}", f"element {i}\n") for i in range(3)
        ]
        some = api.get(path, params={"attempt_id": ["at-2", "at-0", "at-9"]}).json()["attempts"]
        assert [a["attempt_id"] for a in some] == ["at-0", "at-2"]  # creation order
        too_many = api.get(
            path, params={"attempt_id": [f"at-{i}" for i in range(MAX_ATTEMPT_IDS + 1)]}
        )
        assert too_many.status_code == 422
    with TestClient(app, headers=bearer(beta)) as rival:
        refused = rival.get(path, params={"attempt_id": ["at-0"]})
        assert refused.status_code == 404
        assert refused.json()["detail"] == f"execution {execution_id} not found"
