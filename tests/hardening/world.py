"""An in-process API with two tenants for hardening tests, built the way the tenancy tests
build theirs: `create_app` on a migrated database, a FakeLauncher, principal tokens."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from control_plane.api.app import create_app
from control_plane.settings import ApiSettings, DatabaseSettings, Settings
from fleetflow.api_models.tenancy import Role
from fleetflow.ir import WorkflowSpec
from fleetflow.storage import LocalBlobStore
from tests.integration.auth import admin_token, bearer, principal_token
from tests.integration.test_api import FakeLauncher, make_bundle


def examples(fast: int, full_factor: int = 10) -> int:
    """Examples per property: `fast` under `make test`; FLEETFLOW_HARDENING_EXAMPLES (set by
    `make test-hardening`) scales it up."""
    configured = os.environ.get("FLEETFLOW_HARDENING_EXAMPLES")
    return max(fast, int(configured) * fast // 10) if configured else fast


@dataclass
class World:
    app: FastAPI
    sessions: sessionmaker[Session]
    launcher: FakeLauncher
    blobs: LocalBlobStore
    admin: str  # platform admin, home tenant "default"
    alpha_dev: str  # developer in alpha
    beta_dev: str  # developer in beta
    workflow: str  # registered in alpha (workflow_spec), version "v1"
    digest: str  # alpha's bundle

    def client(self, token: str | None, **headers: str) -> TestClient:
        return TestClient(self.app, headers={**(bearer(token) if token else {}), **headers})


def build_world(
    sessions: sessionmaker[Session], tmp_path: Path, spec: WorkflowSpec, api: ApiSettings
) -> World:
    launcher = FakeLauncher()
    blobs = LocalBlobStore(tmp_path / "blobs")
    app = create_app(
        Settings(database=DatabaseSettings(url="sqlite://"), api=api),
        session_factory=sessions,
        launcher=launcher,
        blob_store=blobs,
    )
    admin = admin_token(app)
    authorizer = app.state.authorizer
    alpha_dev = principal_token(
        sessions, authorizer, "alpha-dev", tenant="alpha", role=Role.DEVELOPER
    )
    beta_dev = principal_token(sessions, authorizer, "beta-dev", tenant="beta", role=Role.DEVELOPER)
    with TestClient(app, headers=bearer(alpha_dev)) as alpha:
        body, digest = make_bundle()
        assert alpha.put(f"/api/v1/bundles/{digest}", content=body).status_code == 201
        registered = alpha.post(
            "/api/v1/workflows",
            json={"spec": spec.model_dump(mode="json"), "bundle_digest": digest, "version": "v1"},
        )
        assert registered.status_code == 201, registered.text
    return World(app, sessions, launcher, blobs, admin, alpha_dev, beta_dev, spec.name, digest)


def unlimited() -> ApiSettings:
    """API settings with the rate limits off, for tests that send many requests."""
    return ApiSettings(rate_limit_per_second=0, auth_failures_per_second=0)
