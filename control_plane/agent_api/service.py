"""AgentService: agents register, heartbeat, long-poll for attempts and report status.

Database work is synchronous SQLAlchemy run in worker threads, so a long-poll never blocks the
event loop. A finished attempt is committed first and then delivered to its Temporal workflow
through the `FinishNotifier` outbox, which retries until delivery succeeds. Register and
Heartbeat reconcile what the agent runs with what it holds: what it lost runs again elsewhere,
what it must not run it is told to stop. `LeaseAttempts` only leases what the scheduler
(`control_plane/scheduling/scheduler.py`) already assigned to the caller's cluster; the calls
that may let waiting attempts start wake the scheduler.

Every call is authenticated by the cluster's token, which says which cluster calls. Deciding an
attempt's result takes more: each lease carries a fresh report secret (the attempt row keeps
only its SHA-256), and a report is refused without it (`ReportStatus`: PERMISSION_DENIED;
`ReportStatuses`, an agent's batch: that report alone, in its outcome), so whoever
else holds the cluster token (another agent process, a leaked copy) cannot report an attempt
leased to the agent that runs it. Register and Heartbeat need no secret: the attempts they list
are only kept from being marked LOST, never moved or given a result (see `Register`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import threading
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple, TypeVar
from typing import cast as typed

import grpc
from sqlalchemy import Table, bindparam, select
from sqlalchemy.orm import Session, sessionmaker

from control_plane.agent_api.limits import peer_address
from control_plane.agent_api.mapping import (
    UnleasableAttemptError,
    assignment_from_attempt,
    attempt_state_from_proto,
    capacity_to_dict,
    input_blobs,
    takes_blobs,
)
from control_plane.auth.throttle import AuthLockout
from control_plane.blob_layout import bundle_key
from control_plane.db.models import Cluster, Execution, TaskAttempt, Tenant, WorkflowVersion, utcnow
from control_plane.db.repositories import attempts as attempts_repo
from control_plane.db.repositories import clusters as clusters_repo
from control_plane.db.repositories import dynamic_tasks
from control_plane.db.repositories import secrets as secrets_repo
from control_plane.db.repositories.clusters import ClusterRef
from control_plane.db.session import retry_transient, transaction
from control_plane.metrics import observe_dispatch
from control_plane.parsed_specs import InvalidStoredSpecError, ParsedSpecs
from control_plane.secrets_crypto import SecretBox, SecretDecryptError
from control_plane.services.finish_notifier import FinishNotifier
from control_plane.services.lineage import AttemptLineage
from control_plane.services.tenant_blobs import Refused, TenantBlobs
from control_plane.settings import GrpcSettings, heartbeat_grace
from fleetflow.agent.v1 import agent_pb2 as pb
from fleetflow.agent.v1 import agent_pb2_grpc
from fleetflow.logs import log_context
from fleetflow.secrets import env_var as secret_env_var
from fleetflow.states import AttemptState
from fleetflow.storage import BlobNotFoundError, BlobStore
from fleetflow.timestamps import as_utc

log = logging.getLogger(__name__)

_T = TypeVar("_T")


def _refusal(readable: TenantBlobs) -> Callable[[str], str | None]:
    """`TenantBlobs.check` as `input_blobs` asks for it: why not, or None."""

    def check(uri: str) -> str | None:
        try:
            readable.check(uri)
        except Refused:
            return "is not its tenant's to read"
        return None

    return check


# Upper bound on how long a long-poll waits between database checks when no in-process
# wake-up arrives (e.g. the scheduler of another process assigned the attempt).
_RECHECK_SECONDS = 1.0


_ENDED_HERE = frozenset({AttemptState.CANCELLED.value, AttemptState.PREEMPTED.value})
"""Terminal states the control plane sets itself; its agent's later report is refused quietly."""

MAX_REPORTS_PER_CALL = 64
"""The most reports one `ReportStatuses` call may carry (an agent's batch is at most that)."""


class _Applied(NamedTuple):
    """One report of a call, as applied: its outcome, or (None) why it was refused."""

    request: pb.ReportStatusRequest
    state: AttemptState | None
    outcome: attempts_repo.ReportOutcome | None
    refusal: str = ""


def _bad_state(state: int) -> str:
    return f"state {state} is not one an agent may report"


