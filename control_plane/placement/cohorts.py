"""Cohorts: borrowing idle GPU quota and taking it back by preemption (pure policy, no
database; `scheduling/cohorts.py` reads its inputs and applies its outcome).

A cohort is a set of tenants that lend each other GPUs. For each GPU type, each member has a
`Share`: a *nominal* number of GPUs it is guaranteed and a *borrowing limit*, the most GPUs it
may hold beyond its nominal (None: unlimited). A GPU type for which no member has a share is
outside the cohort: the cohort neither limits nor protects its use. A member without a share
for a type the cohort covers has nominal 0 and no borrowing limit.

Admission (`admit`). What a tenant's active attempts hold (`used`) plus the new attempt:

- within the tenant's nominal: admitted, nothing borrowed. This is the guarantee: it holds
  even when others borrowed the cohort's GPUs meanwhile (preemption gives them back);
- beyond it: the part beyond nominal is *borrowed*. It is admitted when the tenant stays
  within its borrowing limit and the cohort as a whole stays within the sum of its members'
  nominal quotas (only unused nominal quota can be lent).

Preemption (`choose_victims`). A waiting attempt that does not fit on any cluster may take
GPUs back:

- an attempt entirely within its tenant's nominal may preempt *borrowed* attempts of other
  members, and only while their tenant holds more than its nominal: work within its own
  tenant's nominal is never taken (a victim is always the tenant's work beyond nominal; the
  last one taken may leave its tenant below nominal by less than its own size, since attempts
  are not divisible);
- with the tenant's `preempt_within_tenant` policy, an attempt may also preempt strictly
  lower-priority attempts of its own tenant, borrowed or not.

Victims are taken in order: other tenants' borrowed work before the tenant's own, then lowest
priority first, then most recently started. Each cluster on which freeing them would make the
attempt fit is considered; the chosen one has the lowest highest-victim priority, then the
fewest victims, then the fewest GPUs preempted, then the name that sorts first. Within it,
victims that turn out not to be needed are given back (most valuable first), so no victim can
be spared. After the victims are gone, the attempt fits on that cluster and `admit` admits it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class Share:
    """One tenant's place in its cohort for one GPU type."""

    nominal: int  # GPUs guaranteed
    borrowing_limit: int | None = None  # most GPUs it may hold beyond nominal; None = unlimited


NO_SHARE = Share(nominal=0, borrowing_limit=None)


@dataclass(frozen=True)
class Cohort:
    name: str
    shares: Mapping[str, Mapping[str, Share]]  # tenant_id -> gpu_type -> Share

    def covers(self, gpu_type: str) -> bool:
        """Whether some member has a share for `gpu_type` (else the cohort ignores it)."""
        return any(gpu_type in by_type for by_type in self.shares.values())

    def share(self, tenant_id: str, gpu_type: str) -> Share:
        return self.shares.get(tenant_id, {}).get(gpu_type, NO_SHARE)

    def nominal_total(self, gpu_type: str) -> int:
        return sum(by_type.get(gpu_type, NO_SHARE).nominal for by_type in self.shares.values())


@dataclass(frozen=True)
class Admission:
    admitted: bool
    borrowed: int  # GPUs of this attempt beyond the tenant's nominal (0 = within nominal)
    reason: str = ""  # when not admitted, why (a sentence a person can act on)


def _used(used: Mapping[str, Mapping[str, int]], tenant_id: str, gpu_type: str) -> int:
    return used.get(tenant_id, {}).get(gpu_type, 0)


def _cohort_used(cohort: Cohort, used: Mapping[str, Mapping[str, int]], gpu_type: str) -> int:
    return sum(_used(used, tenant_id, gpu_type) for tenant_id in cohort.shares)


def _gpus(n: int, gpu_type: str) -> str:
    return f"{n} {gpu_type}"


def borrowed_now(
    cohort: Cohort, used: Mapping[str, Mapping[str, int]], tenant_id: str, gpu_type: str
) -> int:
    """How many GPUs of `gpu_type` the tenant holds beyond its nominal now."""
    if tenant_id not in cohort.shares or not cohort.covers(gpu_type):
        return 0
    return max(0, _used(used, tenant_id, gpu_type) - cohort.share(tenant_id, gpu_type).nominal)


def admit(
    cohort: Cohort,
    used: Mapping[str, Mapping[str, int]],
    tenant_id: str,
    gpu_type: str,
    gpus: int,
) -> Admission:
    """Whether `tenant_id` may start an attempt holding `gpus` of `gpu_type` now, and how many
    of them it borrows (module docstring). `used`: tenant_id -> gpu_type -> GPUs held by the
    active attempts of the cohort's members."""
    if gpus <= 0 or tenant_id not in cohort.shares or not cohort.covers(gpu_type):
        return Admission(admitted=True, borrowed=0)
    share = cohort.share(tenant_id, gpu_type)
    held = _used(used, tenant_id, gpu_type)
    after = held + gpus
    borrowed = max(0, after - share.nominal) - max(0, held - share.nominal)
    if borrowed == 0:
        return Admission(admitted=True, borrowed=0)
    beyond = after - share.nominal
    if share.borrowing_limit is not None and beyond > share.borrowing_limit:
        return Admission(
            admitted=False,
            borrowed=borrowed,
            reason=(
                f"cohort {cohort.name}: needs {_gpus(gpus, gpu_type)}, which would hold "
                f"{beyond} beyond the tenant's nominal {share.nominal} ({held} in use); its "
                f"borrowing limit is {share.borrowing_limit}"
            ),
        )
    total = cohort.nominal_total(gpu_type)
    in_use = _cohort_used(cohort, used, gpu_type)
    if in_use + gpus > total:
        idle = max(0, total - in_use)
        return Admission(
            admitted=False,
            borrowed=borrowed,
            reason=(
                f"cohort {cohort.name}: needs {_gpus(gpus, gpu_type)} ({borrowed} beyond the "
                f"tenant's nominal {share.nominal}); the cohort has {idle} of its "
                f"{total} nominal {gpu_type} unused to lend"
            ),
        )
    return Admission(admitted=True, borrowed=borrowed)


