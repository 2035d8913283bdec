"""The workflows API on a migrated database (SQLite and PostgreSQL): the newest version of each
workflow, one workflow with its spec, a workflow's versions, all scoped to the caller's tenant
(another tenant's workflow answers exactly as one that does not exist)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from control_plane.api.app import create_app
from control_plane.settings import ApiSettings, DatabaseSettings, Settings
from fleetflow.api_models.tenancy import Role
from fleetflow.loader import load_workflow
from fleetflow.storage import LocalBlobStore
from tests.integration.auth import bearer, principal_token
from tests.integration.test_api import FakeLauncher, make_bundle

WORKFLOWS = Path(__file__).parent / "workflows" / "watching.py"


@dataclass
class World:
    app: Any
    tokens: dict[str, str]

    def client(self, who: str) -> TestClient:
        return TestClient(self.app, headers=bearer(self.tokens[who]))

    def register(self, who: str, workflow: str, version: str) -> dict[str, Any]:
        wf, _ = load_workflow(WORKFLOWS, workflow)
        with self.client(who) as api:
            body, digest = make_bundle()
            assert api.put(f"/api/v1/bundles/{digest}", content=body).status_code in (200, 201)
            spec = wf.spec.model_dump(mode="json")
            response = api.post(
                "/api/v1/workflows",
                json={"spec": spec, "bundle_digest": digest, "version": version},
            )
        assert response.status_code == 201, response.text
        registered: dict[str, Any] = response.json()
        return registered


@pytest.fixture
def world(session_factory: sessionmaker[Session], tmp_path: Path) -> Iterator[World]:
    settings = Settings(database=DatabaseSettings(url="sqlite://"), api=ApiSettings())
    app = create_app(
        settings,
        session_factory=session_factory,
        launcher=FakeLauncher(),
        blob_store=LocalBlobStore(tmp_path / "blobs"),
    )
    authorizer = app.state.authorizer
    tokens = {
        "alpha-viewer": principal_token(
            session_factory, authorizer, "alpha-viewer", tenant="alpha", role=Role.VIEWER
        ),
        "alpha-dev": principal_token(
            session_factory, authorizer, "alpha-dev", tenant="alpha", role=Role.DEVELOPER
        ),
        "beta-admin": principal_token(
            session_factory, authorizer, "beta-admin", tenant="beta", role=Role.TENANT_ADMIN
        ),
    }
    world = World(app, tokens)
    world.register("alpha-dev", "chorus", "v1")
    world.register("alpha-dev", "chorus", "v2")
    world.register("alpha-dev", "monologue", "only")
    yield world


def test_the_newest_version_of_each_workflow_by_name(world: World) -> None:
    with world.client("alpha-viewer") as api:
        latest = api.get("/api/v1/workflows", params={"latest_only": "true"}).json()
        assert [(w["name"], w["version"]) for w in latest] == [
            ("watching.chorus", "v2"),
            ("watching.monologue", "only"),
        ]
        paged = api.get("/api/v1/workflows", params={"latest_only": "true", "offset": 1}).json()
        assert [w["name"] for w in paged] == ["watching.monologue"]
        every = api.get("/api/v1/workflows").json()
        assert [(w["name"], w["version"]) for w in every] == [
            ("watching.chorus", "v2"),
            ("watching.chorus", "v1"),
            ("watching.monologue", "only"),
        ]


def test_one_workflow_with_its_spec_and_its_versions(world: World) -> None:
    with world.client("alpha-viewer") as api:
        newest = api.get("/api/v1/workflows/watching.chorus").json()
        assert newest["version"] == "v2"
        assert [n["id"] for n in newest["spec"]["nodes"]] == ["n0-indices", "n1-chatter"]
        assert newest["spec"]["nodes"][1]["map"]["over"] == ["i"]
        inputs = {v["name"]: v["default"] for v in newest["interface"]["inputs"]}
        assert inputs == {"n": 3, "lines": 2}
        older = api.get("/api/v1/workflows/watching.chorus", params={"version": "v1"}).json()
        assert older["version"] == "v1" and older["spec"] == newest["spec"]
        versions = api.get("/api/v1/workflows/watching.chorus/versions").json()
        assert [v["version"] for v in versions] == ["v2", "v1"]
        limited = api.get("/api/v1/workflows/watching.chorus/versions", params={"limit": 1})
        assert [v["version"] for v in limited.json()] == ["v2"]
        missing = api.get("/api/v1/workflows/watching.nothing")
        assert missing.status_code == 404
        assert missing.json()["detail"] == (
            "workflow watching.nothing is not registered (fleetflow workflows list)"
        )
        assert api.get("/api/v1/workflows/watching.nothing/versions").status_code == 404
        unknown = api.get("/api/v1/workflows/watching.chorus", params={"version": "v9"})
        assert unknown.status_code == 404
        assert unknown.json()["detail"] == "workflow watching.chorus version v9 is not registered"


def test_another_tenant_sees_none_of_them(world: World) -> None:
    with world.client("beta-admin") as beta:
        assert beta.get("/api/v1/workflows", params={"latest_only": "true"}).json() == []
        assert beta.get("/api/v1/workflows").json() == []
        for path in (
            "/api/v1/workflows/{name}",
            "/api/v1/workflows/{name}/versions",
            "/api/v1/workflows/{name}/versions/v1",
            "/api/v1/workflows/{name}?version=v1",
        ):
            on_alpha = beta.get(path.format(name="watching.chorus"))
            on_nothing = beta.get(path.format(name="watching.nowhere"))
            assert on_alpha.status_code == on_nothing.status_code == 404, path
            assert on_alpha.text.replace("chorus", "X") == on_nothing.text.replace("nowhere", "X")
    # Its own registration of the same name is its own, and does not show alpha's versions.
    world.register("beta-admin", "chorus", "b1")
    with world.client("beta-admin") as beta:
        versions = beta.get("/api/v1/workflows/watching.chorus/versions").json()
        assert [v["version"] for v in versions] == ["b1"]
    with world.client("alpha-viewer") as alpha:
        versions = alpha.get("/api/v1/workflows/watching.chorus/versions").json()
        assert [v["version"] for v in versions] == ["v2", "v1"]