class Leased(NamedTuple):
    """One lease pass: what goes to the agent, how many attempts failed instead, and when
    each leased attempt was created and leased (observed once committed)."""

    assignments: list[pb.Assignment]
    refused: int
    waits: list[tuple[datetime, datetime]]


class AttemptsReady:
    """Wakes long-polling leases when attempts were assigned, and hands a pass's assignments
    to the polls waiting for them (`lease_waiting`); safe to call from any thread."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiters: set[asyncio.Event] = set()
        # Counts wake-ups (on the loop), so a waiter can tell it missed one.
        self._generation = 0
        self._offers: list[_Offer] = []  # the waiting polls' (guarded by `_lock`)
        self._lock = threading.Lock()
        self._lease: Callable[[Session, ClusterRef, int], Leased] | None = None

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def lease_with(self, lease: Callable[[Session, ClusterRef, int], Leased]) -> None:
        """How a pass leases for a waiting poll (the agent service's `_lease`)."""
        self._lease = lease

    def notify(self) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._wake_all)

    @property
    def generation(self) -> int:
        """Read it before checking for work; pass it to `wait` as `since`."""
        return self._generation

    def _wake_all(self) -> None:
        self._generation += 1
        for event in self._waiters:
            event.set()

    async def wait(self, timeout: float, since: int | None = None) -> None:
        """Wait for the next wake-up, at most `timeout` seconds.

        Returns at once when a wake-up came after `since` was read: one that arrived while the
        caller was checking for work would otherwise be lost until the next recheck.
        """
        if since is not None and since != self._generation:
            return
        event = asyncio.Event()
        self._waiters.add(event)
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except TimeoutError:
            pass
        finally:
            self._waiters.discard(event)

    def offer(self, caller: ClusterRef, max_attempts: int) -> _Offer:
        """A poll about to wait: a pass that assigns attempts leases for it meanwhile. End
        every offer with `settle`."""
        offer = _Offer(caller, max_attempts)
        with self._lock:
            self._offers.append(offer)
        return offer

    async def settle(self, offer: _Offer) -> Leased | None:
        """Withdraw the offer: None when no pass leased for it (the poll leases itself), else
        what a pass leased for it, once committed."""
        while True:
            with self._lock:
                if offer.state == "open":
                    self._offers.remove(offer)
                    offer.state = "withdrawn"
                if offer.state == "withdrawn":
                    return None
                if offer.state == "done":
                    return offer.leased
            try:
                await offer.changed.wait()  # a pass is leasing for it
            except BaseException:
                self.abandon(offer)
                raise
            offer.changed.clear()

    def abandon(self, offer: _Offer) -> None:
        """The offer's poll is gone (cancelled): no pass may lease for it any more, nor a pass
        that fails reopen it."""
        with self._lock:
            if offer.state == "open":
                self._offers.remove(offer)
                offer.state = "withdrawn"
            elif offer.state == "taken":
                offer.state = "abandoned"

    def lease_waiting(self, session: Session) -> _Handoff | None:
        """In a pass's transaction, after it assigned attempts: lease what is assigned to each
        waiting poll's cluster, for that poll. The scheduler hands the result over once the
        transaction committed (`_Handoff.deliver`), or gives the polls back their offers
        (`_Handoff.release`)."""
        lease = self._lease
        if lease is None or self._loop is None:
            return None
        with self._lock:
            taken, self._offers = self._offers, []
            for offer in taken:
                offer.state = "taken"
        if not taken:
            return None
        handoff = _Handoff(self, taken)
        try:
            for offer in taken:
                with log_context(cluster=offer.caller.name):
                    offer.leased = lease(session, offer.caller, offer.max_attempts)
        except BaseException:
            handoff.release()
            raise
        return handoff

    def _reopen(self, offers: list[_Offer]) -> None:
        """Offers a failed pass took: open again, for the next pass, those whose polls still
        wait (an abandoned one's poll is gone: no pass may lease for it)."""
        assert self._loop is not None
        with self._lock:
            waiting = [offer for offer in offers if offer.state != "abandoned"]
            for offer in offers:
                offer.state = "open" if offer in waiting else "withdrawn"
                offer.leased = None
            self._offers.extend(waiting)
        for offer in offers:
            self._loop.call_soon_threadsafe(offer.changed.set)