@dataclass(frozen=True)
class Running:
    """An active attempt as preemption sees it."""

    attempt_id: str
    tenant_id: str
    cluster: str
    gpu_type: str | None
    gpu: int
    priority: int
    started_at: datetime
    borrowed: bool


@dataclass(frozen=True)
class Preemption:
    cluster: str
    victims: tuple[str, ...]  # attempt ids


def _victims_on(
    cohort: Cohort,
    used: Mapping[str, Mapping[str, int]],
    tenant_id: str,
    gpu_type: str,
    gpus: int,
    candidates: Sequence[Running],
    free: int,
) -> list[Running] | None:
    """The fewest victims among `candidates` (one cluster's, in preemption order) that make
    `gpus` fit there next to `free`, or None when they cannot."""
    taken: list[Running] = []
    lost: dict[str, int] = {}

    def over_nominal(victim: Running) -> bool:
        if victim.tenant_id == tenant_id:
            return True  # the within-tenant rule: any lower-priority work of its own
        held = _used(used, victim.tenant_id, gpu_type) - lost.get(victim.tenant_id, 0)
        return held > cohort.share(victim.tenant_id, gpu_type).nominal

    def fits(victims: Sequence[Running]) -> bool:
        if free + sum(v.gpu for v in victims) < gpus:
            return False
        after = {t: dict(by_type) for t, by_type in used.items()}
        for v in victims:
            held = after.setdefault(v.tenant_id, {})
            held[gpu_type] = held.get(gpu_type, 0) - v.gpu
        return admit(cohort, after, tenant_id, gpu_type, gpus).admitted

    for victim in candidates:
        if fits(taken):
            break
        if not over_nominal(victim):
            continue
        taken.append(victim)
        lost[victim.tenant_id] = lost.get(victim.tenant_id, 0) + victim.gpu
    if not fits(taken):
        return None
    # Give back what is not needed, the most valuable first (the last taken).
    for victim in reversed(list(taken)):
        rest = [v for v in taken if v is not victim]
        if fits(rest):
            taken = rest
    return taken


def choose_victims(
    cohort: Cohort,
    used: Mapping[str, Mapping[str, int]],
    tenant_id: str,
    priority: int,
    gpu_type: str,
    gpus: int,
    running: Sequence[Running],
    free: Mapping[str, int],
    preempt_within_tenant: bool,
) -> Preemption | None:
    """Which active attempts to preempt so that a waiting attempt of `tenant_id` holding
    `gpus` of `gpu_type` at `priority` can start, and on which cluster (module docstring).

    `used`: tenant_id -> gpu_type -> GPUs held by the cohort members' active attempts;
    `running`: those attempts; `free`: cluster -> free GPUs of `gpu_type`, for every cluster
    the waiting attempt may run on (clusters not listed are not considered).

    None when nothing may be preempted that would make it fit, or when it fits somewhere
    already (no preemption is needed).
    """
    if gpus <= 0 or tenant_id not in cohort.shares or not cohort.covers(gpu_type):
        return None
    if (
        any(n >= gpus for n in free.values())
        and admit(cohort, used, tenant_id, gpu_type, gpus).admitted
    ):
        return None
    within_nominal = (
        _used(used, tenant_id, gpu_type) + gpus <= cohort.share(tenant_id, gpu_type).nominal
    )

    def eligible(r: Running) -> bool:
        if r.gpu_type != gpu_type or r.gpu <= 0 or r.cluster not in free:
            return False
        if r.tenant_id == tenant_id:
            return preempt_within_tenant and r.priority < priority
        return within_nominal and r.borrowed and r.tenant_id in cohort.shares

    candidates = sorted(
        (r for r in running if eligible(r)),
        key=lambda r: (
            r.tenant_id == tenant_id,  # other tenants' borrowed work first
            r.priority,
            -r.started_at.timestamp(),
            r.attempt_id,
        ),
    )
    best: tuple[tuple[int, int, int, str], Preemption] | None = None
    for cluster in sorted(free):
        victims = _victims_on(
            cohort,
            used,
            tenant_id,
            gpu_type,
            gpus,
            [r for r in candidates if r.cluster == cluster],
            free[cluster],
        )
        if not victims:  # None: cannot fit; []: fits without preempting (admit said no)
            continue
        cost = (
            max(v.priority for v in victims),
            len(victims),
            sum(v.gpu for v in victims),
            cluster,
        )
        if best is None or cost < best[0]:
            best = (cost, Preemption(cluster, tuple(v.attempt_id for v in victims)))
    return best[1] if best is not None else None
