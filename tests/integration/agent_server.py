"""The agent gRPC service in the test's own event loop, composed as `control_plane/server.py`
composes it, with a seeded database: cluster `alpha` (token `TOKEN`), tenant `research`, and
one QUEUED execution of the shared two-task spec whose attempts tests create by hand.

Temporal is left out: finished attempts are delivered to `AgentServer.delivered` instead of a
workflow signal.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from sqlalchemy.orm import Session, sessionmaker

from control_plane.agent_api.interceptors import InternalErrorInterceptor
from control_plane.agent_api.service import AgentService, AttemptsReady
from control_plane.agent_api.tls import ServerSecurity
from control_plane.blob_layout import bundle_key
from control_plane.db.models import TaskAttempt
from control_plane.db.repositories import attempts as attempts_repo
from control_plane.db.repositories import clusters as clusters_repo
from control_plane.db.repositories import tenancy
from control_plane.db.repositories.executions import create_execution
from control_plane.db.repositories.tenants import get_or_create_tenant
from control_plane.db.repositories.workflows import register_workflow_version
from control_plane.db.session import transaction
from control_plane.orchestration.activities import ExecutionActivities
from control_plane.orchestration.workflows import AttemptFinished
from control_plane.scheduling.scheduler import Scheduler
from control_plane.services.finish_notifier import FinishNotifier
from control_plane.settings import heartbeat_grace
from fleetflow.agent.v1 import agent_pb2_grpc
from fleetflow.ir import WorkflowSpec
from fleetflow.storage import BlobStore, LocalBlobStore

TOKEN = "ffa_agent-server-token-alpha"
CLUSTER = "alpha"
BUNDLE_DIGEST = "e" * 64
PREPARE_NODE = "n0"
PREPARE_TASK = "examples.train.prepare"


@dataclass
class AgentServer:
    sessions: sessionmaker[Session]
    blobs: LocalBlobStore
    port: int
    cluster_id: str
    execution_id: str
    scheduler: Scheduler
    delivered: list[tuple[str, AttemptFinished]] = field(default_factory=list)
    _attempt_numbers: int = 0

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def create_attempt(self, node_id: str = PREPARE_NODE) -> str:
        """What the `start_attempt` activity does: inputs in the blob store, a PENDING row,
        then the scheduler woken."""
        self._attempt_numbers += 1
        prefix = f"executions/{self.execution_id}/{node_id}/{self._attempt_numbers}"
        with transaction(self.sessions) as session:
            attempt = attempts_repo.create_attempt(
                session,
                execution_id=self.execution_id,
                node_id=node_id,
                task_name=PREPARE_TASK,
                attempt_number=self._attempt_numbers,
                inputs_uri=self.blobs.put(f"{prefix}/inputs.json", b'{"n": 3}'),
                outputs_uri=self.blobs.uri(f"{prefix}/outputs.json"),
            )
        self.scheduler.wake()
        return attempt.id

    def attempt_status(self, attempt_id: str) -> str:
        with transaction(self.sessions) as session:
            return session.get_one(TaskAttempt, attempt_id).status


def seed(sessions: sessionmaker[Session], spec: WorkflowSpec) -> tuple[str, str]:
    """Cluster `alpha`, tenant `research` and a QUEUED execution; returns their cluster and
    execution ids."""
    with transaction(sessions) as session:
        cluster = clusters_repo.ensure_cluster(session, CLUSTER, TOKEN, {})
        tenant = get_or_create_tenant(session, "research")
        tenancy.grant_cluster(session, tenant, tenancy.EVERY_CLUSTER)
        workflow = register_workflow_version(session, tenant.id, spec, BUNDLE_DIGEST, None)
        execution = create_execution(session, tenant.id, workflow, {"n": 3})
        return cluster.id, execution.id


@contextlib.asynccontextmanager
async def scheduled_agent_service(
    sessions: sessionmaker[Session],
    blobs: BlobStore,
    notifier: FinishNotifier,
    *,
    heartbeat_interval_seconds: int,
    ready: AttemptsReady | None = None,
    **options: Any,
) -> AsyncIterator[tuple[AgentService, Scheduler]]:
    """`AgentService` (`options`: its other keyword arguments) with the long polls' wake-up
    (`ready`, or a new one) and the process's scheduler, running, composed as
    `control_plane/server.py` composes them."""
    ready = ready if ready is not None else AttemptsReady()
    ready.bind(asyncio.get_running_loop())
    scheduler = Scheduler(
        sessions,
        heartbeat_grace=heartbeat_grace(heartbeat_interval_seconds),
        on_assigned=ready.notify,
        on_preempted=notifier.deliver_soon,
        lease_waiting=ready.lease_waiting,
    )
    options.setdefault(
        "on_attempt_succeeded",
        ExecutionActivities(sessions, blobs, on_attempt_ready=scheduler.wake).start_successors,
    )
    service = AgentService(
        sessions,
        blobs,
        notifier,
        attempts_ready=ready,
        heartbeat_interval_seconds=heartbeat_interval_seconds,
        on_capacity_freed=scheduler.wake_soon,
        **options,
    )
    async with scheduler.running():
        yield service, scheduler


@contextlib.asynccontextmanager
async def serve_agent_service(
    sessions: sessionmaker[Session],
    spec: WorkflowSpec,
    blob_root: Path,
    *,
    security: ServerSecurity | None = None,
    heartbeat_interval_seconds: int = 7,
) -> AsyncIterator[AgentServer]:
    """Serve AgentService on a free loopback port, plaintext unless `security` says TLS."""
    blobs = LocalBlobStore(blob_root)
    blobs.put(bundle_key("research", BUNDLE_DIGEST), b"not really a tarball")
    cluster_id, execution_id = seed(sessions, spec)
    delivered: list[tuple[str, AttemptFinished]] = []

    async def record(execution: str, finished: AttemptFinished) -> None:
        delivered.append((execution, finished))

    server = grpc.aio.server(interceptors=[InternalErrorInterceptor()])
    async with scheduled_agent_service(
        sessions,
        blobs,
        FinishNotifier(sessions, record),
        heartbeat_interval_seconds=heartbeat_interval_seconds,
        max_lease_wait_seconds=30,
    ) as (service, scheduler):
        agent_pb2_grpc.add_AgentServiceServicer_to_server(service, server)
        address = "127.0.0.1:0"
        port = security.add_port(server, address) if security else server.add_insecure_port(address)
        assert port, "could not bind a loopback port"
        await server.start()
        try:
            yield AgentServer(sessions, blobs, port, cluster_id, execution_id, scheduler, delivered)
        finally:
            await server.stop(grace=None)
