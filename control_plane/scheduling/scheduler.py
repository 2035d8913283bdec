"""The scheduler: placement passes, and the one service that runs them.

A pass (`place_pending_attempts`) assigns PENDING attempts to clusters, using the snapshot
(`scheduling/snapshot.py`), quota and fair-share admission (`placement/admission.py`,
`control_plane.quota`) and the pure policy (`placement/policy.py`). `Scheduler` runs passes in
one loop per process, woken in-process when attempts become ready or capacity is freed, and on
a periodic tick for what other processes did (a worker and an API process may be separate).
A pass that assigned something leases, in its own transaction, for the long polls waiting in
this process (`AttemptsReady.lease_waiting`), then wakes them: they take what it leased for
them, and any other poll leases what is already assigned to its cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Protocol

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session, sessionmaker

from control_plane.db.models import Cluster, TenantQuota, utcnow
from control_plane.db.repositories import tenancy
from control_plane.db.repositories.attempts import assign_pending, set_pending_reason
from control_plane.db.repositories.executions import admit_execution
from control_plane.db.session import retry_transient, transaction
from control_plane.placement import reservations
from control_plane.placement.admission import (
    Limits,
    Load,
    allowed_gpu_types,
    dominant_share,
    fair_order,
    gpu_type_problem,
    quota_problem,
)
from control_plane.placement.capacity import Usage
from control_plane.placement.gangs import gang_no_fit_reason, gang_reason
from control_plane.placement.policy import NO_FIT, Candidate, Decision, Strategy, place
from control_plane.placement.reservations import Reservations, Starving
from control_plane.quota import limits_of, tenant_loads
from control_plane.scheduling.cohorts import CohortPass
from control_plane.scheduling.snapshot import (
    TENANT_PAGE,
    WaitingAttempt,
    cluster_totals,
    has_waiting_attempts,
    placement_candidates,
    task_gang,
    task_resources,
    waiting_attempts,
)
from fleetflow import ir

log = logging.getLogger(__name__)

_MAX_REASON = 500

# How long an attempt may wait before a pass reserves capacity for it (the default of
# `FLEETFLOW_SCHEDULER_RESERVE_AFTER_SECONDS`).
RESERVE_AFTER = timedelta(seconds=300)

# The quota rows of a pass's tenants, locked before their load is read; built once, as a pass
# runs for nearly every finished attempt.
_QUOTAS = (
    select(TenantQuota)
    .where(TenantQuota.tenant_id.in_(bindparam("tenant_ids", expanding=True)))
    .order_by(TenantQuota.tenant_id)
    .with_for_update()
)


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
    reserve_after: timedelta | None = RESERVE_AFTER,
    now: datetime | None = None,
    preempted: list[str] | None = None,
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

    An attempt that has waited longer than `reserve_after` (None: never) gets one cluster
    reserved for it during the pass (`placement/reservations.py`): the others may use that
    cluster only in ways that cannot delay it, and it waits with the reason
    `reserved on CLUSTER: waiting for …`.

    With `only_cluster` (an agent asking for work), attempts are assigned to that cluster
    only, and only those it fits with the most preferred GPU type that fits anywhere.

    On PostgreSQL the PENDING rows are read `FOR UPDATE SKIP LOCKED`, so control-plane
    replicas placing at once work on different attempts, and the quota rows of their tenants
    are locked before their load is read, so two replicas cannot both spend the last unit of
    a quota; the compare-and-set in `move_attempt` remains the guarantee against double
    assignment. Returns how many attempts were assigned.

    Tenants in a cohort are also admitted through its policy (`scheduling/cohorts.py`): what
    they hold beyond their nominal GPU quota is recorded as borrowed, and a GPU attempt that
    fits nowhere may preempt (not with `only_cluster`); the ids of the attempts preempted are
    appended to `preempted`.
    """
    waiting = waiting_attempts(session)
    if not waiting:
        return 0
    placed = placement_candidates(session, heartbeat_grace=heartbeat_grace)
    if only_cluster is not None and only_cluster.id not in {c.id for c, _ in placed}:
        return 0  # offline: it gets nothing
    tenant_ids = sorted({w.tenant_id for w in waiting})
    quotas = {q.tenant_id: q for q in session.scalars(_QUOTAS, {"tenant_ids": tenant_ids})}
    limits = {tenant_id: limits_of(quotas.get(tenant_id)) for tenant_id in tenant_ids}
    loads = tenant_loads(session)
    grants = tenancy.grants_by_tenant_id(session)
    # Only the cohorts of the waiting attempts' tenants matter: with none in one, none are read.
    cohorts = (
        CohortPass.load(session)
        if any(w.in_cohort for w in waiting)
        else CohortPass(cohorts={}, within_tenant={})
    )
    totals = cluster_totals(cluster for cluster, _ in placed)
    cluster_ids = {candidate.name: cluster.id for cluster, candidate in placed}
    candidates = {candidate.name: candidate for _, candidate in placed}
    resources = task_resources(session, ((w.spec_id, w.task_name) for w in waiting))
    held = _reservations(
        waiting,
        placed,
        resources,
        limits,
        loads,
        grants,
        cohorts,
        older_than=None if reserve_after is None else (now or utcnow()) - reserve_after,
    )
    admitted: set[str] = set()
    reasons = _PendingReasons()
    # Capacity only shrinks during one pass: a task that fits nowhere is not placed again,
    # and its other attempts wait for the same reason (not one an earlier pass left them).
    fits_nowhere: dict[tuple[str, str], str] = {}
    assigned = 0

    def share(tenant_id: str) -> float:
        return dominant_share(loads.get(tenant_id, Load()), totals)

    for item in fair_order(waiting, share):
        key = (item.spec_id, item.task_name)
        if key in fits_nowhere:
            reasons.give(item, fits_nowhere[key])
            continue
        load = loads.setdefault(item.tenant_id, Load())
        quota = limits[item.tenant_id]
        wanted = resources[key]
        new_execution = not item.admitted and item.execution_id not in admitted
        reason = quota_problem(quota, load, Usage.of(wanted, None), new_execution=new_execution)
        types = allowed_gpu_types(wanted, quota, load)
        if reason is None and types == []:
            reason = gpu_type_problem(quota, load, wanted.gpu, wanted.gpu_types[0])
        gang = task_gang(key)
        if reason is not None:
            reason = reason if gang is None else gang_reason(reason, gang[1], gang[0])
            reasons.give(item, reason)
            continue
        refused = None  # why the tenant's cohort admits none of the task's GPU types now
        if types and cohorts.member(item.tenant_id):
            admitted_types, refused = cohorts.admissible_types(
                loads, item.tenant_id, wanted.gpu, types
            )
            types = admitted_types or types
            refused = None if admitted_types else refused or "cohort: no GPU type admitted"
        if types is not None and types != wanted.gpu_types:
            wanted = wanted.model_copy(update={"gpu_type": types})
        granted = grants.get(item.tenant_id, set())
        wanted = held.narrow(item.attempt_id, wanted)
        usable = [c for c in candidates.values() if tenancy.may_use(granted, c.name)]
        decision = (
            place(
                wanted,
                held.as_seen_by(item.attempt_id, usable),
                strategy,
                restrict_to=only_cluster.name if only_cluster is not None else None,
            )
            if refused is None
            else Decision(None, None, {}, {}, NO_FIT)  # preemption may still admit it
        )
        may_preempt = only_cluster is None and cohorts.member(item.tenant_id)
        if decision.cluster is None and decision.reason == NO_FIT and may_preempt:
            decision = (
                _preempt(
                    session,
                    cohorts,
                    item,
                    wanted,
                    held,
                    usable,
                    strategy,
                    loads,
                    candidates,
                    preempted,
                )
                or decision
            )
        if decision.cluster is None and refused is not None:
            reasons.give(item, refused)
            continue
        if decision.cluster is None:
            reservation = held.of(item.attempt_id)
            if reservation is not None:  # it holds a gang's whole group: said so
                reason = reservation.reason
                reason = reason if gang is None else gang_reason(reason, gang[1], gang[0])
                reasons.give(item, reason)
            elif decision.reason == NO_FIT:
                excluded = held.explain(decision.excluded)
                decision = Decision(None, None, decision.eligible, excluded, decision.reason)
                reason = _no_fit_reason(decision, len(granted))
                if gang is not None and granted:  # a gang: in its own terms
                    reason = "no capacity: " + gang_no_fit_reason(gang[1], gang[0], usable)
                fits_nowhere[key] = reason
                reasons.give(item, reason)
            continue
        if decision.gpu_type and types is None:
            reason = gpu_type_problem(quota, load, wanted.gpu, decision.gpu_type)
            if reason is not None:
                reasons.give(item, reason)
                continue
        cohort = cohorts.admit(loads, item.tenant_id, decision.gpu_type, wanted.gpu)
        if not cohort.admitted and types is None and may_preempt:
            # A task naming no GPU type: placement picked a type its cohort refuses now, yet
            # taking GPUs back (on a type its cohort covers and its quota allows) may start it.
            allowed = [
                t
                for t in cohorts.gpu_types(item.tenant_id)
                if gpu_type_problem(quota, load, wanted.gpu, t) is None
            ]
            taken = (
                _preempt(
                    session,
                    cohorts,
                    item,
                    wanted.model_copy(update={"gpu_type": allowed}),
                    held,
                    usable,
                    strategy,
                    loads,
                    candidates,
                    preempted,
                )
                if allowed
                else None
            )
            if taken is not None:
                decision = taken
                cohort = cohorts.admit(loads, item.tenant_id, decision.gpu_type, wanted.gpu)
        assert decision.cluster is not None  # placed, or placed by preemption
        if not cohort.admitted:
            reasons.give(item, cohort.reason)
            continue
        if assign_pending(
            session,
            item.attempt_id,
            cluster_id=cluster_ids[decision.cluster],
            gpu_type=decision.gpu_type,
            gpu=wanted.gpu,
            cpu=wanted.cpu,
            memory_bytes=wanted.memory_bytes,
            borrowed_gpus=cohort.borrowed,
        ):
            usage = Usage.of(wanted, decision.gpu_type)
            candidates[decision.cluster] = candidates[decision.cluster].after(usage)
            load.add(usage, new_execution=new_execution)
            if new_execution:
                admit_execution(session, item.execution_id)
                admitted.add(item.execution_id)
            assigned += 1
    reasons.write(session)
    return assigned


