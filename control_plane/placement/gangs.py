"""Multi-node tasks (gangs): `@task(replicas=N)` runs N workers together as ONE attempt.

A gang is placed and counted as a whole: its attempt holds `replicas ×` the per-worker
resources, all on one cluster, or it waits (never a partial launch holding GPUs). Placement and
quotas therefore see a gang as one attempt requesting the group's total (`group_resources`);
whether each worker fits on one node of the cluster is the cluster's business (a Kubernetes
scheduler that cannot place a pod leaves it pending, as for a single pod).

Pure functions over plain values, like the rest of `control_plane.placement`; what a person
reads about a gang that cannot start says so in the gang's terms: "needs 4 × 8 H100 on one
cluster; largest free: gpu-b with 2 × 8 H100".
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from control_plane.placement.admission import Limits, exceeds_whole_quota
from control_plane.placement.policy import Candidate, fits_on, format_bytes
from fleetflow import ir


def group_resources(resources: ir.Resources, replicas: int) -> ir.Resources:
    """What a gang of `replicas` workers, each requesting `resources`, holds in all.

    Not validated against the per-attempt bounds of `ir.Resources` (a gang may hold more than
    one worker can): the result is only compared with free capacity and quotas.
    """
    if replicas <= 1:
        return resources
    return resources.model_copy(
        update={
            "cpu": resources.cpu * replicas,
            "memory_bytes": resources.memory_bytes * replicas,
            "gpu": resources.gpu * replicas,
        }
    )


def task_group_resources(task: ir.TaskSpec) -> ir.Resources:
    """What one attempt of `task` holds: its resources, times its replicas."""
    return group_resources(task.resources, task.replicas)


def describe_worker(resources: ir.Resources) -> str:
    """`8 H100`, `2 GPUs`, `4 CPU, 8Gi memory`: what one worker requests, shortly."""
    if resources.gpu > 0:
        types = resources.gpu_types
        return f"{resources.gpu} {'/'.join(types)}" if types else f"{resources.gpu} GPU"
    parts = [f"{resources.cpu:g} CPU"] if resources.cpu > 0 else []
    if resources.memory_bytes > 0:
        parts.append(f"{format_bytes(resources.memory_bytes)} memory")
    return ", ".join(parts) or "no resources"


def workers_fitting(resources: ir.Resources, candidate: Candidate) -> int | None:
    """How many workers requesting `resources` each the free capacity of `candidate` holds;
    None when no figure limits it (an agent that reported nothing), 0 when it is not eligible
    at all (offline, missing a label, no GPU of an acceptable type)."""
    # Whether one worker could go there at all (online, labels, a GPU of an acceptable type).
    probe = resources.model_copy(
        update={"cpu": 0.0, "memory_bytes": 0, "gpu": min(resources.gpu, 1)}
    )
    types, why = fits_on(probe, candidate)
    if why is not None:
        return 0
    free = candidate.free
    counts: list[float] = []
    if resources.gpu > 0 and free.gpus is not None:
        most = max((free.gpus.get(t, 0) for t in types if t), default=0)
        counts.append(most // resources.gpu)
    if resources.cpu > 0 and free.cpu is not None:
        counts.append(math.floor(free.cpu / resources.cpu + 1e-9))
    if resources.memory_bytes > 0 and free.memory_bytes is not None:
        counts.append(free.memory_bytes // resources.memory_bytes)
    return int(min(counts)) if counts else None


def gang_no_fit_reason(
    resources: ir.Resources, replicas: int, candidates: Sequence[Candidate]
) -> str:
    """Why a gang of `replicas` workers, each requesting `resources`, fits on no cluster now:
    what it needs on one cluster, and the cluster with room for the most workers."""
    need = f"needs {replicas} × {describe_worker(resources)} on one cluster"
    best: tuple[int, str] | None = None
    for candidate in sorted(candidates, key=lambda c: c.name):
        count = workers_fitting(resources, candidate)
        if count is None:
            continue
        if best is None or count > best[0]:
            best = (count, candidate.name)
    if best is None or best[0] == 0:
        return f"{need}; no cluster has room for one worker"
    count, name = best
    limit = _limited_by(resources, next(c for c in candidates if c.name == name), count)
    return f"{need}; largest free: {name} with {count} × {describe_worker(resources)}{limit}"


def _limited_by(resources: ir.Resources, candidate: Candidate, count: int) -> str:
    """` (its free CPU, 2, holds 2 workers of 1 CPU)` when what limits a GPU worker's count on
    `candidate` is not its GPUs (which the reason names) but CPU or memory, which it does not
    name: without it, "2 × 1 H100" on a cluster with 8 free H100 reads as wrong."""
    free = candidate.free
    if resources.gpu == 0:
        return ""  # describe_worker names the CPU and memory already
    by_gpus = workers_fitting(
        resources.model_copy(update={"cpu": 0.0, "memory_bytes": 0}), candidate
    )
    if by_gpus is not None and by_gpus <= count:
        return ""  # its GPUs limit it (too): the reason says so
    if resources.cpu > 0 and free.cpu is not None:
        if math.floor(free.cpu / resources.cpu + 1e-9) == count:
            return f" (its free CPU, {free.cpu:g}, holds {count} workers of {resources.cpu:g} CPU)"
    if resources.memory_bytes > 0 and free.memory_bytes is not None:
        if free.memory_bytes // resources.memory_bytes == count:
            return (
                f" (its free memory, {format_bytes(free.memory_bytes)}, holds {count} workers "
                f"of {format_bytes(resources.memory_bytes)})"
            )
    return ""


def gang_reason(reason: str, resources: ir.Resources, replicas: int) -> str:
    """A quota or capacity `reason` about a gang's whole group, told that it is one."""
    return f"{reason} (a gang of {replicas} × {describe_worker(resources)})"


def exceeds_whole_quota_of(limits: Limits, name: str, task: ir.TaskSpec) -> str | None:
    """`exceeds_whole_quota` for one attempt of `task`: a gang counts its whole group."""
    problem = exceeds_whole_quota(limits, name, task_group_resources(task))
    if problem is None or task.replicas <= 1:
        return problem
    return gang_reason(problem, task.resources, task.replicas)
