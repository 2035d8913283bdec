"""Tenancy through the REST API: authentication, RBAC, isolation, quotas at submission, audit.

The isolation suite enumerates every route of the OpenAPI spec, so a route added without
authorisation fails here.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from control_plane.api.app import create_app
from control_plane.db.models import ApiToken, utcnow
from control_plane.db.repositories import artifacts as artifacts_repo
from control_plane.db.repositories import clusters as clusters_repo
from control_plane.db.repositories.tenants import get_tenant_by_name
from control_plane.db.session import transaction
from control_plane.settings import ApiSettings, DatabaseSettings, MetricsSettings, Settings
from fleetflow.api_models.tenancy import Role
from fleetflow.ir import WorkflowSpec
from fleetflow.storage import LocalBlobStore
from tests.integration.auth import admin_token, bearer, principal_token
from tests.integration.test_api import FakeLauncher, make_bundle

PUBLIC_PATHS = {"/healthz", "/readyz", "/metrics", "/openapi.json", "/docs", "/redoc"}


@dataclass
class World:
    """Tenants `alpha` and `beta`, each with an admin, a developer and a viewer; alpha owns a
    workflow, an execution, an upload, a bundle and a cluster only it may use."""

    app: FastAPI
    sessions: sessionmaker[Session]
    admin: str  # platform admin
    tokens: dict[str, str]  # "alpha-dev" -> token
    alpha: dict[str, str]  # alpha's resource identifiers by path parameter

    def client(self, who: str | None) -> TestClient:
        token = self.admin if who == "admin" else self.tokens.get(who or "")
        return TestClient(self.app, headers=bearer(token) if token else {})


@pytest.fixture
def world(
    session_factory: sessionmaker[Session], tmp_path: Path, workflow_spec: WorkflowSpec
) -> Iterator[World]:
    # Every route is called with several bad tokens: more than the lockout's default burst
    # (what is tested here is each route's answer, not the lockout).
    api = ApiSettings(auth_failures_burst=100_000)
    settings = Settings(database=DatabaseSettings(url="sqlite://"), api=api)
    app = create_app(
        settings,
        session_factory=session_factory,
        launcher=FakeLauncher(),
        blob_store=LocalBlobStore(tmp_path / "blobs"),
    )
    admin = admin_token(app)
    authorizer = app.state.authorizer
    tokens = {}
    for tenant in ("alpha", "beta"):
        for suffix, role in (("admin", Role.TENANT_ADMIN), ("dev", Role.DEVELOPER)):
            tokens[f"{tenant}-{suffix}"] = principal_token(
                session_factory, authorizer, f"{tenant}-{suffix}", tenant=tenant, role=role
            )
        tokens[f"{tenant}-viewer"] = principal_token(
            session_factory, authorizer, f"{tenant}-viewer", tenant=tenant, role=Role.VIEWER
        )
    with transaction(session_factory) as session:
        clusters_repo.ensure_cluster(session, "alpha-gpus", "token-alpha-gpus", {})
    world = World(app, session_factory, admin, tokens, {})
    with world.client("admin") as root:
        assert root.post("/api/v1/admin/tenants/alpha/clusters/alpha-gpus").status_code == 200
    with world.client("alpha-dev") as alpha:
        body, digest = make_bundle()
        assert alpha.put(f"/api/v1/bundles/{digest}", content=body).status_code == 201
        spec = workflow_spec.model_dump(mode="json")
        registered = alpha.post(
            "/api/v1/workflows", json={"spec": spec, "bundle_digest": digest, "version": "v1"}
        )
        assert registered.status_code == 201, registered.text
        created = alpha.post(
            "/api/v1/executions", json={"workflow": workflow_spec.name, "inputs": {"n": 3}}
        )
        assert created.status_code == 201, created.text
        plan = alpha.post(
            "/api/v1/launchplans",
            json={
                "name": "alpha-nightly",
                "workflow": workflow_spec.name,
                "fixed_inputs": {"n": 3},
            },
        )
        assert plan.status_code == 201, plan.text
        upload = alpha.put(f"/api/v1/uploads/files/{'a' * 64}/data.txt", content=b"x")
        assert upload.status_code in (201, 422), upload.text
        tokens_of = alpha.get("/api/v1/whoami").json()
        assert tokens_of["acting_tenant"] == "alpha"
    with world.client("alpha-admin") as alpha_admin:
        listed = alpha_admin.get("/api/v1/admin/tenants/alpha/users/alpha-dev/tokens").json()
    with transaction(session_factory) as session:  # a file one of alpha's tasks wrote
        alpha_tenant = get_tenant_by_name(session, "alpha")
        assert alpha_tenant is not None
        artifact_uri = f"file:///blobs/tenants/alpha/executions/{created.json()['id']}/n0/1/f"
        artifacts_repo.record(
            session,
            alpha_tenant.id,
            [
                artifacts_repo.NewArtifact(
                    uri=artifact_uri,
                    kind="file",
                    execution_id=created.json()["id"],
                    node_id="n0",
                    output_name="o0",
                )
            ],
        )
    world.alpha = {
        "tenant": "alpha",
        "execution_id": created.json()["id"],
        "name": workflow_spec.name,
        "version": "v1",
        "digest": digest,
        "cluster": "alpha-gpus",
        "token_id": listed["tokens"][0]["id"],
        "upload_id": "a" * 64,
        "path": "data.txt",
        "launch_plan": "alpha-nightly",
        "artifact_id": artifacts_repo.artifact_id(alpha_tenant.id, artifact_uri),
        "cohort": "alpha-lab",
        "node_id": workflow_spec.nodes[0].id,
    }
    with world.client("admin") as admin:  # a cohort alpha is in
        assert admin.post("/api/v1/admin/cohorts", json={"name": "alpha-lab"}).is_success
        member = {"shares": {"H100": {"nominal": 1}}}
        assert admin.put("/api/v1/admin/cohorts/alpha-lab/members/alpha", json=member).is_success
    yield world


NOWHERE = {
    "tenant": "gamma",
    "execution_id": "ex-0000000000000000000000000000dead",
    "name": "nowhere.flow",
    "version": "v9",
    "digest": "0" * 64,
    "cluster": "nowhere",
    "token_id": "tok-0000",
    "upload_id": "1" * 64,
    "path": "nothing.txt",
    "launch_plan": "nowhere-nightly",
    "artifact_id": "art-0000000000000000000000000000dead",
    "cohort": "nowhere-lab",
    "node_id": "n9-nowhere",
}


def _routes(app: FastAPI) -> list[tuple[str, str]]:
    """(method, path template) of every route in the OpenAPI spec."""
    spec = app.openapi()
    return sorted(
        (method.upper(), path)
        for path, operations in spec["paths"].items()
        for method in operations
        if path not in PUBLIC_PATHS
    )


def _fill(path: str, values: dict[str, str]) -> str:
    def value(match: re.Match[str]) -> str:
        name = match.group(1).split(":")[0]
        # The users' and tokens' routes name a user in {name}.
        if name == "name" and "/users/" in path:
            return "alpha-dev" if values is not NOWHERE else "nobody"
        if name == "name" and "/clusters/" in path:
            return values["cluster"]
        return values[name]

    return re.sub(r"\{([^}]+)\}", value, path)


def _call(client: TestClient, method: str, url: str) -> Any:
    body: dict[str, Any] | None = {} if method in ("POST", "PUT") else None
    if url.endswith("/roles/grant") or url.endswith("/roles/revoke"):
        body = {"principal": "alpha-dev", "role": "viewer", "tenant": "alpha"}
    if url == "/api/v1/executions" and method == "POST":
        body = {"workflow": "workflows.test.pipeline", "inputs": {}}
    return client.request(method, url, json=body)


def test_every_route_refuses_a_call_without_a_valid_token(world: World) -> None:
    routes = _routes(world.app)
    assert len(routes) >= 30, routes  # the enumeration sees the whole API
    # No token, a made-up one, a mangled one, and a cluster's agent token.
    for token in (None, "ffu_not-a-token", world.admin + "x", "token-alpha-gpus"):
        with TestClient(world.app, headers=bearer(token) if token else {}) as client:
            for method, path in routes:
                response = _call(client, method, _fill(path, world.alpha))
                assert response.status_code == 401, (method, path, response.text)
                assert response.headers["www-authenticate"] == "Bearer"
                if method != "HEAD":  # answers without a body
                    assert "token" in response.json()["detail"]


def _placeholders(text: str, values: dict[str, str]) -> str:
    """`text` with each identifier replaced by its parameter's name, longest first."""
    for key, value in sorted(values.items(), key=lambda kv: -len(kv[1])):
        text = text.replace(value, f"<{key}>")
    return text


