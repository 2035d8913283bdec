"""The thin mapping between the agent's domain objects and the `fleetflow.agent.v1` messages.

The only module of the agent that builds a protobuf message or reads one the control plane
sent: the session, the supervisor and the reporter speak in `attempts` and `executors.base`
types and in the few small results defined here.

A lease's report secret is kept apart from its `TaskAssignment`, which executors see (and the
Kubernetes executor writes into the pod): it is read from the `Assignment` here, held by the
agent (in memory and in its lease file, `lease_store`), and set on each status report only as
it is sent.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from google.protobuf.message import DecodeError
from pydantic import SecretStr

from data_plane_agent.attempts import (
    AttemptEvent,
    AttemptResources,
    InputBlob,
    TaskAssignment,
    TaskSecret,
)
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
_TERMINAL_STATES = frozenset(proto for state, proto in _STATE_TO_PROTO.items() if state.terminal)


@dataclass(frozen=True)
class StopOrder:
    """An attempt the control plane wants stopped, why, and its grace between SIGTERM and the
    kill (None: the agent's own kill grace, as for a cancel)."""

    attempt_id: str
    grace_seconds: float | None = None
    reason: str = ""


@dataclass(frozen=True)
class Registration:
    """The control plane's answer to `Register`."""

    cluster_name: str
    heartbeat_interval_seconds: int
    """0 when the control plane named none."""
    stop_orders: tuple[StopOrder, ...]


class ProtocolError(Exception):
    """The control plane answered in a way the protocol does not allow."""


@dataclass(frozen=True)
class ReportAnswer:
    """The control plane's answer to one report: applied, ignored, or refused, and why."""

    accepted: bool
    reason: str
    refused: bool = False
    """Not this lease's report to make, or not one an agent may make: sending it again cannot
    help (`ReportStatus` answers so with an error instead)."""


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
        attempt_number=message.attempt_number,
        map_index=message.map_index if message.HasField("map_index") else None,
        checkpoint_uri=message.checkpoint_uri,
        replicas=max(message.replicas, 1),
        secrets=tuple(
            TaskSecret(
                name=secret.name,
                env_var=secret.env_var,
                value=secret.value,
                kubernetes_secret=secret.kubernetes_secret,
                kubernetes_key=secret.kubernetes_key,
            )
            for secret in message.secrets
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
        counted_attempt_ids=sorted(capacity.counted_attempt_ids or ()),
        counts_attempts=capacity.counted_attempt_ids is not None,
    )


def report_from_bytes(payload: bytes) -> agent_pb2.ReportStatusRequest:
    """A status report read back from its serialized form.

    Raises:
        ValueError: `payload` is not a serialized status report.
    """
    request = agent_pb2.ReportStatusRequest()
    try:
        request.ParseFromString(payload)
    except DecodeError as exc:
        raise ValueError(str(exc)) from exc
    return request


def report_state_name(request: agent_pb2.ReportStatusRequest) -> str:
    """The reported state as log lines name it, e.g. "SUCCEEDED"."""
    return agent_pb2.AttemptState.Name(request.state).removeprefix("ATTEMPT_STATE_")


def is_final_report(request: agent_pb2.ReportStatusRequest) -> bool:
    """Whether the report is of a terminal state (the attempt's last)."""
    return request.state in _TERMINAL_STATES


def register_request(
    *,
    agent_version: str,
    executor_name: str,
    labels: Mapping[str, str],
    capacity: Capacity,
    held: Mapping[str, int],
) -> agent_pb2.RegisterRequest:
    """`held`: attempt id -> fencing token of every attempt the agent still answers for."""
    return agent_pb2.RegisterRequest(
        agent_version=agent_version,
        executors=[executor_name],
        labels=labels,
        capacity=capacity_to_proto(capacity),
        running=[
            agent_pb2.RunningAttempt(attempt_id=attempt_id, fencing_token=token)
            for attempt_id, token in sorted(held.items())
        ],
    )


def registration_from_proto(response: agent_pb2.RegisterResponse) -> Registration:
    return Registration(
        cluster_name=response.cluster_name,
        heartbeat_interval_seconds=response.heartbeat_interval_seconds,
        stop_orders=stop_orders_from_proto(response),
    )


def heartbeat_request(
    *,
    capacity: Capacity,
    held_attempt_ids: Iterable[str],
    pending_reasons: Mapping[str, str],
    draining: bool = False,
) -> agent_pb2.HeartbeatRequest:
    """`pending_reasons`: attempt id -> why it has not started yet; `draining`: the agent is
    shutting down."""
    return agent_pb2.HeartbeatRequest(
        draining=draining,
        capacity=capacity_to_proto(capacity),
        running_attempt_ids=sorted(held_attempt_ids),
        pending_attempts=[
            agent_pb2.PendingAttempt(attempt_id=attempt_id, reason=reason)
            for attempt_id, reason in sorted(pending_reasons.items())
        ],
    )


def stop_orders_from_proto(
    response: agent_pb2.HeartbeatResponse | agent_pb2.RegisterResponse,
) -> tuple[StopOrder, ...]:
    """The attempts to stop: each of `stop_attempts` with its grace and reason, then the ids
    only in `stop_attempt_ids` (a control plane that predates stop orders) with none."""
    orders = [
        StopOrder(
            attempt_id=stop.attempt_id,
            grace_seconds=float(stop.grace_seconds) if stop.HasField("grace_seconds") else None,
            reason=stop.reason,
        )
        for stop in response.stop_attempts
    ]
    named = {order.attempt_id for order in orders}
    orders += [StopOrder(a) for a in response.stop_attempt_ids if a not in named]
    return tuple(orders)


def lease_request(*, max_attempts: int, wait_seconds: int) -> agent_pb2.LeaseAttemptsRequest:
    return agent_pb2.LeaseAttemptsRequest(max_attempts=max_attempts, wait_seconds=wait_seconds)


def leases_from_proto(
    response: agent_pb2.LeaseAttemptsResponse,
) -> list[tuple[TaskAssignment, SecretStr]]:
    """Each leased attempt with its lease's report secret, in the order they were leased."""
    return [
        (assignment_from_proto(message), report_secret_from_proto(message))
        for message in response.assignments
    ]


def report_answer_from_proto(response: agent_pb2.ReportStatusResponse) -> ReportAnswer:
    return ReportAnswer(accepted=response.accepted, reason=response.reason)


def report_answers_from_proto(response: agent_pb2.ReportStatusesResponse) -> list[ReportAnswer]:
    return [
        ReportAnswer(accepted=outcome.accepted, reason=outcome.reason, refused=outcome.refused)
        for outcome in response.outcomes
    ]
