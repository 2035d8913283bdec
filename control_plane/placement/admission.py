"""Quotas and fair share: whether a tenant may start another attempt now, and in which order
tenants' waiting attempts are offered to placement.

Pure; the scheduler (`scheduling/scheduler.py`) feeds it, with the limits and loads that
`control_plane.quota` reads.

Quotas. A tenant's limits (GPUs in total and per type, CPU, memory, running tasks, running
executions; `None` = unlimited) bound what its active attempts (assigned, leased or running)
hold at once. An attempt that would cross a limit waits in PENDING with the reason
`quota: …`; it is offered again at every placement pass, and the scheduler runs a pass
whenever an attempt finishes (and at least every second), so it starts as soon as quota frees.
An execution counts as running from its first admitted attempt until it finishes.

Fair share (dominant resource fairness, DRF). Each placement pass offers waiting attempts one at
a time. The next one comes from the tenant with the smallest dominant share: the largest of its
GPU, CPU and memory use as a fraction of what the online clusters report in total (with no
totals reported, its number of active attempts). Ties go to the tenant whose next attempt is
oldest. Within a tenant, higher execution priority first, then oldest first. Every placement
updates the tenant's share, so a burst from one tenant interleaves with the others instead of
starving them. An attempt that cannot start (quota, or no capacity) is skipped and the next is
offered (backfilling): small tasks are not held up behind a large one. Once an attempt has
waited past the scheduler's bound, `placement/reservations.py` holds a cluster for it, and
backfilling there may only use what cannot delay it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol, TypeVar

from control_plane.placement.capacity import CPU_EPSILON, Usage
from control_plane.placement.policy import format_bytes
from fleetflow import ir


@dataclass(frozen=True)
class Limits:
    """A tenant's quota; None = unlimited."""

    gpu: int | None = None
    gpu_per_type: Mapping[str, int] = field(default_factory=dict)
    cpu: float | None = None
    memory_bytes: int | None = None
    max_running_executions: int | None = None
    max_running_tasks: int | None = None


@dataclass
class Load:
    """What a tenant's active attempts hold now."""

    gpu: int = 0
    gpu_per_type: dict[str, int] = field(default_factory=dict)
    cpu: float = 0.0
    memory_bytes: int = 0
    running_tasks: int = 0
    running_executions: int = 0

    def add(self, usage: Usage, *, new_execution: bool = False) -> None:
        self.gpu += usage.gpu
        if usage.gpu and usage.gpu_type:
            self.gpu_per_type[usage.gpu_type] = self.gpu_per_type.get(usage.gpu_type, 0) + usage.gpu
        self.cpu += usage.cpu
        self.memory_bytes += usage.memory_bytes
        self.running_tasks += 1
        self.running_executions += int(new_execution)


def _gpus(n: float) -> str:
    return f"{n:g} GPU" + ("" if n == 1 else "s")


def quota_problem(limits: Limits, load: Load, usage: Usage, *, new_execution: bool) -> str | None:
    """Why starting an attempt holding `usage` now would cross the tenant's quota, or None.

    `usage.gpu_type` is the GPU type it would run on (None: not known yet; the per-type limit
    is then checked by `gpu_type_problem` once placement chose one).
    """
    if limits.max_running_tasks is not None and load.running_tasks + 1 > limits.max_running_tasks:
        return f"quota: {load.running_tasks}/{limits.max_running_tasks} running tasks"
    if (
        new_execution
        and limits.max_running_executions is not None
        and load.running_executions + 1 > limits.max_running_executions
    ):
        return (
            f"quota: {load.running_executions}/{limits.max_running_executions} running executions"
        )
    if usage.gpu and limits.gpu is not None and load.gpu + usage.gpu > limits.gpu:
        return f"quota: needs {_gpus(usage.gpu)}, {load.gpu}/{limits.gpu} in use"
    if usage.gpu_type is not None:
        problem = gpu_type_problem(limits, load, usage.gpu, usage.gpu_type)
        if problem:
            return problem
    if usage.cpu and limits.cpu is not None and load.cpu + usage.cpu > limits.cpu + CPU_EPSILON:
        return f"quota: needs {usage.cpu:g} CPU, {load.cpu:g}/{limits.cpu:g} in use"
    if (
        usage.memory_bytes
        and limits.memory_bytes is not None
        and load.memory_bytes + usage.memory_bytes > limits.memory_bytes
    ):
        return (
            f"quota: needs {format_bytes(usage.memory_bytes)} memory, "
            f"{format_bytes(load.memory_bytes)}/{format_bytes(limits.memory_bytes)} in use"
        )
    return None