def _preempt(
    session: Session,
    cohorts: CohortPass,
    item: WaitingAttempt,
    wanted: ir.Resources,
    held: Reservations,
    usable: list[Candidate],
    strategy: Strategy,
    loads: dict[str, Load],
    candidates: dict[str, Candidate],
    preempted: list[str] | None,
) -> Decision | None:
    """Preempt what lets `item` start (`CohortPass.try_preempt`) and return where it goes;
    None, preempting nothing, when nothing does. The freed cluster replaces its candidate,
    and the victims are appended to `preempted`."""
    taken = cohorts.try_preempt(
        session,
        tenant_id=item.tenant_id,
        priority=item.priority,
        wanted=wanted,
        # Never on a cluster held for another attempt: what it frees there is that attempt's.
        candidates=held.not_held_for_others(item.attempt_id, usable),
        strategy=strategy,
        loads=loads,
    )
    if taken is None:
        return None
    candidates[taken.candidate.name] = taken.candidate
    if preempted is not None:
        preempted.extend(taken.victims)
    return taken.decision


def _reservations(
    waiting: list[WaitingAttempt],
    placed: list[tuple[Cluster, Candidate]],
    resources: dict[tuple[str, str], ir.Resources],
    limits: dict[str, Limits],
    loads: dict[str, Load],
    grants: dict[str, set[str]],
    cohorts: CohortPass,
    *,
    older_than: datetime | None,
) -> Reservations:
    """The pass's reservations: for the attempts created before `older_than` whose quota
    (and cohort, for a member) lets them start now, oldest first."""
    if older_than is None:
        return Reservations()
    idle = {c.name: reservations.idle_capacity(cluster.capacity or {}) for cluster, c in placed}
    every_type = sorted({t for free in idle.values() for t in free.gpus or {}})
    starving: list[Starving] = []
    for item in sorted(waiting, key=lambda w: w.created_at):
        if item.created_at > older_than:
            break
        granted = grants.get(item.tenant_id, set())
        one = reservations.starving(
            item.attempt_id,
            resources[(item.spec_id, item.task_name)],
            limits[item.tenant_id],
            loads.get(item.tenant_id, Load()),
            new_execution=not item.admitted,
            clusters=[c.name for _, c in placed if tenancy.may_use(granted, c.name)],
        )
        if one is not None and one.resources.gpu > 0 and cohorts.member(item.tenant_id):
            # Only on a GPU type its cohort admits now (else the held cluster would idle).
            types = one.resources.gpu_types or every_type
            admitted, _ = cohorts.admissible_types(loads, item.tenant_id, one.resources.gpu, types)
            refused = [t for t in types if t not in admitted]
            one = replace(one, refused_types=[*one.refused_types, *refused]) if admitted else None
        if one is not None:
            starving.append(one)
    if not starving:
        return Reservations()
    return reservations.reserve(starving, [c for _, c in placed], idle)


