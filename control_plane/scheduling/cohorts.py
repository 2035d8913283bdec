"""Cohorts in a placement pass: admission through the cohort policy, and preemption.

The pure rules are `control_plane/placement/cohorts.py`; this module reads their inputs for one
pass (`CohortPass.load`: the cohorts, their members' shares and policies) and applies their
outcome: an attempt admitted beyond its tenant's nominal quota is recorded with its
`borrowed_gpus`; a waiting GPU attempt that fits nowhere may preempt (`try_preempt`).

Preemption and the reservation of what it frees. The victims move to PREEMPTED and the
waiting attempt is assigned to the cluster they free *in the same transaction* of the same
pass, so no other attempt can take the freed GPUs meanwhile: there is nothing to reserve. The
victims' agents learn at their next heartbeat that the attempts are no longer theirs to run and
stop them with the cohort's preemption grace (SIGTERM, the grace, SIGKILL; a pod's deletion
grace period on Kubernetes); the
preempting attempt is leased at once and the agent starts it (with simulated GPUs at once;
on Kubernetes its pod waits for the device plugin to free the victims' GPUs). The finish
notifier delivers PREEMPTED to the victims' workflows, which queue them again without using
any retries; they wait PENDING like any attempt until capacity frees. Before preempting,
placement is checked on the cluster as it will be without the victims (labels, CPU, memory):
victims are never preempted for an attempt that would still not start there.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from sqlalchemy.orm import Session

from control_plane.db.repositories import cohorts as cohorts_repo
from control_plane.placement.admission import Load
from control_plane.placement.capacity import FreeCapacity, Usage
from control_plane.placement.cohorts import (
    Admission,
    Cohort,
    Running,
    Share,
    admit,
    choose_victims,
)
from control_plane.placement.policy import Candidate, Decision, Strategy, place
from fleetflow import ir


def shares_of(stored: Mapping[str, object]) -> dict[str, Share]:
    """`CohortMember.shares` as the policy reads it."""
    shares = {}
    for gpu_type, value in stored.items():
        if isinstance(value, Mapping):
            limit = value.get("borrowing_limit")
            shares[gpu_type] = Share(
                nominal=int(value.get("nominal") or 0),
                borrowing_limit=None if limit is None else int(limit),
            )
    return shares


@dataclass
class Preempted:
    """What `try_preempt` did: the decision for the waiting attempt, and the victims."""

    decision: Decision
    candidate: Candidate  # the chosen cluster as it is without the victims
    victims: tuple[str, ...]


@dataclass
class CohortPass:
    """The cohorts of one placement pass."""

    cohorts: dict[str, Cohort]  # by tenant id
    within_tenant: dict[str, bool]  # by tenant id
    _running: dict[str, list[cohorts_repo.ActiveGpuAttempt]] = field(default_factory=dict)

    @classmethod
    def load(cls, session: Session) -> CohortPass:
        members = cohorts_repo.members(session)
        if not members:  # no cohorts: one read per pass
            return cls(cohorts={}, within_tenant={})
        by_cohort: dict[str, dict[str, dict[str, Share]]] = {}
        for m in members:
            by_cohort.setdefault(m.cohort_id, {})[m.tenant_id] = shares_of(m.shares)
        names = {c.id: c.name for c in cohorts_repo.list_cohorts(session)}
        cohorts = {cid: Cohort(names.get(cid, cid), shares) for cid, shares in by_cohort.items()}
        return cls(
            cohorts={m.tenant_id: cohorts[m.cohort_id] for m in members},
            within_tenant={m.tenant_id: m.preempt_within_tenant for m in members},
        )

    def member(self, tenant_id: str) -> bool:
        return tenant_id in self.cohorts

    def gpu_types(self, tenant_id: str) -> list[str]:
        """The GPU types the tenant's cohort covers (some member has a share of), sorted."""
        cohort = self.cohorts.get(tenant_id)
        if cohort is None:
            return []
        return sorted({t for shares in cohort.shares.values() for t in shares})

    @staticmethod
    def used(loads: Mapping[str, Load]) -> dict[str, dict[str, int]]:
        return {t: load.gpu_per_type for t, load in loads.items()}

    def admit(
        self, loads: Mapping[str, Load], tenant_id: str, gpu_type: str | None, gpu: int
    ) -> Admission:
        cohort = self.cohorts.get(tenant_id)
        if cohort is None or gpu_type is None or gpu <= 0:
            return Admission(admitted=True, borrowed=0)
        return admit(cohort, self.used(loads), tenant_id, gpu_type, gpu)

    def admissible_types(
        self, loads: Mapping[str, Load], tenant_id: str, gpu: int, types: Sequence[str]
    ) -> tuple[list[str], str | None]:
        """The GPU types among `types` the cohort admits now, and why the first is refused
        (None when it is not)."""
        decisions = [self.admit(loads, tenant_id, t, gpu) for t in types]
        first = decisions[0].reason if decisions and not decisions[0].admitted else None
        return [t for t, d in zip(types, decisions, strict=True) if d.admitted], first

    def _running_of(self, session: Session, cohort: Cohort) -> list[cohorts_repo.ActiveGpuAttempt]:
        if cohort.name not in self._running:
            self._running[cohort.name] = cohorts_repo.active_gpu_attempts(session, cohort.shares)
        return self._running[cohort.name]

    def try_preempt(
        self,
        session: Session,
        *,
        tenant_id: str,
        priority: int,
        wanted: ir.Resources,
        candidates: Iterable[Candidate],
        strategy: Strategy,
        loads: dict[str, Load],
    ) -> Preempted | None:
        """Preempt what `choose_victims` names so that an attempt of `tenant_id` needing
        `wanted` starts on one of `candidates` (the clusters it may use), and return where
        it goes; None (nothing preempted) when no preemption lets it start."""
        cohort = self.cohorts.get(tenant_id)
        if cohort is None or wanted.gpu <= 0:
            return None
        types = wanted.gpu_types or self.gpu_types(tenant_id)
        clusters = {c.name: c for c in candidates if c.online and c.free.gpus is not None}
        active = self._running_of(session, cohort)
        for gpu_type in types:
            free = {
                name: c.free.gpus[gpu_type]
                for name, c in clusters.items()
                if c.free.gpus is not None and gpu_type in c.free.gpus
            }
            running = [
                Running(
                    attempt_id=a.attempt_id,
                    tenant_id=a.tenant_id,
                    cluster=a.cluster,
                    gpu_type=a.gpu_type,
                    gpu=a.gpu,
                    priority=a.priority,
                    started_at=a.started_at,
                    borrowed=a.borrowed_gpus > 0,
                )
                for a in active
            ]
            chosen = choose_victims(
                cohort,
                self.used(loads),
                tenant_id,
                priority,
                gpu_type,
                wanted.gpu,
                running,
                free,
                self.within_tenant.get(tenant_id, False),
            )
            if chosen is None:
                continue
            victims = [a for a in active if a.attempt_id in set(chosen.victims)]
            freed = clusters[chosen.cluster]
            for v in victims:
                freed = replace(
                    freed,
                    free=freed.free.plus(_usage(v), FreeCapacity()),
                    active_attempts=max(freed.active_attempts - 1, 0),
                )
            one_type = wanted.model_copy(update={"gpu_type": gpu_type})
            decision = place(one_type, [freed], strategy)
            if decision.cluster is None:
                continue  # labels, CPU or memory: preempting would not start it
            moved = []
            for v in victims:
                why = (
                    f"preempted: its GPUs were taken back for higher-priority work of its tenant "
                    f"(cohort {cohort.name})"
                    if v.tenant_id == tenant_id
                    else f"preempted: its borrowed GPUs were taken back for a tenant of cohort "
                    f"{cohort.name} that needs its nominal quota"
                )
                moved += cohorts_repo.preempt(session, [v.attempt_id], why)
            if len(moved) != len(chosen.victims):
                # Another pass or an agent's report moved one first: what we counted on is
                # not free; this pass's transaction is rolled back and the next pass retries.
                raise PreemptionRaced(chosen.victims, moved)
            for v in victims:
                active.remove(v)
                load = loads.get(v.tenant_id)
                if load is not None:
                    _subtract(load, _usage(v))
            return Preempted(decision, freed, chosen.victims)
        return None


class PreemptionRaced(Exception):
    """A victim changed state while it was being preempted; the pass is rolled back."""

    def __init__(self, wanted: Sequence[str], moved: Sequence[str]) -> None:
        super().__init__(f"preempting {list(wanted)}: only {list(moved)} could be moved")


def _usage(a: cohorts_repo.ActiveGpuAttempt) -> Usage:
    return Usage(cpu=a.cpu, memory_bytes=a.memory_bytes, gpu=a.gpu, gpu_type=a.gpu_type)


def _subtract(load: Load, usage: Usage) -> None:
    load.gpu -= usage.gpu
    if usage.gpu_type is not None:
        load.gpu_per_type[usage.gpu_type] = load.gpu_per_type.get(usage.gpu_type, 0) - usage.gpu
    load.cpu -= usage.cpu
    load.memory_bytes -= usage.memory_bytes
    load.running_tasks -= 1
