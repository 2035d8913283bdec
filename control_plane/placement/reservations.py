"""Reservations: a large task that has waited too long gets capacity held for it, so that
small tasks can no longer starve it by backfilling.

A placement pass skips an attempt that does not fit and offers the next (backfilling,
`placement/admission.py`): good for utilisation, but a task that needs a whole cluster's GPUs
could wait forever while a stream of small tasks keeps taking each GPU as it frees. So:

1. **Who.** An attempt is *starving* once it has waited longer than the control plane's bound
   (`FLEETFLOW_SCHEDULER_RESERVE_AFTER_SECONDS`, 300 s by default) and its tenant's quota lets
   it start now (an attempt waiting for quota gets nothing held: the capacity would idle), on
   the GPU types that quota allows now (`starving`). Starving attempts are considered oldest
   first.
2. **Where.** Each gets one cluster: among those granted to its tenant where it would fit with
   nothing else running (labels, an acceptable GPU type, total GPUs, CPU and memory), the one
   where it lacks the least now (missing GPUs of the type, then CPU, then memory), then by its
   GPU type preference, then by name. A cluster holds at most one reservation; a starving
   attempt whose every possible cluster is held by an older one gets none this pass.
3. **The rule.** On a cluster held for attempt R, every *other* attempt sees the cluster's free
   capacity less R's whole request (GPUs of R's type, CPU, memory; never below zero). So
   another attempt may use a resource there only if what stays free still covers all R asks
   of it, and a request of 0 (GPUs of another type, the executor's default CPU) always fits.
   Why this never delays R: R starts once every resource it asks for is free enough. A
   resource that already covers R's request keeps covering it after such a placement; a
   resource R still lacks is not touched by anyone but R; and free capacity only grows as
   running work ends. R itself sees the cluster as it is. A task that names no GPU type
   then asks for the type held for it (`Reservations.narrow`), so that placement does not
   choose for it a type on another cluster that its quota turns down, pass after pass.

Reservations are not stored: every pass recomputes them from the attempts waiting then, so
there is nothing to clean up when R starts, is cancelled, or its cluster goes away. Pure
functions over plain values; the scheduler (`scheduling/scheduler.py`) and the scheduling
simulation (`bench/scheduling_simulation.py`) feed them.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from control_plane.placement.admission import (
    Limits,
    Load,
    allowed_gpu_types,
    gpu_type_problem,
    quota_problem,
)
from control_plane.placement.capacity import FreeCapacity, Usage, cpu_fits, free_capacity
from control_plane.placement.policy import Candidate, fits_on, format_bytes
from fleetflow import ir


@dataclass(frozen=True)
class Starving:
    """A waiting attempt past the bound whose quota lets it start.

    Attributes:
        attempt_id: the attempt.
        resources: what it requests (its GPU types already narrowed to those its tenant's
            per-type quota allows).
        clusters: the names of the clusters its tenant may use; None: every cluster.
        refused_types: GPU types its tenant's per-type quota turns down now (for a task that
            names no type: any other type will do).
    """

    attempt_id: str
    resources: ir.Resources
    clusters: Collection[str] | None = None
    refused_types: Collection[str] = ()


def starving(
    attempt_id: str,
    resources: ir.Resources,
    limits: Limits,
    load: Load,
    *,
    new_execution: bool,
    clusters: Collection[str] | None = None,
) -> Starving | None:
    """The attempt as `reserve` takes it, or None when its tenant's quota (`limits`, with
    `load` in use) does not let it start now: nothing is held for it then."""
    if quota_problem(limits, load, Usage.of(resources, None), new_execution=new_execution):
        return None
    types = allowed_gpu_types(resources, limits, load)
    if types == []:
        return None
    if types is not None:
        resources = resources.model_copy(update={"gpu_type": types})
    refused = [t for t in limits.gpu_per_type if gpu_type_problem(limits, load, resources.gpu, t)]
    return Starving(attempt_id, resources, clusters, refused)


@dataclass(frozen=True)
class Reservation:
    """Capacity held on `cluster` for one starving attempt."""

    attempt_id: str
    cluster: str
    gpu_type: str | None
    held: Usage
    # What it still lacks there, e.g. "8 H100, 6 free"; empty when it fits now.
    lacking: str = ""

    @property
    def reason(self) -> str:
        """The attempt's pending reason while it waits on its reservation."""
        return f"reserved on {self.cluster}: waiting for {self.lacking or 'its turn'}"