@dataclass(eq=False)
class _Offer:
    """A waiting poll's: `open` (a pass may take it), `taken` (a pass is leasing for it),
    `done` (what it leased is committed: `leased`), `withdrawn` by the poll, or `abandoned`:
    the poll went (cancelled) while a pass was leasing for it."""

    caller: ClusterRef
    max_attempts: int
    state: str = "open"
    leased: Leased | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)


class _Handoff:
    """What one pass leased for the waiting polls: delivered once committed, else dropped and
    the offers opened again."""

    def __init__(self, ready: AttemptsReady, offers: list[_Offer]) -> None:
        self._ready = ready
        self._offers = offers

    def deliver(self) -> None:
        """On the loop, after the commit: each poll takes its leases."""
        for offer in self._offers:
            offer.state = "done"
            offer.changed.set()

    def release(self) -> None:
        """From the pass's thread, when its transaction failed: nothing is handed over."""
        self._ready._reopen(self._offers)


_EXECUTIONS = typed(Table, Execution.__table__)
_TENANTS = typed(Table, Tenant.__table__)
_VERSIONS = typed(Table, WorkflowVersion.__table__)
# What a lease needs of its attempt's execution: its tenant (and its name), its workflow
# version and the version's code bundle. Built once, on the tables: every lease reads it.
_LEASE_SOURCES = (
    select(
        _EXECUTIONS.c.tenant_id,
        _TENANTS.c.name,
        _EXECUTIONS.c.workflow_spec_id,
        _VERSIONS.c.bundle_digest,
    )
    .join(_TENANTS, _TENANTS.c.id == _EXECUTIONS.c.tenant_id)
    .join(_VERSIONS, _VERSIONS.c.id == _EXECUTIONS.c.workflow_spec_id)
    .where(_EXECUTIONS.c.id == bindparam("execution_id"))
)