class _PendingReasons:
    """Why a pass leaves attempts waiting, written when it ends: one UPDATE per reason rather
    than one per attempt, and only for the attempts whose reason changes."""

    def __init__(self) -> None:
        self._attempt_ids: dict[str, list[str]] = {}  # by reason

    def give(self, item: WaitingAttempt, reason: str) -> None:
        if item.pending_reason != reason:
            self._attempt_ids.setdefault(reason, []).append(item.attempt_id)

    def write(self, session: Session) -> None:
        for reason, attempt_ids in self._attempt_ids.items():
            set_pending_reason(session, attempt_ids, reason)


# How long the scheduler waits for a wake-up before it runs a pass anyway: what other processes
# did (a worker that created attempts, an API process that freed capacity or changed a quota)
# reaches this one within that.
TICK_SECONDS = 1.0
# How long a pass for freed capacity waits for more of it (`Scheduler.wake_soon`).
FREED_WINDOW_SECONDS = 0.02


class Handoff(Protocol):
    """What a pass leased for the long polls waiting (`lease_waiting`, in its transaction)."""

    def deliver(self) -> None:
        """On the loop, once the pass committed."""

    def release(self) -> None:
        """From the pass's thread, when its transaction failed: nothing is handed over."""


class Scheduler:
    """The one loop per process that runs placement passes.

    A pass runs at once when `wake` is called (attempts became ready in this process),
    `FREED_WINDOW_SECONDS` after the first `wake_soon` (capacity was freed, a cluster came
    online), else every `TICK_SECONDS`. Capacity frees an attempt at a time, as each one
    ends, and a pass costs about the same whatever it places (its reads of the waiting
    attempts, clusters, quotas and loads): the frees of a window share one pass, and a pass
    that starts for any reason (an attempt ready, say) covers the frees before it. An attempt
    that waits for capacity waits that much longer; a new one on a free cluster does not.

    Passes never overlap within a process; wake-ups during a pass cause one more pass right
    after it. After a pass that assigned something, `on_assigned` runs on the loop: it wakes
    the leases waiting in a long poll (`AttemptsReady.notify`). Before that, still in its
    transaction, a pass that assigned something leases for the polls waiting in this process
    (`lease_waiting`), which then take what it leased for them without a lease transaction of
    their own. Passes in several processes are safe: PENDING rows are read `FOR UPDATE SKIP
    LOCKED` on PostgreSQL, and every move is a compare-and-set.
    """

    def __init__(
        self,
        sessions: sessionmaker[Session],
        *,
        heartbeat_grace: timedelta,
        strategy: Strategy = Strategy.SPREAD,
        reserve_after: timedelta | None = RESERVE_AFTER,
        on_assigned: Callable[[], None] = lambda: None,
        on_preempted: Callable[[], None] = lambda: None,
        lease_waiting: Callable[[Session], Handoff | None] = lambda session: None,
    ) -> None:
        self._sessions = sessions
        self._reserve_after = reserve_after
        self._heartbeat_grace = heartbeat_grace
        self._strategy = strategy
        self._on_assigned = on_assigned
        self._lease_waiting = lease_waiting
        # Run on the loop after a pass that preempted attempts (the finish notifier's
        # `deliver_soon`, where this process has one).
        self.on_preempted = on_preempted
        self._loop: asyncio.AbstractEventLoop | None = None
        self._woken = asyncio.Event()
        self._one_at_a_time = asyncio.Lock()
        self._freed_pass: asyncio.TimerHandle | None = None  # `wake_soon`'s, until covered

    def wake(self) -> None:
        """Ask for a pass now; safe to call from any thread (activities run in threads)."""
        self._on_loop(self._woken.set)

    def wake_soon(self) -> None:
        """Ask for a pass within `FREED_WINDOW_SECONDS`, for capacity freed (committed before
        the call): the first call sets the pass's time, the calls until then share it. Safe
        to call from any thread."""
        self._on_loop(self._schedule_freed_pass)

    def _on_loop(self, callback: Callable[[], object]) -> None:
        """Run `callback` on the loop, from any thread; nothing before the loop runs."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(callback)

    def _schedule_freed_pass(self) -> None:
        if self._freed_pass is None and not self._woken.is_set():  # else one is due already
            loop = asyncio.get_running_loop()
            self._freed_pass = loop.call_later(FREED_WINDOW_SECONDS, self._woken.set)

    def _covered(self) -> None:
        """A pass is about to read: it sees what freed capacity so far."""
        if self._freed_pass is not None:
            self._freed_pass.cancel()
            self._freed_pass = None

    async def place(self) -> int:
        """Run one pass now, in its own transaction in a thread (again after a transient
        database error), then wake the long polls if it assigned something; returns how many
        attempts it assigned. The loop runs exactly this; a test may call it directly: it
        waits for a pass in progress, so what it returns to has been offered to a pass."""

        preempted: list[str] = []
        handoffs: list[Handoff] = []

        def one_pass() -> int:
            preempted.clear()
            try:
                with transaction(self._sessions) as session:
                    assigned = place_pending_attempts(
                        session,
                        heartbeat_grace=self._heartbeat_grace,
                        strategy=self._strategy,
                        reserve_after=self._reserve_after,
                        preempted=preempted,
                    )
                    handoff = self._lease_waiting(session) if assigned else None
                    if handoff is not None:
                        handoffs.append(handoff)
                    return assigned
            except BaseException:
                for handoff in handoffs:
                    handoff.release()
                handoffs.clear()
                raise

        async with self._one_at_a_time:
            self._covered()
            assigned = await asyncio.to_thread(retry_transient, one_pass)
        for handoff in handoffs:
            handoff.deliver()  # committed: the polls waiting for this pass take their leases
        if preempted:
            log.info("preempted %s", ", ".join(preempted))
            self.on_preempted()  # deliver PREEMPTED to their workflows now
        if assigned:
            self._on_assigned()
        if assigned >= TENANT_PAGE:
            self._woken.set()  # a tenant's page may have run out before the capacity did
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
