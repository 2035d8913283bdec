"""`Idempotency-Key` on execution creation: a client that retries after a lost response gets
the same execution, and exactly one is started; a reused key with another request is refused;
keys are per tenant; two concurrent requests with one key create one execution (SQLite and
PostgreSQL). The SDK sends one per `Client.launch` and resends on a lost answer."""

from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from control_plane.db.models import Execution, IdempotencyKey, utcnow
from control_plane.settings import ApiSettings
from fleetflow.client import Client
from fleetflow.config import CliConfig
from fleetflow.ir import WorkflowSpec
from tests.hardening.world import World, build_world, unlimited
from tests.integration.auth import bearer
from tests.integration.test_api import assert_error, make_bundle

KEY = {"Idempotency-Key": "6f1c2a9e-retry-me"}


def executions(world: World) -> int:
    with world.sessions() as session:
        return int(session.scalar(select(func.count()).select_from(Execution)) or 0)


def world_of(session_factory: sessionmaker[Session], tmp_path: Path, spec: WorkflowSpec) -> World:
    return build_world(session_factory, tmp_path, spec, unlimited())


def test_a_retried_request_gets_the_same_execution_and_one_start(
    session_factory: sessionmaker[Session], tmp_path: Path, workflow_spec: WorkflowSpec
) -> None:
    world = world_of(session_factory, tmp_path, workflow_spec)
    body = {"workflow": world.workflow, "inputs": {"n": 3}}
    with world.client(world.alpha_dev) as alpha:
        first = alpha.post("/api/v1/executions", json=body, headers=KEY)
        assert first.status_code == 201, first.text
        # The same request again, spelled differently (defaults written out, keys reordered).
        same = {"inputs": {"n": 3}, "priority": 0, "version": None, "workflow": world.workflow}
        for _ in range(3):
            again = alpha.post("/api/v1/executions", json=same, headers=KEY)
            assert again.status_code == 200, again.text
            assert again.headers["Idempotent-Replayed"] == "true"
            assert again.json()["id"] == first.json()["id"]
        # Without a key, the same body is a new execution.
        assert alpha.post("/api/v1/executions", json=body).json()["id"] != first.json()["id"]
    assert executions(world) == 2
    # A replay of a still-QUEUED execution asks the launcher again, which is idempotent (the
    # workflow id is the execution id): exactly one workflow was started for it.
    assert world.launcher.started[0] == first.json()["id"]
    assert set(world.launcher.started[:4]) == {first.json()["id"]}


def test_a_lost_start_is_made_good_by_the_retry(
    session_factory: sessionmaker[Session], tmp_path: Path, workflow_spec: WorkflowSpec
) -> None:
    """The first answer is a 503 (created, the orchestrator down); the retry starts it."""
    world = world_of(session_factory, tmp_path, workflow_spec)
    body = {"workflow": world.workflow, "inputs": {"n": 3}}
    with world.client(world.alpha_dev) as alpha:
        world.launcher.unavailable = True
        assert_error(alpha.post("/api/v1/executions", json=body, headers=KEY), 503)
        world.launcher.unavailable = False
        retried = alpha.post("/api/v1/executions", json=body, headers=KEY)
        assert retried.status_code == 200, retried.text
    assert executions(world) == 1
    assert world.launcher.started == [retried.json()["id"]]  # the one start that succeeded


def test_a_key_reused_for_another_request_is_refused(
    session_factory: sessionmaker[Session], tmp_path: Path, workflow_spec: WorkflowSpec
) -> None:
    world = world_of(session_factory, tmp_path, workflow_spec)
    with world.client(world.alpha_dev) as alpha:
        first = alpha.post(
            "/api/v1/executions", json={"workflow": world.workflow, "inputs": {"n": 3}}, headers=KEY
        )
        other = alpha.post(
            "/api/v1/executions", json={"workflow": world.workflow, "inputs": {"n": 4}}, headers=KEY
        )
        body = assert_error(other, 422, "Idempotency-Key")
        assert "was used for a different request" in body["detail"]
        assert first.json()["id"] in body["detail"]
        for bad in ("", "has space", "x" * 256, "tab\tkey"):
            refused = alpha.post(
                "/api/v1/executions",
                json={"workflow": world.workflow, "inputs": {"n": 3}},
                headers={"Idempotency-Key": bad},
            )
            assert refused.status_code == 422, (bad, refused.text)
    assert executions(world) == 1


