"""Two control-plane replicas against one PostgreSQL never hand out an attempt twice.

Each replica is a real AgentService on its own gRPC port over the same database; the agents of
one cluster long-poll both at once while attempts appear. Every attempt must be leased exactly
once, with fencing token 1.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from control_plane.blob_layout import bundle_key
from control_plane.db.migrate import upgrade_database
from control_plane.db.repositories import attempts as attempts_repo
from control_plane.db.repositories import clusters as clusters_repo
from control_plane.db.repositories import tenancy
from control_plane.db.repositories.executions import create_execution
from control_plane.db.repositories.tenants import get_or_create_tenant
from control_plane.db.repositories.workflows import register_workflow_version
from control_plane.db.session import make_engine, make_session_factory, transaction
from control_plane.orchestration.workflows import AttemptFinished
from control_plane.services.finish_notifier import FinishNotifier
from fleetflow.agent.v1 import agent_pb2, agent_pb2_grpc
from fleetflow.ir import WorkflowSpec
from fleetflow.storage import LocalBlobStore
from tests.integration.agent_server import scheduled_agent_service

pytestmark = [pytest.mark.integration, pytest.mark.postgres]

TOKEN = "ffa_replica-test-token"
METADATA = (("authorization", f"Bearer {TOKEN}"),)
BUNDLE = "c" * 64
ATTEMPTS = 60


async def _nothing_finishes(execution_id: str, event: AttemptFinished) -> None:
    raise AssertionError(f"unexpected finished attempt {event}")


@dataclass
class Replicas:
    stubs: list[agent_pb2_grpc.AgentServiceStub]
    create_attempts: Callable[[int], None]


@pytest.fixture
async def replicas(
    postgres_database_factory: Callable[[], str], tmp_path: Path, workflow_spec: WorkflowSpec
) -> AsyncIterator[Replicas]:
    url = postgres_database_factory()
    upgrade_database(url)
    blobs = LocalBlobStore(tmp_path / "blobs")
    blobs.put(bundle_key("default", BUNDLE), b"\x1f\x8b")
    seed_engine = make_engine(url)
    seed = make_session_factory(seed_engine)
    with transaction(seed) as session:
        clusters_repo.ensure_cluster(session, "shared", TOKEN, {})
        tenant = get_or_create_tenant(session, "default")
        tenancy.grant_cluster(session, tenant, tenancy.EVERY_CLUSTER)
        version = register_workflow_version(session, tenant.id, workflow_spec, BUNDLE, None)
        execution_id = create_execution(session, tenant.id, version, {"n": 1}).id
    node = workflow_spec.nodes[0]

    def create_attempts(count: int) -> None:
        """What the `start_attempt` activity does, `count` times."""
        with transaction(seed) as session:
            for number in range(1, count + 1):
                attempts_repo.create_attempt(
                    session,
                    execution_id=execution_id,
                    node_id=node.id,
                    task_name=node.task,
                    attempt_number=number,
                    inputs_uri=blobs.uri(f"in/{number}"),
                    outputs_uri=blobs.uri(f"out/{number}"),
                )

    engines, servers, channels, stubs = [], [], [], []
    schedulers = contextlib.AsyncExitStack()
    for _ in range(2):
        engine = make_engine(url)
        sessions = make_session_factory(engine)
        # Each replica places with its own scheduler, as each process does.
        service, _ = await schedulers.enter_async_context(
            scheduled_agent_service(
                sessions,
                blobs,
                FinishNotifier(sessions, _nothing_finishes),
                heartbeat_interval_seconds=30,
                max_lease_wait_seconds=5,
            )
        )
        server = grpc.aio.server()
        agent_pb2_grpc.add_AgentServiceServicer_to_server(service, server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        engines.append(engine)
        servers.append(server)
        channels.append(channel)
        stubs.append(agent_pb2_grpc.AgentServiceStub(channel))
    try:
        yield Replicas(stubs, create_attempts)
    finally:
        await schedulers.aclose()
        for channel in channels:
            await channel.close()
        for server in servers:
            await server.stop(grace=None)
        for engine in [*engines, seed_engine]:
            engine.dispose()


async def test_concurrent_leases_through_two_replicas_hand_out_each_attempt_once(
    replicas: Replicas,
) -> None:
    capacity = agent_pb2.Capacity(cpu_allocatable=10_000, memory_bytes_allocatable=1 << 50)
    await replicas.stubs[0].Register(
        agent_pb2.RegisterRequest(capacity=capacity), metadata=METADATA
    )
    leased: list[agent_pb2.Assignment] = []
    done = asyncio.Event()

    async def agent(stub: agent_pb2_grpc.AgentServiceStub) -> None:
        while not done.is_set():
            response = await stub.LeaseAttempts(
                agent_pb2.LeaseAttemptsRequest(max_attempts=3, wait_seconds=1), metadata=METADATA
            )
            leased.extend(response.assignments)
            if len(leased) >= ATTEMPTS:
                done.set()

    agents = [asyncio.create_task(agent(replicas.stubs[i % 2])) for i in range(8)]
    await asyncio.to_thread(replicas.create_attempts, ATTEMPTS)
    async with asyncio.timeout(60):
        await done.wait()
    await asyncio.gather(*agents)

    counts = Counter(a.attempt_id for a in leased)
    assert len(counts) == ATTEMPTS
    assert counts.most_common(1)[0][1] == 1, counts.most_common(3)
    assert {a.fencing_token for a in leased} == {1}
