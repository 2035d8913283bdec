"""Launch plans through the REST API in-process: inputs checked against the workflow's
interface, fixed inputs that a launch cannot change, rights as executions', tenants kept apart;
and a Temporal server without the Schedule API (the test server) named as such, with the fix.

Schedules firing on a real Temporal server: tests/integration/test_schedules.py."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from control_plane.api.app import create_app
from control_plane.db.models import LaunchPlan, new_id
from control_plane.orchestration.temporal import connect_temporal
from control_plane.processes import TEMPORAL_BIN_ENV
from control_plane.services.schedules import NO_SCHEDULES, SchedulesUnavailable, TemporalSchedules
from control_plane.settings import ApiSettings, DatabaseSettings, Settings, TemporalSettings
from fleetflow.api_models.launch_plans import ScheduleSpec
from fleetflow.api_models.tenancy import Role
from fleetflow.ir import WorkflowSpec
from fleetflow.storage import LocalBlobStore
from tests.integration.auth import bearer, principal_token
from tests.integration.stack import start_temporal
from tests.integration.test_api import FakeLauncher, make_bundle

pytestmark = pytest.mark.integration


class World:
    def __init__(self, app: Any, tokens: dict[str, str], launcher: FakeLauncher) -> None:
        self.app, self.tokens, self.launcher = app, tokens, launcher

    def client(self, who: str) -> TestClient:
        return TestClient(self.app, headers=bearer(self.tokens[who]))


@pytest.fixture
def world(
    session_factory: sessionmaker[Session], tmp_path: Path, workflow_spec: WorkflowSpec
) -> Iterator[World]:
    launcher = FakeLauncher()
    settings = Settings(database=DatabaseSettings(url="sqlite://"), api=ApiSettings())
    app = create_app(
        settings,
        session_factory=session_factory,
        launcher=launcher,
        blob_store=LocalBlobStore(tmp_path / "blobs"),
    )
    authorizer = app.state.authorizer
    tokens = {
        f"{tenant}-{suffix}": principal_token(
            session_factory, authorizer, f"{tenant}-{suffix}", tenant=tenant, role=role
        )
        for tenant in ("alpha", "beta")
        for suffix, role in (
            ("admin", Role.TENANT_ADMIN),
            ("dev", Role.DEVELOPER),
            ("viewer", Role.VIEWER),
        )
    }
    world = World(app, tokens, launcher)
    with world.client("alpha-dev") as alpha:
        body, digest = make_bundle()
        assert alpha.put(f"/api/v1/bundles/{digest}", content=body).status_code == 201
        spec = workflow_spec.model_dump(mode="json")
        registered = alpha.post(
            "/api/v1/workflows", json={"spec": spec, "bundle_digest": digest, "version": "v1"}
        )
        assert registered.status_code == 201, registered.text
    yield world


def _plan(workflow: str, **fields: Any) -> dict[str, Any]:
    return {"name": "nightly", "workflow": workflow, **fields}


def test_a_plan_fixes_and_defaults_inputs_and_launches_through_the_api(
    world: World, workflow_spec: WorkflowSpec
) -> None:
    with world.client("alpha-dev") as alpha:
        created = alpha.post(
            "/api/v1/launchplans",
            json=_plan(
                workflow_spec.name,
                fixed_inputs={"n": 3},
                default_inputs={"lr": 0.2},
                labels={"team": "vision"},
                priority=5,
            ),
        )
        assert created.status_code == 201, created.text
        plan = created.json()
        assert (plan["version"], plan["active"], plan["labels"]) == (
            "v1",
            False,
            {"team": "vision"},
        )
        assert [p["name"] for p in alpha.get("/api/v1/launchplans").json()] == ["nightly"]

        launched = alpha.post("/api/v1/launchplans/nightly/launch", json={"inputs": {"lr": 0.5}})
        assert launched.status_code == 201, launched.text
        execution = launched.json()
        assert execution["inputs"] == {"n": 3, "lr": 0.5}
        assert execution["priority"] == 5
        assert world.launcher.started == [execution["id"]]
        defaulted = alpha.post("/api/v1/launchplans/nightly/launch", json={})
        assert defaulted.json()["inputs"] == {"n": 3, "lr": 0.2}

        refused = alpha.post("/api/v1/launchplans/nightly/launch", json={"inputs": {"n": 4}})
        assert refused.status_code == 422
        assert "fixes n: a launch cannot change them" in refused.json()["detail"]
        assert refused.json()["errors"] == [
            {"field": "inputs.n", "message": "fixed by the launch plan"}
        ]
        mistyped = alpha.post("/api/v1/launchplans/nightly/launch", json={"inputs": {"lr": "x"}})
        assert mistyped.status_code == 422
        assert mistyped.json()["errors"][0]["field"] == "inputs.lr"

        # Replaced while inactive (a new id); an active plan would be refused (409).
        again = alpha.post("/api/v1/launchplans", json=_plan(workflow_spec.name))
        assert again.status_code == 201 and again.json()["id"] != plan["id"]


@pytest.mark.parametrize(
    ("fields", "status", "field", "words"),
    [
        ({"fixed_inputs": {"n": "three"}}, 422, "fixed_inputs.n", "int"),
        ({"default_inputs": {"epochs": 3}}, 422, "default_inputs.epochs", "unknown input"),
        ({"fixed_inputs": {"n": 1}, "default_inputs": {"n": 2}}, 422, "fixed_inputs.n", "pick one"),
        (
            {"schedule": {"interval_seconds": 60}},
            422,
            "inputs.n",
            "a scheduled plan must fix or default it",
        ),
        ({"schedule": {"cron": "0 3 * *"}}, 422, None, "5 fields"),
        ({"schedule": {"cron": "0 3 * * *", "timezone": "Mars/Olympus"}}, 422, None, "time zone"),
        ({"schedule": {"cron": "0 3 * * *", "interval_seconds": 60}}, 422, None, "exactly one"),
        ({"schedule": {"interval_seconds": 60, "overlap": "whenever"}}, 422, None, "skip"),
        ({"version": "v9"}, 404, None, "version v9 of workflow"),
    ],
)
def test_an_invalid_plan_is_refused_naming_what_is_wrong(
    world: World,
    workflow_spec: WorkflowSpec,
    fields: dict[str, Any],
    status: int,
    field: str | None,
    words: str,
) -> None:
    with world.client("alpha-dev") as alpha:
        answer = alpha.post("/api/v1/launchplans", json=_plan(workflow_spec.name, **fields))
        assert answer.status_code == status, answer.text
        assert words in answer.text
        if field is not None:
            assert field in [e["field"] for e in answer.json()["errors"]], answer.text
        assert alpha.get("/api/v1/launchplans").json() == []


def test_rights_are_those_of_executions_and_tenants_are_apart(
    world: World, workflow_spec: WorkflowSpec
) -> None:
    with world.client("alpha-dev") as alpha:
        body = _plan(workflow_spec.name, fixed_inputs={"n": 3})
        assert alpha.post("/api/v1/launchplans", json=body).status_code == 201
    with world.client("alpha-viewer") as viewer:
        assert viewer.get("/api/v1/launchplans/nightly").status_code == 200
        for path in ("", "/nightly/launch", "/nightly/activate", "/nightly/pause"):
            refused = viewer.post(f"/api/v1/launchplans{path}", json=body if not path else {})
            assert refused.status_code == 403, (path, refused.text)
            assert "may not write executions" in refused.text
    with world.client("beta-admin") as beta:
        assert beta.get("/api/v1/launchplans").json() == []
        # Another tenant's plan answers as one that does not exist; its workflow too.
        for method, path in (
            ("GET", "/nightly"),
            ("POST", "/nightly/launch"),
            ("POST", "/nightly/activate"),
            ("POST", "/nightly/deactivate"),
            ("POST", "/nightly/resume"),
        ):
            on_alpha = beta.request(method, f"/api/v1/launchplans{path}", json={})
            on_nothing = beta.request(
                method, f"/api/v1/launchplans{path.replace('nightly', 'nope')}", json={}
            )
            assert on_alpha.status_code == 404, (path, on_alpha.text)
            assert on_alpha.text == on_nothing.text.replace("nope", "nightly")
        stolen = beta.post("/api/v1/launchplans", json=body)
        assert stolen.status_code == 404
        assert "is not registered" in stolen.json()["detail"]
    assert world.launcher.started == []


def test_without_an_orchestrator_schedules_answer_503(
    world: World, workflow_spec: WorkflowSpec
) -> None:
    with world.client("alpha-dev") as alpha:
        body = _plan(workflow_spec.name, fixed_inputs={"n": 3}, schedule={"interval_seconds": 60})
        assert alpha.post("/api/v1/launchplans", json=body).status_code == 201
        answer = alpha.post("/api/v1/launchplans/nightly/activate")
        assert answer.status_code == 503
        assert "runs no schedules" in answer.json()["detail"]
        assert alpha.get("/api/v1/launchplans/nightly").json()["active"] is False


def test_the_temporal_test_server_is_named_with_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Temporal test server (the embedded one of `fleetflow dev up`) has no Schedule API:
    activating says so and names FLEETFLOW_TEMPORAL_BIN, it does not fail obscurely."""
    monkeypatch.delenv(TEMPORAL_BIN_ENV, raising=False)  # the test server, not the dev one
    server = start_temporal(tmp_path)
    try:

        async def activate() -> None:
            client = await connect_temporal(TemporalSettings(address=server.address))
            plan = LaunchPlan(id=new_id("lp"), name="nightly")
            await TemporalSchedules(client, "queue").activate(
                plan, ScheduleSpec(interval_seconds=60)
            )

        with pytest.raises(SchedulesUnavailable) as raised:
            asyncio.run(activate())
        assert str(raised.value) == NO_SCHEDULES
        assert "FLEETFLOW_TEMPORAL_BIN" in str(raised.value)
    finally:
        server.process.kill()
        server.process.wait()
