"""Temporal activities: every piece of I/O an execution needs (database, blob store).

Each activity is idempotent, because Temporal may run it more than once: attempts are keyed by
(execution, node, attempt number), blobs are written whole under deterministic keys, and state
moves go through the transition policy, which refuses repeats.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from temporalio import activity

from control_plane.db.models import Execution, TaskAttempt
from control_plane.db.repositories import attempts as attempts_repo
from control_plane.db.repositories.executions import move_execution
from control_plane.db.session import transaction
from control_plane.orchestration.states import AttemptState, ExecutionState
from control_plane.orchestration.workflows import (
    ExecutionPlan,
    FinishExecutionInput,
    PlanNode,
    StartAttemptInput,
)
from fleetflow.ir import Binding, InputBinding, LiteralBinding, NodeOutputBinding, WorkflowSpec
from fleetflow.storage import BlobStore


class ExecutionActivities:
    """Activities bound to the control plane's database and blob store."""

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        blob_store: BlobStore,
        *,
        on_attempt_ready: Callable[[], None] = lambda: None,
        heartbeat_grace: timedelta = timedelta(seconds=30),
    ) -> None:
        self._sessions = session_factory
        self._blobs = blob_store
        self._on_attempt_ready = on_attempt_ready
        self._heartbeat_grace = heartbeat_grace

    def all(self) -> list[Callable[..., Any]]:
        return [self.begin_execution, self.start_attempt, self.finish_execution]

    def _load(self, session: Session, execution_id: str) -> tuple[Execution, WorkflowSpec]:
        execution = session.get(Execution, execution_id)
        if execution is None:
            raise LookupError(f"execution {execution_id} does not exist")
        return execution, WorkflowSpec.model_validate(execution.workflow.spec)

    @activity.defn(name="begin_execution")
    def begin_execution(self, execution_id: str) -> ExecutionPlan:
        """Mark the execution RUNNING and return the DAG the workflow walks."""
        with transaction(self._sessions) as session:
            execution, spec = self._load(session, execution_id)
            move_execution(session, execution, ExecutionState.RUNNING)
        return ExecutionPlan(
            nodes=[
                PlanNode(node.id, node.upstream, spec.tasks[node.task].retries)
                for node in spec.nodes
            ]
        )

    def _resolve(self, session: Session, execution: Execution, binding: Binding) -> Any:
        if isinstance(binding, InputBinding):
            return execution.inputs[binding.input]
        if isinstance(binding, LiteralBinding):
            return binding.value
        assert isinstance(binding, NodeOutputBinding)
        upstream = attempts_repo.latest_succeeded_attempt(session, execution.id, binding.node_id)
        outputs = json.loads(self._blobs.get(upstream.outputs_uri))
        return outputs[binding.output]

    @activity.defn(name="start_attempt")
    def start_attempt(self, args: StartAttemptInput) -> str:
        """Write the node's inputs to the blob store, create its attempt and place it."""
        with transaction(self._sessions) as session:
            execution, spec = self._load(session, args.execution_id)
            node = spec.node(args.node_id)
            prefix = f"executions/{execution.id}/{node.id}/{args.attempt_number}"
            inputs = {name: self._resolve(session, execution, b) for name, b in node.inputs.items()}
            inputs_uri = self._blobs.put(f"{prefix}/inputs.json", json.dumps(inputs).encode())
            attempt = attempts_repo.create_attempt(
                session,
                execution_id=execution.id,
                node_id=node.id,
                task_name=node.task,
                attempt_number=args.attempt_number,
                inputs_uri=inputs_uri,
                outputs_uri=self._blobs.uri(f"{prefix}/outputs.json"),
            )
            attempts_repo.place_pending_attempts(session, heartbeat_grace=self._heartbeat_grace)
            attempt_id = attempt.id
        self._on_attempt_ready()
        return attempt_id

    @activity.defn(name="finish_execution")
    def finish_execution(self, args: FinishExecutionInput) -> None:
        """Record outputs or the failure, and cancel attempts that are still active."""
        with transaction(self._sessions) as session:
            execution, spec = self._load(session, args.execution_id)
            if args.status == ExecutionState.SUCCEEDED:
                outputs = {
                    name: self._resolve(session, execution, b) for name, b in spec.outputs.items()
                }
                move_execution(session, execution, ExecutionState.SUCCEEDED, outputs=outputs)
            else:
                failed = session.get(TaskAttempt, args.failed_attempt_id)
                error = {
                    "node_id": failed.node_id if failed else None,
                    "attempt_id": args.failed_attempt_id or None,
                    "message": (failed.error_message if failed else None) or "task failed",
                    "traceback": failed.error_traceback if failed else None,
                }
                move_execution(session, execution, ExecutionState.FAILED, error=error)
            self._cancel_active_attempts(session, execution.id)

    def _cancel_active_attempts(self, session: Session, execution_id: str) -> None:
        active = session.scalars(
            select(TaskAttempt).where(
                TaskAttempt.execution_id == execution_id,
                TaskAttempt.status.in_(
                    [AttemptState.PENDING, AttemptState.ASSIGNED, *attempts_repo.ACTIVE_STATES]
                ),
            )
        ).all()
        for attempt in active:
            attempts_repo.move_attempt(session, attempt, AttemptState.CANCELLED)
