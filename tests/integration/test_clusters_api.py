"""Clusters as admins and operators see them: the REST API on a migrated database (SQLite and
PostgreSQL), token rotation against the real gRPC AgentService, and the `fleetflow admin
clusters` CLI against a whole stack.

The REST app is built as `test_api.py` builds it; its launcher is never used by these routes.
The gRPC server is composed as `control_plane/server.py` composes it, with
`DiscardingSink` standing in for the Temporal signal (no attempt finishes here).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from control_plane.agent_api.interceptors import InternalErrorInterceptor
from control_plane.agent_api.service import AgentService, AttemptsReady
from control_plane.api.app import create_app
from control_plane.db.models import Cluster, utcnow
from control_plane.db.repositories import clusters as clusters_repo
from control_plane.db.repositories import tenancy
from control_plane.db.repositories.tenants import get_or_create_tenant
from control_plane.db.session import transaction
from control_plane.orchestration.workflows import AttemptFinished
from control_plane.services.finish_notifier import FinishNotifier
from control_plane.settings import DatabaseSettings, GrpcSettings, Settings
from fleetflow.agent.v1 import agent_pb2, agent_pb2_grpc
from fleetflow.ir import WorkflowSpec
from fleetflow.states import AttemptState
from fleetflow.storage import LocalBlobStore
from tests.api_server import UnusedLauncher
from tests.integration.auth import admin_client
from tests.integration.stack import Stack, start_agent
from tests.seeding import Held, seed_execution
from tests.unit.cli_harness import Result, cli_invoker

pytestmark = pytest.mark.integration

HEARTBEAT_INTERVAL_SECONDS = 4  # online up to 6 s, degraded up to the 12 s grace
DEADLINE_SECONDS = 30.0
TOKEN_PATTERN = re.compile(r"ffa_[A-Za-z0-9_-]+")


@pytest.fixture
def client(session_factory: sessionmaker[Session], tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(
        database=DatabaseSettings(url="sqlite://"),
        grpc=GrpcSettings(heartbeat_interval_seconds=HEARTBEAT_INTERVAL_SECONDS),
    )
    app = create_app(
        settings,
        session_factory=session_factory,
        launcher=UnusedLauncher(),
        blob_store=LocalBlobStore(tmp_path / "blobs"),
    )
    with admin_client(app) as test_client:
        yield test_client


def create(client: TestClient, name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    response = client.post("/api/v1/admin/clusters", json={"name": name, "labels": labels or {}})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def assert_error(response: Any, status: int, field: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert isinstance(body["detail"], str) and body["detail"]
    if field is not None:
        assert field in [error["field"] for error in body["errors"]], body
    return body


def cluster_row(sessions: sessionmaker[Session], name: str) -> Cluster:
    with sessions() as session:
        cluster = clusters_repo.get_cluster_by_name(session, name)
        assert cluster is not None
        return cluster


def set_heartbeat(
    sessions: sessionmaker[Session], name: str, age: timedelta | None, **values: Any
) -> None:
    with transaction(sessions) as session:
        session.execute(
            update(Cluster)
            .where(Cluster.name == name)
            .values(last_heartbeat_at=None if age is None else utcnow() - age, **values)
        )


# --- create -----------------------------------------------------------------------------------


def test_create_shows_the_token_once_and_stores_only_its_hash(
    client: TestClient, session_factory: sessionmaker[Session]
) -> None:
    response = client.post(
        "/api/v1/admin/clusters",
        json={"name": "gpu-east-1", "labels": {"zone": "us-east", "example.com/gpu": "a100"}},
    )
    assert response.status_code == 201, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    token = body["agent_token"]
    assert TOKEN_PATTERN.fullmatch(token)
    assert body["cluster"] == {
        "name": "gpu-east-1",
        "labels": {"zone": "us-east", "example.com/gpu": "a100"},
        "status": "offline",  # no agent has heartbeated yet
        "agent_version": None,
        "last_heartbeat_at": None,
        "capacity": None,
        "active_attempts": 0,
        "created_at": body["cluster"]["created_at"],
    }

    row = cluster_row(session_factory, "gpu-east-1")
    assert row.token_hash == clusters_repo.hash_token(token) != token
    with session_factory() as session:
        found = clusters_repo.cluster_for_token(session, token)
        assert found is not None and found.name == "gpu-east-1"

    # Never again: neither the token nor its hash is in any later answer.
    for later in (client.get("/api/v1/clusters"), client.get("/api/v1/clusters/gpu-east-1")):
        assert later.status_code == 200
        assert token not in later.text and row.token_hash not in later.text
        assert "token" not in later.text
    assert row.token_hash not in response.text
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    assert not [field for field in schemas["ClusterPublic"]["properties"] if "token" in field]


def test_a_second_cluster_of_the_same_name_is_a_conflict(
    client: TestClient, session_factory: sessionmaker[Session]
) -> None:
    first = create(client, "alpha")
    response = client.post("/api/v1/admin/clusters", json={"name": "alpha"})
    body = assert_error(response, 409, "name")
    assert "cluster alpha exists already" in body["detail"]
    # The first cluster's token still works; nothing was rotated.
    with session_factory() as session:
        assert clusters_repo.cluster_for_token(session, first["agent_token"]) is not None


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "GPU-East"}, "name"),
        ({"name": "gpu_east"}, "name"),
        ({"name": "gpu.east"}, "name"),
        ({"name": "-gpu"}, "name"),
        ({"name": "gpu-"}, "name"),
        ({"name": ""}, "name"),
        ({"name": "a" * 64}, "name"),
        ({"name": "ok", "labels": {"bad key": "x"}}, "labels"),
        ({"name": "ok", "labels": {"": "x"}}, "labels"),
        ({"name": "ok", "labels": {"Not_A.Domain/zone": "x"}}, "labels"),
        ({"name": "ok", "labels": {"zone": "-eu"}}, "labels"),
        ({"name": "ok", "labels": {"zone": "e" * 64}}, "labels"),
        ({"name": "ok", "labels": {"zone": 3}}, "labels.zone"),
        ({"name": "ok", "labels": {f"k{i}": "v" for i in range(65)}}, "labels"),
        ({"name": "ok", "token_hash": "0" * 64}, "token_hash"),
        ({"name": "ok", "agent_token": "ffa_mine"}, "agent_token"),
        ({"labels": {}}, "name"),
    ],
    ids=[
        "uppercase",
        "underscore",
        "dot",
        "leading-dash",
        "trailing-dash",
        "empty",
        "too-long",
        "label-key-space",
        "label-key-empty",
        "label-prefix",
        "label-value",
        "label-value-too-long",
        "label-value-not-string",
        "too-many-labels",
        "extra-token-hash",
        "extra-token",
        "missing-name",
    ],
)
def test_invalid_clusters_are_rejected_naming_the_field(
    client: TestClient, body: dict[str, Any], field: str
) -> None:
    assert_error(client.post("/api/v1/admin/clusters", json=body), 422, field)
    assert client.get("/api/v1/clusters").json() == []


def test_label_syntax_follows_kubernetes(client: TestClient) -> None:
    labels = {"zone": "eu-west", "example.com/gpu": "A100_80GB", "spot": "", "tier.v2": "x"}
    assert create(client, "labelled", labels)["cluster"]["labels"] == labels


def test_invalid_label_errors_name_the_label(client: TestClient) -> None:
    response = client.post(
        "/api/v1/admin/clusters", json={"name": "ok", "labels": {"bad key": "v", "zone": "-eu"}}
    )
    detail = assert_error(response, 422, "labels")["detail"]
    assert "label key 'bad key'" in detail and "label zone: value '-eu'" in detail


# --- list and get -----------------------------------------------------------------------------


def test_status_follows_the_last_heartbeat(
    client: TestClient, session_factory: sessionmaker[Session]
) -> None:
    ages = {
        "a-online": timedelta(seconds=1),
        "b-degraded": timedelta(seconds=HEARTBEAT_INTERVAL_SECONDS * 2),
        "c-offline": timedelta(seconds=HEARTBEAT_INTERVAL_SECONDS * 10),
        "d-never": None,
    }
    for name, age in reversed(ages.items()):
        create(client, name)
        set_heartbeat(session_factory, name, age)
    expected = {
        "a-online": "online",
        "b-degraded": "degraded",
        "c-offline": "offline",
        "d-never": "offline",
    }
    listed = client.get("/api/v1/clusters").json()
    assert [(c["name"], c["status"]) for c in listed] == list(expected.items())  # by name
    for name, status in expected.items():
        one = client.get(f"/api/v1/clusters/{name}").json()
        assert one["status"] == status
        assert (one["last_heartbeat_at"] is None) == (name == "d-never")
    assert listed[0]["last_heartbeat_at"].endswith("Z")  # UTC, on both backends


def test_capacity_agent_version_and_active_attempts(
    client: TestClient, session_factory: sessionmaker[Session], workflow_spec: WorkflowSpec
) -> None:
    create(client, "busy")
    create(client, "idle")
    capacity = {
        "cpu_allocatable": 64.0,
        "cpu_in_use": 3.5,
        "memory_bytes_allocatable": 256 << 30,
        "memory_bytes_in_use": 8 << 30,
        "gpus": [
            {"gpu_type": "a100", "allocatable": 8, "in_use": 2},
            {"gpu_type": "h100", "allocatable": 4, "in_use": 4},
        ],
    }
    set_heartbeat(
        session_factory,
        "busy",
        timedelta(seconds=1),
        capacity=capacity,
        agent_version="1.2.3",
    )
    states = [
        AttemptState.PENDING,
        AttemptState.ASSIGNED,
        AttemptState.LEASED,
        AttemptState.RUNNING,
        AttemptState.RUNNING,
        AttemptState.SUCCEEDED,
        AttemptState.FAILED,
        AttemptState.LOST,
    ]
    with transaction(session_factory) as session:
        tenancy.grant_cluster(
            session, get_or_create_tenant(session, "research"), tenancy.EVERY_CLUSTER
        )
    held = (Held(state, cluster="busy") for state in states)
    seed_execution(session_factory, workflow_spec, "research", *held)

    body = client.get("/api/v1/clusters/busy").json()
    assert body["status"] == "online"
    assert body["agent_version"] == "1.2.3"
    assert body["capacity"] == capacity
    assert body["active_attempts"] == 4  # ASSIGNED, LEASED, RUNNING x2
    idle = client.get("/api/v1/clusters/idle").json()
    assert idle["active_attempts"] == 0 and idle["capacity"] is None


def test_unknown_clusters_are_404(client: TestClient) -> None:
    assert assert_error(client.get("/api/v1/clusters/nope"), 404)["detail"] == (
        "cluster nope not found"
    )
    assert_error(client.post("/api/v1/admin/clusters/nope/rotate-token"), 404)


def test_admin_routes_are_under_the_admin_prefix(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    writes = [
        path
        for path, operations in paths.items()
        if "cluster" in path and set(operations) & {"post", "put", "patch", "delete"}
    ]
    assert writes and all(path.startswith("/api/v1/admin/") for path in writes)
    assert {"/api/v1/clusters", "/api/v1/clusters/{name}"} <= set(paths)


# --- rotation, against the real agent gRPC service ------------------------------------------


class DiscardingSink:
    """Stands in for the Temporal signal; no attempt finishes in these tests."""

    async def __call__(self, execution_id: str, event: AttemptFinished) -> None:
        return None


@dataclass
class AgentEndpoint:
    stub: agent_pb2_grpc.AgentServiceStub

    async def register(self, token: str) -> agent_pb2.RegisterResponse:
        response: agent_pb2.RegisterResponse = await self.stub.Register(
            agent_pb2.RegisterRequest(
                agent_version="7.0.1",
                executors=["local-process"],
                capacity=agent_pb2.Capacity(
                    cpu_allocatable=8,
                    memory_bytes_allocatable=32 << 30,
                    gpus=[agent_pb2.GpuCapacity(gpu_type="l4", allocatable=2, in_use=1)],
                ),
            ),
            metadata=(("authorization", f"Bearer {token}"),),
            timeout=DEADLINE_SECONDS,
        )
        return response

    async def heartbeat(self, token: str) -> agent_pb2.HeartbeatResponse:
        response: agent_pb2.HeartbeatResponse = await self.stub.Heartbeat(
            agent_pb2.HeartbeatRequest(),
            metadata=(("authorization", f"Bearer {token}"),),
            timeout=DEADLINE_SECONDS,
        )
        return response


@pytest.fixture
async def agent_endpoint(
    session_factory: sessionmaker[Session], tmp_path: Path
) -> AsyncIterator[AgentEndpoint]:
    ready = AttemptsReady()
    ready.bind(asyncio.get_running_loop())
    server = grpc.aio.server(interceptors=[InternalErrorInterceptor()])
    agent_pb2_grpc.add_AgentServiceServicer_to_server(
        AgentService(
            session_factory,
            LocalBlobStore(tmp_path / "blobs"),
            FinishNotifier(session_factory, DiscardingSink()),
            attempts_ready=ready,
            max_lease_wait_seconds=1,
            heartbeat_interval_seconds=HEARTBEAT_INTERVAL_SECONDS,
        ),
        server,
    )
    port = server.add_insecure_port("127.0.0.1:0")
    assert port, "could not bind a loopback port"
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield AgentEndpoint(agent_pb2_grpc.AgentServiceStub(channel))
    finally:
        await channel.close()
        await server.stop(grace=None)


async def test_rotation_refuses_the_old_token_at_once(
    client: TestClient, agent_endpoint: AgentEndpoint
) -> None:
    old = create(client, "edge")["agent_token"]
    registered = await agent_endpoint.register(old)
    assert registered.cluster_name == "edge"

    # The agent's Register is what the API then shows.
    shown = client.get("/api/v1/clusters/edge").json()
    assert shown["status"] == "online" and shown["agent_version"] == "7.0.1"
    assert shown["capacity"]["gpus"] == [{"gpu_type": "l4", "allocatable": 2, "in_use": 1}]

    response = client.post("/api/v1/admin/clusters/edge/rotate-token")
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    rotated = response.json()
    new = rotated["agent_token"]
    assert TOKEN_PATTERN.fullmatch(new) and new != old
    assert rotated["cluster"]["name"] == "edge" and rotated["cluster"]["status"] == "online"

    for call in (agent_endpoint.register, agent_endpoint.heartbeat):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await call(old)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert refused.value.details() == "invalid agent token"
    assert (await agent_endpoint.register(new)).cluster_name == "edge"
    await agent_endpoint.heartbeat(new)
    assert new not in client.get("/api/v1/clusters/edge").text


async def test_a_token_works_only_for_its_own_cluster(
    client: TestClient, agent_endpoint: AgentEndpoint
) -> None:
    tokens = {name: create(client, name)["agent_token"] for name in ("one", "two")}
    for name, token in tokens.items():
        assert (await agent_endpoint.register(token)).cluster_name == name


# --- the CLI against a whole stack ------------------------------------------------------------


@pytest.fixture
def fleetflow(
    stack: Stack, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Callable[..., Result]:
    """`fleetflow …` in this process, through the console script's entry point, against the
    stack's REST API."""
    for name, value in stack.env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("FLEETFLOW_DEBUG", raising=False)
    monkeypatch.setenv("COLUMNS", "200")

    return cli_invoker(monkeypatch, capsys)


