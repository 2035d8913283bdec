"""Executions and attempts written straight into the database, for tests of what counts them
(quota, usage, a cluster's load): the states are set as they are to be counted, not reached
through the transition policy, which has its own tests."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from control_plane.db.models import Execution, TaskAttempt, utcnow
from control_plane.db.repositories import attempts as attempts_repo
from control_plane.db.repositories import clusters as clusters_repo
from control_plane.db.repositories.executions import create_execution
from control_plane.db.repositories.tenants import get_or_create_tenant
from control_plane.db.repositories.workflows import register_workflow_version
from control_plane.db.session import transaction
from fleetflow.ir import WorkflowSpec
from fleetflow.states import AttemptState, ExecutionState


@dataclass(frozen=True)
class Held:
    """An attempt of the spec's first node, as quota, usage and cluster load count it."""

    state: AttemptState
    cluster: str = "gpu-east"  # created when missing
    gpu: int = 0
    gpu_type: str | None = None
    cpu: float = 0.0
    memory_bytes: int = 0
    started_at: datetime | None = None
    finished_at: datetime | None = None
    pending_reason: str | None = None


def seed_execution(
    sessions: sessionmaker[Session],
    spec: WorkflowSpec,
    tenant: str,
    *attempts: Held,
    running: bool = False,
) -> None:
    """An execution of `spec` in `tenant` (created when missing), admitted and RUNNING if
    `running` (QUEUED otherwise), with `attempts` numbered from 1."""
    with transaction(sessions) as session:
        home = get_or_create_tenant(session, tenant)
        workflow = register_workflow_version(session, home.id, spec, "b" * 64, None)
        execution = create_execution(session, home.id, workflow, {"n": 1})
        if running:
            session.execute(
                update(Execution)
                .where(Execution.id == execution.id)
                .values(status=ExecutionState.RUNNING.value, admitted_at=utcnow())
            )
        node = spec.nodes[0]
        for number, held in enumerate(attempts, start=1):
            cluster = clusters_repo.get_cluster_by_name(session, held.cluster)
            if cluster is None:
                cluster, _ = clusters_repo.create_cluster(session, held.cluster, {})
            attempt = attempts_repo.create_attempt(
                session,
                execution_id=execution.id,
                node_id=node.id,
                task_name=node.task,
                attempt_number=number,
                inputs_uri="file:///in",
                outputs_uri="file:///out",
            )
            session.execute(
                update(TaskAttempt)
                .where(TaskAttempt.id == attempt.id)
                .values(
                    status=held.state.value,
                    cluster_id=cluster.id,
                    gpu=held.gpu,
                    gpu_type=held.gpu_type,
                    cpu=held.cpu,
                    memory_bytes=held.memory_bytes,
                    started_at=held.started_at,
                    finished_at=held.finished_at,
                    pending_reason=held.pending_reason,
                )
            )