class AgentService(agent_pb2_grpc.AgentServiceServicer):
    def __init__(
        self,
        session_factory: sessionmaker[Session],
        blob_store: BlobStore,
        notifier: FinishNotifier,
        *,
        attempts_ready: AttemptsReady,
        max_lease_wait_seconds: int,
        heartbeat_interval_seconds: int,
        on_capacity_freed: Callable[[], None] = lambda: None,
        on_attempt_succeeded: Callable[[str, str, str], object] = lambda *_attempt: None,
        lockout: AuthLockout | None = None,
        secret_box: SecretBox | None = None,
    ) -> None:
        """`attempts_ready` wakes the long polls after the scheduler assigned attempts;
        `on_capacity_freed` wakes the scheduler (`Scheduler.wake_soon`) after a committed change
        that may let waiting attempts start: an agent registered or heartbeated (capacity),
        attempts finished, were lost or could not be leased. `on_attempt_succeeded` gets the
        id, execution and node of an attempt whose SUCCEEDED report was committed and whose
        successors may start ahead (`starts_successors_ahead`: never a map's element), in a
        worker thread, before the workflow is signalled (`ExecutionActivities.start_successors`);
        it must not raise.
        `secret_box` decrypts the tenant secrets tasks name, into their leases only (None: an
        attempt of a task with secrets cannot be leased)."""
        self._sessions = session_factory
        self._secret_box = secret_box
        self._lockout = lockout if lockout is not None else GrpcSettings().auth_lockout()
        self._blobs = blob_store
        self._notifier = notifier
        self._ready = attempts_ready
        attempts_ready.lease_with(self._lease)  # a pass leases for the polls waiting here
        self._max_wait = max_lease_wait_seconds
        self._heartbeat_interval = heartbeat_interval_seconds
        self._on_capacity_freed = on_capacity_freed
        self._on_attempt_succeeded = on_attempt_succeeded
        self._background: set[asyncio.Task[None]] = set()  # see `_in_background`
        # Whether a report was taken without a secret yet (an attempt leased before secrets).
        self._warned_without_secret = False
        self._specs = ParsedSpecs()
        self._lineage = AttemptLineage(blob_store, self._specs)

    @property
    def heartbeat_grace(self) -> timedelta:
        return heartbeat_grace(self._heartbeat_interval)

    async def _authenticate(self, context: grpc.aio.ServicerContext) -> ClusterRef:
        """Return the cluster whose token the call carries, or abort: UNAUTHENTICATED for a
        missing or invalid token, RESOURCE_EXHAUSTED while the caller's address is locked out
        after too many invalid ones (whatever token it sends then)."""
        caller, _ = await self._authenticated(context, lambda session, caller: None)
        return caller

    async def _authenticated(
        self, context: grpc.aio.ServicerContext, work: Callable[[Session, ClusterRef], _T]
    ) -> tuple[ClusterRef, _T]:
        """`_authenticate`, then `work` in the same transaction and thread hop, only once the
        caller is known; its result. The hot calls (lease, reports) take one hop and one
        transaction each instead of two."""
        address = peer_address(context.peer())
        token = ""
        for key, value in context.invocation_metadata() or ():
            if key == "authorization" and isinstance(value, str) and value.startswith("Bearer "):
                token = value.removeprefix("Bearer ").strip()

        # One thread hop for all: the lockout may live in the database (shared by replicas).
        def lookup() -> tuple[float, tuple[ClusterRef, _T] | None]:
            locked = self._lockout.locked_for(address)
            if locked > 0 or not token:
                return locked, None
            with transaction(self._sessions) as session:
                caller = clusters_repo.cluster_for_token(session, token)
                return 0.0, None if caller is None else (caller, work(session, caller))

        locked, done = await asyncio.to_thread(retry_transient, lookup)
        if locked > 0:
            await self._abort_locked_out(context, locked)
        if not token:
            log.warning("refused an agent call from %s: missing bearer token", context.peer())
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing bearer token")
        if done is None:
            log.warning("refused an agent call from %s: invalid agent token", context.peer())
            locked = await asyncio.to_thread(self._lockout.record_failure, address)
            if locked > 0:
                await self._abort_locked_out(context, locked)
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "invalid agent token")
        assert done is not None
        return done

    @staticmethod
    async def _abort_locked_out(context: grpc.aio.ServicerContext, seconds: float) -> None:
        await context.abort(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "too many invalid agent tokens from this address: authentication is suspended "
            f"for {max(1, math.ceil(seconds))} s",
        )

    async def Register(  # noqa: N802 (gRPC method names)
        self, request: pb.RegisterRequest, context: grpc.aio.ServicerContext
    ) -> pb.RegisterResponse:
        """Record the agent and reconcile what it runs with what its cluster holds.

        The running list carries attempt ids and fencing tokens but no report secrets, on
        purpose: listing an attempt never changes it or gives it a result, it only keeps it
        from being marked LOST, and a listed attempt that is not the cluster's to run (or not
        under that fencing token) is only told to stop. What a caller with the cluster token
        alone can do here (leave attempts out, so that they are lost and run again) no secret
        could prevent: it is an absence. After the agent's own restart its secrets are gone
        with its memory, so asking for them here would also fail the attempts it adopts.
        """
        cluster_id, _ = await self._authenticate(context)

        running: dict[str, int | None] = {r.attempt_id: r.fencing_token for r in request.running}

        def register() -> tuple[str, list[str], list[attempts_repo.StopOrder]]:
            with transaction(self._sessions) as session:
                cluster = session.get_one(Cluster, cluster_id)
                clusters_repo.record_heartbeat(
                    session,
                    cluster,
                    capacity=capacity_to_dict(request.capacity),
                    agent_version=request.agent_version or None,
                    labels=dict(request.labels),
                )
                # A (re)started agent runs exactly what it reports: anything else it held is
                # lost with its previous process and runs again elsewhere.
                lost, stop = attempts_repo.reconcile_running(
                    session, cluster, running, leased_before=utcnow()
                )
                return cluster.name, lost, stop

        name, lost, stop = await asyncio.to_thread(retry_transient, register)
        self._on_capacity_freed()  # a cluster (back) online, with what it reported free
        log.info("agent registered for cluster %s (version %s)", name, request.agent_version)
        if lost:
            log.warning("cluster %s's agent no longer runs %s: lost", name, lost)
            await self._notifier.deliver_pending()
        return pb.RegisterResponse(
            cluster_name=name,
            heartbeat_interval_seconds=self._heartbeat_interval,
            stop_attempt_ids=[order.attempt_id for order in stop],
            stop_attempts=_stop_attempts(stop),
        )

    async def Heartbeat(  # noqa: N802
        self, request: pb.HeartbeatRequest, context: grpc.aio.ServicerContext
    ) -> pb.HeartbeatResponse:
        """Record liveness and capacity; reconcile as `Register` does, after the grace.

        No report secrets, for `Register`'s reasons: the running ids only keep attempts from
        being lost, and a pending reason is a note for people, not a state.
        """
        cluster_id, _ = await self._authenticate(context)
        running: dict[str, int | None] = dict.fromkeys(request.running_attempt_ids)

        def heartbeat() -> tuple[list[str], list[attempts_repo.StopOrder]]:
            with transaction(self._sessions) as session:
                cluster = session.get_one(Cluster, cluster_id)
                clusters_repo.record_heartbeat(
                    session,
                    cluster,
                    capacity=capacity_to_dict(request.capacity, draining=request.draining),
                )
                # Why held attempts have not started (level-triggered: unlisted means none).
                reasons = {p.attempt_id: p.reason for p in request.pending_attempts}
                for held in attempts_repo.held_attempts(session, cluster.id):
                    reason = reasons.get(held.id) or None
                    if held.pending_reason != reason:
                        held.pending_reason = reason
                # A lease answer that never reached the agent (deadline, dropped connection)
                # leaves an attempt it does not run; after the grace it is lost.
                return attempts_repo.reconcile_running(
                    session, cluster, running, leased_before=utcnow() - self.heartbeat_grace
                )

        lost, stop = await asyncio.to_thread(retry_transient, heartbeat)
        self._on_capacity_freed()  # what the agent reported free, and what it lost
        if lost:
            await self._notifier.deliver_pending()
        return pb.HeartbeatResponse(
            stop_attempt_ids=[order.attempt_id for order in stop],
            stop_attempts=_stop_attempts(stop),
        )

    def _assignment(
        self, session: Session, lease: attempts_repo.Lease, sources: dict[str, Any]
    ) -> pb.Assignment:
        """The lease's message; `sources`: what the pass read of each execution so far."""
        attempt = lease.attempt
        # Columns, not the rows: the execution's inputs (a map's whole list) and the version's
        # stored spec are JSON decoded on every load, and a lease needs neither (the spec is
        # parsed once per version). At 1,500 elements they were a quarter of the control
        # plane's CPU in a fan-out. Read once per execution in a pass (a map's attempts share
        # theirs).
        found = sources.get(attempt.execution_id)
        if found is None:
            found = sources[attempt.execution_id] = session.execute(
                _LEASE_SOURCES, {"execution_id": attempt.execution_id}
            ).one()
        tenant_id, tenant_name, spec_id, digest = found
        try:
            spec = self._specs.get(session, spec_id)
        except InvalidStoredSpecError as exc:
            raise UnleasableAttemptError(f"its workflow spec is invalid: {exc.problems}") from None
        bundle_uri = self._blobs.uri(bundle_key(tenant_name, digest))
        task = spec.tasks.get(attempt.task_name)
        if task is None:  # a task of a dynamic task's sub-DAG
            found = dynamic_tasks.find(session, spec_id, [attempt.task_name])
            task = found.get(attempt.task_name)
            if task is not None:
                spec = spec.model_copy(update={"tasks": {**spec.tasks, task.name: task}})
        blobs = []
        if task is not None and takes_blobs(task):
            blobs = input_blobs(
                self._inputs_document(attempt),
                task,
                _refusal(TenantBlobs(session, session.get_one(Tenant, tenant_id), self._blobs)),
            )
        return assignment_from_attempt(
            attempt,
            spec,
            tenant=tenant_name,
            bundle_uri=bundle_uri,
            report_secret=lease.report_secret,
            input_blobs=blobs,
            secrets=self._task_secrets(session, tenant_id, task.secrets if task else []),
        )

    def _task_secrets(
        self, session: Session, tenant_id: str, names: Sequence[str]
    ) -> list[pb.TaskSecret]:
        """The secrets `names` of the attempt's own tenant, for its lease (and nowhere else)."""
        if not names:
            return []
        if self._secret_box is None:
            raise UnleasableAttemptError("its task names secrets and this control plane has no key")
        try:
            found = secrets_repo.secrets_for_task(
                session, self._secret_box, tenant_id, names, [secret_env_var(n) for n in names]
            )
        except (secrets_repo.MissingSecretsError, SecretDecryptError) as exc:
            raise UnleasableAttemptError(str(exc)) from None
        return [
            pb.TaskSecret(
                name=secret.name,
                env_var=secret.env_var,
                value=secret.value or "",
                kubernetes_secret=secret.kubernetes_secret,
                kubernetes_key=secret.kubernetes_key,
            )
            for secret in found
        ]

    def _inputs_document(self, attempt: TaskAttempt) -> Any:
        try:
            return json.loads(self._blobs.get(attempt.inputs_uri))
        except (BlobNotFoundError, ValueError) as exc:
            raise UnleasableAttemptError(f"its inputs document cannot be read: {exc}") from None

    def _lease(self, session: Session, caller: ClusterRef, max_attempts: int) -> Leased:
        leases = attempts_repo.lease_attempts(session, caller.id, max_attempts)
        assignments = []
        refused = 0
        sources: dict[str, Any] = {}
        for lease in leases:
            try:
                assignments.append(self._assignment(session, lease, sources))
            except UnleasableAttemptError as exc:
                # This attempt fails on its own; the others on the cluster still lease.
                with log_context(cluster=caller.name):
                    self._fail_unleasable(session, lease.attempt, str(exc))
                refused += 1
        waits = [
            (as_utc(a.created_at), as_utc(a.leased_at))
            for a, _ in leases
            if a.leased_at is not None and a.status == AttemptState.LEASED.value
        ]
        return Leased(assignments, refused, waits)

    def _lease_again(self, caller: ClusterRef, max_attempts: int) -> Leased:
        """`_lease` in a transaction of its own (a long poll woken after its first look)."""
        with transaction(self._sessions) as session:
            return self._lease(session, caller, max_attempts)

    @staticmethod
    def _fail_unleasable(session: Session, attempt: TaskAttempt, reason: str) -> None:
        message = f"attempt {attempt.id} of node {attempt.node_id} cannot be leased: {reason}"
        with log_context(execution_id=attempt.execution_id, attempt_id=attempt.id):
            log.error("%s", message)
        attempts_repo.move_attempt(session, attempt, AttemptState.FAILED, error_message=message)

    async def LeaseAttempts(  # noqa: N802
        self, request: pb.LeaseAttemptsRequest, context: grpc.aio.ServicerContext
    ) -> pb.LeaseAttemptsResponse:
        max_attempts = min(max(request.max_attempts, 1), 100)
        wait = min(max(request.wait_seconds, 0), self._max_wait)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        seen = self._ready.generation
        # The first look in the authentication's own transaction.
        caller, leased = await self._authenticated(
            context, lambda session, caller: self._lease(session, caller, max_attempts)
        )
        cluster_name = caller.name
        while True:
            assignments, refused, waits = leased
            # Committed: these attempts are dispatched.
            for created_at, leased_at in waits:
                observe_dispatch(created_at, leased_at)
            if refused:
                # Committed as FAILED: their workflows hear it now, and their capacity is free.
                self._on_capacity_freed()
                await self._notifier.deliver_pending()
            remaining = deadline - loop.time()
            if assignments or remaining <= 0 or context.done():
                for a in assignments:
                    with log_context(
                        cluster=cluster_name,
                        execution_id=a.execution_id,
                        node_id=a.node_id,
                        attempt_id=a.attempt_id,
                    ):
                        log.info(
                            "leased attempt %s (node %s) to %s",
                            a.attempt_id,
                            a.node_id,
                            cluster_name,
                        )
                return pb.LeaseAttemptsResponse(assignments=assignments)
            offer = self._ready.offer(caller, max_attempts)
            try:
                await self._ready.wait(min(remaining, _RECHECK_SECONDS), since=seen)
            except BaseException:  # cancelled: the poll is gone
                self._ready.abandon(offer)
                raise
            finally:
                # Leased by a pass meanwhile: taken, committed (if cancelled here, as a lost
                # answer: the heartbeats' reconciliation finds them lost).
                handed = await self._ready.settle(offer)
            seen = self._ready.generation
            leased = (
                handed
                if handed is not None
                else await asyncio.to_thread(
                    retry_transient, lambda: self._lease_again(caller, max_attempts)
                )
            )

    async def ReportStatus(  # noqa: N802
        self, request: pb.ReportStatusRequest, context: grpc.aio.ServicerContext
    ) -> pb.ReportStatusResponse:
        """Apply one report of the agent holding the attempt's lease.

        Beyond the cluster token, the report must carry the lease's report secret (see
        `attempts_repo.apply_report`): without it, or with another, the call fails with
        PERMISSION_DENIED, a message naming the attempt (never the secret sent), and nothing
        written. An attempt leased before the control plane issued secrets has none to check:
        its reports are taken on the cluster and fencing tokens alone, as before, so an
        upgrade with attempts in flight loses none of their results; the first such report
        is logged.
        """
        if attempt_state_from_proto(request.state) is None:
            await self._authenticate(context)  # a stranger learns nothing of the states
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, _bad_state(request.state))
        caller, [applied] = await self._authenticated(
            context, lambda session, caller: self._apply_reports(session, caller, [request])
        )
        self._after_reports(caller, [applied], context.peer())
        if applied.outcome is None:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, applied.refusal)
        assert applied.outcome is not None
        return pb.ReportStatusResponse(
            accepted=applied.outcome.accepted, reason=applied.outcome.reason
        )

    async def ReportStatuses(  # noqa: N802
        self, request: pb.ReportStatusesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ReportStatusesResponse:
        """Apply several reports of the agent's leases in one transaction, each checked as
        `ReportStatus` checks it; one it would refuse is refused alone, in its outcome.

        An agent's reports come two per attempt, and a fan-out's in bursts: one call, one
        token lookup, one thread hop and one commit for a burst, instead of one of each per
        report, and one placement pass for the capacity they free together."""
        count = len(request.reports)
        if count > MAX_REPORTS_PER_CALL:
            await self._authenticate(context)
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"{count} reports in one call; at most {MAX_REPORTS_PER_CALL}: send the rest "
                "in another",
            )
        reports = list(request.reports)
        caller, applied = await self._authenticated(
            context, lambda session, caller: self._apply_reports(session, caller, reports)
        )
        self._after_reports(caller, applied, context.peer())
        return pb.ReportStatusesResponse(
            outcomes=[
                pb.ReportOutcome(refused=True, reason=a.refusal)
                if a.outcome is None
                else pb.ReportOutcome(accepted=a.outcome.accepted, reason=a.outcome.reason)
                for a in applied
            ]
        )

    def _apply_reports(
        self, session: Session, caller: ClusterRef, requests: list[pb.ReportStatusRequest]
    ) -> list[_Applied]:
        """Apply `requests` in order, in the caller's transaction (`_authenticated`'s)."""
        applied = []
        for request in requests:
            with log_context(cluster=caller.name, attempt_id=request.attempt_id):
                applied.append(self._apply_report(session, caller, request))
        return applied

    def _after_reports(self, caller: ClusterRef, applied: list[_Applied], peer: str) -> None:
        """Once the reports are committed: log each, and start what follows the attempts they
        finished (in the background: the agent hears at once)."""
        finished = False
        ahead: list[tuple[str, str, str]] = []
        for one in applied:
            self._log_report(caller, one, peer)
            if one.outcome is not None and one.outcome.finished:
                finished = True
                attempt = one.outcome.attempt
                if attempt is not None and attempts_repo.starts_successors_ahead(attempt):
                    ahead.append((attempt.id, attempt.execution_id, attempt.node_id))
        if finished:
            # Committed: the agent hears so now. What follows needs no answer from it, and
            # the agent's next report should not wait for Temporal.
            self._in_background(self._after_finish(ahead))

    def _apply_report(
        self, session: Session, caller: ClusterRef, request: pb.ReportStatusRequest
    ) -> _Applied:
        state = attempt_state_from_proto(request.state)
        if state is None:
            return _Applied(request, None, None, _bad_state(request.state))
        try:
            outcome = attempts_repo.apply_report(
                session,
                caller.id,
                attempt_id=request.attempt_id,
                fencing_token=request.fencing_token,
                report_secret=request.report_secret,
                state=state,
                sequence=request.sequence,
                message=request.message,
                traceback=request.error_traceback,
                observed_at=_observed_at(request),
            )
        except attempts_repo.ReportNotAuthorizedError as exc:
            return _Applied(request, state, None, str(exc))  # nothing was written for it
        if outcome.finished and state is AttemptState.SUCCEEDED and outcome.attempt:
            # Committed with the result: a succeeded attempt has its artifacts.
            self._lineage.record(session, outcome.attempt)
        return _Applied(request, state, outcome)

    def _log_report(self, caller: ClusterRef, applied: _Applied, peer: str) -> None:
        request, state, outcome = applied.request, applied.state, applied.outcome
        if outcome is None or state is None:
            with log_context(cluster=caller.name, attempt_id=request.attempt_id):
                log.warning("%s (from cluster %s, %s)", applied.refusal, caller.name, peer)
            return
        if outcome.without_secret and outcome.accepted and not self._warned_without_secret:
            self._warned_without_secret = True
            log.warning(
                "accepted a report for attempt %s without a report secret: it was leased "
                "before the control plane issued them (checked by cluster and fencing token "
                "only; logged once)",
                request.attempt_id,
            )
        attempt = outcome.attempt
        with log_context(
            cluster=caller.name,
            execution_id=attempt.execution_id if attempt else None,
            node_id=attempt.node_id if attempt else None,
            attempt_id=request.attempt_id,
        ):
            if outcome.finished:
                log.info("attempt %s finished: %s", request.attempt_id, state.value)
            elif not outcome.accepted:
                # An attempt the control plane ended (cancelled, preempted) is then stopped by
                # its agent, which reports how it ended: expected, not worth a warning.
                expected = attempt is not None and attempt.status in _ENDED_HERE and state.terminal
                (log.info if expected else log.warning)(
                    "rejected report for %s: %s", request.attempt_id, outcome.reason
                )

    async def _after_finish(self, succeeded: list[tuple[str, str, str]]) -> None:
        """After attempts finished: `succeeded` are those whose successors may start ahead
        (`attempts_repo.starts_successors_ahead`), as (attempt, execution, node)."""
        try:
            if succeeded:
                # The next nodes are placed now, not after the workflow heard of it.
                await asyncio.to_thread(self._start_successors, succeeded)
        finally:
            # Their capacity and their tenants' quota are free: the scheduler places again
            # now, once the next nodes exist, so that one pass places them and whatever else
            # the freed capacity lets in (a wake-up before them ran a pass that found nothing).
            self._on_capacity_freed()
            # Delivered now; if that fails, the notifier's loop delivers it later.
            self._notifier.deliver_soon()

    def _start_successors(self, succeeded: list[tuple[str, str, str]]) -> None:
        """`on_attempt_succeeded` for each; one failing (logged) does not keep the others'."""
        for attempt_id, execution_id, node_id in succeeded:
            try:
                self._on_attempt_succeeded(attempt_id, execution_id, node_id)
            except Exception:
                log.exception("starting what follows attempt %s failed", attempt_id)

    def _in_background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background_done)

    def _background_done(self, task: asyncio.Task[None]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("work after a report failed", exc_info=task.exception())

    async def settle(self) -> None:
        """Until the work the reports left in the background is done, the workflows'
        signals included (tests, and a graceful stop)."""
        while self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        await self._notifier.settle()


def _stop_attempts(orders: list[attempts_repo.StopOrder]) -> list[pb.StopAttempt]:
    """Stop orders as the protocol carries them (no grace: the agent's own, as for a cancel)."""
    return [
        pb.StopAttempt(attempt_id=o.attempt_id, reason=o.reason, grace_seconds=o.grace_seconds)
        if o.grace_seconds is not None
        else pb.StopAttempt(attempt_id=o.attempt_id, reason=o.reason)
        for o in orders
    ]


def _observed_at(request: pb.ReportStatusRequest) -> datetime | None:
    """When the agent saw the change; None where it did not say (an older agent), or said a
    time no datetime holds (then the report is stamped on arrival, as before)."""
    if not request.HasField("observed_at"):
        return None
    try:
        return request.observed_at.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError):
        return None
