"""AgentService over real gRPC: a grpc.aio server on a loopback port, a real client channel, a
migrated database (SQLite and PostgreSQL) and a local blob store.

The server is composed as `control_plane/server.py` composes it. Temporal is the one part left
out: the finished-attempt sink is `RecordingSink`, a stand-in for the workflow signal that
records what it was asked to deliver.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse

import grpc
import pytest
from sqlalchemy import event, update
from sqlalchemy.orm import Session, sessionmaker

from control_plane.agent_api import service as service_module
from control_plane.agent_api.interceptors import InternalErrorInterceptor
from control_plane.agent_api.service import AgentService, AttemptsReady
from control_plane.blob_layout import bundle_key
from control_plane.db.models import Cluster, Execution, TaskAttempt, utcnow
from control_plane.db.repositories import attempts as attempts_repo
from control_plane.db.repositories import clusters as clusters_repo
from control_plane.db.repositories import cohorts as cohorts_repo
from control_plane.db.repositories import tenancy
from control_plane.db.repositories.clusters import ClusterRef
from control_plane.db.repositories.executions import create_execution
from control_plane.db.repositories.tenants import get_or_create_tenant
from control_plane.db.repositories.workflows import register_workflow_version
from control_plane.db.session import make_engine, make_session_factory, transaction
from control_plane.orchestration.workflows import AttemptFinished
from control_plane.scheduling import scheduler as scheduler_module
from control_plane.scheduling.scheduler import Scheduler, place_pending_attempts
from control_plane.services.finish_notifier import FinishNotifier
from data_plane_agent.reporter import REPORT_BATCH
from fleetflow.agent.v1 import agent_pb2, agent_pb2_grpc
from fleetflow.ir import Resources, WorkflowSpec
from fleetflow.states import AttemptState
from fleetflow.storage import LocalBlobStore
from fleetflow.timestamps import as_utc
from tests.integration.agent_server import scheduled_agent_service
from tests.polling import wait_until_async
from tests.unit.control_plane.test_successor_starts import looks_ahead

pytestmark = pytest.mark.integration

TOKEN = "ffa_test-token-alpha"
OTHER_TOKEN = "ffa_test-token-beta"
HEARTBEAT_INTERVAL_SECONDS = 7
MAX_LEASE_WAIT_SECONDS = 60
# Generous bound on anything that should happen "at once"; never a timing assertion's margin.
DEADLINE_SECONDS = 10.0
BUNDLE_DIGEST = "d" * 64
BUNDLE_BYTES = b"not really a tarball"
PREPARE = "examples.train.prepare"

RUNNING = agent_pb2.ATTEMPT_STATE_RUNNING
SUCCEEDED = agent_pb2.ATTEMPT_STATE_SUCCEEDED
FAILED = agent_pb2.ATTEMPT_STATE_FAILED

T = TypeVar("T")


class RecordingSink:
    """Stand-in for the Temporal signal: records each delivery; can fail or hang on request."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, AttemptFinished]] = []
        self.failures: list[Exception] = []  # raised, in order, by the next calls
        self.hang = False  # the next call waits for `release`, like a retrying signal
        self.hanging = asyncio.Event()
        self.release = asyncio.Event()

    async def __call__(self, execution_id: str, event: AttemptFinished) -> None:
        if self.failures:
            raise self.failures.pop(0)
        if self.hang:
            self.hang = False
            self.hanging.set()
            await self.release.wait()
        self.calls.append((execution_id, event))


class WatchedAttemptsReady(AttemptsReady):
    """The real AttemptsReady, which also tells the test when a long poll starts waiting."""

    def __init__(self) -> None:
        super().__init__()
        self.waiting = asyncio.Event()

    async def wait(self, timeout: float, since: int | None = None) -> None:
        self.waiting.set()
        await super().wait(timeout, since)


