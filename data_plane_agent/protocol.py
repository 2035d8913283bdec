"""The thin mapping between the agent's domain objects and the `fleetflow.agent.v1` messages.

A lease's report secret is kept apart from its `TaskAssignment`, which executors see (and the
Kubernetes executor writes into the pod): it is read from the `Assignment` here, held by the
agent (in memory and in its lease file, `lease_store`), and set on each status report only as
it is sent.
"""

from __future__ import annotations

from pydantic import SecretStr

from data_plane_agent.attempts import AttemptEvent, AttemptResources, InputBlob, TaskAssignment
from data_plane_agent.executors.base import Capacity
from fleetflow.agent.v1 import agent_pb2
from fleetflow.states import AttemptState

_STATE_TO_PROTO = {
    AttemptState.RUNNING: agent_pb2.ATTEMPT_STATE_RUNNING,
    AttemptState.SUCCEEDED: agent_pb2.ATTEMPT_STATE_SUCCEEDED,
    AttemptState.FAILED: agent_pb2.ATTEMPT_STATE_FAILED,
    AttemptState.CANCELLED: agent_pb2.ATTEMPT_STATE_CANCELLED,
    AttemptState.LOST: agent_pb2.ATTEMPT_STATE_LOST,
}


def assignment_from_proto(message: agent_pb2.Assignment) -> TaskAssignment:
    return TaskAssignment(
        attempt_id=message.attempt_id,
        fencing_token=message.fencing_token,
        execution_id=message.execution_id,
        node_id=message.node_id,
        tenant=message.tenant,
        task_module=message.task_module,
        task_function=message.task_function,
        bundle_uri=message.bundle_uri,
        inputs_uri=message.inputs_uri,
        outputs_uri=message.outputs_uri,
        resources=AttemptResources(
            cpu=message.resources.cpu,
            memory_bytes=message.resources.memory_bytes,
            gpu=message.resources.gpu,
            gpu_type=message.resources.gpu_type,
        ),
        timeout_seconds=message.timeout_seconds,
        image=message.image,
        input_blobs=tuple(
            InputBlob(uri=blob.uri, file_name=blob.file_name, directory=blob.directory)
            for blob in message.input_blobs
        ),
    )


def report_secret_from_proto(message: agent_pb2.Assignment) -> SecretStr:
    """The lease's report secret (empty from a control plane that predates them)."""
    return SecretStr(message.report_secret)


def with_report_secret(
    request: agent_pb2.ReportStatusRequest, secret: SecretStr
) -> agent_pb2.ReportStatusRequest:
    """A copy of `request` carrying `secret`, to send (the buffered request stays without)."""
    sent = agent_pb2.ReportStatusRequest()
    sent.CopyFrom(request)
    sent.report_secret = secret.get_secret_value()
    return sent


def state_to_proto(state: AttemptState) -> agent_pb2.AttemptState.ValueType:
    return _STATE_TO_PROTO[state]


def report_request(
    event: AttemptEvent, *, fencing_token: int, sequence: int
) -> agent_pb2.ReportStatusRequest:
    request = agent_pb2.ReportStatusRequest(
        attempt_id=event.attempt_id,
        fencing_token=fencing_token,
        state=state_to_proto(event.state),
        sequence=sequence,
        message=event.message,
        error_traceback=event.traceback,
    )
    request.observed_at.FromDatetime(event.observed_at)
    return request


def capacity_to_proto(capacity: Capacity) -> agent_pb2.Capacity:
    return agent_pb2.Capacity(
        cpu_allocatable=capacity.cpu_allocatable,
        cpu_in_use=capacity.cpu_in_use,
        memory_bytes_allocatable=capacity.memory_bytes_allocatable,
        memory_bytes_in_use=capacity.memory_bytes_in_use,
        gpus=[
            agent_pb2.GpuCapacity(gpu_type=g.gpu_type, allocatable=g.allocatable, in_use=g.in_use)
            for g in capacity.gpus
        ],
    )