def test_keys_are_scoped_per_tenant(
    session_factory: sessionmaker[Session], tmp_path: Path, workflow_spec: WorkflowSpec
) -> None:
    world = world_of(session_factory, tmp_path, workflow_spec)
    body = {"workflow": world.workflow, "inputs": {"n": 3}}
    with world.client(world.beta_dev) as beta:
        data, digest = make_bundle()
        assert beta.put(f"/api/v1/bundles/{digest}", content=data).status_code == 201
        spec = {"spec": workflow_spec.model_dump(mode="json"), "bundle_digest": digest}
        assert beta.post("/api/v1/workflows", json=spec).status_code == 201
        in_beta = beta.post("/api/v1/executions", json=body, headers=KEY)
    with world.client(world.alpha_dev) as alpha:
        in_alpha = alpha.post("/api/v1/executions", json=body, headers=KEY)
        assert in_alpha.status_code == 201
        assert alpha.get(f"/api/v1/executions/{in_beta.json()['id']}").status_code == 404
    assert in_beta.status_code == 201 and in_alpha.json()["id"] != in_beta.json()["id"]
    assert executions(world) == 2


def test_concurrent_requests_with_one_key_create_one_execution(
    session_factory: sessionmaker[Session], tmp_path: Path, workflow_spec: WorkflowSpec
) -> None:
    world = world_of(session_factory, tmp_path, workflow_spec)
    body = {"workflow": world.workflow, "inputs": {"n": 3}}
    rounds, threads_per_round = 5, 4
    for round_ in range(rounds):
        key = {"Idempotency-Key": f"concurrent-{round_}"}
        barrier = threading.Barrier(threads_per_round)
        answers: list[httpx.Response] = []

        def create(
            key: dict[str, str] = key,
            barrier: threading.Barrier = barrier,
            answers: list[httpx.Response] = answers,
        ) -> None:
            with world.client(world.alpha_dev) as alpha:
                barrier.wait(timeout=30)
                answers.append(alpha.post("/api/v1/executions", json=body, headers=key))

        threads = [threading.Thread(target=create) for _ in range(threads_per_round)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert sorted(a.status_code for a in answers) == [200] * 3 + [201], [
            a.text for a in answers
        ]
        assert len({a.json()["id"] for a in answers}) == 1
    assert executions(world) == rounds
    assert len(set(world.launcher.started)) == rounds
    with world.sessions() as session:
        assert session.scalar(select(func.count()).select_from(IdempotencyKey)) == rounds


class LoseFirstAnswer(httpx.BaseTransport):
    """Delivers requests, but drops the answer to the first execution creation, as a
    connection reset after the server committed would."""

    def __init__(self, inner: httpx.BaseTransport) -> None:
        self.inner = inner
        self.lost = 0
        self.keys: list[str | None] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        if request.method == "POST" and request.url.path == "/api/v1/executions":
            self.keys.append(request.headers.get("Idempotency-Key"))
            if self.lost == 0:
                self.lost += 1
                response.read()
                raise httpx.ReadError("connection reset by peer", request=request)
        return response


def sdk_client(world: World, transport: Any) -> Client:
    client = Client(
        "http://testserver", token=world.alpha_dev, config=CliConfig(api_url="http://testserver")
    )
    client.transport.http = httpx.Client(
        base_url="http://testserver", headers=bearer(world.alpha_dev), transport=transport
    )
    return client


def test_the_sdk_resends_a_lost_creation_with_its_key(
    session_factory: sessionmaker[Session], tmp_path: Path, workflow_spec: WorkflowSpec
) -> None:
    world = world_of(session_factory, tmp_path, workflow_spec)
    with TestClient(world.app) as test_client:
        transport = LoseFirstAnswer(test_client._transport)
        client = sdk_client(world, transport)
        created = client.executions.create(world.workflow, {"n": 3}, idempotency_key="sdk-1")
        assert transport.lost == 1 and transport.keys == ["sdk-1", "sdk-1"]
        assert executions(world) == 1
        assert set(world.launcher.started) == {created.id}


# Key expiry: `FLEETFLOW_API_IDEMPOTENCY_KEY_TTL_SECONDS`. Keys are aged by moving their
# `created_at` back in the database, not by waiting.
TTL = timedelta(hours=1)


def expiring_world(
    session_factory: sessionmaker[Session], tmp_path: Path, spec: WorkflowSpec
) -> World:
    api = ApiSettings(
        rate_limit_per_second=0,
        auth_failures_per_second=0,
        idempotency_key_ttl_seconds=TTL.total_seconds(),
    )
    return build_world(session_factory, tmp_path, spec, api)


def age_key(world: World, key: str, by: timedelta) -> None:
    with world.sessions() as session:
        session.execute(
            update(IdempotencyKey).where(IdempotencyKey.key == key).values(created_at=utcnow() - by)
        )
        session.commit()


def stored_keys(world: World) -> set[str]:
    with world.sessions() as session:
        return set(session.scalars(select(IdempotencyKey.key)))


def test_a_key_within_its_window_still_dedupes(
    session_factory: sessionmaker[Session], tmp_path: Path, workflow_spec: WorkflowSpec
) -> None:
    world = expiring_world(session_factory, tmp_path, workflow_spec)
    body = {"workflow": world.workflow, "inputs": {"n": 3}}
    with world.client(world.alpha_dev) as alpha:
        first = alpha.post("/api/v1/executions", json=body, headers=KEY)
        assert first.status_code == 201, first.text
        age_key(world, KEY["Idempotency-Key"], TTL - timedelta(minutes=5))
        again = alpha.post("/api/v1/executions", json=body, headers=KEY)
        assert again.status_code == 200, again.text
        assert again.json()["id"] == first.json()["id"]
    assert executions(world) == 1


def test_an_expired_key_no_longer_dedupes_and_is_replaced(
    session_factory: sessionmaker[Session], tmp_path: Path, workflow_spec: WorkflowSpec
) -> None:
    world = expiring_world(session_factory, tmp_path, workflow_spec)
    body = {"workflow": world.workflow, "inputs": {"n": 3}}
    with world.client(world.alpha_dev) as alpha:
        first = alpha.post("/api/v1/executions", json=body, headers=KEY)
        assert first.status_code == 201, first.text
        age_key(world, KEY["Idempotency-Key"], TTL + timedelta(minutes=1))
        # Past its window the key names nothing: the same request is a new execution...
        fresh = alpha.post("/api/v1/executions", json=body, headers=KEY)
        assert fresh.status_code == 201, fresh.text
        assert fresh.json()["id"] != first.json()["id"]
        # ...and the key now belongs to it, deduping again.
        again = alpha.post("/api/v1/executions", json=body, headers=KEY)
        assert again.status_code == 200 and again.json()["id"] == fresh.json()["id"]
        # An expired key may also be reused for another request (no 422).
        age_key(world, KEY["Idempotency-Key"], TTL + timedelta(minutes=1))
        other = alpha.post("/api/v1/executions", json={**body, "inputs": {"n": 4}}, headers=KEY)
        assert other.status_code == 201, other.text
    assert executions(world) == 3
    with world.sessions() as session:
        row = session.get(IdempotencyKey, (world_tenant(session, other), KEY["Idempotency-Key"]))
        assert row is not None and row.execution_id == other.json()["id"]


def world_tenant(session: Session, response: httpx.Response) -> str:
    execution = session.get(Execution, response.json()["id"])
    assert execution is not None
    return execution.tenant_id


def test_expired_keys_are_purged_when_a_key_is_recorded(
    session_factory: sessionmaker[Session], tmp_path: Path, workflow_spec: WorkflowSpec
) -> None:
    world = expiring_world(session_factory, tmp_path, workflow_spec)
    body = {"workflow": world.workflow, "inputs": {"n": 3}}
    with world.client(world.alpha_dev) as alpha:
        for key in ("old-1", "old-2", "young"):
            created = alpha.post("/api/v1/executions", json=body, headers={"Idempotency-Key": key})
            assert created.status_code == 201, created.text
        age_key(world, "old-1", TTL + timedelta(minutes=1))
        age_key(world, "old-2", 10 * TTL)
        assert stored_keys(world) == {"old-1", "old-2", "young"}
        # A creation without a key records nothing and purges nothing.
        assert alpha.post("/api/v1/executions", json=body).status_code == 201
        assert stored_keys(world) == {"old-1", "old-2", "young"}
        new = alpha.post("/api/v1/executions", json=body, headers={"Idempotency-Key": "new"})
        assert new.status_code == 201, new.text
    assert stored_keys(world) == {"young", "new"}
    assert executions(world) == 5  # the executions themselves are kept
