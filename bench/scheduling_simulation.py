"""GPU scheduling on paper: many tenants, clusters and GPU types, driven through the product's
own decision functions, with borrowing and reservations on and off.

Issue 18 asks for borrowing of idle quota with preemption (cohorts) and for large tasks that
no longer starve behind backfilled small ones (reservations), and for a simulation that shows
what they do to GPU utilisation, waits per tenant, preemptions and fairness against the
configured shares. This script is a deterministic discrete-event simulation (seeded, no
servers, no clock) whose every scheduling decision is taken by the control plane's pure
functions, the same code a placement pass runs:

- `placement/admission.py`: `fair_order` (dominant-resource fair share between tenants, then
  priority, then age), `quota_problem` and `allowed_gpu_types` (per-type quotas);
- `placement/policy.py`: `place` (labels, acceptable GPU types in order of preference, free
  GPUs, spread);
- `placement/reservations.py`: `reserve` and `Reservations.as_seen_by` (an attempt waiting
  longer than `--reserve-after-min` holds one cluster);
- `placement/cohorts.py`: `admit` (borrowing within the cohort's unused nominal quota) and
  `choose_victims` (which borrowed work to preempt when a tenant wants its nominal back).

The model around them: clusters of one GPU type each (`--clusters`, e.g. `H100:16x2` is two
clusters of 16 H100); tenants with random weights whose nominal quota of each type is their
weighted part of it, all in one cohort; each tenant alternates busy and idle periods
(exponential, means `--busy-h` and `--idle-h`) and submits jobs while busy (Poisson arrivals,
rates such that the offered GPU-hours are `--load` times the capacity, skewed per tenant so
that some want more than their share and some less). A job asks for 1, 2, 4, 8 or 16 GPUs of
one type, of two in order of preference, or of any type; runs a lognormal time (mean
`--mean-min`); has priority 0, 1 or 2. A placement pass runs after every event (arrival,
finish, a job reaching the reservation bound, and at once again after one that started
`TENANT_PAGE` jobs), over what the product's pass reads: each tenant's first 64 waiting
attempts by priority then age, and of those the oldest 500 (`TENANT_PAGE`,
`PLACEMENT_BATCH`). With borrowing **off**, each tenant's per-type quota
is its nominal (a hard wall). With borrowing **on**, there is no per-type quota; `admit`
decides, and an attempt that fits nowhere asks `choose_victims`; the victims stop at once
(the grace period is not modelled), lose the work since their last checkpoint
(`--checkpoint-min`) and wait again as new attempts.

Every figure is this model's output under its inputs, not a measurement. It prints the four
runs (borrowing off/on x reservations off/on) side by side; `--json FILE` writes them.

    python bench/scheduling_simulation.py
    python bench/scheduling_simulation.py --seed 7 --load 1.2 --json /tmp/sched.json
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import json
import math
import random
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent / "sdk"))

from control_plane.placement.admission import (  # noqa: E402
    Limits,
    Load,
    Totals,
    allowed_gpu_types,
    dominant_share,
    exceeds_whole_quota,
    fair_order,
    gpu_type_problem,
    quota_problem,
)
from control_plane.placement.capacity import FreeCapacity, Usage  # noqa: E402
from control_plane.placement.cohorts import (  # noqa: E402
    Cohort,
    Running,
    Share,
    admit,
    choose_victims,
)
from control_plane.placement.policy import Candidate, place  # noqa: E402
from control_plane.placement.reservations import (  # noqa: E402
    Reservations,
    Starving,
    reserve,
    starving,
)
from control_plane.scheduling.snapshot import PLACEMENT_BATCH, TENANT_PAGE  # noqa: E402
from fleetflow.api_models.previews import Strategy  # noqa: E402
from fleetflow.ir import Resources  # noqa: E402

EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
SIZES = ((1, 0.45), (2, 0.2), (4, 0.15), (8, 0.15), (16, 0.05))
PRIORITIES = ((0, 0.7), (1, 0.2), (2, 0.1))
LARGE = 8  # a job of at least this many GPUs counts as large


@dataclass(frozen=True)
class Model:
    """The inputs of one simulated run (the command line's options)."""

    clusters: str = "H100:16x2,A100:16x2,L4:8x2"
    tenants: int = 8
    hours: float = 72.0
    load: float = 0.9
    mean_min: float = 60.0
    busy_h: float = 8.0
    idle_h: float = 4.0
    checkpoint_min: float = 15.0
    reserve_after_min: float = 30.0
    borrowing_limit: int | None = None
    seed: int = 18
    borrowing: bool = False
    reservations: bool = False


@dataclass(frozen=True)
class ClusterSpec:
    name: str
    gpu_type: str
    gpus: int


def parse_clusters(text: str) -> list[ClusterSpec]:
    """`H100:16x2,L4:8` -> two clusters of 16 H100 and one of 8 L4."""
    clusters = []
    for part in text.split(","):
        try:
            gpu_type, rest = part.strip().split(":")
            size, _, count = rest.partition("x")
            gpus, copies = int(size), int(count or 1)
        except ValueError:
            raise ValueError(f"cluster {part!r}: expected TYPE:GPUS or TYPE:GPUSxCOUNT") from None
        if not gpu_type or gpus < 1 or copies < 1:
            raise ValueError(f"cluster {part!r}: a GPU type, at least 1 GPU, at least 1 copy")
        for k in range(copies):
            clusters.append(ClusterSpec(f"{gpu_type.lower()}-{k + 1}", gpu_type, gpus))
    if len({c.name for c in clusters}) != len(clusters):
        raise ValueError("a GPU type appears twice in --clusters: give it one TYPE:GPUSxCOUNT")
    return clusters


@dataclass
class Job:
    id: int
    tenant: str
    gpus: int
    types: tuple[str, ...]  # acceptable, in order of preference; () = any
    priority: int
    submitted: float
    duration: float
    remaining: float = 0.0
    first_start: float | None = None
    preempted: int = 0
    refused: bool = False


@dataclass
class Attempt:
    """A waiting attempt, as fair share sees it (the `Waiting` protocol)."""

    attempt_id: str
    job: Job
    created: float
    created_at: datetime

    @property
    def tenant_id(self) -> str:
        return self.job.tenant

    @property
    def priority(self) -> int:
        return self.job.priority


def considered(waiting: Iterable[Attempt]) -> list[Attempt]:
    """What one pass reads (`snapshot.waiting_attempts`): each tenant's first `TENANT_PAGE`
    by priority then age, and of those the oldest `PLACEMENT_BATCH`."""
    pages: dict[str, list[Attempt]] = {}
    for attempt in sorted(waiting, key=lambda a: (-a.priority, a.created_at)):
        page = pages.setdefault(attempt.job.tenant, [])
        if len(page) < TENANT_PAGE:
            page.append(attempt)
    firsts = (attempt for page in pages.values() for attempt in page)
    return sorted(firsts, key=lambda a: a.created_at)[:PLACEMENT_BATCH]


@dataclass
class Active:
    attempt_id: str
    job: Job
    cluster: str
    gpu_type: str
    start: float
    borrowed: bool


@dataclass
class Stats:
    gpu_seconds: float = 0.0
    tenant_gpu_seconds: dict[str, float] = field(default_factory=dict)
    preemptions: int = 0
    lost_gpu_seconds: float = 0.0
    over_capacity: int = 0  # events at which some cluster held more than it has (must stay 0)
    max_over_nominal: int = 0  # GPUs a tenant held beyond its nominal of a type, at worst
    borrowed_gpu_seconds: float = 0.0


def _weighted(rng: random.Random, choices: Sequence[tuple[Any, float]]) -> Any:
    return rng.choices([c for c, _ in choices], weights=[w for _, w in choices])[0]


def nominal_quotas(
    tenants: Mapping[str, float], capacity: Mapping[str, int]
) -> dict[str, dict[str, int]]:
    """Each tenant's nominal GPUs of each type: its weighted part, largest remainders first."""
    total = sum(tenants.values())
    nominal: dict[str, dict[str, int]] = {t: {} for t in tenants}
    for gpu_type, gpus in sorted(capacity.items()):
        exact = {t: gpus * w / total for t, w in tenants.items()}
        floor = {t: math.floor(x) for t, x in exact.items()}
        left = gpus - sum(floor.values())
        for t in sorted(tenants, key=lambda t: (floor[t] - exact[t], t))[:left]:
            floor[t] += 1
        for t in tenants:
            nominal[t][gpu_type] = floor[t]
    return nominal


def workload(model: Model, clusters: Sequence[ClusterSpec]) -> tuple[dict[str, float], list[Job]]:
    """Tenants' weights and every job submitted within the horizon (seeded)."""
    rng = random.Random(model.seed)
    tenants = {f"tenant-{i + 1}": float(rng.randint(1, 4)) for i in range(model.tenants)}
    capacity: dict[str, int] = {}
    largest: dict[str, int] = {}
    for c in clusters:
        capacity[c.gpu_type] = capacity.get(c.gpu_type, 0) + c.gpus
        largest[c.gpu_type] = max(largest.get(c.gpu_type, 0), c.gpus)
    types = sorted(capacity)
    total_gpus = sum(capacity.values())
    mean_gpus = sum(s * w for s, w in SIZES) / sum(w for _, w in SIZES)
    busy_fraction = model.busy_h / (model.busy_h + model.idle_h)
    skews = {t: rng.uniform(0.4, 1.6) for t in tenants}
    weight_total = sum(tenants.values())
    jobs: list[Job] = []
    horizon = model.hours * 3600
    sigma = 1.0
    mu = math.log(model.mean_min * 60) - sigma**2 / 2
    for tenant, weight in tenants.items():
        offered = model.load * total_gpus * weight / weight_total * skews[tenant]  # GPUs
        rate = offered / (mean_gpus * model.mean_min * 60) / busy_fraction  # jobs/s when busy
        t = rng.uniform(0, model.idle_h * 3600)
        while t < horizon:
            busy_until = t + rng.expovariate(1 / (model.busy_h * 3600))
            while True:
                t += rng.expovariate(rate)
                if t >= min(busy_until, horizon):
                    break
                kind = rng.random()
                if kind < 0.6:
                    wanted: tuple[str, ...] = (rng.choices(types, [capacity[x] for x in types])[0],)
                elif kind < 0.85 and len(types) > 1:
                    wanted = tuple(rng.sample(types, 2))
                else:
                    wanted = ()
                fits = max(largest[x] for x in (wanted or types))
                gpus = min(_weighted(rng, SIZES), fits)
                duration = min(rng.lognormvariate(mu, sigma), 24 * 3600)
                jobs.append(
                    Job(
                        len(jobs),
                        tenant,
                        gpus,
                        wanted,
                        _weighted(rng, PRIORITIES),
                        t,
                        duration,
                        remaining=duration,
                    )
                )
            t = max(t, busy_until) + rng.expovariate(1 / (model.idle_h * 3600))
    jobs.sort(key=lambda j: (j.submitted, j.id))
    return tenants, jobs


class Simulation:
    """One run: the event loop and a placement pass made of the product's functions."""

    def __init__(self, model: Model) -> None:
        self.model = model
        self.clusters = parse_clusters(model.clusters)
        self.capacity = {c.name: c.gpus for c in self.clusters}
        self.type_of = {c.name: c.gpu_type for c in self.clusters}
        by_type: dict[str, int] = {}
        for c in self.clusters:
            by_type[c.gpu_type] = by_type.get(c.gpu_type, 0) + c.gpus
        self.tenants, self.jobs = workload(model, self.clusters)
        self.nominal = nominal_quotas(self.tenants, by_type)
        self.cohort = Cohort(
            "everyone",
            {
                t: {x: Share(n, model.borrowing_limit) for x, n in per_type.items()}
                for t, per_type in self.nominal.items()
            },
        )
        self.limits = {
            t: Limits(gpu_per_type={} if model.borrowing else dict(self.nominal[t]))
            for t in self.tenants
        }
        self.totals = Totals(gpu=sum(self.capacity.values()))
        self.free = dict(self.capacity)
        self.loads = {t: Load() for t in self.tenants}
        self.waiting: dict[str, Attempt] = {}
        self.active: dict[str, Active] = {}
        self.stats = Stats(tenant_gpu_seconds=dict.fromkeys(self.tenants, 0.0))
        self.now = 0.0
        self.events: list[tuple[float, int, str, Any]] = []
        self.sequence = itertools.count()
        self.attempt_ids = itertools.count(1)
        self._resources: dict[tuple[int, tuple[str, ...]], Resources] = {}

    # -- events ---------------------------------------------------------------------------

    def at(self, when: float, kind: str, payload: Any) -> None:
        heapq.heappush(self.events, (when, next(self.sequence), kind, payload))

    def run(self) -> dict[str, Any]:
        horizon = self.model.hours * 3600
        bound = self.model.reserve_after_min * 60
        for job in self.jobs:
            self.at(job.submitted, "arrive", job)
        while self.events and self.events[0][0] <= horizon:
            when = self.events[0][0]
            self.advance(when)
            while self.events and self.events[0][0] == when:
                _, _, kind, payload = heapq.heappop(self.events)
                if kind == "arrive":
                    limits = self.limits[payload.tenant]
                    if exceeds_whole_quota(limits, "job", self.resources(payload)) is not None:
                        payload.refused = True  # as the API refuses it at submission
                        continue
                    attempt = self.enqueue(payload)
                    if self.model.reservations:
                        self.at(when + bound, "starve", attempt.attempt_id)
                elif kind == "finish" and payload in self.active:
                    finished = self.active.pop(payload)
                    self.stop(finished)
                    finished.job.remaining = 0.0
            while self.placement_pass() >= TENANT_PAGE:
                pass  # as `Scheduler.place`: a tenant's page may run out before the capacity
            self.check()
        self.advance(horizon)
        return self.results(horizon)

    def advance(self, when: float) -> None:
        dt = when - self.now
        if dt > 0:
            for running in self.active.values():
                gpu_seconds = running.job.gpus * dt
                self.stats.gpu_seconds += gpu_seconds
                self.stats.tenant_gpu_seconds[running.job.tenant] += gpu_seconds
                if running.borrowed:
                    self.stats.borrowed_gpu_seconds += gpu_seconds
            self.now = when

    def enqueue(self, job: Job) -> Attempt:
        number = next(self.attempt_ids)
        attempt = Attempt(
            f"at-{number}", job, self.now, EPOCH + timedelta(seconds=self.now, microseconds=number)
        )
        self.waiting[attempt.attempt_id] = attempt
        return attempt

    def start(self, attempt: Attempt, cluster: str, gpu_type: str, borrowed: bool) -> None:
        job = attempt.job
        del self.waiting[attempt.attempt_id]
        self.free[cluster] -= job.gpus
        self.loads[job.tenant].add(Usage(gpu=job.gpus, gpu_type=gpu_type))
        if job.first_start is None:
            job.first_start = self.now
        self.active[attempt.attempt_id] = Active(
            attempt.attempt_id, job, cluster, gpu_type, self.now, borrowed
        )
        self.at(self.now + job.remaining, "finish", attempt.attempt_id)

    def stop(self, running: Active) -> None:
        self.free[running.cluster] += running.job.gpus
        load = self.loads[running.job.tenant]
        load.gpu -= running.job.gpus
        load.gpu_per_type[running.gpu_type] -= running.job.gpus

    def preempt(self, attempt_id: str) -> None:
        running = self.active.pop(attempt_id)
        self.stop(running)
        job = running.job
        ran = self.now - running.start
        kept = ran - ran % (self.model.checkpoint_min * 60) if self.model.checkpoint_min else 0.0
        self.stats.preemptions += 1
        self.stats.lost_gpu_seconds += (ran - kept) * job.gpus
        job.remaining -= kept
        job.preempted += 1
        self.enqueue(job)  # a system retry: a new attempt, waiting again

    # -- the placement pass ---------------------------------------------------------------

    def candidates(self) -> dict[str, Candidate]:
        return {
            name: Candidate(name, free=FreeCapacity(gpus={self.type_of[name]: free}))
            for name, free in self.free.items()
        }

    def used(self) -> dict[str, dict[str, int]]:
        return {t: dict(load.gpu_per_type) for t, load in self.loads.items()}

    def resources(self, job: Job, types: Sequence[str] | None = None) -> Resources:
        wanted = tuple(types if types is not None else job.types)
        key = (job.gpus, wanted)
        if key not in self._resources:
            self._resources[key] = Resources(gpu=job.gpus, gpu_type=list(wanted) or None)
        return self._resources[key]

    def placement_pass(self) -> int:
        """One pass, as the product's; how many attempts it started."""
        if not self.waiting:
            return 0
        started = 0
        batch = considered(self.waiting.values())
        candidates = self.candidates()
        reservations = self.reservations(batch, candidates)

        def share(tenant: str) -> float:
            return dominant_share(self.loads[tenant], self.totals)

        for attempt in fair_order(batch, share):
            if not self.model.borrowing and not any(self.free.values()):
                break  # nothing can start and nothing may be preempted
            job = attempt.job
            load = self.loads[job.tenant]
            limits = self.limits[job.tenant]
            wanted = self.resources(job)
            types = allowed_gpu_types(wanted, limits, load)
            if self.over_quota(job, limits, load) or types == []:
                continue
            refused = False  # the cohort admits none of its GPU types now
            if self.model.borrowing and types:
                used = self.used()
                admitted = [
                    t for t in types if admit(self.cohort, used, job.tenant, t, job.gpus).admitted
                ]
                types, refused = (admitted, False) if admitted else (types, True)
            if types is not None:
                wanted = self.resources(job, types)
            wanted = reservations.narrow(attempt.attempt_id, wanted)
            seen = reservations.as_seen_by(attempt.attempt_id, candidates.values())
            preemptable = reservations.not_held_for_others(attempt.attempt_id, candidates.values())
            if refused or not any(self.free.values()):
                # Fits nowhere, or the cohort refuses it: only preemption can start it.
                if self.may_take_back(job, types) and self.take_back(attempt, preemptable, types):
                    candidates = self.candidates()
                continue
            decision = place(wanted, seen, Strategy.SPREAD)
            if decision.gpu_type is not None and types is None:
                # Any type would do: its tenant's quota of the type chosen (as the pass does).
                if gpu_type_problem(limits, load, job.gpus, decision.gpu_type) is not None:
                    continue
            if decision.cluster is not None and decision.gpu_type is not None:
                borrowed = False
                if self.model.borrowing:
                    admission = admit(
                        self.cohort, self.used(), job.tenant, decision.gpu_type, job.gpus
                    )
                    if not admission.admitted:
                        continue
                    borrowed = admission.borrowed > 0
                self.start(attempt, decision.cluster, decision.gpu_type, borrowed)
                started += 1
                candidates = self.candidates()
            elif self.may_take_back(job, types) and self.take_back(attempt, preemptable, types):
                candidates = self.candidates()
        return started

    @staticmethod
    def over_quota(job: Job, limits: Limits, load: Load) -> bool:
        return quota_problem(limits, load, Usage(gpu=job.gpus), new_execution=False) is not None

    def may_take_back(self, job: Job, types: Sequence[str] | None) -> bool:
        """Whether `choose_victims` could find victims for `job` at all: with borrowing, and
        within its tenant's nominal of some acceptable type (a shortcut: it would say None)."""
        if not self.model.borrowing:
            return False
        held = self.loads[job.tenant].gpu_per_type
        nominal = self.nominal[job.tenant]
        return any(
            held.get(t, 0) + job.gpus <= nominal.get(t, 0) for t in (types or job.types or nominal)
        )

    def reservations(
        self, batch: Sequence[Attempt], candidates: Mapping[str, Candidate]
    ) -> Reservations:
        if not self.model.reservations:
            return Reservations()
        older_than = self.now - self.model.reserve_after_min * 60
        waiting: list[Starving] = []
        for attempt in batch:  # oldest first
            if attempt.created > older_than:
                break
            job = attempt.job
            limits, load = self.limits[job.tenant], self.loads[job.tenant]
            one = starving(
                attempt.attempt_id, self.resources(job), limits, load, new_execution=False
            )
            if one is not None and self.model.borrowing:
                # Only on a type the cohort admits now (as the scheduler's `_reservations`).
                used = self.used()
                types = [
                    t
                    for t in (one.resources.gpu_types or sorted(set(self.type_of.values())))
                    if admit(self.cohort, used, job.tenant, t, job.gpus).admitted
                ]
                one = replace(one, resources=self.resources(job, types)) if types else None
            if one is not None:
                waiting.append(one)
        if not waiting:
            return Reservations()
        idle = {
            name: FreeCapacity(gpus={self.type_of[name]: n}) for name, n in self.capacity.items()
        }
        return reserve(waiting, list(candidates.values()), idle)

    def take_back(
        self, attempt: Attempt, seen: Sequence[Candidate], types: Sequence[str] | None
    ) -> bool:
        """Preempt borrowed work for `attempt` (cohorts.choose_victims) and start it."""
        job = attempt.job
        running = [
            Running(
                a.attempt_id,
                a.job.tenant,
                a.cluster,
                a.gpu_type,
                a.job.gpus,
                a.job.priority,
                EPOCH + timedelta(seconds=a.start),
                a.borrowed,
            )
            for a in self.active.values()
        ]
        for gpu_type in types or job.types or sorted(set(self.type_of.values())):
            free = {
                c.name: (c.free.gpus or {}).get(gpu_type, 0)
                for c in seen
                if self.type_of[c.name] == gpu_type
            }
            if not free:
                continue
            used = self.used()
            chosen = choose_victims(
                self.cohort,
                used,
                job.tenant,
                job.priority,
                gpu_type,
                job.gpus,
                running,
                free,
                preempt_within_tenant=False,
            )
            if chosen is None:
                continue
            for victim in chosen.victims:
                self.preempt(victim)
            admission = admit(self.cohort, self.used(), job.tenant, gpu_type, job.gpus)
            assert admission.admitted and self.free[chosen.cluster] >= job.gpus, chosen
            self.start(attempt, chosen.cluster, gpu_type, admission.borrowed > 0)
            return True
        return False

    # -- invariants and results -----------------------------------------------------------

    def check(self) -> None:
        for name, free in self.free.items():
            if free < 0 or free > self.capacity[name]:
                self.stats.over_capacity += 1
        held: dict[str, int] = {}
        for running in self.active.values():
            held[running.cluster] = held.get(running.cluster, 0) + running.job.gpus
        for name, gpus in held.items():
            if gpus > self.capacity[name]:
                self.stats.over_capacity += 1
        for tenant, load in self.loads.items():
            for gpu_type, gpus in load.gpu_per_type.items():
                over = gpus - self.nominal[tenant].get(gpu_type, 0)
                self.stats.max_over_nominal = max(self.stats.max_over_nominal, over)

    def results(self, horizon: float) -> dict[str, Any]:
        capacity = sum(self.capacity.values())
        waits: dict[str, list[float]] = {t: [] for t in self.tenants}
        large: list[float] = []
        unstarted = refused = 0
        demand = dict.fromkeys(self.tenants, 0.0)
        for job in self.jobs:
            if job.submitted > horizon:
                continue
            demand[job.tenant] += job.gpus * job.duration
            if job.refused:
                refused += 1
                continue
            if job.first_start is None:
                unstarted += 1
            wait = (job.first_start if job.first_start is not None else horizon) - job.submitted
            waits[job.tenant].append(wait)
            if job.gpus >= LARGE:
                large.append(wait)
        weight_total = sum(self.tenants.values())
        used_total = self.stats.gpu_seconds or 1.0
        tenants = {}
        ratios = []
        for tenant, weight in self.tenants.items():
            entitled = min(weight / weight_total * capacity * horizon, demand[tenant])
            got = self.stats.tenant_gpu_seconds[tenant]
            if entitled > 0:
                ratios.append(min(got / entitled, 1.0))
            tenants[tenant] = {
                "weight": weight,
                "nominal_share": round(weight / weight_total, 4),
                "usage_share": round(got / used_total, 4),
                "demand_gpu_h": round(demand[tenant] / 3600, 1),
                "gpu_h": round(got / 3600, 1),
                "jobs": len(waits[tenant]),
                "wait_p50_min": round(percentile(waits[tenant], 50) / 60, 1),
                "wait_p95_min": round(percentile(waits[tenant], 95) / 60, 1),
            }
        every = [w for ws in waits.values() for w in ws]
        jain = sum(ratios) ** 2 / (len(ratios) * sum(r * r for r in ratios)) if ratios else 1.0
        return {
            "borrowing": self.model.borrowing,
            "reservations": self.model.reservations,
            "jobs": len(every) + refused,
            "offered_load": round(sum(demand.values()) / (capacity * horizon), 3),
            "refused_at_submit": refused,
            "unstarted_at_end": unstarted,
            "utilisation": round(self.stats.gpu_seconds / (capacity * horizon), 4),
            "wait_p50_min": round(percentile(every, 50) / 60, 1),
            "wait_p95_min": round(percentile(every, 95) / 60, 1),
            "large_jobs": len(large),
            "large_wait_p95_min": round(percentile(large, 95) / 60, 1),
            "large_wait_max_min": round(max(large, default=0.0) / 60, 1),
            "preemptions": self.stats.preemptions,
            "lost_gpu_h": round(self.stats.lost_gpu_seconds / 3600, 1),
            "borrowed_gpu_h": round(self.stats.borrowed_gpu_seconds / 3600, 1),
            "jain_of_entitlement": round(jain, 4),
            "max_over_nominal": self.stats.max_over_nominal,
            "over_capacity_events": self.stats.over_capacity,
            "tenants": tenants,
        }


def percentile(values: Sequence[float], p: float) -> float:
    """The nearest-rank percentile (0 for none)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(math.ceil(p / 100 * len(ordered)), 1)
    return ordered[rank - 1]


VARIANTS = (
    ("borrow off, reserve off", False, False),
    ("borrow off, reserve on", False, True),
    ("borrow on, reserve off", True, False),
    ("borrow on, reserve on", True, True),
)


def simulate(model: Model) -> dict[str, Any]:
    """One run of `model` as it is (its `borrowing` and `reservations` flags)."""
    return Simulation(model).run()


def compare(model: Model) -> dict[str, dict[str, Any]]:
    """The four runs: borrowing off/on x reservations off/on, the same workload."""
    return {
        label: simulate(replace(model, borrowing=borrowing, reservations=reservations))
        for label, borrowing, reservations in VARIANTS
    }


ROWS = (
    ("GPU-h asked / capacity", "offered_load", lambda v: f"{v:.1%}"),
    ("GPU utilisation", "utilisation", lambda v: f"{v:.1%}"),
    ("jobs refused (over whole quota)", "refused_at_submit", str),
    ("wait p50 (min)", "wait_p50_min", str),
    ("wait p95 (min)", "wait_p95_min", str),
    ("large (>=8 GPU) wait p95 (min)", "large_wait_p95_min", str),
    ("large wait max (min)", "large_wait_max_min", str),
    ("jobs not started at the end", "unstarted_at_end", str),
    ("preemptions", "preemptions", str),
    ("GPU-h lost to preemption", "lost_gpu_h", str),
    ("GPU-h on borrowed quota", "borrowed_gpu_h", str),
    ("Jain's index (entitlement)", "jain_of_entitlement", str),
    ("most GPUs over nominal", "max_over_nominal", str),
    ("events over capacity", "over_capacity_events", str),
)


def render(model: Model, runs: Mapping[str, Mapping[str, Any]]) -> str:
    labels = list(runs)
    first = runs[labels[0]]
    lines = [
        "Scheduling simulation (a model, not a measurement): "
        f"{model.tenants} tenants, clusters {model.clusters}, {model.hours:g} h, "
        f"load {model.load:g}, mean job {model.mean_min:g} min, "
        f"reserve after {model.reserve_after_min:g} min, seed {model.seed}; "
        f"{first['jobs']} jobs",
        "",
        f"  {'':32}" + "".join(f"{label:>26}" for label in labels),
    ]
    for title, key, show in ROWS:
        lines.append(f"  {title:32}" + "".join(f"{show(runs[x][key]):>26}" for x in labels))
    lines.append("")
    lines.append("  per tenant: nominal share / usage share, wait p50 / p95 (min)")
    for tenant in first["tenants"]:
        cells = []
        for label in labels:
            t = runs[label]["tenants"][tenant]
            cells.append(
                f"{t['nominal_share']:.2f}/{t['usage_share']:.2f} "
                f"{t['wait_p50_min']:>5}/{t['wait_p95_min']:<6}"
            )
        demand = first["tenants"][tenant]["demand_gpu_h"]
        lines.append(
            f"  {tenant} ({demand:g} GPU-h asked)".ljust(34) + "".join(f"{c:>26}" for c in cells)
        )
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    d = Model()
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--clusters", default=d.clusters, help="TYPE:GPUS[xCOUNT],... one type each")
    p.add_argument("--tenants", type=int, default=d.tenants, help="tenants, all in one cohort")
    p.add_argument("--hours", type=float, default=d.hours, help="simulated hours of arrivals")
    p.add_argument("--load", type=float, default=d.load, help="offered GPU-hours / capacity")
    p.add_argument("--mean-min", type=float, default=d.mean_min, help="mean job duration")
    p.add_argument("--busy-h", type=float, default=d.busy_h, help="mean busy period of a tenant")
    p.add_argument("--idle-h", type=float, default=d.idle_h, help="mean idle period of a tenant")
    p.add_argument(
        "--checkpoint-min", type=float, default=d.checkpoint_min, help="0: none (all is lost)"
    )
    p.add_argument(
        "--reserve-after-min", type=float, default=d.reserve_after_min, help="reservation bound"
    )
    p.add_argument(
        "--borrowing-limit", type=int, default=None, help="per tenant and type; unset: none"
    )
    p.add_argument("--seed", type=int, default=d.seed, help="random seed (the workload)")
    p.add_argument("--json", type=Path, help="also write the results to this file")
    return p


def model_from(args: argparse.Namespace) -> Model:
    model = Model(
        clusters=args.clusters,
        tenants=args.tenants,
        hours=args.hours,
        load=args.load,
        mean_min=args.mean_min,
        busy_h=args.busy_h,
        idle_h=args.idle_h,
        checkpoint_min=args.checkpoint_min,
        reserve_after_min=args.reserve_after_min,
        borrowing_limit=args.borrowing_limit,
        seed=args.seed,
    )
    try:
        parse_clusters(model.clusters)
    except ValueError as error:
        raise SystemExit(f"--clusters: {error}") from None
    if model.tenants < 1:
        raise SystemExit("--tenants must be at least 1")
    if min(model.hours, model.load, model.mean_min, model.busy_h, model.idle_h) <= 0:
        raise SystemExit("--hours, --load, --mean-min, --busy-h and --idle-h must be positive")
    if model.checkpoint_min < 0 or model.reserve_after_min < 0:
        raise SystemExit("--checkpoint-min and --reserve-after-min cannot be negative")
    if model.borrowing_limit is not None and model.borrowing_limit < 0:
        raise SystemExit("--borrowing-limit cannot be negative")
    return model


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    model = model_from(args)
    began = time.perf_counter()
    runs = compare(model)
    print(render(model, runs))
    print(f"\n(simulated in {time.perf_counter() - began:.1f} s)", file=sys.stderr)
    if args.json:
        document = {"model": asdict(model), "runs": runs}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(document, indent=2) + "\n")
        print(f"results: {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