def gpu_type_problem(limits: Limits, load: Load, gpu: int, gpu_type: str) -> str | None:
    limit = limits.gpu_per_type.get(gpu_type)
    used = load.gpu_per_type.get(gpu_type, 0)
    if gpu and limit is not None and used + gpu > limit:
        return f"quota: needs {gpu} {gpu_type}, {used}/{limit} in use"
    return None


def allowed_gpu_types(resources: ir.Resources, limits: Limits, load: Load) -> list[str] | None:
    """The task's acceptable GPU types that its tenant's per-type quota has room for now, in
    preference order; None when the task names no type (any type will do)."""
    if resources.gpu <= 0 or not resources.gpu_types:
        return None
    return [
        t for t in resources.gpu_types if gpu_type_problem(limits, load, resources.gpu, t) is None
    ]


def exceeds_whole_quota(limits: Limits, task: str, resources: ir.Resources) -> str | None:
    """Why one attempt of `task` could never start under these limits, even with nothing else
    running; None when it can. Such a task is refused when its execution is submitted."""
    problems = []
    if limits.max_running_tasks == 0:
        problems.append("the quota allows no running tasks")
    if limits.max_running_executions == 0:
        problems.append("the quota allows no running executions")
    if resources.gpu and limits.gpu is not None and resources.gpu > limits.gpu:
        problems.append(f"it needs {_gpus(resources.gpu)}, the quota allows {limits.gpu}")
    types = resources.gpu_types
    if resources.gpu and types:
        fitting = [
            t
            for t in types
            if limits.gpu_per_type.get(t) is None or resources.gpu <= limits.gpu_per_type[t]
        ]
        if not fitting:
            allowed = ", ".join(f"{limits.gpu_per_type[t]} {t}" for t in types)
            problems.append(
                f"it needs {resources.gpu} of {'/'.join(types)}, the quota allows {allowed}"
            )
    if resources.cpu and limits.cpu is not None and resources.cpu > limits.cpu:
        problems.append(f"it needs {resources.cpu:g} CPU, the quota allows {limits.cpu:g}")
    if (
        resources.memory_bytes
        and limits.memory_bytes is not None
        and resources.memory_bytes > limits.memory_bytes
    ):
        problems.append(
            f"it needs {format_bytes(resources.memory_bytes)} memory, the quota allows "
            f"{format_bytes(limits.memory_bytes)}"
        )
    if not problems:
        return None
    return f"task {task} can never run within its tenant's quota: " + "; ".join(problems)


@dataclass(frozen=True)
class Totals:
    """What the online clusters report in total (0: not reported)."""

    gpu: int = 0
    cpu: float = 0.0
    memory_bytes: int = 0


def dominant_share(load: Load, totals: Totals) -> float:
    shares = [
        load.gpu / totals.gpu if totals.gpu else 0.0,
        load.cpu / totals.cpu if totals.cpu else 0.0,
        load.memory_bytes / totals.memory_bytes if totals.memory_bytes else 0.0,
    ]
    if not (totals.gpu or totals.cpu or totals.memory_bytes):
        return float(load.running_tasks)
    return max(shares)


class Waiting(Protocol):
    """A waiting attempt as fair share sees it."""

    @property
    def tenant_id(self) -> str: ...
    @property
    def priority(self) -> int: ...
    @property
    def created_at(self) -> datetime: ...


W = TypeVar("W", bound=Waiting)


def fair_order(waiting: Sequence[W], share: Callable[[str], float]) -> Iterator[W]:
    """Offer `waiting` in fair-share order (module docstring); `share(tenant_id)` is read
    afresh before every pick, so placements made meanwhile count."""
    queues: dict[str, list[W]] = {}
    for item in sorted(waiting, key=lambda w: (-w.priority, w.created_at), reverse=True):
        queues.setdefault(item.tenant_id, []).append(item)  # each queue: best last
    while queues:
        tenant = min(queues, key=lambda t: (share(t), queues[t][-1].created_at, t))
        queue = queues[tenant]
        yield queue.pop()
        if not queue:
            del queues[tenant]