def test_another_tenant_gets_the_answer_of_a_resource_that_does_not_exist(world: World) -> None:
    """beta's tenant admin (its strongest role) on alpha's resources gets exactly the answer
    it gets on resources that do not exist."""
    for method, path in _routes(world.app):
        with world.client("beta-admin") as beta:
            on_alpha = _call(beta, method, _fill(path, world.alpha))
            on_nothing = _call(beta, method, _fill(path, NOWHERE))
        # Content-addressed writes (bundles, uploads) land in beta's own space.
        assert "tenants/alpha" not in on_alpha.text, (method, path)
        if "{" not in path:
            # Lists and creations act in beta: alpha's identifiers never appear in them.
            for real in world.alpha.values():
                if len(real) > 8:
                    assert real not in on_alpha.text, (method, path)
            continue
        a_text = _placeholders(on_alpha.text, world.alpha)
        n_text = _placeholders(on_nothing.text.replace("nobody", "alpha-dev"), NOWHERE)
        assert (on_alpha.status_code, a_text) == (on_nothing.status_code, n_text), (method, path)


def test_a_viewer_reads_but_cannot_submit_or_register(world: World) -> None:
    with world.client("alpha-viewer") as viewer:
        assert viewer.get("/api/v1/executions").status_code == 200
        execution = viewer.get(f"/api/v1/executions/{world.alpha['execution_id']}")
        assert execution.status_code == 200
        refused = viewer.post("/api/v1/executions", json={"workflow": world.alpha["name"]})
        assert refused.status_code == 403
        assert "alpha-viewer may not write executions in tenant 'alpha'" in refused.text
        assert "viewer" in refused.json()["detail"]
        cancel = viewer.post(f"/api/v1/executions/{world.alpha['execution_id']}/cancel")
        assert cancel.status_code == 403
        body, digest = make_bundle("other")
        assert viewer.put(f"/api/v1/bundles/{digest}", content=body).status_code == 403
        assert viewer.get("/api/v1/admin/tenants").status_code == 403


