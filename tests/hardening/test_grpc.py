"""The agent gRPC service under bad input: garbage bytes, oversized messages, missing, wrong
and other clusters' tokens, replayed reports, reports without their lease's secret. Each gets
its status code, and afterwards the same server still registers, leases and takes reports
normally (nothing wedged).

The server is composed like `control_plane/server.py` composes it, with its message limits
(`control_plane/agent_api/limits.py`), on a migrated database (SQLite and PostgreSQL).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from sqlalchemy.orm import Session, sessionmaker

from control_plane.agent_api.interceptors import InternalErrorInterceptor
from control_plane.agent_api.limits import MAX_MESSAGE_BYTES, peer_address, server_options
from control_plane.agent_api.service import AgentService
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
from tests.integration.agent_server import CLUSTER, TOKEN, scheduled_agent_service, seed

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
    service: AgentService

    async def settled(self) -> None:
        """Until what the reports set off in the background (the workflows' signals) is done."""
        await asyncio.wait_for(self.service.settle(), 30)

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

    server = grpc.aio.server(interceptors=[InternalErrorInterceptor()], options=server_options())
    async with scheduled_agent_service(
        sessions,
        blobs,
        FinishNotifier(sessions, record),
        heartbeat_interval_seconds=7,
        max_lease_wait_seconds=5,
        lockout=lockout,
    ) as (service, _):
        agent_pb2_grpc.add_AgentServiceServicer_to_server(service, server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        # The client may send more than the server takes: the server's limit is what is tested.
        channel = grpc.aio.insecure_channel(
            f"127.0.0.1:{port}", options=[("grpc.max_send_message_length", 64 * 2**20)]
        )
        try:
            yield Served(
                channel,
                agent_pb2_grpc.AgentServiceStub(channel),
                sessions,
                execution_id,
                delivered,
                service,
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
    (assignment,) = leased.assignments
    for sequence, state in ((1, pb.ATTEMPT_STATE_RUNNING), (2, pb.ATTEMPT_STATE_SUCCEEDED)):
        answer = await served.stub.ReportStatus(
            pb.ReportStatusRequest(
                attempt_id=attempt_id,
                fencing_token=assignment.fencing_token,
                report_secret=assignment.report_secret,
                state=state,
                sequence=sequence,
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
        for method in ("Register", "Heartbeat", "LeaseAttempts", "ReportStatus", "ReportStatuses"):
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
        # Every method asks for the cluster token first, a batch of reports too.
        for method, request in (
            ("ReportStatus", pb.ReportStatusRequest(attempt_id="at-x")),
            ("ReportStatuses", pb.ReportStatusesRequest(reports=[pb.ReportStatusRequest()])),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as anonymous:
                await getattr(served.stub, method)(request, timeout=10)
            faults += 1
            assert anonymous.value.code() is grpc.StatusCode.UNAUTHENTICATED
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
        secret = leased.assignments[0].report_secret
        succeeded = pb.ReportStatusRequest(
            attempt_id=attempt_id,
            fencing_token=token,
            report_secret=secret,
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
        await served.settled()
        assert [e for e, _ in served.delivered] == [served.execution_id]
        # A late, older report is acknowledged as a duplicate (so the agent stops resending
        # it) and changes nothing.
        late = pb.ReportStatusRequest(
            attempt_id=attempt_id,
            fencing_token=token,
            report_secret=secret,
            state=pb.ATTEMPT_STATE_RUNNING,
            sequence=1,
        )
        answer = await served.stub.ReportStatus(late, metadata=auth())
        assert "duplicate" in answer.reason
        # Another cluster's agent reporting this attempt (even with the lease's secret), or a
        # made-up attempt: refused.
        foreign = pb.ReportStatusRequest(
            attempt_id=attempt_id,
            fencing_token=token,
            report_secret=secret,
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
        await served.settled()
        assert len(served.delivered) == 1


async def test_a_report_without_the_leases_secret_is_refused_and_changes_nothing(
    session_factory: sessionmaker[Session], spec: WorkflowSpec, tmp_path: Path
) -> None:
    """The cluster token says which cluster calls, not who holds the lease: a caller with the
    valid token but without the lease's report secret (none, a made-up one, another attempt's,
    a truncated one) cannot decide the attempt's result. It gets PERMISSION_DENIED naming the
    attempt, never a secret; the attempt stays as it was; the genuine report then goes in."""
    async with serve(session_factory, spec, tmp_path) as served:
        await served.stub.Register(pb.RegisterRequest(capacity=CAPACITY), metadata=auth())
        ids = [await asyncio.to_thread(create_attempt, served, n) for n in (1, 2)]
        by_id: dict[str, pb.Assignment] = {}
        for _ in range(10):  # a lease answers with what is placed so far: maybe one of them
            leased = await served.stub.LeaseAttempts(
                pb.LeaseAttemptsRequest(max_attempts=2, wait_seconds=5), metadata=auth()
            )
            by_id.update({a.attempt_id: a for a in leased.assignments})
            if set(ids) <= set(by_id):
                break
        target, other = by_id[ids[0]], by_id[ids[1]]
        assert target.report_secret.startswith("ffl_") and len(target.report_secret) > 40
        assert target.report_secret != other.report_secret

        def report(
            secret: str, state: int = pb.ATTEMPT_STATE_SUCCEEDED, sequence: int = 2
        ) -> pb.ReportStatusRequest:
            return pb.ReportStatusRequest(
                attempt_id=target.attempt_id,
                fencing_token=target.fencing_token,
                report_secret=secret,
                state=state,
                sequence=sequence,
            )

        def load() -> tuple[str, int, object, str | None]:
            with transaction(served.sessions) as session:
                row = session.get_one(TaskAttempt, target.attempt_id)
                return row.status, row.last_report_sequence, row.finished_at, row.error_message

        before = await asyncio.to_thread(load)
        assert before[:2] == ("LEASED", 0)
        forged = [
            "",
            "ffl_" + "A" * 43,
            other.report_secret,
            target.report_secret[:-1],
            target.report_secret + "x",
        ]
        for secret in forged:
            for state in (pb.ATTEMPT_STATE_SUCCEEDED, pb.ATTEMPT_STATE_FAILED):
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await served.stub.ReportStatus(report(secret, state), metadata=auth())
                assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED
                details = refused.value.details() or ""
                assert target.attempt_id in details
                assert target.report_secret not in details
                assert not secret or secret not in details
        assert await asyncio.to_thread(load) == before
        assert served.delivered == []

        # The agent holding the lease reports; a forger after it still changes nothing.
        accepted = await served.stub.ReportStatus(report(target.report_secret), metadata=auth())
        assert accepted.accepted, accepted.reason
        with pytest.raises(grpc.aio.AioRpcError) as late_forgery:
            await served.stub.ReportStatus(
                report(other.report_secret, pb.ATTEMPT_STATE_FAILED, 3), metadata=auth()
            )
        assert late_forgery.value.code() is grpc.StatusCode.PERMISSION_DENIED
        status, sequence, finished_at, error = await asyncio.to_thread(load)
        assert (status, sequence, error) == ("SUCCEEDED", 2, None) and finished_at is not None
        await served.settled()
        assert [e for e, _ in served.delivered] == [served.execution_id]
        # The other attempt's own secret still works for it.
        running = pb.ReportStatusRequest(
            attempt_id=other.attempt_id,
            fencing_token=other.fencing_token,
            report_secret=other.report_secret,
            state=pb.ATTEMPT_STATE_RUNNING,
            sequence=1,
        )
        assert (await served.stub.ReportStatus(running, metadata=auth())).accepted


async def test_a_lease_secret_outlives_a_control_plane_restart(
    session_factory: sessionmaker[Session], spec: WorkflowSpec, tmp_path: Path
) -> None:
    """The control plane keeps only the secret's hash, in the database: a report made to a
    fresh control-plane process (restart, another replica) with the secret is accepted."""
    async with serve(session_factory, spec, tmp_path) as first:
        await first.stub.Register(pb.RegisterRequest(capacity=CAPACITY), metadata=auth())
        attempt_id = await asyncio.to_thread(create_attempt, first, 1)
        leased = await first.stub.LeaseAttempts(
            pb.LeaseAttemptsRequest(max_attempts=1, wait_seconds=5), metadata=auth()
        )
        (assignment,) = leased.assignments
        assert assignment.attempt_id == attempt_id
    async with serve(session_factory, spec, tmp_path) as second:
        report = pb.ReportStatusRequest(
            attempt_id=attempt_id,
            fencing_token=assignment.fencing_token,
            state=pb.ATTEMPT_STATE_SUCCEEDED,
            sequence=1,
        )
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await second.stub.ReportStatus(report, metadata=auth())
        assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED
        report.report_secret = assignment.report_secret
        answer = await second.stub.ReportStatus(report, metadata=auth())
        assert answer.accepted, answer.reason
        with transaction(second.sessions) as session:
            assert session.get_one(TaskAttempt, attempt_id).status == "SUCCEEDED"


async def test_an_attempt_leased_before_report_secrets_keeps_the_older_checks(
    session_factory: sessionmaker[Session],
    spec: WorkflowSpec,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Upgrading with attempts in flight: one leased by a control plane that issued no secret
    (no hash on its row) is still reported without one, by cluster and fencing token, with
    one warning; a wrong fencing token is still stale."""
    async with serve(session_factory, spec, tmp_path) as served:
        await served.stub.Register(pb.RegisterRequest(capacity=CAPACITY), metadata=auth())
        attempt_id = await asyncio.to_thread(create_attempt, served, 1)
        leased = await served.stub.LeaseAttempts(
            pb.LeaseAttemptsRequest(max_attempts=1, wait_seconds=5), metadata=auth()
        )
        token = leased.assignments[0].fencing_token
        with transaction(served.sessions) as session:
            session.get_one(TaskAttempt, attempt_id).report_secret_sha256 = None
        stale = pb.ReportStatusRequest(
            attempt_id=attempt_id,
            fencing_token=token + 1,
            state=pb.ATTEMPT_STATE_SUCCEEDED,
            sequence=1,
        )
        assert not (await served.stub.ReportStatus(stale, metadata=auth())).accepted
        caplog.set_level(logging.WARNING, logger="control_plane.agent_api.service")
        for sequence, state in ((1, pb.ATTEMPT_STATE_RUNNING), (2, pb.ATTEMPT_STATE_SUCCEEDED)):
            answer = await served.stub.ReportStatus(
                pb.ReportStatusRequest(
                    attempt_id=attempt_id, fencing_token=token, state=state, sequence=sequence
                ),
                metadata=auth(),
            )
            assert answer.accepted, answer.reason
        with transaction(served.sessions) as session:
            assert session.get_one(TaskAttempt, attempt_id).status == "SUCCEEDED"
    warnings = [r for r in caplog.records if "without a report secret" in r.getMessage()]
    assert len(warnings) == 1 and attempt_id in warnings[0].getMessage()
