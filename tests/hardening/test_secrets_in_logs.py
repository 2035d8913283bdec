"""Tokens and secrets never reach a log record or an error message.

The records are captured raw (before the handlers' redaction filter), at DEBUG, for every
logger: the product must not log them in the first place. Exercised: bootstrap of the first
admin with a configured token, user and cluster creation (ffu_ and ffa_ tokens issued), token
rotation, valid and refused API calls (a wrong token, an agent token on REST, the dashboard
cookie), agent gRPC calls with valid and invalid tokens, leases and their report secrets (`ffl_`)
on accepted and refused status reports, S3 settings with a secret key, and a tenant secret's
value stored, replaced, refused in a malformed body, listed and rotated.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy.orm import Session, sessionmaker

from control_plane.api.app import create_app
from control_plane.bootstrap import ensure_platform_admin
from control_plane.settings import ApiSettings, DatabaseSettings, Settings
from fleetflow.agent.v1 import agent_pb2 as pb
from fleetflow.ir import WorkflowSpec
from fleetflow.storage import LocalBlobStore
from fleetflow.storage.s3 import S3Settings
from tests.hardening.test_grpc import CAPACITY, auth, create_attempt, serve
from tests.integration.agent_server import TOKEN as AGENT_TOKEN
from tests.integration.auth import bearer
from tests.integration.test_api import FakeLauncher

BOOTSTRAP = "ffu_bootstrap-secret-0123456789abcdef"
S3_SECRET = "s3-secret-key-do-not-log-7f3a9c"
TENANT_SECRET = "tenant-wandb-key-do-not-log-4b2e1d"


def _assert_absent(secrets: list[str], *texts: str) -> None:
    for secret in secrets:
        assert len(secret) > 12
        for text in texts:
            assert secret not in text, f"a secret ({secret[:6]}…) leaked: {text[:2000]}"
            assert secret[4:] not in text  # nor without its prefix


def test_no_token_appears_in_logs_or_error_messages(
    session_factory: sessionmaker[Session],
    tmp_path: Path,
    workflow_spec: WorkflowSpec,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    settings = Settings(
        database=DatabaseSettings(url="sqlite://"),
        api=ApiSettings(bootstrap_token=SecretStr(BOOTSTRAP)),
    )
    app = create_app(
        settings,
        session_factory=session_factory,
        launcher=FakeLauncher(),
        blob_store=LocalBlobStore(tmp_path / "blobs"),
    )
    token = ensure_platform_admin(
        session_factory, app.state.authorizer, tenant="default", token=BOOTSTRAP
    )
    assert token == BOOTSTRAP
    secrets = [BOOTSTRAP, S3_SECRET]
    bodies: list[str] = []
    with TestClient(app, headers=bearer(BOOTSTRAP)) as root:
        assert root.post("/api/v1/admin/tenants", json={"name": "alpha"}).status_code == 201
        user = root.post(
            "/api/v1/admin/tenants/alpha/users", json={"name": "alice", "role": "developer"}
        )
        assert user.status_code == 201, user.text
        user_token = user.json()["token"]
        cluster = root.post("/api/v1/admin/clusters", json={"name": "gpus"})
        assert cluster.status_code == 201, cluster.text
        agent_token = cluster.json()["agent_token"]
        rotated = root.post("/api/v1/admin/clusters/gpus/rotate-token").json()["agent_token"]
        more = root.post("/api/v1/admin/tenants/alpha/users/alice/tokens", json={})
        assert more.status_code == 201, more.text
        secrets += [user_token, agent_token, rotated, more.json()["token"]]
        # A tenant secret's value: stored, replaced, refused in a bad body, listed, rotated.
        for body in ({"value": TENANT_SECRET}, {"value": TENANT_SECRET + "-2"}):
            stored = root.put("/api/v1/secrets/wandb", json=body)
            assert stored.status_code in (200, 201), stored.text
            bodies.append(stored.text)
        bad = root.put(
            "/api/v1/secrets/wandb", json={"value": TENANT_SECRET, "kubernetes_key": "k"}
        )
        assert bad.status_code == 422
        secrets += [TENANT_SECRET]
        bodies += [
            bad.text,
            root.get("/api/v1/secrets").text,
            root.post("/api/v1/admin/secrets/rotate").text,
        ]
        bodies += [r.text for r in (root.get("/api/v1/admin/audit"), root.get("/api/v1/whoami"))]
    assert user_token.startswith("ffu_") and agent_token.startswith("ffa_")
    with TestClient(app) as anonymous:
        for wrong in (user_token + "x", rotated, agent_token, "ffu_" + "A" * 40, S3_SECRET):
            for path in ("/api/v1/executions", "/api/v1/admin/tenants", "/api/v1/whoami"):
                refused = anonymous.get(path, headers=bearer(wrong))
                assert refused.status_code == 401, (path, refused.text)
                bodies.append(refused.text + str(refused.headers))
        dashboard = anonymous.get("/dashboard", cookies={"fleetflow_token": rotated})
        assert dashboard.status_code == 401
        bodies.append(dashboard.text)
        ok = anonymous.get("/api/v1/executions", headers=bearer(user_token))
        assert ok.status_code == 200
        bodies.append(ok.text)
    s3 = S3Settings(secret_key=SecretStr(S3_SECRET), access_key="AKIAEXAMPLE")
    bodies += [repr(s3), str(s3), repr(settings), str(settings)]
    _assert_absent(secrets, caplog.text, *bodies)
    assert "refused" in caplog.text or "401" in caplog.text or caplog.records  # logs were made


async def test_agent_tokens_do_not_appear_in_grpc_logs(
    session_factory: sessionmaker[Session],
    tmp_path: Path,
    workflow_spec: WorkflowSpec,
    caplog: pytest.LogCaptureFixture,
) -> None:
    import asyncio

    import grpc

    caplog.set_level(logging.DEBUG)
    wrong = "ffa_wrong-token-for-this-cluster-9d8c7b"
    wrong_secret = "ffl_not-this-lease-s-secret-4e5f6a"
    async with serve(session_factory, workflow_spec, tmp_path) as served:
        registered = await served.stub.Register(
            pb.RegisterRequest(agent_version="t", capacity=CAPACITY), metadata=auth()
        )
        assert registered.cluster_name
        details = []
        for token in (wrong, AGENT_TOKEN + "-x"):
            try:
                await served.stub.Heartbeat(pb.HeartbeatRequest(), metadata=auth(token))
            except grpc.aio.AioRpcError as exc:
                details.append(str(exc.details()))
        assert len(details) == 2
        # A lease, a report with its secret, and reports with a wrong one and with none.
        await asyncio.to_thread(create_attempt, served, 1)
        leased = await served.stub.LeaseAttempts(
            pb.LeaseAttemptsRequest(max_attempts=1, wait_seconds=5), metadata=auth()
        )
        (assignment,) = leased.assignments
        assert assignment.report_secret.startswith("ffl_")

        def report(secret: str, sequence: int) -> pb.ReportStatusRequest:
            return pb.ReportStatusRequest(
                attempt_id=assignment.attempt_id,
                fencing_token=assignment.fencing_token,
                report_secret=secret,
                state=pb.ATTEMPT_STATE_RUNNING,
                sequence=sequence,
            )

        accepted = await served.stub.ReportStatus(
            report(assignment.report_secret, 1), metadata=auth()
        )
        assert accepted.accepted
        for secret in (wrong_secret, assignment.report_secret + "x", ""):
            try:
                await served.stub.ReportStatus(report(secret, 2), metadata=auth())
            except grpc.aio.AioRpcError as exc:
                assert exc.code() is grpc.StatusCode.PERMISSION_DENIED
                details.append(str(exc.details()))
        assert len(details) == 5
    assert "invalid agent token" in caplog.text
    assert "refused" in caplog.text
    lease_secrets = [assignment.report_secret, wrong_secret]
    _assert_absent([AGENT_TOKEN, wrong, *lease_secrets], caplog.text, *details)
