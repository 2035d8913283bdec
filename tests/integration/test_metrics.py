"""`/metrics` on the REST API, scraped as Prometheus would, on SQLite and PostgreSQL.

Each test reads the series it cares about before and after doing something real (requests
through the app, attempts leased through the real agent gRPC service, executions finished by
the API and by the worker's activity) and checks what changed. The event metrics are
process-wide, so tests compare deltas, never absolute values.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path

import grpc
import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from control_plane.api.app import create_app
from control_plane.db.models import Cluster, Execution, TaskAttempt, utcnow
from control_plane.db.repositories import clusters as clusters_repo
from control_plane.db.repositories.executions import create_execution, move_execution
from control_plane.db.session import make_engine, make_session_factory, transaction
from control_plane.metrics import serve_metrics
from control_plane.orchestration.activities import ExecutionActivities
from control_plane.orchestration.workflows import FinishExecutionInput
from control_plane.scheduling.scheduler import place_pending_attempts
from control_plane.settings import ApiSettings, DatabaseSettings, GrpcSettings, Settings
from fleetflow.agent.v1 import agent_pb2, agent_pb2_grpc
from fleetflow.ir import WorkflowSpec
from fleetflow.states import ExecutionState
from fleetflow.storage import LocalBlobStore
from tests.integration.agent_server import TOKEN, AgentServer, serve_agent_service
from tests.integration.auth import admin_client

pytestmark = pytest.mark.integration

# Long, so the clusters' ages below stay in their bands however slowly the machine scrapes.
HEARTBEAT_INTERVAL_SECONDS = 60
Series = dict[tuple[str, frozenset[tuple[str, str]]], float]


class NoLauncher:
    """Stands in for the Temporal launcher: nothing was started, so cancelling is local."""

    async def start_execution(self, execution_id: str) -> bool:
        return True

    async def cancel_execution(self, execution_id: str) -> None:
        return None


@pytest.fixture
def sessions(session_factory: sessionmaker[Session]) -> sessionmaker[Session]:
    return session_factory


@pytest.fixture
async def cp(
    sessions: sessionmaker[Session], workflow_spec: WorkflowSpec, tmp_path: Path
) -> AsyncIterator[AgentServer]:
    """The agent service (plaintext, loopback) with cluster alpha and one QUEUED execution."""
    async with serve_agent_service(sessions, workflow_spec, tmp_path / "blobs") as server:
        yield server


@pytest.fixture
def client(sessions: sessionmaker[Session], tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(
        database=DatabaseSettings(url="sqlite://"),
        api=ApiSettings(default_tenant="research"),
        grpc=GrpcSettings(heartbeat_interval_seconds=HEARTBEAT_INTERVAL_SECONDS),
    )
    app = create_app(
        settings,
        session_factory=sessions,
        launcher=NoLauncher(),
        blob_store=LocalBlobStore(tmp_path / "api-blobs"),
    )
    with admin_client(app) as test_client:
        yield test_client


def scrape(client: TestClient) -> Series:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(series: Series, name: str, **labels: str) -> float:
    return series.get((name, frozenset(labels.items())), 0.0)


def test_request_latency_is_labelled_by_route_template(client: TestClient) -> None:
    count = "fleetflow_api_request_duration_seconds_count"
    by_id = {"method": "GET", "route": "/api/v1/executions/{execution_id}", "status": "404"}
    unmatched = {"method": "GET", "route": "unmatched", "status": "404"}
    healthz = {"method": "GET", "route": "/healthz", "status": "200"}
    before = scrape(client)

    for execution_id in ("ex_one", "ex_two", "ex_three"):
        assert client.get(f"/api/v1/executions/{execution_id}").status_code == 404
    assert client.get("/no/such/path").status_code == 404
    assert client.get("/healthz").status_code == 200
    assert client.delete("/api/v1/executions/ex_one").status_code == 405

    after = scrape(client)
    assert value(after, count, **by_id) - value(before, count, **by_id) == 3
    assert value(after, count, **unmatched) - value(before, count, **unmatched) == 1
    assert value(after, count, **healthz) - value(before, count, **healthz) == 1
    not_allowed = {**by_id, "method": "DELETE", "status": "405"}
    assert value(after, count, **not_allowed) - value(before, count, **not_allowed) == 1
    # Durations are recorded in buckets, and no raw URL became a label.
    bucket = value(after, "fleetflow_api_request_duration_seconds_bucket", le="+Inf", **by_id)
    assert bucket == value(after, count, **by_id)
    routes = {dict(labels).get("route") for _, labels in after}
    assert not any(route and "ex_one" in route for route in routes)


async def test_queue_depth_counts_pending_and_assigned_attempts(
    client: TestClient, cp: AgentServer
) -> None:
    def depth() -> tuple[float, float]:
        series = scrape(client)
        return (
            value(series, "fleetflow_queue_depth", status="pending"),
            value(series, "fleetflow_queue_depth", status="assigned"),
        )

    assert depth() == (0, 0)
    first, second = cp.create_attempt(), cp.create_attempt()
    assert depth() == (2, 0)  # no cluster is online: nothing is placed

    with transaction(cp.sessions) as session:
        clusters_repo.record_heartbeat(
            session, session.get_one(Cluster, cp.cluster_id), capacity={}
        )
        place_pending_attempts(session, heartbeat_grace=timedelta(seconds=15))
    assert {cp.attempt_status(first), cp.attempt_status(second)} == {"ASSIGNED"}
    assert depth() == (0, 2)

    leased = await lease(cp)
    assert len(leased) == 2
    assert depth() == (0, 0)


async def lease(cp: AgentServer) -> list[agent_pb2.Assignment]:
    async with grpc.aio.insecure_channel(cp.target) as channel:
        stub = agent_pb2_grpc.AgentServiceStub(channel)
        metadata = (("authorization", f"Bearer {TOKEN}"),)
        await stub.Register(agent_pb2.RegisterRequest(), metadata=metadata, timeout=10)
        await cp.scheduler.place()  # the pass the registration wakes, run to completion
        response = await stub.LeaseAttempts(
            agent_pb2.LeaseAttemptsRequest(max_attempts=10, wait_seconds=0),
            metadata=metadata,
            timeout=10,
        )
    return list(response.assignments)


async def test_dispatch_latency_is_observed_when_an_attempt_is_leased(
    client: TestClient, cp: AgentServer
) -> None:
    attempt_id = cp.create_attempt()
    with transaction(cp.sessions) as session:
        # Created a minute ago: the observed wait is at least that.
        session.execute(
            update(TaskAttempt)
            .where(TaskAttempt.id == attempt_id)
            .values(created_at=utcnow() - timedelta(seconds=60))
        )
    before = scrape(client)

    (assignment,) = await lease(cp)
    assert assignment.attempt_id == attempt_id

    after = scrape(client)
    name = "fleetflow_dispatch_latency_seconds"
    assert value(after, f"{name}_count") - value(before, f"{name}_count") == 1
    waited = value(after, f"{name}_sum") - value(before, f"{name}_sum")
    assert 60 <= waited < 120
    for le, delta in (("30.0", 0), ("60.0", 0), ("120.0", 1)):
        bucket = value(after, f"{name}_bucket", le=le) - value(before, f"{name}_bucket", le=le)
        assert bucket == delta, le

    # Nothing left to lease: an empty answer observes nothing.
    assert await lease(cp) == []
    assert value(scrape(client), f"{name}_count") == value(after, f"{name}_count")


def test_clusters_by_status_at_scrape_time(
    client: TestClient, sessions: sessionmaker[Session]
) -> None:
    def clusters() -> dict[str, float]:
        series = scrape(client)
        return {
            status: value(series, "fleetflow_clusters", status=status)
            for status in ("online", "degraded", "offline")
        }

    assert clusters() == {"online": 0, "degraded": 0, "offline": 0}
    # Seconds; interval 60: online ≤ 90 < degraded ≤ grace 180, each a minute or more from an edge.
    ages = {"fresh": 1, "late": 120, "silent": 600}
    with transaction(sessions) as session:
        for name in (*ages, "never"):
            clusters_repo.ensure_cluster(session, name, f"ffa_token-{name}", {})
    assert clusters() == {"online": 0, "degraded": 0, "offline": 4}

    with transaction(sessions) as session:
        for name, age in ages.items():
            session.execute(
                update(Cluster)
                .where(Cluster.name == name)
                .values(last_heartbeat_at=utcnow() - timedelta(seconds=age))
            )
    assert clusters() == {"online": 1, "degraded": 1, "offline": 2}


async def test_executions_finished_are_counted_by_status_once_committed(
    client: TestClient, cp: AgentServer, workflow_spec: WorkflowSpec, tmp_path: Path
) -> None:
    counter = "fleetflow_executions_finished_total"

    def finished() -> dict[str, float]:
        series = scrape(client)
        return {
            status: value(series, counter, status=status)
            for status in ("succeeded", "failed", "cancelled")
        }

    before = finished()

    # A rolled-back move is not counted.
    with pytest.raises(RuntimeError), transaction(cp.sessions) as session:
        execution = session.get_one(Execution, cp.execution_id)
        assert move_execution(session, execution, ExecutionState.CANCELLED)
        raise RuntimeError("the transaction fails after the move")
    assert finished() == before

    # Cancelled through the API (never started in the orchestrator, so cancelled at once).
    response = client.post(f"/api/v1/executions/{cp.execution_id}/cancel")
    assert response.status_code == 200 and response.json()["status"] == "CANCELLED"
    # Cancelling again changes nothing.
    assert client.post(f"/api/v1/executions/{cp.execution_id}/cancel").status_code == 200
    assert finished() == {**before, "cancelled": before["cancelled"] + 1}

    # Failed by the worker's activity, as the execution workflow finishes it.
    with transaction(cp.sessions) as session:
        execution_id = _another_execution(session, cp.execution_id)
    activities = ExecutionActivities(cp.sessions, LocalBlobStore(tmp_path / "blobs"))
    activities.begin_execution(execution_id)
    failed = FinishExecutionInput(execution_id, ExecutionState.FAILED.value, message="boom")
    activities.finish_execution(failed)
    activities.finish_execution(failed)  # retried by Temporal: already FAILED, not counted again
    assert finished() == {
        **before,
        "cancelled": before["cancelled"] + 1,
        "failed": before["failed"] + 1,
    }


def _another_execution(session: Session, like: str) -> str:
    template = session.get_one(Execution, like)
    return create_execution(session, template.tenant_id, template.workflow, {"n": 1}).id


def test_metrics_survive_an_unreachable_database(tmp_path: Path) -> None:
    """The event metrics are still served when the state queries fail."""
    engine = make_engine(f"sqlite:///{tmp_path / 'missing-dir' / 'no.db'}")
    app = create_app(
        Settings(database=DatabaseSettings(url="sqlite://")),
        session_factory=make_session_factory(engine),
        launcher=NoLauncher(),
        blob_store=LocalBlobStore(tmp_path / "blobs"),
    )
    with TestClient(app) as test_client:
        series = scrape(test_client)
    engine.dispose()
    assert not any(name == "fleetflow_queue_depth" for name, _ in series)
    assert any(name == "fleetflow_executions_finished_total" for name, _ in series)


def test_a_lone_worker_serves_its_metrics_on_its_own_port() -> None:
    endpoint = serve_metrics("127.0.0.1", 0)
    try:
        response = httpx.get(f"http://127.0.0.1:{endpoint.port}/metrics", timeout=10)
    finally:
        endpoint.stop()
    assert response.status_code == 200
    assert "fleetflow_executions_finished_total" in response.text
    assert "fleetflow_dispatch_latency_seconds_bucket" in response.text