def wait_for(condition: Callable[[], Any], what: str, stack: Stack) -> Any:
    return stack.wait_for(condition, what, DEADLINE_SECONDS)


@pytest.mark.parametrize("stack", ["sqlite"], indirect=True)
def test_cli_create_list_get_start_an_agent_and_rotate(
    stack: Stack, fleetflow: Callable[..., Result]
) -> None:
    created = fleetflow(
        "admin", "clusters", "create", "edge-1", "--label", "zone=eu", "-l", "gpu=l4"
    )
    assert created.code == 0, created
    tokens = TOKEN_PATTERN.findall(created.out)
    assert tokens, created.out
    token = tokens[0]
    assert set(tokens) == {token}  # the token, and the same token in the agent command
    assert f"FLEETFLOW_AGENT_TOKEN={token} fleetflow agent run --control-plane" in created.out
    assert "shown only this once" in created.out

    again = fleetflow("admin", "clusters", "create", "edge-1")
    assert again.code == 1 and again.err.startswith("error: cluster edge-1 exists already")

    listed = fleetflow("admin", "clusters", "list")
    assert listed.code == 0, listed
    rows = {line.split()[0]: line.split() for line in listed.out.splitlines()[1:]}
    assert rows["edge-1"][:4] == ["edge-1", "offline", "-", "never"]
    assert "GPUS FREE/TOTAL" in listed.out.splitlines()[0]
    assert "local" in rows  # the stack's own cluster
    assert token not in listed.out

    got = fleetflow("admin", "clusters", "get", "edge-1")
    assert got.code == 0, got
    assert "offline" in got.out and "gpu=l4, zone=eu" in got.out and "never" in got.out
    assert token not in got.out

    # An agent started as the create command said comes online, with its version.
    agent = start_agent(stack, token=token, name="agent-edge-1")
    stack.children["agent-edge-1"] = agent

    def online() -> dict[str, Any] | None:
        result = fleetflow("admin", "clusters", "get", "edge-1", "--json")
        assert result.code == 0, result
        cluster: dict[str, Any] = json.loads(result.out)
        return cluster if cluster["status"] == "online" else None

    cluster = wait_for(online, "edge-1 to come online", stack)
    assert cluster["agent_version"] and cluster["capacity"]["cpu_allocatable"] > 0
    listed = fleetflow("admin", "clusters", "list")
    assert re.search(r"^edge-1\s+online\s+\S+\s+\d+s ago\s+-\s+0\s*$", listed.out, re.M), listed.out

    # Rotating refuses the running agent's token: it stops, saying why.
    rotated = fleetflow("admin", "clusters", "rotate-token", "edge-1")
    assert rotated.code == 0, rotated
    (new_token,) = set(TOKEN_PATTERN.findall(rotated.out))
    assert new_token != token and "the old one no longer works" in rotated.out
    wait_for(lambda: agent.poll() is not None, "the agent with the old token to exit", stack)
    assert agent.returncode == 1
    assert "rejected this agent's cluster token" in (stack.home / "agent-edge-1.log").read_text()


@pytest.mark.parametrize("stack", ["sqlite"], indirect=True)
def test_cli_mistakes_are_one_clear_line(stack: Stack, fleetflow: Callable[..., Result]) -> None:
    bad_label = fleetflow("admin", "clusters", "create", "edge-2", "--label", "foo")
    assert bad_label.code == 1
    assert bad_label.err.strip().splitlines() == [
        "error: --label 'foo' is not key=value (e.g. --label zone=eu; an empty value is "
        "written key=)"
    ]
    bad_name = fleetflow("admin", "clusters", "create", "Edge_2")
    assert bad_name.code == 1 and "'Edge_2' is not a valid cluster name" in bad_name.err
    for command in ("get", "rotate-token"):
        missing = fleetflow("admin", "clusters", command, "nope")
        assert missing.code == 1, missing
        assert missing.err.startswith("error: cluster nope not found on http://127.0.0.1:")
        assert "`fleetflow admin clusters list`" in missing.err
        assert "Traceback" not in missing.err
    assert "edge-2" not in fleetflow("admin", "clusters", "list").out
