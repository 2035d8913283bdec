"""The agent gRPC service under bad input: garbage bytes, oversized messages, missing, wrong
and other clusters' tokens, replayed reports. Each gets its status code, and afterwards the
same server still registers, leases and takes reports normally (nothing wedged).

The server is composed like `control_plane/server.py` composes it, with its message limits
(`control_plane/agent_api/limits.py`), on a migrated database (SQLite and PostgreSQL).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from sqlalchemy.orm import Session, sessionmaker

from control_plane.agent_api.interceptors import InternalErrorInterceptor
from control_plane.agent_api.limits import MAX_MESSAGE_BYTES, peer_address, server_options
from control_plane.agent_api.service import AgentService, AttemptsReady
from control_plane.auth.throttle import AuthLockout
from control_plane.db.models import TaskAttempt
from control_plane.db.repositories import clusters as clusters_repo
from control_plane.db.session import transaction
from control_plane.orchestration.workflows import AttemptFinished
from control_plane.services.finish_notifier import FinishNotifier
from fleetflow.agent.v1 import agent_pb2 as pb
from fleetflow.agent.v1 import agent_pb2_grpc
from fleetflow.ir import WorkflowSpec
from fleetflow.storage import LocalBlobStore
from tests.integration.agent_server import CLUSTER, TOKEN, seed

SERVICE = "/fleetflow.agent.v1.AgentService"
OTHER_CLUSTER_TOKEN = "ffa_hardening-other-cluster"
CAPACITY = pb.Capacity(cpu_allocatable=64, memory_bytes_allocatable=256 * 2**30)


@dataclass
class Served:
    channel: grpc.aio.Channel
    stub: agent_pb2_grpc.AgentServiceStub
    sessions: sessionmaker[Session]
    execution_id: str
    delivered: list[tuple[str, AttemptFinished]]

    async def raw(self, method: str, payload: bytes, token: str | None = TOKEN) -> grpc.RpcError:
        """Send `payload` as the request bytes of `method`; the error it is answered with."""
        call = self.channel.unary_unary(f"{SERVICE}/{method}")  # bytes in, bytes out
        metadata = (("authorization", f"Bearer {token}"),) if token else ()
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await call(payload, metadata=metadata, timeout=10)
        return raised.value


def auth(token: str = TOKEN) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


@contextlib.asynccontextmanager
async def serve(
    sessions: sessionmaker[Session],
    spec: WorkflowSpec,
    tmp_path: Path,
    *,
    lockout: AuthLockout | None = None,
) -> AsyncIterator[Served]:
    blobs = LocalBlobStore(tmp_path / "blobs")
    _, execution_id = seed(sessions, spec)
    with transaction(sessions) as session:
        clusters_repo.ensure_cluster(session, "other", OTHER_CLUSTER_TOKEN, {})
    delivered: list[tuple[str, AttemptFinished]] = []

    async def record(execution: str, finished: AttemptFinished) -> None:
        delivered.append((execution, finished))

    ready = AttemptsReady()
    ready.bind(asyncio.get_running_loop())
    server = grpc.aio.server(interceptors=[InternalErrorInterceptor()], options=server_options())
    agent_pb2_grpc.add_AgentServiceServicer_to_server(
        AgentService(
            sessions,
            blobs,
            FinishNotifier(sessions, record),
            attempts_ready=ready,
            max_lease_wait_seconds=5,
            heartbeat_interval_seconds=7,
            lockout=lockout,
        ),
        server,
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    # The client may send more than the server takes: the server's limit is what is tested.
    channel = grpc.aio.insecure_channel(
        f"127.0.0.1:{port}", options=[("grpc.max_send_message_length", 64 * 2**20)]
    )
    try:
        yield Served(
            channel, agent_pb2_grpc.AgentServiceStub(channel), sessions, execution_id, delivered
        )
    finally:
        await channel.close()
        await server.stop(grace=None)


def create_attempt(served: Served, number: int) -> str:
    from control_plane.db.repositories import attempts as attempts_repo
    from tests.integration.agent_server import PREPARE_NODE, PREPARE_TASK

    with transaction(served.sessions) as session:
        attempt = attempts_repo.create_attempt(
            session,
            execution_id=served.execution_id,
            node_id=PREPARE_NODE,
            task_name=PREPARE_TASK,
            attempt_number=number,
            inputs_uri="file:///dev/null",
            outputs_uri="file:///dev/null",
        )
        return attempt.id


async def works_normally(served: Served, number: int) -> None:
    """Register, lease a fresh attempt, report it RUNNING then SUCCEEDED: all accepted."""
    registered = await served.stub.Register(
        pb.RegisterRequest(agent_version="hardening", capacity=CAPACITY), metadata=auth()
    )
    assert registered.cluster_name == CLUSTER
    attempt_id = await asyncio.to_thread(create_attempt, served, number)
    leased = await served.stub.LeaseAttempts(
        pb.LeaseAttemptsRequest(max_attempts=10, wait_seconds=5), metadata=auth()
    )
    assert [a.attempt_id for a in leased.assignments] == [attempt_id]
    token = leased.assignments[0].fencing_token
    for sequence, state in ((1, pb.ATTEMPT_STATE_RUNNING), (2, pb.ATTEMPT_STATE_SUCCEEDED)):
        answer = await served.stub.ReportStatus(
            pb.ReportStatusRequest(
                attempt_id=attempt_id, fencing_token=token, state=state, sequence=sequence
            ),
            metadata=auth(),
        )
        assert answer.accepted, answer.reason


@pytest.fixture
def spec(workflow_spec: WorkflowSpec) -> WorkflowSpec:
    return workflow_spec


async def test_garbage_oversized_and_unauthenticated_calls_get_their_status_codes(
    session_factory: sessionmaker[Session], spec: WorkflowSpec, tmp_path: Path
) -> None:
    async with serve(session_factory, spec, tmp_path) as served:
        await works_normally(served, 1)
        faults = 0
        # Garbage bytes: not a protobuf message of the method's type.
        for method in ("Register", "Heartbeat", "LeaseAttempts", "ReportStatus"):
            for payload in (b"\xff\xff\xff\xff", b"\x0a\xff\xff\xff\x0f", bytes(range(256))):
                error = await served.raw(method, payload)
                faults += 1
                assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, error
                assert error.details() == f"malformed request: not a valid {method} message"
        # Oversized: refused by gRPC before any handler runs, with a clear message.
        huge = pb.ReportStatusRequest(attempt_id="x", message="m" * (MAX_MESSAGE_BYTES + 1))
        with pytest.raises(grpc.aio.AioRpcError) as too_big:
            await served.stub.ReportStatus(huge, metadata=auth(), timeout=10)
        faults += 1
        assert too_big.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "larger than max" in (too_big.value.details() or "")
        # Missing, malformed and unknown tokens.
        for metadata, details in (
            ((), "missing bearer token"),
            ((("authorization", "Basic dXNlcjpwYXNz"),), "missing bearer token"),
            ((("authorization", "Bearer "),), "missing bearer token"),
            (auth("ffa_not-a-token"), "invalid agent token"),
            (auth(TOKEN + "x"), "invalid agent token"),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await served.stub.Heartbeat(pb.HeartbeatRequest(), metadata=metadata, timeout=10)
            faults += 1
            assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED
            assert refused.value.details() == details
            assert TOKEN not in (refused.value.details() or "")
        # An API (user) token is not an agent token.
        with pytest.raises(grpc.aio.AioRpcError) as user_token:
            await served.stub.Register(pb.RegisterRequest(), metadata=auth("ffu_user-token"))
        assert user_token.value.code() is grpc.StatusCode.UNAUTHENTICATED
        # A report in a state agents may not send.
        with pytest.raises(grpc.aio.AioRpcError) as bad_state:
            await served.stub.ReportStatus(
                pb.ReportStatusRequest(attempt_id="at-x", state=pb.ATTEMPT_STATE_UNSPECIFIED),
                metadata=auth(),
            )
        assert bad_state.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        # Nothing wedged: the same server serves normally.
        await works_normally(served, 2)
        print(f"gRPC faults injected: {faults + 2}")


async def test_repeated_invalid_agent_tokens_lock_out_the_address(
    session_factory: sessionmaker[Session], spec: WorkflowSpec, tmp_path: Path
) -> None:
    """A stolen-token hunt is cut short: past its allowance of refused tokens an address gets
    RESOURCE_EXHAUSTED, even with the valid token, and no database lookup; the allowance does
    not refill during the test (one try in 1,000 s), whatever the machine's speed."""
    lockout = AuthLockout(burst=3, per_second=0.001, lockout_seconds=600)
    async with serve(session_factory, spec, tmp_path, lockout=lockout) as served:
        await works_normally(served, 1)
        codes = []
        for guess in range(5):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await served.stub.Heartbeat(
                    pb.HeartbeatRequest(), metadata=auth(f"ffa_guess-{guess}"), timeout=10
                )
            codes.append(refused.value.code())
        unauthenticated, exhausted = (
            grpc.StatusCode.UNAUTHENTICATED,
            grpc.StatusCode.RESOURCE_EXHAUSTED,
        )
        assert codes == [unauthenticated] * 3 + [exhausted] * 2
        with pytest.raises(grpc.aio.AioRpcError) as locked:
            await served.stub.Heartbeat(pb.HeartbeatRequest(), metadata=auth(), timeout=10)
        assert locked.value.code() is exhausted
        assert "too many invalid agent tokens from this address" in (locked.value.details() or "")
        assert "suspended for 600 s" in (locked.value.details() or "")
    # Only that address: the table keys by the peer's host, so another one may still try.
    assert lockout.locked_for("127.0.0.1") > 0 and lockout.locked_for("10.0.0.9") == 0