@dataclass
class Harness:
    sessions: sessionmaker[Session]
    blobs: LocalBlobStore
    sink: RecordingSink
    notifier: FinishNotifier
    ready: WatchedAttemptsReady
    scheduler: Scheduler
    service: AgentService
    stub: agent_pb2_grpc.AgentServiceStub
    cluster_id: str
    other_cluster_id: str
    execution_id: str
    tenant: str
    spec: WorkflowSpec
    _numbers: Iterator[int] = field(default_factory=lambda: iter(range(1, 1000)))

    async def db(self, work: Callable[[Session], T]) -> T:
        """Run `work` in one committed transaction, in a thread (as the service does)."""

        def run() -> T:
            with transaction(self.sessions) as session:
                return work(session)

        return await asyncio.to_thread(run)

    def create_attempt(self, session: Session, node_id: str = "n0") -> TaskAttempt:
        """What the `start_attempt` activity does: inputs in the blob store, a PENDING row."""
        number = next(self._numbers)
        prefix = f"executions/{self.execution_id}/{node_id}/{number}"
        inputs_uri = self.blobs.put(f"{prefix}/inputs.json", b'{"n": 3}')
        return attempts_repo.create_attempt(
            session,
            execution_id=self.execution_id,
            node_id=node_id,
            task_name=PREPARE,
            attempt_number=number,
            inputs_uri=inputs_uri,
            outputs_uri=self.blobs.uri(f"{prefix}/outputs.json"),
        )

    async def attempt(self, attempt_id: str) -> TaskAttempt:
        return await self.db(lambda s: s.get_one(TaskAttempt, attempt_id))

    async def cluster(self, cluster_id: str | None = None) -> Cluster:
        return await self.db(lambda s: s.get_one(Cluster, cluster_id or self.cluster_id))

    async def register(self, token: str = TOKEN) -> agent_pb2.RegisterResponse:
        """Register, and run the pass the registration asked for (`Scheduler.wake_soon`) now,
        not at the end of its window, in the middle of what the test does next."""
        response: agent_pb2.RegisterResponse = await self.stub.Register(
            agent_pb2.RegisterRequest(agent_version="9.9.9"), metadata=bearer(token)
        )
        await self.scheduler.place()
        return response

    async def lease(self, wait_seconds: int = 0, token: str = TOKEN) -> list[agent_pb2.Assignment]:
        response = await self.stub.LeaseAttempts(
            agent_pb2.LeaseAttemptsRequest(max_attempts=10, wait_seconds=wait_seconds),
            metadata=bearer(token),
            timeout=DEADLINE_SECONDS + wait_seconds,
        )
        return list(response.assignments)

    async def start_attempt(self) -> TaskAttempt:
        """What the `start_attempt` activity does: create the attempt, wake the scheduler."""
        attempt = await self.db(self.create_attempt)
        self.scheduler.wake()
        return attempt

    async def leased_attempt(self) -> agent_pb2.Assignment:
        """An attempt created, placed and leased by this cluster's agent."""
        await self.start_attempt()
        (assignment,) = await self.lease(wait_seconds=int(DEADLINE_SECONDS))
        return assignment

    async def wait_for_status(self, attempt_id: str, status: AttemptState) -> TaskAttempt:
        """The attempt once it is in `status`, read again on every assignment, with a deadline.
        The generation is taken before the read: an assignment between the two is not missed."""
        while True:
            seen = self.ready.generation
            attempt = await self.attempt(attempt_id)
            if attempt.status == status.value:
                return attempt
            await within_deadline(self.ready.wait(DEADLINE_SECONDS, since=seen), str(status))

    async def report(
        self,
        assignment: agent_pb2.Assignment,
        state: int,
        sequence: int,
        *,
        message: str = "",
        traceback: str = "",
        token: str = TOKEN,
        settle: bool = True,
    ) -> agent_pb2.ReportStatusResponse:
        """Send one report; `settle`: and wait for what it set off in the background (the
        next nodes' start, the workflow's signal), as the tests' assertions expect."""
        response: agent_pb2.ReportStatusResponse = await self.stub.ReportStatus(
            report_of(assignment, state, sequence, message=message, traceback=traceback),
            metadata=bearer(token),
            timeout=DEADLINE_SECONDS,
        )
        if settle:
            await within_deadline(self.service.settle(), "the work after the report")
        return response

    async def report_batch(
        self, reports: list[agent_pb2.ReportStatusRequest], token: str = TOKEN
    ) -> list[agent_pb2.ReportOutcome]:
        """Send `reports` in one `ReportStatuses` call, and wait for what they set off."""
        response = await self.stub.ReportStatuses(
            agent_pb2.ReportStatusesRequest(reports=reports),
            metadata=bearer(token),
            timeout=DEADLINE_SECONDS,
        )
        await within_deadline(self.service.settle(), "the work after the reports")
        return list(response.outcomes)


def report_of(
    assignment: agent_pb2.Assignment,
    state: int,
    sequence: int,
    *,
    message: str = "",
    traceback: str = "",
) -> agent_pb2.ReportStatusRequest:
    """A report on `assignment`'s attempt under its lease (fencing token and report secret)."""
    return agent_pb2.ReportStatusRequest(
        attempt_id=assignment.attempt_id,
        fencing_token=assignment.fencing_token,
        report_secret=assignment.report_secret,
        state=state,
        sequence=sequence,
        message=message,
        error_traceback=traceback,
    )