@dataclass(frozen=True)
class Reservations:
    """The reservations of one pass, by cluster name."""

    by_cluster: Mapping[str, Reservation] = field(default_factory=dict)

    def of(self, attempt_id: str) -> Reservation | None:
        """The reservation held for `attempt_id`, if any."""
        for reservation in self.by_cluster.values():
            if reservation.attempt_id == attempt_id:
                return reservation
        return None

    def as_seen_by(self, attempt_id: str, candidates: Iterable[Candidate]) -> list[Candidate]:
        """`candidates` as `attempt_id` may use them: each cluster held for another attempt
        with that attempt's request set aside (the rule in the module docstring)."""
        seen = []
        for candidate in candidates:
            held = self.by_cluster.get(candidate.name)
            if held is not None and held.attempt_id != attempt_id:
                candidate = replace(candidate, free=candidate.free.minus(held.held))
            seen.append(candidate)
        return seen

    def not_held_for_others(
        self, attempt_id: str, candidates: Iterable[Candidate]
    ) -> list[Candidate]:
        """`candidates` less the clusters held for another attempt (where preemption for
        `attempt_id` must not free GPUs: they would be the held attempt's)."""
        return [
            c
            for c in candidates
            if (held := self.by_cluster.get(c.name)) is None or held.attempt_id == attempt_id
        ]

    def narrow(self, attempt_id: str, resources: ir.Resources) -> ir.Resources:
        """What `attempt_id` asks placement for: a task that names no GPU type asks for the
        type held for it, if it holds a reservation (module docstring)."""
        held = self.of(attempt_id)
        if held is None or held.gpu_type is None or resources.gpu <= 0 or resources.gpu_types:
            return resources
        return resources.model_copy(update={"gpu_type": [held.gpu_type]})

    def explain(self, excluded: Mapping[str, str]) -> dict[str, str]:
        """Placement's reasons for excluding clusters, with the held ones said so."""
        return {
            name: f"{why} (held for an older task)" if name in self.by_cluster else why
            for name, why in excluded.items()
        }


def idle_capacity(reported: Mapping[str, Any]) -> FreeCapacity:
    """What a cluster would have free with nothing running, from its agent's last report."""
    idle = {
        **reported,
        "cpu_in_use": 0,
        "memory_bytes_in_use": 0,
        "gpus": [{**g, "in_use": 0} for g in reported.get("gpus") or ()],
    }
    return free_capacity(idle)


def _lacking(
    resources: ir.Resources, free: FreeCapacity, gpu_type: str | None
) -> tuple[tuple[float, float, float], str]:
    """How much of each resource `resources` lacks on `free` (GPUs, CPU, memory), and the same
    in words ("8 H100, 6 free")."""
    words = []
    gpus = cpu = memory = 0.0
    if resources.gpu > 0 and gpu_type is not None and free.gpus is not None:
        has = free.gpus.get(gpu_type, 0)
        gpus = max(resources.gpu - has, 0)
        if gpus:
            words.append(f"{resources.gpu} {gpu_type}, {has} free")
    if resources.cpu > 0 and free.cpu is not None and not cpu_fits(resources.cpu, free.cpu):
        cpu = resources.cpu - free.cpu
        words.append(f"{resources.cpu:g} CPU, {free.cpu:g} free")
    if (
        resources.memory_bytes > 0
        and free.memory_bytes is not None
        and free.memory_bytes < resources.memory_bytes
    ):
        memory = float(resources.memory_bytes - free.memory_bytes)
        words.append(
            f"{format_bytes(resources.memory_bytes)} memory, {format_bytes(free.memory_bytes)} free"
        )
    return (gpus, cpu, memory), "; ".join(words)


def reserve(
    starving: Sequence[Starving],
    candidates: Sequence[Candidate],
    idle: Mapping[str, FreeCapacity],
) -> Reservations:
    """Hold one cluster for each starving attempt that can have one (module docstring).

    Args:
        starving: the attempts past the bound whose quota lets them start, oldest first.
        candidates: every cluster with its free capacity now.
        idle: each cluster's capacity with nothing running (`idle_capacity`); a cluster
            missing here is judged by its free capacity now.
    """
    held: dict[str, Reservation] = {}
    online = sum(1 for c in candidates if c.online)
    for attempt in starving:
        if len(held) >= online:
            break  # every cluster is held: the younger ones get none this pass
        resources = attempt.resources
        types: Sequence[str | None] = (
            resources.gpu_types if resources.gpu > 0 and resources.gpu_types else [None]
        )
        best: tuple[tuple[Any, ...], Reservation] | None = None
        for candidate in candidates:
            if candidate.name in held or not candidate.online:
                continue
            if attempt.clusters is not None and candidate.name not in attempt.clusters:
                continue
            empty = replace(candidate, free=idle.get(candidate.name, candidate.free))
            for preference, wanted_type in enumerate(types):
                wanted = (
                    resources
                    if wanted_type is None
                    else resources.model_copy(update={"gpu_type": [wanted_type]})
                )
                fitting, why = fits_on(wanted, empty)
                if why is not None:
                    continue
                for gpu_type in fitting:
                    if gpu_type in attempt.refused_types:
                        continue
                    lack, words = _lacking(resources, candidate.free, gpu_type)
                    key = (lack, preference, candidate.name, gpu_type or "")
                    if best is None or key < best[0]:
                        reservation = Reservation(
                            attempt.attempt_id,
                            candidate.name,
                            gpu_type,
                            Usage.of(resources, gpu_type),
                            words,
                        )
                        best = (key, reservation)
        if best is not None:
            held[best[1].cluster] = best[1]
    return Reservations(held)