def test_a_revoked_token_is_refused_on_its_next_call(world: World) -> None:
    with world.client("alpha-dev") as dev:
        assert dev.get("/api/v1/executions").status_code == 200
        with world.client("alpha-admin") as admin:
            revoked = admin.post(f"/api/v1/admin/tokens/{world.alpha['token_id']}/revoke")
            assert revoked.status_code == 200, revoked.text
        refused = dev.get("/api/v1/executions")
        assert refused.status_code == 401
        assert refused.json()["detail"] == "the API token is invalid, expired or revoked"


def test_an_expired_token_is_refused(world: World) -> None:
    with transaction(world.sessions) as session:
        session.execute(
            update(ApiToken)
            .where(ApiToken.id == world.alpha["token_id"])
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
    with world.client("alpha-dev") as dev:
        assert dev.get("/api/v1/executions").status_code == 401


def test_roles_change_at_run_time_and_are_audited(world: World) -> None:
    with world.client("alpha-viewer") as viewer:
        body = {"workflow": world.alpha["name"], "inputs": {"n": 1}}
        assert viewer.post("/api/v1/executions", json=body).status_code == 403
        with world.client("alpha-admin") as admin:
            grant = {"principal": "alpha-viewer", "role": "developer", "tenant": "alpha"}
            assert admin.post("/api/v1/admin/roles/grant", json=grant).status_code == 200
        assert viewer.post("/api/v1/executions", json=body).status_code == 201
        with world.client("alpha-admin") as admin:
            assert admin.post("/api/v1/admin/roles/revoke", json=grant).status_code == 200
        assert viewer.post("/api/v1/executions", json=body).status_code == 403
    with world.client("admin") as root:
        entries = root.get("/api/v1/admin/audit").json()["entries"]
    actions = [(e["actor"], e["action"], e["target"]) for e in entries]
    assert actions[:2] == [
        ("alpha-admin", "role.revoke", "alpha-viewer"),
        ("alpha-admin", "role.grant", "alpha-viewer"),
    ]
    assert ("admin", "cluster.grant", "alpha") in actions
    with world.client("alpha-admin") as admin:
        assert admin.get("/api/v1/admin/audit").status_code == 403


def test_a_tenant_admin_cannot_reach_beyond_its_tenant(world: World) -> None:
    with world.client("alpha-admin") as admin:
        platform = {"principal": "alpha-dev", "role": "platform-admin", "tenant": None}
        assert admin.post("/api/v1/admin/roles/grant", json=platform).status_code == 403
        # beta's developer is unknown to alpha's admin, whether granting in alpha or beta.
        foreign = {"principal": "beta-dev", "role": "viewer", "tenant": "alpha"}
        assert admin.post("/api/v1/admin/roles/grant", json=foreign).status_code == 404
        foreign["tenant"] = "beta"
        assert admin.post("/api/v1/admin/roles/grant", json=foreign).status_code == 404
        created = admin.post(
            "/api/v1/admin/tenants/alpha/users",
            json={"name": "alpha-bot", "role": "developer", "kind": "service"},
        )
        assert created.status_code == 201, created.text
        assert created.headers["cache-control"] == "no-store"
        token = created.json()["token"]
        assert token.startswith("ffu_")
        assert admin.put("/api/v1/admin/tenants/alpha/quota", json={"gpu": 99}).status_code == 403
    with TestClient(world.app, headers=bearer(token)) as bot:
        me = bot.get("/api/v1/whoami").json()
        assert (me["principal"], me["tenant"], me["roles"]) == (
            "alpha-bot",
            "alpha",
            [{"role": "developer", "tenant": "alpha"}],
        )
        assert bot.get("/api/v1/executions", headers={"X-Fleetflow-Tenant": "beta"}).json() == {
            "detail": "tenant 'beta' not found"
        }


def test_extra_fields_in_admin_bodies_are_refused(world: World) -> None:
    with world.client("admin") as root:
        response = root.post("/api/v1/admin/tenants", json={"name": "delta", "tenant_id": "x"})
        assert response.status_code == 422
        assert "tenant_id" in response.text
        assert root.get("/api/v1/admin/tenants/delta").status_code == 404


def test_clusters_are_listed_only_when_granted(world: World) -> None:
    with world.client("alpha-viewer") as alpha:
        assert [c["name"] for c in alpha.get("/api/v1/clusters").json()] == ["alpha-gpus"]
    with world.client("beta-viewer") as beta:
        assert beta.get("/api/v1/clusters").json() == []
        assert beta.get("/api/v1/clusters/alpha-gpus").status_code == 404


def test_a_task_bigger_than_the_whole_quota_is_refused_at_submission(
    world: World, workflow_spec: WorkflowSpec
) -> None:
    with world.client("admin") as root:
        quota = {"gpu": 2, "cpu": 0.5, "memory": "1Gi", "max_running_tasks": 3}
        answer = root.put("/api/v1/admin/tenants/alpha/quota", json=quota)
        assert answer.status_code == 200, answer.text
        assert answer.json()["memory_bytes"] == 2**30
    with world.client("alpha-dev") as dev:
        refused = dev.post(
            "/api/v1/executions", json={"workflow": world.alpha["name"], "inputs": {"n": 1}}
        )
        assert refused.status_code == 422, refused.text
        detail = refused.json()["detail"]
        assert "can never run within its tenant's quota" in detail
        assert "the quota allows 0.5" in detail
        status = dev.get("/api/v1/quota").json()
        assert status["limits"]["gpu"] == 2 and status["usage"]["running_tasks"] == 0


def test_metrics_carry_per_tenant_gauges(world: World) -> None:
    with world.client("admin") as root:
        assert root.put("/api/v1/admin/tenants/alpha/quota", json={"gpu": 8}).status_code == 200
        text = root.get("/metrics").text
    assert 'fleetflow_tenant_gpu_quota{tenant="alpha"} 8.0' in text
    assert 'fleetflow_tenant_running_tasks{tenant="beta"} 0.0' in text
    assert 'fleetflow_tenant_waiting_for_quota{tenant="alpha"} 0.0' in text
    assert 'fleetflow_tenant_gpu_quota{tenant="beta"}' not in text  # unlimited


def test_metrics_can_require_their_own_token(
    session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    settings = Settings(
        database=DatabaseSettings(url="sqlite://"),
        metrics=MetricsSettings(token=SecretStr("scrape-me")),
    )
    app = create_app(
        settings,
        session_factory=session_factory,
        launcher=FakeLauncher(),
        blob_store=LocalBlobStore(tmp_path / "blobs"),
    )
    api_token = admin_token(app)
    with TestClient(app) as client:
        assert client.get("/metrics").status_code == 401
        assert client.get("/metrics", headers=bearer(api_token)).status_code == 401
        answer = client.get("/metrics", headers=bearer("scrape-me"))
        assert answer.status_code == 200 and "fleetflow_clusters" in answer.text


def test_the_dashboard_shows_only_the_tenants_a_principal_may_read(world: World) -> None:
    with world.client("admin") as root:
        root.put("/api/v1/admin/tenants/alpha/quota", json={"gpu": 4, "cpu": 16})
    with TestClient(world.app) as anonymous:
        page = anonymous.get("/dashboard")
        assert page.status_code == 401 and "API token" in page.text and "alpha" not in page.text
        # What a browser submits from the page's form: its anti-forgery token, its Origin.
        csrf = re.search(r'name=csrf value="([^"]+)"', page.text)
        assert csrf, page.text
        logged_in = anonymous.post(
            "/dashboard/login",
            data={"token": world.tokens["beta-viewer"], "csrf": csrf.group(1)},
            headers={"Origin": "http://testserver"},
        )
        assert logged_in.status_code == 200  # followed the redirect, with the cookie
        assert "<h2>beta</h2>" in logged_in.text and "<h2>alpha</h2>" not in logged_in.text
        assert logged_in.headers["content-security-policy"].startswith("default-src 'none'")
        assert "http://" not in logged_in.text and "https://" not in logged_in.text  # no CDN
    with world.client("alpha-viewer") as viewer:
        page = viewer.get("/dashboard")
        assert page.status_code == 200
        assert "<h2>alpha</h2>" in page.text and "<h2>beta</h2>" not in page.text
        assert "0 / 4" in page.text and "GPU-seconds per hour" in page.text
    with world.client("admin") as root:
        page = root.get("/dashboard")
        assert "<h2>alpha</h2>" in page.text and "<h2>beta</h2>" in page.text
    with TestClient(world.app, cookies={"fleetflow_token": "ffu_forged"}) as forged:
        assert forged.get("/dashboard").status_code == 401


def test_an_execution_keeps_its_priority(world: World) -> None:
    with world.client("alpha-dev") as dev:
        body = {"workflow": world.alpha["name"], "inputs": {"n": 1}, "priority": 7}
        created = dev.post("/api/v1/executions", json=body)
        assert created.status_code == 201, created.text
        assert created.json()["priority"] == 7
        body["priority"] = 5000
        too_high = dev.post("/api/v1/executions", json=body)
        assert too_high.status_code == 422 and "priority" in too_high.text
