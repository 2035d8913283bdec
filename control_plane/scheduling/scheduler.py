"""The scheduler: placement passes, and the one service that runs them.

A pass (`place_pending_attempts`) assigns PENDING attempts to clusters, using the snapshot
(`scheduling/snapshot.py`), quota and fair-share admission (`placement/admission.py`,
`control_plane.quota`) and the pure policy (`placement/policy.py`). `Scheduler` runs passes in
one loop per process, woken in-process when attempts become ready or capacity is freed, and on
a periodic tick for what other processes did (a worker and an API process may be separate).
After a pass that assigned something it wakes the long-polling leases, which then only lease
what is already assigned to their cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from control_plane.db.models import Cluster, TaskAttempt, TenantQuota
from control_plane.db.repositories import tenancy
from control_plane.db.repositories.attempts import assign_pending
from control_plane.db.repositories.executions import admit_execution
from control_plane.db.session import retry_transient, transaction
from control_plane.placement.admission import (
    Load,
    allowed_gpu_types,
    dominant_share,
    fair_order,
    gpu_type_problem,
    quota_problem,
)
from control_plane.placement.capacity import Usage
from control_plane.placement.policy import NO_FIT, Decision, Strategy, place
from control_plane.quota import limits_of, tenant_loads
from control_plane.scheduling.snapshot import (
    WaitingAttempt,
    cluster_totals,
    has_waiting_attempts,
    placement_candidates,
    task_resources,
    waiting_attempts,
)
from fleetflow.states import AttemptState

log = logging.getLogger(__name__)

A = AttemptState

_MAX_REASON = 500


def _no_fit_reason(decision: Decision, granted: int) -> str:
    if not granted:
        return "no cluster is granted to the tenant (fleetflow admin clusters grant TENANT NAME)"
    why = "; ".join(f"{name}: {reason}" for name, reason in decision.excluded.items())
    reason = f"no capacity: {why or 'no cluster is online'}"
    return reason if len(reason) <= _MAX_REASON else reason[: _MAX_REASON - 1] + "…"


def place_pending_attempts(
    session: Session,
    *,
    heartbeat_grace: timedelta,
    only_cluster: Cluster | None = None,
    strategy: Strategy = Strategy.SPREAD,
) -> int:
    """Assign PENDING attempts to online clusters they fit on, within their tenants' quotas.

    Waiting attempts are offered in fair-share order (`placement/admission.py`: the tenant with
    the smallest dominant share first, then by execution priority and age). Each must fit its
    tenant's quota, then `control_plane.placement` chooses among the clusters granted to the
    tenant: the task's required labels, acceptable GPU types (the first that fits somewhere now
    and that the tenant's per-type quota allows), free GPUs, CPU and memory filter the
    clusters, and `strategy` scores the rest (ties: fewest active attempts for spread, then the
    cluster's name). An attempt that cannot start stays PENDING with its `pending_reason`
    (`quota: …`, `no capacity: …`) until a later pass places it. The chosen GPU type and the
    resources held are recorded on the attempt.

    With `only_cluster` (an agent asking for work), attempts are assigned to that cluster
    only, and only those it fits with the most preferred GPU type that fits anywhere.

    On PostgreSQL the PENDING rows are read `FOR UPDATE SKIP LOCKED`, so control-plane
    replicas placing at once work on different attempts, and the quota rows of their tenants
    are locked before their load is read, so two replicas cannot both spend the last unit of
    a quota; the compare-and-set in `move_attempt` remains the guarantee against double
    assignment. Returns how many attempts were assigned.
    """
    waiting = waiting_attempts(session)
    if not waiting:
        return 0
    placed = placement_candidates(session, heartbeat_grace=heartbeat_grace)
    if only_cluster is not None and only_cluster.id not in {c.id for c, _ in placed}:
        return 0  # offline: it gets nothing
    tenant_ids = sorted({w.tenant_id for w in waiting})
    quotas = {
        q.tenant_id: q
        for q in session.scalars(
            select(TenantQuota)
            .where(TenantQuota.tenant_id.in_(tenant_ids))
            .order_by(TenantQuota.tenant_id)
            .with_for_update()
        )
    }
    limits = {tenant_id: limits_of(quotas.get(tenant_id)) for tenant_id in tenant_ids}
    loads = tenant_loads(session)
    grants = tenancy.grants_by_tenant_id(session)
    totals = cluster_totals(cluster for cluster, _ in placed)
    cluster_ids = {candidate.name: cluster.id for cluster, candidate in placed}
    candidates = {candidate.name: candidate for _, candidate in placed}
    resources = task_resources(session, ((w.spec_id, w.task_name) for w in waiting))
    admitted: set[str] = set()
    fits_nowhere: set[tuple[str, str]] = set()  # capacity only shrinks during one pass
    assigned = 0

    def share(tenant_id: str) -> float:
        return dominant_share(loads.get(tenant_id, Load()), totals)

    for item in fair_order(waiting, share):
        key = (item.spec_id, item.task_name)
        if key in fits_nowhere:
            continue
        load = loads.setdefault(item.tenant_id, Load())
        quota = limits[item.tenant_id]
        wanted = resources[key]
        new_execution = not item.admitted and item.execution_id not in admitted
        reason = quota_problem(quota, load, Usage.of(wanted, None), new_execution=new_execution)
        types = allowed_gpu_types(wanted, quota, load)
        if reason is None and types == []:
            reason = gpu_type_problem(quota, load, wanted.gpu, wanted.gpu_types[0])
        if reason is not None:
            _set_pending_reason(session, item, reason)
            continue
        if types is not None and types != wanted.gpu_types:
            wanted = wanted.model_copy(update={"gpu_type": types})
        granted = grants.get(item.tenant_id, set())
        decision = place(
            wanted,
            [c for c in candidates.values() if tenancy.may_use(granted, c.name)],
            strategy,
            restrict_to=only_cluster.name if only_cluster is not None else None,
        )
        if decision.cluster is None:
            if decision.reason == NO_FIT:
                fits_nowhere.add(key)
                _set_pending_reason(session, item, _no_fit_reason(decision, len(granted)))
            continue
        if decision.gpu_type and types is None:
            reason = gpu_type_problem(quota, load, wanted.gpu, decision.gpu_type)
            if reason is not None:
                _set_pending_reason(session, item, reason)
                continue
        if assign_pending(
            session,
            item.attempt_id,
            cluster_id=cluster_ids[decision.cluster],
            gpu_type=decision.gpu_type,
            gpu=wanted.gpu,
            cpu=wanted.cpu,
            memory_bytes=wanted.memory_bytes,
        ):
            usage = Usage.of(wanted, decision.gpu_type)
            candidates[decision.cluster] = candidates[decision.cluster].after(usage)
            load.add(usage, new_execution=new_execution)
            if new_execution:
                admit_execution(session, item.execution_id)
                admitted.add(item.execution_id)
            assigned += 1
    return assigned


def _set_pending_reason(session: Session, item: WaitingAttempt, reason: str) -> None:
    if item.pending_reason != reason:  # written only when it changes
        session.execute(
            update(TaskAttempt)
            .where(TaskAttempt.id == item.attempt_id, TaskAttempt.status == A.PENDING.value)
            .values(pending_reason=reason)
            .execution_options(synchronize_session=False)
        )


# How long the scheduler waits for a wake-up before it runs a pass anyway: what other processes
# did (a worker that created attempts, an API process that freed capacity or changed a quota)
# reaches this one within that.
TICK_SECONDS = 1.0


class Scheduler:
    """The one loop per process that runs placement passes.

    A pass runs at once when `wake` is called (attempts became ready, capacity was freed, a
    cluster came online: in this process), else every `TICK_SECONDS`. Passes never overlap
    within a process; wake-ups during a pass cause one more pass right after it. After a pass
    that assigned something, `on_assigned` runs on the loop: it wakes the leases waiting in a
    long poll (`AttemptsReady.notify`). Passes in several processes are safe: PENDING rows are
    read `FOR UPDATE SKIP LOCKED` on PostgreSQL, and every move is a compare-and-set.
    """

    def __init__(
        self,
        sessions: sessionmaker[Session],
        *,
        heartbeat_grace: timedelta,
        strategy: Strategy = Strategy.SPREAD,
        on_assigned: Callable[[], None] = lambda: None,
    ) -> None:
        self._sessions = sessions
        self._heartbeat_grace = heartbeat_grace
        self._strategy = strategy
        self._on_assigned = on_assigned
        self._loop: asyncio.AbstractEventLoop | None = None
        self._woken = asyncio.Event()
        self._one_at_a_time = asyncio.Lock()

    def wake(self) -> None:
        """Ask for a pass now; safe to call from any thread (activities run in threads)."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._woken.set)

    async def place(self) -> int:
        """Run one pass now, in its own transaction in a thread (again after a transient
        database error), then wake the long polls if it assigned something; returns how many
        attempts it assigned. The loop runs exactly this; a test may call it directly: it
        waits for a pass in progress, so what it returns to has been offered to a pass."""

        def one_pass() -> int:
            with transaction(self._sessions) as session:
                return place_pending_attempts(
                    session, heartbeat_grace=self._heartbeat_grace, strategy=self._strategy
                )

        async with self._one_at_a_time:
            assigned = await asyncio.to_thread(retry_transient, one_pass)
        if assigned:
            self._on_assigned()
        return assigned

    async def run(self, stop: asyncio.Event) -> None:
        """Run passes until `stop` is set. A tick with no attempt waiting costs one indexed
        read instead of a pass (the idle control plane does this every second)."""
        self._loop = asyncio.get_running_loop()
        woken = True  # the first pass looks at everything
        while not stop.is_set():
            self._woken.clear()
            try:
                if woken or await asyncio.to_thread(self._anything_waiting):
                    await self.place()
            except Exception:
                log.warning("placement pass failed; retrying", exc_info=True)
            woken = await self._next_reason(stop)

    def _anything_waiting(self) -> bool:
        """Whether any attempt is PENDING, read on a plain connection: no ORM session, no
        transaction of its own, no row locks; a few times cheaper than an empty pass."""
        engine = self._sessions.kw["bind"]
        with engine.connect() as connection:
            return has_waiting_attempts(connection)

    async def _next_reason(self, stop: asyncio.Event) -> bool:
        """Return on a wake-up, on `stop`, or after a tick, whichever comes first; True
        when woken."""
        waits = [asyncio.ensure_future(self._woken.wait()), asyncio.ensure_future(stop.wait())]
        try:
            await asyncio.wait(waits, timeout=TICK_SECONDS, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()
        return self._woken.is_set()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Scheduler]:
        """Run the loop for the duration of the block (tests compose it so)."""
        stop = asyncio.Event()
        task = asyncio.create_task(self.run(stop), name="scheduler")
        try:
            yield self
        finally:
            stop.set()
            await task
