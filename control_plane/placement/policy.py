"""Which cluster one task attempt goes to, and why the others do not get it.

Pure functions over plain values, so every rule can be tested without a database:

1. **Filter.** A cluster is excluded when it is offline, lacks a label the task requires, has
   no GPU of an acceptable type or not enough of them free, or has too little CPU or memory
   free (a request of 0, the executor's default, always fits). Each excluded cluster gets a
   reason a person can act on: `offline`, `missing label zone=eu`,
   `no GPU of type H100 (has A100)`, `needs 8 H100, 3 free`, `needs 4 CPU, 1.5 free`.
2. **GPU type.** A task lists acceptable GPU types in order of preference; the first type that
   fits on some eligible cluster now is taken. With no type named, any type the cluster has
   will do.
3. **Score.** Among the clusters that fit with that type, the strategy decides:
   `spread` takes the one with the most free capacity, `binpack` the one with the least that
   still fits. Capacity is compared as what would be left after placing the task: free GPUs of
   the chosen type, then free CPU, then free memory (a figure the agent does not report counts
   as unlimited). Equal capacity goes to the cluster with the fewest active attempts (spread) or
   the most (binpack); a tie after that goes to the cluster whose name sorts first, then the GPU
   type whose name sorts first.

Placement never chooses a cluster the task does not fit on.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from control_plane.placement.capacity import FreeCapacity, Usage, cpu_fits
from fleetflow import ir
from fleetflow.api_models.previews import Strategy


@dataclass(frozen=True)
class Candidate:
    """One cluster as placement sees it."""

    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    online: bool = True
    free: FreeCapacity = field(default_factory=FreeCapacity)
    active_attempts: int = 0

    def after(self, usage: Usage) -> Candidate:
        """This cluster once an attempt holding `usage` is placed on it."""
        return replace(self, free=self.free.minus(usage), active_attempts=self.active_attempts + 1)


NO_FIT = "no cluster fits now"


@dataclass(frozen=True)
class Decision:
    """Where one attempt goes now, or why nowhere.

    Attributes:
        cluster: the chosen cluster's name; None when the task fits nowhere (it waits).
        gpu_type: the GPU type it runs on there (None for no GPUs, or any type on a cluster
            whose GPUs are not reported).
        eligible: every cluster the task fits on now, with the acceptable GPU types that fit
            there (empty for a task without GPUs).
        excluded: every other cluster, with why.
        reason: when `cluster` is None, why.
    """

    cluster: str | None
    gpu_type: str | None
    eligible: Mapping[str, tuple[str, ...]]
    excluded: Mapping[str, str]
    reason: str = ""


def format_bytes(number_of_bytes: int) -> str:
    """`8Gi`, `1.5Gi`, `512Mi`: memory as Kubernetes quantities spell it."""
    for unit, size in (("Pi", 2**50), ("Ti", 2**40), ("Gi", 2**30), ("Mi", 2**20), ("Ki", 2**10)):
        if number_of_bytes >= size:
            return f"{round(number_of_bytes / size, 1):g}{unit}"
    return str(number_of_bytes)


def _label_problems(required: Mapping[str, str], labels: Mapping[str, str]) -> list[str]:
    problems = []
    for key, value in sorted(required.items()):
        if labels.get(key) != value:
            has = f" (has {key}={labels[key]})" if key in labels else ""
            problems.append(f"missing label {key}={value}{has}")
    return problems


def _gpu_fit(
    resources: ir.Resources, free: FreeCapacity
) -> tuple[tuple[str | None, ...], str | None]:
    """The GPU types the task fits with here (None: no particular type), or why none."""
    wanted = resources.gpu_types
    if resources.gpu <= 0:
        return (None,), None
    if free.gpus is None:  # nothing reported: no figure to refuse it by
        return (tuple(wanted) if wanted else (None,)), None
    has = sorted(free.gpus)
    if wanted and not any(t in free.gpus for t in wanted):
        return (), f"no GPU of type {' or '.join(wanted)} (has {', '.join(has) or 'none'})"
    if not has:
        return (), "no GPUs"
    considered = [t for t in wanted if t in free.gpus] if wanted else has
    fitting = tuple(t for t in considered if free.gpus[t] >= resources.gpu)
    if fitting:
        return fitting, None
    return (), "; ".join(f"needs {resources.gpu} {t}, {free.gpus[t]} free" for t in considered)


def fits_on(
    resources: ir.Resources, candidate: Candidate
) -> tuple[tuple[str | None, ...], str | None]:
    """The GPU types `resources` fits with on `candidate`, or why it does not fit there."""
    if not candidate.online:
        return (), "offline"
    problems = _label_problems(resources.labels, candidate.labels)
    types, gpu_problem = _gpu_fit(resources, candidate.free)
    if gpu_problem:
        problems.append(gpu_problem)
    free = candidate.free
    if resources.cpu > 0 and not cpu_fits(resources.cpu, free.cpu):
        problems.append(f"needs {resources.cpu:g} CPU, {free.cpu:g} free")
    if (
        resources.memory_bytes > 0
        and free.memory_bytes is not None
        and resources.memory_bytes > free.memory_bytes
    ):
        problems.append(
            f"needs {format_bytes(resources.memory_bytes)} memory, "
            f"{format_bytes(free.memory_bytes)} free"
        )
    if problems:
        return (), "; ".join(problems)
    return types, None


def _left(free: float | None, requested: float) -> float:
    return math.inf if free is None else free - requested


def _score(
    resources: ir.Resources, candidate: Candidate, gpu_type: str | None, strategy: Strategy
) -> tuple[float | int | str, ...]:
    free = candidate.free
    gpus_left: float = 0.0
    if resources.gpu > 0:
        gpus_left = (
            math.inf
            if free.gpus is None or gpu_type is None
            else free.gpus.get(gpu_type, 0) - resources.gpu
        )
    memory = None if free.memory_bytes is None else float(free.memory_bytes)
    left = (gpus_left, _left(free.cpu, resources.cpu), _left(memory, resources.memory_bytes))
    if strategy is Strategy.SPREAD:
        capacity = tuple(-x for x in left)
        active = candidate.active_attempts
    else:
        capacity = left
        active = -candidate.active_attempts
    return (*capacity, active, candidate.name, gpu_type or "")


def place(
    resources: ir.Resources,
    candidates: Sequence[Candidate],
    strategy: Strategy = Strategy.SPREAD,
    *,
    restrict_to: str | None = None,
) -> Decision:
    """Choose the cluster (and GPU type) for one attempt of a task requesting `resources`.

    Args:
        resources: what the task requests.
        candidates: every cluster that could be considered, with its free capacity now.
        strategy: spread or binpack (see the module docstring for the score and tie-break).
        restrict_to: choose this cluster or none (an agent asking for work for its cluster).
            The GPU type is still the first acceptable one that fits on any cluster, so an
            agent does not take with a less preferred type what a preferred one can run now.
    """
    eligible: dict[str, tuple[str | None, ...]] = {}
    excluded: dict[str, str] = {}
    by_name = {c.name: c for c in candidates}
    for candidate in sorted(candidates, key=lambda c: c.name):
        types, why = fits_on(resources, candidate)
        if why is None:
            eligible[candidate.name] = types
        else:
            excluded[candidate.name] = why
    public = {name: tuple(t for t in types if t) for name, types in eligible.items()}
    options = [(name, t) for name, types in eligible.items() for t in types]
    for preferred in resources.gpu_types if resources.gpu > 0 else ():
        if any(t == preferred for _, t in options):
            options = [(name, t) for name, t in options if t == preferred]
            break
    if not options:
        return Decision(None, None, public, excluded, reason=NO_FIT)
    if restrict_to is not None:
        chosen_type = options[0][1]
        options = [(name, t) for name, t in options if name == restrict_to]
        if not options:
            if restrict_to in excluded:
                why = f"{restrict_to}: {excluded[restrict_to]}"
            elif restrict_to in eligible:
                why = f"{chosen_type} is preferred and fits on another cluster"
            else:
                why = f"{restrict_to} is not a candidate"
            return Decision(None, None, public, excluded, reason=why)
    name, gpu_type = min(
        options, key=lambda option: _score(resources, by_name[option[0]], option[1], strategy)
    )
    return Decision(name, gpu_type, public, excluded)