def bearer(token: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {token}"),)


async def within_deadline(awaitable: Awaitable[T], what: str) -> T:
    try:
        return await asyncio.wait_for(awaitable, DEADLINE_SECONDS)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


@pytest.fixture
def spec(workflow_spec: WorkflowSpec) -> WorkflowSpec:
    """The shared spec, with a fully specified `prepare` task so every field is carried."""
    prepare = workflow_spec.tasks[PREPARE].model_copy(
        update={
            "resources": Resources(cpu=2.5, memory_bytes=3 << 30, gpu=1, gpu_type="a100"),
            "timeout_seconds": 120,
            "image": "registry.example/train:1",
        }
    )
    return workflow_spec.model_copy(update={"tasks": {**workflow_spec.tasks, PREPARE: prepare}})


@pytest.fixture
async def harness(database_url: str, tmp_path: Path, spec: WorkflowSpec) -> AsyncIterator[Harness]:
    engine = make_engine(database_url)
    sessions = make_session_factory(engine)
    blobs = LocalBlobStore(tmp_path / "blobs")
    blobs.put(bundle_key("research", BUNDLE_DIGEST), BUNDLE_BYTES)
    with transaction(sessions) as session:
        cluster = clusters_repo.ensure_cluster(session, "alpha", TOKEN, {"zone": "a"})
        other = clusters_repo.ensure_cluster(session, "beta", OTHER_TOKEN, {})
        tenant = get_or_create_tenant(session, "research")
        tenancy.grant_cluster(session, tenant, tenancy.EVERY_CLUSTER)
        workflow = register_workflow_version(session, tenant.id, spec, BUNDLE_DIGEST, None)
        execution = create_execution(session, tenant.id, workflow, {"n": 3})
        ids = (cluster.id, other.id, execution.id)

    sink = RecordingSink()
    notifier = FinishNotifier(sessions, sink)
    ready = WatchedAttemptsReady()
    # As control_plane/server.py composes it.
    running = contextlib.AsyncExitStack()
    service, scheduler = await running.enter_async_context(
        scheduled_agent_service(
            sessions,
            blobs,
            notifier,
            heartbeat_interval_seconds=HEARTBEAT_INTERVAL_SECONDS,
            ready=ready,
            max_lease_wait_seconds=MAX_LEASE_WAIT_SECONDS,
        )
    )
    server = grpc.aio.server(interceptors=[InternalErrorInterceptor()])
    agent_pb2_grpc.add_AgentServiceServicer_to_server(service, server)
    port = server.add_insecure_port("127.0.0.1:0")
    assert port, "could not bind a loopback port"
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield Harness(
            sessions=sessions,
            blobs=blobs,
            sink=sink,
            notifier=notifier,
            ready=ready,
            scheduler=scheduler,
            service=service,
            stub=agent_pb2_grpc.AgentServiceStub(channel),
            cluster_id=ids[0],
            other_cluster_id=ids[1],
            execution_id=ids[2],
            tenant="research",
            spec=spec,
        )
    finally:
        await channel.close()
        await server.stop(grace=None)
        await running.aclose()
        engine.dispose()


@pytest.fixture
def no_recheck(monkeypatch: pytest.MonkeyPatch) -> None:
    """Long polls and the scheduler wake only when notified: no periodic database recheck and
    no placement tick during a test."""
    monkeypatch.setattr(service_module, "_RECHECK_SECONDS", 3600.0)
    monkeypatch.setattr(scheduler_module, "TICK_SECONDS", 3600.0)


# --- authentication ---------------------------------------------------------------------------

EMPTY_REQUESTS: dict[str, Any] = {
    "Register": agent_pb2.RegisterRequest(),
    "Heartbeat": agent_pb2.HeartbeatRequest(),
    "LeaseAttempts": agent_pb2.LeaseAttemptsRequest(wait_seconds=0),
    "ReportStatus": agent_pb2.ReportStatusRequest(attempt_id="at-x", state=RUNNING, sequence=1),
}


@pytest.mark.parametrize("method", sorted(EMPTY_REQUESTS))
@pytest.mark.parametrize(
    ("metadata", "details"),
    [
        ((), "missing bearer token"),
        ((("authorization", f"Basic {TOKEN}"),), "missing bearer token"),
        ((("authorization", "Bearer "),), "missing bearer token"),
        ((("authorization", "Bearer ffa_wrong-token"),), "invalid agent token"),
        # The hash of a valid token is not a token.
        ((("authorization", f"Bearer {clusters_repo.hash_token(TOKEN)}"),), "invalid agent token"),
    ],
    ids=["none", "not-bearer", "empty", "wrong", "hash"],
)
async def test_calls_without_a_valid_token_are_unauthenticated(
    harness: Harness, method: str, metadata: tuple[tuple[str, str], ...], details: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await getattr(harness.stub, method)(
            EMPTY_REQUESTS[method], metadata=metadata, timeout=DEADLINE_SECONDS
        )
    assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
    # Says what is wrong, and nothing about tokens, hashes or clusters that exist.
    assert raised.value.details() == details
    cluster = await harness.cluster()
    assert cluster.last_heartbeat_at is None


# --- Register and Heartbeat -------------------------------------------------------------------


async def test_register_records_the_agent_and_returns_the_heartbeat_interval(
    harness: Harness,
) -> None:
    capacity = agent_pb2.Capacity(
        cpu_allocatable=16,
        cpu_in_use=1.5,
        memory_bytes_allocatable=64 << 30,
        memory_bytes_in_use=1 << 30,
        gpus=[agent_pb2.GpuCapacity(gpu_type="a100", allocatable=4, in_use=1)],
    )
    response = await harness.stub.Register(
        agent_pb2.RegisterRequest(
            agent_version="1.4.0",
            executors=["local-process"],
            labels={"region": "eu"},
            capacity=capacity,
        ),
        metadata=bearer(TOKEN),
        timeout=DEADLINE_SECONDS,
    )
    assert response.cluster_name == "alpha"
    assert response.heartbeat_interval_seconds == HEARTBEAT_INTERVAL_SECONDS
    cluster = await harness.cluster()
    assert cluster.agent_version == "1.4.0"
    assert cluster.labels == {"zone": "a", "region": "eu"}
    assert cluster.capacity == {
        "cpu_allocatable": 16.0,
        "cpu_in_use": 1.5,
        "memory_bytes_allocatable": 64 << 30,
        "memory_bytes_in_use": 1 << 30,
        "gpus": [{"gpu_type": "a100", "allocatable": 4, "in_use": 1}],
    }
    assert cluster.last_heartbeat_at is not None
    other = await harness.cluster(harness.other_cluster_id)
    assert other.last_heartbeat_at is None and other.agent_version is None


async def test_register_places_attempts_that_waited_for_a_cluster(harness: Harness) -> None:
    attempt = await harness.db(harness.create_attempt)
    assert await harness.scheduler.place() == 0
    assert (await harness.attempt(attempt.id)).status == AttemptState.PENDING.value
    await harness.register()  # wakes the scheduler: a cluster came online
    placed = await harness.wait_for_status(attempt.id, AttemptState.ASSIGNED)
    assert placed.cluster_id == harness.cluster_id


async def test_heartbeat_asks_to_stop_attempts_no_longer_wanted(harness: Harness) -> None:
    await harness.register()
    keep = await harness.leased_attempt()
    cancelled = await harness.leased_attempt()
    # Another cluster's active attempt, which this agent has no business running.
    foreign = await harness.leased_attempt()

    def hand_to_other_cluster(session: Session) -> None:
        session.get_one(TaskAttempt, foreign.attempt_id).cluster_id = harness.other_cluster_id

    await harness.db(hand_to_other_cluster)
    # As finish_execution cancels the attempts of a failed execution.
    await harness.db(
        lambda s: attempts_repo.move_attempt(
            s, s.get_one(TaskAttempt, cancelled.attempt_id), AttemptState.CANCELLED
        )
    )
    before = (await harness.cluster()).last_heartbeat_at
    assert before is not None
    running = [keep.attempt_id, cancelled.attempt_id, "at-unknown", foreign.attempt_id]
    response = await harness.stub.Heartbeat(
        agent_pb2.HeartbeatRequest(
            capacity=agent_pb2.Capacity(cpu_allocatable=4), running_attempt_ids=running
        ),
        metadata=bearer(TOKEN),
        timeout=DEADLINE_SECONDS,
    )
    assert list(response.stop_attempt_ids) == [
        cancelled.attempt_id,
        "at-unknown",
        foreign.attempt_id,
    ]
    cluster = await harness.cluster()
    assert cluster.capacity["cpu_allocatable"] == 4.0
    assert cluster.last_heartbeat_at is not None and cluster.last_heartbeat_at >= before
    # Nothing running, nothing to stop.
    empty = await harness.stub.Heartbeat(
        agent_pb2.HeartbeatRequest(), metadata=bearer(TOKEN), timeout=DEADLINE_SECONDS
    )
    assert list(empty.stop_attempt_ids) == []


async def test_a_preempted_attempt_is_stopped_with_its_cohorts_grace(harness: Harness) -> None:
    """Each stop order says why and, for a preempted attempt, its cohort's grace (a cancel
    leaves the grace to the agent); the bare ids still go to agents that predate them."""
    await harness.register()
    preempted = await harness.leased_attempt()
    cancelled = await harness.leased_attempt()

    def preempt(session: Session) -> None:
        cohort = cohorts_repo.create_cohort(session, "lab", preemption_grace_seconds=7)
        tenant = get_or_create_tenant(session, harness.tenant)
        cohorts_repo.set_membership(session, cohort, tenant, {"H100": {"nominal": 1}}, False)
        assert cohorts_repo.preempt(session, [preempted.attempt_id], "preempted: test")
        attempt = session.get_one(TaskAttempt, cancelled.attempt_id)
        attempts_repo.move_attempt(session, attempt, AttemptState.CANCELLED)

    await harness.db(preempt)
    running = [preempted.attempt_id, cancelled.attempt_id]
    response = await harness.stub.Heartbeat(
        agent_pb2.HeartbeatRequest(running_attempt_ids=running),
        metadata=bearer(TOKEN),
        timeout=DEADLINE_SECONDS,
    )
    assert list(response.stop_attempt_ids) == running
    orders = {
        s.attempt_id: (s.reason, s.grace_seconds if s.HasField("grace_seconds") else None)
        for s in response.stop_attempts
    }
    assert orders == {
        preempted.attempt_id: ("preempted", 7),
        cancelled.attempt_id: ("cancelled", None),
    }
    # The same on (re)registering; the grace is the cohort's as it is now.
    await harness.db(
        lambda s: setattr(cohorts_repo.get_cohort(s, "lab"), "preemption_grace_seconds", 0)
    )
    registered = await harness.stub.Register(
        agent_pb2.RegisterRequest(
            agent_version="9.9.9",
            running=[agent_pb2.RunningAttempt(attempt_id=preempted.attempt_id)],
        ),
        metadata=bearer(TOKEN),
    )
    (order,) = registered.stop_attempts
    assert (order.attempt_id, order.HasField("grace_seconds"), order.grace_seconds) == (
        preempted.attempt_id,
        True,
        0,
    )


# --- LeaseAttempts ----------------------------------------------------------------------------


async def test_long_poll_returns_as_soon_as_an_attempt_is_ready(
    harness: Harness, no_recheck: None
) -> None:
    await harness.register()
    poll = asyncio.create_task(harness.lease(wait_seconds=30))
    await within_deadline(harness.ready.waiting.wait(), "the long poll to wait")
    assert not poll.done()

    def start_attempt() -> str:
        # What the start_attempt activity does, in its worker thread: create, wake the
        # scheduler, whose pass wakes the poll.
        with transaction(harness.sessions) as session:
            attempt_id = harness.create_attempt(session).id
        harness.scheduler.wake()
        return attempt_id

    attempt_id = await asyncio.to_thread(start_attempt)
    # Without the wake-up this poll would wait out its 30 seconds (no recheck): the deadline
    # is a third of that.
    assignments = await within_deadline(poll, "the long poll to return the attempt")
    assert [a.attempt_id for a in assignments] == [attempt_id]
    assert (await harness.attempt(attempt_id)).status == AttemptState.LEASED.value


def count_own_leases(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The clusters whose polls leased in a transaction of their own, rather than taking what
    a pass leased for them."""
    own: list[str] = []
    original = AgentService._lease_again

    def counted(self: AgentService, caller: ClusterRef, max_attempts: int) -> Any:
        own.append(caller.name)
        return original(self, caller, max_attempts)

    monkeypatch.setattr(AgentService, "_lease_again", counted)
    return own


async def test_the_pass_leases_for_the_waiting_polls_and_hands_each_only_its_own(
    harness: Harness, no_recheck: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    await harness.register()  # alpha is online, beta is not: the attempt goes to alpha
    own_leases = count_own_leases(monkeypatch)
    alpha = asyncio.create_task(harness.lease(wait_seconds=30))
    beta = asyncio.create_task(harness.lease(wait_seconds=2, token=OTHER_TOKEN))
    await wait_until_async(
        lambda: len(harness.ready._waiters) == 2,
        timeout=DEADLINE_SECONDS,
        message="both long polls to wait",
    )

    attempt = await harness.start_attempt()
    (assignment,) = await within_deadline(alpha, "alpha's poll to return the attempt")

    assert assignment.attempt_id == attempt.id
    assert assignment.fencing_token == 1 and assignment.report_secret
    assert (await harness.attempt(attempt.id)).status == AttemptState.LEASED.value
    assert "alpha" not in own_leases, "alpha's poll leased again instead of taking the pass's"
    assert await within_deadline(beta, "beta's poll to time out") == [], (
        "another cluster's poll was handed the attempt"
    )


async def test_a_pass_that_fails_after_leasing_for_a_poll_hands_it_nothing(
    harness: Harness, no_recheck: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    await harness.register()
    own_leases = count_own_leases(monkeypatch)
    original = harness.ready.lease_waiting
    failed: list[bool] = []

    def lease_then_fail(session: Session) -> Any:
        handoff = original(session)
        if not failed:
            failed.append(True)

            @event.listens_for(session, "before_commit", once=True)
            def fail(_: Session) -> None:
                raise RuntimeError("the pass's commit fails, after it leased for the poll")

        return handoff

    monkeypatch.setattr(harness.scheduler, "_lease_waiting", lease_then_fail)
    poll = asyncio.create_task(harness.lease(wait_seconds=30))
    await within_deadline(harness.ready.waiting.wait(), "the long poll to wait")
    attempt = await harness.start_attempt()
    await wait_until_async(lambda: failed, timeout=DEADLINE_SECONDS, message="the pass to fail")
    # Its lease was rolled back, and the poll still waits, for the next pass.
    assert (await harness.attempt(attempt.id)).status == AttemptState.PENDING.value
    assert not poll.done()
    harness.scheduler.wake()

    (assignment,) = await within_deadline(poll, "the long poll to return the attempt")
    assert assignment.attempt_id == attempt.id
    assert assignment.fencing_token == 1, "a rolled-back lease counted"
    assert own_leases == [], "the failed pass handed the poll something, or left it without"


async def test_a_poll_gone_while_a_failing_pass_leased_for_it_is_not_leased_for_again(
    harness: Harness, no_recheck: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The poll is cancelled while a pass leases for it, and that pass's commit fails: its
    offer is not opened again, so the next pass leases nothing for a poll that is gone (the
    attempt waits ASSIGNED for the cluster's next poll)."""
    await harness.register()
    original = harness.ready.lease_waiting
    taken: list[Any] = []
    gone = threading.Event()

    def lease_then_fail(session: Session) -> Any:
        handoff = original(session)
        if not taken:
            taken.extend(handoff._offers)

            @event.listens_for(session, "before_commit", once=True)
            def fail(_: Session) -> None:
                assert gone.wait(DEADLINE_SECONDS)
                raise RuntimeError("the pass's commit fails, after its poll went")

        return handoff

    monkeypatch.setattr(harness.scheduler, "_lease_waiting", lease_then_fail)
    poll = asyncio.create_task(harness.lease(wait_seconds=30))
    await within_deadline(harness.ready.waiting.wait(), "the long poll to wait")
    attempt = await harness.start_attempt()
    await wait_until_async(lambda: taken, timeout=DEADLINE_SECONDS, message="the pass to lease")
    poll.cancel()
    await wait_until_async(
        lambda: taken[0].state == "abandoned",
        timeout=DEADLINE_SECONDS,
        message="the server to see the poll gone",
    )
    gone.set()
    await wait_until_async(
        lambda: taken[0].state == "withdrawn",
        timeout=DEADLINE_SECONDS,
        message="the failed pass to give the offers back",
    )
    assert harness.ready._offers == []

    await harness.scheduler.place()
    assert (await harness.attempt(attempt.id)).status == AttemptState.ASSIGNED.value


async def test_a_wake_up_during_the_database_check_is_not_lost(
    harness: Harness, no_recheck: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The attempt appears, and its wake-up is delivered, after the poll's check saw nothing
    but before it started waiting."""
    await harness.register()
    loop = asyncio.get_running_loop()
    original = AgentService._lease
    raced = threading.Event()

    def lease_then_race(
        self: AgentService, session: Session, caller: ClusterRef, max_attempts: int
    ) -> Any:
        assignments = original(self, session, caller, max_attempts)
        if not raced.is_set():
            raced.set()
            with transaction(harness.sessions) as session:
                harness.create_attempt(session)  # and the scheduler assigns it at once:
                place_pending_attempts(session, heartbeat_grace=timedelta(seconds=30))
            harness.ready.notify()
            # Return only once the loop has run the wake-up (callbacks run in order).
            woken = threading.Event()
            loop.call_soon_threadsafe(woken.set)
            assert woken.wait(DEADLINE_SECONDS)
        return assignments

    monkeypatch.setattr(AgentService, "_lease", lease_then_race)
    assignments = await within_deadline(harness.lease(wait_seconds=30), "the long poll")
    assert raced.is_set()
    assert len(assignments) == 1


async def test_long_poll_returns_empty_after_wait_seconds(harness: Harness) -> None:
    await harness.register()
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await within_deadline(harness.lease(wait_seconds=1), "an empty lease") == []
    assert loop.time() - started >= 0.9  # it did wait, rather than answer at once
    # wait_seconds=0 is a plain poll.
    assert await within_deadline(harness.lease(wait_seconds=0), "a plain poll") == []


async def test_assignment_carries_everything_the_agent_needs(harness: Harness) -> None:
    await harness.register()
    created = await harness.start_attempt()
    (assignment,) = await harness.lease(wait_seconds=int(DEADLINE_SECONDS))
    task = harness.spec.tasks[PREPARE]
    assert assignment.attempt_id == created.id
    assert assignment.fencing_token == 1
    assert assignment.execution_id == harness.execution_id
    assert assignment.node_id == "n0"
    assert assignment.tenant == harness.tenant
    assert (assignment.task_module, assignment.task_function) == ("examples.train", "prepare")
    assert (assignment.task_module, assignment.task_function) == (task.module, task.function)
    assert assignment.bundle_uri == harness.blobs.uri(bundle_key("research", BUNDLE_DIGEST))
    assert harness.blobs.get(assignment.bundle_uri) == BUNDLE_BYTES
    assert assignment.inputs_uri == created.inputs_uri
    assert harness.blobs.get(assignment.inputs_uri) == b'{"n": 3}'
    assert assignment.outputs_uri == created.outputs_uri
    assert assignment.resources == agent_pb2.Resources(
        cpu=2.5, memory_bytes=3 << 30, gpu=1, gpu_type="a100"
    )
    assert assignment.timeout_seconds == 120
    assert assignment.image == "registry.example/train:1"
    # The lease's report secret goes to the agent; the control plane keeps only its hash.
    assert assignment.report_secret.startswith("ffl_")
    stored = (await harness.attempt(created.id)).report_secret_sha256
    assert stored == hashlib.sha256(assignment.report_secret.encode()).hexdigest()
    # Leased once: the next poll, or another cluster's, gets nothing.
    assert await harness.lease() == []
    assert await harness.lease(token=OTHER_TOKEN) == []


# --- ReportStatus -----------------------------------------------------------------------------


async def test_a_terminal_report_signals_the_workflow_once(harness: Harness) -> None:
    await harness.register()
    assignment = await harness.leased_attempt()
    running = await harness.report(assignment, RUNNING, 1)
    assert running.accepted
    assert harness.sink.calls == []
    succeeded = await harness.report(assignment, SUCCEEDED, 2, message="ok")
    assert succeeded.accepted
    # The workflow hears the state; a message is kept (and signalled) only for failures.
    expected = (harness.execution_id, AttemptFinished(assignment.attempt_id, "SUCCEEDED", ""))
    assert harness.sink.calls == [expected]
    # The agent did not hear the answer and sends the report again: nothing new happens.
    duplicate = await harness.report(assignment, SUCCEEDED, 2, message="ok")
    assert duplicate.accepted
    assert harness.sink.calls == [expected]
    assert (await harness.attempt(assignment.attempt_id)).status == AttemptState.SUCCEEDED.value


def observed(report: agent_pb2.ReportStatusRequest, when: Any) -> agent_pb2.ReportStatusRequest:
    report.observed_at.FromDatetime(when)
    return report


async def test_an_attempt_is_stamped_when_its_agent_saw_the_change_within_its_own_times(
    harness: Harness,
) -> None:
    """A report carries when the agent saw the change (a RUNNING report may wait for its
    attempt's end, a buffered one for an outage): that is the attempt's timestamp, but never
    before its previous one nor after the report's arrival, whatever the agent's clock."""
    await harness.register()
    first = await harness.leased_attempt()
    leased_at = as_utc((await harness.attempt(first.attempt_id)).leased_at)
    started = leased_at + timedelta(milliseconds=3)
    ended = started + timedelta(milliseconds=4)
    while utcnow() <= ended:  # both are past when the reports arrive
        await asyncio.sleep(0.005)
    await harness.report_batch(
        [
            observed(report_of(first, RUNNING, 1), started),
            observed(report_of(first, SUCCEEDED, 2), ended),
        ]
    )
    attempt = await harness.attempt(first.attempt_id)
    assert (as_utc(attempt.started_at), as_utc(attempt.finished_at)) == (started, ended)

    # A clock far behind cannot put the start before the lease, nor one ahead the end after
    # the report's arrival; a time no datetime holds is ignored.
    second = await harness.leased_attempt()
    leased_at = as_utc((await harness.attempt(second.attempt_id)).leased_at)
    running = observed(report_of(second, RUNNING, 1), leased_at - timedelta(hours=1))
    ending = report_of(second, SUCCEEDED, 2)
    ending.observed_at.seconds = 2**62  # beyond year 9999
    before = utcnow()
    await harness.report_batch([running, ending])
    attempt = await harness.attempt(second.attempt_id)
    assert as_utc(attempt.started_at) == leased_at
    assert before <= as_utc(attempt.finished_at) <= utcnow()

    third = await harness.leased_attempt()
    await harness.report(third, RUNNING, 1)
    before = utcnow()
    await harness.report_batch(
        [observed(report_of(third, SUCCEEDED, 2), utcnow() + timedelta(days=1))]
    )
    attempt = await harness.attempt(third.attempt_id)
    assert as_utc(attempt.started_at) <= as_utc(attempt.finished_at) <= utcnow()
    assert as_utc(attempt.finished_at) >= before


async def test_a_success_starts_the_next_node_at_once_and_wakes_the_long_poll(
    harness: Harness, no_recheck: None
) -> None:
    """The next node is created and placed as the report is applied, not after the workflow
    heard of it; the workflow is signalled all the same (its own start finds the attempt)."""

    def with_every_input(session: Session) -> None:
        session.get_one(Execution, harness.execution_id).inputs = {"n": 3, "lr": 0.5}

    await harness.db(with_every_input)
    await harness.register()
    first = await harness.leased_attempt()
    outputs_uri = (await harness.attempt(first.attempt_id)).outputs_uri
    Path(urlparse(outputs_uri).path).write_text(json.dumps({"o0": [1, 2, 3]}))

    assert (await harness.report(first, SUCCEEDED, 1)).accepted
    (second,) = await harness.lease(wait_seconds=int(DEADLINE_SECONDS))

    assert second.node_id == "n1"
    attempt = await harness.attempt(second.attempt_id)
    assert (attempt.attempt_number, attempt.workflow_id) == (1, None)
    assert json.loads(harness.blobs.get(attempt.inputs_uri)) == {"data": [1, 2, 3], "lr": 0.5}
    assert harness.sink.calls == [
        (harness.execution_id, AttemptFinished(first.attempt_id, "SUCCEEDED", ""))
    ]


async def test_a_map_elements_success_costs_no_look_for_nodes_to_start_ahead(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only a plain node's success may start its successors ahead (`starts_successors_ahead`):
    a map's thousands of elements must not each cost a transaction to find that out."""
    looked = looks_ahead(monkeypatch)
    await harness.register()
    element = await harness.leased_attempt()

    def an_element(session: Session) -> None:
        session.get_one(TaskAttempt, element.attempt_id).map_index = 0

    await harness.db(an_element)
    plain = await harness.leased_attempt()

    for done in (element, plain):
        assert (await harness.report(done, SUCCEEDED, 1)).accepted
    assert looked == [f"after attempt {plain.attempt_id}"]


async def test_a_failure_is_stored_and_signalled(harness: Harness) -> None:
    await harness.register()
    assignment = await harness.leased_attempt()
    response = await harness.report(
        assignment, FAILED, 1, message="ValueError: n", traceback="Traceback ...\nValueError: n"
    )
    assert response.accepted
    assert harness.sink.calls == [
        (harness.execution_id, AttemptFinished(assignment.attempt_id, "FAILED", "ValueError: n"))
    ]
    attempt = await harness.attempt(assignment.attempt_id)
    assert (attempt.error_message, attempt.error_traceback) == (
        "ValueError: n",
        "Traceback ...\nValueError: n",
    )


async def test_rejected_reports_are_answered_not_signalled(harness: Harness) -> None:
    await harness.register()
    assignment = await harness.leased_attempt()
    stale = agent_pb2.Assignment()
    stale.CopyFrom(assignment)
    stale.fencing_token = assignment.fencing_token - 1
    response = await harness.report(stale, SUCCEEDED, 1)
    assert not response.accepted and "fencing token" in response.reason
    foreign = await harness.report(assignment, SUCCEEDED, 1, token=OTHER_TOKEN)
    assert (foreign.accepted, foreign.reason) == (False, "unknown attempt")
    assert harness.sink.calls == []
    assert (await harness.attempt(assignment.attempt_id)).status == AttemptState.LEASED.value


async def test_the_report_of_an_attempt_the_control_plane_ended_is_refused_quietly(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    """A preempted attempt's agent stops it and reports how it ended: refused (the attempt
    stays PREEMPTED), but expected, so logged at INFO; a stale fencing token still warns."""
    await harness.register()
    assignment = await harness.leased_attempt()
    await harness.db(lambda s: cohorts_repo.preempt(s, [assignment.attempt_id], "preempted: t"))
    stale = agent_pb2.Assignment()
    stale.CopyFrom(assignment)
    stale.fencing_token = assignment.fencing_token - 1
    with caplog.at_level(logging.INFO, logger="control_plane.agent_api"):
        stopped = await harness.report(assignment, agent_pb2.ATTEMPT_STATE_CANCELLED, 1)
        forged = await harness.report(stale, SUCCEEDED, 1)
    assert not stopped.accepted and not forged.accepted
    assert (await harness.attempt(assignment.attempt_id)).status == AttemptState.PREEMPTED.value
    rejected = [r for r in caplog.records if r.getMessage().startswith("rejected report")]
    assert [(r.levelno, "fencing token" in r.getMessage()) for r in rejected] == [
        (logging.INFO, False),
        (logging.WARNING, True),
    ]


@pytest.mark.parametrize("state", [agent_pb2.ATTEMPT_STATE_UNSPECIFIED, 99])
async def test_a_state_an_agent_may_not_report_is_invalid_argument(
    harness: Harness, state: int
) -> None:
    await harness.register()
    assignment = await harness.leased_attempt()
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await harness.report(assignment, state, 1)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert raised.value.details() == f"state {state} is not one an agent may report"
    attempt = await harness.attempt(assignment.attempt_id)
    assert attempt.status == AttemptState.LEASED.value and attempt.last_report_sequence == 0
    assert harness.sink.calls == []


# --- ReportStatuses ---------------------------------------------------------------------------


async def test_a_batch_is_applied_in_order_and_a_report_refused_is_refused_alone(
    harness: Harness,
) -> None:
    await harness.register()
    first = await harness.leased_attempt()
    second = await harness.leased_attempt()
    forged = agent_pb2.Assignment()
    forged.CopyFrom(second)
    forged.report_secret = "ffl_forged"

    outcomes = await harness.report_batch(
        [
            report_of(first, RUNNING, 1),
            report_of(first, SUCCEEDED, 2),  # the same attempt's next, after it
            report_of(forged, SUCCEEDED, 1),  # not the lease's secret
            report_of(second, 99, 1),  # not a state
            report_of(second, RUNNING, 1),  # applied all the same
        ]
    )

    assert [(o.accepted, o.refused) for o in outcomes] == [
        (True, False),
        (True, False),
        (False, True),
        (False, True),
        (True, False),
    ]
    assert "not that of the attempt's lease" in outcomes[2].reason
    assert "ffl_forged" not in outcomes[2].reason
    assert outcomes[3].reason == "state 99 is not one an agent may report"
    assert (await harness.attempt(first.attempt_id)).status == AttemptState.SUCCEEDED.value
    assert (await harness.attempt(second.attempt_id)).status == AttemptState.RUNNING.value
    assert harness.sink.calls == [
        (harness.execution_id, AttemptFinished(first.attempt_id, "SUCCEEDED", ""))
    ]
    # Another cluster's agent, with the lease's own secret even: nothing of it is its to report.
    (foreign,) = await harness.report_batch([report_of(second, SUCCEEDED, 2)], OTHER_TOKEN)
    assert (foreign.accepted, foreign.refused, foreign.reason) == (False, False, "unknown attempt")
    assert (await harness.attempt(second.attempt_id)).status == AttemptState.RUNNING.value


async def test_a_batch_over_the_limit_is_refused_whole_and_an_empty_one_answered(
    harness: Harness,
) -> None:
    await harness.register()
    assignment = await harness.leased_attempt()
    over = service_module.MAX_REPORTS_PER_CALL + 1
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await harness.report_batch([report_of(assignment, RUNNING, n) for n in range(1, over + 1)])
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert raised.value.details() == (
        f"{over} reports in one call; at most {over - 1}: send the rest in another"
    )
    attempt = await harness.attempt(assignment.attempt_id)
    assert attempt.status == AttemptState.LEASED.value and attempt.last_report_sequence == 0
    assert await harness.report_batch([]) == []
    # The agent's batches fit.
    assert REPORT_BATCH == service_module.MAX_REPORTS_PER_CALL


# --- unexpected errors ------------------------------------------------------------------------


async def test_an_unexpected_error_is_logged_and_answered_internal(
    harness: Harness, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    await harness.register()
    assignment = await harness.leased_attempt()

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("database at 10.0.0.7:5432 said no")

    monkeypatch.setattr(attempts_repo, "apply_report", broken)
    with caplog.at_level(logging.ERROR, logger="control_plane.agent_api"):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await harness.report(assignment, SUCCEEDED, 1)
    assert raised.value.code() == grpc.StatusCode.INTERNAL
    assert raised.value.details() == "internal error"
    assert "10.0.0.7" not in (raised.value.debug_error_string() or "")
    (record,) = [r for r in caplog.records if r.name == "control_plane.agent_api.interceptors"]
    assert "/fleetflow.agent.v1.AgentService/ReportStatus" in record.getMessage()
    assert record.exc_info is not None and "10.0.0.7" in str(record.exc_info[1])

    # The server stays usable: the agent's retry goes through.
    monkeypatch.undo()
    assert (await harness.report(assignment, SUCCEEDED, 1)).accepted
    assert [event.attempt_id for _, event in harness.sink.calls] == [assignment.attempt_id]


async def test_an_undelivered_finish_is_delivered_later_and_once(harness: Harness) -> None:
    """Temporal refuses the signal: the report is still accepted (the state is committed) and
    the notifier's next round delivers it, exactly once."""
    await harness.register()
    assignment = await harness.leased_attempt()
    harness.sink.failures.append(RuntimeError("temporal is restarting"))
    assert (await harness.report(assignment, SUCCEEDED, 1)).accepted
    assert (await harness.attempt(assignment.attempt_id)).status == AttemptState.SUCCEEDED.value
    assert harness.sink.calls == []

    assert await harness.notifier.deliver_pending() == 1
    expected = (harness.execution_id, AttemptFinished(assignment.attempt_id, "SUCCEEDED", ""))
    assert harness.sink.calls == [expected]
    assert await harness.notifier.deliver_pending() == 0
    assert (await harness.report(assignment, SUCCEEDED, 1)).accepted
    assert harness.sink.calls == [expected]


async def test_a_report_is_answered_without_waiting_for_the_workflow_signal(
    harness: Harness,
) -> None:
    """Temporal hangs on the signal: the agent's report is answered all the same (the state is
    committed), and the notifier delivers the signal once Temporal answers again."""
    await harness.register()
    assignment = await harness.leased_attempt()
    harness.sink.hang = True

    answer = await harness.report(assignment, SUCCEEDED, 1, settle=False)

    assert answer.accepted
    await within_deadline(harness.sink.hanging.wait(), "the signal to be under way")
    assert harness.sink.calls == []
    assert (await harness.attempt(assignment.attempt_id)).status == AttemptState.SUCCEEDED.value
    harness.sink.release.set()
    await within_deadline(harness.service.settle(), "the signal to go out")
    expected = (harness.execution_id, AttemptFinished(assignment.attempt_id, "SUCCEEDED", ""))
    assert harness.sink.calls == [expected]
    assert await harness.notifier.deliver_pending() == 0  # once


# --- reconciliation: lost attempts and attempts to stop -----------------------------------------


async def _lost_events(harness: Harness) -> list[str]:
    return [event.attempt_id for _, event in harness.sink.calls if event.status == "LOST"]


async def test_a_restarted_agent_that_runs_nothing_loses_what_it_held(harness: Harness) -> None:
    await harness.register()
    assignment = await harness.leased_attempt()
    await harness.report(assignment, RUNNING, 1)
    # The agent process died with its task and comes back running nothing.
    await harness.register()
    attempt = await harness.attempt(assignment.attempt_id)
    assert attempt.status == AttemptState.LOST.value
    assert "no longer runs it" in (attempt.error_message or "")
    assert await _lost_events(harness) == [assignment.attempt_id]
    # Its late result is ignored.
    late = await harness.report(assignment, SUCCEEDED, 2)
    assert not late.accepted
    assert (await harness.attempt(assignment.attempt_id)).status == AttemptState.LOST.value


async def test_a_reconnecting_agent_keeps_what_it_still_runs(harness: Harness) -> None:
    await harness.register()
    assignment = await harness.leased_attempt()
    await harness.report(assignment, RUNNING, 1)
    running = agent_pb2.RunningAttempt(
        attempt_id=assignment.attempt_id, fencing_token=assignment.fencing_token
    )
    response = await harness.stub.Register(
        agent_pb2.RegisterRequest(agent_version="9.9.9", running=[running]),
        metadata=bearer(TOKEN),
    )
    assert list(response.stop_attempt_ids) == []
    assert (await harness.attempt(assignment.attempt_id)).status == AttemptState.RUNNING.value
    assert await _lost_events(harness) == []
    # A stale fencing token (the attempt was leased again since) must be stopped.
    stale = agent_pb2.RunningAttempt(
        attempt_id=assignment.attempt_id, fencing_token=assignment.fencing_token - 1
    )
    response = await harness.stub.Register(
        agent_pb2.RegisterRequest(agent_version="9.9.9", running=[stale]), metadata=bearer(TOKEN)
    )
    assert list(response.stop_attempt_ids) == [assignment.attempt_id]


async def test_a_lease_that_never_reached_the_agent_is_lost_after_the_grace(
    harness: Harness,
) -> None:
    await harness.register()
    assignment = await harness.leased_attempt()
    heartbeat = agent_pb2.HeartbeatRequest(running_attempt_ids=[])
    # Just leased: the answer may still be on its way to the agent.
    await harness.stub.Heartbeat(heartbeat, metadata=bearer(TOKEN))
    assert (await harness.attempt(assignment.attempt_id)).status == AttemptState.LEASED.value

    def age_lease(session: Session) -> None:
        session.execute(
            update(TaskAttempt)
            .where(TaskAttempt.id == assignment.attempt_id)
            .values(leased_at=utcnow() - timedelta(hours=1))
        )

    await harness.db(age_lease)
    await harness.stub.Heartbeat(heartbeat, metadata=bearer(TOKEN))
    assert (await harness.attempt(assignment.attempt_id)).status == AttemptState.LOST.value
    assert await _lost_events(harness) == [assignment.attempt_id]


async def test_attempts_of_a_silent_cluster_are_lost(harness: Harness) -> None:
    await harness.register()
    assignment = await harness.leased_attempt()

    def silence(session: Session) -> list[str]:
        session.execute(
            update(Cluster)
            .where(Cluster.id == harness.cluster_id)
            .values(last_heartbeat_at=utcnow() - timedelta(minutes=5))
        )
        return attempts_repo.lose_attempts_of_silent_clusters(session, grace=timedelta(seconds=30))

    assert await harness.db(silence) == [assignment.attempt_id]
    assert await harness.notifier.deliver_pending() == 1
    assert await _lost_events(harness) == [assignment.attempt_id]
    # Nothing more to lose on the next round.
    assert await harness.db(silence) == []