def test_peer_addresses_drop_the_port() -> None:
    assert peer_address("ipv4:10.0.0.7:5123") == "10.0.0.7"
    assert peer_address("ipv6:[::1]:5123") == "::1"
    assert peer_address("unix:/run/agent.sock") == "unix:/run/agent.sock"


async def test_replayed_and_foreign_reports_change_nothing(
    session_factory: sessionmaker[Session], spec: WorkflowSpec, tmp_path: Path
) -> None:
    async with serve(session_factory, spec, tmp_path) as served:
        await served.stub.Register(pb.RegisterRequest(capacity=CAPACITY), metadata=auth())
        attempt_id = await asyncio.to_thread(create_attempt, served, 1)
        leased = await served.stub.LeaseAttempts(
            pb.LeaseAttemptsRequest(max_attempts=1, wait_seconds=5), metadata=auth()
        )
        token = leased.assignments[0].fencing_token
        succeeded = pb.ReportStatusRequest(
            attempt_id=attempt_id,
            fencing_token=token,
            state=pb.ATTEMPT_STATE_SUCCEEDED,
            sequence=2,
        )
        first = await served.stub.ReportStatus(succeeded, metadata=auth())
        assert first.accepted
        # Replays of the same report (an agent retrying after a lost answer): no second
        # finish, no second delivery to the workflow.
        for _ in range(5):
            again = await served.stub.ReportStatus(succeeded, metadata=auth())
            assert again.accepted, again.reason
        assert [e for e, _ in served.delivered] == [served.execution_id]
        # A late, older report is acknowledged as a duplicate (so the agent stops resending
        # it) and changes nothing.
        late = pb.ReportStatusRequest(
            attempt_id=attempt_id, fencing_token=token, state=pb.ATTEMPT_STATE_RUNNING, sequence=1
        )
        answer = await served.stub.ReportStatus(late, metadata=auth())
        assert "duplicate" in answer.reason
        # Another cluster's agent reporting this attempt, or a made-up attempt: refused.
        foreign = pb.ReportStatusRequest(
            attempt_id=attempt_id,
            fencing_token=token,
            state=pb.ATTEMPT_STATE_FAILED,
            sequence=9,
        )
        refused = await served.stub.ReportStatus(foreign, metadata=auth(OTHER_CLUSTER_TOKEN))
        assert not refused.accepted and refused.reason
        unknown = pb.ReportStatusRequest(
            attempt_id="at-does-not-exist", fencing_token=1, state=pb.ATTEMPT_STATE_RUNNING
        )
        refused = await served.stub.ReportStatus(unknown, metadata=auth())
        assert not refused.accepted and refused.reason
        with transaction(served.sessions) as session:
            assert session.get_one(TaskAttempt, attempt_id).status == "SUCCEEDED"
        assert len(served.delivered) == 1
