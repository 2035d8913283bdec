"""The only place protobuf messages become domain values and back."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from control_plane.blob_layout import checkpoint_uri
from control_plane.db.models import TaskAttempt
from fleetflow.agent.v1 import agent_pb2 as pb
from fleetflow.files import blob_literals, has_blobs
from fleetflow.ir import TaskSpec, TypeKind, WorkflowSpec
from fleetflow.staging import is_file_name
from fleetflow.states import NO_MAP_INDEX, AttemptState

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


def capacity_to_dict(capacity: pb.Capacity, *, draining: bool = False) -> dict[str, Any]:
    """The capacity as `Cluster.capacity` keeps it; `draining` marks the last report of an
    agent that is shutting down (nothing is free there until an agent registers again)."""
    return {
        **({"draining": True} if draining else {}),
        "cpu_allocatable": capacity.cpu_allocatable,
        "cpu_in_use": capacity.cpu_in_use,
        "memory_bytes_allocatable": capacity.memory_bytes_allocatable,
        "memory_bytes_in_use": capacity.memory_bytes_in_use,
        "gpus": [
            {"gpu_type": g.gpu_type, "allocatable": g.allocatable, "in_use": g.in_use}
            for g in capacity.gpus
        ],
        **(
            {"counted_attempt_ids": sorted(set(capacity.counted_attempt_ids))}
            if capacity.counts_attempts
            else {}
        ),
    }


_INT32_MAX = 2**31 - 1
_INT64_MAX = 2**63 - 1


class UnleasableAttemptError(ValueError):
    """An attempt whose stored task cannot become an `Assignment`: its spec no longer validates,
    or a value is outside the range of the field it travels in. Registration refuses such specs;
    this catches one stored before the check, or written around it."""


def _in_range(field: str, value: int, maximum: int) -> int:
    if not 0 <= value <= maximum:
        raise UnleasableAttemptError(f"{field} {value} is outside the wire range 0..{maximum}")
    return value


def _finite(field: str, value: float) -> float:
    if not math.isfinite(value) or value < 0:
        raise UnleasableAttemptError(f"{field} {value} is not a finite number >= 0")
    return value


def takes_blobs(task: TaskSpec) -> bool:
    """Whether any input of the task can hold a File or Directory."""
    return any(has_blobs(variable.type) for variable in task.interface.inputs)


def input_blobs(
    inputs: Any, task: TaskSpec, check: Callable[[str], str | None]
) -> list[pb.InputBlob]:
    """The File and Directory values among an attempt's inputs, for the agent to stage.

    Args:
        inputs: The attempt's inputs document (upstream tasks' outputs among them: untrusted).
        check: Why a URI may not be read on the tenant's behalf, or None when it may.

    Raises:
        UnleasableAttemptError: a value is not a File or Directory literal, a file's name is
            not one plain path segment, or `check` refuses a URI.
    """
    found: list[pb.InputBlob] = []
    document = inputs if isinstance(inputs, dict) else {}
    for variable in task.interface.inputs:
        for path, kind, literal in blob_literals(
            document.get(variable.name), variable.type, f"inputs.{variable.name}"
        ):
            uri = literal.get("uri") if isinstance(literal, dict) else None
            if not isinstance(uri, str) or not uri:
                raise UnleasableAttemptError(f"{path} is not a {kind.value} value: {literal!r}")
            refused = check(uri)
            if refused is not None:
                raise UnleasableAttemptError(f"{path} names {uri}, which {refused}")
            if kind is TypeKind.DIRECTORY:
                found.append(pb.InputBlob(uri=uri, directory=True))
                continue
            name = literal.get("name")
            if not is_file_name(name):
                raise UnleasableAttemptError(f"{path} has no usable file name: {name!r}")
            found.append(pb.InputBlob(uri=uri, file_name=name))
    return found


def assignment_from_attempt(
    attempt: TaskAttempt,
    spec: WorkflowSpec,
    *,
    tenant: str,
    bundle_uri: str,
    report_secret: str,
    input_blobs: Sequence[pb.InputBlob] = (),
    secrets: Sequence[pb.TaskSecret] = (),
) -> pb.Assignment:
    """The message an agent receives for `attempt`, with its lease's `report_secret` (and the
    task's `secrets`, of the attempt's tenant).

    Raises:
        UnleasableAttemptError: a value of its task does not fit the message.
    """
    task = spec.tasks.get(attempt.task_name)
    if task is None:
        raise UnleasableAttemptError(f"its workflow spec has no task {attempt.task_name!r}")
    # The type placement chose; an attempt placed before it recorded one runs on the task's
    # most preferred type.
    gpu_type = attempt.gpu_type or next(iter(task.resources.gpu_types), "")
    try:
        return _assignment(
            attempt,
            task,
            gpu_type,
            tenant=tenant,
            bundle_uri=bundle_uri,
            report_secret=report_secret,
            input_blobs=input_blobs,
            secrets=secrets,
        )
    except UnleasableAttemptError:
        raise
    except (ValueError, TypeError) as exc:  # what protobuf raises for a value it cannot carry
        raise UnleasableAttemptError(f"its task does not fit the lease message: {exc}") from None


def _assignment(
    attempt: TaskAttempt,
    task: TaskSpec,
    gpu_type: str,
    *,
    tenant: str,
    bundle_uri: str,
    report_secret: str,
    input_blobs: Sequence[pb.InputBlob],
    secrets: Sequence[pb.TaskSecret],
) -> pb.Assignment:
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
            cpu=_finite("resources.cpu", task.resources.cpu),
            memory_bytes=_in_range(
                "resources.memory_bytes", task.resources.memory_bytes, _INT64_MAX
            ),
            gpu=_in_range("resources.gpu", task.resources.gpu, _INT32_MAX),
            gpu_type=gpu_type if task.resources.gpu > 0 else "",
        ),
        timeout_seconds=_in_range("timeout_seconds", task.timeout_seconds or 0, _INT32_MAX),
        image=task.image or "",
        report_secret=report_secret,
        input_blobs=input_blobs,
        attempt_number=_in_range("attempt_number", attempt.attempt_number, _INT32_MAX),
        map_index=None if attempt.map_index == NO_MAP_INDEX else attempt.map_index,
        checkpoint_uri=checkpoint_uri(attempt.outputs_uri, attempt.attempt_number),
        secrets=secrets,
        replicas=task.replicas if task.replicas != 1 else 0,
    )
