"""`POST /executions/{id}/relaunch` and `/recover` through the in-process API (a fake
launcher, no Temporal): what they create, what they refuse, and that another tenant's
execution is not found. The full stack runs them in `test_relaunch.py`."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from control_plane.db.models import Execution
from control_plane.db.repositories import tenancy
from control_plane.db.repositories.executions import create_execution, move_execution
from control_plane.db.repositories.tenants import get_or_create_tenant
from control_plane.db.repositories.workflows import register_workflow_version
from fleetflow.ir import WorkflowSpec
from fleetflow.states import ExecutionState
from fleetflow.storage import LocalBlobStore
from tests.integration.auth import admin_client
from tests.integration.test_api import (
    WORKFLOW,
    FakeLauncher,
    _app,
    assert_error,
    register,
    upload_bundle,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def api(
    session_factory: sessionmaker[Session], launcher: FakeLauncher, blob_store: LocalBlobStore
) -> Iterator[TestClient]:
    with admin_client(_app(session_factory, launcher, blob_store)) as test_client:
        yield test_client


def launch(api: TestClient, workflow_spec: WorkflowSpec, version: str = "v1") -> dict[str, Any]:
    register(api, workflow_spec, upload_bundle(api), version=version)
    body = {"workflow": WORKFLOW, "version": version, "inputs": {"n": 3}, "priority": 7}
    response = api.post("/api/v1/executions", json=body)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def finish(sessions: sessionmaker[Session], execution_id: str, state: ExecutionState) -> None:
    with sessions() as session:
        execution = session.get_one(Execution, execution_id)
        assert move_execution(session, execution, ExecutionState.RUNNING)
        assert move_execution(session, execution, state)
        session.commit()


def test_relaunch_runs_the_same_inputs_of_the_same_or_the_latest_version(
    api: TestClient, workflow_spec: WorkflowSpec, launcher: FakeLauncher
) -> None:
    source = launch(api, workflow_spec)
    again = api.post(f"/api/v1/executions/{source['id']}/relaunch")
    assert again.status_code == 201, again.text
    same = again.json()
    assert same["id"] != source["id"] and same["id"] in launcher.started
    assert (same["version"], same["inputs"], same["priority"]) == ("v1", source["inputs"], 7)
    assert (same["relaunched_from"], same["recovered_from"]) == (source["id"], None)
    assert api.get(f"/api/v1/executions/{same['id']}").json()["relaunched_from"] == source["id"]

    register(api, workflow_spec, upload_bundle(api, "def prepare(n): return n\n"), "v2")
    still = api.post(f"/api/v1/executions/{source['id']}/relaunch", json={"version": "same"})
    assert still.status_code == 201 and still.json()["version"] == "v1"
    latest = api.post(f"/api/v1/executions/{source['id']}/relaunch", json={"version": "latest"})
    assert latest.status_code == 201, latest.text
    assert (latest.json()["version"], latest.json()["inputs"]) == ("v2", source["inputs"])


def test_a_relaunch_names_a_known_version_choice(
    api: TestClient, workflow_spec: WorkflowSpec
) -> None:
    source = launch(api, workflow_spec)
    for body in ({"version": "v1"}, {"version": "newest"}, {"latest": True}):
        response = api.post(f"/api/v1/executions/{source['id']}/relaunch", json=body)
        assert_error(response, 422)


def test_only_a_failed_or_cancelled_execution_is_recovered(
    api: TestClient,
    workflow_spec: WorkflowSpec,
    session_factory: sessionmaker[Session],
    launcher: FakeLauncher,
) -> None:
    queued = launch(api, workflow_spec)
    refused = assert_error(api.post(f"/api/v1/executions/{queued['id']}/recover"), 409)
    assert "is QUEUED: only a FAILED or CANCELLED execution is recovered" in refused["detail"]
    finish(session_factory, queued["id"], ExecutionState.SUCCEEDED)
    assert_error(api.post(f"/api/v1/executions/{queued['id']}/recover"), 409)

    failed = launch(api, workflow_spec, "v2")
    finish(session_factory, failed["id"], ExecutionState.FAILED)
    register(api, workflow_spec, upload_bundle(api, "def prepare(n): return n\n"), "v3")
    response = api.post(f"/api/v1/executions/{failed['id']}/recover")
    assert response.status_code == 201, response.text
    recovered = response.json()
    assert recovered["recovered_from"] == failed["id"] and recovered["relaunched_from"] is None
    assert (recovered["version"], recovered["inputs"]) == (
        "v2",
        failed["inputs"],
    )  # never the latest
    assert recovered["id"] in launcher.started

    cancelled = launch(api, workflow_spec, "v4")
    with session_factory() as session:
        move_execution(
            session, session.get_one(Execution, cancelled["id"]), ExecutionState.CANCELLED
        )
        session.commit()
    assert api.post(f"/api/v1/executions/{cancelled['id']}/recover").status_code == 201


def test_a_repeated_key_answers_the_first_creation(
    api: TestClient, workflow_spec: WorkflowSpec, session_factory: sessionmaker[Session]
) -> None:
    source = launch(api, workflow_spec)
    path = f"/api/v1/executions/{source['id']}"
    first = api.post(f"{path}/relaunch", headers={"Idempotency-Key": "again-1"})
    repeat = api.post(f"{path}/relaunch", headers={"Idempotency-Key": "again-1"})
    assert (first.status_code, repeat.status_code) == (201, 200)
    assert repeat.headers["Idempotent-Replayed"] == "true"
    assert repeat.json()["id"] == first.json()["id"]
    other = api.post(
        f"{path}/relaunch", json={"version": "latest"}, headers={"Idempotency-Key": "again-1"}
    )  # noqa: E501
    assert_error(other, 422, "Idempotency-Key")
    finish(session_factory, source["id"], ExecutionState.FAILED)
    # The same key on a recovery: a different request.
    assert_error(api.post(f"{path}/recover", headers={"Idempotency-Key": "again-1"}), 422)
    assert_error(api.post(f"{path}/recover", headers={"Idempotency-Key": "bad key"}), 422)


def test_another_tenants_execution_is_not_found(
    api: TestClient,
    workflow_spec: WorkflowSpec,
    session_factory: sessionmaker[Session],
    launcher: FakeLauncher,
) -> None:
    with session_factory() as session:
        other = get_or_create_tenant(session, "someone-else")
        tenancy.grant_cluster(session, other, tenancy.EVERY_CLUSTER)
        workflow = register_workflow_version(session, other.id, workflow_spec, "d" * 64, None)
        foreign = create_execution(session, other.id, workflow, {"n": 1})
        move_execution(session, foreign, ExecutionState.CANCELLED)
        session.commit()
        foreign_id = foreign.id
    for action in ("relaunch", "recover"):
        refused = assert_error(api.post(f"/api/v1/executions/{foreign_id}/{action}"), 404)
        assert refused["detail"] == f"execution {foreign_id} not found"
        missing = assert_error(api.post(f"/api/v1/executions/ex-nothing/{action}"), 404)
        assert missing["detail"] == "execution ex-nothing not found"
    assert launcher.started == []
    assert api.get("/api/v1/executions").json() == []
