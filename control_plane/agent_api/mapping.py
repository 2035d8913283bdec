"""The only place protobuf messages become domain values and back."""

from __future__ import annotations

from typing import Any

from control_plane.db.models import TaskAttempt
from control_plane.orchestration.states import AttemptState
from fleetflow.agent.v1 import agent_pb2 as pb
from fleetflow.ir import WorkflowSpec

_STATES: dict[int, AttemptState] = {
    pb.ATTEMPT_STATE_RUNNING: AttemptState.RUNNING,
    pb.ATTEMPT_STATE_SUCCEEDED: AttemptState.SUCCEEDED,
    pb.ATTEMPT_STATE_FAILED: AttemptState.FAILED,
    pb.ATTEMPT_STATE_CANCELLED: AttemptState.CANCELLED,
    pb.ATTEMPT_STATE_LOST: AttemptState.LOST,
}


def attempt_state_from_proto(value: int) -> AttemptState | None:
    """The reported state, or None for values an agent may not report."""
    return _STATES.get(value)


def capacity_to_dict(capacity: pb.Capacity) -> dict[str, Any]:
    return {
        "cpu_allocatable": capacity.cpu_allocatable,
        "cpu_in_use": capacity.cpu_in_use,
        "memory_bytes_allocatable": capacity.memory_bytes_allocatable,
        "memory_bytes_in_use": capacity.memory_bytes_in_use,
        "gpus": [
            {"gpu_type": g.gpu_type, "allocatable": g.allocatable, "in_use": g.in_use}
            for g in capacity.gpus
        ],
    }


def assignment_from_attempt(
    attempt: TaskAttempt, spec: WorkflowSpec, *, tenant: str, bundle_uri: str
) -> pb.Assignment:
    task = spec.tasks[attempt.task_name]
    # The type placement chose; an attempt placed before it recorded one runs on the task's
    # most preferred type.
    gpu_type = attempt.gpu_type or next(iter(task.resources.gpu_types), "")
    return pb.Assignment(
        attempt_id=attempt.id,
        fencing_token=attempt.fencing_token,
        execution_id=attempt.execution_id,
        node_id=attempt.node_id,
        tenant=tenant,
        task_module=task.module,
        task_function=task.function,
        bundle_uri=bundle_uri,
        inputs_uri=attempt.inputs_uri,
        outputs_uri=attempt.outputs_uri,
        resources=pb.Resources(
            cpu=task.resources.cpu,
            memory_bytes=task.resources.memory_bytes,
            gpu=task.resources.gpu,
            gpu_type=gpu_type if task.resources.gpu > 0 else "",
        ),
        timeout_seconds=task.timeout_seconds or 0,
        image=task.image or "",
    )
